//! The browser login flow end to end over real loopback sockets: the simulated WeChat, the layer
//! around an echo service, and a redirect-less reqwest client stepping through every 302.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Browser, Harness, Options, Page, within};
use http::{Method, StatusCode};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use wechat_oauth_proxy::sim::{Endpoint, Failure, SimUser};

const SESSION: &str = "wxauth_session";
const FLOW: &str = "wxauth_flow";

/// Verifies `token` with the key from our JWKS document, like an upstream would.
async fn verify_with_jwks(h: &Harness, token: &str) -> serde_json::Value {
    let jwks = Browser::new(h.addr)
        .get(h.url("/_wxauth/jwks.json").as_str())
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    let set: JwkSet = serde_json::from_str(&jwks.body).expect("jwks parses");
    let kid = decode_header(token).expect("header").kid.expect("kid");
    let jwk = set.find(&kid).expect("kid is published");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["wechat-oauth-proxy-test"]);
    validation.set_audience(&["echo"]);
    decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("JWT verifies with the published key")
    .claims
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

#[tokio::test]
async fn whole_browser_flow_delivers_a_verifiable_jwt_with_the_exact_nickname() {
    let h = Harness::start().await;
    let user = SimUser {
        nickname: "小明🐼✨ Ωmega".to_owned(),
        ..SimUser::defaults()[0].clone()
    };
    h.sim.set_next_user(user.clone());
    let browser = h.browser();
    let pages = browser
        .login(h.url("/private/page?x=1&y=%E4%B8%AD").as_str())
        .await;

    // 1. 302 to the authorize page with our callback and a fresh state.
    assert_eq!(pages[0].status, StatusCode::FOUND);
    let authorize: url::Url = pages[0].location().parse().expect("absolute");
    assert!(
        authorize.as_str().starts_with(h.sim.base_url().as_str()),
        "{authorize}"
    );
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], h.url("/_wxauth/callback").as_str());
    assert_eq!(q["appid"], h.sim.config().authorizer_appid.as_str());
    assert_eq!(q["scope"], "snsapi_userinfo");
    let state = &q["state"];
    assert!(
        state.len() >= 22 && state.len() <= 64 && state.bytes().all(|b| b.is_ascii_alphanumeric())
    );
    assert_eq!(pages[0].headers["cache-control"], "no-store");
    // 2. WeChat redirects back to the callback; 3. the callback sets the session and returns.
    assert!(
        pages[1]
            .location()
            .starts_with(h.url("/_wxauth/callback").as_str())
    );
    assert_eq!(pages[2].status, StatusCode::FOUND);
    assert_eq!(pages[2].location(), "/private/page?x=1&y=%E4%B8%AD");
    assert!(browser.cookie(SESSION).is_some());
    assert!(
        browser.cookie(FLOW).is_none(),
        "flow cookie removed once no flow is pending"
    );
    let set_cookie = pages[2].set_cookies().join("\n");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );

    // 4. The inner service sees the identity.
    let echo = pages[3].json();
    assert_eq!(echo["path"], "/private/page");
    assert_eq!(echo["identity"]["nickname"], user.nickname);
    assert_eq!(echo["identity"]["openid"], user.openid);
    let token = header(&echo, "x-wechat-jwt").expect("JWT header");
    let claims = verify_with_jwks(&h, token).await;
    assert_eq!(
        claims["nickname"], user.nickname,
        "exact CJK/emoji nickname in the JWT"
    );
    assert_eq!(claims["sub"], user.openid);
    assert_eq!(claims["openid"], user.openid);
    assert_eq!(claims["unionid"], user.unionid.clone().expect("unionid"));
    assert_eq!(claims["appid"], h.sim.config().authorizer_appid.as_str());
    let nick = header(&echo, "x-wechat-nickname").expect("plain nickname");
    assert_eq!(
        percent_encoding::percent_decode_str(nick)
            .decode_utf8()
            .expect("utf8"),
        user.nickname
    );
    // The proxy's own cookies never reach the inner service.
    let cookie = header(&echo, "cookie").unwrap_or("");
    assert!(
        !cookie.contains(SESSION) && !cookie.contains(FLOW),
        "{cookie}"
    );

    // whoami shows the same identity.
    let who = browser
        .get_with(
            h.url("/_wxauth/whoami").as_str(),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.json()["nickname"], user.nickname);
    h.stop().await;
}

