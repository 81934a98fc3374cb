//! Upstream forwarding for the sidecar: a plain tower service that relays requests to one HTTP
//! upstream.
//!
//! [`Upstream`] keeps its own pool of HTTP/1.1 connections to the upstream ([`PoolSettings`]:
//! bounded, idle timeout, readiness checked before reuse, only idempotent body-less requests sent
//! again when the upstream closed a reused connection under them; one pool shared by all
//! clones, [`Upstream::with_own_pool`] for another), streams request and response bodies without buffering them, rewrites the URI to the upstream
//! (keeping path and query, under the upstream's base path), applies the [`headers`] rules
//! (odd header names, hop-by-hop removal, trusted `X-Forwarded-*`), and relays one protocol
//! upgrade: an HTTP/1.1 `GET` WebSocket handshake, tunnelled only after the upstream's 101 agrees
//! to `websocket`. It never fails: an unreachable upstream becomes a 502 response and a slow one
//! a 504, `CONNECT` a 405 and a request body that breaks off a 400, so it can sit directly under
//! hyper or under the authentication layer. It knows nothing of authentication; that is the job
//! of the layer wrapped around it, but it is safe on its own: no other protocol switch, no
//! `X-Forwarded-*` from an untrusted peer and no alias of a field it owns (`X_Forwarded_For`)
//! ever reaches the upstream.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wechat_oauth_proxy::{proxy::{ProxySettings, Upstream}, server};
//!
//! let upstream = Upstream::new(ProxySettings::new("http://127.0.0.1:8080/".parse()?))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! server::serve(listener, upstream, server::ServerSettings::default(), server::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

pub mod headers;
mod pool;

pub use self::pool::PoolSettings;

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HOST},
    uri::{Authority, PathAndQuery},
};
use http_body_util::{BodyExt as _, Empty, Full, combinators::UnsyncBoxBody};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tower::Service;

use crate::negotiate::Answer;
use crate::request_id::RequestId;
use crate::server::{BodyTimeout, BoxError, ClientAddr};

use self::pool::{Conn, Pool, PooledBody, Target};

/// Body of every response [`Upstream`] returns: the upstream's streamed body, or a small error
/// page. Boxed (unsync, like hyper's own `Incoming` wrappers) so callers deal with one type.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Body sent to the upstream: the client's body, boxed so one pool serves every body type.
type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Scheme of the proxy's own listener as clients see it, sent as `X-Forwarded-Proto`.
///
/// The proxy itself speaks plain HTTP; `Https` is for the usual deployment behind a TLS
/// terminator, so that upstreams build `https://` links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedProto {
    /// Clients reach the proxy over plain HTTP.
    #[default]
    Http,
    /// Clients reach the proxy over HTTPS (TLS terminated in front of it).
    Https,
}

impl ForwardedProto {
    /// The header value: `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// How to reach the upstream and which forwarding rules to apply.
///
/// There is no `Default`: the upstream address has no sensible default. [`ProxySettings::new`]
/// fills in every other field.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Base URL of the upstream; `http` only (TLS to the upstream is not supported). A path
    /// (`http://app:8080/base/`) is prefixed to every forwarded path.
    pub upstream: url::Url,
    /// Time allowed to open a TCP connection to the upstream. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed from sending the request until the upstream's response headers arrive
    /// (the body may take longer). Default 60 s.
    pub response_timeout: Duration,
    /// Peers whose `X-Forwarded-*` / `Forwarded` fields are believed (load balancers, the TLS
    /// terminator). Default empty: nobody.
    pub trusted_proxies: Vec<IpNet>,
    /// Scheme clients use to reach the proxy, sent as `X-Forwarded-Proto`. Default `http`.
    pub forwarded_proto: ForwardedProto,
    /// Send the client's `Host` to the upstream (true, the default, so that upstream-generated
    /// links and virtual hosts keep working) or the upstream's own authority (false).
    /// `X-Forwarded-Host` carries the client's host either way.
    pub preserve_host: bool,
    /// Forward client fields whose names contain `_` or `.` (like nginx's
    /// `underscores_in_headers on`). Default false: they are dropped, because many servers fold
    /// those characters into `-`. Fields that fold into one the proxy owns (`X_Forwarded_For`,
    /// `X.Real.IP`, `Transfer_Encoding`, …) are dropped even when this is true.
    pub allow_underscores_in_headers: bool,
    /// The upstream connection pool's bounds and idle timeout.
    pub pool: PoolSettings,
}

