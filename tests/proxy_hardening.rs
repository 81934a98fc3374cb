//! Issue 9, the forwarding half, over real sockets: `Upstream` alone (no auth layer in front) must
//! never relay a protocol switch other than a WebSocket handshake the upstream genuinely accepts,
//! never pass an alias of a field it owns (`X_Forwarded_For`, `X.Real.IP`), drop other `_`/`.`
//! names unless told to keep them, refuse `CONNECT`, and answer a broken request body with 400.
//!
//! The upstream is a raw TCP listener that records every byte it receives and answers each
//! connection's first request with a fixed response (by default `101 Switching Protocols`, to
//! anything), so a tunnel, once opened, would be visible as raw client bytes arriving upstream.
//! Requests are written as raw bytes, so no client library normalizes them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use support::proxy::{Proxy, bounded, settings_for, start_proxy};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use wechat_oauth_proxy::server::ServerSettings;

/// A 101 for an h2c upgrade, sent to any request.
const SWITCH_H2C: &str =
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
/// A genuine WebSocket 101 (the accept key is not checked by the proxy).
const SWITCH_WEBSOCKET: &str = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// A plain answer.
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// What a client sends once it believes the connection switched: the HTTP/2 preface and a marker.
const SMUGGLED: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nSMUGGLED-RAW-BYTES";
/// A WebSocket handshake's own fields.
const WS_FIELDS: &str =
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// The bytes one upstream connection received.
type Received = Arc<Mutex<Vec<u8>>>;

/// The raw upstream: every connection's bytes, in accept order.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Received>>>,
}

