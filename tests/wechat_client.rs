//! The WeChat HTTP client and `WeChatOAuth` in official-account mode against the simulated
//! WeChat over real loopback sockets: exchanges, refreshes, userinfo, the platform's
//! authorization-management calls, error mapping, timeouts.
#![cfg(feature = "sim")]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{bounded, start_sim};

use std::{collections::HashMap, sync::Arc, time::Duration};

use wechat_oauth_proxy::{
    sim::{AuthMode, Endpoint, Failure, SimUser, SimWeChat},
    wechat::{
        AppSecret, AuthorizationCode, ComponentAccessToken, OAuthState, OpenId, Scope,
        UserAccessToken,
        client::{ClientSettings, UserToken, WeChatClient},
        error::{ErrorClass, WeChatError},
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::MemoryPlatformStore,
        token::TokenSettings,
    },
};

fn client_settings(sim: &SimWeChat) -> ClientSettings {
    ClientSettings {
        api_base: sim.base_url(),
        open_base: sim.base_url(),
        request_timeout: Duration::from_secs(5),
        ..ClientSettings::default()
    }
}

fn client(sim: &SimWeChat) -> WeChatClient {
    WeChatClient::new(client_settings(sim)).unwrap()
}

/// A `WeChatOAuth` in `mode` against the sim, over an empty memory store.
fn oauth_in(sim: &SimWeChat, mode: OAuthMode) -> WeChatOAuth {
    WeChatOAuth::new(
        WeChatSettings {
            mode,
            client: client_settings(sim),
            token: TokenSettings::default(),
        },
        Arc::new(MemoryPlatformStore::new()),
    )
    .unwrap()
}

fn oa_oauth(sim: &SimWeChat) -> WeChatOAuth {
    let c = sim.config();
    oauth_in(
        sim,
        OAuthMode::OfficialAccount {
            appid: c.authorizer_appid.clone(),
            secret: c.official_account_secret.clone(),
        },
    )
}

/// Opens authorize `url` without following redirects: the sim must redirect (302); the query
/// of its `Location`.
async fn authorize_redirect(url: &str) -> HashMap<String, String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(support::WECHAT_UA)
        .build()
        .unwrap();
    let response = bounded(http.get(url).send()).await.unwrap();
    assert_eq!(response.status().as_u16(), 302, "{url}");
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    location.query_pairs().into_owned().collect()
}

fn user(sim: &SimWeChat, i: usize) -> SimUser {
    sim.config().users[i].clone()
}

/// A component token straight from the sim (no manager).
async fn component_token(sim: &SimWeChat) -> ComponentAccessToken {
    let c = sim.config();
    let (token, lifetime) = bounded(client(sim).component_token(
        &c.component_appid,
        &c.component_secret,
        &sim.current_ticket(),
    ))
    .await
    .unwrap();
    assert_eq!(lifetime, Duration::from_secs(7200));
    token
}

async fn oa_exchange(sim: &SimWeChat, code: &AuthorizationCode) -> Result<UserToken, WeChatError> {
    let c = sim.config();
    bounded(client(sim).oa_code_exchange(&c.authorizer_appid, &c.official_account_secret, code))
        .await
}

#[tokio::test]
async fn official_account_login_exchange_and_userinfo() {
    let sim = start_sim().await;
    let oauth = oa_oauth(&sim);
    assert!(oauth.component_appid().is_none());
    assert!(bounded(oauth.readiness()).await.ready);

    for i in 0..3 {
        let u = user(&sim, i);
        let code = sim.issue_code(u.clone(), Scope::UserInfo, AuthMode::OfficialAccount);
        let token = bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code))
            .await
            .unwrap();
        assert_eq!(token.openid.as_str(), u.openid);
        assert_eq!(
            token.unionid.as_ref().map(|x| x.as_str().to_owned()),
            u.unionid
        );
        assert!(token.has_scope(Scope::UserInfo));
        assert!(!token.is_snapshot_user);
        assert!(token.refresh_token.is_some());
        assert!(token.expires_in > 0);

        let info = bounded(oauth.user_info(&token)).await.unwrap();
        assert_eq!(info.openid, token.openid);
        assert_eq!(info.nickname, u.nickname, "CJK and emoji nicknames survive");
        assert_eq!(info.headimgurl, u.headimgurl);
        assert_eq!(info.unionid.map(|x| x.as_str().to_owned()), u.unionid);
    }
    assert_eq!(sim.calls(Endpoint::OaCodeExchange), 3);
    assert_eq!(sim.calls(Endpoint::ComponentToken), 0);
}

