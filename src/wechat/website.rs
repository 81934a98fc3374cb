//! WeChat login for websites (网站应用, Open Platform "website app"): the desktop browser shows
//! WeChat's own QR code page (`open.weixin.qq.com/connect/qrconnect`, scope `snsapi_login`), the
//! user scans it with WeChat and confirms on the phone, and WeChat sends the desktop browser to
//! the callback with a code (docs/wechat-protocol.md §11.2, §11.4).
//!
//! The code is exchanged with the **website app's own appid and secret** at
//! `sns/oauth2/access_token`, the same endpoint and reply as an official account's direct web
//! OAuth; the profile comes from `sns/userinfo`. Both go through [`WeChatClient`] (one pooled
//! HTTP client, JSON parsed whatever the content type, the same [`WeChatError`]s and metrics).
//!
//! The identity is **not** the official account's: the openid is the website app's own, and
//! only the `unionid` links the two — and only when the website app and the official account
//! are bound to the same Open Platform account.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wechat_oauth_proxy::wechat::error::WeChatError> {
//! use wechat_oauth_proxy::wechat::{
//!     AppSecret, AuthorizationCode, OAuthState,
//!     client::{ClientSettings, WeChatClient},
//!     website::{WebsiteApp, WebsiteAppId},
//! };
//!
//! let client = WeChatClient::new(ClientSettings::default())?;
//! let app = WebsiteApp::new(
//!     WebsiteAppId::new("wx5e1b2c3d4e5f6071"),
//!     AppSecret::new("the website app's secret"),
//!     client,
//! );
//! let callback = url::Url::parse("https://auth.example.com/_wxauth/callback").unwrap();
//! let page = app.authorize_url(&callback, &OAuthState::new("AbC123"));
//! // … the browser comes back to the callback with ?code=…&state=AbC123 …
//! let login = app.login(&AuthorizationCode::new("code from the callback")).await?;
//! println!("website openid {}, unionid {:?}", login.openid, login.unionid);
//! # Ok(()) }
//! ```

use url::Url;

use super::{
    AppSecret, AuthorizationCode, AuthorizerAppId, OAuthState, OpenId, UnionId,
    client::{UserInfo, UserToken, WeChatClient},
    error::WeChatError,
};
use crate::plain_type;

plain_type!(
    /// Appid of an Open Platform website app (网站应用), `wx` + 16 hex characters; not an
    /// official account's appid.
    WebsiteAppId
);

/// The scope of website QR login.
pub const SCOPE_LOGIN: &str = "snsapi_login";

/// Path of the QR login page under the `open.weixin.qq.com` base.
pub const QRCONNECT_PATH: &str = "connect/qrconnect";

/// One website app and the client that talks to WeChat for it. Cheap to clone; `Debug` shows
/// the appid only.
#[derive(Clone)]
pub struct WebsiteApp {
    appid: WebsiteAppId,
    secret: AppSecret,
    client: WeChatClient,
}

impl std::fmt::Debug for WebsiteApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebsiteApp")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// The person a website login identified: the website app's openid, the unionid when the
/// app's Open Platform account has one for the user, and the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebsiteLogin {
    /// The website app the person logged in to.
    pub appid: WebsiteAppId,
    /// The person's id under the **website app** (not the official account's openid).
    pub openid: OpenId,
    /// The person's id across the apps of the website app's Open Platform account; equal to
    /// the official account's unionid only when both are bound to the same Open Platform
    /// account.
    pub unionid: Option<UnionId>,
    /// Nickname (UTF-8; may be empty).
    pub nickname: String,
    /// Avatar URL (may be empty).
    pub headimgurl: String,
}

impl WebsiteApp {
    /// A website app with its secret; `client`'s settings decide the WeChat hosts
    /// (`open_base` for the QR page, `api_base` for the APIs; tests point both at the
    /// simulator), timeouts and `lang`.
    pub fn new(appid: WebsiteAppId, secret: AppSecret, client: WeChatClient) -> Self {
        Self {
            appid,
            secret,
            client,
        }
    }

    /// The website app's appid.
    pub fn appid(&self) -> &WebsiteAppId {
        &self.appid
    }

    /// The QR login page for a desktop browser: `<open_base>connect/qrconnect?appid=…&
    /// redirect_uri=…&response_type=code&scope=snsapi_login&state=…#wechat_redirect`, parameters
    /// in the documented order, `redirect_uri` percent-encoded. The redirect host must be the
    /// website app's approved callback domain (授权回调域) or WeChat refuses.
    pub fn authorize_url(&self, redirect_uri: &Url, state: &OAuthState) -> Url {
        let mut url = self
            .client
            .settings()
            .open_base
            .join(QRCONNECT_PATH)
            .unwrap_or_else(|_| self.client.settings().open_base.clone());
        url.query_pairs_mut()
            .append_pair("appid", self.appid.as_str())
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("response_type", "code")
            .append_pair("scope", SCOPE_LOGIN)
            .append_pair("state", state.expose_secret());
        url.set_fragment(Some("wechat_redirect"));
        url
    }

