//! The composition root of the sidecar: turns a loaded [`Config`] into running parts.
//!
//! It builds each module's own settings struct from the configuration (modules never read the
//! configuration themselves), starts the development services when `[dev]` asks for them (the
//! simulated WeChat, its ticket pusher and the demo upstream — loopback only), wraps the
//! upstream proxy in [`WeChatAuthLayer`] and serves until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::config::{Config, ResolvedSecrets, StoreKind, WeChatMode};
use crate::identity::{HeaderSettings, JwtCarrier};
use crate::jwt::{JwtAlgorithm, JwtIssuer, JwtSettings};
use crate::layer::{LayerSettings, WeChatAuthLayer};
use crate::proxy::{ProxySettings, Upstream};
use crate::secret::SecretString;
use crate::server::{self, ServerSettings};
use crate::session::{CookieCodec, CookieSettings, MemoryStore, SessionSettings, SessionStore};
use crate::wechat::client::ClientSettings;
use crate::wechat::oauth::{OAuthMode, WeChatOAuth, WeChatSettings};
use crate::wechat::persist::{FileStore, PlatformStore};
use crate::wechat::token::TokenSettings;
use crate::wechat::{AppSecret, AuthorizerAppId, ComponentAppId, Scope};

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

/// Runs the sidecar with an already validated configuration until `shutdown` resolves, then
/// drains in-flight requests (bounded by `server.shutdown_grace_secs`).
pub async fn run(
    config: Config,
    secrets: ResolvedSecrets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| AppError::Io {
            context: format!("cannot listen on {}", config.server.listen),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AppError::Io {
        context: "listener address".into(),
        source,
    })?;

    let dev = DevServices::start(&config, &secrets).await?;
    let api_base = dev
        .sim_url()
        .unwrap_or_else(|| config.wechat.api_base_url.clone());
    let open_base = dev
        .sim_url()
        .unwrap_or_else(|| config.wechat.open_base_url.clone());

    let platform_store = platform_store(&config).await?;
    let wechat = WeChatOAuth::new(
        wechat_settings(&config, &secrets, api_base, open_base)?,
        platform_store,
    )
    .map_err(|e| setup("wechat")(e.to_string()))?
    .with_login_deadline(Duration::from_millis(config.wechat.login_deadline_ms));
    let _refresher = wechat.start_background();

    let sessions = session_store(&config).await?;
    let (cookies, jwt) = codecs(&config, &secrets)?;

    #[cfg(feature = "sim")]
    if config.dev.prefill_sessions > 0 {
        prefill_sessions(
            sessions.as_ref(),
            &cookies,
            config.dev.prefill_sessions,
            &config.server.state_dir,
        )
        .await?;
    }
    let layer = WeChatAuthLayer::new(layer_settings(&config)?, wechat, sessions, cookies, jwt)
        .map_err(|e| setup("auth")(e.to_string()))?;

    let upstream_url = match (&config.server.upstream, &dev.upstream_url) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => return Err(setup("server")("server.upstream is not set".into())),
    };
    let upstream = Upstream::new(proxy_settings(&config, upstream_url)?)
        .map_err(|e| setup("proxy")(e.to_string()))?;
    let service = layer.layer(upstream);

    dev.start_pusher(&config, local);
    tracing::info!(
        listen = %local,
        public_url = %config.server.public_url,
        upstream = %dev.upstream_url.as_ref().or(config.server.upstream.as_ref()).map(ToString::to_string).unwrap_or_default(),
        "wechat-oauth-proxy listening"
    );
    if config.dev.enabled() {
        tracing::warn!(
            "DEVELOPMENT MODE: simulated WeChat and demo upstream in-process, loopback only — open {}",
            config.server.public_url
        );
    }

    let server_settings = server_settings(&config);
    let served = server::serve(listener, service, server_settings, shutdown).await;
    dev.shutdown().await;
    served.map_err(|source| AppError::Io {
        context: "serving".into(),
        source,
    })
}

