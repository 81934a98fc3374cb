//! Request ids: one `X-Request-Id` per request, so that a user can quote the id shown on an
//! error page and an operator finds every log line of that request.
//!
//! The layer ([`WeChatAuth`](crate::layer::WeChatAuth)) gives every request its id, once, before
//! anything else happens (see `tag`):
//!
//! - a client's `X-Request-Id` is **kept** only when the TCP peer ([`ClientAddr`]) is a trusted
//!   proxy (the crate's one trust rule, [`is_trusted`], the same as for `X-Forwarded-For`), the
//!   request carries exactly one such field, and its value is sane ([`RequestId::parse`]: 1 to
//!   [`MAX_LEN`] characters of `A–Z a–z 0–9 . _ : -`);
//! - otherwise a fresh id is **generated**: 128 random bits as 32 lower-case hex digits. A
//!   refused value is never reflected, not in the response, the log or the upstream request.
//!   Without a [`ClientAddr`] (the layer outside the sidecar's server) every id is generated.
//!
//! The id then replaces every client copy of the field in every spelling a server could fold
//! into it (`X_Request_Id`, `x.request.id`, duplicates: the identity headers' rule,
//! [`same_header_name`]) and every `Connection` token naming it (so no hop-by-hop removal drops
//! it), and it is:
//!
//! - in the request's `X-Request-Id` (the upstream or inner service receives it) and in its
//!   extensions ([`RequestId`]);
//! - in the response's `X-Request-Id` (every response, the inner service's included);
//! - a field of the `request` span that wraps the whole request in the layer, so every log line
//!   written for the request carries `request_id`, the access line (target `access`, `debug`)
//!   included;
//! - on the layer's error pages ("请求编号 / Request ID") and in their JSON (`request_id`), read
//!   with [`RequestId::current`].
//!
//! A leaf module: the layer and the proxy (for its 502/504 pages) both read it.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use ipnet::IpNet;
use pin_project_lite::pin_project;
use rand::RngCore as _;

use crate::identity::{retain_connection_tokens, same_header_name};
use crate::server::{ClientAddr, is_trusted};

/// `X-Request-Id`.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id that is kept (in bytes, all ASCII).
pub const MAX_LEN: usize = 128;

/// Random bytes in a generated id (128 bits).
const GENERATED_BYTES: usize = 16;

tokio::task_local! {
    /// The id of the request whose future is being polled (set by [`Tagged::run`]).
    static CURRENT: RequestId;
}