#[tokio::test]
async fn official_account_authorize_url_is_accepted_by_the_sim() {
    let sim = start_sim().await;
    let oauth = oa_oauth(&sim);
    let callback = "http://127.0.0.1:8080/_wxauth/callback?next=%2Fa";
    let url = oauth
        .authorize_url(
            oauth.default_appid().unwrap(),
            callback,
            Scope::UserInfo,
            &OAuthState::new("abc123"),
        )
        .unwrap();
    let pairs = authorize_redirect(&url).await;
    assert_eq!(pairs["state"], "abc123");
    assert_eq!(pairs["next"], "/a");
    // The code from the redirect works.
    let code = AuthorizationCode::new(pairs["code"].clone());
    let token = bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code))
        .await
        .unwrap();
    assert_eq!(token.openid.as_str(), user(&sim, 0).openid);
}

#[tokio::test]
async fn component_exchange_refresh_and_userinfo() {
    let sim = start_sim().await;
    let c = sim.config().clone();
    let wx = client(&sim);
    let component = component_token(&sim).await;
    let u = user(&sim, 1);
    let code = sim.issue_code(u.clone(), Scope::UserInfo, AuthMode::Component);
    let token = bounded(wx.component_code_exchange(
        &c.authorizer_appid,
        &code,
        &c.component_appid,
        &component,
    ))
    .await
    .unwrap();
    assert_eq!(token.openid.as_str(), u.openid);

    let refreshed = bounded(wx.component_refresh(
        &c.authorizer_appid,
        token.refresh_token.as_ref().unwrap(),
        &c.component_appid,
        &component,
    ))
    .await
    .unwrap();
    assert_eq!(refreshed.openid, token.openid);

    let info = bounded(wx.user_info(&refreshed.access_token, &refreshed.openid))
        .await
        .unwrap();
    assert_eq!(info.nickname, u.nickname);

    // A used code is refused: the user must authorize again.
    let e = bounded(wx.component_code_exchange(
        &c.authorizer_appid,
        &code,
        &c.component_appid,
        &component,
    ))
    .await
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Reauthorize, "{e:?}");
}