/// Builds everything [`run`] builds from the configuration alone — WeChat client settings,
/// cookie codec, JWT keys, the layer (prefix, skip rules, public URL, API prefixes) and the
/// upstream — without any I/O (no socket, no store, no network; in-memory stand-ins for the
/// stores), so that `--check` refuses exactly what start-up refuses. `main` calls it before
/// [`run`] too.
///
/// # Errors
/// The first [`AppError::Setup`] start-up would stop with.
pub fn check(config: &Config, secrets: &ResolvedSecrets) -> Result<(), AppError> {
    let wechat = WeChatOAuth::new(
        wechat_settings(
            config,
            secrets,
            config.wechat.api_base_url.clone(),
            config.wechat.open_base_url.clone(),
        )?,
        Arc::new(crate::wechat::persist::MemoryPlatformStore::new()),
    )
    .map_err(|e| setup("wechat")(e.to_string()))?;
    if config.session.store == StoreKind::Redis {
        #[cfg(feature = "redis")]
        redis_url(config)?;
        #[cfg(not(feature = "redis"))]
        return Err(setup("session")(
            "store = \"redis\" needs a build with the `redis` feature".into(),
        ));
    }
    let (cookies, jwt) = codecs(config, secrets)?;
    let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(SessionSettings::default()));
    WeChatAuthLayer::new(layer_settings(config)?, wechat, sessions, cookies, jwt)
        .map_err(|e| setup("auth")(e.to_string()))?;
    if let Some(url) = &config.server.upstream {
        Upstream::new(proxy_settings(config, url.clone())?)
            .map_err(|e| setup("proxy")(e.to_string()))?;
    }
    Ok(())
}

/// The cookie codec and the JWT issuer, both keyed from the master secret.
fn codecs(
    config: &Config,
    secrets: &ResolvedSecrets,
) -> Result<(CookieCodec, JwtIssuer), AppError> {
    let master = secrets
        .master_secret
        .clone()
        .ok_or_else(|| setup("session")("session.master_secret is missing".into()))?;
    let cookies = CookieCodec::new(&master, cookie_settings(config))
        .map_err(|e| setup("session")(e.to_string()))?;
    let jwt = JwtIssuer::new(jwt_settings(config, secrets)?, &master)
        .map_err(|e| setup("jwt")(e.to_string()))?;
    Ok((cookies, jwt))
}

/// `[server]` → the HTTP server's limits and timeouts.
fn server_settings(config: &Config) -> ServerSettings {
    let server = &config.server;
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

/// Number of prefilled sessions whose cookies are written for load tests.
#[cfg(feature = "sim")]
const PREFILL_COOKIES: usize = 1024;

/// `dev.prefill_sessions`: `count` synthetic sessions ([`crate::sim::synthetic_identity`]), and the `name=value` cookie pairs of the first 1 024,
/// one per line, in `<state_dir>/bench-cookies.txt`.
#[cfg(feature = "sim")]
async fn prefill_sessions(
    sessions: &dyn SessionStore,
    cookies: &CookieCodec,
    count: usize,
    state_dir: &std::path::Path,
) -> Result<(), AppError> {
    let started = std::time::Instant::now();
    let mut pairs = String::new();
    for i in 0..count {
        let identity = crate::sim::synthetic_identity(i);
        let id = sessions
            .create(crate::session::SessionRecord::new(identity))
            .await
            .map_err(|e| setup("dev")(format!("dev.prefill_sessions: {e}")))?;
        if i < PREFILL_COOKIES {
            let cookie = cookies.session_cookie(&id);
            let pair = cookie
                .to_str()
                .ok()
                .and_then(|c| c.split(';').next())
                .unwrap_or_default();
            pairs.push_str(pair);
            pairs.push('\n');
        }
    }
    let file = state_dir.join("bench-cookies.txt");
    std::fs::create_dir_all(state_dir)
        .and_then(|()| write_private(&file, pairs.as_bytes()))
        .map_err(|source| AppError::Io {
            context: format!("cannot write {}", file.display()),
            source,
        })?;
    tracing::warn!(
        sessions = count,
        elapsed = ?started.elapsed(),
        cookies = %file.display(),
        "dev.prefill_sessions: synthetic sessions created (benchmarks only)"
    );
    Ok(())
}

/// Writes a file only its owner can read (it holds live session cookies).
#[cfg(feature = "sim")]
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

async fn session_store(config: &Config) -> Result<Arc<dyn SessionStore>, AppError> {
    let settings = SessionSettings {
        ttl: Duration::from_secs(config.session.ttl_secs),
        idle_timeout: Duration::from_secs(config.session.idle_timeout_secs),
        capacity: config.session.capacity,
        ..SessionSettings::default()
    };
    match config.session.store {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new(settings))),
        StoreKind::Redis => redis_session_store(config, settings).await,
    }
}

