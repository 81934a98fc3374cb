//! The accept loop: serves a tower service over HTTP/1.1 and HTTP/2 on a TCP listener.
//!
//! Built on hyper-util's `auto` connection builder (protocol chosen per connection, HTTP/1
//! upgrades such as WebSocket allowed), with bounded request heads, graceful shutdown that lets
//! in-flight requests finish within a grace period, and an accept loop that backs off on errors
//! such as `EMFILE` instead of ending.
//!
//! No client can hold a connection (a file descriptor) without using it. Every connection has a
//! watchdog next to it, fed by a small per-connection state that the socket wrapper and the
//! service wrapper update (bytes read, requests in flight, when the last one ended):
//!
//! - **From accept to the first request**: the first complete request head must reach the
//!   service within [`ServerSettings::header_read_timeout`], or the connection is closed. This
//!   covers the silent socket, the protocol sniff (a half-sent HTTP/2 preface), the HTTP/2
//!   preface and `SETTINGS`, and a slow first HTTP/1 head. Later HTTP/1 heads are bounded by
//!   hyper's own header timer (same setting).
//! - **Idle**: with no request in flight, a connection on which nothing happened for
//!   [`ServerSettings::idle_timeout`] is closed (HTTP/2 with a `GOAWAY`). "Nothing" is: no
//!   request ended and, on HTTP/1, no byte read. On HTTP/2 bytes do not count (the keep-alive
//!   pings below are answered by every live client). A request waiting for a slow upstream, or a
//!   long streamed response, is in flight, not idle.
//! - **HTTP/2 keep-alive**: a `PING` after [`ServerSettings::http2_keep_alive_interval`] without
//!   a frame from the client; no answer within [`ServerSettings::http2_keep_alive_timeout`]
//!   closes the connection (a dead peer under a long request).
//! - **Request bodies**: every request body is a [`RequestBody`], which fails with
//!   [`BodyTimeout`] when the client sends nothing for [`ServerSettings::body_timeout`] while
//!   the service waits for the next frame.
//!
//! Every request reaches the service with a [`ClientAddr`] extension holding the TCP peer, which
//! the proxy uses to decide whether `X-Forwarded-*` fields may be believed and the layer whether
//! a client's `X-Request-Id` may be kept: both with the one rule, [`is_trusted`].

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::{Instant, Sleep},
};
use tower::Service;

