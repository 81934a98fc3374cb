//! The simulated `api.weixin.qq.com` JSON endpoints: component token, code exchange, refresh
//! and user info (docs/wechat-protocol.md §5, §9, §10, §11.1, §12).
//!
//! Every error is HTTP 200 with `{"errcode":N,"errmsg":"… rid: …"}`, like WeChat. The
//! official-account endpoints (`sns/oauth2/access_token`, `sns/oauth2/refresh_token`) answer with
//! `Content-Type: text/plain`, as WeChat has been seen to do, so clients must parse JSON
//! regardless of the content type.

use std::{collections::HashMap, time::Instant};

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{
    http::{Resp, params, random_hex, random_token, read_body, respond},
    state::{
        AuthMode, ComponentTokenEntry, Endpoint, Failure, HANG, Inner, REFRESH_LIFETIME,
        RefreshEntry, SimUser, State, TICKET_LIFETIME, UserTokenEntry,
    },
};
use crate::{
    secret::constant_time_eq,
    wechat::{AppSecret, Scope, website::SCOPE_LOGIN},
};

/// Largest accepted JSON body for `api_component_token` (the real one is ~200 bytes).
const MAX_JSON_BODY: usize = 64 * 1024;

/// The content type of the component endpoints' replies.
pub(crate) const JSON: &str = "application/json; encoding=utf-8";
const PLAIN: &str = "text/plain";

/// The content type an endpoint answers with.
fn content_type(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Component => JSON,
        AuthMode::OfficialAccount | AuthMode::Website => PLAIN,
    }
}

/// The mode of a request to the direct (non-component) endpoints, which official accounts and
/// website apps share: [`AuthMode::Website`] when `appid` is one of the website apps.
fn direct_mode(inner: &Inner, p: &HashMap<String, String>) -> AuthMode {
    if inner.website_app(param(p, "appid")).is_some() {
        AuthMode::Website
    } else {
        AuthMode::OfficialAccount
    }
}

/// The usual English `errmsg` of an errcode (the part before ` rid:`).
pub(crate) fn errmsg(code: i64) -> &'static str {
    match code {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40029 => "invalid code",
        40030 => "invalid refresh_token",
        40125 => "invalid appsecret",
        40163 => "code been used",
        41001 => "access_token missing",
        41002 => "appid missing",
        41003 => "refresh_token missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        41009 => "missing openid",
        42001 => "access_token expired",
        42002 => "refresh_token expired",
        42003 => "code expired",
        43002 => "require POST method",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit",
        47001 => "data format error",
        48001 => "api unauthorized",
        61003 => "component is not authorized by this account",
        61004 => "access clientip is not registered",
        61005 => "component ticket is expired",
        61006 => "component ticket is invalid",
        61011 => "invalid component",
        61009 => "code is invalid",
        61010 => "code is expired",
        40097 => "invalid args",
        _ => "simulated error",
    }
}

/// A WeChat-style error reply: HTTP 200, errcode and an errmsg with a fresh `rid`.
pub(crate) fn error(code: i64, content_type: &'static str) -> Resp {
    let message = if code == -1 {
        // WeChat's busy reply carries no rid.
        errmsg(code).to_owned()
    } else {
        format!(
            "{} rid: {}-{}-{}",
            errmsg(code),
            random_hex(8),
            random_hex(8),
            random_hex(8)
        )
    };
    ok(&json!({ "errcode": code, "errmsg": message }), content_type)
}

/// A successful JSON reply.
pub(crate) fn ok(value: &Value, content_type: &'static str) -> Resp {
    respond(StatusCode::OK, content_type, value.to_string())
}

/// The reply for an injected failure on a JSON endpoint.
pub(crate) async fn failure(failure: Failure, content_type: &'static str) -> Resp {
    match failure {
        Failure::Hang => {
            tokio::time::sleep(HANG).await;
            error(-1, content_type)
        }
        Failure::Http500 => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "Internal Server Error",
        ),
        Failure::NotJson => respond(StatusCode::OK, "text/html", "<html>busy</html>"),
        Failure::SystemBusy => error(-1, content_type),
        Failure::ErrCode(code) => error(code, content_type),
    }
}

