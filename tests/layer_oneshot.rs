//! `WeChatAuth<S>` driven with `tower::ServiceExt::oneshot` around an echo service (no sockets;
//! the WeChat side points at a closed port, since none of these paths calls WeChat): reserved
//! routes, browser vs API answers, skip-rule normalization, identity-header hygiene, sessions
//! and cookies, fail-closed store errors, the tower service contract and the builder's
//! validation.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tower::{Layer as _, Service, ServiceExt as _, service_fn};
use url::Url;
use wechat_oauth_proxy::{
    Identity,
    identity::{HeaderSettings, JwtCarrier},
    ids::AppId,
    jwt::{JwtIssuer, JwtSettings},
    layer::{BuildError, ResponseBody, WeChatAuth, WeChatAuthLayer},
    secret::SecretString,
    session::{
        CookieCodec, CookieSettings, FlowKey, LoginFlow, MemoryStore, SessionId, SessionRecord,
        SessionStore, StoreError,
    },
};

use support::{
    BROWSER_ACCEPT, Echo, Echoed, SAMPLE_NICKNAME_HEADER, bounded, builder, cookie_codec,
    cookie_pair, is_identity_header, jwt_issuer, master, memory_store, offline_wechat,
    sample_identity, session_cookie,
};

const PUBLIC_URL: &str = "https://app.example.com/";

/// A layer with the usual test rules: `GET /public/*` and (any method) `/healthz` skip, `/api`
/// is API.
struct Fixture {
    service: WeChatAuth<Echo>,
    echo: Echo,
    store: Arc<MemoryStore>,
    jwt: JwtIssuer,
}

impl Fixture {
    /// `headers: None` leaves the builder's defaults alone.
    fn build(headers: Option<HeaderSettings>, jwt: JwtIssuer) -> Fixture {
        let store = memory_store();
        let mut builder = builder(
            Url::parse(PUBLIC_URL).unwrap(),
            offline_wechat(),
            store.clone(),
        )
        .jwt(jwt.clone())
        .skip(Some(Method::GET), "/public/*")
        .unwrap()
        .skip(None, "/healthz")
        .unwrap()
        .api_prefix("/api");
        if let Some(headers) = headers {
            builder = builder.headers(headers);
        }
        let echo = Echo::new();
        Fixture {
            service: builder.build().unwrap().layer(echo.clone()),
            echo,
            store,
            jwt,
        }
    }

    /// A live session for [`sample_identity`] in the store and the `Cookie` header naming it.
    async fn session(&self) -> (SessionId, String) {
        session_cookie(&self.store, sample_identity()).await
    }

    async fn call(&self, req: Request<Full<Bytes>>) -> Answer {
        let response = bounded(self.service.clone().oneshot(req)).await.unwrap();
        Answer::read(response).await
    }
}

/// The builder's defaults (no `headers(..)` call).
fn fixture() -> Fixture {
    Fixture::build(None, jwt_issuer())
}

fn fixture_with(headers: HeaderSettings) -> Fixture {
    Fixture::build(Some(headers), jwt_issuer())
}

fn plain_headers_on() -> HeaderSettings {
    HeaderSettings {
        plain_headers: true,
        ..HeaderSettings::default()
    }
}

/// A fully read response.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    async fn read(response: Response<ResponseBody<Full<Bytes>>>) -> Answer {
        let (parts, body) = response.into_parts();
        let bytes = bounded(body.collect()).await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    fn echoed(&self) -> Echoed {
        Echoed::parse(&self.body)
            .unwrap_or_else(|| panic!("not an echo: {} {}", self.status, self.body))
    }

    fn reached_inner(&self) -> bool {
        Echoed::parse(&self.body).is_some()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn location(&self) -> String {
        self.headers[header::LOCATION].to_str().unwrap().to_owned()
    }

    fn is_login_redirect(&self) -> bool {
        self.status == StatusCode::FOUND
            && self
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|l| l.contains("/connect/oauth2/authorize"))
    }

    fn is_api_401(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
            && serde_json::from_str::<serde_json::Value>(&self.body)
                .is_ok_and(|v| v["error"] == "unauthenticated" && v["login_url"].is_string())
    }
}

fn request(method: Method, uri: &str) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

fn browser(uri: &str) -> http::request::Builder {
    request(Method::GET, uri).header(header::ACCEPT, BROWSER_ACCEPT)
}

