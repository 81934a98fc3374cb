//! `[wechat]`: which flow, the appids and secrets, and the WeChat client's timeouts
//! ([`crate::wechat`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigProblem, Problems, ResolvedSecrets, TenantsConfig, millis};
use crate::secret::SecretString;
use crate::wechat::client::ClientSettings;
use crate::wechat::oauth::{DEFAULT_LOGIN_DEADLINE, OAuthMode, WeChatSettings};
use crate::wechat::tenants::TenantSettings;
use crate::wechat::token::TokenSettings;
use crate::wechat::{AppSecret, AuthorizerAppId, ComponentAppId};

/// Which WeChat flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeChatMode {
    /// Third-party platform web OAuth on behalf of an official account.
    Component,
    /// An official account's own web OAuth with its own secret.
    OfficialAccount,
}

/// `[wechat]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatConfig {
    /// `component` or `official_account`.
    pub mode: WeChatMode,
    /// The official account users log in to (the authorizer appid in component mode): the
    /// single-tenant shorthand. Required unless `[tenants]` lists the accounts.
    #[serde(default)]
    pub appid: Option<AuthorizerAppId>,
    /// Component mode: the third-party platform's appid.
    #[serde(default)]
    pub component_appid: Option<ComponentAppId>,
    /// Component mode: the platform's appsecret.
    #[serde(default)]
    pub component_secret: Option<SecretString>,
    /// Component mode: file holding the platform's appsecret.
    #[serde(default)]
    pub component_secret_file: Option<PathBuf>,
    /// Component mode: the message token (消息校验Token).
    #[serde(default)]
    pub message_token: Option<SecretString>,
    /// Component mode: file holding the message token.
    #[serde(default)]
    pub message_token_file: Option<PathBuf>,
    /// Component mode: the EncodingAESKey (43 characters).
    #[serde(default)]
    pub encoding_aes_key: Option<SecretString>,
    /// Component mode: file holding the EncodingAESKey.
    #[serde(default)]
    pub encoding_aes_key_file: Option<PathBuf>,
    /// Component mode: the previous EncodingAESKey, tried when the current one fails (rotation).
    #[serde(default)]
    pub previous_encoding_aes_key: Option<SecretString>,
    /// Official-account mode: the account's appsecret.
    #[serde(default)]
    pub official_account_secret: Option<SecretString>,
    /// Official-account mode: file holding the account's appsecret.
    #[serde(default)]
    pub official_account_secret_file: Option<PathBuf>,
    /// Base URL of `api.weixin.qq.com`.
    #[serde(default = "default_api_base")]
    pub api_base_url: url::Url,
    /// Base URL of `open.weixin.qq.com` (the authorize page).
    #[serde(default = "default_open_base")]
    pub open_base_url: url::Url,
    /// Connect timeout for calls to WeChat, in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Total timeout of one call to WeChat, in milliseconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// One deadline, in milliseconds, for everything a login callback waits on WeChat for: the
    /// component token (its retries included), the code exchange and `sns/userinfo`. Past it
    /// the user gets the "WeChat timed out" page (503) and nothing is stored.
    #[serde(default = "default_login_deadline")]
    pub login_deadline_ms: u64,
    /// Refresh the component token this many seconds before it expires.
    #[serde(default = "default_refresh_margin")]
    pub token_refresh_margin_secs: u64,
    /// `lang` for `sns/userinfo`: `zh_CN`, `zh_TW` or `en`.
    #[serde(default = "default_lang")]
    pub lang: String,
}

fn default_api_base() -> url::Url {
    ClientSettings::default().api_base
}
fn default_open_base() -> url::Url {
    ClientSettings::default().open_base
}
fn default_connect_timeout() -> u64 {
    millis(ClientSettings::default().connect_timeout)
}
fn default_request_timeout() -> u64 {
    millis(ClientSettings::default().request_timeout)
}
fn default_login_deadline() -> u64 {
    millis(DEFAULT_LOGIN_DEADLINE)
}
fn default_refresh_margin() -> u64 {
    TokenSettings::default().refresh_margin.as_secs()
}
fn default_lang() -> String {
    ClientSettings::default().lang
}

