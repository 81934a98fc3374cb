//! Who may log in (issue 14, item 6), end to end over real sockets: the simulated WeChat, the
//! layer over an echo service, allow and deny lists checked at the callback (a refused person
//! gets the 403 page and no session) and on every request with a session (a swap takes effect
//! on the next request, forward auth included); two accounts with their own lists; and
//! `--check` naming a bad list line by file and line.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{net::SocketAddr, path::PathBuf, process::Command};

use http::StatusCode;
use support::{Browser, Options, Reply, World};
use wechat_oauth_proxy::{
    access::{AccessLists, AccessRules, IdSet},
    ids::{AppId, OpenId},
    layer::{
        ForwardAuthSettings,
        tenant::{TenantHost, TenantRouting, TenantSite},
    },
    sim::{SimAuthorizer, SimConfig, SimUser},
    wechat::AuthorizerAppId,
};

const A: &str = "wxa1b2c3d4e5f60708";
const B: &str = "wxb2b2c3d4e5f60708";
const HOST_A: &str = "shop-a.test";
const HOST_B: &str = "shop-b.test";

/// 张三 (with unionid), Alice (with unionid), 李四 (without).
fn users() -> Vec<SimUser> {
    SimUser::defaults()
}

fn ids<T: From<String> + Eq + std::hash::Hash>(values: &[&str]) -> IdSet<T> {
    values.iter().map(|v| T::from((*v).to_owned())).collect()
}

/// Lists for one account only.
fn for_account(appid: &str, rules: AccessRules) -> AccessLists {
    AccessLists::new(AccessRules::default(), [(AppId::new(appid), rules)]).unwrap()
}

/// Walks a login as `user` from `/page` and returns every reply (the last is where it ended).
async fn attempt(world: &World, browser: &Browser, user: &SimUser, path: &str) -> Vec<Reply> {
    world.sim.set_next_user(user.clone());
    browser.navigate(browser.origin().join(path).unwrap()).await
}

/// The refusal page: 403, zh-CN first and English below, no session cookie, nothing about the
/// person (ids, nickname) or the login (code, state, appid).
fn assert_refusal_page(reply: &Reply, user: &SimUser) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(!reply.sets_session(), "{:?}", reply.set_cookies());
    let body = &reply.body;
    let zh = body.find("无权访问").expect("Chinese title");
    let en = body.find("Access denied").expect("English title");
    assert!(zh < en, "Chinese first: {body}");
    let mut private = vec![
        user.openid.as_str(),
        user.nickname.as_str(),
        A,
        B,
        "code=",
        "state=",
    ];
    private.extend(user.unionid.as_deref());
    for value in private {
        assert!(!body.contains(value), "the page names {value:?}: {body}");
    }
    assert!(!reply.reached_inner());
}

#[tokio::test]
async fn an_allowed_user_logs_in_and_others_get_403_and_no_session() {
    let world = World::start().await;
    let [zhang, alice, li] = <[SimUser; 3]>::try_from(users()).unwrap();
    world.layer.set_access_lists(for_account(
        A,
        AccessRules {
            allow_openids: Some(ids(&[&alice.openid])),
            ..AccessRules::default()
        },
    ));

    let browser = world.browser();
    let replies = attempt(&world, &browser, &alice, "/page").await;
    let last = replies.last().unwrap();
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    assert!(last.reached_inner());
    assert_eq!(world.session_count().await, 1);

    for refused in [&zhang, &li] {
        let browser = world.browser();
        let replies = attempt(&world, &browser, refused, "/page").await;
        assert_eq!(replies.len(), 3, "authorize, callback, refusal");
        assert_refusal_page(replies.last().unwrap(), refused);
        assert!(browser.session_cookie().is_none());
    }
    assert_eq!(
        world.session_count().await,
        1,
        "no session for a refused person"
    );
}

