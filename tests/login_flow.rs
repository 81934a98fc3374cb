//! The auth layer end to end over real loopback sockets: the simulated WeChat, the layer around
//! an echo service served by `server::serve`, and a browser that steps through every redirect.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::HashMap, time::Duration};

use http::{Method, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use url::Url;
use wechat_oauth_proxy::sim::{Endpoint, Failure, SimUser};

use support::{
    BROWSER_ACCEPT, Browser, Echoed, FLOW, Options, SESSION, World, bounded, is_identity_header,
    session_id_of,
};

fn alice() -> SimUser {
    SimUser::defaults()
        .into_iter()
        .find(|u| u.nickname == "Alice 🌸")
        .expect("Alice is a default sim user")
}

/// Verifies `token` with the key from the proxy's JWKS document, the way an upstream would:
/// algorithm pinned, exact issuer and audience (the library's defaults), required claims.
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

/// `url` with query parameter `name` replaced by `value` (`None` removes it).
fn with_param(url: &Url, name: &str, value: Option<&str>) -> Url {
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

fn param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} in {url}"))
}

/// A fresh browser (sharing `like`'s connection pool) holding only `name=value`.
fn holding(like: &Browser, name: &str, value: &str) -> Browser {
    let browser = like.fresh();
    browser.set_cookie(name, value);
    browser
}