fn empty(builder: http::request::Builder) -> Request<Full<Bytes>> {
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// Every spelling (case, `_` for `-`) of every identity header the layer owns, each twice.
fn forged_headers(mut builder: http::request::Builder) -> http::request::Builder {
    for name in [
        "X-WeChat-Jwt",
        "x-wechat-jwt",
        "x-wechat_jwt",
        "X_WECHAT_JWT",
        "X-WeChat-OpenID",
        "x_wechat_openid",
        "X_WeChat_OpenID",
        "X-WeChat-UnionID",
        "x_wechat_unionid",
        "X-WECHAT-NICKNAME",
        "x-wechat_nickname",
        "X-WeChat-Avatar",
        "x_wechat_avatar",
        "X_WeChat_AppID",
        "x-WeChat-appid",
    ] {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        builder = builder
            .header(name.clone(), "forged-1")
            .header(name, "forged-2");
    }
    builder
}

fn assert_no_forged(echoed: &Echoed) {
    assert!(
        !echoed.headers_text().contains("forged"),
        "a forged value reached the inner service: {}",
        echoed.headers_text()
    );
    for name in echoed.header_names() {
        assert!(
            !name.contains("wechat_"),
            "underscore spelling {name} reached the inner service"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reserved routes and dispatch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reserved_routes_are_answered_by_the_layer() {
    let f = fixture();
    let health = f.call(empty(request(Method::GET, "/_wxauth/health"))).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
    // Percent-encoded spellings of a reserved path are still the reserved path.
    let encoded = f
        .call(empty(request(Method::GET, "/_wxauth/%68ealth")))
        .await;
    assert_eq!(encoded.body, "ok");

    let jwks = f
        .call(empty(request(Method::GET, "/_wxauth/jwks.json")))
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(jwks.json()["keys"][0]["kid"], jwt_issuer().kid());

    let anonymous = f.call(empty(request(Method::GET, "/_wxauth/whoami"))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"], "unauthenticated");
    let (_, cookie) = f.session().await;
    let whoami = f
        .call(empty(
            request(Method::GET, "/_wxauth/whoami").header(header::COOKIE, &cookie),
        ))
        .await;
    assert_eq!(whoami.status, StatusCode::OK);
    let who: Identity = serde_json::from_str(&whoami.body).unwrap();
    assert_eq!(who, sample_identity());
    assert_eq!(whoami.json()["nickname"], "张三 🐼");
    let cookie_value = cookie.split_once('=').unwrap().1;
    assert!(!whoami.body.contains(cookie_value));

    let missing = f.call(empty(request(Method::GET, "/_wxauth/nope"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing_page = f.call(empty(browser("/_wxauth/nothing"))).await;
    assert_eq!(missing_page.status, StatusCode::NOT_FOUND);
    assert!(missing_page.body.contains("页面不存在") && missing_page.body.contains("Not found"));

    let wrong_method = f
        .call(empty(request(Method::DELETE, "/_wxauth/login")))
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.headers.contains_key(header::ALLOW));
    let events = f.call(empty(request(Method::GET, "/_wxauth/events"))).await;
    assert_eq!(events.status, StatusCode::METHOD_NOT_ALLOWED);

    // No component token yet (WeChat is unreachable): not ready, with reasons.
    let ready = f.call(empty(request(Method::GET, "/_wxauth/ready"))).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);

    for answer in [
        &health,
        &jwks,
        &anonymous,
        &whoami,
        &missing,
        &missing_page,
        &wrong_method,
        &ready,
    ] {
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    }
    // A reserved path never reaches the inner service, even with a session.
    let unknown = f
        .call(empty(browser("/_wxauth/x").header(header::COOKIE, &cookie)))
        .await;
    assert!(!unknown.reached_inner());
    assert_eq!(
        f.echo.calls(),
        0,
        "reserved routes never reach the inner service"
    );
}

#[tokio::test]
async fn no_session_browser_navigation_is_redirected_to_wechat() {
    let f = fixture();
    let answer = f.call(empty(browser("/private/page?x=1"))).await;
    assert!(
        answer.is_login_redirect(),
        "{} {}",
        answer.status,
        answer.body
    );
    let location = Url::parse(&answer.location()).unwrap();
    let params: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(
        params["redirect_uri"],
        "https://app.example.com/_wxauth/callback"
    );
    assert_eq!(params["scope"], "snsapi_userinfo");
    assert_eq!(params["component_appid"], "wx0123456789abcdef");
    assert!(params["state"].len() >= 22, "≥128 bits of state");
    let set_cookie = answer.headers.get_all(header::SET_COOKIE).iter().count();
    assert_eq!(set_cookie, 1, "the flow cookie");
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");

    // Two logins get two different states.
    let again = f.call(empty(browser("/private/page?x=1"))).await;
    assert_ne!(again.location(), answer.location());
    assert_eq!(f.echo.calls(), 0);
}

/// Method, URI, headers, and whether it is a browser navigation (else an API call).
type Case = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
);

#[tokio::test]
async fn browsers_are_redirected_and_api_clients_get_401_json() {
    let f = fixture();
    let cases: &[Case] = &[
        (
            Method::GET,
            "/page?a=1",
            &[("accept", BROWSER_ACCEPT)],
            true,
        ),
        (
            Method::HEAD,
            "/page?a=1",
            &[("accept", BROWSER_ACCEPT)],
            true,
        ),
        (Method::HEAD, "/page?a=1", &[("accept", "text/html")], true),
        (Method::GET, "/page?a=1", &[("accept", "text/html")], true),
        (Method::GET, "/page?a=1", &[("accept", "text/*")], true),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "application/json;q=0.5, text/html")],
            true,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "TEXT/HTML; Q=1.0")],
            true,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "text/*;q=0.9, application/json;q=0.8")],
            true,
        ),
        (Method::GET, "/apidocs", &[("accept", BROWSER_ACCEPT)], true),
        (Method::GET, "/page?a=1", &[], false),
        (Method::GET, "/page?a=1", &[("accept", "*/*")], false),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "application/json")],
            false,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "application/json, text/html;q=0.9")],
            false,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "text/html;q=0")],
            false,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", "text/html;q=0.5, application/json;q=0.6")],
            false,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[
                ("accept", BROWSER_ACCEPT),
                ("x-requested-with", "XMLHttpRequest"),
            ],
            false,
        ),
        (
            Method::GET,
            "/page?a=1",
            &[("accept", BROWSER_ACCEPT), ("sec-fetch-mode", "cors")],
            false,
        ),
        (
            Method::GET,
            "/api/things",
            &[("accept", BROWSER_ACCEPT)],
            false,
        ),
        (Method::GET, "/api", &[("accept", BROWSER_ACCEPT)], false),
    ];
    for (method, uri, headers, navigation) in cases {
        let mut req = request(method.clone(), uri);
        for (name, value) in *headers {
            req = req.header(*name, *value);
        }
        let a = f.call(empty(req)).await;
        let what = format!("{method} {uri} {headers:?}: {} {}", a.status, a.body);
        assert!(!a.reached_inner(), "{what}");
        assert_eq!(a.headers[header::CACHE_CONTROL], "no-store", "{what}");
        if *navigation {
            // Straight into the login flow: WeChat's authorize page plus a flow cookie.
            assert!(a.is_login_redirect(), "{what}");
            let location = a.location();
            assert!(
                location.starts_with("http://127.0.0.1:9/connect/oauth2/authorize?"),
                "{location}"
            );
            assert!(
                location
                    .contains("redirect_uri=https%3A%2F%2Fapp.example.com%2F_wxauth%2Fcallback")
            );
            assert!(location.ends_with("#wechat_redirect"));
            let set_cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
            assert!(set_cookie.starts_with("wxauth_flow="), "{set_cookie}");
        } else {
            assert!(a.is_api_401(), "{what}");
            let login = a.json()["login_url"].as_str().unwrap().to_owned();
            assert!(login.starts_with("/_wxauth/login?return="), "{login}");
            if *uri == "/page?a=1" {
                // A login URL that returns to the same page.
                assert_eq!(login, "/_wxauth/login?return=%2Fpage%3Fa%3D1");
            }
            assert!(
                a.headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
        }
    }

    // A POST is never redirected (its body would be lost), whatever it accepts.
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let req = request(method.clone(), "/form")
            .header(header::ACCEPT, BROWSER_ACCEPT)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"field=value")))
            .unwrap();
        let a = f.call(req).await;
        assert!(a.is_api_401(), "{method}: {} {}", a.status, a.body);
        assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    }
    assert_eq!(f.echo.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Skip rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn skip_rules_match_the_normalized_path_only() {
    let f = fixture();
    for (uri, forwarded) in [
        ("/public/app.css", "/public/app.css"),
        ("/public", "/public"),
        ("/public/", "/public/"),
        ("/public/a/../b", "/public/b"),
        ("/public/a/../b.css", "/public/b.css"),
        ("/public/./x", "/public/x"),
        ("/%70ublic/x", "/public/x"),
        ("/private/../public/x", "/public/x"),
        ("/private/%2e%2E/public/x", "/public/x"),
        ("/public//x", "/public/x"),
        ("/public/x?/private", "/public/x"),
    ] {
        // Whatever the client accepts.
        for req in [browser(uri), request(Method::GET, uri)] {
            let calls = f.echo.calls();
            let a = f.call(empty(req)).await;
            assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.body);
            assert_eq!(f.echo.calls(), calls + 1, "{uri}");
            assert!(a.echoed().identity().is_none());
            // The inner service receives the path that was judged public, never the raw one.
            assert_eq!(a.echoed().path(), forwarded, "{uri}");
        }
    }
    // HEAD is covered by a GET rule; POST is not.
    let head = f.call(empty(request(Method::HEAD, "/public/x"))).await;
    assert_eq!(head.status, StatusCode::OK);
    let post = f.call(empty(request(Method::POST, "/public/x"))).await;
    assert!(post.is_api_401());
    // Any-method rule.
    let delete = f.call(empty(request(Method::DELETE, "/healthz"))).await;
    assert_eq!(delete.status, StatusCode::OK);

    // No unambiguous normal form: refused on every path class, never passed on.
    for uri in [
        "/public%2F..%2Fprivate",
        "/public/..%2Fprivate",
        "/public/..%2fprivate",
        "/public%2fx",
        "/public/..%5Cprivate",
        "/public/..;/private",
        "/public/%00",
        "/public%00/x",
        "/public/%zz",
        "/private/%ff",
    ] {
        let calls = f.echo.calls();
        for req in [browser(uri), request(Method::GET, uri)] {
            let a = f.call(empty(req)).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
        }
        assert_eq!(f.echo.calls(), calls, "{uri} reached the inner service");
    }

    for uri in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/.%2e/private",
        "/publicity",
        "/private?/public/x",
        "/private?x=/public/",
        "/private?p=/public/x",
        "/healthz/x",
        "/healthz/",
    ] {
        let calls = f.echo.calls();
        let a = f.call(empty(browser(uri))).await;
        assert!(
            a.is_login_redirect(),
            "{uri} must be protected: {}",
            a.status
        );
        let a = f.call(empty(request(Method::GET, uri))).await;
        assert!(a.is_api_401(), "{uri} must be protected: {}", a.status);
        assert_eq!(f.echo.calls(), calls, "{uri} reached the inner service");
    }
}

