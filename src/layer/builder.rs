//! The builder of [`WeChatAuthLayer`](super::WeChatAuthLayer): collects the collaborators and
//! settings, validates everything once, and precomputes what every request needs.

use std::{path::PathBuf, sync::Arc, time::Duration};

use http::Method;
use url::Url;

use super::{
    DispatchSettings, LayerSettings, WeChatAuthLayer,
    dispatch::{Prefix, SkipRule, SkipRuleError},
    forward::ForwardAuthSettings,
    qr::{Bridge, QrSettings},
    state::AuthState,
    tenant::{LOG_LABEL_MAX_TENANTS, ResolverError, TenantResolver, TenantRouting},
};
use arc_swap::ArcSwap;

use crate::{
    access::AccessLists,
    identity::{HeaderSettings, JwtCarrier},
    jwt::{JwtError, JwtIssuer, JwtSettings},
    secret::SecretString,
    session::{
        CookieCodec, CookieKeyError, CookieSettings, MemoryStore, MemoryTicketStore,
        SessionSettings, SessionStore, TicketStore,
    },
    wechat::{
        AppSecret, AuthorizerAppId, Scope,
        client::ClientSettings,
        error::WeChatError,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::{FileStore, PlatformStore, StoreError},
        token::TokenSettings,
    },
};

/// The state directory of the platform store (the pushed ticket and the component token) when
/// none is given: the sidecar's `server.state_dir` default too.
pub const DEFAULT_STATE_DIR: &str = "./state";

