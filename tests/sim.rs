//! The simulated WeChat and the demo upstream, driven over real loopback sockets.
#![cfg(feature = "sim")]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{STEP, bounded};

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;
use wechat_oauth_proxy::{
    sim::{
        AuthMode, Endpoint, Failure, PusherConfig, SimAuthorizer, SimConfig, SimError, SimUser,
        SimWeChat, upstream::DemoUpstream,
    },
    wechat::{
        AuthorizerAppId, Scope, VerifyTicket,
        crypto::MsgCrypt,
        events::{PushError, PushEvent, PushQuery, open_push},
    },
};

const CALLBACK: &str = "http://127.0.0.1:8080/_wxauth/callback";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(config: SimConfig) -> SimWeChat {
    bounded(SimWeChat::start(config, loopback()))
        .await
        .expect("sim starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(support::WECHAT_UA)
        .timeout(STEP)
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, url: Url) -> reqwest::Response {
    bounded(client.get(url).send()).await.expect("GET answered")
}

async fn text(response: reqwest::Response) -> String {
    bounded(response.text()).await.expect("body")
}

async fn json_of(response: reqwest::Response) -> Value {
    // Parse regardless of the content type, as real clients must.
    serde_json::from_str(&text(response).await).expect("JSON body")
}

/// `base/path?pairs` with the pairs in the given order.
fn url_with(sim: &SimWeChat, path: &str, pairs: &[(&str, &str)]) -> Url {
    let mut url = sim.base_url().join(path).expect("join");
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    url
}

fn component_authorize(sim: &SimWeChat, scope: &str, state: &str, redirect: &str) -> Url {
    let c = sim.config();
    url_with(
        sim,
        "connect/oauth2/authorize",
        &[
            ("appid", c.authorizer_appid.as_str()),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", scope),
            ("state", state),
            ("connect_redirect", "1"),
            ("component_appid", c.component_appid.as_str()),
        ],
    )
}

fn oa_authorize(sim: &SimWeChat, scope: &str, state: &str) -> Url {
    url_with(
        sim,
        "connect/oauth2/authorize",
        &[
            ("appid", sim.config().authorizer_appid.as_str()),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", scope),
            ("state", state),
        ],
    )
}

fn location(response: &reqwest::Response) -> Url {
    assert_eq!(response.status(), 302, "expected a redirect");
    let value = response
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ASCII location");
    Url::parse(value).expect("absolute location")
}

fn query_of(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Runs a non-interactive authorize and returns the code from the redirect.
async fn code_for(sim: &SimWeChat, client: &reqwest::Client, scope: &str) -> String {
    let response = get(client, component_authorize(sim, scope, "st", CALLBACK)).await;
    query_of(&location(&response))
        .remove("code")
        .expect("code in redirect")
}

async fn component_token(sim: &SimWeChat, client: &reqwest::Client) -> String {
    let reply = post_token(
        sim,
        client,
        json!({
            "component_appid": sim.config().component_appid.as_str(),
            "component_appsecret": sim.config().component_secret.expose_secret(),
            "component_verify_ticket": sim.current_ticket().expose_secret(),
        }),
    )
    .await;
    reply["component_access_token"]
        .as_str()
        .expect("token issued")
        .to_owned()
}

async fn post_token(sim: &SimWeChat, client: &reqwest::Client, body: Value) -> Value {
    post_api(sim, client, "api_component_token", None, body).await
}

/// `POST cgi-bin/component/<name>[?component_access_token=…]` with a JSON body.
async fn post_api(
    sim: &SimWeChat,
    client: &reqwest::Client,
    name: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let pairs: Vec<(&str, &str)> = token
        .map(|t| vec![("component_access_token", t)])
        .unwrap_or_default();
    let url = url_with(sim, &format!("cgi-bin/component/{name}"), &pairs);
    json_of(
        bounded(client.post(url).json(&body).send())
            .await
            .expect("POST"),
    )
    .await
}

async fn exchange(sim: &SimWeChat, client: &reqwest::Client, code: &str, token: &str) -> Value {
    let c = sim.config();
    let url = url_with(
        sim,
        "sns/oauth2/component/access_token",
        &[
            ("appid", c.authorizer_appid.as_str()),
            ("code", code),
            ("grant_type", "authorization_code"),
            ("component_appid", c.component_appid.as_str()),
            ("component_access_token", token),
        ],
    );
    json_of(get(client, url).await).await
}

async fn userinfo(sim: &SimWeChat, client: &reqwest::Client, token: &str, openid: &str) -> Value {
    let url = url_with(
        sim,
        "sns/userinfo",
        &[
            ("access_token", token),
            ("openid", openid),
            ("lang", "zh_CN"),
        ],
    );
    json_of(get(client, url).await).await
}

/// POSTs the simulator's admin action `_sim/admin/<action>?appid=<appid>`; the status.
async fn admin(
    sim: &SimWeChat,
    client: &reqwest::Client,
    action: &str,
    appid: &AuthorizerAppId,
) -> u16 {
    let url = url_with(
        sim,
        &format!("_sim/admin/{action}"),
        &[("appid", appid.as_str())],
    );
    let response = bounded(client.post(url).send()).await.unwrap();
    response.status().as_u16()
}

/// `sns/userinfo` with the access token and openid of code exchange `reply`.
async fn userinfo_of(sim: &SimWeChat, client: &reqwest::Client, reply: &Value) -> Value {
    let token = reply["access_token"].as_str().unwrap();
    userinfo(sim, client, token, reply["openid"].as_str().unwrap()).await
}

fn errcode(reply: &Value) -> i64 {
    reply["errcode"].as_i64().unwrap_or(0)
}

/// The component authorize query in WeChat's order, valid but for `changes`: `Some(value)`
/// replaces a parameter's value, `None` leaves the parameter out.
fn authorize_query<'a>(
    oa: &'a str,
    comp: &'a str,
    changes: &[(&str, Option<&'a str>)],
) -> Vec<(&'a str, &'a str)> {
    [
        ("appid", oa),
        ("redirect_uri", CALLBACK),
        ("response_type", "code"),
        ("scope", "snsapi_base"),
        ("state", "s"),
        ("component_appid", comp),
    ]
    .into_iter()
    .filter_map(
        |(name, value)| match changes.iter().find(|(n, _)| *n == name) {
            Some((_, change)) => change.map(|v| (name, v)),
            None => Some((name, value)),
        },
    )
    .collect()
}

#[tokio::test]
async fn authorize_errors_are_shown_on_the_page_with_their_code() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let c = sim.config().clone();
    let (oa, comp) = (c.authorizer_appid.as_str(), c.component_appid.as_str());
    let long_state = "s".repeat(129);
    let q = |changes: &[(&str, Option<&'static str>)]| authorize_query(oa, comp, changes);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("10012", q(&[("appid", None)])),
        ("10011", q(&[("redirect_uri", Some(""))])),
        ("10010", q(&[("scope", None)])),
        (
            "order",
            vec![
                ("redirect_uri", CALLBACK),
                ("appid", oa),
                ("response_type", "code"),
                ("scope", "snsapi_base"),
                ("state", "s"),
                ("component_appid", comp),
            ],
        ),
        (
            "order",
            vec![
                ("appid", oa),
                ("redirect_uri", CALLBACK),
                ("response_type", "code"),
                ("scope", "snsapi_base"),
                ("component_appid", comp),
                ("state", "s"),
            ],
        ),
        (
            "order",
            vec![
                ("appid", oa),
                ("appid", oa),
                ("redirect_uri", CALLBACK),
                ("response_type", "code"),
                ("scope", "snsapi_base"),
                ("state", "s"),
                ("component_appid", comp),
            ],
        ),
        ("response_type", q(&[("response_type", Some("token"))])),
        ("10016", authorize_query(oa, comp, &[("appid", Some(comp))])),
        (
            "10016",
            authorize_query(
                oa,
                comp,
                &[("appid", Some(comp)), ("component_appid", None)],
            ),
        ),
        ("10015", q(&[("appid", Some("wxffffffffffffffff"))])),
        (
            "10015",
            q(&[("component_appid", Some("wxeeeeeeeeeeeeeeee"))]),
        ),
        (
            "10003",
            q(&[("redirect_uri", Some("https://evil.example/cb"))]),
        ),
        ("10003", q(&[("redirect_uri", Some("/relative/cb"))])),
        ("10005", q(&[("scope", Some("snsapi_login"))])),
        ("10013", q(&[("state", None)])),
        (
            "state",
            authorize_query(oa, comp, &[("state", Some(&long_state))]),
        ),
        (
            "appid",
            q(&[
                ("appid", Some("wxffffffffffffffff")),
                ("component_appid", None),
            ]),
        ),
    ];
    for (expected, pairs) in cases {
        let response = get(&client, url_with(&sim, "connect/oauth2/authorize", &pairs)).await;
        assert_eq!(response.status(), 200, "{expected}");
        assert!(
            response.headers().get("location").is_none(),
            "{expected}: never redirected"
        );
        assert_eq!(
            response.headers()["x-sim-error"].to_str().unwrap(),
            expected,
            "{pairs:?}"
        );
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/html; charset=utf-8"
        );
        let body = text(response).await;
        assert!(body.contains(expected), "{expected}: {body}");
        assert!(body.contains("模拟微信"), "clearly labelled");
    }
    // Unknown extra parameters are ignored, the order of the known ones is what counts.
    let mut url = component_authorize(&sim, "snsapi_base", "s", CALLBACK);
    url.query_pairs_mut().append_pair("forcePopup", "true");
    assert_eq!(get(&client, url).await.status(), 302);
    assert_eq!(sim.calls(Endpoint::Authorize), 18);
}

#[tokio::test]
async fn non_interactive_authorize_redirects_with_code_state_and_appid() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let callback = "http://localhost:9000/_wxauth/callback?next=%2Fhome";
    let response = get(
        &client,
        component_authorize(&sim, "snsapi_userinfo", "abcXYZ123", callback),
    )
    .await;
    let to = location(&response);
    assert_eq!(to.host_str(), Some("localhost"));
    assert_eq!(to.port(), Some(9000));
    assert_eq!(to.path(), "/_wxauth/callback");
    let pairs: Vec<(String, String)> = to.query_pairs().into_owned().collect();
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["next", "code", "state", "appid"], "appended with &");
    assert_eq!(pairs[0].1, "/home");
    assert_eq!(pairs[2].1, "abcXYZ123");
    assert_eq!(pairs[3].1, sim.config().authorizer_appid.as_str());
    assert!(pairs[1].1.len() >= 16);

    // Two authorizations give two different codes.
    let again = location(
        &get(
            &client,
            component_authorize(&sim, "snsapi_userinfo", "abcXYZ123", callback),
        )
        .await,
    );
    assert_ne!(query_of(&again)["code"], pairs[1].1);

    // Official-account mode: no appid in the redirect.
    let oa = location(&get(&client, oa_authorize(&sim, "snsapi_base", "s1")).await);
    let q = query_of(&oa);
    assert!(q.contains_key("code"));
    assert_eq!(q["state"], "s1");
    assert!(!q.contains_key("appid"));
}

