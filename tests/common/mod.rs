//! Shared harness for the layer, login-flow and sidecar tests.
//!
//! - [`Harness::start`]: the simulated WeChat on `127.0.0.1:0` (non-interactive), a component-mode
//!   [`WeChatOAuth`] pointed at it, a memory session store, and the layer around an [`echo`]
//!   service served with the crate's own server on `127.0.0.1:0`. [`Harness::push_ticket`] makes
//!   the platform ready.
//! - [`Browser`]: a reqwest client with redirects disabled and a tiny per-test cookie jar (parsed
//!   with the `cookie` crate) that only sends cookies to the proxy; [`Browser::login`] steps
//!   through the 302s by hand.
//! - [`offline_layer`]: a layer whose WeChat client points at a closed port, for `oneshot` tests
//!   that never reach WeChat.
//!
//! Every network await goes through [`within`].
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use url::Url;
use wechat_oauth_proxy::{
    Identity,
    identity::JwtCarrier,
    jwt::{JwtIssuer, JwtSettings},
    layer::WeChatAuthLayer,
    secret::SecretString,
    server::{self, ServerSettings},
    session::{
        CookieCodec, CookieSettings, MemoryStore, SessionRecord, SessionSettings, SessionStore,
    },
    sim::{SimConfig, SimWeChat},
    wechat::{
        Scope,
        client::ClientSettings,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::MemoryPlatformStore,
        token::TokenSettings,
    },
};

/// Upper bound of any single network step.
pub const STEP: Duration = Duration::from_secs(20);

/// The master secret of every test layer (≥ 32 bytes).
pub const MASTER_SECRET: &str = "test-master-secret-0123456789abcdef-0123456789";

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step did not finish in time")
}

/// The inner service of the tests: answers JSON describing exactly what it received
/// (method, path, query, every header with all its values, the `Identity` extension, body size).
pub async fn echo<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
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
        "body_len": body.len(),
    });
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// What to vary between harnesses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send the plain `X-WeChat-*` headers.
    pub plain_headers: bool,
    /// Where the JWT goes.
    pub jwt_carrier: JwtCarrier,
    /// Total timeout of each WeChat call.
    pub request_timeout: Duration,
    /// Skip rules (`None` = any method).
    pub skip: Vec<(Option<Method>, String)>,
    /// API prefixes.
    pub api_prefixes: Vec<String>,
    /// Requested scope.
    pub scope: Scope,
    /// Push a ticket before returning from [`Harness::with`].
    pub push_ticket: bool,
    /// Start the component token refresher.
    pub background: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            plain_headers: true,
            jwt_carrier: JwtCarrier::default(),
            request_timeout: Duration::from_secs(5),
            skip: vec![(Some(Method::GET), "/public/*".to_owned())],
            api_prefixes: vec!["/api".to_owned()],
            scope: Scope::UserInfo,
            push_ticket: true,
            background: false,
        }
    }
}

/// The collaborators of a layer, for tests that need to reach behind it.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The WeChat client.
    pub wechat: WeChatOAuth,
    /// The session store.
    pub sessions: Arc<MemoryStore>,
    /// The cookie codec.
    pub cookies: CookieCodec,
    /// The JWT issuer (verifies tokens too).
    pub jwt: JwtIssuer,
}

fn component_mode(sim: &SimConfig) -> OAuthMode {
    OAuthMode::Component {
        component_appid: sim.component_appid.clone(),
        component_secret: sim.component_secret.clone(),
        authorizer_appid: sim.authorizer_appid.clone(),
        message_token: sim.message_token.clone(),
        encoding_aes_key: sim.encoding_aes_key.clone(),
        previous_encoding_aes_key: None,
    }
}

/// Builds the layer's collaborators with WeChat at `wechat_base`.
pub fn parts(sim: &SimConfig, wechat_base: &Url, options: &Options) -> Parts {
    let settings = WeChatSettings {
        mode: component_mode(sim),
        client: ClientSettings {
            api_base: wechat_base.clone(),
            open_base: wechat_base.clone(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: options.request_timeout,
            lang: "zh_CN".to_owned(),
        },
        token: TokenSettings {
            retry_backoff: Duration::from_millis(20),
            ..TokenSettings::default()
        },
    };
    let wechat =
        WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).expect("wechat client");
    let master = SecretString::new(MASTER_SECRET);
    let cookies = CookieCodec::new(
        &master,
        CookieSettings {
            secure: false,
            ..CookieSettings::default()
        },
    )
    .expect("cookie codec");
    let mut jwt_settings = JwtSettings {
        issuer: "wechat-oauth-proxy-test".to_owned(),
        audience: "echo".to_owned(),
        ..JwtSettings::default()
    };
    if options.jwt_carrier == JwtCarrier::AuthorizationBearer {
        jwt_settings.value_prefix = "Bearer ".to_owned();
    }
    let jwt = JwtIssuer::new(jwt_settings, &master).expect("jwt issuer");
    Parts {
        wechat,
        sessions: Arc::new(MemoryStore::new(SessionSettings::default())),
        cookies,
        jwt,
    }
}

