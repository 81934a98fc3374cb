//! Connection timeouts of `server::serve` over real sockets (issue 9, finding 4): silent,
//! half-sent, idle and stalled connections are closed within their timeout, while slow but
//! steady clients and slow services are left alone; and the real binary, with a 256 file
//! descriptor limit, keeps serving through a flood of silent connections.
//!
//! Timeouts are short (hundreds of milliseconds) and every wait is bounded by a few seconds, so a
//! connection that is never closed fails the test instead of hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, net::SocketAddr, process::Stdio, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    time::timeout,
};
use wechat_oauth_proxy::server::{self, BodyTimeout, RequestBody, ServerSettings};

/// How long a test waits for the server to close a connection it should close.
const CLOSE_WITHIN: Duration = Duration::from_secs(4);
/// Short timeouts for the case under test.
const SHORT: Duration = Duration::from_millis(400);
/// Long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(60);
/// How long `/slow` makes its client wait.
const SLOW_SERVICE: Duration = Duration::from_millis(1_500);

/// Settings with every timeout long; each test shortens the one it is about.
fn long_settings() -> ServerSettings {
    ServerSettings {
        header_read_timeout: LONG,
        idle_timeout: LONG,
        body_timeout: LONG,
        ..ServerSettings::default()
    }
}

/// The service under the server: `/slow` answers after [`SLOW_SERVICE`], `/upload` reads the
/// whole body and answers its length (408 when the body timed out), anything else `ok`.
async fn handler(request: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        Ok(response)
    };
    match request.uri().path() {
        "/slow" => {
            tokio::time::sleep(SLOW_SERVICE).await;
            reply(StatusCode::OK, "slow ok".into())
        }
        "/upload" => match request.into_body().collect().await {
            Ok(body) => reply(StatusCode::OK, format!("got {}", body.to_bytes().len())),
            Err(error) if error.downcast_ref::<BodyTimeout>().is_some() => {
                reply(StatusCode::REQUEST_TIMEOUT, error.to_string())
            }
            Err(error) => reply(StatusCode::BAD_REQUEST, error.to_string()),
        },
        _ => reply(StatusCode::OK, "ok".into()),
    }
}

/// A running server; stopped when dropped.
struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(settings: ServerSettings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        tower::service_fn(handler),
        settings,
        async {
            let _ = stopped.await;
        },
    ));
    Server { addr, _stop: stop }
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent;
/// panics when the connection is still open after [`CLOSE_WITHIN`].
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    if timeout(CLOSE_WITHIN, read_all).await.is_err() {
        panic!("{what}: the server did not close the connection within {CLOSE_WITHIN:?}");
    }
    received
}

/// Reads one HTTP/1 response with a `content-length` body from `stream`, bounded.
async fn read_response(stream: &mut TcpStream) -> String {
    let read = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a full response");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if received.len() >= head_end + 4 + length {
                    return text;
                }
            }
        }
    };
    timeout(CLOSE_WITHIN, read)
        .await
        .expect("a response in time")
}

/// A server with every timeout long but those `shorten` changes.
async fn start_with(shorten: impl FnOnce(&mut ServerSettings)) -> Server {
    let mut settings = long_settings();
    shorten(&mut settings);
    start(settings).await
}

/// A server whose only short timeout is the header read timeout.
async fn start_with_short_header_timeout() -> Server {
    start_with(|s| s.header_read_timeout = SHORT).await
}

/// A server with every connection timeout short.
async fn start_with_all_short() -> Server {
    start_with(|s| {
        s.header_read_timeout = SHORT;
        s.idle_timeout = SHORT;
        s.body_timeout = SHORT;
    })
    .await
}

/// Asserts that an HTTP/1 response text is a 200 with `body`.
fn assert_ok(response: &str, body: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(body), "{response}");
}