#[cfg(feature = "redis")]
async fn redis_session_store(
    config: &Config,
    settings: SessionSettings,
) -> Result<Arc<dyn SessionStore>, AppError> {
    let url = redis_url(config)?;
    let store =
        crate::session::redis::RedisSessionStore::new(url.expose_secret(), REDIS_PREFIX, settings)
            .await
            .map_err(|e| setup("session")(e.to_string()))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
async fn redis_session_store(
    _config: &Config,
    _settings: SessionSettings,
) -> Result<Arc<dyn SessionStore>, AppError> {
    Err(setup("session")(
        "store = \"redis\" needs a build with the `redis` feature".into(),
    ))
}

/// Key prefix of everything this proxy keeps in Redis.
#[cfg(feature = "redis")]
const REDIS_PREFIX: &str = "wxauth:";

/// `session.redis_url`, which both Redis stores (sessions and platform state) connect to.
#[cfg(feature = "redis")]
fn redis_url(config: &Config) -> Result<&SecretString, AppError> {
    config
        .session
        .redis_url
        .as_ref()
        .ok_or_else(|| setup("session")("session.redis_url is missing".into()))
}

/// The platform store: the state directory by default; Redis when sessions are in Redis, so
/// that every instance shares one ticket, one token and one refresh lock.
async fn platform_store(config: &Config) -> Result<Arc<dyn PlatformStore>, AppError> {
    #[cfg(feature = "redis")]
    if config.session.store == StoreKind::Redis {
        let url = redis_url(config)?;
        let store =
            crate::wechat::redis::RedisPlatformStore::new(url.expose_secret(), REDIS_PREFIX)
                .await
                .map_err(|e| setup("wechat")(e.to_string()))?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(
        FileStore::new(config.server.state_dir.clone())
            .map_err(|e| setup("state_dir")(e.to_string()))?,
    ))
}

fn wechat_settings(
    config: &Config,
    secrets: &ResolvedSecrets,
    api_base: url::Url,
    open_base: url::Url,
) -> Result<WeChatSettings, AppError> {
    let w = &config.wechat;
    let missing = |key: &str| setup("wechat")(format!("wechat.{key} is missing"));
    let mode = match w.mode {
        WeChatMode::Component => OAuthMode::Component {
            component_appid: ComponentAppId::new(
                w.component_appid
                    .clone()
                    .ok_or_else(|| missing("component_appid"))?,
            ),
            component_secret: AppSecret::new(
                secrets
                    .component_secret
                    .as_ref()
                    .ok_or_else(|| missing("component_secret"))?
                    .expose_secret(),
            ),
            authorizer_appid: AuthorizerAppId::new(w.appid.clone()),
            message_token: secrets
                .message_token
                .clone()
                .ok_or_else(|| missing("message_token"))?,
            encoding_aes_key: secrets
                .encoding_aes_key
                .clone()
                .ok_or_else(|| missing("encoding_aes_key"))?,
            previous_encoding_aes_key: w.previous_encoding_aes_key.clone(),
        },
        WeChatMode::OfficialAccount => OAuthMode::OfficialAccount {
            appid: AuthorizerAppId::new(w.appid.clone()),
            secret: AppSecret::new(
                secrets
                    .official_account_secret
                    .as_ref()
                    .ok_or_else(|| missing("official_account_secret"))?
                    .expose_secret(),
            ),
        },
    };
    Ok(WeChatSettings {
        mode,
        client: ClientSettings {
            api_base,
            open_base,
            connect_timeout: Duration::from_millis(w.connect_timeout_ms),
            request_timeout: Duration::from_millis(w.request_timeout_ms),
            lang: w.lang.clone(),
        },
        token: TokenSettings {
            refresh_margin: Duration::from_secs(w.token_refresh_margin_secs),
            ..TokenSettings::default()
        },
    })
}

fn cookie_settings(config: &Config) -> CookieSettings {
    let secure = !config.session.insecure_allow_http;
    CookieSettings {
        name: config.session.cookie_name.clone(),
        secure,
        ..CookieSettings::default()
    }
}

fn jwt_settings(config: &Config, secrets: &ResolvedSecrets) -> Result<JwtSettings, AppError> {
    let j = &config.jwt;
    let algorithm = match j.algorithm.as_str() {
        "EdDSA" => JwtAlgorithm::EdDSA,
        "ES256" => JwtAlgorithm::ES256,
        "RS256" => JwtAlgorithm::RS256,
        "HS256" => JwtAlgorithm::HS256,
        other => return Err(setup("jwt")(format!("unknown algorithm {other:?}"))),
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| setup("jwt")(format!("cannot read {}: {e}", path.display())))
    };
    let private_key_pem = j
        .private_key_file
        .as_ref()
        .map(read)
        .transpose()?
        .map(SecretString::new);
    let previous_public_key_pem = j.previous_public_key_file.as_ref().map(read).transpose()?;
    Ok(JwtSettings {
        algorithm,
        private_key_pem,
        previous_public_key_pem,
        hs256_secret: secrets.hs256_secret.clone(),
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        ttl: Duration::from_secs(j.ttl_secs),
        cache: j.cache,
        // With `Authorization` as the carrier the cached header value already holds
        // `Bearer <jwt>`, so a cache hit allocates nothing (identity.rs passes it through).
        value_prefix: if j.header.eq_ignore_ascii_case("authorization") {
            "Bearer ".to_owned()
        } else {
            String::new()
        },
        ..JwtSettings::default()
    })
}

