//! The HTTP client for WeChat's APIs (docs/wechat-protocol.md §5, §8–§11, §13).
//!
//! One shared `reqwest::Client` (rustls, no redirects, connect and total timeouts). Every reply
//! is read as bytes (bounded) and parsed as JSON whatever its `Content-Type`, because WeChat
//! serves JSON as `text/plain` and errors as HTTP 200 with an `errcode`. Tokens and secrets
//! travel in query strings, so errors are built **without** the request URL.
//!
//! The client makes exactly one attempt per call; retry policy lives in the callers (the token
//! manager retries token fetches; a single-use OAuth code must not be blindly replayed).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, de::DeserializeOwned};
use url::Url;

use super::{
    AppSecret, AuthorizationCode, AuthorizerAppId, ComponentAccessToken, ComponentAppId,
    OAuthState, OpenId, Scope, UnionId, UserAccessToken, UserRefreshToken, VerifyTicket,
    error::{WeChatError, sanitize_errmsg},
};

/// Endpoint names used in errors and logs (paths relative to the API base).
pub mod endpoint {
    /// `POST cgi-bin/component/api_component_token`.
    pub const COMPONENT_TOKEN: &str = "cgi-bin/component/api_component_token";
    /// `GET sns/oauth2/component/access_token`.
    pub const COMPONENT_CODE_EXCHANGE: &str = "sns/oauth2/component/access_token";
    /// `GET sns/oauth2/component/refresh_token`.
    pub const COMPONENT_REFRESH: &str = "sns/oauth2/component/refresh_token";
    /// `GET sns/oauth2/access_token`.
    pub const OA_CODE_EXCHANGE: &str = "sns/oauth2/access_token";
    /// `GET sns/oauth2/refresh_token`.
    pub const OA_REFRESH: &str = "sns/oauth2/refresh_token";
    /// `GET sns/userinfo`.
    pub const USER_INFO: &str = "sns/userinfo";
    /// `POST cgi-bin/component/api_query_auth`.
    pub const QUERY_AUTH: &str = "cgi-bin/component/api_query_auth";
    /// `POST cgi-bin/component/api_get_authorizer_info`.
    pub const AUTHORIZER_INFO: &str = "cgi-bin/component/api_get_authorizer_info";
    /// `POST cgi-bin/component/api_get_authorizer_list`.
    pub const AUTHORIZER_LIST: &str = "cgi-bin/component/api_get_authorizer_list";
}

mod authorization;
pub use authorization::{
    Authorization, AuthorizerDetails, AuthorizerListPage, ListedAuthorizer, MAX_LIST_COUNT,
};

/// Largest reply body we read; WeChat's JSON replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Characters of `redirect_uri` (and other values) left as they are in the authorize URL:
/// RFC 3986 unreserved ones. Everything else, including `:` `/` `?` `&` `=` `#`, is
/// percent-encoded, as WeChat requires (wechatpy `quote(safe='')`, JS `encodeURIComponent`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Settings of the WeChat HTTP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// Base of the API host (default `https://api.weixin.qq.com/`); tests point it at the
    /// simulated WeChat. Must end with `/`.
    pub api_base: Url,
    /// Base of the authorize page host (default `https://open.weixin.qq.com/`).
    pub open_base: Url,
    /// TCP/TLS connect timeout (default 3 s).
    pub connect_timeout: Duration,
    /// Total timeout of one call (default 5 s, WeChat's own push timeout).
    pub request_timeout: Duration,
    /// `lang` for `sns/userinfo` (`zh_CN`, `zh_TW`, `en`; default `zh_CN`).
    pub lang: String,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            api_base: const_url("https://api.weixin.qq.com/"),
            open_base: const_url("https://open.weixin.qq.com/"),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            lang: "zh_CN".to_owned(),
        }
    }
}

/// Parses a URL literal written in this file.
#[allow(
    clippy::expect_used,
    reason = "only called with constant literals, all covered by the default_settings test"
)]
fn const_url(literal: &'static str) -> Url {
    Url::parse(literal).expect("constant URL literal parses")
}

