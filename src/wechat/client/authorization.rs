//! The platform's authorization-management calls (docs/wechat-protocol.md §7): what an official
//! account granted the platform (`api_query_auth`, `api_get_authorizer_info`) and which accounts
//! authorized it (`api_get_authorizer_list`). All three are `POST` with a JSON body and the
//! `component_access_token` in the query.
//!
//! The replies also carry the account's `authorizer_access_token` / `authorizer_refresh_token`.
//! Web OAuth does not need them, so the reply types here do not even have fields for them:
//! they are never held in memory, logged or stored.

use serde::{Deserialize, Serialize};

use super::{WeChatClient, bad_reply, endpoint, flex};
use crate::wechat::{
    AuthorizerAppId, AuthorizerCode, ComponentAccessToken, ComponentAppId, error::WeChatError,
};

/// Largest `count` `api_get_authorizer_list` accepts per page.
pub const MAX_LIST_COUNT: u32 = 500;

/// What an account granted the platform (`authorization_info`), without its tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The official account.
    pub authorizer_appid: AuthorizerAppId,
    /// The permission set ids (`func_info[].funcscope_category.id`), in WeChat's order.
    pub func_ids: Vec<u32>,
}

/// `api_get_authorizer_info`: the grant and the account's public details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizerDetails {
    /// What the account granted the platform.
    pub authorization: Authorization,
    /// The account's name.
    pub nick_name: Option<String>,
    /// `service_type_info.id` (0 subscription, 1 upgraded old subscription, 2 service account).
    pub service_type: Option<i64>,
    /// `verify_type_info.id` (-1 unverified, 0 WeChat-verified, …).
    pub verify_type: Option<i64>,
    /// `account_status` (1 normal, 14 cancelled, 16 banned, 18 warned, 19 frozen).
    pub account_status: Option<i64>,
}

/// One page of `api_get_authorizer_list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizerListPage {
    /// How many accounts authorized the platform in all (every page says the same).
    pub total_count: u64,
    /// The accounts on this page.
    pub entries: Vec<ListedAuthorizer>,
}

/// One entry of the authorizer list (its `refresh_token` is dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedAuthorizer {
    /// The official account.
    pub appid: AuthorizerAppId,
    /// When it authorized the platform (Unix seconds), when WeChat says.
    pub auth_time: Option<i64>,
}

/// `authorization_info` as WeChat sends it; the token fields are deliberately absent.
#[derive(Deserialize)]
struct RawAuthorization {
    authorizer_appid: String,
    func_info: Vec<RawFunc>,
}

/// `{"funcscope_category": {"id": 4}, …}`; other members (`confirm_info` …) are ignored.
#[derive(Deserialize)]
struct RawFunc {
    #[serde(default)]
    funcscope_category: Option<RawId>,
}

/// `{"id": N}` (number or numeric string).
#[derive(Deserialize)]
struct RawId {
    #[serde(default, deserialize_with = "flex::opt_i64")]
    id: Option<i64>,
}

impl RawAuthorization {
    fn into_authorization(self, ep: &'static str) -> Result<Authorization, WeChatError> {
        if self.authorizer_appid.is_empty() {
            return Err(bad_reply(ep, "empty authorizer_appid"));
        }
        let func_ids = self
            .func_info
            .into_iter()
            .filter_map(|f| f.funcscope_category?.id)
            .filter_map(|id| u32::try_from(id).ok())
            .collect();
        Ok(Authorization {
            authorizer_appid: AuthorizerAppId::new(self.authorizer_appid),
            func_ids,
        })
    }
}

