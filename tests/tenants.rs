//! Many official accounts behind one platform (issue 11), end to end over real sockets: the
//! simulated WeChat with several accounts, the layer over an echo service (tenants by host,
//! host pattern and path prefix), and the sidecar (`app::run` with `[tenants]`).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;
use support::{Browser, Options, Reply, World, bounded, jwt_issuer};
use url::Url;
use wechat_oauth_proxy::{
    layer::tenant::{
        HostPattern, OnUnauthorized, PathPrefix, TenantHost, TenantRouting, TenantSite,
    },
    sim::{DEFAULT_FUNC_IDS, Endpoint, Failure, SimAuthorizer, SimConfig, SimUser},
    wechat::{
        AuthorizerAppId,
        tenants::{TenantMode, TenantSettings, TenantStatus},
    },
};

const A: &str = "wxa1b2c3d4e5f60708";
const B: &str = "wxb2b2c3d4e5f60708";
const C: &str = "wxc3c3c3d4e5f60708";
const D: &str = "wxd4d4d4d4e5f60708";
const NOBODY: &str = "wxdddddddddddddddd";
const HOST_A: &str = "shop-a.test";
const HOST_B: &str = "shop-b.test";

fn appid(s: &str) -> AuthorizerAppId {
    AuthorizerAppId::new(s)
}

fn pattern_host(appid: &str) -> String {
    format!("{appid}.wx.test")
}

/// The simulator with accounts A (primary) and B authorized, plus `more`; every test host is a
/// valid redirect host.
fn sim(more: Vec<SimAuthorizer>) -> SimConfig {
    let mut accounts = vec![SimAuthorizer::new(appid(B), "B 店")];
    accounts.extend(more);
    let mut redirect_hosts = vec!["127.0.0.1".to_owned(), HOST_A.to_owned(), HOST_B.to_owned()];
    redirect_hosts.extend([A, B, C, D, NOBODY].map(pattern_host));
    SimConfig {
        redirect_hosts,
        ..SimConfig::with_authorizers(accounts)
    }
}

fn site(id: &str, hosts: &[&str], audience: Option<&str>) -> TenantSite {
    TenantSite {
        appid: appid(id),
        hosts: hosts
            .iter()
            .map(|h| TenantHost::try_from((*h).to_owned()).unwrap())
            .collect(),
        name: None,
        audience: audience.map(str::to_owned),
    }
}

fn by_host() -> TenantRouting {
    TenantRouting {
        sites: vec![site(A, &[HOST_A], Some("shop-a")), site(B, &[HOST_B], None)],
        ..TenantRouting::default()
    }
}

fn by_pattern() -> TenantRouting {
    TenantRouting {
        sites: vec![site(A, &[], None), site(B, &[], None)],
        host_pattern: Some(HostPattern::try_from("{appid}.wx.test".to_owned()).unwrap()),
        ..TenantRouting::default()
    }
}

fn by_prefix() -> TenantRouting {
    TenantRouting {
        sites: vec![site(A, &[], None), site(B, &[], None)],
        path_prefix: Some(PathPrefix::try_from("/t/{appid}".to_owned()).unwrap()),
        ..TenantRouting::default()
    }
}

async fn world(routing: TenantRouting, sim: SimConfig, settings: Option<TenantSettings>) -> World {
    World::start_with(Options {
        sim,
        tenants: Some(routing),
        tenant_settings: settings,
        ..Options::default()
    })
    .await
}

fn addr(world: &World) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], world.base.port().expect("the proxy's port")))
}

/// A browser for `host` on the world's proxy.
fn browser(world: &World, host: &str) -> Browser {
    Browser::for_host(host, addr(world))
}

fn on(browser: &Browser, path: &str) -> Url {
    browser.origin().join(path).unwrap()
}

