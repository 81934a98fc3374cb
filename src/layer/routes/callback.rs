//! `callback?code=…&state=…&appid=…`: WeChat's redirect back (docs/wechat-protocol.md §8.2, §17.13–16).
//!
//! 1. `state` must look like one we issue and this browser must hold it: its encrypted flow
//!    cookie lists the state's binding (checked in constant time) with a start time no older than
//!    `flow_ttl`. Both are checked *before* anything is consumed, so another browser's state, a
//!    tampered or expired one or a replayed URL never burns a pending login. Then
//!    [`SessionStore::consume_flow`] must redeem the state (atomic, single use, across
//!    instances). A state that [`SessionStore::completed`] remembers is a duplicate callback
//!    (WeChat's in-app browser loads the callback twice; reload): no second session, a 302 to `/`.
//! 2. No `code`: the user refused → a bilingual page with a retry link (no redirect loop).
//! 3. Component mode: the `appid` parameter must equal the authorizer appid.
//! 4. Everything that talks to WeChat — the component token (with its retries), the code
//!    exchange, `sns/userinfo` — runs under one deadline ([`WeChatOAuth::login_deadline`]); past
//!    it the user gets the "WeChat timed out" page (503) and nothing is stored. The code is
//!    exchanged once; `is_snapshotuser` → no session, a page asking the user to tap
//!    “使用完整服务”; with `snsapi_userinfo` the profile comes from `sns/userinfo`.
//! 5. The access lists must let the person in ([`AuthError::AccessDenied`]: a 403 page, no
//!    session).
//! 6. A fresh session (any session the browser had is deleted), the flow remembered as
//!    completed, and a 302 to the flow's return path with the session cookie; the flow is
//!    removed from the flow cookie (the cookie is removed when no flow is left).
//!
//! A flow started from a desktop QR code (`LoginFlow::qr`) ends differently after step 5: the
//! identity goes into the ticket and the phone to the confirmation page (`layer::qr::phone`);
//! the phone gets a session only with `qr.also_login_phone`. The desktop's session is made
//! later by `issue_session`, the same function step 6 uses.
//!
//! Nothing from the query (code, state) is logged or rendered.
//!
//! [`SessionStore::consume_flow`]: crate::session::SessionStore::consume_flow
//! [`SessionStore::completed`]: crate::session::SessionStore::completed
//! [`WeChatOAuth::login_deadline`]: crate::wechat::oauth::WeChatOAuth::login_deadline

use std::time::Duration;

use http::{HeaderMap, request::Parts};

use super::query_param;
use crate::{
    Identity,
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
    negotiate::Answer,
    session::{
        FlowBinding, FlowCookie, FlowKey, LoginFlow, ReturnPath, SessionId, SessionRecord,
        flow::FLOW_CLOCK_SKEW_SECS,
    },
    wechat::{AuthorizationCode, AuthorizerAppId, Scope, error::WeChatError},
};

/// How long a duplicate callback waits, in total, for the first one to complete
/// (`DUPLICATE_TRIES` × `DUPLICATE_WAIT`); only for a state this browser holds.
const DUPLICATE_WAIT: Duration = Duration::from_millis(100);
const DUPLICATE_TRIES: u32 = 30;

/// Longest state we could have issued (WeChat's own limit is 128 bytes; we issue 32).
const MAX_STATE_LEN: usize = 64;

/// `GET callback`. Always answers (errors are rendered here so the flow cookie is updated on
/// every outcome).
pub(super) async fn callback(
    auth: &AuthState,
    tenant: Option<&ResolvedTenant>,
    parts: &Parts,
) -> OwnResponse {
    let mut pending = auth.cookies.read_flow(&parts.headers);
    let had_flow_cookie = pending.is_some();
    let mut return_path = None;
    let result = run(auth, tenant, parts, &mut pending, &mut return_path).await;
    crate::metrics::login_callback(&result, tenant.map(|t| t.appid().as_str()));
    let mut response = result.unwrap_or_else(|error| {
        let retry = auth.login_url(
            tenant.map_or("", ResolvedTenant::mount),
            return_path.as_ref().unwrap_or(&ReturnPath::default()),
        );
        error.render(Answer::for_request(&parts.headers), Some(&retry))
    });
    if had_flow_cookie {
        match pending {
            Some(p) if !p.is_empty() => add_cookie(&mut response, auth.cookies.flow_cookie(&p)),
            _ => add_cookie(&mut response, auth.cookies.flow_removal_cookie()),
        }
    }
    response
}

