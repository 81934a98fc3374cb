//! `callback?code=…&state=…&appid=…`: WeChat's redirect back (wechat-protocol.md §8.2, §17.13–16).
//!
//! 1. `state` must look like one we issue, and [`SessionStore::take_flow`] must return its flow
//!    (single use, ≤ `flow_ttl` old) whose binding is in this browser's flow cookie (constant
//!    time). A state we cannot take but that [`SessionStore::completed`] remembers is a duplicate
//!    callback (double redirect, reload): no second session, just a 302 to `/`.
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
    let key = FlowKey::new(state);

    let Some(flow) = shared.sessions.take_flow(&key).await? else {
        if shared.sessions.completed(&key).await?.is_some() {
            tracing::info!("duplicate callback for a completed login; no second session");
            return Ok(redirect("/"));
        }
        tracing::info!("callback with an unknown, expired or used state");
        return Err(AuthError::InvalidState);
    };
    *return_path = Some(flow.return_path.clone());
    let bound = pending.as_ref().is_some_and(|p| p.contains(&flow.binding));
    if !bound {
        tracing::warn!(
            "callback state is not bound to this browser (missing or foreign flow cookie)"
        );
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
