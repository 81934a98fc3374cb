//! `callback`: WeChat returns here with `code`, `state` (and `appid` in component mode).
//!
//! Order matters: the state must be one this browser started (flow cookie, constant-time) and
//! still unused (server record, taken atomically); the `appid` must be ours; no `code` means the
//! user refused; the code is exchanged once; snapshot-mode users get no session; a duplicate
//! callback for an already completed state creates no second session; the new session always
//! gets a fresh id (an id the browser sent is never reused — its session is deleted).
//!
//! The flow binding is derived from the state (`routes::flow_binding`), so a callback whose
//! flow cookie does not list the state is refused before anything is consumed (it can only be a
//! replay of someone else's URL, a tampered state or a reload after completion): it cannot burn
//! a pending login, and only a state this browser holds is waited for as a duplicate.

use std::time::Duration;

use http::request::Parts;

use crate::error::AuthError;
use crate::identity::Identity;
use crate::layer::Shared;
use crate::layer::response::{OwnResponse, add_cookie, redirect};
use crate::session::{FlowKey, SessionRecord};
use crate::wechat::error::{ErrorClass, WeChatError};
use crate::wechat::{AuthorizationCode, Scope};

/// How long a concurrent duplicate callback waits for the first one to finish.
const DUPLICATE_WAIT: Duration = Duration::from_millis(100);
const DUPLICATE_TRIES: u32 = 30;

/// Handles `GET callback?code&state&appid`.
pub(crate) async fn handle(shared: &Shared, req: &Parts) -> Result<OwnResponse, AuthError> {
    let uri = &req.uri;
    let headers = &req.headers;
    let state = super::query_param(uri, "state")
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or(AuthError::InvalidState)?;
    let binding = super::flow_binding(&state);
    let key = FlowKey::new(state);
    let pending = shared.cookies.read_flow(headers);
    let Some(mut pending) = pending.filter(|p| p.contains(&binding)) else {
        // This browser was not issued this state (no flow cookie, another browser's state, a
        // tampered one), or its flow cookie no longer lists it because the login completed.
        // Never consume the flow here: a replay of someone else's callback URL must not burn
        // their pending login. A reload after completion is sent on, without waiting.
        return if completed(shared, &key).await? {
            Ok(redirect("/"))
        } else {
            Err(AuthError::InvalidState)
        };
    };

    let Some(flow) = take_flow(shared, &key).await? else {
        // Already consumed: a duplicate callback (WeChat's double redirect, a reload). If the
        // first one completed, send the browser on without creating a second session.
        for _ in 0..DUPLICATE_TRIES {
            if completed(shared, &key).await? {
                return Ok(redirect("/"));
            }
            tokio::time::sleep(DUPLICATE_WAIT).await;
        }
        return Err(AuthError::InvalidState);
    };
    // Bound to this browser? (A state from another browser is refused.)
    if !pending.remove(&flow.binding) {
        return Err(AuthError::InvalidState);
    }
    let Some(code) = super::query_param(uri, "code").filter(|c| !c.is_empty()) else {
        return Ok(retry_page(shared, headers, AuthError::LoginRefused, &flow));
    };
    if shared.wechat.component_appid().is_some() {
        let appid = super::query_param(uri, "appid").unwrap_or_default();
        if appid != shared.wechat.authorizer_appid().as_str() {
            return Err(AuthError::AppIdMismatch);
        }
    }

    let token = shared
        .wechat
        .exchange_code(&AuthorizationCode::new(code))
        .await
        .map_err(from_wechat)?;
    if token.is_snapshot_user {
        return Ok(retry_page(shared, headers, AuthError::SnapshotUser, &flow));
    }
    let wants_profile =
        shared.settings.scope == Scope::UserInfo && token.has_scope(Scope::UserInfo);
    let identity = if wants_profile {
        let info = shared.wechat.user_info(&token).await.map_err(from_wechat)?;
        Identity {
            openid: info.openid.as_str().to_owned(),
            unionid: info
                .unionid
                .or(token.unionid.clone())
                .map(|u| u.as_str().to_owned()),
            nickname: info.nickname,
            avatar: info.headimgurl,
            appid: shared.wechat.authorizer_appid().as_str().to_owned(),
            scope: token.scope.clone(),
        }
    } else {
        Identity {
            openid: token.openid.as_str().to_owned(),
            unionid: token.unionid.as_ref().map(|u| u.as_str().to_owned()),
            nickname: String::new(),
            avatar: String::new(),
            appid: shared.wechat.authorizer_appid().as_str().to_owned(),
            scope: token.scope.clone(),
        }
    };

    // Never reuse an id the browser sent: end that session, issue a fresh one.
    if let Some(old) = shared.cookies.read_session(headers) {
        shared
            .sessions
            .delete(&old)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?;
        shared.jwt.invalidate(old.expose_bytes()).await;
    }
    let id = shared
        .sessions
        .create(SessionRecord::new(identity))
        .await
        .map_err(|e| AuthError::Store(e.to_string()))?;
    shared
        .sessions
        .remember_completed(&key, &id, shared.settings.flow_ttl)
        .await
        .map_err(|e| AuthError::Store(e.to_string()))?;
    tracing::info!(session = %id.fingerprint(), "login completed");

    let mut response = redirect(flow.return_path.as_str());
    add_cookie(&mut response, shared.cookies.session_cookie(&id));
    let flow_cookie = if pending.is_empty() {
        shared.cookies.flow_removal_cookie()
    } else {
        shared.cookies.flow_cookie(&pending)
    };
    add_cookie(&mut response, flow_cookie);
    Ok(response)
}

/// The page for a login that ended without a session but may be retried: its retry link starts
/// a new login that returns to the page the user originally wanted (not to `/`).
fn retry_page(
    shared: &Shared,
    headers: &http::HeaderMap,
    err: AuthError,
    flow: &crate::session::LoginFlow,
) -> OwnResponse {
    let login = shared.login_url(&flow.return_path);
    err.render(super::wants_html(headers), Some(&login))
}

/// Whether the flow `key` already completed (a duplicate callback).
async fn completed(shared: &Shared, key: &FlowKey) -> Result<bool, AuthError> {
    shared
        .sessions
        .completed(key)
        .await
        .map(|session| session.is_some())
        .map_err(|e| AuthError::Store(e.to_string()))
}

async fn take_flow(
    shared: &Shared,
    key: &FlowKey,
) -> Result<Option<crate::session::LoginFlow>, AuthError> {
    shared
        .sessions
        .take_flow(key)
        .await
        .map_err(|e| AuthError::Store(e.to_string()))
}

/// Maps a WeChat failure during login to what the user is told.
pub(crate) fn from_wechat(err: WeChatError) -> AuthError {
    match (&err, err.class()) {
        (WeChatError::Timeout { .. }, _) => AuthError::WeChatTimeout,
        (WeChatError::NoTicket, _) | (_, ErrorClass::Ticket) => AuthError::PlatformNotReady,
        (WeChatError::Store(e), _) => AuthError::Store(e.to_string()),
        (_, ErrorClass::Reauthorize) => AuthError::CodeRejected,
        (_, ErrorClass::Configuration) => AuthError::Misconfigured(err.to_string()),
        _ => AuthError::WeChatUnavailable(err.to_string()),
    }
}