impl ProxySettings {
    /// Settings for `upstream` with the defaults above.
    pub fn new(upstream: url::Url) -> Self {
        Self {
            upstream,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            forwarded_proto: ForwardedProto::default(),
            preserve_host: true,
            allow_underscores_in_headers: false,
            pool: PoolSettings::default(),
        }
    }
}

/// Why a [`ProxySettings::upstream`] URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUpstream {
    /// Only `http://` upstreams are supported.
    #[error("upstream URL must use http, not {0:?}")]
    Scheme(String),
    /// The URL has no host.
    #[error("upstream URL has no host")]
    NoHost,
    /// Credentials in the URL would be silently ignored, so they are refused.
    #[error("upstream URL must not contain a user name or password")]
    Credentials,
    /// A query or fragment has no place in a base URL.
    #[error("upstream URL must not contain a query or fragment")]
    QueryOrFragment,
    /// The host and port do not form a valid authority.
    #[error("upstream URL host is not a valid authority")]
    Authority,
}

/// A tower service forwarding every request to one HTTP upstream. See the module docs.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Upstream {
    pool: Pool,
    /// How to reach the upstream and its pool settings, for [`Upstream::with_own_pool`].
    target: Target,
    pool_settings: PoolSettings,
    authority: Authority,
    /// `authority` as a `Host` value, sent when the client's is not.
    authority_host: HeaderValue,
    /// The upstream URL's path without its trailing `/` (empty for `/`).
    base_path: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    trusted_proxies: std::sync::Arc<[IpNet]>,
    forwarded_proto: ForwardedProto,
    preserve_host: bool,
    allow_underscores_in_headers: bool,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .field("pool", &self.pool_settings)
            .field("base_path", &self.base_path)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded_proto", &self.forwarded_proto)
            .field("preserve_host", &self.preserve_host)
            .field(
                "allow_underscores_in_headers",
                &self.allow_underscores_in_headers,
            )
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the service and its connection pool.
    ///
    /// # Errors
    ///
    /// [`InvalidUpstream`] when the upstream URL is not a plain `http://host[:port][/path]`.
    pub fn new(settings: ProxySettings) -> Result<Self, InvalidUpstream> {
        let url = &settings.upstream;
        if url.scheme() != "http" {
            return Err(InvalidUpstream::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidUpstream::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidUpstream::QueryOrFragment);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidUpstream::NoHost);
        }
        let authority: Authority = url[url::Position::BeforeHost..url::Position::AfterPort]
            .parse()
            .map_err(|_| InvalidUpstream::Authority)?;
        let authority_host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| InvalidUpstream::Authority)?;
        let port = url
            .port_or_known_default()
            .ok_or(InvalidUpstream::Authority)?;
        let target = match url.host() {
            Some(url::Host::Ipv4(ip)) => Target::Addr((ip, port).into()),
            Some(url::Host::Ipv6(ip)) => Target::Addr((ip, port).into()),
            Some(url::Host::Domain(name)) => Target::Name(name.to_owned(), port),
            None => return Err(InvalidUpstream::NoHost),
        };
        let base_path = url.path().trim_end_matches('/').to_owned();
        let pool = Pool::new(target.clone(), settings.connect_timeout, settings.pool);

        Ok(Self {
            pool,
            target,
            pool_settings: settings.pool,
            authority,
            authority_host,
            base_path,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            trusted_proxies: settings.trusted_proxies.into(),
            forwarded_proto: settings.forwarded_proto,
            preserve_host: settings.preserve_host,
            allow_underscores_in_headers: settings.allow_underscores_in_headers,
        })
    }

    /// The same service with a connection pool of its own (an empty one), for a server thread
    /// that should not share connections with the others.
    #[must_use]
    pub fn with_own_pool(&self) -> Self {
        Self {
            pool: Pool::new(
                self.target.clone(),
                self.connect_timeout,
                self.pool_settings,
            ),
            ..self.clone()
        }
    }

    /// The upstream request target (origin-form) for a request's path and query: the base path,
    /// then the request path.
    fn upstream_uri(&self, original: &Uri) -> Option<Uri> {
        let path_and_query = match original.path_and_query() {
            // Without a base path the request's own (already validated) path is reused as is:
            // a cheap clone instead of formatting and re-parsing it on every request.
            Some(pq) if pq.as_str().starts_with('/') && self.base_path.is_empty() => pq.clone(),
            Some(pq) if pq.as_str().starts_with('/') => {
                PathAndQuery::try_from(format!("{}{}", self.base_path, pq.as_str())).ok()?
            }
            // No path at all (absolute-form `http://host`): the root, under the base path.
            None => PathAndQuery::try_from(format!("{}/", self.base_path)).ok()?,
            // Asterisk-form (`OPTIONS *`) and anything else has no path to map.
            Some(_) => return None,
        };
        Some(Uri::from(path_and_query))
    }

    /// Turns the client's request into the upstream request; also returns the client side of a
    /// WebSocket handshake. Fails for `CONNECT` and for a target with no path to forward.
    fn prepare<B>(&self, request: Request<B>) -> Result<Prepared, Failure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if request.method() == Method::CONNECT {
            return Err(Failure::Connect);
        }
        let (mut parts, body) = request.into_parts();
        let uri = self.upstream_uri(&parts.uri).ok_or(Failure::Target)?;
        let peer = parts.extensions.get::<ClientAddr>().map(|addr| addr.0.ip());
        let client_host = parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

        // The one upgrade relayed is an HTTP/1.1 GET WebSocket handshake that hyper can complete
        // on the client side (the upgrade handle is in the extensions); every other `Upgrade` is
        // removed below and the request goes on as a plain one.
        let websocket = parts.method == Method::GET
            && parts.version == Version::HTTP_11
            && headers::is_websocket_upgrade(&parts.headers);
        let downstream_upgrade = if websocket {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        let mut request_headers = parts.headers;
        let dropped =
            headers::remove_odd_names(&mut request_headers, self.allow_underscores_in_headers);
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "dropped client header fields whose names contain '_' or '.'"
            );
        }
        headers::remove_hop_by_hop(&mut request_headers, downstream_upgrade.is_some());
        headers::set_forwarded(
            &mut request_headers,
            &headers::ForwardedFor {
                peer,
                trusted: headers::is_trusted(peer, &self.trusted_proxies),
                proto: self.forwarded_proto.as_str(),
                host: client_host.clone(),
            },
        );
        let host = match client_host {
            Some(host) if self.preserve_host => host,
            _ => self.authority_host.clone(),
        };
        request_headers.insert(HOST, host);

        // A failure of the client's body while it is sent (malformed chunked encoding, the client
        // going away) also fails the upstream request; the flag tells the two apart.
        let body_failed = Arc::new(AtomicU8::new(BODY_OK));
        let flag = Arc::clone(&body_failed);
        let body = body.map_err(move |error| {
            let error: BoxError = error.into();
            let state = if error.is::<BodyTimeout>() {
                BODY_TIMED_OUT
            } else {
                BODY_FAILED
            };
            flag.store(state, Ordering::Relaxed);
            error
        });
        let mut upstream_request = Request::new(body.boxed_unsync());
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        // The pool speaks HTTP/1.1 to the upstream whatever the client used; the target is in
        // origin-form and `Host` is set above.
        *upstream_request.version_mut() = Version::HTTP_11;
        *upstream_request.headers_mut() = request_headers;
        Ok(Prepared {
            request: upstream_request,
            downstream_upgrade,
            body_failed,
        })
    }
}