const FORGED: [(&str, &str); 8] = [
    ("X-WeChat-Jwt", "forged.jwt.value"),
    ("x-wechat_jwt", "forged.jwt.value"),
    ("X_WeChat_OpenID", "o-attacker"),
    ("X-WECHAT-OPENID", "o-attacker"),
    ("x-wechat-unionid", "u-attacker"),
    ("X_WECHAT_NICKNAME", "attacker"),
    ("x-wechat-avatar", "https://evil.example/a.png"),
    ("X-WeChat_AppID", "wxattacker"),
];

fn assert_no_forgery(page: &Page) {
    let echo = page.json();
    let all = echo["headers"].to_string();
    for bad in [
        "forged.jwt.value",
        "o-attacker",
        "u-attacker",
        "\"attacker\"",
        "evil.example",
        "wxattacker",
    ] {
        assert!(!all.contains(bad), "{bad} reached the inner service: {all}");
    }
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_inner_service() {
    let h = Harness::start().await;
    // Without a session, on a public route.
    let anonymous = h.browser();
    let page = anonymous
        .get_with(h.url("/public/x").as_str(), &FORGED)
        .await;
    assert!(page.reached_inner());
    assert_no_forgery(&page);
    assert!(page.json()["identity"].is_null());
    // Without a session, protected: never reaches the inner service at all.
    let page = anonymous.get_with(h.url("/api/x").as_str(), &FORGED).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // With a session: our values replace the forged ones.
    let browser = h.browser();
    browser.login(h.url("/").as_str()).await;
    let page = browser.get_with(h.url("/private").as_str(), &FORGED).await;
    assert!(page.reached_inner());
    assert_no_forgery(&page);
    let echo = page.json();
    assert_eq!(
        echo["headers"]["x-wechat-openid"]
            .as_array()
            .expect("one")
            .len(),
        1
    );
    assert_eq!(
        header(&echo, "x-wechat-openid"),
        Some(SimUser::defaults()[0].openid.as_str())
    );
    h.stop().await;
}

#[tokio::test]
async fn tampered_foreign_and_replayed_states_create_no_session() {
    let h = Harness::start().await;
    let victim = h.browser();
    let first = victim.get(h.url("/a").as_str()).await;
    let authorize = first.location().to_owned();
    let to_callback = victim.get(&authorize).await;
    let callback = to_callback.location().to_owned();

    // Tampered state.
    let tampered = callback.replace("state=", "state=X");
    let page = victim.get(&tampered).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("登录链接已失效") && page.body.contains("Login link expired"),
        "{}",
        page.body
    );
    assert!(victim.cookie(SESSION).is_none());

    // Foreign state: the callback URL opened in another browser is refused, and does not burn
    // the victim's pending login.
    let attacker = h.browser();
    let page = attacker.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(attacker.cookie(SESSION).is_none());
    assert_eq!(
        h.sim.calls(Endpoint::ComponentCodeExchange),
        0,
        "nothing was consumed or exchanged"
    );
    // The victim's own callback still completes, once.
    let page = victim.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(page.location(), "/a");
    assert!(victim.cookie(SESSION).is_some());
    // The attacker replaying it afterwards gets no session either.
    let page = attacker.get(&callback).await;
    assert!(attacker.cookie(SESSION).is_none(), "{}", page.status);
    h.stop().await;
}

