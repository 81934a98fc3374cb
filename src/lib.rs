//! # wechat-oauth-proxy
//!
//! WeChat web OAuth — through a third-party platform (第三方平台, component) on behalf of an
//! official account, or directly with an official account's own secret — in front of your
//! application. Every request that reaches the application carries a short-lived signed JWT
//! with the user's `openid`, `unionid`, `nickname` and `avatar` (and, in-process, an
//! [`Identity`] in the request extensions). It does for WeChat what oauth2-proxy does for OIDC.
//!
//! The crate takes care of the whole protocol: the login redirect bound to the browser by an
//! encrypted flow cookie, the callback and the code exchange, the platform's encrypted
//! `component_verify_ticket` pushes and its `component_access_token` (persisted, refreshed in the
//! background, one fetch per validity window), server-side sessions (memory, or Redis for several
//! instances), the JWT and its JWKS, and the removal of every identity header a client could
//! forge.
//!
//! # Two ways to use it
//!
//! ## As a tower `Layer` in a Rust service
//!
//! [`WeChatAuthLayer`](layer::WeChatAuthLayer) wraps any tower service. Built from the few
//! things only you can choose — the official account's credentials (or a third-party
//! platform's, [`credentials`](layer::WeChatAuthLayerBuilder::credentials)), the public URL and
//! a master secret — with everything else as the sidecar defaults it. In axum (feature `axum`),
//! a handler takes the user as an argument:
//!
#![cfg_attr(feature = "axum", doc = "```no_run")]
#![cfg_attr(not(feature = "axum"), doc = "```ignore")]
//! use axum::{Router, routing::get};
//! use wechat_oauth_proxy::{Identity, layer::WeChatAuthLayer, secret::SecretString, wechat::AppSecret};
//!
//! async fn hello(who: Identity) -> String { format!("你好, {}", who.nickname) }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let auth = WeChatAuthLayer::builder()
//!         .official_account("wx0123456789abcdef".into(), AppSecret::new(std::env::var("WX_APPSECRET")?))
//!         .public_url("https://app.example.com".parse()?)
//!         .master_secret(SecretString::new(std::env::var("WXAUTH_MASTER_SECRET")?))
//!         .build()?;
//!     let app = Router::new().route("/", get(hello)).layer(auth);
//!     axum::serve(tokio::net::TcpListener::bind("0.0.0.0:8080").await?, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! A browser without a session is sent through the WeChat login and comes back; an API client
//! (`.api_prefix("/api")`, `fetch`, `Accept: application/json`) gets `401` JSON with a
//! `login_url`. Public routes are skip rules (`.skip(Method::GET, "/public/*")?`); there, an
//! `Option<Identity>` argument is the user if the browser has a session, `None` for a guest
//! (see [`IdentityRejection`](layer::IdentityRejection) for the answers). The layer answers the
//! reserved endpoints under `/_wxauth` (login, callback, ticket events, logout, JWKS, whoami,
//! health, ready) itself, and never fails with an error of its own: every failure is a
//! response, so it needs no `HandleErrorLayer`. `examples/axum.rs` is a complete app against
//! the simulated WeChat (`cargo run --example axum --features axum`).
//!
//! `Router::layer` runs the layer after axum has routed the request on its raw path, while the
//! layer decides on the normalized path (`/a/../b` is `/b`): with skip rules, have every handler
//! that needs a user take `Identity` (it then answers with a login whatever route matched), or
//! wrap the whole router so that routing sees the path the layer decided on:
//! `Router::new().fallback_service(auth.layer(app))`. With `route_layer`, give the reserved
//! prefix a route (`.route("/_wxauth/{*rest}", any(…))`) so the login's callback reaches the
//! layer.
//!
//! Any other tower stack works the same way (hyper's `service_fn`, tonic-web, tower-http…):
//! the inner service reads the [`Identity`] from the request extensions:
//!
//! ```no_run
//! # fn example(auth: wechat_oauth_proxy::layer::WeChatAuthLayer) {
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, service_fn};
//! use wechat_oauth_proxy::Identity;
//!
//! let service = ServiceBuilder::new().layer(auth).service(service_fn(|req: Request<Full<Bytes>>| async move {
//!     let who = req.extensions().get::<Identity>().map(|i| i.nickname.clone()).unwrap_or_default();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
//! }));
//! # let _ = service;
//! # }
//! ```
//!
//! Each part can also be given whole to the [builder](layer::WeChatAuthLayerBuilder) (the
//! WeChat client, the session store — Redis for several instances —, the cookie codec, the JWT
//! issuer), and [`app::layer_from_file`] builds the layer from the sidecar's own `config.toml`,
//! so a team can move between the two faces with one configuration. `examples/embedded_layer.rs`
//! is a plain hyper service behind the layer. An upstream behind the sidecar verifies the JWT
//! as [`verify_in_rust`] shows.
//!
//! ## As a sidecar reverse proxy in front of any upstream
//!
//! The `wechat-oauth-proxy` binary puts the same layer in front of an HTTP upstream (PHP, Java,
//! Node…), configured by one TOML file:
//!
//! ```sh
//! wechat-oauth-proxy --config config.toml --check   # print every problem, exit 64
//! wechat-oauth-proxy --config config.toml           # serve
//! ```
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! public_url = "https://app.example.com"
//! upstream = "http://127.0.0.1:3000"
//!
//! [wechat]
//! mode = "component"
//! appid = "wx…"            # the official account users log in to
//! component_appid = "wx…"  # your third-party platform
//! # component_secret, message_token, encoding_aes_key: inline, *_file or WXAUTH_* variables
//!
//! [session]
//! master_secret_file = "/run/secrets/wxauth-master"
//! ```
//!
//! The upstream verifies the JWT with the keys at `/_wxauth/jwks.json`. The README describes
//! every key, the WeChat platform setup and the security notes; `cargo run --release` starts a
//! demo with a simulated WeChat. The parts are public too: [`proxy::Upstream`] is the forwarding
//! service and [`server::serve`] the accept loop, so a Rust program can assemble its own sidecar.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sim` | yes | the `sim` module: a simulated WeChat (authorize page, APIs, ticket pushes) and a demo upstream, loopback only; the sidecar's `[dev]` section. Makes `cargo run` and the tests work without WeChat |
//! | `mimalloc` | yes | mimalloc as the **binary's** global allocator; the library never chooses an allocator for its users |
//! | `redis` | yes | Redis backends for sessions, redeemed-login markers and the platform state, for several instances |
//! | `axum` | no | `Identity` and `Option<Identity>` as axum handler arguments, answering like the layer ([`IdentityRejection`](layer::IdentityRejection)); the layer itself works in axum without it |
//!
//! Library users who want a lean build use `default-features = false` (and add `redis` when
//! they run several instances, `axum` in an axum app).
//!
//! # Where to look
//!
//! [`layer`] is the HTTP face of authentication, [`wechat`] speaks WeChat (and serves no HTTP),
//! [`session`] holds sessions and cookies (and knows no WeChat), [`jwt`] mints the identity
//! token, [`identity`] is what the upstream learns, [`proxy`] and [`server`] make the sidecar,
//! [`config`] and [`app`] are the sidecar's configuration file and composition root;
//! [`verify_in_rust`] is the guide to verifying the identity JWT in a Rust upstream.
//! `ARCHITECTURE.md` maps the modules, their dependency rules and the path of one request and one
//! login through the code.
#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod audit;
mod clock;
pub mod config;
mod html;
pub mod identity;
pub mod ids;
pub mod jwt;
pub mod layer;
pub mod logging;
pub mod metrics;
mod negotiate;
pub mod proxy;
mod redis_util;
pub mod request_id;
pub mod secret;
pub mod server;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
#[doc = include_str!("../docs/verify-in-rust.md")]
pub mod verify_in_rust {}
pub mod wechat;

pub use identity::Identity;
