//! The forward-auth endpoints' contract over real loopback sockets: the layer (with the
//! simulated WeChat) asked the way each front proxy asks — nginx `auth_request`, Traefik
//! `ForwardAuth`, Caddy `forward_auth`, Envoy HTTP `ext_authz` — with the request shapes their
//! documentation and source describe (Traefik and Envoy are not Debian packages: these shapes
//! are how they are tested; nginx and Caddy also run for real in `tests/front_proxies.rs`).
//!
//! Traefik (`pkg/middlewares/auth/forward.go`): `GET` to the configured address (so `Host` is
//! the auth server's), every client header copied, `X-Forwarded-Method/-Proto/-Host/-Uri/-For/
//! -Port` set fresh (`trustForwardHeader: false`). Caddy (`forward_auth`): `GET`, the original
//! `Host` kept, `X-Forwarded-Method` and `X-Forwarded-Uri` set, `X-Forwarded-For/-Proto/-Host`
//! by `reverse_proxy`. nginx (`auth_request` with the shipped `deploy/nginx/`): `GET`, every
//! client header inherited, `X-Original-Method` and `X-Original-URL` set, `Host $host`. Envoy
//! (`ext_authz` `http_service`): the original method, `path_prefix` + the original path and
//! query, the original `Host`, `Content-Length: 0`, only the allow-listed headers plus its own
//! `x-envoy-*`/`x-request-id`.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tower::{Layer as _, ServiceExt as _};
use url::Url;
use wechat_oauth_proxy::{
    identity::{JWT_HEADER, PLAIN_HEADERS},
    layer::ForwardAuthSettings,
    server::ClientAddr,
    session::{FlowKey, SessionId, SessionRecord, SessionStore, StoreError},
};

use support::{Browser, Echo, Options, Reply, World, bounded, builder, jwt_issuer, offline_wechat};

/// Forward auth on, default callers (loopback).
fn enabled() -> ForwardAuthSettings {
    ForwardAuthSettings {
        enabled: true,
        ..ForwardAuthSettings::default()
    }
}

/// The world with forward auth configured as given and the plain headers on.
async fn world_with(forward_auth: ForwardAuthSettings) -> World {
    World::start_with(Options {
        forward_auth: Some(forward_auth),
        plain_headers: true,
        ..Options::default()
    })
    .await
}

/// The six identity headers a 200 always carries: the JWT's and the plain ones.
fn identity_names() -> impl Iterator<Item = HeaderName> {
    std::iter::once(JWT_HEADER).chain(PLAIN_HEADERS)
}

/// The original request every shape describes.
const HOST: &str = "app.example.com";
const TARGET: &str = "/orders/42?x=1";
const RETURN: &str = "%2Forders%2F42%3Fx%3D1";

/// How a front proxy asks about `method TARGET` on `HOST` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Nginx,
    Traefik,
    Caddy,
    Envoy,
}

const SHAPES: [Shape; 4] = [Shape::Nginx, Shape::Traefik, Shape::Caddy, Shape::Envoy];

impl Shape {
    /// (method, URL on the proxy, extra headers) of the check for `method` `target` on `host`.
    fn request(
        self,
        world: &World,
        method: &str,
        host: &str,
        target: &str,
    ) -> (Method, Url, Vec<(String, String)>) {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        match self {
            Shape::Nginx => (
                Method::GET,
                world.url("/_wxauth/auth/request"),
                pairs(&[
                    ("host", host),
                    ("x-original-method", method),
                    ("x-original-url", &format!("https://{host}{target}")),
                    ("user-agent", "Mozilla/5.0"),
                ]),
            ),
            Shape::Traefik => (
                Method::GET,
                world.url("/_wxauth/auth/forward"),
                pairs(&[
                    ("x-forwarded-method", method),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", host),
                    ("x-forwarded-uri", target),
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-forwarded-port", "443"),
                    ("x-forwarded-server", "traefik-1"),
                    ("x-real-ip", "203.0.113.7"),
                    ("user-agent", "Mozilla/5.0"),
                ]),
            ),
            Shape::Caddy => (
                Method::GET,
                world.url("/_wxauth/auth/forward"),
                pairs(&[
                    ("host", host),
                    ("x-forwarded-method", method),
                    ("x-forwarded-uri", target),
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", host),
                    ("user-agent", "Mozilla/5.0"),
                ]),
            ),
            Shape::Envoy => (
                Method::from_bytes(method.as_bytes()).unwrap(),
                world.url(&format!("/_wxauth/auth/envoy{target}")),
                pairs(&[
                    ("host", host),
                    ("content-length", "0"),
                    ("x-forwarded-proto", "https"),
                    ("x-envoy-expected-rq-timeout-ms", "1000"),
                    ("x-envoy-internal", "true"),
                    ("x-request-id", "5f8b3a50-1b0c-4a8e-9d52-1d9d0f3b4c61"),
                ]),
            ),
        }
    }

