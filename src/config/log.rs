//! `[log]`: how the sidecar writes its log ([`LogSettings`]): `format = "text" | "json"` and
//! `level` (an `EnvFilter` directive; `RUST_LOG` overrides it).

use serde::Deserialize;

use super::Problems;
use crate::logging::{self, LogFormat, LogSettings};

/// `[log]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` (default) or `"json"` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// `info` (default), `debug`, …, or per-target directives (`warn,audit=info`).
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        let settings = LogSettings::default();
        Self {
            format: settings.format,
            level: settings.level,
        }
    }
}

fn default_level() -> String {
    LogSettings::default().level
}

impl LogConfig {
    /// The logging module's settings.
    pub fn settings(&self) -> LogSettings {
        LogSettings {
            format: self.format,
            level: self.level.clone(),
        }
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        if let Err(e) = logging::check_level(&self.level) {
            problems.bad("log.level", e.to_string());
        }
    }
}
