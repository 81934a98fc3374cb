//! The configuration file (`config.toml`) of the sidecar.
//!
//! Plain serde structs with `deny_unknown_fields`, so a typo is an error rather than a silently
//! ignored key. Secrets may come from the file, from a `*_file` key naming a file that holds the
//! secret, or from an environment variable (listed in [`SECRET_ENV_VARS`]); the environment is
//! passed in as a map so tests never mutate the process environment.
//!
//! [`Config::validate`] reports every problem at once, each with its key path, so that
//! `wechat-oauth-proxy --check` can print them all. Modules never import this one: the settings
//! structs of `wechat/`, `session/`, `jwt.rs`, `proxy/` and `layer/` are built from it elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretString;

/// Environment variables that may carry secrets instead of the file: (variable, key path).
pub const SECRET_ENV_VARS: &[(&str, &str)] = &[
    ("WXAUTH_COMPONENT_SECRET", "wechat.component_secret"),
    (
        "WXAUTH_OFFICIAL_ACCOUNT_SECRET",
        "wechat.official_account_secret",
    ),
    ("WXAUTH_MESSAGE_TOKEN", "wechat.message_token"),
    ("WXAUTH_ENCODING_AES_KEY", "wechat.encoding_aes_key"),
    ("WXAUTH_MASTER_SECRET", "session.master_secret"),
    ("WXAUTH_JWT_HS256_SECRET", "jwt.hs256_secret"),
];

/// A problem found in the configuration, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `wechat.component_appid`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything that can go wrong loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys / wrong types.
    #[error("{0}")]
    Parse(String),
    /// The configuration parsed but has problems (all of them are listed).
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<ConfigProblem>),
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener, upstream and state directory.
    pub server: ServerConfig,
    /// Reserved prefix, skip rules, API prefixes, scope.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The WeChat side.
    pub wechat: WeChatConfig,
    /// Sessions and cookies.
    pub session: SessionConfig,
    /// The identity JWT and plain headers.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// How requests are forwarded to `server.upstream`.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Development mode: the simulated WeChat and the demo upstream in the same process.
    #[serde(default)]
    pub dev: DevConfig,
}

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
    /// CIDRs of proxies in front of us whose `X-Forwarded-*` headers are trusted.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
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
}

/// Upper bound for `dev.prefill_sessions`.
const MAX_PREFILL_SESSIONS: usize = 10_000_000;

/// Upper bound for `server.worker_threads` (a typo guard, far above any useful value).
const MAX_WORKER_THREADS: usize = 1024;

fn default_state_dir() -> PathBuf {
    PathBuf::from("./state")
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_upstream_timeout() -> u64 {
    60
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_http2_keepalive_interval_ms() -> u64 {
    20_000
}
fn default_http2_keepalive_timeout_ms() -> u64 {
    20_000
}

/// Upper bound for the `server.*_ms` connection timeouts: one day (a typo guard).
const MAX_CONNECTION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// `[upstream]`: forwarding rules for the sidecar's upstream (its address is `server.upstream`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Forward client header fields whose names contain `_` or `.` (nginx's
    /// `underscores_in_headers on`). Default false: they are dropped, because CGI, PHP, Puma and
    /// others fold those characters into `-`. Aliases of a field the proxy owns
    /// (`X_Forwarded_For`, `X.Real.IP`, …) are dropped even when this is true.
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Prefix of the reserved endpoints (`login`, `callback`, `events`, …).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Requests that pass without a session: `"METHOD /path"` or `"* /path/*"` (a trailing `*`
    /// matches a whole subtree). Paths are normalized before matching; the query never counts.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Path prefixes of API routes: without a session they get 401 JSON, never a redirect.
    #[serde(default)]
    pub api_prefixes: Vec<String>,
    /// Let CORS preflights (`OPTIONS` + `Access-Control-Request-Method`) through without a
    /// session (browsers never send cookies on them).
    #[serde(default)]
    pub skip_preflight: bool,
    /// `snsapi_userinfo` (nickname and avatar, consent page) or `snsapi_base` (openid only).
    #[serde(default = "default_scope")]
    pub scope: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            skip: Vec::new(),
            api_prefixes: Vec::new(),
            skip_preflight: false,
            scope: default_scope(),
        }
    }
}