    /// Sends the check for `method TARGET` with `browser`'s cookies and `Accept`, plus `extra`.
    async fn ask(
        self,
        world: &World,
        browser: &Browser,
        method: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        self.ask_about(world, browser, method, TARGET, extra).await
    }

    async fn ask_about(
        self,
        world: &World,
        browser: &Browser,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        self.ask_on(world, browser, method, HOST, target, extra)
            .await
    }

    async fn ask_on(
        self,
        world: &World,
        browser: &Browser,
        method: &str,
        host: &str,
        target: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let (verb, url, headers) = self.request(world, method, host, target);
        let mut all: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(extra);
        browser.send(verb, url, &all, None).await
    }
}

/// A browser holding a session of the simulator's next user (logged in through the layer).
async fn logged_in(world: &World) -> Browser {
    let browser = world.browser();
    let page = world.login(&browser, "/welcome").await;
    assert!(page.reached_inner(), "{}", page.body);
    browser
}

/// Asserts a side-effect-free, uncacheable answer.
fn assert_side_effect_free(reply: &Reply) {
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    assert_eq!(
        reply.headers[header::CACHE_CONTROL],
        "no-store",
        "{reply:?}"
    );
}

fn header<'r>(reply: &'r Reply, name: &str) -> &'r str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing: {reply:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn every_shape_lets_a_session_through_with_its_identity() {
    let world = world_with(enabled()).await;
    let browser = logged_in(&world).await;
    let sessions = world.session_count().await;
    let inner_calls = world.echo.calls();
    let expected = world.layer.settings().public_url.clone();
    assert_eq!(expected, world.base);
    for shape in SHAPES {
        for method in ["GET", "POST", "DELETE"] {
            let reply = shape.ask(&world, &browser, method, &[]).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{shape:?} {method}: {reply:?}"
            );
            assert_side_effect_free(&reply);
            assert!(reply.body.is_empty());
            for name in identity_names() {
                assert!(reply.headers.contains_key(&name), "{shape:?}: {name}");
            }
            let claims = jwt_issuer()
                .verify(header(&reply, "x-wechat-jwt"))
                .expect("a JWT the issuer verifies");
            assert_eq!(header(&reply, "x-wechat-openid"), claims.openid.as_str());
            assert_eq!(claims.sub, claims.openid);
        }
        // HEAD is as good as GET for the check itself.
        if shape != Shape::Envoy {
            let (_, url, headers) = shape.request(&world, "GET", HOST, TARGET);
            let extra: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let head = browser.send(Method::HEAD, url, &extra, None).await;
            assert_eq!(head.status, StatusCode::OK, "{shape:?} HEAD");
        }
    }
    assert_eq!(
        world.session_count().await,
        sessions,
        "no session was created"
    );
    assert_eq!(
        world.echo.calls(),
        inner_calls,
        "the inner service never saw a check"
    );
}

