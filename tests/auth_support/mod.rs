//! Shared harness for `tests/auth_layer.rs` (oneshot) and `tests/auth_flow.rs` (sockets).
//!
//! - [`Echo`]: an inner service that answers with what it received (method, path, query, every
//!   header with all its values, the `Identity` extension, the body length) as JSON, and counts
//!   its calls, so a test can tell "the inner service never saw this".
//! - [`parts`]: the collaborators of a [`WeChatAuthLayer`] (cookie codec and JWT issuer from one
//!   master secret, a memory session store) and a builder with the test defaults.
//! - [`World`]: the simulated WeChat on `127.0.0.1:0` (non-interactive), a component-mode
//!   [`WeChatOAuth`] against it, the layer around [`Echo`] served by
//!   `wechat_oauth_proxy::server::serve` on `127.0.0.1:0`.
//! - [`Browser`]: reqwest with redirects disabled, stepping through 302s by hand, with a tiny
//!   cookie jar for the proxy's origin (parsed with the `cookie` crate).
//!
//! Every network await goes through [`bounded`].
#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by several test crates; each uses a part"
)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower::{Layer as _, Service};
use url::Url;
use wechat_oauth_proxy::{
    Identity,
    jwt::{JwtIssuer, JwtSettings},
    layer::{WeChatAuthLayer, WeChatAuthLayerBuilder},
    secret::SecretString,
    server::{self, ServerSettings},
    session::{CookieCodec, CookieSettings, MemoryStore, SessionSettings, SessionStore},
    sim::{SimConfig, SimWeChat},
    wechat::{
        AuthorizerAppId, ComponentAppId,
        client::ClientSettings,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::MemoryPlatformStore,
        token::TokenSettings,
    },
};

/// Upper bound for any single network step.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step did not finish in time")
}

/// The master secret every test layer uses (cookie key and derived JWT key).
pub const MASTER_SECRET: &str = "layer-tests master secret, at least 32 bytes long";

/// Accept header of a browser's top-level navigation (Firefox's).
pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

pub fn master() -> SecretString {
    SecretString::new(MASTER_SECRET)
}

/// Cookie settings for plain-HTTP tests (no `Secure`, hence no `__Host-` prefix).
pub fn cookie_settings() -> CookieSettings {
    CookieSettings {
        secure: false,
        ..CookieSettings::default()
    }
}

pub fn cookie_codec() -> CookieCodec {
    CookieCodec::new(&master(), cookie_settings()).expect("cookie codec")
}

pub fn jwt_issuer() -> JwtIssuer {
    JwtIssuer::new(JwtSettings::default(), &master()).expect("jwt issuer")
}

// ---------------------------------------------------------------------------------------------
// The echo service
// ---------------------------------------------------------------------------------------------

/// An inner service that echoes the request as JSON and counts its calls.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Echo {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many requests reached the inner service.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<B> Service<Request<B>> for Echo
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body_len = match body.collect().await {
                Ok(collected) => collected.to_bytes().len() as i64,
                Err(_) => -1,
            };
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in &parts.headers {
                headers
                    .entry(name.as_str().to_owned())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
            let identity = parts.extensions.get::<Identity>().cloned();
            let json = serde_json::json!({
                "echo": true,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "identity": identity,
                "body_len": body_len,
            });
            let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        })
    }
}

/// What [`Echo`] reported, parsed.
#[derive(Debug)]
pub struct Echoed(pub serde_json::Value);

impl Echoed {
    pub fn parse(body: &str) -> Option<Echoed> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        (value["echo"] == true).then_some(Echoed(value))
    }

    /// Every value the inner service saw for `name` (lower-case).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// Every header name the inner service saw.
    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn identity(&self) -> Option<Identity> {
        serde_json::from_value(self.0["identity"].clone()).ok()
    }

    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    pub fn body_len(&self) -> i64 {
        self.0["body_len"].as_i64().unwrap_or(-2)
    }
}

