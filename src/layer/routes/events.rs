//! `POST events`: the platform's 授权事件接收URL (docs/wechat-protocol.md §2, §17.2, §17.7).
//!
//! The body is read through [`http_body_util::Limited`] (at most
//! [`MAX_PUSH_BODY`](crate::wechat::events::MAX_PUSH_BODY) bytes, 413 beyond), the query gives the
//! signature parameters, and [`WeChatOAuth::accept_push`](crate::wechat::oauth::WeChatOAuth::accept_push)
//! verifies `msg_signature`, decrypts, checks the component appid and persists a ticket. Only
//! then is WeChat answered with exactly `success`. A forged push is answered 403 (bad
//! signature or key) or 400 (malformed) and nothing is stored. Official-account mode receives
//! no pushes: 404. Every push is an `audit` line: accepted (with its `InfoType`) or refused
//! (with the error code).

use http::{StatusCode, request::Parts};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tower::BoxError;

use crate::{
    layer::{body::OwnResponse, error::AuthError, respond::text, state::AuthState},
    wechat::{
        error::WeChatError,
        events::{MAX_PUSH_BODY, PushError, PushEvent, PushQuery},
    },
};

/// `POST events`: the push is read, verified and applied, then counted
/// (`wxauth_pushes_total`, [`crate::metrics::push`]) and written as an `audit` line.
pub(super) async fn events<B>(
    auth: &AuthState,
    parts: &Parts,
    body: B,
) -> Result<OwnResponse, AuthError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if auth.wechat.component_appid().is_none() {
        return Err(AuthError::NotFound);
    }
    let outcome = receive(auth, parts, body).await;
    crate::metrics::push(&outcome);
    match &outcome {
        Ok(event) => tracing::info!(
            target: "audit",
            event = "push",
            outcome = "accepted",
            info_type = event.info_type(),
            authorizer_appid = event.authorizer_appid().map(|a| a.as_str()),
            "platform push accepted"
        ),
        Err(error) => tracing::info!(
            target: "audit",
            event = "push",
            outcome = "refused",
            reason = error.code(),
            "platform push refused"
        ),
    }
    outcome.map(|_| text(StatusCode::OK, "success"))
}

/// Reads, verifies, decrypts and applies one push.
async fn receive<B>(auth: &AuthState, parts: &Parts, body: B) -> Result<PushEvent, AuthError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let query = PushQuery::from_query(parts.uri.query().unwrap_or(""))
        .map_err(|e| AuthError::from(WeChatError::from(PushError::from(e))))?;
    let body = match Limited::new(body, MAX_PUSH_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(AuthError::PayloadTooLarge),
        Err(_) => return Err(AuthError::BadRequest("unreadable request body")),
    };
    Ok(auth.wechat.accept_push(&query, &body).await?)
}
