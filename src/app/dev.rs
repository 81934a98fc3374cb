//! `[dev]` (feature `sim`): the simulated WeChat, its ticket pusher, the demo upstream and the
//! benchmark sessions of `dev.prefill_sessions`, all loopback only. Without the feature,
//! `app::dev` is a stub that refuses `[dev]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AppError, setup};
use crate::config::{Config, ResolvedSecrets, WeChatMode};
use crate::layer::QrDevPhone;
use crate::session::{CookieCodec, SessionRecord, SessionStore};
use crate::sim::upstream::DemoUpstream;
use crate::sim::{SimAuthorizer, SimConfig, SimWeChat};
use crate::wechat::AppSecret;

/// Number of prefilled sessions whose cookies are written for load tests.
const PREFILL_COOKIES: usize = 1024;

/// Seconds between simulated ticket pushes unless `dev.push_interval_secs` says otherwise.
const DEFAULT_PUSH_INTERVAL_SECS: u64 = 600;

/// `[dev]` is valid in this build (it has the simulator): nothing to refuse.
pub(super) fn check(_: &Config) -> Result<(), AppError> {
    Ok(())
}

/// The development services of `[dev]` that are running.
#[derive(Debug, Default)]
pub(super) struct DevServices {
    sim: Option<SimWeChat>,
    demo: Option<DemoUpstream>,
}

impl DevServices {
    /// Starts what `[dev]` asks for: the simulated WeChat, and the demo upstream when
    /// `server.upstream` is not set.
    pub(super) async fn start(
        config: &Config,
        secrets: &ResolvedSecrets,
    ) -> Result<Self, AppError> {
        let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let mut services = DevServices::default();
        if config.dev.simulate_wechat {
            let addr = config.dev.sim_listen.unwrap_or(loopback);
            let started = SimWeChat::start(sim_config(config, secrets), addr)
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
            services.demo = Some(demo);
        }
        Ok(services)
    }

    /// The simulated WeChat's base URL, which replaces both WeChat base URLs.
    pub(super) fn sim_url(&self) -> Option<url::Url> {
        self.sim.as_ref().map(SimWeChat::base_url)
    }

    /// The desktop QR login's development aid: the simulated WeChat's "模拟手机扫码" page
    /// (`/_sim/phone?go=…`, which marks the tab with the `wxsim_phone` cookie), so that one
    /// desktop can play the phone in the demo.
    pub(super) fn qr_dev_phone(&self) -> Option<QrDevPhone> {
        let link = self.sim_url()?.join("_sim/phone").ok()?;
        Some(QrDevPhone {
            link,
            cookie: "wxsim_phone".to_owned(),
        })
    }

    /// The demo upstream's URL, when it runs.
    pub(super) fn upstream_url(&self) -> Option<url::Url> {
        self.demo.as_ref().map(DemoUpstream::url)
    }

    /// `dev.prefill_sessions`, when set.
    pub(super) async fn prefill(
        &self,
        config: &Config,
        sessions: &dyn SessionStore,
        cookies: &CookieCodec,
    ) -> Result<(), AppError> {
        if config.dev.prefill_sessions == 0 {
            return Ok(());
        }
        prefill_sessions(
            sessions,
            cookies,
            config.dev.prefill_sessions,
            &config.server.state_dir,
        )
        .await
    }

    /// In component mode, pushes a ticket to the proxy listening at `proxy` now and every
    /// `dev.push_interval_secs`.
    pub(super) fn start_pusher(&self, config: &Config, proxy: SocketAddr) {
        let Some(sim) = &self.sim else { return };
        if config.wechat.mode != WeChatMode::Component {
            return;
        }
        let events = format!("http://{proxy}{}/events", config.auth.prefix);
        match url::Url::parse(&events) {
            Ok(url) => {
                let every = Duration::from_secs(
                    config
                        .dev
                        .push_interval_secs
                        .unwrap_or(DEFAULT_PUSH_INTERVAL_SECS),
                );
                drop(sim.spawn_pusher(url, every));
            }
            Err(e) => tracing::error!(error = %e, "cannot build the events URL"),
        }
    }

    /// Stops what runs.
    pub(super) async fn shutdown(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
        if let Some(demo) = self.demo {
            demo.shutdown().await;
        }
    }
}

/// The simulator must accept exactly the appids and credentials the proxy will present: with
/// `[tenants]`, every listed account (authorized with every permission set; the first is the
/// primary one) and every tenant host as a redirect host.
fn sim_config(config: &Config, secrets: &ResolvedSecrets) -> SimConfig {
    let listed = config
        .tenants
        .as_ref()
        .map(|t| t.authorizers.as_slice())
        .unwrap_or_default();
    let mut sim = SimConfig {
        interactive: true,
        ..SimConfig::default()
    };
    if let Some(appid) = config
        .wechat
        .appid
        .as_ref()
        .or_else(|| listed.first().map(|a| &a.appid))
    {
        sim.authorizer_appid = appid.clone();
    }
    sim.authorizers = listed
        .iter()
        .map(|a| {
            SimAuthorizer::new(
                a.appid.clone(),
                a.name
                    .clone()
                    .unwrap_or_else(|| "模拟公众号 / Sim account".to_owned()),
            )
        })
        .collect();
    sim.redirect_hosts = config
        .server
        .public_url
        .host_str()
        .into_iter()
        .map(str::to_owned)
        .chain(
            listed
                .iter()
                .flat_map(|a| a.hosts.iter().map(|h| h.as_str().to_owned())),
        )
        .collect();
    if let Some(appid) = &config.wechat.component_appid {
        sim.component_appid = appid.clone();
    }
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
    sim
}

/// `dev.prefill_sessions`: `count` synthetic sessions ([`crate::sim::synthetic_identity`]), and
/// the `name=value` cookie pairs of the first 1 024, one per line, in
/// `<state_dir>/bench-cookies.txt`.
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
            .create(SessionRecord::new(identity))
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
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use crate::session::{CookieSettings, MemoryStore, SessionSettings};

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
}