#[tokio::test]
async fn refusal_and_next_user_are_one_shot() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    sim.refuse_next();
    let refused = location(
        &get(
            &client,
            component_authorize(&sim, "snsapi_userinfo", "st1", CALLBACK),
        )
        .await,
    );
    assert_eq!(
        refused.query_pairs().into_owned().collect::<Vec<_>>(),
        vec![("state".to_owned(), "st1".to_owned())]
    );
    let token = component_token(&sim, &client).await;

    let alice = sim.config().users[1].clone();
    sim.set_next_user(alice.clone());
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    assert_eq!(
        exchange(&sim, &client, &code, &token).await["openid"],
        alice.openid.as_str()
    );
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    assert_eq!(
        exchange(&sim, &client, &code, &token).await["openid"],
        sim.config().users[0].openid.as_str(),
        "back to users[0]"
    );
}

/// The `href`s of the interactive page, HTML-unescaped.
fn links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .collect()
}

#[tokio::test]
async fn interactive_page_lists_users_and_its_links_redirect() {
    let sim = start(SimConfig {
        interactive: true,
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let response = get(
        &client,
        component_authorize(&sim, "snsapi_userinfo", "pick", CALLBACK),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let page = text(response).await;
    assert!(page.contains("Simulated WeChat — development only"));
    assert!(page.contains("模拟微信"));
    for user in &sim.config().users {
        assert!(page.contains(&user.nickname), "{}", user.nickname);
        assert!(page.contains(&user.openid));
    }
    assert!(page.contains("拒绝 / Refuse"));
    let links = links(&page);
    assert_eq!(links.len(), sim.config().users.len() + 1);

    let token = component_token(&sim, &client).await;
    let chosen = location(&get(&client, sim.base_url().join(&links[2]).unwrap()).await);
    let q = query_of(&chosen);
    assert_eq!(q["state"], "pick");
    assert_eq!(q["appid"], sim.config().authorizer_appid.as_str());
    let reply = exchange(&sim, &client, &q["code"], &token).await;
    assert_eq!(reply["openid"], sim.config().users[2].openid.as_str());
    assert_eq!(reply["scope"], "snsapi_userinfo");

    let refused =
        location(&get(&client, sim.base_url().join(links.last().unwrap()).unwrap()).await);
    assert_eq!(query_of(&refused).len(), 1);
    assert_eq!(query_of(&refused)["state"], "pick");

    // A forged or unknown request id is an error page, not a redirect.
    let forged = get(
        &client,
        url_with(
            &sim,
            "_sim/authorize/choose",
            &[("req", "nope"), ("user", "0")],
        ),
    )
    .await;
    assert_eq!(forged.status(), 200);
    assert_eq!(forged.headers()["x-sim-error"], "expired");
    let bad_user = links[0].replace("user=0", "user=99");
    let bad = get(&client, sim.base_url().join(&bad_user).unwrap()).await;
    assert_eq!(bad.headers()["x-sim-error"], "user");
}

#[tokio::test]
async fn component_token_checks_and_replaces_the_previous_token() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let c = sim.config().clone();
    let ticket = sim.current_ticket();
    assert!(ticket.expose_secret().starts_with("ticket@@@"));
    assert_eq!(ticket.expose_secret().len(), "ticket@@@".len() + 86);
    let body = |appid: &str, secret: &str, ticket: &str| json!({"component_appid": appid, "component_appsecret": secret, "component_verify_ticket": ticket});
    let (appid, secret, t) = (
        c.component_appid.as_str(),
        c.component_secret.expose_secret(),
        ticket.expose_secret(),
    );
    for (expected, request) in [
        (61011, body("wx9999999999999999", secret, t)),
        (41002, body("", secret, t)),
        (40125, body(appid, "wrong-secret", t)),
        (41004, body(appid, "", t)),
        (61006, body(appid, secret, "ticket@@@unknown")),
        (61006, body(appid, secret, "")),
    ] {
        let reply = post_token(&sim, &client, request).await;
        assert_eq!(errcode(&reply), expected, "{reply}");
        assert!(reply["errmsg"].as_str().unwrap().contains(" rid: "));
    }
    assert_eq!(sim.issued_component_tokens(), 0);

    let first = component_token(&sim, &client).await;
    let reply = post_token(&sim, &client, body(appid, secret, t)).await;
    assert_eq!(reply["expires_in"], 7200);
    let second = reply["component_access_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(sim.issued_component_tokens(), 2);

    // The first one is no longer valid; the second one is.
    let code = code_for(&sim, &client, "snsapi_base").await;
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, &first).await),
        40001
    );
    assert!(exchange(&sim, &client, &code, &second).await["access_token"].is_string());

    // A rotated ticket does not invalidate the old one.
    let new_ticket = sim.rotate_ticket();
    assert_ne!(new_ticket, ticket);
    assert_eq!(sim.current_ticket(), new_ticket);
    for old_or_new in [&ticket, &new_ticket] {
        let reply = post_token(
            &sim,
            &client,
            body(appid, secret, old_or_new.expose_secret()),
        )
        .await;
        assert!(reply["component_access_token"].is_string());
    }

    // GET and garbled bodies.
    let get_reply = json_of(
        get(
            &client,
            url_with(&sim, "cgi-bin/component/api_component_token", &[]),
        )
        .await,
    )
    .await;
    assert_eq!(errcode(&get_reply), 43002);
    let url = url_with(&sim, "cgi-bin/component/api_component_token", &[]);
    let garbled = json_of(
        bounded(client.post(url.clone()).body("{not json").send())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(errcode(&garbled), 47001);
    let huge = json_of(
        bounded(client.post(url).body(vec![b' '; 200_000]).send())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(errcode(&huge), 47001);
    assert_eq!(sim.calls(Endpoint::ComponentToken), 13);
}

#[tokio::test]
async fn invalidated_and_expired_component_tokens() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let token = component_token(&sim, &client).await;
    sim.invalidate_component_token();
    let code = code_for(&sim, &client, "snsapi_base").await;
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, &token).await),
        40001
    );
    assert_eq!(errcode(&exchange(&sim, &client, &code, "").await), 41001);

    sim.set_token_ttl(Duration::ZERO);
    let reply = post_token(
        &sim,
        &client,
        json!({
            "component_appid": sim.config().component_appid.as_str(),
            "component_appsecret": sim.config().component_secret.expose_secret(),
            "component_verify_ticket": sim.current_ticket().expose_secret(),
        }),
    )
    .await;
    assert_eq!(reply["expires_in"], 0);
    let expired = reply["component_access_token"].as_str().unwrap();
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, expired).await),
        42001
    );
}