/// The callback as named steps (see the module docs); each step either hands on what the next
/// one needs or ends the callback with an answer.
async fn run(
    auth: &AuthState,
    tenant: Option<&ResolvedTenant>,
    parts: &Parts,
    pending: &mut Option<FlowCookie>,
    return_path: &mut Option<ReturnPath>,
) -> Result<OwnResponse, AuthError> {
    let (key, binding) = state_of(parts)?;
    let flow = match held_flow(auth, pending, &key, &binding, return_path).await? {
        Held::Live(flow) => flow,
        Held::Completed => return Ok(redirect("/")),
    };
    let appid = flow_tenant(auth, tenant, &flow, parts)?;
    // The marker outlives the flow (its remaining lifetime plus clock slack), so the same cookie
    // and state can never be redeemed twice.
    let marker_ttl = auth.settings.flow_ttl + Duration::from_secs(2 * FLOW_CLOCK_SKEW_SECS + 1);
    if let Redeemed::Already(answer) = redeem(auth, &key, marker_ttl).await? {
        // A duplicate of a QR phone's callback goes on to the confirmation (which checks the
        // phone's cookie), not to `/`.
        return match (&flow.qr, answer) {
            (Some(qr), Ok(_)) => Ok(redirect(&format!(
                "{}{}/qr/confirm?id={}",
                tenant.map_or("", ResolvedTenant::mount),
                auth.settings.dispatch.prefix,
                qr.expose_secret()
            ))),
            (_, answer) => answer,
        };
    }
    if let Some(p) = pending.as_mut() {
        p.remove(&binding);
    }
    let code = granted_code(auth, parts, &appid, flow.website)?;
    let identity = identity_within_deadline(auth, &appid, code, flow.website).await?;
    // Who may log in: checked before anything is stored, so a refused person has no session.
    auth.admit(&identity)?;
    if let Some(qr) = &flow.qr {
        // A phone lending its identity to a desktop QR login: into the ticket, then the
        // confirmation page; a session of its own only with `qr.also_login_phone`.
        let (mut response, session) =
            qr::phone::authorized(auth, tenant, appid.as_str(), &parts.headers, qr, identity)
                .await?;
        let marker = match session {
            Some(id) => {
                add_cookie(&mut response, auth.cookies.session_cookie(&id));
                id
            }
            // Marks the state as completed for duplicate callbacks; names no session.
            None => SessionId::generate(),
        };
        if let Err(e) = auth
            .sessions
            .remember_completed(&key, &marker, marker_ttl)
            .await
        {
            tracing::warn!(error = %e, "could not remember the completed login flow");
        }
        return Ok(response);
    }
    let response = open_session(auth, parts, identity, &key, marker_ttl, &flow.return_path).await?;
    crate::metrics::login_completed(flow.created_at, appid.as_str());
    Ok(response)
}

/// Step 1b': the account the flow was started for, which the callback must come back for —
/// checked before anything is consumed, so a callback for another account never burns the
/// login: the tenant resolved for the callback request (when its host or path chose it) and
/// the `appid` WeChat names (when it names one) must both be the flow's.
fn flow_tenant(
    auth: &AuthState,
    resolved: Option<&ResolvedTenant>,
    flow: &LoginFlow,
    parts: &Parts,
) -> Result<AuthorizerAppId, AuthError> {
    let appid = match (&flow.appid, resolved) {
        (Some(appid), _) => AuthorizerAppId::new(appid.as_str()),
        // A flow cookie from before tenants existed: only the one account can be meant.
        (None, Some(tenant)) if auth.resolver.is_single() => tenant.appid().clone(),
        (None, _) => return Err(AuthError::InvalidState),
    };
    if let Some(tenant) = resolved.filter(|t| t.is_located()) {
        if tenant.appid() != &appid {
            tracing::warn!(
                tenant = auth.label(tenant),
                "callback arrived for another official account than the login's"
            );
            return Err(AuthError::AppIdMismatch);
        }
    }
    if query_param(parts, "appid").is_some_and(|named| named != appid.as_str()) {
        tracing::warn!("callback appid names another official account than the login's");
        return Err(AuthError::AppIdMismatch);
    }
    Ok(appid)
}

