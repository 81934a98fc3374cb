//! Login flows under attack and under a slow WeChat, over real loopback sockets (issue 9):
//!
//! - a flood of anonymous login starts cannot cancel a real user's pending login (pending flows
//!   live in the browser's flow cookie, the server stores nothing at a login start);
//! - a state is redeemed once, is useless in another browser and dies with its flow's lifetime;
//! - the whole callback runs under one deadline (`wechat.login_deadline_ms`) even when WeChat
//!   hangs on `api_component_token`;
//! - without a `component_verify_ticket` a login start answers "platform not ready" (503,
//!   `Retry-After`) before the user is sent to WeChat's consent page.
//!
//! Every network step is bounded (`support::bounded`), every loop has a fixed bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::{StatusCode, header};
use url::Url;
use wechat_oauth_proxy::{
    session::SessionSettings,
    sim::{Endpoint, Failure},
    wechat::token::TokenSettings,
};

use support::{Browser, FLOW, Options, World, bounded};

/// `url` without query parameter `name`.
fn without_param(url: &Url, name: &str) -> Url {
    let mut out = url.clone();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(url.query_pairs().filter(|(k, _)| k != name));
    out
}

/// A login started and consented to in `browser`: the callback URL WeChat sends it back to.
async fn pending_login(world: &World, browser: &Browser, path: &str) -> Url {
    let authorize = browser.start_login(world.url(path)).await;
    browser.authorize(authorize).await
}

// ---------------------------------------------------------------------------------------------
// Finding 3: a login-start flood
// ---------------------------------------------------------------------------------------------

/// Small bound on what the store keeps for login flows, so a flood ten times larger is quick.
const FLOW_CAPACITY: u64 = 50;
/// Login starts in the flood.
const FLOOD: usize = 500;
/// Concurrent flooding clients.
const FLOODERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_start_flood_cannot_cancel_a_pending_login() {
    let world = World::start_with(Options {
        session: SessionSettings {
            consumed_capacity: FLOW_CAPACITY,
            ..SessionSettings::default()
        },
        ..Options::default()
    })
    .await;
    let victim = world.browser();
    let callback = pending_login(&world, &victim, "/orders?id=7").await;

    // Cookie-less clients start logins, ten times the store's bound, through both entries.
    let template = victim.fresh();
    let mut flooders = tokio::task::JoinSet::new();
    for f in 0..FLOODERS {
        let client = template.fresh();
        let base = world.base.clone();
        flooders.spawn(async move {
            for i in (f..FLOOD).step_by(FLOODERS) {
                let path = if i % 2 == 0 {
                    format!("/flood/{i}")
                } else {
                    format!("/_wxauth/login?return=/flood/{i}")
                };
                let url = base.join(&path).unwrap();
                // A fresh jar per request: nothing is carried from one start to the next.
                let reply = client.fresh().get(url).await;
                assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
            }
        });
    }
    while let Some(done) = bounded(flooders.join_next()).await {
        done.expect("flooder");
    }
    // Let the store run its evictions before the victim comes back.
    bounded(world.sessions.run_pending_tasks()).await;
    assert_eq!(
        world.sessions.redeemed_flow_count(),
        0,
        "login starts write nothing on the server"
    );

    let reply = victim.get(&callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    assert!(reply.sets_session(), "the pending login survived the flood");
    assert_eq!(reply.raw_location(), Some("/orders?id=7"));
    assert!(victim.get(reply.location()).await.reached_inner());
    assert_eq!(world.session_count().await, 1);
}

#[tokio::test]
async fn a_state_is_redeemed_once_and_is_useless_in_another_browser() {
    let world = World::start().await;
    let a = world.browser();
    let callback = pending_login(&world, &a, "/a").await;

    // Browser B, with a pending login of its own, presents A's callback: refused, and nothing of
    // A's login is consumed (no code exchange, no marker).
    let b = a.fresh();
    pending_login(&world, &b, "/b").await;
    let reply = b.get(&callback).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(!reply.sets_session());
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 0);
    assert_eq!(world.sessions.redeemed_flow_count(), 0);

    // A copy of A's flow cookie (stolen, or a second tab) taken while the login is pending.
    let copy = a.clone_jar();
    // A redeems the state, but the callback fails (the user refused: no code).
    let refused = a.get(without_param(&callback, "code")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        a.cookie(FLOW).is_none(),
        "the redeemed flow left the cookie"
    );
    // The copy still lists the flow, but the state is spent: no second redemption.
    let replay = copy.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.body);
    assert!(!replay.sets_session());
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 0);
    assert_eq!(world.session_count().await, 0);

    // A fresh login in A still works, once.
    let callback = pending_login(&world, &a, "/again").await;
    let copy = a.clone_jar();
    let first = a.get(&callback).await;
    assert!(first.sets_session(), "{}", first.body);
    let again = copy.get(&callback).await;
    assert!(!again.sets_session(), "{} {}", again.status, again.body);
    assert_eq!(world.session_count().await, 1);
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 1);
}

