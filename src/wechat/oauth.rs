//! The one interface the auth layer calls: WeChat web OAuth in either mode.
//!
//! - **Component** (third-party platform on behalf of an official account, docs/wechat-protocol.md
//!   §8–§10): code exchange with the platform's `component_access_token` (managed by
//!   [`ComponentTokenManager`]), ticket pushes accepted through [`WeChatOAuth::accept_push`].
//! - **Official account** (the account's own secret, §11.1): code exchange with the secret; no
//!   ticket, no platform token.
//!
//! The layer does not need to know which mode runs: it builds the authorize URL, exchanges the
//! code, fetches the profile, asks for readiness — all through [`WeChatOAuth`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{
    AppSecret, AuthorizationCode, AuthorizerAppId, ComponentAppId, OAuthState, Scope,
    client::{ClientSettings, UserInfo, UserToken, WeChatClient},
    crypto::MsgCrypt,
    error::{ErrorClass, WeChatError},
    events::{PushEvent, PushQuery, open_push},
    persist::{PlatformStore, StoredTicket},
    token::{ComponentTokenManager, PlatformStatus, TokenSettings, now_unix},
};
use crate::secret::SecretString;

/// Which flow runs, with its credentials. `Debug` shows appids only (secrets are redacted).
#[derive(Clone, Debug)]
pub enum OAuthMode {
    /// Third-party platform web OAuth on behalf of an official account.
    Component {
        /// Our platform's appid.
        component_appid: ComponentAppId,
        /// Our platform's appsecret.
        component_secret: AppSecret,
        /// The official account users log in to (it authorized our platform).
        authorizer_appid: AuthorizerAppId,
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
    mode: Mode,
}

enum Mode {
    Component {
        component_appid: ComponentAppId,
        authorizer_appid: AuthorizerAppId,
        tokens: ComponentTokenManager,
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
                authorizer_appid,
                tokens,
                crypt: _,
            } => d
                .field("mode", &"component")
                .field("component_appid", component_appid)
                .field("authorizer_appid", authorizer_appid)
                .field("platform", &tokens.status()),
            Mode::OfficialAccount { appid, .. } => {
                d.field("mode", &"official_account").field("appid", appid)
            }
        };
        d.field("login_deadline", &self.login_deadline)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl WeChatOAuth {
    /// Builds the client (and, in component mode, the token manager and push decryption).
    /// Nothing is fetched yet; call [`start_background`](Self::start_background) to fetch and
    /// keep the platform token fresh.
    ///
    /// # Errors
    /// [`WeChatError::Misconfigured`] if the HTTP client cannot be built or the EncodingAESKey
    /// is unusable.
    pub fn new(
        settings: WeChatSettings,
        store: Arc<dyn PlatformStore>,
    ) -> Result<Self, WeChatError> {
        let client = WeChatClient::new(settings.client)?;
        let mode = match settings.mode {
            OAuthMode::Component {
                component_appid,
                component_secret,
                authorizer_appid,
                message_token,
                encoding_aes_key,
                previous_encoding_aes_key,
            } => {
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
                Mode::Component {
                    component_appid,
                    authorizer_appid,
                    tokens,
                    crypt,
                }
            }
            OAuthMode::OfficialAccount { appid, secret } => Mode::OfficialAccount { appid, secret },
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                store,
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
    /// callback, after the user consented; the official-account mode always can.
    ///
    /// # Errors
    /// [`WeChatError::NoTicket`] (rendered as "platform not ready", 503 with `Retry-After`).
    pub async fn ensure_login_possible(&self) -> Result<(), WeChatError> {
        match &self.inner.mode {
            Mode::Component { tokens, .. } => tokens.ensure_ticket().await,
            Mode::OfficialAccount { .. } => Ok(()),
        }
    }

    /// The official account users log in to (`appid` on the authorize page; the callback's
    /// `appid` parameter must equal it in component mode).
    pub fn authorizer_appid(&self) -> &AuthorizerAppId {
        match &self.inner.mode {
            Mode::Component {
                authorizer_appid, ..
            } => authorizer_appid,
            Mode::OfficialAccount { appid, .. } => appid,
        }
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

    /// The authorize page URL to send the browser to (with `#wechat_redirect`).
    /// `redirect_uri` is our callback URL, unencoded; it is percent-encoded here.
    pub fn authorize_url(&self, redirect_uri: &str, scope: Scope, state: &OAuthState) -> String {
        self.inner.client.authorize_url(
            self.authorizer_appid(),
            redirect_uri,
            scope,
            state,
            self.component_appid(),
        )
    }

    /// Exchanges the callback's `code` for the user's token and openid.
    ///
    /// In component mode, if WeChat rejects the platform token (`40001`/`42001`/`40014`), exactly
    /// that token is invalidated, a new one is fetched (single flight) and the exchange is
    /// retried once.
    ///
    /// # Errors
    /// Any [`WeChatError`]; [`ErrorClass::Reauthorize`] (`40029`, `40163`, `42003`) means the
    /// code is used, expired or foreign — restart the login.
    pub async fn exchange_code(&self, code: &AuthorizationCode) -> Result<UserToken, WeChatError> {
        let client = &self.inner.client;
        match &self.inner.mode {
            Mode::OfficialAccount { appid, secret } => {
                client.oa_code_exchange(appid, secret, code).await
            }
            Mode::Component {
                component_appid,
                authorizer_appid,
                tokens,
                ..
            } => {
                let token = tokens.token().await?;
                match client
                    .component_code_exchange(authorizer_appid, code, component_appid, &token)
                    .await
                {
                    Err(e) if e.class() == ErrorClass::RefreshToken => {
                        tracing::info!(
                            code = e.code(),
                            "component_access_token rejected during code exchange; fetching a new one and retrying once"
                        );
                        if let Err(e) = tokens.invalidate(&token).await {
                            // Memory is already updated; the store catches up on the next save.
                            tracing::warn!(error = %e, "cannot invalidate the stored component_access_token");
                        }
                        let fresh = tokens.token().await?;
                        client
                            .component_code_exchange(
                                authorizer_appid,
                                code,
                                component_appid,
                                &fresh,
                            )
                            .await
                    }
                    other => other,
                }
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
    /// decrypts, checks the component appid, then stores a `component_verify_ticket` (persisted
    /// before this returns, so answer WeChat `success` only after `Ok`), logs `unauthorized` at
    /// warn and ignores other kinds. The event is returned for the caller's own use.
    ///
    /// # Errors
    /// [`WeChatError::Push`] for a forged, foreign or garbled push (answer 4xx, nothing was
    /// stored); [`WeChatError::Store`] if the ticket cannot be persisted;
    /// [`WeChatError::Misconfigured`] in official-account mode, which receives no pushes.
    pub async fn accept_push(
        &self,
        query: &PushQuery,
        body: &[u8],
    ) -> Result<PushEvent, WeChatError> {
        let Mode::Component {
            authorizer_appid,
            tokens,
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
                authorizer_appid: revoked,
                ..
            } => {
                if revoked == authorizer_appid {
                    tracing::warn!(authorizer_appid = %revoked, "the configured official account revoked its authorization of the platform: logins will fail (10015) until it authorizes again");
                } else {
                    tracing::warn!(authorizer_appid = %revoked, "an official account revoked its authorization of the platform");
                }
            }
            PushEvent::Authorized {
                authorizer_appid, ..
            }
            | PushEvent::UpdateAuthorized {
                authorizer_appid, ..
            } => {
                tracing::info!(authorizer_appid = %authorizer_appid, "an official account authorized (or updated) the platform");
            }
            other => {
                tracing::debug!(event = ?other, "ignoring a push of another kind");
            }
        }
        Ok(event)
    }

    /// Whether new logins can work: the store answers, and in component mode a ticket and a
    /// valid platform token are held.
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

    /// Starts the background token refresher (component mode); `None` in official-account
    /// mode, which has nothing to refresh.
    pub fn start_background(&self) -> Option<JoinHandle<()>> {
        match &self.inner.mode {
            Mode::Component { tokens, .. } => Some(tokens.spawn_refresher()),
            Mode::OfficialAccount { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::{
        VerifyTicket,
        events::{PushQuery, seal_push, ticket_event_xml},
        persist::MemoryPlatformStore,
    };

    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn component_settings() -> WeChatSettings {
        WeChatSettings {
            mode: OAuthMode::Component {
                component_appid: ComponentAppId::new("wx0123456789abcdef"),
                component_secret: AppSecret::new("component-secret-value"),
                authorizer_appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
                message_token: SecretString::new("message-token-value"),
                encoding_aes_key: SecretString::new(AES_KEY),
                previous_encoding_aes_key: None,
            },
            client: ClientSettings::default(),
            token: TokenSettings::default(),
        }
    }

    fn oa_settings() -> WeChatSettings {
        WeChatSettings {
            mode: OAuthMode::OfficialAccount {
                appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
                secret: AppSecret::new("oa-secret-value"),
            },
            client: ClientSettings::default(),
            token: TokenSettings::default(),
        }
    }

    fn sealed_ticket(token: &str, key: &str, create_time: i64) -> (PushQuery, String) {
        let appid = ComponentAppId::new("wx0123456789abcdef");
        let crypt = MsgCrypt::new(
            &SecretString::new(token),
            &SecretString::new(key),
            appid.clone(),
        )
        .unwrap();
        let xml = ticket_event_xml(
            &appid,
            create_time,
            &VerifyTicket::new("ticket@@@pushed-ticket-value"),
        );
        let (query, body) = seal_push(&crypt, &xml, "1700000000", "42");
        (PushQuery::from_query(&query).unwrap(), body)
    }

    #[tokio::test]
    async fn a_valid_ticket_push_is_stored() {
        let store = Arc::new(MemoryPlatformStore::new());
        let oauth = WeChatOAuth::new(component_settings(), store.clone()).unwrap();
        let (query, body) = sealed_ticket("message-token-value", AES_KEY, 1_700_000_000);
        let event = oauth.accept_push(&query, body.as_bytes()).await.unwrap();
        assert!(matches!(event, PushEvent::ComponentVerifyTicket { .. }));
        let stored = store
            .load_ticket(&ComponentAppId::new("wx0123456789abcdef"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.ticket,
            VerifyTicket::new("ticket@@@pushed-ticket-value")
        );
        assert_eq!(stored.create_time, 1_700_000_000);
        let readiness = oauth.readiness().await;
        assert!(!readiness.ready);
        assert_eq!(
            readiness.reasons,
            vec!["no valid component_access_token yet".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_push_under_the_previous_key_is_accepted_during_rotation() {
        let old_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
        let mut settings = component_settings();
        if let OAuthMode::Component {
            previous_encoding_aes_key,
            ..
        } = &mut settings.mode
        {
            *previous_encoding_aes_key = Some(SecretString::new(old_key));
        }
        let store = Arc::new(MemoryPlatformStore::new());
        let oauth = WeChatOAuth::new(settings, store.clone()).unwrap();
        let (query, body) = sealed_ticket("message-token-value", old_key, 1);
        oauth.accept_push(&query, body.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn a_forged_push_is_refused_and_nothing_is_stored() {
        let store = Arc::new(MemoryPlatformStore::new());
        let oauth = WeChatOAuth::new(component_settings(), store.clone()).unwrap();
        let (query, body) = sealed_ticket("someone-elses-token", AES_KEY, 1);
        let e = oauth
            .accept_push(&query, body.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(e, WeChatError::Push(_)), "{e:?}");
        let e = oauth
            .accept_push(&query, b"<xml>garbage")
            .await
            .unwrap_err();
        assert!(matches!(e, WeChatError::Push(_)), "{e:?}");
        assert_eq!(
            store
                .load_ticket(&ComponentAppId::new("wx0123456789abcdef"))
                .await
                .unwrap(),
            None
        );
        assert!(!oauth.token_manager().unwrap().status().ticket_present);
    }

    #[tokio::test]
    async fn official_account_mode_has_no_pushes_and_is_ready() {
        let oauth = WeChatOAuth::new(oa_settings(), Arc::new(MemoryPlatformStore::new())).unwrap();
        let (query, body) = sealed_ticket("message-token-value", AES_KEY, 1);
        let e = oauth
            .accept_push(&query, body.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(e, WeChatError::Misconfigured { .. }));
        assert_eq!(oauth.component_appid(), None);
        assert!(oauth.start_background().is_none());
        assert!(oauth.readiness().await.ready);
    }

    #[test]
    fn a_bad_aes_key_is_refused_at_construction() {
        let mut settings = component_settings();
        if let OAuthMode::Component {
            encoding_aes_key, ..
        } = &mut settings.mode
        {
            *encoding_aes_key = SecretString::new("too-short");
        }
        let e = WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap_err();
        assert!(matches!(e, WeChatError::Crypto(_)), "{e:?}");
    }

    #[test]
    fn authorize_url_depends_on_the_mode() {
        let store: Arc<dyn PlatformStore> = Arc::new(MemoryPlatformStore::new());
        let state = OAuthState::new("st4te");
        let component = WeChatOAuth::new(component_settings(), Arc::clone(&store)).unwrap();
        let url = component.authorize_url("https://a.example/cb", Scope::UserInfo, &state);
        assert!(url.starts_with(
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxa1b2c3d4e5f60708&"
        ));
        assert!(url.ends_with("&component_appid=wx0123456789abcdef#wechat_redirect"));
        let oa = WeChatOAuth::new(oa_settings(), store).unwrap();
        let url = oa.authorize_url("https://a.example/cb", Scope::Base, &state);
        assert!(url.ends_with("&state=st4te&connect_redirect=1#wechat_redirect"));
        assert_eq!(oa.authorizer_appid().as_str(), "wxa1b2c3d4e5f60708");
    }

    #[test]
    fn debug_shows_no_secrets() {
        let settings = component_settings();
        let shown_settings = format!("{settings:?}");
        let oauth = WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap();
        let oa = WeChatOAuth::new(oa_settings(), Arc::new(MemoryPlatformStore::new())).unwrap();
        let shown = format!("{shown_settings} {oauth:?} {oa:?}");
        for secret in [
            "component-secret-value",
            "message-token-value",
            AES_KEY,
            "oa-secret-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("wx0123456789abcdef"));
    }
}