// ---------------------------------------------------------------------------------------------
// The happy path and the identity contract
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn whole_browser_flow_delivers_a_verifiable_jwt_with_the_exact_nickname() {
    let world = World::start().await;
    let user = SimUser {
        nickname: "小明🐼✨ Ωmega".to_owned(),
        ..alice()
    };
    world.sim.set_next_user(user.clone());
    let browser = world.browser();
    let config = world.sim.config();

    // 1. A protected page without a session: 302 to WeChat with our callback and a fresh
    //    state, nothing reaches the inner service.
    let first = browser
        .get(world.url("/private/page?x=1&y=%E4%B8%AD"))
        .await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(first.headers[header::CACHE_CONTROL], "no-store");
    let authorize = first.location();
    assert_eq!(authorize.origin(), world.sim.base_url().origin());
    assert_eq!(authorize.path(), "/connect/oauth2/authorize");
    let q: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], world.url("/_wxauth/callback").as_str());
    assert_eq!(q["appid"], config.authorizer_appid.as_str());
    assert_eq!(q["scope"], "snsapi_userinfo");
    let state = &q["state"];
    assert!(
        state.len() >= 22 && state.len() <= 64 && state.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{state}"
    );
    assert!(
        browser.cookie(FLOW).is_some(),
        "a flow cookie binds the state"
    );
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

    // 3. The callback sets the session cookie and returns to the original page, exactly.
    let back = browser.get(&callback).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    assert!(back.sets_session());
    assert_eq!(back.raw_location(), Some("/private/page?x=1&y=%E4%B8%AD"));
    let set_cookie = back.set_cookies().join("\n");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let sessions = browser
        .cookie_names()
        .into_iter()
        .filter(|k| k.ends_with(SESSION))
        .count();
    assert_eq!(sessions, 1);
    assert!(
        browser.cookie(FLOW).is_none(),
        "flow cookie removed once no flow is pending"
    );

    // 4. The inner service sees the JWT and the Identity; the proxy's cookies are not forwarded.
    let page = browser.get(back.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    let echoed = page.echoed().expect("inner service answered");
    assert_eq!(echoed.path(), "/private/page");
    let claims = verify_with_jwks(&world, &echoed.jwt()).await;
    assert_eq!(
        claims["nickname"], user.nickname,
        "exact CJK/emoji nickname in the JWT"
    );
    assert_eq!(claims["sub"], user.openid);
    assert_eq!(claims["openid"], user.openid);
    assert_eq!(claims["unionid"], user.unionid.clone().unwrap());
    assert_eq!(claims["appid"], config.authorizer_appid.as_str());
    assert_eq!(claims["scope"], "snsapi_userinfo");
    let identity = echoed.identity().expect("Identity in the extensions");
    assert_eq!(identity.nickname, user.nickname);
    assert_eq!(identity.openid, user.openid.as_str());
    let forwarded_cookies = echoed.header_values("cookie").join("; ");
    assert!(
        !forwarded_cookies.contains("wxauth_"),
        "own cookies are stripped: {forwarded_cookies}"
    );
    // Plain headers are off by default: the JWT is the only identity header.
    for name in echoed.header_names() {
        assert!(
            name == "x-wechat-jwt" || !is_identity_header(&name),
            "{name}"
        );
    }

    // whoami agrees.
    let whoami = browser
        .get_with(
            world.url("/_wxauth/whoami"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(whoami.status, StatusCode::OK);
    assert_eq!(whoami.json()["nickname"], user.nickname);
}

#[tokio::test]
async fn plain_headers_carry_percent_encoded_utf8_when_enabled() {
    let world = World::start_with(Options {
        plain_headers: true,
        ..Options::default()
    })
    .await;
    let lisi = SimUser::defaults()
        .into_iter()
        .find(|u| u.nickname == "李四😀")
        .expect("李四");
    world.sim.set_next_user(lisi.clone());
    let browser = world.browser();
    let page = world.login(&browser, "/p").await;
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
    let world = World::start_with(Options {
        plain_headers: true,
        ..Options::default()
    })
    .await;
    // Every value contains "forged"; several names collide case-insensitively (sent twice).
    let forged: &[(&str, &str)] = &[
        ("X-WeChat-OpenID", "forged-openid"),
        ("X-WECHAT-OPENID", "forged-openid-upper"),
        ("x_wechat_openid", "forged-openid-underscore"),
        ("X_WECHAT_JWT", "forged.jwt.value"),
        ("X-WeChat-Jwt", "forged.jwt.other"),
        ("x-wechat_jwt", "forged.jwt.mixed"),
        ("x-wechat_nickname", "forged-nick"),
        ("X_WECHAT_NICKNAME", "forged"),
        ("X_WeChat_UnionID", "forged-unionid"),
        ("x-wechat-unionid", "forged-u"),
        ("X-WeChat-Avatar", "https://forged.example/a.png"),
        ("x_wechat_appid", "forged-appid"),
        ("X-WeChat_AppID", "wxforged"),
    ];
    let assert_clean = |echoed: &Echoed, with_session: bool| {
        assert!(
            !echoed.headers_text().contains("forged"),
            "{}",
            echoed.headers_text()
        );
        for name in echoed.header_names() {
            if is_identity_header(&name) {
                assert!(
                    with_session && !name.contains('_'),
                    "client header {name} reached the inner service"
                );
            }
        }
    };

    // Without a session, on a skipped path (the only way to reach the inner service).
    let anon = world.browser();
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
    assert!(echoed.identity().is_none());

    // Without a session on protected paths: no inner call at all.
    let calls = world.echo.calls();
    let reply = anon
        .send(Method::GET, world.url("/private"), forged, None)
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let reply = anon
        .send(Method::GET, world.url("/api/x"), forged, None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(world.echo.calls(), calls);

    // With a session: the inner service sees exactly the proxy's values.
    let browser = world.browser();
    world.login(&browser, "/p").await;
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
    verify_with_jwks(&world, &echoed.jwt()).await;
}

/// Method, path, extra headers.
type ApiCase = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
);

#[tokio::test]
async fn api_clients_get_401_json_with_a_login_url() {
    let world = World::start().await;
    let mut api = world.browser();
    api.accept = None;
    const JSON: (&str, &str) = ("accept", "application/json");
    let cases: &[ApiCase] = &[
        (Method::GET, "/api/items", &[]),
        (Method::GET, "/api/things", &[JSON]),
        (Method::GET, "/page", &[JSON]),
        (Method::GET, "/page", &[("accept", "*/*")]),
        (Method::GET, "/private/data", &[JSON]),
        (
            Method::GET,
            "/page",
            &[
                ("accept", BROWSER_ACCEPT),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
        (
            Method::GET,
            "/private",
            &[JSON, ("X-Requested-With", "XMLHttpRequest")],
        ),
        (Method::POST, "/form", &[("accept", BROWSER_ACCEPT)]),
        (Method::POST, "/private/form", &[JSON]),
    ];
    for (method, path, headers) in cases {
        let reply = api
            .send(
                method.clone(),
                world.url(path),
                headers,
                Some(b"a=1".to_vec()),
            )
            .await;
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            reply.content_type().starts_with("application/json"),
            "{what}"
        );
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{what}");
        let json = reply.json();
        assert_eq!(json["error"], "unauthenticated");
        let login_url = json["login_url"].as_str().expect("login_url");
        assert!(
            login_url.starts_with("/_wxauth/login?return="),
            "same-origin path: {login_url}"
        );
        let login = world.base.join(login_url).expect("resolves");
        assert_eq!(login.origin(), world.base.origin());
        assert_eq!(login.path(), "/_wxauth/login");
        assert_eq!(param(&login, "return"), *path, "{what}");
    }
    // Even a browser's POST is never redirected (its body would be lost).
    let browser = world.browser();
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

// ---------------------------------------------------------------------------------------------
// Ticket pushes and readiness
// ---------------------------------------------------------------------------------------------

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

#[tokio::test]
async fn ticket_push_makes_ready_and_forged_pushes_are_refused() {
    let world = World::start_with(Options {
        ready: false,
        ..Options::default()
    })
    .await;
    let before = world.ready_reply().await;
    assert_eq!(
        before.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        before.body
    );
    assert_eq!(before.json()["ready"], false);
    assert!(
        before.body.contains("ticket"),
        "the reason: {}",
        before.body
    );

    // A login before the platform has its ticket: a clear page at once (before WeChat asks
    // for consent), no flow, no session.
    let browser = world.browser();
    let reply = browser.get(world.url("/p")).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("平台未就绪"), "{}", reply.body);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert!(reply.raw_location().is_none());
    assert!(!reply.sets_session());

    let client = world.browser();
    let post = |url: Url, body: Vec<u8>| {
        let client = client.fresh();
        async move { client.send(Method::POST, url, &[], Some(body)).await }
    };
    // A push sealed with the wrong message token and key: 403, nothing stored.
    let (query, body) = forged_push(&world);
    let reply = post(
        world.url(&format!("/_wxauth/events?{query}")),
        body.into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_ne!(reply.body, "success");
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);

    // A bad signature over garbage: refused.
    let garbage =
        world.url("/_wxauth/events?timestamp=1&nonce=2&msg_signature=deadbeef&encrypt_type=aes");
    let reply = post(
        garbage.clone(),
        b"<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId><Encrypt><![CDATA[AAAA]]></Encrypt></xml>"
            .to_vec(),
    )
    .await;
    assert!(
        reply.status == StatusCode::FORBIDDEN || reply.status == StatusCode::BAD_REQUEST,
        "{}",
        reply.status
    );
    assert_ne!(reply.body, "success");

    // Oversized pushes: 413, from one byte over the limit on.
    let limit = wechat_oauth_proxy::wechat::events::MAX_PUSH_BODY;
    for size in [limit + 1, 200 * 1024] {
        let reply = post(garbage.clone(), vec![b'x'; size]).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{size}");
    }
    // Pushes are POSTs.
    let reply = client.get(world.events_url()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    let after = world.ready_reply().await;
    assert_eq!(after.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        after.body.contains("ticket"),
        "nothing stored: {}",
        after.body
    );

    // The genuine push: ready.
    world.push_ticket().await;
    world.wait_ready().await;
    let (_, body) = world.ready().await;
    assert_eq!(body["ready"], true);
    assert_eq!(client.get(world.url("/_wxauth/health")).await.body, "ok");
}

#[tokio::test]
async fn a_genuinely_signed_push_for_another_platform_is_refused() {
    use wechat_oauth_proxy::wechat::{ComponentAppId, crypto::MsgCrypt, events, token::now_unix};
    let world = World::start_with(Options {
        ready: false,
        ..Options::default()
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
            world.events_url(),
            &[],
            Some(b"<xml/>".to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(world.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn official_account_mode_logs_in_without_a_ticket() {
    let world = World::start_with(Options {
        official_account: true,
        ..Options::default()
    })
    .await;
    let (status, body) = world.ready().await;
    assert_eq!(status, StatusCode::OK, "no ticket needed: {body}");
    world.sim.set_next_user(alice());
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/oa")).await;
    assert!(
        authorize.query_pairs().all(|(k, _)| k != "component_appid"),
        "{authorize}"
    );
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    let page = browser.get(reply.location()).await;
    let echoed = page.echoed().expect("echo");
    let claims = verify_with_jwks(&world, &echoed.jwt()).await;
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

// ---------------------------------------------------------------------------------------------
// The callback: state, appid, code
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_state_is_refused_and_the_genuine_callback_still_works() {
    let world = World::start().await;
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let state = param(&callback, "state");
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        with_param(&callback, "state", Some(&tampered)),
        with_param(&callback, "state", Some(&format!("X{state}"))),
        with_param(&callback, "state", None),
        with_param(&callback, "state", Some("")),
        with_param(&callback, "state", Some(&"A".repeat(5000))),
    ] {
        let reply = browser.get(&bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert!(reply.content_type().starts_with("text/html"));
        assert!(
            reply.body.contains("登录链接已失效") && reply.body.contains("Login link expired"),
            "{}",
            reply.body
        );
        assert!(!reply.sets_session());
        assert!(browser.cookie(SESSION).is_none());
        assert!(
            !reply.body.contains(&param(&callback, "code")),
            "no code on the page"
        );
    }
    assert_eq!(world.session_count().await, 0);
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(reply.sets_session());
}

#[tokio::test]
async fn a_state_from_another_browser_is_refused_and_does_not_burn_the_victims_login() {
    let world = World::start().await;
    let victim = world.browser();
    let authorize = victim.start_login(world.url("/p")).await;
    let victims_callback = victim.authorize(authorize).await;

    // The attacker has a flow cookie of its own, but not the one bound to the victim's state.
    let attacker = victim.fresh();
    attacker.start_login(world.url("/p")).await;
    let reply = attacker.get(&victims_callback).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!reply.sets_session());
    assert!(attacker.session_cookie().is_none());

    // Someone who only learned the callback URL (Referer, logs, shoulder) and has no flow
    // cookie at all.
    let bare = victim.fresh();
    let reply = bare.get(&victims_callback).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!reply.sets_session());
    assert_eq!(world.session_count().await, 0);
    assert_eq!(
        world.sim.calls(Endpoint::ComponentCodeExchange),
        0,
        "nothing was consumed or exchanged"
    );

    // Neither attempt consumed the victim's login.
    let reply = victim.get(victims_callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(reply.sets_session());
    assert_eq!(reply.raw_location(), Some("/p"));
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn a_callback_with_another_appid_is_refused() {
    let world = World::start().await;
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let forged = with_param(&callback, "appid", Some("wxffffffffffffffff"));
    assert_ne!(
        param(&callback, "appid"),
        "wxffffffffffffffff",
        "the test changes the appid"
    );
    let reply = browser.get(forged).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(
        reply.body.contains("Invalid login response"),
        "{}",
        reply.body
    );
    assert!(!reply.sets_session());
    assert!(browser.cookie(SESSION).is_none());
    assert_eq!(world.session_count().await, 0);
    assert_eq!(
        world.sim.calls(Endpoint::ComponentCodeExchange),
        0,
        "the code is not exchanged"
    );
}

#[tokio::test]
async fn a_replayed_callback_creates_no_second_session() {
    let world = World::start().await;
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let first = browser.get(&callback).await;
    assert!(first.sets_session());
    assert_eq!(first.raw_location(), Some("/p"));
    let cookie = browser.session_cookie().unwrap();
    assert_eq!(world.session_count().await, 1);

    // The same browser reloads the callback (or WeChat redirects twice): a plain redirect.
    let again = browser.get(&callback).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    assert!(!again.sets_session());
    assert_eq!(browser.session_cookie().unwrap(), cookie);
    // Another browser replays the URL afterwards.
    let other = browser.fresh();
    let replay = other.get(&callback).await;
    assert!(!replay.sets_session(), "{}", replay.status);
    assert!(other.session_cookie().is_none());
    assert_eq!(world.session_count().await, 1);
    assert_eq!(
        world.sim.calls(Endpoint::ComponentCodeExchange),
        1,
        "the code was exchanged once"
    );
    // The session still works.
    assert!(browser.get(world.url("/p")).await.reached_inner());
}

#[tokio::test]
async fn concurrent_duplicate_callbacks_create_one_session() {
    let world = World::start().await;
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let a = browser.clone_jar();
    let b = browser.clone_jar();
    let (ra, rb) = tokio::join!(a.get(&callback), b.get(&callback));
    let made = [&ra, &rb].iter().filter(|r| r.sets_session()).count();
    assert_eq!(made, 1, "{} / {}", ra.body, rb.body);
    assert!(ra.status == StatusCode::FOUND && rb.status == StatusCode::FOUND);
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn a_replayed_code_with_a_fresh_state_is_rejected() {
    let world = World::start().await;
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/p")).await;
    let callback = browser.authorize(authorize).await;
    let code = param(&callback, "code");
    assert!(browser.get(callback).await.sets_session());

    // Logged in already: a second login is started explicitly.
    let authorize = browser
        .start_login(world.url("/_wxauth/login?return=/q"))
        .await;
    let fresh = browser.authorize(authorize).await;
    let replay = with_param(&fresh, "code", Some(&code));
    let reply = browser.get(replay).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("授权已失效"), "{}", reply.body);
    assert!(!reply.sets_session());
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn refusal_shows_a_clear_page_with_a_retry_link_that_works() {
    let world = World::start().await;
    world.sim.refuse_next();
    let browser = world.browser();
    let authorize = browser.start_login(world.url("/deep/page?x=1")).await;
    let callback = browser.authorize(authorize).await;
    assert!(callback.query_pairs().all(|(k, _)| k != "code"));
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.content_type().starts_with("text/html"));
    assert!(reply.body.contains("未完成授权"));
    assert!(reply.body.contains("Authorization not granted"));
    assert!(!reply.sets_session());
    assert!(browser.cookie(SESSION).is_none());
    assert!(
        browser.cookie(FLOW).is_none(),
        "the finished flow is removed"
    );
    assert!(reply.headers.get(header::LOCATION).is_none(), "no loop");
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 0);
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
    assert!(reply.sets_session());
    assert_eq!(reply.raw_location(), Some("/deep/page?x=1"));
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn a_snapshot_user_gets_no_session() {
    let world = World::start().await;
    world.sim.set_next_user(SimUser::snapshot_user());
    let browser = world.browser();
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
    assert!(!reply.sets_session());
    assert!(browser.session_cookie().is_none());
    assert_eq!(world.session_count().await, 0);
    assert_eq!(
        world.sim.calls(Endpoint::UserInfo),
        0,
        "no profile fetch for a virtual user"
    );
}

/// Walks a login started at `login_url`; returns where the callback sends the browser.
async fn lands_on(browser: &Browser, login_url: Url) -> String {
    let authorize = browser.start_login(login_url).await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(reply.sets_session());
    reply.raw_location().expect("location").to_owned()
}

#[tokio::test]
async fn open_redirect_attempts_on_login_return_all_end_on_root() {
    let world = World::start().await;
    let browser = world.browser();
    // As they appear in the request target.
    for attempt in [
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
        "/%0d%0aLocation:%20https://evil.example",
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
    ] {
        let url = world.url(&format!("/_wxauth/login?return={attempt}"));
        assert_eq!(lands_on(&browser, url).await, "/", "return={attempt}");
    }
    // Form-encoded once more (what a client building the URL properly sends).
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
        let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let url = world.url(&format!("/_wxauth/login?return={encoded}"));
        assert_eq!(lands_on(&browser, url).await, "/", "encoded return={evil}");
    }
    // A legitimate deep link survives exactly.
    let url = world.url("/_wxauth/login?return=%2Fdeep%2Fpath%3Fq%3D%25E4%25B8%25AD%26a%3D1");
    assert_eq!(lands_on(&browser, url).await, "/deep/path?q=%E4%B8%AD&a=1");
}

// ---------------------------------------------------------------------------------------------
// Sessions and cookies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_and_truncated_session_cookies_are_no_session() {
    let world = World::start().await;
    let browser = world.browser();
    world.login(&browser, "/p").await;
    let cookie = browser.session_cookie().unwrap();
    let (name, value) = cookie.split_once('=').unwrap();
    let flip = |at: usize| {
        let mut bytes = value.as_bytes().to_vec();
        bytes[at] = match bytes[at] {
            b'x' => b'y',
            b'A' => b'B',
            _ => b'x',
        };
        String::from_utf8(bytes).unwrap()
    };
    for forged in [
        flip(5),
        flip(value.len() / 2),
        value[..value.len() / 2].to_owned(),
        value[..value.len() - 1].to_owned(),
        value[..value.len() - 4].to_owned(),
        value[..10].to_owned(),
        format!("{value}{value}"),
        String::new(),
        "garbage".to_owned(),
    ] {
        // A browser per request: each holds nothing but the forged cookie.
        let reply = holding(&browser, name, &forged)
            .get(world.url("/private"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FOUND,
            "a bad cookie is no session, not an error page: {forged:?}"
        );
        assert!(reply.location().path().ends_with("/authorize"));
        let api = holding(&browser, name, &forged)
            .get_with(world.url("/api/me"), &[("accept", "application/json")])
            .await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{forged:?}");
        let who = holding(&browser, name, &forged)
            .get(world.url("/_wxauth/whoami"))
            .await;
        assert_eq!(who.status, StatusCode::UNAUTHORIZED, "{forged:?}");
    }
    // The genuine one still works.
    let reply = browser.get(world.url("/private")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_ends_the_server_side_session_and_copies_of_the_cookie() {
    let world = World::start().await;
    let browser = world.browser();
    world.login(&browser, "/p").await;
    let stolen = browser.clone_jar();
    assert!(stolen.get(world.url("/x")).await.reached_inner());
    let old = browser.session_cookie().unwrap();
    let reply = browser.get(world.url("/_wxauth/logout?return=/bye")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.raw_location(), Some("/bye"));
    assert!(browser.session_cookie().is_none(), "the cookie was cleared");
    assert_eq!(world.session_count().await, 0);

    // Somebody who kept a copy of the cookie.
    let page = stolen.get(world.url("/x")).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert!(!page.reached_inner());
    let (name, value) = old.split_once('=').unwrap();
    let who = holding(&browser, name, value)
        .get(world.url("/_wxauth/whoami"))
        .await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);

    // Without a return target, or an unsafe one: "/".
    let reply = browser.get(world.url("/_wxauth/logout")).await;
    assert_eq!(reply.raw_location(), Some("/"));
    let reply = stolen
        .get(world.url("/_wxauth/logout?return=//evil.example"))
        .await;
    assert_eq!(reply.raw_location(), Some("/"));
}

#[tokio::test]
async fn every_login_gets_a_fresh_session_id_and_ends_the_old_session() {
    let world = World::start().await;
    let browser = world.browser();
    world.login(&browser, "/p").await;
    let first = browser.session_cookie().unwrap();
    let authorize = browser
        .start_login(world.url("/_wxauth/login?return=/again"))
        .await;
    let callback = browser.authorize(authorize).await;
    let reply = browser.get(callback).await;
    assert!(reply.sets_session());
    let second = browser.session_cookie().unwrap();
    assert_ne!(session_id_of(&first), session_id_of(&second));
    assert_eq!(world.session_count().await, 1, "the old session was ended");
    let (name, value) = first.split_once('=').unwrap();
    assert_eq!(
        holding(&browser, name, value)
            .get(world.url("/_wxauth/whoami"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !holding(&browser, name, value)
            .get(world.url("/x"))
            .await
            .reached_inner()
    );
    assert!(browser.get(world.url("/x")).await.reached_inner());
}

#[tokio::test]
async fn cookies_have_safe_attributes_and_pending_flows_are_capped() {
    let world = World::start().await;
    let browser = world.browser();
    // Five logins started in a row (tabs, back button): the flow cookie does not grow.
    let mut callbacks = Vec::new();
    let mut flow_cookie_len = Vec::new();
    for i in 0..5 {
        let reply = browser.get(world.url(&format!("/tab/{i}"))).await;
        assert_eq!(reply.status, StatusCode::FOUND);
        let set = reply.set_cookies();
        assert_eq!(set.len(), 1);
        let flow = cookie::Cookie::parse(set[0].clone()).unwrap();
        assert!(flow.name().ends_with(FLOW));
        assert_eq!(flow.http_only(), Some(true));
        assert_eq!(flow.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(flow.path(), Some("/"));
        flow_cookie_len.push(flow.value().len());
        callbacks.push(browser.authorize(reply.location()).await);
    }
    assert_eq!(
        flow_cookie_len[3], flow_cookie_len[4],
        "capped: {flow_cookie_len:?}"
    );
    assert_eq!(browser.cookie_names().len(), 1);

    // The oldest pending flow was dropped from the cookie: its callback is refused …
    let reply = browser.get(&callbacks[0]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // … the newest one completes, with a session cookie that has safe attributes.
    let reply = browser.get(&callbacks[4]).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert_eq!(reply.raw_location(), Some("/tab/4"));
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let session = reply
        .set_cookies()
        .into_iter()
        .map(|c| cookie::Cookie::parse(c).unwrap())
        .find(|c| c.name().ends_with(SESSION))
        .expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));
    assert!(session.value().len() >= 40, "encrypted, not a bare id");
}

// ---------------------------------------------------------------------------------------------
// Load and WeChat trouble
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_concurrent_logins_make_a_hundred_sessions_and_one_token_fetch() {
    let world = World::start().await;
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 1);
    let template = world.browser();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let browser = template.fresh();
        let start = world.url(&format!("/page/{i}"));
        tasks.spawn(async move {
            let authorize = browser.start_login(start).await;
            let callback = browser.authorize(authorize).await;
            let reply = browser.get(callback).await;
            assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
            assert_eq!(reply.raw_location(), Some(format!("/page/{i}").as_str()));
            let page = browser.get(reply.location()).await;
            assert!(page.reached_inner(), "{} {}", page.status, page.body);
            browser.session_cookie().expect("session cookie")
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(cookie) = bounded(tasks.join_next()).await {
        ids.insert(session_id_of(&cookie.expect("login task")));
    }
    assert_eq!(ids.len(), 100, "100 distinct session ids");
    assert_eq!(world.session_count().await, 100);
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 1);
    assert_eq!(world.sim.issued_component_tokens(), 1, "single flight");
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 100);
}

#[tokio::test]
async fn an_invalidated_component_token_does_not_break_logins() {
    let world = World::start().await;
    let first = world.browser();
    world.login(&first, "/p").await;
    assert_eq!(world.sim.issued_component_tokens(), 1);
    world.sim.invalidate_component_token();
    let second = first.fresh();
    let page = world.login(&second, "/q").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.echoed().unwrap().identity().is_some());
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 2, "one re-fetch");
    assert_eq!(world.sim.issued_component_tokens(), 2);
    // The first session is unaffected.
    assert_eq!(first.get(world.url("/p")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn wechat_hanging_fails_the_login_clearly_while_sessions_keep_working() {
    let world = World::start_with(Options {
        request_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let existing = world.browser();
    world.login(&existing, "/p").await;

    world
        .sim
        .inject(Endpoint::ComponentCodeExchange, Failure::Hang, 1);
    let newcomer = existing.fresh();
    let authorize = newcomer.start_login(world.url("/q")).await;
    let callback = newcomer.authorize(authorize).await;
    let hanging = tokio::spawn(async move {
        let reply = newcomer.get(callback).await;
        (reply, newcomer)
    });
    // Wait (bounded) until the exchange is hanging at WeChat …
    for _ in 0..400 {
        if world.sim.calls(Endpoint::ComponentCodeExchange) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 2);
    // … and meanwhile the existing session is served.
    let page = existing.get(world.url("/p")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.echoed().unwrap().identity().is_some());

    let (reply, newcomer) = bounded(hanging).await.unwrap();
    reply.assert_wechat_timeout_page("%2Fq");
    assert!(newcomer.session_cookie().is_none());
    assert_eq!(world.session_count().await, 1);
}
