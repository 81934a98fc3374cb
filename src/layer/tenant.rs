//! Request → tenant resolution (issue 11): which official account (authorizer, 公众号) a request
//! is for. Pure — no I/O, no await — and built once by the layer builder; every lookup is a
//! hash-map probe (plus the registry's O(1) [`Tenants::status`]).
//!
//! First match wins:
//!
//! 1. **exact host**: a host listed in a tenant's `hosts`;
//! 2. **host pattern** (`{appid}.wx.example.com`, WeChat's `$APPID$` sub-domain convention): the
//!    leftmost label must look like an appid (`^wx[0-9a-f]{16}$`) and name a tenant the registry
//!    knows (any status but unknown: a revoked one resolves, and its login is refused with 403);
//! 3. **path prefix** (`/t/{appid}/…`, opt-in), on the *normalized* path: one host, one cookie
//!    jar; the segment must be a lower-case appid the registry knows;
//! 4. **query** (`/_wxauth/login?appid=…`, opt-in): the login endpoint only
//!    ([`TenantResolver::by_query`], asked by the layer, never here).
//!
//! No match is [`TenantRejection::Unknown`] (404 page `unknown_tenant`, never a login
//! redirect). In the single-tenant shorthand (no routing configured) every request resolves to
//! the one account, on any host, as before multi-tenancy.
//!
//! **Hosts** are compared in one spelling: ASCII lower-case, one trailing dot removed, the port
//! ignored (a tenant is a host name; the callback URL takes its scheme and port from the public
//! URL). The host is the `Host` header or the URI authority (HTTP/2 `:authority`, absolute
//! form); both present and different, or `Host` repeated, is [`TenantRejection::BadHost`] (400).
//! An uppercase or oddly spelled `Host` therefore resolves exactly like its normal form and is
//! never a way around a tenant's routing.

use std::{borrow::Cow, collections::HashMap, fmt, sync::Arc};

use http::{HeaderMap, Uri, header::HOST, uri::Authority};
use serde::Deserialize;

use super::dispatch::Prefix;
use crate::wechat::{
    AuthorizerAppId,
    tenants::{TenantStatus, Tenants},
};

/// Below or at this many configured tenants (static mode), log lines name the tenant's appid by
/// default (`tenants.log_label` overrides it); above it, or in dynamic mode, they do not, so
/// that log labels stay of bounded cardinality.
pub const LOG_LABEL_MAX_TENANTS: usize = 100;

/// The placeholder of [`HostPattern`] and [`PathPrefix`].
const APPID_PLACEHOLDER: &str = "{appid}";

/// Whether `s` looks like an appid: `wx` and 16 lower-case hex digits.
pub fn looks_like_appid(s: &str) -> bool {
    s.len() == 18
        && s.starts_with("wx")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a host name, pattern or prefix was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TenantValueError(String);

/// `host` (`Host` header or URI authority) in the one spelling hosts are compared in: without
/// port and user info, ASCII lower-case, one trailing dot removed. `None` if it is not a valid
/// authority.
pub fn normalize_host(host: &str) -> Option<String> {
    normalized_host(host).map(Cow::into_owned)
}

/// [`normalize_host`], borrowing from `host` when it is already in that spelling (no copy: the
/// request's host is normalized on every request).
fn normalized_host(host: &str) -> Option<Cow<'_, str>> {
    let authority: Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = authority.host();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.ends_with('.') {
        return None;
    }
    // Without user info the host is where the authority (a copy of `host`) starts.
    match host.get(..name.len()) {
        Some(same) if same == name && !name.bytes().any(|b| b.is_ascii_uppercase()) => {
            Some(Cow::Borrowed(same))
        }
        _ => Some(Cow::Owned(name.to_ascii_lowercase())),
    }
}

/// A tenant's host name, normalized ([`normalize_host`]); no port, no wildcard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct TenantHost(String);

