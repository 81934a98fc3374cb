//! `SIGHUP`: the sidecar re-reads its configuration file and swaps, atomically, the parts that
//! change often — the skip rules, the API prefixes, `skip_preflight` and the tenants
//! ([`WeChatAuthLayer::reload`]). The listener and the connections are never touched.
//!
//! The new file goes through exactly what start-up ran (the [`ConfigSource`] `main` gives:
//! `Config::load`, the command-line overrides, `validate`, [`check`](super::check)), then the
//! layer's own validation: a file that fails any of them is refused with the reason logged at
//! `error`, and the settings in force stay. Every other key is read at start-up only: when one
//! of them changed in the file (or in a `*_file` secret), a `warn` line names it and the sidecar
//! keeps running with its start-up value. The keys that reload are [`RELOADABLE`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, ResolvedSecrets};
use crate::layer::{ReloadableSettings, WeChatAuthLayer};

use super::AppError;

/// The keys a reload applies (each with everything inside it); every other key needs a
/// restart. Another reloadable part is one more entry here and one more field of
/// [`ReloadableSettings`].
pub const RELOADABLE: &[&str] = &[
    "auth.skip",
    "auth.api_prefixes",
    "auth.skip_preflight",
    "tenants.authorizer",
    "tenants.host_pattern",
    "tenants.path_prefix",
    "tenants.allow_query_appid",
    "tenants.log_label",
    "tenants.redirect_domains",
    "access",
];

/// Loads and validates the whole configuration as start-up did.
pub type LoadConfig = dyn Fn() -> Result<(Config, ResolvedSecrets), String> + Send + Sync;

/// Where a reload reads the configuration from (built by `main`).
pub struct ConfigSource {
    /// The configuration file: its keys are compared with the ones the sidecar started with.
    pub path: PathBuf,
    /// Everything start-up ran on it: `Config::load` with the same environment, the
    /// command-line overrides, `validate` and [`check`](super::check).
    pub load: Box<LoadConfig>,
    /// Keys the command line overrides (`server.listen`…): their file values never apply.
    pub overridden: Vec<&'static str>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .field("overridden", &self.overridden)
            .finish_non_exhaustive()
    }
}

/// What the sidecar started with: the restart-only keys are compared against it.
struct Running {
    keys: BTreeMap<String, toml::Value>,
    secrets: ResolvedSecrets,
}

/// On Unix with a `source`: a task that reloads on every `SIGHUP` (the handler is installed
/// before this returns, so a `SIGHUP` never kills the sidecar from then on).
///
/// # Errors
/// [`AppError::Io`] when the signal handler cannot be installed.
pub(super) fn on_hangup(
    source: Option<ConfigSource>,
    layer: &WeChatAuthLayer,
    secrets: &ResolvedSecrets,
) -> Result<Option<tokio::task::JoinHandle<()>>, AppError> {
    let Some(source) = source else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).map_err(|source| AppError::Io {
            context: "cannot handle SIGHUP".into(),
            source,
        })?;
        let running = Running {
            keys: file_keys(&source.path).unwrap_or_default(),
            secrets: secrets.clone(),
        };
        let layer = layer.clone();
        let source = std::sync::Arc::new(source);
        Ok(Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(file = %source.path.display(), "SIGHUP: reloading the configuration");
                let reading = std::sync::Arc::clone(&source);
                let read = tokio::task::spawn_blocking(move || {
                    (reading.load)().map(|(config, secrets)| {
                        (
                            config,
                            secrets,
                            file_keys(&reading.path).unwrap_or_default(),
                        )
                    })
                })
                .await;
                match read {
                    Ok(Ok((config, secrets, keys))) => {
                        let new = Running { keys, secrets };
                        apply(&layer, &config, &running, &new, &source.overridden);
                    }
                    Ok(Err(reason)) => refused(&reason),
                    Err(e) => refused(&e.to_string()),
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = (source, layer, secrets);
        Ok(None)
    }
}

fn refused(reason: &str) {
    tracing::error!(%reason, "configuration reload refused; the settings in force stay");
}

/// Applies the reloadable part of `config` to `layer`, keeping its fixed parts, and names the
/// restart-only keys that changed.
fn apply(
    layer: &WeChatAuthLayer,
    config: &Config,
    running: &Running,
    new: &Running,
    overridden: &[&str],
) {
    let settings = match config.layer_settings() {
        Ok(settings) => settings,
        Err(problem) => return refused(&problem.to_string()),
    };
    // Read (and checked) before anything is swapped: a bad list file refuses the whole reload.
    let access = match config.access.lists() {
        Ok(lists) => lists,
        Err(problem) => return refused(&problem.to_string()),
    };
    let current = layer.settings();
    let mut dispatch = settings.dispatch;
    // Restart-only: the reserved prefix, [tenants] on or off, tenants.on_unauthorized.
    dispatch.prefix = current.dispatch.prefix.clone();
    let tenants = match (current.tenants, settings.tenants) {
        (Some(old), Some(mut routing)) => {
            routing.on_unauthorized = old.on_unauthorized;
            Some(routing)
        }
        (old, _) => old,
    };
    if let Err(e) = layer.reload(ReloadableSettings { dispatch, tenants }) {
        return refused(&e.to_string());
    }
    layer.set_access_lists(access);
    let restart = restart_only_changes(running, new, overridden);
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "configuration reloaded, but these keys changed and need a restart; running with their start-up values"
        );
    }
    tracing::info!("configuration reloaded");
}