#[tokio::test]
async fn code_exchange_is_single_use_and_checks_everything() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let token = component_token(&sim, &client).await;

    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    let zhang = &sim.config().users[0];
    assert_eq!(reply["openid"], zhang.openid.as_str());
    assert_eq!(reply["scope"], "snsapi_userinfo");
    assert_eq!(reply["unionid"], zhang.unionid.as_deref().unwrap());
    assert_eq!(reply["expires_in"], 7200);
    assert!(reply["refresh_token"].is_string());
    assert!(
        reply.get("is_snapshotuser").is_none(),
        "only present when 1"
    );
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, &token).await),
        40163
    );

    assert_eq!(
        errcode(&exchange(&sim, &client, "no-such-code", &token).await),
        40029
    );
    assert_eq!(errcode(&exchange(&sim, &client, "", &token).await), 41008);

    // snsapi_base: no unionid.
    let code = code_for(&sim, &client, "snsapi_base").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    assert_eq!(reply["scope"], "snsapi_base");
    assert!(reply.get("unionid").is_none());

    // Wrong component appid, wrong authorizer appid, wrong grant type.
    let code = code_for(&sim, &client, "snsapi_base").await;
    let c = sim.config();
    for (expected, appid, component, grant) in [
        (
            61011,
            c.authorizer_appid.as_str(),
            "wx9999999999999999",
            "authorization_code",
        ),
        (
            61003,
            "wx7777777777777777",
            c.component_appid.as_str(),
            "authorization_code",
        ),
        (
            40002,
            c.authorizer_appid.as_str(),
            c.component_appid.as_str(),
            "client_credential",
        ),
    ] {
        let url = url_with(
            &sim,
            "sns/oauth2/component/access_token",
            &[
                ("appid", appid),
                ("code", &code),
                ("grant_type", grant),
                ("component_appid", component),
                ("component_access_token", &token),
            ],
        );
        assert_eq!(errcode(&json_of(get(&client, url).await).await), expected);
    }
    // The failed attempts did not consume the code.
    assert!(exchange(&sim, &client, &code, &token).await["access_token"].is_string());
    // A code minted for official-account mode is unknown to the component exchange.
    let oa_code = sim.issue_code(zhang.clone(), Scope::Base, AuthMode::OfficialAccount);
    assert_eq!(
        errcode(&exchange(&sim, &client, oa_code.expose_secret(), &token).await),
        40029
    );
    let direct = sim.issue_code(zhang.clone(), Scope::Base, AuthMode::Component);
    assert!(exchange(&sim, &client, direct.expose_secret(), &token).await["openid"].is_string());
}

