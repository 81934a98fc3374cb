//! The upstream connection pool: HTTP/1.1 connections to the one upstream, on
//! `hyper::client::conn::http1`.
//!
//! It replaces hyper-util's general-purpose pooled client, which keys every checkout by scheme
//! and authority (a hashed lookup under a mutex) and spawns a task per request to hand the
//! connection back. Here there is one upstream, so the pool is one LIFO stack of idle
//! connections; a connection goes back to it when the response body is finished (dropped by the
//! server), without a task of its own unless the connection is not ready yet.
//!
//! What it keeps of the legacy client's correctness, each with a test over real sockets
//! (`tests/upstream_pool.rs`):
//!
//! - **Readiness before reuse**: an idle connection is handed out only while hyper says it is
//!   ready ([`SendRequest::is_ready`]); one the upstream closed, or that is older than the idle
//!   timeout, is dropped on the way.
//! - **Retries only where nothing can happen twice**: a request hyper gives back unsent (the
//!   connection closed before it was written) is sent again on a new connection, whatever its
//!   method. A request that was written on a *reused* connection that the upstream then closed
//!   without answering (the keep-alive race) is sent again on a new connection only when it is
//!   idempotent ([`Method::is_idempotent`]) and has no body; a `POST` is never sent twice, it
//!   gets the proxy's 502. One retry at most.
//! - **Bounds**: at most [`PoolSettings::max_connections`] sockets open to the upstream, idle or
//!   busy (a place is freed when the socket is closed, not before); a request that finds the
//!   pool full waits for a connection to come back or to close (within the proxy's response
//!   timeout). At most [`PoolSettings::max_idle`] idle connections: more are closed as they come
//!   back, unless requests are waiting for one (closing it then would only open another);
//!   those kept for waiters are closed as soon as no request waits.
//!   Upgraded (WebSocket) connections leave the pool and do not count.
//! - **Idle timeout**: idle connections older than [`PoolSettings::idle_timeout`] are closed by a
//!   reaper task (one per pool, started with the first idle connection, ended with the pool).

use std::{
    fmt, io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError},
    time::Instant,
};

use super::UpstreamBody;
use crate::server::BoxError;

/// Limits of the upstream connection pool that [`crate::proxy::Upstream`] keeps (bounded, idle
/// timeout, readiness checked before reuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most idle connections kept open for reuse; more are closed when they come back.
    /// Default 1 024.
    pub max_idle: usize,
    /// Most connections open to the upstream at once, idle or busy; a request beyond it waits
    /// for one. Default 16 384 (effectively a guard against exhausting file descriptors).
    pub max_connections: usize,
    /// An idle connection unused for this long is closed. Default 90 s.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle: 1024,
            max_connections: 16 * 1024,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Where the upstream listens: an address, or a name resolved at each connect.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// An IP literal and port.
    Addr(SocketAddr),
    /// A DNS name and port.
    Name(String, u16),
}

/// Why an upstream request failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// No TCP connection (refused, unresolvable, connect timeout: `io::ErrorKind::TimedOut`).
    #[error("cannot connect to the upstream")]
    Connect(#[source] io::Error),
    /// hyper failed on the connection (handshake, write, read, the upstream closing it).
    #[error("upstream connection failed")]
    Http(#[source] hyper::Error),
    /// The pool was closed (only when the process is going away).
    #[error("upstream pool closed")]
    Closed,
}

/// The pool; cloning shares it.
#[derive(Clone)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.shared.target)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Shared {
    target: Target,
    connect_timeout: Duration,
    settings: PoolSettings,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// One permit per open connection (`max_connections`).
    permits: Arc<Semaphore>,
    /// Signalled whenever a connection goes back to `idle`.
    returned: Notify,
    /// Requests waiting for a connection (the pool is full); while there are any, connections
    /// coming back are kept even beyond `max_idle`.
    waiting: AtomicUsize,
    reaper_started: AtomicBool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One upstream connection checked out of the pool. Its `max_connections` permit belongs to
/// its hyper task, so it is released only once the socket is closed.
pub(super) struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// It served a request before (so the upstream may have closed it meanwhile).
    reused: bool,
}

