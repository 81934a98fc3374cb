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

pub(crate) mod callback;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod jwks;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod whoami;

use http::{Method, request::Parts};
use tower::BoxError;

use crate::{
    error::AuthError,
    layer::{Route, dispatch::accept_prefers_html, response::OwnResponse, shared::Shared},
    session::ReturnPath,
};

/// Answers a reserved route. Never fails: errors become pages or JSON here.
pub(crate) async fn serve<B>(shared: &Shared, route: Route, parts: Parts, body: B) -> OwnResponse
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let method = &parts.method;
    let read_only = *method == Method::GET || *method == Method::HEAD;
    let result = match route {
        Route::Login if read_only => login::login(shared, &parts).await,
        Route::Callback if read_only => Ok(callback::callback(shared, &parts).await),
        Route::Events if *method == Method::POST => events::events(shared, &parts, body).await,
        Route::Logout if read_only || *method == Method::POST => {
            logout::logout(shared, &parts).await
        }
        Route::Jwks if read_only => Ok(jwks::jwks(shared)),
        Route::WhoAmI if read_only => whoami::whoami(shared, &parts).await,
        Route::Health if read_only => Ok(health::health()),
        Route::Ready if read_only => Ok(health::ready(shared).await),
        Route::NotFound => Err(AuthError::NotFound),
        _ => Err(AuthError::MethodNotAllowed),
    };
    result.unwrap_or_else(|error| {
        error.render(
            accept_prefers_html(&parts.headers),
            Some(&shared.login_url(&ReturnPath::default())),
        )
    })
}

/// The first value of a query parameter (form-decoded), if any.
pub(crate) fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `return` parameter as a validated same-origin path; anything refused becomes `/`.
pub(crate) fn return_param(parts: &Parts) -> ReturnPath {
    match query_param(parts, "return") {
        Some(raw) => ReturnPath::parse(&raw).unwrap_or_else(|e| {
            tracing::info!(reason = %e, "refused a return path; using /");
            ReturnPath::default()
        }),
        None => ReturnPath::default(),
    }
}