#[tokio::test]
async fn expired_codes_and_user_tokens() {
    let sim = start(SimConfig {
        code_ttl: Duration::ZERO,
        user_token_ttl: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let token = component_token(&sim, &client).await;
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, &token).await),
        42003
    );

    let sim2 = start(SimConfig {
        user_token_ttl: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let token = component_token(&sim2, &client).await;
    let code = code_for(&sim2, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim2, &client, &code, &token).await;
    let info = userinfo_of(&sim2, &client, &reply).await;
    assert_eq!(errcode(&info), 42001);
}

#[tokio::test]
async fn userinfo_answers_and_refuses_like_wechat() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let token = component_token(&sim, &client).await;
    let alice = sim.config().users[1].clone();
    sim.set_next_user(alice.clone());
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    let access = reply["access_token"].as_str().unwrap();

    let response = get(
        &client,
        url_with(
            &sim,
            "sns/userinfo",
            &[
                ("access_token", access),
                ("openid", &alice.openid),
                ("lang", "zh_CN"),
            ],
        ),
    )
    .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let info = json_of(response).await;
    assert_eq!(
        info,
        json!({
            "openid": alice.openid, "nickname": "Alice 🌸", "sex": 0, "province": "", "city": "",
            "country": "", "headimgurl": alice.headimgurl, "privilege": [],
            "unionid": alice.unionid.as_deref().unwrap(),
        })
    );
    assert!(
        alice.headimgurl.starts_with("data:image/svg+xml"),
        "no internet needed"
    );

    assert_eq!(
        errcode(&userinfo(&sim, &client, access, &sim.config().users[0].openid).await),
        40003
    );
    assert_eq!(
        errcode(&userinfo(&sim, &client, "forged-token", &alice.openid).await),
        40014
    );
    assert_eq!(
        errcode(&userinfo(&sim, &client, "", &alice.openid).await),
        41001
    );

    // A user without unionid has no unionid field.
    sim.set_next_user(sim.config().users[2].clone());
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    assert!(reply.get("unionid").is_none());
    let info = userinfo_of(&sim, &client, &reply).await;
    assert_eq!(info["nickname"], "李四😀");
    assert!(info.get("unionid").is_none());

    // snsapi_base token → 48001.
    let code = code_for(&sim, &client, "snsapi_base").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    let info = userinfo_of(&sim, &client, &reply).await;
    assert_eq!(errcode(&info), 48001);

    // Snapshot user: flagged in the exchange, 48001 on userinfo.
    let snapshot = SimUser::snapshot_user();
    assert!(snapshot.snapshot);
    assert!(
        !sim.config().users.iter().any(|u| u.snapshot),
        "not in the default list"
    );
    sim.set_next_user(snapshot.clone());
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    assert_eq!(reply["is_snapshotuser"], 1);
    assert_eq!(reply["openid"], snapshot.openid.as_str());
    let info = userinfo_of(&sim, &client, &reply).await;
    assert_eq!(errcode(&info), 48001);
    assert_eq!(sim.calls(Endpoint::UserInfo), 7);
}

#[tokio::test]
async fn official_account_mode_and_refresh() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let c = sim.config().clone();
    let code = query_of(&location(
        &get(&client, oa_authorize(&sim, "snsapi_userinfo", "s")).await,
    ))["code"]
        .clone();
    let oa_exchange = |code: &str, secret: &str| {
        url_with(
            &sim,
            "sns/oauth2/access_token",
            &[
                ("appid", c.authorizer_appid.as_str()),
                ("secret", secret),
                ("code", code),
                ("grant_type", "authorization_code"),
            ],
        )
    };
    let secret = c.official_account_secret.expose_secret();
    assert_eq!(
        errcode(&json_of(get(&client, oa_exchange(&code, "wrong")).await).await),
        40125
    );
    assert_eq!(
        errcode(&json_of(get(&client, oa_exchange(&code, "")).await).await),
        41004
    );
    let response = get(&client, oa_exchange(&code, secret)).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain",
        "JSON served as text/plain"
    );
    let reply = json_of(response).await;
    assert_eq!(reply["openid"], c.users[0].openid.as_str());
    assert_eq!(reply["unionid"], c.users[0].unionid.as_deref().unwrap());
    assert_eq!(
        errcode(&json_of(get(&client, oa_exchange(&code, secret)).await).await),
        40163
    );

    // A component-mode code is not valid in official-account mode.
    let component_code = code_for(&sim, &client, "snsapi_base").await;
    assert_eq!(
        errcode(&json_of(get(&client, oa_exchange(&component_code, secret)).await).await),
        40029
    );

    // Refresh (OA): same access token extended; unknown refresh token → 40030.
    let oa_refresh_token = reply["refresh_token"].as_str().unwrap().to_owned();
    let refresh = oa_refresh_token.as_str();
    let oa_refresh = |refresh: &str| {
        url_with(
            &sim,
            "sns/oauth2/refresh_token",
            &[
                ("appid", c.authorizer_appid.as_str()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
            ],
        )
    };
    let refreshed = json_of(get(&client, oa_refresh(refresh)).await).await;
    assert_eq!(refreshed["access_token"], reply["access_token"]);
    assert_eq!(refreshed["openid"], reply["openid"]);
    assert_eq!(
        errcode(&json_of(get(&client, oa_refresh("nope")).await).await),
        40030
    );
    assert_eq!(sim.calls(Endpoint::OaCodeExchange), 5);
    assert_eq!(sim.calls(Endpoint::OaRefresh), 2);

    // Component refresh.
    let token = component_token(&sim, &client).await;
    let code = code_for(&sim, &client, "snsapi_userinfo").await;
    let reply = exchange(&sim, &client, &code, &token).await;
    let component_refresh = |refresh: &str, token: &str| {
        url_with(
            &sim,
            "sns/oauth2/component/refresh_token",
            &[
                ("appid", c.authorizer_appid.as_str()),
                ("grant_type", "refresh_token"),
                ("component_appid", c.component_appid.as_str()),
                ("component_access_token", token),
                ("refresh_token", refresh),
            ],
        )
    };
    let refresh = reply["refresh_token"].as_str().unwrap();
    let refreshed = json_of(get(&client, component_refresh(refresh, &token)).await).await;
    assert_eq!(refreshed["refresh_token"], refresh);
    assert_eq!(refreshed["scope"], "snsapi_userinfo");
    assert_eq!(
        errcode(&json_of(get(&client, component_refresh(refresh, "bad")).await).await),
        40001
    );
    // An OA refresh token is not a component one.
    assert_eq!(
        errcode(&json_of(get(&client, component_refresh(&oa_refresh_token, &token)).await).await),
        40030
    );
    assert_eq!(sim.calls(Endpoint::ComponentRefresh), 3);
}

