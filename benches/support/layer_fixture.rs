//! The layer as the layer benches build it (`benches/layer.rs`, `benches/icount.rs`): official
//! account mode with WeChat on a closed port (never called on the measured paths), the bench
//! master secret, one browser's headers. Declared by those benches with `#[path]`, so the other
//! benches do not compile it.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Empty;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::identity::HeaderSettings;
use wechat_oauth_proxy::jwt::{JwtIssuer, JwtSettings};
use wechat_oauth_proxy::layer::{
    DispatchSettings, ForwardAuthSettings, LayerSettings, WeChatAuthLayer,
};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{
    CookieCodec, CookieSettings, MemoryStore, SessionId, SessionSettings, SessionStore,
};
use wechat_oauth_proxy::wechat::client::ClientSettings;
use wechat_oauth_proxy::wechat::oauth::{OAuthMode, WeChatOAuth, WeChatSettings};
use wechat_oauth_proxy::wechat::persist::MemoryPlatformStore;
use wechat_oauth_proxy::wechat::{AppSecret, AuthorizerAppId};

const MASTER_SECRET: &str = "bench-only-master-secret-0123456789abcdef";

/// The `i`-th synthetic user.
pub(crate) fn identity(i: usize) -> Identity {
    wechat_oauth_proxy::sim::synthetic_identity(i)
}

/// Headers a desktop browser sends on a navigation, plus `extra`.
pub(crate) fn browser_headers(extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 MicroMessenger/7.0.20"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "zh-CN,zh;q=0.9,en;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://app.example.com/"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("upgrade-insecure-requests", "1"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

/// `method path` with `headers` and an empty body.
pub(crate) fn request(method: &Method, path: &str, headers: &HeaderMap) -> Request<Empty<Bytes>> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Empty::new())
        .unwrap();
    *req.headers_mut() = headers.clone();
    req
}

/// The inner service of the layer benches: looks at the request, answers 200 with no body.
pub(crate) async fn noop(req: Request<Empty<Bytes>>) -> Result<Response<Empty<Bytes>>, Infallible> {
    black_box(&req);
    Ok(Response::new(Empty::new()))
}

pub(crate) struct Fixture {
    pub(crate) layer: WeChatAuthLayer,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) codec: CookieCodec,
}

/// The layer on a fresh memory store.
pub(crate) fn fixture(plain_headers: bool, jwt_cache: bool) -> Fixture {
    let store = Arc::new(MemoryStore::new(SessionSettings::default()));
    fixture_on(store, plain_headers, jwt_cache)
}

/// The layer on `store`, with plain identity headers and the JWT cache as asked.
pub(crate) fn fixture_on(
    store: Arc<dyn SessionStore>,
    plain_headers: bool,
    jwt_cache: bool,
) -> Fixture {
    build(store, plain_headers, jwt_cache, false)
}

/// The layer of [`fixture`]`(false, true)` with the forward-auth endpoints on (the default
/// callers: loopback), as `bench/config.toml` has them for row (f) of `bench/load.sh`.
#[allow(dead_code, reason = "used by benches/icount.rs only")]
pub(crate) fn forward_auth_fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new(SessionSettings::default()));
    build(store, false, true, true)
}

fn build(
    store: Arc<dyn SessionStore>,
    plain_headers: bool,
    jwt_cache: bool,
    forward_auth: bool,
) -> Fixture {
    let closed: url::Url = "http://127.0.0.1:9/".parse().unwrap();
    let wechat = WeChatOAuth::new(
        WeChatSettings {
            mode: OAuthMode::OfficialAccount {
                appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
                secret: AppSecret::new("bench-official-account-secret"),
            },
            client: ClientSettings {
                api_base: closed.clone(),
                open_base: closed,
                ..ClientSettings::default()
            },
            token: Default::default(),
        },
        Arc::new(MemoryPlatformStore::new()),
    )
    .unwrap();
    let master = SecretString::new(MASTER_SECRET);
    let codec = CookieCodec::new(&master, CookieSettings::default()).unwrap();
    let jwt = JwtIssuer::new(
        JwtSettings {
            cache: jwt_cache,
            ..JwtSettings::default()
        },
        &master,
    )
    .unwrap();
    let layer = WeChatAuthLayer::new(
        LayerSettings {
            public_url: "https://app.example.com".parse().unwrap(),
            dispatch: DispatchSettings {
                api_prefixes: vec!["/api/".to_owned()],
                ..DispatchSettings::default()
            },
            headers: HeaderSettings {
                plain_headers,
                ..HeaderSettings::default()
            },
            forward_auth: ForwardAuthSettings {
                enabled: forward_auth,
                ..ForwardAuthSettings::default()
            },
            ..LayerSettings::default()
        },
        wechat,
        Arc::clone(&store),
        codec.clone(),
        jwt,
    )
    .unwrap();
    Fixture {
        layer,
        store,
        codec,
    }
}

/// The `Cookie` pair of session `id`.
pub(crate) fn cookie_pair(codec: &CookieCodec, id: &SessionId) -> String {
    super::support::cookie_pair(&codec.session_cookie(id))
}