/// Names (with `_` as `-`, lower-case) that are identity headers the layer owns.
pub fn is_identity_header(name: &str) -> bool {
    let norm = name.to_ascii_lowercase().replace('_', "-");
    matches!(
        norm.as_str(),
        "x-wechat-jwt"
            | "x-wechat-openid"
            | "x-wechat-unionid"
            | "x-wechat-nickname"
            | "x-wechat-avatar"
            | "x-wechat-appid"
    )
}

// ---------------------------------------------------------------------------------------------
// Layer parts
// ---------------------------------------------------------------------------------------------

/// Component-mode WeChat settings against `base` (the simulator, or a closed port).
pub fn wechat_settings(config: &SimConfig, base: Url, request_timeout: Duration) -> WeChatSettings {
    WeChatSettings {
        mode: OAuthMode::Component {
            component_appid: config.component_appid.clone(),
            component_secret: config.component_secret.clone(),
            authorizer_appid: config.authorizer_appid.clone(),
            message_token: config.message_token.clone(),
            encoding_aes_key: config.encoding_aes_key.clone(),
            previous_encoding_aes_key: None,
        },
        client: ClientSettings {
            api_base: base.clone(),
            open_base: base,
            connect_timeout: Duration::from_secs(2),
            request_timeout,
            ..ClientSettings::default()
        },
        token: TokenSettings {
            retry_backoff: Duration::from_millis(20),
            min_refetch_interval: Duration::from_millis(100),
            idle_poll: Duration::from_millis(200),
            ..TokenSettings::default()
        },
    }
}

/// A component-mode `WeChatOAuth` pointing at a closed port: for paths that never call WeChat.
pub fn offline_wechat() -> WeChatOAuth {
    let config = SimConfig::default();
    let base = Url::parse("http://127.0.0.1:9/").expect("url");
    WeChatOAuth::new(
        wechat_settings(&config, base, Duration::from_millis(500)),
        Arc::new(MemoryPlatformStore::new()),
    )
    .expect("wechat")
}

/// The appids of the default simulator configuration.
pub fn sim_appids() -> (ComponentAppId, AuthorizerAppId) {
    let c = SimConfig::default();
    (c.component_appid, c.authorizer_appid)
}

/// A builder with the test defaults: plain-HTTP cookies, default JWT (EdDSA derived from the
/// master secret), the given WeChat side and store.
pub fn builder(
    public_url: Url,
    wechat: WeChatOAuth,
    sessions: Arc<dyn SessionStore>,
) -> WeChatAuthLayerBuilder {
    WeChatAuthLayer::builder()
        .public_url(public_url)
        .wechat(wechat)
        .sessions(sessions)
        .cookies(cookie_codec())
        .jwt(jwt_issuer())
}

/// A fresh in-memory session store.
pub fn memory_store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(SessionSettings::default()))
}

/// The `name=value` pair of a `Set-Cookie` header value.
pub fn cookie_pair(set_cookie: &http::HeaderValue) -> String {
    let text = set_cookie.to_str().expect("ascii set-cookie");
    let cookie = cookie::Cookie::parse(text.to_owned()).expect("set-cookie parses");
    format!("{}={}", cookie.name(), cookie.value())
}

// ---------------------------------------------------------------------------------------------
// The world: simulator + proxy over sockets
// ---------------------------------------------------------------------------------------------

/// How a [`World`] is set up.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Timeout of every WeChat call.
    pub request_timeout: Duration,
    /// Send the plain `X-WeChat-*` headers too.
    pub plain_headers: bool,
    /// Push a ticket through `/_wxauth/events` and wait for `/ready` before returning.
    pub ready: bool,
    /// Whether the background token refresher runs.
    pub background: bool,
    /// Official-account mode (the account's own secret) instead of component mode.
    pub official_account: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            plain_headers: false,
            ready: true,
            background: true,
            official_account: false,
        }
    }
}

