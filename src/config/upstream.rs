//! `[upstream]`: how requests are forwarded to `server.upstream` ([`crate::proxy`]), and the
//! bounds of the upstream connection pool ([`PoolSettings`]).

use std::time::Duration;

use serde::Deserialize;

use super::{Config, Problems};
use crate::proxy::{ForwardedProto, PoolSettings, ProxySettings};

/// `[upstream]`: forwarding rules for the sidecar's upstream (its address is `server.upstream`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Forward client header fields whose names contain `_` or `.` (nginx's
    /// `underscores_in_headers on`). Default false: they are dropped, because CGI, PHP, Puma and
    /// others fold those characters into `-`. Aliases of a field the proxy owns
    /// (`X_Forwarded_For`, `X.Real.IP`, …) are dropped even when this is true.
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
    /// Most idle (kept-alive) connections to the upstream kept for reuse; more are closed as
    /// they come back. 0 keeps none (a new connection per request). At most
    /// `pool_max_connections`. Unset: 1 024 ([`PoolSettings::max_idle`]), or
    /// `pool_max_connections` when that is lower (see [`UpstreamConfig::pool_settings`]).
    #[serde(default)]
    pub pool_max_idle: Option<usize>,
    /// Most connections open to the upstream at once, idle or busy; a request beyond it waits
    /// for one (within `server.upstream_timeout_secs`). Per worker with `server.workers`.
    /// Between 1 and [`MAX_POOL_CONNECTIONS`]. Default 16 384
    /// ([`PoolSettings::max_connections`]).
    #[serde(default = "default_pool_max_connections")]
    pub pool_max_connections: usize,
    /// An idle upstream connection unused for this long is closed, in seconds. Between 1 and
    /// [`MAX_POOL_IDLE_TIMEOUT_SECS`]. Default 90 ([`PoolSettings::idle_timeout`]).
    #[serde(default = "default_pool_idle_timeout_secs")]
    pub pool_idle_timeout_secs: u64,
}

/// Upper bound for `upstream.pool_max_connections`: 2²⁰, the Linux default of `nr_open`, the
/// most file descriptors one process can be allowed (a typo guard).
pub const MAX_POOL_CONNECTIONS: usize = 1 << 20;

/// Upper bound for `upstream.pool_idle_timeout_secs`: one day (a typo guard, as for the
/// `server.*_ms` connection timeouts).
pub const MAX_POOL_IDLE_TIMEOUT_SECS: u64 = 24 * 3600;

fn default_pool_max_connections() -> usize {
    PoolSettings::default().max_connections
}
fn default_pool_idle_timeout_secs() -> u64 {
    PoolSettings::default().idle_timeout.as_secs()
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allow_underscores_in_headers: false,
            pool_max_idle: None,
            pool_max_connections: default_pool_max_connections(),
            pool_idle_timeout_secs: default_pool_idle_timeout_secs(),
        }
    }
}

impl UpstreamConfig {
    pub(super) fn check(&self, problems: &mut Problems) {
        if self.pool_max_connections == 0 || self.pool_max_connections > MAX_POOL_CONNECTIONS {
            problems.bad(
                "upstream.pool_max_connections",
                format!("must be between 1 and {MAX_POOL_CONNECTIONS}"),
            );
        }
        if let Some(idle) = self.pool_max_idle
            && idle > self.pool_max_connections
        {
            problems.bad(
                "upstream.pool_max_idle",
                format!(
                    "must be at most upstream.pool_max_connections ({})",
                    self.pool_max_connections
                ),
            );
        }
        // 0 would mean "close at once", never "off".
        if self.pool_idle_timeout_secs == 0
            || self.pool_idle_timeout_secs > MAX_POOL_IDLE_TIMEOUT_SECS
        {
            problems.bad(
                "upstream.pool_idle_timeout_secs",
                format!("must be between 1 and {MAX_POOL_IDLE_TIMEOUT_SECS} (one day)"),
            );
        }
    }

    /// The pool bounds of this section; an unset `pool_max_idle` is the library's default
    /// capped at `pool_max_connections`.
    pub fn pool_settings(&self) -> PoolSettings {
        let max_idle = self.pool_max_idle.unwrap_or_else(|| {
            PoolSettings::default()
                .max_idle
                .min(self.pool_max_connections)
        });
        PoolSettings {
            max_idle,
            max_connections: self.pool_max_connections,
            idle_timeout: Duration::from_secs(self.pool_idle_timeout_secs),
        }
    }
}

impl Config {
    /// `[server]` + `[upstream]` → the forwarding settings for `upstream` (`server.upstream`, or
    /// the demo upstream in development mode), with the pool bounds of `[upstream]`.
    pub fn proxy_settings(&self, upstream: url::Url) -> ProxySettings {
        let mut settings = ProxySettings::new(upstream);
        settings.response_timeout = Duration::from_secs(self.server.upstream_timeout_secs);
        settings.allow_underscores_in_headers = self.upstream.allow_underscores_in_headers;
        settings.pool = self.upstream.pool_settings();
        settings.trusted_proxies = self.server.trusted_proxies.clone();
        if self.server.public_url.scheme() == "https" {
            settings.forwarded_proto = ForwardedProto::Https;
        }
        settings
    }
}
