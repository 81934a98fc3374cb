//! The sidecar's forwarding path over real loopback sockets: streaming bodies, WebSocket
//! upgrades, header rules, upstream failures, header limits and graceful shutdown.

// Helpers here and in `proxy_support` are test code but not `#[test]` functions, so clippy's
// `allow-*-in-tests` settings do not reach them; a failed setup step should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use support::proxy::*;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::tungstenite::Message;
use wechat_oauth_proxy::{proxy::ForwardedProto, server::ServerSettings};

const TEN_MB: usize = 10 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test]
async fn large_request_body_is_streamed_intact() {
    let (first_chunk_seen, first_chunk_rx) = Signal::new();
    let upstream = start_upstream(move |request: Request<hyper::body::Incoming>| {
        let first_chunk_seen = first_chunk_seen.clone();
        async move {
            let mut body = request.into_body();
            let mut received = Vec::with_capacity(TEN_MB);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    if !data.is_empty() {
                        first_chunk_seen.fire();
                    }
                    received.extend_from_slice(&data);
                }
            }
            Response::new(full(format!(
                "{} {}",
                received.len(),
                sha256_hex(&received)
            )))
        }
    })
    .await;
    let proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let data = test_data(TEN_MB);
    let (tx, body) = channel_body();
    let request = Request::post("/upload")
        .header(header::HOST, "app.test")
        .body(body)
        .unwrap();
    let sending = tokio::spawn(send(proxy.addr, request));

    let (first, rest) = data.split_at(CHUNK);
    bounded(tx.send(Bytes::copy_from_slice(first)))
        .await
        .unwrap();
    // The upstream sees the first chunk while the client still holds the rest: no buffering.
    bounded(first_chunk_rx).await.unwrap();
    for chunk in rest.chunks(CHUNK) {
        bounded(tx.send(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    drop(tx);

    let response = bounded(sending).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary = body_bytes(response).await;
    assert_eq!(summary, format!("{TEN_MB} {}", sha256_hex(&data)));
}

#[tokio::test]
async fn large_response_body_is_streamed_intact() {
    let data = Bytes::from(test_data(TEN_MB));
    let (release, client_saw_first) = Wait::new();
    let served = data.clone();
    let upstream = start_upstream(move |_request| {
        let served = served.clone();
        let release = release.clone();
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                tx.send(served.slice(..CHUNK)).await.unwrap();
                // Hold the rest back until the client has the first chunk.
                release.wait().await;
                let mut offset = CHUNK;
                while offset < served.len() {
                    let end = (offset + CHUNK).min(served.len());
                    tx.send(served.slice(offset..end)).await.unwrap();
                    offset = end;
                }
            });
            Response::new(body)
        }
    })
    .await;
    let proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let request = Request::get("/download").body(full("")).unwrap();
    let response = bounded(send(proxy.addr, request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::with_capacity(TEN_MB);
    // The first chunk arrives before the upstream has sent the rest: no buffering.
    while received.is_empty() {
        let frame = bounded(body.frame())
            .await
            .expect("body ended early")
            .unwrap();
        if let Ok(chunk) = frame.into_data() {
            received.extend_from_slice(&chunk);
        }
    }
    client_saw_first.send(()).unwrap();
    let rest = bounded(body.collect()).await.unwrap().to_bytes();
    received.extend_from_slice(&rest);
    assert_eq!(received.len(), TEN_MB);
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let ws_upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = ws_upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = ws_upstream.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            } else if message.is_close() {
                break;
            }
        }
    });
    let proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let stream = bounded(TcpStream::connect(proxy.addr)).await.unwrap();
    let (mut ws, handshake) = bounded(tokio_tungstenite::client_async(
        format!("ws://{}/socket", proxy.addr),
        stream,
    ))
    .await
    .unwrap();
    assert_eq!(handshake.status(), StatusCode::SWITCHING_PROTOCOLS);

    bounded(ws.send(Message::text("hello through the proxy")))
        .await
        .unwrap();
    let echoed = bounded(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through the proxy"));

    let payload = test_data(200_000);
    bounded(ws.send(Message::binary(payload.clone())))
        .await
        .unwrap();
    let echoed = bounded(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(payload));

    bounded(ws.close(None)).await.unwrap();
}

