//! The component token manager against the simulated WeChat over real loopback sockets:
//! single flight, early refresh, invalidation on 40001, restart survival, no retry storms.
#![cfg(feature = "sim")]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{
    TempDir, bounded,
    events::{EventsReceiver, give_ticket},
    eventually, start_sim,
    wechat::{
        component_oauth as oauth, component_settings, exchange_a_code, the_same_token,
        token_settings, tokens_at_once,
    },
};

use std::{sync::Arc, time::Duration};

use hyper::StatusCode;
use url::Url;
use wechat_oauth_proxy::{
    secret::SecretString,
    sim::{AuthMode, Endpoint, Failure, SimWeChat},
    wechat::{
        Scope,
        crypto::MsgCrypt,
        error::{ErrorClass, WeChatError},
        events,
        oauth::WeChatOAuth,
        persist::{FileStore, MemoryPlatformStore, PlatformStore},
        token::{TokenSettings, now_unix},
    },
};

/// POSTs an encrypted, signed ticket push of the sim's current ticket, sealed with `token` (the
/// sim's message token unless forging); returns the receiver's status and body.
async fn push_ticket(sim: &SimWeChat, url: &Url, token: &SecretString) -> (StatusCode, String) {
    let c = sim.config();
    let crypt = MsgCrypt::new(token, &c.encoding_aes_key, c.component_appid.clone()).unwrap();
    let xml = events::ticket_event_xml(&c.component_appid, now_unix(), &sim.current_ticket());
    let (query, body) = events::seal_push(&crypt, &xml, &now_unix().to_string(), "1054256936");
    let mut url = url.clone();
    url.set_query(Some(&query));
    let response = bounded(reqwest::Client::new().post(url).body(body).send())
        .await
        .unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, bounded(response.text()).await.unwrap())
}

#[tokio::test]
async fn two_hundred_concurrent_callers_cause_exactly_one_token_fetch() {
    let sim = start_sim().await;
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    give_ticket(&sim, &oauth).await;
    let manager = oauth.token_manager().unwrap();
    let answers = tokens_at_once(200, |_| manager.clone()).await;
    the_same_token(answers, "everyone got the same token");
    assert_eq!(sim.calls(Endpoint::ComponentToken), 1);
    assert_eq!(sim.issued_component_tokens(), 1);
}

#[tokio::test]
async fn the_background_refresher_fetches_before_expiry_without_any_caller() {
    let sim = start_sim().await;
    // 6 s tokens, 3 s margin: the refresher should fetch about 3 s after the first fetch.
    sim.set_token_ttl(Duration::from_secs(6));
    let oauth = oauth(
        &sim,
        Arc::new(MemoryPlatformStore::new()),
        TokenSettings {
            refresh_margin: Duration::from_secs(3),
            ..token_settings()
        },
    );
    give_ticket(&sim, &oauth).await;
    let manager = oauth.token_manager().unwrap().clone();
    let first = bounded(manager.token()).await.unwrap();
    assert_eq!(sim.calls(Endpoint::ComponentToken), 1);
    // Still fresh: answered from memory.
    assert_eq!(bounded(manager.token()).await.unwrap(), first);
    assert_eq!(sim.calls(Endpoint::ComponentToken), 1);

    let refresher = oauth
        .start_background()
        .expect("component mode has a refresher");
    // Nobody calls token() now; the refresher alone must fetch before the 6 s expiry.
    eventually(
        "no background refresh within 20 s",
        400,
        Duration::from_millis(50),
        async || sim.calls(Endpoint::ComponentToken) >= 2,
    )
    .await;
    let second = bounded(manager.token()).await.unwrap();
    assert_ne!(second, first, "the refreshed token is served");
    assert!(manager.status().token_present);
    // The refreshed token is the one WeChat accepts now.
    exchange_a_code(&sim, &oauth).await.unwrap();
    refresher.abort();
}

#[tokio::test]
async fn callers_inside_the_margin_get_the_old_token_while_it_is_replaced() {
    let sim = start_sim().await;
    sim.set_token_ttl(Duration::from_secs(4));
    let oauth = oauth(
        &sim,
        Arc::new(MemoryPlatformStore::new()),
        TokenSettings {
            refresh_margin: Duration::from_secs(2),
            min_refetch_interval: Duration::ZERO,
            ..token_settings()
        },
    );
    give_ticket(&sim, &oauth).await;
    let manager = oauth.token_manager().unwrap().clone();
    let first = bounded(manager.token()).await.unwrap();
    let mut second = None;
    eventually(
        "no early refresh within 20 s",
        400,
        Duration::from_millis(50),
        async || {
            // Every call answers (from memory) while the old token is still valid.
            let t = bounded(manager.token()).await.unwrap();
            second = Some(t).filter(|t| *t != first);
            second.is_some()
        },
    )
    .await;
    assert!(sim.calls(Endpoint::ComponentToken) >= 2);
}

