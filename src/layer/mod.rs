//! [`WeChatAuthLayer`] and [`WeChatAuth<S>`]: WeChat login in front of any tower service.
//!
//! Shaped like tower-http's middleware: the layer holds its configuration in one `Arc`, the
//! service is generic over the request body, `poll_ready` delegates to the inner service and the
//! ready instance is the one called. `Error = S::Error`: every failure of our own is a
//! *response* (HTML for browsers, JSON for API clients, see [`crate::error`]), so the layer works
//! under `axum::Router::layer` without `HandleErrorLayer`.
//!
//! Per request (see [`dispatch`]): client-sent identity headers are stripped first, always;
//! then a reserved path (`/_wxauth/…`) is answered by [`crate::routes`]; a skip rule passes the
//! request on without identity; a valid session adds the JWT (and optional plain headers) and
//! puts [`Identity`] into the request extensions; no session sends a browser to WeChat and
//! answers anything else with 401 JSON.
//!
//! ```no_run
//! # async fn demo(wechat: wechat_oauth_proxy::wechat::oauth::WeChatOAuth,
//! #               jwt: wechat_oauth_proxy::jwt::JwtIssuer,
//! #               cookies: wechat_oauth_proxy::session::CookieCodec) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use wechat_oauth_proxy::layer::WeChatAuthLayer;
//! use wechat_oauth_proxy::session::{MemoryStore, SessionSettings};
//!
//! let layer = WeChatAuthLayer::builder()
//!     .public_url("https://app.example.com".parse()?)
//!     .wechat(wechat)
//!     .sessions(Arc::new(MemoryStore::new(SessionSettings::default())))
//!     .cookies(cookies)
//!     .jwt(jwt)
//!     .skip(None, "/public/*")?
//!     .build()?;
//! // axum: Router::new().route(…).layer(layer)
//! # let _ = layer; Ok(()) }
//! ```

pub mod dispatch;
pub mod response;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

pub use self::dispatch::{ClientKind, Decision, DispatchSettings, Route, SkipRule, SkipRuleError};
pub use self::response::{OwnResponse, ResponseBody};
use crate::error::AuthError;
use crate::identity::{HeaderSettings, Identity, StripList};
use crate::jwt::JwtIssuer;
use crate::session::{CookieCodec, SessionId, SessionStore};
use crate::wechat::Scope;
use crate::wechat::oauth::WeChatOAuth;

/// Boxed error type of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the layer needs from configuration (besides its collaborators).
#[derive(Clone, Debug)]
pub struct LayerSettings {
    /// URL browsers use to reach this service; the WeChat callback is
    /// `public_url + prefix + "/callback"`.
    pub public_url: url::Url,
    /// Prefix of the reserved endpoints (default `/_wxauth`).
    pub prefix: String,
    /// Requests that pass without a session.
    pub skip: Vec<SkipRule>,
    /// Path prefixes answered with 401 JSON (never a redirect) when there is no session.
    pub api_prefixes: Vec<String>,
    /// OAuth scope requested from WeChat.
    pub scope: Scope,
    /// Which headers carry the identity to the inner service.
    pub headers: HeaderSettings,
    /// Lifetime of a login flow (state) — at most 10 minutes.
    pub flow_ttl: Duration,
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            public_url: default_public_url(),
            prefix: "/_wxauth".to_owned(),
            skip: Vec::new(),
            api_prefixes: Vec::new(),
            scope: Scope::UserInfo,
            headers: HeaderSettings::default(),
            flow_ttl: Duration::from_secs(600),
        }
    }
}

#[allow(clippy::expect_used, reason = "a constant literal URL")]
fn default_public_url() -> url::Url {
    url::Url::parse("http://127.0.0.1/").expect("literal URL")
}

/// Why a layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A collaborator was not given to the builder.
    #[error("WeChatAuthLayer: {0} is required")]
    Missing(&'static str),
    /// A setting is invalid.
    #[error("WeChatAuthLayer: {0}")]
    Invalid(String),
}

/// Everything shared by all clones of the service (one `Arc`).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: LayerSettings,
    pub(crate) dispatch: DispatchSettings,
    pub(crate) strip: StripList,
    pub(crate) wechat: WeChatOAuth,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) cookies: CookieCodec,
    pub(crate) jwt: JwtIssuer,
    /// `public_url + prefix + "/callback"`, computed once.
    pub(crate) callback_url: String,
}