    /// Exchanges the callback's `code` with the website app's secret
    /// (`GET sns/oauth2/access_token`): the token, the website app's openid and (normally) the
    /// unionid. A code works once, for ten minutes.
    ///
    /// # Errors
    /// Any [`WeChatError`]; `40029`/`40163`/`42003` (code invalid, used, expired) are
    /// [`ErrorClass::Reauthorize`](super::error::ErrorClass::Reauthorize), `40125`/`40013`
    /// (secret, appid) [`ErrorClass::Configuration`](super::error::ErrorClass::Configuration),
    /// a garbled reply [`WeChatError::BadReply`].
    pub async fn exchange_code(&self, code: &AuthorizationCode) -> Result<UserToken, WeChatError> {
        // The website app's exchange is the official account's direct one with other
        // credentials: same path, same parameters, same reply.
        let appid = AuthorizerAppId::new(self.appid.as_str());
        self.client
            .oa_code_exchange(&appid, &self.secret, code)
            .await
    }

    /// The profile (`GET sns/userinfo`) for a token of [`exchange_code`](Self::exchange_code).
    ///
    /// # Errors
    /// Any [`WeChatError`]; a profile for another openid than the token's is
    /// [`WeChatError::BadReply`].
    pub async fn user_info(&self, token: &UserToken) -> Result<UserInfo, WeChatError> {
        let info = self
            .client
            .user_info(&token.access_token, &token.openid)
            .await?;
        if info.openid != token.openid {
            return Err(WeChatError::BadReply {
                endpoint: super::client::endpoint::USER_INFO,
                reason: "the profile is for another openid than the token".to_owned(),
            });
        }
        Ok(info)
    }

    /// The whole callback side: [`exchange_code`](Self::exchange_code), then
    /// [`user_info`](Self::user_info). The unionid is the exchange's, or the profile's when the
    /// exchange carried none.
    ///
    /// # Errors
    /// As [`exchange_code`](Self::exchange_code) and [`user_info`](Self::user_info).
    pub async fn login(&self, code: &AuthorizationCode) -> Result<WebsiteLogin, WeChatError> {
        let token = self.exchange_code(code).await?;
        let info = self.user_info(&token).await?;
        Ok(WebsiteLogin {
            appid: self.appid.clone(),
            openid: token.openid,
            unionid: token.unionid.or(info.unionid),
            nickname: info.nickname,
            headimgurl: info.headimgurl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::client::ClientSettings;

    fn app(open_base: &str) -> WebsiteApp {
        let settings = ClientSettings {
            open_base: Url::parse(open_base).unwrap(),
            ..ClientSettings::default()
        };
        WebsiteApp::new(
            WebsiteAppId::new("wx5e1b2c3d4e5f6071"),
            AppSecret::new("website-secret-value"),
            WeChatClient::new(settings).unwrap(),
        )
    }

    #[test]
    fn authorize_url_is_qrconnect_in_the_documented_order() {
        let url = app("https://open.weixin.qq.com/").authorize_url(
            &Url::parse("https://auth.example.com/_wxauth/callback?x=1&y=a b").unwrap(),
            &OAuthState::new("AbC123"),
        );
        assert_eq!(
            url.as_str(),
            "https://open.weixin.qq.com/connect/qrconnect?appid=wx5e1b2c3d4e5f6071\
             &redirect_uri=https%3A%2F%2Fauth.example.com%2F_wxauth%2Fcallback%3Fx%3D1%26y%3Da%2520b\
             &response_type=code&scope=snsapi_login&state=AbC123#wechat_redirect"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[1].1,
            "https://auth.example.com/_wxauth/callback?x=1&y=a%20b"
        );
    }

    #[test]
    fn authorize_url_follows_the_open_base() {
        let url = app("http://127.0.0.1:9/").authorize_url(
            &Url::parse("http://127.0.0.1/cb").unwrap(),
            &OAuthState::new("s"),
        );
        assert!(
            url.as_str()
                .starts_with("http://127.0.0.1:9/connect/qrconnect?appid="),
            "{url}"
        );
        assert_eq!(url.fragment(), Some("wechat_redirect"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", app("https://open.weixin.qq.com/"));
        assert!(shown.contains("wx5e1b2c3d4e5f6071"), "{shown}");
        assert!(!shown.contains("website-secret-value"), "{shown}");
    }
}