/// Why a layer could not be built. Each variant names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required collaborator or setting was not given.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The prefix is not `/something` without a trailing `/` and without dot segments (the rule
    /// of [`Prefix`]).
    #[error("prefix must look like \"/_wxauth\": start with '/', no trailing '/', normalized")]
    InvalidPrefix,
    /// The public URL is not an `http(s)://` origin, or is `http://` while the cookies are
    /// `Secure` (browsers would drop them and every login would loop).
    #[error("public_url must be an https:// origin without path, query or fragment: {0}")]
    InvalidPublicUrl(&'static str),
    /// A skip rule pattern was refused.
    #[error("skip rule {pattern:?}: {source}")]
    InvalidSkipRule {
        /// The refused pattern.
        pattern: String,
        /// Why.
        #[source]
        source: SkipRuleError,
    },
    /// An API prefix is not an absolute normalized path.
    #[error("api prefix {0:?} must be an absolute normalized path")]
    InvalidApiPrefix(String),
    /// The flow lifetime is zero or longer than WeChat's own limits make useful.
    #[error("flow_ttl must be between 1 second and 10 minutes")]
    InvalidFlowTtl,
    /// The tenant routing is inconsistent (a host listed twice, several accounts without
    /// routing).
    #[error("tenants: {0}")]
    InvalidTenants(#[from] ResolverError),
    /// The forward-auth settings are unusable (see [`ForwardAuthSettings::problem`]).
    #[error("forward_auth: {0}")]
    InvalidForwardAuth(&'static str),
    /// The QR bridge settings are unusable (see [`QrSettings::problem`]).
    #[error("qr: {0}")]
    InvalidQr(&'static str),
    /// A [reload](super::WeChatAuthLayer::reload) would change a setting only a new layer can
    /// change (named here).
    #[error("{0} cannot change without a restart")]
    NotReloadable(&'static str),
    /// The cookie key could not be derived from the master secret (shorter than
    /// [`MIN_MASTER_SECRET_LEN`](crate::session::cookie::MIN_MASTER_SECRET_LEN) bytes).
    #[error("master_secret: {0} (generate one with `openssl rand -base64 48`)")]
    MasterSecret(#[source] CookieKeyError),
    /// The JWT signing key could not be made (from the master secret or the [`JwtSettings`]).
    #[error("jwt: {0}")]
    Jwt(#[source] JwtError),
    /// The WeChat client could not be built from the credentials (HTTP client, EncodingAESKey,
    /// no official account in static tenant mode).
    #[error("wechat: {0}")]
    WeChat(#[source] WeChatError),
    /// The state directory of the platform store could not be created.
    #[error("state_dir: {0}")]
    StateDir(#[source] StoreError),
}

/// Builds a [`WeChatAuthLayer`].
///
/// Only three things must be chosen: the WeChat credentials
/// ([`official_account`](Self::official_account) or
/// [`credentials`](Self::credentials)), the public URL and the master secret.
/// Every collaborator not given is made at [`build`](Self::build) the way
/// the sidecar makes it, from the same `Default` settings its configuration file defaults to:
/// the WeChat client from [`ClientSettings`] and [`TokenSettings`], its platform store in the
/// state directory ([`DEFAULT_STATE_DIR`]), an in-memory session store ([`SessionSettings`]),
/// the cookie codec ([`CookieSettings`]) and the EdDSA JWT key ([`JwtSettings`]) both derived
/// from the master secret (HKDF-SHA256, one `info` label per key; a secret shorter than
/// [`MIN_MASTER_SECRET_LEN`](crate::session::cookie::MIN_MASTER_SECRET_LEN) bytes is refused).
///
/// The short form, every other setting as the sidecar defaults it:
///
/// ```no_run
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use wechat_oauth_proxy::{layer::WeChatAuthLayer, secret::SecretString, wechat::AppSecret};
///
/// let auth = WeChatAuthLayer::builder()
///     .official_account("wx0123456789abcdef".into(), AppSecret::new(std::env::var("WX_SECRET")?))
///     .public_url("https://app.example.com".parse()?)
///     .master_secret(SecretString::new(std::env::var("WXAUTH_MASTER_SECRET")?))
///     .build()?;
/// # let _ = auth;
/// # Ok(())
/// # }
/// ```
///
/// Each collaborator can also be given whole ([`wechat`](Self::wechat),
/// [`sessions`](Self::sessions), [`cookie_codec`](Self::cookie_codec), [`jwt`](Self::jwt));
/// one given whole wins over the settings it would otherwise be made from.
#[derive(Debug, Default)]
pub struct WeChatAuthLayerBuilder {
    settings: LayerSettings,
    /// A prefix given as text to [`prefix`](WeChatAuthLayerBuilder::prefix), checked by `build`.
    prefix: Option<String>,
    public_url_set: bool,
    wechat: Option<WeChatOAuth>,
    sessions: Option<Arc<dyn SessionStore>>,
    cookies: Option<CookieCodec>,
    jwt: Option<JwtIssuer>,
    access: AccessLists,
    tickets: Option<Arc<dyn TicketStore>>,
    /// What `build` makes the collaborators not given whole from.
    parts: Parts,
}

/// The settings the collaborators not given whole are made from (all `Default`: the
/// sidecar's defaults).
#[derive(Debug, Default)]
struct Parts {
    credentials: Option<OAuthMode>,
    client: ClientSettings,
    token: TokenSettings,
    platform_store: Option<Arc<dyn PlatformStore>>,
    state_dir: Option<PathBuf>,
    master_secret: Option<SecretString>,
    cookie: CookieSettings,
    session: SessionSettings,
    jwt: JwtSettings,
}

impl WeChatAuthLayerBuilder {
    /// Official-account mode: users log in to the account `appid` with its own `secret`
    /// (公众号网页授权). The WeChat client is made at [`build`](Self::build) from
    /// [`wechat_client`](Self::wechat_client) (default: the real WeChat).
    pub fn official_account(self, appid: AuthorizerAppId, secret: AppSecret) -> Self {
        self.credentials(OAuthMode::OfficialAccount { appid, secret })
    }

    /// The WeChat flow and its credentials, component (third-party platform) or official
    /// account; see [`OAuthMode`]. In component mode, also start the WeChat side's background
    /// work ([`WeChatAuthLayer::start_wechat_background`]) and route the platform's ticket
    /// pushes to `{public_url}/_wxauth/events`.
    pub fn credentials(mut self, mode: OAuthMode) -> Self {
        self.parts.credentials = Some(mode);
        self
    }

    /// Where the WeChat client made from the [credentials](Self::credentials) sends its calls,
    /// its timeouts and `lang` (default [`ClientSettings::default`]: the real WeChat).
    pub fn wechat_client(mut self, client: ClientSettings) -> Self {
        self.parts.client = client;
        self
    }

    /// The component token manager's settings (default [`TokenSettings::default`]).
    pub fn token_settings(mut self, token: TokenSettings) -> Self {
        self.parts.token = token;
        self
    }

    /// The directory where the WeChat client made from the [credentials](Self::credentials)
    /// keeps the platform state (ticket, component token); created (mode `0700`) at
    /// [`build`](Self::build). Default [`DEFAULT_STATE_DIR`].
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parts.state_dir = Some(dir.into());
        self
    }

    /// The platform store of the WeChat client made from the [credentials](Self::credentials)
    /// (default a [`FileStore`] in the [state directory](Self::state_dir)); e.g. the Redis one
    /// for several instances.
    pub fn platform_store(mut self, store: Arc<dyn PlatformStore>) -> Self {
        self.parts.platform_store = Some(store);
        self
    }

    /// The master secret (at least [`MIN_MASTER_SECRET_LEN`](crate::session::cookie::MIN_MASTER_SECRET_LEN) bytes) the cookie key and the
    /// JWT signing key are derived from. Required unless both the
    /// [cookie codec](Self::cookie_codec) and the [JWT issuer](Self::jwt) are given whole.
    pub fn master_secret(mut self, secret: SecretString) -> Self {
        self.parts.master_secret = Some(secret);
        self
    }

    /// The session cookie's settings (default [`CookieSettings::default`]: `Secure`,
    /// `__Host-` prefix).
    pub fn cookie_settings(mut self, cookie: CookieSettings) -> Self {
        self.parts.cookie = cookie;
        self
    }

    /// Development only (the sidecar's `session.insecure_allow_http`): cookies without
    /// `Secure`, so that an `http://` public URL works.
    pub fn insecure_allow_http(mut self, on: bool) -> Self {
        self.parts.cookie.secure = !on;
        self
    }

    /// Lifetimes and capacity of the in-memory session store made when no
    /// [store](Self::sessions) is given (default [`SessionSettings::default`]).
    pub fn session_settings(mut self, session: SessionSettings) -> Self {
        self.parts.session = session;
        self
    }

    /// The JWT issuer's settings (default [`JwtSettings::default`]: EdDSA, key derived from
    /// the master secret).
    pub fn jwt_settings(mut self, jwt: JwtSettings) -> Self {
        self.parts.jwt = jwt;
        self
    }

    /// How requests are classified, all at once (reserved prefix, skip rules, API prefixes,
    /// preflights); replaces what [`prefix`](Self::prefix), [`skip`](Self::skip),
    /// [`api_prefix`](Self::api_prefix) and [`skip_preflight`](Self::skip_preflight) set before.
    pub fn dispatch(mut self, dispatch: DispatchSettings) -> Self {
        self.settings.dispatch = dispatch;
        self.prefix = None;
        self
    }

    /// Replaces all settings at once (what the configuration loader uses); call it before the
    /// finer-grained setters.
    pub fn settings(mut self, settings: LayerSettings) -> Self {
        self.settings = settings;
        self.prefix = None;
        self.public_url_set = true;
        self
    }

    /// The WeChat OAuth client (component or official-account mode), built by hand; otherwise
    /// it is made from the [credentials](Self::credentials).
    pub fn wechat(mut self, wechat: WeChatOAuth) -> Self {
        self.wechat = Some(wechat);
        self
    }

    /// The session store (default: in memory, [`session_settings`](Self::session_settings)).
    pub fn sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The cookie codec (names, attributes, encryption key), built by hand; otherwise it is
    /// made from the [master secret](Self::master_secret) and the
    /// [cookie settings](Self::cookie_settings).
    ///
    /// Its `Secure` setting is the development switch: an `http://` public URL is accepted only
    /// with non-Secure cookies (`CookieSettings::secure = false`).
    pub fn cookie_codec(mut self, cookies: CookieCodec) -> Self {
        self.cookies = Some(cookies);
        self
    }

    /// Same as [`cookie_codec`](Self::cookie_codec).
    pub fn cookies(self, cookies: CookieCodec) -> Self {
        self.cookie_codec(cookies)
    }

    /// The JWT issuer, built by hand; otherwise it is made from the
    /// [master secret](Self::master_secret) and the [JWT settings](Self::jwt_settings).
    pub fn jwt(mut self, jwt: JwtIssuer) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Who may log in (default: everyone); replaceable later with
    /// [`WeChatAuthLayer::set_access_lists`].
    pub fn access_lists(mut self, lists: AccessLists) -> Self {
        self.access = lists;
        self
    }

    /// The URL browsers use to reach us (origin only). Required with `Secure` cookies (the
    /// production setting); in development (non-Secure cookies) it defaults to
    /// `http://127.0.0.1/`.
    pub fn public_url(mut self, url: Url) -> Self {
        self.settings.public_url = url;
        self.public_url_set = true;
        self
    }

    /// Prefix of the reserved endpoints (default `/_wxauth`), checked by
    /// [`build`](Self::build) against the rule of [`Prefix`] (one trailing `/` is tolerated:
    /// `/auth/` is `/auth`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Lets `method` requests (`None`: any method) to `pattern` (`/exact` or `/subtree/*`)
    /// through without a session. A `GET` rule also matches `HEAD`.
    ///
    /// # Errors
    /// [`BuildError::InvalidSkipRule`] when the pattern is not an absolute, normalized path with
    /// at most a trailing `/*`.
    pub fn skip(
        mut self,
        method: impl Into<Option<Method>>,
        pattern: &str,
    ) -> Result<Self, BuildError> {
        let rule = SkipRule::new(method.into(), pattern).map_err(|source| {
            BuildError::InvalidSkipRule {
                pattern: pattern.to_owned(),
                source,
            }
        })?;
        self.settings.dispatch.skip.push(rule);
        Ok(self)
    }

    /// A path prefix whose requests always get 401 JSON instead of a login redirect.
    pub fn api_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.dispatch.api_prefixes.push(prefix.into());
        self
    }

    /// Lets CORS preflights through without a session (default off); see
    /// [`DispatchSettings::skip_preflight`](super::DispatchSettings::skip_preflight).
    pub fn skip_preflight(mut self, skip: bool) -> Self {
        self.settings.dispatch.skip_preflight = skip;
        self
    }

    /// The scope requested on the authorize page (default `snsapi_userinfo`).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.settings.scope = scope;
        self
    }

    /// Where the JWT goes (default `X-WeChat-Jwt`).
    pub fn jwt_carrier(mut self, carrier: JwtCarrier) -> Self {
        self.settings.headers.jwt = carrier;
        self
    }

    /// Also send the plain `X-WeChat-*` headers (default off).
    pub fn plain_headers(mut self, on: bool) -> Self {
        self.settings.headers.plain_headers = on;
        self
    }

    /// All identity-header options at once.
    pub fn headers(mut self, headers: HeaderSettings) -> Self {
        self.settings.headers = headers;
        self
    }

    /// Lifetime of a pending login (default 10 minutes).
    pub fn flow_ttl(mut self, ttl: Duration) -> Self {
        self.settings.flow_ttl = ttl;
        self
    }

    /// How requests find their official account (see [`crate::layer::tenant`]); without it
    /// (default) every request is for the WeChat side's one account.
    pub fn tenants(mut self, routing: TenantRouting) -> Self {
        self.settings.tenants = Some(routing);
        self
    }

    /// The front proxies whose `X-Request-Id` is kept (default none: every id is generated);
    /// see [`LayerSettings::trusted_proxies`](super::LayerSettings::trusted_proxies).
    pub fn trusted_proxies(mut self, nets: Vec<ipnet::IpNet>) -> Self {
        self.settings.trusted_proxies = nets;
        self
    }

    /// The forward-auth endpoints for front proxies (default off); see
    /// [`ForwardAuthSettings`].
    pub fn forward_auth(mut self, settings: ForwardAuthSettings) -> Self {
        self.settings.forward_auth = settings;
        self
    }

    /// The desktop QR login bridge (default off); see [`QrSettings`].
    pub fn qr(mut self, settings: QrSettings) -> Self {
        self.settings.qr = settings;
        self
    }

    /// Where QR login tickets live (default: a [`MemoryTicketStore`] bounded by
    /// `qr.max_pending`); give a shared one (Redis) when several instances serve the site.
    pub fn tickets(mut self, tickets: Arc<dyn TicketStore>) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// Validates everything and builds the layer.
    ///
    /// # Errors
    /// [`BuildError`] naming the first missing collaborator or invalid setting.
    pub fn build(self) -> Result<WeChatAuthLayer, BuildError> {
        let mut settings = self.settings;
        let parts = self.parts;
        let master = || {
            parts
                .master_secret
                .as_ref()
                .ok_or(BuildError::Missing("master_secret"))
        };
        let cookies = match self.cookies {
            Some(cookies) => cookies,
            None => CookieCodec::new(master()?, parts.cookie.clone())
                .map_err(BuildError::MasterSecret)?,
        };
        let jwt = match self.jwt {
            Some(jwt) => jwt,
            None => JwtIssuer::new(parts.jwt.clone(), master()?).map_err(BuildError::Jwt)?,
        };
        let sessions = self
            .sessions
            .unwrap_or_else(|| Arc::new(MemoryStore::new(parts.session.clone())));
        let wechat = match (self.wechat, parts.credentials) {
            (Some(wechat), _) => wechat,
            (None, Some(mode)) => {
                let store = match parts.platform_store {
                    Some(store) => store,
                    None => Arc::new(
                        FileStore::new(
                            parts
                                .state_dir
                                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
                        )
                        .map_err(BuildError::StateDir)?,
                    ),
                };
                let settings = WeChatSettings {
                    mode,
                    client: parts.client,
                    token: parts.token,
                };
                WeChatOAuth::new(settings, store).map_err(BuildError::WeChat)?
            }
            (None, None) => return Err(BuildError::Missing("wechat credentials")),
        };
        let secure = secure_cookies(&cookies);
        if !self.public_url_set {
            // The placeholder (`http://127.0.0.1/`) can only pass with non-Secure cookies, i.e.
            // in development; with Secure cookies a forgotten public URL is an error.
            if secure {
                return Err(BuildError::Missing("public_url"));
            }
            tracing::warn!(
                public_url = %settings.public_url,
                "no public_url given; using the development placeholder"
            );
        }

        if let Some(raw) = self.prefix {
            // A trailing '/' is tolerated (`/auth/` = `/auth`).
            let trimmed = raw.strip_suffix('/').filter(|t| !t.is_empty());
            settings.dispatch.prefix =
                Prefix::parse(trimmed.unwrap_or(&raw)).map_err(|_| BuildError::InvalidPrefix)?;
        }
        let qr = settings.qr.enabled.then(|| {
            let tickets = self
                .tickets
                .unwrap_or_else(|| Arc::new(MemoryTicketStore::new(settings.qr.max_pending)));
            Arc::new(Bridge::new(&settings.qr, tickets))
        });
        Ok(WeChatAuthLayer::from_state(assemble(
            settings,
            wechat,
            sessions,
            cookies,
            jwt,
            Arc::new(ArcSwap::from_pointee(self.access)),
            qr,
        )?))
    }
}

impl WeChatAuthLayer {
    /// Starts the WeChat side's background work — in component mode the token refresher, the
    /// tenant sync and the reconciliation with WeChat ([`WeChatOAuth::start_background`]), what
    /// the sidecar starts at start-up; `None` in official-account mode, which has nothing to
    /// refresh. Call it once, inside a Tokio runtime; abort the handle to stop it.
    pub fn start_wechat_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.live.load().wechat.start_background()
    }
}

/// Validates `settings` (everything but the collaborators, which the caller has) and builds
/// the state every request shares: what [`build`](WeChatAuthLayerBuilder::build) and a reload
/// ([`WeChatAuthLayer::reload`]) both run, so that a reload refuses exactly what the builder
/// refuses.
pub(super) fn assemble(
    mut settings: LayerSettings,
    wechat: WeChatOAuth,
    sessions: Arc<dyn SessionStore>,
    cookies: CookieCodec,
    jwt: JwtIssuer,
    access: Arc<ArcSwap<AccessLists>>,
    qr: Option<Arc<Bridge>>,
) -> Result<AuthState, BuildError> {
    let origin = origin_of(&settings.public_url, !secure_cookies(&cookies))?;
    for prefix in &mut settings.dispatch.api_prefixes {
        // Same shape as the reserved prefix once trailing '/'s are dropped; `/` is all.
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || !(trimmed.is_empty() || Prefix::parse(trimmed).is_ok()) {
            return Err(BuildError::InvalidApiPrefix(prefix.clone()));
        }
        *prefix = trimmed.to_owned();
    }
    if settings.flow_ttl.is_zero() || settings.flow_ttl > Duration::from_secs(600) {
        return Err(BuildError::InvalidFlowTtl);
    }
    if let Some(problem) = settings.forward_auth.problem() {
        return Err(BuildError::InvalidForwardAuth(problem));
    }
    if let Some(problem) = settings.qr.problem() {
        return Err(BuildError::InvalidQr(problem));
    }

    let callback_url = format!("{origin}{}/callback", settings.dispatch.prefix);
    let strip = settings.headers.strip_list();
    let resolver = TenantResolver::new(
        settings.tenants.as_ref(),
        wechat.tenants().clone(),
        wechat.single_appid(),
        &settings.public_url,
    )?;
    let log_label = match &settings.tenants {
        None => true,
        Some(routing) => routing.log_label.unwrap_or_else(|| {
            wechat.tenants().mode() == crate::wechat::tenants::TenantMode::Static
                && routing.sites.len() <= LOG_LABEL_MAX_TENANTS
        }),
    };
    Ok(AuthState {
        settings,
        strip,
        origin,
        callback_url,
        wechat,
        sessions,
        cookies,
        jwt,
        resolver,
        log_label,
        access,
        qr,
    })
}

/// Whether the codec sets `Secure` cookies (read from the attributes it actually emits).
fn secure_cookies(cookies: &CookieCodec) -> bool {
    cookies
        .removal_cookie()
        .to_str()
        .ok()
        .and_then(|v| cookie::Cookie::parse(v.to_owned()).ok())
        .is_none_or(|c| c.secure().unwrap_or(false))
}

/// `scheme://host[:port]` of the public URL, refusing anything that is not a bare origin;
/// `http://` only when `http_allowed` (the cookies are not `Secure`, i.e. development).
fn origin_of(url: &Url, http_allowed: bool) -> Result<String, BuildError> {
    match url.scheme() {
        "https" => {}
        "http" if http_allowed => {}
        "http" => {
            return Err(BuildError::InvalidPublicUrl(
                "http:// with Secure cookies, which browsers drop (use https://, or non-Secure cookies in development)",
            ));
        }
        _ => return Err(BuildError::InvalidPublicUrl("scheme must be https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BuildError::InvalidPublicUrl("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BuildError::InvalidPublicUrl("credentials are not allowed"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(BuildError::InvalidPublicUrl("a path is not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BuildError::InvalidPublicUrl(
            "query and fragment are not allowed",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::persist::MemoryPlatformStore;

    const MASTER: &str = "builder tests: a master secret of at least 32 bytes";

    /// The short form without the master secret, its platform store in memory.
    fn short_form() -> WeChatAuthLayerBuilder {
        WeChatAuthLayer::builder()
            .official_account("wx0123456789abcdef".into(), AppSecret::new("oa-secret"))
            .public_url("https://app.example.com".parse().expect("url"))
            .platform_store(Arc::new(MemoryPlatformStore::new()))
    }

    #[test]
    fn the_short_form_builds_with_the_default_settings() {
        let layer = short_form()
            .master_secret(SecretString::new(MASTER))
            .build()
            .expect("layer");
        assert_eq!(
            layer.callback_url(),
            "https://app.example.com/_wxauth/callback"
        );
        assert_eq!(layer.settings().flow_ttl, LayerSettings::default().flow_ttl);
    }

    #[test]
    fn a_short_master_secret_is_an_error_not_a_panic() {
        let err = short_form()
            .master_secret(SecretString::new("31 bytes, one short of enough!"))
            .build()
            .expect_err("refused");
        assert!(matches!(err, BuildError::MasterSecret(_)), "{err:?}");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn the_master_secret_is_required_unless_both_keys_are_given() {
        let err = short_form().build().expect_err("refused");
        assert!(
            matches!(err, BuildError::Missing("master_secret")),
            "{err:?}"
        );
        let master = SecretString::new(MASTER);
        let cookies = CookieCodec::new(&master, CookieSettings::default()).expect("codec");
        let jwt = JwtIssuer::new(JwtSettings::default(), &master).expect("jwt");
        short_form()
            .cookie_codec(cookies)
            .jwt(jwt)
            .build()
            .expect("no master secret needed");
    }

    #[test]
    fn credentials_or_a_client_are_required() {
        let err = WeChatAuthLayer::builder()
            .public_url("https://app.example.com".parse().expect("url"))
            .master_secret(SecretString::new(MASTER))
            .build()
            .expect_err("refused");
        assert!(
            matches!(err, BuildError::Missing("wechat credentials")),
            "{err:?}"
        );
    }

    #[test]
    fn the_platform_store_lives_in_the_state_dir() {
        let dir = std::env::temp_dir().join(format!(
            "wop-builder-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        WeChatAuthLayer::builder()
            .official_account("wx0123456789abcdef".into(), AppSecret::new("oa-secret"))
            .public_url("https://app.example.com".parse().expect("url"))
            .master_secret(SecretString::new(MASTER))
            .state_dir(&dir)
            .build()
            .expect("layer");
        let created = dir.is_dir();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(created, "{} was not created", dir.display());
    }

    #[test]
    fn public_url_must_be_an_origin() {
        let ok = |s: &str, http_allowed| origin_of(&s.parse().expect("url"), http_allowed);
        assert_eq!(
            ok("https://app.example.com", false).expect("ok"),
            "https://app.example.com"
        );
        assert_eq!(
            ok("https://app.example.com:8443/", false).expect("ok"),
            "https://app.example.com:8443"
        );
        assert_eq!(
            ok("http://127.0.0.1:8080", true).expect("ok"),
            "http://127.0.0.1:8080"
        );
        assert!(ok("http://127.0.0.1:8080", false).is_err());
        assert!(ok("https://app.example.com/base", false).is_err());
        assert!(ok("https://app.example.com/?a=b", false).is_err());
        assert!(ok("https://u:p@app.example.com/", false).is_err());
        assert!(ok("ftp://app.example.com/", false).is_err());
    }
}