impl Pool {
    /// An empty pool for `target`.
    pub(super) fn new(target: Target, connect_timeout: Duration, settings: PoolSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                target,
                connect_timeout,
                settings,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(
                    settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
                )),
                returned: Notify::new(),
                waiting: AtomicUsize::new(0),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` and returns the response head with the connection it arrived on; give
    /// the connection to [`PooledBody`] with the response body. Retries as the
    /// [module docs](self) say.
    pub(super) async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let replayable = request.method().is_idempotent() && request.body().is_end_stream();
        let mut conn = self.checkout(true).await?;
        // The head of a request that may be sent again: only on a reused connection, the one
        // the upstream may have closed while it was idle.
        let spare = (replayable && conn.reused).then(|| Head::of(&request));
        let error = match conn.sender.try_send_request(request).await {
            Ok(response) => return Ok((response, conn)),
            Err(error) => error,
        };
        let reused = conn.reused;
        drop(conn);
        let mut error = error;
        let retry = match (error.take_message(), spare) {
            // Never written: safe to send again whatever the method.
            (Some(unsent), _) if reused => unsent,
            // Written, and the upstream closed the connection without answering.
            (_, Some(head)) if closed_by_peer(error.error()) => head.into_request(),
            _ => return Err(SendError::Http(error.into_error())),
        };
        tracing::debug!(error = %error.error(), "upstream closed a reused connection; sending again on a new one");
        let mut conn = self.checkout(false).await?;
        match conn.sender.send_request(retry).await {
            Ok(response) => Ok((response, conn)),
            Err(error) => Err(SendError::Http(error)),
        }
    }

    /// A ready connection: an idle one when `idle_ok`, else (or when none is idle) a new one,
    /// waiting while `max_connections` are open.
    async fn checkout(&self, idle_ok: bool) -> Result<Conn, SendError> {
        let shared = &self.shared;
        // Whether this request has waited (then it trims what was kept for waiters).
        let mut waited = false;
        loop {
            if idle_ok {
                if let Some(conn) = self.take_idle() {
                    if waited {
                        self.trim_excess();
                    }
                    return Ok(conn);
                }
            }
            match Arc::clone(&shared.permits).try_acquire_owned() {
                Ok(permit) => return self.connect(permit).await,
                Err(TryAcquireError::Closed) => return Err(SendError::Closed),
                Err(TryAcquireError::NoPermits) => {}
            }
            // Full. Without reuse, an idle connection gives its place to a new one.
            if !idle_ok && self.evict_one_idle() {
                continue;
            }
            let waiting = Waiting::new(&shared.waiting);
            let mut returned = pin!(shared.returned.notified());
            returned.as_mut().enable();
            if idle_ok {
                if let Some(conn) = self.take_idle() {
                    drop(waiting);
                    self.trim_excess();
                    return Ok(conn);
                }
            }
            let permit = tokio::select! {
                permit = Arc::clone(&shared.permits).acquire_owned() => {
                    permit.map_err(|_| SendError::Closed)?
                }
                () = returned => {
                    waited = true;
                    continue;
                }
            };
            // No longer waiting while the new connection opens: connections coming back in the
            // meantime are not kept beyond `max_idle` for this request.
            drop(waiting);
            self.trim_excess();
            return self.connect(permit).await;
        }
    }

    /// Closes the oldest idle connections beyond `max_idle` (kept while requests waited), once
    /// no request waits any more.
    fn trim_excess(&self) {
        let shared = &self.shared;
        let excess: Vec<Idle> = {
            let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let over = idle.len().saturating_sub(shared.settings.max_idle);
            if over == 0 || shared.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            idle.drain(..over).collect()
        };
        // Dropping them closes them, outside the lock.
        drop(excess);
    }

    /// The most recently used idle connection that is still ready and young enough.
    fn take_idle(&self) -> Option<Conn> {
        let shared = &self.shared;
        let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle { mut conn, since }) = idle.pop() {
            if conn.sender.is_ready() && since.elapsed() < shared.settings.idle_timeout {
                conn.reused = true;
                return Some(conn);
            }
            // Closed by the upstream, or expired: dropping it closes it.
        }
        None
    }

    /// Closes the oldest idle connection; false when there is none.
    fn evict_one_idle(&self) -> bool {
        let mut idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.is_empty() {
            return false;
        }
        drop(idle.remove(0));
        true
    }

    /// Opens a new connection (within the connect timeout) and starts its hyper task.
    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Conn, SendError> {
        let shared = &self.shared;
        let stream = tokio::time::timeout(shared.connect_timeout, connect(&shared.target))
            .await
            .map_err(|_| {
                SendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", shared.connect_timeout),
                ))
            })?
            .map_err(SendError::Connect)?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on the upstream connection");
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
            // The socket is closed (or handed to an upgrade): the place is free.
            drop(permit);
        });
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Takes a connection back after its response: into the idle stack when hyper says it is
    /// ready for the next request, after a wait when it is still finishing the last one, or
    /// closed when it cannot be reused.
    fn release(&self, conn: Conn) {
        if conn.sender.is_ready() {
            self.put_idle(conn);
        } else if !conn.sender.is_closed() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = self.clone();
            let idle_timeout = self.shared.settings.idle_timeout;
            runtime.spawn(async move {
                let mut conn = conn;
                let ready = tokio::time::timeout(idle_timeout, conn.sender.ready()).await;
                if matches!(ready, Ok(Ok(()))) {
                    pool.put_idle(conn);
                }
            });
        }
    }

    fn put_idle(&self, conn: Conn) {
        let shared = &self.shared;
        {
            let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= shared.settings.max_idle && shared.waiting.load(Ordering::Acquire) == 0
            {
                drop(idle);
                drop(conn);
                self.trim_excess();
                return;
            }
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        shared.returned.notify_one();
        if !shared.reaper_started.load(Ordering::Relaxed)
            && !shared.reaper_started.swap(true, Ordering::AcqRel)
        {
            start_reaper(Arc::downgrade(shared), shared.settings.idle_timeout);
        }
    }
}

/// Counts one request waiting for a connection while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Closes expired and dead idle connections every half idle timeout, until the pool is gone.
fn start_reaper(shared: Weak<Shared>, idle_timeout: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let period = (idle_timeout / 2).max(Duration::from_millis(10));
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let expired: Vec<Idle> = {
                let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let (keep, mut expired): (Vec<Idle>, Vec<Idle>) =
                    std::mem::take(&mut *idle).into_iter().partition(|entry| {
                        !entry.conn.sender.is_closed()
                            && entry.since.elapsed() < shared.settings.idle_timeout
                    });
                *idle = keep;
                // Kept beyond `max_idle` while requests waited: the oldest go now.
                let excess = idle.len().saturating_sub(shared.settings.max_idle);
                if excess > 0 && shared.waiting.load(Ordering::Acquire) == 0 {
                    expired.extend(idle.drain(..excess));
                }
                expired
            };
            if !expired.is_empty() {
                tracing::debug!(closed = expired.len(), "closed idle upstream connections");
            }
        }
    });
}

/// Connects to the first address of `target` that accepts.
async fn connect(target: &Target) -> io::Result<TcpStream> {
    match target {
        Target::Addr(addr) => TcpStream::connect(addr).await,
        Target::Name(host, port) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
            for addr in tokio::net::lookup_host((host.as_str(), *port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => last = error,
                }
            }
            Err(last)
        }
    }
}

/// Whether hyper's error says the upstream closed or reset the connection (rather than, say,
/// sending a malformed response).
fn closed_by_peer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        source = current.source();
    }
    false
}

/// A copy of a body-less request's head, to send it again.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn of(request: &Request<UpstreamBody>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn into_request(self) -> Request<UpstreamBody> {
        let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// The upstream's response body; gives its connection back to the pool when the server is
/// done with it (finished or dropped).
pub(super) struct PooledBody {
    inner: Incoming,
    conn: Option<Conn>,
    pool: Pool,
}

impl PooledBody {
    /// `inner`, arrived on `conn` of `pool`.
    pub(super) fn new(inner: Incoming, conn: Conn, pool: Pool) -> Self {
        Self {
            inner,
            conn: Some(conn),
            pool,
        }
    }
}

impl fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections that come back while a request waits are all kept (closing one would only
    /// make the waiter open another); once the waiter has its connection and nobody else waits,
    /// the idle stack is back to `max_idle` at once, not at the reaper's next round.
    #[tokio::test]
    async fn connections_kept_for_a_waiter_are_trimmed_when_it_is_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and holds every socket (the pool only needs the handshake, which is local).
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let settings = PoolSettings {
            max_connections: 3,
            max_idle: 1,
            idle_timeout: Duration::from_secs(90),
        };
        let pool = Pool::new(Target::Addr(addr), Duration::from_secs(5), settings);
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(pool.checkout(false).await.unwrap());
        }
        // The pool is full: a fourth request waits.
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout(true).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(pool.shared.waiting.load(Ordering::Acquire), 1);
        // All three come back before the waiter runs again: all are kept for it.
        for conn in open {
            pool.put_idle(conn);
        }
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 3);
        waiter.await.unwrap().unwrap();
        assert_eq!(pool.shared.waiting.load(Ordering::Acquire), 0);
        assert_eq!(
            pool.shared.idle.lock().unwrap().len(),
            1,
            "the excess kept for the waiter is closed once it is served"
        );
    }
}
