//! [`QrSettings`]: whether the desktop QR bridge is on, its lifetimes and its bounds.

use std::time::Duration;

use crate::wechat::website::WebsiteApp;

/// The desktop QR login bridge (`[qr]`): off by default. Desktop browsers (no `MicroMessenger`
/// in the User-Agent) get a QR code to scan with WeChat instead of the dead-end redirect; see
/// the README, "Desktop browsers: log in by scanning a QR code".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrSettings {
    /// Serve the QR page to desktop browsers (navigations without `MicroMessenger` in the
    /// User-Agent) instead of the redirect to WeChat, and answer the `qr/*` routes.
    pub enabled: bool,
    /// Whether the phone that approves a desktop login also gets a session of its own
    /// (default off: the phone only lends its identity).
    pub also_login_phone: bool,
    /// Refuse the confirmation when the phone's and the desktop's public addresses differ
    /// (default off: phones on mobile data are on another network).
    pub require_same_network: bool,
    /// How long a new QR code waits to be scanned (default 120 s).
    pub scan_ttl: Duration,
    /// How long the phone has, once it scanned, to log in and tap 确认登录 (default 120 s).
    pub confirm_ttl: Duration,
    /// How long the desktop has to finish once the phone approved (default 60 s).
    pub redeem_ttl: Duration,
    /// The absolute lifetime of a ticket, whatever its state (default 300 s).
    pub absolute_ttl: Duration,
    /// New tickets per client address per minute (default 10).
    pub per_ip_per_minute: u32,
    /// Unknown or foreign ticket ids a client address may ask about per minute before it gets
    /// 429 (default 30).
    pub misses_per_ip_per_minute: u32,
    /// Pending tickets held at once (memory store) or created per six minutes (Redis); past
    /// it new tickets are refused, never an old one evicted (default 10 000).
    pub max_pending: usize,
    /// How long one status poll waits for a change (default 25 s, below nginx's 60 s read
    /// timeout).
    pub poll_wait: Duration,
    /// Status polls waiting at once; past it a poll answers at once (default 1 000).
    pub max_polls: usize,
    /// Development only (set by the sidecar for `[dev] simulate_wechat`): lets one desktop play
    /// the phone. `None` in production.
    pub dev_phone: Option<DevPhone>,
    /// What a desktop browser without a session gets: the bridge's QR page (default) or WeChat's
    /// own website login (网站应用, `qrconnect`).
    pub desktop: DesktopLogin,
}

/// How desktop browsers (no `MicroMessenger` in the User-Agent) log in.
#[derive(Clone, Debug, Default)]
pub enum DesktopLogin {
    /// The QR bridge (when `enabled`): the phone lends the official account's identity.
    #[default]
    Bridge,
    /// WeChat's website login with the team's own website app: a navigation without a session
    /// is sent to the app's `qrconnect` page (scope `snsapi_login`) and the callback exchanges
    /// the code with the app's secret. The session's identity is the **website app's**: its
    /// openid, the unionid, the profile, and `appid` = the website app's appid. Only for a
    /// single official account (without `[tenants]`).
    Website(WebsiteApp),
}

impl DesktopLogin {
    /// The website app, in website mode.
    pub fn website(&self) -> Option<&WebsiteApp> {
        match self {
            Self::Bridge => None,
            Self::Website(app) => Some(app),
        }
    }
}

// Compared by mode and appid (the secret and the client are not comparable).
impl PartialEq for DesktopLogin {
    fn eq(&self, other: &Self) -> bool {
        self.website().map(WebsiteApp::appid) == other.website().map(WebsiteApp::appid)
    }
}

impl Eq for DesktopLogin {}

/// The development aid that lets a desktop browser act as the phone (the simulated WeChat's
/// "模拟手机扫码" page): the desktop page links to it, and a browser carrying its cookie may
/// open the QR link although its User-Agent is not WeChat's (the User-Agent check is a guide
/// for people, not a security boundary: every step after it is bound to cookies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevPhone {
    /// The aid's URL; the QR link is appended as the `go` query parameter.
    pub link: url::Url,
    /// The name of the cookie the aid sets on the browser that plays the phone.
    pub cookie: String,
}

impl Default for QrSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            also_login_phone: false,
            require_same_network: false,
            scan_ttl: Duration::from_secs(120),
            confirm_ttl: Duration::from_secs(120),
            redeem_ttl: Duration::from_secs(60),
            absolute_ttl: Duration::from_secs(300),
            per_ip_per_minute: 10,
            misses_per_ip_per_minute: 30,
            max_pending: 10_000,
            poll_wait: Duration::from_secs(25),
            max_polls: 1_000,
            dev_phone: None,
            desktop: DesktopLogin::Bridge,
        }
    }
}

/// The longest absolute lifetime accepted (the Redis bound counts six minutes of creations).
pub const MAX_ABSOLUTE_TTL: Duration = Duration::from_secs(300);

/// The longest poll wait accepted.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(25);

impl QrSettings {
    /// What is wrong with these settings, if anything (only checked when enabled).
    pub fn problem(&self) -> Option<&'static str> {
        if !self.enabled {
            return None;
        }
        let phases = [self.scan_ttl, self.confirm_ttl, self.redeem_ttl];
        if self.absolute_ttl.is_zero() || self.absolute_ttl > MAX_ABSOLUTE_TTL {
            return Some("absolute_ttl must be between 1 second and 5 minutes");
        }
        if phases.iter().any(|t| t.is_zero() || *t > self.absolute_ttl) {
            return Some(
                "scan_ttl, confirm_ttl and redeem_ttl must be positive and at most absolute_ttl",
            );
        }
        if self.poll_wait.is_zero() || self.poll_wait > MAX_POLL_WAIT {
            return Some("poll_wait must be between 1 second and 25 seconds");
        }
        if self.per_ip_per_minute == 0
            || self.misses_per_ip_per_minute == 0
            || self.max_pending == 0
            || self.max_polls == 0
        {
            return Some(
                "per_ip_per_minute, misses_per_ip_per_minute, max_pending and max_polls must be positive",
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        let on = QrSettings {
            enabled: true,
            ..QrSettings::default()
        };
        assert_eq!(on.problem(), None);
        let long = QrSettings {
            absolute_ttl: Duration::from_secs(301),
            ..on.clone()
        };
        assert!(long.problem().is_some());
        let phase = QrSettings {
            redeem_ttl: Duration::from_secs(400),
            ..on.clone()
        };
        assert!(phase.problem().is_some());
        let poll = QrSettings {
            poll_wait: Duration::from_secs(30),
            ..on
        };
        assert!(poll.problem().is_some());
        assert_eq!(QrSettings::default().problem(), None, "off: not checked");
    }
}
