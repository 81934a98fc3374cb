//! The composition root of the sidecar: turns a loaded [`Config`] into running parts.
//!
//! `run` is config → build → serve. The translations from each configuration section to the
//! settings struct of the module it configures live with the section (`src/config/*`; modules
//! never read the configuration themselves); here they are only wired together. Everything
//! `[dev]` starts (the simulated WeChat, its ticket pusher, the demo upstream, benchmark
//! sessions — loopback only) is in `dev` (`src/app/dev.rs`), compiled with the `sim` feature.

use std::future::Future;
use std::sync::Arc;

use tower::Layer;

use crate::config::{Config, ConfigProblem, ResolvedSecrets};
use crate::jwt::JwtIssuer;
use crate::layer::WeChatAuthLayer;
use crate::proxy::Upstream;
use crate::server::{self, ServerSettings};
use crate::session::{CookieCodec, MemoryStore, SessionStore, TicketStore};
use crate::wechat::client::WeChatClient;
use crate::wechat::oauth::WeChatOAuth;
use crate::wechat::persist::{MemoryPlatformStore, PlatformStore};
use crate::wechat::website::WebsiteApp;

mod embed;
mod exporter;
mod reload;
mod stores;

pub use self::embed::{IGNORED_SECTIONS, layer_from_file};
pub use self::reload::{ConfigSource, LoadConfig, RELOADABLE};

#[cfg(feature = "sim")]
mod dev;

/// `[dev]` without the `sim` feature: nothing runs, and asking for it is refused at start-up.
#[cfg(not(feature = "sim"))]
mod dev {
    use super::{AppError, setup};
    use crate::config::{Config, ResolvedSecrets};
    use crate::session::{CookieCodec, SessionStore};

    #[derive(Debug)]
    pub(super) struct DevServices;

    /// Refuses `[dev]`: this build has no simulator (`--check` and start-up alike).
    pub(super) fn check(config: &Config) -> Result<(), AppError> {
        if config.dev.enabled() {
            return Err(setup("dev")(
                "[dev] needs a build with the `sim` feature (on by default)".into(),
            ));
        }
        Ok(())
    }

    impl DevServices {
        pub(super) async fn start(config: &Config, _: &ResolvedSecrets) -> Result<Self, AppError> {
            check(config)?;
            Ok(DevServices)
        }
        pub(super) fn sim_url(&self) -> Option<url::Url> {
            None
        }
        pub(super) fn upstream_url(&self) -> Option<url::Url> {
            None
        }
        pub(super) fn qr_dev_phone(&self) -> Option<crate::layer::QrDevPhone> {
            None
        }
        pub(super) async fn prefill(
            &self,
            _: &Config,
            _: &dyn SessionStore,
            _: &CookieCodec,
        ) -> Result<(), AppError> {
            Ok(())
        }
        pub(super) fn start_pusher(&self, _: &Config, _: std::net::SocketAddr) {}
        pub(super) async fn shutdown(self) {}
    }
}

