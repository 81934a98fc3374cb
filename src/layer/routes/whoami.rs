//! `whoami`: the current identity as JSON (a debugging aid for "why am I not logged in?"), or
//! 401 JSON / the login page link when there is no session. Never shows the JWT or the cookie.

use http::{StatusCode, request::Parts};

use crate::layer::{
    body::OwnResponse, error::AuthError, respond::json, state::AuthState, tenant::ResolvedTenant,
};

/// `GET whoami`.
pub(super) async fn whoami(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    match auth.session(&parts.headers, tenant).await? {
        Some((_, record)) => {
            let mut body = serde_json::to_value(&record.identity)
                .map_err(|_| AuthError::Internal("identity does not serialize"))?;
            body["session_created_at"] = serde_json::Value::from(record.created_at);
            Ok(json(StatusCode::OK, &body))
        }
        None => Err(AuthError::Unauthenticated),
    }
}