/// States of the client's request body as the upstream request saw it.
const BODY_OK: u8 = 0;
/// The body failed (malformed chunked encoding, the client went away).
const BODY_FAILED: u8 = 1;
/// The client sent nothing for the server's body timeout ([`BodyTimeout`]).
const BODY_TIMED_OUT: u8 = 2;

/// An upstream request ready to send.
struct Prepared {
    request: Request<UpstreamBody>,
    downstream_upgrade: Option<OnUpgrade>,
    /// Set when the client's body failed while being sent.
    body_failed: Arc<AtomicU8>,
}

/// Future returned by [`Upstream`]; resolves to the upstream's response or an error page.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> Service<Request<B>> for Upstream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool has no readiness of its own: a request waits for a connection inside its
        // future (bounded by the response timeout).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let accept = request.headers().get(ACCEPT).cloned();
        let prepared = self.prepare(request);
        let pool = self.pool.clone();
        let response_timeout = self.response_timeout;
        let authority = self.authority.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let Prepared {
                    request,
                    downstream_upgrade,
                    body_failed,
                } = match prepared {
                    Ok(prepared) => prepared,
                    Err(failure) => return Ok(error_page(failure, accept.as_ref())),
                };
                let method = request.method().clone();
                let outcome = tokio::time::timeout(response_timeout, pool.send(request)).await;
                let (response, conn) = match outcome {
                    Ok(Ok(sent)) => sent,
                    Ok(Err(error)) if body_failed.load(Ordering::Relaxed) != BODY_OK => {
                        // The client's fault, not the upstream's.
                        tracing::debug!(%method, error = %ErrorChain(&error), "client request body failed");
                        let failure = if body_failed.load(Ordering::Relaxed) == BODY_TIMED_OUT {
                            Failure::ClientBodyTimeout
                        } else {
                            Failure::ClientBody
                        };
                        return Ok(error_page(failure, accept.as_ref()));
                    }
                    Ok(Err(error)) => {
                        let failure = if is_timeout(&error) {
                            Failure::Timeout
                        } else {
                            Failure::Unreachable
                        };
                        tracing::warn!(upstream = %authority, %method, error = %ErrorChain(&error), "upstream request failed");
                        return Ok(error_page(failure, accept.as_ref()));
                    }
                    Err(_elapsed) => {
                        tracing::warn!(upstream = %authority, %method, timeout = ?response_timeout, "upstream response timed out");
                        return Ok(error_page(Failure::Timeout, accept.as_ref()));
                    }
                };
                Ok(relay_response(
                    response,
                    (conn, pool),
                    downstream_upgrade,
                    accept.as_ref(),
                ))
            }),
        }
    }
}

