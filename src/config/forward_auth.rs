//! `[forward_auth]`: the forward-auth endpoints through which a front proxy (nginx, Traefik,
//! Caddy, Envoy) asks whether a request may pass ([`ForwardAuthSettings`]).

use ipnet::IpNet;
use serde::Deserialize;

use super::Problems;
use crate::layer::ForwardAuthSettings;

/// `[forward_auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Answer `{prefix}/auth/request`, `auth/forward` and `auth/envoy/…` (default off).
    #[serde(default)]
    pub enabled: bool,
    /// The front proxies that may ask (CIDRs or single addresses; default loopback:
    /// `127.0.0.0/8`, `::1`).
    #[serde(
        default = "default_allowed_callers",
        deserialize_with = "super::parsed_list"
    )]
    pub allowed_callers: Vec<IpNet>,
    /// Whether `auth.skip` rules (and `auth.skip_preflight`) let original requests pass without
    /// a session (default off).
    #[serde(default)]
    pub apply_skip_rules: bool,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        let settings = ForwardAuthSettings::default();
        Self {
            enabled: settings.enabled,
            allowed_callers: settings.allowed_callers,
            apply_skip_rules: settings.apply_skip_rules,
        }
    }
}

fn default_allowed_callers() -> Vec<IpNet> {
    ForwardAuthSettings::default().allowed_callers
}

impl ForwardAuthConfig {
    /// The layer's settings.
    pub fn settings(&self) -> ForwardAuthSettings {
        ForwardAuthSettings {
            enabled: self.enabled,
            allowed_callers: self.allowed_callers.clone(),
            apply_skip_rules: self.apply_skip_rules,
        }
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        if let Some(problem) = self.settings().problem() {
            problems.bad("forward_auth.allowed_callers", problem);
        }
    }
}
