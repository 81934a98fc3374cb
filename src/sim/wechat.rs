//! The simulated WeChat server: one loopback HTTP server that answers both the
//! `open.weixin.qq.com` authorize page and the `api.weixin.qq.com` JSON APIs.
//!
//! Behaviour follows `docs/wechat-protocol.md` §5, §8–§12 and §16: parameter validation and order on
//! the authorize page (errors are shown on the page, never redirected), random single-use codes
//! bound to the app, mode, user and scope, a component token that is invalidated by the next
//! fetch, `is_snapshotuser` and `48001` for snapshot users, HTTP 200 errors with a changing
//! `rid`, and `text/plain` content types on some replies. Tests program it (next user, refusal,
//! injected failures, short lifetimes) and observe it (per-endpoint call counters).
//!
//! Paths served under [`SimWeChat::base_url`]:
//!
//! | path | what |
//! |---|---|
//! | `GET /connect/oauth2/authorize` | the authorize page; errors are an HTML page with WeChat's code, also in the `x-sim-error` header (`10003`, `10005`, `10010`–`10013`, `10015`, `10016`, or the sim tags `order`, `response_type`, `appid`, `state`) |
//! | `GET /connect/oauth2/authorize` from another browser than WeChat's | WeChat's dead end "请在微信客户端打开链接" (`x-sim-error: browser`), when [`SimConfig::require_wechat_browser`] (default) |
//! | `GET /connect/qrconnect` | a website app's QR login page (scope `snsapi_login`); refusals as on the authorize page (`x-sim-error`: `appid`, `redirect_uri`, `response_type`, `scope`, `state`) |
//! | `GET /_sim/authorize/choose` | the interactive pages' user / refuse buttons (sim only) |
//! | `GET /_sim/phone?go=<url>` | "模拟手机扫码": marks this browser (cookie `wxsim_phone` on the sim's host) as WeChat's and goes on to `url` (a redirect host or the sim itself) — one desktop acting as the phone in the demo (sim only) |
//! | `POST /cgi-bin/component/api_component_token` | component token |
//! | `GET /sns/oauth2/component/access_token`, `…/refresh_token` | component code exchange and refresh |
//! | `GET /sns/oauth2/access_token`, `/sns/oauth2/refresh_token` | official-account direct mode and website apps ([`SimConfig::website_apps`], by `appid`; answers `text/plain`) |
//! | `GET /sns/userinfo` | user info |
//! | `POST /cgi-bin/component/api_query_auth` | an authorization push's `AuthorizationCode` → the grant (single use, expires) |
//! | `POST /cgi-bin/component/api_get_authorizer_info`, `…/api_get_authorizer_list` | one account's grant and details; the authorizers, paged (`count` ≤ 500) |
//! | `GET /` | a page describing the simulator |
//! | `/_sim/admin/…` | fault toggles and account changes for scripts outside the process (see `admin.rs`: `fault`, `clear`, `invalidate_token`, `calls`, `authorize`, `update`, `revoke`, `events_url`) |
//!
//! Several official accounts can authorize the platform ([`SimConfig::authorizers`]); each has
//! its permission sets and its own openid per test user. The authorize page answers 10015 for an
//! account that has not authorized the platform or lacks permission set 4, as WeChat does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wechat_oauth_proxy::sim::SimError> {
//! use wechat_oauth_proxy::sim::{Endpoint, Failure, SimConfig, SimWeChat};
//!
//! let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
//! let sim = SimWeChat::start(SimConfig::default(), addr).await?;
//! sim.set_next_user(SimConfig::default().users[1].clone());
//! sim.inject(Endpoint::UserInfo, Failure::SystemBusy, 1);
//! // … point the client at sim.base_url() …
//! assert_eq!(sim.calls(Endpoint::UserInfo), 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use hyper::body::Incoming;
use url::Url;

