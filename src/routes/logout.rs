//! `logout`: deletes the server-side session, forgets its cached JWT, clears the cookie and
//! returns to a same-origin path.

use http::request::Parts;

use crate::error::AuthError;
use crate::layer::Shared;
use crate::layer::response::{OwnResponse, add_cookie, redirect};
use crate::session::ReturnPath;

/// Handles `GET|POST logout?return=/path`.
pub(crate) async fn handle(shared: &Shared, req: &Parts) -> Result<OwnResponse, AuthError> {
    if let Some(id) = shared.cookies.read_session(&req.headers) {
        shared
            .sessions
            .delete(&id)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?;
        shared.jwt.invalidate(id.expose_bytes()).await;
        tracing::info!(session = %id.fingerprint(), "logged out");
    }
    let target = super::query_param(&req.uri, "return")
        .and_then(|r| ReturnPath::parse(&r).ok())
        .unwrap_or_default();
    let mut response = redirect(target.as_str());
    add_cookie(&mut response, shared.cookies.removal_cookie());
    Ok(response)
}