#[tokio::test]
async fn skip_rules_never_depend_on_headers() {
    let f = fixture();
    let mut req = request(Method::GET, "/private");
    for (name, value) in [
        ("x-original-url", "/public/x"),
        ("x-rewrite-url", "/public/x"),
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-prefix", "/public"),
        ("user-agent", "kube-probe/1.29"),
    ] {
        req = req.header(name, value);
    }
    let a = f.call(empty(req)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.echo.calls(), 0);
}

#[tokio::test]
async fn cors_preflights_pass_only_when_enabled_and_never_carry_an_identity() {
    let preflight = || {
        forged_headers(request(Method::OPTIONS, "/api/orders"))
            .header(header::ORIGIN, "https://app.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
    };
    // Off (the default): a preflight is an anonymous API request.
    let f = fixture();
    assert!(f.call(empty(preflight())).await.is_api_401());
    assert_eq!(f.echo.calls(), 0);

    let echo = Echo::new();
    let service = builder(
        Url::parse(PUBLIC_URL).unwrap(),
        offline_wechat(),
        memory_store(),
    )
    .jwt(jwt_issuer())
    .skip_preflight(true)
    .build()
    .unwrap()
    .layer(echo.clone());
    let call = |req: Request<Full<Bytes>>| {
        let service = service.clone();
        async move { Answer::read(bounded(service.oneshot(req)).await.unwrap()).await }
    };
    // On: the upstream answers the preflight, without any identity (forged ones stripped).
    let echoed = call(empty(preflight())).await.echoed();
    assert_no_forged(&echoed);
    assert!(echoed.identity().is_none());
    assert_eq!(echo.calls(), 1);
    // Not preflights: another method, or an OPTIONS that carries a body.
    assert!(
        call(empty(preflight().method(Method::POST)))
            .await
            .is_api_401()
    );
    let with_body = preflight()
        .header(header::CONTENT_LENGTH, "5")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert!(call(with_body).await.is_api_401());
    assert_eq!(echo.calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// Header hygiene
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn identity_headers_are_stripped_on_skipped_paths() {
    let f = fixture_with(plain_headers_on());
    let a = f
        .call(empty(
            forged_headers(browser("/public/x")).header("x-other", "kept"),
        ))
        .await;
    let echoed = a.echoed();
    assert_no_forged(&echoed);
    assert!(
        echoed.header_names().iter().all(|n| !is_identity_header(n)),
        "{:?}",
        echoed.header_names()
    );
    assert_eq!(echoed.header("x-other").as_deref(), Some("kept"));
    assert!(echoed.identity().is_none());
}

#[tokio::test]
async fn identity_headers_are_replaced_on_protected_paths_with_a_session() {
    let f = fixture_with(plain_headers_on());
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(
            forged_headers(browser("/private")).header(header::COOKIE, &cookie),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let echoed = a.echoed();
    assert_no_forged(&echoed);
    for name in [
        "x-wechat-jwt",
        "x-wechat-openid",
        "x-wechat-unionid",
        "x-wechat-nickname",
        "x-wechat-avatar",
        "x-wechat-appid",
    ] {
        assert_eq!(echoed.header_values(name).len(), 1, "{name}");
    }
    let identity = sample_identity();
    assert_eq!(
        echoed.header("x-wechat-openid").as_deref(),
        Some(identity.openid.as_str())
    );
    assert_eq!(
        echoed.header("x-wechat-unionid").as_deref(),
        identity.unionid.as_ref().map(|u| u.as_str())
    );
    // Percent-encoded UTF-8 (CJK, the space, the emoji).
    assert_eq!(
        echoed.header("x-wechat-nickname").as_deref(),
        Some(SAMPLE_NICKNAME_HEADER)
    );
    let claims = jwt_issuer().verify(&echoed.jwt()).expect("a JWT we issued");
    assert_eq!(claims.nickname, "张三 🐼");
    assert_eq!(claims.openid, identity.openid);
    assert_eq!(
        echoed.identity(),
        Some(identity),
        "Identity in the extensions"
    );
}

#[tokio::test]
async fn identity_headers_do_not_help_without_a_session() {
    let f = fixture();
    // Browser: still redirected; API: still 401; whoami: still 401. Nothing reaches the inner
    // service.
    let a = f.call(empty(forged_headers(browser("/private")))).await;
    assert!(a.is_login_redirect());
    let a = f
        .call(empty(forged_headers(request(Method::GET, "/api/x"))))
        .await;
    assert!(a.is_api_401());
    let a = f
        .call(empty(forged_headers(request(
            Method::GET,
            "/_wxauth/whoami",
        ))))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(!a.body.contains("forged"));
    assert_eq!(f.echo.calls(), 0);
}

#[tokio::test]
async fn plain_headers_are_off_by_default_and_only_the_jwt_is_sent() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(browser("/private").header(header::COOKIE, &cookie)))
        .await;
    let echoed = a.echoed();
    assert_eq!(echoed.header_values("x-wechat-jwt").len(), 1);
    for name in echoed.header_names() {
        assert!(
            name == "x-wechat-jwt" || !is_identity_header(&name),
            "{name} sent with plain headers off"
        );
    }
    assert_eq!(echoed.identity(), Some(sample_identity()));
}

#[tokio::test]
async fn authorization_bearer_carrier_replaces_the_clients_authorization() {
    // The issuer may or may not already prefix `Bearer `: exactly one prefix either way.
    for prefix in ["", "Bearer "] {
        let issuer = JwtIssuer::new(
            JwtSettings {
                value_prefix: prefix.to_owned(),
                ..JwtSettings::default()
            },
            &master(),
        )
        .unwrap();
        let f = Fixture::build(
            Some(HeaderSettings {
                jwt: JwtCarrier::AuthorizationBearer,
                plain_headers: false,
            }),
            issuer,
        );
        // Skipped path: every client Authorization is removed (the upstream would trust it).
        let a = f
            .call(empty(
                browser("/public/x")
                    .header(header::AUTHORIZATION, "Bearer forged")
                    .header(header::AUTHORIZATION, "Basic forged"),
            ))
            .await;
        assert!(
            a.echoed().header("authorization").is_none(),
            "prefix {prefix:?}"
        );
        // Session: exactly one Authorization, ours.
        let (_, cookie) = f.session().await;
        let a = f
            .call(empty(
                browser("/private")
                    .header(header::AUTHORIZATION, "Bearer forged")
                    .header("x_wechat_jwt", "forged")
                    .header(header::COOKIE, &cookie),
            ))
            .await;
        let echoed = a.echoed();
        let auth = echoed.header_values("authorization");
        assert_eq!(auth.len(), 1, "prefix {prefix:?}");
        let token = auth[0].strip_prefix("Bearer ").expect("bearer");
        assert_eq!(
            f.jwt.verify(token).expect("one prefix, our JWT").openid,
            sample_identity().openid
        );
        assert_no_forged(&echoed);
        assert!(echoed.header("x-wechat-jwt").is_none());
    }
}

#[tokio::test]
async fn authorization_is_kept_when_it_does_not_carry_the_jwt() {
    let f = fixture();
    let a = f
        .call(empty(
            browser("/public/x").header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz"),
        ))
        .await;
    assert_eq!(
        a.echoed().header_values("authorization"),
        vec!["Basic dXNlcjpwYXNz"]
    );
}

#[tokio::test]
async fn custom_jwt_header_and_default_one_are_both_stripped() {
    let f = fixture_with(HeaderSettings {
        jwt: JwtCarrier::Header(HeaderName::from_static("x-user-token")),
        plain_headers: false,
    });
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(
            browser("/private")
                .header("X_User_Token", "forged")
                .header("x-user-token", "forged")
                .header("x-wechat-jwt", "forged")
                .header(header::COOKIE, &cookie),
        ))
        .await;
    let echoed = a.echoed();
    assert_no_forged(&echoed);
    assert_eq!(echoed.header_values("x-user-token").len(), 1);
    assert!(echoed.header("x-wechat-jwt").is_none());
    assert!(echoed.header("x_user_token").is_none());
}

#[derive(Clone, Debug)]
struct Marker(&'static str);

#[tokio::test]
async fn request_extensions_are_preserved() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let layer = builder(
        Url::parse(PUBLIC_URL).unwrap(),
        offline_wechat(),
        f.store.clone(),
    )
    .skip(Some(Method::GET), "/public/*")
    .unwrap()
    .build()
    .unwrap();
    for (uri, cookie) in [("/public/x", ""), ("/private", cookie.as_str())] {
        let mut req = empty(request(Method::GET, uri).header(header::COOKIE, cookie));
        req.extensions_mut().insert(Marker("kept"));
        let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let marker = req
                .extensions()
                .get::<Marker>()
                .map(|m| m.0)
                .unwrap_or("lost");
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(marker))))
        }));
        let response = bounded(service.oneshot(req)).await.unwrap();
        let body = bounded(response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "kept", "{uri}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and cookies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_reaches_the_inner_service_without_the_proxy_cookies() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(browser("/private?q=1").header(
            header::COOKIE,
            format!("theme=dark; {cookie}; wxauth_flow=abc; lang=zh"),
        )))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let echoed = a.echoed();
    assert_eq!(echoed.header_values("cookie"), vec!["theme=dark; lang=zh"]);
    assert_eq!(echoed.identity(), Some(sample_identity()));

    // A POST body with a session arrives intact.
    let body = vec![b'z'; 100_000];
    let req = request(Method::POST, "/private/upload")
        .header(header::COOKIE, &cookie)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let a = f.call(req).await;
    assert_eq!(a.echoed().body_len(), 100_000);

    // Skipped paths lose the proxy cookies too.
    let a = f
        .call(empty(
            browser("/public/x").header(header::COOKIE, format!("{cookie}; a=b")),
        ))
        .await;
    assert_eq!(a.echoed().header_values("cookie"), vec!["a=b"]);
}

