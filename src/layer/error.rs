//! The one place where failures become responses.
//!
//! Every failure the layer or a reserved route can run into is an [`AuthError`]; it is logged and
//! rendered by [`AuthError::render`] and nowhere else:
//!
//! - browsers get a short bilingual page (中文 / English) saying what happened and what to do,
//!   with a retry link where retrying makes sense (a link, never an automatic redirect, so a
//!   broken login cannot loop);
//! - API clients get JSON `{ "error": <code>, "message": <English>, "login_url"?: <url> }`.
//!
//! Status classes: the client's fault → 4xx; WeChat down, slow or garbled → 502/503; the platform
//! has no `component_verify_ticket` yet → 503 "platform not ready / 平台未就绪"; the session
//! store failing → 503 (fail closed: never "allow"); our own bugs and misconfiguration → 500.
//!
//! Nothing secret (app secret, token, code, state, cookie or session id) ever reaches a page, the
//! JSON or the log line: the error types that can be wrapped here carry no secret in their
//! `Display`, and everything dynamic on a page is HTML-escaped.

use http::StatusCode;

use super::{
    body::OwnResponse,
    respond::{escape_html, html, json},
};
use crate::jwt::JwtError;
use crate::session::StoreError;
use crate::wechat::error::{ErrorClass, WeChatError};
use crate::wechat::events::{EventError, PushError};

/// Everything that can go wrong while authenticating a request or serving a reserved route.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No valid session on a protected route (API clients; browsers are redirected instead).
    #[error("no valid session")]
    Unauthenticated,
    /// The user refused the authorization (callback without `code`).
    #[error("the user refused the authorization")]
    LoginRefused,
    /// WeChat served a snapshot-mode page (快照页): the identity is virtual and no session is made.
    #[error("snapshot-mode (virtual) user")]
    SnapshotUser,
    /// The `state` is missing, unknown, expired, already used or belongs to another browser.
    #[error("login state missing, expired, reused or not bound to this browser")]
    InvalidState,
    /// The callback's `appid` is not the configured authorizer appid.
    #[error("callback appid does not match the authorizer appid")]
    AppIdMismatch,
    /// A WeChat call failed; the status and page follow the error's [`ErrorClass`].
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    /// The session store failed; fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Minting the identity JWT failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// A request body over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A malformed request to a reserved route.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Unknown path under the reserved prefix.
    #[error("not found")]
    NotFound,
    /// Wrong method: on a reserved route, or a method the proxy never forwards (`CONNECT`).
    /// `allow` is the `Allow` header value (RFC 9110 §15.5.6 requires one).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the address accepts, as an `Allow` value (`"GET, HEAD"`).
        allow: &'static str,
    },
    /// The request path has no unambiguous normal form (`%2F`, `\`, `..;`, NUL, bad escapes):
    /// refused on every path, never forwarded.
    #[error("ambiguous request path: {0}")]
    BadPath(#[from] super::dispatch::PathError),
    /// A logout that another site started (`Sec-Fetch-Site: cross-site`, a foreign `Origin` or
    /// `Referer`): refused, with a same-origin link to confirm.
    #[error("cross-site logout refused")]
    CrossSiteLogout,
    /// A bug of ours.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// `Retry-After` (seconds) of the "platform not ready" answer.
const NOT_READY_RETRY_AFTER_SECS: &str = "60";

/// How a WeChat failure is presented (see [`AuthError::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeChatKind {
    Timeout,
    Unavailable,
    NotReady,
    CodeRejected,
    Misconfigured,
    PushForged,
    PushMalformed,
}

fn wechat_kind(error: &WeChatError) -> WeChatKind {
    match error {
        WeChatError::Timeout { .. } => WeChatKind::Timeout,
        WeChatError::NoTicket => WeChatKind::NotReady,
        // Bad signature or key, or a genuinely signed push for another platform: refused as
        // forged; anything else structurally wrong (missing parameters, garbled XML): malformed.
        WeChatError::Push(
            PushError::Crypto(_)
            | PushError::Event(EventError::EnvelopeAppIdMismatch | EventError::EventAppIdMismatch),
        ) => WeChatKind::PushForged,
        WeChatError::Push(_) => WeChatKind::PushMalformed,
        other => match other.class() {
            ErrorClass::Ticket => WeChatKind::NotReady,
            ErrorClass::Reauthorize => WeChatKind::CodeRejected,
            ErrorClass::Configuration => WeChatKind::Misconfigured,
            ErrorClass::Retry | ErrorClass::RefreshToken | ErrorClass::Quota => {
                WeChatKind::Unavailable
            }
        },
    }
}