#[tokio::test]
async fn invalid_component_token_on_code_exchange_is_refetched_once_and_retried() {
    let sim = start_sim().await;
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    give_ticket(&sim, &oauth).await;
    let manager = oauth.token_manager().unwrap().clone();
    let stale = bounded(manager.token()).await.unwrap();
    sim.invalidate_component_token();

    let user = sim.config().users[1].clone();
    let code = sim.issue_code(user.clone(), Scope::UserInfo, AuthMode::Component);
    let token = bounded(oauth.exchange_code(oauth.default_appid().unwrap(), &code))
        .await
        .unwrap();
    assert_eq!(token.openid.as_str(), user.openid);
    assert_eq!(
        sim.calls(Endpoint::ComponentToken),
        2,
        "exactly one re-fetch"
    );
    assert_eq!(
        sim.calls(Endpoint::ComponentCodeExchange),
        2,
        "exactly one retry"
    );
    assert_ne!(bounded(manager.token()).await.unwrap(), stale);

    let info = bounded(oauth.user_info(&token)).await.unwrap();
    assert_eq!(info.nickname, user.nickname);
}

#[tokio::test]
async fn a_second_rejection_after_the_refetch_is_returned_not_looped() {
    let sim = start_sim().await;
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    give_ticket(&sim, &oauth).await;
    bounded(oauth.token_manager().unwrap().token())
        .await
        .unwrap();
    sim.inject(Endpoint::ComponentCodeExchange, Failure::ErrCode(40001), 5);
    let e = exchange_a_code(&sim, &oauth).await.unwrap_err();
    assert_eq!(e.code(), Some(40001));
    assert_eq!(e.class(), ErrorClass::RefreshToken);
    assert_eq!(sim.calls(Endpoint::ComponentCodeExchange), 2);
    assert_eq!(sim.calls(Endpoint::ComponentToken), 2);
}

#[tokio::test]
async fn without_a_ticket_the_error_is_no_ticket_and_wechat_is_not_called() {
    let sim = start_sim().await;
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    let e = exchange_a_code(&sim, &oauth).await.unwrap_err();
    assert!(matches!(e, WeChatError::NoTicket), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Ticket);
    assert_eq!(sim.calls(Endpoint::ComponentToken), 0);
    assert_eq!(sim.calls(Endpoint::ComponentCodeExchange), 0);
    let readiness = bounded(oauth.readiness()).await;
    assert!(!readiness.ready);
    assert_eq!(readiness.reasons.len(), 2, "{:?}", readiness.reasons);
}

#[tokio::test]
async fn a_pushed_ticket_and_the_token_survive_a_restart() {
    let sim = start_sim().await;
    let dir = TempDir::new("component-token");
    let token_before = {
        let store = Arc::new(FileStore::new(dir.0.clone()).unwrap());
        let oauth = oauth(&sim, store, token_settings());
        let receiver = EventsReceiver::start(oauth.clone()).await;
        // The simulator's own pusher: encrypted and signed the way WeChat does it.
        bounded(sim.push_ticket(&receiver.url))
            .await
            .expect("push accepted with `success`");
        assert!(oauth.token_manager().unwrap().status().ticket_present);
        let refresher = oauth.start_background().unwrap();
        // The push wakes the refresher, which fetches the first token.
        eventually(
            "not ready within 20 s",
            400,
            Duration::from_millis(50),
            async || bounded(oauth.readiness()).await.ready,
        )
        .await;
        refresher.abort();
        bounded(oauth.token_manager().unwrap().token())
            .await
            .unwrap()
    };
    assert_eq!(sim.calls(Endpoint::ComponentToken), 1);

    // "Restart": a new WeChatOAuth over the same state directory.
    let store = Arc::new(FileStore::new(dir.0.clone()).unwrap());
    let oauth = oauth(&sim, store, token_settings());
    let readiness = bounded(oauth.readiness()).await;
    assert!(readiness.ready, "{:?}", readiness.reasons);
    assert_eq!(
        bounded(oauth.token_manager().unwrap().token())
            .await
            .unwrap(),
        token_before
    );
    exchange_a_code(&sim, &oauth).await.unwrap();
    assert_eq!(
        sim.calls(Endpoint::ComponentToken),
        1,
        "no new fetch after the restart"
    );
}

