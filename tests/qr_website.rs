//! `qr.desktop = "website"` (issue 12, item 5) over real sockets: a desktop browser without a
//! session goes to the website app's `qrconnect` (scope `snsapi_login`) instead of the bridge,
//! the callback exchanges the code with the website app and opens the session through the
//! ordinary path; phones in WeChat keep the official account's OAuth; the configuration
//! refuses website mode without its appid and secret.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::HashMap, path::Path};

use http::StatusCode;
use support::{Browser, Options, World};
use url::Url;
use wechat_oauth_proxy::{
    config::{Config, ConfigError},
    sim::SimWebsiteApp,
};

const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x1800322c) NetType/WIFI Language/zh_CN";

async fn website_world() -> World {
    World::start_with(Options {
        website: true,
        ..Options::default()
    })
    .await
}

fn with_ua(world: &World, ua: &str) -> Browser {
    let mut browser = world.browser();
    browser.user_agent = Some(ua.to_owned());
    browser
}

fn query_of(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

#[tokio::test]
async fn a_desktop_navigation_goes_to_qrconnect_and_logs_in_as_the_website_app() {
    let world = website_world().await;
    let app = SimWebsiteApp::default_app();
    let desktop = with_ua(&world, DESKTOP_UA);

    let start = desktop.get(world.url("/app/page?x=1")).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.body);
    let qrconnect = start.location();
    assert!(
        qrconnect.path().ends_with("/connect/qrconnect"),
        "{qrconnect}"
    );
    assert!(
        qrconnect
            .as_str()
            .starts_with(world.sim.base_url().as_str())
    );
    let query = query_of(&qrconnect);
    assert_eq!(query["scope"], "snsapi_login");
    assert_eq!(query["appid"], app.appid.as_str());
    assert_eq!(
        query["redirect_uri"],
        world.url("/_wxauth/callback").as_str()
    );
    assert!(!query["state"].is_empty());

    // The simulator (non-interactive) redirects at once with its first user.
    let replies = desktop.navigate(qrconnect.as_str()).await;
    assert_eq!(
        replies.len(),
        3,
        "{:?}",
        replies.iter().map(|r| r.url.as_str()).collect::<Vec<_>>()
    );
    assert!(replies[1].sets_session(), "{}", replies[1].body);
    assert_eq!(replies[1].location().path(), "/app/page");
    let landed = replies[2].echoed().expect("the upstream is reached");
    let identity = landed.identity().expect("identity headers");
    let user = &world.sim.config().users[0];
    let seen_by_app = user.for_website(&app);
    assert_eq!(identity.openid.as_str(), seen_by_app.openid);
    assert_ne!(
        identity.openid.as_str(),
        user.openid,
        "not the official account's openid"
    );
    assert_eq!(
        identity.unionid.as_ref().map(|u| u.as_str().to_owned()),
        user.unionid,
        "bound to one open-platform account: the same unionid"
    );
    assert_eq!(identity.appid.as_str(), app.appid.as_str());
    assert_eq!(identity.nickname, user.nickname);

    // The session is this site's: the next request goes through without a login.
    let again = desktop.get(world.url("/app/other")).await;
    assert!(again.reached_inner(), "{} {}", again.status, again.body);
}

#[tokio::test]
async fn a_forged_state_is_refused_and_opens_no_session() {
    let world = website_world().await;
    let desktop = with_ua(&world, DESKTOP_UA);
    let qrconnect = desktop.get(world.url("/app")).await.location();
    let to_callback = desktop.get(qrconnect).await;
    assert_eq!(to_callback.status, StatusCode::FOUND);
    let mut callback = to_callback.location();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            let v = if k == "state" {
                "Forged0State1Of2Someone3Else45678".to_owned()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = desktop.get(callback).await;
    assert!(
        refused.status.is_client_error(),
        "{} {}",
        refused.status,
        refused.body
    );
    assert!(!refused.sets_session());
    assert_eq!(world.session_count().await, 0);
}

#[tokio::test]
async fn a_phone_in_wechat_keeps_the_official_accounts_oauth() {
    let world = website_world().await;
    let phone = with_ua(&world, WECHAT_UA);
    let replies = phone.login(world.url("/app")).await;
    let identity = replies[3].echoed().unwrap().identity().unwrap();
    assert_eq!(identity.openid.as_str(), world.sim.config().users[0].openid);
    assert_eq!(
        identity.appid.as_str(),
        world.sim.config().authorizer_appid.as_str()
    );
}

/// An official-account configuration with `[qr] desktop = "website"` and `website` appended.
fn config_text(website: &str) -> String {
    [
        "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://auth.example.com\"\nupstream = \"http://127.0.0.1:3000\"",
        "[wechat]\nmode = \"official_account\"\nappid = \"wxa1b2c3d4e5f60708\"\nofficial_account_secret = \"oa-secret-value-1234\"",
        "[session]\nmaster_secret = \"0123456789abcdef0123456789abcdef-master\"",
        "[qr]\ndesktop = \"website\"",
        website,
    ]
    .join("\n\n")
}

fn problem_keys(text: &str, env: &HashMap<String, String>) -> Vec<String> {
    match Config::from_toml_str(text, Path::new("."), env) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn website_mode_needs_its_appid_and_secret() {
    let none = HashMap::new();
    let no_secret = config_text("[qr.website]\nappid = \"wx5e1b2c3d4e5f6071\"");
    assert_eq!(problem_keys(&no_secret, &none), ["qr.website.secret"]);
    let no_appid = config_text("[qr.website]\nsecret = \"sim_website_app_secret_0123456789\"");
    assert_eq!(problem_keys(&no_appid, &none), ["qr.website.appid"]);

    // The secret from the environment, like the other secrets; the app builds the layer.
    let env = HashMap::from([(
        "WXAUTH_QR_WEBSITE_SECRET".to_owned(),
        "sim_website_app_secret_0123456789".to_owned(),
    )]);
    let (config, secrets) = Config::from_toml_str(&no_secret, Path::new("."), &env).unwrap();
    assert!(config.qr.website_app(&secrets).is_some());
    wechat_oauth_proxy::app::check(&config, &secrets).unwrap();
}