/// The keys of the file whose values differ from the ones the sidecar started with and that a
/// reload does not apply: keys of the file (arrays compared whole), and secrets (a `*_file`
/// may change while the file does not). `[tenants]` added or removed is the one key `tenants`.
fn restart_only_changes(running: &Running, new: &Running, overridden: &[&str]) -> Vec<String> {
    let had_tenants = running.keys.keys().any(|k| within(k, "tenants"));
    let has_tenants = new.keys.keys().any(|k| within(k, "tenants"));
    let mut keys: Vec<String> = Vec::new();
    if had_tenants != has_tenants {
        keys.push("tenants".into());
    }
    let all: std::collections::BTreeSet<&String> =
        running.keys.keys().chain(new.keys.keys()).collect();
    for key in all {
        let reloads = RELOADABLE.iter().any(|r| within(key, r));
        let ignored = overridden.iter().any(|o| within(key, o))
            || (had_tenants != has_tenants && within(key, "tenants"));
        if !reloads && !ignored && running.keys.get(key) != new.keys.get(key) {
            keys.push(key.clone());
        }
    }
    let (a, b) = (&running.secrets, &new.secrets);
    for (key, old, new) in [
        (
            "wechat.component_secret",
            &a.component_secret,
            &b.component_secret,
        ),
        (
            "wechat.official_account_secret",
            &a.official_account_secret,
            &b.official_account_secret,
        ),
        ("wechat.message_token", &a.message_token, &b.message_token),
        (
            "wechat.encoding_aes_key",
            &a.encoding_aes_key,
            &b.encoding_aes_key,
        ),
        ("session.master_secret", &a.master_secret, &b.master_secret),
        ("jwt.hs256_secret", &a.hs256_secret, &b.hs256_secret),
    ] {
        if old != new && !keys.iter().any(|k| k.starts_with(key)) {
            keys.push(key.into());
        }
    }
    keys
}

/// Whether `key` is `outer` or a key inside it.
fn within(key: &str, outer: &str) -> bool {
    key.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Every value of the TOML file by its dotted key (tables opened, arrays kept whole); `None`
/// when the file cannot be read or parsed (the load reports why).
fn file_keys(path: &Path) -> Option<BTreeMap<String, toml::Value>> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    let mut keys = BTreeMap::new();
    flatten("", table, &mut keys);
    Some(keys)
}

fn flatten(prefix: &str, table: toml::Table, into: &mut BTreeMap<String, toml::Value>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, into),
            other => {
                into.insert(key, other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> BTreeMap<String, toml::Value> {
        let mut keys = BTreeMap::new();
        flatten("", text.parse().unwrap(), &mut keys);
        keys
    }

    fn running(text: &str) -> Running {
        Running {
            keys: keys(text),
            secrets: ResolvedSecrets::default(),
        }
    }

    #[test]
    fn only_restart_only_keys_that_changed_are_named() {
        let old = running(
            "[server]\nlisten = \"127.0.0.1:1\"\npublic_url = \"http://a\"\n[auth]\nskip = [\"GET /a\"]\nprefix = \"/_wxauth\"\n[tenants]\nmode = \"static\"\n[[tenants.authorizer]]\nappid = \"wx1\"\n",
        );
        let new = running(
            "[server]\nlisten = \"127.0.0.1:2\"\npublic_url = \"http://b\"\n[auth]\nskip = [\"GET /b\"]\nprefix = \"/auth\"\n[tenants]\nmode = \"dynamic\"\n[[tenants.authorizer]]\nappid = \"wx2\"\n",
        );
        assert_eq!(
            restart_only_changes(&old, &new, &["server.public_url"]),
            ["auth.prefix", "server.listen", "tenants.mode"]
        );
        assert!(restart_only_changes(&old, &old, &[]).is_empty());
    }

    #[test]
    fn tenants_on_or_off_and_secrets_are_restart_only() {
        let old = running("[tenants]\nmode = \"static\"\n");
        let mut new = running("[wechat]\nappid = \"wx1\"\n");
        new.secrets.master_secret = Some(crate::secret::SecretString::new("another one"));
        assert_eq!(
            restart_only_changes(&old, &new, &[]),
            ["tenants", "wechat.appid", "session.master_secret"]
        );
    }
}
