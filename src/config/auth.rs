//! `[auth]`: the reserved prefix, the public routes and the API routes of the layer
//! ([`crate::layer`]).

use serde::Deserialize;

use super::{Config, ConfigProblem, FromConfigStr, Problems};
use crate::identity::HeaderSettings;
use crate::layer::{DispatchSettings, LayerSettings, Prefix, SkipRule};
use crate::wechat::Scope;

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Prefix of the reserved endpoints (`login`, `callback`, `events`, …), checked while
    /// deserializing ([`Prefix`]).
    #[serde(default)]
    pub prefix: Prefix,
    /// Requests that pass without a session: `"METHOD /path"` or `"* /path/*"` (a trailing `*`
    /// matches a whole subtree). Paths are normalized before matching; the query never counts.
    #[serde(default, deserialize_with = "super::parsed_list")]
    pub skip: Vec<SkipRule>,
    /// Path prefixes of API routes: without a session they get 401 JSON, never a redirect.
    #[serde(default)]
    pub api_prefixes: Vec<String>,
    /// Let CORS preflights (`OPTIONS` + `Access-Control-Request-Method`) through without a
    /// session (browsers never send cookies on them).
    #[serde(default)]
    pub skip_preflight: bool,
    /// `snsapi_userinfo` (nickname and avatar, consent page) or `snsapi_base` (openid only).
    #[serde(default = "default_scope")]
    pub scope: Scope,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            prefix: Prefix::default(),
            skip: Vec::new(),
            api_prefixes: Vec::new(),
            skip_preflight: false,
            scope: default_scope(),
        }
    }
}

fn default_scope() -> Scope {
    LayerSettings::default().scope
}

/// Parses one skip rule `"METHOD /path"` (METHOD may be `*`); returns (method, path).
pub fn parse_skip_rule(rule: &str) -> Result<(Option<http::Method>, String), String> {
    let mut parts = rule.split_whitespace();
    let (method, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), None) => (m, p),
        (Some(p), None, None) if p.starts_with('/') => ("*", p),
        _ => {
            return Err(format!(
                "{rule:?} must look like \"GET /path\" or \"* /path/*\""
            ));
        }
    };
    if !path.starts_with('/') {
        return Err(format!("path in {rule:?} must start with '/'"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!(
            "{rule:?}: skip rules match paths only, never queries"
        ));
    }
    let method = if method == "*" {
        None
    } else {
        Some(
            http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{method:?} is not an HTTP method"))?,
        )
    };
    Ok((method, path.to_owned()))
}

/// A skip rule as written in the file, checked by the same [`SkipRule::new`] the layer uses.
impl FromConfigStr for SkipRule {
    fn from_config_str(rule: &str) -> Result<Self, String> {
        let (method, path) = parse_skip_rule(rule)?;
        SkipRule::new(method, &path).map_err(|e| format!("{rule:?}: {e}"))
    }
}

impl AuthConfig {
    pub(super) fn check(&self, problems: &mut Problems) {
        for (i, p) in self.api_prefixes.iter().enumerate() {
            if !p.starts_with('/') {
                problems.bad(&format!("auth.api_prefixes[{i}]"), "must start with '/'");
            }
        }
    }
}

impl Config {
    /// `[auth]` + `server.public_url` + the `[jwt]` headers → the layer's settings.
    ///
    /// # Errors
    /// `jwt.header` is not a header name.
    pub fn layer_settings(&self) -> Result<LayerSettings, ConfigProblem> {
        Ok(LayerSettings {
            public_url: self.server.public_url.clone(),
            dispatch: DispatchSettings {
                prefix: self.auth.prefix.clone(),
                skip: self.auth.skip.clone(),
                api_prefixes: self.auth.api_prefixes.clone(),
                skip_preflight: self.auth.skip_preflight,
            },
            scope: self.auth.scope,
            headers: HeaderSettings {
                jwt: self.jwt.carrier()?,
                plain_headers: self.jwt.plain_headers,
            },
            tenants: self.tenants.as_ref().map(super::TenantsConfig::routing),
            forward_auth: self.forward_auth.settings(),
            trusted_proxies: self.server.trusted_proxies.clone(),
            qr: self.qr.settings(),
            ..LayerSettings::default()
        })
    }
}
