//! `[server]`: the listener, the public URL, the upstream, the state directory and the
//! connection limits of [`crate::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Config, FromConfigStr, Problems, millis};
use crate::layer::LayerSettings;
use crate::proxy::ProxySettings;
use crate::server::ServerSettings;

/// `[server]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The public URL browsers use to reach the proxy (scheme + host [+ port]); the WeChat
    /// callback is `<public_url><prefix>/callback`.
    pub public_url: url::Url,
    /// The upstream the proxy forwards to. Optional only when `dev.demo_upstream` is on.
    #[serde(default)]
    pub upstream: Option<url::Url>,
    /// Networks (CIDRs or single addresses) of proxies in front of us whose `X-Forwarded-*`
    /// headers are trusted.
    #[serde(default, deserialize_with = "super::parsed_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Directory for the persisted ticket and component token.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Largest accepted request head, in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time to wait for the upstream's response headers, in seconds.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// How long in-flight requests may take to finish on SIGTERM/SIGINT, in seconds.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Time from accept until the first complete request head (and for each later HTTP/1
    /// head), in milliseconds; then the connection is closed.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight and nothing received for this long is closed,
    /// in milliseconds.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A request body that sends nothing for this long while it is being read fails, in
    /// milliseconds.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// HTTP/2: ping a client that has sent nothing for this long, in milliseconds.
    #[serde(default = "default_http2_keepalive_interval_ms")]
    pub http2_keepalive_interval_ms: u64,
    /// HTTP/2: close the connection when a ping is not answered within this time, in
    /// milliseconds.
    #[serde(default = "default_http2_keepalive_timeout_ms")]
    pub http2_keepalive_timeout_ms: u64,
    /// Threads serving requests. Unset: one per CPU the process may run on. With one thread the
    /// proxy uses tokio's single-threaded scheduler, which costs less per request than a
    /// work-stealing pool of one (see BENCHMARKS.md).
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// Thread-per-core serving: this many independent workers, each a single-threaded runtime
    /// with its own listener on `listen` (`SO_REUSEPORT`, the kernel spreads connections) and
    /// its own upstream connection pool, as nginx's `worker_processes`. Unset (the default):
    /// one runtime with `worker_threads` threads. Not together with `worker_threads`.
    #[serde(default)]
    pub workers: Option<usize>,
}

/// Upper bound for `server.worker_threads` and `server.workers` (a typo guard, far above any useful value).
const MAX_WORKER_THREADS: usize = 1024;

/// Upper bound for the `server.*_ms` connection timeouts: one day (a typo guard).
const MAX_CONNECTION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::layer::DEFAULT_STATE_DIR)
}
fn default_max_header_bytes() -> usize {
    ServerSettings::default().max_header_bytes
}
fn default_upstream_timeout() -> u64 {
    // Any URL: only the default timeout is read.
    ProxySettings::new(LayerSettings::default().public_url)
        .response_timeout
        .as_secs()
}
fn default_shutdown_grace() -> u64 {
    ServerSettings::default().shutdown_grace.as_secs()
}
fn default_header_read_timeout_ms() -> u64 {
    millis(ServerSettings::default().header_read_timeout)
}
fn default_idle_timeout_ms() -> u64 {
    millis(ServerSettings::default().idle_timeout)
}
fn default_body_timeout_ms() -> u64 {
    millis(ServerSettings::default().body_timeout)
}
fn default_http2_keepalive_interval_ms() -> u64 {
    millis(ServerSettings::default().http2_keep_alive_interval)
}
fn default_http2_keepalive_timeout_ms() -> u64 {
    millis(ServerSettings::default().http2_keep_alive_timeout)
}

/// A trusted proxy: a CIDR, or one address (a network of one).
impl FromConfigStr for IpNet {
    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
    }
}

impl ServerConfig {
    /// Threads of the process's main tokio runtime: `worker_threads`, or one when
    /// `workers` serve on their own threads (the main runtime then only runs background tasks).
    pub fn runtime_threads(&self) -> Option<usize> {
        self.worker_threads.or(self.workers.map(|_| 1))
    }

    pub(super) fn check(&self, config: &Config, problems: &mut Problems) {
        let mut bad = |key: &str, message: String| problems.bad(key, message);
        if !matches!(self.public_url.scheme(), "http" | "https") {
            bad(
                "server.public_url",
                "must be an http:// or https:// URL".into(),
            );
        }
        if self.public_url.scheme() == "http" && !config.session.insecure_allow_http {
            bad(
                "server.public_url",
                "is http:// but cookies are Secure; use https:// or set session.insecure_allow_http = true (development only)".into(),
            );
        }
        match &self.upstream {
            Some(u) if u.scheme() != "http" => bad(
                "server.upstream",
                "only http:// upstreams are supported".into(),
            ),
            None if !config.dev.demo_upstream => bad(
                "server.upstream",
                "is required (or set dev.demo_upstream = true for the demo)".into(),
            ),
            _ => {}
        }
        if self.max_header_bytes < 1024 {
            bad("server.max_header_bytes", "must be at least 1024".into());
        }
        if self
            .worker_threads
            .is_some_and(|n| n == 0 || n > MAX_WORKER_THREADS)
        {
            bad(
                "server.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            );
        }
        if self
            .workers
            .is_some_and(|n| n == 0 || n > MAX_WORKER_THREADS)
        {
            bad(
                "server.workers",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            );
        }
        if self.workers.is_some() && self.worker_threads.is_some() {
            bad(
                "server.workers",
                "each worker is one thread: set server.workers or server.worker_threads, not both"
                    .into(),
            );
        }
        if self.upstream_timeout_secs == 0 {
            bad("server.upstream_timeout_secs", "must be > 0".into());
        }
        // Every wait on a client has a timeout: 0 would mean "close at once", never "off".
        for (key, value) in [
            ("server.header_read_timeout_ms", self.header_read_timeout_ms),
            ("server.idle_timeout_ms", self.idle_timeout_ms),
            ("server.body_timeout_ms", self.body_timeout_ms),
            (
                "server.http2_keepalive_interval_ms",
                self.http2_keepalive_interval_ms,
            ),
            (
                "server.http2_keepalive_timeout_ms",
                self.http2_keepalive_timeout_ms,
            ),
        ] {
            if value == 0 || value > MAX_CONNECTION_TIMEOUT_MS {
                bad(
                    key,
                    format!("must be between 1 and {MAX_CONNECTION_TIMEOUT_MS} (one day)"),
                );
            }
        }
    }
}

/// `[server]` → the HTTP server's limits and timeouts.
impl From<&ServerConfig> for ServerSettings {
    fn from(server: &ServerConfig) -> Self {
        ServerSettings {
            max_header_bytes: server.max_header_bytes,
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            http2_keep_alive_interval: Duration::from_millis(server.http2_keepalive_interval_ms),
            http2_keep_alive_timeout: Duration::from_millis(server.http2_keepalive_timeout_ms),
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}