/// Logs in at `path` and returns the final (echo) reply.
async fn login(browser: &Browser, path: &str) -> Reply {
    let replies = browser.login(on(browser, path)).await;
    replies.into_iter().last().unwrap()
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first user as official account `id` sees them.
fn openid_under(world: &World, id: &str) -> String {
    let user = SimUser::defaults().remove(0);
    world.sim.user_for(&appid(id), &user).openid
}

async fn wait_status(world: &World, id: &str, wanted: TenantStatus) {
    for _ in 0..400 {
        if world.wechat.tenants().status(&appid(id)) == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{id} never became {wanted}: {}",
        world.wechat.tenants().status(&appid(id))
    );
}

fn assert_page(reply: &Reply, status: StatusCode, text: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(reply.body.contains(text), "{text:?} in {}", reply.body);
    assert!(reply.raw_location().is_none(), "never a login redirect");
    assert!(!reply.sets_session());
}

#[tokio::test]
async fn two_tenants_by_host_each_get_their_own_openid_and_audience() {
    let world = world(by_host(), sim(vec![]), None).await;
    let a = browser(&world, HOST_A);
    let b = browser(&world, HOST_B);

    // The authorize URL names the host's account and its own callback host.
    let authorize = a.start_login(on(&a, "/page")).await;
    assert_eq!(query(&authorize, "appid").as_deref(), Some(A));
    let redirect = Url::parse(&query(&authorize, "redirect_uri").unwrap()).unwrap();
    assert_eq!(redirect.host_str(), Some(HOST_A));
    assert_eq!(redirect.path(), "/_wxauth/callback");

    let landed_a = login(&a.fresh(), "/page").await;
    let landed_a_echo = landed_a.echoed().expect("reached the inner service");
    let who_a = landed_a_echo.identity().unwrap();
    assert_eq!(who_a.appid.as_str(), A);
    assert_eq!(who_a.openid.as_str(), openid_under(&world, A));
    let claims = jwt_issuer()
        .verify_for(&landed_a_echo.jwt(), "shop-a")
        .expect("A's JWT carries A's audience");
    assert_eq!(claims.appid.as_str(), A);
    assert!(jwt_issuer().verify(&landed_a_echo.jwt()).is_err());

    let landed_b = login(&b, "/page").await;
    let who_b = landed_b.echoed().unwrap().identity().unwrap();
    assert_eq!(who_b.appid.as_str(), B);
    assert_eq!(who_b.openid.as_str(), openid_under(&world, B));
    assert_ne!(
        who_a.openid, who_b.openid,
        "the same user, another openid per account"
    );
    assert_eq!(who_a.unionid, who_b.unionid);
    let claims = jwt_issuer()
        .verify(&landed_b.echoed().unwrap().jwt())
        .expect("B has the default audience");
    assert_eq!(claims.appid.as_str(), B);
}

#[tokio::test]
async fn a_session_of_one_tenant_is_no_session_for_another_and_stays_untouched() {
    let world = world(by_host(), sim(vec![]), None).await;
    let a = browser(&world, HOST_A);
    login(&a, "/page").await;
    let cookie = a.cookie(support::SESSION).unwrap();

    // A's cookie carried to B's host: no session there (a login for B), never A's identity.
    let b = browser(&world, HOST_B);
    b.set_cookie(support::SESSION, &cookie);
    let reply = b.get(on(&b, "/page")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(query(&reply.location(), "appid").as_deref(), Some(B));
    let who = b.get(on(&b, "/_wxauth/whoami")).await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED, "{}", who.body);
    let api = b
        .get_with(on(&b, "/api/x"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    // Logging out on B does not end A's session.
    let out = b.get(on(&b, "/_wxauth/logout")).await;
    assert_eq!(out.status, StatusCode::FOUND);

    let who = a.get(on(&a, "/_wxauth/whoami")).await;
    assert_eq!(who.status, StatusCode::OK, "A's session untouched");
    assert_eq!(who.json()["appid"], A);

    // Upper-case, trailing-dot and port spellings of A's host are A's host.
    let port = addr(&world).port();
    for host in [
        format!("SHOP-A.TEST:{port}"),
        format!("Shop-A.Test.:{port}"),
    ] {
        let reply = a
            .get_with(on(&a, "/page"), &[("host", host.as_str())])
            .await;
        let echoed = reply
            .echoed()
            .unwrap_or_else(|| panic!("{host}: {}", reply.body));
        assert_eq!(echoed.identity().unwrap().appid.as_str(), A);
    }
    // ... and an upper-case B host with A's cookie is still B: no session.
    let reply = a
        .get_with(on(&a, "/page"), &[("host", &format!("SHOP-B.TEST:{port}"))])
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(query(&reply.location(), "appid").as_deref(), Some(B));

    // A host that serves no account: 404, never a login; the platform routes still answer.
    let other = browser(&world, "other.test");
    assert_page(
        &other.get(on(&other, "/page")).await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );
    let json = other
        .get_with(
            on(&other, "/_wxauth/login"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(json.status, StatusCode::NOT_FOUND);
    assert_eq!(json.json()["error"], "unknown_tenant");
    assert_eq!(
        other.get(on(&other, "/_wxauth/health")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        other.get(on(&other, "/_wxauth/jwks.json")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        other.get(on(&other, "/_wxauth/ready")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn path_prefix_tenants_share_one_cookie_jar_but_not_sessions() {
    let world = world(by_prefix(), sim(vec![]), None).await;
    let browser = world.browser();
    let landed = login(&browser, &format!("/t/{A}/orders?x=1")).await;
    let echoed = landed.echoed().unwrap();
    assert_eq!(
        echoed.path(),
        format!("/t/{A}/orders"),
        "the upstream sees the whole path"
    );
    assert_eq!(echoed.identity().unwrap().appid.as_str(), A);

    // Same jar, B's prefix: no session for B (a login for B); A's session untouched.
    let reply = browser.get(on(&browser, &format!("/t/{B}/orders"))).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let authorize = reply.location();
    assert_eq!(query(&authorize, "appid").as_deref(), Some(B));
    let redirect = Url::parse(&query(&authorize, "redirect_uri").unwrap()).unwrap();
    assert_eq!(redirect.path(), format!("/t/{B}/_wxauth/callback"));
    let who = browser
        .get(on(&browser, &format!("/t/{B}/_wxauth/whoami")))
        .await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    let who = browser
        .get(on(&browser, &format!("/t/{A}/_wxauth/whoami")))
        .await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.json()["appid"], A);
    let again = browser.get(on(&browser, &format!("/t/{A}/orders"))).await;
    assert!(again.reached_inner());

    // Skip rules apply below the tenant's mount.
    let public = world
        .browser()
        .get(on(&browser, &format!("/t/{B}/public/x")))
        .await;
    assert!(public.reached_inner(), "{}", public.body);

    // No prefix, an unknown appid, an upper-case appid: no tenant.
    for path in [
        "/orders".to_owned(),
        format!("/t/{NOBODY}/x"),
        format!("/t/{}/x", A.to_uppercase()),
    ] {
        assert_page(
            &browser.get(on(&browser, &path)).await,
            StatusCode::NOT_FOUND,
            "Unknown account",
        );
    }
}

#[tokio::test]
async fn a_callback_for_another_tenant_is_refused_before_anything_is_consumed() {
    let world = world(by_prefix(), sim(vec![]), None).await;
    let browser = world.browser();
    let authorize = browser
        .start_login(on(&browser, &format!("/t/{A}/x")))
        .await;
    let callback = browser.authorize(authorize).await;
    assert_eq!(callback.path(), format!("/t/{A}/_wxauth/callback"));
    assert_eq!(query(&callback, "appid").as_deref(), Some(A));

    // WeChat's appid names another account.
    let mut foreign = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "appid" {
                B.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    foreign.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = browser.get(foreign.as_str()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("appid_mismatch") || refused.body.contains("登录请求无效"));
    assert!(!refused.sets_session());

    // The callback comes back on another tenant's prefix.
    let mut elsewhere = callback.clone();
    elsewhere.set_path(&format!("/t/{B}/_wxauth/callback"));
    let refused = browser.get(elsewhere.as_str()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(!refused.sets_session());

    // Nothing was consumed: the genuine callback still completes the login for A.
    let done = browser.get(callback.as_str()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    let who = browser
        .get(on(&browser, &format!("/t/{A}/_wxauth/whoami")))
        .await;
    assert_eq!(who.json()["appid"], A);
}

#[tokio::test]
async fn host_pattern_resolves_known_accounts_only() {
    let world = world(by_pattern(), sim(vec![]), None).await;
    let a = browser(&world, &pattern_host(A));
    let landed = login(&a, "/page").await;
    assert_eq!(
        landed.echoed().unwrap().identity().unwrap().appid.as_str(),
        A
    );

    // Upper case is the same host.
    let port = addr(&world).port();
    let upper = format!("{}:{port}", pattern_host(A).to_uppercase());
    let fresh = a.fresh();
    let reply = fresh
        .get_with(on(&fresh, "/page"), &[("host", upper.as_str())])
        .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert_eq!(query(&reply.location(), "appid").as_deref(), Some(A));

    // An appid-shaped label the registry does not know, or no appid at all: 404.
    for host in [
        pattern_host(NOBODY),
        "www.wx.test".to_owned(),
        format!("x.{}", pattern_host(A)),
    ] {
        let other = browser(&world, &host);
        assert_page(
            &other.get(on(&other, "/page")).await,
            StatusCode::NOT_FOUND,
            "未知的公众号",
        );
    }

    // A revoked account (its `unauthorized` push went through the events route): 403 page.
    let b = browser(&world, &pattern_host(B));
    assert_eq!(b.get(on(&b, "/page")).await.status, StatusCode::FOUND);
    bounded(world.sim.revoke_account(&appid(B))).await.unwrap();
    wait_status(&world, B, TenantStatus::Revoked).await;
    assert_page(
        &b.get(on(&b, "/page")).await,
        StatusCode::FORBIDDEN,
        "公众号已取消授权",
    );
    let json = b
        .get_with(on(&b, "/_wxauth/login"), &[("accept", "application/json")])
        .await;
    assert_eq!(json.status, StatusCode::FORBIDDEN);
    assert_eq!(json.json()["error"], "tenant_revoked");
    // /ready lists the tenant problem but stays ready.
    let (status, ready) = world.ready().await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["tenant_problems"], 1);
    assert_eq!(ready["tenants"][0]["appid"], B);
    assert_eq!(ready["tenants"][0]["status"], "revoked");
    // A is unaffected.
    assert!(a.get(on(&a, "/page")).await.reached_inner());
}

#[tokio::test]
async fn unauthorized_during_a_login_fails_it_cleanly() {
    let world = world(by_host(), sim(vec![]), None).await;
    let b = browser(&world, HOST_B);
    let authorize = b.start_login(on(&b, "/page")).await;
    let callback = b.authorize(authorize).await;
    bounded(world.sim.revoke_account(&appid(B))).await.unwrap();
    wait_status(&world, B, TenantStatus::Revoked).await;
    let reply = b.get(callback.as_str()).await;
    assert_page(
        &reply,
        StatusCode::FORBIDDEN,
        "Account no longer authorized",
    );
    assert_eq!(world.session_count().await, 0);
    // A new login for B is refused up front.
    assert_page(
        &b.get(on(&b, "/page")).await,
        StatusCode::FORBIDDEN,
        "公众号已取消授权",
    );
}

#[tokio::test]
async fn end_sessions_ends_the_revoked_tenants_sessions_only() {
    let routing = TenantRouting {
        on_unauthorized: OnUnauthorized::EndSessions,
        ..by_host()
    };
    let world = world(routing, sim(vec![]), None).await;
    let a = browser(&world, HOST_A);
    let b = browser(&world, HOST_B);
    login(&a, "/page").await;
    login(&b, "/page").await;
    assert_eq!(world.session_count().await, 2);

    bounded(world.sim.revoke_account(&appid(A))).await.unwrap();
    let mut ended = false;
    for _ in 0..400 {
        if a.get(on(&a, "/_wxauth/whoami")).await.status == StatusCode::UNAUTHORIZED {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ended, "A's session ended after its unauthorized push");
    assert_eq!(
        b.get(on(&b, "/_wxauth/whoami")).await.status,
        StatusCode::OK
    );
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn block_login_keeps_existing_sessions_of_a_revoked_tenant() {
    let world = world(by_host(), sim(vec![]), None).await;
    let a = browser(&world, HOST_A);
    login(&a, "/page").await;
    bounded(world.sim.revoke_account(&appid(A))).await.unwrap();
    wait_status(&world, A, TenantStatus::Revoked).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.get(on(&a, "/page")).await.reached_inner());
    assert_page(
        &a.fresh().get(on(&a, "/page")).await,
        StatusCode::FORBIDDEN,
        "公众号已取消授权",
    );
}

#[tokio::test]
async fn static_mode_ignores_pushes_for_other_accounts_and_survives_a_failing_query_auth() {
    let world = world(by_pattern(), sim(vec![]), None).await;
    // An account that is not a tenant authorizes the platform: the push through the events
    // route is answered `success` (the simulator checks it) and changes nothing.
    bounded(world.sim.authorize_account(&appid(C), &DEFAULT_FUNC_IDS))
        .await
        .expect("push answered success");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        world.wechat.tenants().status(&appid(C)),
        TenantStatus::Unknown
    );
    let c = browser(&world, &pattern_host(C));
    assert_page(
        &c.get(on(&c, "/page")).await,
        StatusCode::NOT_FOUND,
        "Unknown account",
    );

    // api_query_auth hangs, then fails: the push is still answered at once, the tenant keeps
    // its state and its logins.
    for failure in [Failure::Hang, Failure::Http500] {
        world.sim.inject(Endpoint::QueryAuth, failure, 10);
        let pushed = tokio::time::timeout(
            Duration::from_secs(5),
            world.sim.update_account(&appid(B), &DEFAULT_FUNC_IDS),
        )
        .await
        .expect("the push is answered without waiting for api_query_auth");
        pushed.expect("push answered success");
        assert!(world.wechat.tenants().status(&appid(B)).allows_login());
        let b = browser(&world, &pattern_host(B));
        let landed = login(&b, "/page").await;
        assert_eq!(
            landed.echoed().unwrap().identity().unwrap().appid.as_str(),
            B
        );
        world.sim.clear_failures();
    }
}

#[tokio::test]
async fn dynamic_mode_serves_accounts_as_they_authorize() {
    let settings = TenantSettings::new(TenantMode::Dynamic, vec![appid(A)]);
    let more = vec![
        SimAuthorizer::new(appid(C), "C 店").unauthorized(),
        SimAuthorizer::new(appid(D), "D 店").unauthorized(),
    ];
    let routing = TenantRouting {
        sites: vec![site(A, &[], None)],
        ..by_pattern()
    };
    let world = world(routing, sim(more), Some(settings)).await;
    let c = browser(&world, &pattern_host(C));
    assert_page(
        &c.get(on(&c, "/page")).await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );

    // C authorizes with the web permission set: learned from the push, then usable.
    bounded(world.sim.authorize_account(&appid(C), &DEFAULT_FUNC_IDS))
        .await
        .unwrap();
    wait_status(&world, C, TenantStatus::Active).await;
    let landed = login(&c, "/page").await;
    let who = landed.echoed().unwrap().identity().unwrap();
    assert_eq!(who.appid.as_str(), C);
    assert_eq!(who.openid.as_str(), openid_under(&world, C));

    // D authorizes without set 4: known, but no web login (403, not WeChat's 10015).
    bounded(world.sim.authorize_account(&appid(D), &[1, 2, 3]))
        .await
        .unwrap();
    wait_status(&world, D, TenantStatus::NoWebPermission).await;
    let d = browser(&world, &pattern_host(D));
    assert_page(
        &d.get(on(&d, "/page")).await,
        StatusCode::FORBIDDEN,
        "网页服务",
    );
}

#[tokio::test]
async fn two_hosts_in_one_request_are_refused() {
    let world = world(by_host(), sim(vec![]), None).await;
    let a = browser(&world, HOST_A);
    let port = addr(&world).port();
    // Absolute-form target naming B while Host names A.
    let reply = a
        .get_with(on(&a, "/page"), &[("host", &format!("{HOST_B}:{port}"))])
        .await;
    // (reqwest sends origin-form; the Host override alone makes it B's request.)
    assert_eq!(query(&reply.location(), "appid").as_deref(), Some(B));
    let raw = raw_request(
        addr(&world),
        &format!(
            "GET http://{HOST_A}:{port}/page HTTP/1.1\r\nHost: {HOST_B}:{port}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let raw = raw_request(
        addr(&world),
        &format!(
            "GET /page HTTP/1.1\r\nHost: {HOST_A}:{port}\r\nHost: {HOST_A}:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
}

async fn raw_request(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let mut out = Vec::new();
    bounded(stream.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Picks the first test user on the simulator's interactive consent page; returns the
/// callback URL it redirects to.
async fn choose_first_user(browser: &Browser, authorize: Url) -> Url {
    let page = browser.get(authorize.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let start = page
        .body
        .find("href=\"/_sim/authorize/choose?")
        .expect("a user link on the consent page");
    let href = &page.body[start + 6..];
    let href = href[..href.find('"').unwrap()].replace("&amp;", "&");
    browser.authorize(authorize.join(&href).unwrap()).await
}

/// The shipped development configuration through the whole sidecar (`app::run`: the simulated
/// WeChat, the demo upstream): two accounts on 127.0.0.1 and localhost, one test user, two
/// openids.
#[tokio::test]
async fn the_sidecar_serves_the_shipped_two_account_demo() {
    use std::collections::HashMap;
    use wechat_oauth_proxy::{app, config::Config};

    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let (mut config, secrets) =
        Config::from_toml_str(&text, std::path::Path::new("."), &HashMap::new()).unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let state = support::TempDir::new("tenants-sidecar");
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], port));
    config.server.public_url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    config.server.state_dir = state.0.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::run(config, secrets, async {
        let _ = stopped.await;
    }));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let one = Browser::for_host("127.0.0.1", addr);
    let two = Browser::for_host("localhost", addr);
    let mut ready = false;
    for _ in 0..400 {
        if server.is_finished() {
            break;
        }
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            reqwest::get(format!("http://127.0.0.1:{port}/_wxauth/ready")),
        )
        .await;
        if let Ok(Ok(reply)) = answered {
            if reply.status() == StatusCode::OK {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the sidecar became ready");

    let mut seen = Vec::new();
    for (browser, appid) in [(&one, A), (&two, B)] {
        let authorize = browser.start_login(on(browser, "/hello")).await;
        assert_eq!(query(&authorize, "appid").as_deref(), Some(appid));
        let callback = choose_first_user(browser, authorize).await;
        assert_eq!(callback.host_str(), browser.origin().host_str());
        let back = browser.get(callback.as_str()).await;
        assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
        assert!(back.sets_session());
        let who = browser.get(on(browser, "/_wxauth/whoami")).await;
        assert_eq!(who.status, StatusCode::OK, "{}", who.body);
        let who = who.json();
        assert_eq!(who["appid"], appid);
        assert_eq!(who["nickname"], "张三");
        let page = browser.get(on(browser, "/hello")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(appid), "the demo page shows the account");
        seen.push(who["openid"].as_str().unwrap().to_owned());
    }
    assert_ne!(seen[0], seen[1], "one test user, one openid per account");

    // A name that serves no account.
    let other = Browser::for_host("other.localhost", addr);
    assert_page(
        &other.get(on(&other, "/hello")).await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );

    let _ = stop.send(());
    bounded(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn query_selection_is_opt_in_and_the_session_names_the_account_afterwards() {
    let routing = TenantRouting {
        allow_query_appid: true,
        ..by_host()
    };
    let world = world(routing, sim(vec![]), None).await;
    let platform = world.browser();
    // The platform's own host serves no account by itself.
    assert_page(
        &platform.get(world.url("/page")).await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );
    // ?appid on the login endpoint only, for known accounts only.
    assert_page(
        &platform
            .get(world.url(&format!("/_wxauth/login?appid={NOBODY}")))
            .await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );
    assert_page(
        &platform.get(world.url(&format!("/page?appid={B}"))).await,
        StatusCode::NOT_FOUND,
        "未知的公众号",
    );
    let replies = platform
        .login(world.url(&format!("/_wxauth/login?appid={B}&return=%2Fpage")))
        .await;
    let authorize = replies[0].location();
    assert_eq!(query(&authorize, "appid").as_deref(), Some(B));
    let redirect = Url::parse(&query(&authorize, "redirect_uri").unwrap()).unwrap();
    assert_eq!(redirect.host_str(), Some("127.0.0.1"));
    let landed = replies.last().unwrap();
    let who = landed
        .echoed()
        .expect("the session names its account")
        .identity()
        .unwrap();
    assert_eq!(who.appid.as_str(), B);
    // B's session is still no session on A's host.
    let a = browser(&world, HOST_A);
    a.set_cookie(
        support::SESSION,
        &platform.cookie(support::SESSION).unwrap(),
    );
    let reply = a.get(on(&a, "/page")).await;
    assert_eq!(query(&reply.location(), "appid").as_deref(), Some(A));
}

/// Forward auth (nginx `auth_request`) decides per account exactly as the layer does: the
/// original request's host names the account; another account's session is no session there.
#[tokio::test]
async fn forward_auth_resolves_the_original_requests_account() {
    use wechat_oauth_proxy::layer::ForwardAuthSettings;
    let world = World::start_with(Options {
        sim: sim(vec![]),
        tenants: Some(by_host()),
        forward_auth: Some(ForwardAuthSettings {
            enabled: true,
            ..ForwardAuthSettings::default()
        }),
        ..Options::default()
    })
    .await;
    let a = browser(&world, HOST_A);
    login(&a, "/page").await;
    let session = format!(
        "{}={}",
        support::SESSION,
        a.cookie(support::SESSION).unwrap()
    );
    let port = addr(&world).port();
    let ask = |host: &str| {
        let url = format!("http://{host}:{port}/orders");
        let session = session.clone();
        let platform = world.browser().fresh();
        let check = world.url("/_wxauth/auth/request");
        async move {
            platform
                .get_with(
                    check,
                    &[
                        ("x-original-method", "GET"),
                        ("x-original-url", url.as_str()),
                        ("cookie", session.as_str()),
                    ],
                )
                .await
        }
    };
    let on_a = ask(HOST_A).await;
    assert_eq!(on_a.status, StatusCode::OK, "{}", on_a.body);
    let jwt = on_a.headers["x-wechat-jwt"].to_str().unwrap().to_owned();
    let claims = jwt_issuer().verify_for(&jwt, "shop-a").unwrap();
    assert_eq!(claims.appid.as_str(), A);

    let on_b = ask(HOST_B).await;
    assert_eq!(on_b.status, StatusCode::UNAUTHORIZED, "{}", on_b.body);
    let login_url = on_b.headers["x-wechat-login-url"].to_str().unwrap();
    assert!(
        login_url.starts_with(&format!("http://{HOST_B}:{port}/_wxauth/login?")),
        "{login_url}"
    );

    let elsewhere = ask("other.test").await;
    assert_eq!(
        elsewhere.status,
        StatusCode::NOT_FOUND,
        "{}",
        elsewhere.body
    );
}
