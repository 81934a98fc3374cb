//! `callback?code=…&state=…&appid=…`: WeChat's redirect back (wechat-protocol.md §8.2, §17.13–16).
//!
//! 1. `state` must look like one we issue and this browser must hold it: its encrypted flow
//!    cookie lists the state's binding (checked in constant time *before* anything is consumed,
//!    so another browser's state, a tampered one or a replayed URL never burns a pending login).
//!    Then [`SessionStore::take_flow`] must return the flow (single use, ≤ `flow_ttl` old). A
//!    state that [`SessionStore::completed`] remembers is a duplicate callback (double redirect,
//!    reload): no second session, just a 302 to `/`.
//! 2. No `code`: the user refused → a bilingual page with a retry link (no redirect loop).
//! 3. Component mode: the `appid` parameter must equal the authorizer appid.
//! 4. The code is exchanged once; `is_snapshotuser` → no session, a page asking the user to tap
//!    “使用完整服务”; with `snsapi_userinfo` the profile comes from `sns/userinfo`.
//! 5. A fresh session (any session the browser had is deleted), the flow remembered as
//!    completed, and a 302 to the flow's return path with the session cookie; the flow's binding
//!    is removed from the flow cookie (the cookie is removed when no flow is left).
//!
//! Nothing from the query (code, state) is logged or rendered.
//!
//! [`SessionStore::take_flow`]: crate::session::SessionStore::take_flow
//! [`SessionStore::completed`]: crate::session::SessionStore::completed

use http::request::Parts;

use super::query_param;
use crate::{
    Identity,
    error::AuthError,
    layer::{
        dispatch::accept_prefers_html,
        response::{OwnResponse, add_cookie, redirect},
        shared::Shared,
    },
    session::{FlowCookie, FlowKey, ReturnPath, SessionRecord},
    wechat::{AuthorizationCode, Scope},
};

/// How long a duplicate callback waits, in total, for the first one to complete
/// (`DUPLICATE_TRIES` × `DUPLICATE_WAIT`); only for a state this browser holds.
const DUPLICATE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
const DUPLICATE_TRIES: u32 = 30;

/// Longest state we could have issued (WeChat's own limit is 128 bytes; we issue 32).
const MAX_STATE_LEN: usize = 64;

/// `GET callback`. Always answers (errors are rendered here so the flow cookie is updated on
/// every outcome).
pub(crate) async fn callback(shared: &Shared, parts: &Parts) -> OwnResponse {
    let mut pending = shared.cookies.read_flow(&parts.headers);
    let had_flow_cookie = pending.is_some();
    let mut return_path = None;
    let result = run(shared, parts, &mut pending, &mut return_path).await;
    let mut response = result.unwrap_or_else(|error| {
        let retry = shared.login_url(return_path.as_ref().unwrap_or(&ReturnPath::default()));
        error.render(accept_prefers_html(&parts.headers), Some(&retry))
    });
    if had_flow_cookie {
        match pending {
            Some(p) if !p.is_empty() => add_cookie(&mut response, shared.cookies.flow_cookie(&p)),
            _ => add_cookie(&mut response, shared.cookies.flow_removal_cookie()),
        }
    }
    response
}

