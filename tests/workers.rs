//! Thread-per-core serving (`server.workers`): several single-threaded runtimes, each with its
//! own `SO_REUSEPORT` listener on the one port, keep the connection watchdog and the graceful
//! drain of the single-runtime server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::HashSet, convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use wechat_oauth_proxy::server::{self, RequestBody, ServerSettings};

use support::proxy::{Wait, body_bytes, bounded, full, send};

/// Answers with the name of the worker thread that served the request; `/slow` waits for
/// `release` first.
fn service(
    release: Wait,
) -> impl tower::Service<
    Request<RequestBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<RequestBody>| {
        let release = release.clone();
        async move {
            if request.uri().path() == "/slow" {
                release.wait().await;
            }
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
        }
    })
}

struct Workers {
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(workers: usize, settings: ServerSettings, release: Wait) -> Workers {
    let listeners = server::reuseport_listeners("127.0.0.1:0".parse().unwrap(), workers).unwrap();
    let addrs: HashSet<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    assert_eq!(addrs.len(), 1, "every worker listens on the same port");
    let addr = *addrs.iter().next().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_workers(
        listeners,
        move |_| service(release.clone()),
        settings,
        async move {
            let _ = rx.await;
        },
    ));
    Workers {
        addr,
        shutdown: Some(tx),
        task,
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let request = Request::get(path).body(full("")).unwrap();
    let response = bounded(send(addr, request)).await.unwrap();
    assert_eq!(response.status(), 200);
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

#[tokio::test]
async fn every_worker_serves_connections_on_the_shared_port() {
    let (release, _keep) = Wait::new();
    let mut workers = start(2, ServerSettings::default(), release).await;

    let mut served_by = HashSet::new();
    for _ in 0..64 {
        served_by.insert(get(workers.addr, "/").await);
    }
    // The kernel spreads connections by their source port: 64 all on one worker would be a
    // 2^-63 chance.
    assert_eq!(
        served_by,
        HashSet::from(["worker-0".to_owned(), "worker-1".to_owned()])
    );

    workers.shutdown.take().unwrap().send(()).unwrap();
    bounded(workers.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_on_every_worker_then_returns() {
    let (release, go) = Wait::new();
    let settings = ServerSettings {
        shutdown_grace: Duration::from_secs(20),
        ..ServerSettings::default()
    };
    let mut workers = start(2, settings, release).await;
    let addr = workers.addr;

    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    // The slow request is in flight once a fast one on another connection has been served
    // (same worker or not, the slow one was accepted first; give it time to reach the service).
    get(addr, "/").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    workers.shutdown.take().unwrap().send(()).unwrap();
    // Every worker stops accepting: new connections are refused once all listeners are closed.
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the port still accepts connections after shutdown");
    assert!(!workers.task.is_finished(), "returned before draining");

    go.send(()).unwrap();
    assert!(bounded(slow).await.unwrap().starts_with("worker-"));
    bounded(workers.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_watchdog_closes_silent_and_idle_connections_on_every_worker() {
    let (release, _keep) = Wait::new();
    let settings = ServerSettings {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..ServerSettings::default()
    };
    let mut workers = start(2, settings, release).await;

    // Silent connections (never a request): closed by the header-read timeout, whichever worker
    // took them.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(bounded(TcpStream::connect(workers.addr)).await.unwrap());
    }
    for mut stream in silent {
        let mut buf = [0u8; 64];
        assert_eq!(bounded(stream.read(&mut buf)).await.unwrap(), 0, "closed");
    }

    // Idle keep-alive connections after one request: closed by the idle timeout.
    for _ in 0..8 {
        let mut stream = bounded(TcpStream::connect(workers.addr)).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let closed = loop {
            let n = bounded(stream.read(&mut buf)).await.unwrap();
            if n == 0 {
                break true;
            }
            answer.extend_from_slice(&buf[..n]);
        };
        assert!(closed);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("worker-"), "{answer}");
    }

    workers.shutdown.take().unwrap().send(()).unwrap();
    bounded(workers.task).await.unwrap().unwrap();
}

#[test]
fn the_workers_key_is_optional_bounded_and_exclusive_with_worker_threads() {
    use std::{collections::HashMap, path::Path};
    use wechat_oauth_proxy::config::{Config, ConfigError};

    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let load = |extra: &str| {
        let text = shipped.replace("[server]\n", &format!("[server]\n{extra}\n"));
        Config::from_toml_str(&text, Path::new("."), &HashMap::new())
    };
    let (config, _) = load("").unwrap();
    assert_eq!(config.server.workers, None);
    assert_eq!(config.server.runtime_threads(), None);
    let (config, _) = load("workers = 2").unwrap();
    assert_eq!(config.server.workers, Some(2));
    // The main runtime only runs background tasks then.
    assert_eq!(config.server.runtime_threads(), Some(1));
    for refused in [
        "workers = 0",
        "workers = 100000",
        "workers = 2\nworker_threads = 2",
    ] {
        let Err(ConfigError::Invalid(problems)) = load(refused) else {
            panic!("{refused:?} was accepted")
        };
        assert!(
            problems.iter().any(|p| p.key == "server.workers"),
            "{refused:?}: {problems:?}"
        );
    }
}

/// The binary with `server.workers = 2`: the whole sidecar (layer, simulator, demo upstream)
/// served by two workers, each with its own upstream pool.
#[cfg(feature = "sim")]
#[tokio::test]
async fn the_sidecar_logs_in_and_proxies_with_two_workers() {
    use support::sidecar::{Sidecar, repo_file};

    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let config = shipped.replace("[server]\n", "[server]\nworkers = 2\n");
    assert!(config.contains("workers = 2"));
    let sidecar = Sidecar::start("workers", &config).await;

    let browser = sidecar.browser();
    let landing = sidecar.login(&browser, "/orders/42", 0).await;
    assert_eq!(landing.status, http::StatusCode::OK);
    // Fresh connections (one per request) land on both workers; each proxies with the session.
    let cookie = browser
        .cookie_names()
        .iter()
        .map(|name| format!("{name}={}", browser.cookie(name).unwrap()))
        .collect::<Vec<_>>()
        .join("; ");
    let host = sidecar.base.authority().to_owned();
    let addr = sidecar.base.socket_addrs(|| None).unwrap()[0];
    for n in 0..16 {
        let request = Request::get(format!("/orders/{n}"))
            .header("host", &host)
            .header("cookie", &cookie)
            .header("accept", "text/html")
            .body(full(""))
            .unwrap();
        let page = bounded(send(addr, request)).await.unwrap();
        assert_eq!(page.status(), http::StatusCode::OK, "request {n}");
        assert!(!body_bytes(page).await.is_empty());
    }
}
