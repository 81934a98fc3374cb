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

/// Most tenants listed by `/ready` under `tenants` (the count is always complete).
const MAX_LISTED_TENANTS: usize = 100;

/// `GET ready`: 200 `{"ready":true,"reasons":[]}` or 503 with the reasons (no secrets). Tenants
/// that cannot log users in (revoked, no web permission) are listed under `tenants` (at most
/// 100, with `tenant_problems` counting them all) and never make the platform unready.
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
    let problems: Vec<_> = auth
        .wechat
        .tenants()
        .list()
        .into_iter()
        .filter(|(_, record)| !record.status.allows_login())
        .collect();
    let listed: Vec<_> = problems
        .iter()
        .take(MAX_LISTED_TENANTS)
        .map(|(appid, record)| serde_json::json!({ "appid": appid, "status": record.status }))
        .collect();
    json(
        status,
        &serde_json::json!({
            "ready": reasons.is_empty(),
            "reasons": reasons,
            "tenant_problems": problems.len(),
            "tenants": listed,
        }),
    )
}
