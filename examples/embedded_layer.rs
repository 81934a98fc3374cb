//! WeChat login inside a Rust service: `WeChatAuthLayer` in front of a plain tower/hyper handler
//! that reads `Identity` from the request extensions (in axum: `Extension<Identity>`).
//!
//! Runs against the simulated WeChat so it works on a laptop:
//! ```sh
//! cargo run --example embedded_layer   # then open http://127.0.0.1:8081
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tower::ServiceBuilder;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::layer::WeChatAuthLayer;
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::server::{RequestBody, ServerSettings, serve, shutdown_signal};
use wechat_oauth_proxy::session::{CookieCodec, CookieSettings, MemoryStore, SessionSettings};
use wechat_oauth_proxy::sim::{SimConfig, SimWeChat};
use wechat_oauth_proxy::wechat::client::ClientSettings;
use wechat_oauth_proxy::wechat::oauth::{OAuthMode, WeChatOAuth, WeChatSettings};
use wechat_oauth_proxy::wechat::persist::MemoryPlatformStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The application's own handler: it never sees a request without an identity (except skipped
/// paths), and never sees a client-forged identity header.
async fn hello(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let greeting = match req.extensions().get::<Identity>() {
        Some(who) => format!("你好, {} (openid {})\n", who.nickname, who.openid),
        None => "hello, anonymous (a skipped path)\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(greeting))))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen: SocketAddr = "127.0.0.1:8081".parse()?;
    let public_url: url::Url = format!("http://{listen}").parse()?;

    // Development only: a simulated WeChat with a consent page to pick a test user.
    let sim_config = SimConfig {
        interactive: true,
        ..SimConfig::default()
    };
    let sim = SimWeChat::start(sim_config.clone(), "127.0.0.1:0".parse()?).await?;

    let wechat = WeChatOAuth::new(
        WeChatSettings {
            mode: OAuthMode::OfficialAccount {
                appid: sim_config.authorizer_appid.clone(),
                secret: sim_config.official_account_secret.clone(),
            },
            client: ClientSettings {
                api_base: sim.base_url(),
                open_base: sim.base_url(),
                request_timeout: Duration::from_secs(5),
                ..ClientSettings::default()
            },
            token: Default::default(),
        },
        Arc::new(MemoryPlatformStore::new()),
    )?;
    let master = SecretString::new("example-master-secret-0123456789abcdef");
    let cookies = CookieCodec::new(
        &master,
        CookieSettings {
            secure: false, // plain http on loopback; never in production
            ..CookieSettings::default()
        },
    )?;
    let jwt = JwtIssuer::new(JwtSettings::default(), &master)?;
    let layer = WeChatAuthLayer::builder()
        .public_url(public_url.clone())
        .wechat(wechat)
        .sessions(Arc::new(MemoryStore::new(SessionSettings::default())))
        .cookies(cookies)
        .jwt(jwt)
        .skip(Some(http::Method::GET), "/public/*")?
        .build()?;

    let app = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(hello));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("open {public_url} (simulated WeChat at {})", sim.base_url());
    serve(listener, app, ServerSettings::default(), shutdown_signal()).await?;
    Ok(())
}