impl TenantHost {
    /// The host name, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantHost {
    type Error = TenantValueError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        match normalize_host(&raw) {
            Some(host) if !raw.contains(':') || raw.starts_with('[') && raw.ends_with(']') => {
                if host.contains('*') || host.contains(APPID_PLACEHOLDER) {
                    Err(TenantValueError(format!(
                        "{raw:?}: a tenant host is one exact name (use tenants.host_pattern for {{appid}} hosts)"
                    )))
                } else {
                    Ok(TenantHost(host))
                }
            }
            _ => Err(TenantValueError(format!(
                "{raw:?} is not a host name (no scheme, port, path or user info)"
            ))),
        }
    }
}

impl fmt::Display for TenantHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{appid}.wx.example.com`: hosts whose leftmost label is a tenant's appid.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPattern {
    /// `.wx.example.com` (lower-case, with the leading dot).
    suffix: String,
}

impl HostPattern {
    /// The domain under which appid sub-domains live (`wx.example.com`).
    pub fn domain(&self) -> &str {
        &self.suffix[1..]
    }

    /// The appid-shaped leftmost label of `host` (normalized), if `host` is `<label>.<domain>`.
    fn label<'h>(&self, host: &'h str) -> Option<&'h str> {
        let label = host.strip_suffix(self.suffix.as_str())?;
        looks_like_appid(label).then_some(label)
    }
}

impl TryFrom<String> for HostPattern {
    type Error = TenantValueError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let refused = || {
            TenantValueError(format!(
                "{raw:?} must look like \"{{appid}}.wx.example.com\": {{appid}} as the whole leftmost label of a host name"
            ))
        };
        let rest = raw
            .strip_prefix(APPID_PLACEHOLDER)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(refused)?;
        let domain = TenantHost::try_from(rest.to_owned()).map_err(|_| refused())?;
        if !domain.as_str().contains('.') || domain.as_str().starts_with('[') {
            return Err(refused());
        }
        Ok(HostPattern {
            suffix: format!(".{}", domain.as_str()),
        })
    }
}

/// `/t/{appid}`: tenants addressed by a path prefix on one host. The part before `/{appid}`
/// follows the rule of the reserved [`Prefix`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathPrefix {
    /// `/t`.
    base: Prefix,
}

impl PathPrefix {
    /// The part before the appid segment (`/t`).
    pub fn base(&self) -> &str {
        self.base.as_str()
    }
}

impl TryFrom<String> for PathPrefix {
    type Error = TenantValueError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.strip_suffix("/{appid}")
            .and_then(|base| Prefix::parse(base).ok())
            .map(|base| PathPrefix { base })
            .ok_or_else(|| {
                TenantValueError(format!(
                    "{raw:?} must look like \"/t/{{appid}}\": a normalized path ending in the segment {{appid}}"
                ))
            })
    }
}

/// What happens to a tenant's sessions when it revokes the platform (`unauthorized` push, or
/// gone from the authorizer list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnauthorized {
    /// New logins are refused (403); existing sessions run until they expire.
    #[default]
    BlockLogin,
    /// New logins are refused and its existing sessions end at once
    /// ([`SessionStore::end_sessions_of`](crate::session::SessionStore::end_sessions_of), by
    /// the task of [`WeChatAuthLayer::start_background`](super::WeChatAuthLayer::start_background)).
    EndSessions,
}

/// One configured official account and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSite {
    /// The authorizer appid.
    pub appid: AuthorizerAppId,
    /// Exact host names that serve it (each a 公众号开发域名 or `$APPID$` sub-domain of one).
    pub hosts: Vec<TenantHost>,
    /// A display name (operators' logs and docs).
    pub name: Option<String>,
    /// The JWT `aud` for its users (default: the issuer's audience).
    pub audience: Option<String>,
}

/// How requests find their tenant ([`LayerSettings::tenants`](super::LayerSettings::tenants);
/// `None` there is the single-tenant shorthand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantRouting {
    /// The configured accounts.
    pub sites: Vec<TenantSite>,
    /// `{appid}.wx.example.com`.
    pub host_pattern: Option<HostPattern>,
    /// `/t/{appid}`.
    pub path_prefix: Option<PathPrefix>,
    /// Accept `appid` on the login endpoint (for tenants the registry knows).
    pub allow_query_appid: bool,
    /// Block logins only, or also end sessions, when a tenant revokes the platform.
    pub on_unauthorized: OnUnauthorized,
    /// Name the tenant in log lines: `None` decides by [`LOG_LABEL_MAX_TENANTS`].
    pub log_label: Option<bool>,
}

/// How a request's tenant was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedBy {
    /// The single-tenant shorthand: every request is the one account.
    Single,
    /// An exact host.
    Host,
    /// The host pattern.
    Pattern,
    /// The path prefix.
    PathPrefix,
    /// The `appid` parameter of the login endpoint.
    Query,
}

/// Why a request has no tenant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenantRejection {
    /// Two different hosts (`Host` and the URI authority), several `Host` headers, or a `Host`
    /// that is not a host name: 400.
    #[error("ambiguous or invalid host")]
    BadHost,
    /// Nothing matched: 404 `unknown_tenant`.
    #[error("no official account is served here")]
    Unknown,
    /// The account revoked the platform: 403 `tenant_revoked` (logins only).
    #[error("the official account revoked the platform")]
    Revoked,
    /// The account did not grant the web permission set (4): 403 `tenant_no_web_permission`.
    #[error("the official account did not grant the web permission set")]
    NoWebPermission,
}

/// What the builder precomputed for one configured tenant.
#[derive(Debug)]
struct Site {
    appid: AuthorizerAppId,
    audience: Option<Arc<str>>,
}

/// An exact host: its tenant and its origin (`scheme://host[:port]`).
#[derive(Debug)]
struct HostEntry {
    site: Arc<Site>,
    origin: Arc<str>,
}

