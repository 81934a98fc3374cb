//! The reserved endpoints under the configurable prefix (default `/_wxauth`), one file each.
//!
//! | route | methods | what it does |
//! |---|---|---|
//! | `login?return=/path` | GET, HEAD | starts a login flow: 302 to WeChat's authorize page |
//! | `callback` | GET, HEAD | WeChat's redirect back: state, appid, code exchange, session, 302 |
//! | `events` | POST | ticket pushes: bounded body, verified, decrypted, stored, `success` |
//! | `logout?return=/path` | GET, POST | deletes the session, clears the cookie, 302 |
//! | `jwks.json` | GET, HEAD | the public keys of the identity JWT |
//! | `whoami` | GET, HEAD | the current identity as JSON, or 401 |
//! | `health` | GET, HEAD | liveness: `ok` |
//! | `ready` | GET, HEAD | readiness: 200, or 503 with the reasons as JSON |
//!
//! Every failure is an [`AuthError`] rendered here, in one function, by
//! [`AuthError::render`] (HTML when the client prefers it, JSON otherwise).

mod callback;
mod events;
mod health;
mod jwks;
pub(super) mod login;
mod logout;
mod whoami;

use http::{Method, request::Parts};
use tower::BoxError;

use crate::{
    layer::{body::OwnResponse, dispatch::Route, error::AuthError, state::AuthState},
    negotiate::Answer,
    session::{FlowBinding, ReturnPath},
};

/// Answers a reserved route. Never fails: errors become pages or JSON here.
pub(super) async fn serve<B>(auth: &AuthState, route: Route, parts: Parts, body: B) -> OwnResponse
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let method = &parts.method;
    let read_only = *method == Method::GET || *method == Method::HEAD;
    let result = match route {
        Route::Login if read_only => login::login(auth, &parts).await,
        Route::Callback if read_only => Ok(callback::callback(auth, &parts).await),
        Route::Events if *method == Method::POST => events::events(auth, &parts, body).await,
        Route::Logout if read_only || *method == Method::POST => logout::logout(auth, &parts).await,
        Route::Jwks if read_only => Ok(jwks::jwks(auth)),
        Route::WhoAmI if read_only => whoami::whoami(auth, &parts).await,
        Route::Health if read_only => Ok(health::health()),
        Route::Ready if read_only => Ok(health::ready(auth).await),
        Route::NotFound => Err(AuthError::NotFound),
        Route::Events => Err(AuthError::MethodNotAllowed { allow: "POST" }),
        Route::Logout => Err(AuthError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
        _ => Err(AuthError::MethodNotAllowed { allow: "GET, HEAD" }),
    };
    result.unwrap_or_else(|error| {
        let link = match error {
            AuthError::CrossSiteLogout => logout::confirm_url(auth, &parts),
            _ => auth.login_url(&ReturnPath::default()),
        };
        error.render(Answer::for_request(&parts.headers), Some(&link))
    })
}

/// The browser binding of the login flow `state`: the first 128 bits of SHA-256(state),
/// base64url.
///
/// Derived from the state (rather than random) so that the callback can check that *this*
/// browser was issued the state — its flow cookie, which it cannot forge (authenticated
/// encryption), holds the binding — before consuming anything: a state from another browser, a
/// tampered one or a replay then never burns someone's pending login. The binding is also kept
/// in the server-side flow and compared again after the flow is taken.
pub(super) fn flow_binding(state: &str) -> FlowBinding {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(state.as_bytes());
    FlowBinding::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// The first value of a query parameter (form-decoded), if any.
pub(super) fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `return` parameter as a validated same-origin path; anything refused becomes `/`.
pub(super) fn return_param(parts: &Parts) -> ReturnPath {
    match query_param(parts, "return") {
        Some(raw) => ReturnPath::parse(&raw).unwrap_or_else(|e| {
            tracing::info!(reason = %e, "refused a return path; using /");
            ReturnPath::default()
        }),
        None => ReturnPath::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_binding_is_a_128_bit_digest_of_the_state() {
        let a = flow_binding("AbCdEfGhIjKlMnOpQrStUvWxYz012345");
        assert_eq!(a, flow_binding("AbCdEfGhIjKlMnOpQrStUvWxYz012345"));
        assert_ne!(a, flow_binding("AbCdEfGhIjKlMnOpQrStUvWxYz012346"));
        assert_eq!(a.expose_secret().len(), 22);
        assert!(!a.expose_secret().contains("AbCd"));
    }
}
