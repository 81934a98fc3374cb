//! The sidecar's configuration file read by a Rust service that embeds the layer, so that one
//! configuration format serves both faces: [`layer_from_file`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{AppError, QrParts, auth_layer, codecs, setup, stores, website, wechat};
use crate::config::{Config, ResolvedSecrets};
use crate::layer::WeChatAuthLayer;

/// The sections of the sidecar's file that concern its own process, not the layer: taken out
/// before the file is read, so whatever they hold is neither used nor refused.
pub const IGNORED_SECTIONS: &[&str] = &["server", "upstream", "dev", "log", "metrics"];

/// Builds the layer the sidecar would build from its configuration file `path`: `[wechat]`,
/// `[tenants]`, `[session]` (store, master secret, cookie), `[jwt]`, `[auth]`,
/// `[forward_auth]`, `[access]` and `[qr]` are read, parsed, checked and defaulted by the sidecar's own
/// code (every problem reported with its key path); secrets come from the file, `*_file` keys
/// (relative to the file's directory) or the `WXAUTH_*` environment variables, as for the
/// sidecar. The sections of [`IGNORED_SECTIONS`] are ignored: the service chooses its
/// `public_url` and `state_dir` (the platform state, and `sessions.redb` with the default
/// `session.store = "durable"`) here, and serves itself.
///
/// In component mode, start the WeChat side with
/// [`WeChatAuthLayer::start_wechat_background`] (and, with `tenants.on_unauthorized =
/// "end_sessions"`, [`WeChatAuthLayer::start_background`]).
///
/// # Errors
/// [`AppError::Io`] if the file cannot be read; [`AppError::Setup`] naming every problem of
/// the file, or the part that could not be built (the state directory, a Redis connection).
pub async fn layer_from_file(
    path: &Path,
    public_url: url::Url,
    state_dir: impl Into<PathBuf>,
) -> Result<WeChatAuthLayer, AppError> {
    let text = std::fs::read_to_string(path).map_err(|source| AppError::Io {
        context: format!("cannot read {}", path.display()),
        source,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let env: HashMap<String, String> = std::env::vars().collect();
    let (config, secrets) = embedded_config(&text, base, &env, &public_url, state_dir.into())?;
    let platform = stores::platform_store(&config).await?;
    let wechat = wechat(&config, &secrets, None, platform)?;
    let sessions = stores::session_store(&config).await?;
    let (cookies, jwt) = codecs(&config, &secrets)?;
    let qr = QrParts {
        tickets: stores::ticket_store(&config).await?,
        dev_phone: None,
        website: website(&config, &secrets, None)?,
    };
    auth_layer(&config, wechat, sessions, cookies, jwt, qr)
}

/// The file's configuration with the ignored sections taken out and `[server]` standing for
/// the service's own `public_url` and `state_dir`.
fn embedded_config(
    text: &str,
    base: &Path,
    env: &HashMap<String, String>,
    public_url: &url::Url,
    state_dir: PathBuf,
) -> Result<(Config, ResolvedSecrets), AppError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| setup("config")(e.to_string()))?;
    for section in IGNORED_SECTIONS {
        table.remove(*section);
    }
    let mut server = toml::Table::new();
    // Never bound: the service serves itself.
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert("public_url".into(), public_url.as_str().into());
    // Never called: the service behind the layer is the upstream.
    server.insert("upstream".into(), "http://127.0.0.1:9/".into());
    table.insert("server".into(), toml::Value::Table(server));
    let (mut config, secrets) = Config::from_toml_str(&table.to_string(), base, env)
        .map_err(|e| setup("config")(e.to_string()))?;
    config.server.state_dir = state_dir;
    Ok((config, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerSettings;
    use crate::session::{CookieSettings, SessionSettings};

    const MASTER: &str = "embedded-layer tests, a master secret of 32+ bytes";

    /// The fewest keys the sidecar accepts, plus `[server]` and `[upstream]` values it would
    /// refuse: ignored here.
    fn minimal(extra: &str) -> String {
        format!(
            r#"
[server]
listen = "not an address"
[upstream]
no_such_key = 1
[wechat]
mode = "official_account"
appid = "wx0123456789abcdef"
official_account_secret = "oa-secret"
[session]
master_secret = "{MASTER}"
{extra}
"#
        )
    }

    fn embedded(text: &str) -> Result<(Config, ResolvedSecrets), AppError> {
        embedded_config(
            text,
            Path::new("."),
            &HashMap::new(),
            &"https://app.example.com".parse().expect("url"),
            PathBuf::from("/nonexistent/state"),
        )
    }

    #[test]
    fn server_and_upstream_are_ignored_and_the_rest_is_read() {
        let (config, _) = embedded(&minimal(
            "[auth]\nskip = [\"GET /public/*\"]\napi_prefixes = [\"/api\"]",
        ))
        .expect("read");
        let settings = config.layer_settings().expect("layer settings");
        assert_eq!(settings.public_url.as_str(), "https://app.example.com/");
        assert_eq!(settings.dispatch.skip.len(), 1);
        assert_eq!(settings.dispatch.api_prefixes, ["/api"]);
        assert_eq!(config.server.state_dir, PathBuf::from("/nonexistent/state"));
    }

    #[test]
    fn problems_are_reported_with_their_key_paths() {
        let err = embedded(&minimal("").replace(MASTER, "short")).expect_err("refused");
        assert!(err.to_string().contains("session.master_secret"), "{err}");
        let err = embedded(&minimal("[jwt]\nno_such_key = 1")).expect_err("refused");
        assert!(err.to_string().contains("jwt.no_such_key"), "{err}");
    }

    /// The short builder's defaults are the sidecar's: a file with only the required keys
    /// gives the same layer, cookie and session settings as `WeChatAuthLayer::builder()` with
    /// nothing but credentials, public URL and master secret.
    #[test]
    fn the_builder_defaults_are_the_sidecar_defaults() {
        let (config, secrets) = embedded(&minimal("")).expect("read");
        let from_file = config.layer_settings().expect("layer settings");
        let dir = std::env::temp_dir().join(format!("wop-embed-{}", std::process::id()));
        let layer = WeChatAuthLayer::builder()
            .official_account(
                "wx0123456789abcdef".into(),
                crate::wechat::AppSecret::new("oa-secret"),
            )
            .public_url("https://app.example.com".parse().expect("url"))
            .master_secret(crate::secret::SecretString::new(MASTER))
            .state_dir(&dir)
            .build()
            .expect("layer");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(format!("{:?}", layer.settings()), format!("{from_file:?}"));
        assert_eq!(
            format!("{:?}", config.session.cookie_settings()),
            format!("{:?}", CookieSettings::default())
        );
        assert_eq!(
            config.session.session_settings(),
            SessionSettings::default()
        );
        assert_eq!(
            format!("{:?}", config.jwt.settings(&secrets).expect("jwt settings")),
            format!("{:?}", crate::jwt::JwtSettings::default())
        );
        assert_eq!(
            format!("{:?}", LayerSettings::default().dispatch),
            format!("{:?}", from_file.dispatch)
        );
    }

    /// The sidecar's shipped file (component mode, tenants, durable sessions) builds the layer
    /// the sidecar builds, its stores in the given state directory.
    #[tokio::test]
    async fn the_shipped_file_builds_the_sidecars_layer() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));
        let dir = std::env::temp_dir().join(format!(
            "wop-embed-file-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let public_url: url::Url = "http://127.0.0.1:8080".parse().expect("url");
        let built = layer_from_file(path, public_url, &dir).await;
        let sessions_file = dir.join("sessions.redb").exists();
        let _ = std::fs::remove_dir_all(&dir);
        let layer = built.expect("layer");
        assert!(
            sessions_file,
            "the durable store opened in the state directory"
        );
        let (config, _) = Config::load(path, &HashMap::new()).expect("the sidecar's reading");
        let mut sidecar = config.layer_settings().expect("layer settings");
        // As the builder keeps them (`/api/` is `/api`).
        for prefix in &mut sidecar.dispatch.api_prefixes {
            *prefix = prefix.trim_end_matches('/').to_owned();
        }
        assert_eq!(
            format!("{:?}", layer.settings()),
            format!("{sidecar:?}"),
            "the same settings as the sidecar's"
        );
    }
}
