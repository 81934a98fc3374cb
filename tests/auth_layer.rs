//! `WeChatAuth<S>` driven with `tower::ServiceExt::oneshot` around an echo service: dispatch,
//! header hygiene, browser vs API answers, skip-rule normalization, sessions and cookies.
//!
//! No sockets: the WeChat side points at a closed port, since none of these paths calls WeChat.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth_support;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tower::{Layer as _, ServiceExt as _};
use url::Url;
use wechat_oauth_proxy::{
    Identity,
    identity::{HeaderSettings, JwtCarrier},
    layer::{ResponseBody, WeChatAuth, WeChatAuthLayer},
    session::{MemoryStore, SessionId, SessionRecord, SessionStore},
};

use auth_support::{
    BROWSER_ACCEPT, Echo, Echoed, bounded, builder, cookie_codec, cookie_pair, jwt_issuer,
    memory_store, offline_wechat,
};

const PUBLIC_URL: &str = "https://app.example.com/";

/// A layer with the usual test rules: `GET /public/*` and `/healthz` skip, `/api` is API.
struct Fixture {
    service: WeChatAuth<Echo>,
    echo: Echo,
    store: Arc<MemoryStore>,
}

fn fixture_with(headers: HeaderSettings) -> Fixture {
    let store = memory_store();
    let layer = builder(
        Url::parse(PUBLIC_URL).unwrap(),
        offline_wechat(),
        store.clone(),
    )
    .skip(Some(Method::GET), "/public/*")
    .unwrap()
    .skip(None, "/healthz")
    .unwrap()
    .api_prefix("/api")
    .headers(headers)
    .build()
    .unwrap();
    let echo = Echo::new();
    Fixture {
        service: layer.layer(echo.clone()),
        echo,
        store,
    }
}

fn fixture() -> Fixture {
    fixture_with(HeaderSettings::default())
}

fn identity() -> Identity {
    Identity {
        openid: "o9AgO5Alice-SimUser-8nF2kQ4x".into(),
        unionid: Some("o6_bmAliceSimUnionid-7Hd3Lp2q".into()),
        nickname: "Alice 🌸".into(),
        avatar: "https://thirdwx.qlogo.cn/a/132".into(),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: "snsapi_userinfo".into(),
    }
}

impl Fixture {
    /// A live session in the store and the `Cookie` header that names it.
    async fn session(&self) -> (SessionId, String) {
        let id = bounded(self.store.create(SessionRecord::new(identity())))
            .await
            .unwrap();
        let cookie = cookie_pair(&cookie_codec().session_cookie(&id));
        (id, cookie)
    }

