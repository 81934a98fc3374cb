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
//! | `auth/request`, `auth/forward` | GET, HEAD | forward auth for nginx / Traefik, Caddy: 200 with identity, or the login |
//! | `auth/envoy/<path>` | the original's | forward auth for Envoy's HTTP `ext_authz` |
//! | `qr`, `qr/code.svg`, `qr/poll`, `qr/s/<id>`, `qr/confirm`, `qr/finish` | GET (confirm also POST) | the desktop QR login bridge (`layer::qr`; 404 when off) |
//!
//! Every failure is an [`AuthError`] rendered here, in one function, by
//! [`AuthError::render`] (HTML when the client prefers it, JSON otherwise).

pub(super) mod callback;
mod events;
mod forward_auth;
mod health;
mod jwks;
pub(super) mod login;
mod logout;
mod whoami;

use http::{Method, request::Parts};
use tower::BoxError;

use crate::{
    layer::{
        body::OwnResponse, dispatch::Route, error::AuthError, state::AuthState,
        tenant::ResolvedTenant,
    },
    negotiate::Answer,
    session::ReturnPath,
};

/// Answers a reserved route for `tenant` (`None` for the platform-wide routes, and for a
/// callback whose flow names the account). Never fails: errors become pages or JSON here.
pub(super) async fn serve<B>(
    auth: &AuthState,
    route: Route,
    tenant: Option<&ResolvedTenant>,
    parts: Parts,
    body: B,
) -> OwnResponse
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let method = &parts.method;
    let read_only = *method == Method::GET || *method == Method::HEAD;
    let need = || tenant.ok_or(AuthError::Internal("a tenant route without a tenant"));
    let result = match route {
        Route::Login if read_only => match need() {
            Ok(t) => login::login(auth, t, &parts).await,
            Err(e) => Err(e),
        },
        Route::Callback if read_only => Ok(callback::callback(auth, tenant, &parts).await),
        Route::Events if *method == Method::POST => events::events(auth, &parts, body).await,
        Route::Logout if read_only || *method == Method::POST => match need() {
            Ok(t) => logout::logout(auth, t, &parts).await,
            Err(e) => Err(e),
        },
        Route::Jwks if read_only => Ok(jwks::jwks(auth)),
        Route::WhoAmI if read_only => match need() {
            Ok(t) => whoami::whoami(auth, t, &parts).await,
            Err(e) => Err(e),
        },
        Route::Health if read_only => Ok(health::health()),
        Route::Ready if read_only => Ok(health::ready(auth).await),
        Route::ForwardAuth(kind) => Ok(crate::metrics::forward_auth(
            forward_auth::serve(auth, kind, &parts).await,
        )),
        Route::Qr(qr_route) => match need() {
            Ok(t) => super::qr::serve(auth, qr_route, t, &parts, body).await,
            Err(e) => Err(e),
        },
        Route::NotFound => Err(AuthError::NotFound),
        Route::Events => Err(AuthError::MethodNotAllowed { allow: "POST" }),
        Route::Logout => Err(AuthError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
        _ => Err(AuthError::MethodNotAllowed { allow: "GET, HEAD" }),
    };
    result.unwrap_or_else(|error| {
        let mount = tenant.map_or("", ResolvedTenant::mount);
        let link = match error {
            AuthError::CrossSiteLogout => logout::confirm_url(auth, mount, &parts),
            _ => auth.login_url(mount, &ReturnPath::default()),
        };
        error.render(Answer::for_request(&parts.headers), Some(&link))
    })
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
