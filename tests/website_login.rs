//! WeChat's website login (网站应用, `connect/qrconnect`, scope `snsapi_login`) through
//! `wechat::website::WebsiteApp` against the simulated WeChat, over real loopback sockets: the QR
//! page in a desktop browser, the code exchange with the website app's own secret, the profile,
//! and how its openid and unionid relate to the official account's.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use support::{STEP, bounded};
use url::Url;
use wechat_oauth_proxy::{
    sim::{AuthMode, Endpoint, Failure, SimConfig, SimUser, SimWeChat, SimWebsiteApp},
    wechat::{
        AppSecret, AuthorizationCode, OAuthState, Scope,
        client::{ClientSettings, WeChatClient},
        error::{ErrorClass, WeChatError},
        website::{WebsiteApp, WebsiteAppId, WebsiteLogin},
    },
};

const CALLBACK: &str = "http://127.0.0.1:8080/_wxauth/website/callback";

/// Chrome on Windows: the website login is for desktop browsers, no WeChat needed.
const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

async fn start(config: SimConfig) -> SimWeChat {
    bounded(SimWeChat::start(
        config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("sim starts")
}

/// A second website app, in an Open Platform account of its own.
fn unbound_app() -> SimWebsiteApp {
    SimWebsiteApp::new(
        WebsiteAppId::new("wx9f8e7d6c5b4a3921"),
        AppSecret::new("sim_other_website_app_secret_987"),
        "别家网站 / Other site",
    )
    .in_other_open_account()
}

/// The simulator with the default (bound) website app and [`unbound_app`].
fn two_apps() -> SimConfig {
    SimConfig {
        website_apps: vec![SimWebsiteApp::default_app(), unbound_app()],
        ..SimConfig::default()
    }
}

fn client_for(sim: &SimWeChat) -> WeChatClient {
    WeChatClient::new(ClientSettings {
        api_base: sim.base_url(),
        open_base: sim.base_url(),
        request_timeout: Duration::from_secs(5),
        ..ClientSettings::default()
    })
    .unwrap()
}

fn app_for(sim: &SimWeChat, app: &SimWebsiteApp, secret: &AppSecret) -> WebsiteApp {
    WebsiteApp::new(app.appid.clone(), secret.clone(), client_for(sim))
}

fn desktop() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(DESKTOP_UA)
        .timeout(STEP)
        .build()
        .unwrap()
}

async fn get(url: Url) -> reqwest::Response {
    bounded(desktop().get(url).send()).await.unwrap()
}

fn query_of(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

fn location(response: &reqwest::Response) -> Url {
    assert_eq!(response.status(), 302, "a redirect: {response:?}");
    Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

/// Opens the QR page of `app` as a desktop browser; in the simulator's non-interactive mode it
/// answers at once for `user` (as if scanned and confirmed). Returns the callback's query.
async fn scan(sim: &SimWeChat, app: &WebsiteApp, user: &SimUser) -> HashMap<String, String> {
    sim.set_next_user(user.clone());
    let url = app.authorize_url(&Url::parse(CALLBACK).unwrap(), &OAuthState::new("St4te"));
    let back = location(&get(url).await);
    assert_eq!(
        back.as_str().split('?').next(),
        Some(CALLBACK),
        "back on the callback"
    );
    query_of(&back)
}

async fn login(sim: &SimWeChat, app: &WebsiteApp, user: &SimUser) -> WebsiteLogin {
    let back = scan(sim, app, user).await;
    bounded(app.login(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap()
}

/// The user as the official account sees them, through the official account's own code
/// exchange (`sns/oauth2/access_token` with the account's secret).
async fn official_account_view(sim: &SimWeChat, user: &SimUser) -> (String, Option<String>) {
    let code = sim.issue_code(user.clone(), Scope::UserInfo, AuthMode::OfficialAccount);
    let token = bounded(client_for(sim).oa_code_exchange(
        &sim.config().authorizer_appid,
        &sim.config().official_account_secret,
        &code,
    ))
    .await
    .unwrap();
    (
        token.openid.as_str().to_owned(),
        token.unionid.map(|u| u.as_str().to_owned()),
    )
}

fn api_code(error: &WeChatError) -> i64 {
    error
        .code()
        .unwrap_or_else(|| panic!("an errcode: {error:?}"))
}

#[tokio::test]
async fn a_desktop_browser_logs_in_with_the_website_app() {
    let sim = start(SimConfig::default()).await;
    let listed = &sim.config().website_apps[0];
    let app = app_for(&sim, listed, &listed.secret);
    let user = sim.config().users[0].clone();

    // The QR page is WeChat's qrconnect, in the documented form.
    let url = app.authorize_url(&Url::parse(CALLBACK).unwrap(), &OAuthState::new("St4te"));
    assert_eq!(url.path(), "/connect/qrconnect");
    assert_eq!(url.fragment(), Some("wechat_redirect"));
    let q = query_of(&url);
    assert_eq!(q["scope"], "snsapi_login");
    assert_eq!(q["appid"], listed.appid.as_str());

    // A desktop browser (no MicroMessenger) is welcome there; the callback gets code + state.
    let back = scan(&sim, &app, &user).await;
    assert_eq!(back["state"], "St4te");
    assert!(!back.contains_key("appid"), "no component appid: {back:?}");
    assert_eq!(back.len(), 2, "{back:?}");
    let code = AuthorizationCode::new(&back["code"]);

    let token = bounded(app.exchange_code(&code)).await.unwrap();
    assert_eq!(token.scope, "snsapi_login");
    assert!(!token.is_snapshot_user);
    let info = bounded(app.user_info(&token)).await.unwrap();
    assert_eq!(info.nickname, user.nickname);
    assert_eq!(info.openid, token.openid);
    assert_eq!(sim.calls(Endpoint::QrConnect), 1);
    assert_eq!(sim.calls(Endpoint::WebsiteCodeExchange), 1);
    assert_eq!(sim.calls(Endpoint::OaCodeExchange), 0);

    // The website app's openid is its own; the unionid is the official account's (bound).
    let (oa_openid, oa_unionid) = official_account_view(&sim, &user).await;
    assert_ne!(token.openid.as_str(), oa_openid);
    assert_eq!(token.openid.as_str().len(), 28);
    assert_eq!(
        token.unionid.as_ref().map(|u| u.as_str().to_owned()),
        oa_unionid
    );
    assert!(oa_unionid.is_some());

    // The whole callback in one call, for another user and a fresh code.
    let alice = sim.config().users[1].clone();
    let logged = login(&sim, &app, &alice).await;
    assert_eq!(logged.appid, listed.appid);
    assert_eq!(logged.nickname, alice.nickname);
    assert_ne!(logged.openid.as_str(), alice.openid);
    assert_eq!(logged.unionid.map(|u| u.as_str().to_owned()), alice.unionid);
}

#[tokio::test]
async fn the_interactive_qr_page_stands_in_for_the_phone() {
    let sim = start(SimConfig {
        interactive: true,
        ..SimConfig::default()
    })
    .await;
    let listed = &sim.config().website_apps[0];
    let app = app_for(&sim, listed, &listed.secret);
    let url = app.authorize_url(&Url::parse(CALLBACK).unwrap(), &OAuthState::new("pick"));
    let page = get(url).await;
    assert_eq!(page.status(), 200);
    let body = bounded(page.text()).await.unwrap();
    assert!(body.contains("<svg"), "a QR-like box");
    assert!(body.contains(&listed.name), "the app's name");
    assert!(body.contains("模拟扫码并确认"), "{body}");
    let links: Vec<String> = body
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .collect();
    assert_eq!(links.len(), sim.config().users.len() + 1, "{links:?}");

    // "Scan and confirm" as Alice: back to the callback with a code for her.
    let back = location(&get(sim.base_url().join(&links[1]).unwrap()).await);
    let q = query_of(&back);
    assert_eq!(q["state"], "pick");
    let logged = bounded(app.login(&AuthorizationCode::new(&q["code"])))
        .await
        .unwrap();
    assert_eq!(logged.nickname, sim.config().users[1].nickname);
    // Refused on the phone: back without a code.
    let refused = location(&get(sim.base_url().join(links.last().unwrap()).unwrap()).await);
    assert_eq!(query_of(&refused).len(), 1);
    assert_eq!(query_of(&refused)["state"], "pick");
}

#[tokio::test]
async fn qrconnect_refuses_what_wechat_refuses_on_the_page() {
    let sim = start(SimConfig::default()).await;
    let listed = &sim.config().website_apps[0];
    let good = app_for(&sim, listed, &listed.secret)
        .authorize_url(&Url::parse(CALLBACK).unwrap(), &OAuthState::new("s"));
    let with = |name: &str, value: &str| {
        let mut url = good.clone();
        let pairs: Vec<(String, String)> = query_of(&good)
            .into_iter()
            .filter(|(key, _)| key != name)
            .collect();
        {
            let mut query = url.query_pairs_mut();
            query.clear();
            for key in ["appid", "redirect_uri", "response_type", "scope", "state"] {
                if key == name {
                    query.append_pair(key, value);
                } else if let Some((_, v)) = pairs.iter().find(|(k, _)| k == key) {
                    query.append_pair(key, v);
                }
            }
        }
        url
    };
    let oa_appid = sim.config().authorizer_appid.as_str().to_owned();
    for (name, value, expected) in [
        ("appid", "wx00000000000000ff", "appid"),
        // An official account's appid is no website app.
        ("appid", oa_appid.as_str(), "appid"),
        ("scope", "snsapi_userinfo", "scope"),
        ("scope", "snsapi_base", "scope"),
        ("response_type", "token", "response_type"),
        ("redirect_uri", "https://evil.example/cb", "redirect_uri"),
        ("redirect_uri", "not a url", "redirect_uri"),
        ("state", &"s".repeat(129), "state"),
    ] {
        let response = get(with(name, value)).await;
        assert_eq!(
            response.status(),
            200,
            "{name}={value}: a page, no redirect"
        );
        assert!(response.headers().get("location").is_none());
        assert_eq!(
            response.headers()["x-sim-error"],
            expected,
            "{name}={value}"
        );
    }
    // The good link, for contrast, redirects.
    assert_eq!(get(good).await.status(), 302);
}

#[tokio::test]
async fn a_wrong_secret_or_appid_is_a_configuration_error() {
    let sim = start(two_apps()).await;
    let listed = &sim.config().website_apps[0];
    let user = sim.config().users[0].clone();

    let wrong = app_for(&sim, listed, &AppSecret::new("not-the-website-secret"));
    let back = scan(&sim, &wrong, &user).await;
    let error = bounded(wrong.exchange_code(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40125, "{error:?}");
    assert_eq!(error.class(), ErrorClass::Configuration);
    // The other app's secret is as wrong as any.
    let crossed = app_for(&sim, listed, &unbound_app().secret);
    let back = scan(&sim, &crossed, &user).await;
    let error = bounded(crossed.exchange_code(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40125, "{error:?}");
    // The official account's secret neither.
    let oa = app_for(&sim, listed, &sim.config().official_account_secret);
    let back = scan(&sim, &oa, &user).await;
    let error = bounded(oa.exchange_code(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40125, "{error:?}");

    // A code of one website app cannot be exchanged by the other.
    let right = app_for(&sim, listed, &listed.secret);
    let back = scan(&sim, &right, &user).await;
    let other = unbound_app();
    let other = app_for(&sim, &other, &other.secret);
    let error = bounded(other.exchange_code(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40029, "{error:?}");
    // Nor by the official account, whose own codes the website app cannot use either.
    let error = bounded(client_for(&sim).oa_code_exchange(
        &sim.config().authorizer_appid,
        &sim.config().official_account_secret,
        &AuthorizationCode::new(&back["code"]),
    ))
    .await
    .unwrap_err();
    assert_eq!(api_code(&error), 40029, "{error:?}");
    let oa_code = sim.issue_code(user, Scope::UserInfo, AuthMode::OfficialAccount);
    let error = bounded(right.exchange_code(&oa_code)).await.unwrap_err();
    assert_eq!(api_code(&error), 40029, "{error:?}");
    // The website app's code is still good (nothing above used it).
    assert!(
        bounded(right.exchange_code(&AuthorizationCode::new(&back["code"])))
            .await
            .is_ok()
    );

    // A website appid the simulator does not know.
    let unknown = WebsiteApp::new(
        WebsiteAppId::new("wx00000000000000ff"),
        listed.secret.clone(),
        client_for(&sim),
    );
    let error = bounded(unknown.exchange_code(&AuthorizationCode::new("whatever")))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40013, "{error:?}");
    assert_eq!(error.class(), ErrorClass::Configuration);
}

#[tokio::test]
async fn a_code_works_once() {
    let sim = start(SimConfig::default()).await;
    let listed = &sim.config().website_apps[0];
    let app = app_for(&sim, listed, &listed.secret);
    let back = scan(&sim, &app, &sim.config().users[0].clone()).await;
    let code = AuthorizationCode::new(&back["code"]);
    let first = bounded(app.login(&code)).await.unwrap();
    let error = bounded(app.login(&code)).await.unwrap_err();
    assert_eq!(api_code(&error), 40163, "{error:?}");
    assert_eq!(error.class(), ErrorClass::Reauthorize);
    // A made-up code is invalid.
    let error = bounded(app.exchange_code(&AuthorizationCode::new("forged-code")))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), 40029, "{error:?}");
    // A new scan gives a new code for the same person.
    let again = login(&sim, &app, &sim.config().users[0].clone()).await;
    assert_eq!(again.openid, first.openid);
}

#[tokio::test]
async fn garbled_replies_are_bad_replies_to_retry() {
    let sim = start(SimConfig::default()).await;
    let listed = &sim.config().website_apps[0];
    let app = app_for(&sim, listed, &listed.secret);
    let user = sim.config().users[0].clone();

    for failure in [Failure::NotJson, Failure::Http500] {
        sim.inject(Endpoint::WebsiteCodeExchange, failure, 1);
        let back = scan(&sim, &app, &user).await;
        let error = bounded(app.exchange_code(&AuthorizationCode::new(&back["code"])))
            .await
            .unwrap_err();
        assert!(
            matches!(error, WeChatError::BadReply { .. }),
            "{failure:?}: {error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Retry);
    }
    // A garbled profile too; the code was used by then.
    sim.inject(Endpoint::UserInfo, Failure::NotJson, 1);
    let back = scan(&sim, &app, &user).await;
    let error = bounded(app.login(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert!(matches!(error, WeChatError::BadReply { .. }), "{error:?}");
    // WeChat busy is an errcode to retry.
    sim.inject(Endpoint::WebsiteCodeExchange, Failure::SystemBusy, 1);
    let back = scan(&sim, &app, &user).await;
    let error = bounded(app.exchange_code(&AuthorizationCode::new(&back["code"])))
        .await
        .unwrap_err();
    assert_eq!((api_code(&error), error.class()), (-1, ErrorClass::Retry));
    assert_eq!(sim.calls(Endpoint::WebsiteCodeExchange), 4);
}

#[tokio::test]
async fn the_openid_differs_per_app_and_the_unionid_is_shared_only_when_bound() {
    let sim = start(two_apps()).await;
    let bound = &sim.config().website_apps[0];
    let unbound = &sim.config().website_apps[1];
    assert!(bound.same_open_account && !unbound.same_open_account);
    let bound_app = app_for(&sim, bound, &bound.secret);
    let unbound_app = app_for(&sim, unbound, &unbound.secret);

    let mut seen_unbound_unionids = Vec::new();
    for user in sim.config().users.iter().filter(|u| u.unionid.is_some()) {
        let (oa_openid, oa_unionid) = official_account_view(&sim, user).await;
        let via_bound = login(&sim, &bound_app, user).await;
        let via_unbound = login(&sim, &unbound_app, user).await;

        // Three apps, three openids for one person.
        let openids = [
            oa_openid.as_str(),
            via_bound.openid.as_str(),
            via_unbound.openid.as_str(),
        ];
        for (i, a) in openids.iter().enumerate() {
            for b in &openids[i + 1..] {
                assert_ne!(a, b, "{}: {openids:?}", user.nickname);
            }
        }
        // Bound to the same Open Platform account: the same unionid.
        let oa_unionid = oa_unionid.expect("the official account is bound");
        assert_eq!(
            via_bound.unionid.as_ref().map(|u| u.as_str()),
            Some(oa_unionid.as_str())
        );
        // Another Open Platform account: a unionid of its own, not the official account's.
        let other = via_unbound
            .unionid
            .expect("a website login carries a unionid");
        assert_ne!(other.as_str(), oa_unionid);
        seen_unbound_unionids.push(other);

        // Stable: the same person logs in again under the same ids.
        let again = login(&sim, &unbound_app, user).await;
        assert_eq!(again.openid, via_unbound.openid);
        assert_eq!(again.unionid.as_ref(), seen_unbound_unionids.last());
    }
    assert_eq!(seen_unbound_unionids.len(), 2);
    assert_ne!(seen_unbound_unionids[0], seen_unbound_unionids[1]);
}
