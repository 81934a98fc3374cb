//! `[dev]`: development mode — the simulated WeChat, its ticket pusher and the demo upstream
//! in the same process, loopback only (started by the `sim` feature's `app::dev`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, Problems};

/// Upper bound for `dev.prefill_sessions`.
const MAX_PREFILL_SESSIONS: usize = 10_000_000;

/// `[dev]` — development mode. Everything here is off unless set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Start the simulated WeChat in-process and point the WeChat base URLs at it.
    #[serde(default)]
    pub simulate_wechat: bool,
    /// Where the simulated WeChat listens (loopback only).
    #[serde(default)]
    pub sim_listen: Option<SocketAddr>,
    /// Seconds between simulated `component_verify_ticket` pushes.
    #[serde(default)]
    pub push_interval_secs: Option<u64>,
    /// Start the demo upstream in-process (used when `server.upstream` is not set).
    #[serde(default)]
    pub demo_upstream: bool,
    /// Where the demo upstream listens (loopback only).
    #[serde(default)]
    pub demo_upstream_listen: Option<SocketAddr>,
    /// Benchmarks only: create this many synthetic sessions in the session store at start and
    /// write the cookies of the first 1 024 to `<state_dir>/bench-cookies.txt`, so that a load
    /// test measures the proxy with a full store (`bench/load.sh` rows k and m, `bench/soak.sh`
    /// with either store). Needs `simulate_wechat`.
    #[serde(default)]
    pub prefill_sessions: usize,
}

impl DevConfig {
    /// True when any development feature is on (then only loopback addresses are allowed).
    pub fn enabled(&self) -> bool {
        self.simulate_wechat || self.demo_upstream
    }

    pub(super) fn check(&self, config: &Config, problems: &mut Problems) {
        let mut bad = |key: &str, message: String| problems.bad(key, message);
        if self.prefill_sessions > 0 && !self.simulate_wechat {
            bad(
                "dev.prefill_sessions",
                "only for benchmarks: needs dev.simulate_wechat".into(),
            );
        }
        if u64::try_from(self.prefill_sessions).unwrap_or(u64::MAX) > config.session.capacity {
            // The store would evict the first sessions, whose cookies are the ones written out.
            bad(
                "dev.prefill_sessions",
                format!(
                    "must not exceed session.capacity ({})",
                    config.session.capacity
                ),
            );
        }
        if self.prefill_sessions > MAX_PREFILL_SESSIONS {
            bad(
                "dev.prefill_sessions",
                format!("at most {MAX_PREFILL_SESSIONS}"),
            );
        }
        if self.enabled() {
            if !config.server.listen.ip().is_loopback() {
                bad(
                    "server.listen",
                    "development mode ([dev]) only listens on loopback addresses".into(),
                );
            }
            for (key, addr) in [
                ("dev.sim_listen", self.sim_listen),
                ("dev.demo_upstream_listen", self.demo_upstream_listen),
            ] {
                if addr.is_some_and(|a| !a.ip().is_loopback()) {
                    bad(key, "must be a loopback address".into());
                }
            }
        }
    }
}