/// An upstream that answers with what it received: `{ "uri": …, "version": …, "headers": {…} }`,
/// and adds hop-by-hop fields to its own response.
async fn echo_upstream() -> std::net::SocketAddr {
    start_upstream(|request: Request<hyper::body::Incoming>| async move {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in request.headers() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let echo = serde_json::json!({
            "uri": request.uri().to_string(),
            "version": format!("{:?}", request.version()),
            "headers": headers,
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "x-resp-hop")
            .header("x-resp-hop", "hidden")
            .header("keep-alive", "timeout=5")
            .header("x-resp-kept", "visible")
            .body(full(echo.to_string()))
            .unwrap()
    })
    .await
}

async fn echo_of(response: Response<hyper::body::Incoming>) -> serde_json::Value {
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(&body_bytes(response).await).unwrap()
}

fn header_values(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn hop_by_hop_removed_and_forwarded_headers_replaced_for_untrusted_peer() {
    let upstream = echo_upstream().await;
    let mut settings = settings_for(upstream, "/base/");
    settings.forwarded_proto = ForwardedProto::Https;
    let proxy = start_proxy(settings, ServerSettings::default()).await;

    let request = Request::get("/a/b?x=1&y=two")
        .header(header::HOST, "app.example:8443")
        .header(header::CONNECTION, "x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0OnNlY3JldA==")
        .header(header::TE, "trailers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.example")
        .header(header::FORWARDED, "for=6.6.6.6;host=evil.example")
        .header("x-end-to-end", "kept")
        .body(full(""))
        .unwrap();
    let response = bounded(send(proxy.addr, request)).await.unwrap();

    // Response side: hop-by-hop fields of the upstream's response do not reach the client.
    assert!(response.headers().get("x-resp-hop").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    assert_eq!(response.headers()["x-resp-kept"], "visible");

    let echo = echo_of(response).await;
    assert_eq!(echo["uri"], "/base/a/b?x=1&y=two");
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "forwarded",
    ] {
        assert!(
            header_values(&echo, hop).is_empty(),
            "{hop} reached the upstream"
        );
    }
    assert!(
        !header_values(&echo, "connection")
            .iter()
            .any(|v| v.contains("x-hop"))
    );
    assert_eq!(header_values(&echo, "x-end-to-end"), ["kept"]);
    assert_eq!(header_values(&echo, "host"), ["app.example:8443"]);
    assert_eq!(header_values(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_values(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        header_values(&echo, "x-forwarded-host"),
        ["app.example:8443"]
    );
}

#[tokio::test]
async fn forwarded_headers_from_trusted_peer_are_kept_and_appended() {
    let upstream = echo_upstream().await;
    let mut settings = settings_for(upstream, "/");
    settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let proxy = start_proxy(settings, ServerSettings::default()).await;

    let request = Request::get("/")
        .header(header::HOST, "internal:8080")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example")
        .body(full(""))
        .unwrap();
    let echo = echo_of(bounded(send(proxy.addr, request)).await.unwrap()).await;
    assert_eq!(
        header_values(&echo, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(header_values(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(header_values(&echo, "x-forwarded-host"), ["app.example"]);
}

#[tokio::test]
async fn http2_client_reaches_http1_upstream_with_its_authority_as_host() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let request = Request::get("http://app.test/h2?q=1")
        .body(full(""))
        .unwrap();
    let response = bounded(send_h2(proxy.addr, request)).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let echo = echo_of(response).await;
    assert_eq!(echo["uri"], "/h2?q=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(header_values(&echo, "host"), ["app.test"]);
    assert_eq!(header_values(&echo, "x-forwarded-host"), ["app.test"]);
}

#[tokio::test]
async fn upstream_down_is_502() {
    let proxy = start_proxy(
        settings_for(closed_port().await, "/"),
        ServerSettings::default(),
    )
    .await;

    let request = Request::get("/")
        .header(header::ACCEPT, "application/json")
        .body(full(""))
        .unwrap();
    let response = bounded(send(proxy.addr, request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["error"], "bad_gateway");

    let request = Request::get("/")
        .header(header::ACCEPT, "text/html")
        .body(full(""))
        .unwrap();
    let response = bounded(send(proxy.addr, request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let upstream = start_upstream(|_request| async {
        std::future::pending::<()>().await;
        Response::new(full("never"))
    })
    .await;
    let mut settings = settings_for(upstream, "/");
    settings.response_timeout = Duration::from_millis(200);
    let proxy = start_proxy(settings, ServerSettings::default()).await;

    let response = bounded(send(proxy.addr, Request::get("/").body(full("")).unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["error"], "gateway_timeout");
}

#[tokio::test]
async fn oversized_request_header_is_431_and_server_keeps_serving() {
    let upstream = echo_upstream().await;
    let proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let mut stream = bounded(TcpStream::connect(proxy.addr)).await.unwrap();
    let huge = "a".repeat(32 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Huge: {huge}\r\n\r\n");
    // The server may stop reading (and close) before we finish writing; that is fine.
    let _ = bounded(stream.write_all(head.as_bytes())).await;
    let mut answer = Vec::new();
    let read = bounded(stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431") || (answer.is_empty() && read.is_err()),
        "unexpected answer to an oversized header: {answer:?} ({read:?})"
    );
    assert!(
        !answer.contains("x-forwarded-for"),
        "the request reached the upstream"
    );

    let response = bounded(send(
        proxy.addr,
        Request::get("/next").body(full("")).unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(echo_of(response).await["uri"], "/next");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_request_finish() {
    let (arrived, arrived_rx) = Signal::new();
    let (release, release_tx) = Wait::new();
    let upstream = start_upstream(move |_request| {
        let arrived = arrived.clone();
        let release = release.clone();
        async move {
            arrived.fire();
            release.wait().await;
            Response::new(full("finished"))
        }
    })
    .await;
    let mut proxy = start_proxy(settings_for(upstream, "/"), ServerSettings::default()).await;

    let in_flight = tokio::spawn(send(
        proxy.addr,
        Request::get("/slow").body(full("")).unwrap(),
    ));
    bounded(arrived_rx).await.unwrap();

    proxy.shutdown.take().unwrap().send(()).unwrap();
    // Shutdown has begun once the listener is closed: new connections are refused.
    let mut refused = false;
    for _ in 0..200 {
        match TcpStream::connect(proxy.addr).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "listener still accepting after shutdown");
    assert!(
        !proxy.task.is_finished(),
        "serve returned before the in-flight request finished"
    );

    release_tx.send(()).unwrap();
    let response = bounded(in_flight).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, "finished");
    bounded(proxy.task).await.unwrap().unwrap();
}
