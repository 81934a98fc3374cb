//! The one place where failures become responses.
//!
//! Every failure the layer or a reserved route can run into is an [`AuthError`]; it is logged and
//! rendered by [`AuthError::render`] and nowhere else:
//!
//! - browsers get a short bilingual page (中文 / English) saying what happened and what to do,
//!   with a retry link where retrying makes sense (a link, never an automatic redirect, so a
//!   broken login cannot loop);
//! - API clients get JSON `{ "error": <code>, "message": <English>, "login_url"?: <url>,
//!   "request_id"?: <id> }`; pages show the id as "请求编号 / Request ID" (inside the layer every
//!   request has one, [`crate::request_id`]), so that a user can quote it.
//!
//! Status classes: the client's fault → 4xx; WeChat down, slow or garbled → 502/503; the platform
//! has no `component_verify_ticket` yet → 503 "platform not ready / 平台未就绪"; the session
//! store failing → 503 (fail closed: never "allow"); our own bugs and misconfiguration → 500.
//!
//! Nothing secret (app secret, token, code, state, cookie or session id) ever reaches a page, the
//! JSON or the log line: the error types that can be wrapped here carry no secret in their
//! `Display`, and everything dynamic on a page is HTML-escaped.

use http::StatusCode;

use super::tenant::{TenantRejection, rejection_for};
use super::{
    body::OwnResponse,
    respond::{escape_html, html, json},
};
use crate::jwt::JwtError;
use crate::negotiate::Answer;
use crate::request_id::RequestId;
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
    /// The request has no usable official account (tenant): an unknown one (404), one that
    /// revoked the platform or lacks the web permission set (403, logins only), or an
    /// ambiguous host (400).
    #[error(transparent)]
    Tenant(#[from] TenantRejection),
    /// The access lists (`[access]`) do not let this person in: at the callback (no session is
    /// made) or on a request with a session (refused, the session kept).
    #[error("refused by the access lists")]
    AccessDenied,
    /// A bug of ours.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A forward-auth request from a peer outside `forward_auth.allowed_callers` (or with no
    /// known peer): only the front proxies named there may ask.
    #[error("forward-auth caller not allowed")]
    UntrustedCaller,
    /// A forward-auth request whose description of the original request is missing, repeated or
    /// malformed: refused, never "allow".
    #[error("bad forward-auth metadata: {0}")]
    BadForwardMetadata(#[from] super::forward::ForwardError),
    /// QR bridge: this client address created too many QR codes, or asked about too many
    /// unknown ones, in the last minute (429).
    #[error("too many QR login requests from this address")]
    QrRateLimited,
    /// QR bridge: the ticket store is full (or failed to take a new ticket): new QR codes are
    /// refused, pending ones are kept (503).
    #[error("no room for a new QR login")]
    QrBusy,
    /// QR bridge: the ticket is past its deadline (410).
    #[error("QR login expired")]
    QrExpired,
    /// QR bridge: another phone scanned the code first, or it was decided already (409).
    #[error("QR login already used")]
    QrUsed,
    /// QR bridge: the QR link was opened outside WeChat (403).
    #[error("QR link opened outside WeChat")]
    QrOpenInWeChat,
    /// QR bridge: a confirmation without POST, the phone's token or a same-origin `Origin`
    /// (403).
    #[error("QR confirmation refused")]
    QrConfirmRefused,
    /// QR bridge: `qr.require_same_network` and the phone is on another network than the
    /// desktop (403).
    #[error("QR confirmation from another network refused")]
    QrDifferentNetwork,
}

/// Which row a WeChat failure is answered with.
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

/// How one kind of failure is answered: everything a client sees, in one place. Read by
/// [`AuthError::status`], [`AuthError::code`] and [`AuthError::render`] (page and JSON).
#[derive(Debug)]
struct Row {
    status: StatusCode,
    /// The JSON `error` field.
    code: &'static str,
    zh_title: &'static str,
    zh: &'static str,
    en_title: &'static str,
    /// Also the JSON `message` field.
    en: &'static str,
    /// Whether following the link may help (shows the link on the page and in the JSON).
    retry: bool,
    /// The label of the link (Chinese, English).
    link: (&'static str, &'static str),
    /// The JSON field that carries the link.
    link_key: &'static str,
    /// A `Retry-After` value (seconds), when waiting is what helps.
    retry_after: Option<&'static str>,
}

/// The defaults every row starts from: a retry link that logs in again.
const LOGIN_AGAIN: Row = Row {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    code: "",
    zh_title: "",
    zh: "",
    en_title: "",
    en: "",
    retry: true,
    link: ("重新登录", "Log in again"),
    link_key: "login_url",
    retry_after: None,
};

/// The defaults of a row without a link (retrying cannot help).
const NO_LINK: Row = Row {
    retry: false,
    ..LOGIN_AGAIN
};

const UNAUTHENTICATED: Row = Row {
    status: StatusCode::UNAUTHORIZED,
    code: "unauthenticated",
    zh_title: "需要登录",
    zh: "请先通过微信登录。",
    en_title: "Login required",
    en: "Please log in with WeChat first.",
    ..LOGIN_AGAIN
};

const LOGIN_REFUSED: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "login_refused",
    zh_title: "未完成授权",
    zh: "您没有同意微信授权，因此无法登录。如需继续，请点击下方链接重新授权。",
    en_title: "Authorization not granted",
    en: "You did not allow the WeChat authorization, so you are not logged in. Use the link below to try again.",
    ..LOGIN_AGAIN
};