#[tokio::test]
async fn a_callback_for_another_official_account_is_refused() {
    let h = Harness::start().await;
    let browser = h.browser();
    let first = browser.get(h.url("/a").as_str()).await;
    let to_callback = browser.get(first.location()).await;
    let mut callback: url::Url = to_callback.location().parse().expect("url");
    let appid = h.sim.config().authorizer_appid.as_str().to_owned();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "appid" {
                "wx00000000000000ff".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    assert!(
        pairs.iter().any(|(k, v)| k == "appid" && *v != appid),
        "{pairs:?}"
    );
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let page = browser.get(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("Invalid login response"),
        "{}",
        page.body
    );
    assert!(browser.cookie(SESSION).is_none());
    assert_eq!(
        h.sim.calls(Endpoint::ComponentCodeExchange),
        0,
        "the code is not exchanged"
    );
    h.stop().await;
}

#[tokio::test]
async fn duplicate_callback_creates_no_second_session() {
    let h = Harness::start().await;
    let browser = h.browser();
    let first = browser.get(h.url("/dup").as_str()).await;
    let to_callback = browser.get(first.location()).await;
    let callback = to_callback.location().to_owned();
    let done = browser.get(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND);
    assert_eq!(done.location(), "/dup");
    let session = browser.cookie(SESSION).expect("session");
    h.parts.sessions.run_pending_tasks().await;
    let sessions_before = h.parts.sessions.session_count();
    assert_eq!(sessions_before, 1);

    // Replay (reload, WeChat's double redirect): no new session, a plain redirect.
    let again = browser.get(&callback).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    assert!(
        again.set_cookies().iter().all(|c| !c.starts_with(SESSION)),
        "no new session cookie"
    );
    assert_eq!(browser.cookie(SESSION).as_deref(), Some(session.as_str()));
    h.parts.sessions.run_pending_tasks().await;
    assert_eq!(h.parts.sessions.session_count(), sessions_before);
    // The code went to WeChat once.
    assert_eq!(h.sim.calls(Endpoint::ComponentCodeExchange), 1);
    // The session still works.
    assert!(browser.get(h.url("/dup").as_str()).await.reached_inner());
    h.stop().await;
}

#[tokio::test]
async fn refusal_shows_a_retry_page_without_a_loop() {
    let h = Harness::start().await;
    h.sim.refuse_next();
    let browser = h.browser();
    let pages = browser.follow(h.url("/wanted").as_str(), 5).await;
    assert_eq!(pages.len(), 3, "302 → 302 → page, no loop");
    let page = &pages[2];
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("未完成授权") && page.body.contains("Authorization not granted"));
    assert!(
        page.body.contains("/_wxauth/login?return=%2Fwanted"),
        "retry link: {}",
        page.body
    );
    assert!(browser.cookie(SESSION).is_none());
    assert!(browser.cookie(FLOW).is_none());
    assert_eq!(h.sim.calls(Endpoint::ComponentCodeExchange), 0);
    h.stop().await;
}

#[tokio::test]
async fn snapshot_users_get_no_session() {
    let h = Harness::start().await;
    h.sim.set_next_user(SimUser::snapshot_user());
    let browser = h.browser();
    let pages = browser.follow(h.url("/x").as_str(), 5).await;
    let page = pages.last().expect("page");
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("使用完整服务"), "{}", page.body);
    assert!(browser.cookie(SESSION).is_none());
    assert_eq!(h.sim.calls(Endpoint::UserInfo), 0);
    h.stop().await;
}