/// A connection to `server` on which `bytes` (maybe nothing) have been sent.
async fn connect_and_send(server: &Server, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Connects, sends `bytes` (maybe nothing) and waits for the server to close the connection.
async fn send_and_expect_close(server: &Server, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut stream = connect_and_send(server, bytes).await;
    read_until_closed(&mut stream, what).await
}

/// An HTTP/2 connection (prior knowledge) to `server`, driven on its own task.
async fn h2_connect(
    server: &Server,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// `GET path` over `sender`, bounded; the status and the whole body.
async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    server: &Server,
    path: &str,
) -> (StatusCode, Bytes) {
    let request = Request::get(format!("http://{}{path}", server.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let exchange = async {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    };
    timeout(CLOSE_WITHIN, exchange)
        .await
        .expect("an answer in time")
}

#[tokio::test]
async fn silent_connection_is_closed() {
    let server = start_with_short_header_timeout().await;
    let received = send_and_expect_close(&server, b"", "silent connection").await;
    assert!(received.is_empty(), "nothing was asked, nothing answered");
}

#[tokio::test]
async fn half_sent_http2_preface_is_closed() {
    let server = start_with_short_header_timeout().await;
    // The 24-byte preface without its last CRLF: protocol detection waits for the rest.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n";
    send_and_expect_close(&server, preface, "half-sent HTTP/2 preface").await;
}

#[tokio::test]
async fn http2_preface_and_settings_without_a_request_is_closed() {
    let server = start_with_short_header_timeout().await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    send_and_expect_close(&server, &bytes, "HTTP/2 connection without a request").await;
}

#[tokio::test]
async fn partial_http1_head_is_closed() {
    let server = start_with_short_header_timeout().await;
    // Starts like the HTTP/2 preface, so protocol detection is still undecided.
    send_and_expect_close(&server, b"PRI", "partial head (PRI)").await;
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n";
    send_and_expect_close(&server, head, "partial head (GET)").await;
}

#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed() {
    let server = start_with(|s| s.idle_timeout = SHORT).await;
    let mut stream = connect_and_send(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let response = read_response(&mut stream).await;
    assert_ok(&response, "ok");
    let rest = read_until_closed(&mut stream, "idle keep-alive connection").await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn idle_http2_connection_is_closed() {
    let server = start_with(|s| s.idle_timeout = SHORT).await;
    let (mut sender, connection) = h2_connect(&server).await;
    let (status, body) = h2_get(&mut sender, &server, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    // The client keeps the connection open; only the server can end it.
    let ended = timeout(CLOSE_WITHIN, connection).await;
    assert!(
        ended.is_ok(),
        "idle HTTP/2 connection still open after {CLOSE_WITHIN:?}"
    );
}

#[tokio::test]
async fn stalled_request_body_is_ended() {
    let server = start_with(|s| s.body_timeout = SHORT).await;
    let mut stream = connect_and_send(
        &server,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    // 90 bytes never come.
    let received = read_until_closed(&mut stream, "stalled request body").await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "either closed or a 408: {text}"
    );
    assert!(
        received.is_empty() || text.contains("request body timed out"),
        "{text}"
    );
}

#[tokio::test]
async fn slow_but_steady_body_completes() {
    let server = start_with_all_short().await;
    let mut stream = connect_and_send(
        &server,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    // Ten chunks, one every 150 ms: 1.5 s in all, more than every timeout, none between chunks.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(b"0123456789").await.unwrap();
    }
    let response = read_response(&mut stream).await;
    assert_ok(&response, "got 100");
}

#[tokio::test]
async fn slow_service_is_not_idleness() {
    let server = start_with_all_short().await;
    assert!(SLOW_SERVICE > SHORT * 3);

    // HTTP/1
    let mut stream = connect_and_send(&server, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let response = read_response(&mut stream).await;
    assert_ok(&response, "slow ok");

    // HTTP/2
    let (mut sender, _connection) = h2_connect(&server).await;
    let (status, body) = h2_get(&mut sender, &server, "/slow").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow ok"[..]));
}

/// The real binary under `ulimit -n 256` (soft and hard, so raising the soft limit cannot help):
/// 300 silent connections are more than it can hold, yet once they time out a normal request is
/// served.
#[tokio::test]
async fn binary_survives_more_silent_connections_than_file_descriptors() {
    const SILENT: usize = 300;
    // Our side holds SILENT sockets too.
    let _ = rlimit::increase_nofile_limit(4096);

    let dir = std::env::temp_dir().join(format!(
        "wxauth-timeouts-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let config = shipped.replacen("[server]\n", "[server]\nheader_read_timeout_ms = 500\n", 1);
    assert_ne!(config, shipped, "config.toml has a [server] table");
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_wechat-oauth-proxy"))
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--public-url")
        .arg(&base)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let health = format!(
        "GET /_wxauth/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let ask_health = || async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(health.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    let mut up = false;
    for _ in 0..100 {
        if let Ok(Some(answer)) = timeout(Duration::from_secs(1), ask_health()).await {
            if answer.starts_with("HTTP/1.1 200") {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the binary never answered its health check");

    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Without connection timeouts this waits forever: the binary's descriptors are all taken by
    // silent sockets, and this one stays in the listen backlog.
    let answer = timeout(Duration::from_secs(15), ask_health())
        .await
        .expect("a normal request was not served while silent connections were open")
        .expect("the health check got an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The silent ones have been closed by the server (which is still running).
    let mut closed = 0;
    for mut stream in silent {
        let mut buf = [0u8; 16];
        if matches!(
            timeout(Duration::from_millis(50), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    drop(child);
    assert!(closed > SILENT / 2, "only {closed} of {SILENT} closed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free loopback port (bound then released; the binary binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