fn default_prefix() -> String {
    "/_wxauth".to_owned()
}
fn default_scope() -> String {
    "snsapi_userinfo".to_owned()
}

/// Which WeChat flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeChatMode {
    /// Third-party platform web OAuth on behalf of an official account.
    Component,
    /// An official account's own web OAuth with its own secret.
    OfficialAccount,
}

/// `[wechat]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatConfig {
    /// `component` or `official_account`.
    pub mode: WeChatMode,
    /// The official account users log in to (the authorizer appid in component mode).
    pub appid: String,
    /// Component mode: the third-party platform's appid.
    #[serde(default)]
    pub component_appid: Option<String>,
    /// Component mode: the platform's appsecret.
    #[serde(default)]
    pub component_secret: Option<SecretString>,
    /// Component mode: file holding the platform's appsecret.
    #[serde(default)]
    pub component_secret_file: Option<PathBuf>,
    /// Component mode: the message token (消息校验Token).
    #[serde(default)]
    pub message_token: Option<SecretString>,
    /// Component mode: file holding the message token.
    #[serde(default)]
    pub message_token_file: Option<PathBuf>,
    /// Component mode: the EncodingAESKey (43 characters).
    #[serde(default)]
    pub encoding_aes_key: Option<SecretString>,
    /// Component mode: file holding the EncodingAESKey.
    #[serde(default)]
    pub encoding_aes_key_file: Option<PathBuf>,
    /// Component mode: the previous EncodingAESKey, tried when the current one fails (rotation).
    #[serde(default)]
    pub previous_encoding_aes_key: Option<SecretString>,
    /// Official-account mode: the account's appsecret.
    #[serde(default)]
    pub official_account_secret: Option<SecretString>,
    /// Official-account mode: file holding the account's appsecret.
    #[serde(default)]
    pub official_account_secret_file: Option<PathBuf>,
    /// Base URL of `api.weixin.qq.com`.
    #[serde(default = "default_api_base")]
    pub api_base_url: url::Url,
    /// Base URL of `open.weixin.qq.com` (the authorize page).
    #[serde(default = "default_open_base")]
    pub open_base_url: url::Url,
    /// Connect timeout for calls to WeChat, in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Total timeout of one call to WeChat, in milliseconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// One deadline, in milliseconds, for everything a login callback waits on WeChat for: the
    /// component token (its retries included), the code exchange and `sns/userinfo`. Past it
    /// the user gets the "WeChat timed out" page (503) and nothing is stored.
    #[serde(default = "default_login_deadline")]
    pub login_deadline_ms: u64,
    /// Refresh the component token this many seconds before it expires.
    #[serde(default = "default_refresh_margin")]
    pub token_refresh_margin_secs: u64,
    /// `lang` for `sns/userinfo`: `zh_CN`, `zh_TW` or `en`.
    #[serde(default = "default_lang")]
    pub lang: String,
}

// The literals are valid URLs; parsing them cannot fail.
#[allow(clippy::expect_used)]
fn default_api_base() -> url::Url {
    url::Url::parse("https://api.weixin.qq.com/").expect("valid literal URL")
}
#[allow(clippy::expect_used)]
fn default_open_base() -> url::Url {
    url::Url::parse("https://open.weixin.qq.com/").expect("valid literal URL")
}
fn default_connect_timeout() -> u64 {
    3_000
}
fn default_request_timeout() -> u64 {
    5_000
}
fn default_login_deadline() -> u64 {
    10_000
}
fn default_refresh_margin() -> u64 {
    15 * 60
}
fn default_lang() -> String {
    "zh_CN".to_owned()
}

/// Where sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process (one instance).
    Memory,
    /// Redis (several instances; needs the `redis` feature).
    Redis,
}

