//! The proxy part of the harness, used by `tests/proxy.rs` and `tests/proxy_hardening.rs`: a tiny
//! hyper upstream, the proxy under test and raw hyper clients, all on `127.0.0.1:0`. Every
//! helper that touches the network is meant to be awaited through [`bounded`].

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

pub(crate) use super::{STEP, bounded};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use wechat_oauth_proxy::{
    proxy::{ProxySettings, Upstream},
    server::{self, BoxError, ServerSettings},
};

/// Body type used by the test upstream and test clients.
pub(crate) type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A fixed body.
pub(crate) fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body fed chunk by chunk through the returned sender; it ends when the sender is dropped.
pub(crate) fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, BoxError>(Frame::data(chunk)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// Deterministic, non-repeating-looking test data.
pub(crate) fn test_data(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// SHA-256 as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// A one-shot signal that can be fired from inside a `Fn` handler.
#[derive(Clone)]
pub(crate) struct Signal(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Signal {
    /// The signal and the receiver that observes it.
    pub(crate) fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Fires the signal (only the first call has an effect).
    pub(crate) fn fire(&self) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// A receiver that can be taken once from inside a `Fn` handler.
#[derive(Clone)]
pub(crate) struct Wait(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

impl Wait {
    /// The waiter and the sender that releases it.
    pub(crate) fn new() -> (Self, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(rx)))), tx)
    }

    /// Waits for the release (bounded); returns at once if already taken.
    pub(crate) async fn wait(&self) {
        let rx = self.0.lock().unwrap().take();
        if let Some(rx) = rx {
            bounded(rx).await.expect("release sender dropped");
        }
    }
}

/// Starts an HTTP/1.1 upstream (upgrades enabled) answering with `handler`.
pub(crate) async fn start_upstream<H, F>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A free loopback port with nothing listening on it.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Proxy settings pointing at `upstream` (with an optional base path).
pub(crate) fn settings_for(upstream: SocketAddr, base_path: &str) -> ProxySettings {
    ProxySettings::new(format!("http://{upstream}{base_path}").parse().unwrap())
}

/// The proxy under test, served by [`server::serve`].
pub(crate) struct Proxy {
    /// Where the proxy listens.
    pub(crate) addr: SocketAddr,
    /// Fires the `shutdown` future given to `serve`.
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    /// The `serve` task.
    pub(crate) task: JoinHandle<std::io::Result<()>>,
}

/// Starts `Upstream::new(settings)` behind `serve` on a fresh loopback port.
pub(crate) async fn start_proxy(settings: ProxySettings, server_settings: ServerSettings) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = Upstream::new(settings).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(
        listener,
        upstream,
        server_settings,
        async move {
            let _ = rx.await;
        },
    ));
    Proxy {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// Sends one request over a fresh HTTP/1.1 connection.
pub(crate) async fn send(
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// Sends one request over a fresh HTTP/2 (prior knowledge, cleartext) connection.
pub(crate) async fn send_h2(
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// The whole body of `response`, bounded.
pub(crate) async fn body_bytes(response: Response<Incoming>) -> Bytes {
    bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes()
}
