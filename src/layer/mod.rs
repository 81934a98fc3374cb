//! [`WeChatAuthLayer`] and [`WeChatAuth<S>`]: WeChat login in front of any tower service.
//!
//! Every request, in this order (see [`dispatch`]):
//!
//! 1. every identity header a client could forge is removed (always, every path:
//!    [`crate::identity::StripList`]);
//! 2. a reserved path under the prefix (default `/_wxauth`) is answered by the layer itself
//!    (`login`, `callback`, `events`, `logout`, `jwks.json`, `whoami`, `health`, `ready`);
//! 3. a skip rule (method + normalized path) sends the request to the inner service as is;
//! 4. a valid session cookie: the session's [`Identity`] is put into the request extensions,
//!    the JWT (cached per session) and optional plain headers are set, the proxy's own cookies
//!    are removed from `Cookie`, and the inner service is called;
//! 5. no session: a browser navigation is redirected (302) into the WeChat login flow; anything
//!    else (API, XHR, POST) gets `401` JSON `{ "error": "unauthenticated", "login_url": … }`.
//!
//! With forward auth enabled ([`ForwardAuthSettings`]), a front proxy can ask the same question
//! about a request it holds instead (`{prefix}/auth/request`, `auth/forward`,
//! `auth/envoy/…`): the answer comes from the same classification and session code.
//!
//! The layer never fails with an error of its own: `Error = S::Error`, and every failure is a
//! response (HTML for browsers, JSON for API clients, rendered by [`AuthError`]),
//! so it works under `axum::Router::layer` without `HandleErrorLayer`. Store failures fail
//! closed (503), never "allow". Request extensions are preserved (e.g. hyper's `OnUpgrade`,
//! which the sidecar needs for WebSockets).
//!
//! The response body is [`ResponseBody<B>`]: the inner body streamed untouched, or one of our
//! own small answers; its error type is the inner body's.
//!
//! # Layout
//!
//! One file per role; imports run one way, `pipeline` → `routes` → `state`, and nothing
//! below imports what is above it:
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`WeChatAuthLayer`], [`WeChatAuth<S>`] (the tower `Layer` and `Service`), [`LayerSettings`] |
//! | `builder.rs` | [`WeChatAuthLayerBuilder`], [`BuildError`]: the short form's defaults, validation, precomputed URLs |
//! | `extract.rs` | feature `axum`: `Identity` and `Option<Identity>` as handler arguments, `IdentityRejection` |
//! | `pipeline.rs` | the steps above for one request; the "no session" answer |
//! | `forward/` | forward auth: the original request a front proxy asks about, read once from its metadata ([`ForwardAuthSettings`], [`ForwardError`]) |
//! | `dispatch/` | the pure decision: `path.rs` (normalization, [`SkipRule`]), `prefix.rs` ([`Prefix`]), `negotiate.rs` (browser or API client), `mod.rs` ([`Route`], [`dispatch()`](dispatch::dispatch)) |
//! | `routes/` | the reserved endpoints, one file each |
//! | `state.rs` | what every request shares (collaborators, settings, URLs) and two small queries |
//! | `error.rs` | [`AuthError`]: one row per kind (status, code, bilingual page, link) |
//! | `body.rs`, `respond.rs` | [`ResponseBody`]; builders of our own answers (`no-store`) |
//! | `sanitize.rs` | removal of method overrides and protocol switches the upstream must not see |
//! | `tenant.rs` | request → tenant resolution (pure, built once): [`tenant::TenantResolver`], the typed host/pattern/prefix values |
//! | `revocation.rs` | `on_unauthorized = end_sessions`: ends a revoked account's sessions |
//! | `reload.rs` | [`WeChatAuthLayer::reload`]: swaps skip rules, API prefixes and tenants atomically ([`ReloadableSettings`]) |
//! | `qr/` | the desktop QR login bridge ([`QrSettings`]): desktop page, ticket state machine, phone confirmation |
//!
//! Whether an answer is a page or JSON is decided in one place for the whole crate
//! ([`Answer`]), shared with the proxy's 502/504 pages.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(
//! #     wechat: wechat_oauth_proxy::wechat::oauth::WeChatOAuth,
//! #     cookies: wechat_oauth_proxy::session::CookieCodec,
//! #     jwt: wechat_oauth_proxy::jwt::JwtIssuer,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{convert::Infallible, sync::Arc};
//! use bytes::Bytes;
//! use http::{Method, Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, service_fn};
//! use wechat_oauth_proxy::{Identity, layer::WeChatAuthLayer, session::{MemoryStore, SessionStore}};
//!
//! let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
//! let auth = WeChatAuthLayer::builder()
//!     .wechat(wechat)
//!     .sessions(sessions)
//!     .cookie_codec(cookies)
//!     .jwt(jwt)
//!     .public_url("https://app.example.com".parse()?)
//!     .skip(Method::GET, "/public/*")?
//!     .api_prefix("/api")
//!     .build()?;
//! let service = ServiceBuilder::new().layer(auth).service(service_fn(|req: Request<Full<Bytes>>| async move {
//!     let who = req.extensions().get::<Identity>().map(|i| i.nickname.clone()).unwrap_or_default();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
//! }));
//! # let _ = service;
//! # Ok(())
//! # }
//! ```