impl RawUpstream {
    /// Starts a listener that answers each connection's first request head with `answer`
    /// (nothing when `None`) and then keeps reading and recording until the peer closes.
    async fn start(answer: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Received>>> = Arc::default();
        let registry = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received: Received = Arc::default();
                registry.lock().unwrap().push(Arc::clone(&received));
                tokio::spawn(async move {
                    let mut answered = answer.is_none();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let head_complete = {
                            let mut received = received.lock().unwrap();
                            received.extend_from_slice(&buf[..n]);
                            find(&received, b"\r\n\r\n").is_some()
                        };
                        if !answered && head_complete {
                            answered = true;
                            if let Some(answer) = answer {
                                if stream.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, connections }
    }

    /// Every byte received so far, all connections concatenated.
    fn all_bytes(&self) -> Vec<u8> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.lock().unwrap().clone())
            .collect()
    }

    fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// The first request head received: `(lower-case name, value)` pairs, waiting (bounded) for
    /// it to arrive.
    async fn first_head(&self) -> Vec<(String, String)> {
        bounded(async {
            loop {
                let bytes = self.all_bytes();
                if let Some(end) = find(&bytes, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                    return head
                        .split("\r\n")
                        .skip(1)
                        .filter_map(|line| line.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The values of `name` in a recorded head.
fn values<'a>(head: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    head.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads one response: its head (as text) and, when it has a `Content-Length`, its body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    bounded(async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(&bytes, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let length = head
                    .split("\r\n")
                    .filter_map(|line| line.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                if bytes.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]);
                    return (head, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed mid-response: {bytes:?}");
            bytes.extend_from_slice(&buf[..n]);
        }
    })
    .await
}

async fn proxy_to(upstream: &RawUpstream, allow_underscores: bool) -> Proxy {
    let mut settings = settings_for(upstream.addr, "/");
    settings.allow_underscores_in_headers = allow_underscores;
    start_proxy(settings, ServerSettings::default()).await
}

/// Sends `request` on a fresh connection and returns the stream and the response head and body.
async fn exchange(proxy: &Proxy, request: &str) -> (TcpStream, String, String) {
    let mut stream = bounded(TcpStream::connect(proxy.addr)).await.unwrap();
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    (stream, head, body)
}

/// After a response, writes what a client would send through a switched connection and checks
/// that none of it reaches the upstream raw.
async fn assert_no_tunnel(mut stream: TcpStream, upstream: &RawUpstream) {
    // The proxy answers these bytes itself (they are no HTTP/1.1 request) and closes; through
    // a tunnel they would reach the upstream and nothing would come back.
    let _ = bounded(stream.write_all(SMUGGLED)).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    let seen = upstream.all_bytes();
    assert!(
        find(&seen, b"SMUGGLED-RAW-BYTES").is_none() && find(&seen, b"PRI * HTTP/2.0").is_none(),
        "client bytes were tunnelled to the upstream: {}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test]
async fn non_websocket_upgrades_are_removed_and_never_tunnelled() {
    let variants = [
        "GET /skipped HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2_Settings: AAMAAABk\r\nhttp2.settings: AAMAAABk\r\n\r\n",
        // A WebSocket token, but not on an HTTP/1.1 GET.
        "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ];
    for request in variants {
        let upstream = RawUpstream::start(Some(SWITCH_H2C)).await;
        let proxy = proxy_to(&upstream, false).await;
        let (stream, head, _body) = exchange(&proxy, request).await;

        let forwarded = upstream.first_head().await;
        for (name, value) in &forwarded {
            assert!(
                !name.contains("upgrade") && !name.contains("settings"),
                "{request:?}: the upstream saw {name}: {value}"
            );
            assert!(
                !value.to_ascii_lowercase().contains("upgrade"),
                "{request:?}: the upstream saw {name}: {value}"
            );
        }
        assert!(
            head.starts_with("HTTP/1.1 502"),
            "{request:?}: a 101 to a plain request must not reach the client: {head}"
        );
        assert_no_tunnel(stream, &upstream).await;
    }
}

/// A WebSocket handshake (with `upgrade` spelled `upgrade_token`) through a proxy to an upstream
/// that answers `answer`. Returns the upstream, the proxy (keep it: dropping it shuts it down),
/// the client stream and the response head and body.
async fn websocket_handshake(
    answer: &'static str,
    upgrade_token: &str,
) -> (RawUpstream, Proxy, TcpStream, String, String) {
    let upstream = RawUpstream::start(Some(answer)).await;
    let proxy = proxy_to(&upstream, false).await;
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: {upgrade_token}\r\n{WS_FIELDS}\r\n"
    );
    let (stream, head, body) = exchange(&proxy, &request).await;
    (upstream, proxy, stream, head, body)
}

#[tokio::test]
async fn websocket_answered_with_another_protocol_is_502_and_not_tunnelled() {
    let (upstream, _proxy, stream, head, body) = websocket_handshake(SWITCH_H2C, "WebSocket").await;

    let forwarded = upstream.first_head().await;
    assert_eq!(values(&forwarded, "upgrade"), ["websocket"]);
    assert_eq!(values(&forwarded, "connection"), ["upgrade"]);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(body.contains("bad_gateway"), "{body}");
    assert_no_tunnel(stream, &upstream).await;
}

/// The control for the two tests above: with a genuine WebSocket 101 the harness does see a
/// tunnel, so "no tunnel" there is the proxy's doing.
#[tokio::test]
async fn genuine_websocket_switch_is_tunnelled() {
    let (upstream, _proxy, mut stream, head, _body) =
        websocket_handshake(SWITCH_WEBSOCKET, "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    bounded(stream.write_all(b"raw websocket frames"))
        .await
        .unwrap();
    bounded(async {
        while find(&upstream.all_bytes(), b"raw websocket frames").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Every spelling of a field the proxy owns, with `_` or `.` for `-`, in several cases.
const ALIASES: [&str; 14] = [
    "X_Forwarded_For",
    "X.Forwarded.For",
    "x-forwarded_for",
    "X_FORWARDED_HOST",
    "X.Forwarded.Host",
    "X_Forwarded_Proto",
    "x.forwarded.proto",
    "X_Forwarded_Prefix",
    "X_Forwarded_Port",
    "X-Real_IP",
    "X_Real_IP",
    "x.real.ip",
    "Transfer_Encoding",
    "Proxy_Authorization",
];

fn alias_request() -> String {
    let mut request = String::from(
        "GET /who HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX_Custom_Thing: 1\r\nX.Trace.Id: 2\r\nX-Plain: 3\r\n",
    );
    for alias in ALIASES {
        request.push_str(&format!("{alias}: 6.6.6.6\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends [`alias_request`] through a proxy with `allow_underscores_in_headers = allow`; returns
/// the head the upstream received.
async fn forwarded_alias_request(allow: bool) -> Vec<(String, String)> {
    let upstream = RawUpstream::start(Some(OK)).await;
    let proxy = proxy_to(&upstream, allow).await;
    let (_stream, head, _body) = exchange(&proxy, &alias_request()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    upstream.first_head().await
}

#[tokio::test]
async fn aliases_of_owned_fields_never_reach_the_upstream() {
    for allow in [false, true] {
        let forwarded = forwarded_alias_request(allow).await;
        for alias in ALIASES {
            let alias = alias.to_ascii_lowercase();
            assert!(
                values(&forwarded, &alias).is_empty(),
                "allow_underscores_in_headers = {allow}: {alias} reached the upstream"
            );
        }
        for (name, value) in &forwarded {
            assert!(
                !value.contains("6.6.6.6"),
                "allow_underscores_in_headers = {allow}: {name}: {value} reached the upstream"
            );
        }
        assert_eq!(values(&forwarded, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(values(&forwarded, "x-forwarded-host"), ["app.test"]);
        assert_eq!(values(&forwarded, "x-forwarded-proto"), ["http"]);
    }
}

#[tokio::test]
async fn other_odd_names_are_dropped_by_default_and_kept_with_the_switch() {
    for allow in [false, true] {
        let forwarded = forwarded_alias_request(allow).await;
        assert_eq!(values(&forwarded, "x-plain"), ["3"]);
        let kept = |name: &str| !values(&forwarded, name).is_empty();
        assert_eq!(kept("x_custom_thing"), allow, "x_custom_thing");
        assert_eq!(kept("x.trace.id"), allow, "x.trace.id");
    }
}

#[tokio::test]
async fn connect_is_405_and_never_forwarded() {
    let upstream = RawUpstream::start(Some(OK)).await;
    let proxy = proxy_to(&upstream, false).await;
    let target = upstream.addr;
    let request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAccept: application/json\r\n\r\n");
    let (stream, head, body) = exchange(&proxy, &request).await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("\r\nallow:"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "method_not_allowed");
    assert_no_tunnel(stream, &upstream).await;
    assert_eq!(
        upstream.connection_count(),
        0,
        "CONNECT reached the upstream"
    );
}

#[tokio::test]
async fn malformed_chunked_body_is_400_not_502() {
    // The upstream reads and never answers, so only the body's failure can end the request.
    let upstream = RawUpstream::start(None).await;
    let proxy = proxy_to(&upstream, false).await;
    let request = "POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nnot-a-chunk-size\r\n\r\n";
    let (_stream, head, body) = exchange(&proxy, request).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "bad_request");
}

#[tokio::test]
async fn body_cut_off_by_the_client_is_400_not_502() {
    let upstream = RawUpstream::start(None).await;
    let proxy = proxy_to(&upstream, false).await;
    let mut stream = bounded(TcpStream::connect(proxy.addr)).await.unwrap();
    let request = "POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\nContent-Length: 100\r\n\r\nonly ten b";
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    // The upstream has the head before the client gives up.
    upstream.first_head().await;
    stream.shutdown().await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "bad_request");
}

#[tokio::test]
async fn body_that_stops_arriving_is_408() {
    let upstream = RawUpstream::start(None).await;
    let server = ServerSettings {
        body_timeout: std::time::Duration::from_millis(300),
        ..ServerSettings::default()
    };
    let proxy = start_proxy(settings_for(upstream.addr, "/"), server).await;
    let mut stream = bounded(TcpStream::connect(proxy.addr)).await.unwrap();
    let request = "POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\nContent-Length: 100\r\n\r\nonly ten b";
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    // The other 90 bytes never come; the connection stays open.
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "request_timeout");
}
