//! The simulator's shared state and types: configuration, test users, endpoints, failures,
//! issued codes and tokens, and [`Inner`], which the request handlers (`api`, `authorize`,
//! `admin`), the pusher and the [`SimWeChat`](super::SimWeChat) handle share.
//!
//! This module imports only [`http`](super::http) helpers, never the handlers or the server, so
//! that dependencies run one way: `wechat` → handlers → `state`, `http`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use url::Url;

use crate::{
    secret::SecretString,
    wechat::{
        AppSecret, AuthorizerAppId, ComponentAppId, Scope, VerifyTicket, oauth::OAuthMode,
        tenants::TenantSettings, website::WebsiteAppId,
    },
};

/// How long a `component_verify_ticket` stays usable after it was issued (WeChat: 12 h).
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a user `refresh_token` lives (WeChat: 30 days).
pub(crate) const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an injected [`Failure::Hang`] keeps the request open (long enough for any client
/// timeout, short enough that a forgotten test still ends).
pub(crate) const HANG: Duration = Duration::from_secs(120);
/// Above this many remembered codes / tokens the expired ones are pruned.
const PRUNE_ABOVE: usize = 1024;

/// Configuration of the simulated WeChat. `Default` gives a working setup matching the vector-T
/// appid and the official sample EncodingAESKey, three test users and non-interactive mode.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Our third-party platform's appid (`component_appid`).
    pub component_appid: ComponentAppId,
    /// The platform's appsecret, checked by `api_component_token`.
    pub component_secret: AppSecret,
    /// The message token (消息校验Token) used to sign ticket pushes.
    pub message_token: SecretString,
    /// The 43-character EncodingAESKey used to encrypt ticket pushes.
    pub encoding_aes_key: SecretString,
    /// The primary official account: it authorized the component (with every permission set,
    /// unless [`authorizers`](Self::authorizers) lists it otherwise), the test users' openids
    /// are theirs under it, and it is the appid of the official-account direct mode.
    pub authorizer_appid: AuthorizerAppId,
    /// More official accounts (or the primary one with other settings), each with its own
    /// permission sets and authorization state. A test user's openid differs per account, as
    /// in WeChat; the unionid does not. Empty by default: the primary account alone.
    pub authorizers: Vec<SimAuthorizer>,
    /// Lifetime of the `AuthorizationCode` of an authorization push (for `api_query_auth`).
    pub authorization_code_ttl: Duration,
    /// The official account's own secret, for official-account direct mode.
    pub official_account_secret: AppSecret,
    /// Allowed `redirect_uri` hosts (公众号开发域名); the port is ignored.
    pub redirect_hosts: Vec<String>,
    /// Lifetime of a component access token (`expires_in`).
    pub token_ttl: Duration,
    /// Lifetime of a user access token.
    pub user_token_ttl: Duration,
    /// Lifetime of an OAuth code (WeChat: 5 minutes). `Duration::ZERO` makes every code expired.
    pub code_ttl: Duration,
    /// `true` (dev mode): the authorize endpoint shows a page to pick a test user.
    /// `false` (tests): it redirects at once with the programmed next user.
    pub interactive: bool,
    /// The test users; `users[0]` is the default identity in non-interactive mode and the list
    /// shown on the interactive page.
    pub users: Vec<SimUser>,
    /// When set, [`SimWeChat::start`](super::SimWeChat::start) starts pushing tickets to this events URL.
    pub pusher: Option<PusherConfig>,
    /// `true` (default): the authorize page refuses a browser that is not WeChat's, as WeChat
    /// does — a request whose `User-Agent` lacks `MicroMessenger` gets the dead-end page
    /// "请在微信客户端打开链接" (unless the browser was marked as a phone by `/_sim/phone`).
    /// `false`: any browser may log in (for tests written before the check).
    pub require_wechat_browser: bool,
    /// The Open Platform website apps (网站应用) whose QR login (`connect/qrconnect`) the
    /// simulator serves. By default one app, bound to the same Open Platform account as the
    /// official accounts ([`SimWebsiteApp::default_app`]).
    pub website_apps: Vec<SimWebsiteApp>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            component_appid: ComponentAppId::new("wx0123456789abcdef"),
            component_secret: AppSecret::new("sim_component_secret_0123456789ab"),
            message_token: SecretString::new("component_token_demo"),
            encoding_aes_key: SecretString::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
            authorizer_appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
            authorizers: Vec::new(),
            authorization_code_ttl: Duration::from_secs(600),
            official_account_secret: AppSecret::new("sim_official_account_secret_0123"),
            redirect_hosts: vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            token_ttl: Duration::from_secs(7200),
            user_token_ttl: Duration::from_secs(7200),
            code_ttl: Duration::from_secs(300),
            interactive: false,
            users: SimUser::defaults(),
            pusher: None,
            require_wechat_browser: true,
            website_apps: vec![SimWebsiteApp::default_app()],
        }
    }
}

