//! The login as a person sees it: headless Chromium (tests/support/browser.rs) against the real
//! binary in development mode with the shipped `config.toml` (the simulated WeChat's
//! interactive consent page, the demo upstream, two official accounts on two host names).
//!
//! The phone side always sends WeChat's user agent (`MicroMessenger`), as the simulator, like
//! WeChat, requires. Screenshots are taken only when `WXAUTH_SCREENSHOTS` names a directory.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use url::Url;

use support::browser::{Chrome, Driver, Profile};
use support::sidecar::{Sidecar, repo_file};

/// The official account the shipped configuration serves on `127.0.0.1`.
const ACCOUNT_A: &str = "wxa1b2c3d4e5f60708";

/// The one it serves on `localhost`.
const ACCOUNT_B: &str = "wxb2b2c3d4e5f60708";

/// The real binary with the shipped development configuration.
async fn shipped(label: &str) -> Sidecar {
    let config = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    Sidecar::start(label, &config).await
}

/// Whether `url` is the simulated WeChat's consent page.
fn is_consent(url: &Url) -> bool {
    url.path().ends_with("/connect/oauth2/authorize")
}

/// The shipped sidecar, a browser driver and a phone (WeChat's user agent, no session yet) that
/// opened `path` and now shows the simulated consent page. Keep the driver: its drop ends the
/// browser.
async fn phone_at_consent(label: &str, path: &str) -> (Sidecar, Driver, Chrome) {
    let sidecar = shipped(label).await;
    let driver = Driver::start().await;
    let phone = driver.open(&Profile::wechat()).await;
    phone.goto(&sidecar.url(path)).await;
    phone
        .wait_for_url("the simulated consent page", is_consent)
        .await;
    phone.wait_for_text("选择一个测试用户").await;
    (sidecar, driver, phone)
}

/// The simulator's test users, by index on the consent page.
const USERS: [&str; 3] = ["张三", "Alice 🌸", "李四😀"];

/// On the consent page: picks test user `user` and waits until the demo upstream greets them
/// (the callback set the session and sent the browser back). Returns the URL it landed on.
async fn pick(phone: &Chrome, user: usize) -> Url {
    phone.click(&format!("a.user[href$='user={user}']")).await;
    phone.wait_for_text(&format!("你好，{}", USERS[user])).await;
    phone.url().await
}

/// The openid on the demo upstream's card (the `x-wechat-openid` header it received).
async fn shown_openid(chrome: &Chrome) -> String {
    chrome
        .wait_for(".who code")
        .await
        .text()
        .await
        .expect("openid text")
}

