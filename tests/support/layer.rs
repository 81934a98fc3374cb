//! The layer part of the harness, used by `tests/layer_oneshot.rs` (`oneshot`, no sockets),
//! `tests/login_flow.rs` and `tests/login_flood.rs` (real loopback sockets with the simulated
//! WeChat).
//!
//! - [`Echo`]: the inner service; answers with what it received (method, path, query, every
//!   header with all its values, the `Identity` extension, the body length) as JSON, and counts
//!   its calls so a test can tell "the inner service never saw this". [`Echoed`] parses it.
//! - Layer parts: [`cookie_codec`] and [`jwt_issuer`] from one master secret, [`memory_store`],
//!   [`offline_wechat`] (a closed port, for paths that never call WeChat) and [`builder`] with
//!   the test defaults.
//! - [`World`]: the simulated WeChat on `127.0.0.1:0` (non-interactive), a [`WeChatOAuth`]
//!   against it (component mode, or official-account mode), the layer around [`Echo`] served by
//!   `wechat_oauth_proxy::server::serve` on `127.0.0.1:0`.
//! - [`Browser`]: reqwest with redirects disabled, stepping through 302s by hand, with a small
//!   cookie jar (parsed with the `cookie` crate) for the proxy's origin only.
//!
//! Every network await goes through [`bounded`]; every loop is bounded.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use super::{STEP, bounded, cookie_pair};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower::{Layer as _, Service};
use url::Url;
use wechat_oauth_proxy::{
    Identity,
    identity::HeaderSettings,
    ids::Scope,
    jwt::{JwtIssuer, JwtSettings},
    layer::{
        ForwardAuthSettings, QrSettings, WeChatAuthLayer, WeChatAuthLayerBuilder,
        tenant::TenantRouting,
    },
    secret::SecretString,
    server::{self, ServerSettings},
    session::{
        CookieCodec, CookieSettings, MemoryStore, SessionId, SessionRecord, SessionSettings,
        SessionStore, TicketStore,
    },
    sim::{SimConfig, SimWeChat},
    wechat::{
        client::ClientSettings,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::MemoryPlatformStore,
        tenants::TenantSettings,
        token::TokenSettings,
    },
};

/// The master secret every test layer uses (cookie key and derived JWT key).
pub const MASTER_SECRET: &str = "layer-tests master secret, at least 32 bytes long";

/// Accept header of a browser's top-level navigation.
pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// Name of the session cookie with non-Secure (development) cookies.
pub const SESSION: &str = "wxauth_session";

/// Name of the login-flow cookie with non-Secure (development) cookies.
pub const FLOW: &str = "wxauth_flow";

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

/// The library's default JWT settings (EdDSA key derived from the master secret).
pub fn jwt_issuer() -> JwtIssuer {
    JwtIssuer::new(JwtSettings::default(), &master()).expect("jwt issuer")
}

/// A fresh in-memory session store.
pub fn memory_store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(SessionSettings::default()))
}

/// The user of the tests that create sessions directly: a nickname with CJK, a space and an
/// emoji (a 4-byte UTF-8 sequence), all of which must survive every hop exactly.
pub fn sample_identity() -> Identity {
    Identity {
        openid: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into(),
        unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
        nickname: "张三 🐼".to_owned(),
        avatar: "https://thirdwx.qlogo.cn/mmopen/x/132".to_owned(),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: Scope::UserInfo,
    }
}

/// [`sample_identity`]'s nickname as the plain `X-WeChat-Nickname` header carries it.
pub const SAMPLE_NICKNAME_HEADER: &str = "%E5%BC%A0%E4%B8%89%20%F0%9F%90%BC";

/// Creates a session for `identity` directly in `store`; returns its id and the
/// `Cookie` header value (`name=value`) a browser holding it sends.
pub async fn session_cookie(store: &MemoryStore, identity: Identity) -> (SessionId, String) {
    let id = bounded(store.create(SessionRecord::new(identity)))
        .await
        .expect("create session");
    let cookie = cookie_pair(&cookie_codec().session_cookie(&id));
    (id, cookie)
}

