//! The accept loop: serves a tower service over HTTP/1.1 and HTTP/2 on a TCP listener.
//!
//! Built on hyper-util's `auto` connection builder (protocol chosen per connection, HTTP/1
//! upgrades such as WebSocket allowed), with bounded request headers, a header read timeout,
//! graceful shutdown that lets in-flight requests finish within a grace period, and an accept
//! loop that backs off on errors such as `EMFILE` instead of ending.
//!
//! Every request reaches the service with a [`ClientAddr`] extension holding the TCP peer, which
//! the proxy uses to decide whether `X-Forwarded-*` fields may be believed.

use std::{future::Future, net::SocketAddr, pin::pin, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinSet};
use tower::{Service, ServiceExt as _};

/// Boxed error type accepted from services and bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TCP peer of the connection a request arrived on, inserted by [`serve`] into every
/// request's extensions.
///
/// This is the *direct* peer (often a load balancer), not necessarily the end user; the proxy
/// compares it with its trusted proxy list before believing `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Limits and timeouts of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Upper bound on the size of a request head: HTTP/1 read buffer (`max_buf_size`, at least
    /// 8 KiB — hyper refuses less) and HTTP/2 `max_header_list_size`. Larger heads get 431 (HTTP/1)
    /// or a stream error (HTTP/2). Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take to send a complete HTTP/1 request head before the connection
    /// is closed (slowloris protection). Default 10 s.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown starts; connections still open after
    /// that are closed. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
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

/// Serves `service` on `listener` until `shutdown` resolves, then drains.
///
/// Each accepted connection is served on its own task with HTTP/1.1 or HTTP/2 (auto-detected),
/// and HTTP/1 upgrades are enabled. When `shutdown` completes the listener is closed, every
/// connection is asked to finish its in-flight requests and close, and `serve` returns once they
/// have — or after [`ServerSettings::shutdown_grace`], when the remaining connections are dropped.
/// Upgraded connections (WebSocket tunnels) live on the service's own tasks and are not drained.
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
) -> std::io::Result<()>
where
    S: Service<Request<hyper::body::Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
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
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));

    let graceful = GracefulShutdown::new();
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
                let service = service
                    .clone()
                    .map_request(move |mut request: Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ClientAddr(peer));
                        request
                    });
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    } else {
                        tracing::debug!(%peer, "connection closed");
                    }
                });
            }
        }
    }

    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        grace = ?settings.shutdown_grace,
        "shutting down; draining connections"
    );
    let drained = tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await;
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
