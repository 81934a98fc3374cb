//! The desktop QR login as people see it, in two real browsers (tests/support/browser.rs)
//! against the real binary in development mode (the shipped `config.toml`, with `[qr]` turned
//! on if it is not): a desktop Chrome opens a protected page and gets the QR page; WeChat on a
//! phone (a second browser with WeChat's user agent and a profile of its own) opens the page's
//! phone link, consents on the simulated WeChat and confirms (确认登录); the desktop tab,
//! without anyone touching it, ends logged in on the page it asked for.
//!
//! Screenshots are taken only when `WXAUTH_SCREENSHOTS` names a directory (the README's come
//! from `WXAUTH_SCREENSHOTS=docs/screenshots cargo test --all-features --test browser_qr
//! a_desktop_browser_logs_in_by_scanning_with_wechat`, which writes exactly those four).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use url::Url;

use support::browser::{Chrome, Driver, Profile};
use support::sidecar::{Sidecar, repo_file};

/// The name of the official account the shipped configuration serves on `127.0.0.1`.
const ACCOUNT_A_NAME: &str = "模拟公众号 A";

/// The real binary with the shipped development configuration and the QR bridge on.
async fn qr_sidecar(label: &str) -> Sidecar {
    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let config = if shipped.lines().any(|line| line.trim() == "[qr]") {
        shipped
    } else {
        format!("{shipped}\n[qr]\nenabled = true\n")
    };
    Sidecar::start(label, &config).await
}

/// Whether `url` is the simulated WeChat's consent page.
fn is_consent(url: &Url) -> bool {
    url.path().ends_with("/connect/oauth2/authorize")
}

/// A desktop browser (`desktop`) that opened `path` and shows the QR page: a QR code drawn as
/// an SVG with many modules, the account's name, the waiting status in Chinese. Returns the
/// phone link the page shows.
async fn qr_page(desktop: &Chrome, sidecar: &Sidecar, path: &str) -> Url {
    let asked = sidecar.url(path);
    desktop.goto(&asked).await;
    desktop.wait_for("#qr svg").await;
    desktop.wait_for_text("请使用微信扫一扫登录").await;
    assert_eq!(
        desktop.url().await,
        asked,
        "the QR page is served on the page asked for (no redirect to a dead end)"
    );
    assert_eq!(
        desktop.eval("return document.documentElement.lang;").await,
        "zh-CN"
    );
    let tenant = desktop.wait_for("#tenant").await.text().await.unwrap();
    assert!(tenant.contains(ACCOUNT_A_NAME), "{tenant}");
    // Each dark module of the code is one `M…` subpath (or one rect); a QR code of a ~60-byte
    // link has hundreds. The drawn code is big enough to scan.
    let drawn = desktop
        .eval(
            "const svg = document.querySelector('#qr svg');\
             let modules = svg.querySelectorAll('rect').length;\
             for (const p of svg.querySelectorAll('path')) {\
               modules += ((p.getAttribute('d') || '').match(/M/gi) || []).length;\
             }\
             const box = svg.getBoundingClientRect();\
             return [modules, box.width, box.height];",
        )
        .await;
    let modules = drawn[0].as_u64().unwrap();
    assert!(modules >= 100, "an SVG QR code with many modules: {drawn}");
    assert!(
        drawn[1].as_f64().unwrap() >= 200.0 && drawn[2].as_f64().unwrap() >= 200.0,
        "drawn at least 200 px square: {drawn}"
    );
    let link = desktop.wait_for("#phone-link").await.text().await.unwrap();
    let link = Url::parse(link.trim()).unwrap_or_else(|e| panic!("phone link {link:?}: {e}"));
    assert_eq!(link.origin(), sidecar.base.origin(), "{link}");
    assert!(link.path().starts_with("/_wxauth/qr/s/"), "{link}");
    link
}

/// One test's world: the sidecar with the bridge on, the browser driver, and a desktop browser
/// that opened a protected page and shows the QR page with `link`.
struct Scene {
    sidecar: Sidecar,
    driver: Driver,
    desktop: Chrome,
    link: Url,
}

