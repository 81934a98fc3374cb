//! `WeChatOAuth` against the simulated WeChat without the layer: the component-mode settings of
//! the token suites, many `token()` calls released at once, and one code exchange ("the token
//! WeChat accepts now").

use std::{sync::Arc, time::Duration};

use wechat_oauth_proxy::{
    sim::{AuthMode, SimWeChat},
    wechat::{
        ComponentAccessToken, Scope,
        client::{ClientSettings, UserToken},
        error::WeChatError,
        oauth::{WeChatOAuth, WeChatSettings},
        persist::PlatformStore,
        token::{ComponentTokenManager, TokenSettings},
    },
};

use super::bounded;

/// Token settings for tests: fast retries, short cool-downs for transient failures.
pub fn token_settings() -> TokenSettings {
    TokenSettings {
        retry_backoff: Duration::from_millis(20),
        min_refetch_interval: Duration::from_millis(100),
        ..TokenSettings::default()
    }
}

/// Component-mode settings against `sim` (5 s request timeout) with the given token settings.
pub fn component_settings(sim: &SimWeChat, token: TokenSettings) -> WeChatSettings {
    WeChatSettings {
        mode: sim.config().component_mode(),
        client: ClientSettings {
            api_base: sim.base_url(),
            open_base: sim.base_url(),
            request_timeout: Duration::from_secs(5),
            ..ClientSettings::default()
        },
        token,
    }
}

/// A component-mode `WeChatOAuth` against `sim` over `store`.
pub fn component_oauth(
    sim: &SimWeChat,
    store: Arc<dyn PlatformStore>,
    token: TokenSettings,
) -> WeChatOAuth {
    WeChatOAuth::new(component_settings(sim, token), store).expect("valid settings")
}

/// `count` concurrent `token()` calls, released together by a barrier; call `i` goes to
/// `manager(i)`. The answers in call order.
pub async fn tokens_at_once(
    count: usize,
    manager: impl Fn(usize) -> ComponentTokenManager,
) -> Vec<Result<ComponentAccessToken, WeChatError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let manager = manager(i);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                manager.token().await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        answers.push(bounded(task).await.unwrap());
    }
    answers
}

/// The one token every answer of [`tokens_at_once`] carries; fails the test, saying `what`,
/// on an error or a second token.
pub fn the_same_token(
    answers: Vec<Result<ComponentAccessToken, WeChatError>>,
    what: &str,
) -> ComponentAccessToken {
    let tokens: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{what}");
    tokens[0].clone()
}

/// The simulator issues a code for its first user (component mode, `snsapi_userinfo`) and
/// `oauth` exchanges it: succeeds only with the component token WeChat accepts now.
pub async fn exchange_a_code(
    sim: &SimWeChat,
    oauth: &WeChatOAuth,
) -> Result<UserToken, WeChatError> {
    let code = sim.issue_code(
        sim.config().users[0].clone(),
        Scope::UserInfo,
        AuthMode::Component,
    );
    bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code)).await
}