/// A query parameter, `""` when absent.
pub(crate) fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params.get(name).map(String::as_str).unwrap_or("")
}

/// Checks a `component_access_token` against the one valid token.
pub(crate) fn check_component_token(state: &State, token: &str) -> Result<(), i64> {
    if token.is_empty() {
        return Err(41001);
    }
    match &state.component_token {
        Some(current) if constant_time_eq(current.value.as_bytes(), token.as_bytes()) => {
            if Instant::now() >= current.expires_at {
                Err(42001)
            } else {
                Ok(())
            }
        }
        _ => Err(40001),
    }
}

/// The start of every `POST` JSON endpoint: counts the call, answers an injected failure,
/// requires `POST` (43002) and a JSON object body (47001). `Err` is the reply to send.
pub(crate) async fn json_post(
    inner: &Inner,
    endpoint: Endpoint,
    method: &Method,
    body: Incoming,
) -> Result<serde_json::Map<String, Value>, Resp> {
    let injected = inner.state().begin_call(endpoint);
    if let Some(f) = injected {
        return Err(failure(f, JSON).await);
    }
    if method != Method::POST {
        return Err(error(43002, JSON));
    }
    let Some(body) = read_body(body, MAX_JSON_BODY).await else {
        return Err(error(47001, JSON));
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(request)) => Ok(request),
        _ => Err(error(47001, JSON)),
    }
}

/// `POST /cgi-bin/component/api_component_token`.
pub(crate) async fn component_token(inner: &Inner, method: &Method, body: Incoming) -> Resp {
    let request = match json_post(inner, Endpoint::ComponentToken, method, body).await {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let field = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("");
    let (appid, secret, ticket) = (
        field("component_appid"),
        field("component_appsecret"),
        field("component_verify_ticket"),
    );
    let config = &inner.config;
    if appid.is_empty() {
        return error(41002, JSON);
    }
    if appid != config.component_appid.as_str() {
        return error(61011, JSON);
    }
    if secret.is_empty() {
        return error(41004, JSON);
    }
    if AppSecret::new(secret) != config.component_secret {
        return error(40125, JSON);
    }
    let mut state = inner.state();
    let now = Instant::now();
    let found = state
        .tickets
        .iter()
        .find(|(known, _)| {
            !ticket.is_empty()
                && constant_time_eq(known.expose_secret().as_bytes(), ticket.as_bytes())
        })
        .map(|(_, issued)| *issued);
    match found {
        None => return error(61006, JSON),
        Some(issued) if now.saturating_duration_since(issued) >= TICKET_LIFETIME => {
            return error(61005, JSON);
        }
        Some(_) => {}
    }
    let ttl = state.token_ttl;
    let value = random_token(96);
    // A new token invalidates the previous one (docs/wechat-protocol.md §5.2).
    state.component_token = Some(ComponentTokenEntry {
        value: value.clone(),
        expires_at: now + ttl,
    });
    state.issued_component_tokens += 1;
    drop(state);
    ok(
        &json!({ "component_access_token": value, "expires_in": ttl.as_secs() }),
        JSON,
    )
}

/// The token reply shared by the code exchange and the refresh.
fn token_reply(
    access_token: &str,
    expires_in: u64,
    refresh_token: &str,
    user: &SimUser,
    (mode, scope): (AuthMode, Scope),
) -> Value {
    let mut reply = json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "refresh_token": refresh_token,
        "openid": user.openid,
        "scope": if mode == AuthMode::Website { SCOPE_LOGIN } else { scope.as_str() },
    });
    if let Some(unionid) = &user.unionid {
        // Only with snsapi_userinfo (docs/wechat-protocol.md §9.1, §11.1); a website login
        // (snsapi_login) includes the profile.
        if scope == Scope::UserInfo {
            reply["unionid"] = json!(unionid);
        }
    }
    if user.snapshot {
        reply["is_snapshotuser"] = json!(1);
    }
    reply
}