#[tokio::test]
async fn a_forged_push_is_refused_and_stores_nothing() {
    let sim = start_sim().await;
    let store = Arc::new(MemoryPlatformStore::new());
    let oauth = oauth(&sim, store.clone(), token_settings());
    let receiver = EventsReceiver::start(oauth.clone()).await;
    let forged = push_ticket(
        &sim,
        &receiver.url,
        &SecretString::new("not-the-real-token"),
    )
    .await;
    assert_eq!(forged.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        store
            .load_ticket(&sim.config().component_appid)
            .await
            .unwrap(),
        None
    );
    assert!(!oauth.token_manager().unwrap().status().ticket_present);

    // The same push sealed with the right token is accepted: the refusal was the forgery.
    let genuine = push_ticket(&sim, &receiver.url, &sim.config().message_token).await;
    assert_eq!(genuine, (StatusCode::OK, "success".to_owned()));
    assert!(oauth.token_manager().unwrap().status().ticket_present);
}

#[tokio::test]
async fn quota_exhaustion_does_not_cause_a_retry_storm() {
    let sim = start_sim().await;
    sim.inject(Endpoint::ComponentToken, Failure::ErrCode(45009), 1000);
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    give_ticket(&sim, &oauth).await;
    let manager = oauth.token_manager().unwrap().clone();
    for answer in tokens_at_once(50, |_| manager.clone()).await {
        let e = answer.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Quota, "{e:?}");
    }
    for _ in 0..50 {
        let e = bounded(manager.token()).await.unwrap_err();
        assert_eq!(e.code(), Some(45009));
    }
    assert_eq!(sim.calls(Endpoint::ComponentToken), 1);
}

#[tokio::test]
async fn transient_token_failures_are_retried_within_one_fetch() {
    let sim = start_sim().await;
    sim.inject(Endpoint::ComponentToken, Failure::SystemBusy, 1);
    sim.inject(Endpoint::ComponentToken, Failure::Http500, 1);
    let oauth = oauth(&sim, Arc::new(MemoryPlatformStore::new()), token_settings());
    give_ticket(&sim, &oauth).await;
    bounded(oauth.token_manager().unwrap().token())
        .await
        .unwrap();
    assert_eq!(sim.calls(Endpoint::ComponentToken), 3);
}

/// One fresh manager per case (cool-downs are per manager). Transient failures are injected
/// three times (one attempt plus two retries), others once (no retry expected).
async fn token_error(sim: &SimWeChat, failure: Failure, request_timeout: Duration) -> WeChatError {
    let times = match failure {
        Failure::ErrCode(code) if code != -1 && code != 45011 => 1,
        _ => 3,
    };
    sim.inject(Endpoint::ComponentToken, failure, times);
    let mut settings = component_settings(sim, token_settings());
    settings.client.request_timeout = request_timeout;
    let oauth = WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap();
    give_ticket(sim, &oauth).await;
    let before = sim.calls(Endpoint::ComponentToken);
    let e = bounded(oauth.token_manager().unwrap().token())
        .await
        .unwrap_err();
    let attempts = sim.calls(Endpoint::ComponentToken) - before;
    let expected = if e.class() == ErrorClass::Retry { 3 } else { 1 };
    assert_eq!(attempts, expected, "{e:?}");
    e
}

#[tokio::test]
async fn each_token_failure_maps_to_its_typed_error_and_class() {
    let sim = start_sim().await;
    let normal = Duration::from_secs(5);

    let e = token_error(&sim, Failure::SystemBusy, normal).await;
    assert!(matches!(e, WeChatError::Api { code: -1, .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    let e = token_error(&sim, Failure::Http500, normal).await;
    assert!(matches!(e, WeChatError::BadReply { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    let e = token_error(&sim, Failure::NotJson, normal).await;
    assert!(matches!(e, WeChatError::BadReply { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);

    for (code, class) in [
        (61004, ErrorClass::Configuration),
        (40125, ErrorClass::Configuration),
        (61011, ErrorClass::Configuration),
        (61005, ErrorClass::Ticket),
        (61006, ErrorClass::Ticket),
        (45009, ErrorClass::Quota),
    ] {
        let e = token_error(&sim, Failure::ErrCode(code), normal).await;
        assert_eq!(e.code(), Some(code), "{e:?}");
        assert_eq!(e.class(), class, "errcode {code}");
    }
}

#[tokio::test]
async fn a_hanging_wechat_ends_in_a_timeout() {
    let sim = start_sim().await;
    let e = token_error(&sim, Failure::Hang, Duration::from_millis(300)).await;
    assert!(matches!(e, WeChatError::Timeout { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);
}