/// Converts the upstream's response into the client's, wiring up the WebSocket tunnel on a
/// genuine 101: one that answers a WebSocket handshake and agrees to `websocket`. Any other 101
/// is a 502 and nothing is tunnelled (dropping the upstream's upgrade handle closes that
/// connection). Any other response's body gives `conn` back to its pool when it is done.
fn relay_response(
    mut response: Response<hyper::body::Incoming>,
    (conn, pool): (Conn, Pool),
    downstream_upgrade: Option<OnUpgrade>,
    accept: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, downstream_upgrade) {
        (true, Some(downstream)) if headers::is_websocket_upgrade(response.headers()) => {
            let upstream = hyper::upgrade::on(&mut response);
            let (mut parts, _empty) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers, true);
            tokio::spawn(tunnel(downstream, upstream));
            Response::from_parts(parts, empty_body())
        }
        (true, Some(_)) => {
            tracing::warn!("upstream answered a WebSocket handshake with another protocol switch");
            error_page(Failure::Switch, accept)
        }
        (true, None) => {
            // We never asked for an upgrade, so a 101 is a protocol violation by the upstream.
            tracing::warn!("upstream switched protocols without an upgrade request");
            error_page(Failure::Switch, accept)
        }
        (false, _) => {
            let (mut parts, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, PooledBody::new(body, conn, pool).boxed_unsync())
        }
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// side closes.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            tracing::debug!(to_upstream, to_client, "upgraded connection closed");
        }
        Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
    }
}

/// Whether a client error was caused by a timeout (the connect timeout surfaces as
/// `io::ErrorKind::TimedOut` somewhere in the source chain).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = current.source();
    }
    false
}

/// Displays an error with its sources, for logs (upstream errors carry no secrets: they name the
/// failure, not the request).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(current) = source {
            write!(f, ": {current}")?;
            source = current.source();
        }
        Ok(())
    }
}

/// An empty [`ProxyBody`].
fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why a request got the proxy's own answer instead of the upstream's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The upstream could not be reached or broke the connection: 502.
    Unreachable,
    /// The upstream switched protocols without a WebSocket handshake to answer: 502.
    Switch,
    /// The upstream did not answer in time: 504.
    Timeout,
    /// The request target has no path to forward: 400.
    Target,
    /// The client's body failed while being sent (malformed, cut off): 400.
    ClientBody,
    /// The client stopped sending its body for the server's body timeout: 408.
    ClientBodyTimeout,
    /// `CONNECT`, which this proxy never tunnels: 405.
    Connect,
}

impl Failure {
    /// Status, machine-readable code and human message.
    fn describe(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unreachable => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The upstream service is unreachable.",
            ),
            Self::Switch => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The upstream service switched protocols unexpectedly.",
            ),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "The upstream service did not answer in time.",
            ),
            Self::Target => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The request target cannot be forwarded.",
            ),
            Self::ClientBody => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The request body could not be read.",
            ),
            Self::ClientBodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body stopped arriving.",
            ),
            Self::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not supported by this proxy.",
            ),
        }
    }
}