/// The session id a `name=value` session cookie decrypts to.
pub fn session_id_of(cookie: &str) -> String {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie.parse().expect("header value"));
    cookie_codec()
        .read_session(&headers)
        .expect("the cookie decrypts")
        .expose_secret()
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
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
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

    /// All headers the inner service saw, as one JSON text (for "appears nowhere" checks).
    pub fn headers_text(&self) -> String {
        self.0["headers"].to_string()
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

    /// The JWT in the default header.
    pub fn jwt(&self) -> String {
        self.header("x-wechat-jwt").expect("x-wechat-jwt")
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
        mode: config.component_mode(),
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

/// A component-mode `WeChatOAuth` pointing at a closed port (`127.0.0.1:9`): for paths that
/// never call WeChat. Its platform store already holds a ticket (as after the first push), so
/// login starts go to WeChat's authorize page.
pub fn offline_wechat() -> WeChatOAuth {
    use futures_util::FutureExt as _;
    use wechat_oauth_proxy::wechat::{VerifyTicket, persist::PlatformStore as _, token::now_unix};
    let config = SimConfig::default();
    let base = Url::parse("http://127.0.0.1:9/").expect("url");
    let store = MemoryPlatformStore::new();
    let ticket = wechat_oauth_proxy::wechat::persist::StoredTicket {
        ticket: VerifyTicket::new("ticket@@@offline-test-ticket"),
        create_time: now_unix(),
        received_at: now_unix(),
    };
    // The in-memory store answers at once.
    store
        .save_ticket(&config.component_appid, &ticket)
        .now_or_never()
        .expect("memory store is immediate")
        .expect("ticket saved");
    WeChatOAuth::new(
        wechat_settings(&config, base, Duration::from_millis(500)),
        Arc::new(store),
    )
    .expect("wechat")
}

/// A builder with the test defaults: plain-HTTP cookies, the default JWT settings (EdDSA
/// derived from the master secret), the given WeChat side and store.
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

// ---------------------------------------------------------------------------------------------
// The world: simulator + proxy over sockets
// ---------------------------------------------------------------------------------------------

/// How a [`World`] is set up. Its layer always skips `GET /public/*` and treats `/api` as API.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timeout of every WeChat call.
    pub request_timeout: Duration,
    /// Send the plain `X-WeChat-*` headers too (the library's default is off).
    pub plain_headers: bool,
    /// Push a ticket through `/_wxauth/events` and wait for `/ready` before returning.
    pub ready: bool,
    /// Whether the background token refresher runs.
    pub background: bool,
    /// Official-account mode (the account's own secret) instead of component mode.
    pub official_account: bool,
    /// Lifetimes and bounds of the in-memory session store.
    pub session: SessionSettings,
    /// The login deadline (`None`: the library default).
    pub login_deadline: Option<Duration>,
    /// The lifetime of a pending login (`None`: the library default).
    pub flow_ttl: Option<Duration>,
    /// The simulator's configuration (accounts, redirect hosts).
    pub sim: SimConfig,
    /// Tenant routing: the proxy then serves every account the simulator starts authorized
    /// with set 4 (static mode, unless `tenant_settings` says otherwise).
    pub tenants: Option<TenantRouting>,
    /// The WeChat side's tenant settings with `tenants` (default: from the simulator).
    pub tenant_settings: Option<TenantSettings>,
    /// The forward-auth endpoints (`None`: the library default, off).
    pub forward_auth: Option<ForwardAuthSettings>,
    /// The public URL (`None`: the proxy's own `http://127.0.0.1:<port>/`), e.g. the address of
    /// a front proxy that browsers go through.
    pub public_url: Option<Url>,
    /// The desktop QR login bridge (`None`: the library default, off).
    pub qr: Option<QrSettings>,
    /// Where QR tickets live (`None`: the layer's memory store).
    pub tickets: Option<Arc<dyn TicketStore>>,
    /// `qr.desktop` website mode with the simulator's first website app (its client pointed
    /// at the simulator).
    pub website: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            plain_headers: false,
            ready: true,
            background: true,
            official_account: false,
            session: SessionSettings::default(),
            login_deadline: None,
            flow_ttl: None,
            sim: SimConfig::default(),
            tenants: None,
            tenant_settings: None,
            forward_auth: None,
            public_url: None,
            qr: None,
            tickets: None,
            website: false,
        }
    }
}

