//! Fault toggles over HTTP, for scripts that drive a running simulator from outside the process
//! (`bench/soak.sh`): the same controls tests get from [`SimWeChat`](super::SimWeChat)'s methods.
//!
//! | request | effect |
//! |---|---|
//! | `POST /_sim/admin/fault?endpoint=E&failure=F[&times=N]` | the next `N` calls of `E` fail with `F` (default: until cleared) |
//! | `POST /_sim/admin/clear` | drops every injected failure that is still pending |
//! | `POST /_sim/admin/invalidate_token` | the current component access token answers 40001 from now on |
//! | `GET /_sim/admin/calls` | per-endpoint call counters and tokens issued, as JSON; also the current ticket and component token and the user tokens issued (the simulator's fake credentials, for leak tests) |
//! | `POST /_sim/admin/authorize?appid=A[&func=1,2,4]` | account `A` authorizes the platform (default: every usual permission set) and an `authorized` push goes to the events URL |
//! | `POST /_sim/admin/update?appid=A&func=1,2` | account `A` changes its permission sets; `updateauthorized` push |
//! | `POST /_sim/admin/revoke?appid=A` | account `A` revokes the platform; `unauthorized` push |
//! | `POST /_sim/admin/events_url?url=U` | where authorization pushes go from now on |
//!
//! `E` is one of `authorize`, `component_token`, `component_code_exchange`,
//! `component_refresh`, `oa_code_exchange`, `oa_refresh`, `userinfo`, `query_auth`,
//! `authorizer_info`, `authorizer_list`, or `api` (every JSON endpoint the proxy calls). `F` is `hang`, `http500`, `not_json`, `system_busy` or an errcode
//! (`40001`, `45009`…).
//!
//! Like everything in the simulator these are reachable on loopback only; a change is answered
//! `200 ok`, a malformed request `400` with the reason, a GET on a POST path `405`; an account
//! change whose push cannot be delivered `502` (the change itself is made).

use http::{Method, StatusCode};
use serde_json::json;

use super::SimError;
use super::http::{Resp, respond};
use super::pusher;
use super::state::{DEFAULT_FUNC_IDS, Endpoint, Failure, Inner, SimAuthorizer};
use crate::wechat::{AuthorizerAppId, events::AuthorizationChange};

/// Prefix of the admin paths.
pub(crate) const PREFIX: &str = "/_sim/admin/";

const PLAIN: &str = "text/plain; charset=utf-8";

/// Every endpoint, with the name the admin API uses for it.
const ENDPOINTS: [(&str, Endpoint); 10] = [
    ("authorize", Endpoint::Authorize),
    ("component_token", Endpoint::ComponentToken),
    ("component_code_exchange", Endpoint::ComponentCodeExchange),
    ("component_refresh", Endpoint::ComponentRefresh),
    ("oa_code_exchange", Endpoint::OaCodeExchange),
    ("oa_refresh", Endpoint::OaRefresh),
    ("userinfo", Endpoint::UserInfo),
    ("query_auth", Endpoint::QueryAuth),
    ("authorizer_info", Endpoint::AuthorizerInfo),
    ("authorizer_list", Endpoint::AuthorizerList),
];

/// The JSON endpoints the proxy calls (everything but the browser's authorize page).
const API_ENDPOINTS: [Endpoint; 9] = [
    Endpoint::ComponentToken,
    Endpoint::ComponentCodeExchange,
    Endpoint::ComponentRefresh,
    Endpoint::OaCodeExchange,
    Endpoint::OaRefresh,
    Endpoint::UserInfo,
    Endpoint::QueryAuth,
    Endpoint::AuthorizerInfo,
    Endpoint::AuthorizerList,
];

/// The account-change actions and the push each sends.
const ACCOUNT_ACTIONS: [(&str, AuthorizationChange); 3] = [
    ("authorize", AuthorizationChange::Authorized),
    ("update", AuthorizationChange::Updated),
    ("revoke", AuthorizationChange::Revoked),
];

/// Applies an account change, then pushes it to the events URL.
///
/// - `Authorized`: the account (created if unknown) authorizes with `func_ids` (default
///   [`DEFAULT_FUNC_IDS`]) and becomes the newest entry of the authorizer list;
/// - `Updated`: a known, authorized account grants `func_ids` instead;
/// - `Revoked`: a known account is no longer authorized.
pub(crate) async fn change_account(
    inner: &Inner,
    change: AuthorizationChange,
    appid: &AuthorizerAppId,
    func_ids: Option<&[u32]>,
) -> Result<(), SimError> {
    let events_url = {
        let mut state = inner.state();
        match change {
            AuthorizationChange::Authorized => {
                let mut account = SimAuthorizer::new(appid.clone(), "模拟公众号 / Sim account");
                if let Some(existing) = state.accounts.get(appid.as_str()) {
                    account.nick_name.clone_from(&existing.nick_name);
                    account.service_type = existing.service_type;
                    account.verify_type = existing.verify_type;
                }
                account.func_ids = func_ids.unwrap_or(&DEFAULT_FUNC_IDS).to_vec();
                state.put_account(&account);
            }
            AuthorizationChange::Updated | AuthorizationChange::Revoked => {
                let account = state
                    .accounts
                    .get_mut(appid.as_str())
                    .filter(|a| a.authorized)
                    .ok_or_else(|| SimError::UnknownAccount(appid.to_string()))?;
                if change == AuthorizationChange::Revoked {
                    account.authorized = false;
                } else if let Some(func_ids) = func_ids {
                    account.func_ids = func_ids.to_vec();
                }
            }
        }
        state.events_url.clone()
    };
    let events_url = events_url.ok_or(SimError::NoEventsUrl)?;
    pusher::push_authorization(inner, &events_url, change, appid).await
}

