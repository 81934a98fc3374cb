//! The response body type of [`WeChatAuth`](super::WeChatAuth) and builders for the layer's own
//! answers (redirects, JSON, HTML, plain text).
//!
//! # Response body
//!
//! [`ResponseBody<B>`] is the one body type the layer returns: either the inner service's body
//! `B`, untouched and streaming ([`ResponseBody::inner`]), or one of our own small, complete
//! answers ([`ResponseBody::own`], a [`Full<Bytes>`]). Its error type is `B::Error`, so the inner
//! service's body errors pass through unchanged and our own bodies cannot fail. It implements
//! [`http_body::Body`] with `Data = Bytes`, which is what axum (`IntoResponse`) and hyper expect;
//! no boxing or allocation is added on the pass-through path.
//!
//! Every response the layer builds itself carries `Cache-Control: no-store` (they contain
//! session cookies, login URLs or per-user data).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// A response the layer built itself (before it is wrapped in [`ResponseBody`]).
pub type OwnResponse = Response<Full<Bytes>>;

pin_project! {
    /// The body of every response that leaves [`WeChatAuth`](super::WeChatAuth): the inner
    /// service's body or one of our own; see the module docs.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body (streamed as is).
    pub fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// Wraps one of our own complete bodies (redirect, JSON, HTML page).
    pub fn own(body: Full<Bytes>) -> Self {
        ResponseBody {
            kind: Kind::Own { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { body } => Pin::new(body).poll_frame(cx).map(|frame| {
                frame.map(|result| result.map_err(|never: Infallible| match never {}))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}

/// Converts one of our own responses into the layer's response type.
pub fn wrap_own<B>(response: OwnResponse) -> Response<ResponseBody<B>> {
    response.map(ResponseBody::own)
}

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

fn build(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> OwnResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    response
}

/// A `302 Found` to `location` (an absolute URL or a validated same-origin path).
///
/// A location that is not a valid header value (it never is for URLs we build) falls back to
/// `/`, so a bug can never turn into a header injection.
pub fn redirect(location: &str) -> OwnResponse {
    let mut response = build(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> OwnResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    build(status, "application/json", body)
}

/// A JSON answer from pre-serialized bytes (e.g. the JWKS document).
pub fn json_bytes(status: StatusCode, body: Bytes) -> OwnResponse {
    build(status, "application/json", body)
}

/// An HTML page (the caller escapes everything dynamic in it).
pub fn html(status: StatusCode, page: String) -> OwnResponse {
    build(status, "text/html; charset=utf-8", page)
}

/// A short plain-text answer (`ok`, `success`).
pub fn text(status: StatusCode, body: &'static str) -> OwnResponse {
    build(status, "text/plain; charset=utf-8", body)
}

/// Appends a `Set-Cookie` header to one of our own responses.
pub fn add_cookie(response: &mut OwnResponse, set_cookie: HeaderValue) {
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie);
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn own_and_inner_bodies_stream() {
        let own: ResponseBody<Full<Bytes>> =
            ResponseBody::own(Full::new(Bytes::from_static(b"ours")));
        assert_eq!(own.collect().await.expect("infallible").to_bytes(), "ours");
        let inner: ResponseBody<Full<Bytes>> =
            ResponseBody::inner(Full::new(Bytes::from_static(b"theirs")));
        assert_eq!(inner.size_hint().exact(), Some(6));
        assert_eq!(
            inner.collect().await.expect("infallible").to_bytes(),
            "theirs"
        );
    }

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

    #[test]
    fn html_escaping() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
    }
}
