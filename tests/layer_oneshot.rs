//! `oneshot` tests of the layer around an echo service (no sockets, WeChat unreachable):
//! dispatch, header hygiene, API vs browser, skip-rule normalization, extensions, fail-closed
//! store errors, the tower service contract and the builder's validation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use common::{Options, echo, offline_layer, sample_identity, session_cookie};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tower::{Layer as _, Service, ServiceExt as _, service_fn};
use wechat_oauth_proxy::{
    Identity,
    identity::JwtCarrier,
    layer::{BuildError, WeChatAuthLayer},
    secret::SecretString,
    session::{
        CookieCodec, CookieSettings, FlowKey, LoginFlow, SessionId, SessionRecord, SessionStore,
        StoreError,
    },
};

const BROWSER: &str = common::BROWSER_ACCEPT;

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn reached_inner(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body).is_ok_and(|v| v["echo"] == true)
    }
}

async fn send(layer: &WeChatAuthLayer, request: Request<Full<Bytes>>) -> Answer {
    let service = layer.layer(service_fn(echo::<Full<Bytes>>));
    let response = common::within(service.oneshot(request))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("utf8"),
    }
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request(Method::GET, uri, headers)
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from_static(b"body")))
        .expect("request")
}

/// Every spelling of every header the layer can set, each twice.
const FORGED: [&str; 12] = [
    "X-WeChat-Jwt",
    "x-wechat_jwt",
    "X_WECHAT_JWT",
    "X_WeChat_OpenID",
    "x-wechat-openid",
    "X-WeChat-UnionID",
    "x_wechat_unionid",
    "X-WeChat-Nickname",
    "x-wechat_nickname",
    "X-WeChat-Avatar",
    "X_WeChat_AppID",
    "x-WeChat-appid",
];

fn forged_request(uri: &str, extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = get(uri, extra);
    for name in FORGED {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
        req.headers_mut()
            .append(name.clone(), HeaderValue::from_static("forged"));
        req.headers_mut()
            .append(name, HeaderValue::from_static("forged-again"));
    }
    req
}

fn assert_clean(answer: &Answer) {
    assert!(answer.reached_inner(), "{} {}", answer.status, answer.body);
    let headers = answer.json()["headers"].to_string();
    assert!(
        !headers.contains("forged"),
        "a forged identity header reached the inner service: {headers}"
    );
}

#[tokio::test]
async fn forged_identity_headers_are_stripped_on_skipped_routes() {
    let (layer, _) = offline_layer(&Options::default());
    let answer = send(&layer, forged_request("/public/app.css", &[])).await;
    assert_clean(&answer);
    assert!(answer.json()["identity"].is_null());
}

#[tokio::test]
async fn forged_identity_headers_are_replaced_on_authenticated_routes() {
    let (layer, parts) = offline_layer(&Options::default());
    let cookie = session_cookie(&parts, sample_identity()).await;
    let answer = send(&layer, forged_request("/private", &[("cookie", &cookie)])).await;
    assert_clean(&answer);
    let echo = answer.json();
    for name in [
        "x-wechat-jwt",
        "x-wechat-openid",
        "x-wechat-nickname",
        "x-wechat-appid",
    ] {
        assert_eq!(
            echo["headers"][name].as_array().map(Vec::len),
            Some(1),
            "{name}: {echo}"
        );
    }
    let jwt = echo["headers"]["x-wechat-jwt"][0].as_str().expect("jwt");
    let claims = parts.jwt.verify(jwt).expect("our JWT");
    assert_eq!(claims.openid, sample_identity().openid);
}

