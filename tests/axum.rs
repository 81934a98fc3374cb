//! The axum face (feature `axum`): `examples/axum.rs` itself on a real socket through a whole
//! login with the simulated WeChat; `Identity` and `Option<Identity>` as handler arguments and
//! their rejection (the layer's own answers); `Router::layer`, `route_layer` and the whole
//! router wrapped; state and extensions passing through untouched.
#![cfg(all(feature = "axum", feature = "sim"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "../examples/axum.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Extension, Router,
    extract::{Request, State},
    routing::{any, get},
};
use http::{Method, StatusCode};
use tokio::{net::TcpListener, task::JoinHandle};
use url::Url;
use wechat_oauth_proxy::{Identity, layer::WeChatAuthLayer};

use support::*;

/// An app served by `axum::serve` on `127.0.0.1:0`; stops when dropped.
struct Served {
    base: Url,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Served {
    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("url")
    }
}

async fn listener() -> (TcpListener, Url) {
    let listener = bounded(TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind");
    let base = Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).unwrap();
    (listener, base)
}

fn spawn(listener: TcpListener, base: Url, app: Router) -> Served {
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served { base, addr, server }
}

/// The example's layer and routes, `Router::layer` as the example serves them.
async fn example_app(sim: &wechat_oauth_proxy::sim::SimWeChat) -> Served {
    let (listener, base) = listener().await;
    let auth = example::auth(sim, base.clone()).expect("layer");
    spawn(listener, base, example::routes().layer(auth))
}

/// A session for [`sample_identity`] made directly in `store` (its cookie sealed with the
/// harness's master secret), and a layer over that store with the same master secret.
async fn layer_with_session(
    sim: &wechat_oauth_proxy::sim::SimWeChat,
    base: &Url,
) -> (WeChatAuthLayer, String) {
    let store = memory_store();
    let (_, cookie) = session_cookie(&store, sample_identity()).await;
    let layer = WeChatAuthLayer::builder()
        .official_account(
            sample_identity().appid.as_str().into(),
            sim.config().official_account_secret.clone(),
        )
        .public_url(base.clone())
        .master_secret(master())
        .insecure_allow_http(true)
        .sessions(store)
        .platform_store(Arc::new(
            wechat_oauth_proxy::wechat::persist::MemoryPlatformStore::new(),
        ))
        .skip(Method::GET, "/public/*")
        .expect("skip rule")
        .api_prefix("/api")
        .build()
        .expect("layer");
    (layer, cookie)
}

#[tokio::test]
async fn the_example_app_logs_in_through_the_simulator() {
    let sim = bounded(example::start_sim(false)).await.expect("sim");
    let app = example_app(&sim).await;
    let browser = Browser::new(app.base.clone());

    // Public, as a guest.
    let home = browser.get(app.url("/")).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.starts_with("welcome, guest"), "{}", home.body);

    // The API without a session: the layer's 401 JSON, never a redirect.
    let api = browser
        .get_with(app.url("/api/me"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "unauthenticated");
    assert!(
        api.json()["login_url"]
            .as_str()
            .unwrap()
            .contains("/_wxauth/login")
    );

    // The whole login: protected page → WeChat → callback → back, greeted by nickname.
    let nickname = &sim.config().users[0].nickname;
    let page = browser
        .login(app.url("/hello"))
        .await
        .pop()
        .expect("last reply");
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.starts_with(&format!("你好, {nickname}")),
        "{}",
        page.body
    );

    // With the session: the API answers JSON, the public page knows the user.
    let api = browser
        .get_with(app.url("/api/me"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    assert_eq!(api.json()["nickname"], nickname.as_str());
    let home = browser.get(app.url("/")).await;
    assert_eq!(home.body, format!("welcome back, {nickname}\n"));
}

#[tokio::test]
async fn an_identity_argument_on_a_skipped_path_answers_like_the_layer() {
    let sim = bounded(example::start_sim(false)).await.expect("sim");
    let (listener, base) = listener().await;
    let (layer, cookie) = layer_with_session(&sim, &base).await;
    let who = |who: Identity| async move { who.nickname };
    let app = Router::new()
        // Skipped by the layer, yet the handler needs a user.
        .route("/public/needs-login", get(who))
        .route("/api/public/x", get(who))
        .route("/protected", get(who))
        .layer(layer);
    let app = spawn(listener, base, app);
    let browser = Browser::new(app.base.clone());

    // A browser navigation: the layer's login redirect (to WeChat, with the flow cookie),
    // exactly as for a protected path.
    let skipped = browser.get(app.url("/public/needs-login")).await;
    let protected = browser.fresh().get(app.url("/protected")).await;
    assert_eq!(skipped.status, StatusCode::FOUND, "{}", skipped.body);
    assert_eq!(skipped.location().path(), protected.location().path());
    assert!(skipped.set_cookies().iter().any(|c| c.starts_with(FLOW)));

    // An API client: the layer's 401 JSON with the login URL returning here.
    let api = browser
        .get_with(
            app.url("/public/needs-login"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "unauthenticated");
    assert_eq!(
        api.json()["login_url"],
        "/_wxauth/login?return=%2Fpublic%2Fneeds-login"
    );

    // With a live session the skipped path gets the user, looked up on demand.
    let reply = browser
        .get_with(app.url("/public/needs-login"), &[("cookie", &cookie)])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, sample_identity().nickname);
}

#[tokio::test]
async fn an_identity_argument_without_the_layer_is_a_500_never_a_user() {
    let (listener, base) = listener().await;
    let app = Router::new().route("/", get(|who: Identity| async move { who.nickname }));
    let app = spawn(listener, base, app);
    let reply = Browser::new(app.base.clone())
        .get_with(app.url("/"), &[("accept", "application/json")])
        .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["error"], "internal_error");
}

