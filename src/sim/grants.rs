//! The simulated authorization-management APIs (docs/wechat-protocol.md §7):
//! `api_query_auth`, `api_get_authorizer_info` and `api_get_authorizer_list`.
//!
//! Each is `POST` with a JSON body and `?component_access_token=` in the query, and answers
//! like WeChat: HTTP 200 JSON, errors as `errcode`. Every reply that carries a grant also
//! carries made-up authorizer tokens (as WeChat's do), so that a client can be checked to drop
//! them. Permission sets are the account's current ones ([`SimAuthorizer`](super::SimAuthorizer)
//! and the admin changes).

use std::time::Instant;

use http::Method;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::{
    api::{JSON, check_component_token, error, json_post, ok, param},
    http::{params, random_token},
    state::{AccountState, Endpoint, Inner, State},
};

/// Largest page of `api_get_authorizer_list`.
const MAX_COUNT: u64 = 500;

/// `POST /cgi-bin/component/api_query_auth`, `…/api_get_authorizer_info`,
/// `…/api_get_authorizer_list`.
pub(crate) async fn handle(
    inner: &Inner,
    endpoint: Endpoint,
    method: &Method,
    query: &str,
    body: Incoming,
) -> super::http::Resp {
    let request = match json_post(inner, endpoint, method, body).await {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let p = params(query);
    let mut state = inner.state();
    if let Err(code) = check_component_token(&state, param(&p, "component_access_token")) {
        return error(code, JSON);
    }
    let component = request
        .get("component_appid")
        .and_then(Value::as_str)
        .unwrap_or("");
    if component.is_empty() {
        return error(41002, JSON);
    }
    if component != inner.config.component_appid.as_str() {
        return error(61011, JSON);
    }
    let reply = match endpoint {
        Endpoint::QueryAuth => query_auth(&mut state, &request),
        Endpoint::AuthorizerInfo => authorizer_info(&state, &request),
        _ => authorizer_list(&state, &request),
    };
    drop(state);
    match reply {
        Ok(value) => ok(&value, JSON),
        Err(code) => error(code, JSON),
    }
}

/// `func_info` as WeChat writes it.
fn func_info(func_ids: &[u32]) -> Value {
    Value::Array(
        func_ids
            .iter()
            .map(|id| json!({ "funcscope_category": { "id": id } }))
            .collect(),
    )
}

/// The account of `appid` if it has authorized the platform, else 61003.
fn authorized<'a>(state: &'a State, appid: &str) -> Result<&'a AccountState, i64> {
    state
        .accounts
        .get(appid)
        .filter(|a| a.authorized)
        .ok_or(61003)
}

fn query_auth(state: &mut State, request: &Map<String, Value>) -> Result<Value, i64> {
    let code = request
        .get("authorization_code")
        .and_then(Value::as_str)
        .unwrap_or("");
    if code.is_empty() {
        return Err(41008);
    }
    let entry = state.auth_codes.get_mut(code).ok_or(61009)?;
    if entry.used {
        return Err(61009);
    }
    if Instant::now() >= entry.expires_at {
        return Err(61010);
    }
    entry.used = true;
    let appid = entry.appid.clone();
    let account = authorized(state, &appid)?;
    Ok(json!({
        "authorization_info": {
            "authorizer_appid": appid,
            "authorizer_access_token": random_token(64),
            "expires_in": 7200,
            "authorizer_refresh_token": format!("refreshtoken@@@{}", random_token(32)),
            "func_info": func_info(&account.func_ids),
        }
    }))
}

fn authorizer_info(state: &State, request: &Map<String, Value>) -> Result<Value, i64> {
    let appid = request
        .get("authorizer_appid")
        .and_then(Value::as_str)
        .unwrap_or("");
    if appid.is_empty() {
        return Err(41002);
    }
    let account = authorized(state, appid)?;
    Ok(json!({
        "authorizer_info": {
            "nick_name": account.nick_name,
            "head_img": "",
            "service_type_info": { "id": account.service_type },
            "verify_type_info": { "id": account.verify_type },
            "user_name": format!("gh_{}", &appid.get(2..14).unwrap_or(appid)),
            "principal_name": "模拟主体 / Sim principal",
            "alias": "",
            "business_info": { "open_store": 0, "open_scan": 0, "open_pay": 0, "open_card": 0, "open_shake": 0 },
            "qrcode_url": "",
            "account_status": 1,
        },
        "authorization_info": {
            "authorizer_appid": appid,
            "authorizer_refresh_token": format!("refreshtoken@@@{}", random_token(32)),
            "func_info": func_info(&account.func_ids),
        }
    }))
}

fn authorizer_list(state: &State, request: &Map<String, Value>) -> Result<Value, i64> {
    let number = |name: &str| request.get(name).and_then(Value::as_u64);
    let (Some(offset), Some(count)) = (number("offset"), number("count")) else {
        return Err(40097);
    };
    if count == 0 || count > MAX_COUNT {
        return Err(40097);
    }
    let mut listed: Vec<(&String, &AccountState)> = state
        .accounts
        .iter()
        .filter(|(_, a)| a.authorized)
        .collect();
    listed.sort_by_key(|(appid, a)| (a.seq, *appid));
    let page: Vec<Value> = listed
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .map(|(appid, a)| {
            json!({
                "authorizer_appid": appid,
                "refresh_token": format!("refreshtoken@@@{}", random_token(16)),
                "auth_time": a.auth_time,
            })
        })
        .collect();
    Ok(json!({ "total_count": listed.len(), "list": page }))
}