/// Answers one request under [`PREFIX`].
pub(crate) async fn handle(inner: &Inner, method: &Method, path: &str, query: &str) -> Resp {
    let action = path.strip_prefix(PREFIX).unwrap_or_default();
    if let Some((_, change)) = ACCOUNT_ACTIONS.iter().find(|(name, _)| *name == action) {
        if method != Method::POST {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                PLAIN,
                "simulated WeChat admin: wrong method",
            );
        }
        return account_action(inner, *change, query).await;
    }
    if action == "events_url" {
        return set_events_url(inner, method, query);
    }
    match (action, method) {
        ("calls", &Method::GET) => calls(inner),
        ("fault" | "clear" | "invalidate_token", &Method::POST) => {
            let result = match action {
                "fault" => inject(inner, query),
                "clear" => {
                    inner.state().failures.clear();
                    Ok(())
                }
                _ => {
                    inner.state().component_token = None;
                    Ok(())
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(action, query, "sim admin: fault toggle");
                    respond(StatusCode::OK, PLAIN, "ok\n")
                }
                Err(reason) => respond(StatusCode::BAD_REQUEST, PLAIN, format!("{reason}\n")),
            }
        }
        ("calls" | "fault" | "clear" | "invalidate_token", _) => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "simulated WeChat admin: wrong method",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            PLAIN,
            "simulated WeChat admin: no such toggle",
        ),
    }
}

/// `authorize|update|revoke?appid=A[&func=1,2,4]`.
async fn account_action(inner: &Inner, change: AuthorizationChange, query: &str) -> Resp {
    let params = super::http::params(query);
    let appid = params.get("appid").map(String::as_str).unwrap_or_default();
    if appid.is_empty() {
        return respond(StatusCode::BAD_REQUEST, PLAIN, "appid is missing\n");
    }
    let funcs = match params.get("func") {
        None => None,
        Some(list) => {
            let parsed: Result<Vec<u32>, _> = list
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::parse)
                .collect();
            match parsed {
                Ok(ids) => Some(ids),
                Err(_) => return respond(StatusCode::BAD_REQUEST, PLAIN, "bad func list\n"),
            }
        }
    };
    let appid = AuthorizerAppId::new(appid);
    match change_account(inner, change, &appid, funcs.as_deref()).await {
        Ok(()) => {
            tracing::info!(%appid, info_type = change.info_type(), "sim admin: account change pushed");
            respond(StatusCode::OK, PLAIN, "ok\n")
        }
        Err(e @ SimError::UnknownAccount(_)) => {
            respond(StatusCode::BAD_REQUEST, PLAIN, format!("{e}\n"))
        }
        Err(e) => respond(StatusCode::BAD_GATEWAY, PLAIN, format!("{e}\n")),
    }
}

/// `events_url?url=U`.
fn set_events_url(inner: &Inner, method: &Method, query: &str) -> Resp {
    if method != Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "simulated WeChat admin: wrong method",
        );
    }
    let params = super::http::params(query);
    match params.get("url").map(|u| url::Url::parse(u)) {
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => {
            inner.state().events_url = Some(url);
            respond(StatusCode::OK, PLAIN, "ok\n")
        }
        _ => respond(
            StatusCode::BAD_REQUEST,
            PLAIN,
            "url must be an http(s) URL\n",
        ),
    }
}

/// `fault?endpoint=E&failure=F[&times=N]`.
fn inject(inner: &Inner, query: &str) -> Result<(), String> {
    let params = super::http::params(query);
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let endpoints: Vec<Endpoint> = match param("endpoint") {
        "api" => API_ENDPOINTS.to_vec(),
        name => vec![
            ENDPOINTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, e)| *e)
                .ok_or_else(|| format!("unknown endpoint {name:?}"))?,
        ],
    };
    let failure = match param("failure") {
        "hang" => Failure::Hang,
        "http500" => Failure::Http500,
        "not_json" => Failure::NotJson,
        "system_busy" => Failure::SystemBusy,
        code => Failure::ErrCode(
            code.parse()
                .map_err(|_| format!("unknown failure {code:?}"))?,
        ),
    };
    let times = match param("times") {
        "" => u32::MAX,
        n => n.parse().map_err(|_| format!("bad times {n:?}"))?,
    };
    let mut state = inner.state();
    for endpoint in endpoints {
        if times > 0 {
            state
                .failures
                .entry(endpoint)
                .or_default()
                .push_back((failure, times));
        }
    }
    Ok(())
}

