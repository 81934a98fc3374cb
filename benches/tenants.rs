//! Tenant resolution (issue 11): request → official account among 1 000 configured tenants, by
//! exact host, host pattern and path prefix (must be O(1), ≤ 1 µs), and the start-up cost of
//! building the resolution table and the whole layer with 1 000 tenants.
//!
//! No network: WeChat's base URLs point at a closed port and nothing calls them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Uri, header::HOST};
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::layer::WeChatAuthLayer;
use wechat_oauth_proxy::layer::tenant::{
    HostPattern, PathPrefix, TenantHost, TenantResolver, TenantRouting, TenantSite, request_host,
};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{CookieCodec, CookieSettings, MemoryStore, SessionStore};
use wechat_oauth_proxy::wechat::client::ClientSettings;
use wechat_oauth_proxy::wechat::oauth::{OAuthMode, WeChatOAuth, WeChatSettings};
use wechat_oauth_proxy::wechat::persist::MemoryPlatformStore;
use wechat_oauth_proxy::wechat::tenants::{TenantMode, TenantSettings};
use wechat_oauth_proxy::wechat::{AppSecret, AuthorizerAppId, ComponentAppId};

const TENANTS: usize = 1_000;
const MASTER_SECRET: &str = "bench-only-master-secret-0123456789abcdef";

fn appid(i: usize) -> AuthorizerAppId {
    AuthorizerAppId::new(format!("wx{i:016x}"))
}

fn routing() -> TenantRouting {
    TenantRouting {
        sites: (0..TENANTS)
            .map(|i| TenantSite {
                appid: appid(i),
                hosts: vec![TenantHost::try_from(format!("shop-{i}.example.com")).unwrap()],
                name: Some(format!("店 {i}")),
                audience: (i % 2 == 0).then(|| format!("shop-{i}")),
            })
            .collect(),
        host_pattern: Some(HostPattern::try_from("{appid}.wx.example.com".to_owned()).unwrap()),
        path_prefix: Some(PathPrefix::try_from("/t/{appid}".to_owned()).unwrap()),
        ..TenantRouting::default()
    }
}

fn build_wechat() -> WeChatOAuth {
    let closed = url::Url::parse("http://127.0.0.1:9/").unwrap();
    let settings = WeChatSettings {
        mode: OAuthMode::Component {
            component_appid: ComponentAppId::new("wx0123456789abcdef"),
            component_secret: AppSecret::new("bench-component-secret"),
            tenants: TenantSettings::new(TenantMode::Static, (0..TENANTS).map(appid).collect()),
            message_token: SecretString::new("component_token_demo"),
            encoding_aes_key: SecretString::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
            previous_encoding_aes_key: None,
        },
        client: ClientSettings {
            api_base: closed.clone(),
            open_base: closed,
            ..ClientSettings::default()
        },
        token: Default::default(),
    };
    WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap()
}

fn bench(c: &mut Criterion) {
    let wechat = build_wechat();
    let public = url::Url::parse("https://platform.example.com").unwrap();
    let routing = routing();
    let resolver =
        TenantResolver::new(Some(&routing), wechat.tenants().clone(), None, &public).unwrap();

    let mut group = c.benchmark_group("tenants/resolve_1000");
    let uri: Uri = "/orders/42?x=1".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("Shop-737.Example.com:443"));
    group.bench_function("exact_host", |b| {
        b.iter(|| {
            let host = request_host(black_box(&uri), black_box(&headers)).unwrap();
            black_box(resolver.resolve(host.as_deref(), uri.path()).unwrap())
        });
    });
    let mut pattern = HeaderMap::new();
    let pattern_host = format!("{}.wx.example.com", appid(737));
    pattern.insert(HOST, HeaderValue::from_str(&pattern_host).unwrap());
    group.bench_function("host_pattern", |b| {
        b.iter(|| {
            let host = request_host(black_box(&uri), black_box(&pattern)).unwrap();
            black_box(resolver.resolve(host.as_deref(), uri.path()).unwrap())
        });
    });
    let prefixed = format!("/t/{}/orders/42", appid(737));
    let mut platform = HeaderMap::new();
    platform.insert(HOST, HeaderValue::from_static("platform.example.com"));
    group.bench_function("path_prefix", |b| {
        b.iter(|| {
            let host = request_host(black_box(&uri), black_box(&platform)).unwrap();
            black_box(
                resolver
                    .resolve(host.as_deref(), black_box(&prefixed))
                    .unwrap(),
            )
        });
    });
    group.bench_function("unknown", |b| {
        b.iter(|| {
            let host = request_host(black_box(&uri), black_box(&platform)).unwrap();
            black_box(resolver.resolve(host.as_deref(), uri.path()).unwrap_err())
        });
    });
    group.finish();

    let mut group = c.benchmark_group("tenants/build_1000");
    group.sample_size(20);
    group.bench_function("resolver", |b| {
        b.iter(|| {
            black_box(
                TenantResolver::new(Some(&routing), wechat.tenants().clone(), None, &public)
                    .unwrap(),
            )
        });
    });
    let master = SecretString::new(MASTER_SECRET);
    let cookies = CookieCodec::new(&master, CookieSettings::default()).unwrap();
    let jwt = JwtIssuer::new(JwtSettings::default(), &master).unwrap();
    let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    group.bench_function("layer", |b| {
        b.iter(|| {
            black_box(
                WeChatAuthLayer::builder()
                    .public_url(public.clone())
                    .wechat(wechat.clone())
                    .sessions(Arc::clone(&sessions))
                    .cookie_codec(cookies.clone())
                    .jwt(jwt.clone())
                    .tenants(routing.clone())
                    .build()
                    .unwrap(),
            )
        });
    });
    group.bench_function("wechat_registry", |b| {
        b.iter(|| black_box(build_wechat()));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
