//! `[qr]`: the desktop QR login bridge ([`QrSettings`]): desktop browsers log in by scanning a
//! QR code with WeChat.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, ResolvedSecrets, wechat::looks_like_appid};
use crate::layer::{QrDesktopLogin, QrSettings};
use crate::secret::SecretString;
use crate::wechat::{AppSecret, website::WebsiteAppId};

/// `[qr]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrConfig {
    /// Serve the QR login page to desktop browsers (default off).
    #[serde(default)]
    pub enabled: bool,
    /// Also give the approving phone a session (default off).
    #[serde(default)]
    pub also_login_phone: bool,
    /// Refuse confirmations from another network than the desktop's (default off).
    #[serde(default)]
    pub require_same_network: bool,
    /// Seconds a new code waits to be scanned (default 120).
    #[serde(default = "defaults::scan")]
    pub scan_ttl_secs: u64,
    /// Seconds the phone has from the scan to confirm (default 120).
    #[serde(default = "defaults::confirm")]
    pub confirm_ttl_secs: u64,
    /// Seconds the desktop has to finish once approved (default 60).
    #[serde(default = "defaults::redeem")]
    pub redeem_ttl_secs: u64,
    /// A ticket's absolute lifetime in seconds (default 300, at most 300).
    #[serde(default = "defaults::absolute")]
    pub absolute_ttl_secs: u64,
    /// New codes per client address per minute (default 10).
    #[serde(default = "defaults::per_ip")]
    pub per_ip_per_minute: u32,
    /// Unknown ids a client address may ask about per minute (default 30).
    #[serde(default = "defaults::misses")]
    pub misses_per_ip_per_minute: u32,
    /// Pending tickets at once (default 10 000); past it new codes are refused.
    #[serde(default = "defaults::max_pending")]
    pub max_pending: usize,
    /// Seconds one status poll may wait (default 25, at most 25).
    #[serde(default = "defaults::poll_wait")]
    pub poll_wait_secs: u64,
    /// Status polls waiting at once (default 1 000).
    #[serde(default = "defaults::max_polls")]
    pub max_polls: usize,
    /// What desktop browsers without a session get: `"bridge"` (default, the QR bridge when
    /// `enabled`) or `"website"` (WeChat's own website login with `[qr.website]`).
    #[serde(default)]
    pub desktop: DesktopMode,
    /// `[qr.website]`: the website app (网站应用) of `desktop = "website"`.
    #[serde(default)]
    pub website: QrWebsiteConfig,
}

/// `qr.desktop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesktopMode {
    /// The QR bridge (the phone lends the official account's identity).
    #[default]
    Bridge,
    /// WeChat's website login (`qrconnect`, `snsapi_login`) with the team's website app.
    Website,
}

/// `[qr.website]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrWebsiteConfig {
    /// The website app's appid (`wx` + 16 hex characters).
    pub appid: Option<String>,
    /// The website app's appsecret (or `secret_file`, or `WXAUTH_QR_WEBSITE_SECRET`).
    pub secret: Option<SecretString>,
    /// File holding the website app's appsecret.
    pub secret_file: Option<PathBuf>,
}

mod defaults {
    use crate::layer::QrSettings;

    fn d() -> QrSettings {
        QrSettings::default()
    }
    pub(super) fn scan() -> u64 {
        d().scan_ttl.as_secs()
    }
    pub(super) fn confirm() -> u64 {
        d().confirm_ttl.as_secs()
    }
    pub(super) fn redeem() -> u64 {
        d().redeem_ttl.as_secs()
    }
    pub(super) fn absolute() -> u64 {
        d().absolute_ttl.as_secs()
    }
    pub(super) fn per_ip() -> u32 {
        d().per_ip_per_minute
    }
    pub(super) fn misses() -> u32 {
        d().misses_per_ip_per_minute
    }
    pub(super) fn max_pending() -> usize {
        d().max_pending
    }
    pub(super) fn poll_wait() -> u64 {
        d().poll_wait.as_secs()
    }
    pub(super) fn max_polls() -> usize {
        d().max_polls
    }
}