/// `[session]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// `memory` (default) or `redis`.
    #[serde(default = "default_store")]
    pub store: StoreKind,
    /// Redis URL when `store = "redis"`.
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// The master secret (≥ 32 bytes) from which cookie and default JWT keys are derived.
    #[serde(default)]
    pub master_secret: Option<SecretString>,
    /// File holding the master secret.
    #[serde(default)]
    pub master_secret_file: Option<PathBuf>,
    /// Session cookie name (prefixed `__Host-` when the cookie is Secure).
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Absolute session lifetime, in seconds.
    #[serde(default = "default_session_ttl")]
    pub ttl_secs: u64,
    /// Idle timeout, in seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Most sessions kept in memory.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Development only: send cookies without `Secure` so plain `http://` works.
    #[serde(default)]
    pub insecure_allow_http: bool,
}

fn default_store() -> StoreKind {
    StoreKind::Memory
}
fn default_cookie_name() -> String {
    "wxauth_session".to_owned()
}
fn default_session_ttl() -> u64 {
    7 * 24 * 3600
}
fn default_idle() -> u64 {
    24 * 3600
}
fn default_capacity() -> u64 {
    1_000_000
}

/// `[jwt]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `EdDSA` (default), `ES256`, `RS256` or `HS256`.
    #[serde(default = "default_alg")]
    pub algorithm: String,
    /// PEM private key for EdDSA / ES256 / RS256; none = an Ed25519 key derived from the master
    /// secret (so several instances agree).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// PEM public key of the previous key, still published in the JWKS during rotation.
    #[serde(default)]
    pub previous_public_key_file: Option<PathBuf>,
    /// HS256 secret (≥ 32 bytes).
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
    /// File holding the HS256 secret.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// `iss` claim.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` claim: who the token is for (your upstream).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Token lifetime, in seconds.
    #[serde(default = "default_jwt_ttl")]
    pub ttl_secs: u64,
    /// Header carrying the JWT: a header name (default `X-WeChat-Jwt`) or `Authorization`
    /// (then sent as `Bearer <jwt>`).
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// Also send `X-WeChat-OpenID`, `-UnionID`, `-Nickname`, `-Avatar`, `-AppID`.
    #[serde(default)]
    pub plain_headers: bool,
    /// Cache the minted JWT per session (default `true`); `false` signs on every request
    /// (only useful to measure the cost of signing).
    #[serde(default = "default_true")]
    pub cache: bool,
}

fn default_true() -> bool {
    true
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: default_alg(),
            private_key_file: None,
            previous_public_key_file: None,
            hs256_secret: None,
            hs256_secret_file: None,
            issuer: default_issuer(),
            audience: default_audience(),
            ttl_secs: default_jwt_ttl(),
            header: default_jwt_header(),
            plain_headers: false,
            cache: true,
        }
    }
}

fn default_alg() -> String {
    "EdDSA".to_owned()
}
fn default_issuer() -> String {
    "wechat-oauth-proxy".to_owned()
}
fn default_audience() -> String {
    "upstream".to_owned()
}
fn default_jwt_ttl() -> u64 {
    300
}
fn default_jwt_header() -> String {
    "X-WeChat-Jwt".to_owned()
}

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
    /// Benchmarks only: create this many synthetic sessions in the memory store at start and
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
}

/// Secrets resolved from the file, `*_file` keys or the environment.
#[derive(Clone, Debug, Default)]
pub struct ResolvedSecrets {
    /// Component appsecret.
    pub component_secret: Option<SecretString>,
    /// Official-account appsecret.
    pub official_account_secret: Option<SecretString>,
    /// Message token.
    pub message_token: Option<SecretString>,
    /// EncodingAESKey.
    pub encoding_aes_key: Option<SecretString>,
    /// Master secret.
    pub master_secret: Option<SecretString>,
    /// HS256 secret.
    pub hs256_secret: Option<SecretString>,
}

impl Config {
    /// Reads and parses `path`, resolves secrets (`*_file` relative to the config's directory,
    /// environment from `env`) and validates. All problems are reported together.
    pub fn load(
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<(Config, ResolvedSecrets), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml_str(&text, base, env)
    }

