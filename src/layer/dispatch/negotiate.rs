//! Who is asking: a browser navigation (which may be redirected into the login flow) or an API
//! client (which gets 401 JSON), and whether a request is a CORS preflight. Read from the
//! method and headers only.

use http::{HeaderMap, Method, header};

use crate::negotiate::Answer;
pub use crate::negotiate::accept_prefers_html;

/// Who is asking, for the "no session" answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A top-level GET/HEAD navigation that prefers HTML: gets a 302 into the login flow.
    Browser,
    /// Anything else (XHR/fetch, API paths, non-GET methods): gets 401 JSON with `login_url`, so a
    /// POST never silently loses its body to a redirect.
    Api,
}

impl ClientKind {
    /// The form of our own answers to this client: a page for a browser navigation, JSON for
    /// everything else.
    pub fn answer(self) -> Answer {
        match self {
            ClientKind::Browser => Answer::Html,
            ClientKind::Api => Answer::Json,
        }
    }
}

/// A CORS preflight as browsers send it (Fetch standard, "CORS-preflight fetch"): `OPTIONS`
/// with `Origin` and `Access-Control-Request-Method`, and no body. Anything announcing a body
/// is not a preflight; callers must also check that the body really is empty on the wire
/// (an HTTP/2 request can send DATA frames without `content-length`), as
/// [`dispatch`](super::dispatch) does.
pub fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && !has_body
}

/// How a protected request without a session is answered (see [`ClientKind`]).
pub(in crate::layer) fn client_kind(
    api_path: bool,
    method: &Method,
    headers: &HeaderMap,
) -> ClientKind {
    if !api_path && is_browser_navigation(method, headers) {
        ClientKind::Browser
    } else {
        ClientKind::Api
    }
}

/// Whether a request is a top-level browser navigation that may be redirected to a login page:
/// GET or HEAD; `Accept` prefers `text/html` by q-value (named explicitly or as `text/*`, with a
/// q at least as high as any other listed type — a bare `*/*` is not enough); no
/// `X-Requested-With: XMLHttpRequest`; and, when the browser sends `Sec-Fetch-Mode`, it says
/// `navigate` (a `fetch()` is never a navigation).
pub fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let xhr = headers
        .get_all("x-requested-with")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    if xhr {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        let mode = mode.as_bytes();
        if !mode.eq_ignore_ascii_case(b"navigate") && !mode.eq_ignore_ascii_case(b"nested-navigate")
        {
            return false;
        }
    }
    accept_prefers_html(headers)
}
