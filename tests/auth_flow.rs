//! The auth layer end to end over real loopback sockets: the simulated WeChat, the layer around
//! an echo service served by `server::serve`, and a browser that steps through every redirect.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth_support;

use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use wechat_oauth_proxy::sim::SimUser;

use auth_support::{Browser, Echoed, World, is_identity_header, jwt_of, sets_session};

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
