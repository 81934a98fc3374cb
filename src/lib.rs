//! # wechat-oauth-proxy
//!
//! WeChat web OAuth — through a third-party platform (component) on behalf of an official
//! account, or directly with an official account's own secret — as a tower [`Layer`](tower::Layer)
//! for Rust services and as a sidecar reverse proxy for any upstream. The inner service receives a
//! signed JWT carrying `openid`, `unionid`, `nickname` and `avatar`.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod identity;
pub mod jwt;
pub mod layer;
mod negotiate;
pub mod proxy;
mod redis_util;
pub mod secret;
pub mod server;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wechat;

pub use identity::Identity;
