//! The sidecar's log output (`[log]`): `tracing-subscriber`'s formatter, as human-readable text
//! or as one JSON object per line.
//!
//! A JSON line carries `timestamp` (RFC 3339, UTC), `level`, `target`, `message` and the
//! event's own fields at the top level, then `span` (the innermost span's name and fields) and
//! `spans` (every open span, outermost first). Inside a request both name the `request` span
//! with its `request_id`, `method` and `path` ([`crate::request_id`]):
//!
//! ```json
//! {"timestamp":"2026-01-02T03:04:05.678901Z","level":"INFO","message":"login completed","event":"login","appid":"wx…","session":"3f2a…","user":"9c41…","target":"audit","span":{"request_id":"5b0c…","method":"GET","path":"/_wxauth/callback","name":"request"},"spans":[…]}
//! ```
//!
//! The level filter is `RUST_LOG` when it is set (an `EnvFilter` directive such as
//! `info,wechat_oauth_proxy=debug`), else [`LogSettings::level`] (default `info`).

use std::io::{self, IsTerminal};

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tracing-subscriber`'s human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (see the module docs for its fields).
    Json,
}

/// The log settings (`[log]` in the sidecar's configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// An `EnvFilter` directive: a level (`info`, `debug`…) or per-target levels
    /// (`warn,audit=info`). `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: DEFAULT_LEVEL.to_owned(),
        }
    }
}

/// The level when neither `[log] level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// A `level` that is not an `EnvFilter` directive.
#[derive(Debug, thiserror::Error)]
#[error("not a log level or filter directive: {0}")]
pub struct BadLevel(String);

/// Checks that `level` is an `EnvFilter` directive (what `[log] level` accepts) whose bare
/// words are levels: `inof` would otherwise be read as "everything of target `inof`" and
/// silence every other line.
///
/// # Errors
/// [`BadLevel`] with the reason.
pub fn check_level(level: &str) -> Result<(), BadLevel> {
    for part in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bare = !part.contains(['=', '[']);
        if bare
            && part
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
        {
            return Err(BadLevel(format!(
                "{part:?} is not one of off, error, warn, info, debug, trace"
            )));
        }
    }
    EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| BadLevel(e.to_string()))
}

impl LogSettings {
    /// The filter: `rust_log` (the `RUST_LOG` variable) when it is set, non-empty and valid,
    /// else `level`, else `info`.
    pub fn filter(&self, rust_log: Option<&str>) -> EnvFilter {
        rust_log
            .filter(|value| !value.trim().is_empty())
            .and_then(|value| EnvFilter::builder().parse(value).ok())
            .or_else(|| EnvFilter::builder().parse(&self.level).ok())
            .unwrap_or_else(|| EnvFilter::new(DEFAULT_LEVEL))
    }

    /// A subscriber writing these lines to `writer`, filtered by `filter` (see
    /// [`filter`](Self::filter)). Tests pass a buffer; [`init`] passes standard output.
    ///
    /// `ansi`: colours and italics in text lines, for a terminal only ([`init`] asks whether
    /// standard output is one). Off, a text line is plain (what journald, Docker and log
    /// shippers expect), and every request is cheaper: the formatter writes the fields of the
    /// request's span when the span opens, and the escape sequences cost about as much again as
    /// the fields themselves (callgrind, BENCHMARKS.md).
    pub fn subscriber<W>(
        &self,
        filter: EnvFilter,
        writer: W,
        ansi: bool,
    ) -> Box<dyn Subscriber + Send + Sync>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(writer);
        match self.format {
            LogFormat::Text => Box::new(builder.finish()),
            LogFormat::Json => Box::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .finish(),
            ),
        }
    }
}

/// Installs the process-wide subscriber: these settings, `RUST_LOG` from the environment,
/// standard output.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(settings: &LogSettings) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = settings.filter(rust_log.as_deref());
    let ansi = io::stdout().is_terminal();
    tracing::subscriber::set_global_default(settings.subscriber(filter, io::stdout, ansi))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_fields_and_the_request_span() {
        let buffer = Buffer::default();
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "debug".to_owned(),
        };
        let subscriber = settings.subscriber(settings.filter(None), buffer.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("request", request_id = "abc-1");
            let _entered = span.enter();
            tracing::info!(target: "audit", event = "login", "login completed");
            tracing::trace!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "audit");
        assert_eq!(line["message"], "login completed");
        assert_eq!(line["event"], "login");
        assert_eq!(line["span"]["request_id"], "abc-1");
        assert!(line["timestamp"].is_string());
    }

    /// Text lines for a log file or a pipe: no escape sequences, the request span's fields as
    /// plain `name=value`; with `ansi` (a terminal) they are coloured.
    #[test]
    fn text_lines_are_plain_unless_ansi_is_asked_for() {
        let line_with = |ansi: bool| {
            let buffer = Buffer::default();
            let settings = LogSettings::default();
            let subscriber = settings.subscriber(settings.filter(None), buffer.clone(), ansi);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::error_span!("request", request_id = %"abc-1", path = %"/x");
                let _entered = span.enter();
                tracing::warn!("upstream slow");
            });
            String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
        };
        let plain = line_with(false);
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(
            plain.contains("request{request_id=abc-1 path=/x}"),
            "{plain:?}"
        );
        assert!(plain.contains("upstream slow"), "{plain:?}");
        let coloured = line_with(true);
        assert!(coloured.contains('\u{1b}'), "{coloured:?}");
    }

    #[test]
    fn rust_log_overrides_the_level_and_bad_levels_are_refused() {
        let settings = LogSettings {
            format: LogFormat::Text,
            level: "warn".to_owned(),
        };
        assert_eq!(settings.filter(None).to_string(), "warn");
        assert_eq!(settings.filter(Some("")).to_string(), "warn");
        assert_eq!(settings.filter(Some("debug")).to_string(), "debug");
        assert!(check_level("info,wechat_oauth_proxy=debug").is_ok());
        assert!(check_level("loud").is_err());
        assert!(check_level("warn,audit=info").is_ok());
    }
}