use super::{
    SimError, admin, api, authorize, grants,
    http::{Resp, Server},
    phone, pusher, qrconnect,
    state::{CodeEntry, Inner, State},
};
use crate::wechat::{
    AuthorizationCode, AuthorizerAppId, Scope, VerifyTicket, events::AuthorizationChange,
};

pub use super::state::{
    AuthMode, Endpoint, Failure, PusherConfig, SimAuthorizer, SimConfig, SimUser, SimWebsiteApp,
};

/// A running simulated WeChat. Dropping it stops the server (and the configured pusher).
pub struct SimWeChat {
    inner: Arc<Inner>,
    server: Option<Server>,
    addr: SocketAddr,
    pusher: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for SimWeChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimWeChat")
            .field("base_url", &self.inner.base_url.as_str())
            .field("interactive", &self.inner.config.interactive)
            .finish_non_exhaustive()
    }
}

impl Drop for SimWeChat {
    fn drop(&mut self) {
        if let Some(pusher) = self.pusher.take() {
            pusher.abort();
        }
    }
}

impl SimWeChat {
    /// Starts the simulator on `addr` (use port 0 for a free port).
    ///
    /// # Errors
    /// [`SimError::NotLoopback`] for any non-loopback address (a fake WeChat hands out
    /// identities to anybody and must never be reachable from a network), [`SimError::Bind`]
    /// when the port is taken, [`SimError::Client`] if the push client cannot be built.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimWeChat, SimError> {
        if !addr.ip().is_loopback() {
            return Err(SimError::NotLoopback(addr));
        }
        let client = pusher::client()?;
        let mut state = State {
            token_ttl: config.token_ttl,
            events_url: config.pusher.as_ref().map(|p| p.events_url.clone()),
            ..State::default()
        };
        for account in config.accounts() {
            state.put_account(&account);
        }
        state.rotate_ticket();
        let listener = Server::bind(addr).await?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let base_url = Url::parse(&format!("http://{local}/")).map_err(|_| SimError::Bind {
            addr,
            source: std::io::Error::other("cannot form the base URL"),
        })?;
        let inner = Arc::new(Inner::new(config, base_url, client, state));
        let handler_inner = inner.clone();
        let server = Server::serve(listener, move |req| route(handler_inner.clone(), req));
        let pusher = inner
            .config
            .pusher
            .clone()
            .map(|p| tokio::spawn(pusher::run(inner.clone(), p.events_url, p.every)));
        tracing::info!(base_url = %inner.base_url, "simulated WeChat listening (development only)");
        Ok(SimWeChat {
            inner,
            addr: local,
            server: Some(server),
            pusher,
        })
    }

    /// `http://127.0.0.1:<port>/`: serves both the `api.weixin.qq.com` paths and the
    /// `open.weixin.qq.com` authorize page.
    pub fn base_url(&self) -> Url {
        self.inner.base_url.clone()
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration the simulator was started with (`token_ttl` may since have been
    /// changed by [`set_token_ttl`](Self::set_token_ttl)).
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The identity for the next non-interactive authorize (one shot; afterwards `users[0]`
    /// again).
    pub fn set_next_user(&self, user: SimUser) {
        self.inner.state().next_user = Some(user);
    }

    /// The next non-interactive authorize redirects back without a code (the user refused).
    pub fn refuse_next(&self) {
        self.inner.state().refuse_next = true;
    }

    /// The current valid `component_verify_ticket` (`ticket@@@` + 86 base64url characters).
    pub fn current_ticket(&self) -> VerifyTicket {
        self.inner.state().current_ticket()
    }

    /// Issues a new ticket; the previous ones stay valid for 12 hours, as in WeChat.
    pub fn rotate_ticket(&self) -> VerifyTicket {
        self.inner.state().rotate_ticket()
    }

    /// Sends one encrypted, signed push of the current ticket to `events_url` and expects the
    /// body `success`.
    ///
    /// # Errors
    /// [`SimError::PushTransport`] when the receiver cannot be reached in time,
    /// [`SimError::PushRejected`] for any answer but HTTP 200 `success`,
    /// [`SimError::Crypto`] when the configured key is unusable.
    pub async fn push_ticket(&self, events_url: &Url) -> Result<(), SimError> {
        pusher::push(&self.inner, events_url).await
    }

    /// Pushes at once and then every `every`, until the returned task is aborted or the
    /// simulator is gone. Failed pushes are logged and retried sooner (from 1 s, doubling up to
    /// `every`), so a receiver that starts after the simulator still gets a ticket quickly.
    pub fn spawn_pusher(&self, events_url: Url, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(pusher::run(self.inner.clone(), events_url, every))
    }

    /// The next `times` calls of `endpoint` fail with `failure` (after earlier injections for
    /// the same endpoint are used up). Injected failures take precedence over normal handling
    /// and are counted by [`calls`](Self::calls).
    pub fn inject(&self, endpoint: Endpoint, failure: Failure, times: u32) {
        if times == 0 {
            return;
        }
        self.inner
            .state()
            .failures
            .entry(endpoint)
            .or_default()
            .push_back((failure, times));
    }

    /// Drops every injected failure that has not been used up yet (the end of a fault window).
    pub fn clear_failures(&self) {
        self.inner.state().failures.clear();
    }

    /// The current component access token becomes invalid: using it answers 40001, as when
    /// another process fetched a newer one.
    pub fn invalidate_component_token(&self) {
        self.inner.state().component_token = None;
    }

    /// Lifetime (`expires_in`) of component tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.inner.state().token_ttl = ttl;
    }

    /// How many requests `endpoint` received, failed and injected ones included.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.inner
            .state()
            .calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// How many component access tokens were issued successfully.
    pub fn issued_component_tokens(&self) -> u64 {
        self.inner.state().issued_component_tokens
    }

    /// Mints a code for `user` without going through the authorize page, as if the user had
    /// just consented. Handy for client tests that only exercise the code exchange.
    pub fn issue_code(&self, user: SimUser, scope: Scope, mode: AuthMode) -> AuthorizationCode {
        let appid = self.inner.config.authorizer_appid.clone();
        self.issue_code_for(&appid, user, scope, mode)
    }

    /// [`issue_code`](Self::issue_code) for official account `appid`: the code exchange then
    /// answers the user's openid under that account ([`user_for`](Self::user_for)).
    pub fn issue_code_for(
        &self,
        appid: &AuthorizerAppId,
        user: SimUser,
        scope: Scope,
        mode: AuthMode,
    ) -> AuthorizationCode {
        let expires_at = Instant::now() + self.inner.config.code_ttl;
        let user = self.user_for(appid, &user);
        AuthorizationCode::new(self.inner.state().issue_code(CodeEntry {
            mode,
            appid: appid.as_str().to_owned(),
            user,
            scope,
            expires_at,
            used: false,
        }))
    }

    /// `user` as official account `appid` sees them (its own openid; the primary account sees
    /// the configured one).
    pub fn user_for(&self, appid: &AuthorizerAppId, user: &SimUser) -> SimUser {
        user.for_account(appid.as_str(), self.inner.config.authorizer_appid.as_str())
    }

    /// Where authorization-change pushes go from now on (default: [`SimConfig::pusher`]'s URL).
    pub fn set_events_url(&self, events_url: Url) {
        self.inner.state().events_url = Some(events_url);
    }

    /// Adds or replaces an official account silently (no push), e.g. to prepare a
    /// reconciliation.
    pub fn put_account(&self, account: &SimAuthorizer) {
        self.inner.state().put_account(account);
    }

    /// Whether `appid` has currently authorized the platform, and with which permission sets.
    pub fn account_grant(&self, appid: &AuthorizerAppId) -> Option<(bool, Vec<u32>)> {
        self.inner
            .state()
            .accounts
            .get(appid.as_str())
            .map(|a| (a.authorized, a.func_ids.clone()))
    }

    /// Official account `appid` authorizes the platform with `func_ids` (a new account is
    /// created), then an `authorized` push with a fresh `AuthorizationCode` goes to the events
    /// URL.
    ///
    /// # Errors
    /// [`SimError::NoEventsUrl`] (the change is made, nothing pushed) or a push failure.
    pub async fn authorize_account(
        &self,
        appid: &AuthorizerAppId,
        func_ids: &[u32],
    ) -> Result<(), SimError> {
        admin::change_account(
            &self.inner,
            AuthorizationChange::Authorized,
            appid,
            Some(func_ids),
        )
        .await
    }

    /// Official account `appid` changes the permission sets it grants to `func_ids`, then an
    /// `updateauthorized` push goes to the events URL.
    ///
    /// # Errors
    /// [`SimError::UnknownAccount`], [`SimError::NoEventsUrl`] (the change is made, nothing
    /// pushed) or a push failure.
    pub async fn update_account(
        &self,
        appid: &AuthorizerAppId,
        func_ids: &[u32],
    ) -> Result<(), SimError> {
        admin::change_account(
            &self.inner,
            AuthorizationChange::Updated,
            appid,
            Some(func_ids),
        )
        .await
    }

    /// Official account `appid` revokes its authorization, then an `unauthorized` push goes to
    /// the events URL.
    ///
    /// # Errors
    /// [`SimError::UnknownAccount`], [`SimError::NoEventsUrl`] (the change is made, nothing
    /// pushed) or a push failure.
    pub async fn revoke_account(&self, appid: &AuthorizerAppId) -> Result<(), SimError> {
        admin::change_account(&self.inner, AuthorizationChange::Revoked, appid, None).await
    }

    /// Stops the server (and the pusher configured in [`SimConfig::pusher`]); open connections
    /// get a moment to finish, hanging ones are aborted.
    pub async fn shutdown(mut self) {
        if let Some(pusher) = self.pusher.take() {
            pusher.abort();
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Dispatches one request to the simulated endpoint for its path.
async fn route(inner: Arc<Inner>, req: http::Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    match path.as_str() {
        "/connect/oauth2/authorize" => {
            authorize::authorize(&inner, &method, req.headers(), &query).await
        }
        authorize::CHOOSE_PATH => authorize::choose(&inner, &query),
        "/connect/qrconnect" => qrconnect::qrconnect(&inner, &method, &query).await,
        phone::PHONE_PATH if method == Method::GET => phone::phone(&inner, &query),
        "/cgi-bin/component/api_component_token" => {
            api::component_token(&inner, &method, req.into_body()).await
        }
        "/sns/oauth2/component/access_token" => {
            api::code_exchange(&inner, AuthMode::Component, &query).await
        }
        "/sns/oauth2/component/refresh_token" => {
            api::refresh(&inner, AuthMode::Component, &query).await
        }
        "/sns/oauth2/access_token" => {
            api::code_exchange(&inner, AuthMode::OfficialAccount, &query).await
        }
        "/sns/oauth2/refresh_token" => {
            api::refresh(&inner, AuthMode::OfficialAccount, &query).await
        }
        "/sns/userinfo" => api::userinfo(&inner, &query).await,
        "/cgi-bin/component/api_query_auth" => {
            grants::handle(
                &inner,
                Endpoint::QueryAuth,
                &method,
                &query,
                req.into_body(),
            )
            .await
        }
        "/cgi-bin/component/api_get_authorizer_info" => {
            grants::handle(
                &inner,
                Endpoint::AuthorizerInfo,
                &method,
                &query,
                req.into_body(),
            )
            .await
        }
        "/cgi-bin/component/api_get_authorizer_list" => {
            grants::handle(
                &inner,
                Endpoint::AuthorizerList,
                &method,
                &query,
                req.into_body(),
            )
            .await
        }
        "/" if method == Method::GET => authorize::index(&inner),
        p if p.starts_with(admin::PREFIX) => admin::handle(&inner, &method, p, &query).await,
        _ => super::http::respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "simulated WeChat: no such endpoint",
        ),
    }
}
