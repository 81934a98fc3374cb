//! `[session]`: where sessions live, the master secret and the session cookie
//! ([`crate::session`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigProblem, Problems, ResolvedSecrets};
use crate::secret::SecretString;
use crate::session::{CookieSettings, SessionSettings};

/// Where sessions live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process memory in front of `<server.state_dir>/sessions.redb`: one instance whose
    /// sessions survive restarts and crashes (the default).
    #[default]
    Durable,
    /// In-process memory only (one instance; a restart logs everyone out).
    Memory,
    /// Redis (several instances; needs the `redis` feature).
    Redis,
}

/// `[session]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// `durable` (default), `memory` or `redis`.
    #[serde(default)]
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

fn default_cookie_name() -> String {
    CookieSettings::default().name
}
fn default_session_ttl() -> u64 {
    SessionSettings::default().ttl.as_secs()
}
fn default_idle() -> u64 {
    SessionSettings::default().idle_timeout.as_secs()
}
fn default_capacity() -> u64 {
    SessionSettings::default().capacity
}

impl SessionConfig {
    pub(super) fn check(&self, secrets: &ResolvedSecrets, problems: &mut Problems) {
        let mut bad = |key: &str, message: String| problems.bad(key, message);
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
        if self.store == StoreKind::Redis {
            if self.redis_url.is_none() {
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
        if self.ttl_secs == 0 || self.idle_timeout_secs == 0 {
            bad("session.ttl_secs", "session lifetimes must be > 0".into());
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bad(
                "session.cookie_name",
                "must be non-empty [A-Za-z0-9_-]".into(),
            );
        }
    }

    /// `session.redis_url`, which both Redis stores (sessions and platform state) connect to.
    ///
    /// # Errors
    /// It is not set (never after [`super::Config::validate`] with `store = "redis"`).
    pub fn redis_url(&self) -> Result<&SecretString, ConfigProblem> {
        self.redis_url
            .as_ref()
            .ok_or_else(|| ConfigProblem::new("session.redis_url", "is missing"))
    }

    /// `[session]` → the session store's lifetimes and capacity.
    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            ttl: Duration::from_secs(self.ttl_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            capacity: self.capacity,
            ..SessionSettings::default()
        }
    }

    /// `[session]` → the cookie codec's settings.
    pub fn cookie_settings(&self) -> CookieSettings {
        CookieSettings {
            name: self.cookie_name.clone(),
            secure: !self.insecure_allow_http,
            ..CookieSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::StoreKind;
    use crate::config::Config;

    fn shipped_session_with(store_line: &str) -> Result<StoreKind, String> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("shipped config.toml")
            .replace("store = \"durable\"\n", store_line);
        Config::from_toml_str(&text, Path::new("."), &HashMap::new())
            .map(|(config, _)| config.session.store)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sessions_are_durable_unless_memory_or_redis_is_chosen() {
        assert_eq!(
            shipped_session_with("store = \"durable\"\n"),
            Ok(StoreKind::Durable)
        );
        assert_eq!(shipped_session_with(""), Ok(StoreKind::Durable));
        assert_eq!(
            shipped_session_with("store = \"memory\"\n"),
            Ok(StoreKind::Memory)
        );
        let refused = shipped_session_with("store = \"disk\"\n").unwrap_err();
        assert!(refused.contains("session.store"), "{refused}");
    }
}
