//! The configuration file (`config.toml`) of the sidecar.
//!
//! One file per TOML section ([`server`](ServerConfig), [`upstream`](UpstreamConfig),
//! [`auth`](AuthConfig), [`wechat`](WeChatConfig), [`tenants`](TenantsConfig),
//! [`session`](SessionConfig), [`jwt`](JwtConfig), [`dev`](DevConfig),
//! [`forward_auth`](ForwardAuthConfig), [`access`](AccessConfig), [`qr`](QrConfig)). Each section deserializes straight into the library's
//! own types where they exist ([`Scope`](crate::wechat::Scope),
//! [`JwtAlgorithm`](crate::jwt::JwtAlgorithm), [`IpNet`](ipnet::IpNet), the appid types,
//! [`SkipRule`](crate::layer::SkipRule)), takes its defaults from the settings structs of the
//! modules it configures, keeps its own cross-field checks and turns itself into those settings
//! structs. Every section is `deny_unknown_fields`, so a typo is an error rather than a silently
//! ignored key.
//!
//! Secrets may come from the file, from a `*_file` key naming a file that holds the secret, or
//! from an environment variable (listed in [`SECRET_ENV_VARS`]); the environment is passed in as
//! a map so tests never mutate the process environment.
//!
//! Every problem is reported at once, each with its key path (`auth.skip[0]`), so that
//! `wechat-oauth-proxy --check` can print them all: a value serde refuses is recorded and taken
//! out, and deserialization goes on to find the next one; then the cross-field rules run.
//! Modules never import this one: this one imports their settings types.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_path_to_error::Segment;

use crate::secret::SecretString;

mod access;
mod auth;
mod dev;
mod forward_auth;
mod jwt;
mod log;
mod metrics;
mod qr;
mod server;
mod session;
mod tenants;
mod upstream;
mod wechat;

pub use self::access::{AccessConfig, AccountAccessConfig};
pub use self::auth::{AuthConfig, parse_skip_rule};
pub use self::dev::DevConfig;
pub use self::forward_auth::ForwardAuthConfig;
pub use self::jwt::JwtConfig;
pub use self::log::LogConfig;
pub use self::metrics::MetricsConfig;
pub use self::qr::QrConfig;
pub use self::server::ServerConfig;
pub use self::session::{SessionConfig, StoreKind};
pub use self::tenants::{AuthorizerConfig, MAX_REDIRECT_DOMAINS, TenantsConfig};
pub use self::upstream::{MAX_POOL_CONNECTIONS, MAX_POOL_IDLE_TIMEOUT_SECS, UpstreamConfig};
pub use self::wechat::{WeChatConfig, WeChatMode};

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
    ("WXAUTH_QR_WEBSITE_SECRET", "qr.website.secret"),
];

/// A problem found in the configuration, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `wechat.component_appid`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigProblem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
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
    /// The file is not TOML.
    #[error("{0}")]
    Parse(String),
    /// The configuration has problems (all of them are listed): unknown keys, values of the wrong
    /// type or out of range, missing secrets.
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

/// The problems found so far; each section's `check` adds to it.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }
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
    /// Many official accounts (component mode); absent: `wechat.appid` alone.
    #[serde(default)]
    pub tenants: Option<TenantsConfig>,
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
    /// The forward-auth endpoints for front proxies (off unless enabled).
    #[serde(default)]
    pub forward_auth: ForwardAuthConfig,
    /// The log's format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// The Prometheus endpoint on its own listener (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Who may log in: allow and deny lists of openids and unionids, from files.
    #[serde(default)]
    pub access: AccessConfig,
    /// The desktop QR login bridge (off unless enabled).
    #[serde(default)]
    pub qr: QrConfig,
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
    /// The website app's appsecret (`[qr.website]`).
    pub website_secret: Option<SecretString>,
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
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        let (config, refused) = deserialize_reporting_all(table);
        let Some(mut config) = config else {
            return Err(ConfigError::Invalid(refused));
        };
        config.access.resolve_paths(base);
        let mut problems = Problems(refused);
        let secrets = config.resolve_secrets(base, env, &mut problems);
        let reported = problems.0.len();
        config.check(&secrets, &mut problems);
        // A refused value was replaced by its default: do not report its key twice.
        let (earlier, later) = problems.0.split_at(reported);
        let later: Vec<ConfigProblem> = later
            .iter()
            .filter(|p| !earlier.iter().any(|e| within(&p.key, &e.key)))
            .cloned()
            .collect();
        problems.0.truncate(reported);
        problems.0.extend(later);
        if problems.0.is_empty() {
            Ok((config, secrets))
        } else {
            Err(ConfigError::Invalid(problems.0))
        }
    }

    fn resolve_secrets(
        &self,
        base: &Path,
        env: &HashMap<String, String>,
        problems: &mut Problems,
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
            website_secret: one(
                "qr.website.secret",
                &self.qr.website.secret,
                &self.qr.website.secret_file,
            ),
        }
    }

    /// Checks the rules serde cannot (ranges, secrets, rules between keys and sections) on a
    /// parsed configuration with its resolved secrets; returns every problem.
    pub fn validate(&self, secrets: &ResolvedSecrets) -> Vec<ConfigProblem> {
        let mut problems = Problems::default();
        self.check(secrets, &mut problems);
        problems.0
    }

    fn check(&self, secrets: &ResolvedSecrets, problems: &mut Problems) {
        self.server.check(self, problems);
        self.auth.check(problems);
        self.upstream.check(problems);
        self.wechat.check(secrets, self.tenants.is_some(), problems);
        if let Some(tenants) = &self.tenants {
            tenants.check(
                self.wechat.mode == WeChatMode::Component,
                self.wechat.appid.is_some(),
                problems,
            );
        }
        self.session.check(secrets, problems);
        self.jwt.check(secrets, problems);
        self.dev.check(self, problems);
        self.forward_auth.check(problems);
        self.qr.check(secrets, self.tenants.is_some(), problems);
        self.log.check(problems);
        self.metrics.check(self, problems);
        self.access
            .check(self.known_accounts().as_deref(), problems);
    }

    /// The appids this configuration serves when it names them all: the single account, or
    /// the listed ones of static tenants; `None` with dynamic tenants.
    fn known_accounts(&self) -> Option<Vec<&str>> {
        match &self.tenants {
            None => Some(self.wechat.appid.iter().map(|a| a.as_str()).collect()),
            Some(t) if t.mode == crate::wechat::tenants::TenantMode::Static => {
                Some(t.authorizers.iter().map(|a| a.appid.as_str()).collect())
            }
            Some(_) => None,
        }
    }
}

