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

/// The browser binding of the login flow `state`: the first 128 bits of SHA-256(state),
/// base64url.
///
/// Derived from the state (rather than random) so that the callback can check that *this*
/// browser was issued the state — its flow cookie, which it cannot forge (authenticated
/// encryption), holds the binding — before consuming anything: a state from another browser, a
/// tampered one or a replay then never burns someone's pending login, and only a state this
/// browser really holds is waited for as a possible duplicate. The binding is also kept in the
/// server-side flow and compared again after the flow is taken.
pub(crate) fn flow_binding(state: &str) -> crate::session::FlowBinding {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(state.as_bytes());
    crate::session::FlowBinding::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]),
    )
}

/// Reads one query parameter (decoded). Repeated parameters: the first wins.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
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