/// Step 1a: the `state` parameter, if it looks like one we issue, as the flow key and the
/// browser binding it must have.
fn state_of(parts: &Parts) -> Result<(FlowKey, FlowBinding), AuthError> {
    let state = query_param(parts, "state")
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_STATE_LEN
                && s.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .ok_or(AuthError::InvalidState)?;
    let binding = FlowBinding::for_state(&state);
    Ok((FlowKey::new(state), binding))
}

/// What this browser holds for the state.
enum Held {
    /// A pending login that is still young enough.
    Live(LoginFlow),
    /// Nothing pending, but the login was completed already (a reload or duplicate callback).
    Completed,
}

/// Step 1b: does this browser hold the state (its encrypted flow cookie lists the binding), and
/// is the flow still young enough? Checked before anything is consumed: another browser's
/// state, a tampered one or a bare replay of someone's callback URL must never burn their
/// login. An expired flow is dropped from the cookie. The flow's return path is noted as soon
/// as the flow is found, so that even an expired flow's error page retries towards it.
async fn held_flow(
    auth: &AuthState,
    pending: &mut Option<FlowCookie>,
    key: &FlowKey,
    binding: &FlowBinding,
    return_path: &mut Option<ReturnPath>,
) -> Result<Held, AuthError> {
    let Some(flow) = pending.as_ref().and_then(|p| p.find(binding)).cloned() else {
        if auth.sessions.completed(key).await?.is_some() {
            tracing::info!(
                "callback for a completed login (reload or duplicate); no second session"
            );
            return Ok(Held::Completed);
        }
        tracing::info!("callback state is not held by this browser (missing, foreign or tampered)");
        return Err(AuthError::InvalidState);
    };
    *return_path = Some(flow.return_path.clone());
    if !flow.is_live(unix_now(), auth.settings.flow_ttl) {
        tracing::info!("callback for an expired login flow");
        if let Some(p) = pending.as_mut() {
            p.remove(binding);
        }
        return Err(AuthError::InvalidState);
    }
    Ok(Held::Live(flow))
}

/// Whether this callback redeemed the state.
enum Redeemed {
    /// This callback is the one: go on.
    Now,
    /// Redeemed before (a duplicate racing the first callback, or a replay): the answer.
    Already(Result<OwnResponse, AuthError>),
}

/// Step 1c: redeem the state — once, on any instance. A state redeemed already is a duplicate
/// callback (WeChat's double load, a double click) racing the first one, or a replay: the first
/// one gets a bounded moment to finish, then the browser is sent on without a second session.
async fn redeem(
    auth: &AuthState,
    key: &FlowKey,
    marker_ttl: Duration,
) -> Result<Redeemed, AuthError> {
    if auth.sessions.consume_flow(key, marker_ttl).await? {
        return Ok(Redeemed::Now);
    }
    for _ in 0..DUPLICATE_TRIES {
        if auth.sessions.completed(key).await?.is_some() {
            tracing::info!("duplicate callback for a completed login; no second session");
            return Ok(Redeemed::Already(Ok(redirect("/"))));
        }
        tokio::time::sleep(DUPLICATE_WAIT).await;
    }
    tracing::info!("callback with an already used state");
    Ok(Redeemed::Already(Err(AuthError::InvalidState)))
}

/// Steps 2 and 3: the authorization code (none: the user refused), and in component mode the
/// `appid` WeChat names must be the login's account (a website login's callback names none).
fn granted_code(
    auth: &AuthState,
    parts: &Parts,
    appid: &AuthorizerAppId,
    website: bool,
) -> Result<String, AuthError> {
    let Some(code) = query_param(parts, "code").filter(|c| !c.is_empty()) else {
        tracing::info!("the user refused the authorization");
        return Err(AuthError::LoginRefused);
    };
    if auth.wechat.component_appid().is_some() && !website {
        let named = query_param(parts, "appid");
        if named.as_deref() != Some(appid.as_str()) {
            tracing::warn!("callback appid does not match the login's authorizer appid");
            return Err(AuthError::AppIdMismatch);
        }
    }
    Ok(code)
}

