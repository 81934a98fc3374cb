//! The proxy's upstream connection pool over real sockets: readiness before reuse, the retry of
//! idempotent requests only, the idle timeout and the bounds. The upstream here is a raw TCP
//! server that counts connections and requests and misbehaves on purpose (closes a kept-alive
//! connection under the next request, or right after answering).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Method, Request, StatusCode};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use wechat_oauth_proxy::{proxy::PoolSettings, server::ServerSettings};

use support::proxy::{Proxy, TestBody, body_bytes, bounded, full, send, settings_for, start_proxy};

/// How the raw upstream treats the requests of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehave {
    /// Answer every request and keep the connection open.
    Never,
    /// Answer the first request of each connection; read the second completely, then close the
    /// connection without answering (the upstream's keep-alive timeout racing the request).
    DropSecondRequest,
    /// Answer the first request of each connection, then close it at once (a keep-alive
    /// timeout that fires while the proxy holds the connection idle).
    CloseAfterFirst,
}

/// What the raw upstream saw.
#[derive(Default)]
struct Seen {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Most connections open at once.
    max_open: AtomicUsize,
    /// Every request line received (answered or not), in order.
    requests: Mutex<Vec<String>>,
}

impl Seen {
    fn count(&self, method: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with(&format!("{method} ")))
            .count()
    }
}

