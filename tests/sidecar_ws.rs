//! The sidecar stack (auth layer around the upstream proxy) with WebSockets: the handshake is
//! authenticated — with a session the upgrade reaches the upstream and echoes; without one it is
//! refused before the upstream sees anything. The upstream also never sees the proxy's cookie
//! or a forged identity header, and does see the JWT.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

mod support;

use support::{bounded, cookie_pair};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::Layer;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::ids::Scope;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::layer::WeChatAuthLayer;
use wechat_oauth_proxy::proxy::{ProxySettings, Upstream};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::server::{ServerSettings, serve};
use wechat_oauth_proxy::session::{
    CookieCodec, CookieSettings, MemoryStore, SessionRecord, SessionSettings, SessionStore,
};
use wechat_oauth_proxy::wechat::client::ClientSettings;
use wechat_oauth_proxy::wechat::oauth::{OAuthMode, WeChatOAuth, WeChatSettings};
use wechat_oauth_proxy::wechat::persist::MemoryPlatformStore;
use wechat_oauth_proxy::wechat::{AppSecret, AuthorizerAppId};

struct Stack {
    addr: std::net::SocketAddr,
    cookie: String,
    upstream_handshakes: Arc<AtomicUsize>,
    upstream_headers: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn start() -> Stack {
    // WebSocket echo upstream that records the handshake headers it received.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let handshakes = Arc::clone(&handshakes);
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = upstream.accept().await {
                let handshakes = Arc::clone(&handshakes);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let callback =
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                            let mut seen = seen.lock().unwrap();
                            for (name, value) in req.headers() {
                                seen.push((
                                    name.as_str().to_owned(),
                                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                                ));
                            }
                            Ok(resp)
                        };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() || message.is_binary() {
                            let _ = ws.send(message).await;
                        } else if message.is_close() {
                            break;
                        }
                    }
                });
            }
        });
    }

    // WeChat is never called on these paths: point the client at a closed port.
    let wechat = WeChatOAuth::new(
        WeChatSettings {
            mode: OAuthMode::OfficialAccount {
                appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
                secret: AppSecret::new("unused-secret-0123456789"),
            },
            client: ClientSettings {
                api_base: "http://127.0.0.1:9/".parse().unwrap(),
                open_base: "http://127.0.0.1:9/".parse().unwrap(),
                ..ClientSettings::default()
            },
            token: Default::default(),
        },
        Arc::new(MemoryPlatformStore::new()),
    )
    .unwrap();
    let master = SecretString::new("test-master-secret-0123456789abcdef-ws");
    let cookies = CookieCodec::new(
        &master,
        CookieSettings {
            secure: false,
            ..CookieSettings::default()
        },
    )
    .unwrap();
    let sessions = Arc::new(MemoryStore::new(SessionSettings::default()));
    let id = sessions
        .create(SessionRecord::new(Identity {
            openid: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into(),
            unionid: None,
            nickname: "李四😀".into(),
            avatar: String::new(),
            appid: "wxa1b2c3d4e5f60708".into(),
            scope: Scope::UserInfo,
        }))
        .await
        .unwrap();
    let cookie = cookie_pair(&cookies.session_cookie(&id));

    let layer = WeChatAuthLayer::builder()
        .public_url("http://127.0.0.1/".parse().unwrap())
        .wechat(wechat)
        .sessions(sessions)
        .cookies(cookies)
        .jwt(JwtIssuer::new(JwtSettings::default(), &master).unwrap())
        .build()
        .unwrap();
    let upstream = Upstream::new(ProxySettings::new(
        format!("http://{upstream_addr}").parse().unwrap(),
    ))
    .unwrap();
    let service = layer.layer(upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        service,
        ServerSettings::default(),
        std::future::pending(),
    ));
    Stack {
        addr,
        cookie,
        upstream_handshakes: handshakes,
        upstream_headers: seen,
    }
}

#[tokio::test]
async fn websocket_with_a_session_is_proxied_and_echoes() {
    let stack = start().await;
    let mut request = format!("ws://{}/socket", stack.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "cookie",
        format!("{}; theme=dark", stack.cookie).parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("x_wechat_openid", "forged".parse().unwrap());
    let stream = bounded(TcpStream::connect(stack.addr)).await.unwrap();
    let (mut ws, handshake) = bounded(tokio_tungstenite::client_async(request, stream))
        .await
        .unwrap();
    assert_eq!(handshake.status(), 101);

    bounded(ws.send(Message::text("你好 through the sidecar")))
        .await
        .unwrap();
    let echoed = bounded(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("你好 through the sidecar"));
    bounded(ws.close(None)).await.unwrap();

    assert_eq!(stack.upstream_handshakes.load(Ordering::SeqCst), 1);
    let seen = stack.upstream_headers.lock().unwrap().clone();
    let get = |name: &str| {
        seen.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-wechat-jwt").len(), 1, "the upstream gets the JWT");
    assert!(get("x_wechat_openid").is_empty(), "forged header stripped");
    let cookies = get("cookie").join("; ");
    assert!(
        cookies.contains("theme=dark"),
        "other cookies pass: {cookies}"
    );
    assert!(
        !cookies.contains("wxauth_session"),
        "the proxy's own cookie never reaches the upstream: {cookies}"
    );
}

#[tokio::test]
async fn websocket_without_a_session_is_refused_before_the_upstream() {
    let stack = start().await;
    let stream = bounded(TcpStream::connect(stack.addr)).await.unwrap();
    let result = bounded(tokio_tungstenite::client_async(
        format!("ws://{}/socket", stack.addr),
        stream,
    ))
    .await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    assert_eq!(stack.upstream_handshakes.load(Ordering::SeqCst), 0);
}
