//! Fresh logins through the layer against the simulated WeChat (component mode): 1 000 browsers
//! start a login and come back from WeChat at the same time, on a cold platform token.
//!
//! Each iteration builds a fresh layer (so the component access token is not cached yet), runs
//! the 1 000 logins concurrently — start (302 + flow cookie), code from the simulator, callback
//! (code exchange, `sns/userinfo`, new session, 302 + session cookie) — and checks that the
//! simulator issued exactly one component access token for all of them (single flight). The
//! time reported is per batch of 1 000 logins.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::cookie_pair;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::layer::{LayerSettings, WeChatAuthLayer};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{CookieCodec, CookieSettings, MemoryStore, SessionSettings};
use wechat_oauth_proxy::sim::{AuthMode, Endpoint, SimConfig, SimWeChat};
use wechat_oauth_proxy::wechat::Scope;
use wechat_oauth_proxy::wechat::client::ClientSettings;
use wechat_oauth_proxy::wechat::oauth::{WeChatOAuth, WeChatSettings};
use wechat_oauth_proxy::wechat::persist::{MemoryPlatformStore, PlatformStore, StoredTicket};

const LOGINS: usize = 1_000;
const MASTER_SECRET: &str = "bench-only-master-secret-0123456789abcdef";

async fn noop(_req: Request<Empty<Bytes>>) -> Result<Response<Empty<Bytes>>, Infallible> {
    Ok(Response::new(Empty::new()))
}

/// A layer in component mode against `sim`, with a stored ticket and no token yet.
async fn fresh_layer(sim: &SimWeChat) -> WeChatAuthLayer {
    let config = sim.config();
    let platform = Arc::new(MemoryPlatformStore::new());
    let now = wechat_oauth_proxy::wechat::token::now_unix();
    platform
        .save_ticket(
            &config.component_appid,
            &StoredTicket {
                ticket: sim.current_ticket(),
                create_time: now,
                received_at: now,
            },
        )
        .await
        .unwrap();
    let wechat = WeChatOAuth::new(
        WeChatSettings {
            mode: config.component_mode(),
            client: ClientSettings {
                api_base: sim.base_url(),
                open_base: sim.base_url(),
                ..ClientSettings::default()
            },
            token: Default::default(),
        },
        platform,
    )
    .unwrap();
    let master = SecretString::new(MASTER_SECRET);
    WeChatAuthLayer::new(
        LayerSettings {
            public_url: "https://app.example.com".parse().unwrap(),
            ..LayerSettings::default()
        },
        wechat,
        Arc::new(MemoryStore::new(SessionSettings::default())),
        CookieCodec::new(&master, CookieSettings::default()).unwrap(),
        JwtIssuer::new(JwtSettings::default(), &master).unwrap(),
    )
    .unwrap()
}

/// One browser: start, consent (a code from the simulator), callback. Returns the session cookie.
async fn login(layer: WeChatAuthLayer, sim: Arc<SimWeChat>, n: usize) -> String {
    let svc = tower::ServiceBuilder::new().layer(layer).service_fn(noop);
    let start = Request::get(format!("/app/page?n={n}"))
        .header(header::ACCEPT, "text/html")
        .body(Empty::new())
        .unwrap();
    let response = svc.clone().oneshot(start).await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let state = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let flow_cookie = cookie_pair(&response.headers()[header::SET_COOKIE]);

    let config = sim.config();
    let code = sim.issue_code(
        config.users[0].clone(),
        Scope::UserInfo,
        AuthMode::Component,
    );
    let callback = Request::get(format!(
        "/_wxauth/callback?code={}&state={state}&appid={}",
        code.expose_secret(),
        config.authorizer_appid.as_str()
    ))
    .header(header::ACCEPT, "text/html")
    .header(header::COOKIE, flow_cookie)
    .body(Empty::new())
    .unwrap();
    let response = svc.oneshot(callback).await.unwrap();
    if response.status() != StatusCode::FOUND {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        panic!(
            "login {n} failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(cookie_pair)
        .find(|c| c.contains("wxauth_session="))
        .expect("a session cookie")
}

/// Open file descriptors of this process (0 where `/proc` is unavailable).
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Waits (at most 10 s) until the open files are back near `baseline`.
async fn settle_open_files(baseline: usize) {
    for _ in 0..100 {
        if open_files() <= baseline + 256 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logins(c: &mut Criterion) {
    // Warnings explain a failed login (RUST_LOG=wechat_oauth_proxy=debug for more).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wechat_oauth_proxy=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sim = Arc::new(
        rt.block_on(SimWeChat::start(
            SimConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap(),
    );
    let mut group = c.benchmark_group("login");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(LOGINS as u64));
    let baseline_fds = open_files();
    group.bench_function("1000_concurrent_fresh_logins", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let layer = fresh_layer(&sim).await;
                    sim.invalidate_component_token();
                    let tokens_before = sim.calls(Endpoint::ComponentToken);
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for n in 0..LOGINS {
                        tasks.spawn(login(layer.clone(), Arc::clone(&sim), n));
                    }
                    let mut sessions = std::collections::HashSet::new();
                    while let Some(cookie) = tasks.join_next().await {
                        sessions.insert(cookie.unwrap());
                    }
                    elapsed += start.elapsed();
                    assert_eq!(sessions.len(), LOGINS, "every login has its own session");
                    // Single flight: one platform token for all of them.
                    assert_eq!(sim.calls(Endpoint::ComponentToken) - tokens_before, 1);
                    // Untimed: let the ~2 000 sockets of this batch close before the next one, or
                    // back-to-back batches pile up open files faster than they are released.
                    drop(layer);
                    settle_open_files(baseline_fds).await;
                }
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, logins);
criterion_main!(benches);
