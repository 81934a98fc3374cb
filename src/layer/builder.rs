//! The builder of [`WeChatAuthLayer`](super::WeChatAuthLayer): collects the collaborators and
//! settings, validates everything once, and precomputes what every request needs.

use std::{sync::Arc, time::Duration};

use http::Method;
use url::Url;

use super::{
    LayerSettings, WeChatAuthLayer,
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
    jwt::JwtIssuer,
    session::{CookieCodec, MemoryTicketStore, SessionStore, TicketStore},
    wechat::{Scope, oauth::WeChatOAuth},
};

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
}

/// Builds a [`WeChatAuthLayer`]: `WeChatAuthLayer::builder().wechat(..).sessions(..)
/// .cookie_codec(..).jwt(..).public_url(..).build()`.
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
}

impl WeChatAuthLayerBuilder {
    /// Replaces all settings at once (what the configuration loader uses); call it before the
    /// finer-grained setters.
    pub fn settings(mut self, settings: LayerSettings) -> Self {
        self.settings = settings;
        self.prefix = None;
        self.public_url_set = true;
        self
    }

    /// The WeChat OAuth client (component or official-account mode). Required.
    pub fn wechat(mut self, wechat: WeChatOAuth) -> Self {
        self.wechat = Some(wechat);
        self
    }

    /// The session store. Required.
    pub fn sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The cookie codec (names, attributes, encryption key). Required.
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

    /// The JWT issuer. Required.
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
        let wechat = self.wechat.ok_or(BuildError::Missing("wechat"))?;
        let sessions = self.sessions.ok_or(BuildError::Missing("sessions"))?;
        let cookies = self.cookies.ok_or(BuildError::Missing("cookie_codec"))?;
        let jwt = self.jwt.ok_or(BuildError::Missing("jwt"))?;
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