impl SimConfig {
    /// The default configuration with these official accounts besides the primary one (see
    /// [`authorizers`](Self::authorizers)).
    pub fn with_authorizers(authorizers: Vec<SimAuthorizer>) -> Self {
        SimConfig {
            authorizers,
            ..SimConfig::default()
        }
    }

    /// Every official account the simulator starts with: the primary one (with
    /// [`DEFAULT_FUNC_IDS`]) unless listed, then [`authorizers`](Self::authorizers) in order.
    pub fn accounts(&self) -> Vec<SimAuthorizer> {
        let mut all = Vec::with_capacity(self.authorizers.len() + 1);
        if !self
            .authorizers
            .iter()
            .any(|a| a.appid == self.authorizer_appid)
        {
            all.push(SimAuthorizer::new(
                self.authorizer_appid.clone(),
                "模拟公众号 / Sim account",
            ));
        }
        all.extend(self.authorizers.iter().cloned());
        all
    }

    /// Component-mode [`OAuthMode`] for a proxy serving every account this simulator starts
    /// authorized with permission set 4 (static tenant mode; one account is the single-tenant
    /// shorthand).
    pub fn multi_tenant_mode(&self) -> OAuthMode {
        let configured = self
            .accounts()
            .into_iter()
            .filter(|a| a.authorized && a.func_ids.contains(&4))
            .map(|a| a.appid)
            .collect();
        let mut mode = self.component_mode();
        if let OAuthMode::Component { tenants, .. } = &mut mode {
            tenants.configured = configured;
        }
        mode
    }

    /// Component-mode [`OAuthMode`] for a proxy talking to a simulator started with this
    /// configuration (same appids, secret, message token and EncodingAESKey; no previous key).
    /// Tests and benches pair it with their own client and token settings.
    pub fn component_mode(&self) -> OAuthMode {
        OAuthMode::Component {
            component_appid: self.component_appid.clone(),
            component_secret: self.component_secret.clone(),
            tenants: TenantSettings::single(self.authorizer_appid.clone()),
            message_token: self.message_token.clone(),
            encoding_aes_key: self.encoding_aes_key.clone(),
            previous_encoding_aes_key: None,
        }
    }
}

/// The permission sets a simulated account grants the platform by default: 消息管理 (1),
/// 用户管理 (2), 账号服务 (3), 网页服务 (4), 群发与通知 (7), 素材管理 (11), 菜单管理 (15).
pub const DEFAULT_FUNC_IDS: [u32; 7] = [1, 2, 3, 4, 7, 11, 15];

/// An official account of the simulated WeChat and its relation to our platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAuthorizer {
    /// Its appid.
    pub appid: AuthorizerAppId,
    /// Its name (`nick_name` in `api_get_authorizer_info`).
    pub nick_name: String,
    /// Whether it has authorized the platform (at start; admin calls change it).
    pub authorized: bool,
    /// The permission set ids it grants; without 4 the authorize page answers 10015.
    pub func_ids: Vec<u32>,
    /// `service_type_info.id` (2: service account).
    pub service_type: i64,
    /// `verify_type_info.id` (0: WeChat-verified).
    pub verify_type: i64,
}

impl SimAuthorizer {
    /// A verified service account that authorized the platform with [`DEFAULT_FUNC_IDS`].
    pub fn new(appid: AuthorizerAppId, nick_name: impl Into<String>) -> Self {
        SimAuthorizer {
            appid,
            nick_name: nick_name.into(),
            authorized: true,
            func_ids: DEFAULT_FUNC_IDS.to_vec(),
            service_type: 2,
            verify_type: 0,
        }
    }

    /// The same account granting only `func_ids`.
    #[must_use]
    pub fn with_funcs(mut self, func_ids: &[u32]) -> Self {
        self.func_ids = func_ids.to_vec();
        self
    }

    /// The same account, not (yet) authorized.
    #[must_use]
    pub fn unauthorized(mut self) -> Self {
        self.authorized = false;
        self
    }
}

