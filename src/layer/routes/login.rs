//! `login?return=/path`: start a login flow.
//!
//! A flow is a fresh OAuth `state` (32 alphanumeric characters from the OS CSPRNG, ~190 bits;
//! WeChat allows `[A-Za-z0-9]` up to 128 bytes). Nothing is written on the server: the pending
//! flow — the state's browser binding (a digest of the state, see `FlowBinding::for_state`), the
//! validated return path and the start time — goes into the browser's encrypted flow cookie (at
//! most three pending flows per browser, expired ones dropped), and the browser is sent to
//! WeChat's authorize page with our callback URL. A flood of login starts therefore costs the
//! server no memory and cannot push anyone's pending login out of a table.
//!
//! In component mode without a `component_verify_ticket` no login can complete, so the user gets
//! the "platform not ready" page (503, `Retry-After`) here, before WeChat asks for consent.
//!
//! A session the browser already has stays valid until the callback completes; the callback
//! then deletes it and issues a fresh id, so a login always ends in a new session, never in one
//! the browser was handed (session fixation, oauth2-proxy GHSA-f24x-5g9q-753f), and an abandoned
//! login does not log the user out.

use http::{HeaderMap, request::Parts};
use rand::{Rng as _, distributions::Alphanumeric, rngs::OsRng};

use super::return_param;
use crate::{
    clock::unix_now,
    ids::AppId,
    layer::{
        body::OwnResponse,
        error::AuthError,
        qr,
        respond::{add_cookie, redirect},
        state::AuthState,
        tenant::ResolvedTenant,
    },
    session::{FlowBinding, FlowCookie, LoginFlow, QrTicketId, ReturnPath},
    wechat::{OAuthState, website::WebsiteApp},
};

/// Length of a generated OAuth state.
pub(super) const STATE_LEN: usize = 32;

/// `GET login?return=/path`.
pub(super) async fn login(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    start(auth, tenant, parts, return_param(parts)).await
}

/// Starts a login for `tenant` that ends on `return_path`. A desktop browser (not WeChat's)
/// goes to the website app's QR login in `qr.desktop` website mode, or gets the QR login page
/// when the bridge is on (`layer::qr`); otherwise [`redirect_to_wechat`].
pub(in crate::layer) async fn start(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    parts: &Parts,
    return_path: ReturnPath,
) -> Result<OwnResponse, AuthError> {
    if let Some(app) = qr::website_login(auth, parts) {
        return redirect_to_website(auth, tenant, &parts.headers, return_path, app);
    }
    if qr::wants_qr_page(auth, parts) {
        return qr::desktop_page(auth, tenant, parts, return_path).await;
    }
    redirect_to_wechat(auth, tenant, &parts.headers, return_path, None).await
}

/// Starts a login flow for `tenant` that ends on `return_path` (or, with `qr`, on the phone's
/// confirmation of that desktop QR login): 302 to WeChat, flow cookie set. Writes nothing on
/// the server. A tenant that may not log users in (revoked, no web permission) gets its 403
/// page instead of WeChat's cryptic 10015.
pub(in crate::layer) async fn redirect_to_wechat(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    headers: &HeaderMap,
    return_path: ReturnPath,
    qr: Option<QrTicketId>,
) -> Result<OwnResponse, AuthError> {
    // The status now, not when the request was resolved.
    if let Err(rejection) = auth.wechat.check_tenant(tenant.appid()) {
        tracing::info!(tenant = auth.label(tenant), reason = %rejection, "login refused for this official account");
        return Err(rejection.into());
    }
    // Fail fast: no point asking the user to consent to a login that cannot complete.
    auth.wechat.ensure_login_possible().await?;

    let (state, pending) = new_flow(auth, tenant, headers, return_path, qr, false);
    let url = auth.wechat.authorize_url(
        tenant.appid(),
        &auth.callback_url_for(tenant),
        auth.settings.scope,
        &OAuthState::new(state),
    )?;
    Ok(flow_redirect(auth, tenant, url.as_str(), &pending))
}

/// `qr.desktop` website mode: a desktop login flow for `tenant` (marked `website`, so that the
/// callback exchanges the code with `app`) and a 302 to the website app's `qrconnect` page
/// with our callback URL. Writes nothing on the server.
fn redirect_to_website(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    headers: &HeaderMap,
    return_path: ReturnPath,
    app: &WebsiteApp,
) -> Result<OwnResponse, AuthError> {
    let callback = url::Url::parse(&auth.callback_url_for(tenant))
        .map_err(|_| AuthError::Internal("callback URL does not parse"))?;
    let (state, pending) = new_flow(auth, tenant, headers, return_path, None, true);
    let url = app.authorize_url(&callback, &OAuthState::new(state));
    Ok(flow_redirect(auth, tenant, url.as_str(), &pending))
}

/// A fresh OAuth state and the browser's flow cookie payload with the new flow added (expired
/// flows dropped).
fn new_flow(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    headers: &HeaderMap,
    return_path: ReturnPath,
    qr: Option<QrTicketId>,
    website: bool,
) -> (String, FlowCookie) {
    let state: String = (0..STATE_LEN)
        .map(|_| char::from(OsRng.sample(Alphanumeric)))
        .collect();
    let now = unix_now();
    let mut pending = auth.cookies.read_flow(headers).unwrap_or_default();
    pending.remove_expired(now, auth.settings.flow_ttl);
    pending.push(LoginFlow {
        binding: FlowBinding::for_state(&state),
        return_path,
        created_at: now,
        appid: Some(AppId::from(tenant.appid())),
        qr,
        website,
    });
    (state, pending)
}

/// The 302 to `url` that sets the flow cookie `pending`.
fn flow_redirect(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    url: &str,
    pending: &FlowCookie,
) -> OwnResponse {
    let mut response = redirect(url);
    add_cookie(&mut response, auth.cookies.flow_cookie(pending));
    crate::metrics::login_started(tenant.appid().as_str());
    response
}