/// A user's OAuth access token as returned by a code exchange or a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserToken {
    /// The user access token (for `sns/userinfo`).
    pub access_token: UserAccessToken,
    /// The refresh token (30 days), when WeChat returned one.
    pub refresh_token: Option<UserRefreshToken>,
    /// The user's id under the authorizer official account.
    pub openid: OpenId,
    /// The user's Open Platform id, when the account is bound to one.
    pub unionid: Option<UnionId>,
    /// The granted scope as WeChat wrote it (comma-separated if several).
    pub scope: String,
    /// Lifetime of `access_token` in seconds.
    pub expires_in: u64,
    /// `true` for snapshot-page virtual users (`is_snapshotuser: 1`): never create a real
    /// session for them (docs/wechat-protocol.md §10.2).
    pub is_snapshot_user: bool,
}

impl UserToken {
    /// Whether the granted scope includes `scope` (so `sns/userinfo` may be called for
    /// [`Scope::UserInfo`]).
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scope.split(',').any(|s| s.trim() == scope.as_str())
    }
}

/// The profile `sns/userinfo` returns (only what the proxy uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's id under the official account.
    pub openid: OpenId,
    /// The user's Open Platform id, when the account is bound to one.
    pub unionid: Option<UnionId>,
    /// Nickname (UTF-8, may contain CJK and emoji; may be empty).
    pub nickname: String,
    /// Avatar URL (may be empty; changes when the user changes the avatar).
    pub headimgurl: String,
}

/// The WeChat API client: one pooled `reqwest::Client`, cheap to clone.
#[derive(Clone, Debug)]
pub struct WeChatClient {
    http: reqwest::Client,
    settings: std::sync::Arc<ClientSettings>,
}

