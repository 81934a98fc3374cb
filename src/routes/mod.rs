//! The reserved endpoints under the configurable prefix (default `/_wxauth`), one file each.
//!
//! Each handler returns an [`OwnResponse`]; failures are [`AuthError`]s rendered in one place
//! ([`AuthError::render`]).

pub mod callback;
pub mod events;
pub mod info;
pub mod login;
pub mod logout;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};

use crate::error::AuthError;
use crate::layer::dispatch::{Route, accept_prefers_html};
use crate::layer::response::OwnResponse;
use crate::layer::{BoxError, Shared};

/// Answers a reserved route.
pub(crate) async fn handle<B>(shared: &Shared, route: Route, req: Request<B>) -> OwnResponse
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let html = wants_html(req.headers());
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let req = &parts;
    let get = method == Method::GET || method == Method::HEAD;
    let result = match route {
        Route::Login if get => Ok(login::handle(shared, req).await),
        Route::Callback if get => callback::handle(shared, req).await,
        Route::Events if method == Method::POST => events::handle(shared, req, body).await,
        Route::Logout if get || method == Method::POST => logout::handle(shared, req).await,
        Route::Jwks if get => Ok(info::jwks(shared)),
        Route::WhoAmI if get => info::whoami(shared, &req.headers).await,
        Route::Health if get => Ok(info::health()),
        Route::Ready if get => Ok(info::ready(shared).await),
        Route::NotFound => Err(AuthError::NotFound),
        _ => Err(AuthError::MethodNotAllowed),
    };
    result.unwrap_or_else(|err| {
        let login = (route != Route::Events)
            .then(|| shared.login_url(&crate::session::ReturnPath::default()));
        err.render(html, login.as_deref())
    })
}

/// Whether an error for this request should be an HTML page (browsers) rather than JSON.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    accept_prefers_html(headers)
}

/// Reads one query parameter (decoded). Repeated parameters: the first wins.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