/// An Open Platform website app (网站应用) of the simulated WeChat: QR login on
/// `connect/qrconnect` (scope `snsapi_login`), code exchange with its own secret on
/// `sns/oauth2/access_token`, then `sns/userinfo`.
///
/// Every test user has an openid of its own under each website app. The unionid is the one the
/// official accounts see when the app is bound to the same Open Platform account
/// ([`same_open_account`](Self::same_open_account)); otherwise it is another one, the unionid
/// under the app's own Open Platform account (docs/wechat-protocol.md §11.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimWebsiteApp {
    /// Its appid.
    pub appid: WebsiteAppId,
    /// Its secret (AppSecret), checked by the code exchange (`40125` when wrong).
    pub secret: AppSecret,
    /// Its name, shown on the QR page.
    pub name: String,
    /// Whether it is bound to the same Open Platform account as the official accounts (then
    /// the unionids are equal).
    pub same_open_account: bool,
}

impl SimWebsiteApp {
    /// A website app bound to the official accounts' Open Platform account.
    pub fn new(appid: WebsiteAppId, secret: AppSecret, name: impl Into<String>) -> Self {
        SimWebsiteApp {
            appid,
            secret,
            name: name.into(),
            same_open_account: true,
        }
    }

    /// The default website app: `wx5e1b2c3d4e5f6071`, secret
    /// `sim_website_app_secret_0123456789`, bound to the official accounts' Open Platform
    /// account.
    pub fn default_app() -> Self {
        SimWebsiteApp::new(
            WebsiteAppId::new("wx5e1b2c3d4e5f6071"),
            AppSecret::new("sim_website_app_secret_0123456789"),
            "模拟网站应用 / Sim website app",
        )
    }

    /// The same app in an Open Platform account of its own (different unionids).
    #[must_use]
    pub fn in_other_open_account(mut self) -> Self {
        self.same_open_account = false;
        self
    }
}

/// Where and how often [`SimWeChat`](super::SimWeChat) pushes tickets when started with
/// [`SimConfig::pusher`] set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PusherConfig {
    /// The proxy's events URL, e.g. `http://127.0.0.1:8080/_wxauth/events`.
    pub events_url: Url,
    /// Interval between pushes (WeChat: 10 minutes).
    pub every: Duration,
}

/// A test user of the simulated WeChat, as `sns/userinfo` and the code exchange show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    /// The user's openid under the official account (28 characters in real WeChat).
    pub openid: String,
    /// The unionid, when the official account is bound to an Open Platform account.
    pub unionid: Option<String>,
    /// The nickname (UTF-8; CJK and emoji are normal).
    pub nickname: String,
    /// The avatar URL (`headimgurl`); the defaults use inline `data:` SVGs so no internet is
    /// needed.
    pub headimgurl: String,
    /// A snapshot-page (快照页) virtual user: the exchange says `is_snapshotuser: 1` and
    /// `sns/userinfo` answers 48001.
    pub snapshot: bool,
}

impl SimUser {
    /// The default interactive users: "张三" (with unionid), "Alice 🌸" (with unionid) and
    /// "李四😀" (without unionid). Distinct 28-character openids.
    pub fn defaults() -> Vec<SimUser> {
        vec![
            SimUser {
                openid: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".to_owned(),
                unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".to_owned()),
                nickname: "张三".to_owned(),
                headimgurl: avatar_svg("#07c160", "#ffffff"),
                snapshot: false,
            },
            SimUser {
                openid: "o9AgO5Alice-SimUser-8nF2kQ4x".to_owned(),
                unionid: Some("o6_bmAliceSimUnionid-7Hd3Lp2q".to_owned()),
                nickname: "Alice 🌸".to_owned(),
                headimgurl: avatar_svg("#f58fb5", "#ffffff"),
                snapshot: false,
            },
            SimUser {
                openid: "o9AgO5LiSi_SimUser_w3Tz6Rb9y".to_owned(),
                unionid: None,
                nickname: "李四😀".to_owned(),
                headimgurl: avatar_svg("#4a90e2", "#ffffff"),
                snapshot: false,
            },
        ]
    }

    /// This user as seen by official account `appid`: under the primary account (`primary`) the
    /// configured openid, under any other a different one derived from both (stable, 28
    /// characters), as WeChat gives every account its own openids. The unionid is the same.
    pub fn for_account(&self, appid: &str, primary: &str) -> SimUser {
        if appid == primary {
            return self.clone();
        }
        SimUser {
            openid: derived_id("o", appid, &self.openid),
            ..self.clone()
        }
    }