#[tokio::test]
async fn tampered_truncated_foreign_and_unknown_cookies_are_no_session() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let (name, value) = cookie.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // Encrypted under another master secret.
    let other = CookieCodec::new(
        &SecretString::new("another master secret, also 32 bytes or more"),
        support::cookie_settings(),
    )
    .unwrap();
    let foreign = cookie_pair(&other.session_cookie(&SessionId::generate()));
    // Correctly encrypted, but the session does not exist.
    let unknown = cookie_pair(&cookie_codec().session_cookie(&SessionId::generate()));
    let candidates = [
        format!("{name}={flipped}"),
        format!("{name}={}", &value[..value.len() - 4]),
        format!("{name}={}", &value[..10]),
        format!("{name}="),
        format!("{name}={value}%00"),
        format!("{name}={}", SessionId::generate().expose_secret()),
        foreign,
        unknown,
    ];
    for candidate in candidates {
        let a = f
            .call(empty(
                browser("/private").header(header::COOKIE, &candidate),
            ))
            .await;
        assert!(
            a.is_login_redirect(),
            "{candidate}: {} {}",
            a.status,
            a.body
        );
        let a = f
            .call(empty(
                request(Method::GET, "/_wxauth/whoami").header(header::COOKIE, &candidate),
            ))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{candidate}");
    }
    assert_eq!(f.echo.calls(), 0);
    // The genuine cookie still works.
    let a = f
        .call(empty(browser("/private").header(header::COOKIE, &cookie)))
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn header_values_that_are_not_utf8_do_not_break_anything() {
    let f = fixture();
    let a = f
        .call(empty(browser("/public/x").header(
            header::COOKIE,
            HeaderValue::from_bytes(b"a=\xff\xfe; wxauth_session=x").unwrap(),
        )))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // The non-ASCII Cookie header cannot be proven free of our cookies: dropped.
    assert!(a.echoed().header("cookie").is_none());
}