/// The tenant a request is for. Cheap to build (an appid clone and a few `Arc`s).
#[derive(Clone, Debug)]
pub struct ResolvedTenant {
    appid: AuthorizerAppId,
    by: ResolvedBy,
    status: TenantStatus,
    audience: Option<Arc<str>>,
    /// `scheme://host[:port]` this tenant is served on (its callback's origin).
    origin: Arc<str>,
    /// `/t/{appid}` when resolved by the path prefix, else empty.
    mount: Arc<str>,
}

impl ResolvedTenant {
    /// The authorizer appid.
    pub fn appid(&self) -> &AuthorizerAppId {
        &self.appid
    }

    /// How it was found.
    pub fn by(&self) -> ResolvedBy {
        self.by
    }

    /// Its status when it was resolved.
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// The JWT audience configured for it, if any.
    pub fn audience(&self) -> Option<&Arc<str>> {
        self.audience.as_ref()
    }

    /// `scheme://host[:port]` of its pages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `/t/{appid}` when resolved by the path prefix, else `""`: the part of the path before
    /// the application's own paths (and before the reserved prefix).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Whether the tenant was chosen by where the request was sent (host or path), so that a
    /// callback must come back to the same tenant.
    pub fn is_located(&self) -> bool {
        matches!(
            self.by,
            ResolvedBy::Host | ResolvedBy::Pattern | ResolvedBy::PathPrefix
        )
    }

    /// `Ok` when a login may start or complete for it now.
    ///
    /// # Errors
    /// [`TenantRejection::Revoked`], [`TenantRejection::NoWebPermission`] or
    /// [`TenantRejection::Unknown`] naming the reason.
    pub fn check_login(&self) -> Result<(), TenantRejection> {
        rejection_for(self.status).map_or(Ok(()), Err)
    }

    /// `path` with this tenant's [`mount`](Self::mount) removed (the path the application
    /// routes on); `path` itself for any other resolution.
    pub fn local_path<'p>(&self, path: &'p str) -> &'p str {
        match path.strip_prefix(&*self.mount) {
            Some("") => "/",
            Some(rest) => rest,
            None => path,
        }
    }
}

/// The 403/404 a status means for a login, `None` when logins are allowed.
pub fn rejection_for(status: TenantStatus) -> Option<TenantRejection> {
    match status {
        TenantStatus::Active | TenantStatus::Configured => None,
        TenantStatus::Revoked => Some(TenantRejection::Revoked),
        TenantStatus::NoWebPermission => Some(TenantRejection::NoWebPermission),
        TenantStatus::Unknown => Some(TenantRejection::Unknown),
    }
}