#[tokio::test]
async fn authorization_is_stripped_when_it_carries_the_jwt() {
    let options = Options {
        jwt_carrier: JwtCarrier::AuthorizationBearer,
        ..Options::default()
    };
    let (layer, parts) = offline_layer(&options);
    let answer = send(
        &layer,
        get(
            "/public/x",
            &[
                ("authorization", "Bearer forged"),
                ("Authorization", "Basic forged"),
            ],
        ),
    )
    .await;
    assert_clean(&answer);
    assert!(answer.json()["headers"]["authorization"].is_null());
    let cookie = session_cookie(&parts, sample_identity()).await;
    let answer = send(
        &layer,
        get(
            "/private",
            &[("cookie", &cookie), ("authorization", "Bearer forged")],
        ),
    )
    .await;
    assert_clean(&answer);
    let auth = answer.json()["headers"]["authorization"].clone();
    assert_eq!(auth.as_array().map(Vec::len), Some(1));
    let token = auth[0]
        .as_str()
        .expect("value")
        .strip_prefix("Bearer ")
        .expect("bearer");
    parts.jwt.verify(token).expect("our JWT");
}

#[tokio::test]
async fn authorization_is_kept_when_it_does_not_carry_the_jwt() {
    let (layer, _) = offline_layer(&Options::default());
    let answer = send(
        &layer,
        get("/public/x", &[("authorization", "Basic dXNlcjpwYXNz")]),
    )
    .await;
    assert_eq!(
        answer.json()["headers"]["authorization"][0],
        "Basic dXNlcjpwYXNz"
    );
}

#[tokio::test]
async fn the_identity_reaches_the_inner_service_as_extension_and_headers() {
    let (layer, parts) = offline_layer(&Options::default());
    let cookie = session_cookie(&parts, sample_identity()).await;
    let cookies = format!("theme=dark; {cookie}; wxauth_flow=x; other=1");
    let answer = send(&layer, get("/private?q=1", &[("cookie", &cookies)])).await;
    let echo = answer.json();
    let identity: Identity =
        serde_json::from_value(echo["identity"].clone()).expect("identity extension");
    assert_eq!(identity, sample_identity());
    assert_eq!(
        echo["headers"]["x-wechat-nickname"][0],
        "%E5%BC%A0%E4%B8%89%F0%9F%90%BC"
    );
    assert_eq!(
        echo["headers"]["x-wechat-unionid"][0],
        sample_identity().unionid.expect("unionid")
    );
    // Our cookies are gone, the application's cookies are kept.
    let forwarded = echo["headers"]["cookie"].to_string();
    assert!(
        forwarded.contains("theme=dark") && forwarded.contains("other=1"),
        "{forwarded}"
    );
    assert!(
        !forwarded.contains("wxauth_session") && !forwarded.contains("wxauth_flow"),
        "{forwarded}"
    );
}

#[tokio::test]
async fn plain_headers_off_means_only_the_jwt() {
    let options = Options {
        plain_headers: false,
        ..Options::default()
    };
    let (layer, parts) = offline_layer(&options);
    let cookie = session_cookie(&parts, sample_identity()).await;
    let echo = send(&layer, get("/private", &[("cookie", &cookie)]))
        .await
        .json();
    assert!(echo["headers"]["x-wechat-jwt"].is_array());
    assert!(echo["headers"]["x-wechat-openid"].is_null());
}

#[derive(Clone, Debug)]
struct Marker(&'static str);

#[tokio::test]
async fn request_extensions_are_preserved() {
    let (layer, parts) = offline_layer(&Options::default());
    let cookie = session_cookie(&parts, sample_identity()).await;
    for (uri, cookie) in [("/public/x", ""), ("/private", cookie.as_str())] {
        let mut req = get(uri, &[("cookie", cookie)]);
        req.extensions_mut().insert(Marker("kept"));
        let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let marker = req
                .extensions()
                .get::<Marker>()
                .map(|m| m.0)
                .unwrap_or("lost");
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(marker))))
        }));
        let response = service.oneshot(req).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        assert_eq!(body, "kept", "{uri}");
    }
}

/// Method, URI, headers, expected status.
type Case = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
    StatusCode,
);