#[tokio::test]
async fn injected_failures_take_precedence_and_are_counted() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let token = component_token(&sim, &client).await;
    let info_url = url_with(
        &sim,
        "sns/userinfo",
        &[("access_token", "x"), ("openid", "y")],
    );

    sim.inject(Endpoint::UserInfo, Failure::Http500, 2);
    sim.inject(Endpoint::UserInfo, Failure::NotJson, 1);
    sim.inject(Endpoint::UserInfo, Failure::SystemBusy, 1);
    sim.inject(Endpoint::UserInfo, Failure::ErrCode(45009), 1);
    for _ in 0..2 {
        assert_eq!(get(&client, info_url.clone()).await.status(), 500);
    }
    let not_json = get(&client, info_url.clone()).await;
    assert_eq!(not_json.status(), 200);
    assert_eq!(not_json.headers()["content-type"], "text/html");
    assert_eq!(text(not_json).await, "<html>busy</html>");
    let busy = json_of(get(&client, info_url.clone()).await).await;
    assert_eq!(busy, json!({"errcode": -1, "errmsg": "system error"}));
    let quota = json_of(get(&client, info_url.clone()).await).await;
    assert_eq!(errcode(&quota), 45009);
    // Used up: normal handling again (forged token → 40014).
    assert_eq!(
        errcode(&json_of(get(&client, info_url.clone()).await).await),
        40014
    );
    assert_eq!(sim.calls(Endpoint::UserInfo), 6);

    // Injection on the token endpoint does not issue a token.
    sim.inject(Endpoint::ComponentToken, Failure::SystemBusy, 1);
    let before = sim.issued_component_tokens();
    let url = url_with(&sim, "cgi-bin/component/api_component_token", &[]);
    let reply = json_of(
        bounded(client.post(url).json(&json!({})).send())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(errcode(&reply), -1);
    assert_eq!(sim.issued_component_tokens(), before);

    // Code exchange: an injected failure does not consume the code.
    let code = code_for(&sim, &client, "snsapi_base").await;
    sim.inject(Endpoint::ComponentCodeExchange, Failure::ErrCode(61004), 1);
    assert_eq!(
        errcode(&exchange(&sim, &client, &code, &token).await),
        61004
    );
    assert!(exchange(&sim, &client, &code, &token).await["openid"].is_string());

    // Authorize: failures are pages.
    sim.inject(Endpoint::Authorize, Failure::ErrCode(10009), 1);
    let page = get(
        &client,
        component_authorize(&sim, "snsapi_base", "s", CALLBACK),
    )
    .await;
    assert_eq!(page.headers()["x-sim-error"], "10009");
    sim.inject(Endpoint::Authorize, Failure::Http500, 1);
    assert_eq!(
        get(
            &client,
            component_authorize(&sim, "snsapi_base", "s", CALLBACK)
        )
        .await
        .status(),
        500
    );

    // Hang: no answer until the client gives up.
    sim.inject(Endpoint::OaCodeExchange, Failure::Hang, 1);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let hung = bounded(
        impatient
            .get(url_with(&sim, "sns/oauth2/access_token", &[]))
            .send(),
    )
    .await;
    assert!(hung.expect_err("no answer").is_timeout());
    assert_eq!(sim.calls(Endpoint::OaCodeExchange), 1);
    // The hanging request does not block others, nor the shutdown.
    assert_eq!(
        get(
            &client,
            component_authorize(&sim, "snsapi_base", "s", CALLBACK)
        )
        .await
        .status(),
        302
    );
    bounded(sim.shutdown()).await;
}

#[tokio::test]
async fn only_loopback_addresses_are_served() {
    for addr in ["0.0.0.0:0", "192.0.2.1:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let sim = bounded(SimWeChat::start(SimConfig::default(), addr)).await;
        assert!(matches!(sim, Err(SimError::NotLoopback(a)) if a == addr));
        let upstream = bounded(DemoUpstream::start(addr, "x-wechat-jwt".into())).await;
        assert!(matches!(upstream, Err(SimError::NotLoopback(_))));
    }
    let sim = start(SimConfig::default()).await;
    assert!(sim.addr().ip().is_loopback());
    assert_eq!(sim.base_url().as_str(), format!("http://{}/", sim.addr()));
    assert!(!format!("{sim:?}").contains(sim.config().component_secret.expose_secret()));
}

#[tokio::test]
async fn demo_upstream_echoes_requests() {
    let upstream = bounded(DemoUpstream::start(loopback(), "x-wechat-jwt".into()))
        .await
        .unwrap();
    let client = client();
    let body = vec![7u8; 100_000];
    let url = upstream.url().join("_echo?a=1&b=%E5%BC%A0").unwrap();
    let response = bounded(
        client
            .put(url)
            .header("x-wechat-openid", "o1")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(body.clone())
            .send(),
    )
    .await
    .unwrap();
    let echo = json_of(response).await;
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/_echo");
    assert_eq!(echo["query"], "a=1&b=%E5%BC%A0");
    assert_eq!(echo["headers"]["x-wechat-openid"], json!(["o1"]));
    assert_eq!(echo["headers"]["x-multi"], json!(["1", "2"]));
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(echo["body_sha256"], format!("{:x}", Sha256::digest(&body)));

    // Non-browser requests on any path are echoed too.
    let echo = json_of(get(&client, upstream.url().join("api/x").unwrap()).await).await;
    assert_eq!(echo["path"], "/api/x");
    assert_eq!(echo["body_len"], 0);
    bounded(upstream.shutdown()).await;
}