/// Builds the layer for `public_url` from `parts`.
pub fn layer(parts: &Parts, public_url: &Url, options: &Options) -> WeChatAuthLayer {
    let mut builder = WeChatAuthLayer::builder()
        .wechat(parts.wechat.clone())
        .sessions(parts.sessions.clone() as Arc<dyn SessionStore>)
        .cookie_codec(parts.cookies.clone())
        .jwt(parts.jwt.clone())
        .public_url(public_url.clone())
        .scope(options.scope)
        .plain_headers(options.plain_headers)
        .jwt_carrier(options.jwt_carrier.clone());
    for (method, pattern) in &options.skip {
        builder = builder
            .skip(method.clone(), pattern)
            .expect("valid skip rule");
    }
    for prefix in &options.api_prefixes {
        builder = builder.api_prefix(prefix.clone());
    }
    builder.build().expect("layer builds")
}

/// A layer whose WeChat is unreachable (a closed loopback port), for `oneshot` tests.
pub fn offline_layer(options: &Options) -> (WeChatAuthLayer, Parts) {
    let dead: Url = "http://127.0.0.1:9/".parse().expect("url");
    let parts = parts(&SimConfig::default(), &dead, options);
    let public: Url = "https://app.example.com".parse().expect("url");
    (layer(&parts, &public, options), parts)
}

/// Creates a session for `identity` directly in the store and returns the `Cookie` header value
/// a browser holding it would send.
pub async fn session_cookie(parts: &Parts, identity: Identity) -> String {
    let id = parts
        .sessions
        .create(SessionRecord::new(identity))
        .await
        .expect("create session");
    cookie_pair(parts.cookies.session_cookie(&id).to_str().expect("ascii"))
}

/// `name=value` of a `Set-Cookie` value.
pub fn cookie_pair(set_cookie: &str) -> String {
    let c = cookie::Cookie::parse(set_cookie.to_owned()).expect("set-cookie parses");
    format!("{}={}", c.name(), c.value())
}

/// An identity with CJK and emoji, as tests use it.
pub fn sample_identity() -> Identity {
    Identity {
        openid: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".to_owned(),
        unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".to_owned()),
        nickname: "张三🐼".to_owned(),
        avatar: "https://thirdwx.qlogo.cn/mmopen/x/132".to_owned(),
        appid: "wxa1b2c3d4e5f60708".to_owned(),
        scope: "snsapi_userinfo".to_owned(),
    }
}

/// The layer around [`echo`], served on loopback with the simulated WeChat behind it.
pub struct Harness {
    /// The simulated WeChat.
    pub sim: SimWeChat,
    /// The layer under test.
    pub layer: WeChatAuthLayer,
    /// Its collaborators.
    pub parts: Parts,
    /// Where the layer listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub base: Url,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Starts everything with the default [`Options`] (ticket pushed).
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    /// Starts everything with `options`.
    pub async fn with(options: Options) -> Harness {
        let localhost: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let sim = within(SimWeChat::start(SimConfig::default(), localhost))
            .await
            .expect("sim starts");
        let listener = within(TcpListener::bind(localhost)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let base: Url = format!("http://{addr}").parse().expect("url");
        let parts = parts(sim.config(), &sim.base_url(), &options);
        let layer = layer(&parts, &base, &options);
        let server = serve_layer(listener, layer.clone());
        let background = options
            .background
            .then(|| parts.wechat.start_background())
            .flatten();
        let harness = Harness {
            sim,
            layer,
            parts,
            addr,
            base,
            shutdown: Some(server.0),
            server: Some(server.1),
            background,
        };
        if options.push_ticket {
            harness.push_ticket().await;
        }
        harness
    }

    /// Pushes the simulator's current ticket to our events endpoint (expects `success`).
    pub async fn push_ticket(&self) {
        let events: Url = self.layer.events_url().parse().expect("events url");
        within(self.sim.push_ticket(&events))
            .await
            .expect("ticket push accepted");
    }

    /// An absolute URL on the layer.
    pub fn url(&self, path_and_query: &str) -> Url {
        self.base.join(path_and_query).expect("url")
    }

    /// A fresh browser (no cookies) that prefers HTML.
    pub fn browser(&self) -> Browser {
        Browser::new(self.addr)
    }

    /// Stops the server, the refresher and the simulator.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = within(server).await;
        }
        if let Some(bg) = self.background.take() {
            bg.abort();
        }
        within(self.sim.shutdown()).await;
    }
}

