//! Who the user is, as the inner service / upstream receives it.
//!
//! [`Identity`] is stored in the session, projected into the JWT and plain headers, and inserted
//! into the request extensions (`Extension<Identity>` in axum). This module also owns the list of
//! header names the proxy can set, which is stripped from every client request.

use serde::{Deserialize, Serialize};

/// The authenticated WeChat user, as known after `sns/userinfo` (or `snsapi_base`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Per-official-account user id (also the JWT `sub`).
    pub openid: String,
    /// Cross-application id; only when the account is bound to an Open Platform account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// Nickname as given by WeChat (UTF-8, may contain CJK and emoji); empty for `snsapi_base`.
    #[serde(default)]
    pub nickname: String,
    /// Avatar URL; may be empty and changes when the user changes the avatar.
    #[serde(default)]
    pub avatar: String,
    /// Appid of the official account the user authorized (authorizer appid).
    pub appid: String,
    /// Granted scope (`snsapi_userinfo` or `snsapi_base`).
    pub scope: String,
}