/// The tower layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WeChatAuthLayer {
    shared: Arc<Shared>,
}

impl WeChatAuthLayer {
    /// Builds the layer from its settings and collaborators.
    ///
    /// # Errors
    /// [`BuildError::Invalid`] for a prefix that does not start with `/` (or ends with one) or a
    /// flow lifetime over 10 minutes.
    pub fn new(
        settings: LayerSettings,
        wechat: WeChatOAuth,
        sessions: Arc<dyn SessionStore>,
        cookies: CookieCodec,
        jwt: JwtIssuer,
    ) -> Result<Self, BuildError> {
        let prefix = settings.prefix.trim_end_matches('/').to_owned();
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(BuildError::Invalid(format!(
                "prefix {:?} must start with '/'",
                settings.prefix
            )));
        }
        if settings.flow_ttl > Duration::from_secs(600) || settings.flow_ttl.is_zero() {
            return Err(BuildError::Invalid(
                "flow_ttl must be between 1 s and 10 minutes".into(),
            ));
        }
        let base = settings.public_url.as_str().trim_end_matches('/');
        let callback_url = format!("{base}{prefix}/callback");
        let dispatch = DispatchSettings {
            prefix: prefix.clone(),
            skip: settings.skip.clone(),
            api_prefixes: settings.api_prefixes.clone(),
        };
        let strip = settings.headers.strip_list();
        let mut settings = settings;
        settings.prefix = prefix;
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                dispatch,
                strip,
                wechat,
                sessions,
                cookies,
                jwt,
                callback_url,
            }),
        })
    }

    /// Starts a builder.
    pub fn builder() -> WeChatAuthLayerBuilder {
        WeChatAuthLayerBuilder::default()
    }
}

impl<S> Layer<S> for WeChatAuthLayer {
    type Service = WeChatAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WeChatAuth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builder for [`WeChatAuthLayer`] (library users); the sidecar uses [`WeChatAuthLayer::new`].
#[derive(Debug, Default)]
pub struct WeChatAuthLayerBuilder {
    settings: LayerSettings,
    wechat: Option<WeChatOAuth>,
    sessions: Option<Arc<dyn SessionStore>>,
    cookies: Option<CookieCodec>,
    jwt: Option<JwtIssuer>,
}

impl WeChatAuthLayerBuilder {
    /// The WeChat side (component or official-account mode).
    pub fn wechat(mut self, wechat: WeChatOAuth) -> Self {
        self.wechat = Some(wechat);
        self
    }
    /// The session store.
    pub fn sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }
    /// The cookie codec (key derived from the master secret).
    pub fn cookies(mut self, cookies: CookieCodec) -> Self {
        self.cookies = Some(cookies);
        self
    }
    /// The identity JWT issuer.
    pub fn jwt(mut self, jwt: JwtIssuer) -> Self {
        self.jwt = Some(jwt);
        self
    }
    /// The URL browsers use to reach this service.
    pub fn public_url(mut self, url: url::Url) -> Self {
        self.settings.public_url = url;
        self
    }
    /// The reserved prefix (default `/_wxauth`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }
    /// Adds a skip rule (`None` = any method; a trailing `/*` matches a subtree).
    ///
    /// # Errors
    /// When the pattern is not an absolute path.
    pub fn skip(mut self, method: Option<http::Method>, pattern: &str) -> Result<Self, BuildError> {
        let rule =
            SkipRule::new(method, pattern).map_err(|e| BuildError::Invalid(e.to_string()))?;
        self.settings.skip.push(rule);
        Ok(self)
    }
    /// Adds an API prefix (401 JSON instead of a redirect).
    pub fn api_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.api_prefixes.push(prefix.into());
        self
    }
    /// The OAuth scope (default `snsapi_userinfo`).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.settings.scope = scope;
        self
    }
    /// Identity header options.
    pub fn headers(mut self, headers: HeaderSettings) -> Self {
        self.settings.headers = headers;
        self
    }
    /// Builds the layer.
    ///
    /// # Errors
    /// When a collaborator is missing or a setting is invalid.
    pub fn build(self) -> Result<WeChatAuthLayer, BuildError> {
        WeChatAuthLayer::new(
            self.settings,
            self.wechat.ok_or(BuildError::Missing("wechat"))?,
            self.sessions.ok_or(BuildError::Missing("sessions"))?,
            self.cookies.ok_or(BuildError::Missing("cookies"))?,
            self.jwt.ok_or(BuildError::Missing("jwt"))?,
        )
    }
}