/// The JSON document Chromium shows for a JSON answer (its text is the document).
async fn shown_json(chrome: &Chrome) -> Value {
    let text = chrome.wait_for_text("{").await;
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A person in WeChat opens a protected page, picks 张三 on the consent page and lands on the
/// page they asked for, which shows the identity the upstream received: the same one the proxy
/// holds for the session (`whoami`). The page's own logout link ends the session: the next
/// protected page goes to the consent page again and `whoami` says "需要登录".
#[tokio::test(flavor = "multi_thread")]
async fn wechat_user_logs_in_through_the_consent_page_and_out_again() {
    let (sidecar, _driver, phone) = phone_at_consent("browser-login", "/hello?from=browser").await;
    let consent = phone.text().await;
    assert!(consent.contains("网页授权"), "{consent}");
    assert!(consent.contains(ACCOUNT_A), "the account asking: {consent}");
    phone.screenshot("login-consent").await;

    let landed = pick(&phone, 0).await;
    assert_eq!(landed.origin(), sidecar.base.origin(), "{landed}");
    assert_eq!(landed.path(), "/hello", "back on the page first asked for");
    assert_eq!(landed.query(), Some("from=browser"), "the query is kept");
    let page = phone.wait_for_text("你好，张三").await;
    assert!(page.contains("demo upstream"), "{page}");
    let lang = phone.eval("return document.documentElement.lang;").await;
    assert_eq!(lang, "zh-CN");
    phone.screenshot("login-upstream").await;

    // The openid the upstream received (its x-wechat-openid header, shown on the card) is the
    // session's.
    let shown_openid = shown_openid(&phone).await;
    phone.goto(&sidecar.url("/_wxauth/whoami")).await;
    let whoami = shown_json(&phone).await;
    assert_eq!(whoami["nickname"], "张三", "{whoami}");
    assert_eq!(whoami["appid"], ACCOUNT_A, "{whoami}");
    assert_eq!(whoami["openid"], shown_openid.as_str(), "{whoami}");
    assert!(
        page.contains(&shown_openid),
        "the decoded JWT claims on the page name the same openid: {page}"
    );

    // Logout through the page's own link (a same-origin click).
    phone.goto(&sidecar.url("/hello")).await;
    phone.wait_for_text("你好，张三").await;
    phone.click("a[href$='/_wxauth/logout']").await;
    phone
        .wait_for_url("after logout the protected / asks WeChat again", is_consent)
        .await;
    phone.goto(&sidecar.url("/_wxauth/whoami")).await;
    let after = phone.wait_for_text("需要登录").await;
    assert!(!after.contains(&shown_openid), "{after}");

    phone.close().await;
}

/// The person refuses on the consent page: the proxy's page says so in Chinese first (with the
/// English below) and offers a link that starts the login again.
#[tokio::test(flavor = "multi_thread")]
async fn refusing_consent_shows_the_chinese_page_with_a_retry_link() {
    let (sidecar, _driver, phone) = phone_at_consent("browser-refuse", "/reports/2026").await;
    phone.click("a.refuse").await;
    assert_error_page(
        &phone,
        "未完成授权",
        "您没有同意微信授权，因此无法登录。如需继续，请点击下方链接重新授权。",
    )
    .await;
    let url = phone.url().await;
    assert_eq!(
        url.origin(),
        sidecar.base.origin(),
        "the proxy's page: {url}"
    );
    phone.screenshot("login-refused").await;

    // Its link starts the login again, for the page first asked for.
    phone.click(".retry a").await;
    phone
        .wait_for_url("the retry link leads to the consent page", is_consent)
        .await;
    let landed = pick(&phone, 1).await;
    assert_eq!(landed.path(), "/reports/2026", "the page first asked for");

    phone.close().await;
}

/// The shipped configuration serves two official accounts on two host names (`127.0.0.1`: A,
/// `localhost`: B). The browser keeps their cookies apart (host-only cookies): logged in on A,
/// B still asks WeChat — for B's appid — and the same person gets B's openid there, while A's
/// session stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn each_account_on_its_own_host_has_its_own_login() {
    let (sidecar, _driver, phone) = phone_at_consent("browser-tenants", "/a").await;
    pick(&phone, 0).await;
    let openid_a = shown_openid(&phone).await;

    let mut on_b = sidecar.url("/b");
    on_b.set_host(Some("localhost")).unwrap();
    phone.goto(&on_b).await;
    phone
        .wait_for_url("B has no session yet: the consent page", is_consent)
        .await;
    let consent = phone.wait_for_text(ACCOUNT_B).await;
    assert!(!consent.contains(ACCOUNT_A), "{consent}");
    let landed = pick(&phone, 0).await;
    assert_eq!(landed.host_str(), Some("localhost"), "back on B: {landed}");
    let openid_b = shown_openid(&phone).await;
    assert_ne!(openid_a, openid_b, "one openid per official account");

    phone.goto(&sidecar.url("/a")).await;
    phone.wait_for_text("你好，张三").await;
    assert_eq!(
        shown_openid(&phone).await,
        openid_a,
        "A's session is untouched"
    );

    phone.close().await;
}

/// A logout link on another site (here a `data:` page, an opaque origin: the browser says
/// `Sec-Fetch-Site: cross-site`) does not log the person out: the proxy asks for confirmation
/// in Chinese, the session still works, and the page's own button (same-origin) logs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_logout_link_on_another_site_asks_for_confirmation() {
    let (sidecar, _driver, phone) = phone_at_consent("browser-xsite", "/x").await;
    pick(&phone, 2).await;

    let logout = sidecar.url("/_wxauth/logout");
    let html = format!("<a id=\"out\" href=\"{logout}\">退出</a>");
    let page = percent_encoding::utf8_percent_encode(&html, percent_encoding::NON_ALPHANUMERIC);
    phone
        .goto(&Url::parse(&format!("data:text/html;charset=utf-8,{page}")).unwrap())
        .await;
    phone.click("#out").await;
    assert_error_page(
        &phone,
        "确认退出登录",
        "退出登录的请求来自其他网站，因此没有执行。如果确实要退出，请点击下面的按钮。",
    )
    .await;
    phone.screenshot("logout-cross-site").await;

    // Not logged out: the session still answers (asked from the page, same origin).
    assert_eq!(phone.status_of("/_wxauth/whoami").await, 200);

    // The page's button is a same-origin link: it logs out.
    phone.click(".retry a").await;
    phone
        .wait_for_url("the confirmed logout is carried out", is_consent)
        .await;
    phone.goto(&sidecar.url("/_wxauth/whoami")).await;
    phone.wait_for_text("需要登录").await;

    phone.close().await;
}

