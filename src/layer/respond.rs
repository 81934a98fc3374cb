//! Builders for the layer's own answers (redirects, JSON, HTML, plain text), for the pipeline,
//! the routes and the error pages.
//!
//! Every response the layer builds itself carries `Cache-Control: no-store` (they contain
//! session cookies, login URLs or per-user data).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::body::OwnResponse;

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

fn build(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> OwnResponse {
    build_with_room(status, content_type, body, 0)
}

/// [`build`] with room in the header table for `room` more fields.
fn build_with_room(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
    room: usize,
) -> OwnResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    *response.headers_mut() = http::HeaderMap::with_capacity(2 + room);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    response
}

/// A `302 Found` to `location` (an absolute URL or a validated same-origin path).
///
/// A location that is not a valid header value (it never is for URLs we build) falls back to
/// `/`, so a bug can never turn into a header injection.
pub(crate) fn redirect(location: &str) -> OwnResponse {
    let mut response = build(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> OwnResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    build(status, "application/json", body)
}

/// A JSON answer from pre-serialized bytes (e.g. the JWKS document).
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> OwnResponse {
    build(status, "application/json", body)
}

/// An HTML page (the caller escapes everything dynamic in it).
pub(crate) fn html(status: StatusCode, page: String) -> OwnResponse {
    build(status, "text/html; charset=utf-8", page)
}

/// A short plain-text answer (`ok`, `success`).
pub(crate) fn text(status: StatusCode, body: &'static str) -> OwnResponse {
    build(status, "text/plain; charset=utf-8", body)
}

/// [`text`] with room in the header table for `room` more fields (the caller adds them).
pub(crate) fn text_with_room(status: StatusCode, body: &'static str, room: usize) -> OwnResponse {
    build_with_room(status, "text/plain; charset=utf-8", body, room)
}

/// Appends a `Set-Cookie` header to one of our own responses.
pub(crate) fn add_cookie(response: &mut OwnResponse, set_cookie: HeaderValue) {
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie);
}

pub(crate) use crate::html::escape_html;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_responses_are_not_cached() {
        for r in [
            redirect("/x"),
            json(StatusCode::UNAUTHORIZED, &serde_json::json!({})),
            html(StatusCode::OK, String::new()),
            text(StatusCode::OK, "ok"),
        ] {
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn redirect_never_injects_headers() {
        let r = redirect("/x\r\nSet-Cookie: a=b");
        assert_eq!(r.headers()[header::LOCATION], "/");
    }
}