/// Serves `layer` around [`echo`] on `listener` with the crate's server; send on the returned
/// channel to stop it.
pub fn serve_layer(
    listener: TcpListener,
    layer: WeChatAuthLayer,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(echo::<hyper::body::Incoming>));
    let (tx, rx) = oneshot::channel::<()>();
    let settings = ServerSettings {
        shutdown_grace: Duration::from_secs(1),
        ..ServerSettings::default()
    };
    let handle = tokio::spawn(async move {
        let _ = server::serve(listener, service, settings, async {
            let _ = rx.await;
        })
        .await;
    });
    (tx, handle)
}

/// A browser: reqwest without redirects, with a cookie jar for the proxy's origin only.
#[derive(Debug, Clone)]
pub struct Browser {
    client: reqwest::Client,
    proxy: SocketAddr,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
    /// Send `Accept: text/html…` like a browser navigation (default true).
    pub html: bool,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Page {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Page {
    /// The `Location` header.
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location on {} {}", self.status, self.body))
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Whether this is the echo service's answer (the inner service was reached).
    pub fn reached_inner(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body).is_ok_and(|v| v["echo"] == true)
    }

    /// `Set-Cookie` values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    }
}

/// Browser-like `Accept` header (Chrome's).
pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

impl Browser {
    /// A browser for the proxy at `proxy`.
    pub fn new(proxy: SocketAddr) -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STEP)
            .build()
            .expect("client");
        Browser {
            client,
            proxy,
            jar: Arc::default(),
            html: true,
        }
    }

    /// The value of cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    /// Sets (or replaces) a cookie in the jar, e.g. to tamper with it.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .expect("jar")
            .insert(name.to_owned(), value.to_owned());
    }

    /// Removes a cookie from the jar.
    pub fn remove_cookie(&self, name: &str) {
        self.jar.lock().expect("jar").remove(name);
    }

    /// A copy of this browser's jar in a new browser (a stolen cookie).
    pub fn clone_jar(&self) -> Browser {
        let other = Browser::new(self.proxy);
        *other.jar.lock().expect("jar") = self.jar.lock().expect("jar").clone();
        other
    }

    /// Sends a request; cookies go only to the proxy; `Set-Cookie` from the proxy updates the jar.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Page {
        let parsed: Url = url.parse().expect("absolute url");
        let to_proxy = parsed.port_or_known_default() == Some(self.proxy.port());
        let mut request = self.client.request(method, parsed);
        if self.html {
            request = request.header(header::ACCEPT, BROWSER_ACCEPT);
        }
        if to_proxy {
            let cookies = self
                .jar
                .lock()
                .expect("jar")
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            if !cookies.is_empty() {
                request = request.header(header::COOKIE, cookies);
            }
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = within(request.send()).await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let body = within(response.text()).await.expect("body read");
        if to_proxy {
            let mut jar = self.jar.lock().expect("jar");
            for value in headers.get_all(header::SET_COOKIE) {
                let c = cookie::Cookie::parse(value.to_str().expect("ascii").to_owned())
                    .expect("set-cookie parses");
                let removal = c.value().is_empty()
                    || c.max_age()
                        .is_some_and(|age| age.is_zero() || age.is_negative());
                if removal {
                    jar.remove(c.name());
                } else {
                    jar.insert(c.name().to_owned(), c.value().to_owned());
                }
            }
        }
        Page {
            status,
            headers,
            body,
        }
    }

    /// `GET url` with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Page {
        self.request(Method::GET, url, headers, None).await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Page {
        self.get_with(url, &[]).await
    }

    /// Follows at most `max` redirects by hand, returning every page seen (the last one is not
    /// a redirect, or the limit was hit).
    pub async fn follow(&self, url: &str, max: usize) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut next: Url = url.parse().expect("url");
        for _ in 0..=max {
            let page = self.get(next.as_str()).await;
            let location = page
                .status
                .is_redirection()
                .then(|| page.location().to_owned());
            pages.push(page);
            match location {
                Some(loc) => next = next.join(&loc).expect("location resolves"),
                None => break,
            }
        }
        pages
    }

    /// Goes to `url` on the proxy without a session and walks the login: 302 to WeChat's
    /// authorize page, 302 to our callback, 302 to the return path, and the final page.
    /// Returns all four pages.
    pub async fn login(&self, url: &str) -> Vec<Page> {
        let pages = self.follow(url, 3).await;
        assert_eq!(
            pages.len(),
            4,
            "expected 3 redirects: {:?}",
            pages
                .iter()
                .map(|p| (p.status, p.body.clone()))
                .collect::<Vec<_>>()
        );
        pages
    }
}
