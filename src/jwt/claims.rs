//! The claims of the identity JWT: what an upstream reads.

use serde::{Deserialize, Serialize};

use crate::ids::{AppId, OpenId, Scope, UnionId};

/// The claims of the identity JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer ([`JwtSettings::issuer`](super::JwtSettings::issuer)).
    pub iss: String,
    /// Audience ([`JwtSettings::audience`](super::JwtSettings::audience)).
    pub aud: String,
    /// Subject: the openid.
    pub sub: OpenId,
    /// Issued at (unix seconds, back-dated).
    pub iat: u64,
    /// Not before (unix seconds, back-dated).
    pub nbf: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// The user's openid under the authorizing official account.
    pub openid: OpenId,
    /// The user's unionid; absent (not `null`) when WeChat gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<UnionId>,
    /// Nickname (UTF-8; CJK and emoji as is).
    pub nickname: String,
    /// Avatar URL (may be empty).
    pub avatar: String,
    /// Appid of the authorizing official account.
    pub appid: AppId,
    /// Granted scope.
    pub scope: Scope,
}