    /// This user as website app `app` sees them: an openid of the app's own, and the unionid
    /// of the official accounts when the app is bound to their Open Platform account, else
    /// another unionid (that of the app's own Open Platform account).
    pub fn for_website(&self, app: &SimWebsiteApp) -> SimUser {
        let unionid = if app.same_open_account {
            self.unionid.clone()
        } else {
            Some(derived_id(
                "oU",
                &format!("open-account:{}", app.appid),
                &self.openid,
            ))
        };
        SimUser {
            openid: derived_id("o", app.appid.as_str(), &self.openid),
            unionid,
            ..self.clone()
        }
    }

    /// A snapshot-page virtual user ("微信用户", grey avatar, `snapshot: true`). Not in the
    /// default list; program it with [`SimWeChat::set_next_user`](super::SimWeChat::set_next_user).
    pub fn snapshot_user() -> SimUser {
        SimUser {
            openid: "o9AgO5SnapShot-VirtualUser01".to_owned(),
            unionid: Some("o6_bmSnapShotVirtualUnionid01".to_owned()),
            nickname: "微信用户".to_owned(),
            headimgurl: avatar_svg("#c8c8c8", "#f2f2f2"),
            snapshot: true,
        }
    }
}

/// A stable 28-character id: `prefix` and base64url of SHA-256(`salt`, 0, `openid`).
fn derived_id(prefix: &str, salt: &str, openid: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0u8])
        .chain_update(openid.as_bytes())
        .finalize();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    let mut id = prefix.to_owned();
    id.push_str(encoded.get(..28 - prefix.len()).unwrap_or(&encoded));
    id
}

/// A small person silhouette as an inline SVG `data:` URL (no network needed to show it).
fn avatar_svg(background: &str, figure: &str) -> String {
    use base64::Engine as _;
    let svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 64 64'>\
         <rect width='64' height='64' rx='6' fill='{background}'/>\
         <circle cx='32' cy='25' r='12' fill='{figure}'/>\
         <rect x='13' y='41' width='38' height='23' rx='11' fill='{figure}'/></svg>"
    );
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

/// The simulated endpoints, for failure injection and call counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /connect/oauth2/authorize` (open.weixin.qq.com).
    Authorize,
    /// `POST /cgi-bin/component/api_component_token`.
    ComponentToken,
    /// `GET /sns/oauth2/component/access_token`.
    ComponentCodeExchange,
    /// `GET /sns/oauth2/component/refresh_token`.
    ComponentRefresh,
    /// `GET /sns/oauth2/access_token` (official-account direct mode).
    OaCodeExchange,
    /// `GET /sns/oauth2/refresh_token` (official-account direct mode).
    OaRefresh,
    /// `GET /sns/userinfo`.
    UserInfo,
    /// `POST /cgi-bin/component/api_query_auth`.
    QueryAuth,
    /// `POST /cgi-bin/component/api_get_authorizer_info`.
    AuthorizerInfo,
    /// `POST /cgi-bin/component/api_get_authorizer_list`.
    AuthorizerList,
    /// `GET /connect/qrconnect` (open.weixin.qq.com, website apps' QR login page).
    QrConnect,
    /// `GET /sns/oauth2/access_token` with a website app's appid.
    WebsiteCodeExchange,
    /// `GET /sns/oauth2/refresh_token` with a website app's appid.
    WebsiteRefresh,
}

/// How an injected failure answers (see [`SimWeChat::inject`](super::SimWeChat::inject)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Never answer until the client gives up (bounded to two minutes so tests still end).
    Hang,
    /// HTTP 500 with a plain-text body, as during a WeChat incident.
    Http500,
    /// HTTP 200 with `text/html` body `<html>busy</html>`: a reply that is not JSON.
    NotJson,
    /// `{"errcode":-1,"errmsg":"system error"}`: WeChat busy, retry later.
    SystemBusy,
    /// Any WeChat errcode, e.g. `ErrCode(45009)` (quota) or `ErrCode(61004)` (IP whitelist).
    ErrCode(i64),
}

/// Which OAuth flavour issued a code: on behalf of an official account through our component,
/// or the official account directly with its own secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// Third-party platform (component) web OAuth: `component_appid` on the authorize URL.
    Component,
    /// Official-account direct web OAuth: no `component_appid`.
    OfficialAccount,
    /// A website app's QR login (`connect/qrconnect`, scope `snsapi_login`), exchanged with
    /// the app's own secret.
    Website,
}