const SNAPSHOT_USER: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "snapshot_user",
    zh_title: "请使用完整服务",
    zh: "当前页面处于微信快照模式，无法获取您的身份。请点击页面底部的“使用完整服务”按钮后继续。",
    en_title: "Please tap “使用完整服务” (use full service)",
    en: "WeChat opened this page in snapshot mode, which hides who you are. Tap the “使用完整服务” button at the bottom of the page to continue.",
    ..LOGIN_AGAIN
};

const INVALID_STATE: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "invalid_state",
    zh_title: "登录链接已失效",
    zh: "登录请求已过期、已被使用，或不是在此浏览器中发起的。请重新登录。",
    en_title: "Login link expired",
    en: "This login request has expired, was already used, or was started in another browser. Please log in again.",
    ..LOGIN_AGAIN
};

const APPID_MISMATCH: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "appid_mismatch",
    zh_title: "登录请求无效",
    zh: "回调中的公众号与配置不一致。请重新登录。",
    en_title: "Invalid login response",
    en: "The callback names a different official account than the one configured. Please log in again.",
    ..LOGIN_AGAIN
};

const CODE_REJECTED: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "code_rejected",
    zh_title: "授权已失效",
    zh: "微信授权码已过期或已被使用。请重新登录。",
    en_title: "Authorization expired",
    en: "The WeChat authorization code has expired or was already used. Please log in again.",
    ..LOGIN_AGAIN
};

const WECHAT_TIMEOUT: Row = Row {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "wechat_timeout",
    zh_title: "微信响应超时",
    zh: "微信服务器没有及时响应。请稍后重试。",
    en_title: "WeChat timed out",
    en: "WeChat did not answer in time. Please try again in a moment.",
    ..LOGIN_AGAIN
};

const WECHAT_UNAVAILABLE: Row = Row {
    status: StatusCode::BAD_GATEWAY,
    code: "wechat_unavailable",
    zh_title: "微信服务暂不可用",
    zh: "暂时无法与微信通信。请稍后重试。",
    en_title: "WeChat unavailable",
    en: "We cannot reach WeChat right now. Please try again in a moment.",
    ..LOGIN_AGAIN
};