#[tokio::test]
async fn logout_deletes_the_session_and_clears_the_cookie() {
    let f = fixture();
    let (id, cookie) = f.session().await;
    let a = f
        .call(empty(
            browser("/_wxauth/logout?return=/bye").header(header::COOKIE, &cookie),
        ))
        .await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.location(), "/bye");
    let removal = a.headers[header::SET_COOKIE].to_str().unwrap();
    let parsed = cookie::Cookie::parse(removal).unwrap();
    assert_eq!(parsed.value(), "");
    assert_eq!(parsed.max_age(), Some(cookie::time::Duration::ZERO));
    assert!(bounded(f.store.load(&id)).await.unwrap().is_none());
    let a = f
        .call(empty(browser("/private").header(header::COOKIE, &cookie)))
        .await;
    assert!(a.is_login_redirect());

    // An unsafe return target ends on "/".
    let a = f
        .call(empty(browser("/_wxauth/logout?return=//evil.example")))
        .await;
    assert_eq!(a.location(), "/");
}

#[tokio::test]
async fn login_refuses_open_redirects_into_the_flow() {
    let f = fixture();
    for (evil, stored) in [
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2F%250d%250aSet-Cookie%3Ax", "/"),
        ("%2F%2509%2Fevil.example", "/"),
        ("%2Fok%3Fa%3D1", "/ok?a=1"),
    ] {
        let a = f
            .call(empty(request(
                Method::GET,
                &format!("/_wxauth/login?return={evil}"),
            )))
            .await;
        assert_eq!(a.status, StatusCode::FOUND);
        let location = Url::parse(&a.location()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .expect("state")
            .1
            .into_owned();
        assert_eq!(state.len(), 32);
        // The pending flow lives in the flow cookie (nothing on the server).
        let mut sent = HeaderMap::new();
        sent.insert(
            header::COOKIE,
            cookie_pair(&a.headers[header::SET_COOKIE]).parse().unwrap(),
        );
        let pending = cookie_codec().read_flow(&sent).expect("flow cookie");
        assert_eq!(pending.len(), 1);
        let flow: &LoginFlow = &pending.flows()[0];
        assert_eq!(flow.return_path.as_str(), stored, "return={evil}");
    }
}

#[tokio::test]
async fn login_start_keeps_the_session_until_the_callback_replaces_it() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(
            request(Method::GET, "/_wxauth/login?return=/x").header(header::COOKIE, &cookie),
        ))
        .await;
    assert_eq!(a.status, StatusCode::FOUND);
    let cookies: Vec<_> = a
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().all(|c| c.starts_with("wxauth_flow=")),
        "{cookies:?}"
    );
    // An abandoned login does not log the user out.
    let a = f
        .call(empty(
            request(Method::GET, "/private").header(header::COOKIE, &cookie),
        ))
        .await;
    assert!(a.reached_inner());
}

