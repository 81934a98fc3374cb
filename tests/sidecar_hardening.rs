//! The sidecar stack (auth layer around the upstream proxy, served on a real socket) tried as an
//! attacker would, with raw request bytes (no normalizing client) against a raw upstream that
//! records every byte it receives and answers `101 Switching Protocols` to any upgrade offer:
//!
//! - protocol switches other than WebSocket never reach the upstream and never become a tunnel,
//!   on skipped paths without a session and on protected paths with one;
//! - dot segments and escapes: the upstream receives the path that was classified (normalized)
//!   or nothing (400), never the raw spelling that was judged public;
//! - `Connection:` cannot remove the JWT; `.` spellings of identity headers are stripped;
//! - `CONNECT` is refused; authenticated pages get `Cache-Control: private`;
//! - cross-site logout is refused with a confirmation page; `events` answers 405 with the
//!   right `Allow`;
//! - an HTTP/2 `OPTIONS` with DATA frames is not a body-less preflight.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tower::Layer as _;
use wechat_oauth_proxy::{
    proxy::{ProxySettings, Upstream},
    server::{ServerSettings, serve},
};

use support::{bounded, builder, memory_store, offline_wechat, sample_identity, session_cookie};

/// What the raw upstream received: one entry per connection, every byte of it.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A deliberately naive upstream: reads a request head, answers `101` (with `Upgrade: h2c`) to
/// anything that mentions `upgrade`, `200` otherwise, and keeps recording whatever arrives on
/// the connection afterwards (tunnelled bytes included).
async fn raw_upstream() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Vec::new());
                    log.len() - 1
                };
                let mut buf = [0u8; 4096];
                let mut answered = 0usize;
                // Bounded: at most 64 reads of up to 4 KiB, each within 5 s.
                for _ in 0..64 {
                    let n =
                        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => n,
                            _ => return,
                        };
                    let all = {
                        let mut log = log.lock().unwrap();
                        log[index].extend_from_slice(&buf[..n]);
                        log[index].clone()
                    };
                    let heads = count(&all, b"\r\n\r\n");
                    while answered < heads {
                        // The head being answered (pooled connections carry several requests;
                        // these tests send no request bodies upstream).
                        let text = String::from_utf8_lossy(&all)
                            .to_ascii_lowercase()
                            .split("\r\n\r\n")
                            .nth(answered)
                            .unwrap_or_default()
                            .to_owned();
                        answered += 1;
                        let reply: &[u8] = if text.contains("\r\nupgrade:") {
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                        } else if text.contains("/cached") {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: public, max-age=60\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

struct Stack {
    addr: SocketAddr,
    cookie: String,
    received: Received,
}

impl Stack {
    async fn start() -> Stack {
        let (upstream_addr, received) = raw_upstream().await;
        let sessions = memory_store();
        let (_id, cookie) = session_cookie(&sessions, sample_identity()).await;
        let layer = builder(
            "http://127.0.0.1/".parse().unwrap(),
            offline_wechat(),
            sessions,
        )
        .skip(Method::GET, "/public/*")
        .unwrap()
        .skip_preflight(true)
        .build()
        .unwrap();
        let upstream = Upstream::new(ProxySettings::new(
            format!("http://{upstream_addr}").parse().unwrap(),
        ))
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            layer.layer(upstream),
            ServerSettings::default(),
            std::future::pending(),
        ));
        Stack {
            addr,
            cookie,
            received,
        }
    }

    /// Everything the upstream received so far, as lower-case text.
    fn upstream_text(&self) -> String {
        let log = self.received.lock().unwrap();
        log.iter()
            .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Sends raw bytes on a new connection and returns the first response head (status, lower-
    /// case head text) and the open stream.
    async fn send(&self, raw: &str) -> (u16, String, TcpStream) {
        let mut stream = bounded(TcpStream::connect(self.addr)).await.unwrap();
        bounded(stream.write_all(raw.as_bytes())).await.unwrap();
        let head = read_head(&mut stream).await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), stream)
    }
}

