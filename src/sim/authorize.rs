//! The simulated `open.weixin.qq.com/connect/oauth2/authorize` page (docs/wechat-protocol.md §8,
//! §11.1, §16).
//!
//! Every parameter is validated, including the documented order. Errors are shown on the page
//! with WeChat's 100xx code and never reach the callback, exactly like WeChat; the code is also
//! in the `x-sim-error` response header for tests. In interactive (dev) mode the page lists the
//! test users; otherwise it redirects at once with the programmed next user.
//!
//! Like WeChat, the page only works in WeChat's own browser
//! ([`SimConfig::require_wechat_browser`](super::SimConfig::require_wechat_browser)): any other
//! browser gets the dead end "请在微信客户端打开链接" (`x-sim-error: browser`), unless
//! [`phone`](super::phone) marked it as acting as the phone.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use url::Url;

use super::{
    http::{Resp, escape, html, is_safe_image_url, params, random_token, redirect, respond},
    state::{AuthMode, CodeEntry, Endpoint, Failure, HANG, Inner, PendingAuthorize, SimUser},
};
use crate::wechat::Scope;

/// Where the interactive page's buttons lead (a sim-only path, not a WeChat one).
pub(crate) const CHOOSE_PATH: &str = "/_sim/authorize/choose";

/// The documented parameter order ("严格按照以下格式，包括顺序和大小写").
const ORDER: [&str; 7] = [
    "appid",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "connect_redirect",
    "component_appid",
];

/// Longest accepted `state` (bytes).
const MAX_STATE: usize = 128;

/// Why the authorize page refuses: WeChat's code (or a sim tag) and an explanation.
#[derive(Debug)]
pub(crate) struct PageError {
    code: String,
    detail: String,
}

impl PageError {
    /// A refusal with WeChat's code (or a sim tag) and an explanation.
    pub(crate) fn new(code: impl Into<String>, detail: impl Into<String>) -> PageError {
        PageError {
            code: code.into(),
            detail: detail.into(),
        }
    }
}

/// A validated authorize (or QR login) request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) mode: AuthMode,
    pub(crate) appid: String,
    pub(crate) redirect_uri: Url,
    pub(crate) scope: Scope,
    pub(crate) state: String,
}

/// `GET /connect/oauth2/authorize`.
pub(crate) async fn authorize(
    inner: &Inner,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
) -> Resp {
    if let Some(refused) = open_page(inner, Endpoint::Authorize, method).await {
        return refused;
    }
    if inner.config.require_wechat_browser && !super::phone::is_wechat_browser(headers) {
        return super::phone::not_in_wechat(inner, query);
    }
    let request = match validate(inner, query) {
        Ok(request) => request,
        Err(error) => return error_page(&error),
    };
    if inner.config.interactive {
        return choice_page(inner, request);
    }
    redirect_now(inner, &request)
}

/// Non-interactive mode: the redirect back at once, with a code for the programmed next user
/// (or `users[0]`), or without one when a refusal is programmed.
pub(crate) fn redirect_now(inner: &Inner, request: &Request) -> Resp {
    let (user, refuse) = {
        let mut state = inner.state();
        let user = state.next_user.take();
        let refuse = std::mem::take(&mut state.refuse_next);
        (user, refuse)
    };
    if refuse {
        return redirect(refusal_location(&request.redirect_uri, &request.state).as_str());
    }
    let Some(user) = user.or_else(|| inner.config.users.first().cloned()) else {
        return error_page(&PageError::new("no-users", "SimConfig.users is empty"));
    };
    let location = consent_location(
        inner,
        user,
        request.mode,
        &request.appid,
        &request.redirect_uri,
        request.scope,
        &request.state,
    );
    redirect(location.as_str())
}