pub mod dispatch;
pub mod tenant;

mod body;
mod builder;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod forward;
mod pipeline;
mod qr;
mod reload;
mod respond;
mod revocation;
mod routes;
mod sanitize;
mod state;

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{BoxError, Layer, Service};
use url::Url;

pub use self::body::{OwnResponse, ResponseBody};
pub use self::builder::{BuildError, DEFAULT_STATE_DIR, WeChatAuthLayerBuilder};
pub use self::dispatch::{
    ClientKind, Decision, DispatchSettings, ForwardAuthKind, NormalizedPath, PathError, Prefix,
    PrefixError, QrRoute, Route, SkipRule, SkipRuleError,
};
pub use self::error::AuthError;
#[cfg(feature = "axum")]
pub use self::extract::IdentityRejection;
pub use self::forward::{ForwardAuthSettings, ForwardError};
pub use self::qr::{
    DesktopLogin as QrDesktopLogin, DevPhone as QrDevPhone,
    MAX_ABSOLUTE_TTL as QR_MAX_ABSOLUTE_TTL, MAX_POLL_WAIT as QR_MAX_POLL_WAIT, QrSettings,
};
use self::reload::Live;
pub use self::reload::ReloadableSettings;
use self::state::AuthState;
use self::tenant::TenantRouting;
use crate::access::AccessLists;
use crate::identity::HeaderSettings;
#[cfg(doc)]
use crate::identity::Identity;
use crate::jwt::JwtIssuer;
pub use crate::negotiate::Answer;
use crate::request_id;
use crate::session::{CookieCodec, SessionStore};
use crate::wechat::Scope;
use crate::wechat::oauth::WeChatOAuth;

/// Configuration of the layer itself (the WeChat client, session store, cookie codec and JWT
/// issuer are passed to the [builder](WeChatAuthLayer::builder) separately). Filled from
/// `config.toml` by the binary, or by hand.
#[derive(Clone, Debug)]
pub struct LayerSettings {
    /// How requests are classified: the reserved prefix (default `/_wxauth`), the public routes
    /// (skip rules), the API prefixes and whether CORS preflights pass; see
    /// [`DispatchSettings`]. The layer hands exactly these to [`dispatch()`](dispatch::dispatch).
    pub dispatch: DispatchSettings,
    /// The URL browsers use to reach us, origin only (`https://app.example.com`). WeChat's
    /// callback is `public_url + prefix + "/callback"`.
    /// Never derived from `Host` or `X-Forwarded-*` headers. The default
    /// (`http://127.0.0.1/`) is a development placeholder: `http://` is accepted only with
    /// non-Secure cookies, so production setups must set it.
    pub public_url: Url,
    /// Scope requested on the authorize page (default `snsapi_userinfo`: nickname and avatar).
    pub scope: Scope,
    /// Where the JWT goes and whether plain `X-WeChat-*` headers are sent.
    pub headers: HeaderSettings,
    /// Lifetime of a pending login (OAuth `state`), default 10 minutes.
    pub flow_ttl: Duration,
    /// How requests find their official account (tenant); `None` (default) is the
    /// single-tenant shorthand: every request is for the WeChat side's one account.
    pub tenants: Option<TenantRouting>,
    /// The forward-auth endpoints for front proxies (nginx, Traefik, Caddy, Envoy): off by
    /// default; see [`ForwardAuthSettings`].
    pub forward_auth: ForwardAuthSettings,
    /// The peers (load balancers, front proxies) whose `X-Request-Id` is kept when it is sane;
    /// from anyone else, or without a known peer, the id is generated. The sidecar passes
    /// `server.trusted_proxies`. See [`crate::request_id`].
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The desktop QR login bridge (off by default); see [`QrSettings`].
    pub qr: QrSettings,
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            dispatch: DispatchSettings::default(),
            public_url: placeholder_public_url(),
            scope: Scope::UserInfo,
            headers: HeaderSettings::default(),
            flow_ttl: Duration::from_secs(10 * 60),
            tenants: None,
            forward_auth: ForwardAuthSettings::default(),
            trusted_proxies: Vec::new(),
            qr: QrSettings::default(),
        }
    }
}

#[allow(clippy::expect_used, reason = "a constant literal URL")]
fn placeholder_public_url() -> Url {
    Url::parse("http://127.0.0.1/").expect("literal URL")
}

/// How many header fields the layer may add to a request on its way to the inner service: the
/// request id, the JWT and the plain identity headers (see [`WeChatAuth::call`]).
const ADDED_FIELDS: usize = 8;

/// The tower [`Layer`] that puts WeChat login in front of a service. Holds its whole
/// configuration in one `Arc`, so cloning it (and every service it makes) is one refcount;
/// each request reads the configuration in force once (one atomic load), and
/// [`reload`](Self::reload) replaces it for the requests that follow.
#[derive(Clone, Debug)]
pub struct WeChatAuthLayer {
    live: Arc<Live>,
}