impl Scene {
    /// Starts everything; the desktop browser (`desktop`) opens `path`: see [`qr_page`].
    async fn start(label: &str, desktop: Profile, path: &str) -> Scene {
        let sidecar = qr_sidecar(label).await;
        let driver = Driver::start().await;
        let desktop = driver.open(&desktop).await;
        let link = qr_page(&desktop, &sidecar, path).await;
        Scene {
            sidecar,
            driver,
            desktop,
            link,
        }
    }

    /// A new browser with this profile (WeChat's for a phone).
    async fn open(&self, profile: Profile) -> Chrome {
        self.driver.open(&profile).await
    }

    /// Ends the browsers' sessions and stops everything (the drops would too).
    async fn end(self) {
        self.desktop.close().await;
    }
}

/// WeChat on a phone opens `link` (as if it had scanned the code) and goes through the
/// simulated WeChat's authorize page.
async fn scan(phone: &Chrome, link: &Url) {
    phone.goto(link).await;
    phone
        .wait_for_url("the phone goes through WeChat's authorize page", is_consent)
        .await;
}

/// [`scan`], then consent as test user `user` and reach the confirmation page, which says who
/// asks: the account and the desktop's browser and system.
async fn scan_and_consent(phone: &Chrome, link: &Url, user: usize) {
    scan(phone, link).await;
    phone.click(&format!("a.user[href$='user={user}']")).await;
    phone.wait_for("#confirm").await;
    let page = phone.wait_for_text("确认在电脑上登录？").await;
    assert!(page.contains(ACCOUNT_A_NAME), "the account: {page}");
    let computer = phone.wait_for("#desktop").await.text().await.unwrap();
    assert!(
        computer.contains("Chrome") && computer.contains("Windows"),
        "the desktop's browser and system: {computer}"
    );
}

/// `chrome` opens `link` and gets the proxy's page titled `zh_title` that says `zh_text`.
async fn refused(chrome: &Chrome, link: &Url, zh_title: &str, zh_text: &str) {
    chrome.goto(link).await;
    let text = chrome.wait_for_text(zh_title).await;
    assert!(text.contains(zh_text), "{text}");
}

/// On the confirmation page: taps 确认登录 (`approve`) or 取消 and waits for the phone's answer.
async fn decide(phone: &Chrome, approve: bool) {
    if approve {
        phone.click("#confirm").await;
        phone.wait_for_text("已确认登录，请回到电脑继续。").await;
    } else {
        phone.click("#cancel").await;
        phone.wait_for_text("已取消，电脑端不会登录。").await;
    }
}

/// Waits until `desktop`, untouched, shows the page at `path` greeting `nickname` (logged in);
/// returns its URL.
async fn lands_logged_in(desktop: &Chrome, path: &str, nickname: &str) -> Url {
    let landed = desktop
        .wait_for_url("the desktop tab goes on by itself", |url| {
            url.path() == path
        })
        .await;
    desktop.wait_for_text(&format!("你好，{nickname}")).await;
    landed
}

/// The whole bridge with JavaScript: the desktop page long-polls, shows "scanned" while the
/// phone confirms, and navigates on by itself to the page first asked for, logged in as the
/// phone's user. The phone gets no session of its own (the default).
#[tokio::test(flavor = "multi_thread")]
async fn a_desktop_browser_logs_in_by_scanning_with_wechat() {
    let scene = Scene::start("browser-qr", Profile::desktop(), "/reports?week=48").await;
    let (sidecar, desktop, link) = (&scene.sidecar, &scene.desktop, &scene.link);
    desktop.screenshot("qr-desktop").await;

    let phone = scene.open(Profile::wechat()).await;
    scan_and_consent(&phone, link, 0).await;
    desktop.wait_for_text("已扫码，请在手机上确认").await;
    desktop.screenshot("qr-desktop-scanned").await;
    phone.screenshot("qr-phone-confirm").await;

    let confirmed = std::time::Instant::now();
    decide(&phone, true).await;

    let landed = lands_logged_in(desktop, "/reports", "张三").await;
    assert_eq!(landed.query(), Some("week=48"), "the page first asked for");
    // Reported, not asserted (no timed assertions): the tap on 确认登录 to the desktop's
    // logged-in page, through the long poll.
    eprintln!(
        "confirm tapped → desktop logged in: {:?}",
        confirmed.elapsed()
    );
    desktop.screenshot("qr-desktop-logged-in").await;

    desktop.goto(&sidecar.url("/_wxauth/whoami")).await;
    let whoami = desktop.wait_for_text("\"openid\"").await;
    assert!(whoami.contains("张三"), "{whoami}");

    phone.goto(&sidecar.url("/_wxauth/whoami")).await;
    phone.wait_for_text("需要登录").await;

    scene.end().await;
}