impl WeChatClient {
    /// Trades the `AuthorizationCode` of an `authorized` / `updateauthorized` push for the
    /// account's grant (`POST cgi-bin/component/api_query_auth`, §7 step 4). The code is
    /// single use: a lost reply cannot be replayed, ask
    /// [`authorizer_info`](Self::authorizer_info) instead.
    ///
    /// # Errors
    /// Any [`WeChatError`]; `40001`/`42001` (stale component token), `61009`/`61010` (code
    /// invalid or expired); a reply without `authorization_info` is [`WeChatError::BadReply`].
    pub async fn query_auth(
        &self,
        component_appid: &ComponentAppId,
        token: &ComponentAccessToken,
        code: &AuthorizerCode,
    ) -> Result<Authorization, WeChatError> {
        #[derive(Serialize)]
        struct Body<'a> {
            component_appid: &'a str,
            authorization_code: &'a str,
        }
        #[derive(Deserialize)]
        struct Reply {
            authorization_info: RawAuthorization,
        }
        let ep = endpoint::QUERY_AUTH;
        let body = Body {
            component_appid: component_appid.as_str(),
            authorization_code: code.expose_secret(),
        };
        let reply: Reply = self.post_component(ep, token, &body).await?;
        reply.authorization_info.into_authorization(ep)
    }

    /// The account's grant and details (`POST cgi-bin/component/api_get_authorizer_info`, §7
    /// step 6).
    ///
    /// # Errors
    /// Any [`WeChatError`]; `61003` means the account has not authorized the platform (any
    /// more).
    pub async fn authorizer_info(
        &self,
        component_appid: &ComponentAppId,
        token: &ComponentAccessToken,
        appid: &AuthorizerAppId,
    ) -> Result<AuthorizerDetails, WeChatError> {
        #[derive(Serialize)]
        struct Body<'a> {
            component_appid: &'a str,
            authorizer_appid: &'a str,
        }
        #[derive(Deserialize)]
        struct Reply {
            authorizer_info: RawInfo,
            authorization_info: RawAuthorization,
        }
        #[derive(Deserialize)]
        struct RawInfo {
            #[serde(default, deserialize_with = "flex::opt_string")]
            nick_name: Option<String>,
            #[serde(default)]
            service_type_info: Option<RawId>,
            #[serde(default)]
            verify_type_info: Option<RawId>,
            #[serde(default, deserialize_with = "flex::opt_i64")]
            account_status: Option<i64>,
        }
        let ep = endpoint::AUTHORIZER_INFO;
        let body = Body {
            component_appid: component_appid.as_str(),
            authorizer_appid: appid.as_str(),
        };
        let reply: Reply = self.post_component(ep, token, &body).await?;
        let authorization = reply.authorization_info.into_authorization(ep)?;
        if &authorization.authorizer_appid != appid {
            return Err(bad_reply(ep, "authorization_info names another account"));
        }
        let info = reply.authorizer_info;
        Ok(AuthorizerDetails {
            authorization,
            nick_name: info.nick_name,
            service_type: info.service_type_info.and_then(|t| t.id),
            verify_type: info.verify_type_info.and_then(|t| t.id),
            account_status: info.account_status,
        })
    }

    /// One page of the accounts that authorized the platform
    /// (`POST cgi-bin/component/api_get_authorizer_list`): `count` is clamped to
    /// 1..=[`MAX_LIST_COUNT`].
    ///
    /// # Errors
    /// Any [`WeChatError`]; a reply without `total_count` or `list` is
    /// [`WeChatError::BadReply`].
    pub async fn authorizer_list(
        &self,
        component_appid: &ComponentAppId,
        token: &ComponentAccessToken,
        offset: u64,
        count: u32,
    ) -> Result<AuthorizerListPage, WeChatError> {
        #[derive(Serialize)]
        struct Body<'a> {
            component_appid: &'a str,
            offset: u64,
            count: u32,
        }
        #[derive(Deserialize)]
        struct Reply {
            #[serde(deserialize_with = "flex::u64")]
            total_count: u64,
            list: Vec<RawListed>,
        }
        #[derive(Deserialize)]
        struct RawListed {
            authorizer_appid: String,
            #[serde(default, deserialize_with = "flex::opt_i64")]
            auth_time: Option<i64>,
        }
        let ep = endpoint::AUTHORIZER_LIST;
        let body = Body {
            component_appid: component_appid.as_str(),
            offset,
            count: count.clamp(1, MAX_LIST_COUNT),
        };
        let reply: Reply = self.post_component(ep, token, &body).await?;
        let entries = reply
            .list
            .into_iter()
            .map(|e| {
                if e.authorizer_appid.is_empty() {
                    Err(bad_reply(ep, "empty authorizer_appid in the list"))
                } else {
                    Ok(ListedAuthorizer {
                        appid: AuthorizerAppId::new(e.authorizer_appid),
                        auth_time: e.auth_time,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(AuthorizerListPage {
            total_count: reply.total_count,
            entries,
        })
    }

    /// `POST <ep>?component_access_token=…` with a JSON body.
    async fn post_component<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        ep: &'static str,
        token: &ComponentAccessToken,
        body: &B,
    ) -> Result<T, WeChatError> {
        let url = self.api_url(ep, &[("component_access_token", token.expose_secret())])?;
        self.call(ep, self.http.post(url).json(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::client::parse_reply;

    #[derive(Deserialize)]
    struct QueryReply {
        authorization_info: RawAuthorization,
    }

    #[test]
    fn func_info_becomes_ids_and_tokens_are_not_kept() {
        let body = br#"{"authorization_info":{"authorizer_appid":"wxf8b4f85f3a794e77",
            "authorizer_access_token":"SECRET-ACCESS","expires_in":7200,
            "authorizer_refresh_token":"SECRET-REFRESH",
            "func_info":[{"funcscope_category":{"id":1}},{"funcscope_category":{"id":"4"}},
                         {"funcscope_category":{"id":15},"confirm_info":{"need_confirm":0}},
                         {"other":true},{"funcscope_category":{"id":-3}}]}}"#;
        let reply: QueryReply = parse_reply("ep", body).unwrap();
        let auth = reply.authorization_info.into_authorization("ep").unwrap();
        assert_eq!(auth.authorizer_appid.as_str(), "wxf8b4f85f3a794e77");
        assert_eq!(auth.func_ids, vec![1, 4, 15]);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn garbled_authorization_replies_are_bad_reply() {
        for body in [
            &br#"{"authorization_info":{"authorizer_appid":"wx1"}}"#[..],
            br#"{"authorization_info":{"func_info":[]}}"#,
            br#"{"authorization_info":"nope"}"#,
            br#"{}"#,
            b"<html>",
        ] {
            let e = parse_reply::<QueryReply>("ep", body).err();
            assert!(
                matches!(e, Some(WeChatError::BadReply { .. })),
                "{}: {e:?}",
                String::from_utf8_lossy(body)
            );
        }
        let empty: QueryReply = parse_reply(
            "ep",
            br#"{"authorization_info":{"authorizer_appid":"","func_info":[]}}"#,
        )
        .unwrap();
        assert!(matches!(
            empty.authorization_info.into_authorization("ep"),
            Err(WeChatError::BadReply { .. })
        ));
    }
}
