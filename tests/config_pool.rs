//! The `[upstream]` pool keys of `config.toml` reach the real binary's upstream pool: with
//! `pool_max_connections = 3`, 30 concurrent requests through the sidecar never have more than
//! 3 sockets open to the upstream at once, and all of them are answered; with
//! `pool_max_idle = 0`, no connection is kept for reuse. The library-level version of the
//! bounds is `tests/upstream_pool.rs`; this one checks the mapping from the file.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::{Request, StatusCode};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use support::bounded;
use support::proxy::{body_bytes, full, send};
use support::sidecar::{Sidecar, repo_file};

/// `upstream.pool_max_connections` in the test's configuration.
const MAX_CONNECTIONS: usize = 3;
/// Requests sent at once.
const REQUESTS: usize = 30;

/// What the raw upstream saw.
#[derive(Default)]
struct Seen {
    /// Connections open now.
    open: AtomicUsize,
    /// Most connections open at once.
    max_open: AtomicUsize,
    /// Requests received and not yet answered.
    in_flight: AtomicUsize,
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Requests answered.
    answered: AtomicUsize,
}

/// A raw HTTP/1.1 upstream (keep-alive, `200 ok`). It holds every answer until
/// `MAX_CONNECTIONS` requests are in flight at once — which only happens once the pool has
/// opened as many connections as it may — so that the bound is reached, not just respected.
async fn raw_upstream() -> (SocketAddr, Arc<Seen>) {
    raw_upstream_releasing_at(MAX_CONNECTIONS).await
}

/// [`raw_upstream`], holding its answers until `hold_until` requests are in flight at once.
async fn raw_upstream_releasing_at(hold_until: usize) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let (release, released) = watch::channel(false);
    let release = Arc::new(release);
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
            shared.max_open.fetch_max(open, Ordering::SeqCst);
            let seen = Arc::clone(&shared);
            let release = Arc::clone(&release);
            let released = released.clone();
            tokio::spawn(async move {
                serve(stream, &seen, hold_until, &release, released).await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// Serves the requests (heads only: the test sends GETs) of one connection until it closes.
async fn serve(
    mut stream: TcpStream,
    seen: &Seen,
    hold_until: usize,
    release: &watch::Sender<bool>,
    mut released: watch::Receiver<bool>,
) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        buffer.drain(..head_end);
        if seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1 >= hold_until {
            release.send_replace(true);
        }
        bounded(released.wait_for(|open| *open)).await.unwrap();
        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        seen.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// The shipped development configuration with `upstream` instead of the demo upstream, and
/// `pool_keys` in `[upstream]`. `GET /public/*` is a skip rule there: no login needed.
async fn sidecar(label: &str, upstream: SocketAddr, pool_keys: &str) -> Sidecar {
    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let config = shipped.replace(
        "[server]\n",
        &format!("[server]\nupstream = \"http://{upstream}\"\n"),
    );
    Sidecar::start(label, &format!("{config}\n[upstream]\n{pool_keys}\n")).await
}

/// `GET /public/{n}.txt` through `sidecar` on a fresh connection; asserts the upstream's `ok`.
async fn get_public(addr: SocketAddr, host: String, n: usize) {
    let request = Request::get(format!("/public/{n}.txt"))
        .header("host", host)
        .body(full(""))
        .unwrap();
    let response = bounded(send(addr, request)).await.unwrap();
    let status = response.status();
    let body = body_bytes(response).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn pool_max_connections_from_the_file_bounds_the_upstream_sockets() {
    let (upstream, seen) = raw_upstream().await;
    let sidecar = sidecar(
        "config-pool-max",
        upstream,
        &format!("pool_max_connections = {MAX_CONNECTIONS}"),
    )
    .await;
    let addr = sidecar.base.socket_addrs(|| None).unwrap()[0];
    let host = sidecar.base.authority().to_owned();

    let mut requests = tokio::task::JoinSet::new();
    for n in 0..REQUESTS {
        requests.spawn(get_public(addr, host.clone(), n));
    }
    while let Some(outcome) = bounded(requests.join_next()).await {
        outcome.unwrap();
    }
    assert_eq!(seen.answered.load(Ordering::SeqCst), REQUESTS);
    // The upstream held its answers until MAX_CONNECTIONS requests were in flight, so the pool
    // reached its bound; it never went beyond it.
    assert_eq!(seen.max_open.load(Ordering::SeqCst), MAX_CONNECTIONS);
}

#[tokio::test]
async fn pool_max_idle_zero_from_the_file_keeps_no_connection_for_reuse() {
    // Each answer is released as soon as it is in flight (a bound of one).
    let (upstream, seen) = raw_upstream_releasing_at(1).await;
    let sidecar = sidecar("config-pool-idle", upstream, "pool_max_idle = 0").await;
    let addr = sidecar.base.socket_addrs(|| None).unwrap()[0];
    let host = sidecar.base.authority().to_owned();

    // One after the other: with the default pool the second and third reuse the first
    // connection; with no idle connection kept, each opens its own.
    for n in 0..3 {
        get_public(addr, host.clone(), n).await;
    }
    assert_eq!(seen.answered.load(Ordering::SeqCst), 3);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 3);
}
