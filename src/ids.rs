//! The identity values that cross module lines: [`OpenId`], [`UnionId`], [`AppId`] and
//! [`Scope`].
//!
//! A base module: it imports nothing from the crate but the [`plain_type!`](crate::plain_type)
//! macro, so `identity`, `session`, `jwt` and `wechat` may all use it while session and jwt
//! still know nothing about WeChat. `wechat` re-exports [`OpenId`], [`UnionId`] and [`Scope`] as
//! its own protocol values and converts its `AuthorizerAppId` into [`AppId`].
//!
//! Every id is `#[serde(transparent)]` and [`Scope`] serializes as its wire value, so a stored
//! session and the JWT claims are byte for byte what the bare strings produced. These are not
//! secrets (no redaction), but the openid and unionid are personal data: log a fingerprint or
//! nothing, never the value.

use crate::plain_type;

plain_type!(
    /// A user's id under one official account (the JWT `sub`).
    OpenId
);
plain_type!(
    /// A user's id across all applications of one Open Platform account.
    UnionId
);
plain_type!(
    /// Appid of the official account the user authorized (the authorizer appid), as the identity
    /// carries it.
    AppId
);

/// The OAuth scope requested on the authorize page, and the one a login was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// Silent login: openid only.
    #[serde(rename = "snsapi_base")]
    Base,
    /// Consent page: nickname, avatar and unionid through `sns/userinfo`.
    #[serde(rename = "snsapi_userinfo")]
    UserInfo,
}

impl Scope {
    /// The wire value (`snsapi_base` / `snsapi_userinfo`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Base => "snsapi_base",
            Scope::UserInfo => "snsapi_userinfo",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Scope {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Scope {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_bare_strings_and_compare_with_str() {
        let openid = OpenId::from("o6_bmjrPTlm6");
        assert_eq!(serde_json::to_string(&openid).unwrap(), r#""o6_bmjrPTlm6""#);
        assert_eq!(openid, "o6_bmjrPTlm6");
        assert_eq!(openid.to_string(), "o6_bmjrPTlm6");
        let appid: AppId = serde_json::from_str(r#""wxa1b2c3d4e5f60708""#).unwrap();
        assert_eq!(appid, AppId::from("wxa1b2c3d4e5f60708".to_owned()));
    }

    #[test]
    fn scope_is_its_wire_value() {
        assert_eq!(
            serde_json::to_string(&Scope::UserInfo).unwrap(),
            r#""snsapi_userinfo""#
        );
        let base: Scope = serde_json::from_str(r#""snsapi_base""#).unwrap();
        assert_eq!(base, Scope::Base);
        assert_eq!(base, "snsapi_base");
        assert_eq!(Scope::UserInfo.to_string(), "snsapi_userinfo");
    }
}
