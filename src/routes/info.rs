//! `jwks.json`, `whoami`, `health` and `ready`.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::AuthError;
use crate::layer::Shared;
use crate::layer::response::{OwnResponse, json, json_bytes, text};

/// `GET jwks.json`: the JWT verification keys (current and previous). Cacheable for 5 minutes.
pub(crate) fn jwks(shared: &Shared) -> OwnResponse {
    let mut response = json_bytes(StatusCode::OK, shared.jwt.jwks_json());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `GET whoami`: the current identity as JSON, or 401.
pub(crate) async fn whoami(shared: &Shared, headers: &HeaderMap) -> Result<OwnResponse, AuthError> {
    match shared.current_session(headers).await? {
        Some((_, identity)) => Ok(json(
            StatusCode::OK,
            &serde_json::to_value(&identity).unwrap_or_default(),
        )),
        None => Err(AuthError::Unauthenticated),
    }
}

/// `GET health`: liveness — the process answers.
pub(crate) fn health() -> OwnResponse {
    text(StatusCode::OK, "ok")
}

/// `GET ready`: the session store answers, and (component mode) a ticket and a component token
/// are present. 503 with the reasons otherwise.
pub(crate) async fn ready(shared: &Shared) -> OwnResponse {
    let mut reasons = Vec::new();
    if let Err(err) = shared.sessions.ping().await {
        reasons.push(format!("session store: {err}"));
    }
    let wechat = shared.wechat.readiness().await;
    reasons.extend(wechat.reasons);
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({ "ready": ready, "reasons": reasons }),
    )
}