/// One request's id: a sane `X-Request-Id` value (1 to [`MAX_LEN`] characters of
/// `A–Z a–z 0–9 . _ : -`), valid as a header value, in HTML and in JSON without escaping.
///
/// In the request extensions of every request the layer passes on.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: 128 random bits as 32 lower-case hex digits.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; GENERATED_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        // Formatted into one stack buffer (no allocation per digit: this runs on every request).
        let mut hex = [0u8; 2 * GENERATED_BYTES];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        // Hex digits are always a valid header value. Owned by its `Bytes` (one allocation),
        // so every copy of the id (extension, span, response header) is a reference count.
        Self(
            HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
                .unwrap_or_else(|_| HeaderValue::from_static("0")),
        )
    }

    /// `value` as an id when it is sane: 1 to [`MAX_LEN`] bytes, each an ASCII letter or digit,
    /// `.`, `_`, `:` or `-`. Anything else (empty, longer, spaces, control characters, non-ASCII,
    /// quotes, `<`) is `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let sane = (1..=MAX_LEN).contains(&value.len())
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        sane.then(|| HeaderValue::from_bytes(value).ok().map(Self))
            .flatten()
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes were accepted.
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// The id of the request being served, when called inside the layer (`None` elsewhere, e.g.
    /// in a task spawned from the request).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The id a request gets: the client's, when `peer` is trusted and the request carries
    /// exactly one sane `X-Request-Id` field; a generated one otherwise.
    pub fn for_request(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpNet]) -> Self {
        if is_trusted(peer, trusted) {
            let mut values = headers.get_all(&REQUEST_ID_HEADER).iter();
            if let (Some(value), None) = (values.next(), values.next()) {
                if let Some(id) = Self::parse(value.as_bytes()) {
                    return id;
                }
            }
        }
        Self::generate()
    }

    /// Puts the id into `headers` as the only `X-Request-Id`: every field that folds into that
    /// name (any case, `_` or `.` for `-`, duplicates) and every `Connection` token naming it
    /// are removed first.
    pub fn replace_in(&self, headers: &mut HeaderMap) {
        let is_ours = |name: &str| same_header_name(name, REQUEST_ID_HEADER.as_str());
        retain_connection_tokens(headers, |token| {
            std::str::from_utf8(token).map_or(true, |t| !is_ours(t))
        });
        // Usually the only copy, if any, is spelled `x-request-id`: `insert` replaces it, and
        // the other spellings are looked for (and collected) only when one is there.
        if headers
            .keys()
            .any(|name| name != REQUEST_ID_HEADER && is_ours(name.as_str()))
        {
            let doomed: Vec<HeaderName> = headers
                .keys()
                .filter(|name| is_ours(name.as_str()))
                .cloned()
                .collect();
            for name in doomed {
                headers.remove(name);
            }
        }
        headers.insert(REQUEST_ID_HEADER, self.header_value());
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

/// A request that has its id: what [`Tagged::run`] needs to serve it under that id.
#[derive(Debug)]
pub(crate) struct Tagged {
    id: RequestId,
    span: tracing::Span,
}

/// Gives `request` its id ([`RequestId::for_request`] with the [`ClientAddr`] extension, if
/// any): replaces the client's copies ([`RequestId::replace_in`]), adds the [`RequestId`]
/// extension and opens the request's span (`request_id`, `method`, `path` — never the query).
///
/// The span is made at `ERROR` level so that it exists whenever any event of the request can be
/// logged (`log.level = "warn"` included); its level is only its enabling threshold.
pub(crate) fn tag<B>(request: &mut Request<B>, trusted: &[IpNet]) -> Tagged {
    let peer = request
        .extensions()
        .get::<ClientAddr>()
        .map(|addr| addr.0.ip());
    let id = RequestId::for_request(request.headers(), peer, trusted);
    id.replace_in(request.headers_mut());
    request.extensions_mut().insert(id.clone());
    let span = tracing::error_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    Tagged { id, span }
}

impl Tagged {
    /// Runs `serve` (the layer's pipeline for this request) inside the request's span and with
    /// [`RequestId::current`] set, then puts the id into the response's `X-Request-Id` and
    /// writes the access line (target `access`, level `debug`: status and time to the
    /// response head; `level = "info,access=debug"` gives an access log).
    ///
    /// One future around `serve` (not an `async fn` around `tracing`'s `Instrumented` around
    /// Tokio's task-local scope): `serve` is moved once into it instead of once per wrapper,
    /// and this runs on every request.
    pub(crate) fn run<F>(self, serve: F) -> Run<F> {
        let Tagged { id, span } = self;
        Run {
            serve: Some(serve),
            id,
            span,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The future of [`Tagged::run`]: every poll of the request's future, and its drop (a
    /// request given up halfway), happens inside the request's span with
    /// [`RequestId::current`] set — what `tracing`'s `instrument` and Tokio's task-local
    /// `scope` each give.
    #[derive(Debug)]
    pub(crate) struct Run<F> {
        #[pin]
        serve: Option<F>,
        id: RequestId,
        span: tracing::Span,
        started: Instant,
    }

    impl<F> PinnedDrop for Run<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.serve.is_some() {
                let _entered = this.span.enter();
                CURRENT.sync_scope(this.id.clone(), || this.serve.set(None));
            }
        }
    }
}

impl<F, B, E> Future for Run<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let served =
            CURRENT.sync_scope(this.id.clone(), || match this.serve.as_mut().as_pin_mut() {
                Some(serve) => serve.poll(cx),
                None => Poll::Pending,
            });
        let Poll::Ready(served) = served else {
            return Poll::Pending;
        };
        // Done: the request's future is dropped here, still in the scope of its id.
        CURRENT.sync_scope(this.id.clone(), || this.serve.set(None));
        let mut response = served?;
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER, this.id.header_value());
        tracing::debug!(
            target: "access",
            status = response.status().as_u16(),
            elapsed_ms = this.started.elapsed().as_secs_f64() * 1000.0,
            "request answered"
        );
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn with_id(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    const TRUSTED: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));
    const UNTRUSTED: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str().as_bytes()), Some(a));
    }

    #[test]
    fn only_sane_values_parse() {
        for good in [
            "a",
            "req-1.2_3:4",
            &"x".repeat(MAX_LEN),
            "550e8400-e29b-41d4",
        ] {
            assert!(RequestId::parse(good.as_bytes()).is_some(), "{good}");
        }
        let long = "x".repeat(MAX_LEN + 1);
        for bad in [
            "",
            long.as_str(),
            "a b",
            "a\r\nSet-Cookie: x=1",
            "<script>",
            "\"quoted\"",
            "请求",
            "a/b",
            "a%0d",
        ] {
            assert!(RequestId::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_id_is_kept_only_from_a_trusted_peer() {
        let headers = with_id("from-the-balancer");
        assert_eq!(
            RequestId::for_request(&headers, TRUSTED, &nets()).as_str(),
            "from-the-balancer"
        );
        for (peer, trusted) in [(UNTRUSTED, nets()), (None, nets()), (TRUSTED, vec![])] {
            let id = RequestId::for_request(&headers, peer, &trusted);
            assert_ne!(id.as_str(), "from-the-balancer");
            assert_eq!(id.as_str().len(), 32);
        }
        // Two fields, even from a trusted peer: neither is believed.
        let mut two = with_id("one");
        two.append(REQUEST_ID_HEADER, HeaderValue::from_static("two"));
        let id = RequestId::for_request(&two, TRUSTED, &nets());
        assert!(id.as_str() != "one" && id.as_str() != "two");
        // An insane value from a trusted peer is replaced.
        let id = RequestId::for_request(&with_id(&"y".repeat(500)), TRUSTED, &nets());
        assert_eq!(id.as_str().len(), 32);
    }

    #[test]
    fn replace_in_removes_every_spelling_and_connection_token() {
        let mut headers = with_id("client");
        for name in ["x_request_id", "X.Request.Id", "x-request_id"] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("dup"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("keep-alive, X_Request_Id, x-request-id"),
        );
        let id = RequestId::generate();
        id.replace_in(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["connection", "x-request-id"]);
        assert_eq!(headers.get_all(&REQUEST_ID_HEADER).iter().count(), 1);
        assert_eq!(headers[&REQUEST_ID_HEADER], id.as_str());
        assert_eq!(headers[http::header::CONNECTION], "keep-alive");
    }

    /// Records [`RequestId::current`] when it is dropped.
    struct SeesIdOnDrop(std::sync::Arc<std::sync::Mutex<Option<Option<RequestId>>>>);

    impl Drop for SeesIdOnDrop {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(RequestId::current());
        }
    }

    #[tokio::test]
    async fn the_request_future_is_dropped_under_its_id_finished_or_not() {
        for finish in [true, false] {
            let mut request = Request::new(());
            let tagged = tag(&mut request, &[]);
            let id = request.extensions().get::<RequestId>().unwrap().clone();
            let seen = std::sync::Arc::default();
            let guard = SeesIdOnDrop(std::sync::Arc::clone(&seen));
            let run = tagged.run(async move {
                let _guard = guard;
                if !finish {
                    std::future::pending::<()>().await;
                }
                Ok::<_, ()>(Response::new(()))
            });
            if finish {
                run.await.unwrap();
            } else {
                let mut run = Box::pin(run);
                let polled = futures_util::poll!(run.as_mut());
                assert!(polled.is_pending());
                drop(run);
            }
            assert_eq!(*seen.lock().unwrap(), Some(Some(id)), "finished: {finish}");
            assert_eq!(RequestId::current(), None);
        }
    }

    #[tokio::test]
    async fn run_sets_current_and_the_response_header() {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, HeaderValue::from_static("kept?"));
        let tagged = tag(&mut request, &nets());
        let id = request.extensions().get::<RequestId>().unwrap().clone();
        assert_ne!(id.as_str(), "kept?", "no ClientAddr: generated");
        assert_eq!(request.headers()[&REQUEST_ID_HEADER], id.as_str());
        assert_eq!(RequestId::current(), None);
        let seen = id.clone();
        let response = tagged
            .run(async move {
                assert_eq!(RequestId::current(), Some(seen));
                Ok::<_, ()>(Response::new(()))
            })
            .await
            .unwrap();
        assert_eq!(response.headers()[&REQUEST_ID_HEADER], id.as_str());
    }
}