/// Most values refused in one file before giving up (a bound on the rounds below).
const MAX_REFUSED: usize = 256;

/// Deserializes `table`, reporting every value serde refuses rather than only the first: each
/// refused value is recorded with its key path and taken out, so that the next round falls back
/// to its default and finds the next problem. A refused value that cannot be taken out (a
/// required key, a whole section) ends the search.
fn deserialize_reporting_all(mut table: toml::Table) -> (Option<Config>, Vec<ConfigProblem>) {
    let mut refused = Vec::new();
    // Array elements already taken out, per array key: later indices are shifted back by this.
    let mut removed_from: HashMap<String, usize> = HashMap::new();
    let mut removed_keys: Vec<String> = Vec::new();
    for _ in 0..MAX_REFUSED {
        let err = match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(
            table.clone(),
        )) {
            Ok(config) => return (Some(config), refused),
            Err(err) => err,
        };
        let segments: Vec<&Segment> = err.path().iter().collect();
        let key = original_key(&segments, &removed_from);
        // "Missing field" where a refused required value was taken out: already reported.
        if removed_keys.iter().any(|k| k != &key && within(k, &key)) {
            return (None, refused);
        }
        refused.push(ConfigProblem::new(
            if segments.is_empty() {
                "(top level)".to_owned()
            } else {
                key.clone()
            },
            err.inner().message().to_owned(),
        ));
        if !take_out(&mut table, &segments) {
            return (None, refused);
        }
        if let Some((array, _)) = key.rsplit_once('[') {
            *removed_from.entry(array.to_owned()).or_default() += 1;
        }
        removed_keys.push(key);
    }
    (None, refused)
}

/// Whether `key` is `outer` or a key inside it (`auth.skip[0]` is inside `auth.skip`).
fn within(key: &str, outer: &str) -> bool {
    key.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The key path of `segments` as written in the file, with array indices counted before any
/// element was taken out.
fn original_key(segments: &[&Segment], removed_from: &HashMap<String, usize>) -> String {
    let mut key = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                let shift = removed_from.get(&key).copied().unwrap_or(0);
                key.push_str(&format!("[{}]", index + shift));
            }
            Segment::Map { key: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Enum { variant } => {
                key.push_str(&format!("::{variant}"));
            }
            Segment::Unknown => key.push_str(".?"),
        }
    }
    key
}

/// Removes the value at `segments` (a key of a table or an element of an array, never a whole
/// table); false when there is no such value.
fn take_out(table: &mut toml::Table, segments: &[&Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut value: Option<&mut toml::Value> = None;
    for segment in parents {
        let next = match (value.take(), segment) {
            (None, Segment::Map { key }) => table.get_mut(key),
            (Some(toml::Value::Table(t)), Segment::Map { key }) => t.get_mut(key),
            (Some(toml::Value::Array(a)), Segment::Seq { index }) => a.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => value = Some(v),
            None => return false,
        }
    }
    match (value, last) {
        (None, Segment::Map { key }) => {
            !matches!(table.get(key), Some(toml::Value::Table(_))) && table.remove(key).is_some()
        }
        (Some(toml::Value::Table(t)), Segment::Map { key }) => {
            !matches!(t.get(key), Some(toml::Value::Table(_))) && t.remove(key).is_some()
        }
        (Some(toml::Value::Array(a)), Segment::Seq { index }) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

/// A value given as a string in the file and parsed into a library type, for
/// `#[serde(deserialize_with = "parsed_list")]` on `Vec`s of such values.
trait FromConfigStr: Sized {
    /// Parses one value; the message says what is wrong with it.
    fn from_config_str(s: &str) -> Result<Self, String>;
}

/// One element of a list parsed with [`FromConfigStr`]; its error carries the element's index.
struct Parsed<T>(T);

impl<'de, T: FromConfigStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::from_config_str(&s)
            .map(Parsed)
            .map_err(serde::de::Error::custom)
    }
}

/// Deserializes a list of strings into library values, each refused value with its index.
fn parsed_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromConfigStr,
{
    let parsed = Vec::<Parsed<T>>::deserialize(d)?;
    Ok(parsed.into_iter().map(|Parsed(v)| v).collect())
}

/// Milliseconds of a default duration, as the `*_ms` keys hold them.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn resolve_one(
    key: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
    base: &Path,
    env: &HashMap<String, String>,
    problems: &mut Problems,
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
        problems.bad(key, format!("set either {key} or {key}_file, not both"));
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
                problems.bad(
                    &format!("{key}_file"),
                    format!("{} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                problems.bad(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
    }
    inline.clone()
}

#[cfg(test)]
mod tests;