/// Keeps `request` for the interactive page's buttons ([`CHOOSE_PATH`]); returns its id.
pub(crate) fn remember(inner: &Inner, request: Request) -> String {
    let id = random_token(16);
    let expires_at = Instant::now()
        + inner
            .config
            .code_ttl
            .max(std::time::Duration::from_secs(300));
    let mut state = inner.state();
    state.prune();
    state.pending.insert(
        id.clone(),
        PendingAuthorize {
            mode: request.mode,
            appid: request.appid,
            redirect_uri: request.redirect_uri,
            scope: request.scope,
            state: request.state,
            expires_at,
        },
    );
    id
}

/// The start of every page WeChat serves on `open.weixin.qq.com`: counts the call, answers an
/// injected failure, requires `GET` (or `HEAD`). `Some` is the reply to send.
pub(crate) async fn open_page(inner: &Inner, endpoint: Endpoint, method: &Method) -> Option<Resp> {
    let injected = inner.state().begin_call(endpoint);
    if let Some(f) = injected {
        return Some(failure_page(f).await);
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(error_page(&PageError::new(
            "method",
            "请用 GET 打开此链接 / open this link with GET",
        )));
    }
    None
}

/// Validates the query of an authorize request, in WeChat's order of checks.
fn validate(inner: &Inner, query: &str) -> Result<Request, PageError> {
    let config = &inner.config;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let appid = get("appid").unwrap_or("");
    let redirect_uri = get("redirect_uri").unwrap_or("");
    let scope = get("scope").unwrap_or("");
    if appid.is_empty() {
        return Err(PageError::new("10012", "appid 参数为空 / appid is empty"));
    }
    if redirect_uri.is_empty() {
        return Err(PageError::new(
            "10011",
            "redirect_uri 参数为空 / redirect_uri is empty",
        ));
    }
    if scope.is_empty() {
        return Err(PageError::new("10010", "scope 参数为空 / scope is empty"));
    }
    let positions: Vec<usize> = pairs
        .iter()
        .filter_map(|(key, _)| ORDER.iter().position(|known| known == key))
        .collect();
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PageError::new(
            "order",
            format!(
                "该链接无法访问：参数顺序错误或重复 / parameters repeated or out of the documented \
                 order ({})",
                ORDER.join(", ")
            ),
        ));
    }
    if get("response_type") != Some("code") {
        return Err(PageError::new(
            "response_type",
            "该链接无法访问：response_type 必须为 code / response_type must be code",
        ));
    }
    let mode = match get("component_appid") {
        Some(component_appid) => {
            if appid == config.component_appid.as_str() {
                return Err(component_appid_as_appid());
            }
            if component_appid != config.component_appid.as_str()
                || !inner.state().allows_web_oauth(appid)
            {
                return Err(PageError::new(
                    "10015",
                    "公众号未授权第三方平台，请检查授权状态 / the official account has not \
                     authorized this third-party platform",
                ));
            }
            AuthMode::Component
        }
        None => {
            if appid == config.component_appid.as_str() {
                return Err(component_appid_as_appid());
            }
            if appid != config.authorizer_appid.as_str() {
                return Err(PageError::new(
                    "appid",
                    "该链接无法访问：未知的公众号 appid / unknown official-account appid",
                ));
            }
            AuthMode::OfficialAccount
        }
    };
    let redirect_uri = redirect_target(inner, redirect_uri, "10003")?;
    let mut granted = Scope::Base;
    for requested in scope.split(',') {
        match requested {
            "snsapi_base" => {}
            "snsapi_userinfo" => granted = Scope::UserInfo,
            _ => {
                return Err(PageError::new(
                    "10005",
                    "此公众号并没有这些 scope 的权限 / the official account lacks this scope",
                ));
            }
        }
    }
    let state = get("state").unwrap_or("");
    if state.is_empty() {
        return Err(PageError::new("10013", "state 参数为空 / state is empty"));
    }
    if state.len() > MAX_STATE {
        return Err(PageError::new(
            "state",
            "该链接无法访问：state 超过 128 字节 / state longer than 128 bytes",
        ));
    }
    Ok(Request {
        mode,
        appid: appid.to_owned(),
        redirect_uri,
        scope: granted,
        state: state.to_owned(),
    })
}