    /// Parses a configuration from TOML text; `base` resolves relative `*_file` paths.
    pub fn from_toml_str(
        text: &str,
        base: &Path,
        env: &HashMap<String, String>,
    ) -> Result<(Config, ResolvedSecrets), ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut problems = Vec::new();
        let secrets = config.resolve_secrets(base, env, &mut problems);
        config.validate_into(&secrets, &mut problems);
        if problems.is_empty() {
            Ok((config, secrets))
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn resolve_secrets(
        &self,
        base: &Path,
        env: &HashMap<String, String>,
        problems: &mut Vec<ConfigProblem>,
    ) -> ResolvedSecrets {
        let w = &self.wechat;
        let s = &self.session;
        let j = &self.jwt;
        let mut one = |key: &str,
                       inline: &Option<SecretString>,
                       file: &Option<PathBuf>|
         -> Option<SecretString> {
            resolve_one(key, inline, file, base, env, problems)
        };
        ResolvedSecrets {
            component_secret: one(
                "wechat.component_secret",
                &w.component_secret,
                &w.component_secret_file,
            ),
            official_account_secret: one(
                "wechat.official_account_secret",
                &w.official_account_secret,
                &w.official_account_secret_file,
            ),
            message_token: one(
                "wechat.message_token",
                &w.message_token,
                &w.message_token_file,
            ),
            encoding_aes_key: one(
                "wechat.encoding_aes_key",
                &w.encoding_aes_key,
                &w.encoding_aes_key_file,
            ),
            master_secret: one(
                "session.master_secret",
                &s.master_secret,
                &s.master_secret_file,
            ),
            hs256_secret: one("jwt.hs256_secret", &j.hs256_secret, &j.hs256_secret_file),
        }
    }

    /// Validates a parsed configuration with its resolved secrets; returns every problem.
    pub fn validate(&self, secrets: &ResolvedSecrets) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        self.validate_into(secrets, &mut problems);
        problems
    }