#[tokio::test]
async fn official_account_refresh() {
    let sim = start_sim().await;
    let c = sim.config().clone();
    let code = sim.issue_code(user(&sim, 0), Scope::UserInfo, AuthMode::OfficialAccount);
    let token = oa_exchange(&sim, &code).await.unwrap();
    let wx = client(&sim);
    let refreshed =
        bounded(wx.oa_refresh(&c.authorizer_appid, token.refresh_token.as_ref().unwrap()))
            .await
            .unwrap();
    assert_eq!(refreshed.openid, token.openid);
    let e = bounded(wx.oa_refresh(
        &c.authorizer_appid,
        &wechat_oauth_proxy::wechat::UserRefreshToken::new("not-a-refresh-token"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(40030));
    assert_eq!(e.class(), ErrorClass::Reauthorize);
}

#[tokio::test]
async fn wrong_codes_and_secrets_map_to_their_classes() {
    let sim = start_sim().await;
    let c = sim.config().clone();
    let e = oa_exchange(&sim, &AuthorizationCode::new("no-such-code"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(40029));
    assert_eq!(e.class(), ErrorClass::Reauthorize);

    let code = sim.issue_code(user(&sim, 0), Scope::UserInfo, AuthMode::OfficialAccount);
    let e = bounded(client(&sim).oa_code_exchange(
        &c.authorizer_appid,
        &AppSecret::new("wrong-secret"),
        &code,
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(40125));
    assert_eq!(e.class(), ErrorClass::Configuration);
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("wrong-secret"), "{shown}");

    let e = bounded(client(&sim).component_token(
        &c.component_appid,
        &c.component_secret,
        &wechat_oauth_proxy::wechat::VerifyTicket::new("ticket@@@unknown"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Ticket, "{e:?}");
}

#[tokio::test]
async fn snapshot_and_base_scope_users_get_48001_on_userinfo() {
    let sim = start_sim().await;
    let oauth = oa_oauth(&sim);

    let code = sim.issue_code(
        SimUser::snapshot_user(),
        Scope::UserInfo,
        AuthMode::OfficialAccount,
    );
    let token = bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code))
        .await
        .unwrap();
    assert!(token.is_snapshot_user);
    let e = bounded(oauth.user_info(&token)).await.unwrap_err();
    assert_eq!(e.code(), Some(48001));
    assert_eq!(e.class(), ErrorClass::Reauthorize);

    let code = sim.issue_code(user(&sim, 0), Scope::Base, AuthMode::OfficialAccount);
    let token = bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code))
        .await
        .unwrap();
    assert!(token.has_scope(Scope::Base));
    assert!(!token.has_scope(Scope::UserInfo));
    let e = bounded(oauth.user_info(&token)).await.unwrap_err();
    assert_eq!(e.code(), Some(48001));
}

/// Injects `failure` once on `sns/userinfo` and returns the error of one call.
async fn userinfo_error(sim: &SimWeChat, wx: &WeChatClient, failure: Failure) -> WeChatError {
    let code = sim.issue_code(user(sim, 0), Scope::UserInfo, AuthMode::OfficialAccount);
    let token = oa_exchange(sim, &code).await.unwrap();
    sim.inject(Endpoint::UserInfo, failure, 1);
    bounded(wx.user_info(&token.access_token, &token.openid))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn each_injected_failure_maps_to_its_typed_error_and_class() {
    let sim = start_sim().await;
    let wx = client(&sim);

    let e = userinfo_error(&sim, &wx, Failure::SystemBusy).await;
    assert!(matches!(e, WeChatError::Api { code: -1, .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    let e = userinfo_error(&sim, &wx, Failure::Http500).await;
    assert!(matches!(e, WeChatError::BadReply { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    let e = userinfo_error(&sim, &wx, Failure::NotJson).await;
    assert!(matches!(e, WeChatError::BadReply { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    for (code, class) in [
        (40014, ErrorClass::RefreshToken),
        (42001, ErrorClass::RefreshToken),
        (48001, ErrorClass::Reauthorize),
        (45011, ErrorClass::Retry),
        (45009, ErrorClass::Quota),
        (61004, ErrorClass::Configuration),
    ] {
        let e = userinfo_error(&sim, &wx, Failure::ErrCode(code)).await;
        match &e {
            WeChatError::Api {
                code: got,
                endpoint,
                errmsg,
            } => {
                assert_eq!(*got, code);
                assert_eq!(*endpoint, "sns/userinfo");
                assert!(!errmsg.contains("requestIP"), "{errmsg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.class(), class, "errcode {code}");
    }

    // After the injections the endpoint works again.
    let code = sim.issue_code(user(&sim, 2), Scope::UserInfo, AuthMode::OfficialAccount);
    let token = oa_exchange(&sim, &code).await.unwrap();
    bounded(wx.user_info(&token.access_token, &token.openid))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hanging_wechat_ends_in_a_timeout_error() {
    let sim = start_sim().await;
    let wx = WeChatClient::new(ClientSettings {
        request_timeout: Duration::from_millis(300),
        ..client_settings(&sim)
    })
    .unwrap();
    let e = userinfo_error(&sim, &wx, Failure::Hang).await;
    assert!(
        matches!(
            e,
            WeChatError::Timeout {
                endpoint: "sns/userinfo"
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Retry);

    sim.inject(Endpoint::OaCodeExchange, Failure::Hang, 1);
    let code = sim.issue_code(user(&sim, 0), Scope::UserInfo, AuthMode::OfficialAccount);
    let c = sim.config();
    let e = bounded(wx.oa_code_exchange(&c.authorizer_appid, &c.official_account_secret, &code))
        .await
        .unwrap_err();
    assert!(matches!(e, WeChatError::Timeout { .. }), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(c.official_account_secret.expose_secret()),
        "{shown}"
    );
}

#[tokio::test]
async fn transport_errors_carry_no_token_or_url() {
    let sim = start_sim().await;
    let wx = client(&sim);
    sim.shutdown().await;
    let secret = "user-access-token-that-must-not-leak";
    let e = bounded(wx.user_info(&UserAccessToken::new(secret), &OpenId::new("o1")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WeChatError::Transport { .. } | WeChatError::Timeout { .. }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Retry);
    let shown = format!("{e} | {e:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(!shown.contains("access_token="), "{shown}");
    assert!(!shown.contains("sns/userinfo?"), "{shown}");
}

#[tokio::test]
async fn component_authorize_url_is_accepted_by_the_sim() {
    let sim = start_sim().await;
    let c = sim.config().clone();
    let oauth = oauth_in(&sim, c.component_mode());
    let url = oauth
        .authorize_url(
            &c.authorizer_appid,
            "http://localhost:9000/_wxauth/callback",
            Scope::Base,
            &OAuthState::new("Zz09"),
        )
        .unwrap();
    let pairs = authorize_redirect(&url).await;
    assert_eq!(pairs["state"], "Zz09");
    assert_eq!(pairs["appid"], c.authorizer_appid.as_str());
    assert!(pairs.contains_key("code"));
    assert_eq!(sim.calls(Endpoint::Authorize), 1);
}

/// `api_get_authorizer_list`, `api_get_authorizer_info` and `api_query_auth` through the
/// client: typed replies without authorizer tokens, WeChat errcodes as `Api` errors, garbled
/// replies and timeouts as clean retryable errors.
#[tokio::test]
async fn authorization_management_calls_are_typed_and_fail_cleanly() {
    use wechat_oauth_proxy::{
        sim::{SimAuthorizer, SimConfig},
        wechat::{AuthorizerAppId, AuthorizerCode},
    };
    let other = AuthorizerAppId::new("wxd000000000000001");
    let sim = bounded(SimWeChat::start(
        SimConfig::with_authorizers(vec![
            SimAuthorizer::new(other.clone(), "店").with_funcs(&[1, 4]),
        ]),
        ([127, 0, 0, 1], 0).into(),
    ))
    .await
    .unwrap();
    let c = sim.config().clone();
    let wx = WeChatClient::new(ClientSettings {
        request_timeout: Duration::from_millis(500),
        ..client_settings(&sim)
    })
    .unwrap();
    let (token, _) = bounded(wx.component_token(
        &c.component_appid,
        &c.component_secret,
        &sim.current_ticket(),
    ))
    .await
    .unwrap();

    let page = bounded(wx.authorizer_list(&c.component_appid, &token, 0, 10_000))
        .await
        .unwrap();
    assert_eq!(page.total_count, 2);
    let listed: Vec<_> = page.entries.iter().map(|e| e.appid.clone()).collect();
    assert_eq!(listed, vec![c.authorizer_appid.clone(), other.clone()]);
    assert!(page.entries.iter().all(|e| e.auth_time.is_some()));
    let rest = bounded(wx.authorizer_list(&c.component_appid, &token, 1, 1))
        .await
        .unwrap();
    assert_eq!(rest.entries.len(), 1);

    let details = bounded(wx.authorizer_info(&c.component_appid, &token, &other))
        .await
        .unwrap();
    assert_eq!(details.authorization.func_ids, vec![1, 4]);
    assert_eq!(details.nick_name.as_deref(), Some("店"));
    assert_eq!(
        (details.service_type, details.verify_type),
        (Some(2), Some(0))
    );
    assert_eq!(details.account_status, Some(1));
    assert!(!format!("{details:?}").contains("refreshtoken@@@"));

    let unknown = AuthorizerAppId::new("wxd0000000000000ff");
    let e = bounded(wx.authorizer_info(&c.component_appid, &token, &unknown))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(61003), "{e:?}");
    let e = bounded(wx.query_auth(
        &c.component_appid,
        &token,
        &AuthorizerCode::new("queryauthcode@@@nope"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(61009), "{e:?}");
    let e = bounded(wx.authorizer_list(
        &c.component_appid,
        &ComponentAccessToken::new("stale"),
        0,
        500,
    ))
    .await
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::RefreshToken, "{e:?}");

    for (failure, endpoint) in [
        (Failure::NotJson, Endpoint::AuthorizerInfo),
        (Failure::Http500, Endpoint::AuthorizerList),
        (Failure::Hang, Endpoint::QueryAuth),
    ] {
        sim.inject(endpoint, failure, 1);
        let e = match endpoint {
            Endpoint::AuthorizerInfo => {
                bounded(wx.authorizer_info(&c.component_appid, &token, &other))
                    .await
                    .map(|_| ())
            }
            Endpoint::AuthorizerList => {
                bounded(wx.authorizer_list(&c.component_appid, &token, 0, 1))
                    .await
                    .map(|_| ())
            }
            _ => bounded(wx.query_auth(
                &c.component_appid,
                &token,
                &AuthorizerCode::new("queryauthcode@@@x"),
            ))
            .await
            .map(|_| ()),
        }
        .unwrap_err();
        assert!(
            matches!(
                e,
                WeChatError::BadReply { .. } | WeChatError::Timeout { .. }
            ),
            "{failure:?}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
        assert!(!format!("{e}").contains(token.expose_secret()));
    }
}