/// `raw` as a `redirect_uri`: an absolute http(s) URL on one of
/// [`SimConfig::redirect_hosts`](super::SimConfig::redirect_hosts) (the port is ignored), else
/// a refusal with `code`.
pub(crate) fn redirect_target(inner: &Inner, raw: &str, code: &str) -> Result<Url, PageError> {
    let Some(target) = http_url(raw) else {
        return Err(PageError::new(
            code,
            "redirect_uri 不是有效的 http(s) 地址 / redirect_uri is not an absolute http(s) URL",
        ));
    };
    if on_redirect_host(inner, &target) {
        Ok(target)
    } else {
        Err(PageError::new(
            code,
            format!(
                "redirect_uri 域名与后台配置不一致 / the redirect_uri host {:?} is not one \
                 of the configured domains {:?}",
                target.host_str().unwrap_or(""),
                inner.config.redirect_hosts
            ),
        ))
    }
}

/// `raw` parsed as an absolute http(s) URL.
pub(crate) fn http_url(raw: &str) -> Option<Url> {
    Url::parse(raw)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
}

/// Whether `url`'s host is one of the configured redirect hosts.
pub(crate) fn on_redirect_host(inner: &Inner, url: &Url) -> bool {
    let host = url.host_str().unwrap_or("");
    inner
        .config
        .redirect_hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(host))
}

fn component_appid_as_appid() -> PageError {
    PageError::new(
        "10016",
        "不支持微信开放平台的 Appid，请使用公众号 Appid / an open-platform (component) appid was \
         passed as appid; use the official account's appid",
    )
}

/// `redirect_uri?code=…&state=…[&appid=…]` for a user who consented (or a silent login).
fn consent_location(
    inner: &Inner,
    user: SimUser,
    mode: AuthMode,
    appid: &str,
    redirect_uri: &Url,
    scope: Scope,
    state: &str,
) -> Url {
    // Every official account and website app sees the user under its own openid.
    let user = match inner.website_app(appid) {
        Some(app) if mode == AuthMode::Website => user.for_website(app),
        _ => user.for_account(appid, inner.config.authorizer_appid.as_str()),
    };
    let code = inner.state().issue_code(CodeEntry {
        mode,
        appid: appid.to_owned(),
        user,
        scope,
        expires_at: Instant::now() + inner.config.code_ttl,
        used: false,
    });
    let mut location = redirect_uri.clone();
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code).append_pair("state", state);
        if mode == AuthMode::Component {
            query.append_pair("appid", appid);
        }
    }
    location
}

/// `redirect_uri?state=…` for a user who refused.
pub(crate) fn refusal_location(redirect_uri: &Url, state: &str) -> Url {
    let mut location = redirect_uri.clone();
    location.query_pairs_mut().append_pair("state", state);
    location
}

/// `GET /_sim/authorize/choose?req=…&user=N` or `…&refuse=1`: the interactive page's buttons.
pub(crate) fn choose(inner: &Inner, query: &str) -> Resp {
    let p = params(query);
    let pending = p
        .get("req")
        .and_then(|id| inner.state().pending.get(id).cloned());
    let Some(pending) = pending.filter(|pending| Instant::now() < pending.expires_at) else {
        return error_page(&PageError::new(
            "expired",
            "授权请求已过期，请重新打开页面 / this authorization request expired; open the page again",
        ));
    };
    if p.contains_key("refuse") {
        return redirect(refusal_location(&pending.redirect_uri, &pending.state).as_str());
    }
    let user = p
        .get("user")
        .and_then(|index| index.parse::<usize>().ok())
        .and_then(|index| inner.config.users.get(index).cloned());
    let Some(user) = user else {
        return error_page(&PageError::new(
            "user",
            "未知的测试用户 / unknown test user",
        ));
    };
    let location = consent_location(
        inner,
        user,
        pending.mode,
        &pending.appid,
        &pending.redirect_uri,
        pending.scope,
        &pending.state,
    );
    redirect(location.as_str())
}

