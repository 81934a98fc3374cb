//! `[tenants]`: many official accounts behind one third-party platform (component mode only).
//!
//! Without this section `wechat.appid` is the single-tenant shorthand: one account, every host,
//! exactly the behaviour before tenants existed. With it, the accounts are listed as
//! `[[tenants.authorizer]]` (and `wechat.appid` must be left out), and requests find theirs by
//! host, host pattern, path prefix or the login's `appid` parameter
//! ([`crate::layer::tenant`]). Values deserialize straight into the layer's typed values
//! ([`TenantHost`], [`HostPattern`], [`PathPrefix`]), so a bad one is reported at its key path.
//!
//! `redirect_domains` are the platform's 公众号开发域名 (at most 3, set on open.weixin.qq.com):
//! WeChat redirects a login only to such a domain or to an `$APPID$` sub-domain of it for that
//! account. When the list is given, every tenant host must be one of them or
//! `<its appid>.<one of them>`, and the host pattern's domain must be one of them. When it is
//! empty nothing can be checked: `--check` passes and start-up logs a warning (development on
//! loopback names needs no domains).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::Problems;
use crate::layer::tenant::{
    HostPattern, OnUnauthorized, PathPrefix, TenantHost, TenantRouting, TenantSite,
    looks_like_appid,
};
use crate::wechat::AuthorizerAppId;
use crate::wechat::tenants::{DEFAULT_RECONCILE_INTERVAL, TenantMode, TenantSettings};

/// Most 公众号开发域名 a platform may register (WeChat's limit).
pub const MAX_REDIRECT_DOMAINS: usize = 3;

/// `[tenants]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// `static` (only the listed accounts) or `dynamic` (any account that authorized the
    /// platform with the web permission set).
    #[serde(default = "default_mode")]
    pub mode: TenantMode,
    /// `{appid}.wx.example.com`: hosts whose leftmost label is an active tenant's appid.
    #[serde(default)]
    pub host_pattern: Option<HostPattern>,
    /// `/t/{appid}`: tenants addressed by path on any host (opt-in).
    #[serde(default)]
    pub path_prefix: Option<PathPrefix>,
    /// Accept `/_wxauth/login?appid=…` for known tenants (opt-in; the seed's style).
    #[serde(default)]
    pub allow_query_appid: bool,
    /// `block_login` (default) or `end_sessions` when an account revokes the platform.
    #[serde(default)]
    pub on_unauthorized: OnUnauthorized,
    /// Reconcile with WeChat's authorizer list at start and then this often, in seconds; 0 never.
    #[serde(default = "default_reconcile")]
    pub reconcile_interval_secs: u64,
    /// The platform's 公众号开发域名 (at most 3), to check tenant hosts against.
    #[serde(default)]
    pub redirect_domains: Vec<TenantHost>,
    /// Name the tenant (appid) in log lines; default: only in static mode with at most
    /// [`LOG_LABEL_MAX_TENANTS`](crate::layer::tenant::LOG_LABEL_MAX_TENANTS) tenants.
    #[serde(default)]
    pub log_label: Option<bool>,
    /// The accounts (`[[tenants.authorizer]]`).
    #[serde(default, rename = "authorizer")]
    pub authorizers: Vec<AuthorizerConfig>,
}

/// `[[tenants.authorizer]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfig {
    /// The official account's appid.
    pub appid: AuthorizerAppId,
    /// Exact hosts that serve it.
    #[serde(default)]
    pub hosts: Vec<TenantHost>,
    /// A display name (logs, docs).
    #[serde(default)]
    pub name: Option<String>,
    /// The JWT `aud` for its users (default `jwt.audience`).
    #[serde(default)]
    pub audience: Option<String>,
}

fn default_mode() -> TenantMode {
    TenantMode::Static
}

fn default_reconcile() -> u64 {
    DEFAULT_RECONCILE_INTERVAL.as_secs()
}