/// `wx` followed by 16 hex characters.
pub(super) fn looks_like_appid(s: &str) -> bool {
    s.len() == 18 && s.starts_with("wx") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_aes_key(k: &SecretString) -> bool {
    let k = k.expose_secret();
    k.len() == 43
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl WeChatConfig {
    pub(super) fn check(&self, secrets: &ResolvedSecrets, tenants: bool, problems: &mut Problems) {
        let mut bad = |key: &str, message: String| problems.bad(key, message);
        match &self.appid {
            Some(appid) if !looks_like_appid(appid.as_str()) => bad(
                "wechat.appid",
                "must look like wx followed by 16 hex characters".into(),
            ),
            None if !tenants => bad(
                "wechat.appid",
                "is required (or list the accounts in [tenants])".into(),
            ),
            _ => {}
        }
        match self.mode {
            WeChatMode::Component => {
                match &self.component_appid {
                    None => bad(
                        "wechat.component_appid",
                        "is required in component mode".into(),
                    ),
                    Some(a) if !looks_like_appid(a.as_str()) => bad(
                        "wechat.component_appid",
                        "must look like wx followed by 16 hex characters".into(),
                    ),
                    Some(a)
                        if self
                            .appid
                            .as_ref()
                            .is_some_and(|o| o.as_str() == a.as_str()) =>
                    {
                        bad(
                            "wechat.component_appid",
                            "must differ from wechat.appid (the official account)".into(),
                        )
                    }
                    Some(_) => {}
                }
                if secrets.component_secret.is_none() {
                    bad(
                        "wechat.component_secret",
                        "is required in component mode (or component_secret_file, or WXAUTH_COMPONENT_SECRET)".into(),
                    );
                }
                if secrets.message_token.is_none() {
                    bad(
                        "wechat.message_token",
                        "is required in component mode (or message_token_file, or WXAUTH_MESSAGE_TOKEN)".into(),
                    );
                }
                match &secrets.encoding_aes_key {
                    None => bad(
                        "wechat.encoding_aes_key",
                        "is required in component mode (or encoding_aes_key_file, or WXAUTH_ENCODING_AES_KEY)".into(),
                    ),
                    Some(k) if !valid_aes_key(k) => bad(
                        "wechat.encoding_aes_key",
                        "must be exactly 43 characters of [A-Za-z0-9+/]".into(),
                    ),
                    Some(_) => {}
                }
                if let Some(k) = &self.previous_encoding_aes_key {
                    if !valid_aes_key(k) {
                        bad(
                            "wechat.previous_encoding_aes_key",
                            "must be exactly 43 characters of [A-Za-z0-9+/]".into(),
                        );
                    }
                }
            }
            WeChatMode::OfficialAccount => {
                if secrets.official_account_secret.is_none() {
                    bad(
                        "wechat.official_account_secret",
                        "is required in official_account mode (or official_account_secret_file, or WXAUTH_OFFICIAL_ACCOUNT_SECRET)".into(),
                    );
                }
            }
        }
        for (key, url) in [
            ("wechat.api_base_url", &self.api_base_url),
            ("wechat.open_base_url", &self.open_base_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                bad(key, "must be an http(s) URL".into());
            }
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            bad("wechat.request_timeout_ms", "timeouts must be > 0".into());
        }
        if !(100..=120_000).contains(&self.login_deadline_ms) {
            bad(
                "wechat.login_deadline_ms",
                "must be between 100 and 120000 (milliseconds)".into(),
            );
        }
        if !matches!(self.lang.as_str(), "zh_CN" | "zh_TW" | "en") {
            bad("wechat.lang", "must be zh_CN, zh_TW or en".into());
        }
    }

    /// `[wechat]` + its secrets (+ `[tenants]`, when given) → the WeChat client's settings,
    /// calling WeChat at `api_base` and `open_base` (`wechat.*_base_url`, or the simulated
    /// WeChat in development mode).
    ///
    /// # Errors
    /// A value the mode needs is missing (never after [`super::Config::validate`]).
    pub fn settings(
        &self,
        secrets: &ResolvedSecrets,
        tenants: Option<&TenantsConfig>,
        api_base: url::Url,
        open_base: url::Url,
    ) -> Result<WeChatSettings, ConfigProblem> {
        fn need<'a, T>(value: &'a Option<T>, key: &str) -> Result<&'a T, ConfigProblem> {
            value
                .as_ref()
                .ok_or_else(|| ConfigProblem::new(format!("wechat.{key}"), "is missing"))
        }
        let mode = match self.mode {
            WeChatMode::Component => OAuthMode::Component {
                component_appid: need(&self.component_appid, "component_appid")?.clone(),
                component_secret: AppSecret::new(
                    need(&secrets.component_secret, "component_secret")?.expose_secret(),
                ),
                tenants: match tenants {
                    Some(t) => t.tenant_settings(),
                    None => TenantSettings::single(need(&self.appid, "appid")?.clone()),
                },
                message_token: need(&secrets.message_token, "message_token")?.clone(),
                encoding_aes_key: need(&secrets.encoding_aes_key, "encoding_aes_key")?.clone(),
                previous_encoding_aes_key: self.previous_encoding_aes_key.clone(),
            },
            WeChatMode::OfficialAccount => OAuthMode::OfficialAccount {
                appid: need(&self.appid, "appid")?.clone(),
                secret: AppSecret::new(
                    need(&secrets.official_account_secret, "official_account_secret")?
                        .expose_secret(),
                ),
            },
        };
        Ok(WeChatSettings {
            mode,
            client: ClientSettings {
                api_base,
                open_base,
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                lang: self.lang.clone(),
            },
            token: TokenSettings {
                refresh_margin: Duration::from_secs(self.token_refresh_margin_secs),
                ..TokenSettings::default()
            },
        })
    }

    /// `wechat.login_deadline_ms` as a duration.
    pub fn login_deadline(&self) -> Duration {
        Duration::from_millis(self.login_deadline_ms)
    }
}