/// A code handed out by the authorize endpoint.
#[derive(Clone, Debug)]
pub(crate) struct CodeEntry {
    pub(crate) mode: AuthMode,
    pub(crate) appid: String,
    pub(crate) user: SimUser,
    pub(crate) scope: Scope,
    pub(crate) expires_at: Instant,
    pub(crate) used: bool,
}

/// A user access token.
#[derive(Clone, Debug)]
pub(crate) struct UserTokenEntry {
    pub(crate) user: SimUser,
    pub(crate) scope: Scope,
    pub(crate) expires_at: Instant,
}

/// A user refresh token and the grant it renews.
#[derive(Clone, Debug)]
pub(crate) struct RefreshEntry {
    pub(crate) mode: AuthMode,
    pub(crate) appid: String,
    pub(crate) user: SimUser,
    pub(crate) scope: Scope,
    pub(crate) access_token: String,
    pub(crate) expires_at: Instant,
}

/// The component access token currently valid (there is at most one).
#[derive(Clone, Debug)]
pub(crate) struct ComponentTokenEntry {
    pub(crate) value: String,
    pub(crate) expires_at: Instant,
}

/// An official account's relation to the platform, as it changes.
#[derive(Clone, Debug)]
pub(crate) struct AccountState {
    pub(crate) nick_name: String,
    pub(crate) authorized: bool,
    pub(crate) func_ids: Vec<u32>,
    pub(crate) service_type: i64,
    pub(crate) verify_type: i64,
    /// When it (last) authorized the platform, Unix seconds.
    pub(crate) auth_time: i64,
    /// Order of the (last) authorization, for a stable list.
    pub(crate) seq: u64,
}

impl AccountState {
    /// Whether the authorize page lets users log in on its behalf (authorized with set 4).
    pub(crate) fn allows_web_oauth(&self) -> bool {
        self.authorized && self.func_ids.contains(&4)
    }
}

/// An `AuthorizationCode` of an authorization push, for `api_query_auth`.
#[derive(Clone, Debug)]
pub(crate) struct AuthCodeEntry {
    pub(crate) appid: String,
    pub(crate) expires_at: Instant,
    pub(crate) used: bool,
}

/// A validated authorize request waiting for the user's choice on the interactive page.
#[derive(Clone, Debug)]
pub(crate) struct PendingAuthorize {
    pub(crate) mode: AuthMode,
    pub(crate) appid: String,
    pub(crate) redirect_uri: Url,
    pub(crate) scope: Scope,
    pub(crate) state: String,
    pub(crate) expires_at: Instant,
}

/// Mutable state of the simulator, always behind [`Inner::state`].
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) next_user: Option<SimUser>,
    pub(crate) refuse_next: bool,
    /// Issued tickets, oldest first; the last one is current.
    pub(crate) tickets: Vec<(VerifyTicket, Instant)>,
    pub(crate) component_token: Option<ComponentTokenEntry>,
    pub(crate) issued_component_tokens: u64,
    pub(crate) token_ttl: Duration,
    pub(crate) codes: HashMap<String, CodeEntry>,
    pub(crate) user_tokens: HashMap<String, UserTokenEntry>,
    pub(crate) refresh_tokens: HashMap<String, RefreshEntry>,
    pub(crate) pending: HashMap<String, PendingAuthorize>,
    pub(crate) failures: HashMap<Endpoint, VecDeque<(Failure, u32)>>,
    pub(crate) calls: HashMap<Endpoint, u64>,
    /// The official accounts by appid.
    pub(crate) accounts: BTreeMap<String, AccountState>,
    /// Counter behind [`AccountState::seq`].
    pub(crate) next_seq: u64,
    /// Authorization codes handed out in pushes.
    pub(crate) auth_codes: HashMap<String, AuthCodeEntry>,
    /// Where authorization pushes go (from [`SimConfig::pusher`], or set later).
    pub(crate) events_url: Option<Url>,
}

impl State {
    /// Adds (or replaces) an account as configured.
    pub(crate) fn put_account(&mut self, account: &SimAuthorizer) {
        self.next_seq += 1;
        self.accounts.insert(
            account.appid.as_str().to_owned(),
            AccountState {
                nick_name: account.nick_name.clone(),
                authorized: account.authorized,
                func_ids: account.func_ids.clone(),
                service_type: account.service_type,
                verify_type: account.verify_type,
                auth_time: i64::try_from(crate::clock::unix_now()).unwrap_or(0),
                seq: self.next_seq,
            },
        );
    }