#[tokio::test]
async fn browsers_are_redirected_and_api_clients_get_401_json() {
    let (layer, _) = offline_layer(&Options::default());
    let cases: [Case; 12] = [
        (
            Method::GET,
            "/page",
            &[("accept", BROWSER)],
            StatusCode::FOUND,
        ),
        (
            Method::HEAD,
            "/page",
            &[("accept", BROWSER)],
            StatusCode::FOUND,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", "text/html")],
            StatusCode::FOUND,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", "text/*;q=0.9, application/json;q=0.8")],
            StatusCode::FOUND,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", "application/json, text/html;q=0.9")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", "*/*")],
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/page", &[], StatusCode::UNAUTHORIZED),
        (
            Method::GET,
            "/page",
            &[("accept", "text/html;q=0")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", BROWSER), ("x-requested-with", "XMLHttpRequest")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/page",
            &[("accept", BROWSER), ("sec-fetch-mode", "cors")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/things",
            &[("accept", BROWSER)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/form",
            &[("accept", BROWSER)],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (method, uri, headers, want) in cases {
        let answer = send(&layer, request(method.clone(), uri, headers)).await;
        assert_eq!(
            answer.status, want,
            "{method} {uri} {headers:?}: {}",
            answer.body
        );
        assert!(!answer.reached_inner());
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
        if want == StatusCode::UNAUTHORIZED {
            let json = answer.json();
            assert_eq!(json["error"], "unauthenticated");
            let login = json["login_url"].as_str().expect("login_url");
            assert!(login.starts_with("/_wxauth/login?return="), "{login}");
        } else {
            // Straight into the login flow: WeChat's authorize page plus a flow cookie.
            let location = answer.headers[header::LOCATION].to_str().expect("ascii");
            assert!(
                location.starts_with("http://127.0.0.1:9/connect/oauth2/authorize?"),
                "{location}"
            );
            assert!(
                location
                    .contains("redirect_uri=https%3A%2F%2Fapp.example.com%2F_wxauth%2Fcallback")
            );
            assert!(location.ends_with("#wechat_redirect"));
            let set_cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
            assert!(set_cookie.starts_with("wxauth_flow="), "{set_cookie}");
        }
    }
}

#[tokio::test]
async fn skip_rules_match_only_the_normalized_path() {
    let (layer, _) = offline_layer(&Options::default());
    for uri in [
        "/public/app.css",
        "/public/a/../b.css",
        "/public/./x",
        "/%70ublic/x",
        "/public",
    ] {
        assert!(
            send(&layer, get(uri, &[])).await.reached_inner(),
            "{uri} should be public"
        );
    }
    for uri in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/.%2e/private",
        "/public%2F..%2Fprivate",
        "/public/..%2Fprivate",
        "/public/..%2fprivate",
        "/public/..%5Cprivate",
        "/public/..;/private",
        "/private?/public/x",
        "/private?p=/public/x",
        "/publicity",
        "/public%00/x",
    ] {
        let answer = send(&layer, get(uri, &[])).await;
        assert!(!answer.reached_inner(), "{uri} must not be public");
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // The rule is for GET (and HEAD) only.
    let answer = send(&layer, request(Method::POST, "/public/x", &[])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = send(&layer, request(Method::HEAD, "/public/x", &[])).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn skip_rules_never_depend_on_headers() {
    let (layer, _) = offline_layer(&Options::default());
    let tricks = [
        ("x-original-url", "/public/x"),
        ("x-rewrite-url", "/public/x"),
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-prefix", "/public"),
        ("user-agent", "kube-probe/1.29"),
    ];
    let answer = send(&layer, get("/private", &tricks)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reserved_routes() {
    let (layer, parts) = offline_layer(&Options::default());
    let health = send(&layer, get("/_wxauth/health", &[])).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
    let jwks = send(&layer, get("/_wxauth/jwks.json", &[])).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.headers[header::CONTENT_TYPE], "application/json");
    assert!(jwks.json()["keys"][0]["kid"].is_string());
    let whoami = send(&layer, get("/_wxauth/whoami", &[])).await;
    assert_eq!(whoami.status, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami.json()["error"], "unauthenticated");
    let cookie = session_cookie(&parts, sample_identity()).await;
    let whoami = send(&layer, get("/_wxauth/whoami", &[("cookie", &cookie)])).await;
    assert_eq!(whoami.status, StatusCode::OK);
    assert_eq!(whoami.json()["nickname"], "张三🐼");
    assert!(
        !whoami
            .body
            .contains(cookie.split('=').nth(1).expect("value"))
    );
    let missing = send(&layer, get("/_wxauth/nothing", &[("accept", BROWSER)])).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("页面不存在") && missing.body.contains("Not found"));
    let wrong = send(&layer, request(Method::DELETE, "/_wxauth/login", &[])).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    let events = send(&layer, get("/_wxauth/events", &[])).await;
    assert_eq!(events.status, StatusCode::METHOD_NOT_ALLOWED);
    // The ticket is missing: not ready, with reasons.
    let ready = send(&layer, get("/_wxauth/ready", &[])).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    for answer in [&health, &jwks, &whoami, &missing, &wrong, &ready] {
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    }
    // A reserved path never reaches the inner service, even with a session.
    assert!(
        !send(&layer, get("/_wxauth/x", &[("cookie", &cookie)]))
            .await
            .reached_inner()
    );
}

#[tokio::test]
async fn login_refuses_open_redirects_into_the_flow() {
    let (layer, parts) = offline_layer(&Options::default());
    for (evil, stored) in [
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2F%250d%250aSet-Cookie%3Ax", "/"),
        ("%2F%2509%2Fevil.example", "/"),
        ("%2Fok%3Fa%3D1", "/ok?a=1"),
    ] {
        let answer = send(&layer, get(&format!("/_wxauth/login?return={evil}"), &[])).await;
        assert_eq!(answer.status, StatusCode::FOUND);
        let location: url::Url = answer.headers[header::LOCATION]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("url");
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .expect("state")
            .1
            .into_owned();
        let flow: LoginFlow = parts
            .sessions
            .take_flow(&FlowKey::new(state))
            .await
            .expect("store")
            .expect("flow");
        assert_eq!(flow.return_path.as_str(), stored, "return={evil}");
    }
}

#[tokio::test]
async fn login_start_keeps_the_session_until_the_callback_replaces_it() {
    let (layer, parts) = offline_layer(&Options::default());
    let cookie = session_cookie(&parts, sample_identity()).await;
    let answer = send(
        &layer,
        get("/_wxauth/login?return=/x", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FOUND);
    let cookies: Vec<_> = answer
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
    assert!(
        send(&layer, get("/private", &[("cookie", &cookie)]))
            .await
            .reached_inner()
    );
}

#[tokio::test]
async fn flow_cookie_keeps_at_most_three_pending_logins() {
    let (layer, _) = offline_layer(&Options::default());
    let mut flow_cookie = String::new();
    let mut sizes = Vec::new();
    for _ in 0..6 {
        let answer = send(&layer, get("/_wxauth/login", &[("cookie", &flow_cookie)])).await;
        let set = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
        flow_cookie = common::cookie_pair(set);
        sizes.push(flow_cookie.len());
    }
    assert_eq!(
        sizes[3], sizes[5],
        "the cookie stops growing after three flows: {sizes:?}"
    );
    assert!(sizes[0] < sizes[2]);
}

/// A store whose every operation fails (backend down).
#[derive(Debug)]
struct BrokenStore;

#[async_trait]
impl SessionStore for BrokenStore {
    async fn create(&self, _: SessionRecord) -> Result<SessionId, StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn load(&self, _: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn delete(&self, _: &SessionId) -> Result<(), StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn touch(&self, _: &SessionId) -> Result<bool, StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn put_flow(&self, _: &FlowKey, _: LoginFlow, _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn take_flow(&self, _: &FlowKey) -> Result<Option<LoginFlow>, StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn remember_completed(
        &self,
        _: &FlowKey,
        _: &SessionId,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn completed(&self, _: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        Err(StoreError::Backend("down".into()))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("down".into()))
    }
}

#[tokio::test]
async fn a_failing_store_fails_closed() {
    let (_, parts) = offline_layer(&Options::default());
    let layer = WeChatAuthLayer::builder()
        .wechat(parts.wechat.clone())
        .sessions(Arc::new(BrokenStore))
        .cookie_codec(parts.cookies.clone())
        .jwt(parts.jwt.clone())
        .public_url("https://app.example.com".parse().expect("url"))
        .skip(Method::GET, "/public/*")
        .expect("rule")
        .build()
        .expect("layer");
    let cookie = session_cookie(&parts, sample_identity()).await;
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("accept", BROWSER)],
    ] {
        let answer = send(&layer, get("/private", &headers)).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{headers:?}"
        );
        assert!(!answer.reached_inner());
        assert!(
            !answer.body.contains("down"),
            "no backend detail: {}",
            answer.body
        );
    }
    // Without a cookie the store is not consulted for the session, but the login cannot start.
    let answer = send(&layer, get("/private", &[("accept", BROWSER)])).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let ready = send(&layer, get("/_wxauth/ready", &[])).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body.contains("session store unreachable"));
    // Skipped routes do not need the store.
    assert!(send(&layer, get("/public/x", &[])).await.reached_inner());
}

/// An inner service that must be polled ready before each call, and remembers it per instance.
#[derive(Clone)]
struct MustBeReady {
    ready: bool,
    allow: Arc<std::sync::atomic::AtomicBool>,
}

impl Service<Request<Full<Bytes>>> for MustBeReady {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.allow.load(std::sync::atomic::Ordering::SeqCst) {
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
    let (layer, _) = offline_layer(&Options::default());
    let allow = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    allow.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(get("/public/x", &[]))
            .await
            .expect("ok");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        assert_eq!(body, "inner");
    }
}

#[tokio::test]
async fn the_builder_validates() {
    let (_, parts) = offline_layer(&Options::default());
    let base = || {
        WeChatAuthLayer::builder()
            .wechat(parts.wechat.clone())
            .sessions(parts.sessions.clone())
            .cookie_codec(parts.cookies.clone())
            .jwt(parts.jwt.clone())
    };
    let secure = CookieCodec::new(
        &SecretString::new(common::MASTER_SECRET),
        CookieSettings::default(),
    )
    .expect("codec");
    // With Secure (production) cookies a forgotten public URL is an error; in development (the
    // offline layer's cookies are not Secure) the placeholder is used.
    assert!(matches!(
        base().cookie_codec(secure.clone()).build(),
        Err(BuildError::Missing("public_url"))
    ));
    assert!(base().build().is_ok());
    let https = || base().public_url("https://app.example.com".parse().expect("url"));
    assert!(https().build().is_ok());
    assert!(matches!(
        https().prefix("_wxauth").build(),
        Err(BuildError::InvalidPrefix)
    ));
    assert!(matches!(
        https().prefix("/").build(),
        Err(BuildError::InvalidPrefix)
    ));
    let trailing = https()
        .prefix("/auth/")
        .build()
        .expect("a trailing '/' is tolerated");
    assert_eq!(
        trailing.callback_url(),
        "https://app.example.com/auth/callback"
    );
    assert!(matches!(
        https().prefix("/a/../b").build(),
        Err(BuildError::InvalidPrefix)
    ));
    assert!(matches!(
        https().skip(Method::GET, "/a/../b"),
        Err(BuildError::InvalidSkipRule { .. })
    ));
    assert!(matches!(
        https().skip(None, "/a%2fb"),
        Err(BuildError::InvalidSkipRule { .. })
    ));
    assert!(matches!(
        https().skip(Method::GET, "/pub*"),
        Err(BuildError::InvalidSkipRule { .. })
    ));
    assert!(https().skip(Method::GET, "/public/*").is_ok());
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
