//! The auth layer in process: identity-header stripping, and the whole request path through
//! `WeChatAuth` around a no-op service — session hit (the hot path), no session (302 into the
//! login flow, 401 for API clients) — against the same no-op service without the layer.
//!
//! No network: WeChat is never called on these paths (the base URLs point at a closed port).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/layer_fixture.rs"]
mod layer_fixture;
mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use layer_fixture::{browser_headers, cookie_pair, fixture, fixture_on, identity, noop, request};
use tower::{Service, ServiceExt};
use wechat_oauth_proxy::identity::HeaderSettings;
use wechat_oauth_proxy::session::{
    DurableSettings, DurableStore, MemoryStore, SessionId, SessionRecord, SessionSettings,
    SessionStore,
};

/// Runs `iters` requests built from `(method, path, headers)` through `svc`, timing the loop.
async fn drive<S>(
    svc: &mut S,
    iters: u64,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    expect: StatusCode,
) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Error = Infallible>,
    S::Response: HasStatus,
{
    let start = Instant::now();
    for _ in 0..iters {
        let svc = svc.ready().await.unwrap();
        let response = svc.call(request(method, path, headers)).await.unwrap();
        debug_assert_eq!(response.status(), expect);
        black_box(response);
    }
    start.elapsed()
}

/// Benchmarks `GET path` with `headers` through `svc` under `name`, timing [`drive`].
fn bench_get<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: &mut S,
    path: &str,
    headers: &HeaderMap,
    expect: StatusCode,
) where
    S: Service<Request<Empty<Bytes>>, Error = Infallible>,
    S::Response: HasStatus,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| rt.block_on(drive(svc, iters, &Method::GET, path, headers, expect)))
    });
}

trait HasStatus {
    fn status(&self) -> StatusCode;
}
impl<B> HasStatus for Response<B> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
}