/// The simulator, the proxy (layer + echo) and their handles.
pub struct World {
    pub sim: SimWeChat,
    pub wechat: WeChatOAuth,
    pub sessions: Arc<MemoryStore>,
    pub echo: Echo,
    /// `http://127.0.0.1:<port>/` of the proxy.
    pub base: Url,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    background: Option<JoinHandle<()>>,
}

impl World {
    pub async fn start() -> World {
        World::start_with(WorldOptions::default()).await
    }

    pub async fn start_with(options: WorldOptions) -> World {
        let sim = bounded(SimWeChat::start(
            SimConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .await
        .expect("sim starts");
        let mut settings = wechat_settings(sim.config(), sim.base_url(), options.request_timeout);
        if options.official_account {
            settings.mode = OAuthMode::OfficialAccount {
                appid: sim.config().authorizer_appid.clone(),
                secret: sim.config().official_account_secret.clone(),
            };
        }
        let wechat =
            WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).expect("wechat");
        let background = options
            .background
            .then(|| wechat.start_background())
            .flatten();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = Url::parse(&format!("http://{addr}/")).expect("url");
        let sessions = memory_store();
        let headers = wechat_oauth_proxy::identity::HeaderSettings {
            plain_headers: options.plain_headers,
            ..Default::default()
        };
        let layer = builder(base.clone(), wechat.clone(), sessions.clone())
            .headers(headers)
            .skip(Some(Method::GET), "/public/*")
            .expect("skip rule")
            .api_prefix("/api")
            .build()
            .expect("layer");
        let echo = Echo::new();
        let service = layer.layer(echo.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = server::serve(listener, service, ServerSettings::default(), async {
                let _ = rx.await;
            })
            .await;
        });
        let world = World {
            sim,
            wechat,
            sessions,
            echo,
            base,
            shutdown: Some(tx),
            server: Some(server),
            background,
        };
        if options.ready && !options.official_account {
            world.push_ticket().await;
            world.wait_ready().await;
        }
        world
    }

    pub fn url(&self, path_and_query: &str) -> Url {
        self.base.join(path_and_query).expect("url")
    }

    pub fn events_url(&self) -> Url {
        self.url("/_wxauth/events")
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.base.clone())
    }

    /// One genuine, signed ticket push through the proxy's events endpoint.
    pub async fn push_ticket(&self) {
        bounded(self.sim.push_ticket(&self.events_url()))
            .await
            .expect("the proxy accepts the simulator's push");
    }

    /// `GET /_wxauth/ready` status and body.
    pub async fn ready(&self) -> (StatusCode, serde_json::Value) {
        let reply = self.browser().get(self.url("/_wxauth/ready")).await;
        let json = reply.json();
        (reply.status, json)
    }

    /// Polls `/ready` (bounded) until it answers 200: the refresher fetches the component token
    /// right after the ticket arrives.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.ready().await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy never became ready: {:?}", self.ready().await);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(background) = self.background.take() {
            background.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, fully read.
#[derive(Debug)]
pub struct Reply {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `Location`, resolved against the request URL.
    pub fn location(&self) -> Option<Url> {
        let value = self.headers.get(http::header::LOCATION)?.to_str().ok()?;
        self.url.join(value).ok()
    }