#[tokio::test]
async fn flow_cookie_keeps_at_most_three_pending_logins() {
    let f = fixture();
    let mut flow_cookie = String::new();
    let mut sizes = Vec::new();
    for _ in 0..6 {
        let a = f
            .call(empty(
                request(Method::GET, "/_wxauth/login").header(header::COOKIE, &flow_cookie),
            ))
            .await;
        flow_cookie = cookie_pair(&a.headers[header::SET_COOKIE]);
        sizes.push(flow_cookie.len());
    }
    assert_eq!(
        sizes[3], sizes[5],
        "the cookie stops growing after three flows: {sizes:?}"
    );
    assert!(sizes[0] < sizes[2]);
}

// ---------------------------------------------------------------------------------------------
// A failing session store
// ---------------------------------------------------------------------------------------------

/// A session store that fails every call while `down` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<MemoryStore>,
    down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Backend("redis at 10.9.8.7:6379 refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for FlakyStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        self.check()?;
        self.inner.create(record).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.check()?;
        self.inner.load(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.touch(id).await
    }
    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.consume_flow(key, ttl).await
    }
    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.remember_completed(key, session, ttl).await
    }
    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        self.check()?;
        self.inner.completed(key).await
    }
    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.end_sessions_of(appid).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_failing_session_store_fails_closed_without_leaking_details() {
    let memory = memory_store();
    let store = Arc::new(FlakyStore {
        inner: memory.clone(),
        down: AtomicBool::new(false),
    });
    let layer = builder(
        Url::parse(PUBLIC_URL).unwrap(),
        offline_wechat(),
        store.clone(),
    )
    .skip(Some(Method::GET), "/public/*")
    .unwrap()
    .build()
    .unwrap();
    let echo = Echo::new();
    let service = layer.layer(echo.clone());
    let (_, cookie) = session_cookie(&memory, sample_identity()).await;
    let call = |req: Request<Full<Bytes>>| {
        let service = service.clone();
        async move { Answer::read(bounded(service.oneshot(req)).await.unwrap()).await }
    };
    assert_eq!(
        call(empty(browser("/p").header(header::COOKIE, &cookie)))
            .await
            .status,
        StatusCode::OK
    );

    store.down.store(true, Ordering::SeqCst);
    let page = call(empty(browser("/p").header(header::COOKIE, &cookie))).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("<html"), "browsers get a page");
    assert!(!page.reached_inner());
    let api = call(empty(
        request(Method::GET, "/p").header(header::COOKIE, &cookie),
    ))
    .await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.json()["error"], "session_store_unavailable");
    // Without a cookie the store is not consulted at all: a login start stores nothing (the
    // pending flow is in the flow cookie), so it still goes to WeChat; its callback fails
    // closed while the store is down.
    let login = call(empty(browser("/p"))).await;
    assert!(login.is_login_redirect(), "{}", login.status);
    let ready = call(empty(request(Method::GET, "/_wxauth/ready"))).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    assert!(
        ready.body.contains("session store unreachable"),
        "{}",
        ready.body
    );
    // Skipped paths do not need the store.
    assert_eq!(
        call(empty(browser("/public/x"))).await.status,
        StatusCode::OK
    );
    for answer in [&page, &api, &login, &ready] {
        assert!(!answer.body.contains("10.9.8.7"), "{}", answer.body);
        assert!(!answer.body.contains("refused"), "{}", answer.body);
    }
    assert_eq!(
        echo.calls(),
        2,
        "only the healthy request and the skipped one"
    );
}

