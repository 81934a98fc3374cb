//! The phone's routes: the QR link (`qr/s/<id>`), the end of its OAuth callback, the
//! confirmation page and the decision.
//!
//! The phone is named by its own cookie (`wxauth_qr_phone`, `__Host-` on https; SameSite=Lax
//! so it comes back with the navigation from WeChat's authorize page). The first phone to open
//! the link owns the ticket; every later step checks that cookie.

use http::{HeaderMap, StatusCode, header, request::Parts};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tower::BoxError;

use super::{
    Bridge,
    desktop::miss,
    device, event,
    pages::{self, ConfirmPage},
    route_path,
    secrets::{self, Holder},
    secure, tenant_name,
    ticket::{Refusal, State, Ticket, now_ms},
};
use crate::{
    identity::Identity,
    layer::{
        body::OwnResponse,
        error::AuthError,
        respond::{add_cookie, html, redirect},
        routes::{callback::issue_session, login::redirect_to_wechat, query_param},
        state::AuthState,
        tenant::ResolvedTenant,
    },
    metrics::qr_ticket,
    session::{QrTicketId, ReturnPath, TicketKey},
};

/// Purpose label of the phone secret's digest.
const PHONE: &str = "wxauth-qr-phone";

/// Largest confirmation form accepted (three short fields).
const MAX_FORM: usize = 1024;

/// How often a step retries its compare-and-set when the ticket changed under it.
const CAS_TRIES: usize = 3;

/// The refusal's error, counted.
fn refused(refusal: Refusal) -> AuthError {
    match refusal {
        Refusal::Expired => {
            qr_ticket(event::REFUSED_EXPIRED);
            AuthError::QrExpired
        }
        Refusal::Used => {
            qr_ticket(event::REFUSED_USED);
            AuthError::QrUsed
        }
    }
}

/// The ticket `id` of this account, or the 404 of an unknown one (counted per address).
async fn ticket_of(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
    id: Option<&str>,
) -> Result<(Vec<u8>, Ticket), AuthError> {
    let ip = device::client_ip(parts, &auth.settings.trusted_proxies);
    if bridge.misses.exceeded(ip).await {
        qr_ticket(event::REFUSED_RATE);
        return Err(AuthError::QrRateLimited);
    }
    let found = match id.filter(|id| secrets::is_token(id)) {
        Some(id) => bridge.load(id).await?,
        None => None,
    };
    match found.filter(|(_, t)| t.tenant == tenant.appid().as_str()) {
        Some(found) => Ok(found),
        None => Err(miss(bridge, ip).await),
    }
}

/// `GET qr/s/<id>`: the QR link. Outside WeChat: "请使用微信扫一扫". Otherwise the first phone
/// owns the ticket (status `scanned`) and logs in with the ordinary OAuth flow, bound to the
/// ticket; the same phone coming back after its callback goes straight to the confirmation.
pub(super) async fn scan(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    let dev_phone = auth
        .settings
        .qr
        .dev_phone
        .as_ref()
        .is_some_and(|aid| device::has_cookie(&parts.headers, &aid.cookie));
    if !device::is_wechat(&parts.headers) && !dev_phone {
        return Err(AuthError::QrOpenInWeChat);
    }
    let id = parts.uri.path().rsplit('/').next().unwrap_or_default();
    let secure = secure(tenant);
    let phone_secret = Holder::Phone
        .read(&parts.headers, secure)
        .unwrap_or_else(secrets::random_token);
    let phone = secrets::digest(PHONE, &phone_secret);
    let phone_ip =
        device::client_ip(parts, &auth.settings.trusted_proxies).map(|ip| ip.to_string());
    let settings = &auth.settings.qr;
    let mut ticket = None;
    for _ in 0..CAS_TRIES {
        let (raw, current) = ticket_of(auth, bridge, tenant, parts, Some(id)).await?;
        let next = current
            .scan(&phone, phone_ip.clone(), settings, now_ms())
            .map_err(refused)?;
        if next == current || bridge.replace(id, &raw, &next).await? {
            if next != current {
                qr_ticket(event::SCANNED);
                tracing::info!(ticket = TicketKey::of(id).fingerprint(), "QR code scanned");
            }
            ticket = Some(next);
            break;
        }
    }
    let ticket = ticket.ok_or_else(|| refused(Refusal::Used))?;
    let mut response = if matches!(ticket.state, State::Authorized { .. }) {
        redirect(&confirm_url(auth, tenant, id))
    } else {
        redirect_to_wechat(
            auth,
            tenant,
            &parts.headers,
            ReturnPath::default(),
            Some(QrTicketId::new(id.to_owned())),
        )
        .await?
    };
    add_cookie(
        &mut response,
        Holder::Phone.set(&phone_secret, secure, settings.absolute_ttl.as_secs()),
    );
    Ok(response)
}

/// `qr/confirm?id=…` of `tenant`.
fn confirm_url(auth: &AuthState, tenant: &ResolvedTenant, id: &str) -> String {
    format!("{}?id={id}", route_path(auth, tenant, "/qr/confirm"))
}