#[tokio::test]
async fn without_a_session_each_shape_points_at_the_absolute_login_url() {
    let world = world_with(enabled()).await;
    let browser = world.browser();
    let login = format!("{}_wxauth/login?return={RETURN}", world.base);
    for shape in SHAPES {
        // A browser navigation.
        let reply = shape.ask(&world, &browser, "GET", &[]).await;
        assert_side_effect_free(&reply);
        match shape {
            // nginx allows only 2xx/401/403 from an auth subrequest; it makes the 302 itself.
            Shape::Nginx => {
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
                assert_eq!(reply.json()["login_url"], login.as_str());
                assert_eq!(header(&reply, "x-wechat-login-url"), login);
            }
            _ => assert_eq!(reply.status, StatusCode::FOUND, "{shape:?}: {reply:?}"),
        }
        assert_eq!(reply.raw_location(), Some(login.as_str()), "{shape:?}");
        // XHR, fetch(), API clients and non-GET originals: 401 JSON, no redirect.
        for (method, extra) in [
            ("GET", &[("x-requested-with", "XMLHttpRequest")][..]),
            ("GET", &[("accept", "application/json")][..]),
            ("GET", &[("sec-fetch-mode", "cors")][..]),
            ("POST", &[][..]),
        ] {
            let reply = shape.ask(&world, &browser, method, extra).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{shape:?} {method} {extra:?}"
            );
            assert_eq!(reply.raw_location(), None, "{shape:?} {method} {extra:?}");
            assert_eq!(reply.json()["error"], "unauthenticated");
            assert_eq!(reply.json()["login_url"], login.as_str());
            assert_side_effect_free(&reply);
        }
        // API prefixes are API whatever the client says.
        let api = shape
            .ask_about(&world, &browser, "GET", "/api/x", &[])
            .await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{shape:?}");
    }
    assert_eq!(world.session_count().await, 0);
    assert!(browser.cookie_names().is_empty(), "no flow cookie was set");
}

#[tokio::test]
async fn a_forged_host_never_turns_the_login_url_into_an_open_redirect() {
    let world = world_with(enabled()).await;
    let browser = world.browser();
    let ours = world.base.origin();
    for (shape, target) in [
        (Shape::Traefik, "//evil.example/x"),
        (Shape::Caddy, "/x"),
        (Shape::Nginx, "//evil.example/x"),
        (Shape::Envoy, "/x"),
    ] {
        let reply = shape
            .ask_on(&world, &browser, "GET", "evil.example", target, &[])
            .await;
        let location = reply.location();
        assert_eq!(location.origin(), ours, "{shape:?}: {location}");
        let back: String = location
            .query_pairs()
            .find(|(k, _)| k == "return")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert!(back.starts_with('/') && !back.starts_with("//"), "{back}");
    }
    // A served host (the public URL's) keeps its origin.
    let served = format!(
        "{}:{}",
        world.base.host_str().unwrap(),
        world.base.port().unwrap()
    );
    let reply = Shape::Traefik
        .ask_on(&world, &browser, "GET", &served, "/x", &[])
        .await;
    assert_eq!(reply.location().origin(), ours);
}