fn layer_settings(config: &Config) -> Result<LayerSettings, AppError> {
    let scope = match config.auth.scope.as_str() {
        "snsapi_base" => Scope::Base,
        _ => Scope::UserInfo,
    };
    let jwt_carrier = if config.jwt.header.eq_ignore_ascii_case("authorization") {
        JwtCarrier::AuthorizationBearer
    } else {
        JwtCarrier::Header(
            http::HeaderName::from_bytes(config.jwt.header.as_bytes())
                .map_err(|e| setup("jwt")(format!("jwt.header: {e}")))?,
        )
    };
    let mut skip = Vec::new();
    for rule in &config.auth.skip {
        let (method, path) = crate::config::parse_skip_rule(rule).map_err(setup("auth"))?;
        skip.push(
            crate::layer::SkipRule::new(method, &path)
                .map_err(|e| setup("auth")(format!("{rule:?}: {e}")))?,
        );
    }
    Ok(LayerSettings {
        public_url: config.server.public_url.clone(),
        prefix: config.auth.prefix.clone(),
        skip,
        api_prefixes: config.auth.api_prefixes.clone(),
        skip_preflight: config.auth.skip_preflight,
        scope,
        headers: HeaderSettings {
            jwt: jwt_carrier,
            plain_headers: config.jwt.plain_headers,
        },
        ..LayerSettings::default()
    })
}

fn proxy_settings(config: &Config, upstream: url::Url) -> Result<ProxySettings, AppError> {
    let mut settings = ProxySettings::new(upstream);
    settings.response_timeout = Duration::from_secs(config.server.upstream_timeout_secs);
    settings.allow_underscores_in_headers = config.upstream.allow_underscores_in_headers;
    for cidr in &config.server.trusted_proxies {
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| setup("server")(format!("trusted_proxies: {cidr:?} is not a CIDR")))?;
        settings.trusted_proxies.push(net);
    }
    if config.server.public_url.scheme() == "https" {
        settings.forwarded_proto = crate::proxy::ForwardedProto::Https;
    }
    Ok(settings)
}

/// The development services of `[dev]`: present only when the `sim` feature is compiled in.
#[derive(Debug, Default)]
struct DevServices {
    #[cfg(feature = "sim")]
    sim: Option<crate::sim::SimWeChat>,
    #[cfg(feature = "sim")]
    demo: Option<crate::sim::upstream::DemoUpstream>,
    upstream_url: Option<url::Url>,
}

impl DevServices {
    #[cfg(feature = "sim")]
    async fn start(config: &Config, secrets: &ResolvedSecrets) -> Result<Self, AppError> {
        use crate::sim::{SimConfig, SimWeChat, upstream::DemoUpstream};
        let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let mut services = DevServices::default();
        if config.dev.simulate_wechat {
            let mut sim = SimConfig {
                authorizer_appid: AuthorizerAppId::new(config.wechat.appid.clone()),
                interactive: true,
                ..SimConfig::default()
            };
            if let Some(host) = config.server.public_url.host_str() {
                sim.redirect_hosts = vec![host.to_owned()];
            }
            if let Some(appid) = &config.wechat.component_appid {
                sim.component_appid = ComponentAppId::new(appid.clone());
            }
            // The simulator must accept exactly the credentials the proxy will present.
            if let Some(s) = &secrets.component_secret {
                sim.component_secret = AppSecret::new(s.expose_secret());
            }
            if let Some(s) = &secrets.official_account_secret {
                sim.official_account_secret = AppSecret::new(s.expose_secret());
            }
            if let Some(t) = &secrets.message_token {
                sim.message_token = t.clone();
            }
            if let Some(k) = &secrets.encoding_aes_key {
                sim.encoding_aes_key = k.clone();
            }
            let addr = config.dev.sim_listen.unwrap_or(loopback);
            let started = SimWeChat::start(sim, addr)
                .await
                .map_err(|e| setup("dev")(format!("simulated WeChat: {e}")))?;
            tracing::warn!(url = %started.base_url(), "simulated WeChat started (development only)");
            services.sim = Some(started);
        }
        if config.dev.demo_upstream && config.server.upstream.is_none() {
            let addr = config.dev.demo_upstream_listen.unwrap_or(loopback);
            let demo = DemoUpstream::start(addr, config.jwt.header.clone())
                .await
                .map_err(|e| setup("dev")(format!("demo upstream: {e}")))?;
            services.upstream_url = Some(demo.url());
            services.demo = Some(demo);
        }
        Ok(services)
    }