impl WeChatClient {
    /// Builds the client.
    ///
    /// # Errors
    /// [`WeChatError::Misconfigured`] if the TLS backend cannot be initialised.
    pub fn new(settings: ClientSettings) -> Result<Self, WeChatError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("wechat-oauth-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WeChatError::Misconfigured {
                reason: format!(
                    "cannot build the HTTP client: {}",
                    error_chain(&e.without_url())
                ),
            })?;
        Ok(Self {
            http,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Fetches a `component_access_token` (`POST cgi-bin/component/api_component_token`,
    /// §5.1). Returns the token and its lifetime.
    ///
    /// # Errors
    /// Any [`WeChatError`]; notably `61005`/`61006` (ticket), `40125`/`61011`/`61004`
    /// (configuration), `45009` (quota).
    pub async fn component_token(
        &self,
        appid: &ComponentAppId,
        secret: &AppSecret,
        ticket: &VerifyTicket,
    ) -> Result<(ComponentAccessToken, Duration), WeChatError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            component_appid: &'a str,
            component_appsecret: &'a str,
            component_verify_ticket: &'a str,
        }
        #[derive(Deserialize)]
        struct Reply {
            component_access_token: String,
            #[serde(deserialize_with = "flex::u64")]
            expires_in: u64,
        }
        let ep = endpoint::COMPONENT_TOKEN;
        let url = self.api_url(ep, &[])?;
        let body = Body {
            component_appid: appid.as_str(),
            component_appsecret: secret.expose_secret(),
            component_verify_ticket: ticket.expose_secret(),
        };
        let reply: Reply = self.call(ep, self.http.post(url).json(&body)).await?;
        if reply.component_access_token.is_empty() || reply.expires_in == 0 {
            return Err(bad_reply(ep, "empty component_access_token or expires_in"));
        }
        Ok((
            ComponentAccessToken::new(reply.component_access_token),
            Duration::from_secs(reply.expires_in),
        ))
    }

    /// Exchanges an OAuth code on behalf of an official account
    /// (`GET sns/oauth2/component/access_token`, §9.1).
    ///
    /// # Errors
    /// Any [`WeChatError`]; `40001`/`42001`/`40014` mean the component token is stale
    /// ([`ErrorClass::RefreshToken`](super::error::ErrorClass::RefreshToken)).
    pub async fn component_code_exchange(
        &self,
        appid: &AuthorizerAppId,
        code: &AuthorizationCode,
        component_appid: &ComponentAppId,
        token: &ComponentAccessToken,
    ) -> Result<UserToken, WeChatError> {
        let ep = endpoint::COMPONENT_CODE_EXCHANGE;
        let url = self.api_url(
            ep,
            &[
                ("appid", appid.as_str()),
                ("code", code.expose_secret()),
                ("grant_type", "authorization_code"),
                ("component_appid", component_appid.as_str()),
                ("component_access_token", token.expose_secret()),
            ],
        )?;
        self.user_token(ep, url).await
    }

    /// Refreshes a user token on behalf of an official account
    /// (`GET sns/oauth2/component/refresh_token`, §9.2).
    ///
    /// # Errors
    /// Any [`WeChatError`]; `40030`/`42002` mean the user must authorize again.
    pub async fn component_refresh(
        &self,
        appid: &AuthorizerAppId,
        refresh_token: &UserRefreshToken,
        component_appid: &ComponentAppId,
        token: &ComponentAccessToken,
    ) -> Result<UserToken, WeChatError> {
        let ep = endpoint::COMPONENT_REFRESH;
        let url = self.api_url(
            ep,
            &[
                ("appid", appid.as_str()),
                ("grant_type", "refresh_token"),
                ("component_appid", component_appid.as_str()),
                ("component_access_token", token.expose_secret()),
                ("refresh_token", refresh_token.expose_secret()),
            ],
        )?;
        self.user_token(ep, url).await
    }

    /// Exchanges an OAuth code with the official account's own secret
    /// (`GET sns/oauth2/access_token`, §11.1).
    ///
    /// # Errors
    /// Any [`WeChatError`].
    pub async fn oa_code_exchange(
        &self,
        appid: &AuthorizerAppId,
        secret: &AppSecret,
        code: &AuthorizationCode,
    ) -> Result<UserToken, WeChatError> {
        let ep = endpoint::OA_CODE_EXCHANGE;
        let url = self.api_url(
            ep,
            &[
                ("appid", appid.as_str()),
                ("secret", secret.expose_secret()),
                ("code", code.expose_secret()),
                ("grant_type", "authorization_code"),
            ],
        )?;
        self.user_token(ep, url).await
    }

    /// Refreshes a user token in official-account mode (`GET sns/oauth2/refresh_token`).
    ///
    /// # Errors
    /// Any [`WeChatError`].
    pub async fn oa_refresh(
        &self,
        appid: &AuthorizerAppId,
        refresh_token: &UserRefreshToken,
    ) -> Result<UserToken, WeChatError> {
        let ep = endpoint::OA_REFRESH;
        let url = self.api_url(
            ep,
            &[
                ("appid", appid.as_str()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ],
        )?;
        self.user_token(ep, url).await
    }

    /// Fetches the user's profile (`GET sns/userinfo`, §10) in the configured `lang`.
    ///
    /// # Errors
    /// Any [`WeChatError`]; `48001` means the token's scope is `snsapi_base` or the user is a
    /// snapshot user.
    pub async fn user_info(
        &self,
        token: &UserAccessToken,
        openid: &OpenId,
    ) -> Result<UserInfo, WeChatError> {
        #[derive(Deserialize)]
        struct Reply {
            openid: String,
            #[serde(default, deserialize_with = "flex::opt_string")]
            unionid: Option<String>,
            #[serde(default, deserialize_with = "flex::string_or_null")]
            nickname: String,
            #[serde(default, deserialize_with = "flex::string_or_null")]
            headimgurl: String,
        }
        let ep = endpoint::USER_INFO;
        let url = self.api_url(
            ep,
            &[
                ("access_token", token.expose_secret()),
                ("openid", openid.as_str()),
                ("lang", &self.settings.lang),
            ],
        )?;
        let reply: Reply = self.call(ep, self.http.get(url)).await?;
        if reply.openid.is_empty() {
            return Err(bad_reply(ep, "empty openid"));
        }
        Ok(UserInfo {
            openid: OpenId::new(reply.openid),
            unionid: reply.unionid.map(UnionId::new),
            nickname: reply.nickname,
            headimgurl: reply.headimgurl,
        })
    }

    /// The authorize page URL (§8.1, §11.1): parameters in the documented order — `appid`,
    /// `redirect_uri` (fully percent-encoded), `response_type=code`, `scope`, `state`,
    /// `connect_redirect=1`, then `component_appid` in component mode — and the mandatory
    /// `#wechat_redirect` fragment. `connect_redirect=1` stops WeChat from calling the callback
    /// twice with two codes.
    pub fn authorize_url(
        &self,
        appid: &AuthorizerAppId,
        redirect_uri: &str,
        scope: Scope,
        state: &OAuthState,
        component_appid: Option<&ComponentAppId>,
    ) -> String {
        let mut url = format!(
            "{}connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope={}&state={}&connect_redirect=1",
            base_with_slash(&self.settings.open_base),
            utf8_percent_encode(appid.as_str(), COMPONENT),
            utf8_percent_encode(redirect_uri, COMPONENT),
            scope.as_str(),
            utf8_percent_encode(state.expose_secret(), COMPONENT),
        );
        if let Some(component) = component_appid {
            url.push_str("&component_appid=");
            url.extend(utf8_percent_encode(component.as_str(), COMPONENT));
        }
        url.push_str("#wechat_redirect");
        url
    }

    /// Joins an endpoint path to the API base and appends the query.
    fn api_url(&self, ep: &'static str, query: &[(&str, &str)]) -> Result<Url, WeChatError> {
        let mut url = self
            .settings
            .api_base
            .join(ep)
            .map_err(|e| WeChatError::Misconfigured {
                reason: format!("API base URL cannot be joined with {ep}: {e}"),
            })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn user_token(&self, ep: &'static str, url: Url) -> Result<UserToken, WeChatError> {
        let reply: UserTokenReply = self.call(ep, self.http.get(url)).await?;
        reply.into_user_token(ep)
    }

    /// Sends one request and decodes the reply; counted and timed per endpoint
    /// (`wxauth_wechat_api_*`).
    async fn call<T: DeserializeOwned>(
        &self,
        ep: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WeChatError> {
        let timer = crate::metrics::WeChatCallTimer::start(ep);
        let result = self.send(ep, request).await;
        timer.finish(&result);
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        ep: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WeChatError> {
        let mut response = request.send().await.map_err(|e| transport_error(ep, e))?;
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(
                endpoint = ep,
                status = status.as_u16(),
                "WeChat answered a non-2xx status"
            );
            return Err(bad_reply(ep, &format!("HTTP status {}", status.as_u16())));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_REPLY_BYTES as u64)
        {
            return Err(bad_reply(ep, "reply too large"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(ep, e))? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(bad_reply(ep, "reply too large"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_reply(ep, &body)
    }
}

fn base_with_slash(base: &Url) -> String {
    let s = base.as_str();
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

fn bad_reply(endpoint: &'static str, reason: &str) -> WeChatError {
    WeChatError::BadReply {
        endpoint,
        reason: reason.to_owned(),
    }
}

/// Converts a reqwest error without the URL (which carries tokens and secrets).
fn transport_error(endpoint: &'static str, e: reqwest::Error) -> WeChatError {
    let e = e.without_url();
    if e.is_timeout() {
        return WeChatError::Timeout { endpoint };
    }
    WeChatError::Transport {
        endpoint,
        message: error_chain(&e),
    }
}

/// `error: cause: cause…`, the way `anyhow` prints `{:#}`; bounded in length. The chain of a
/// URL-less reqwest error names the failure (connection refused, reset, TLS) and possibly the
/// peer address, never the request URL.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        if depth >= 8 || out.len() > 400 {
            break;
        }
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
        depth += 1;
    }
    out
}

/// What every reply may carry: an error code (number or string) and message.
#[derive(Deserialize)]
struct ErrorProbe {
    #[serde(default, deserialize_with = "flex::opt_i64")]
    errcode: Option<i64>,
    #[serde(default, deserialize_with = "flex::opt_string")]
    errmsg: Option<String>,
}

/// Parses a reply body: JSON whatever the content type; a non-zero `errcode` becomes
/// [`WeChatError::Api`]; anything else must deserialize as `T` (unknown fields ignored).
pub(crate) fn parse_reply<T: DeserializeOwned>(
    endpoint: &'static str,
    body: &[u8],
) -> Result<T, WeChatError> {
    let probe: ErrorProbe = serde_json::from_slice(body).map_err(|e| {
        let reason = if body.iter().all(u8::is_ascii_whitespace) {
            "empty body".to_owned()
        } else {
            // serde_json's messages describe the category and position, not the content.
            format!("not a JSON object ({})", e.classify_name())
        };
        bad_reply(endpoint, &reason)
    })?;
    if let Some(code) = probe.errcode.filter(|&c| c != 0) {
        let errmsg = sanitize_errmsg(probe.errmsg.as_deref().unwrap_or(""));
        tracing::debug!(endpoint, code, errmsg = %errmsg, "WeChat answered an error code");
        return Err(WeChatError::Api {
            code,
            errmsg,
            endpoint,
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        bad_reply(
            endpoint,
            &format!("missing or mistyped fields ({})", e.classify_name()),
        )
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// The code-exchange / refresh reply (§9.1, §11.1).
#[derive(Deserialize)]
pub(crate) struct UserTokenReply {
    access_token: String,
    #[serde(default, deserialize_with = "flex::opt_string")]
    refresh_token: Option<String>,
    openid: String,
    #[serde(default, deserialize_with = "flex::opt_string")]
    unionid: Option<String>,
    #[serde(default, deserialize_with = "flex::string_or_null")]
    scope: String,
    #[serde(default, deserialize_with = "flex::opt_u64")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "flex::opt_i64")]
    is_snapshotuser: Option<i64>,
}

impl UserTokenReply {
    fn into_user_token(self, ep: &'static str) -> Result<UserToken, WeChatError> {
        if self.access_token.is_empty() || self.openid.is_empty() {
            return Err(bad_reply(ep, "empty access_token or openid"));
        }
        Ok(UserToken {
            access_token: UserAccessToken::new(self.access_token),
            refresh_token: self.refresh_token.map(UserRefreshToken::new),
            openid: OpenId::new(self.openid),
            unionid: self.unionid.map(UnionId::new),
            scope: self.scope,
            expires_in: self.expires_in.unwrap_or(0),
            is_snapshot_user: self.is_snapshotuser == Some(1),
        })
    }
}

/// Lenient deserializers: WeChat sends numbers as strings now and then, and `null` or `""`
/// where a value is absent.
mod flex {
    use serde::{Deserialize, Deserializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Int(i64),
        Float(f64),
        Str(String),
    }

    fn to_i64(v: NumOrStr) -> Result<i64, String> {
        match v {
            NumOrStr::Int(n) => Ok(n),
            NumOrStr::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            NumOrStr::Float(_) => Err("a non-integer number".to_owned()),
            NumOrStr::Str(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| "a non-numeric string".to_owned()),
        }
    }

    pub(super) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<NumOrStr>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrStr::Str(s)) if s.trim().is_empty() => Ok(None),
            Some(v) => to_i64(v).map(Some).map_err(D::Error::custom),
        }
    }

    pub(super) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        opt_i64(d)?
            .map(|n| u64::try_from(n).map_err(|_| D::Error::custom("a negative number")))
            .transpose()
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        opt_u64(d)?.ok_or_else(|| D::Error::custom("a missing number"))
    }

    /// `null`, absent and `""` all mean "none".
    pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
    }

    /// `null` reads as `""`.
    pub(super) fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::error::ErrorClass;

    #[test]
    fn default_settings() {
        let s = ClientSettings::default();
        assert_eq!(s.api_base.as_str(), "https://api.weixin.qq.com/");
        assert_eq!(s.open_base.as_str(), "https://open.weixin.qq.com/");
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert_eq!(s.lang, "zh_CN");
    }

    fn client() -> WeChatClient {
        WeChatClient::new(ClientSettings::default()).unwrap()
    }

    #[test]
    fn authorize_url_component_mode_exact() {
        let url = client().authorize_url(
            &AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
            "https://auth.example.com/_wxauth/callback?x=1&y=a b",
            Scope::UserInfo,
            &OAuthState::new("AbC123"),
            Some(&ComponentAppId::new("wx0123456789abcdef")),
        );
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxa1b2c3d4e5f60708\
             &redirect_uri=https%3A%2F%2Fauth.example.com%2F_wxauth%2Fcallback%3Fx%3D1%26y%3Da%20b\
             &response_type=code&scope=snsapi_userinfo&state=AbC123&connect_redirect=1\
             &component_appid=wx0123456789abcdef#wechat_redirect"
        );
    }

    #[test]
    fn authorize_url_official_account_mode() {
        let settings = ClientSettings {
            open_base: Url::parse("http://127.0.0.1:8080/").unwrap(),
            ..ClientSettings::default()
        };
        let url = WeChatClient::new(settings).unwrap().authorize_url(
            &AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
            "http://127.0.0.1/cb",
            Scope::Base,
            &OAuthState::new("s"),
            None,
        );
        assert_eq!(
            url,
            "http://127.0.0.1:8080/connect/oauth2/authorize?appid=wxa1b2c3d4e5f60708\
             &redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&response_type=code&scope=snsapi_base\
             &state=s&connect_redirect=1#wechat_redirect"
        );
        // the parameters come back as given once decoded
        let parsed = Url::parse(&url).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[1],
            ("redirect_uri".into(), "http://127.0.0.1/cb".into())
        );
        assert_eq!(parsed.fragment(), Some("wechat_redirect"));
    }

    #[test]
    fn api_urls_join_the_base() {
        let settings = ClientSettings {
            api_base: Url::parse("http://127.0.0.1:9/").unwrap(),
            ..ClientSettings::default()
        };
        let c = WeChatClient::new(settings).unwrap();
        let url = c
            .api_url(
                endpoint::USER_INFO,
                &[("access_token", "a&b"), ("lang", "zh_CN")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/sns/userinfo?access_token=a%26b&lang=zh_CN"
        );
    }

    #[derive(Debug, Deserialize)]
    struct Tok {
        component_access_token: String,
        #[serde(deserialize_with = "flex::u64")]
        expires_in: u64,
    }

    #[test]
    fn success_replies_parse_with_extra_fields_and_string_numbers() {
        let t: Tok = parse_reply(
            "t",
            br#"{"component_access_token":"abc","expires_in":"7200","extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(
            (t.component_access_token.as_str(), t.expires_in),
            ("abc", 7200)
        );
        let t: Tok = parse_reply(
            "t",
            br#"{"errcode":0,"errmsg":"ok","component_access_token":"abc","expires_in":7200}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, 7200);
        let t: Tok = parse_reply(
            "t",
            br#"{"errcode":"0","component_access_token":"abc","expires_in":7200.0}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, 7200);
    }

    #[test]
    fn error_replies_become_api_errors_number_or_string() {
        for body in [
            &br#"{"errcode":40001,"errmsg":"invalid credential rid: 1a2b-3c"}"#[..],
            br#"{"errcode":"40001","errmsg":"invalid credential rid: 1a2b-3c"}"#,
        ] {
            match parse_reply::<Tok>("ep", body) {
                Err(WeChatError::Api {
                    code,
                    errmsg,
                    endpoint,
                }) => {
                    assert_eq!(code, 40001);
                    assert_eq!(errmsg, "invalid credential (rid: 1a2b-3c)");
                    assert_eq!(endpoint, "ep");
                }
                other => panic!("{other:?}"),
            }
        }
        let e = parse_reply::<Tok>("ep", br#"{"errcode":-1,"errmsg":"system error"}"#).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Retry);
    }

    #[test]
    fn garbled_replies_are_bad_reply_and_retryable() {
        for body in [
            &b""[..],
            b"   ",
            b"<html>502 Bad Gateway</html>",
            b"{\"component_access_token\":",
            b"[1,2,3]",
            b"{\"component_access_token\":\"abc\"}",
            b"{\"component_access_token\":5,\"expires_in\":7200}",
            b"{\"errcode\":\"forty\"}",
            b"\xff\xfe\x00",
        ] {
            let e = parse_reply::<Tok>("ep", body).unwrap_err();
            assert!(matches!(e, WeChatError::BadReply { .. }), "{body:?}: {e:?}");
            assert_eq!(e.class(), ErrorClass::Retry);
        }
    }

    #[test]
    fn bad_reply_reason_does_not_echo_the_body() {
        let body = br#"{"component_access_token":"SECRET-TOKEN-VALUE","expires_in":"soon"}"#;
        let e = parse_reply::<Tok>("ep", body).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SECRET-TOKEN-VALUE"), "{shown}");
        assert!(!shown.contains("soon"), "{shown}");
    }

    #[test]
    fn user_token_reply_parses_optional_fields() {
        let full: UserTokenReply = parse_reply(
            "ep",
            r#"{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"o1",
                "scope":"snsapi_userinfo","unionid":"u1","is_snapshotuser":1,"more":true}"#
                .as_bytes(),
        )
        .unwrap();
        let t = full.into_user_token("ep").unwrap();
        assert_eq!(t.access_token, UserAccessToken::new("AT"));
        assert_eq!(t.refresh_token, Some(UserRefreshToken::new("RT")));
        assert_eq!(t.openid, OpenId::new("o1"));
        assert_eq!(t.unionid, Some(UnionId::new("u1")));
        assert_eq!(t.expires_in, 7200);
        assert!(t.is_snapshot_user);
        assert!(t.has_scope(Scope::UserInfo));
        assert!(!t.has_scope(Scope::Base));

        let minimal: UserTokenReply = parse_reply(
            "ep",
            br#"{"access_token":"AT","openid":"o1","scope":"snsapi_base,snsapi_userinfo","unionid":"","is_snapshotuser":"0"}"#,
        )
        .unwrap();
        let t = minimal.into_user_token("ep").unwrap();
        assert_eq!(t.refresh_token, None);
        assert_eq!(t.unionid, None);
        assert!(!t.is_snapshot_user);
        assert!(t.has_scope(Scope::Base) && t.has_scope(Scope::UserInfo));

        let empty: UserTokenReply =
            parse_reply("ep", br#"{"access_token":"","openid":"o1"}"#).unwrap();
        assert!(matches!(
            empty.into_user_token("ep"),
            Err(WeChatError::BadReply { .. })
        ));
    }

    #[derive(Deserialize)]
    struct Info {
        #[allow(dead_code)]
        openid: String,
        #[serde(default, deserialize_with = "flex::string_or_null")]
        nickname: String,
    }

    #[test]
    fn user_info_tolerates_sex_as_number_or_string_and_cjk() {
        for body in [
            r#"{"openid":"o","nickname":"小明🐼","sex":1,"privilege":[]}"#,
            r#"{"openid":"o","nickname":"小明🐼","sex":"1","privilege":["chinaunicom"]}"#,
        ] {
            let info: Info = parse_reply("ep", body.as_bytes()).unwrap();
            assert_eq!(info.nickname, "小明🐼");
        }
        let info: Info = parse_reply("ep", br#"{"openid":"o","nickname":null}"#).unwrap();
        assert_eq!(info.nickname, "");
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_url() {
        // A port on loopback nobody listens on: bind, learn the port, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let settings = ClientSettings {
            api_base: Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            connect_timeout: Duration::from_secs(2),
            ..ClientSettings::default()
        };
        let c = WeChatClient::new(settings).unwrap();
        let secret = "SUPER-SECRET-USER-TOKEN-42";
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            c.user_info(&UserAccessToken::new(secret), &OpenId::new("o1")),
        )
        .await
        .unwrap()
        .unwrap_err();
        let shown = format!("{e} | {e:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains("access_token"), "{shown}");
        assert!(
            matches!(
                e,
                WeChatError::Transport { .. } | WeChatError::Timeout { .. }
            ),
            "{shown}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
    }
}