/// The resolution table, built once by the layer builder.
#[derive(Debug)]
pub struct TenantResolver {
    tenants: Tenants,
    /// The single-tenant shorthand's account.
    single: Option<Arc<Site>>,
    by_host: HashMap<String, HostEntry>,
    by_appid: HashMap<AuthorizerAppId, Arc<Site>>,
    pattern: Option<HostPattern>,
    path_base: Option<String>,
    query: bool,
    /// `scheme://public-host[:port]`.
    public_origin: Arc<str>,
    /// `scheme://` and `:port` of the public URL, for tenant origins.
    scheme: String,
    port: String,
    empty: Arc<str>,
}

/// Why a resolver could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolverError {
    /// Two tenants (or one twice) list the same host.
    #[error("host {0} is listed twice")]
    DuplicateHost(String),
    /// A tenant is listed twice.
    #[error("tenant {0} is listed twice")]
    DuplicateTenant(String),
    /// Without routing, the WeChat side must have exactly one account.
    #[error(
        "several official accounts need tenant routing (hosts, a host pattern or a path prefix)"
    )]
    NoSingleTenant,
}

impl TenantResolver {
    /// Builds the table for `routing` (`None`: the single-tenant shorthand for `single`), with
    /// origins on `public_url`'s scheme and port.
    ///
    /// # Errors
    /// [`ResolverError`] for a host or tenant listed twice, or no routing with several accounts.
    pub fn new(
        routing: Option<&TenantRouting>,
        tenants: Tenants,
        single: Option<&AuthorizerAppId>,
        public_url: &url::Url,
    ) -> Result<Self, ResolverError> {
        let public_origin: Arc<str> = public_url.origin().ascii_serialization().into();
        let scheme = format!("{}://", public_url.scheme());
        let port = public_url
            .port()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let mut resolver = TenantResolver {
            tenants,
            single: None,
            by_host: HashMap::new(),
            by_appid: HashMap::new(),
            pattern: None,
            path_base: None,
            query: false,
            public_origin,
            scheme,
            port,
            empty: Arc::from(""),
        };
        let Some(routing) = routing else {
            let appid = single.ok_or(ResolverError::NoSingleTenant)?;
            resolver.single = Some(Arc::new(Site {
                appid: appid.clone(),
                audience: None,
            }));
            return Ok(resolver);
        };
        for site in &routing.sites {
            let entry = Arc::new(Site {
                appid: site.appid.clone(),
                audience: site.audience.as_deref().map(Arc::from),
            });
            if resolver
                .by_appid
                .insert(site.appid.clone(), Arc::clone(&entry))
                .is_some()
            {
                return Err(ResolverError::DuplicateTenant(site.appid.to_string()));
            }
            for host in &site.hosts {
                let origin = resolver.origin_of(host.as_str()).into();
                let previous = resolver.by_host.insert(
                    host.as_str().to_owned(),
                    HostEntry {
                        site: Arc::clone(&entry),
                        origin,
                    },
                );
                if previous.is_some() {
                    return Err(ResolverError::DuplicateHost(host.to_string()));
                }
            }
        }
        resolver.pattern = routing.host_pattern.clone();
        resolver.path_base = routing
            .path_prefix
            .as_ref()
            .map(|p| format!("{}/", p.base()));
        resolver.query = routing.allow_query_appid;
        Ok(resolver)
    }

    /// The registry statuses come from.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Whether this is the single-tenant shorthand.
    pub fn is_single(&self) -> bool {
        self.single.is_some()
    }

    /// Whether the login endpoint accepts `appid`.
    pub fn allows_query(&self) -> bool {
        self.query
    }

    /// The configured audience of `appid`, if any.
    pub fn audience_of(&self, appid: &AuthorizerAppId) -> Option<&Arc<str>> {
        self.by_appid.get(appid).and_then(|s| s.audience.as_ref())
    }

    fn origin_of(&self, host: &str) -> String {
        format!("{}{host}{}", self.scheme, self.port)
    }