#[tokio::test]
async fn demo_upstream_page_shows_the_identity_escaped() {
    use base64::Engine as _;
    let upstream = bounded(DemoUpstream::start(loopback(), "X-WeChat-Jwt".into()))
        .await
        .unwrap();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let jwt = format!(
        "{}.{}.sig",
        b64(json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"})),
        b64(
            json!({"openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "unionid": "u1", "nickname": "<script>alert('x')</script>李四😀", "avatar": "data:image/svg+xml;base64,PHN2Zz4="})
        ),
    );
    let response = bounded(
        client()
            .get(upstream.url().join("some/page").unwrap())
            .header("accept", "text/html,application/xhtml+xml")
            .header("x-wechat-jwt", jwt)
            .header("x-wechat-nickname", "%E6%9D%8E%E5%9B%9B%F0%9F%98%80")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = text(response).await;
    assert!(page.contains("<meta charset=\"utf-8\">"));
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;李四😀"));
    assert!(page.contains("o9AgO5Kd5ggOC-bXrbNODIiE3bGY"));
    assert!(
        page.contains("<td>x-wechat-nickname</td><td>李四😀</td>"),
        "percent-decoded"
    );
    assert!(page.contains("<img src=\"data:image/svg+xml;base64,PHN2Zz4=\""));
    assert!(
        page.contains("&quot;kid&quot;: &quot;k1&quot;"),
        "decoded header"
    );
    assert!(page.contains("does not verify its signature"));
    assert!(page.contains("/_wxauth/jwks.json"));
    assert!(page.contains("examples/verify_jwt.rs"));
    assert!(page.contains("href=\"/_wxauth/logout\""));
}

/// What the test receiver saw in one push.
#[derive(Debug)]
struct Received {
    query_names: Vec<String>,
    content_type: String,
    event: Result<PushEvent, PushError>,
}

/// A tiny events endpoint that checks pushes with the crate's own `open_push` and answers
/// `answer` (WeChat expects `success`).
async fn receiver(
    crypt: MsgCrypt,
    answer: &'static str,
) -> (
    Url,
    tokio::sync::mpsc::UnboundedReceiver<Received>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let url = Url::parse(&format!(
        "http://{}/_wxauth/events",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let crypt = std::sync::Arc::new(crypt);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, crypt) = (tx.clone(), crypt.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (tx, crypt) = (tx.clone(), crypt.clone());
                        async move {
                            let raw_query = req.uri().query().unwrap_or("").to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let event = PushQuery::from_query(&raw_query)
                                .map_err(PushError::from)
                                .and_then(|q| open_push(&crypt, &q, &body));
                            let ok = event.is_ok();
                            let query_names = url::form_urlencoded::parse(raw_query.as_bytes())
                                .map(|(name, _)| name.into_owned())
                                .collect();
                            let _ = tx.send(Received {
                                query_names,
                                content_type,
                                event,
                            });
                            let (status, text) = if ok { (200, answer) } else { (400, "bad push") };
                            let mut response =
                                hyper::Response::new(Full::new(bytes::Bytes::from(text)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx, task)
}

fn crypt_for(config: &SimConfig) -> MsgCrypt {
    MsgCrypt::new(
        &config.message_token,
        &config.encoding_aes_key,
        config.component_appid.clone(),
    )
    .unwrap()
}

fn ticket_of(received: Received) -> VerifyTicket {
    match received.event {
        Ok(PushEvent::ComponentVerifyTicket { ticket, .. }) => ticket,
        other => panic!("not a ticket push: {other:?}"),
    }
}

#[tokio::test]
async fn a_push_is_encrypted_signed_and_accepted_by_open_push() {
    let sim = start(SimConfig::default()).await;
    let (url, mut pushes, receiver_task) = receiver(crypt_for(sim.config()), "success").await;
    bounded(sim.push_ticket(&url)).await.expect("accepted");
    let received = bounded(pushes.recv()).await.unwrap();
    assert_eq!(
        received.query_names,
        [
            "signature",
            "timestamp",
            "nonce",
            "encrypt_type",
            "msg_signature"
        ]
    );
    assert_eq!(received.content_type, "text/xml");
    match &received.event {
        Ok(PushEvent::ComponentVerifyTicket {
            app_id,
            create_time,
            ..
        }) => {
            assert_eq!(app_id, &sim.config().component_appid);
            assert!(*create_time > 1_700_000_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ticket_of(received), sim.current_ticket());

    // The pushed ticket is the one api_component_token accepts.
    let client = client();
    assert!(!component_token(&sim, &client).await.is_empty());

    // A receiver with another key refuses the push: the sim reports the rejection.
    let other = SimConfig {
        encoding_aes_key: wechat_oauth_proxy::secret::SecretString::new("A".repeat(43)),
        ..SimConfig::default()
    };
    let (wrong_url, mut wrong_pushes, wrong_task) = receiver(crypt_for(&other), "success").await;
    let refused = bounded(sim.push_ticket(&wrong_url)).await;
    assert!(
        matches!(refused, Err(SimError::PushRejected { status: 400, .. })),
        "{refused:?}"
    );
    assert!(bounded(wrong_pushes.recv()).await.unwrap().event.is_err());

    // A receiver that answers anything but `success` is a rejection too.
    let (fail_url, _fail_pushes, fail_task) = receiver(crypt_for(sim.config()), "fail").await;
    let rejected = bounded(sim.push_ticket(&fail_url)).await;
    match rejected {
        Err(SimError::PushRejected { status, body }) => {
            assert_eq!((status, body.as_str()), (200, "fail"));
        }
        other => panic!("{other:?}"),
    }
    // Nobody listening: a transport error, and no secret in its message.
    let closed = {
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        listener.local_addr().unwrap()
    };
    let nobody = Url::parse(&format!("http://{closed}/_wxauth/events")).unwrap();
    let error = bounded(sim.push_ticket(&nobody))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, SimError::PushTransport(_)), "{error:?}");
    assert!(!error.to_string().contains("msg_signature"));
    for task in [receiver_task, wrong_task, fail_task] {
        task.abort();
    }
}

#[tokio::test]
async fn the_pusher_pushes_at_start_and_then_periodically() {
    let config = SimConfig::default();
    let (url, mut pushes, receiver_task) = receiver(crypt_for(&config), "success").await;
    let sim = start(config).await;
    let pusher = sim.spawn_pusher(url.clone(), Duration::from_millis(20));
    let first = ticket_of(bounded(pushes.recv()).await.unwrap());
    assert_eq!(first, sim.current_ticket());
    let rotated = sim.rotate_ticket();
    // Within a bounded number of pushes the new ticket arrives.
    let mut seen_new = false;
    for _ in 0..50 {
        if ticket_of(bounded(pushes.recv()).await.unwrap()) == rotated {
            seen_new = true;
            break;
        }
    }
    assert!(seen_new);
    pusher.abort();
    bounded(sim.shutdown()).await;

    // Configured pusher: started with the simulator, stopped with it.
    let config = SimConfig {
        pusher: Some(PusherConfig {
            events_url: url,
            every: Duration::from_secs(600),
        }),
        ..SimConfig::default()
    };
    while pushes.try_recv().is_ok() {}
    let sim = start(config).await;
    let pushed = ticket_of(bounded(pushes.recv()).await.unwrap());
    assert_eq!(pushed, sim.current_ticket());
    bounded(sim.shutdown()).await;
    receiver_task.abort();
}

// ---------------------------------------------------------------------------------------------
// Several official accounts

fn account(n: u32) -> AuthorizerAppId {
    AuthorizerAppId::new(format!("wxc{n:015x}"))
}

/// The component authorize URL of `appid` (the primary account's form, another appid).
fn authorize_for(sim: &SimWeChat, appid: &AuthorizerAppId) -> Url {
    let c = sim.config();
    url_with(
        sim,
        "connect/oauth2/authorize",
        &[
            ("appid", appid.as_str()),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "snsapi_base"),
            ("state", "st"),
            ("component_appid", c.component_appid.as_str()),
        ],
    )
}

#[tokio::test]
async fn the_authorize_page_serves_only_accounts_with_set_4_and_openids_differ() {
    let sim = start(SimConfig::with_authorizers(vec![
        SimAuthorizer::new(account(1), "not yet").unauthorized(),
        SimAuthorizer::new(account(2), "no web").with_funcs(&[1, 2, 3]),
        SimAuthorizer::new(account(3), "web"),
    ]))
    .await;
    let client = client();
    for refused in [account(1), account(2), account(9)] {
        let page = get(&client, authorize_for(&sim, &refused)).await;
        assert_eq!(page.headers()["x-sim-error"], "10015", "{refused}");
    }
    let index = text(get(&client, sim.base_url()).await).await;
    assert!(index.contains(account(2).as_str()), "{index}");
    assert!(
        index.contains("authorized without set 4 (10015)"),
        "{index}"
    );
    let token = component_token(&sim, &client).await;
    let c = sim.config().clone();
    let mut openids = Vec::new();
    for served in [c.authorizer_appid.clone(), account(3)] {
        let redirect = get(&client, authorize_for(&sim, &served)).await;
        assert_eq!(redirect.status().as_u16(), 302);
        let back = query_of(&location(&redirect));
        assert_eq!(back["appid"], served.as_str());
        let url = url_with(
            &sim,
            "sns/oauth2/component/access_token",
            &[
                ("appid", served.as_str()),
                ("code", &back["code"]),
                ("grant_type", "authorization_code"),
                ("component_appid", c.component_appid.as_str()),
                ("component_access_token", &token),
            ],
        );
        let reply = json_of(get(&client, url).await).await;
        assert_eq!(errcode(&reply), 0, "{reply}");
        openids.push(reply["openid"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        openids[0], c.users[0].openid,
        "the primary account keeps the openid"
    );
    assert_ne!(openids[0], openids[1]);
    assert_eq!(openids[1].len(), 28);
    assert_eq!(openids[1], sim.user_for(&account(3), &c.users[0]).openid);
    // Granting set 4 opens the page.
    sim.put_account(&SimAuthorizer::new(account(2), "now web"));
    let redirect = get(&client, authorize_for(&sim, &account(2))).await;
    assert_eq!(redirect.status().as_u16(), 302);
}

#[tokio::test]
async fn authorization_pushes_carry_a_single_use_code_for_query_auth() {
    let sim = start(SimConfig::with_authorizers(vec![
        SimAuthorizer::new(account(1), "B").unauthorized(),
    ]))
    .await;
    let client = client();
    let c = sim.config().clone();
    // No events URL yet: the change is made, nothing is pushed.
    let e = bounded(sim.authorize_account(&account(1), &[1, 4]))
        .await
        .unwrap_err();
    assert!(matches!(e, SimError::NoEventsUrl), "{e:?}");
    assert_eq!(sim.account_grant(&account(1)), Some((true, vec![1, 4])));

    let (url, mut pushes, receiver_task) = receiver(crypt_for(&c), "success").await;
    sim.set_events_url(url);
    bounded(sim.update_account(&account(1), &[1, 2, 4]))
        .await
        .unwrap();
    let code = match bounded(pushes.recv()).await.unwrap().event {
        Ok(PushEvent::UpdateAuthorized {
            authorizer_appid,
            grant,
            ..
        }) => {
            assert_eq!(authorizer_appid, account(1));
            assert!(grant.pre_auth_code.is_some());
            assert!(grant.code_expired_time.is_some());
            grant.authorization_code.expect("a code")
        }
        other => panic!("{other:?}"),
    };
    let token = component_token(&sim, &client).await;
    let body = json!({
        "component_appid": c.component_appid.as_str(),
        "authorization_code": code.expose_secret(),
    });
    let reply = post_api(&sim, &client, "api_query_auth", Some(&token), body.clone()).await;
    let info = &reply["authorization_info"];
    assert_eq!(info["authorizer_appid"], account(1).as_str());
    assert!(info["authorizer_access_token"].is_string());
    assert_eq!(
        info["func_info"],
        json!([
            {"funcscope_category": {"id": 1}},
            {"funcscope_category": {"id": 2}},
            {"funcscope_category": {"id": 4}}
        ])
    );
    let again = post_api(&sim, &client, "api_query_auth", Some(&token), body).await;
    assert_eq!(errcode(&again), 61009, "single use");
    let foreign = post_api(
        &sim,
        &client,
        "api_query_auth",
        Some("not-the-token"),
        json!({"component_appid": c.component_appid.as_str(), "authorization_code": "x"}),
    )
    .await;
    assert_eq!(errcode(&foreign), 40001);

    // Revocation over the admin HTTP API: an `unauthorized` push without a code.
    assert_eq!(admin(&sim, &client, "revoke", &account(1)).await, 200);
    match bounded(pushes.recv()).await.unwrap().event {
        Ok(PushEvent::Unauthorized {
            authorizer_appid, ..
        }) => assert_eq!(authorizer_appid, account(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.account_grant(&account(1)), Some((false, vec![1, 2, 4])));
    assert_eq!(
        admin(&sim, &client, "update", &account(1)).await,
        400,
        "a revoked account cannot update"
    );
    receiver_task.abort();
}

#[tokio::test]
async fn expired_authorization_codes_answer_61010() {
    let sim = start(SimConfig {
        authorization_code_ttl: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let c = sim.config().clone();
    let (url, mut pushes, receiver_task) = receiver(crypt_for(&c), "success").await;
    sim.set_events_url(url);
    bounded(sim.authorize_account(&account(1), &[4]))
        .await
        .unwrap();
    let code = match bounded(pushes.recv()).await.unwrap().event {
        Ok(PushEvent::Authorized { grant, .. }) => grant.authorization_code.unwrap(),
        other => panic!("{other:?}"),
    };
    let client = client();
    let token = component_token(&sim, &client).await;
    let reply = post_api(
        &sim,
        &client,
        "api_query_auth",
        Some(&token),
        json!({"component_appid": c.component_appid.as_str(), "authorization_code": code.expose_secret()}),
    )
    .await;
    assert_eq!(errcode(&reply), 61010);
    receiver_task.abort();
}

#[tokio::test]
async fn authorizer_list_pages_and_authorizer_info() {
    let sim = start(SimConfig::with_authorizers(vec![
        SimAuthorizer::new(account(1), "B"),
        SimAuthorizer::new(account(2), "C").unauthorized(),
        SimAuthorizer::new(account(3), "D").with_funcs(&[1]),
    ]))
    .await;
    let client = client();
    let c = sim.config().clone();
    let token = component_token(&sim, &client).await;
    let list = |offset: u64, count: u64| {
        post_api(
            &sim,
            &client,
            "api_get_authorizer_list",
            Some(&token),
            json!({"component_appid": c.component_appid.as_str(), "offset": offset, "count": count}),
        )
    };
    let first = list(0, 2).await;
    assert_eq!(first["total_count"], 3, "{first}");
    let page: Vec<&str> = first["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["authorizer_appid"].as_str().unwrap())
        .collect();
    assert_eq!(page, [c.authorizer_appid.as_str(), account(1).as_str()]);
    let second = list(2, 2).await;
    assert_eq!(second["list"][0]["authorizer_appid"], account(3).as_str());
    assert_eq!(second["list"].as_array().unwrap().len(), 1);
    assert_eq!(errcode(&list(0, 501).await), 40097);
    assert_eq!(errcode(&list(0, 0).await), 40097);

    let info = |appid: &AuthorizerAppId| {
        post_api(
            &sim,
            &client,
            "api_get_authorizer_info",
            Some(&token),
            json!({"component_appid": c.component_appid.as_str(), "authorizer_appid": appid.as_str()}),
        )
    };
    let d = info(&account(3)).await;
    assert_eq!(d["authorizer_info"]["nick_name"], "D");
    assert_eq!(d["authorizer_info"]["service_type_info"]["id"], 2);
    assert_eq!(
        d["authorization_info"]["func_info"],
        json!([{"funcscope_category": {"id": 1}}])
    );
    assert_eq!(errcode(&info(&account(2)).await), 61003);
    assert_eq!(errcode(&info(&account(9)).await), 61003);
    sim.inject(Endpoint::AuthorizerInfo, Failure::ErrCode(45009), 1);
    assert_eq!(errcode(&info(&account(1)).await), 45009);
    assert_eq!(sim.calls(Endpoint::AuthorizerInfo), 4);
    assert_eq!(sim.calls(Endpoint::AuthorizerList), 4);
}

#[test]
fn multi_tenant_mode_configures_the_accounts_that_allow_web_oauth() {
    use wechat_oauth_proxy::wechat::{oauth::OAuthMode, tenants::TenantMode};
    let config = SimConfig::with_authorizers(vec![
        SimAuthorizer::new(account(1), "web"),
        SimAuthorizer::new(account(2), "not yet").unauthorized(),
        SimAuthorizer::new(account(3), "no web").with_funcs(&[1]),
    ]);
    let OAuthMode::Component { tenants, .. } = config.multi_tenant_mode() else {
        panic!("component mode");
    };
    assert_eq!(tenants.mode, TenantMode::Static);
    assert_eq!(
        tenants.configured,
        vec![config.authorizer_appid.clone(), account(1)]
    );
}

/// A desktop browser's client: no redirects, Chrome on Windows.
fn desktop() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/131.0.0.0 Safari/537.36",
        )
        .timeout(STEP)
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_authorize_page_refuses_other_browsers_than_wechat() {
    let sim = start(SimConfig::default()).await;
    assert!(sim.config().require_wechat_browser, "on by default");
    let url = oa_authorize(&sim, "snsapi_userinfo", "st");
    for client in [desktop(), reqwest::Client::builder().build().unwrap()] {
        let response = get(&client, url.clone()).await;
        assert_eq!(response.status(), 200, "a page, never a redirect");
        assert!(response.headers().get("location").is_none());
        assert_eq!(response.headers()["x-sim-error"], "browser");
        let page = text(response).await;
        assert!(page.contains("请在微信客户端打开链接"), "{page}");
        // The sim-only way on: act as the phone, then the same link again.
        let links = links(&page);
        assert_eq!(links.len(), 1, "{links:?}");
        let phone = Url::parse(&links[0]).unwrap();
        assert_eq!(phone.path(), "/_sim/phone");
        assert_eq!(query_of(&phone)["go"], url.as_str());
    }
    // The check comes before the parameters: even a broken link is the dead end.
    let broken = get(&desktop(), url_with(&sim, "connect/oauth2/authorize", &[])).await;
    assert_eq!(broken.headers()["x-sim-error"], "browser");
    // WeChat's browser, in the desktop client too, gets through.
    let response = get(&client(), url.clone()).await;
    assert_eq!(query_of(&location(&response))["state"], "st");
    let pc_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(
            "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) \
             WindowsWechat(0x63090c11) XWEB/11275 Flue",
        )
        .build()
        .unwrap();
    assert_eq!(get(&pc_client, url.clone()).await.status(), 302);
    // No code was handed out to the refused browsers.
    assert_eq!(sim.calls(Endpoint::Authorize), 5);

    // The switch off: any browser logs in (tests written before the check).
    let lax = start(SimConfig {
        require_wechat_browser: false,
        ..SimConfig::default()
    })
    .await;
    let response = get(&desktop(), oa_authorize(&lax, "snsapi_userinfo", "st")).await;
    assert_eq!(query_of(&location(&response))["state"], "st");
}

/// The `Set-Cookie` `name=value` pairs of a reply.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(support::cookie_pair)
        .collect()
}

#[tokio::test]
async fn one_desktop_acts_as_the_phone_through_the_phone_page() {
    let sim = start(SimConfig::default()).await;
    let desktop = desktop();
    let authorize = oa_authorize(&sim, "snsapi_userinfo", "phone");
    // The proxy's phone link (a redirect host), as a QR page in dev mode would link it.
    let phone_link = "http://127.0.0.1:8080/_wxauth/qr/s/AbCdEf0123456789AbCdEf";
    let page = get(
        &desktop,
        url_with(&sim, "_sim/phone", &[("go", phone_link)]),
    )
    .await;
    assert_eq!(page.status(), 200);
    let set = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = cookie::Cookie::parse(set.clone()).unwrap();
    assert_eq!((cookie.name(), cookie.value()), ("wxsim_phone", "1"));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
    assert!(
        cookie
            .max_age()
            .is_some_and(|age| age.whole_minutes() == 60),
        "{set}"
    );
    let body = text(page).await;
    assert!(body.contains("模拟手机扫码"), "{body}");
    assert!(
        body.contains(&format!("content=\"1;url={phone_link}\"")),
        "navigates on to go: {body}"
    );
    assert!(links(&body).contains(&phone_link.to_owned()));

    // With the cookie, the desktop browser passes WeChat's browser check; without, not.
    let with_cookie = bounded(
        desktop
            .get(authorize.clone())
            .header("cookie", "other=x; wxsim_phone=1")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(query_of(&location(&with_cookie))["state"], "phone");
    for forged in ["wxsim_phone=0", "wxsim_phone2=1", "x=wxsim_phone=1"] {
        let refused = bounded(
            desktop
                .get(authorize.clone())
                .header("cookie", forged)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(refused.headers()["x-sim-error"], "browser", "{forged}");
    }

    // go may lead to the simulator itself (the dead end's own link) …
    let again = get(
        &desktop,
        url_with(&sim, "_sim/phone", &[("go", authorize.as_str())]),
    )
    .await;
    assert_eq!(set_cookies(&again), ["wxsim_phone=1"]);
    // … but not elsewhere, nor to a non-http URL: no open redirect, no cookie.
    for go in [
        "https://evil.example/steal",
        "javascript:alert(1)",
        "/relative",
        "",
    ] {
        let refused = get(&desktop, url_with(&sim, "_sim/phone", &[("go", go)])).await;
        assert_eq!(refused.headers()["x-sim-error"], "go", "{go}");
        assert!(set_cookies(&refused).is_empty(), "{go}");
    }
}