fn strip(c: &mut Criterion) {
    let list = HeaderSettings::default().strip_list();
    let clean = browser_headers(&[("cookie", "_ga=GA1.2.1; lang=zh_CN")]);
    let forged = browser_headers(&[
        ("cookie", "_ga=GA1.2.1; lang=zh_CN"),
        ("X-WeChat-Jwt", "forged"),
        ("x_wechat_openid", "forged"),
        ("X-WECHAT-NICKNAME", "forged"),
    ]);
    let mut check = forged.clone();
    assert_eq!(list.strip(&mut check), 3);
    assert_eq!(check.len(), clean.len());

    let mut group = c.benchmark_group("identity");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut work = HeaderMap::new();
    group.bench_function("clone_headers_baseline/10_headers", |b| {
        b.iter(|| {
            work.clone_from(black_box(&clean));
        })
    });
    group.bench_function("strip/10_headers_nothing_forged", |b| {
        b.iter(|| {
            work.clone_from(black_box(&clean));
            list.strip(black_box(&mut work))
        })
    });
    group.bench_function("strip/13_headers_3_forged", |b| {
        b.iter(|| {
            work.clone_from(black_box(&forged));
            list.strip(black_box(&mut work))
        })
    });
    let who = identity(1);
    let jwt = HeaderValue::from_static("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln");
    let plain = HeaderSettings {
        plain_headers: true,
        ..HeaderSettings::default()
    };
    group.bench_function("project_headers/jwt_only", |b| {
        b.iter(|| {
            work.clone_from(black_box(&clean));
            who.project_headers(&HeaderSettings::default(), jwt.clone(), &mut work);
        })
    });
    group.bench_function("project_headers/jwt+plain", |b| {
        b.iter(|| {
            work.clone_from(black_box(&clean));
            who.project_headers(&plain, jwt.clone(), &mut work);
        })
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("layer");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let get = Method::GET;
    // `WXAUTH_BENCH_METRICS=1`: with the sidecar's Prometheus recorder installed, so every
    // request is really counted and timed (without it the `metrics` facade is a no-op).
    if std::env::var_os("WXAUTH_BENCH_METRICS").is_some() {
        let _handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(wechat_oauth_proxy::metrics::REQUEST_BUCKETS)
            .unwrap()
            .install_recorder()
            .unwrap();
    }

    // Baseline: the same request through the bare no-op service.
    let anonymous = browser_headers(&[("cookie", "_ga=GA1.2.1; lang=zh_CN")]);
    let mut bare = tower::service_fn(noop);
    bench_get(
        &mut group,
        &rt,
        "no_layer_baseline",
        &mut bare,
        "/app/page?x=1",
        &anonymous,
        StatusCode::OK,
    );

    // The durable store (the sidecar's default) answers a hit from the same memory: its file is
    // only written behind it.
    let durable_dir =
        std::env::temp_dir().join(format!("wxauth-bench-layer-{}", std::process::id()));
    let durable: Arc<dyn SessionStore> = Arc::new(
        rt.block_on(DurableStore::open(
            &durable_dir,
            SessionSettings::default(),
            DurableSettings::default(),
        ))
        .unwrap(),
    );
    for (label, plain, cache, durable) in [
        ("session_hit", false, true, None),
        ("session_hit+plain_headers", true, true, None),
        ("session_hit+jwt_remint", false, false, None),
        ("session_hit+durable_store", false, true, Some(durable)),
    ] {
        let f = match durable {
            Some(store) => fixture_on(store, plain, cache),
            None => fixture(plain, cache),
        };
        let id = rt
            .block_on(f.store.create(SessionRecord::new(identity(1))))
            .unwrap();
        let cookie = format!("_ga=GA1.2.1; {}; lang=zh_CN", cookie_pair(&f.codec, &id));
        let headers = browser_headers(&[("cookie", &cookie)]);
        let mut svc = tower::ServiceBuilder::new()
            .layer(f.layer.clone())
            .service_fn(noop);
        // Sanity: a hit reaches the inner service (200), not the login redirect.
        let first = rt
            .block_on(async {
                let ready = svc.ready().await?;
                ready.call(request(&get, "/app/page?x=1", &headers)).await
            })
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK, "{label}");
        bench_get(
            &mut group,
            &rt,
            label,
            &mut svc,
            "/app/page?x=1",
            &headers,
            StatusCode::OK,
        );
    }

    std::fs::remove_dir_all(&durable_dir).ok();

    // The session hit with many sessions in the store (lookups miss the CPU caches).
    for n in [1_000usize, 100_000, 1_000_000] {
        let memory = Arc::new(MemoryStore::new(SessionSettings::default()));
        let f = fixture_on(memory.clone(), false, true);
        let ids: Vec<SessionId> = rt.block_on(async {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                ids.push(
                    f.store
                        .create(SessionRecord::new(identity(i)))
                        .await
                        .unwrap(),
                );
            }
            memory.run_pending_tasks().await;
            ids
        });
        // 1 024 distinct users cycling, each with its own cookie and cached token.
        let users: Vec<HeaderMap> = (0..1024)
            .map(|k| {
                let id = &ids[(k * 48_271) % n];
                let cookie = format!("_ga=GA1.2.1; {}", cookie_pair(&f.codec, id));
                browser_headers(&[("cookie", &cookie)])
            })
            .collect();
        drop(ids);
        let mut svc = tower::ServiceBuilder::new()
            .layer(f.layer.clone())
            .service_fn(noop);
        group.bench_with_input(BenchmarkId::new("session_hit_1024_users", n), &n, |b, _| {
            let mut next = 0usize;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        next = (next + 1) % users.len();
                        let svc = svc.ready().await.unwrap();
                        let response = svc
                            .call(request(&get, "/app/page", &users[next]))
                            .await
                            .unwrap();
                        debug_assert_eq!(response.status(), StatusCode::OK);
                        black_box(response);
                    }
                    start.elapsed()
                })
            })
        });
        drop(svc);
        drop(f);
    }

    // No session: a browser navigation starts a login (302, flow stored, flow cookie set) ...
    let f = fixture(false, true);
    let mut svc = tower::ServiceBuilder::new()
        .layer(f.layer.clone())
        .service_fn(noop);
    bench_get(
        &mut group,
        &rt,
        "no_session_browser_302",
        &mut svc,
        "/app/page?x=1",
        &anonymous,
        StatusCode::FOUND,
    );
    // ... and an API client gets 401 JSON with the login URL.
    let api = browser_headers(&[("accept", "application/json")]);
    bench_get(
        &mut group,
        &rt,
        "no_session_api_401",
        &mut svc,
        "/api/items",
        &api,
        StatusCode::UNAUTHORIZED,
    );
    group.finish();
}

criterion_group!(benches, strip, layer);
criterion_main!(benches);
