//! Another tower stack than axum: a bare hyper server (hyper-util's `auto` connection builder
//! and `TowerToHyperService`, not this crate's accept loop) serving a plain `service_fn`
//! behind the layer built with the short form, through a whole login with the simulated WeChat.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::Layer as _;
use url::Url;
use wechat_oauth_proxy::{
    Identity, layer::WeChatAuthLayer, wechat::client::ClientSettings,
    wechat::persist::MemoryPlatformStore,
};

use support::*;

/// The application: says who asked and how many body bytes it read.
async fn app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = request
        .extensions()
        .get::<Identity>()
        .map_or_else(|| "guest".to_owned(), |who| who.nickname.clone());
    let read = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(_) => usize::MAX,
    };
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{who} {read}"
    )))))
}

#[tokio::test]
async fn a_hyper_service_fn_behind_the_layer_through_a_whole_login() {
    let sim = start_sim().await;
    let listener = bounded(TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind");
    let base = Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).unwrap();
    let config = sim.config();
    let auth = WeChatAuthLayer::builder()
        .official_account(
            config.authorizer_appid.clone(),
            config.official_account_secret.clone(),
        )
        .public_url(base.clone())
        .master_secret(master())
        .skip(Method::GET, "/public/*")
        .expect("skip rule")
        .api_prefix("/api")
        .wechat_client(ClientSettings {
            api_base: sim.base_url(),
            open_base: sim.base_url(),
            ..ClientSettings::default()
        })
        .insecure_allow_http(true)
        .platform_store(std::sync::Arc::new(MemoryPlatformStore::new()))
        .build()
        .expect("layer");
    let service = TowerToHyperService::new(auth.layer(tower::service_fn(app)));
    let server = tokio::spawn(async move {
        // Bounded: the test makes a handful of connections.
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let browser = Browser::new(base.clone());
    let url = |path: &str| base.join(path).expect("url");
    let public = browser.get(url("/public/x")).await;
    assert_eq!(
        (public.status, public.body.as_str()),
        (StatusCode::OK, "guest 0")
    );
    let api = browser
        .send(
            Method::POST,
            url("/api/echo"),
            &[],
            Some(b"seven b".to_vec()),
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "unauthenticated");

    let nickname = &config.users[0].nickname;
    let page = browser.login(url("/page")).await.pop().expect("last reply");
    assert_eq!(page.body, format!("{nickname} 0"));
    // A body streams through the layer to the application.
    let api = browser
        .send(
            Method::POST,
            url("/api/echo"),
            &[],
            Some(b"seven b".to_vec()),
        )
        .await;
    assert_eq!(
        (api.status, api.body),
        (StatusCode::OK, format!("{nickname} 7"))
    );
    server.abort();
}
