//! Resident memory per session of the in-process session store, for `bench/load.sh`.
//!
//! Logging in a million times through the WeChat flow would take far too long (and would also
//! count the simulator's memory), so this fills the same `MemoryStore` the sidecar uses — default
//! settings, sessions created through `SessionStore::create` exactly as the callback does — with
//! realistic identities, and reads `VmRSS` from `/proc/self/status` before and after.
//!
//! ```sh
//! cargo run --release --example bench_session_rss -- 1000000          # sessions only
//! cargo run --release --example bench_session_rss -- 100000 --jwt     # + one cached JWT each
//! ```
//! Prints one `key=value` line for the script to parse.

use std::error::Error;
use std::sync::Arc;

use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{
    MemoryStore, SessionId, SessionRecord, SessionSettings, SessionStore,
};

fn identity(i: usize) -> Identity {
    wechat_oauth_proxy::sim::synthetic_identity(i)
}

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> Result<u64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS line")?
        .parse()?;
    Ok(kib)
}

/// The same allocator as the sidecar binary (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .ok_or("usage: bench_session_rss <sessions> [--jwt]")?
        .parse()?;
    let with_jwt = args.any(|a| a == "--jwt");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The sidecar's defaults (capacity 1 000 000, 7-day TTL, 24 h idle).
        let settings = SessionSettings::default();
        let store = Arc::new(MemoryStore::new(settings.clone()));
        let issuer = JwtIssuer::new(
            JwtSettings::default(),
            &SecretString::new("bench-only-master-secret-0123456789abcdef"),
        )?;
        // Touch the store and the issuer once so that their fixed costs are in the baseline.
        let warm = store
            .create(SessionRecord::new(identity(usize::MAX)))
            .await?;
        issuer.token_for(warm.expose_bytes(), &identity(0)).await?;
        store.delete(&warm).await?;
        store.run_pending_tasks().await;
        let before = rss_kib()?;

        let mut ids = Vec::new();
        for i in 0..n {
            let id = store.create(SessionRecord::new(identity(i))).await?;
            if with_jwt {
                ids.push(id);
            }
        }
        store.run_pending_tasks().await;
        let sessions = rss_kib()?;
        // The id list kept for `--jwt` is ours, not the store's: leave it out of the figure.
        let ids_kib = (ids.capacity() * std::mem::size_of::<SessionId>()) as u64 / 1024;
        let mut tokens = 0usize;
        for (i, id) in ids.iter().enumerate() {
            issuer.token_for(id.expose_bytes(), &identity(i)).await?;
            tokens += 1;
        }
        let after = rss_kib()?;
        let per_session = if n == 0 {
            0
        } else {
            (sessions.saturating_sub(before).saturating_sub(ids_kib) * 1024) / n as u64
        };
        let per_token = if tokens == 0 {
            0
        } else {
            (after.saturating_sub(sessions) * 1024) / tokens as u64
        };
        println!(
            "sessions={n} live={} capacity={} rss_before_kib={before} rss_sessions_kib={sessions} \
             bytes_per_session={per_session} jwt_tokens={tokens} rss_after_kib={after} \
             bytes_per_cached_jwt={per_token}",
            store.session_count(),
            settings.capacity,
        );
        Ok(())
    })
}
