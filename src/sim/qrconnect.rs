//! The simulated `open.weixin.qq.com/connect/qrconnect`: WeChat's QR login page for website apps
//! (网站应用, docs/wechat-protocol.md §11.2, §11.4).
//!
//! A desktop browser opens it (no WeChat browser needed: that is its point). The parameters are
//! checked like WeChat does — a known website app (`x-sim-error: appid`), `response_type=code`,
//! `scope=snsapi_login` (`scope`), a `redirect_uri` on an allowed host (`redirect_uri`), a
//! `state` of at most 128 bytes — and refusals are shown on the page, never redirected. In
//! interactive (dev) mode the page shows a QR-like box and one "模拟扫码并确认" button per test
//! user (and a refusal); they lead to the same sim-only `/_sim/authorize/choose` as the
//! authorize page. Otherwise (tests) it redirects at once with the programmed next user, as the
//! authorize page does. The code is exchanged with the website app's secret.

use http::{Method, StatusCode};

use super::{
    authorize::{
        PageError, Request, error_page, open_page, page, redirect_now, redirect_target, remember,
        user_links,
    },
    http::{Resp, escape, html, params},
    state::{AuthMode, Endpoint, Inner, SimWebsiteApp},
};
use crate::wechat::{Scope, website::SCOPE_LOGIN};

/// Longest accepted `state` (bytes).
const MAX_STATE: usize = 128;

/// Modules per side of the QR-like box.
const MODULES: usize = 25;

/// `GET /connect/qrconnect`.
pub(crate) async fn qrconnect(inner: &Inner, method: &Method, query: &str) -> Resp {
    if let Some(refused) = open_page(inner, Endpoint::QrConnect, method).await {
        return refused;
    }
    let (app, request) = match validate(inner, query) {
        Ok(valid) => valid,
        Err(error) => return error_page(&error),
    };
    if !inner.config.interactive {
        return redirect_now(inner, &request);
    }
    let app = app.clone();
    let host = request.redirect_uri.host_str().unwrap_or("").to_owned();
    let id = remember(inner, request);
    qr_page(inner, &app, &host, &id)
}

/// Checks the query like WeChat's QR login page.
fn validate<'a>(inner: &'a Inner, query: &str) -> Result<(&'a SimWebsiteApp, Request), PageError> {
    let p = params(query);
    let get = |name: &str| p.get(name).map(String::as_str).unwrap_or("");
    let Some(app) = inner.website_app(get("appid")) else {
        return Err(PageError::new(
            "appid",
            "AppID 参数错误 / unknown website app appid",
        ));
    };
    let redirect_uri = redirect_target(inner, get("redirect_uri"), "redirect_uri")?;
    if get("response_type") != "code" {
        return Err(PageError::new(
            "response_type",
            "response_type 必须为 code / response_type must be code",
        ));
    }
    if get("scope") != SCOPE_LOGIN {
        return Err(PageError::new(
            "scope",
            "Scope 参数错误或没有 Scope 权限 / scope must be snsapi_login",
        ));
    }
    let state = get("state");
    if state.len() > MAX_STATE {
        return Err(PageError::new(
            "state",
            "state 超过 128 字节 / state longer than 128 bytes",
        ));
    }
    Ok((
        app,
        Request {
            mode: AuthMode::Website,
            appid: app.appid.as_str().to_owned(),
            redirect_uri,
            // The website login includes the profile (sns/userinfo), like snsapi_userinfo.
            scope: Scope::UserInfo,
            state: state.to_owned(),
        },
    ))
}

/// The interactive page: the QR-like box, one "scan and confirm" link per test user, refusal.
fn qr_page(inner: &Inner, app: &SimWebsiteApp, host: &str, id: &str) -> Resp {
    let mut body = format!(
        "<div class=\"card\" style=\"text-align:center\"><h2>微信登录 / WeChat login</h2>\
         {box_svg}<p>请使用微信扫描二维码登录<br>「{name}」</p>\
         <p class=\"muted\">Scan with WeChat to log in · redirect host <code>{host}</code></p></div>\
         <div class=\"card\"><p class=\"muted\">模拟器专用：模拟手机扫码并确认 / simulator only: \
         simulate the scan and the confirmation on the phone</p>",
        box_svg = qr_like_box(id),
        name = escape(&app.name),
        host = escape(host),
    );
    body.push_str(&user_links(
        inner,
        id,
        |user| user.for_website(app),
        "模拟扫码并确认 / scan and confirm as ",
        "模拟在手机上取消 / refuse on the phone",
    ));
    body.push_str("</div>");
    html(
        StatusCode::OK,
        page("模拟微信 · 微信登录 / Simulated WeChat login", &body),
    )
}

/// An SVG that looks like a QR code (three finder squares, modules from a hash of `id`); it
/// encodes nothing: the buttons below it stand in for the phone.
fn qr_like_box(id: &str) -> String {
    use sha2::Digest as _;
    let bits = sha2::Sha512::digest(id.as_bytes());
    let finder = |x: usize, y: usize| {
        format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"7\" height=\"7\" fill=\"#000\"/>\
             <rect x=\"{}\" y=\"{}\" width=\"5\" height=\"5\" fill=\"#fff\"/>\
             <rect x=\"{}\" y=\"{}\" width=\"3\" height=\"3\" fill=\"#000\"/>",
            x + 1,
            y + 1,
            x + 2,
            y + 2
        )
    };
    let in_finder = |x: usize, y: usize| {
        let corner = |cx: usize, cy: usize| (cx..cx + 8).contains(&x) && (cy..cy + 8).contains(&y);
        corner(0, 0) || corner(MODULES - 8, 0) || corner(0, MODULES - 8)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"-2 -2 {size} {size}\" width=\"200\" \
         height=\"200\" role=\"img\" aria-label=\"QR\" style=\"background:#fff\">",
        size = MODULES + 4
    );
    for y in 0..MODULES {
        for x in 0..MODULES {
            let n = y * MODULES + x;
            let bit = bits
                .get((n / 8) % bits.len())
                .is_some_and(|byte| byte >> (n % 8) & 1 == 1);
            if bit && !in_finder(x, y) {
                svg.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"1\" height=\"1\" fill=\"#000\"/>"
                ));
            }
        }
    }
    svg.push_str(&finder(0, 0));
    svg.push_str(&finder(MODULES - 7, 0));
    svg.push_str(&finder(0, MODULES - 7));
    svg.push_str("</svg>");
    svg
}