/// The same with JavaScript turned off on the desktop: the `<noscript>` refresh goes to the
/// status page, which refreshes itself until the phone confirms and then moves on.
#[tokio::test(flavor = "multi_thread")]
async fn without_javascript_the_desktop_page_refreshes_until_logged_in() {
    let scene = Scene::start(
        "browser-qr-nojs",
        Profile::desktop().without_javascript(),
        "/nojs",
    )
    .await;
    let (desktop, link) = (&scene.desktop, &scene.link);

    let phone = scene.open(Profile::wechat()).await;
    scan_and_consent(&phone, link, 1).await;
    decide(&phone, true).await;

    lands_logged_in(desktop, "/nojs", "Alice 🌸").await;

    scene.end().await;
}

/// The phone cancels: the desktop page says so in Chinese, greys the code out and offers a new
/// one; the desktop is not logged in.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_on_the_phone_shows_on_the_desktop() {
    let scene = Scene::start("browser-qr-cancel", Profile::desktop(), "/cancelled").await;
    let phone = scene.open(Profile::wechat()).await;
    scan_and_consent(&phone, &scene.link, 0).await;
    let desktop = &scene.desktop;
    decide(&phone, false).await;

    desktop.wait_for_text("已在手机上取消").await;
    desktop.wait_for("#refresh a").await;
    desktop.screenshot("qr-desktop-cancelled").await;
    let visible = desktop
        .eval("return !document.getElementById('refresh').hidden;")
        .await;
    assert_eq!(visible, true, "the new-code link is shown");
    let status = desktop.status_of("/_wxauth/whoami").await;
    assert_eq!(status, 401, "the desktop is not logged in");

    scene.end().await;
}

/// The phone link works only in WeChat and only for the first phone: a desktop browser that
/// opens it is told to scan with WeChat (and scans nothing: a phone can still scan after it),
/// and a second phone after the first is told the code is used.
#[tokio::test(flavor = "multi_thread")]
async fn the_phone_link_is_for_the_first_wechat_only() {
    let scene = Scene::start("browser-qr-link", Profile::desktop(), "/link").await;
    let (desktop, link) = (&scene.desktop, &scene.link);

    let other_pc = scene.open(Profile::desktop()).await;
    refused(
        &other_pc,
        link,
        "请使用微信扫一扫",
        "请打开手机微信，使用“扫一扫”扫描电脑上的二维码。",
    )
    .await;
    other_pc.screenshot("qr-link-outside-wechat").await;

    let phone = scene.open(Profile::wechat()).await;
    scan(&phone, link).await;
    desktop.wait_for_text("已扫码，请在手机上确认").await;

    let second = scene.open(Profile::wechat()).await;
    refused(
        &second,
        link,
        "二维码已被使用",
        "此登录二维码已被其他手机扫描或已处理。请在电脑上刷新二维码。",
    )
    .await;

    scene.end().await;
}

/// The shipped demo with one desktop browser: the QR page's "模拟手机扫码" link opens a second
/// tab that the simulated WeChat marks as the phone; that tab consents and confirms, and the
/// first tab ends logged in.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_demo_one_desktop_plays_the_phone_in_a_second_tab() {
    let scene = Scene::start("browser-qr-demo", Profile::desktop(), "/demo").await;
    let desktop = &scene.desktop;
    desktop.click("#simulate-scan").await;
    let qr_tab = desktop.switch_to_new_window().await;
    desktop
        .wait_for_url(
            "the second tab goes through WeChat's authorize page",
            is_consent,
        )
        .await;
    desktop.click("a.user[href$='user=0']").await;
    desktop.wait_for_text("确认在电脑上登录？").await;
    decide(desktop, true).await;

    desktop.switch_to(qr_tab).await;
    lands_logged_in(desktop, "/demo", "张三").await;

    scene.end().await;
}