    fn validate_into(&self, secrets: &ResolvedSecrets, problems: &mut Vec<ConfigProblem>) {
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                message,
            })
        };

        // [server]
        if !matches!(self.server.public_url.scheme(), "http" | "https") {
            bad(
                "server.public_url",
                "must be an http:// or https:// URL".into(),
            );
        }
        if self.server.public_url.scheme() == "http" && !self.session.insecure_allow_http {
            bad(
                "server.public_url",
                "is http:// but cookies are Secure; use https:// or set session.insecure_allow_http = true (development only)".into(),
            );
        }
        match &self.server.upstream {
            Some(u) if u.scheme() != "http" => bad(
                "server.upstream",
                "only http:// upstreams are supported".into(),
            ),
            None if !self.dev.demo_upstream => bad(
                "server.upstream",
                "is required (or set dev.demo_upstream = true for the demo)".into(),
            ),
            _ => {}
        }
        for (i, cidr) in self.server.trusted_proxies.iter().enumerate() {
            if cidr.parse::<ipnet::IpNet>().is_err() && cidr.parse::<std::net::IpAddr>().is_err() {
                bad(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("{cidr:?} is not an IP address or CIDR"),
                );
            }
        }
        if self.server.max_header_bytes < 1024 {
            bad("server.max_header_bytes", "must be at least 1024".into());
        }
        if self.dev.prefill_sessions > 0 && !self.dev.simulate_wechat {
            bad(
                "dev.prefill_sessions",
                "only for benchmarks: needs dev.simulate_wechat".into(),
            );
        }
        if u64::try_from(self.dev.prefill_sessions).unwrap_or(u64::MAX) > self.session.capacity {
            // The store would evict the first sessions, whose cookies are the ones written out.
            bad(
                "dev.prefill_sessions",
                format!(
                    "must not exceed session.capacity ({})",
                    self.session.capacity
                ),
            );
        }
        if self.dev.prefill_sessions > MAX_PREFILL_SESSIONS {
            bad(
                "dev.prefill_sessions",
                format!("at most {MAX_PREFILL_SESSIONS}"),
            );
        }
        if self
            .server
            .worker_threads
            .is_some_and(|n| n == 0 || n > MAX_WORKER_THREADS)
        {
            bad(
                "server.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            );
        }
        if self.server.upstream_timeout_secs == 0 {
            bad("server.upstream_timeout_secs", "must be > 0".into());
        }
        // Every wait on a client has a timeout: 0 would mean "close at once", never "off".
        for (key, value) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            (
                "server.http2_keepalive_interval_ms",
                self.server.http2_keepalive_interval_ms,
            ),
            (
                "server.http2_keepalive_timeout_ms",
                self.server.http2_keepalive_timeout_ms,
            ),
        ] {
            if value == 0 || value > MAX_CONNECTION_TIMEOUT_MS {
                bad(
                    key,
                    format!("must be between 1 and {MAX_CONNECTION_TIMEOUT_MS} (one day)"),
                );
            }
        }

        // [auth]
        let prefix = &self.auth.prefix;
        if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2 {
            bad(
                "auth.prefix",
                "must start with '/' and not end with '/' (e.g. \"/_wxauth\")".into(),
            );
        }
        for (i, rule) in self.auth.skip.iter().enumerate() {
            if let Err(e) = parse_skip_rule(rule) {
                bad(&format!("auth.skip[{i}]"), e);
            }
        }
        for (i, p) in self.auth.api_prefixes.iter().enumerate() {
            if !p.starts_with('/') {
                bad(
                    &format!("auth.api_prefixes[{i}]"),
                    "must start with '/'".into(),
                );
            }
        }
        if !matches!(self.auth.scope.as_str(), "snsapi_userinfo" | "snsapi_base") {
            bad(
                "auth.scope",
                "must be \"snsapi_userinfo\" or \"snsapi_base\"".into(),
            );
        }

        // [wechat]
        let w = &self.wechat;
        if !looks_like_appid(&w.appid) {
            bad(
                "wechat.appid",
                "must look like wx followed by 16 hex characters".into(),
            );
        }
        match w.mode {
            WeChatMode::Component => {
                match &w.component_appid {
                    None => bad(
                        "wechat.component_appid",
                        "is required in component mode".into(),
                    ),
                    Some(a) if !looks_like_appid(a) => bad(
                        "wechat.component_appid",
                        "must look like wx followed by 16 hex characters".into(),
                    ),
                    Some(a) if *a == w.appid => bad(
                        "wechat.component_appid",
                        "must differ from wechat.appid (the official account)".into(),
                    ),
                    Some(_) => {}
                }
                if secrets.component_secret.is_none() {
                    bad(
                        "wechat.component_secret",
                        "is required in component mode (or component_secret_file, or WXAUTH_COMPONENT_SECRET)".into(),
                    );
                }
                if secrets.message_token.is_none() {
                    bad(
                        "wechat.message_token",
                        "is required in component mode (or message_token_file, or WXAUTH_MESSAGE_TOKEN)".into(),
                    );
                }
                match &secrets.encoding_aes_key {
                    None => bad(
                        "wechat.encoding_aes_key",
                        "is required in component mode (or encoding_aes_key_file, or WXAUTH_ENCODING_AES_KEY)".into(),
                    ),
                    Some(k) if !valid_aes_key(k) => bad(
                        "wechat.encoding_aes_key",
                        "must be exactly 43 characters of [A-Za-z0-9+/]".into(),
                    ),
                    Some(_) => {}
                }
                if let Some(k) = &w.previous_encoding_aes_key {
                    if !valid_aes_key(k) {
                        bad(
                            "wechat.previous_encoding_aes_key",
                            "must be exactly 43 characters of [A-Za-z0-9+/]".into(),
                        );
                    }
                }
            }
            WeChatMode::OfficialAccount => {
                if secrets.official_account_secret.is_none() {
                    bad(
                        "wechat.official_account_secret",
                        "is required in official_account mode (or official_account_secret_file, or WXAUTH_OFFICIAL_ACCOUNT_SECRET)".into(),
                    );
                }
            }
        }
        for (key, url) in [
            ("wechat.api_base_url", &w.api_base_url),
            ("wechat.open_base_url", &w.open_base_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                bad(key, "must be an http(s) URL".into());
            }
        }
        if w.request_timeout_ms == 0 || w.connect_timeout_ms == 0 {
            bad("wechat.request_timeout_ms", "timeouts must be > 0".into());
        }
        if !(100..=120_000).contains(&w.login_deadline_ms) {
            bad(
                "wechat.login_deadline_ms",
                "must be between 100 and 120000 (milliseconds)".into(),
            );
        }
        if !matches!(w.lang.as_str(), "zh_CN" | "zh_TW" | "en") {
            bad("wechat.lang", "must be zh_CN, zh_TW or en".into());
        }

        // [session]
        match &secrets.master_secret {
            None => bad(
                "session.master_secret",
                "is required (or master_secret_file, or WXAUTH_MASTER_SECRET); generate one with `openssl rand -base64 48`".into(),
            ),
            Some(s) if s.expose_secret().len() < 32 => {
                bad("session.master_secret", "must be at least 32 bytes".into())
            }
            Some(_) => {}
        }
        if self.session.store == StoreKind::Redis {
            if self.session.redis_url.is_none() {
                bad(
                    "session.redis_url",
                    "is required when store = \"redis\"".into(),
                );
            }
            if !cfg!(feature = "redis") {
                bad(
                    "session.store",
                    "\"redis\" needs a build with the `redis` feature".into(),
                );
            }
        }
        if self.session.ttl_secs == 0 || self.session.idle_timeout_secs == 0 {
            bad("session.ttl_secs", "session lifetimes must be > 0".into());
        }
        if self.session.cookie_name.is_empty()
            || !self
                .session
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bad(
                "session.cookie_name",
                "must be non-empty [A-Za-z0-9_-]".into(),
            );
        }

        // [jwt]
        let j = &self.jwt;
        match j.algorithm.as_str() {
            "EdDSA" | "ES256" | "RS256" => {}
            "HS256" => match &secrets.hs256_secret {
                None => bad(
                    "jwt.hs256_secret",
                    "is required for HS256 (or hs256_secret_file, or WXAUTH_JWT_HS256_SECRET)"
                        .into(),
                ),
                Some(s) if s.expose_secret().len() < 32 => {
                    bad("jwt.hs256_secret", "must be at least 32 bytes".into())
                }
                Some(_) => {}
            },
            other => bad(
                "jwt.algorithm",
                format!("{other:?} is not one of EdDSA, ES256, RS256, HS256"),
            ),
        }
        if matches!(j.algorithm.as_str(), "ES256" | "RS256") && j.private_key_file.is_none() {
            bad(
                "jwt.private_key_file",
                format!("is required for {}", j.algorithm),
            );
        }
        if j.ttl_secs < 30 || j.ttl_secs > 24 * 3600 {
            bad("jwt.ttl_secs", "must be between 30 and 86400".into());
        }
        if http::HeaderName::from_bytes(j.header.as_bytes()).is_err() {
            bad("jwt.header", "is not a valid header name".into());
        }
        if j.audience.is_empty() {
            bad("jwt.audience", "must not be empty".into());
        }

        // [dev]
        if self.dev.enabled() {
            if !self.server.listen.ip().is_loopback() {
                bad(
                    "server.listen",
                    "development mode ([dev]) only listens on loopback addresses".into(),
                );
            }
            for (key, addr) in [
                ("dev.sim_listen", self.dev.sim_listen),
                ("dev.demo_upstream_listen", self.dev.demo_upstream_listen),
            ] {
                if let Some(a) = addr {
                    if !a.ip().is_loopback() {
                        bad(key, "must be a loopback address".into());
                    }
                }
            }
            if self.dev.simulate_wechat && self.wechat.mode == WeChatMode::Component {
                // The simulator speaks both modes; nothing else to check.
            }
        }
    }
}