/// The end of the phone's OAuth callback for a flow bound to ticket `qr`: the identity goes
/// into the ticket (status stays `scanned` for the desktop), the phone goes to the confirmation
/// page. Only the phone that owns the ticket (its cookie) can do this. With
/// `qr.also_login_phone` the phone also gets a session (returned for the callback to set).
pub(in crate::layer) async fn authorized(
    auth: &AuthState,
    tenant: Option<&ResolvedTenant>,
    appid: &str,
    headers: &HeaderMap,
    qr: &QrTicketId,
    identity: Identity,
) -> Result<(OwnResponse, Option<crate::session::SessionId>), AuthError> {
    let bridge = super::bridge(auth)?;
    let id = qr.expose_secret();
    let secure = tenant.is_none_or(secure);
    let phone = Holder::Phone
        .read(headers, secure)
        .map(|s| secrets::digest(PHONE, &s))
        .ok_or_else(|| refused(Refusal::Used))?;
    let settings = &auth.settings.qr;
    let mut done = false;
    for _ in 0..CAS_TRIES {
        let Some((raw, current)) = bridge.load(id).await? else {
            return Err(refused(Refusal::Expired));
        };
        if current.tenant != appid {
            return Err(refused(Refusal::Used));
        }
        let next = current
            .authorize(&phone, identity.clone(), settings, now_ms())
            .map_err(refused)?;
        if bridge.replace(id, &raw, &next).await? {
            done = true;
            break;
        }
    }
    if !done {
        return Err(refused(Refusal::Used));
    }
    qr_ticket(event::AUTHORIZED);
    let mount = tenant.map_or("", ResolvedTenant::mount);
    let url = format!(
        "{mount}{}/qr/confirm?id={id}",
        auth.settings.dispatch.prefix
    );
    let session = if settings.also_login_phone {
        Some(issue_session(auth, headers, identity).await?)
    } else {
        None
    };
    Ok((redirect(&url), session))
}

/// The phone's cookie digest and secret, or the confirmation is refused.
fn phone_of(parts: &Parts, tenant: &ResolvedTenant) -> Result<(String, String), AuthError> {
    let secret = Holder::Phone
        .read(&parts.headers, secure(tenant))
        .ok_or(AuthError::QrConfirmRefused)?;
    Ok((secrets::digest(PHONE, &secret), secret))
}

/// `GET qr/confirm?id=…`: who asks, and the two buttons.
pub(super) async fn confirm_page(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    let (phone, phone_secret) = phone_of(parts, tenant)?;
    let id = query_param(parts, "id").unwrap_or_default();
    let (_, ticket) = ticket_of(auth, bridge, tenant, parts, Some(&id)).await?;
    let now = now_ms();
    ticket
        .awaiting_decision_of(&phone, &auth.settings.qr, now)
        .map_err(refused)?;
    let here = device::client_ip(parts, &auth.settings.trusted_proxies).map(|ip| ip.to_string());
    let desktop_ip = ticket
        .desktop_ip
        .as_deref()
        .map_or_else(|| "?".to_owned(), device::masked);
    let body = pages::confirm(&ConfirmPage {
        site: super::host_of(tenant),
        tenant_name: &tenant_name(auth, tenant),
        desktop_agent: &ticket.desktop_agent,
        desktop_ip: &desktop_ip,
        seconds_ago: now.saturating_sub(ticket.created_ms) / 1000,
        other_network: !device::same_network(
            here.as_deref().or(ticket.phone_ip()),
            ticket.desktop_ip.as_deref(),
        ),
        action: &route_path(auth, tenant, "/qr/confirm"),
        id: &id,
        token: &secrets::csrf_token(&phone_secret, &id),
    });
    Ok(html(StatusCode::OK, body))
}

/// `POST qr/confirm` (form: `id`, `token`, `decision` = `approve` | `reject`): the phone's
/// decision. Needs a same-origin `Origin`, the phone's cookie and the token derived from it.
pub(super) async fn decide<B>(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
    body: B,
) -> Result<OwnResponse, AuthError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if origin != Some(tenant.origin()) {
        qr_ticket(event::REFUSED_CONFIRM);
        tracing::info!("QR confirmation without a same-origin Origin refused");
        return Err(AuthError::QrConfirmRefused);
    }
    let (phone, phone_secret) = phone_of(parts, tenant).inspect_err(|_| {
        qr_ticket(event::REFUSED_CONFIRM);
    })?;
    let form = match Limited::new(body, MAX_FORM).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(AuthError::PayloadTooLarge),
        Err(_) => return Err(AuthError::BadRequest("unreadable request body")),
    };
    let field = |name: &str| {
        url::form_urlencoded::parse(&form)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let id = field("id").unwrap_or_default();
    let token = field("token").unwrap_or_default();
    let approve = match field("decision").as_deref() {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(AuthError::BadRequest("decision must be approve or reject")),
    };
    let expected = secrets::csrf_token(&phone_secret, &id);
    if !crate::secret::constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        qr_ticket(event::REFUSED_CONFIRM);
        tracing::info!("QR confirmation with a wrong token refused");
        return Err(AuthError::QrConfirmRefused);
    }
    let settings = &auth.settings.qr;
    let here = device::client_ip(parts, &auth.settings.trusted_proxies).map(|ip| ip.to_string());
    for _ in 0..CAS_TRIES {
        let (raw, current) = ticket_of(auth, bridge, tenant, parts, Some(&id)).await?;
        if approve
            && settings.require_same_network
            && !device::same_network(here.as_deref(), current.desktop_ip.as_deref())
        {
            qr_ticket(event::REFUSED_CONFIRM);
            return Err(AuthError::QrDifferentNetwork);
        }
        let next = current
            .decide(&phone, approve, settings, now_ms())
            .map_err(refused)?;
        if bridge.replace(&id, &raw, &next).await? {
            qr_ticket(if approve {
                event::APPROVED
            } else {
                event::REJECTED
            });
            tracing::info!(
                ticket = TicketKey::of(&id).fingerprint(),
                approved = approve,
                "QR login decided on the phone"
            );
            return Ok(html(StatusCode::OK, pages::decided(approve)));
        }
    }
    Err(refused(Refusal::Used))
}