/// Reads until the end of a response head (and the short bodies these tests get).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        if count(&all, b"\r\n\r\n") > 0 {
            // Give a short body a moment to follow the head.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
            {
                all.extend_from_slice(&buf[..n]);
            }
            break;
        }
        match bounded(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Request-head lines of the upstream's log that start with `name:`.
fn has_header(upstream: &str, name: &str) -> bool {
    upstream
        .lines()
        .any(|line| line.starts_with(&format!("{name}:")))
}

#[tokio::test]
async fn upgrades_other_than_websocket_never_reach_the_upstream_or_become_tunnels() {
    let stack = Stack::start().await;
    let offers = [
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        "Connection: upgrade\r\nUpgrade: foo\r\n",
        "Connection: upgrade\r\nUpgrade: websocket, h2c\r\n",
        "Connection: upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n",
        "Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: H2C\r\n",
    ];
    for offer in offers {
        // A skipped path without a session, and a protected path with one.
        for (path, cookie) in [
            ("/public/x", String::new()),
            ("/private", format!("Cookie: {}\r\n", stack.cookie)),
        ] {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: app\r\n{cookie}{offer}\r\n");
            let (status, head, mut stream) = stack.send(&raw).await;
            assert_eq!(status, 200, "{offer:?} on {path}: {head}");
            assert!(!head.contains("upgrade"), "{offer:?} on {path}: {head}");
            // The connection is still HTTP: a second request without a session on a protected
            // path is judged on its own, never relayed raw through a tunnel.
            bounded(stream.write_all(
                b"GET /admin/secret HTTP/1.1\r\nHost: app\r\nX-WeChat-OpenID: admin\r\n\r\n",
            ))
            .await
            .unwrap();
            let second = read_head(&mut stream).await;
            assert!(
                second.starts_with("HTTP/1.1 401"),
                "{offer:?} on {path}: {second}"
            );
        }
    }
    let upstream = stack.upstream_text();
    assert!(!has_header(&upstream, "upgrade"), "{upstream}");
    assert!(!has_header(&upstream, "http2-settings"), "{upstream}");
    assert!(!upstream.contains("/admin/secret"), "{upstream}");
    assert!(!has_header(&upstream, "x-wechat-openid"), "{upstream}");
    assert_eq!(count(upstream.as_bytes(), b"get /public/x "), offers.len());
    assert_eq!(count(upstream.as_bytes(), b"get /private "), offers.len());
}

#[tokio::test]
async fn the_upstream_receives_the_classified_path_or_nothing() {
    let stack = Stack::start().await;
    // Judged public because the normalized path is under /public: forwarded normalized.
    for (raw_path, forwarded) in [
        ("/admin/../public/x", "/public/x"),
        ("/admin/%2e%2e/public/x", "/public/x"),
        ("/admin/%2E%2e/public/x", "/public/x"),
        ("/admin/.%2E/public/x", "/public/x"),
        ("/admin/./../public/x?next=/admin", "/public/x?next=/admin"),
        ("/public/./x", "/public/x"),
        ("/public//x", "/public/x"),
        ("/%70ublic/x", "/public/x"),
        ("/public/%e4%b8%ad", "/public/%E4%B8%AD"),
    ] {
        let before = stack.upstream_text();
        let (status, head, _) = stack
            .send(&format!("GET {raw_path} HTTP/1.1\r\nHost: app\r\n\r\n"))
            .await;
        assert_eq!(status, 200, "{raw_path}: {head}");
        let after = stack.upstream_text();
        let new = &after[before.len()..];
        assert!(
            new.contains(&format!("get {} http/1.1", forwarded.to_ascii_lowercase())),
            "{raw_path} was forwarded as: {new}"
        );
        assert!(!new.contains("admin/"), "{raw_path}: {new}");
    }
    // No unambiguous normal form: 400 on every path class, nothing forwarded.
    let before = stack.upstream_text();
    for raw_path in [
        "/admin%2F..%2Fpublic/x",
        "/public/..%2Fadmin",
        "/public/..%2fadmin",
        "/public/..%5Cadmin",
        "/public/..;/admin",
        "/public/%00/x",
        "/public/%zz",
        "/public/%ff",
        "/_wxauth/..%2Fadmin",
    ] {
        for cookie in [String::new(), format!("Cookie: {}\r\n", stack.cookie)] {
            let (status, head, _) = stack
                .send(&format!(
                    "GET {raw_path} HTTP/1.1\r\nHost: app\r\n{cookie}\r\n"
                ))
                .await;
            assert_eq!(status, 400, "{raw_path}: {head}");
        }
    }
    assert_eq!(
        stack.upstream_text(),
        before,
        "a refused path reached the upstream"
    );
    // Protected with a session: the normalized path goes upstream.
    let (status, _, _) = stack
        .send(&format!(
            "GET /a/b/../c/%2e/d HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\r\n",
            stack.cookie
        ))
        .await;
    assert_eq!(status, 200);
    assert!(stack.upstream_text().contains("get /a/c/d http/1.1"));
    // Reserved routes are answered by the layer under their normalized path.
    let before = stack.upstream_text();
    let (status, head, _) = stack
        .send("GET /x/../_wxauth/%68ealth HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(stack.upstream_text(), before);
}

#[tokio::test]
async fn connection_cannot_remove_the_jwt_and_dot_spellings_are_stripped() {
    let stack = Stack::start().await;
    let raw = format!(
        "GET /private HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\
         Connection: keep-alive, X-WeChat-Jwt, x.wechat.jwt, X_WeChat_OpenID\r\n\
         X.WeChat.OpenID: forged\r\nX.WeChat_Jwt: forged\r\nx-wechat.nickname: forged\r\n\r\n",
        stack.cookie
    );
    let (status, head, _) = stack.send(&raw).await;
    assert_eq!(status, 200, "{head}");
    let upstream = stack.upstream_text();
    assert!(has_header(&upstream, "x-wechat-jwt"), "{upstream}");
    assert!(!upstream.contains("forged"), "{upstream}");
    assert!(!upstream.contains("x.wechat"), "{upstream}");
}

#[tokio::test]
async fn a_skipped_request_keeps_its_method() {
    let stack = Stack::start().await;
    let (status, _, _) = stack
        .send(
            "GET /public/x HTTP/1.1\r\nHost: app\r\nX-HTTP-Method-Override: DELETE\r\n\
             X_HTTP_Method: PUT\r\nX-Method-Override: PATCH\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    let upstream = stack.upstream_text();
    assert!(upstream.contains("get /public/x"), "{upstream}");
    for name in [
        "x-http-method-override",
        "x_http_method",
        "x-method-override",
    ] {
        assert!(!has_header(&upstream, name), "{name}: {upstream}");
    }
    // With a session the method does not decide anything: the header is the app's business.
    let (status, _, _) = stack
        .send(&format!(
            "POST /private HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nCookie: {}\r\n\
             X-HTTP-Method-Override: DELETE\r\n\r\n",
            stack.cookie
        ))
        .await;
    assert_eq!(status, 200);
    assert!(has_header(&stack.upstream_text(), "x-http-method-override"));
}

#[tokio::test]
async fn connect_is_refused_and_authenticated_pages_are_private() {
    let stack = Stack::start().await;
    for target in ["/public/x", "app:443", "127.0.0.1:22"] {
        let (status, head, _) = stack
            .send(&format!("CONNECT {target} HTTP/1.1\r\nHost: app\r\n\r\n"))
            .await;
        assert_eq!(status, 405, "CONNECT {target}: {head}");
        assert!(head.contains("allow: "), "{head}");
    }
    assert!(!stack.upstream_text().contains("connect"));

    let (status, head, _) = stack
        .send(&format!(
            "GET /private HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\r\n",
            stack.cookie
        ))
        .await;
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: private"), "{head}");
    // The upstream's own Cache-Control is kept; public pages are left alone.
    let (_, head, _) = stack
        .send(&format!(
            "GET /cached HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\r\n",
            stack.cookie
        ))
        .await;
    assert!(head.contains("cache-control: public, max-age=60"), "{head}");
    let (_, head, _) = stack
        .send("GET /public/x HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    assert!(!head.contains("cache-control"), "{head}");
}

#[tokio::test]
async fn cross_site_logout_is_refused_with_a_confirmation_page() {
    let stack = Stack::start().await;
    let whoami = format!(
        "GET /_wxauth/whoami HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\r\n",
        stack.cookie
    );
    for signal in [
        "Sec-Fetch-Site: cross-site\r\n",
        "Sec-Fetch-Site: same-site\r\n",
        "Origin: https://evil.example\r\n",
        "Referer: https://evil.example/page\r\n",
    ] {
        for method in ["GET", "POST"] {
            let (status, head, _) = stack
                .send(&format!(
                    "{method} /_wxauth/logout?return=/bye HTTP/1.1\r\nHost: app\r\nAccept: text/html\r\n\
                     Content-Length: 0\r\nCookie: {}\r\n{signal}\r\n",
                    stack.cookie
                ))
                .await;
            assert_eq!(status, 403, "{method} {signal:?}: {head}");
            assert!(!head.contains("set-cookie"), "{head}");
            assert!(head.contains("确认退出登录"), "{head}");
            assert!(
                head.contains("href=\"/_wxauth/logout?return=%2fbye\""),
                "{head}"
            );
            let (status, _, _) = stack.send(&whoami).await;
            assert_eq!(status, 200, "the session survived {method} {signal:?}");
        }
    }
    // The confirmation link, followed from our own page, logs out.
    let (status, head, _) = stack
        .send(&format!(
            "GET /_wxauth/logout?return=/bye HTTP/1.1\r\nHost: app\r\nCookie: {}\r\n\
             Sec-Fetch-Site: same-origin\r\nReferer: http://127.0.0.1/_wxauth/logout\r\n\r\n",
            stack.cookie
        ))
        .await;
    assert_eq!(status, 302, "{head}");
    assert!(head.contains("location: /bye"), "{head}");
    let (status, _, _) = stack.send(&whoami).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn events_answers_405_with_its_real_allow() {
    let stack = Stack::start().await;
    let (status, head, _) = stack
        .send("GET /_wxauth/events HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("allow: post\r\n"), "{head}");
    let (status, head, _) = stack
        .send("PUT /_wxauth/whoami HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("allow: get, head\r\n"), "{head}");
}

#[tokio::test]
async fn an_http2_options_with_a_body_is_not_a_preflight() {
    let stack = Stack::start().await;
    let stream = bounded(TcpStream::connect(stack.addr)).await.unwrap();
    let (mut sender, connection) = bounded(hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    ))
    .await
    .unwrap();
    tokio::spawn(connection);
    let preflight = |body: Option<&'static str>| {
        let body = match body {
            // A streamed body: no content-length, DATA frames on the wire.
            Some(text) => StreamBody::new(futures_util::stream::iter([Ok::<_, Infallible>(
                http_body::Frame::data(Bytes::from(text)),
            )]))
            .boxed(),
            // END_STREAM on the HEADERS frame.
            None => Empty::<Bytes>::new().boxed(),
        };
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/api/orders", stack.addr))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .body(body)
            .unwrap()
    };
    let with_body = bounded(sender.send_request(preflight(Some("smuggled=1"))))
        .await
        .unwrap();
    assert_eq!(with_body.status(), StatusCode::UNAUTHORIZED);
    assert!(!stack.upstream_text().contains("smuggled"));
    let without = bounded(sender.send_request(preflight(None))).await.unwrap();
    assert_eq!(without.status(), StatusCode::OK);
    assert!(stack.upstream_text().contains("options /api/orders"));
}