const PLATFORM_NOT_READY: Row = Row {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "platform_not_ready",
    zh_title: "平台未就绪",
    zh: "第三方平台尚未收到微信推送的验证票据，暂时无法登录。请稍后重试；若持续出现，请联系管理员。",
    en_title: "Platform not ready",
    en: "The platform has not yet received its verify ticket from WeChat, so logins are not possible yet. Please try again later; if this persists, contact the administrator.",
    // WeChat pushes a ticket every ten minutes; a minute is a polite first retry.
    retry_after: Some("60"),
    ..LOGIN_AGAIN
};

const MISCONFIGURED: Row = Row {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    code: "misconfigured",
    zh_title: "服务配置错误",
    zh: "微信拒绝了本服务的配置。请联系管理员。",
    en_title: "Service misconfigured",
    en: "WeChat rejected this service's configuration. Please contact the administrator.",
    ..NO_LINK
};

const PUSH_FORGED: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "push_rejected",
    zh_title: "推送被拒绝",
    zh: "消息签名或内容校验失败。",
    en_title: "Push rejected",
    en: "The message signature or content did not verify.",
    ..NO_LINK
};

/// The same page as [`PUSH_FORGED`], for a push that is malformed rather than forged.
const PUSH_MALFORMED: Row = Row {
    status: StatusCode::BAD_REQUEST,
    ..PUSH_FORGED
};

const STORE_UNAVAILABLE: Row = Row {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "session_store_unavailable",
    zh_title: "服务暂不可用",
    zh: "会话存储暂时不可用。请稍后重试。",
    en_title: "Service temporarily unavailable",
    en: "The session store is unavailable. Please try again in a moment.",
    ..LOGIN_AGAIN
};

const INTERNAL: Row = Row {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    code: "internal_error",
    zh_title: "服务器内部错误",
    zh: "服务器出现了意外错误。请稍后重试；若持续出现，请联系管理员。",
    en_title: "Internal error",
    en: "Something unexpected went wrong on our side. Please try again later; if this persists, contact the administrator.",
    ..NO_LINK
};

const PAYLOAD_TOO_LARGE: Row = Row {
    status: StatusCode::PAYLOAD_TOO_LARGE,
    code: "payload_too_large",
    zh_title: "请求过大",
    zh: "请求内容超过了允许的大小。",
    en_title: "Request too large",
    en: "The request body is larger than allowed.",
    ..NO_LINK
};

const BAD_REQUEST: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "bad_request",
    zh_title: "请求无效",
    zh: "请求格式不正确。",
    en_title: "Bad request",
    en: "The request is malformed.",
    ..NO_LINK
};

const UNKNOWN_TENANT: Row = Row {
    status: StatusCode::NOT_FOUND,
    code: "unknown_tenant",
    zh_title: "未知的公众号",
    zh: "此地址不属于本平台服务的任何公众号。请检查链接。",
    en_title: "Unknown account",
    en: "This address does not belong to any official account served here. Please check the link.",
    ..NO_LINK
};

const TENANT_REVOKED: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "tenant_revoked",
    zh_title: "公众号已取消授权",
    zh: "该公众号已取消对本平台的授权，暂时无法通过微信登录。请联系公众号运营者。",
    en_title: "Account no longer authorized",
    en: "This official account has revoked its authorization of the platform, so WeChat login is not available. Please contact the account's operator.",
    ..NO_LINK
};

const TENANT_NO_WEB_PERMISSION: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "tenant_no_web_permission",
    zh_title: "公众号未授权网页服务",
    zh: "该公众号没有向本平台授权“网页服务”权限，因此无法通过微信登录。请联系公众号运营者。",
    en_title: "Web login not granted",
    en: "This official account has not granted the platform the web-page permission (网页服务), so WeChat login is not available. Please contact the account's operator.",
    ..NO_LINK
};

const BAD_HOST: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "bad_host",
    zh_title: "请求无效",
    zh: "请求的主机名无效或不一致。",
    en_title: "Bad request",
    en: "The request names no valid host, or two different ones.",
    ..NO_LINK
};

const NOT_FOUND: Row = Row {
    status: StatusCode::NOT_FOUND,
    code: "not_found",
    zh_title: "页面不存在",
    zh: "没有这个地址。",
    en_title: "Not found",
    en: "There is nothing at this address.",
    ..NO_LINK
};

