//! The desktop QR login bridge (issue 12) over real sockets: the simulated WeChat, the layer
//! (with `qr.enabled`) over an echo service, a desktop browser (Chrome's User-Agent) and a
//! phone (WeChat's), each with its own cookie jar. Every attack of the issue is a test here.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use support::{Browser, Options, Reply, World, bounded};
use url::Url;
use wechat_oauth_proxy::{
    layer::{
        QrDevPhone, QrSettings,
        tenant::{TenantHost, TenantRouting, TenantSite},
    },
    session::{MemoryTicketStore, StoreError, TicketKey, TicketStore},
    sim::{SimAuthorizer, SimConfig},
    wechat::AuthorizerAppId,
};

const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x1800322c) NetType/WIFI Language/zh_CN";

fn qr_on() -> QrSettings {
    QrSettings {
        enabled: true,
        ..QrSettings::default()
    }
}

async fn world_with(qr: QrSettings) -> World {
    World::start_with(Options {
        qr: Some(qr),
        ..Options::default()
    })
    .await
}

fn desktop(world: &World) -> Browser {
    let mut browser = world.browser();
    browser.user_agent = Some(DESKTOP_UA.to_owned());
    browser
}

fn phone(world: &World) -> Browser {
    let mut browser = world.browser();
    browser.user_agent = Some(WECHAT_UA.to_owned());
    browser
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// What the desktop page gave: the QR link (as text) and the ticket id.
#[derive(Debug, Clone)]
struct Shown {
    scan: Url,
    id: String,
}

impl Shown {
    fn of(reply: &Reply) -> Shown {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let scan = between(&reply.body, "id=\"phone-link\">", "<").expect("the link as text");
        let scan = Url::parse(scan).unwrap();
        let id = scan
            .path_segments()
            .unwrap()
            .next_back()
            .unwrap()
            .to_owned();
        Shown { scan, id }
    }

    fn poll(&self, base: &Url, seen: Option<&str>) -> Url {
        let mut url = base
            .join(&format!("/_wxauth/qr/poll?id={}", self.id))
            .unwrap();
        if let Some(seen) = seen {
            url.query_pairs_mut().append_pair("seen", seen);
        }
        url
    }

    fn finish(&self, base: &Url) -> Url {
        base.join(&format!("/_wxauth/qr/finish?id={}", self.id))
            .unwrap()
    }

    fn confirm(&self, base: &Url) -> Url {
        base.join(&format!("/_wxauth/qr/confirm?id={}", self.id))
            .unwrap()
    }
}

/// The desktop opens `path` without a session and is shown a code.
async fn shown(world: &World, desktop: &Browser, path: &str) -> Shown {
    Shown::of(&desktop.get(world.url(path)).await)
}

/// JSON poll by `browser` (its cookies).
async fn poll(browser: &Browser, url: Url) -> Reply {
    browser
        .get_with(url, &[("accept", "application/json")])
        .await
}

/// The phone scans and walks through WeChat's authorize page to the callback; returns the
/// confirmation page (and the token in it).
async fn phone_logs_in(phone: &Browser, shown: &Shown) -> (Reply, String) {
    let scan = phone.get(shown.scan.clone()).await;
    assert_eq!(scan.status, StatusCode::FOUND, "{}", scan.body);
    let callback = phone.authorize(scan.location()).await;
    let after = phone.get(callback).await;
    assert_eq!(after.status, StatusCode::FOUND, "{}", after.body);
    assert!(
        after.location().path().ends_with("/_wxauth/qr/confirm"),
        "{}",
        after.location()
    );
    let page = phone.get(after.location()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = between(&page.body, "name=\"token\" value=\"", "\"")
        .expect("a token")
        .to_owned();
    (page, token)
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The phone's decision as its page would post it.
async fn decide(phone: &Browser, shown: &Shown, token: &str, decision: &str) -> Reply {
    let origin = origin_of(&shown.scan);
    post_confirm(
        phone,
        shown,
        &[("id", &shown.id), ("token", token), ("decision", decision)],
        Some(&origin),
    )
    .await
}

async fn post_confirm(
    phone: &Browser,
    shown: &Shown,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> Reply {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    let url = shown.scan.join("/_wxauth/qr/confirm").unwrap();
    phone
        .send(Method::POST, url, &headers, Some(body.into_bytes()))
        .await
}

/// The whole bridge up to the phone's approval.
async fn approved(world: &World, desktop: &Browser, path: &str) -> (Shown, Browser) {
    let shown = shown(world, desktop, path).await;
    let phone = phone(world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    let done = decide(&phone, &shown, &token, "approve").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    (shown, phone)
}

fn assert_not_found(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// The flow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_desktop_logs_in_by_scanning_and_lands_where_it_asked() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let page = desktop.get(world.url("/orders/42?tab=1")).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the QR page, not a dead-end redirect"
    );
    assert!(page.content_type().starts_with("text/html"));
    for needle in [
        "<div id=\"qr\"",
        "<svg",
        "id=\"status\"",
        "id=\"phone-link\"",
        "请使用微信扫一扫",
        "Log in with WeChat",
    ] {
        assert!(page.body.contains(needle), "{needle} in {}", page.body);
    }
    assert!(
        !page.body.contains("<?xml"),
        "the SVG is inlined without its prelude"
    );
    assert!(
        page.body.find("扫码登录").unwrap() < page.body.find("Log in with WeChat").unwrap(),
        "zh-CN first"
    );
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("wxauth_qr="))
        .expect("the desktop cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=300"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let shown = Shown::of(&page);
    assert_eq!(shown.id.len(), 22, "128 bits, base64url");
    assert_eq!(shown.scan.path(), format!("/_wxauth/qr/s/{}", shown.id));
    let first = poll(&desktop, shown.poll(&world.base, None)).await;
    assert_eq!(first.json()["status"], "pending");

    let phone = phone(&world);
    let (confirm, token) = phone_logs_in(&phone, &shown).await;
    assert!(
        confirm.body.contains("Chrome · Windows"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("127.0.0.*"), "masked address");
    assert!(confirm.body.contains("id=\"confirm\"") && confirm.body.contains("id=\"cancel\""));
    assert!(
        phone.session_cookie().is_none(),
        "no phone session by default"
    );
    assert_eq!(
        poll(&desktop, shown.poll(&world.base, None)).await.json()["status"],
        "scanned"
    );
    let done = decide(&phone, &shown, &token, "approve").await;
    assert!(done.body.contains("已确认"), "{}", done.body);
    let status = poll(&desktop, shown.poll(&world.base, None)).await.json();
    assert_eq!(status["status"], "approved");
    let next = world.url(status["next"].as_str().unwrap());
    let finish = desktop.get(next).await;
    assert_eq!(finish.status, StatusCode::FOUND, "{}", finish.body);
    assert_eq!(finish.raw_location(), Some("/orders/42?tab=1"));
    assert!(finish.sets_session());
    assert!(
        finish
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("wxauth_qr=;")),
        "the desktop cookie is cleared"
    );
    let landed = desktop.get(finish.location()).await;
    let identity = landed
        .echoed()
        .expect("the inner service")
        .identity()
        .unwrap();
    assert!(!identity.openid.as_str().is_empty());
    assert!(phone.session_cookie().is_none());
}

#[tokio::test]
async fn the_phone_gets_a_session_only_when_configured() {
    let world = world_with(QrSettings {
        also_login_phone: true,
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let (_, phone) = approved(&world, &desktop, "/").await;
    assert!(phone.session_cookie().is_some());
    let mine = phone.get(world.url("/mine")).await;
    assert!(mine.reached_inner(), "{}", mine.body);
}

#[tokio::test]
async fn wechat_browsers_and_api_clients_keep_their_answers() {
    let world = world_with(qr_on()).await;
    let inside = phone(&world);
    let reply = inside.get(world.url("/page")).await;
    assert_eq!(
        reply.status,
        StatusCode::FOUND,
        "WeChat's browser: the OAuth redirect"
    );
    let api = desktop(&world);
    let reply = api
        .get_with(world.url("/api/orders"), &[("accept", "application/json")])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let json = reply.json();
    assert_eq!(json["qr_url"], "/_wxauth/qr?return=%2Fapi%2Forders");
    assert!(json["login_url"].as_str().is_some());
    // Off: no qr_url, no QR page.
    let off = World::start().await;
    let reply = desktop(&off)
        .get_with(off.url("/api/orders"), &[("accept", "application/json")])
        .await;
    assert!(reply.json().get("qr_url").is_none());
    assert_eq!(
        desktop(&off).get(off.url("/page")).await.status,
        StatusCode::FOUND
    );
    assert_not_found(&desktop(&off).get(off.url("/_wxauth/qr")).await);
}

#[tokio::test]
async fn without_script_the_status_page_refreshes_and_links_on() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let page = desktop.get(world.url("/here")).await;
    assert!(
        page.body.contains(
            "<noscript><meta http-equiv=\"refresh\" content=\"5;url=/_wxauth/qr/poll?id="
        ),
        "{}",
        page.body
    );
    let shown = Shown::of(&page);
    let url = world.url(&format!("/_wxauth/qr/poll?id={}&html=1", shown.id));
    let waiting = desktop.get(url.clone()).await;
    assert!(waiting.body.contains("http-equiv=\"refresh\" content=\"3;"));
    assert!(waiting.body.contains("data-status=\"pending\""));
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    decide(&phone, &shown, &token, "approve").await;
    let ready = desktop.get(url).await;
    assert!(ready.body.contains("id=\"finish\""), "{}", ready.body);
    assert!(
        ready
            .body
            .contains(&format!("/_wxauth/qr/finish?id={}", shown.id))
    );
}

#[tokio::test]
async fn the_code_alone_is_an_svg_for_its_desktop_only() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let url = world.url(&format!("/_wxauth/qr/code.svg?id={}", shown.id));
    let svg = desktop.get(url.clone()).await;
    assert_eq!(svg.status, StatusCode::OK);
    assert_eq!(svg.content_type(), "image/svg+xml");
    assert!(svg.body.starts_with("<svg"));
    assert_eq!(svg.headers["cache-control"], "no-store");
    assert_not_found(&desktop.fresh().get(url).await);
}

#[tokio::test]
async fn the_phone_must_be_inside_wechat() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let outside = desktop.fresh().get(shown.scan.clone()).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    assert!(
        outside.body.contains("请使用微信扫一扫"),
        "{}",
        outside.body
    );
    assert_eq!(
        poll(&desktop, shown.poll(&world.base, None)).await.json()["status"],
        "pending",
        "opening it outside WeChat scans nothing"
    );
}

/// Development: the page links to the simulator's "act as the phone" aid, and a browser the
/// aid marked (its cookie) may open the QR link without WeChat's User-Agent.
#[tokio::test]
async fn in_development_a_desktop_can_play_the_phone() {
    let aid = Url::parse("http://127.0.0.1:9/_sim/phone").unwrap();
    let world = world_with(QrSettings {
        dev_phone: Some(QrDevPhone {
            link: aid.clone(),
            cookie: "wxsim_phone".to_owned(),
        }),
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let page = desktop.get(world.url("/")).await;
    let shown = Shown::of(&page);
    let mut expected = aid;
    expected
        .query_pairs_mut()
        .append_pair("go", shown.scan.as_str());
    let link = between(&page.body, "id=\"simulate-scan\" href=\"", "\"").expect("the aid's link");
    assert_eq!(link.replace("&amp;", "&"), expected.as_str());
    let player = desktop.fresh();
    assert_eq!(
        player.get(shown.scan.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    player.set_cookie("wxsim_phone", "1");
    assert_eq!(
        player.get(shown.scan.clone()).await.status,
        StatusCode::FOUND
    );
    // Without the aid configured (production), the page has no such link.
    let plain = world_with(qr_on()).await;
    assert!(
        !crate::desktop(&plain)
            .get(plain.url("/"))
            .await
            .body
            .contains("simulate-scan")
    );
}

#[tokio::test]
async fn cancelling_on_the_phone_refuses_the_desktop() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    let done = decide(&phone, &shown, &token, "reject").await;
    assert!(done.body.contains("已取消"));
    assert_eq!(
        poll(&desktop, shown.poll(&world.base, None)).await.json()["status"],
        "rejected"
    );
    assert_not_found(&desktop.get(shown.finish(&world.base)).await);
    assert!(desktop.session_cookie().is_none());
}

// ---------------------------------------------------------------------------------------------
// The attacks of the issue
// ---------------------------------------------------------------------------------------------

/// Polling, the code and finishing without the desktop cookie answer exactly like an unknown id.
#[tokio::test]
async fn without_the_desktop_cookie_every_desktop_route_is_an_unknown_id() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let (shown, _) = approved(&world, &desktop, "/").await;
    let attacker = desktop.fresh();
    let unknown = Shown {
        id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        ..shown.clone()
    };
    for (theirs, nothing) in [
        (
            shown.poll(&world.base, None),
            unknown.poll(&world.base, None),
        ),
        (shown.finish(&world.base), unknown.finish(&world.base)),
    ] {
        let a = attacker
            .get_with(theirs, &[("accept", "application/json")])
            .await;
        let b = attacker
            .get_with(nothing, &[("accept", "application/json")])
            .await;
        assert_not_found(&a);
        assert_eq!(
            (a.status, a.json()["error"].clone()),
            (b.status, b.json()["error"].clone())
        );
    }
    // Another desktop's own cookie does not open this ticket either.
    let other = desktop.fresh();
    shown_for(&world, &other).await;
    assert_not_found(&poll(&other, shown.poll(&world.base, None)).await);
    assert_not_found(&other.get(shown.finish(&world.base)).await);
    assert!(attacker.session_cookie().is_none() && other.session_cookie().is_none());
    // The genuine desktop still can.
    assert_eq!(
        desktop.get(shown.finish(&world.base)).await.status,
        StatusCode::FOUND
    );
}

async fn shown_for(world: &World, browser: &Browser) -> Shown {
    shown(world, browser, "/").await
}

/// A memory ticket store whose `take` waits first, so that two racing finishes have both read
/// the approved ticket before either takes it: only the take's own atomicity can then decide.
#[derive(Debug, Default)]
struct SlowTake(MemoryTicketStore);

#[async_trait::async_trait]
impl TicketStore for SlowTake {
    async fn insert(
        &self,
        key: &TicketKey,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.0.insert(key, value, ttl).await
    }
    async fn get(&self, key: &TicketKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key).await
    }
    async fn replace(
        &self,
        key: &TicketKey,
        expected: &[u8],
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.0.replace(key, expected, value).await
    }
    async fn take(&self, key: &TicketKey, expected: &[u8]) -> Result<bool, StoreError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.take(key, expected).await
    }
    async fn remove(&self, key: &TicketKey) -> Result<(), StoreError> {
        self.0.remove(key).await
    }
}

#[tokio::test]
async fn a_ticket_redeems_once() {
    let world = World::start_with(Options {
        qr: Some(qr_on()),
        tickets: Some(Arc::new(SlowTake::default())),
        ..Options::default()
    })
    .await;
    let desktop = desktop(&world);
    let (shown, _) = approved(&world, &desktop, "/").await;
    // The same browser, twice at once (two tabs): one wins.
    let twin = desktop.clone_jar();
    let (a, b) = tokio::join!(
        desktop.get(shown.finish(&world.base)),
        twin.get(shown.finish(&world.base))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::FOUND, StatusCode::NOT_FOUND],
        "{} / {}",
        a.body,
        b.body
    );
    assert_eq!(world.session_count().await, 1);
    let again = twin.get(shown.finish(&world.base)).await;
    assert_not_found(&again);
}

#[tokio::test]
async fn a_second_phone_is_refused() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let first = phone(&world);
    let scan = first.get(shown.scan.clone()).await;
    assert_eq!(scan.status, StatusCode::FOUND);
    let second = phone(&world);
    let refused = second.get(shown.scan.clone()).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("二维码已被使用"), "{}", refused.body);
    // Nor can the second phone use the first one's OAuth redirect to bind itself: the callback
    // is the second phone's but the ticket is the first phone's.
    let callback = second.authorize(scan.location()).await;
    let after = second.get(callback).await;
    assert_ne!(after.status, StatusCode::FOUND, "{}", after.body);
    // The first phone carries on.
    let (_, token) = phone_logs_in(&first, &shown).await;
    let token_2 = token.clone();
    // The second phone cannot decide with the first one's token.
    let stolen = decide(&second, &shown, &token_2, "approve").await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);
    assert_eq!(
        decide(&first, &shown, &token, "approve").await.status,
        StatusCode::OK
    );
}