/// A small error page: HTML when the client prefers `text/html` (a browser; the same rule as
/// the layer's pages, [`Answer`]), JSON otherwise. Under the layer, the request id is shown
/// ("请求编号 / Request ID", JSON `request_id`) so that a user can quote it.
fn error_page(failure: Failure, accept: Option<&HeaderValue>) -> Response<ProxyBody> {
    let (status, code, message) = failure.describe();
    // Request ids are sane (`[A-Za-z0-9._:-]`): nothing to escape.
    let request_id = RequestId::current();
    let (content_type, body) = if Answer::for_accept(accept) == Answer::Html {
        let reason = status.canonical_reason().unwrap_or("Error");
        let id = request_id
            .map(|id| format!("<p>请求编号 / Request ID: <code>{id}</code></p>"))
            .unwrap_or_default();
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} {reason}</title></head>\
                 <body><h1>{} {reason}</h1><p>{message}</p>{id}</body></html>\n",
                status.as_u16(),
                status.as_u16()
            ),
        )
    } else {
        let mut body = serde_json::json!({ "error": code, "message": message });
        if let Some(id) = request_id {
            body["request_id"] = serde_json::Value::from(id.as_str());
        }
        ("application/json", format!("{body}\n"))
    };
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::new(ProxySettings::new(url.parse().unwrap())).unwrap()
    }

    #[test]
    fn refuses_bad_upstreams() {
        let refused =
            |url: &str| Upstream::new(ProxySettings::new(url.parse().unwrap())).unwrap_err();
        assert!(matches!(refused("https://app/"), InvalidUpstream::Scheme(s) if s == "https"));
        assert!(matches!(
            refused("http://u:p@app/"),
            InvalidUpstream::Credentials
        ));
        assert!(matches!(
            refused("http://app/?a=1"),
            InvalidUpstream::QueryOrFragment
        ));
        assert!(matches!(
            refused("http://app/#x"),
            InvalidUpstream::QueryOrFragment
        ));
    }

    #[test]
    fn rewrites_uri_under_base_path() {
        let root = upstream("http://127.0.0.1:8080");
        let based = upstream("http://[::1]:9000/app/");
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            root.upstream_uri(&uri("/a/b?x=1&y=%20")).unwrap(),
            "/a/b?x=1&y=%20"
        );
        assert_eq!(based.upstream_uri(&uri("/a?q")).unwrap(), "/app/a?q");
        assert_eq!(based.upstream_uri(&uri("/")).unwrap(), "/app/");
        // Absolute-form requests keep only their path and query.
        assert_eq!(
            root.upstream_uri(&uri("http://evil.example/p?q")).unwrap(),
            "/p?q"
        );
        assert_eq!(root.upstream_uri(&uri("http://evil.example")).unwrap(), "/");
        assert!(root.upstream_uri(&uri("*")).is_none());
        // A target without a path stays under the base path.
        assert_eq!(
            based.upstream_uri(&uri("http://evil.example")).unwrap(),
            "/app/"
        );
        assert_eq!(
            based.upstream_uri(&uri("evil.example:80")).unwrap(),
            "/app/"
        );
        // The `Host` sent when the client's is not: the upstream's authority.
        assert_eq!(based.authority_host, "[::1]:9000");
        assert_eq!(upstream("http://app:80/").authority_host, "app");
    }

    #[test]
    fn error_pages_follow_accept() {
        let html = error_page(
            Failure::Unreachable,
            Some(&HeaderValue::from_static("text/html,*/*")),
        );
        assert_eq!(html.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(html.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        // The layer's rule: HTML only when preferred by q-value.
        for accept in ["application/json, text/html;q=0.9", "text/html;q=0", "*/*"] {
            let json = error_page(
                Failure::Unreachable,
                Some(&HeaderValue::from_static(accept)),
            );
            assert_eq!(json.headers()[CONTENT_TYPE], "application/json", "{accept}");
        }
        let json = error_page(Failure::Timeout, None);
        assert_eq!(json.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json.headers()[CONTENT_TYPE], "application/json");
        let connect = error_page(Failure::Connect, None);
        assert_eq!(connect.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(connect.headers().get(http::header::ALLOW).is_none());
    }

    #[test]
    fn timeouts_are_found_in_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapper")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_timeout(&Wrapper(std::io::ErrorKind::TimedOut.into())));
        assert!(!is_timeout(&Wrapper(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
    }
}
