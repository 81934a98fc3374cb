//! `callback`: WeChat returns here with `code`, `state` (and `appid` in component mode).
//!
//! Order matters: the state must be one this browser started (flow cookie, constant-time) and
//! still unused (server record, taken atomically); the `appid` must be ours; no `code` means the
//! user refused; the code is exchanged once; snapshot-mode users get no session; a duplicate
//! callback for an already completed state creates no second session; the new session always
//! gets a fresh id (an id the browser sent is never reused — its session is deleted).

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
    let key = FlowKey::new(state);
    let pending = shared.cookies.read_flow(headers);

    let Some(flow) = take_flow(shared, &key).await? else {
        // Already consumed: a duplicate callback (WeChat's double redirect, a reload). If the
        // first one completed, send the browser on without creating a second session.
        for _ in 0..DUPLICATE_TRIES {
            if shared
                .sessions
                .completed(&key)
                .await
                .map_err(|e| AuthError::Store(e.to_string()))?
                .is_some()
            {
                return Ok(redirect("/"));
            }
            tokio::time::sleep(DUPLICATE_WAIT).await;
        }
        return Err(AuthError::InvalidState);
    };
    // Bound to this browser? (A state from another browser is refused.)
    let mut pending = pending.ok_or(AuthError::InvalidState)?;
    if !pending.remove(&flow.binding) {
        return Err(AuthError::InvalidState);
    }
    let Some(code) = super::query_param(uri, "code").filter(|c| !c.is_empty()) else {
        return Err(AuthError::LoginRefused);
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
        return Err(AuthError::SnapshotUser);
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
