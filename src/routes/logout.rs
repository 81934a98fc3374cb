//! `logout?return=/path` (GET or POST): ends the session for good.
//!
//! The server-side record is deleted (a copied cookie stops working at once — vouch #187,
//! caddy-security #272), the cached JWT is dropped, the cookie is cleared, and the browser is
//! sent to the validated same-origin `return` path (default `/`).

use http::request::Parts;

use super::{login::has_session_cookie, return_param};
use crate::{
    error::AuthError,
    layer::{
        response::{OwnResponse, add_cookie, redirect},
        shared::Shared,
    },
};

/// `GET|POST logout`.
pub(crate) async fn logout(shared: &Shared, parts: &Parts) -> Result<OwnResponse, AuthError> {
    if let Some(id) = shared.cookies.read_session(&parts.headers) {
        // A store failure is an error page: the user must not believe they are logged out.
        shared.sessions.delete(&id).await?;
        shared.jwt.invalidate(id.expose_bytes()).await;
        tracing::info!(session = %id.fingerprint(), "logged out");
    }
    let mut response = redirect(return_param(parts).as_str());
    if has_session_cookie(shared, &parts.headers) {
        add_cookie(&mut response, shared.cookies.removal_cookie());
    }
    Ok(response)
}
