//! The one interface the auth layer calls: WeChat web OAuth in either mode.
//!
//! - **Component** (third-party platform on behalf of an official account, wechat-protocol.md
//!   §8–§10): code exchange with the platform's `component_access_token` (managed by
//!   [`ComponentTokenManager`]), ticket pushes accepted through [`WeChatOAuth::accept_push`].
//! - **Official account** (the account's own secret, §11.1): code exchange with the secret; no
//!   ticket, no platform token.
//!
//! The layer does not need to know which mode runs: it builds the authorize URL, exchanges the
//! code, fetches the profile, asks for readiness — all through [`WeChatOAuth`].

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{
    AppSecret, AuthorizationCode, AuthorizerAppId, ComponentAppId, OAuthState, Scope,
    client::{ClientSettings, UserInfo, UserToken, WeChatClient},
    error::{ErrorClass, WeChatError},
    persist::PlatformStore,
    token::{ComponentTokenManager, PlatformStatus, TokenSettings},
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

/// WeChat web OAuth, in component or official-account mode. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct WeChatOAuth {
    inner: Arc<Inner>,
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
            } => d
                .field("mode", &"component")
                .field("component_appid", component_appid)
                .field("authorizer_appid", authorizer_appid)
                .field("platform", &tokens.status()),
            Mode::OfficialAccount { appid, .. } => {
                d.field("mode", &"official_account").field("appid", appid)
            }
        };
        d.field("store", &self.inner.store).finish_non_exhaustive()
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
                message_token: _,
                encoding_aes_key: _,
                previous_encoding_aes_key: _,
            } => {
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
        })
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
                        tokens.invalidate(&token).await?;
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
