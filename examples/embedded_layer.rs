//! WeChat login inside a Rust service: `WeChatAuthLayer` in front of a plain tower/hyper handler
//! that reads `Identity` from the request extensions (in axum, a handler takes `Identity` as an
//! argument: `examples/axum.rs`).
//!
//! Runs against the simulated WeChat so it works on a laptop:
//! ```sh
//! cargo run --example embedded_layer   # then open http://127.0.0.1:8081
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tower::ServiceBuilder;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::layer::WeChatAuthLayer;
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::server::{RequestBody, ServerSettings, serve, shutdown_signal};
use wechat_oauth_proxy::sim::{SimConfig, SimWeChat};
use wechat_oauth_proxy::wechat::client::ClientSettings;

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

    let layer = WeChatAuthLayer::builder()
        .official_account(
            sim_config.authorizer_appid.clone(),
            sim_config.official_account_secret.clone(),
        )
        .public_url(public_url.clone())
        .master_secret(SecretString::new("example-master-secret-0123456789abcdef"))
        .skip(http::Method::GET, "/public/*")?
        // Development only: the simulated WeChat, plain http on loopback.
        .wechat_client(ClientSettings {
            api_base: sim.base_url(),
            open_base: sim.base_url(),
            ..ClientSettings::default()
        })
        .insecure_allow_http(true)
        .build()?;

    let app = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(hello));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("open {public_url} (simulated WeChat at {})", sim.base_url());
    serve(listener, app, ServerSettings::default(), shutdown_signal()).await?;
    Ok(())
}