/// Without the QR bridge, a desktop browser is sent to WeChat's authorize page like a phone,
/// and WeChat (here its simulator) answers with its dead end for browsers outside WeChat:
/// "请在微信客户端打开链接". This is what the bridge (tests/browser_qr.rs) replaces.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_bridge_a_desktop_browser_meets_wechats_dead_end() {
    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    // The shipped demo may turn the bridge on; this test is about the proxy without it.
    let config = shipped.replace("[qr]\nenabled = true\n", "");
    let sidecar = Sidecar::start("browser-dead-end", &config).await;
    let driver = Driver::start().await;
    let desktop = driver.open(&Profile::desktop()).await;
    desktop.goto(&sidecar.url("/hello")).await;
    let at = desktop
        .wait_for_url("sent to WeChat's authorize page", is_consent)
        .await;
    assert_ne!(at.origin(), sidecar.base.origin(), "{at}");
    desktop.wait_for_text("请在微信客户端打开链接").await;
    desktop.screenshot("desktop-dead-end").await;
    desktop.close().await;
}

/// Two of the proxy's own error pages in a real browser: a callback whose state this browser
/// never started ("登录链接已失效"), and a host name that is no official account's ("未知的
/// 公众号"). Both are `lang="zh-CN"` with the Chinese title first and render CJK text.
#[tokio::test(flavor = "multi_thread")]
async fn error_pages_are_rendered_in_chinese() {
    let sidecar = shipped("browser-errors").await;
    let driver = Driver::start().await;
    let desktop = driver
        .open(&Profile::desktop().resolving("unknown.test"))
        .await;

    let forged = sidecar.url(&format!(
        "/_wxauth/callback?code=forged&state=forged&appid={ACCOUNT_A}"
    ));
    desktop.goto(&forged).await;
    assert_error_page(
        &desktop,
        "登录链接已失效",
        "登录请求已过期、已被使用，或不是在此浏览器中发起的。请重新登录。",
    )
    .await;
    desktop.screenshot("error-state-mismatch").await;

    let mut unknown = sidecar.url("/hello");
    unknown.set_host(Some("unknown.test")).unwrap();
    desktop.goto(&unknown).await;
    assert_error_page(
        &desktop,
        "未知的公众号",
        "此地址不属于本平台服务的任何公众号。请检查链接。",
    )
    .await;
    desktop.screenshot("error-unknown-tenant").await;

    desktop.close().await;
}

/// The page shown is one of the proxy's error pages, Chinese first: it shows `zh_title` and
/// `zh_text`, is declared `zh-CN`, its title starts with `zh_title`, and its Chinese text is
/// drawn with a CJK font: the title is as wide as its characters at their font size, not the
/// narrow boxes of a missing glyph (a CJK character is 1 em wide).
async fn assert_error_page(chrome: &Chrome, zh_title: &str, zh_text: &str) {
    let text = chrome.wait_for_text(zh_title).await;
    assert!(text.contains(zh_text), "{text}");
    assert_eq!(
        chrome.eval("return document.documentElement.lang;").await,
        "zh-CN"
    );
    let title = chrome.eval("return document.title;").await;
    assert!(
        title.as_str().unwrap_or_default().starts_with(zh_title),
        "title {title}"
    );
    let measured = chrome
        .eval(&format!(
            "const c = document.createElement('canvas').getContext('2d');\
             c.font = '20px sans-serif';\
             return c.measureText({zh_title:?}).width;"
        ))
        .await;
    let width = measured.as_f64().expect("width");
    let chars = zh_title.chars().count() as f64;
    assert!(
        width >= chars * 18.0,
        "{zh_title:?} is {width}px wide at 20px: no CJK font (fonts-noto-cjk)?"
    );
}