/// The service made by [`WeChatAuthLayer`].
#[derive(Clone, Debug)]
pub struct WeChatAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The response future of [`WeChatAuth`] (boxed: the session lookup is async).
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WeChatAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Call the instance that was driven to readiness; leave a fresh clone in its place
        // (tower's "be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(handle(shared, inner, req))
    }
}

async fn handle<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    mut req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
{
    // Always first, on every path: a client can never hand the inner service an identity.
    shared.strip.strip(req.headers_mut());

    match dispatch::dispatch(req.method(), req.uri(), req.headers(), &shared.dispatch) {
        Decision::Reserved(route) => {
            let response = crate::routes::handle(&shared, route, req).await;
            Ok(response::wrap_own(response))
        }
        Decision::Skip => {
            shared.cookies.strip_own_cookies(req.headers_mut());
            let response = inner.call(req).await?;
            Ok(response.map(ResponseBody::inner))
        }
        Decision::Protected { client } => {
            let cookie = shared.cookies.read_session(req.headers());
            match shared.load_session(cookie).await {
                Ok(Some((id, identity))) => {
                    match shared.jwt.token_for(id.expose_bytes(), &identity).await {
                        Ok(token) => {
                            identity.project_headers(
                                &shared.settings.headers,
                                token,
                                req.headers_mut(),
                            );
                            shared.cookies.strip_own_cookies(req.headers_mut());
                            req.extensions_mut().insert(identity);
                            let response = inner.call(req).await?;
                            Ok(response.map(ResponseBody::inner))
                        }
                        Err(err) => {
                            let err = AuthError::Jwt(err.to_string());
                            Ok(response::wrap_own(
                                err.render(client == ClientKind::Browser, None),
                            ))
                        }
                    }
                }
                Ok(None) => {
                    let (parts, _body) = req.into_parts();
                    let return_path = crate::session::ReturnPath::from_request_uri(&parts.uri);
                    let response = match client {
                        ClientKind::Browser => {
                            crate::routes::login::start(&shared, &parts.headers, return_path).await
                        }
                        ClientKind::Api => {
                            let login = shared.login_url(&return_path);
                            AuthError::Unauthenticated.render(false, Some(&login))
                        }
                    };
                    Ok(response::wrap_own(response))
                }
                // Fail closed: a store failure is never "allow".
                Err(err) => Ok(response::wrap_own(
                    err.render(client == ClientKind::Browser, None),
                )),
            }
        }
    }
}

impl Shared {
    /// The session named by the request's cookie, if it is valid and known.
    pub(crate) async fn current_session(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<(SessionId, Identity)>, AuthError> {
        self.load_session(self.cookies.read_session(headers)).await
    }

    /// Loads the session of an already decoded cookie (no borrow of the request across the
    /// await, so request bodies need not be `Sync`).
    pub(crate) async fn load_session(
        &self,
        cookie: Option<SessionId>,
    ) -> Result<Option<(SessionId, Identity)>, AuthError> {
        let Some(id) = cookie else {
            return Ok(None);
        };
        match self.sessions.load(&id).await {
            Ok(Some(record)) => Ok(Some((id, record.identity))),
            Ok(None) => {
                tracing::debug!(session = %id.fingerprint(), "unknown or expired session");
                Ok(None)
            }
            Err(err) => Err(AuthError::Store(err.to_string())),
        }
    }

    /// `prefix/login?return=<path>` (same origin, relative).
    pub(crate) fn login_url(&self, return_path: &crate::session::ReturnPath) -> String {
        let encoded: String =
            url::form_urlencoded::byte_serialize(return_path.as_str().as_bytes()).collect();
        format!("{}/login?return={encoded}", self.settings.prefix)
    }
}