    /// The tenant of a request to `host` (normalized, see [`request_host`]) with the normalized
    /// path `path`; see the module docs for the order.
    ///
    /// # Errors
    /// [`TenantRejection::Unknown`] when nothing matches.
    pub fn resolve(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Result<ResolvedTenant, TenantRejection> {
        if let Some(site) = &self.single {
            return Ok(self.resolved(
                site.appid.clone(),
                ResolvedBy::Single,
                site.audience.clone(),
                Arc::clone(&self.public_origin),
                Arc::clone(&self.empty),
            ));
        }
        if let Some(host) = host {
            if let Some(entry) = self.by_host.get(host) {
                return Ok(self.resolved(
                    entry.site.appid.clone(),
                    ResolvedBy::Host,
                    entry.site.audience.clone(),
                    Arc::clone(&entry.origin),
                    Arc::clone(&self.empty),
                ));
            }
            if let Some(label) = self.pattern.as_ref().and_then(|p| p.label(host)) {
                let appid = AuthorizerAppId::new(label);
                if self.tenants.status(&appid) != TenantStatus::Unknown {
                    let audience = self.audience_of(&appid).cloned();
                    let origin = self.origin_of(host).into();
                    return Ok(self.resolved(
                        appid,
                        ResolvedBy::Pattern,
                        audience,
                        origin,
                        Arc::clone(&self.empty),
                    ));
                }
            }
        }
        if let Some(base) = &self.path_base {
            if let Some(rest) = path.strip_prefix(base.as_str()) {
                let segment = rest.split('/').next().unwrap_or_default();
                if looks_like_appid(segment) {
                    let appid = AuthorizerAppId::new(segment);
                    if self.tenants.status(&appid) != TenantStatus::Unknown {
                        let audience = self.audience_of(&appid).cloned();
                        let mount = path[..base.len() + segment.len()].into();
                        return Ok(self.resolved(
                            appid,
                            ResolvedBy::PathPrefix,
                            audience,
                            Arc::clone(&self.public_origin),
                            mount,
                        ));
                    }
                }
            }
        }
        Err(TenantRejection::Unknown)
    }

    /// The tenant named by the login endpoint's `appid` parameter (only when
    /// [`allows_query`](Self::allows_query)), served on the public origin.
    ///
    /// # Errors
    /// [`TenantRejection::Unknown`] when query selection is off or the appid is not a tenant.
    pub fn by_query(&self, appid: &str) -> Result<ResolvedTenant, TenantRejection> {
        if !self.query || !looks_like_appid(appid) {
            return Err(TenantRejection::Unknown);
        }
        let appid = AuthorizerAppId::new(appid);
        if self.tenants.status(&appid) == TenantStatus::Unknown {
            return Err(TenantRejection::Unknown);
        }
        let audience = self.audience_of(&appid).cloned();
        Ok(self.resolved(
            appid,
            ResolvedBy::Query,
            audience,
            Arc::clone(&self.public_origin),
            Arc::clone(&self.empty),
        ))
    }

    fn resolved(
        &self,
        appid: AuthorizerAppId,
        by: ResolvedBy,
        audience: Option<Arc<str>>,
        origin: Arc<str>,
        mount: Arc<str>,
    ) -> ResolvedTenant {
        let status = self.tenants.status(&appid);
        ResolvedTenant {
            appid,
            by,
            status,
            audience,
            origin,
            mount,
        }
    }
}

/// The request's host, normalized ([`normalize_host`]): the `Host` header, or the URI's
/// authority (HTTP/2 `:authority`, absolute-form targets); `None` when neither is present.
///
/// # Errors
/// [`TenantRejection::BadHost`] for several `Host` headers, an invalid one, or a `Host` and an
/// authority that name different hosts.
pub fn request_host<'r>(
    uri: &'r Uri,
    headers: &'r HeaderMap,
) -> Result<Option<Cow<'r, str>>, TenantRejection> {
    let mut values = headers.get_all(HOST).iter();
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .ok()
                .and_then(normalized_host)
                .ok_or(TenantRejection::BadHost)?,
        ),
        (Some(_), Some(_)) => return Err(TenantRejection::BadHost),
    };
    let authority = match uri.authority() {
        Some(a) => Some(normalized_host(a.as_str()).ok_or(TenantRejection::BadHost)?),
        None => None,
    };
    match (header, authority) {
        (Some(h), Some(a)) if h != a => Err(TenantRejection::BadHost),
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

#[cfg(test)]
mod tests;