#[tokio::test]
async fn forged_metadata_is_refused_never_allowed() {
    let world = world_with(enabled()).await;
    let browser = logged_in(&world).await;
    let forward = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", HOST),
        ("x-forwarded-uri", "/private"),
    ];
    let without = |name: &str| -> Vec<(&str, &str)> {
        forward
            .iter()
            .filter(|(n, _)| *n != name)
            .copied()
            .collect()
    };
    let plus = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        let mut all = forward.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let replace = |name: &str, value: &'static str| -> Vec<(&str, &str)> {
        let mut all = without(name);
        all.push((forward.iter().find(|(n, _)| *n == name).unwrap().0, value));
        all
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing uri", without("x-forwarded-uri")),
        ("missing method", without("x-forwarded-method")),
        ("missing proto", without("x-forwarded-proto")),
        ("missing host", without("x-forwarded-host")),
        ("duplicated uri", plus(&[("x-forwarded-uri", "/public/x")])),
        (
            "underscore alias",
            plus(&[("x_forwarded_uri", "/public/x")]),
        ),
        ("dot alias", plus(&[("x.forwarded.uri", "/public/x")])),
        ("relative uri", replace("x-forwarded-uri", "private")),
        (
            "absolute uri",
            replace("x-forwarded-uri", "https://a.example/x"),
        ),
        (
            "encoded slash",
            replace("x-forwarded-uri", "/public%2F..%2Fprivate"),
        ),
        (
            "dot parameters",
            replace("x-forwarded-uri", "/public/..;/private"),
        ),
        (
            "backslash",
            replace("x-forwarded-uri", "/public\\..\\private"),
        ),
        ("encoded NUL", replace("x-forwarded-uri", "/private%00")),
        ("fragment", replace("x-forwarded-uri", "/private#x")),
        ("scheme", replace("x-forwarded-proto", "javascript")),
        (
            "host",
            replace("x-forwarded-host", "a.example@evil.example"),
        ),
        ("method", replace("x-forwarded-method", "get")),
        ("CONNECT", replace("x-forwarded-method", "CONNECT")),
    ];
    for (what, headers) in &cases {
        let reply = browser
            .get_with(world.url("/_wxauth/auth/forward"), headers)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {reply:?}");
        assert_side_effect_free(&reply);
        assert!(!reply.headers.contains_key("x-wechat-jwt"), "{what}");
    }
    let original = |extra: &[(&'static str, &'static str)]| {
        let mut all = vec![("x-original-method", "GET")];
        all.extend_from_slice(extra);
        all
    };
    let nginx: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "no method",
            vec![("x-original-url", "https://app.example.com/x")],
        ),
        ("no URL", original(&[])),
        ("relative URL", original(&[("x-original-url", "/x")])),
        (
            "URL and URI disagree",
            original(&[
                ("x-original-url", "https://app.example.com/private"),
                ("x-original-uri", "/public/x"),
            ]),
        ),
        (
            "alias",
            original(&[
                ("x-original-url", "https://app.example.com/private"),
                ("x_original_url", "https://app.example.com/public/x"),
            ]),
        ),
        (
            "user info",
            original(&[("x-original-url", "https://u@app.example.com/x")]),
        ),
        (
            "encoded slash",
            original(&[("x-original-url", "https://app.example.com/a%2fb")]),
        ),
    ];
    for (what, headers) in &nginx {
        let reply = browser
            .get_with(world.url("/_wxauth/auth/request"), headers)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "nginx {what}: {reply:?}"
        );
    }
    // The same through a raw socket: an Envoy check path that leaves its prefix, control
    // characters and obs-text in a value.
    let cookie = browser.session_cookie().unwrap();
    let addr: SocketAddr = format!(
        "{}:{}",
        world.base.host_str().unwrap(),
        world.base.port().unwrap()
    )
    .parse()
    .unwrap();
    let forward = "GET /_wxauth/auth/forward HTTP/1.1\r\nHost: a\r\nX-Forwarded-Method: GET\r\n\
                   X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n";
    let cases = [
        (
            "envoy escape",
            "GET /_wxauth/auth/envoy/../../../private HTTP/1.1\r\nHost: app.example.com\r\n"
                .to_owned(),
        ),
        (
            "envoy escape to request",
            "GET /_wxauth/auth/envoy/%2e%2e/request HTTP/1.1\r\nHost: app.example.com\r\n\
             X-Original-Method: GET\r\nX-Original-URL: https://app.example.com/public/x\r\n"
                .to_owned(),
        ),
        (
            "obs-text",
            format!("{forward}X-Forwarded-Uri: /\u{4e2d}\r\n"),
        ),
        ("tab", format!("{forward}X-Forwarded-Uri: /a\tb\r\n")),
    ];
    for (what, head) in cases {
        let request = format!("{head}Cookie: {cookie}\r\nConnection: close\r\n\r\n");
        assert_eq!(support::raw_status(addr, &request).await, 400, "{what}");
    }
}

#[tokio::test]
async fn forged_identity_headers_in_the_check_count_for_nothing() {
    let world = world_with(enabled()).await;
    let forged = world.browser();
    let browser = logged_in(&world).await;
    let real = jwt_issuer();
    for shape in SHAPES {
        let spoof = [
            ("x-wechat-jwt", "forged.jwt.value"),
            ("x_wechat_jwt", "forged.jwt.value"),
            ("x.wechat.jwt", "forged.jwt.value"),
            ("x-wechat-openid", "o-forged"),
        ];
        let anonymous = shape.ask(&world, &forged, "GET", &spoof).await;
        assert_ne!(anonymous.status, StatusCode::OK, "{shape:?}");
        let reply = shape.ask(&world, &browser, "GET", &spoof).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(header(&reply, "x-wechat-openid"), "o-forged");
        real.verify(header(&reply, "x-wechat-jwt")).expect("ours");
    }
}