/// Step 4: everything that waits on WeChat, under one deadline; nothing is stored when it runs
/// out.
async fn identity_within_deadline(
    auth: &AuthState,
    appid: &AuthorizerAppId,
    code: String,
    website: bool,
) -> Result<Identity, AuthError> {
    let deadline = auth.wechat.login_deadline();
    let fetched = async {
        if website {
            website_identity(auth, code).await
        } else {
            fetch_identity(auth, appid, code).await
        }
    };
    tokio::time::timeout(deadline, fetched).await.map_err(|_| {
        tracing::warn!(
            deadline_ms = deadline.as_millis(),
            "login did not complete within its deadline"
        );
        WeChatError::Timeout {
            endpoint: "login (deadline)",
        }
    })?
}

/// Step 5: a fresh session (any session the browser had is deleted), the flow remembered as
/// completed, and a 302 to the return path with the session cookie.
async fn open_session(
    auth: &AuthState,
    parts: &Parts,
    identity: Identity,
    key: &FlowKey,
    marker_ttl: Duration,
    return_path: &ReturnPath,
) -> Result<OwnResponse, AuthError> {
    let id = issue_session(auth, &parts.headers, identity).await?;
    if let Err(e) = auth.sessions.remember_completed(key, &id, marker_ttl).await {
        // The login itself succeeded; only duplicate detection is weakened.
        tracing::warn!(error = %e, "could not remember the completed login flow");
    }
    let mut response = redirect(return_path.as_str());
    add_cookie(&mut response, auth.cookies.session_cookie(&id));
    Ok(response)
}

/// The one way a login becomes a session (the callback's, and the desktop QR login's finish):
/// any session the browser had is deleted (and its JWT forgotten), a fresh `SessionRecord`
/// for `identity` is stored under a new id, and the login is audited. The caller has checked
/// the access lists.
pub(in crate::layer) async fn issue_session(
    auth: &AuthState,
    headers: &HeaderMap,
    identity: Identity,
) -> Result<SessionId, AuthError> {
    if let Some(old) = auth.cookies.read_session(headers) {
        auth.sessions.delete(&old).await?;
        let authorizer = AuthorizerAppId::new(identity.appid.as_str());
        auth.jwt
            .invalidate_audience(old.expose_bytes(), auth.resolver.audience_of(&authorizer))
            .await;
    }
    let login = crate::audit::Login::of(&identity);
    let id = auth.sessions.create(SessionRecord::new(identity)).await?;
    login.completed(&id);
    Ok(id)
}

/// The code exchange and, when the scope allows it, the profile: the user's identity.
/// `unauthorized` arriving during the login makes the exchange refuse (the tenant's 403 page,
/// no session).
async fn fetch_identity(
    auth: &AuthState,
    authorizer: &AuthorizerAppId,
    code: String,
) -> Result<Identity, AuthError> {
    let token = auth
        .wechat
        .exchange_code(authorizer, &AuthorizationCode::new(code))
        .await?;
    if token.is_snapshot_user {
        tracing::info!("snapshot-mode user; no session created");
        return Err(AuthError::SnapshotUser);
    }
    let appid = AppId::from(authorizer);
    // Profile only when we asked for it and WeChat granted it (else snsapi_base: openid only).
    let wants_profile = auth.settings.scope == Scope::UserInfo && token.has_scope(Scope::UserInfo);
    Ok(if wants_profile {
        let info = auth.wechat.user_info(&token).await?;
        Identity {
            openid: info.openid,
            unionid: info.unionid.or_else(|| token.unionid.clone()),
            nickname: info.nickname,
            avatar: info.headimgurl,
            appid,
            scope: Scope::UserInfo,
        }
    } else {
        Identity {
            openid: token.openid,
            unionid: token.unionid,
            nickname: String::new(),
            avatar: String::new(),
            appid,
            scope: Scope::Base,
        }
    })
}

/// A website login's identity (`qr.desktop` website mode): the code exchanged with the website
/// app's own secret, its profile. The openid is the website app's, and so is `appid`.
async fn website_identity(auth: &AuthState, code: String) -> Result<Identity, AuthError> {
    let Some(app) = auth.settings.qr.desktop.website() else {
        // A website flow from when the mode was on: nothing can exchange its code now.
        tracing::info!("website login callback, but website mode is off");
        return Err(AuthError::InvalidState);
    };
    let login = app.login(&AuthorizationCode::new(code)).await?;
    Ok(Identity {
        openid: login.openid,
        unionid: login.unionid,
        nickname: login.nickname,
        avatar: login.headimgurl,
        appid: AppId::new(login.appid.as_str()),
        scope: Scope::UserInfo,
    })
}