/// A raw HTTP/1.1 upstream answering `200 ok` after `delay`, misbehaving as told.
async fn raw_upstream(misbehave: Misbehave, delay: Duration) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
            shared.max_open.fetch_max(open, Ordering::SeqCst);
            let seen = Arc::clone(&shared);
            tokio::spawn(async move {
                serve_raw(stream, misbehave, delay, &seen).await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// Serves one connection until the peer closes it or `misbehave` says to close.
async fn serve_raw(mut stream: TcpStream, misbehave: Misbehave, delay: Duration, seen: &Seen) {
    let mut buffer = Vec::new();
    let mut served = 0;
    loop {
        // One request head, then its Content-Length body.
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
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        seen.requests.lock().unwrap().push(request_line);
        served += 1;
        if misbehave == Misbehave::DropSecondRequest && served == 2 {
            return;
        }
        tokio::time::sleep(delay).await;
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if misbehave == Misbehave::CloseAfterFirst {
            return;
        }
    }
}

async fn proxy_to(upstream: SocketAddr, pool: PoolSettings) -> Proxy {
    let mut settings = settings_for(upstream, "");
    settings.pool = pool;
    start_proxy(settings, ServerSettings::default()).await
}

fn request(method: Method, body: &'static str) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri("/resource")
        .header("accept", "application/json")
        .body(full(body))
        .unwrap()
}

/// Sends one request through the proxy; its status and body.
async fn call(proxy: &Proxy, method: Method, body: &'static str) -> (StatusCode, String) {
    let response = bounded(send(proxy.addr, request(method, body)))
        .await
        .unwrap();
    let status = response.status();
    let body = body_bytes(response).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached within 5 s: {what}");
}

#[tokio::test]
async fn get_on_a_connection_closed_under_it_is_sent_again_once() {
    let (upstream, seen) = raw_upstream(Misbehave::DropSecondRequest, Duration::ZERO).await;
    let proxy = proxy_to(upstream, PoolSettings::default()).await;

    assert_eq!(
        call(&proxy, Method::GET, "").await,
        (StatusCode::OK, "ok".into())
    );
    // The second GET goes out on the kept-alive connection; the upstream reads it and closes.
    // The proxy sends it again on a new connection, which answers.
    assert_eq!(
        call(&proxy, Method::GET, "").await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(seen.count("GET"), 3, "{:?}", seen.requests.lock().unwrap());
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn post_on_a_connection_closed_under_it_is_never_sent_again() {
    let (upstream, seen) = raw_upstream(Misbehave::DropSecondRequest, Duration::ZERO).await;
    let proxy = proxy_to(upstream, PoolSettings::default()).await;

    assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
    // The POST is written on the kept-alive connection and the upstream closes it unanswered:
    // the upstream may have acted on it, so the client gets the 502, and the POST is not resent.
    let (status, body) = call(&proxy, Method::POST, "pay=1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("bad_gateway"), "{body}");
    assert_eq!(seen.count("POST"), 1, "{:?}", seen.requests.lock().unwrap());
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "no new connection for a retry"
    );
    // A body-less POST is not idempotent either.
    assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
    assert_eq!(
        call(&proxy, Method::POST, "").await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(seen.count("POST"), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    let (upstream, seen) = raw_upstream(Misbehave::CloseAfterFirst, Duration::ZERO).await;
    let proxy = proxy_to(upstream, PoolSettings::default()).await;

    for round in 1..=3 {
        assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
        // The upstream closes the connection right after answering; once that is seen, the
        // pool must not hand it out again, so even a POST gets through.
        eventually("upstream closed its connection", || {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(call(&proxy, Method::POST, "x=1").await.0, StatusCode::OK);
        eventually("upstream closed its connection", || {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await;
        assert_eq!(seen.count("POST"), round);
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (upstream, seen) = raw_upstream(Misbehave::Never, Duration::ZERO).await;
    let pool = PoolSettings {
        idle_timeout: Duration::from_millis(300),
        ..PoolSettings::default()
    };
    let proxy = proxy_to(upstream, pool).await;

    assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
    assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "kept alive and reused"
    );
    // The upstream never closes; the pool does, once the connection has been idle too long.
    eventually("the pool closed the idle connection", || {
        seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(call(&proxy, Method::GET, "").await.0, StatusCode::OK);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_pool_bounds_hold_under_200_concurrent_requests() {
    let (upstream, seen) = raw_upstream(Misbehave::Never, Duration::from_millis(20)).await;
    let pool = PoolSettings {
        max_connections: 8,
        max_idle: 3,
        ..PoolSettings::default()
    };
    let proxy = Arc::new(proxy_to(upstream, pool).await);

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let proxy = Arc::clone(&proxy);
        requests.spawn(async move { call(&proxy, Method::GET, "").await });
    }
    let mut ok = 0;
    while let Some(outcome) = bounded(requests.join_next()).await {
        let (status, body) = outcome.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(seen.count("GET"), 200);
    let max_open = seen.max_open.load(Ordering::SeqCst);
    assert!(max_open <= 8, "{max_open} connections open at once");
    assert!(max_open > 1, "the requests ran concurrently");
    // Back at rest, at most `max_idle` connections stay open.
    eventually("idle connections down to max_idle", || {
        seen.open.load(Ordering::SeqCst) <= 3
    })
    .await;
}

/// Connections that come back while requests wait are kept beyond `max_idle` (closing them would
/// only open new ones); once nobody waits, the excess is closed at once, not after the idle
/// timeout (90 s here, far beyond this test's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_kept_for_waiting_requests_are_closed_when_nobody_waits() {
    let (upstream, seen) = raw_upstream(Misbehave::Never, Duration::from_millis(5)).await;
    let pool = PoolSettings {
        max_connections: 6,
        max_idle: 1,
        ..PoolSettings::default()
    };
    let proxy = Arc::new(proxy_to(upstream, pool).await);
    for burst in 0..10 {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..60 {
            let proxy = Arc::clone(&proxy);
            requests.spawn(async move { call(&proxy, Method::GET, "").await });
        }
        while let Some(outcome) = bounded(requests.join_next()).await {
            let (status, body) = outcome.unwrap();
            assert_eq!(status, StatusCode::OK, "burst {burst}: {body}");
        }
        eventually("idle connections down to max_idle after a burst", || {
            seen.open.load(Ordering::SeqCst) <= 1
        })
        .await;
    }
    assert!(seen.max_open.load(Ordering::SeqCst) <= 6);
}