/// Boxed error type accepted from services and bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TCP peer of the connection a request arrived on, inserted by [`serve`] into every
/// request's extensions.
///
/// This is the *direct* peer (often a load balancer), not necessarily the end user; the proxy
/// compares it with its trusted proxy list before believing `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Whether `peer` lies in one of the trusted proxy networks (`server.trusted_proxies`). An
/// unknown peer is never trusted. The one trust rule of the crate: the proxy believes
/// `X-Forwarded-*` and the layer keeps a client's `X-Request-Id` only from such a peer.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as seen on dual-stack sockets) are compared as
/// the IPv4 address they carry.
pub fn is_trusted(peer: Option<IpAddr>, trusted: &[ipnet::IpNet]) -> bool {
    peer.map(|ip| ip.to_canonical())
        .is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

/// Limits and timeouts of the HTTP server.
///
/// Every duration must be greater than zero (the configuration refuses 0): a zero timeout would
/// close connections or fail bodies at once.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Upper bound on the size of a request head: HTTP/1 read buffer (`max_buf_size`, at least
    /// 8 KiB — hyper refuses less) and HTTP/2 `max_header_list_size`. Larger heads get 431 (HTTP/1)
    /// or a stream error (HTTP/2). Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take, counted from accept, until its first complete request head
    /// reaches the service (protocol detection, HTTP/2 preface and `SETTINGS` included); then
    /// the connection is closed (slowloris protection). Later HTTP/1 request heads get the same
    /// time each. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight and nothing happening
    /// (no request ended and, on HTTP/1, no byte read) before it is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// How long a request body may send nothing while the service waits for its next frame;
    /// then the body fails with [`BodyTimeout`]. Default 30 s.
    pub body_timeout: Duration,
    /// HTTP/2: send a `PING` when the client has sent no frame for this long. Default 20 s.
    pub http2_keep_alive_interval: Duration,
    /// HTTP/2: close the connection when a keep-alive `PING` is not answered within this time.
    /// Default 20 s.
    pub http2_keep_alive_timeout: Duration,
    /// How long in-flight requests may run after shutdown starts; connections still open after
    /// that are closed. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// hyper's smallest accepted HTTP/1 read buffer; it panics below this.
const MIN_H1_BUF: usize = 8 * 1024;
/// First delay after an accept error.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
/// Longest delay between accept attempts while errors persist.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long an idle connection asked to close (HTTP/2 `GOAWAY`) may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` until `shutdown` resolves, then drains.
///
/// Each accepted connection is served on its own task with HTTP/1.1 or HTTP/2 (auto-detected),
/// and HTTP/1 upgrades are enabled. Silent, idle and stalled connections are closed as the
/// [module docs](self) describe. When `shutdown` completes the listener is closed, every
/// connection is asked to finish its in-flight requests and close, and `serve` returns once they
/// have — or after [`ServerSettings::shutdown_grace`], when the remaining connections are dropped.
/// Upgraded connections (WebSocket tunnels) live on the service's own tasks and are not drained.
///
/// The service sees every request body as a [`RequestBody`].
///
/// # Errors
///
/// None today: accept errors are logged and retried with a backoff (10 ms doubling to 1 s), since
/// they are usually transient (`EMFILE`, `ECONNABORTED`). The `Result` leaves room for fatal
/// listener errors.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(MIN_H1_BUF));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keep_alive_interval)
        .keep_alive_timeout(settings.http2_keep_alive_timeout)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));

    let limits = Limits {
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
    };
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_START;
    tracing::info!(addr = ?listener.local_addr().ok(), "listening");

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => {
                        backoff = ACCEPT_BACKOFF_START;
                        accepted
                    }
                    Err(error) => {
                        tracing::warn!(%error, delay = ?backoff, "accept failed; backing off");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                tracing::debug!(%peer, "connection accepted");
                let state = Arc::new(ConnState::new());
                let service = ConnService {
                    inner: service.clone(),
                    state: Arc::clone(&state),
                    peer: ClientAddr(peer),
                    body_timeout: settings.body_timeout,
                };
                let io = WatchedIo { inner: stream, state: Arc::clone(&state) };
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
                    .into_owned();
                connections.spawn(run_connection(connection, state, limits, stopped.clone(), peer));
            }
        }
    }

    drop(listener);
    tracing::info!(
        connections = connections.len(),
        grace = ?settings.shutdown_grace,
        "shutting down; draining connections"
    );
    // Receivers only wait for `true`; a send error means no connection is left to tell.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    connections.shutdown().await;
    tracing::info!("server stopped");
    Ok(())
}

/// The connection timeouts the watchdog enforces.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// Why the watchdog ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// No complete request head within the header read timeout after accept.
    FirstRequest,
    /// No request in flight and nothing happening for the idle timeout.
    Idle,
}