impl WeChatAuthLayer {
    /// Builds the layer from complete settings and its collaborators (what the sidecar's
    /// composition root uses; library users usually prefer [`builder`](Self::builder)).
    ///
    /// # Errors
    /// [`BuildError`] for invalid settings (see [`WeChatAuthLayerBuilder::build`]).
    pub fn new(
        settings: LayerSettings,
        wechat: WeChatOAuth,
        sessions: Arc<dyn SessionStore>,
        cookies: CookieCodec,
        jwt: JwtIssuer,
    ) -> Result<Self, BuildError> {
        Self::builder()
            .settings(settings)
            .wechat(wechat)
            .sessions(sessions)
            .cookie_codec(cookies)
            .jwt(jwt)
            .build()
    }

    /// Starts building a layer; see [`WeChatAuthLayerBuilder`].
    pub fn builder() -> WeChatAuthLayerBuilder {
        WeChatAuthLayerBuilder::default()
    }

    fn from_state(state: AuthState) -> Self {
        Self {
            live: Arc::new(Live::new(state)),
        }
    }

    /// The settings the layer runs with now (validated; a [`reload`](Self::reload) replaces
    /// them).
    pub fn settings(&self) -> LayerSettings {
        self.live.load().settings.clone()
    }

    /// The absolute callback URL given to WeChat (`public_url + prefix + "/callback"`).
    pub fn callback_url(&self) -> String {
        self.live.load().callback_url.clone()
    }

    /// The official account (tenant) of a request to `host` (normalized with
    /// [`tenant::request_host`]) whose normalized path is `normalized_path`: the one resolution
    /// the layer itself uses (exact host → host pattern → path prefix; the login's `appid`
    /// parameter is the login endpoint's own). For other front ends (forward auth) that must
    /// decide exactly as the layer does.
    ///
    /// # Errors
    /// [`tenant::TenantRejection::Unknown`] when nothing matches (answer 404 `unknown_tenant`).
    pub fn resolve(
        &self,
        host: Option<&str>,
        normalized_path: &str,
    ) -> Result<tenant::ResolvedTenant, tenant::TenantRejection> {
        self.live.load().resolver.resolve(host, normalized_path)
    }

    /// Starts the layer's background work, if its settings ask for any: with
    /// `on_unauthorized = EndSessions` ([`tenant::OnUnauthorized`]), a task that ends an
    /// official account's sessions as soon as it revokes the platform. `None` when there is
    /// nothing to run. Call it once, inside a Tokio runtime; abort the handle to stop it.
    pub fn start_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        let state = self.live.load();
        let routing = state.settings.tenants.as_ref()?;
        (routing.on_unauthorized == tenant::OnUnauthorized::EndSessions)
            .then(|| revocation::spawn(state.wechat.tenants().clone(), Arc::clone(&state.sessions)))
    }

    /// Replaces who may log in, atomically: the next request (a login's callback, or any
    /// request with a session, forward auth included) is decided by `lists`; requests already
    /// past the check finish as they were. What a configuration reload calls.
    pub fn set_access_lists(&self, lists: AccessLists) {
        self.live.load().access.store(Arc::new(lists));
    }

    /// The access lists in force now.
    pub fn access_lists(&self) -> Arc<AccessLists> {
        self.live.load().access.load_full()
    }

    /// The absolute URL of the events endpoint (the platform's 授权事件接收URL).
    pub fn events_url(&self) -> String {
        let state = self.live.load();
        format!("{}{}/events", state.origin, state.settings.dispatch.prefix)
    }
}

impl<S> Layer<S> for WeChatAuthLayer {
    type Service = WeChatAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WeChatAuth {
            inner,
            live: Arc::clone(&self.live),
        }
    }
}

/// The service made by [`WeChatAuthLayer`]: authenticates requests, answers reserved routes and
/// calls `S` with the identity attached.
#[derive(Clone, Debug)]
pub struct WeChatAuth<S> {
    inner: S,
    live: Arc<Live>,
}

impl<S> WeChatAuth<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WeChatAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Call the instance that was polled ready and leave a fresh clone in its place
        // (https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // The settings in force now, for the whole request: a reload meanwhile changes the
        // requests that follow, never this one.
        let state = self.live.load();
        // Room for the fields the layer adds (request id, JWT, plain identity headers) at once:
        // one rehash of the header table instead of one per field that crosses its capacity
        // (a parsed request's table is sized to what the client sent). Only capacity: too
        // many fields (over `http`'s limit) simply do not reserve.
        request.headers_mut().try_reserve(ADDED_FIELDS).ok();
        // The request id, once, before anything else: span, response header, error pages.
        let tagged = request_id::tag(&mut request, &state.settings.trusted_proxies);
        Box::pin(async move {
            let mut timer = crate::metrics::RequestTimer::start();
            let response = tagged
                .run(pipeline::handle(state, request, inner, &mut timer.outcome))
                .await;
            timer.finish(response.as_ref().ok().map(Response::status));
            response
        })
    }
}