/// A phone's flow cookie replayed by another browser (another phone cookie) completes OAuth
/// but cannot put its identity into the ticket: only the phone that scanned can.
#[tokio::test]
async fn a_stolen_flow_without_the_scanning_phone_cannot_authorize() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let owner = phone(&world);
    let scan = owner.get(shown.scan.clone()).await;
    assert_eq!(scan.status, StatusCode::FOUND);
    let thief = owner.clone_jar();
    thief.set_cookie("wxauth_qr_phone", "BBBBBBBBBBBBBBBBBBBBBA");
    let callback = thief.authorize(scan.location()).await;
    let after = thief.get(callback).await;
    assert_eq!(after.status, StatusCode::CONFLICT, "{}", after.body);
    assert!(thief.session_cookie().is_none());
    // The ticket is still the owner's to complete.
    let (_, token) = phone_logs_in(&owner, &shown).await;
    assert_eq!(
        decide(&owner, &shown, &token, "approve").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn guessed_ids_are_unknown_counted_and_rate_limited() {
    let world = world_with(QrSettings {
        misses_per_ip_per_minute: 5,
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let guesser = phone(&world);
    let mut statuses = Vec::new();
    for i in 0..7 {
        let guess = format!("{:0>22}", format!("guess{i}"));
        let reply = guesser
            .get(world.url(&format!("/_wxauth/qr/s/{guess}")))
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(&statuses[..5], &[StatusCode::NOT_FOUND; 5], "{statuses:?}");
    assert_eq!(
        &statuses[5..],
        &[StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
    // Malformed ids count too, and once limited even a real id is refused from that address.
    let limited = guesser.get(shown.scan.clone()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn no_status_answer_names_who_scanned() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let mut answers = Vec::new();
    answers.push(poll(&desktop, shown.poll(&world.base, None)).await.body);
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    answers.push(poll(&desktop, shown.poll(&world.base, None)).await.body);
    let html = world.url(&format!("/_wxauth/qr/poll?id={}&html=1", shown.id));
    answers.push(desktop.get(html.clone()).await.body);
    decide(&phone, &shown, &token, "approve").await;
    answers.push(poll(&desktop, shown.poll(&world.base, None)).await.body);
    answers.push(desktop.get(html).await.body);
    let finish = desktop.get(shown.finish(&world.base)).await;
    let identity = desktop
        .get(finish.location())
        .await
        .echoed()
        .unwrap()
        .identity()
        .unwrap();
    for answer in &answers {
        for secret in [
            identity.openid.as_str(),
            identity.nickname.as_str(),
            identity.avatar.as_str(),
        ]
        .into_iter()
        .chain(identity.unionid.as_ref().map(|u| u.as_str()))
        {
            assert!(!answer.contains(secret), "{secret:?} leaked in {answer}");
        }
    }
    for json in answers.iter().filter(|a| a.starts_with('{')) {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert!(
            keys.iter()
                .all(|k| ["status", "expires_in", "next"].contains(&k.as_str())),
            "{keys:?}"
        );
    }
}

#[tokio::test]
async fn confirmation_needs_post_the_token_the_phone_and_the_origin() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    let origin = origin_of(&shown.scan);
    // GET with the decision in the query decides nothing.
    let get = phone
        .get(format!(
            "{}&token={token}&decision=approve",
            shown.confirm(&world.base)
        ))
        .await;
    assert_eq!(get.status, StatusCode::OK, "just the page again");
    // No token, a wrong token, no Origin, a foreign Origin, another phone's jar.
    let stranger = phone.fresh();
    let cases: [(&Browser, &str, Option<&str>); 5] = [
        (&phone, "", Some(&origin)),
        (&phone, "AAAAAAAAAAAAAAAAAAAAAA", Some(&origin)),
        (&phone, &token, None),
        (&phone, &token, Some("https://evil.example")),
        (&stranger, &token, Some(&origin)),
    ];
    for (browser, token, origin) in cases {
        let form = [
            ("id", shown.id.as_str()),
            ("token", token),
            ("decision", "approve"),
        ];
        let reply = post_confirm(browser, &shown, &form, origin).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{token} {origin:?}: {}",
            reply.body
        );
    }
    // Another phone of its own, with its own genuine token for its own cookie, is still not
    // the owner.
    let other = phone.fresh();
    other.set_cookie("wxauth_qr_phone", "BBBBBBBBBBBBBBBBBBBBBA");
    let theirs = post_confirm(
        &other,
        &shown,
        &[
            ("id", &shown.id),
            ("token", &csrf_for("BBBBBBBBBBBBBBBBBBBBBA", &shown.id)),
            ("decision", "approve"),
        ],
        Some(&origin),
    )
    .await;
    assert_ne!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_eq!(
        poll(&desktop, shown.poll(&world.base, None)).await.json()["status"],
        "scanned",
        "nothing was decided"
    );
    assert_eq!(
        decide(&phone, &shown, &token, "approve").await.status,
        StatusCode::OK
    );
}

/// The token the confirmation page would give a phone with cookie `secret` (the derivation is
/// the layer's; recomputed here to show that even a well-formed token for another phone's
/// cookie does not make that phone the owner).
fn csrf_for(secret: &str, id: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"wxauth-qr-csrf\0");
    hash.update(secret.as_bytes());
    hash.update([0]);
    hash.update(id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
}

fn short(scan: u64, confirm: u64, redeem: u64) -> QrSettings {
    QrSettings {
        scan_ttl: Duration::from_secs(scan),
        confirm_ttl: Duration::from_secs(confirm),
        redeem_ttl: Duration::from_secs(redeem),
        absolute_ttl: Duration::from_secs(300),
        ..qr_on()
    }
}

const PAST_ONE_SECOND: Duration = Duration::from_millis(1_200);

#[tokio::test]
async fn an_unscanned_code_expires() {
    let world = world_with(short(1, 120, 60)).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let status = poll(&desktop, shown.poll(&world.base, None)).await.json();
    assert_eq!(status["status"], "expired");
    assert_eq!(status["expires_in"], 0);
    let scan = phone(&world).get(shown.scan.clone()).await;
    assert_eq!(scan.status, StatusCode::GONE);
    assert!(scan.body.contains("二维码已过期"));
}

#[tokio::test]
async fn a_scan_not_confirmed_in_time_expires() {
    let world = world_with(short(120, 1, 60)).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let phone = phone(&world);
    // Scanned, then too slow through WeChat: the callback can no longer authorize.
    let scan = phone.get(shown.scan.clone()).await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let callback = phone.authorize(scan.location()).await;
    let after = phone.get(callback).await;
    assert_eq!(after.status, StatusCode::GONE, "{}", after.body);
    assert_eq!(
        poll(&desktop, shown.poll(&world.base, None)).await.json()["status"],
        "expired"
    );
    // Authorized, then too slow to tap: the decision is refused.
    let shown = shown_for(&world, &desktop).await;
    let (_, token) = phone_logs_in(&phone, &shown).await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let late = decide(&phone, &shown, &token, "approve").await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);
    let page = phone.get(shown.confirm(&world.base)).await;
    assert_eq!(page.status, StatusCode::GONE);
}

#[tokio::test]
async fn an_approval_not_redeemed_in_time_expires() {
    let world = world_with(short(120, 120, 1)).await;
    let desktop = desktop(&world);
    let (shown, _) = approved(&world, &desktop, "/").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let late = desktop.get(shown.finish(&world.base)).await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);
    assert!(desktop.session_cookie().is_none());
}

#[tokio::test]
async fn nothing_outlives_the_absolute_lifetime() {
    let world = world_with(QrSettings {
        scan_ttl: Duration::from_secs(1),
        confirm_ttl: Duration::from_secs(1),
        redeem_ttl: Duration::from_secs(1),
        absolute_ttl: Duration::from_secs(1),
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    // Gone from the store: an unknown id for everyone.
    assert_not_found(&poll(&desktop, shown.poll(&world.base, None)).await);
    assert_not_found(&desktop.get(shown.finish(&world.base)).await);
    assert_not_found(&phone(&world).get(shown.scan.clone()).await);
}

const A: &str = "wxa1b2c3d4e5f60708";
const B: &str = "wxb2b2c3d4e5f60708";
const HOST_A: &str = "shop-a.test";
const HOST_B: &str = "shop-b.test";

fn site(id: &str, host: &str, name: &str) -> TenantSite {
    TenantSite {
        appid: AuthorizerAppId::new(id),
        hosts: vec![TenantHost::try_from(host.to_owned()).unwrap()],
        name: Some(name.to_owned()),
        audience: None,
    }
}

#[tokio::test]
async fn a_ticket_of_one_account_is_refused_on_another_accounts_host() {
    let sim = SimConfig {
        redirect_hosts: vec!["127.0.0.1".into(), HOST_A.into(), HOST_B.into()],
        ..SimConfig::with_authorizers(vec![SimAuthorizer::new(AuthorizerAppId::new(B), "B 店")])
    };
    let world = World::start_with(Options {
        sim,
        tenants: Some(TenantRouting {
            sites: vec![
                site(A, HOST_A, "甲店 Shop A"),
                site(B, HOST_B, "乙店 Shop B"),
            ],
            ..TenantRouting::default()
        }),
        qr: Some(qr_on()),
        ..Options::default()
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], world.base.port().unwrap()));
    let on = |host: &str, ua: &str| {
        let mut b = Browser::for_host(host, addr);
        b.user_agent = Some(ua.to_owned());
        b
    };
    let desktop_a = on(HOST_A, DESKTOP_UA);
    let page = desktop_a.get(desktop_a.origin().join("/").unwrap()).await;
    assert!(
        page.body.contains("甲店 Shop A"),
        "the account's name: {}",
        page.body
    );
    let shown = Shown::of(&page);
    assert_eq!(shown.scan.host_str(), Some(HOST_A));
    // The same ticket id asked for on B's host: by the desktop (its B-host jar holds a copy of
    // the A cookie) and by a phone.
    let desktop_b = on(HOST_B, DESKTOP_UA);
    desktop_b.set_cookie("wxauth_qr", &desktop_a.cookie("wxauth_qr").unwrap());
    let on_b = |path: String| desktop_b.origin().join(&path).unwrap();
    assert_not_found(
        &desktop_b
            .get_with(
                on_b(format!("/_wxauth/qr/poll?id={}", shown.id)),
                &[("accept", "application/json")],
            )
            .await,
    );
    let phone_b = on(HOST_B, WECHAT_UA);
    assert_not_found(
        &phone_b
            .get(on_b(format!("/_wxauth/qr/s/{}", shown.id)))
            .await,
    );
    // Approved on A, it still cannot be finished on B.
    let phone_a = on(HOST_A, WECHAT_UA);
    let (confirm, token) = phone_logs_in(&phone_a, &shown).await;
    assert!(confirm.body.contains("甲店 Shop A") && confirm.body.contains(HOST_A));
    assert_eq!(
        decide(&phone_a, &shown, &token, "approve").await.status,
        StatusCode::OK
    );
    assert_not_found(
        &desktop_b
            .get(on_b(format!("/_wxauth/qr/finish?id={}", shown.id)))
            .await,
    );
    assert!(desktop_b.session_cookie().is_none());
    let finish = desktop_a
        .get(
            desktop_a
                .origin()
                .join(&format!("/_wxauth/qr/finish?id={}", shown.id))
                .unwrap(),
        )
        .await;
    assert_eq!(finish.status, StatusCode::FOUND, "{}", finish.body);
    let landed = desktop_a.get(finish.location()).await;
    assert_eq!(
        landed.echoed().unwrap().identity().unwrap().appid.as_str(),
        A
    );
}

#[tokio::test]
async fn a_flood_of_codes_neither_evicts_a_pending_ticket_nor_grows_memory() {
    let store = Arc::new(MemoryTicketStore::new(8));
    let world = World::start_with(Options {
        qr: Some(QrSettings {
            max_pending: 8,
            per_ip_per_minute: 1_000,
            ..qr_on()
        }),
        tickets: Some(Arc::clone(&store) as Arc<dyn TicketStore>),
        ..Options::default()
    })
    .await;
    let victim = desktop(&world);
    let shown = shown(&world, &victim, "/mine").await;
    let flood = desktop(&world);
    let mut refused = 0;
    for _ in 0..50 {
        let reply = flood.get(world.url("/_wxauth/qr")).await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(reply.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("{other}: {}", reply.body),
        }
    }
    assert_eq!(refused, 50 - 7, "seven more fit, the rest are refused");
    assert_eq!(store.len(), 8, "the bound holds");
    // The victim's ticket is intact and completes.
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    decide(&phone, &shown, &token, "approve").await;
    let finish = victim.get(shown.finish(&world.base)).await;
    assert_eq!(finish.raw_location(), Some("/mine"), "{}", finish.body);
}

#[tokio::test]
async fn new_codes_per_address_are_limited() {
    let world = world_with(QrSettings {
        per_ip_per_minute: 3,
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(desktop.get(world.url("/_wxauth/qr")).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// Not a timed assertion: the time from the phone's approval to the desktop's long poll
/// answering, and to the desktop being logged in, printed for the record (`--nocapture`).
#[tokio::test]
async fn long_poll_wakes_on_approval_measured() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let phone = phone(&world);
    let (_, token) = phone_logs_in(&phone, &shown).await;
    let waiting = {
        let desktop = desktop.clone_jar();
        let url = shown.poll(&world.base, Some("scanned"));
        tokio::spawn(async move {
            let reply = poll(&desktop, url).await;
            (Instant::now(), reply)
        })
    };
    // Let the poll reach its wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let done = decide(&phone, &shown, &token, "approve").await;
    let approved_at = Instant::now();
    assert_eq!(done.status, StatusCode::OK);
    let (woke, reply) = bounded(waiting).await.unwrap();
    assert_eq!(reply.json()["status"], "approved");
    let next = world.url(reply.json()["next"].as_str().unwrap());
    let finish = desktop.get(next).await;
    let landed = desktop.get(finish.location()).await;
    let logged_in = Instant::now();
    assert!(landed.reached_inner());
    println!(
        "qr latency: approval sent → waiting poll answered {:?} (approval POST round trip {:?}); approval sent → desktop logged in (finish + first page) {:?}",
        woke.saturating_duration_since(sent),
        approved_at - sent,
        logged_in - sent
    );
}

#[tokio::test]
async fn an_unchanged_poll_waits_and_is_bounded() {
    let world = world_with(QrSettings {
        poll_wait: Duration::from_secs(1),
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let started = Instant::now();
    let reply = poll(&desktop, shown.poll(&world.base, Some("pending"))).await;
    assert_eq!(reply.json()["status"], "pending");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
}

/// `HEAD` on the QR login start (`qr`, or a `HEAD` navigation without a session) answers like
/// `GET` — status, `text/html`, `no-store` — but changes nothing: no ticket in the store, no
/// cookie, and no creation counted against the address (the two `GET`s after ten `HEAD`s are
/// still within a limit of two per minute).
#[tokio::test]
async fn head_on_the_qr_start_creates_no_ticket() {
    let store = Arc::new(MemoryTicketStore::new(64));
    let world = World::start_with(Options {
        qr: Some(QrSettings {
            per_ip_per_minute: 2,
            ..qr_on()
        }),
        tickets: Some(Arc::clone(&store) as Arc<dyn TicketStore>),
        ..Options::default()
    })
    .await;
    let desktop = desktop(&world);
    for path in ["/_wxauth/qr?return=/mine", "/mine"] {
        for _ in 0..5 {
            let head = desktop.send(Method::HEAD, world.url(path), &[], None).await;
            assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
            assert!(
                head.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "HEAD {path}: {:?}",
                head.headers
            );
            assert_eq!(head.headers["cache-control"], "no-store", "HEAD {path}");
            assert!(
                !head.headers.contains_key("set-cookie"),
                "HEAD {path}: {:?}",
                head.headers
            );
            assert!(head.body.is_empty(), "HEAD {path}");
        }
    }
    assert_eq!(store.len(), 0, "no ticket from HEAD");
    assert!(
        desktop.cookie_names().is_empty(),
        "{:?}",
        desktop.cookie_names()
    );

    // GET still creates one, with its cookie, and the HEADs took nothing from the limit.
    let first = desktop.get(world.url("/_wxauth/qr?return=/mine")).await;
    let shown = Shown::of(&first);
    assert!(first.headers.contains_key("set-cookie"));
    assert_eq!(first.headers["cache-control"], "no-store");
    let second = desktop.get(world.url("/mine")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(store.len(), 2);
    assert!(!shown.id.is_empty());
    let third = desktop.get(world.url("/mine")).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
}

/// The two one-shot links change state when followed with GET: a `HEAD` of either (a link
/// preview inside WeChat, a link checker) is refused (405, `Allow: GET`) and claims or redeems
/// nothing — the phone that then scans still owns the ticket, and the desktop still redeems it.
#[tokio::test]
async fn head_on_the_scan_and_finish_links_changes_nothing() {
    let world = world_with(qr_on()).await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let previewer = phone(&world);
    let head = previewer
        .send(Method::HEAD, shown.scan.clone(), &[], None)
        .await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(head.headers["allow"], "GET");
    // The ticket is not claimed: another phone scans and carries on.
    let owner = phone(&world);
    let (_, token) = phone_logs_in(&owner, &shown).await;
    assert_eq!(
        decide(&owner, &shown, &token, "approve").await.status,
        StatusCode::OK
    );
    // HEAD on finish redeems nothing: no session, and the GET after it still redeems.
    let head = desktop
        .send(Method::HEAD, shown.finish(&world.base), &[], None)
        .await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(world.session_count().await, 0);
    let finish = desktop.get(shown.finish(&world.base)).await;
    assert_eq!(finish.status, StatusCode::FOUND, "{}", finish.body);
    assert_eq!(world.session_count().await, 1);
}

/// `HEAD` on the poll never long-polls (it has no body to wait for): with `poll_wait` at its
/// largest, 25 s, a `HEAD` with an unchanged `seen` still answers within the test's 10 s bound.
#[tokio::test]
async fn head_on_the_poll_answers_at_once() {
    let world = world_with(QrSettings {
        poll_wait: Duration::from_secs(25),
        ..qr_on()
    })
    .await;
    let desktop = desktop(&world);
    let shown = shown(&world, &desktop, "/").await;
    let head = tokio::time::timeout(
        Duration::from_secs(10),
        desktop.send(
            Method::HEAD,
            shown.poll(&world.base, Some("pending")),
            &[],
            None,
        ),
    )
    .await
    .expect("HEAD on the poll answered without waiting for a change");
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}