    /// Whether `appid` has authorized the platform with permission set 4.
    pub(crate) fn allows_web_oauth(&self, appid: &str) -> bool {
        self.accounts
            .get(appid)
            .is_some_and(AccountState::allows_web_oauth)
    }

    /// Whether `appid` has authorized the platform (any permission sets).
    pub(crate) fn is_authorized(&self, appid: &str) -> bool {
        self.accounts.get(appid).is_some_and(|a| a.authorized)
    }

    /// Hands out an `AuthorizationCode` for `appid` (single use, expires after `ttl`).
    pub(crate) fn issue_auth_code(&mut self, appid: &str, ttl: Duration) -> String {
        if self.auth_codes.len() > PRUNE_ABOVE {
            let now = Instant::now();
            self.auth_codes.retain(|_, c| now < c.expires_at);
        }
        let code = format!("queryauthcode@@@{}", super::http::random_token(48));
        self.auth_codes.insert(
            code.clone(),
            AuthCodeEntry {
                appid: appid.to_owned(),
                expires_at: Instant::now() + ttl,
                used: false,
            },
        );
        code
    }

    /// The ticket issued most recently.
    pub(crate) fn current_ticket(&mut self) -> VerifyTicket {
        match self.tickets.last() {
            Some((ticket, _)) => ticket.clone(),
            None => self.rotate_ticket(),
        }
    }

    /// Issues a new ticket; older ones stay valid for [`TICKET_LIFETIME`].
    pub(crate) fn rotate_ticket(&mut self) -> VerifyTicket {
        let now = Instant::now();
        self.tickets
            .retain(|(_, issued)| now.saturating_duration_since(*issued) < TICKET_LIFETIME);
        let ticket = VerifyTicket::new(format!("ticket@@@{}", super::http::random_token(64)));
        self.tickets.push((ticket.clone(), now));
        ticket
    }

    /// Counts one call of `endpoint` and takes the next injected failure for it, if any.
    pub(crate) fn begin_call(&mut self, endpoint: Endpoint) -> Option<Failure> {
        *self.calls.entry(endpoint).or_insert(0) += 1;
        let queue = self.failures.get_mut(&endpoint)?;
        let (failure, remaining) = queue.front_mut()?;
        let failure = *failure;
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(failure)
    }

    /// Stores a new code and returns it.
    pub(crate) fn issue_code(&mut self, entry: CodeEntry) -> String {
        if self.codes.len() > PRUNE_ABOVE {
            let now = Instant::now();
            // Keep used codes a while so that a reuse still reports 40163, not 40029.
            self.codes
                .retain(|_, c| now < c.expires_at + Duration::from_secs(600));
        }
        let code = super::http::random_token(24);
        self.codes.insert(code.clone(), entry);
        code
    }

    /// Drops expired user tokens, refresh tokens and pending authorizations when the maps grow.
    pub(crate) fn prune(&mut self) {
        let now = Instant::now();
        if self.user_tokens.len() > PRUNE_ABOVE {
            self.user_tokens.retain(|_, t| now < t.expires_at);
        }
        if self.refresh_tokens.len() > PRUNE_ABOVE {
            self.refresh_tokens.retain(|_, t| now < t.expires_at);
        }
        if self.pending.len() > PRUNE_ABOVE {
            self.pending.retain(|_, p| now < p.expires_at);
        }
    }
}

/// Shared by the server's request handlers, the pusher tasks and the [`SimWeChat`](super::SimWeChat) handle.
pub(crate) struct Inner {
    pub(crate) config: SimConfig,
    pub(crate) base_url: Url,
    pub(crate) client: reqwest::Client,
    state: Mutex<State>,
}

impl Inner {
    /// Bundles the configuration, the public base URL, the push client and the initial state.
    pub(crate) fn new(
        config: SimConfig,
        base_url: Url,
        client: reqwest::Client,
        state: State,
    ) -> Inner {
        Inner {
            config,
            base_url,
            client,
            state: Mutex::new(state),
        }
    }

    /// The website app with appid `appid`, if the simulator has one.
    pub(crate) fn website_app(&self, appid: &str) -> Option<&SimWebsiteApp> {
        self.config
            .website_apps
            .iter()
            .find(|app| app.appid.as_str() == appid)
    }

    /// Locks the state. A poisoned lock (a panicking test thread) is still usable: the state
    /// is plain data without invariants spanning several fields.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