#[tokio::test]
async fn an_expired_flow_is_refused_from_the_cookie_alone() {
    let ttl = Duration::from_secs(1);
    let world = World::start_with(Options {
        flow_ttl: Some(ttl),
        ..Options::default()
    })
    .await;
    let browser = world.browser();
    let callback = pending_login(&world, &browser, "/late").await;
    // Whole seconds are compared; two and a half seconds are past any rounding.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("Login link expired"), "{}", reply.body);
    assert!(
        reply.body.contains("/_wxauth/login?return=%2Flate"),
        "the retry link keeps the return path: {}",
        reply.body
    );
    assert!(
        browser.cookie(FLOW).is_none(),
        "the expired flow is dropped"
    );
    assert_eq!(world.sim.calls(Endpoint::ComponentCodeExchange), 0);
    assert_eq!(world.sessions.redeemed_flow_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Bounded login
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hanging_wechat_ends_the_login_at_its_deadline() {
    let deadline = Duration::from_millis(500);
    let request_timeout = Duration::from_secs(1);
    let world = World::start_with(Options {
        request_timeout,
        login_deadline: Some(deadline),
        // A ticket but no component token yet: the callback has to fetch it.
        ready: false,
        background: false,
        ..Options::default()
    })
    .await;
    world.push_ticket().await;
    // Every try of the token fetch hangs until the client's timeout.
    let tries = TokenSettings::default().max_retries + 1;
    world
        .sim
        .inject(Endpoint::ComponentToken, Failure::Hang, tries);
    let retry_schedule = request_timeout * tries;
    let limit = deadline * 3;
    assert!(
        retry_schedule > limit,
        "WeChat's own schedule ({retry_schedule:?}) would exceed the bound"
    );

    let browser = world.browser();
    let callback = pending_login(&world, &browser, "/slow").await;
    let reply = tokio::time::timeout(limit, browser.get(&callback))
        .await
        .expect("the callback answers within its deadline (plus a margin)");
    reply.assert_wechat_timeout_page("%2Fslow");
    assert_eq!(world.session_count().await, 0, "nothing is stored");

    // The token fetch the callback gave up on carries on (its tries keep hanging) …
    for _ in 0..400 {
        if world.sim.calls(Endpoint::ComponentToken) >= u64::from(tries) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        world.sim.calls(Endpoint::ComponentToken),
        u64::from(tries),
        "one fetch with its retries"
    );
    // … and once WeChat answers again, logins work.
    let mut page = None;
    for _ in 0..50 {
        let fresh = browser.fresh();
        let callback = pending_login(&world, &fresh, "/later").await;
        let reply = fresh.get(&callback).await;
        if reply.sets_session() {
            page = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = page.expect("a login succeeds once WeChat recovers");
    assert_eq!(page.raw_location(), Some("/later"));
}

// ---------------------------------------------------------------------------------------------
// No ticket yet → fail fast
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_a_ticket_a_login_start_fails_fast_with_retry_after() {
    let world = World::start_with(Options {
        ready: false,
        ..Options::default()
    })
    .await;
    let browser = world.browser();
    for start in ["/p", "/_wxauth/login?return=/p"] {
        let reply = browser.get(world.url(start)).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{start}: {}",
            reply.body
        );
        assert_eq!(reply.headers[header::RETRY_AFTER], "60", "{start}");
        assert!(
            reply.raw_location().is_none(),
            "{start}: not sent to WeChat"
        );
        assert!(reply.content_type().starts_with("text/html"));
        assert!(
            reply.body.contains("平台未就绪") && reply.body.contains("Platform not ready"),
            "{}",
            reply.body
        );
        assert!(browser.cookie(FLOW).is_none(), "{start}: no flow started");
    }
    // An API client asking for the login URL gets the same answer as JSON.
    let reply = browser
        .get_with(
            world.url("/_wxauth/login"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "60");
    assert_eq!(reply.json()["error"], "platform_not_ready");
    assert_eq!(world.sim.calls(Endpoint::Authorize), 0);
    assert_eq!(world.sim.calls(Endpoint::ComponentToken), 0);

    // Once the ticket arrives, the same browser logs in.
    world.push_ticket().await;
    world.wait_ready().await;
    let page = world.login(&browser, "/p").await;
    assert!(page.reached_inner());
}