/// `calls`: `{"calls": {"component_token": 3, …}, "issued_component_tokens": 2, "ticket": …,
/// "component_access_token": …, "user_access_tokens": […], "refresh_tokens": […]}`.
fn calls(inner: &Inner) -> Resp {
    let state = inner.state();
    let calls: serde_json::Map<String, serde_json::Value> = ENDPOINTS
        .iter()
        .map(|(name, e)| {
            let n = state.calls.get(e).copied().unwrap_or(0);
            ((*name).to_owned(), json!(n))
        })
        .collect();
    let body = json!({
        "calls": calls,
        "issued_component_tokens": state.issued_component_tokens,
        // The simulator's own (fake) credentials, for tests that check they leak nowhere.
        "ticket": state.tickets.last().map(|(ticket, _)| ticket.expose_secret()),
        "component_access_token": state.component_token.as_ref().map(|t| t.value.as_str()),
        "user_access_tokens": state.user_tokens.keys().collect::<Vec<_>>(),
        "refresh_tokens": state.refresh_tokens.keys().collect::<Vec<_>>(),
    });
    respond(StatusCode::OK, "application/json", body.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::{SimConfig, SimWeChat};
    use super::*;

    async fn sim() -> (SimWeChat, reqwest::Client) {
        let sim = SimWeChat::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        (sim, reqwest::Client::new())
    }

    async fn post(client: &reqwest::Client, sim: &SimWeChat, path: &str) -> (u16, String) {
        let r = client
            .post(sim.base_url().join(path).unwrap())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn userinfo_status(client: &reqwest::Client, sim: &SimWeChat) -> u16 {
        let url = sim
            .base_url()
            .join("/sns/userinfo?access_token=x&openid=y")
            .unwrap();
        client.get(url).send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn faults_are_injected_counted_and_cleared_over_http() {
        let (sim, client) = sim().await;
        let (status, _) = post(
            &client,
            &sim,
            "/_sim/admin/fault?endpoint=userinfo&failure=http500&times=1",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(userinfo_status(&client, &sim).await, 500);
        assert_eq!(userinfo_status(&client, &sim).await, 200, "one time only");

        // Until cleared, on every API endpoint at once.
        assert_eq!(
            post(
                &client,
                &sim,
                "/_sim/admin/fault?endpoint=api&failure=http500"
            )
            .await
            .0,
            200
        );
        for _ in 0..3 {
            assert_eq!(userinfo_status(&client, &sim).await, 500);
        }
        assert_eq!(post(&client, &sim, "/_sim/admin/clear").await.0, 200);
        assert_eq!(userinfo_status(&client, &sim).await, 200);

        let calls = json(client.get(sim.base_url().join("/_sim/admin/calls").unwrap())).await;
        assert_eq!(calls["calls"]["userinfo"], 6);
        assert_eq!(sim.calls(Endpoint::UserInfo), 6);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn token_invalidation_and_malformed_toggles() {
        let (sim, client) = sim().await;
        let config = SimConfig::default();
        let token_url = sim
            .base_url()
            .join("/cgi-bin/component/api_component_token");
        let token = json(client.post(token_url.unwrap()).json(&json!({
            "component_appid": config.component_appid.as_str(),
            "component_appsecret": config.component_secret.expose_secret(),
            "component_verify_ticket": sim.current_ticket().expose_secret(),
        })))
        .await;
        let token = token["component_access_token"].as_str().unwrap().to_owned();
        let exchange = || async {
            let mut url = sim
                .base_url()
                .join("/sns/oauth2/component/access_token")
                .unwrap();
            url.query_pairs_mut()
                .append_pair("appid", config.authorizer_appid.as_str())
                .append_pair("code", "unknown")
                .append_pair("grant_type", "authorization_code")
                .append_pair("component_appid", config.component_appid.as_str())
                .append_pair("component_access_token", &token);
            json(client.get(url)).await["errcode"].as_i64().unwrap_or(0)
        };
        assert_ne!(exchange().await, 40001, "the token is valid at first");
        assert_eq!(
            post(&client, &sim, "/_sim/admin/invalidate_token").await.0,
            200
        );
        assert_eq!(exchange().await, 40001);
        for bad in [
            "/_sim/admin/fault?endpoint=nope&failure=hang",
            "/_sim/admin/fault?endpoint=userinfo&failure=nope",
            "/_sim/admin/fault?endpoint=userinfo&failure=hang&times=x",
        ] {
            let (status, body) = post(&client, &sim, bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        assert_eq!(post(&client, &sim, "/_sim/admin/other").await.0, 404);
        let get = client
            .get(sim.base_url().join("/_sim/admin/clear").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 405);
        sim.shutdown().await;
    }
}