    /// The raw `Location` header text.
    pub fn raw_location(&self) -> Option<String> {
        self.headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.body))
    }

    pub fn echoed(&self) -> Option<Echoed> {
        Echoed::parse(&self.body)
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A browser: no automatic redirects, a cookie jar for the proxy's origin only.
#[derive(Clone, Debug)]
pub struct Browser {
    client: reqwest::Client,
    origin: Url,
    /// name → value
    pub jar: BTreeMap<String, String>,
    /// `Accept` sent with every request (a navigation's by default).
    pub accept: String,
}

impl Browser {
    pub fn new(origin: Url) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STEP)
            .build()
            .expect("client");
        Self {
            client,
            origin,
            jar: BTreeMap::new(),
            accept: BROWSER_ACCEPT.to_owned(),
        }
    }

    /// Another browser (empty jar) sharing this one's connection pool.
    pub fn fresh(&self) -> Browser {
        Browser {
            client: self.client.clone(),
            origin: self.origin.clone(),
            jar: BTreeMap::new(),
            accept: self.accept.clone(),
        }
    }

    /// The session cookie's `name=value`, if the jar holds one.
    pub fn session_cookie(&self) -> Option<String> {
        self.jar
            .iter()
            .find(|(k, _)| k.ends_with("wxauth_session"))
            .map(|(k, v)| format!("{k}={v}"))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// The `Cookie` header this browser sends to the proxy.
    pub fn cookie_header(&self) -> Option<String> {
        (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub async fn get(&mut self, url: Url) -> Reply {
        self.send(Method::GET, url, &[], None).await
    }

    /// Sends one request (cookies from the jar for our origin), stores `Set-Cookie`s.
    pub async fn send(
        &mut self,
        method: Method,
        url: Url,
        extra: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, url.clone())
            .header(http::header::ACCEPT, self.accept.as_str());
        if self.same_origin(&url) {
            if let Some(cookies) = self.cookie_header() {
                request = request.header(http::header::COOKIE, cookies);
            }
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = bounded(request.send()).await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let body = bounded(response.text()).await.expect("body");
        let reply = Reply {
            url: url.clone(),
            status,
            headers,
            body,
        };
        if self.same_origin(&url) {
            self.store_cookies(&reply);
        }
        reply
    }

    fn store_cookies(&mut self, reply: &Reply) {
        for text in reply.set_cookies() {
            let Ok(cookie) = cookie::Cookie::parse(text) else {
                continue;
            };
            let removed = cookie.max_age().is_some_and(|age| age.is_zero())
                || cookie.value().is_empty()
                || cookie
                    .expires_datetime()
                    .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
            if removed {
                self.jar.remove(cookie.name());
            } else {
                self.jar
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    /// Follows redirects (at most 10) from `url`; returns every reply in order.
    pub async fn navigate(&mut self, url: Url) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut next = Some(url);
        for _ in 0..10 {
            let Some(url) = next.take() else { break };
            let reply = self.get(url).await;
            next = reply
                .status
                .is_redirection()
                .then(|| reply.location())
                .flatten();
            replies.push(reply);
            if next.is_none() {
                return replies;
            }
        }
        panic!(
            "redirect loop: {:?}",
            replies.iter().map(|r| r.url.as_str()).collect::<Vec<_>>()
        );
    }

    /// Follows redirects and returns only the last reply.
    pub async fn visit(&mut self, url: Url) -> Reply {
        self.navigate(url).await.pop().expect("at least one reply")
    }

    /// Starts a login at `url` (a protected page): returns the WeChat authorize URL the proxy
    /// redirected to (the flow cookie is now in the jar).
    pub async fn start_login(&mut self, url: Url) -> Url {
        let reply = self.get(url).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
        let location = reply.location().expect("location");
        assert!(
            location.path().ends_with("/connect/oauth2/authorize"),
            "{location}"
        );
        location
    }

    /// Visits the (simulated) authorize page; returns the callback URL it redirects to.
    pub async fn authorize(&mut self, authorize: Url) -> Url {
        let reply = self.get(authorize).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
        reply.location().expect("callback location")
    }
}

/// The JWT of an echoed request (default header).
pub fn jwt_of(echoed: &Echoed) -> String {
    echoed.header("x-wechat-jwt").expect("x-wechat-jwt")
}

/// `true` when a Set-Cookie list contains a live session cookie.
pub fn sets_session(reply: &Reply) -> bool {
    reply.set_cookies().iter().any(|c| {
        cookie::Cookie::parse(c.as_str())
            .is_ok_and(|c| c.name().ends_with("wxauth_session") && !c.value().is_empty())
    })
}
