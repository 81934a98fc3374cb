//! WeChat login in front of an axum app: a public page, a page that greets the user by
//! nickname, and an API route answering JSON. Handlers take the user as an argument
//! (`Identity`, or `Option<Identity>` where a guest is welcome).
//!
//! Runs against the simulated WeChat (in this process, loopback only), so it works on a laptop:
//! ```sh
//! cargo run --example axum --features axum   # then open http://127.0.0.1:8082
//! ```
//! `tests/axum.rs` runs this very app through a whole login.

use axum::{Json, Router, routing::get};
use http::Method;
use serde_json::{Value, json};
use url::Url;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::layer::{BuildError, WeChatAuthLayer};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::sim::{SimConfig, SimError, SimWeChat};
use wechat_oauth_proxy::wechat::client::ClientSettings;

/// The app's routes: `/` is public (a skip rule), the rest needs a WeChat login.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/hello", get(hello))
        .route("/api/me", get(me))
}

/// Public: greets a guest (no session is looked at on a skipped path).
async fn home(who: Option<Identity>) -> String {
    match who {
        Some(who) => format!("welcome back, {}\n", who.nickname),
        None => "welcome, guest — open /hello to log in with WeChat\n".to_owned(),
    }
}

/// Protected: a browser without a session is sent into the WeChat login first.
async fn hello(who: Identity) -> String {
    format!("你好, {} (openid {})\n", who.nickname, who.openid)
}

/// Protected API: without a session, 401 JSON with a `login_url` (never a redirect).
async fn me(who: Identity) -> Json<Value> {
    Json(json!({ "openid": who.openid, "nickname": who.nickname, "avatar": who.avatar }))
}

/// The layer: official-account credentials, the public URL and the master secret; the two
/// lines marked "simulator" are for this demo only.
pub fn auth(sim: &SimWeChat, public_url: Url) -> Result<WeChatAuthLayer, BuildError> {
    let config = sim.config();
    WeChatAuthLayer::builder()
        .official_account(
            config.authorizer_appid.clone(),
            config.official_account_secret.clone(),
        )
        .public_url(public_url)
        .master_secret(SecretString::new("example-master-secret-0123456789abcdef"))
        .skip(Method::GET, "/")?
        .api_prefix("/api")
        .wechat_client(ClientSettings {
            api_base: sim.base_url(), // simulator
            open_base: sim.base_url(),
            ..ClientSettings::default()
        })
        .insecure_allow_http(true) // simulator: plain http on loopback, never in production
        .build()
}

/// The simulated WeChat: interactive (a consent page to pick a test user) unless `tests`.
pub async fn start_sim(interactive: bool) -> Result<SimWeChat, SimError> {
    let config = SimConfig {
        interactive,
        ..SimConfig::default()
    };
    SimWeChat::start(config, ([127, 0, 0, 1], 0).into()).await
}

#[allow(
    dead_code,
    reason = "tests/axum.rs includes this file for the functions above"
)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8082").await?;
    let public_url: Url = format!("http://{}", listener.local_addr()?).parse()?;
    let sim = start_sim(true).await?;
    let app = routes().layer(auth(&sim, public_url.clone())?);
    println!("open {public_url} (simulated WeChat at {})", sim.base_url());
    axum::serve(listener, app).await?;
    Ok(())
}