impl Default for QrConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            also_login_phone: false,
            require_same_network: false,
            scan_ttl_secs: defaults::scan(),
            confirm_ttl_secs: defaults::confirm(),
            redeem_ttl_secs: defaults::redeem(),
            absolute_ttl_secs: defaults::absolute(),
            per_ip_per_minute: defaults::per_ip(),
            misses_per_ip_per_minute: defaults::misses(),
            max_pending: defaults::max_pending(),
            poll_wait_secs: defaults::poll_wait(),
            max_polls: defaults::max_polls(),
            desktop: DesktopMode::Bridge,
            website: QrWebsiteConfig::default(),
        }
    }
}

impl QrConfig {
    /// The layer's settings.
    pub fn settings(&self) -> QrSettings {
        QrSettings {
            enabled: self.enabled,
            also_login_phone: self.also_login_phone,
            require_same_network: self.require_same_network,
            scan_ttl: Duration::from_secs(self.scan_ttl_secs),
            confirm_ttl: Duration::from_secs(self.confirm_ttl_secs),
            redeem_ttl: Duration::from_secs(self.redeem_ttl_secs),
            absolute_ttl: Duration::from_secs(self.absolute_ttl_secs),
            per_ip_per_minute: self.per_ip_per_minute,
            misses_per_ip_per_minute: self.misses_per_ip_per_minute,
            max_pending: self.max_pending,
            poll_wait: Duration::from_secs(self.poll_wait_secs),
            max_polls: self.max_polls,
            dev_phone: None,
            // The app turns `website_app` into the layer's website mode (it owns the client).
            desktop: QrDesktopLogin::Bridge,
        }
    }

    /// The website app's appid and secret with `desktop = "website"` (`None` in bridge mode,
    /// or when they are missing, which the check reports).
    pub fn website_app(&self, secrets: &ResolvedSecrets) -> Option<(WebsiteAppId, AppSecret)> {
        if self.desktop != DesktopMode::Website {
            return None;
        }
        let appid = self.website.appid.as_deref()?;
        let secret = secrets.website_secret.as_ref()?;
        Some((
            WebsiteAppId::new(appid),
            AppSecret::new(secret.expose_secret()),
        ))
    }

    pub(super) fn check(&self, secrets: &ResolvedSecrets, tenants: bool, problems: &mut Problems) {
        if let Some(problem) = self.settings().problem() {
            problems.bad("qr", problem);
        }
        if self.desktop != DesktopMode::Website {
            return;
        }
        if !self.website.appid.as_deref().is_some_and(looks_like_appid) {
            problems.bad(
                "qr.website.appid",
                "desktop = \"website\" needs the website app's appid (wx followed by 16 hex characters)",
            );
        }
        if secrets.website_secret.is_none() {
            problems.bad(
                "qr.website.secret",
                "desktop = \"website\" needs the website app's secret (or secret_file, or WXAUTH_QR_WEBSITE_SECRET)",
            );
        }
        if tenants {
            problems.bad(
                "qr.desktop",
                "\"website\" serves a single official account; with [tenants] use the bridge",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_layers_and_keys_map() {
        assert_eq!(QrConfig::default().settings(), QrSettings::default());
        let config: QrConfig =
            toml::from_str("enabled = true\nscan_ttl_secs = 60\nalso_login_phone = true").unwrap();
        let settings = config.settings();
        assert!(settings.enabled && settings.also_login_phone);
        assert_eq!(settings.scan_ttl, Duration::from_secs(60));
        let mut problems = Problems::default();
        let bad: QrConfig = toml::from_str("enabled = true\nabsolute_ttl_secs = 900").unwrap();
        bad.check(&ResolvedSecrets::default(), false, &mut problems);
        assert_eq!(problems.0.len(), 1);
        assert!(
            toml::from_str::<QrConfig>("enable = true").is_err(),
            "typos are errors"
        );
    }
}