// ---------------------------------------------------------------------------------------------
// The tower contract and the builder
// ---------------------------------------------------------------------------------------------

/// An inner service that must be polled ready before each call, and remembers it per instance.
#[derive(Clone)]
struct MustBeReady {
    ready: bool,
    allow: Arc<AtomicBool>,
}

impl Service<Request<Full<Bytes>>> for MustBeReady {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.allow.load(Ordering::SeqCst) {
            self.ready = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        assert!(self.ready, "called an instance that was not polled ready");
        self.ready = false;
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"inner")))))
    }
}

#[tokio::test]
async fn poll_ready_delegates_and_the_ready_instance_is_called() {
    let layer = builder(
        Url::parse(PUBLIC_URL).unwrap(),
        offline_wechat(),
        memory_store(),
    )
    .skip(Some(Method::GET), "/public/*")
    .unwrap()
    .build()
    .unwrap();
    let allow = Arc::new(AtomicBool::new(false));
    let mut service = layer.layer(MustBeReady {
        ready: false,
        allow: allow.clone(),
    });
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(
        service.poll_ready(&mut cx).is_pending(),
        "backpressure passes through"
    );
    allow.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let ready = bounded(service.ready()).await.expect("ready");
        let response = bounded(ready.call(empty(request(Method::GET, "/public/x"))))
            .await
            .expect("ok");
        let body = bounded(response.into_body().collect())
            .await
            .expect("infallible")
            .to_bytes();
        assert_eq!(body, "inner");
    }
}