#[tokio::test]
async fn reserved_and_skipped_originals() {
    // Skip rules are off by default: the world's public `GET /public/*` still needs a session.
    let world = world_with(enabled()).await;
    let anonymous = world.browser();
    let browser = logged_in(&world).await;
    for shape in SHAPES {
        let public = shape
            .ask_about(&world, &anonymous, "GET", "/public/x", &[])
            .await;
        assert!(
            matches!(public.status, StatusCode::FOUND | StatusCode::UNAUTHORIZED),
            "{shape:?}: {public:?}"
        );
        // The layer's own public endpoints pass, without identity even with a session.
        for target in [
            "/_wxauth/login?return=%2Fx",
            "/_wxauth/callback?code=c&state=s",
            "/_wxauth/jwks.json",
            "/_wxauth/health",
            "/_wxauth/whoami",
        ] {
            let reply = shape.ask_about(&world, &browser, "GET", target, &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{shape:?} {target}");
            assert_side_effect_free(&reply);
            for name in identity_names() {
                assert_eq!(
                    header(&reply, name.as_str()),
                    "",
                    "{shape:?} {target}: {name}"
                );
            }
        }
        // The forward-auth endpoints themselves and unknown reserved paths are refused.
        for target in [
            "/_wxauth/auth/request",
            "/_wxauth/auth/forward",
            "/_wxauth/auth/envoy/x",
            "/_wxauth/nothing",
        ] {
            let reply = shape.ask_about(&world, &browser, "GET", target, &[]).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{shape:?} {target}");
        }
    }
    drop(world);

    let world = world_with(ForwardAuthSettings {
        apply_skip_rules: true,
        ..enabled()
    })
    .await;
    let browser = logged_in(&world).await;
    for shape in SHAPES {
        let public = shape
            .ask_about(&world, &browser, "GET", "/public/x", &[])
            .await;
        assert_eq!(public.status, StatusCode::OK, "{shape:?}");
        for name in identity_names() {
            assert_eq!(
                header(&public, name.as_str()),
                "",
                "skipped: no identity ({name})"
            );
        }
        // Skip rules match method + normalized path, never the query.
        let post = shape
            .ask_about(&world, &world.browser(), "POST", "/public/x", &[])
            .await;
        assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{shape:?}");
        let query = shape
            .ask_about(&world, &world.browser(), "GET", "/private?/public/x", &[])
            .await;
        assert_ne!(query.status, StatusCode::OK, "{shape:?}");
        let dotted = shape
            .ask_about(&world, &world.browser(), "GET", "/public/../private", &[])
            .await;
        assert_ne!(dotted.status, StatusCode::OK, "{shape:?}");
    }
}

#[tokio::test]
async fn only_allowed_callers_may_ask_and_only_when_enabled() {
    let off = World::start().await;
    let browser = off.browser();
    for path in [
        "/_wxauth/auth/request",
        "/_wxauth/auth/forward",
        "/_wxauth/auth/envoy/x",
    ] {
        assert_eq!(
            browser.get(off.url(path)).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    drop(off);

    // The test client is 127.0.0.1: not a caller when only 10.0.0.0/8 and ::1 may ask.
    let world = world_with(ForwardAuthSettings {
        allowed_callers: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        ..enabled()
    })
    .await;
    let browser = logged_in(&world).await;
    for shape in SHAPES {
        let reply = shape
            .ask(&world, &browser, "GET", &[("accept", "application/json")])
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{shape:?}");
        assert_eq!(reply.json()["error"], "untrusted_caller");
        assert!(!reply.headers.contains_key("x-wechat-jwt"));
    }
    drop(world);

    // The same decision in-process: no `ClientAddr` (a server that does not say who is
    // asking) is never a caller; 127.0.0.1 is.
    let world = world_with(enabled()).await;
    let service = world.layer.layer(Echo::new());
    let check = |peer: Option<&str>| {
        let mut request = Request::get("/_wxauth/auth/forward")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", HOST)
            .header("x-forwarded-uri", "/x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(ClientAddr(peer.parse().unwrap()));
        }
        let service = service.clone();
        async move { bounded(service.oneshot(request)).await.unwrap().status() }
    };
    assert_eq!(check(None).await, StatusCode::FORBIDDEN);
    assert_eq!(check(Some("10.9.8.7:5555")).await, StatusCode::FORBIDDEN);
    assert_eq!(
        check(Some("127.0.0.1:5555")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        check(Some("[::ffff:127.0.0.1]:5555")).await,
        StatusCode::UNAUTHORIZED
    );

    // Only GET and HEAD for the nginx and Traefik/Caddy endpoints.
    let reply = world
        .browser()
        .send(Method::POST, world.url("/_wxauth/auth/forward"), &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A session store that is down.
#[derive(Debug)]
struct DownStore;

fn down() -> StoreError {
    StoreError::Backend("store at 10.9.8.7:6379 refused".into())
}

#[async_trait::async_trait]
impl SessionStore for DownStore {
    async fn create(&self, _: SessionRecord) -> Result<SessionId, StoreError> {
        Err(down())
    }
    async fn load(&self, _: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Err(down())
    }
    async fn delete(&self, _: &SessionId) -> Result<(), StoreError> {
        Err(down())
    }
    async fn touch(&self, _: &SessionId) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn consume_flow(&self, _: &FlowKey, _: Duration) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn remember_completed(
        &self,
        _: &FlowKey,
        _: &SessionId,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(down())
    }
    async fn completed(&self, _: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(down())
    }
    async fn end_sessions_of(&self, _: &wechat_oauth_proxy::ids::AppId) -> Result<u64, StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn a_store_failure_fails_closed() {
    let layer = builder(
        Url::parse("http://127.0.0.1:8080/").unwrap(),
        offline_wechat(),
        Arc::new(DownStore),
    )
    .forward_auth(enabled())
    .build()
    .unwrap();
    let service = layer.layer(Echo::new());
    let (_, cookie) =
        support::session_cookie(&support::memory_store(), support::sample_identity()).await;
    for (path, headers) in [
        (
            "/_wxauth/auth/forward",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", HOST),
                ("x-forwarded-uri", "/x"),
            ],
        ),
        (
            "/_wxauth/auth/request",
            vec![
                ("x-original-method", "GET"),
                ("x-original-url", "https://app.example.com/x"),
            ],
        ),
        ("/_wxauth/auth/envoy/x", vec![("host", HOST)]),
    ] {
        let mut request = Request::get(path).header(header::COOKIE, &cookie);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut request = request.body(Full::new(Bytes::new())).unwrap();
        request
            .extensions_mut()
            .insert(ClientAddr("127.0.0.1:5555".parse().unwrap()));
        let response = bounded(service.clone().oneshot(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(!response.headers().contains_key("x-wechat-jwt"));
        let body = bounded(response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("10.9.8.7"), "no store details leak: {text}");
    }
}

/// The shipped Traefik and Envoy configurations (not run here: neither is a Debian package)
/// say what the shapes above assume.
#[test]
fn shipped_traefik_and_envoy_configs_ask_the_way_the_shapes_do() {
    let read = |path: &str| {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap()
    };
    let traefik = read("deploy/traefik/dynamic.yml");
    for line in [
        "address: \"http://127.0.0.1:8080/_wxauth/auth/forward\"",
        "trustForwardHeader: false",
        "!PathPrefix(`/_wxauth/auth/`)",
        "authResponseHeadersRegex: \"(?i)^x[-_.]wechat[-_.]\"",
    ] {
        assert!(traefik.contains(line), "Traefik: {line}");
    }
    let envoy = read("deploy/envoy/envoy.yaml");
    for line in [
        "path_prefix: /_wxauth/auth/envoy",
        "failure_mode_allow: false",
        "- exact: cookie",
        "- exact: accept",
        "- exact: x-requested-with",
        "- prefix: x-wechat-",
        "normalize_path: true",
        "headers_with_underscores_action: DROP_HEADER",
    ] {
        assert!(envoy.contains(line), "Envoy: {line}");
    }
    for name in identity_names() {
        let name = name.as_str();
        assert!(
            traefik
                .to_ascii_lowercase()
                .contains(&format!("- {name}\n")),
            "Traefik authResponseHeaders: {name}"
        );
        let dotted = name.replace('-', ".");
        assert!(envoy.contains(&format!("- {dotted}\n")), "Envoy: {dotted}");
    }
}
