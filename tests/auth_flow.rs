//! The auth layer end to end over real loopback sockets: the simulated WeChat, the layer around
//! an echo service served by `server::serve`, and a browser that steps through every redirect.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth_support;

use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use wechat_oauth_proxy::sim::SimUser;

use auth_support::{Browser, Echoed, World, bounded, is_identity_header, jwt_of, sets_session};

fn alice() -> SimUser {
    SimUser::defaults()
        .into_iter()
        .find(|u| u.nickname == "Alice 🌸")
        .expect("Alice is a default sim user")
}

/// Verifies `token` with the key from the proxy's JWKS document, the way an upstream would:
/// algorithm pinned, exact issuer and audience.
async fn verify_with_jwks(world: &World, token: &str) -> serde_json::Value {
    let reply = world.browser().get(world.url("/_wxauth/jwks.json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let set: JwkSet = serde_json::from_str(&reply.body).expect("JWKS document");
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    let jwk = set.find(&kid).expect("the JWT's kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("usable JWK");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["wechat-oauth-proxy"]);
    validation.set_audience(&["upstream"]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("the JWT verifies with the published key")
        .claims
}

/// Logs `browser` in as the sim's next user, starting at `path`; returns the final reply.
async fn login(world: &World, browser: &mut Browser, path: &str) -> auth_support::Reply {
    let authorize = browser.start_login(world.url(path)).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(sets_session(&reply), "{:?}", reply.set_cookies());
    let target = reply.location().expect("back to the page");
    browser.get(target).await
}

#[tokio::test]
async fn whole_browser_flow_delivers_a_verifiable_jwt_with_the_exact_nickname() {
    let world = World::start().await;
    world.sim.set_next_user(alice());
    let mut browser = world.browser();

    // 1. A protected page without a session: 302 to WeChat, nothing reaches the inner service.
    let first = browser.get(world.url("/private/page?x=1")).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let authorize = first.location().expect("location");
    assert_eq!(authorize.origin(), world.sim.base_url().origin());
    assert_eq!(authorize.path(), "/connect/oauth2/authorize");
    assert!(!browser.jar.is_empty(), "a flow cookie binds the state");
    assert_eq!(world.echo.calls(), 0);

    // 2. WeChat's authorize page sends the browser to the callback with code, state and appid.
    let callback = browser.authorize(authorize).await;
    assert_eq!(callback.origin(), world.base.origin());
    assert_eq!(callback.path(), "/_wxauth/callback");
    let params: Vec<String> = callback
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    assert!(params.contains(&"code".to_owned()) && params.contains(&"state".to_owned()));

    // 3. The callback sets the session cookie and returns to the original page.
    let back = browser.get(callback).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    assert!(sets_session(&back));
    assert_eq!(back.raw_location().as_deref(), Some("/private/page?x=1"));
    let session_cookies: Vec<&String> = browser
        .jar
        .keys()
        .filter(|k| k.ends_with("wxauth_session"))
        .collect();
    assert_eq!(session_cookies.len(), 1);

    // 4. The inner service sees the JWT and the Identity; the session cookie is not forwarded.
    let page = browser.get(back.location().expect("location")).await;
    assert_eq!(page.status, StatusCode::OK);
    let echoed = page.echoed().expect("inner service answered");
    assert_eq!(echoed.path(), "/private/page");
    let claims = verify_with_jwks(&world, &jwt_of(&echoed)).await;
    assert_eq!(claims["nickname"], "Alice 🌸");
    assert_eq!(claims["sub"], alice().openid);
    assert_eq!(claims["openid"], alice().openid);
    assert_eq!(claims["unionid"], alice().unionid.unwrap());
    assert_eq!(
        claims["appid"],
        world.sim.config().authorizer_appid.as_str()
    );
    assert_eq!(claims["scope"], "snsapi_userinfo");
    let identity = echoed.identity().expect("Identity in the extensions");
    assert_eq!(identity.nickname, "Alice 🌸");
    assert_eq!(identity.openid, alice().openid);
    let forwarded_cookies = echoed.header_values("cookie").join("; ");
    assert!(
        !forwarded_cookies.contains("wxauth_"),
        "own cookies are stripped: {forwarded_cookies}"
    );
    // Plain headers are off by default.
    assert!(echoed.header("x-wechat-nickname").is_none());

    // whoami agrees.
    let whoami = browser.get(world.url("/_wxauth/whoami")).await;
    assert_eq!(whoami.status, StatusCode::OK);
    assert_eq!(whoami.json()["nickname"], "Alice 🌸");
}

#[tokio::test]
async fn plain_headers_carry_percent_encoded_utf8_when_enabled() {
    let world = World::start_with(auth_support::WorldOptions {
        plain_headers: true,
        ..Default::default()
    })
    .await;
    let lisi = SimUser::defaults()
        .into_iter()
        .find(|u| u.nickname == "李四😀")
        .expect("李四");
    world.sim.set_next_user(lisi.clone());
    let mut browser = world.browser();
    let page = login(&world, &mut browser, "/p").await;
    let echoed = page.echoed().expect("echo");
    let nick = echoed.header("x-wechat-nickname").expect("nickname header");
    assert_eq!(nick, "%E6%9D%8E%E5%9B%9B%F0%9F%98%80");
    let decoded = percent_encoding::percent_decode_str(&nick)
        .decode_utf8()
        .expect("utf8");
    assert_eq!(decoded, "李四😀");
    assert_eq!(
        echoed.header("x-wechat-openid").as_deref(),
        Some(lisi.openid.as_str())
    );
    assert!(echoed.header("x-wechat-unionid").is_none(), "李四 has none");
    assert_eq!(
        echoed.header("x-wechat-appid").as_deref(),
        Some(world.sim.config().authorizer_appid.as_str())
    );
    assert!(echoed.header("x-wechat-jwt").is_some());
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_inner_service() {
    let world = World::start_with(auth_support::WorldOptions {
        plain_headers: true,
        ..Default::default()
    })
    .await;
    let forged: &[(&str, &str)] = &[
        ("X-WeChat-OpenID", "forged-openid"),
        ("x_wechat_openid", "forged-openid-underscore"),
        ("X_WECHAT_JWT", "forged.jwt.value"),
        ("X-WeChat-Jwt", "forged.jwt.other"),
        ("x-wechat_nickname", "forged-nick"),
        ("X_WeChat_UnionID", "forged-unionid"),
        ("X-WeChat-Avatar", "forged-avatar"),
        ("x_wechat_appid", "forged-appid"),
    ];
    let assert_clean = |echoed: &Echoed, with_session: bool| {
        for name in echoed.header_names() {
            if !is_identity_header(&name) {
                continue;
            }
            assert!(
                with_session && !name.contains('_'),
                "client header {name} reached the inner service"
            );
            for value in echoed.header_values(&name) {
                assert!(!value.contains("forged"), "{name}: {value}");
            }
        }
    };

    // Without a session, on a skipped path (the only way to reach the inner service).
    let mut anon = world.browser();
    let reply = anon
        .send(Method::GET, world.url("/public/x"), forged, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let echoed = reply.echoed().expect("echo");
    assert_clean(&echoed, false);
    assert!(
        echoed.header_names().iter().all(|n| !is_identity_header(n)),
        "{:?}",
        echoed.header_names()
    );

    // Without a session on a protected path: no inner call at all.
    let calls = world.echo.calls();
    let reply = anon
        .send(Method::GET, world.url("/private"), forged, None)
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(world.echo.calls(), calls);

    // With a session: the inner service sees exactly the proxy's values.
    let mut browser = world.browser();
    login(&world, &mut browser, "/p").await;
    let reply = browser
        .send(Method::GET, world.url("/private"), forged, None)
        .await;
    let echoed = reply.echoed().expect("echo");
    assert_clean(&echoed, true);
    assert_eq!(echoed.header_values("x-wechat-jwt").len(), 1);
    assert_eq!(echoed.header_values("x-wechat-openid").len(), 1);
    assert_eq!(
        echoed.header("x-wechat-openid").as_deref(),
        Some(SimUser::defaults()[0].openid.as_str())
    );
    verify_with_jwks(&world, &jwt_of(&echoed)).await;
}

#[tokio::test]
async fn api_clients_get_401_json_with_a_login_url() {
    let world = World::start().await;
    let mut api = world.browser();
    api.accept = "application/json".to_owned();
    for (method, path, extra) in [
        (Method::GET, "/private/data", &[][..]),
        (Method::GET, "/api/things", &[][..]),
        (
            Method::GET,
            "/private",
            &[("X-Requested-With", "XMLHttpRequest")][..],
        ),
        (Method::POST, "/private/form", &[][..]),
    ] {
        let reply = api
            .send(
                method.clone(),
                world.url(path),
                extra,
                Some(b"a=1".to_vec()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(reply.content_type().starts_with("application/json"));
        let json = reply.json();
        assert_eq!(json["error"], "unauthenticated");
        let login_url = json["login_url"].as_str().expect("login_url");
        assert!(
            login_url.starts_with("/_wxauth/login?return="),
            "{login_url}"
        );
    }
    // Even a browser's POST is never redirected (its body would be lost).
    let mut browser = world.browser();
    let reply = browser
        .send(
            Method::POST,
            world.url("/private/form"),
            &[],
            Some(b"a=1".to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.json()["login_url"].is_string());
    assert_eq!(world.echo.calls(), 0);
}

#[tokio::test]
async fn ticket_push_makes_ready_and_forged_pushes_are_refused() {
    let world = World::start_with(auth_support::WorldOptions {
        ready: false,
        ..Default::default()
    })
    .await;
    let (status, body) = world.ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);

    // A login before the platform has its ticket: a clear page, no session.
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("平台未就绪"), "{}", reply.body);
    assert!(!sets_session(&reply));

    // A forged push (wrong message token and key): 403, nothing stored.
    let (query, body) = forged_push(&world);
    let reply = world
        .browser()
        .send(
            Method::POST,
            world.url(&format!("/_wxauth/events?{query}")),
            &[],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_ne!(reply.body, "success");
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);

    // An oversized push: 413.
    let huge = vec![b'x'; wechat_oauth_proxy::wechat::events::MAX_PUSH_BODY + 1];
    let reply = world
        .browser()
        .send(
            Method::POST,
            world.url("/_wxauth/events?timestamp=1&nonce=2&msg_signature=3"),
            &[],
            Some(huge),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);

    // The genuine push: ready.
    world.push_ticket().await;
    world.wait_ready().await;
    let (_, body) = world.ready().await;
    assert_eq!(body["ready"], true);
}

/// A push sealed with a key and token that are not the platform's.
fn forged_push(world: &World) -> (String, String) {
    use wechat_oauth_proxy::wechat::{crypto::MsgCrypt, events, token::now_unix};
    let config = world.sim.config();
    let crypt = MsgCrypt::new(
        &wechat_oauth_proxy::secret::SecretString::new("attacker_token"),
        &wechat_oauth_proxy::secret::SecretString::new(
            "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut",
        ),
        config.component_appid.clone(),
    )
    .expect("crypt");
    let xml = events::ticket_event_xml(
        &config.component_appid,
        now_unix(),
        &wechat_oauth_proxy::wechat::VerifyTicket::new(
            "ticket@@@forgedforgedforgedforgedforgedforgedforgedforgedforgedforgedforgedforgedforged",
        ),
    );
    events::seal_push(&crypt, &xml, &now_unix().to_string(), "forgednonce")
}

/// `url` with query parameter `name` replaced by `value` (`None` removes it).
fn with_param(url: &url::Url, name: &str, value: Option<&str>) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    let mut out = url.clone();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(value) = value {
            q.append_pair(name, value);
        }
    }
    out
}

fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} in {url}"))
}

async fn session_count(world: &World) -> u64 {
    bounded(world.sessions.run_pending_tasks()).await;
    world.sessions.session_count()
}

#[tokio::test]
async fn tampered_state_is_refused_and_the_genuine_callback_still_works() {
    let world = World::start().await;
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let state = param(&callback, "state");
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        with_param(&callback, "state", Some(&tampered)),
        with_param(&callback, "state", None),
        with_param(&callback, "state", Some("")),
        with_param(&callback, "state", Some(&"A".repeat(5000))),
    ] {
        let reply = browser.get(bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert!(reply.content_type().starts_with("text/html"));
        assert!(reply.body.contains("登录链接已失效"), "{}", reply.body);
        assert!(!sets_session(&reply));
        assert!(
            !reply.body.contains(&param(&callback, "code")),
            "no code on the page"
        );
    }
    assert_eq!(session_count(&world).await, 0);
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(sets_session(&reply));
}

#[tokio::test]
async fn a_state_from_another_browser_is_refused() {
    let world = World::start().await;
    let mut victim = world.browser();
    let authorize = victim.start_login(world.url("/p")).await;
    let victims_callback = victim.authorize(authorize).await;

    // The attacker has a flow cookie of its own, but not the one bound to the victim's state.
    let mut attacker = victim.fresh();
    let own = attacker.start_login(world.url("/p")).await;
    let _ = own;
    let reply = attacker.get(victims_callback.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!sets_session(&reply));
    assert!(attacker.session_cookie().is_none());

    // Without any flow cookie.
    let mut bare = victim.fresh();
    let reply = bare.get(victims_callback.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(!sets_session(&reply));
    assert_eq!(session_count(&world).await, 0);

    // Neither attempt consumed the victim's login.
    let reply = victim.get(victims_callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(sets_session(&reply));
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn a_callback_with_another_appid_is_refused() {
    let world = World::start().await;
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser
        .get(with_param(&callback, "appid", Some("wxffffffffffffffff")))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!sets_session(&reply));
    assert_eq!(session_count(&world).await, 0);
}

#[tokio::test]
async fn a_replayed_callback_creates_no_second_session() {
    let world = World::start().await;
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let first = browser.get(callback.clone()).await;
    assert!(sets_session(&first));
    let cookie = browser.session_cookie().unwrap();
    assert_eq!(session_count(&world).await, 1);

    // The same browser reloads the callback; another browser replays the URL.
    let again = browser.get(callback.clone()).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    assert!(!sets_session(&again));
    assert_eq!(browser.session_cookie().unwrap(), cookie);
    let mut other = browser.fresh();
    let replay = other.get(callback).await;
    assert!(!sets_session(&replay));
    assert!(other.session_cookie().is_none());
    assert_eq!(session_count(&world).await, 1);
    assert_eq!(
        world
            .sim
            .calls(wechat_oauth_proxy::sim::Endpoint::ComponentCodeExchange),
        1,
        "the code was exchanged once"
    );
}

#[tokio::test]
async fn concurrent_duplicate_callbacks_create_one_session() {
    let world = World::start().await;
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let mut a = browser.clone();
    let mut b = browser.clone();
    let (ra, rb) = tokio::join!(a.get(callback.clone()), b.get(callback));
    let made = [&ra, &rb].iter().filter(|r| sets_session(r)).count();
    assert_eq!(made, 1, "{} / {}", ra.body, rb.body);
    assert!(ra.status == StatusCode::FOUND && rb.status == StatusCode::FOUND);
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn a_replayed_code_with_a_fresh_state_is_rejected() {
    let world = World::start().await;
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let code = param(&callback, "code");
    assert!(sets_session(&browser.get(callback).await));

    // Logged in already: a second login is started explicitly.
    let authorize = browser
        .start_login(world.url("/_wxauth/login?return=/q"))
        .await;
    let fresh = browser.authorize(authorize).await;
    let replay = with_param(&fresh, "code", Some(&code));
    let reply = browser.get(replay).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("授权已失效"), "{}", reply.body);
    assert!(!sets_session(&reply));
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn refusal_shows_a_clear_page_with_a_retry_link_that_works() {
    let world = World::start().await;
    world.sim.refuse_next();
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/deep/page?x=1")).await;
    let callback = browser.authorize(authorize).await;
    assert!(callback.query_pairs().all(|(k, _)| k != "code"));
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.content_type().starts_with("text/html"));
    assert!(reply.body.contains("未完成授权"));
    assert!(reply.body.contains("Authorization not granted"));
    assert!(!sets_session(&reply));
    assert!(
        reply.headers.get(http::header::LOCATION).is_none(),
        "no loop"
    );
    let href = reply
        .body
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("retry link")
        .replace("&amp;", "&");
    assert_eq!(
        href, "/_wxauth/login?return=%2Fdeep%2Fpage%3Fx%3D1",
        "the retry link returns to the page the user wanted"
    );

    // Clicking the link starts a new login that succeeds and lands on that page.
    let authorize = browser.start_login(world.url(&href)).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert!(sets_session(&reply));
    assert_eq!(reply.raw_location().as_deref(), Some("/deep/page?x=1"));
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn a_snapshot_user_gets_no_session() {
    let world = World::start().await;
    world.sim.set_next_user(SimUser::snapshot_user());
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.body.contains("使用完整服务"), "{}", reply.body);
    assert!(
        reply.body.contains("href=\"/_wxauth/login?return=%2Fp\""),
        "{}",
        reply.body
    );
    assert!(!sets_session(&reply));
    assert!(browser.session_cookie().is_none());
    assert_eq!(session_count(&world).await, 0);
    assert_eq!(
        world.sim.calls(wechat_oauth_proxy::sim::Endpoint::UserInfo),
        0,
        "no profile fetch for a virtual user"
    );
}

#[tokio::test]
async fn open_redirect_attempts_on_login_return_all_end_on_root() {
    let world = World::start().await;
    let attempts = [
        "//evil.example",
        "//evil.example/path",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "/%5Cevil.example",
        "https://evil.example",
        "https:%2F%2Fevil.example",
        "http%3A%2F%2Fevil.example",
        "javascript:alert(1)",
        "/%0d%0aSet-Cookie:%20x=y",
        "/x%0d%0aLocation:%20https://evil.example",
        "/%250d%250a",
        "/%09/evil.example",
        "/%20/evil.example",
        "%09//evil.example",
        "/%252F%252Fevil.example",
        "///evil.example",
        "/.//evil.example",
        "/..//evil.example",
        "evil.example",
    ];
    let mut browser = world.browser();
    for attempt in attempts {
        let url = world.url(&format!("/_wxauth/login?return={attempt}"));
        let authorize = browser.start_login(url).await;
        let callback = browser.authorize(authorize).await;
        let reply = browser.get(callback).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{attempt}: {}", reply.body);
        assert_eq!(reply.raw_location().as_deref(), Some("/"), "{attempt}");
    }
    // A legitimate deep link survives exactly.
    let url = world.url("/_wxauth/login?return=%2Fdeep%2Fpath%3Fq%3D%25E4%25B8%25AD%26a%3D1");
    let authorize = browser.start_login(url).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(
        reply.raw_location().as_deref(),
        Some("/deep/path?q=%E4%B8%AD&a=1")
    );
}

#[tokio::test]
async fn tampered_and_truncated_session_cookies_are_no_session() {
    let world = World::start().await;
    let mut browser = world.browser();
    login(&world, &mut browser, "/p").await;
    let cookie = browser.session_cookie().unwrap();
    let (name, value) = cookie.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'x' { b'y' } else { b'x' };
    let flipped = String::from_utf8(flipped).unwrap();
    for forged in [
        format!("{name}={flipped}"),
        format!("{name}={}", &value[..value.len() / 2]),
        format!("{name}={}", &value[..value.len() - 1]),
        format!("{name}={value}{value}"),
    ] {
        let mut other = browser.fresh();
        other.jar.insert(
            forged.split_once('=').unwrap().0.to_owned(),
            forged.split_once('=').unwrap().1.to_owned(),
        );
        let reply = other.get(world.url("/private")).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{forged}");
        assert!(reply.location().unwrap().path().ends_with("/authorize"));
        let who = other.get(world.url("/_wxauth/whoami")).await;
        assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    }
    // The genuine one still works.
    let reply = browser.get(world.url("/private")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_then_the_old_cookie_no_longer_works() {
    let world = World::start().await;
    let mut browser = world.browser();
    login(&world, &mut browser, "/p").await;
    let old = browser.session_cookie().unwrap();
    let reply = browser.get(world.url("/_wxauth/logout")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.raw_location().as_deref(), Some("/"));
    assert!(browser.session_cookie().is_none(), "the cookie was cleared");

    // Somebody who kept a copy of the cookie.
    let mut thief = browser.fresh();
    let (name, value) = old.split_once('=').unwrap();
    thief.jar.insert(name.to_owned(), value.to_owned());
    let reply = thief.get(world.url("/private")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let who = thief.get(world.url("/_wxauth/whoami")).await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    assert_eq!(session_count(&world).await, 0);
}

#[tokio::test]
async fn a_hundred_concurrent_logins_make_a_hundred_sessions_and_one_token_fetch() {
    use wechat_oauth_proxy::sim::Endpoint;
    let world = World::start().await;
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 1);
    let template = world.browser();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mut browser = template.fresh();
        let start = world.url(&format!("/page/{i}"));
        tasks.spawn(async move {
            let authorize = browser.start_login(start).await;
            let callback = browser.authorize(authorize).await;
            let reply = browser.get(callback).await;
            assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
            assert_eq!(reply.raw_location(), Some(format!("/page/{i}")));
            browser.session_cookie().expect("session cookie")
        });
    }
    let mut ids = std::collections::HashSet::new();
    let codec = auth_support::cookie_codec();
    while let Some(cookie) = bounded(tasks.join_next()).await {
        let cookie = cookie.expect("login task");
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        let id = codec.read_session(&headers).expect("decrypts");
        ids.insert(id.expose_secret());
    }
    assert_eq!(ids.len(), 100, "100 distinct session ids");
    assert_eq!(session_count(&world).await, 100);
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 1);
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 100);
}

#[tokio::test]
async fn an_invalidated_component_token_does_not_break_logins() {
    use wechat_oauth_proxy::sim::Endpoint;
    let world = World::start().await;
    let mut first = world.browser();
    login(&world, &mut first, "/p").await;
    world.sim.invalidate_component_token();
    let mut second = first.fresh();
    let page = login(&world, &mut second, "/q").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.echoed().unwrap().identity().is_some());
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 2, "one re-fetch");
    // The first session is unaffected.
    assert_eq!(first.get(world.url("/p")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn wechat_hanging_fails_the_login_clearly_while_sessions_keep_working() {
    use wechat_oauth_proxy::sim::{Endpoint, Failure};
    let world = World::start_with(auth_support::WorldOptions {
        request_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut existing = world.browser();
    login(&world, &mut existing, "/p").await;

    world
        .sim
        .inject(Endpoint::ComponentCodeExchange, Failure::Hang, 1);
    let mut newcomer = existing.fresh();
    let authorize = newcomer.start_login(world.url("/q")).await;
    let callback = newcomer.authorize(authorize).await;
    let hanging = tokio::spawn(async move { newcomer.get(callback).await });
    // Wait (bounded) until the exchange is hanging at WeChat …
    for _ in 0..400 {
        if world.sim.calls(Endpoint::ComponentCodeExchange) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 2);
    // … and meanwhile the existing session is served.
    let page = existing.get(world.url("/p")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.echoed().unwrap().identity().is_some());

    let reply = bounded(hanging).await.unwrap();
    assert!(
        reply.status == StatusCode::SERVICE_UNAVAILABLE || reply.status == StatusCode::BAD_GATEWAY,
        "{} {}",
        reply.status,
        reply.body
    );
    assert!(reply.content_type().starts_with("text/html"));
    assert!(reply.body.contains("微信响应超时"), "{}", reply.body);
    assert!(reply.body.contains("/_wxauth/login"), "a retry link");
    assert!(!sets_session(&reply));
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn a_bare_replay_of_the_callback_does_not_burn_the_victims_login() {
    // Someone who only learned the victim's callback URL (Referer, logs, shoulder) and has no
    // flow cookie at all must not be able to consume the victim's pending login.
    let world = World::start().await;
    let mut victim = world.browser();
    let authorize = victim.start_login(world.url("/p")).await;
    let callback = victim.authorize(authorize).await;
    let mut bare = victim.fresh();
    let reply = bare.get(callback.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!sets_session(&reply));

    let reply = victim.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(sets_session(&reply));
    assert_eq!(reply.raw_location().as_deref(), Some("/p"));
    assert_eq!(session_count(&world).await, 1);
}

#[tokio::test]
async fn cookies_have_safe_attributes_and_pending_flows_are_capped() {
    let world = World::start().await;
    let mut browser = world.browser();
    // Five logins started in a row (tabs, back button): the flow cookie does not grow.
    let mut callbacks = Vec::new();
    let mut flow_cookie_len = Vec::new();
    for i in 0..5 {
        let reply = browser.get(world.url(&format!("/tab/{i}"))).await;
        assert_eq!(reply.status, StatusCode::FOUND);
        let set = reply.set_cookies();
        assert_eq!(set.len(), 1);
        let flow = cookie::Cookie::parse(set[0].clone()).unwrap();
        assert!(flow.name().ends_with("wxauth_flow"));
        assert_eq!(flow.http_only(), Some(true));
        assert_eq!(flow.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(flow.path(), Some("/"));
        flow_cookie_len.push(flow.value().len());
        let authorize = reply.location().unwrap();
        callbacks.push(browser.authorize(authorize).await);
    }
    assert_eq!(
        flow_cookie_len[3], flow_cookie_len[4],
        "capped: {flow_cookie_len:?}"
    );
    assert_eq!(browser.jar.len(), 1);

    // The oldest pending flow was dropped from the cookie: its callback is refused …
    let reply = browser.get(callbacks[0].clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // … the newest one completes, with a session cookie that has safe attributes.
    let reply = browser.get(callbacks[4].clone()).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert_eq!(reply.raw_location().as_deref(), Some("/tab/4"));
    assert_eq!(reply.headers[http::header::CACHE_CONTROL], "no-store");
    let session = reply
        .set_cookies()
        .into_iter()
        .map(|c| cookie::Cookie::parse(c).unwrap())
        .find(|c| c.name().ends_with("wxauth_session"))
        .expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));
    assert!(session.value().len() >= 40, "encrypted, not a bare id");
}

#[tokio::test]
async fn every_login_gets_a_fresh_session_id_and_ends_the_old_session() {
    let world = World::start().await;
    let mut browser = world.browser();
    login(&world, &mut browser, "/p").await;
    let first = browser.session_cookie().unwrap();
    let authorize = browser
        .start_login(world.url("/_wxauth/login?return=/again"))
        .await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert!(sets_session(&reply));
    let second = browser.session_cookie().unwrap();
    let codec = auth_support::cookie_codec();
    let id = |cookie: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        codec.read_session(&headers).unwrap().expose_secret()
    };
    assert_ne!(id(&first), id(&second));
    assert_eq!(session_count(&world).await, 1, "the old session was ended");
    let mut old = browser.fresh();
    let (name, value) = first.split_once('=').unwrap();
    old.jar.insert(name.to_owned(), value.to_owned());
    assert_eq!(
        old.get(world.url("/_wxauth/whoami")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_genuinely_signed_push_for_another_platform_is_refused() {
    use wechat_oauth_proxy::wechat::{ComponentAppId, crypto::MsgCrypt, events, token::now_unix};
    let world = World::start_with(auth_support::WorldOptions {
        ready: false,
        ..Default::default()
    })
    .await;
    let config = world.sim.config();
    // Right token and key, but sealed for another component appid.
    let other = ComponentAppId::new("wxffffffffffffffff");
    let crypt = MsgCrypt::new(
        &config.message_token,
        &config.encoding_aes_key,
        other.clone(),
    )
    .expect("crypt");
    let xml = events::ticket_event_xml(&other, now_unix(), &world.sim.current_ticket());
    let (query, body) = events::seal_push(&crypt, &xml, &now_unix().to_string(), "n0nce");
    let reply = world
        .browser()
        .send(
            Method::POST,
            world.url(&format!("/_wxauth/events?{query}")),
            &[],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);
    // A push without its signature parameters.
    let reply = world
        .browser()
        .send(
            Method::POST,
            world.url("/_wxauth/events"),
            &[],
            Some(b"<xml/>".to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn official_account_mode_logs_in_without_a_ticket() {
    use wechat_oauth_proxy::sim::Endpoint;
    let world = World::start_with(auth_support::WorldOptions {
        official_account: true,
        ..Default::default()
    })
    .await;
    let (status, body) = world.ready().await;
    assert_eq!(status, StatusCode::OK, "no ticket needed: {body}");
    world.sim.set_next_user(alice());
    let mut browser = world.browser();
    let authorize = browser.start_login(world.url("/oa")).await;
    assert!(
        authorize.query_pairs().all(|(k, _)| k != "component_appid"),
        "{authorize}"
    );
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    let page = browser.get(reply.location().unwrap()).await;
    let echoed = page.echoed().expect("echo");
    let claims = verify_with_jwks(&world, &jwt_of(&echoed)).await;
    assert_eq!(claims["nickname"], "Alice 🌸");
    assert_eq!(world.sim.calls(Endpoint::OaCodeExchange), 1);
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 0);

    // No pushes in this mode.
    let reply = world
        .browser()
        .send(
            Method::POST,
            world.url("/_wxauth/events?timestamp=1&nonce=2&msg_signature=3"),
            &[],
            Some(b"<xml/>".to_vec()),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
}
