//! The one test harness. Every integration test binary declares `mod support;` and takes what
//! it needs:
//!
//! - here: [`STEP`] and [`bounded`], [`cookie_pair`], [`raw_status`] (every network or store await in every suite goes through
//!   it, so a hung peer fails the test instead of hanging it), [`TempDir`] and [`start_sim`]
//!   (the simulated WeChat on `127.0.0.1:0`);
//! - [`layer`] (re-exported here): the layer suites' parts: [`Echo`], the layer's collaborators,
//!   [`wechat_settings`] (component mode against the simulator), [`World`] and [`Browser`];
//! - [`browser`]: headless Chromium over WebDriver (`chromedriver`), for what a person sees;
//! - [`events`]: a minimal events URL that hands pushes to `WeChatOAuth::accept_push`;
//! - [`proxy`]: a tiny hyper upstream, the proxy under test and raw hyper clients;
//! - [`redis`]: a throw-away `redis-server` per test and a session store that owns its server;
//! - [`sidecar`]: the real binary in development mode, a login through its simulated WeChat's
//!   consent page, and other programs run with a deadline.
//! - [`wechat`]: `WeChatOAuth` against the simulator without the layer: component settings, many
//!   `token()` calls at once, one code exchange.
//!
//! Every loop in the harness is bounded.
#![allow(
    dead_code,
    unreachable_pub,
    unused_imports,
    reason = "one harness shared by every test crate; each uses a part"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{future::Future, time::Duration};

#[cfg(feature = "sim")]
pub mod browser;
pub mod events;
#[cfg(feature = "sim")]
pub mod layer;
pub mod proxy;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sim")]
pub mod sidecar;
#[cfg(feature = "sim")]
pub mod wechat;

#[cfg(feature = "sim")]
pub use layer::*;

/// Upper bound of any single network step or store call (generous: the machine may be busy).
pub const STEP: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<F: Future>(future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("step did not finish within {STEP:?}"),
    }
}

/// Sends `request` (raw HTTP/1.1 text, which should say `Connection: close`) to `addr` and
/// returns the status code of the answer: for targets and headers an HTTP client would clean up
/// or refuse to send.
pub async fn raw_status(addr: impl tokio::net::ToSocketAddrs, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = bounded(tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    bounded(stream.write_all(request.as_bytes()))
        .await
        .expect("write");
    let mut response = Vec::new();
    bounded(stream.read_to_end(&mut response))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

/// The `name=value` pair of a `Set-Cookie` header value (parsed with the `cookie` crate).
pub fn cookie_pair(set_cookie: &http::HeaderValue) -> String {
    let text = set_cookie.to_str().expect("ascii set-cookie");
    let cookie = cookie::Cookie::parse(text.to_owned()).expect("set-cookie parses");
    format!("{}={}", cookie.name(), cookie.value())
}

/// The user of the session store suites, `openid` apart: a unionid, a nickname with CJK and an
/// emoji, an avatar URL.
pub fn user(openid: &str) -> wechat_oauth_proxy::Identity {
    wechat_oauth_proxy::Identity {
        openid: openid.into(),
        unionid: Some(format!("union-{openid}").into()),
        nickname: "小明 🐼".to_owned(),
        avatar: "https://thirdwx.qlogo.cn/mmopen/abc/132".to_owned(),
        appid: "wx0123456789abcdef".into(),
        scope: wechat_oauth_proxy::ids::Scope::UserInfo,
    }
}

/// A unique directory under the system temp dir (not created), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh path `wop-<label>-<pid>-<random>`.
    pub fn new(label: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "wop-{label}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulated WeChat with its default configuration on a fresh loopback port.
#[cfg(feature = "sim")]
pub async fn start_sim() -> wechat_oauth_proxy::sim::SimWeChat {
    use wechat_oauth_proxy::sim::{SimConfig, SimWeChat};
    bounded(SimWeChat::start(
        SimConfig::default(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("sim starts")
}

/// Checks `check` up to `tries` times, `every` apart, until it holds; fails the test with `what`
/// when it never does. The bounded form of "wait until".
pub async fn eventually(
    what: &str,
    tries: u32,
    every: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    for _ in 0..tries {
        if check().await {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("{what}: not within {tries} checks {every:?} apart");
}