#[tokio::test]
async fn deny_wins_over_allow_at_the_callback() {
    let world = World::start().await;
    let zhang = users().remove(0);
    let unionid = zhang.unionid.clone().unwrap();
    world.layer.set_access_lists(for_account(
        A,
        AccessRules {
            allow_openids: Some(ids(&[&zhang.openid])),
            deny_unionids: ids(&[&unionid]),
            ..AccessRules::default()
        },
    ));
    let browser = world.browser();
    let replies = attempt(&world, &browser, &zhang, "/page").await;
    assert_refusal_page(replies.last().unwrap(), &zhang);
    assert_eq!(world.session_count().await, 0);
}

#[tokio::test]
async fn removing_a_person_takes_effect_on_the_next_request_with_a_session() {
    let world = World::start().await;
    let zhang = users().remove(0);
    let browser = world.browser();
    let replies = attempt(&world, &browser, &zhang, "/page").await;
    assert_eq!(replies.last().unwrap().status, StatusCode::OK);
    let calls = world.echo.calls();

    // Swapped in at runtime (what a reload does): the very next request is refused.
    let global_deny = AccessRules {
        deny_unionids: ids(&[zhang.unionid.as_deref().unwrap()]),
        ..AccessRules::default()
    };
    world
        .layer
        .set_access_lists(AccessLists::new(global_deny, []).unwrap());
    let page = browser.get(world.url("/page")).await;
    assert_refusal_page(&page, &zhang);
    let api = browser
        .get_with(world.url("/api/orders"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN, "{}", api.body);
    assert_eq!(api.json()["error"], "access_denied");
    assert!(api.json().get("login_url").is_none());
    let whoami = browser.get(world.url("/_wxauth/whoami")).await;
    assert_eq!(whoami.status, StatusCode::FORBIDDEN, "{}", whoami.body);
    assert_eq!(
        world.echo.calls(),
        calls,
        "nothing reached the inner service"
    );

    // The session was only refused, not ended: back on the list, back in.
    world.layer.set_access_lists(AccessLists::default());
    let page = browser.get(world.url("/page")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.reached_inner());
}

fn two_accounts() -> (SimConfig, TenantRouting) {
    let sim = SimConfig {
        redirect_hosts: vec!["127.0.0.1".into(), HOST_A.into(), HOST_B.into()],
        ..SimConfig::with_authorizers(vec![SimAuthorizer::new(AuthorizerAppId::new(B), "B 店")])
    };
    let site = |appid: &str, host: &str| TenantSite {
        appid: AuthorizerAppId::new(appid),
        hosts: vec![TenantHost::try_from(host.to_owned()).unwrap()],
        name: None,
        audience: None,
    };
    let routing = TenantRouting {
        sites: vec![site(A, HOST_A), site(B, HOST_B)],
        ..TenantRouting::default()
    };
    (sim, routing)
}

#[tokio::test]
async fn each_account_has_its_own_lists() {
    let (sim, routing) = two_accounts();
    let world = World::start_with(Options {
        sim,
        tenants: Some(routing),
        ..Options::default()
    })
    .await;
    let [zhang, alice, _] = <[SimUser; 3]>::try_from(users()).unwrap();
    // A admits 张三 by unionid; B admits Alice by her openid under B (not her openid under A).
    let alice_on_b = alice.for_account(B, A);
    assert_ne!(alice_on_b.openid, alice.openid);
    let lists = AccessLists::new(
        AccessRules::default(),
        [
            (
                AppId::new(A),
                AccessRules {
                    allow_unionids: Some(ids(&[zhang.unionid.as_deref().unwrap()])),
                    ..AccessRules::default()
                },
            ),
            (
                AppId::new(B),
                AccessRules {
                    allow_openids: Some(ids(&[&alice_on_b.openid])),
                    ..AccessRules::default()
                },
            ),
        ],
    )
    .unwrap();
    world.layer.set_access_lists(lists);
    let addr = SocketAddr::from(([127, 0, 0, 1], world.base.port().unwrap()));
    let on = |host: &str| Browser::for_host(host, addr);

    let admitted = attempt(&world, &on(HOST_A), &zhang, "/page").await;
    assert_eq!(admitted.last().unwrap().status, StatusCode::OK);
    // The same unionid on B: not on B's lists.
    let refused = attempt(&world, &on(HOST_B), &zhang, "/page").await;
    assert_refusal_page(refused.last().unwrap(), &zhang.for_account(B, A));

    let admitted = attempt(&world, &on(HOST_B), &alice, "/page").await;
    assert_eq!(admitted.last().unwrap().status, StatusCode::OK);
    // Alice's openid under B means nothing on A.
    let refused = attempt(&world, &on(HOST_A), &alice, "/page").await;
    assert_refusal_page(refused.last().unwrap(), &alice);
    assert_eq!(world.session_count().await, 2);
}

#[tokio::test]
async fn forward_auth_refuses_a_denied_session_without_identity_headers() {
    let world = World::start_with(Options {
        forward_auth: Some(ForwardAuthSettings {
            enabled: true,
            ..ForwardAuthSettings::default()
        }),
        ..Options::default()
    })
    .await;
    let zhang = users().remove(0);
    let browser = world.browser();
    attempt(&world, &browser, &zhang, "/page").await;
    let cookie = format!(
        "{}={}",
        support::SESSION,
        browser.cookie(support::SESSION).unwrap()
    );
    let original = world.url("/orders");
    let ask = || async {
        world
            .browser()
            .fresh()
            .get_with(
                world.url("/_wxauth/auth/request"),
                &[
                    ("x-original-method", "GET"),
                    ("x-original-url", original.as_str()),
                    ("cookie", cookie.as_str()),
                ],
            )
            .await
    };
    let before = ask().await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert!(!before.headers["x-wechat-jwt"].is_empty());

    world.layer.set_access_lists(for_account(
        A,
        AccessRules {
            deny_openids: ids::<OpenId>(&[&zhang.openid]),
            ..AccessRules::default()
        },
    ));
    let after = ask().await;
    assert_eq!(after.status, StatusCode::FORBIDDEN, "{}", after.body);
    assert!(
        after
            .headers
            .keys()
            .all(|name| !support::is_identity_header(name.as_str())),
        "{:?}",
        after.headers
    );
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wxauth-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_refuses_a_malformed_list_file_with_file_and_line() {
    let dir = temp_dir("check");
    std::fs::write(
        dir.join("staff.txt"),
        "# back-office staff\no9AgO5Kd5ggOC-bXrbNODIiE3bGY\n\no9AgO5Alice SimUser\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("banned.txt"),
        "o6_bmasdasdsad6_2sgVt7hMZOPfL # 张三\n",
    )
    .unwrap();
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let config = |staff: &str| {
        format!(
            "{base}\n[access]\ndeny_unionids_file = \"banned.txt\"\n\n[access.tenants.{A}]\nallow_openids_file = \"{staff}\"\n"
        )
    };
    let run = |text: String| {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_wechat-oauth-proxy"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap()
    };
    let bad = run(config("staff.txt"));
    assert_eq!(bad.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let staff = dir.join("staff.txt");
    assert!(
        stderr.contains(&format!("{}:4:", staff.display())),
        "file:line not reported:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("access.tenants.{A}.allow_openids_file")),
        "{stderr}"
    );

    std::fs::write(&staff, "o9AgO5Kd5ggOC-bXrbNODIiE3bGY\n").unwrap();
    let good = run(config("staff.txt"));
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let missing = run(config("nowhere.txt"));
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.txt"));

    // An account this configuration does not serve is refused too.
    let foreign = run(format!("{base}\n[access.tenants.wx0000000000000000]\n"));
    assert_eq!(foreign.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("access.tenants.wx0000000000000000"));
    let _ = std::fs::remove_dir_all(&dir);
}