/// The simulator, the proxy (layer + echo) and their handles; dropping it stops both.
pub struct World {
    pub sim: SimWeChat,
    pub wechat: WeChatOAuth,
    pub sessions: Arc<MemoryStore>,
    pub layer: WeChatAuthLayer,
    pub echo: Echo,
    /// `http://127.0.0.1:<port>/` of the proxy.
    pub base: Url,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    background: Option<JoinHandle<()>>,
    layer_background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl World {
    /// Component mode, ticket pushed, ready.
    pub async fn start() -> World {
        World::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> World {
        let sim = bounded(SimWeChat::start(
            options.sim.clone(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .await
        .expect("sim starts");
        let mut settings = wechat_settings(sim.config(), sim.base_url(), options.request_timeout);
        if options.tenants.is_some() {
            settings.mode = sim.config().multi_tenant_mode();
            if let (OAuthMode::Component { tenants, .. }, Some(wanted)) =
                (&mut settings.mode, &options.tenant_settings)
            {
                *tenants = wanted.clone();
            }
        }
        if options.official_account {
            settings.mode = OAuthMode::OfficialAccount {
                appid: sim.config().authorizer_appid.clone(),
                secret: sim.config().official_account_secret.clone(),
            };
        }
        let mut wechat =
            WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).expect("wechat");
        if let Some(deadline) = options.login_deadline {
            wechat = wechat.with_login_deadline(deadline);
        }
        let background = options
            .background
            .then(|| wechat.start_background())
            .flatten();
        let listener = bounded(TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = Url::parse(&format!("http://{addr}/")).expect("url");
        let sessions = Arc::new(MemoryStore::new(options.session.clone()));
        let headers = HeaderSettings {
            plain_headers: options.plain_headers,
            ..HeaderSettings::default()
        };
        let public_url = options.public_url.clone().unwrap_or_else(|| base.clone());
        let mut builder = builder(public_url, wechat.clone(), sessions.clone());
        if let Some(ttl) = options.flow_ttl {
            builder = builder.flow_ttl(ttl);
        }
        if let Some(routing) = &options.tenants {
            builder = builder.tenants(routing.clone());
        }
        if let Some(forward_auth) = options.forward_auth.clone() {
            builder = builder.forward_auth(forward_auth);
        }
        let mut qr = options.qr.clone();
        if let Some(app) = sim
            .config()
            .website_apps
            .first()
            .filter(|_| options.website)
        {
            let client = wechat_oauth_proxy::wechat::client::WeChatClient::new(
                wechat_settings(sim.config(), sim.base_url(), options.request_timeout).client,
            )
            .expect("client");
            let app = wechat_oauth_proxy::wechat::website::WebsiteApp::new(
                app.appid.clone(),
                app.secret.clone(),
                client,
            );
            qr.get_or_insert_with(Default::default).desktop =
                wechat_oauth_proxy::layer::QrDesktopLogin::Website(app);
        }
        if let Some(qr) = qr {
            builder = builder.qr(qr);
        }
        if let Some(tickets) = options.tickets.clone() {
            builder = builder.tickets(tickets);
        }
        let layer = builder
            .headers(headers)
            .skip(Some(Method::GET), "/public/*")
            .expect("skip rule")
            .api_prefix("/api")
            .build()
            .expect("layer");
        let layer_background = layer.start_background();
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
            layer,
            echo,
            base,
            shutdown: Some(tx),
            server: Some(server),
            background,
            layer_background,
        };
        world.sim.set_events_url(world.events_url());
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

    /// A fresh browser (empty jar) whose navigations accept HTML.
    pub fn browser(&self) -> Browser {
        Browser::new(self.base.clone())
    }

    /// One genuine, signed ticket push through the proxy's events endpoint.
    pub async fn push_ticket(&self) {
        bounded(self.sim.push_ticket(&self.events_url()))
            .await
            .expect("the proxy accepts the simulator's push");
    }

    /// `GET /_wxauth/ready`.
    pub async fn ready_reply(&self) -> Reply {
        self.browser().get(self.url("/_wxauth/ready")).await
    }

    /// `GET /_wxauth/ready` status and body.
    pub async fn ready(&self) -> (StatusCode, serde_json::Value) {
        let reply = self.ready_reply().await;
        let json = reply.json();
        (reply.status, json)
    }

    /// Polls `/ready` (bounded) until it answers 200: the refresher fetches the component token
    /// right after the ticket arrives.
    pub async fn wait_ready(&self) {
        for _ in 0..400 {
            if self.ready().await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy never became ready: {:?}", self.ready().await);
    }

    /// Live sessions in the store (after moka's pending maintenance).
    pub async fn session_count(&self) -> u64 {
        bounded(self.sessions.run_pending_tasks()).await;
        self.sessions.session_count()
    }

    /// Logs `browser` in as the simulator's next user, starting at `path`; returns the page the
    /// login lands on.
    pub async fn login(&self, browser: &Browser, path: &str) -> Reply {
        browser
            .login(self.url(path))
            .await
            .pop()
            .expect("four replies")
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
        if let Some(background) = self.layer_background.take() {
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
    /// The raw `Location` header text, if any.
    pub fn raw_location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The `Location`, resolved against the request URL (panics without one).
    pub fn location(&self) -> Url {
        let raw = self
            .raw_location()
            .unwrap_or_else(|| panic!("no Location on {} {}", self.status, self.body));
        self.url.join(raw).expect("location resolves")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.body))
    }

    pub fn echoed(&self) -> Option<Echoed> {
        Echoed::parse(&self.body)
    }

    /// Whether this is the echo service's answer (the inner service was reached).
    pub fn reached_inner(&self) -> bool {
        self.echoed().is_some()
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// Asserts this is the "WeChat timed out" page (503, bilingual HTML) with a retry link to
    /// `/_wxauth/login?return=<encoded_return>` and no session cookie.
    pub fn assert_wechat_timeout_page(&self, encoded_return: &str) {
        assert_eq!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            self.body
        );
        assert!(self.content_type().starts_with("text/html"));
        assert!(
            self.body.contains("微信响应超时") && self.body.contains("WeChat timed out"),
            "{}",
            self.body
        );
        assert!(
            self.body
                .contains(&format!("/_wxauth/login?return={encoded_return}")),
            "a retry link: {}",
            self.body
        );
        assert!(!self.sets_session());
    }

    /// Whether the reply sets a live session cookie.
    pub fn sets_session(&self) -> bool {
        self.set_cookies().iter().any(|c| {
            cookie::Cookie::parse(c.as_str())
                .is_ok_and(|c| c.name().ends_with(SESSION) && !c.value().is_empty())
        })
    }
}

/// The `User-Agent` of WeChat's built-in browser (Android): what [`Browser`] sends, so that the
/// simulated WeChat's authorize page, which refuses other browsers as WeChat does, lets it in.
pub const WECHAT_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240205.004; wv) \
     AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 \
     XWEB/1160117 MMWEBSDK/20240301 MMWEBID/1234 MicroMessenger/8.0.47.2560(0x28002F35) \
     WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64";

/// A browser: no automatic redirects, a cookie jar for the proxy's origin only; WeChat's
/// [`WECHAT_UA`].
#[derive(Debug)]
pub struct Browser {
    client: reqwest::Client,
    origin: Url,
    /// name → value
    jar: Arc<Mutex<BTreeMap<String, String>>>,
    /// `Accept` sent with every request that does not name its own (`None`: no `Accept`).
    pub accept: Option<String>,
    /// `User-Agent` sent with every request that does not name its own (`None`: none).
    pub user_agent: Option<String>,
}

impl Browser {
    /// A browser whose navigations accept HTML, for the proxy at `origin`.
    pub fn new(origin: Url) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STEP)
            .user_agent(WECHAT_UA)
            .build()
            .expect("client");
        Self {
            client,
            origin,
            jar: Arc::default(),
            accept: Some(BROWSER_ACCEPT.to_owned()),
            user_agent: None,
        }
    }

    /// A browser for the proxy at `http://<host>:<port of addr>/`, where `host` resolves to
    /// `addr` (no DNS): one browser per tenant host, each with its host-only cookie jar.
    pub fn for_host(host: &str, addr: SocketAddr) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STEP)
            .user_agent(WECHAT_UA)
            .resolve(host, addr)
            .build()
            .expect("client");
        Self {
            client,
            origin: Url::parse(&format!("http://{host}:{}/", addr.port())).expect("origin"),
            jar: Arc::default(),
            accept: Some(BROWSER_ACCEPT.to_owned()),
            user_agent: None,
        }
    }

    /// The origin this browser's jar belongs to.
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// Another browser (empty jar) sharing this one's connection pool.
    pub fn fresh(&self) -> Browser {
        Browser {
            client: self.client.clone(),
            origin: self.origin.clone(),
            jar: Arc::default(),
            accept: self.accept.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    /// Another browser with a copy of this one's jar (a stolen or duplicated cookie); the two
    /// jars evolve independently from then on.
    pub fn clone_jar(&self) -> Browser {
        let other = self.fresh();
        *other.jar.lock().expect("jar") = self.jar.lock().expect("jar").clone();
        other
    }

    /// The value of cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    /// Every cookie name in the jar.
    pub fn cookie_names(&self) -> Vec<String> {
        self.jar.lock().expect("jar").keys().cloned().collect()
    }

    /// Sets (or replaces) a cookie in the jar, e.g. to tamper with it.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .expect("jar")
            .insert(name.to_owned(), value.to_owned());
    }

    /// The session cookie's `name=value`, if the jar holds one.
    pub fn session_cookie(&self) -> Option<String> {
        self.cookie(SESSION).map(|v| format!("{SESSION}={v}"))
    }

    /// The `Cookie` header this browser sends to the proxy.
    pub fn cookie_header(&self) -> Option<String> {
        let jar = self.jar.lock().expect("jar");
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    pub async fn get(&self, url: impl AsRef<str>) -> Reply {
        self.send(Method::GET, url, &[], None).await
    }

    pub async fn get_with(&self, url: impl AsRef<str>, extra: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, url, extra, None).await
    }

    /// Sends one request (cookies from the jar for our origin), stores `Set-Cookie`s.
    pub async fn send(
        &self,
        method: Method,
        url: impl AsRef<str>,
        extra: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let url = Url::parse(url.as_ref()).expect("absolute url");
        let mut request = self.client.request(method, url.clone());
        let own_accept = extra
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"));
        if let (Some(accept), false) = (&self.accept, own_accept) {
            request = request.header(header::ACCEPT, accept.as_str());
        }
        let own_agent = extra
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("user-agent"));
        if let (Some(agent), false) = (&self.user_agent, own_agent) {
            request = request.header(header::USER_AGENT, agent.as_str());
        }
        if self.same_origin(&url) {
            if let Some(cookies) = self.cookie_header() {
                request = request.header(header::COOKIE, cookies);
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

    fn store_cookies(&self, reply: &Reply) {
        let mut jar = self.jar.lock().expect("jar");
        for text in reply.set_cookies() {
            let cookie = cookie::Cookie::parse(text).expect("set-cookie parses");
            let removed = cookie.value().is_empty()
                || cookie
                    .max_age()
                    .is_some_and(|age| age.is_zero() || age.is_negative())
                || cookie
                    .expires_datetime()
                    .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
            if removed {
                jar.remove(cookie.name());
            } else {
                jar.insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    /// Follows redirects (at most 10) from `url`; returns every reply in order.
    pub async fn navigate(&self, url: impl AsRef<str>) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut next = Some(Url::parse(url.as_ref()).expect("absolute url"));
        for _ in 0..10 {
            let Some(url) = next.take() else { break };
            let reply = self.get(url).await;
            next = reply.status.is_redirection().then(|| reply.location());
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

    /// Starts a login at `url` (a protected page or `/_wxauth/login`): returns the WeChat
    /// authorize URL the proxy redirected to (the flow cookie is now in the jar).
    pub async fn start_login(&self, url: impl AsRef<str>) -> Url {
        let reply = self.get(url).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
        let location = reply.location();
        assert!(
            location.path().ends_with("/connect/oauth2/authorize"),
            "{location}"
        );
        location
    }

    /// Visits the (simulated) authorize page; returns the callback URL it redirects to.
    pub async fn authorize(&self, authorize: Url) -> Url {
        let reply = self.get(authorize).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
        reply.location()
    }

    /// Goes to `url` without a session and walks the whole login: 302 to WeChat's authorize
    /// page, 302 to our callback, 302 (with a session cookie) back, and the final page.
    /// Returns all four replies.
    pub async fn login(&self, url: impl AsRef<str>) -> Vec<Reply> {
        let replies = self.navigate(url).await;
        assert_eq!(
            replies.len(),
            4,
            "expected 3 redirects: {:?}",
            replies
                .iter()
                .map(|r| (r.url.as_str(), r.status, r.body.as_str()))
                .collect::<Vec<_>>()
        );
        assert!(
            replies[0]
                .location()
                .path()
                .ends_with("/connect/oauth2/authorize")
        );
        assert!(
            replies[2].sets_session(),
            "the callback sets a session: {:?} {}",
            replies[2].set_cookies(),
            replies[2].body
        );
        replies
    }
}