/// Why the sidecar could not start or stopped serving. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A part could not be built from the configuration.
    #[error("{part}: {message}")]
    Setup {
        /// Which part (`wechat`, `jwt`, `session`, `proxy`, `dev`…).
        part: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn setup(part: &'static str) -> impl FnOnce(String) -> AppError {
    move |message| AppError::Setup { part, message }
}

/// A configuration problem found while building `part`.
fn refused(part: &'static str) -> impl FnOnce(ConfigProblem) -> AppError {
    move |problem| setup(part)(problem.to_string())
}

/// Runs the sidecar with an already validated configuration until `shutdown` resolves, then
/// drains in-flight requests (bounded by `server.shutdown_grace_secs`).
pub async fn run(
    config: Config,
    secrets: ResolvedSecrets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    run_reloadable(config, secrets, None, shutdown).await
}

/// [`run`], and on Unix with a `source`, a `SIGHUP` reloads the configuration from it (the
/// skip rules, API prefixes and tenants; see `src/app/reload.rs`) without touching the
/// listener or any connection.
pub async fn run_reloadable(
    config: Config,
    secrets: ResolvedSecrets,
    source: Option<ConfigSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let listener = Listener::bind(config.server.listen, config.server.workers).await?;
    let local = listener.local_addr()?;

    let dev = dev::DevServices::start(&config, &secrets).await?;
    let wechat = wechat(
        &config,
        &secrets,
        dev.sim_url(),
        stores::platform_store(&config).await?,
    )?;
    let _refresher = wechat.start_background();
    let sessions = stores::session_store(&config).await?;
    let (cookies, jwt) = codecs(&config, &secrets)?;
    dev.prefill(&config, sessions.as_ref(), &cookies).await?;
    let _metrics =
        exporter::start(&config, wechat.tenants().clone(), Arc::clone(&sessions)).await?;
    let qr = QrParts {
        tickets: stores::ticket_store(&config).await?,
        dev_phone: dev.qr_dev_phone(),
        website: website(&config, &secrets, dev.sim_url())?,
    };
    let layer = auth_layer(&config, wechat, sessions, cookies, jwt, qr)?;
    let _revocation = layer.start_background();
    let _reloader = reload::on_hangup(source, &layer, &secrets)?;

    let upstream_url = config
        .server
        .upstream
        .clone()
        .or_else(|| dev.upstream_url())
        .ok_or_else(|| setup("server")("server.upstream is not set".into()))?;
    let upstream = upstream(&config, upstream_url.clone())?;

    dev.start_pusher(&config, local);
    tracing::info!(
        listen = %local,
        public_url = %config.server.public_url,
        upstream = %upstream_url,
        "wechat-oauth-proxy listening"
    );
    if config.dev.enabled() {
        tracing::warn!(
            "DEVELOPMENT MODE: simulated WeChat and demo upstream in-process, loopback only — open {}",
            config.server.public_url
        );
    }

    let settings = ServerSettings::from(&config.server);
    let served = match listener {
        Listener::Shared(listener) => {
            server::serve(listener, layer.layer(upstream), settings, shutdown).await
        }
        // One service per worker: the same layer (its state is shared), each with its own
        // upstream pool, so that no connection or pool lock is shared between threads.
        Listener::Workers(listeners) => {
            let services = |_| layer.layer(upstream.with_own_pool());
            server::serve_workers(listeners, services, settings, shutdown).await
        }
    };
    dev.shutdown().await;
    served.map_err(|source| AppError::Io {
        context: "serving".into(),
        source,
    })
}

/// Where the sidecar accepts connections: one listener for the shared runtime, or one
/// `SO_REUSEPORT` listener per worker (`server.workers`).
enum Listener {
    Shared(tokio::net::TcpListener),
    Workers(Vec<std::net::TcpListener>),
}

impl Listener {
    async fn bind(addr: std::net::SocketAddr, workers: Option<usize>) -> Result<Self, AppError> {
        let cannot_listen = |source| AppError::Io {
            context: format!("cannot listen on {addr}"),
            source,
        };
        match workers {
            None => tokio::net::TcpListener::bind(addr)
                .await
                .map(Self::Shared)
                .map_err(cannot_listen),
            Some(workers) => server::reuseport_listeners(addr, workers)
                .map(Self::Workers)
                .map_err(cannot_listen),
        }
    }

    fn local_addr(&self) -> Result<std::net::SocketAddr, AppError> {
        let addr = match self {
            Self::Shared(listener) => listener.local_addr(),
            Self::Workers(listeners) => listeners.first().map_or_else(
                || Err(std::io::Error::other("no worker listener")),
                std::net::TcpListener::local_addr,
            ),
        };
        addr.map_err(|source| AppError::Io {
            context: "listener address".into(),
            source,
        })
    }
}

/// Builds everything [`run`] builds from the configuration alone — WeChat client settings,
/// cookie codec, JWT keys, the layer (prefix, skip rules, public URL, API prefixes) and the
/// upstream — with the same functions but without any I/O (no socket, no store, no network;
/// in-memory stand-ins for the stores), so that `--check` refuses exactly what start-up
/// refuses. `main` calls it before [`run`] too.
///
/// # Errors
/// The first [`AppError::Setup`] start-up would stop with.
pub fn check(config: &Config, secrets: &ResolvedSecrets) -> Result<(), AppError> {
    let wechat = wechat(config, secrets, None, Arc::new(MemoryPlatformStore::new()))?;
    stores::check(config)?;
    dev::check(config)?;
    let (cookies, jwt) = codecs(config, secrets)?;
    let sessions = Arc::new(MemoryStore::new(config.session.session_settings()));
    let qr = QrParts {
        website: website(config, secrets, None)?,
        ..QrParts::default()
    };
    auth_layer(config, wechat, sessions, cookies, jwt, qr)?;
    if let Some(url) = &config.server.upstream {
        upstream(config, url.clone())?;
    }
    Ok(())
}

/// The WeChat side, calling the simulated WeChat at `sim_url` in development mode.
fn wechat(
    config: &Config,
    secrets: &ResolvedSecrets,
    sim_url: Option<url::Url>,
    platform_store: Arc<dyn PlatformStore>,
) -> Result<WeChatOAuth, AppError> {
    let settings = wechat_settings(config, secrets, sim_url)?;
    Ok(WeChatOAuth::new(settings, platform_store)
        .map_err(|e| setup("wechat")(e.to_string()))?
        .with_login_deadline(config.wechat.login_deadline()))
}

/// `[wechat]` and its secrets as the WeChat side's settings (both base URLs the simulated
/// WeChat's at `sim_url` in development mode).
fn wechat_settings(
    config: &Config,
    secrets: &ResolvedSecrets,
    sim_url: Option<url::Url>,
) -> Result<crate::wechat::oauth::WeChatSettings, AppError> {
    let w = &config.wechat;
    let api_base = sim_url.clone().unwrap_or_else(|| w.api_base_url.clone());
    let open_base = sim_url.unwrap_or_else(|| w.open_base_url.clone());
    w.settings(secrets, config.tenants.as_ref(), api_base, open_base)
        .map_err(refused("wechat"))
}

/// `qr.desktop = "website"`: the website app, with a client of the `[wechat]` client settings
/// (the simulated WeChat's at `sim_url` in development mode, like the official account's).
fn website(
    config: &Config,
    secrets: &ResolvedSecrets,
    sim_url: Option<url::Url>,
) -> Result<Option<WebsiteApp>, AppError> {
    let Some((appid, secret)) = config.qr.website_app(secrets) else {
        return Ok(None);
    };
    let client_settings = wechat_settings(config, secrets, sim_url)?.client;
    let client = WeChatClient::new(client_settings).map_err(|e| setup("qr")(e.to_string()))?;
    Ok(Some(WebsiteApp::new(appid, secret, client)))
}

/// The cookie codec and the JWT issuer, both keyed from the master secret.
fn codecs(
    config: &Config,
    secrets: &ResolvedSecrets,
) -> Result<(CookieCodec, JwtIssuer), AppError> {
    let master = secrets
        .master_secret
        .as_ref()
        .ok_or_else(|| setup("session")("session.master_secret is missing".into()))?;
    let cookies = CookieCodec::new(master, config.session.cookie_settings())
        .map_err(|e| setup("session")(e.to_string()))?;
    let jwt_settings = config.jwt.settings(secrets).map_err(refused("jwt"))?;
    let jwt = JwtIssuer::new(jwt_settings, master).map_err(|e| setup("jwt")(e.to_string()))?;
    Ok((cookies, jwt))
}

/// What the desktop QR login needs besides `[qr]`.
#[derive(Debug, Default)]
struct QrParts {
    /// Where its tickets live (`None`: the layer's bounded memory store).
    tickets: Option<Arc<dyn TicketStore>>,
    /// `[dev]`: the simulator's aid that lets a desktop play the phone.
    dev_phone: Option<crate::layer::QrDevPhone>,
    /// `qr.desktop = "website"`: the website app desktop browsers log in with.
    website: Option<WebsiteApp>,
}

/// The authentication layer, from `[auth]`, `server.public_url`, the `[jwt]` headers and
/// `[qr]`.
fn auth_layer(
    config: &Config,
    wechat: WeChatOAuth,
    sessions: Arc<dyn SessionStore>,
    cookies: CookieCodec,
    jwt: JwtIssuer,
    qr: QrParts,
) -> Result<WeChatAuthLayer, AppError> {
    if let Some(warning) = config
        .tenants
        .as_ref()
        .and_then(|t| t.unchecked_hosts_warning())
    {
        tracing::warn!("{warning}");
    }
    let mut settings = config.layer_settings().map_err(refused("jwt"))?;
    settings.qr.dev_phone = qr.dev_phone;
    if let Some(app) = qr.website {
        settings.qr.desktop = crate::layer::QrDesktopLogin::Website(app);
    }
    let mut builder = WeChatAuthLayer::builder()
        .settings(settings)
        .wechat(wechat)
        .sessions(sessions)
        .cookie_codec(cookies)
        .jwt(jwt);
    if let Some(tickets) = qr.tickets {
        builder = builder.tickets(tickets);
    }
    let layer = builder.build().map_err(|e| setup("auth")(e.to_string()))?;
    layer.set_access_lists(config.access.lists().map_err(refused("access"))?);
    Ok(layer)
}

/// The upstream proxy, from `[server]` and `[upstream]`.
fn upstream(config: &Config, url: url::Url) -> Result<Upstream, AppError> {
    Upstream::new(config.proxy_settings(url)).map_err(|e| setup("proxy")(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::Path};

    use super::*;
    use crate::identity::JwtCarrier;

    fn shipped_config_with(edit: impl Fn(String) -> String) -> (Config, ResolvedSecrets) {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("shipped config.toml");
        Config::from_toml_str(&edit(text), Path::new("."), &HashMap::new()).expect("valid config")
    }

    #[test]
    fn authorization_carrier_caches_the_bearer_value_whole() {
        let (config, secrets) =
            shipped_config_with(|t| t.replace("[jwt]\n", "[jwt]\nheader = \"Authorization\"\n"));
        let settings = config.jwt.settings(&secrets).expect("jwt settings");
        assert_eq!(settings.value_prefix, "Bearer ");
        assert_eq!(
            config.layer_settings().expect("layer settings").headers.jwt,
            JwtCarrier::AuthorizationBearer
        );

        let (config, secrets) = shipped_config_with(|t| t);
        assert_eq!(config.jwt.settings(&secrets).expect("jwt").value_prefix, "");
    }

    #[test]
    fn prefill_is_refused_outside_the_simulated_setup() {
        let (config, _) =
            shipped_config_with(|t| t.replace("[dev]\n", "[dev]\nprefill_sessions = 10\n"));
        assert_eq!(config.dev.prefill_sessions, 10);
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("shipped config.toml")
            .replace("[dev]\n", "[dev]\nprefill_sessions = 10\n")
            .replace("simulate_wechat = true", "simulate_wechat = false");
        let err = Config::from_toml_str(&text, Path::new("."), &HashMap::new())
            .expect_err("refused without the simulator");
        assert!(err.to_string().contains("dev.prefill_sessions"), "{err}");
    }
}