const STYLE: &str = "<style>\
body{font-family:-apple-system,BlinkMacSystemFont,'PingFang SC','Microsoft YaHei',sans-serif;\
margin:0;background:#ededed;color:#191919}\
.banner{background:#fa9d3b;color:#fff;padding:8px 16px;font-size:14px;text-align:center}\
main{max-width:480px;margin:0 auto;padding:16px}\
.card{background:#fff;border-radius:8px;padding:16px;margin:12px 0}\
.user{display:flex;align-items:center;gap:12px;padding:12px;border-radius:8px;background:#fff;\
margin:8px 0;text-decoration:none;color:inherit;border:1px solid #e5e5e5}\
.user:hover{border-color:#07c160}\
.user img{width:48px;height:48px;border-radius:6px}\
.muted{color:#888;font-size:13px;word-break:break-all}\
.tag{font-size:12px;background:#ffe9cc;color:#a45a00;border-radius:4px;padding:1px 6px;margin-left:6px}\
.refuse{display:block;text-align:center;padding:12px;border-radius:8px;background:#f2f2f2;\
color:#576b95;text-decoration:none;margin-top:16px}\
code{font-size:13px}\
</style>";

/// A page of the simulated WeChat: the "simulated" banner, WeChat's grey look, `body` inside.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title>{STYLE}</head><body>\
         <div class=\"banner\">Simulated WeChat — development only / 模拟微信（仅供开发，不是真的微信）</div>\
         <main>{body}</main></body></html>",
        title = escape(title),
    )
}

/// The interactive consent page: one link per test user plus "refuse".
fn choice_page(inner: &Inner, request: Request) -> Resp {
    let host = request.redirect_uri.host_str().unwrap_or("").to_owned();
    let (scope, mode, appid) = (request.scope, request.mode, request.appid.clone());
    let id = remember(inner, request);
    let mut body = String::new();
    body.push_str("<div class=\"card\"><h2>网页授权 / Web authorization</h2>");
    body.push_str(&format!(
        "<p>公众号 <code>{}</code> 申请获得以下权限 / requests:</p><p><b>{}</b></p>\
         <p class=\"muted\">{} · redirect host <code>{}</code></p></div>",
        escape(&appid),
        match scope {
            Scope::Base => "获取你的 openid（静默授权）/ your openid only (silent)",
            Scope::UserInfo => "获得你的公开信息（昵称、头像）/ your nickname and avatar",
        },
        match mode {
            AuthMode::Component => "代公众号发起网页授权 (third-party platform)",
            AuthMode::OfficialAccount => "公众号网页授权 (official account direct)",
            AuthMode::Website => "网站应用微信登录 (website app)",
        },
        escape(&host),
    ));
    body.push_str("<p>选择一个测试用户 / pick a test user:</p>");
    let primary = inner.config.authorizer_appid.as_str();
    body.push_str(&user_links(
        inner,
        &id,
        |user| user.for_account(&appid, primary),
        "",
        "拒绝 / Refuse",
    ));
    html(
        StatusCode::OK,
        page("模拟微信 · 网页授权 / Simulated WeChat", &body),
    )
}

/// The interactive pages' buttons: one link per test user (as `seen` shows them, after
/// `action`) to [`CHOOSE_PATH`] for pending request `id`, then the refusal link (`refuse`).
pub(crate) fn user_links(
    inner: &Inner,
    id: &str,
    seen: impl Fn(&SimUser) -> SimUser,
    action: &str,
    refuse: &str,
) -> String {
    let mut links = String::new();
    for (index, user) in inner.config.users.iter().enumerate() {
        let user = &seen(user);
        let link = format!("{CHOOSE_PATH}?req={id}&user={index}");
        let avatar = if is_safe_image_url(&user.headimgurl) {
            format!("<img src=\"{}\" alt=\"\">", escape(&user.headimgurl))
        } else {
            String::new()
        };
        let tag = if user.snapshot {
            "<span class=\"tag\">快照页虚拟用户 / snapshot user</span>"
        } else {
            ""
        };
        links.push_str(&format!(
            "<a class=\"user\" href=\"{}\">{avatar}<span><b>{}{}</b>{tag}<br>\
             <span class=\"muted\">openid {}{}</span></span></a>",
            escape(&link),
            escape(action),
            escape(&user.nickname),
            escape(&user.openid),
            match &user.unionid {
                Some(unionid) => format!(" · unionid {}", escape(unionid)),
                None => " · no unionid".to_owned(),
            },
        ));
    }
    links.push_str(&format!(
        "<a class=\"refuse\" href=\"{}\">{}</a>",
        escape(&format!("{CHOOSE_PATH}?req={id}&refuse=1")),
        escape(refuse),
    ));
    links
}

