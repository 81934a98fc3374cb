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
//! [`WeChatAuthLayer`](layer::WeChatAuthLayer) wraps any tower service (axum, hyper, tonic-web…).
//! The inner service sees only authenticated requests (plus the public routes you skip) and
//! reads the user from the request extensions (`Extension<Identity>` in axum). The layer answers
//! the reserved endpoints under `/_wxauth` (login, callback, ticket events, logout, JWKS,
//! whoami, health, ready) itself, and never fails with an error of its own: every failure is a
//! response.
//!
//! ```no_run
//! # async fn example(
//! #     wechat: wechat_oauth_proxy::wechat::oauth::WeChatOAuth,
//! #     cookies: wechat_oauth_proxy::session::CookieCodec,
//! #     jwt: wechat_oauth_proxy::jwt::JwtIssuer,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{convert::Infallible, sync::Arc};
//! use bytes::Bytes;
//! use http::{Method, Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, service_fn};
//! use wechat_oauth_proxy::{Identity, layer::WeChatAuthLayer, session::{MemoryStore, SessionStore}};
//!
//! let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
//! let auth = WeChatAuthLayer::builder()
//!     .wechat(wechat)
//!     .sessions(sessions)
//!     .cookie_codec(cookies)
//!     .jwt(jwt)
//!     .public_url("https://app.example.com".parse()?)
//!     .skip(Method::GET, "/public/*")?
//!     .api_prefix("/api")
//!     .build()?;
//! let service = ServiceBuilder::new().layer(auth).service(service_fn(|req: Request<Full<Bytes>>| async move {
//!     let who = req.extensions().get::<Identity>().map(|i| i.nickname.clone()).unwrap_or_default();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
//! }));
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! The WeChat client ([`WeChatOAuth`](wechat::oauth::WeChatOAuth)), the cookie codec
//! ([`CookieCodec`](session::CookieCodec)) and the JWT issuer ([`JwtIssuer`](jwt::JwtIssuer))
//! are built from their own settings structs; `examples/embedded_layer.rs` is a complete,
//! runnable service against the simulated WeChat.
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
//! | `redis` | no | Redis backends for sessions, redeemed-login markers and the platform state, for several instances |
//!
//! Library users who want a lean build use `default-features = false` (and add `redis` when
//! they run several instances).
//!
//! # Where to look
//!
//! [`layer`] is the HTTP face of authentication, [`wechat`] speaks WeChat (and serves no HTTP),
//! [`session`] holds sessions and cookies (and knows no WeChat), [`jwt`] mints the identity
//! token, [`identity`] is what the upstream learns, [`proxy`] and [`server`] make the sidecar,
//! [`config`] and [`app`] are the sidecar's configuration file and composition root.
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
pub mod wechat;

pub use identity::Identity;
