//! The one interface the auth layer calls: WeChat web OAuth in either mode.
//!
//! - **Component** (third-party platform on behalf of official accounts, docs/wechat-protocol.md
//!   §8–§10): code exchange with the platform's `component_access_token` (managed by
//!   [`ComponentTokenManager`]), ticket and authorization pushes accepted through
//!   [`WeChatOAuth::accept_push`], and any number of official accounts (tenants) whose state
//!   follows WeChat ([`Tenants`], kept in step by the `authorizer` module).
//! - **Official account** (the account's own secret, §11.1): code exchange with the secret; no
//!   ticket, no platform token, exactly one account.
//!
//! The layer does not need to know which mode runs: it asks the tenant registry, builds the
//! authorize URL, exchanges the code, fetches the profile, asks for readiness — all through
//! [`WeChatOAuth`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{
    AppSecret, AuthorizationCode, AuthorizerAppId, ComponentAppId, OAuthState, Scope,
    authorizer::{AuthorizerSync, ReconcileReport},
    client::{ClientSettings, UserInfo, UserToken, WeChatClient},
    crypto::MsgCrypt,
    error::WeChatError,
    events::{PushEvent, PushQuery, open_push},
    persist::{PlatformStore, StoredTicket},
    tenants::{TenantMode, TenantSettings, TenantStatus, Tenants},
    token::{ComponentTokenManager, PlatformStatus, TokenSettings, now_unix},
};
use crate::secret::SecretString;

/// Which flow runs, with its credentials. `Debug` shows appids only (secrets are redacted).
#[derive(Clone, Debug)]
pub enum OAuthMode {
    /// Third-party platform web OAuth on behalf of official accounts.
    Component {
        /// Our platform's appid.
        component_appid: ComponentAppId,
        /// Our platform's appsecret.
        component_secret: AppSecret,
        /// The official accounts users log in to (they authorized our platform), and how their
        /// state is kept in step with WeChat. [`TenantSettings::single`] is the one-account
        /// set-up.
        tenants: TenantSettings,
        /// The platform's message token (消息校验Token) for push signatures.
        message_token: SecretString,
        /// The platform's EncodingAESKey (43 characters).
        encoding_aes_key: SecretString,
        /// The previous EncodingAESKey during a key rotation; pushes that do not decrypt with the
        /// current key are tried with it.
        previous_encoding_aes_key: Option<SecretString>,
    },
    /// An official account's own web OAuth with its own secret.
    OfficialAccount {
        /// The official account's appid.
        appid: AuthorizerAppId,
        /// The official account's secret.
        secret: AppSecret,
    },
}

/// Everything [`WeChatOAuth`] needs; built by the configuration loader (or by hand).
#[derive(Clone, Debug)]
pub struct WeChatSettings {
    /// The flow and its credentials.
    pub mode: OAuthMode,
    /// HTTP client settings (base URLs, timeouts, `lang`).
    pub client: ClientSettings,
    /// Component token manager settings (ignored in official-account mode).
    pub token: TokenSettings,
}

/// Whether new logins can work right now (the `/ready` endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// `true` when nothing blocks a new login.
    pub ready: bool,
    /// Human-readable reasons why not (empty when ready); no secrets.
    pub reasons: Vec<String>,
}

/// Default of [`WeChatOAuth::login_deadline`]: 10 seconds.
pub const DEFAULT_LOGIN_DEADLINE: Duration = Duration::from_secs(10);

/// WeChat web OAuth, in component or official-account mode. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct WeChatOAuth {
    inner: Arc<Inner>,
    login_deadline: Duration,
}

struct Inner {
    client: WeChatClient,
    store: Arc<dyn PlatformStore>,
    tenants: Tenants,
    /// The one appid of the single-tenant shorthand (or of official-account mode).
    single_appid: Option<AuthorizerAppId>,
    mode: Mode,
}