/// The application's own state and an extension put in by an outer layer.
#[derive(Clone)]
struct AppState(&'static str);
#[derive(Clone)]
struct Marker(u32);

#[tokio::test]
async fn state_and_extensions_pass_through_untouched() {
    let sim = bounded(example::start_sim(false)).await.expect("sim");
    let (listener, base) = listener().await;
    let (layer, cookie) = layer_with_session(&sim, &base).await;
    let handler = |State(state): State<AppState>,
                   Extension(marker): Extension<Marker>,
                   who: Identity,
                   request: Request| async move {
        format!(
            "{} {} {} {}",
            state.0,
            marker.0,
            who.nickname,
            request.extensions().get::<Identity>().is_some()
        )
    };
    let app = Router::new()
        .route("/page", get(handler))
        .route("/public/page", get(handler))
        .layer(layer)
        // Outside the auth layer: its extension must reach the handler.
        .layer(Extension(Marker(7)))
        .with_state(AppState("app-state"));
    let app = spawn(listener, base, app);
    let browser = Browser::new(app.base.clone());
    let nickname = sample_identity().nickname;
    for path in ["/page", "/public/page"] {
        let reply = browser
            .get_with(app.url(path), &[("cookie", &cookie)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_eq!(reply.body, format!("app-state 7 {nickname} true"), "{path}");
    }
}

#[tokio::test]
async fn route_layer_protects_the_routes_and_the_prefix_can_be_routed_to_it() {
    let sim = bounded(example::start_sim(false)).await.expect("sim");
    let (listener, base) = listener().await;
    let (layer, cookie) = layer_with_session(&sim, &base).await;
    let app = Router::new()
        .route("/page", get(|who: Identity| async move { who.nickname }))
        // `route_layer` only sees matched routes: the reserved prefix gets one.
        .route("/_wxauth/{*rest}", any(|| async { StatusCode::NOT_FOUND }))
        .route_layer(layer);
    let app = spawn(listener, base, app);
    let browser = Browser::new(app.base.clone());
    let reply = browser
        .get_with(app.url("/page"), &[("cookie", &cookie)])
        .await;
    assert_eq!(reply.body, sample_identity().nickname);
    let reply = browser
        .get_with(app.url("/page"), &[("accept", "application/json")])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Answered by the layer, not by the placeholder route.
    let jwks = browser.get(app.url("/_wxauth/jwks.json")).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert!(jwks.json()["keys"].is_array());
    // Unmatched routes never reach the layer under `route_layer`.
    let missing = browser.get(app.url("/nowhere")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// `Router::layer` runs after routing, on the raw path; wrapping the whole router makes the
/// router see the path the layer decided on (the normalized one it forwards).
#[tokio::test]
async fn the_wrapped_router_routes_on_the_normalized_path() {
    let sim = bounded(example::start_sim(false)).await.expect("sim");
    let (listener, base) = listener().await;
    let (layer, _) = layer_with_session(&sim, &base).await;
    let router = Router::new()
        .route("/public/{*rest}", get(|| async { "public" }))
        .route("/files/{*rest}", get(|| async { "files" }));
    // The whole router behind the layer, served as an axum `Router` again.
    let app = Router::new().fallback_service(tower::Layer::layer(&layer, router));
    let served = spawn(listener, base, app);
    let addr = served.addr;
    let raw = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
    };
    // Decided as /public/x (skipped) and routed as /public/x.
    assert_eq!(raw_status(addr, &raw("/files/../public/x")).await, 200);
    // Decided as /files/x (protected): no session, 401; never the public handler.
    assert_eq!(raw_status(addr, &raw("/public/../files/x")).await, 401);
}