/// What a page says, in both languages.
struct Text {
    code: &'static str,
    zh_title: &'static str,
    zh: &'static str,
    en_title: &'static str,
    en: &'static str,
    /// Whether logging in again may help (shows the retry link / `login_url`).
    retry: bool,
    /// The label of the link (Chinese, English): "log in again" unless the error says otherwise.
    link: (&'static str, &'static str),
}

/// The usual link label: log in again.
const RETRY_LINK: (&str, &str) = ("重新登录", "Log in again");

impl AuthError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthError::LoginRefused | AuthError::SnapshotUser => StatusCode::FORBIDDEN,
            AuthError::InvalidState
            | AuthError::AppIdMismatch
            | AuthError::BadRequest(_)
            | AuthError::BadPath(_) => StatusCode::BAD_REQUEST,
            AuthError::CrossSiteLogout => StatusCode::FORBIDDEN,
            AuthError::WeChat(e) => match wechat_kind(e) {
                WeChatKind::Timeout | WeChatKind::NotReady => StatusCode::SERVICE_UNAVAILABLE,
                WeChatKind::Unavailable => StatusCode::BAD_GATEWAY,
                WeChatKind::CodeRejected | WeChatKind::PushMalformed => StatusCode::BAD_REQUEST,
                WeChatKind::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
                WeChatKind::PushForged => StatusCode::FORBIDDEN,
            },
            AuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Jwt(_) | AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AuthError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AuthError::NotFound => StatusCode::NOT_FOUND,
            AuthError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A stable machine-readable code (the JSON `error` field).
    pub fn code(&self) -> &'static str {
        self.text().code
    }

    fn text(&self) -> Text {
        let t = |code, zh_title, zh, en_title, en, retry| Text {
            code,
            zh_title,
            zh,
            en_title,
            en,
            retry,
            link: RETRY_LINK,
        };
        match self {
            AuthError::Unauthenticated => t(
                "unauthenticated",
                "需要登录",
                "请先通过微信登录。",
                "Login required",
                "Please log in with WeChat first.",
                true,
            ),
            AuthError::LoginRefused => t(
                "login_refused",
                "未完成授权",
                "您没有同意微信授权，因此无法登录。如需继续，请点击下方链接重新授权。",
                "Authorization not granted",
                "You did not allow the WeChat authorization, so you are not logged in. Use the link below to try again.",
                true,
            ),
            AuthError::SnapshotUser => t(
                "snapshot_user",
                "请使用完整服务",
                "当前页面处于微信快照模式，无法获取您的身份。请点击页面底部的“使用完整服务”按钮后继续。",
                "Please tap “使用完整服务” (use full service)",
                "WeChat opened this page in snapshot mode, which hides who you are. Tap the “使用完整服务” button at the bottom of the page to continue.",
                true,
            ),
            AuthError::InvalidState => t(
                "invalid_state",
                "登录链接已失效",
                "登录请求已过期、已被使用，或不是在此浏览器中发起的。请重新登录。",
                "Login link expired",
                "This login request has expired, was already used, or was started in another browser. Please log in again.",
                true,
            ),
            AuthError::AppIdMismatch => t(
                "appid_mismatch",
                "登录请求无效",
                "回调中的公众号与配置不一致。请重新登录。",
                "Invalid login response",
                "The callback names a different official account than the one configured. Please log in again.",
                true,
            ),
            AuthError::WeChat(e) => match wechat_kind(e) {
                WeChatKind::CodeRejected => t(
                    "code_rejected",
                    "授权已失效",
                    "微信授权码已过期或已被使用。请重新登录。",
                    "Authorization expired",
                    "The WeChat authorization code has expired or was already used. Please log in again.",
                    true,
                ),
                WeChatKind::Timeout => t(
                    "wechat_timeout",
                    "微信响应超时",
                    "微信服务器没有及时响应。请稍后重试。",
                    "WeChat timed out",
                    "WeChat did not answer in time. Please try again in a moment.",
                    true,
                ),
                WeChatKind::Unavailable => t(
                    "wechat_unavailable",
                    "微信服务暂不可用",
                    "暂时无法与微信通信。请稍后重试。",
                    "WeChat unavailable",
                    "We cannot reach WeChat right now. Please try again in a moment.",
                    true,
                ),
                WeChatKind::NotReady => t(
                    "platform_not_ready",
                    "平台未就绪",
                    "第三方平台尚未收到微信推送的验证票据，暂时无法登录。请稍后重试；若持续出现，请联系管理员。",
                    "Platform not ready",
                    "The platform has not yet received its verify ticket from WeChat, so logins are not possible yet. Please try again later; if this persists, contact the administrator.",
                    true,
                ),
                WeChatKind::Misconfigured => t(
                    "misconfigured",
                    "服务配置错误",
                    "微信拒绝了本服务的配置。请联系管理员。",
                    "Service misconfigured",
                    "WeChat rejected this service's configuration. Please contact the administrator.",
                    false,
                ),
                WeChatKind::PushForged | WeChatKind::PushMalformed => t(
                    "push_rejected",
                    "推送被拒绝",
                    "消息签名或内容校验失败。",
                    "Push rejected",
                    "The message signature or content did not verify.",
                    false,
                ),
            },
            AuthError::Store(_) => t(
                "session_store_unavailable",
                "服务暂不可用",
                "会话存储暂时不可用。请稍后重试。",
                "Service temporarily unavailable",
                "The session store is unavailable. Please try again in a moment.",
                true,
            ),
            AuthError::Jwt(_) | AuthError::Internal(_) => t(
                "internal_error",
                "服务器内部错误",
                "服务器出现了意外错误。请稍后重试；若持续出现，请联系管理员。",
                "Internal error",
                "Something unexpected went wrong on our side. Please try again later; if this persists, contact the administrator.",
                false,
            ),
            AuthError::PayloadTooLarge => t(
                "payload_too_large",
                "请求过大",
                "请求内容超过了允许的大小。",
                "Request too large",
                "The request body is larger than allowed.",
                false,
            ),
            AuthError::BadRequest(_) => t(
                "bad_request",
                "请求无效",
                "请求格式不正确。",
                "Bad request",
                "The request is malformed.",
                false,
            ),
            AuthError::NotFound => t(
                "not_found",
                "页面不存在",
                "没有这个地址。",
                "Not found",
                "There is nothing at this address.",
                false,
            ),
            AuthError::MethodNotAllowed { .. } => t(
                "method_not_allowed",
                "不支持的请求方法",
                "此地址不接受该请求方法。",
                "Method not allowed",
                "This address does not accept this request method.",
                false,
            ),
            AuthError::BadPath(_) => t(
                "bad_path",
                "请求地址无效",
                "请求地址含有无法确定含义的字符（如编码的斜杠、反斜杠或控制字符），已被拒绝。",
                "Bad request path",
                "The address contains characters whose meaning is ambiguous (an encoded slash, a backslash or a control character), so it was refused.",
                false,
            ),
            AuthError::CrossSiteLogout => Text {
                link: ("确认退出登录", "Log out"),
                ..t(
                    "cross_site_logout",
                    "确认退出登录",
                    "退出登录的请求来自其他网站，因此没有执行。如果确实要退出，请点击下面的按钮。",
                    "Confirm logout",
                    "The logout request came from another site, so it was not carried out. If you do want to log out, use the button below.",
                    true,
                )
            },
        }
    }

    /// Logs the error (once, at a level matching its class) and renders it: an HTML page when
    /// `wants_html`, JSON otherwise. `login_url` is offered as the retry link / `login_url` field
    /// when logging in again can help.
    pub fn render(&self, wants_html: bool, login_url: Option<&str>) -> OwnResponse {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let text = self.text();
        let retry = login_url.filter(|_| text.retry);
        let mut response = if wants_html {
            html(status, page(&text, retry.map(|url| (url, text.link))))
        } else {
            let mut body = serde_json::json!({ "error": text.code, "message": text.en });
            if let Some(url) = retry {
                let key = match self {
                    AuthError::CrossSiteLogout => "confirm_url",
                    _ => "login_url",
                };
                body[key] = serde_json::Value::from(url);
            }
            json(status, &body)
        };
        if matches!(self, AuthError::WeChat(e) if wechat_kind(e) == WeChatKind::NotReady) {
            // WeChat pushes a ticket every ten minutes; a minute is a polite first retry.
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(NOT_READY_RETRY_AFTER_SECS),
            );
        }
        if let AuthError::MethodNotAllowed { allow } = self {
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        response
    }
}