/// Checks the credentials common to the code exchange and the refresh: the component's appid
/// and token in component mode, the official account's secret in direct mode.
fn check_client(
    inner: &Inner,
    state: &State,
    mode: AuthMode,
    p: &HashMap<String, String>,
) -> Result<(), i64> {
    let config = &inner.config;
    let appid = param(p, "appid");
    match mode {
        AuthMode::Component => {
            if param(p, "component_appid") != config.component_appid.as_str() {
                return Err(61011);
            }
            check_component_token(state, param(p, "component_access_token"))?;
            if !state.is_authorized(appid) {
                return Err(61003);
            }
        }
        AuthMode::OfficialAccount => {
            if appid != config.authorizer_appid.as_str() {
                return Err(40013);
            }
        }
        AuthMode::Website => {
            if inner.website_app(appid).is_none() {
                return Err(40013);
            }
        }
    }
    Ok(())
}

/// `GET /sns/oauth2/component/access_token` and `GET /sns/oauth2/access_token`.
pub(crate) async fn code_exchange(inner: &Inner, mode: AuthMode, query: &str) -> Resp {
    let p = params(query);
    let mode = match mode {
        AuthMode::Component => AuthMode::Component,
        _ => direct_mode(inner, &p),
    };
    let endpoint = match mode {
        AuthMode::Component => Endpoint::ComponentCodeExchange,
        AuthMode::OfficialAccount => Endpoint::OaCodeExchange,
        AuthMode::Website => Endpoint::WebsiteCodeExchange,
    };
    let ct = content_type(mode);
    let injected = inner.state().begin_call(endpoint);
    if let Some(f) = injected {
        return failure(f, ct).await;
    }
    match exchange(inner, mode, &p) {
        Ok(reply) => ok(&reply, ct),
        Err(code) => error(code, ct),
    }
}

fn exchange(inner: &Inner, mode: AuthMode, p: &HashMap<String, String>) -> Result<Value, i64> {
    let config = &inner.config;
    let appid = param(p, "appid");
    if appid.is_empty() {
        return Err(41002);
    }
    if param(p, "grant_type") != "authorization_code" {
        return Err(40002);
    }
    if mode != AuthMode::Component {
        let secret = param(p, "secret");
        if secret.is_empty() {
            return Err(41004);
        }
        let expected = match inner.website_app(appid) {
            Some(app) => Some(&app.secret),
            None => (appid == config.authorizer_appid.as_str())
                .then_some(&config.official_account_secret),
        };
        if expected.is_some_and(|expected| AppSecret::new(secret) != *expected) {
            return Err(40125);
        }
    }
    let mut state = inner.state();
    check_client(inner, &state, mode, p)?;
    let code = param(p, "code");
    if code.is_empty() {
        return Err(41008);
    }
    let now = Instant::now();
    let entry = match state.codes.get_mut(code) {
        Some(entry) if entry.mode == mode && entry.appid == appid => entry,
        _ => return Err(40029),
    };
    if entry.used {
        return Err(40163);
    }
    if now >= entry.expires_at {
        return Err(42003);
    }
    entry.used = true;
    let (user, scope) = (entry.user.clone(), entry.scope);
    let access_token = random_token(96);
    let refresh_token = random_token(96);
    let ttl = config.user_token_ttl;
    state.user_tokens.insert(
        access_token.clone(),
        UserTokenEntry {
            user: user.clone(),
            scope,
            expires_at: now + ttl,
        },
    );
    state.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshEntry {
            mode,
            appid: appid.to_owned(),
            user: user.clone(),
            scope,
            access_token: access_token.clone(),
            expires_at: now + REFRESH_LIFETIME,
        },
    );
    state.prune();
    Ok(token_reply(
        &access_token,
        ttl.as_secs(),
        &refresh_token,
        &user,
        (mode, scope),
    ))
}