#[tokio::test]
async fn the_builder_validates() {
    // Collaborators only: no public URL (non-Secure cookies, so the development placeholder).
    let base = || {
        WeChatAuthLayer::builder()
            .wechat(offline_wechat())
            .sessions(memory_store())
            .cookie_codec(cookie_codec())
            .jwt(jwt_issuer())
    };
    let secure = CookieCodec::new(&master(), CookieSettings::default()).expect("codec");
    assert!(matches!(
        WeChatAuthLayer::builder().build(),
        Err(BuildError::Missing(_))
    ));
    // With Secure (production) cookies a forgotten public URL is an error; in development the
    // placeholder is used.
    assert!(matches!(
        base().cookie_codec(secure.clone()).build(),
        Err(BuildError::Missing("public_url"))
    ));
    assert!(base().build().is_ok());
    assert!(base().prefix("no-slash").build().is_err());
    assert!(base().skip(None, "relative/*").is_err());
    let https = || base().public_url("https://app.example.com".parse().expect("url"));
    assert!(https().build().is_ok());
    for bad in ["_wxauth", "no-slash", "/", "/a/../b"] {
        assert!(
            matches!(https().prefix(bad).build(), Err(BuildError::InvalidPrefix)),
            "{bad}"
        );
    }
    let trailing = https()
        .prefix("/auth/")
        .build()
        .expect("a trailing '/' is tolerated");
    assert_eq!(
        trailing.callback_url(),
        "https://app.example.com/auth/callback"
    );
    // The custom prefix answers; the default one is then an ordinary protected path.
    let svc = trailing.layer(Echo::new());
    let a = bounded(
        svc.clone()
            .oneshot(empty(request(Method::GET, "/auth/health"))),
    )
    .await
    .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let a = bounded(svc.oneshot(empty(request(Method::GET, "/_wxauth/health"))))
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::UNAUTHORIZED);

    for bad in ["/a/../b", "/a%2fb", "/pub*", "relative/*"] {
        assert!(
            matches!(
                https().skip(Method::GET, bad),
                Err(BuildError::InvalidSkipRule { .. })
            ),
            "{bad}"
        );
        assert!(
            matches!(
                https().skip(None, bad),
                Err(BuildError::InvalidSkipRule { .. })
            ),
            "{bad}"
        );
    }
    assert!(https().skip(Method::GET, "/public/*").is_ok());
    assert!(
        https().api_prefix("api").build().is_err(),
        "would never match a path"
    );
    assert!(https().api_prefix("/api/").build().is_ok());
    for bad in [
        "https://app.example.com/base",
        "https://app.example.com/?x=1",
        "ftp://app.example.com",
    ] {
        let built = base().public_url(bad.parse().expect("url")).build();
        assert!(
            matches!(built, Err(BuildError::InvalidPublicUrl(_))),
            "{bad}"
        );
    }
    // http:// only with non-Secure cookies (development).
    assert!(
        base()
            .public_url("http://127.0.0.1:8080".parse().expect("url"))
            .build()
            .is_ok()
    );
    let built = https()
        .cookie_codec(secure.clone())
        .public_url("http://127.0.0.1:8080".parse().expect("url"))
        .build();
    assert!(matches!(built, Err(BuildError::InvalidPublicUrl(_))));
    let layer = https().cookies(secure).build().expect("https + Secure");
    assert_eq!(
        layer.callback_url(),
        "https://app.example.com/_wxauth/callback"
    );
    assert_eq!(layer.events_url(), "https://app.example.com/_wxauth/events");
    assert!(matches!(
        https().flow_ttl(Duration::from_secs(3600)).build(),
        Err(BuildError::InvalidFlowTtl)
    ));
}