/// Serves one connection next to its watchdog, and drains it when the server stops.
async fn run_connection<C, E>(
    connection: C,
    state: Arc<ConnState>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), E>> + GracefulConnection,
    E: fmt::Display,
{
    let mut connection = pin!(connection);
    let mut watchdog = pin!(watchdog(&state, limits));
    let mut stopping = false;
    let outcome = loop {
        tokio::select! {
            outcome = connection.as_mut() => break outcome,
            expired = watchdog.as_mut() => {
                match expired {
                    Expired::FirstRequest => {
                        tracing::debug!(%peer, timeout = ?limits.header_read_timeout, "no request head in time; closing");
                    }
                    Expired::Idle => {
                        tracing::debug!(%peer, timeout = ?limits.idle_timeout, "connection idle; closing");
                        // HTTP/2 says GOAWAY first; bounded, since the client need not answer.
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, connection.as_mut()).await;
                    }
                }
                return;
            }
            () = stop_requested(&mut stopped), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    match outcome {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
    }
}

/// Resolves once the server is stopping (or gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the server dropped the sender: stopping as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A connection that can be asked to finish its requests and close.
trait GracefulConnection {
    /// Starts a graceful shutdown (see hyper-util's `UpgradeableConnection::graceful_shutdown`).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Resolves when the connection has expired: no first request in time, or idle too long.
async fn watchdog(state: &ConnState, limits: Limits) -> Expired {
    loop {
        let now = Instant::now();
        let deadline = if !state.served_a_request.load(Ordering::Acquire) {
            let deadline = later(state.accepted, limits.header_read_timeout);
            if now >= deadline {
                return Expired::FirstRequest;
            }
            // Nothing wakes this loop when the first request arrives: look again within the
            // idle timeout, so that an idle deadline after that request is never missed.
            deadline.min(later(now, limits.idle_timeout))
        } else if state.in_flight.load(Ordering::Acquire) > 0 {
            // Not idle; look again later. A request that ends before then moves the idle
            // deadline to its end plus the idle timeout, which is never earlier than this wake-up.
            later(now, limits.idle_timeout)
        } else {
            let deadline = later(state.last_activity(), limits.idle_timeout);
            if now >= deadline {
                return Expired::Idle;
            }
            deadline
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// `from + after`, saturating far in the future instead of overflowing.
fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(from)
}

/// What the socket wrapper and the service wrapper of one connection tell its watchdog.
#[derive(Debug)]
struct ConnState {
    /// When the connection was accepted; times below are milliseconds since then.
    accepted: Instant,
    /// A request head has reached the service.
    served_a_request: AtomicBool,
    /// The connection speaks HTTP/2 (its bytes then include keep-alive pings, not activity).
    http2: AtomicBool,
    /// Requests whose response has not been sent completely (or dropped).
    in_flight: AtomicUsize,
    /// Milliseconds since `accepted` of the last byte read (HTTP/1) or the last request end.
    last_activity_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            served_a_request: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    /// Records activity now.
    fn touch(&self) {
        let elapsed = Instant::now().saturating_duration_since(self.accepted);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        later(
            self.accepted,
            Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed)),
        )
    }

    /// A request head reached the service: the returned guard keeps it in flight.
    fn start_request(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served_a_request.store(true, Ordering::Release);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight on a connection; dropped when its response has been sent (or dropped).
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time counts from the end of the last request, so record it before the
        // watchdog can see zero requests in flight.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// The accepted socket; every read on an HTTP/1 connection counts as activity.
    #[derive(Debug)]
    struct WatchedIo {
        #[pin]
        inner: TcpStream,
        state: Arc<ConnState>,
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && !this.state.http2.load(Ordering::Relaxed)
        {
            this.state.touch();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service of one connection: adds [`ClientAddr`], wraps the body in a [`RequestBody`] and
/// keeps the request in flight until its response body is done.
#[derive(Clone, Debug)]
struct ConnService<S> {
    inner: S,
    state: Arc<ConnState>,
    peer: ClientAddr,
    body_timeout: Duration,
}

impl<S, B> Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.state.start_request(request.version());
        let body_timeout = self.body_timeout;
        let mut request = request.map(|body| RequestBody::new(body, body_timeout));
        request.extensions_mut().insert(self.peer);
        TrackedFuture {
            inner: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project! {
    /// The service's future; hands the in-flight guard on to the response body.
    #[derive(Debug)]
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(response.map(|response| {
            response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            })
        }))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until hyper drops it.
    #[derive(Debug)]
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a [`RequestBody`] fails with when the client stops sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request body timed out: no data from the client for {timeout:?}")]
pub struct BodyTimeout {
    /// The configured [`ServerSettings::body_timeout`].
    pub timeout: Duration,
}

pin_project! {
    /// The body of every request [`serve`] hands to its service: hyper's [`Incoming`] with a
    /// timeout between frames.
    ///
    /// While the service waits for the next frame and the client sends nothing for
    /// [`ServerSettings::body_timeout`], the body yields a [`BodyTimeout`] error (boxed; find it
    /// with `downcast_ref`) and then ends. The clock runs only while the reader waits: a service
    /// that reads late is not held against the client. [`Body::is_end_stream`] and
    /// [`Body::size_hint`] are hyper's own, so "no body" means no body on every protocol.
    #[derive(Debug)]
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        timeout: Duration,
        // Created at the first wait, then reset, so body-less requests never allocate one.
        timer: Option<Pin<Box<Sleep>>>,
        // The timer runs for the current wait (false again once a frame arrives).
        waiting: bool,
        // The timeout fired: the body is over.
        timed_out: bool,
    }
}

impl RequestBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            waiting: false,
            timed_out: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    let deadline = later(Instant::now(), *this.timeout);
                    match this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let fired = this
                    .timer
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if fired {
                    *this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout {
                        timeout: *this.timeout,
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds `workers` listeners on the same address with `SO_REUSEPORT`, for [`serve_workers`]:
/// the kernel spreads new connections over them. With port 0 the first listener picks the port
/// and the others join it. Linux only admits sockets of the same user into one port group.
///
/// Must run inside a tokio runtime (the listeners are registered with it, then handed over as
/// std listeners).
///
/// # Errors
/// The error from creating, configuring or binding a socket (address in use, no permission).
pub fn reuseport_listeners(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    /// The same backlog as tokio's `TcpListener::bind`.
    const BACKLOG: u32 = 1024;
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// Serves like [`serve`], but on one single-threaded runtime per listener, each on its own OS
/// thread with its own service (thread-per-core, as nginx's workers: no task moves between
/// threads, and a service that owns per-thread state — the proxy's connection pool, see
/// `Upstream::with_own_pool` — never shares it). `listeners` usually come from
/// [`reuseport_listeners`]; `services` gives one service per listener.
///
/// Every worker has the watchdog and the graceful drain of [`serve`]. When `shutdown` resolves,
/// every worker stops accepting and drains (within [`ServerSettings::shutdown_grace`]); this
/// returns once all have stopped.
///
/// # Errors
/// The first error of a worker: its runtime could not be built, its listener not registered, or
/// its thread not started (or it panicked).
pub async fn serve_workers<S, B>(
    listeners: Vec<std::net::TcpListener>,
    mut services: impl FnMut(usize) -> S,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// How long a stopped worker's runtime waits for its blocking tasks (a DNS lookup).
    const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);
    let (stop, stopped) = watch::channel(false);
    let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel::<(usize, io::Result<()>)>();
    let mut threads = Vec::with_capacity(listeners.len());
    let mut failed = Ok(());
    for (index, listener) in listeners.into_iter().enumerate() {
        let service = services(index);
        let settings = settings.clone();
        let mut stopped = stopped.clone();
        let ended = ended.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let served = runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener)?;
                            let shutdown = async move { stop_requested(&mut stopped).await };
                            serve(listener, service, settings, shutdown).await
                        });
                        runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
                        served
                    });
                // The receiver is gone only when `serve_workers` itself was dropped.
                let _ = ended.send((index, served));
            });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                failed = Err(error);
                break;
            }
        }
    }
    // Only the workers hold senders now: `recv` ends once every worker has ended (or panicked).
    drop(ended);
    if failed.is_ok() {
        tracing::info!(workers = threads.len(), "serving on one thread per worker");
        tokio::select! {
            () = shutdown => {}
            Some((index, outcome)) = ends.recv() => {
                // A worker that ends on its own failed: stop the others too.
                tracing::warn!(worker = index, ?outcome, "a worker stopped; stopping the others");
                failed = outcome;
            }
        }
    }
    let _ = stop.send(true);
    while let Some((_, outcome)) = ends.recv().await {
        failed = failed.and(outcome);
    }
    for thread in threads {
        // Every worker has sent its outcome (or panicked): its thread is ending.
        if thread.join().is_err() {
            failed = failed.and(Err(io::Error::other("a worker thread panicked")));
        }
    }
    failed
}

/// The tokio runtime the sidecar runs on: `workers` threads (`None`: one per CPU this process may
/// use, honouring `taskset`/cgroup limits). One thread gets the single-threaded scheduler: with
/// nobody to steal work from, the work-stealing pool only adds cost (about 5% more requests per
/// second on one CPU, see BENCHMARKS.md).
///
/// # Errors
/// The I/O error from tokio when the runtime cannot be created.
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C), for use as the `shutdown`
/// argument of [`serve`].
///
/// If a handler cannot be installed the error is logged and the remaining signal still works.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = async {
            match signal(SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        let interrupt = async {
            match signal(SignalKind::interrupt()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGINT");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => tracing::info!("SIGTERM received"),
            () = interrupt => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received");
    }
}