/// `GET /sns/oauth2/component/refresh_token` and `GET /sns/oauth2/refresh_token`.
pub(crate) async fn refresh(inner: &Inner, mode: AuthMode, query: &str) -> Resp {
    let p = params(query);
    let mode = match mode {
        AuthMode::Component => AuthMode::Component,
        _ => direct_mode(inner, &p),
    };
    let endpoint = match mode {
        AuthMode::Component => Endpoint::ComponentRefresh,
        AuthMode::OfficialAccount => Endpoint::OaRefresh,
        AuthMode::Website => Endpoint::WebsiteRefresh,
    };
    let ct = content_type(mode);
    let injected = inner.state().begin_call(endpoint);
    if let Some(f) = injected {
        return failure(f, ct).await;
    }
    match do_refresh(inner, mode, &p) {
        Ok(reply) => ok(&reply, ct),
        Err(code) => error(code, ct),
    }
}

fn do_refresh(inner: &Inner, mode: AuthMode, p: &HashMap<String, String>) -> Result<Value, i64> {
    let appid = param(p, "appid");
    if appid.is_empty() {
        return Err(41002);
    }
    if param(p, "grant_type") != "refresh_token" {
        return Err(40002);
    }
    let mut state = inner.state();
    check_client(inner, &state, mode, p)?;
    let refresh_token = param(p, "refresh_token");
    if refresh_token.is_empty() {
        return Err(41003);
    }
    let now = Instant::now();
    let entry = match state.refresh_tokens.get(refresh_token) {
        Some(entry) if entry.mode == mode && entry.appid == appid => entry.clone(),
        _ => return Err(40030),
    };
    if now >= entry.expires_at {
        return Err(42002);
    }
    let ttl = inner.config.user_token_ttl;
    // A still valid access token gets its lifetime extended; an expired one is replaced
    // (docs/wechat-protocol.md §9.2).
    let access_token = match state.user_tokens.get_mut(&entry.access_token) {
        Some(token) if now < token.expires_at => {
            token.expires_at = now + ttl;
            entry.access_token.clone()
        }
        _ => {
            let fresh = random_token(96);
            state.user_tokens.remove(&entry.access_token);
            state.user_tokens.insert(
                fresh.clone(),
                UserTokenEntry {
                    user: entry.user.clone(),
                    scope: entry.scope,
                    expires_at: now + ttl,
                },
            );
            if let Some(stored) = state.refresh_tokens.get_mut(refresh_token) {
                stored.access_token = fresh.clone();
            }
            fresh
        }
    };
    Ok(token_reply(
        &access_token,
        ttl.as_secs(),
        refresh_token,
        &entry.user,
        (mode, entry.scope),
    ))
}

/// `GET /sns/userinfo`.
pub(crate) async fn userinfo(inner: &Inner, query: &str) -> Resp {
    let injected = inner.state().begin_call(Endpoint::UserInfo);
    if let Some(f) = injected {
        return failure(f, JSON).await;
    }
    let p = params(query);
    let token = param(&p, "access_token");
    if token.is_empty() {
        return error(41001, JSON);
    }
    let entry = inner.state().user_tokens.get(token).cloned();
    let Some(entry) = entry else {
        return error(40014, JSON);
    };
    if Instant::now() >= entry.expires_at {
        return error(42001, JSON);
    }
    let openid = param(&p, "openid");
    if openid.is_empty() {
        return error(41009, JSON);
    }
    if openid != entry.user.openid {
        return error(40003, JSON);
    }
    if entry.scope != Scope::UserInfo || entry.user.snapshot {
        return error(48001, JSON);
    }
    let user = &entry.user;
    let mut reply = json!({
        "openid": user.openid,
        "nickname": user.nickname,
        "sex": 0,
        "province": "",
        "city": "",
        "country": "",
        "headimgurl": user.headimgurl,
        "privilege": [],
    });
    if let Some(unionid) = &user.unionid {
        reply["unionid"] = json!(unionid);
    }
    ok(&reply, JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_a_changing_rid() {
        let a = error(40029, JSON);
        let b = error(40029, JSON);
        let body = |r: &Resp| format!("{:?}", r.body());
        assert_ne!(body(&a), body(&b));
        assert_eq!(a.status(), StatusCode::OK);
    }

    #[test]
    fn first_parameter_wins() {
        let p = params("a=1&a=2&b=%E5%BC%A0");
        assert_eq!(param(&p, "a"), "1");
        assert_eq!(param(&p, "b"), "张");
        assert_eq!(param(&p, "missing"), "");
    }
}