/// Parses one skip rule `"METHOD /path"` (METHOD may be `*`); returns (method, path).
pub fn parse_skip_rule(rule: &str) -> Result<(Option<http::Method>, String), String> {
    let mut parts = rule.split_whitespace();
    let (method, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), None) => (m, p),
        (Some(p), None, None) if p.starts_with('/') => ("*", p),
        _ => {
            return Err(format!(
                "{rule:?} must look like \"GET /path\" or \"* /path/*\""
            ));
        }
    };
    if !path.starts_with('/') {
        return Err(format!("path in {rule:?} must start with '/'"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!(
            "{rule:?}: skip rules match paths only, never queries"
        ));
    }
    let method = if method == "*" {
        None
    } else {
        Some(
            http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{method:?} is not an HTTP method"))?,
        )
    };
    Ok((method, path.to_owned()))
}

fn looks_like_appid(s: &str) -> bool {
    s.len() == 18 && s.starts_with("wx") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_aes_key(k: &SecretString) -> bool {
    let k = k.expose_secret();
    k.len() == 43
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn resolve_one(
    key: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
    base: &Path,
    env: &HashMap<String, String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SecretString> {
    let env_var = SECRET_ENV_VARS
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(v, _)| *v);
    let from_env = env_var
        .and_then(|v| env.get(v))
        .filter(|v| !v.is_empty())
        .map(|v| SecretString::new(v.trim()));
    let sources = usize::from(inline.is_some()) + usize::from(file.is_some());
    if sources > 1 {
        problems.push(ConfigProblem {
            key: key.to_owned(),
            message: format!("set either {key} or {key}_file, not both"),
        });
    }
    // The environment wins over the file so a deployment can override a checked-in value.
    if from_env.is_some() {
        return from_env;
    }
    if let Some(path) = file {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            base.join(path)
        };
        return match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Some(SecretString::new(s.trim())),
            Ok(_) => {
                problems.push(ConfigProblem {
                    key: format!("{key}_file"),
                    message: format!("{} is empty", path.display()),
                });
                None
            }
            Err(e) => {
                problems.push(ConfigProblem {
                    key: format!("{key}_file"),
                    message: format!("cannot read {}: {e}", path.display()),
                });
                None
            }
        };
    }
    inline.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AES: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn good() -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://auth.example.com"
upstream = "http://127.0.0.1:3000"

[wechat]
mode = "component"
appid = "wxa1b2c3d4e5f60708"
component_appid = "wx0123456789abcdef"
component_secret = "component-secret-value-1234"
message_token = "component_token_demo"
encoding_aes_key = "{AES}"

[session]
master_secret = "0123456789abcdef0123456789abcdef-master"
"#
        )
    }

    fn env() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn good_config_loads() {
        let (cfg, secrets) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
        assert_eq!(cfg.auth.prefix, "/_wxauth");
        assert_eq!(cfg.jwt.header, "X-WeChat-Jwt");
        assert_eq!(cfg.wechat.login_deadline_ms, 10_000);
        assert_eq!(
            secrets.component_secret.unwrap().expose_secret(),
            "component-secret-value-1234"
        );
    }

    #[test]
    fn upstream_section_is_optional_and_strict() {
        let (cfg, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
        assert!(!cfg.upstream.allow_underscores_in_headers);
        let text = format!(
            "{}
[upstream]
allow_underscores_in_headers = true
",
            good()
        );
        let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
        assert!(cfg.upstream.allow_underscores_in_headers);
        let text = format!(
            "{}
[upstream]
allow_underscore = true
",
            good()
        );
        assert!(Config::from_toml_str(&text, Path::new("."), &env()).is_err());
    }

    #[test]
    fn login_deadline_is_bounded() {
        for (value, ok) in [
            ("2500", true),
            ("0", false),
            ("99", false),
            ("120001", false),
        ] {
            let text = good().replace(
                "[session]",
                &format!("login_deadline_ms = {value}\n\n[session]"),
            );
            let result = Config::from_toml_str(&text, Path::new("."), &env());
            match result {
                Ok((cfg, _)) => {
                    assert!(ok, "{value} accepted");
                    assert_eq!(cfg.wechat.login_deadline_ms.to_string(), value);
                }
                Err(e) => {
                    assert!(!ok, "{value} refused: {e}");
                    assert!(e.to_string().contains("wechat.login_deadline_ms"), "{e}");
                }
            }
        }
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = good().replace("[session]", "[session]\ncookie_nmae = \"x\"");
        let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("cookie_nmae"), "{shown}");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = good()
            .replace("wx0123456789abcdef", "not-an-appid")
            .replace(AES, "short")
            .replace("0123456789abcdef0123456789abcdef-master", "tiny")
            .replace("https://auth.example.com", "http://auth.example.com");
        let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err:?}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "wechat.component_appid",
            "wechat.encoding_aes_key",
            "session.master_secret",
            "server.public_url",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }

    #[test]
    fn worker_threads_is_optional_and_bounded() {
        let (config, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
        assert_eq!(config.server.worker_threads, None);
        let with =
            |n: &str| good().replace("[server]\n", &format!("[server]\nworker_threads = {n}\n"));
        let (config, _) = Config::from_toml_str(&with("1"), Path::new("."), &env()).unwrap();
        assert_eq!(config.server.worker_threads, Some(1));
        for refused in ["0", "100000"] {
            let err = Config::from_toml_str(&with(refused), Path::new("."), &env()).unwrap_err();
            let ConfigError::Invalid(problems) = err else {
                panic!("expected Invalid, got {err:?}")
            };
            assert!(
                problems.iter().any(|p| p.key == "server.worker_threads"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn connection_timeouts_have_defaults_and_refuse_zero() {
        let (config, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
        assert_eq!(config.server.header_read_timeout_ms, 10_000);
        assert_eq!(config.server.idle_timeout_ms, 60_000);
        assert_eq!(config.server.body_timeout_ms, 30_000);
        assert_eq!(config.server.http2_keepalive_interval_ms, 20_000);
        assert_eq!(config.server.http2_keepalive_timeout_ms, 20_000);
        for key in [
            "header_read_timeout_ms",
            "idle_timeout_ms",
            "body_timeout_ms",
            "http2_keepalive_interval_ms",
            "http2_keepalive_timeout_ms",
        ] {
            let with = |n: &str| good().replace("[server]\n", &format!("[server]\n{key} = {n}\n"));
            let (config, _) = Config::from_toml_str(&with("1500"), Path::new("."), &env()).unwrap();
            assert!(format!("{:?}", config.server).contains(&format!("{key}: 1500")));
            for refused in ["0", "86400001"] {
                let err =
                    Config::from_toml_str(&with(refused), Path::new("."), &env()).unwrap_err();
                let ConfigError::Invalid(problems) = err else {
                    panic!("expected Invalid, got {err:?}")
                };
                let expected = format!("server.{key}");
                assert!(problems.iter().any(|p| p.key == expected), "{problems:?}");
            }
        }
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = std::env::temp_dir().join(format!("wxauth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.txt"), "from-file-secret-0123456789\n").unwrap();
        let text = good()
            .replace(
                "component_secret = \"component-secret-value-1234\"",
                "component_secret_file = \"secret.txt\"",
            )
            .replace(
                "master_secret = \"0123456789abcdef0123456789abcdef-master\"",
                "",
            );
        let mut env = env();
        env.insert(
            "WXAUTH_MASTER_SECRET".into(),
            "env-master-secret-0123456789abcdef".into(),
        );
        let (_, secrets) = Config::from_toml_str(&text, &dir, &env).unwrap();
        assert_eq!(
            secrets.component_secret.unwrap().expose_secret(),
            "from-file-secret-0123456789"
        );
        assert_eq!(
            secrets.master_secret.unwrap().expose_secret(),
            "env-master-secret-0123456789abcdef"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn debug_shows_no_secret() {
        let (cfg, secrets) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
        let shown = format!("{cfg:?} {secrets:?}");
        for secret in [
            "component-secret-value-1234",
            AES,
            "0123456789abcdef0123456789abcdef-master",
            "component_token_demo",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn skip_rules_parse() {
        assert_eq!(
            parse_skip_rule("GET /public/*").unwrap(),
            (Some(http::Method::GET), "/public/*".to_owned())
        );
        assert_eq!(parse_skip_rule("* /x").unwrap().0, None);
        assert!(parse_skip_rule("GET /x?y=1").is_err());
        assert!(parse_skip_rule("GET x").is_err());
    }

    #[test]
    fn dev_mode_requires_loopback() {
        let text =
            good().replace("127.0.0.1:8080", "0.0.0.0:8080") + "\n[dev]\nsimulate_wechat = true\n";
        let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
    }
}
