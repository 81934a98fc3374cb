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
//!
//! The durable store (the sidecar's default) is measured the same way, in a directory of your
//! choice (it must not hold a `sessions.redb` yet), then opened again in a new process:
//!
//! ```sh
//! cargo run --release --example bench_session_rss -- 1000000 --durable /tmp/d --concurrency 64
//! cargo run --release --example bench_session_rss -- --reopen /tmp/d    # start-up time, RSS
//! # the same after a crash: --crash exits without closing the file
//! cargo run --release --example bench_session_rss -- 1000000 --durable /tmp/c --concurrency 64 --crash
//! cargo run --release --example bench_session_rss -- --reopen /tmp/c
//! ```
//! `--durable` creates the sessions from `--concurrency` tasks at once, as concurrent callbacks
//! would (each `create` returns once its session is committed), and reports logins per second,
//! RSS and the file's size.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{
    DurableSettings, DurableStore, MemoryStore, SessionId, SessionRecord, SessionSettings,
    SessionStore,
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

const USAGE: &str = "usage: bench_session_rss <sessions> [--jwt] | <sessions> --durable <dir> \
                     [--concurrency <tasks>] [--crash] | --reopen <dir>";

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dir) = value("--reopen") {
        return reopen(Path::new(&dir));
    }
    let n: usize = args.first().ok_or(USAGE)?.parse()?;
    if let Some(dir) = value("--durable") {
        let tasks = value("--concurrency").map_or(Ok(1), |c| c.parse())?;
        let crash = args.iter().any(|a| a == "--crash");
        return fill_durable(n, PathBuf::from(dir), tasks, crash);
    }
    let with_jwt = args.iter().any(|a| a == "--jwt");
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

/// The sidecar's runtime: one worker per CPU.
fn sidecar_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Size of the file, in bytes.
fn file_size(store: &DurableStore) -> Result<u64, Box<dyn Error>> {
    Ok(std::fs::metadata(store.path())?.len())
}

/// `--durable`: `n` logins from `tasks` concurrent tasks into a new durable store in `dir`.
fn fill_durable(n: usize, dir: PathBuf, tasks: usize, crash: bool) -> Result<(), Box<dyn Error>> {
    if dir.join("sessions.redb").exists() {
        return Err(format!("{} already holds a sessions.redb", dir.display()).into());
    }
    let runtime = sidecar_runtime()?;
    runtime.block_on(async {
        let store =
            DurableStore::open(&dir, SessionSettings::default(), DurableSettings::default())
                .await?;
        let before = rss_kib()?;
        let started = Instant::now();
        let tasks = tasks.clamp(1, n.max(1));
        let mut running = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let store = store.clone();
            running.spawn(async move {
                let mut i = t;
                while i < n {
                    store.create(SessionRecord::new(identity(i))).await?;
                    i += tasks;
                }
                Ok::<_, wechat_oauth_proxy::session::StoreError>(())
            });
        }
        while let Some(done) = running.join_next().await {
            done??;
        }
        let elapsed = started.elapsed();
        store.run_pending_tasks().await;
        let after = rss_kib()?;
        let stored = store.stored_session_count().await?;
        println!(
            "durable sessions={n} stored={stored} concurrency={tasks} fill_secs={:.2} \
             logins_per_sec={:.0} rss_before_kib={before} rss_after_kib={after} \
             bytes_per_session={} file_bytes={} bytes_per_session_on_disk={}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            (after.saturating_sub(before) * 1024) / n.max(1) as u64,
            file_size(&store)?,
            file_size(&store)? / n.max(1) as u64,
        );
        if crash {
            // No close: the file is left as a killed process leaves it.
            std::process::exit(0);
        }
        let closing = Instant::now();
        drop(store);
        println!("durable close_secs={:.2}", closing.elapsed().as_secs_f64());
        Ok(())
    })
}

/// `--reopen`: start-up with an existing file: the time to open it and read every session into
/// memory, and the RSS once open.
fn reopen(dir: &Path) -> Result<(), Box<dyn Error>> {
    let runtime = sidecar_runtime()?;
    runtime.block_on(async {
        let before = rss_kib()?;
        let started = Instant::now();
        let store =
            DurableStore::open(dir, SessionSettings::default(), DurableSettings::default()).await?;
        let elapsed = started.elapsed();
        store.run_pending_tasks().await;
        let rss = rss_kib()?;
        // Revoking an appid that has no session scans the memory and the whole file.
        let scanning = Instant::now();
        let nobody = wechat_oauth_proxy::ids::AppId::from("wx-nobody".to_owned());
        store.end_sessions_of(&nobody).await?;
        println!(
            "reopen sessions={} open_secs={:.2} rss_before_kib={before} rss_after_kib={rss} \
             file_bytes={} end_sessions_of_scan_secs={:.2}",
            store.session_count(),
            elapsed.as_secs_f64(),
            file_size(&store)?,
            scanning.elapsed().as_secs_f64(),
        );
        let closing = Instant::now();
        drop(store);
        println!("reopen close_secs={:.2}", closing.elapsed().as_secs_f64());
        Ok(())
    })
}