enum Mode {
    Component {
        component_appid: ComponentAppId,
        tokens: ComponentTokenManager,
        sync: AuthorizerSync,
        crypt: MsgCrypt,
    },
    OfficialAccount {
        appid: AuthorizerAppId,
        secret: AppSecret,
    },
}

impl std::fmt::Debug for WeChatOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("WeChatOAuth");
        match &self.inner.mode {
            Mode::Component {
                component_appid,
                tokens,
                ..
            } => d
                .field("mode", &"component")
                .field("component_appid", component_appid)
                .field("platform", &tokens.status()),
            Mode::OfficialAccount { appid, .. } => {
                d.field("mode", &"official_account").field("appid", appid)
            }
        };
        d.field("tenants", &self.inner.tenants)
            .field("login_deadline", &self.login_deadline)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Aborts a background task when dropped (so aborting [`WeChatOAuth::start_background`]'s
/// handle stops every task it started).
struct AbortOnDrop(JoinHandle<()>);

impl Future for AbortOnDrop {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WeChatOAuth {
    /// Builds the client (and, in component mode, the token manager, push decryption and the
    /// tenant registry with the configured accounts). Nothing is fetched or read yet; call
    /// [`start_background`](Self::start_background) to read the stored tenant states, fetch and
    /// keep the platform token fresh and follow WeChat.
    ///
    /// # Errors
    /// [`WeChatError::Misconfigured`] if the HTTP client cannot be built or component mode has
    /// no tenant in static mode; [`WeChatError::Crypto`] if the EncodingAESKey is unusable.
    pub fn new(
        settings: WeChatSettings,
        store: Arc<dyn PlatformStore>,
    ) -> Result<Self, WeChatError> {
        let client = WeChatClient::new(settings.client)?;
        let (mode, tenants, single_appid) = match settings.mode {
            OAuthMode::Component {
                component_appid,
                component_secret,
                tenants: tenant_settings,
                message_token,
                encoding_aes_key,
                previous_encoding_aes_key,
            } => {
                if tenant_settings.mode == TenantMode::Static
                    && tenant_settings.configured.is_empty()
                {
                    return Err(WeChatError::Misconfigured {
                        reason: "static tenant mode needs at least one configured official account"
                            .to_owned(),
                    });
                }
                let mut crypt =
                    MsgCrypt::new(&message_token, &encoding_aes_key, component_appid.clone())?;
                if let Some(previous) = &previous_encoding_aes_key {
                    crypt = crypt.with_previous_key(previous)?;
                }
                let tokens = ComponentTokenManager::new(
                    component_appid.clone(),
                    component_secret,
                    client.clone(),
                    Arc::clone(&store),
                    settings.token,
                );
                let tenants = Tenants::new(tenant_settings.mode, &tenant_settings.configured);
                let single = match tenant_settings.configured.as_slice() {
                    [only] => Some(only.clone()),
                    _ => None,
                };
                let sync = AuthorizerSync::new(
                    component_appid.clone(),
                    client.clone(),
                    tokens.clone(),
                    Arc::clone(&store),
                    tenants.clone(),
                    tenant_settings,
                );
                let mode = Mode::Component {
                    component_appid,
                    tokens,
                    sync,
                    crypt,
                };
                (mode, tenants, single)
            }
            OAuthMode::OfficialAccount { appid, secret } => {
                let tenants = Tenants::new(TenantMode::Static, std::slice::from_ref(&appid));
                let single = Some(appid.clone());
                (Mode::OfficialAccount { appid, secret }, tenants, single)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                store,
                tenants,
                single_appid,
                mode,
            }),
            login_deadline: DEFAULT_LOGIN_DEADLINE,
        })
    }

    /// Replaces the login deadline (default [`DEFAULT_LOGIN_DEADLINE`]; config
    /// `wechat.login_deadline_ms`).
    #[must_use]
    pub fn with_login_deadline(mut self, deadline: Duration) -> Self {
        self.login_deadline = deadline;
        self
    }

    /// How long a login callback may wait on WeChat in all: the component token (retries
    /// included), the code exchange and `sns/userinfo`. Past it the callback answers with the
    /// "WeChat timed out" page and stores nothing; a shared component-token fetch it was waiting
    /// for keeps running for the requests after it.
    pub fn login_deadline(&self) -> Duration {
        self.login_deadline
    }

    /// Whether a login can be started now. In component mode a `component_verify_ticket` (or a
    /// still valid platform token) must be held — otherwise the login would fail at the
    /// callback, after the user consented; the official-account mode always can. Whether the
    /// account itself may log in is [`Tenants::status`].
    ///
    /// # Errors
    /// [`WeChatError::NoTicket`] (rendered as "platform not ready", 503 with `Retry-After`).
    pub async fn ensure_login_possible(&self) -> Result<(), WeChatError> {
        match &self.inner.mode {
            Mode::Component { tokens, .. } => tokens.ensure_ticket().await,
            Mode::OfficialAccount { .. } => Ok(()),
        }
    }

    /// The tenant registry: which official accounts may log users in right now
    /// ([`Tenants::status`], O(1), no I/O), their records and a stream of status changes. In
    /// official-account mode it holds the one account, [`TenantStatus::Configured`].
    pub fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }

    /// The one official account when exactly one is configured (official-account mode, or the
    /// single-tenant shorthand `wechat.appid` in component mode); `None` with several tenants,
    /// where the request decides the account.
    pub fn single_appid(&self) -> Option<&AuthorizerAppId> {
        self.inner.single_appid.as_ref()
    }

    /// [`single_appid`](Self::single_appid) for callers that cannot choose an account (the
    /// one-tenant set-up).
    ///
    /// # Errors
    /// [`WeChatError::Misconfigured`] when several (or no) official accounts are configured.
    pub fn default_appid(&self) -> Result<&AuthorizerAppId, WeChatError> {
        self.single_appid()
            .ok_or_else(|| WeChatError::Misconfigured {
                reason: "several official accounts are configured: the request must name one"
                    .to_owned(),
            })
    }

    /// Our platform's appid in component mode, `None` in official-account mode.
    pub fn component_appid(&self) -> Option<&ComponentAppId> {
        match &self.inner.mode {
            Mode::Component {
                component_appid, ..
            } => Some(component_appid),
            Mode::OfficialAccount { .. } => None,
        }
    }

    /// The component token manager (component mode), for the health endpoint and tests.
    pub fn token_manager(&self) -> Option<&ComponentTokenManager> {
        match &self.inner.mode {
            Mode::Component { tokens, .. } => Some(tokens),
            Mode::OfficialAccount { .. } => None,
        }
    }

    /// `Ok` when `appid` may log users in now ([`TenantStatus::allows_login`]).
    ///
    /// # Errors
    /// [`WeChatError::Tenant`] with the account's status otherwise.
    pub fn check_tenant(&self, appid: &AuthorizerAppId) -> Result<(), WeChatError> {
        let status = self.inner.tenants.status(appid);
        if status.allows_login() {
            Ok(())
        } else {
            Err(WeChatError::Tenant {
                appid: appid.clone(),
                status,
            })
        }
    }

    /// The authorize page URL for official account `appid` (with `#wechat_redirect`; in
    /// component mode with our `component_appid`). `redirect_uri` is our callback URL,
    /// unencoded; it is percent-encoded here.
    ///
    /// # Errors
    /// [`WeChatError::Tenant`] when `appid` may not log users in now (unknown, revoked, no web
    /// permission): the proxy never sends a browser to WeChat for an account it does not serve.
    pub fn authorize_url(
        &self,
        appid: &AuthorizerAppId,
        redirect_uri: &str,
        scope: Scope,
        state: &OAuthState,
    ) -> Result<String, WeChatError> {
        self.check_tenant(appid)?;
        Ok(self.inner.client.authorize_url(
            appid,
            redirect_uri,
            scope,
            state,
            self.component_appid(),
        ))
    }

    /// Exchanges the callback's `code`, issued for official account `appid`, for the user's
    /// token and openid (the openid is the user's id under that account).
    ///
    /// In component mode, if WeChat rejects the platform token (`40001`/`42001`/`40014`), exactly
    /// that token is invalidated, a new one is fetched (single flight) and the exchange is
    /// retried once.
    ///
    /// # Errors
    /// [`WeChatError::Tenant`] when `appid` may not log users in now (e.g. it revoked the
    /// platform during the login), or in official-account mode is not the account; any other
    /// [`WeChatError`]; [`ErrorClass::Reauthorize`](super::error::ErrorClass::Reauthorize)
    /// (`40029`, `40163`, `42003`) means the code is used, expired or foreign — restart the
    /// login.
    pub async fn exchange_code(
        &self,
        appid: &AuthorizerAppId,
        code: &AuthorizationCode,
    ) -> Result<UserToken, WeChatError> {
        self.check_tenant(appid)?;
        let client = &self.inner.client;
        match &self.inner.mode {
            Mode::OfficialAccount { appid: own, secret } => {
                if own != appid {
                    return Err(WeChatError::Tenant {
                        appid: appid.clone(),
                        status: TenantStatus::Unknown,
                    });
                }
                client.oa_code_exchange(own, secret, code).await
            }
            Mode::Component {
                component_appid,
                tokens,
                ..
            } => {
                tokens
                    .with_token(|token| async move {
                        client
                            .component_code_exchange(appid, code, component_appid, &token)
                            .await
                    })
                    .await
            }
        }
    }

    /// Fetches the user's profile with the token from [`exchange_code`](Self::exchange_code).
    /// Needs the `snsapi_userinfo` scope; a `snsapi_base` token or a snapshot user gets `48001`.
    ///
    /// # Errors
    /// Any [`WeChatError`].
    pub async fn user_info(&self, token: &UserToken) -> Result<UserInfo, WeChatError> {
        self.inner
            .client
            .user_info(&token.access_token, &token.openid)
            .await
    }

    /// Accepts a push to the 授权事件接收URL (component mode): verifies `msg_signature`,
    /// decrypts, checks the component appid, then:
    ///
    /// - `component_verify_ticket`: stores the ticket (persisted before this returns);
    /// - `unauthorized`: the tenant is [`TenantStatus::Revoked`] at once (persisted before this
    ///   returns, broadcast to [`Tenants::subscribe`]);
    /// - `authorized` / `updateauthorized`: starts learning the account's permission sets in a
    ///   background task (`api_query_auth`, retried, then `api_get_authorizer_info`) and returns
    ///   at once;
    /// - anything else is ignored.
    ///
    /// In static tenant mode, authorization pushes for accounts that are not configured are
    /// ignored (logged with the appid). Answer WeChat `success` only after `Ok`. The event is
    /// returned for the caller's own use.
    ///
    /// # Errors
    /// [`WeChatError::Push`] for a forged, foreign or garbled push (answer 4xx, nothing was
    /// stored); [`WeChatError::Store`] if the ticket or a revocation cannot be persisted;
    /// [`WeChatError::Misconfigured`] in official-account mode, which receives no pushes.
    pub async fn accept_push(
        &self,
        query: &PushQuery,
        body: &[u8],
    ) -> Result<PushEvent, WeChatError> {
        let Mode::Component {
            tokens,
            sync,
            crypt,
            ..
        } = &self.inner.mode
        else {
            return Err(WeChatError::Misconfigured {
                reason: "event pushes exist only in component mode".to_owned(),
            });
        };
        let event = open_push(crypt, query, body)?;
        match &event {
            PushEvent::ComponentVerifyTicket {
                create_time,
                ticket,
                ..
            } => {
                tokens
                    .set_ticket(StoredTicket {
                        ticket: ticket.clone(),
                        create_time: *create_time,
                        received_at: now_unix(),
                    })
                    .await?;
                tracing::debug!(create_time, "stored a pushed component_verify_ticket");
            }
            PushEvent::Unauthorized {
                authorizer_appid, ..
            } => {
                sync.revoke(authorizer_appid).await?;
            }
            PushEvent::Authorized {
                authorizer_appid,
                grant,
                ..
            }
            | PushEvent::UpdateAuthorized {
                authorizer_appid,
                grant,
                ..
            } => {
                tracing::info!(authorizer_appid = %authorizer_appid, "an official account authorized (or updated) the platform");
                drop(sync.learn_in_background(authorizer_appid, grant.authorization_code.clone()));
            }
            other => {
                tracing::debug!(event = ?other, "ignoring a push of another kind");
            }
        }
        Ok(event)
    }

    /// Reads the tenant records from the platform store now (also done at start and every
    /// [`TenantSettings::store_sync_interval`] by [`start_background`](Self::start_background)).
    /// Returns how many records changed the registry; always 0 in official-account mode.
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the store cannot be read (the registry is unchanged).
    pub async fn reload_tenants(&self) -> Result<usize, WeChatError> {
        match &self.inner.mode {
            Mode::Component { sync, .. } => sync.load_from_store().await,
            Mode::OfficialAccount { .. } => Ok(0),
        }
    }

    /// Runs one reconciliation with WeChat's authorizer list now (also done by
    /// [`start_background`](Self::start_background) when
    /// [`TenantSettings::reconcile_interval`] is set).
    ///
    /// # Errors
    /// The list cannot be fetched (no component token yet, WeChat unreachable; nothing
    /// changed); [`WeChatError::Misconfigured`] in official-account mode.
    pub async fn reconcile_tenants(&self) -> Result<ReconcileReport, WeChatError> {
        match &self.inner.mode {
            Mode::Component { sync, .. } => sync.reconcile().await,
            Mode::OfficialAccount { .. } => Err(WeChatError::Misconfigured {
                reason: "tenant reconciliation exists only in component mode".to_owned(),
            }),
        }
    }

    /// Whether new logins can work: the store answers, and in component mode a ticket and a
    /// valid platform token are held. A tenant's state never makes the platform unready (see
    /// [`Tenants::list`] for them).
    pub async fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if let Err(e) = self.inner.store.ping().await {
            tracing::warn!(error = %e, "platform store unreachable");
            reasons.push("platform store unreachable".to_owned());
        }
        if let Mode::Component { tokens, .. } = &self.inner.mode {
            if let Err(e) = tokens.load().await {
                tracing::warn!(error = %e, "cannot load persisted platform credentials");
            }
            let PlatformStatus {
                ticket_present,
                token_present,
                ..
            } = tokens.status();
            if !ticket_present {
                reasons.push("no component_verify_ticket received yet".to_owned());
            }
            if !token_present {
                reasons.push("no valid component_access_token yet".to_owned());
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// Starts the background work of component mode — the token refresher, the tenant store
    /// sync (at once, then every [`TenantSettings::store_sync_interval`]) and the reconciliation
    /// with WeChat (at start once a token exists, then every
    /// [`TenantSettings::reconcile_interval`]) — as one task; aborting it stops them all.
    /// `None` in official-account mode, which has nothing to refresh.
    pub fn start_background(&self) -> Option<JoinHandle<()>> {
        match &self.inner.mode {
            Mode::Component { tokens, sync, .. } => {
                let refresher = AbortOnDrop(tokens.spawn_refresher());
                let tenants = AbortOnDrop(sync.spawn());
                Some(tokio::spawn(async move {
                    tokio::join!(refresher, tenants);
                }))
            }
            Mode::OfficialAccount { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
