//! `health` (liveness: the process answers) and `ready` (new logins can work: the session store
//! answers and, in component mode, a verify ticket and a component token are held).
//!
//! Neither depends on a header or a user agent (oauth2-proxy GHSA-5hvv-m4w4-gf6v): they are
//! reserved routes, never a bypass of authentication for other paths.

use http::StatusCode;

use crate::layer::{
    body::OwnResponse,
    respond::{json, text},
    state::AuthState,
};

/// `GET health`.
pub(super) fn health() -> OwnResponse {
    text(StatusCode::OK, "ok")
}

/// `GET ready`: 200 `{"ready":true,"reasons":[]}` or 503 with the reasons (no secrets).
pub(super) async fn ready(auth: &AuthState) -> OwnResponse {
    let (store, wechat) = tokio::join!(auth.sessions.ping(), auth.wechat.readiness());
    let mut reasons = Vec::new();
    if let Err(e) = store {
        tracing::warn!(error = %e, "session store not ready");
        reasons.push("session store unreachable".to_owned());
    }
    reasons.extend(wechat.reasons);
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons }),
    )
}