/// The bilingual page. Every dynamic value is escaped; the static texts contain no markup.
fn page(text: &Text, link: Option<(&str, (&str, &str))>) -> String {
    let retry = link
        .map(|(url, (zh, en))| {
            format!(
                "<p class=\"retry\"><a href=\"{}\">{} / {}</a></p>",
                escape_html(url),
                escape_html(zh),
                escape_html(en),
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>{zh_title} / {en_title}</title>\
<style>body{{font-family:system-ui,-apple-system,\"PingFang SC\",\"Microsoft YaHei\",sans-serif;\
max-width:36em;margin:3em auto;padding:0 1em;line-height:1.6;color:#222}}\
h1{{font-size:1.4em}}h2{{font-size:1.1em;color:#555}}.retry a{{display:inline-block;padding:.5em 1em;\
background:#07c160;color:#fff;border-radius:4px;text-decoration:none}}</style></head>\
<body><main><h1>{zh_title}</h1><p>{zh}</p><h2 lang=\"en\">{en_title}</h2><p lang=\"en\">{en}</p>{retry}\
</main></body></html>\n",
        zh_title = escape_html(text.zh_title),
        en_title = escape_html(text.en_title),
        zh = escape_html(text.zh),
        en = escape_html(text.en),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: OwnResponse) -> String {
        let bytes = r
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn browsers_get_a_bilingual_page_with_an_escaped_retry_link() {
        let r = AuthError::LoginRefused.render(true, Some("/_wxauth/login?return=/a&x=\"<b>"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-store");
        let page = body(r).await;
        assert!(page.contains("未完成授权"));
        assert!(page.contains("Authorization not granted"));
        assert!(
            page.contains("href=\"/_wxauth/login?return=/a&amp;x=&quot;&lt;b&gt;\""),
            "{page}"
        );
    }

    #[tokio::test]
    async fn api_clients_get_json() {
        let r = AuthError::Unauthenticated.render(false, Some("https://x.example/_wxauth/login"));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
        assert_eq!(v["error"], "unauthenticated");
        assert_eq!(v["login_url"], "https://x.example/_wxauth/login");
    }

    #[tokio::test]
    async fn details_never_reach_the_client() {
        let r = AuthError::Store(StoreError::Backend(
            "redis: connection refused at 10.0.0.3 secret=abc".into(),
        ))
        .render(true, None);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let page = body(r).await;
        assert!(
            !page.contains("10.0.0.3") && !page.contains("secret"),
            "{page}"
        );
        let misconfigured = WeChatError::Api {
            code: 61011,
            errmsg: "invalid component rid: 1".into(),
            endpoint: "sns/oauth2/component/access_token",
        };
        let r = AuthError::from(misconfigured).render(false, Some("/login"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
        assert!(
            v.get("login_url").is_none(),
            "retrying does not help a misconfiguration"
        );
        assert!(!v.to_string().contains("rid"), "{v}");
    }

    #[test]
    fn status_classes() {
        let api = |code| {
            AuthError::from(WeChatError::Api {
                code,
                errmsg: String::new(),
                endpoint: "x",
            })
        };
        let not_ready = AuthError::from(WeChatError::NoTicket);
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        for html in [true, false] {
            let r = not_ready.render(html, None);
            assert_eq!(r.headers()[http::header::RETRY_AFTER], "60");
        }
        assert!(
            !api(-1)
                .render(true, None)
                .headers()
                .contains_key(http::header::RETRY_AFTER)
        );
        assert_eq!(not_ready.code(), "platform_not_ready");
        assert_eq!(api(61006).code(), "platform_not_ready");
        let timeout = AuthError::from(WeChatError::Timeout { endpoint: "x" });
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api(-1).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(api(40163).status(), StatusCode::BAD_REQUEST);
        assert_eq!(api(40163).code(), "code_rejected");
        let forged = AuthError::from(WeChatError::Push(PushError::Crypto(
            crate::wechat::crypto::CryptoError::InvalidSignature,
        )));
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            AuthError::Internal("x").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