    async fn call(&self, req: Request<Full<Bytes>>) -> Answer {
        let response = bounded(self.service.clone().oneshot(req)).await.unwrap();
        Answer::read(response).await
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

/// Every spelling of every identity header the layer owns, each twice.
fn forged_headers(mut builder: http::request::Builder) -> http::request::Builder {
    for name in [
        "X-WeChat-OpenID",
        "x_wechat_openid",
        "X_WECHAT_JWT",
        "x-wechat-jwt",
        "X-WeChat-UnionID",
        "x_wechat_unionid",
        "X-WECHAT-NICKNAME",
        "x_wechat_avatar",
        "X_WeChat_AppID",
    ] {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        builder = builder
            .header(name.clone(), "forged-1")
            .header(name, "forged-2");
    }
    builder
}

fn assert_no_forged(echoed: &Echoed) {
    for name in echoed.header_names() {
        for value in echoed.header_values(&name) {
            assert!(
                !value.contains("forged"),
                "{name}: {value} reached the inner service"
            );
        }
        assert!(
            !name.contains("wechat_"),
            "underscore spelling {name} reached the inner service"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reserved_routes_are_answered_by_the_layer() {
    let f = fixture();
    let health = f.call(empty(request(Method::GET, "/_wxauth/health"))).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok");

    let jwks = f
        .call(empty(request(Method::GET, "/_wxauth/jwks.json")))
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    let keys = jwks.json();
    assert_eq!(keys["keys"][0]["kid"], jwt_issuer().kid());

    let whoami = f.call(empty(request(Method::GET, "/_wxauth/whoami"))).await;
    assert_eq!(whoami.status, StatusCode::UNAUTHORIZED);

    let missing = f.call(empty(request(Method::GET, "/_wxauth/nope"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let wrong_method = f
        .call(empty(request(Method::DELETE, "/_wxauth/login")))
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.headers.contains_key(header::ALLOW));

    // Percent-encoded spellings of a reserved path are still the reserved path.
    let encoded = f
        .call(empty(request(Method::GET, "/_wxauth/%68ealth")))
        .await;
    assert_eq!(encoded.body, "ok");

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

#[tokio::test]
async fn browser_or_api_is_decided_by_method_accept_xhr_and_prefix() {
    let f = fixture();
    // Browser navigations.
    for accept in [
        BROWSER_ACCEPT,
        "text/html",
        "text/*",
        "application/json;q=0.5, text/html",
        "TEXT/HTML; Q=1.0",
    ] {
        let a = f
            .call(empty(
                request(Method::GET, "/p").header(header::ACCEPT, accept),
            ))
            .await;
        assert!(a.is_login_redirect(), "Accept {accept}: {}", a.status);
    }
    let head = f
        .call(empty(
            request(Method::HEAD, "/p").header(header::ACCEPT, "text/html"),
        ))
        .await;
    assert!(head.is_login_redirect());

    // API clients: 401 JSON with a login URL that returns to the same page.
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html;q=0.9"),
        Some("text/html;q=0"),
        Some("text/html;q=0.5, application/json;q=0.6"),
    ] {
        let mut req = request(Method::GET, "/p?a=1");
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT, accept);
        }
        let a = f.call(empty(req)).await;
        assert!(a.is_api_401(), "Accept {accept:?}: {} {}", a.status, a.body);
        assert_eq!(a.json()["login_url"], "/_wxauth/login?return=%2Fp%3Fa%3D1");
        assert!(
            a.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    let xhr = f
        .call(empty(
            browser("/p").header("X-Requested-With", "XMLHttpRequest"),
        ))
        .await;
    assert!(xhr.is_api_401());
    let fetch = f
        .call(empty(browser("/p").header("Sec-Fetch-Mode", "cors")))
        .await;
    assert!(fetch.is_api_401());
    let api = f.call(empty(browser("/api/things"))).await;
    assert!(api.is_api_401());
    let api_root = f.call(empty(browser("/api"))).await;
    assert!(api_root.is_api_401());
    let not_api = f.call(empty(browser("/apidocs"))).await;
    assert!(not_api.is_login_redirect());

    // A POST is never redirected (its body would be lost), whatever it accepts.
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let req = request(method.clone(), "/form")
            .header(header::ACCEPT, BROWSER_ACCEPT)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"field=value")))
            .unwrap();
        let a = f.call(req).await;
        assert!(a.is_api_401(), "{method}: {} {}", a.status, a.body);
    }
    assert_eq!(f.echo.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Skip rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn skip_rules_match_the_normalized_path_only() {
    let f = fixture();
    for uri in [
        "/public/app.css",
        "/public",
        "/public/",
        "/public/a/../b",
        "/public/./x",
        "/%70ublic/x",
        "/private/../public/x",
        "/public/x?/private",
    ] {
        let calls = f.echo.calls();
        let a = f.call(empty(browser(uri))).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.body);
        assert_eq!(f.echo.calls(), calls + 1, "{uri}");
        assert!(a.echoed().identity().is_none());
    }
    // HEAD is covered by a GET rule; POST is not.
    let head = f.call(empty(request(Method::HEAD, "/public/x"))).await;
    assert_eq!(head.status, StatusCode::OK);
    let post = f.call(empty(request(Method::POST, "/public/x"))).await;
    assert!(post.is_api_401());
    // Any-method rule.
    let delete = f.call(empty(request(Method::DELETE, "/healthz"))).await;
    assert_eq!(delete.status, StatusCode::OK);

    for uri in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/.%2e/private",
        "/public%2F..%2Fprivate",
        "/public/..%2Fprivate",
        "/public%2fx",
        "/public/..%5Cprivate",
        "/public/..;/private",
        "/public/%00",
        "/publicity",
        "/private?/public/x",
        "/private?x=/public/",
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
        assert_eq!(f.echo.calls(), calls, "{uri} reached the inner service");
    }
}

// ---------------------------------------------------------------------------------------------
// Header hygiene
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn identity_headers_are_stripped_on_skipped_paths() {
    let f = fixture_with(HeaderSettings {
        plain_headers: true,
        ..HeaderSettings::default()
    });
    let a = f
        .call(empty(
            forged_headers(browser("/public/x")).header("x-other", "kept"),
        ))
        .await;
    let echoed = a.echoed();
    assert_no_forged(&echoed);
    assert!(
        echoed
            .header_names()
            .iter()
            .all(|n| !auth_support::is_identity_header(n)),
        "{:?}",
        echoed.header_names()
    );
    assert_eq!(echoed.header("x-other").as_deref(), Some("kept"));
    assert!(echoed.identity().is_none());
}

#[tokio::test]
async fn identity_headers_are_replaced_on_protected_paths_with_a_session() {
    let f = fixture_with(HeaderSettings {
        plain_headers: true,
        ..HeaderSettings::default()
    });
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
    assert_eq!(
        echoed.header("x-wechat-openid").as_deref(),
        Some(identity().openid.as_str())
    );
    assert_eq!(
        echoed.header("x-wechat-nickname").as_deref(),
        Some("Alice%20%F0%9F%8C%B8")
    );
    let claims = jwt_issuer()
        .verify(&echoed.header("x-wechat-jwt").unwrap())
        .expect("a JWT we issued");
    assert_eq!(claims.nickname, "Alice 🌸");
    assert_eq!(
        echoed.identity(),
        Some(identity()),
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
async fn authorization_bearer_carrier_replaces_the_clients_authorization() {
    let f = fixture_with(HeaderSettings {
        jwt: JwtCarrier::AuthorizationBearer,
        plain_headers: false,
    });
    // Skipped path: the client's Authorization is removed (the upstream would trust it).
    let a = f
        .call(empty(
            browser("/public/x").header(header::AUTHORIZATION, "Bearer forged"),
        ))
        .await;
    assert!(a.echoed().header("authorization").is_none());
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
    assert_eq!(auth.len(), 1);
    let token = auth[0].strip_prefix("Bearer ").expect("bearer");
    assert_eq!(
        jwt_issuer().verify(token).unwrap().openid,
        identity().openid
    );
    assert_no_forged(&echoed);
    assert!(echoed.header("x-wechat-jwt").is_none());
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

// ---------------------------------------------------------------------------------------------
// Sessions and cookies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_reaches_the_inner_service_without_the_proxy_cookies() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(browser("/private").header(
            header::COOKIE,
            format!("theme=dark; {cookie}; wxauth_flow=abc; lang=zh"),
        )))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let echoed = a.echoed();
    assert_eq!(echoed.header_values("cookie"), vec!["theme=dark; lang=zh"]);
    assert_eq!(echoed.identity().unwrap().nickname, "Alice 🌸");

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
    let other = wechat_oauth_proxy::session::CookieCodec::new(
        &wechat_oauth_proxy::secret::SecretString::new(
            "another master secret, also 32 bytes or more",
        ),
        auth_support::cookie_settings(),
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
async fn whoami_shows_the_identity_of_a_session() {
    let f = fixture();
    let (_, cookie) = f.session().await;
    let a = f
        .call(empty(
            request(Method::GET, "/_wxauth/whoami").header(header::COOKIE, &cookie),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let who: Identity = serde_json::from_str(&a.body).unwrap();
    assert_eq!(who, identity());
}

#[tokio::test]
async fn the_layer_builder_refuses_bad_settings() {
    let b = || {
        WeChatAuthLayer::builder()
            .wechat(offline_wechat())
            .sessions(memory_store())
            .cookies(cookie_codec())
            .jwt(jwt_issuer())
    };
    assert!(b().prefix("no-slash").build().is_err());
    assert!(b().prefix("/").build().is_err());
    assert!(b().skip(None, "relative/*").is_err());
    assert!(b().skip(None, "/a/../b").is_err());
    assert!(WeChatAuthLayer::builder().build().is_err());
    assert!(
        b().api_prefix("api").build().is_err(),
        "would never match a path"
    );
    assert!(b().api_prefix("/api/").build().is_ok());
    let custom = b().prefix("/auth/").build().unwrap();
    let svc = custom.layer(Echo::new());
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
    assert_eq!(
        a.status(),
        StatusCode::UNAUTHORIZED,
        "the default prefix is an ordinary protected path then"
    );
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

/// A session store that fails every call while `down` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<MemoryStore>,
    down: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), wechat_oauth_proxy::session::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(wechat_oauth_proxy::session::StoreError::Backend(
                "redis at 10.9.8.7:6379 refused".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for FlakyStore {
    async fn create(
        &self,
        record: SessionRecord,
    ) -> Result<SessionId, wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.create(record).await
    }
    async fn load(
        &self,
        id: &SessionId,
    ) -> Result<Option<SessionRecord>, wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.load(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn touch(&self, id: &SessionId) -> Result<bool, wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.touch(id).await
    }
    async fn put_flow(
        &self,
        key: &wechat_oauth_proxy::session::FlowKey,
        flow: wechat_oauth_proxy::session::LoginFlow,
        ttl: std::time::Duration,
    ) -> Result<(), wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.put_flow(key, flow, ttl).await
    }
    async fn take_flow(
        &self,
        key: &wechat_oauth_proxy::session::FlowKey,
    ) -> Result<
        Option<wechat_oauth_proxy::session::LoginFlow>,
        wechat_oauth_proxy::session::StoreError,
    > {
        self.check()?;
        self.inner.take_flow(key).await
    }
    async fn remember_completed(
        &self,
        key: &wechat_oauth_proxy::session::FlowKey,
        session: &SessionId,
        ttl: std::time::Duration,
    ) -> Result<(), wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.remember_completed(key, session, ttl).await
    }
    async fn completed(
        &self,
        key: &wechat_oauth_proxy::session::FlowKey,
    ) -> Result<Option<SessionId>, wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.completed(key).await
    }
    async fn ping(&self) -> Result<(), wechat_oauth_proxy::session::StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_failing_session_store_fails_closed_without_leaking_details() {
    let memory = memory_store();
    let store = Arc::new(FlakyStore {
        inner: memory.clone(),
        down: std::sync::atomic::AtomicBool::new(false),
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
    let id = bounded(memory.create(SessionRecord::new(identity())))
        .await
        .unwrap();
    let cookie = cookie_pair(&cookie_codec().session_cookie(&id));
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

    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let page = call(empty(browser("/p").header(header::COOKIE, &cookie))).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("<html"), "browsers get a page");
    let api = call(empty(
        request(Method::GET, "/p").header(header::COOKIE, &cookie),
    ))
    .await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.json()["error"], "session_store_unavailable");
    // Starting a login cannot store its state either: a clear error, not a redirect.
    let login = call(empty(browser("/p"))).await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE);
    let ready = call(empty(request(Method::GET, "/_wxauth/ready"))).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    // Skipped paths do not need the store.
    assert_eq!(
        call(empty(browser("/public/x"))).await.status,
        StatusCode::OK
    );
    assert_eq!(ready.json()["ready"], false);
    for answer in [&page, &api, &login, &ready] {
        assert!(!answer.body.contains("10.9.8.7"), "{}", answer.body);
    }
    assert_eq!(
        echo.calls(),
        2,
        "only the healthy request and the skipped one"
    );
}