    #[cfg(not(feature = "sim"))]
    async fn start(config: &Config, _secrets: &ResolvedSecrets) -> Result<Self, AppError> {
        if config.dev.enabled() {
            return Err(setup("dev")(
                "[dev] needs a build with the `sim` feature (on by default)".into(),
            ));
        }
        Ok(DevServices::default())
    }

    fn sim_url(&self) -> Option<url::Url> {
        #[cfg(feature = "sim")]
        {
            self.sim.as_ref().map(crate::sim::SimWeChat::base_url)
        }
        #[cfg(not(feature = "sim"))]
        {
            None
        }
    }

    fn start_pusher(&self, config: &Config, proxy: SocketAddr) {
        #[cfg(feature = "sim")]
        if let Some(sim) = &self.sim {
            if config.wechat.mode == WeChatMode::Component {
                let events = format!("http://{proxy}{}/events", config.auth.prefix);
                match url::Url::parse(&events) {
                    Ok(url) => {
                        let every =
                            Duration::from_secs(config.dev.push_interval_secs.unwrap_or(600));
                        drop(sim.spawn_pusher(url, every));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot build the events URL"),
                }
            }
        }
        #[cfg(not(feature = "sim"))]
        let _ = (config, proxy);
    }

    async fn shutdown(self) {
        #[cfg(feature = "sim")]
        {
            if let Some(sim) = self.sim {
                sim.shutdown().await;
            }
            if let Some(demo) = self.demo {
                demo.shutdown().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::Path};

    use super::*;

    fn shipped_config_with(edit: impl Fn(String) -> String) -> (Config, ResolvedSecrets) {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("shipped config.toml");
        Config::from_toml_str(&edit(text), Path::new("."), &HashMap::new()).expect("valid config")
    }

    #[test]
    fn authorization_carrier_caches_the_bearer_value_whole() {
        let (config, secrets) =
            shipped_config_with(|t| t.replace("[jwt]\n", "[jwt]\nheader = \"Authorization\"\n"));
        let settings = jwt_settings(&config, &secrets).expect("jwt settings");
        assert_eq!(settings.value_prefix, "Bearer ");
        assert_eq!(
            layer_settings(&config).expect("layer settings").headers.jwt,
            JwtCarrier::AuthorizationBearer
        );

        let (config, secrets) = shipped_config_with(|t| t);
        assert_eq!(
            jwt_settings(&config, &secrets).expect("jwt").value_prefix,
            ""
        );
    }

    #[cfg(feature = "sim")]
    #[tokio::test]
    async fn prefilled_sessions_are_live_and_their_cookies_read_back() {
        let store = MemoryStore::new(SessionSettings::default());
        let master = SecretString::new("prefill-test-master-secret-0123456789abcdef");
        let codec = CookieCodec::new(&master, CookieSettings::default()).expect("codec");
        let dir = std::env::temp_dir().join(format!("wxauth-prefill-{}", std::process::id()));
        prefill_sessions(&store, &codec, 1500, &dir)
            .await
            .expect("prefill");

        let text = std::fs::read_to_string(dir.join("bench-cookies.txt")).expect("cookie file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("bench-cookies.txt"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read live cookies");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            PREFILL_COOKIES,
            "cookies of the first 1 024 only"
        );
        let mut openids = std::collections::HashSet::new();
        for line in [lines[0], lines[PREFILL_COOKIES - 1]] {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::COOKIE, line.parse().expect("header value"));
            let id = codec
                .read_session(&headers)
                .expect("a valid session cookie");
            let record = store
                .load(&id)
                .await
                .expect("store")
                .expect("a live session");
            openids.insert(record.identity.openid);
        }
        assert_eq!(openids.len(), 2, "distinct users");
        std::fs::remove_dir_all(&dir).ok();
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
