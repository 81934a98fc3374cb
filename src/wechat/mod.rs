//! Everything that speaks WeChat: typed protocol values, message crypto (WXBizMsgCrypt), push
//! events, the HTTP client, the component token manager, the platform store, the official
//! accounts a platform serves (`tenants`: the registry; `authorizer`: keeping it in step with
//! WeChat's pushes and authorizer list), and the website apps' QR login (`website`).
//!
//! This module knows nothing about serving HTTP, sessions or the crate's configuration file; each
//! part takes its own settings struct.

pub mod authorizer;
pub mod client;
pub mod crypto;
pub mod error;
pub mod events;
pub mod oauth;
pub mod persist;
#[cfg(feature = "redis")]
pub mod redis;
pub mod tenants;
pub mod token;
pub mod website;

use crate::ids::AppId;
pub use crate::ids::{OpenId, Scope, UnionId};
use crate::{plain_type, secret_type};

plain_type!(
    /// Appid of our third-party platform (`component_appid`), `wx` + 16 hex characters.
    ComponentAppId
);
plain_type!(
    /// Appid of the official account that authorized our platform (`appid` in OAuth calls).
    AuthorizerAppId
);

secret_type!(
    /// The single-use OAuth `code` WeChat sends to the callback.
    AuthorizationCode
);
secret_type!(
    /// The OAuth `state` parameter: random, single use, bound to the browser.
    OAuthState
);
secret_type!(
    /// The `AuthorizationCode` of an `authorized` / `updateauthorized` push (授权码): single
    /// use, traded for the account's permission sets with `api_query_auth`.
    AuthorizerCode
);
secret_type!(
    /// The `PreAuthCode` of an authorization push (预授权码).
    PreAuthCode
);
secret_type!(
    /// The `component_verify_ticket` WeChat pushes every ten minutes.
    VerifyTicket
);
secret_type!(
    /// The platform's `component_access_token`.
    ComponentAccessToken
);
secret_type!(
    /// A user's web OAuth `access_token`.
    UserAccessToken
);
secret_type!(
    /// A user's web OAuth `refresh_token` (30 days).
    UserRefreshToken
);
secret_type!(
    /// A secret used to talk to WeChat: the component appsecret or the official account's secret.
    AppSecret
);

impl From<AuthorizerAppId> for AppId {
    fn from(appid: AuthorizerAppId) -> Self {
        AppId::new(appid.0)
    }
}

impl From<&AuthorizerAppId> for AppId {
    fn from(appid: &AuthorizerAppId) -> Self {
        AppId::new(appid.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let value = "s3cr3t-value-0123456789";
        let shown = [
            format!("{:?}", AuthorizationCode::new(value)),
            format!("{:?}", OAuthState::new(value)),
            format!("{:?}", VerifyTicket::new(value)),
            format!("{:?}", ComponentAccessToken::new(value)),
            format!("{:?}", UserAccessToken::new(value)),
            format!("{:?}", UserRefreshToken::new(value)),
            format!("{:?}", AppSecret::new(value)),
            format!("{:?}", AuthorizerCode::new(value)),
            format!("{:?}", PreAuthCode::new(value)),
        ];
        for s in shown {
            assert!(!s.contains(value), "{s}");
            assert!(s.ends_with("([redacted])"), "{s}");
        }
    }

    #[test]
    fn plain_ids_display_their_value() {
        assert_eq!(OpenId::new("o9AgO5").to_string(), "o9AgO5");
        assert_eq!(Scope::UserInfo.as_str(), "snsapi_userinfo");
    }
}