async fn run(
    shared: &Shared,
    parts: &Parts,
    pending: &mut Option<FlowCookie>,
    return_path: &mut Option<ReturnPath>,
) -> Result<OwnResponse, AuthError> {
    let state = query_param(parts, "state")
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_STATE_LEN
                && s.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .ok_or(AuthError::InvalidState)?;
    let binding = super::flow_binding(&state);
    let key = FlowKey::new(state);

    // Is this browser holding the state (its encrypted flow cookie lists the binding)? Checked
    // before anything is consumed: another browser's state, a tampered one or a bare replay of
    // someone's callback URL must never burn their pending login.
    let holds_state = pending.as_ref().is_some_and(|p| p.contains(&binding));
    if !holds_state {
        if shared.sessions.completed(&key).await?.is_some() {
            tracing::info!(
                "callback for a completed login (reload or duplicate); no second session"
            );
            return Ok(redirect("/"));
        }
        tracing::info!("callback state is not held by this browser (missing, foreign or tampered)");
        return Err(AuthError::InvalidState);
    }
    let Some(flow) = shared.sessions.take_flow(&key).await? else {
        // This browser holds the state but the flow is gone: a duplicate callback (WeChat's
        // double redirect, a double click) racing the first one, or an expired flow. Give the
        // first one a bounded moment to finish, then send the browser on without a second
        // session.
        for _ in 0..DUPLICATE_TRIES {
            if shared.sessions.completed(&key).await?.is_some() {
                tracing::info!("duplicate callback for a completed login; no second session");
                return Ok(redirect("/"));
            }
            tokio::time::sleep(DUPLICATE_WAIT).await;
        }
        tracing::info!("callback with an expired or used state");
        return Err(AuthError::InvalidState);
    };
    *return_path = Some(flow.return_path.clone());
    // The server-side record names the same binding (defence in depth).
    if flow.binding != binding {
        tracing::warn!("login flow binding mismatch");
        return Err(AuthError::InvalidState);
    }
    if let Some(p) = pending.as_mut() {
        p.remove(&flow.binding);
    }

    let Some(code) = query_param(parts, "code").filter(|c| !c.is_empty()) else {
        tracing::info!("the user refused the authorization");
        return Err(AuthError::LoginRefused);
    };
    if shared.wechat.component_appid().is_some() {
        let appid = query_param(parts, "appid");
        if appid.as_deref() != Some(shared.wechat.authorizer_appid().as_str()) {
            tracing::warn!("callback appid does not match the configured authorizer appid");
            return Err(AuthError::AppIdMismatch);
        }
    }

    let token = shared
        .wechat
        .exchange_code(&AuthorizationCode::new(code))
        .await?;
    if token.is_snapshot_user {
        tracing::info!("snapshot-mode user; no session created");
        return Err(AuthError::SnapshotUser);
    }
    let appid = shared.wechat.authorizer_appid().as_str().to_owned();
    // Profile only when we asked for it and WeChat granted it (else snsapi_base: openid only).
    let wants_profile =
        shared.settings.scope == Scope::UserInfo && token.has_scope(Scope::UserInfo);
    let identity = if wants_profile {
        let info = shared.wechat.user_info(&token).await?;
        Identity {
            openid: info.openid.as_str().to_owned(),
            unionid: info
                .unionid
                .or_else(|| token.unionid.clone())
                .map(|u| u.as_str().to_owned()),
            nickname: info.nickname,
            avatar: info.headimgurl,
            appid,
            scope: Scope::UserInfo.as_str().to_owned(),
        }
    } else {
        Identity {
            openid: token.openid.as_str().to_owned(),
            unionid: token.unionid.as_ref().map(|u| u.as_str().to_owned()),
            nickname: String::new(),
            avatar: String::new(),
            appid,
            scope: Scope::Base.as_str().to_owned(),
        }
    };

    if let Some(old) = shared.cookies.read_session(&parts.headers) {
        shared.sessions.delete(&old).await?;
        shared.jwt.invalidate(old.expose_bytes()).await;
    }
    let id = shared.sessions.create(SessionRecord::new(identity)).await?;
    if let Err(e) = shared
        .sessions
        .remember_completed(&key, &id, shared.settings.flow_ttl)
        .await
    {
        // The login itself succeeded; only duplicate detection is weakened.
        tracing::warn!(error = %e, "could not remember the completed login flow");
    }
    tracing::info!(session = %id.fingerprint(), "login completed");
    let mut response = redirect(flow.return_path.as_str());
    add_cookie(&mut response, shared.cookies.session_cookie(&id));
    Ok(response)
}
