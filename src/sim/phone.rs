//! WeChat's browser check on the authorize page, and a way for a person with one desktop to act
//! as the phone in the development demo (sim only, loopback only like every sim page).
//!
//! - [`is_wechat_browser`]: the `User-Agent` contains `MicroMessenger` (WeChat's built-in
//!   browser, on phones and in the desktop client), or the browser carries the sim's phone
//!   cookie.
//! - [`not_in_wechat`]: WeChat's dead end for other browsers ("请在微信客户端打开链接"), with a
//!   sim-only link to continue in this browser as if it were WeChat's.
//! - [`phone`]: `GET /_sim/phone?go=<url>` shows "模拟手机扫码", sets the phone cookie
//!   (`wxsim_phone=1`, on the sim's host, one hour) and then navigates to `go`. `go` must be an
//!   http(s) URL on one of [`SimConfig::redirect_hosts`](super::SimConfig::redirect_hosts) (the
//!   proxy) or on the simulator itself, so the page is no open redirect.
//!
//! Cookies do not tell ports apart: when the proxy and the simulator share a host name (both on
//! `127.0.0.1`), the proxy also receives `wxsim_phone`; it means nothing to it.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use url::Url;

use super::{
    authorize::{PageError, error_page, http_url, on_redirect_host, page},
    http::{Resp, escape, html, params},
    state::Inner,
};

/// The sim path of the phone page.
pub(crate) const PHONE_PATH: &str = "/_sim/phone";

/// The cookie (on the simulator's host) that marks a browser acting as WeChat's.
pub(crate) const PHONE_COOKIE: &str = "wxsim_phone";

/// The `User-Agent` token of WeChat's built-in browser.
const WECHAT_UA_TOKEN: &str = "MicroMessenger";

/// Lifetime of the phone cookie.
const PHONE_COOKIE_HOURS: i64 = 1;

/// Seconds the phone page shows before it navigates on.
const PHONE_PAGE_SECONDS: u32 = 1;

/// Whether the request comes from WeChat's browser (or one the phone page marked as such).
pub(crate) fn is_wechat_browser(headers: &HeaderMap) -> bool {
    let in_wechat = headers
        .get_all(header::USER_AGENT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|agent| agent.contains(WECHAT_UA_TOKEN));
    in_wechat
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(Result::ok)
            .any(|cookie| cookie.name() == PHONE_COOKIE && cookie.value() == "1")
}

/// WeChat's page for an authorize link opened outside WeChat (HTTP 200, no redirect), with a
/// sim-only link that marks this browser as the phone and opens the same link again.
pub(crate) fn not_in_wechat(inner: &Inner, query: &str) -> Resp {
    let mut again = inner
        .base_url
        .join("connect/oauth2/authorize")
        .unwrap_or_else(|_| inner.base_url.clone());
    again.set_query(Some(query).filter(|q| !q.is_empty()));
    let body = format!(
        "<div class=\"card\"><h2>请在微信客户端打开链接</h2>\
         <p>Please open this link in the WeChat app.</p></div>\
         <div class=\"card\"><p class=\"muted\">模拟器专用 / simulator only:</p>\
         <a class=\"refuse\" href=\"{}\">在本浏览器中模拟手机微信继续 / continue in this browser \
         as WeChat on a phone</a></div>",
        escape(&phone_link(inner, &again)),
    );
    let mut response = html(
        StatusCode::OK,
        page("模拟微信 · 请在微信客户端打开链接", &body),
    );
    response
        .headers_mut()
        .insert("x-sim-error", HeaderValue::from_static("browser"));
    response
}

/// `<sim base>/_sim/phone?go=<target>`.
pub(crate) fn phone_link(inner: &Inner, target: &Url) -> String {
    let mut link = inner
        .base_url
        .join(PHONE_PATH.trim_start_matches('/'))
        .unwrap_or_else(|_| inner.base_url.clone());
    link.query_pairs_mut().append_pair("go", target.as_str());
    link.into()
}

/// `GET /_sim/phone?go=<url>`: "模拟手机扫码", the phone cookie, then on to `go`.
pub(crate) fn phone(inner: &Inner, query: &str) -> Resp {
    let go = params(query).remove("go").unwrap_or_default();
    let target = match allowed_target(inner, &go) {
        Ok(target) => target,
        Err(error) => return error_page(&error),
    };
    let target = escape(target.as_str());
    let body = format!(
        "<div class=\"card\"><h2>模拟手机扫码 / Simulated phone scan</h2>\
         <p>这个标签页现在扮演手机上的微信：模拟微信把它当作微信内置浏览器。</p>\
         <p>This tab now plays WeChat on a phone: the simulated WeChat treats it as WeChat's \
         browser.</p><p class=\"muted\">正在打开 / opening <code>{target}</code></p>\
         <a class=\"refuse\" href=\"{target}\">继续 / continue</a></div>"
    );
    let mut response = html(
        StatusCode::OK,
        page("模拟手机扫码 / Simulated phone scan", &body).replacen(
            "<title>",
            &format!(
                "<meta http-equiv=\"refresh\" content=\"{PHONE_PAGE_SECONDS};url={target}\"><title>"
            ),
            1,
        ),
    );
    let cookie = cookie::Cookie::build((PHONE_COOKIE, "1"))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::hours(PHONE_COOKIE_HOURS))
        .build();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `go` as a URL the phone page may open: http(s), on a redirect host or on the simulator.
fn allowed_target(inner: &Inner, go: &str) -> Result<Url, PageError> {
    let Some(target) = http_url(go) else {
        return Err(PageError::new(
            "go",
            "go 参数必须是完整的 http(s) 地址 / go must be an absolute http(s) URL",
        ));
    };
    if on_redirect_host(inner, &target) || target.origin() == inner.base_url.origin() {
        Ok(target)
    } else {
        Err(PageError::new(
            "go",
            format!(
                "go 只能指向代理或模拟器 / go may only lead to the proxy ({:?}) or the simulator",
                inner.config.redirect_hosts
            ),
        ))
    }
}