const METHOD_NOT_ALLOWED: Row = Row {
    status: StatusCode::METHOD_NOT_ALLOWED,
    code: "method_not_allowed",
    zh_title: "不支持的请求方法",
    zh: "此地址不接受该请求方法。",
    en_title: "Method not allowed",
    en: "This address does not accept this request method.",
    ..NO_LINK
};

const BAD_PATH: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "bad_path",
    zh_title: "请求地址无效",
    zh: "请求地址含有无法确定含义的字符（如编码的斜杠、反斜杠或控制字符），已被拒绝。",
    en_title: "Bad request path",
    en: "The address contains characters whose meaning is ambiguous (an encoded slash, a backslash or a control character), so it was refused.",
    ..NO_LINK
};

const CROSS_SITE_LOGOUT: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "cross_site_logout",
    zh_title: "确认退出登录",
    zh: "退出登录的请求来自其他网站，因此没有执行。如果确实要退出，请点击下面的按钮。",
    en_title: "Confirm logout",
    en: "The logout request came from another site, so it was not carried out. If you do want to log out, use the button below.",
    link: ("确认退出登录", "Log out"),
    link_key: "confirm_url",
    ..LOGIN_AGAIN
};

const UNTRUSTED_CALLER: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "untrusted_caller",
    zh_title: "拒绝访问",
    zh: "只有配置的前端代理可以使用此认证接口。",
    en_title: "Forbidden",
    en: "Only the configured front proxies may use this authentication endpoint.",
    ..NO_LINK
};

const BAD_FORWARD_METADATA: Row = Row {
    status: StatusCode::BAD_REQUEST,
    code: "bad_forward_metadata",
    zh_title: "请求无效",
    zh: "前端代理转发的原始请求信息缺失、重复或格式不正确。",
    en_title: "Bad request",
    en: "The front proxy's description of the original request is missing, repeated or malformed.",
    ..NO_LINK
};

const ACCESS_DENIED: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "access_denied",
    zh_title: "无权访问",
    zh: "您已通过微信登录，但未被允许使用本服务。如需访问，请联系管理员。",
    en_title: "Access denied",
    en: "You logged in with WeChat, but you are not allowed to use this service. To get access, contact the administrator.",
    ..NO_LINK
};

const QR_RATE_LIMITED: Row = Row {
    status: StatusCode::TOO_MANY_REQUESTS,
    code: "qr_rate_limited",
    zh_title: "请求过于频繁",
    zh: "此网络在一分钟内请求了太多登录二维码。请稍后再试。",
    en_title: "Too many requests",
    en: "Too many QR login requests came from this network in the last minute. Please try again shortly.",
    retry_after: Some("60"),
    ..NO_LINK
};

const QR_BUSY: Row = Row {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "qr_unavailable",
    zh_title: "扫码登录暂不可用",
    zh: "当前等待扫码的登录过多，暂时无法生成新的二维码。请稍后重试。",
    en_title: "QR login busy",
    en: "Too many QR logins are waiting right now, so no new code can be made. Please try again in a moment.",
    retry_after: Some("30"),
    ..NO_LINK
};

const QR_EXPIRED: Row = Row {
    status: StatusCode::GONE,
    code: "qr_expired",
    zh_title: "二维码已过期",
    zh: "此登录二维码已过期。请在电脑上刷新二维码后重新扫描。",
    en_title: "QR code expired",
    en: "This login QR code has expired. Refresh the code on the computer and scan it again.",
    ..NO_LINK
};

const QR_USED: Row = Row {
    status: StatusCode::CONFLICT,
    code: "qr_used",
    zh_title: "二维码已被使用",
    zh: "此登录二维码已被其他手机扫描或已处理。请在电脑上刷新二维码。",
    en_title: "QR code already used",
    en: "Another phone scanned this login QR code first, or it was already handled. Refresh the code on the computer.",
    ..NO_LINK
};

