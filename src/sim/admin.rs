//! Fault toggles over HTTP, for scripts that drive a running simulator from outside the process
//! (`bench/soak.sh`): the same controls tests get from [`SimWeChat`](super::SimWeChat)'s methods.
//!
//! | request | effect |
//! |---|---|
//! | `POST /_sim/admin/fault?endpoint=E&failure=F[&times=N]` | the next `N` calls of `E` fail with `F` (default: until cleared) |
//! | `POST /_sim/admin/clear` | drops every injected failure that is still pending |
//! | `POST /_sim/admin/invalidate_token` | the current component access token answers 40001 from now on |
//! | `GET /_sim/admin/calls` | per-endpoint call counters and tokens issued, as JSON |
//!
//! `E` is one of `authorize`, `component_token`, `component_code_exchange`,
//! `component_refresh`, `oa_code_exchange`, `oa_refresh`, `userinfo`, or `api` (every JSON
//! endpoint the proxy calls). `F` is `hang`, `http500`, `not_json`, `system_busy` or an errcode
//! (`40001`, `45009`…).
//!
//! Like everything in the simulator these are reachable on loopback only; a change is answered
//! `200 ok`, a malformed request `400` with the reason, a GET on a POST path `405`.

use http::{Method, StatusCode};
use serde_json::json;

use super::http::{Resp, respond};
use super::state::{Endpoint, Failure, Inner};

/// Prefix of the admin paths.
pub(crate) const PREFIX: &str = "/_sim/admin/";

const PLAIN: &str = "text/plain; charset=utf-8";

/// Every endpoint, with the name the admin API uses for it.
const ENDPOINTS: [(&str, Endpoint); 7] = [
    ("authorize", Endpoint::Authorize),
    ("component_token", Endpoint::ComponentToken),
    ("component_code_exchange", Endpoint::ComponentCodeExchange),
    ("component_refresh", Endpoint::ComponentRefresh),
    ("oa_code_exchange", Endpoint::OaCodeExchange),
    ("oa_refresh", Endpoint::OaRefresh),
    ("userinfo", Endpoint::UserInfo),
];

/// The JSON endpoints the proxy calls (everything but the browser's authorize page).
const API_ENDPOINTS: [Endpoint; 6] = [
    Endpoint::ComponentToken,
    Endpoint::ComponentCodeExchange,
    Endpoint::ComponentRefresh,
    Endpoint::OaCodeExchange,
    Endpoint::OaRefresh,
    Endpoint::UserInfo,
];

/// Answers one request under [`PREFIX`].
pub(crate) fn handle(inner: &Inner, method: &Method, path: &str, query: &str) -> Resp {
    let action = path.strip_prefix(PREFIX).unwrap_or_default();
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

/// `calls`: `{"calls": {"component_token": 3, …}, "issued_component_tokens": 2}`.
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