/// WeChat's error page: the code, an explanation, never a redirect.
pub(crate) fn error_page(error: &PageError) -> Resp {
    let body = format!(
        "<div class=\"card\"><h2>Oops! Something went wrong :(</h2>\
         <p>错误码 / error code: <b>{code}</b></p><p>{detail}</p></div>",
        code = escape(&error.code),
        detail = escape(&error.detail),
    );
    let mut response = html(
        StatusCode::OK,
        page(&format!("模拟微信 · 错误 {}", error.code), &body),
    );
    if let Ok(value) = HeaderValue::from_str(&error.code) {
        response.headers_mut().insert("x-sim-error", value);
    }
    response
}

/// The reply for an injected failure on the authorize page.
pub(crate) async fn failure_page(failure: Failure) -> Resp {
    match failure {
        Failure::Hang => {
            tokio::time::sleep(HANG).await;
            error_page(&PageError::new("-1", "system error"))
        }
        Failure::Http500 => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "Internal Server Error",
        ),
        Failure::NotJson => respond(StatusCode::OK, "text/html", "<html>busy</html>"),
        Failure::SystemBusy => error_page(&PageError::new("-1", "系统繁忙 / system busy")),
        Failure::ErrCode(code) => error_page(&PageError::new(
            code.to_string(),
            "模拟的错误 / injected error",
        )),
    }
}

/// `GET /`: what this server is, for a developer who opens it in a browser.
pub(crate) fn index(inner: &Inner) -> Resp {
    let config = &inner.config;
    let mut users = String::new();
    for user in &config.users {
        users.push_str(&format!(
            "<li>{} <span class=\"muted\">{}</span></li>",
            escape(&user.nickname),
            escape(&user.openid)
        ));
    }
    let mut accounts = String::new();
    for (appid, account) in &inner.state().accounts {
        accounts.push_str(&format!(
            "<li><code>{}</code> {} <span class=\"muted\">{} · permission sets {:?}</span></li>",
            escape(appid),
            escape(&account.nick_name),
            if account.allows_web_oauth() {
                "web OAuth allowed"
            } else if account.authorized {
                "authorized without set 4 (10015)"
            } else {
                "not authorized (10015)"
            },
            account.func_ids,
        ));
    }
    let body = format!(
        "<div class=\"card\"><h2>模拟微信 / Simulated WeChat</h2>\
         <p>This server imitates <code>open.weixin.qq.com</code> (authorize page) and \
         <code>api.weixin.qq.com</code> (component token, code exchange, user info) for local \
         development and tests. It listens on loopback only and hands out fake identities.</p>\
         <p class=\"muted\">component_appid <code>{}</code> · authorizer appid <code>{}</code> · \
         {} mode</p></div><div class=\"card\"><h3>Official accounts</h3><ul>{accounts}</ul></div>\
         <div class=\"card\"><h3>Test users</h3><ul>{users}</ul></div>",
        escape(config.component_appid.as_str()),
        escape(config.authorizer_appid.as_str()),
        if config.interactive {
            "interactive"
        } else {
            "non-interactive"
        },
    );
    html(StatusCode::OK, page("模拟微信 / Simulated WeChat", &body))
}