const QR_OPEN_IN_WECHAT: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "qr_open_in_wechat",
    zh_title: "请使用微信扫一扫",
    zh: "请打开手机微信，使用“扫一扫”扫描电脑上的二维码。",
    en_title: "Scan with WeChat",
    en: "Open WeChat on your phone and scan the code on the computer with “Scan” (扫一扫).",
    ..NO_LINK
};

const QR_CONFIRM_REFUSED: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "qr_confirm_refused",
    zh_title: "确认请求无效",
    zh: "确认登录只能在扫码的手机上、通过确认页面的按钮完成。",
    en_title: "Confirmation refused",
    en: "A login can only be confirmed with the buttons of the confirmation page, on the phone that scanned the code.",
    ..NO_LINK
};

const QR_DIFFERENT_NETWORK: Row = Row {
    status: StatusCode::FORBIDDEN,
    code: "qr_different_network",
    zh_title: "网络不一致",
    zh: "手机与电脑不在同一网络，本站不允许这样登录。请让手机连接与电脑相同的网络后重试。",
    en_title: "Different networks",
    en: "The phone and the computer are on different networks, which this site does not allow. Connect the phone to the computer's network and try again.",
    ..NO_LINK
};

impl AuthError {
    /// The row that describes how this error is answered.
    fn row(&self) -> &'static Row {
        match self {
            AuthError::Unauthenticated => &UNAUTHENTICATED,
            AuthError::LoginRefused => &LOGIN_REFUSED,
            AuthError::SnapshotUser => &SNAPSHOT_USER,
            AuthError::InvalidState => &INVALID_STATE,
            AuthError::AppIdMismatch => &APPID_MISMATCH,
            AuthError::Tenant(rejection) => tenant_row(rejection),
            AuthError::WeChat(WeChatError::Tenant { status, .. }) => {
                rejection_for(*status).map_or(&MISCONFIGURED, |r| tenant_row(&r))
            }
            AuthError::WeChat(e) => match wechat_kind(e) {
                WeChatKind::CodeRejected => &CODE_REJECTED,
                WeChatKind::Timeout => &WECHAT_TIMEOUT,
                WeChatKind::Unavailable => &WECHAT_UNAVAILABLE,
                WeChatKind::NotReady => &PLATFORM_NOT_READY,
                WeChatKind::Misconfigured => &MISCONFIGURED,
                WeChatKind::PushForged => &PUSH_FORGED,
                WeChatKind::PushMalformed => &PUSH_MALFORMED,
            },
            AuthError::Store(_) => &STORE_UNAVAILABLE,
            AuthError::Jwt(_) | AuthError::Internal(_) => &INTERNAL,
            AuthError::PayloadTooLarge => &PAYLOAD_TOO_LARGE,
            AuthError::BadRequest(_) => &BAD_REQUEST,
            AuthError::NotFound => &NOT_FOUND,
            AuthError::MethodNotAllowed { .. } => &METHOD_NOT_ALLOWED,
            AuthError::BadPath(_) => &BAD_PATH,
            AuthError::CrossSiteLogout => &CROSS_SITE_LOGOUT,
            AuthError::UntrustedCaller => &UNTRUSTED_CALLER,
            AuthError::AccessDenied => &ACCESS_DENIED,
            AuthError::BadForwardMetadata(_) => &BAD_FORWARD_METADATA,
            AuthError::QrRateLimited => &QR_RATE_LIMITED,
            AuthError::QrBusy => &QR_BUSY,
            AuthError::QrExpired => &QR_EXPIRED,
            AuthError::QrUsed => &QR_USED,
            AuthError::QrOpenInWeChat => &QR_OPEN_IN_WECHAT,
            AuthError::QrConfirmRefused => &QR_CONFIRM_REFUSED,
            AuthError::QrDifferentNetwork => &QR_DIFFERENT_NETWORK,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.row().status
    }