impl TenantsConfig {
    /// The cross-field rules; `component` is whether `wechat.mode` is component.
    pub(super) fn check(&self, component: bool, wechat_appid: bool, problems: &mut Problems) {
        if !component {
            problems.bad(
                "tenants",
                "exists only in component mode (wechat.mode = \"component\")",
            );
        }
        if wechat_appid {
            problems.bad(
                "wechat.appid",
                "must be left out when [tenants] is set: list the account as [[tenants.authorizer]]",
            );
        }
        if self.mode == TenantMode::Static && self.authorizers.is_empty() {
            problems.bad(
                "tenants.authorizer",
                "static mode needs at least one [[tenants.authorizer]]",
            );
        }
        if self.mode == TenantMode::Dynamic
            && self.host_pattern.is_none()
            && self.path_prefix.is_none()
            && !self.allow_query_appid
            && self.authorizers.is_empty()
        {
            problems.bad(
                "tenants.mode",
                "dynamic mode needs host_pattern, path_prefix or allow_query_appid to reach accounts that are not listed",
            );
        }
        if self.redirect_domains.len() > MAX_REDIRECT_DOMAINS {
            problems.bad(
                "tenants.redirect_domains",
                format!("WeChat allows at most {MAX_REDIRECT_DOMAINS} 公众号开发域名"),
            );
        }
        if let Some(pattern) = &self.host_pattern {
            if !self.redirect_domains.is_empty()
                && !self
                    .redirect_domains
                    .iter()
                    .any(|d| d.as_str() == pattern.domain())
            {
                problems.bad(
                    "tenants.host_pattern",
                    format!(
                        "{}: WeChat redirects only to $APPID$ sub-domains of a 公众号开发域名; add {} to tenants.redirect_domains",
                        pattern.domain(),
                        pattern.domain()
                    ),
                );
            }
        }
        let mut appids = HashSet::new();
        let mut hosts = HashSet::new();
        for (i, a) in self.authorizers.iter().enumerate() {
            let key = format!("tenants.authorizer[{i}]");
            if !looks_like_appid(a.appid.as_str()) {
                problems.bad(
                    &format!("{key}.appid"),
                    "must look like wx followed by 16 lower-case hex characters",
                );
            }
            if !appids.insert(a.appid.as_str()) {
                problems.bad(&format!("{key}.appid"), "is listed twice");
            }
            if a.audience.as_deref().is_some_and(str::is_empty) {
                problems.bad(&format!("{key}.audience"), "must not be empty");
            }
            for (j, host) in a.hosts.iter().enumerate() {
                let host_key = format!("{key}.hosts[{j}]");
                if !hosts.insert(host.as_str()) {
                    problems.bad(&host_key, "is listed twice");
                }
                if !self.redirect_domains.is_empty()
                    && !redirect_host_allowed(host, &a.appid, &self.redirect_domains)
                {
                    problems.bad(
                        &host_key,
                        format!(
                            "{host} is neither a 公众号开发域名 in tenants.redirect_domains nor {}.<one of them>: WeChat would refuse the redirect (10003)",
                            a.appid
                        ),
                    );
                }
            }
        }
    }

    /// Whether the tenant hosts could be checked (a warning for start-up otherwise).
    pub fn unchecked_hosts_warning(&self) -> Option<&'static str> {
        let has_hosts =
            self.host_pattern.is_some() || self.authorizers.iter().any(|a| !a.hosts.is_empty());
        (has_hosts && self.redirect_domains.is_empty()).then_some(
            "tenants.redirect_domains is empty: tenant hosts are not checked against the platform's 公众号开发域名",
        )
    }

    /// The WeChat side's tenant settings.
    pub fn tenant_settings(&self) -> TenantSettings {
        let mut settings = TenantSettings::new(
            self.mode,
            self.authorizers.iter().map(|a| a.appid.clone()).collect(),
        );
        settings.reconcile_interval = (self.reconcile_interval_secs > 0)
            .then(|| Duration::from_secs(self.reconcile_interval_secs));
        settings
    }

    /// The layer's routing settings.
    pub fn routing(&self) -> TenantRouting {
        TenantRouting {
            sites: self
                .authorizers
                .iter()
                .map(|a| TenantSite {
                    appid: a.appid.clone(),
                    hosts: a.hosts.clone(),
                    name: a.name.clone(),
                    audience: a.audience.clone(),
                })
                .collect(),
            host_pattern: self.host_pattern.clone(),
            path_prefix: self.path_prefix.clone(),
            allow_query_appid: self.allow_query_appid,
            on_unauthorized: self.on_unauthorized,
            log_label: self.log_label,
        }
    }
}

/// `host` is one of `domains`, or `<appid>.<one of them>` (WeChat's `$APPID$` rule).
fn redirect_host_allowed(
    host: &TenantHost,
    appid: &AuthorizerAppId,
    domains: &[TenantHost],
) -> bool {
    domains.iter().any(|d| {
        host.as_str() == d.as_str()
            || host
                .as_str()
                .strip_suffix(d.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| label == appid.as_str())
    })
}
