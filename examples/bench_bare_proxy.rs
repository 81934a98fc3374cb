//! The sidecar's reverse proxy *without* the auth layer, for `bench/load.sh` row (p).
//!
//! Same accept loop ([`server::serve`]) and same upstream client ([`proxy::Upstream`]) as the
//! sidecar binary, nothing else: the difference between this row and the sidecar's session row
//! is what the auth layer costs under load; the difference between this row and nginx is what
//! the hyper-based proxy itself costs.
//!
//! ```sh
//! cargo run --release --example bench_bare_proxy -- 127.0.0.1:18084 http://127.0.0.1:18081
//! ```
//!
//! [`server::serve`]: wechat_oauth_proxy::server::serve
//! [`proxy::Upstream`]: wechat_oauth_proxy::proxy::Upstream

use std::error::Error;
use std::net::SocketAddr;

use wechat_oauth_proxy::proxy::{ProxySettings, Upstream};
use wechat_oauth_proxy::server::{ServerSettings, serve, shutdown_signal};

/// The same allocator as the sidecar binary (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_bare_proxy <listen addr> <upstream url>";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: url::Url = args.next().ok_or(usage)?.parse()?;
    // The same runtime as the sidecar binary (one thread per CPU it may use).
    let runtime = wechat_oauth_proxy::server::runtime(None)?;
    runtime.block_on(async {
        let service = Upstream::new(ProxySettings::new(upstream))?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        serve(
            listener,
            service,
            ServerSettings::default(),
            shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}