    /// A stable machine-readable code (the JSON `error` field).
    pub fn code(&self) -> &'static str {
        self.row().code
    }

    /// Logs the error (once, at a level matching its class) and renders it as `answer` says:
    /// a bilingual HTML page or JSON. `link` is offered as the page's link and the JSON's
    /// `login_url` (`confirm_url` for a cross-site logout) when following it can help.
    pub fn render(&self, answer: Answer, link: Option<&str>) -> OwnResponse {
        self.render_with(answer, link, None)
    }

    /// [`render`](Self::render) with one more JSON field (`(name, value)`), e.g. the QR login
    /// URL next to `login_url` in the 401 of an API client; pages ignore it.
    pub(crate) fn render_with(
        &self,
        answer: Answer,
        link: Option<&str>,
        extra: Option<(&'static str, &str)>,
    ) -> OwnResponse {
        let row = self.row();
        let status = row.status;
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let link = link.filter(|_| row.retry);
        let request_id = RequestId::current();
        let mut response = match answer {
            Answer::Html => html(status, page(row, link, request_id.as_ref())),
            Answer::Json => {
                let mut body = serde_json::json!({ "error": row.code, "message": row.en });
                if let Some(id) = &request_id {
                    body["request_id"] = serde_json::Value::from(id.as_str());
                }
                if let Some(url) = link {
                    body[row.link_key] = serde_json::Value::from(url);
                }
                if let Some((name, value)) = extra {
                    body[name] = serde_json::Value::from(value);
                }
                json(status, &body)
            }
        };
        if let Some(seconds) = row.retry_after {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(seconds),
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

fn tenant_row(rejection: &TenantRejection) -> &'static Row {
    match rejection {
        TenantRejection::BadHost => &BAD_HOST,
        TenantRejection::Unknown => &UNKNOWN_TENANT,
        TenantRejection::Revoked => &TENANT_REVOKED,
        TenantRejection::NoWebPermission => &TENANT_NO_WEB_PERMISSION,
    }
}

/// The bilingual page. Every dynamic value is escaped; the static texts contain no markup.
/// The request id, when there is one, is shown so that the user can quote it.
fn page(row: &Row, link: Option<&str>, request_id: Option<&RequestId>) -> String {
    let request_id = request_id
        .map(|id| {
            format!(
                "<p class=\"request-id\">请求编号 / Request ID: <code>{}</code></p>",
                escape_html(id.as_str())
            )
        })
        .unwrap_or_default();
    let (zh, en) = row.link;
    let retry = link
        .map(|url| {
            format!(
                "<p class=\"retry\"><a href=\"{}\">{} / {}</a></p>",
                escape_html(url),
                escape_html(zh),
                escape_html(en),
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>{zh_title}</h1><p>{zh}</p><h2 lang=\"en\">{en_title}</h2><p lang=\"en\">{en}</p>{retry}{request_id}",
        zh_title = escape_html(row.zh_title),
        en_title = escape_html(row.en_title),
        zh = escape_html(row.zh),
        en = escape_html(row.en),
    );
    shell(row.zh_title, row.en_title, "", &body)
}

/// The frame of every page the layer serves (error pages, the QR login pages): `lang="zh-CN"`,
/// the shared style, the title "中文 / English" (escaped here), `head` (trusted markup: extra
/// style, a refresh) and `body` (markup the caller escaped).
pub(super) fn shell(zh_title: &str, en_title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>{zh_title} / {en_title}</title>\
<style>body{{font-family:system-ui,-apple-system,\"PingFang SC\",\"Microsoft YaHei\",sans-serif;\
max-width:36em;margin:3em auto;padding:0 1em;line-height:1.6;color:#222}}\
h1{{font-size:1.4em}}h2{{font-size:1.1em;color:#555}}.retry a{{display:inline-block;padding:.5em 1em;\
background:#07c160;color:#fff;border-radius:4px;text-decoration:none}}</style>{head}</head>\
<body><main>{body}</main></body></html>\n",
        zh_title = escape_html(zh_title),
        en_title = escape_html(en_title),
    )
}

#[cfg(test)]
mod tests;