#[tokio::test]
async fn open_redirect_attempts_end_on_the_root() {
    let h = Harness::start().await;
    for evil in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%0d%0aLocation:%20https://evil.example",
        "/%09/evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "javascript:alert(1)",
    ] {
        let browser = h.browser();
        let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let pages = browser
            .login(h.url(&format!("/_wxauth/login?return={encoded}")).as_str())
            .await;
        assert_eq!(pages[2].location(), "/", "return={evil}");
        // Also the raw (unencoded) form, as far as it is a valid request target.
        let browser = h.browser();
        let raw = format!("{}_wxauth/login?return={evil}", h.base);
        if let Ok(url) = raw.parse::<url::Url>() {
            let pages = browser.login(url.as_str()).await;
            assert_eq!(pages[2].location(), "/", "raw return={evil}");
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn tampered_and_truncated_cookies_mean_no_session() {
    let h = Harness::start().await;
    let browser = h.browser();
    browser.login(h.url("/").as_str()).await;
    let good = browser.cookie(SESSION).expect("session");
    let mut flipped = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(flipped).expect("ascii"),
        good[..good.len() - 4].to_owned(),
        good[..10].to_owned(),
        String::new(),
        "garbage".to_owned(),
    ] {
        let b = h.browser();
        b.set_cookie(SESSION, &bad);
        let api = b
            .get_with(h.url("/api/me").as_str(), &[("accept", "application/json")])
            .await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "cookie {bad:?}");
        let nav = b.get(h.url("/page").as_str()).await;
        assert_eq!(
            nav.status,
            StatusCode::FOUND,
            "a bad cookie is no session, not an error page"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn api_clients_get_401_json_with_a_login_url() {
    let h = Harness::start().await;
    let mut client = h.browser();
    client.html = false;
    for (method, path, headers) in [
        (Method::GET, "/api/items", vec![]),
        (Method::GET, "/page", vec![("accept", "application/json")]),
        (
            Method::GET,
            "/page",
            vec![
                ("accept", common::BROWSER_ACCEPT),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
        (
            Method::POST,
            "/form",
            vec![("accept", common::BROWSER_ACCEPT)],
        ),
        (Method::GET, "/page", vec![("accept", "*/*")]),
    ] {
        let page = client
            .request(
                method.clone(),
                h.url(path).as_str(),
                &headers,
                Some(b"payload".to_vec()),
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} {headers:?}"
        );
        let json = page.json();
        assert_eq!(json["error"], "unauthenticated");
        let login_url = json["login_url"].as_str().expect("login_url");
        assert!(
            login_url.starts_with("/_wxauth/login?"),
            "same-origin path: {login_url}"
        );
        let login = h.base.join(login_url).expect("resolves");
        assert_eq!(login.path(), "/_wxauth/login");
        assert_eq!(
            login
                .query_pairs()
                .find(|(k, _)| k == "return")
                .expect("return")
                .1,
            path
        );
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    h.stop().await;
}

#[tokio::test]
async fn logout_kills_the_server_side_session() {
    let h = Harness::start().await;
    let browser = h.browser();
    browser.login(h.url("/").as_str()).await;
    let stolen = browser.clone_jar();
    assert!(stolen.get(h.url("/x").as_str()).await.reached_inner());
    let out = browser
        .get(h.url("/_wxauth/logout?return=/bye").as_str())
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert_eq!(out.location(), "/bye");
    assert!(browser.cookie(SESSION).is_none(), "cookie cleared");
    // The copied cookie no longer works either.
    let page = stolen.get(h.url("/x").as_str()).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert!(!page.reached_inner());
    // Open redirect on logout is refused too.
    let out = stolen
        .get(h.url("/_wxauth/logout?return=//evil.example").as_str())
        .await;
    assert_eq!(out.location(), "/");
    h.stop().await;
}

#[tokio::test]
async fn a_new_login_gets_a_fresh_session_id_and_ends_the_old_one() {
    let h = Harness::start().await;
    let browser = h.browser();
    browser.login(h.url("/").as_str()).await;
    let old = browser.clone_jar();
    let first = browser.cookie(SESSION).expect("session");
    browser
        .login(h.url("/_wxauth/login?return=/again").as_str())
        .await;
    let second = browser.cookie(SESSION).expect("session");
    assert_ne!(first, second);
    let page = old.get(h.url("/x").as_str()).await;
    assert!(!page.reached_inner(), "the previous session was deleted");
    assert!(browser.get(h.url("/x").as_str()).await.reached_inner());
    h.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_logins_make_hundred_sessions_and_one_token_fetch() {
    let h = Harness::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let browser = h.browser();
        let url = h.url(&format!("/n/{i}"));
        tasks.spawn(async move {
            let pages = browser.login(url.as_str()).await;
            assert!(pages[3].reached_inner());
            browser.cookie(SESSION).expect("session")
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(id) = within(tasks.join_next()).await {
        ids.insert(id.expect("task"));
    }
    assert_eq!(ids.len(), 100);
    assert_eq!(h.sim.issued_component_tokens(), 1, "single flight");
    h.stop().await;
}

#[tokio::test]
async fn invalidated_component_token_mid_way_still_logs_in() {
    let h = Harness::start().await;
    h.browser().login(h.url("/").as_str()).await;
    assert_eq!(h.sim.issued_component_tokens(), 1);
    h.sim.invalidate_component_token();
    let browser = h.browser();
    let pages = browser.login(h.url("/after").as_str()).await;
    assert!(pages[3].reached_inner());
    assert_eq!(h.sim.issued_component_tokens(), 2);
    h.stop().await;
}

#[tokio::test]
async fn hanging_wechat_fails_the_login_clearly_while_sessions_keep_working() {
    let h = Harness::with(Options {
        request_timeout: Duration::from_millis(800),
        ..Options::default()
    })
    .await;
    let existing = h.browser();
    existing.login(h.url("/").as_str()).await;

    h.sim
        .inject(Endpoint::ComponentCodeExchange, Failure::Hang, 1);
    let newcomer = h.browser();
    let first = newcomer.get(h.url("/slow").as_str()).await;
    let to_callback = newcomer.get(first.location()).await;
    let callback = to_callback.location().to_owned();
    let (failed, during) = tokio::join!(newcomer.get(&callback), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        existing.get(h.url("/during").as_str()).await
    });
    assert!(
        during.reached_inner(),
        "an existing session is unaffected by a WeChat outage"
    );
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        failed.body.contains("微信响应超时") && failed.body.contains("WeChat timed out"),
        "{}",
        failed.body
    );
    assert!(
        failed.body.contains("/_wxauth/login?return=%2Fslow"),
        "retry link"
    );
    assert!(newcomer.cookie(SESSION).is_none());
    h.stop().await;
}

#[tokio::test]
async fn a_pushed_ticket_makes_ready_go_green() {
    let h = Harness::with(Options {
        push_ticket: false,
        background: true,
        ..Options::default()
    })
    .await;
    let client = Browser::new(h.addr);
    let before = client.get(h.url("/_wxauth/ready").as_str()).await;
    assert_eq!(before.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(before.json()["ready"], false);
    assert!(before.body.contains("ticket"), "{}", before.body);
    // Without a ticket, a login fails with "platform not ready".
    let browser = h.browser();
    let pages = browser.follow(h.url("/x").as_str(), 3).await;
    let page = pages.last().expect("page");
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("平台未就绪"), "{}", page.body);

    h.push_ticket().await;
    let mut ready = None;
    for _ in 0..100 {
        let page = client.get(h.url("/_wxauth/ready").as_str()).await;
        if page.status == StatusCode::OK {
            ready = Some(page);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = ready.expect("ready after the ticket push");
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(
        client.get(h.url("/_wxauth/health").as_str()).await.body,
        "ok"
    );
    h.stop().await;
}

#[tokio::test]
async fn forged_pushes_are_refused_and_store_nothing() {
    let h = Harness::with(Options {
        push_ticket: false,
        ..Options::default()
    })
    .await;
    let client = Browser::new(h.addr);
    let events = h.layer.events_url();
    let forged = format!("{events}?timestamp=1&nonce=2&msg_signature=deadbeef&encrypt_type=aes");
    let body = b"<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId><Encrypt><![CDATA[AAAA]]></Encrypt></xml>".to_vec();
    let page = client.request(Method::POST, &forged, &[], Some(body)).await;
    assert!(
        page.status == StatusCode::FORBIDDEN || page.status == StatusCode::BAD_REQUEST,
        "{}",
        page.status
    );
    assert_ne!(page.body, "success");
    let huge = vec![b'x'; 200 * 1024];
    let page = client.request(Method::POST, &forged, &[], Some(huge)).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    let page = client.get(&events).await;
    assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED);
    let ready = client.get(h.url("/_wxauth/ready").as_str()).await;
    assert!(
        ready.body.contains("ticket"),
        "nothing stored: {}",
        ready.body
    );
    h.stop().await;
}
