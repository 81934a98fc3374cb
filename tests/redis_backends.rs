//! The Redis backends (feature `redis`) against real, throw-away `redis-server`s: sessions and
//! pending logins shared between instances, the platform store's atomic operations and refresh
//! lock, one token fetch for two proxy instances, and failing closed when Redis breaks.
//!
//! Without `redis-server` on PATH these tests fail with an install hint; they never skip.
#![cfg(feature = "redis")]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use support::{
    bounded, eventually,
    redis::{RedisServer, raw_command},
};
use wechat_oauth_proxy::{
    Identity,
    ids::Scope,
    session::{
        FlowBinding, FlowKey, RedisSessionStore, SessionId, SessionRecord, SessionSettings,
        SessionStore, StoreError as SessionStoreError,
    },
    wechat::{
        ComponentAccessToken, ComponentAppId, VerifyTicket,
        persist::{PlatformStore, StoreError as PlatformStoreError, StoredTicket, StoredToken},
        redis::RedisPlatformStore,
        token::now_unix,
    },
};

fn prefix() -> String {
    format!("t{:08x}:", rand::random::<u32>())
}

async fn session_store(server: &RedisServer, prefix: &str) -> RedisSessionStore {
    bounded(RedisSessionStore::new(
        &server.url(),
        prefix,
        SessionSettings::default(),
    ))
    .await
    .unwrap()
}

async fn platform_store(server: &RedisServer, prefix: &str) -> RedisPlatformStore {
    bounded(RedisPlatformStore::new(&server.url(), prefix))
        .await
        .unwrap()
}

fn identity(openid: &str) -> Identity {
    Identity {
        openid: openid.into(),
        unionid: None,
        nickname: "小红 🌸".to_owned(),
        avatar: String::new(),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: Scope::UserInfo,
    }
}

fn appid() -> ComponentAppId {
    ComponentAppId::new("wx0123456789abcdef")
}

fn ticket(create_time: i64) -> StoredTicket {
    StoredTicket {
        ticket: VerifyTicket::new(format!("ticket@@@{create_time}")),
        create_time,
        received_at: create_time,
    }
}

fn token(value: &str, lifetime_secs: i64) -> StoredToken {
    StoredToken {
        token: ComponentAccessToken::new(value),
        expires_at: now_unix() + lifetime_secs,
    }
}

/// A direct client for inspecting and corrupting what the stores wrote.
async fn inspector(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    bounded(client.get_multiplexed_async_connection())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The per-appid index behind `end_sessions_of` stays bounded by itself: a logout removes its
/// entry, logins drop the entries of sessions that expired, and the set expires with its newest
/// session.
#[tokio::test]
async fn the_appid_index_cleans_itself() {
    let server = RedisServer::start();
    let settings = SessionSettings {
        idle_timeout: Duration::from_secs(1),
        ..SessionSettings::default()
    };
    let store = bounded(RedisSessionStore::new(&server.url(), "ix:", settings))
        .await
        .unwrap();
    let index = format!("ix:appid:{}", identity("o").appid.as_str());
    let mut conn = inspector(&server).await;
    let mut members = async || -> u64 {
        bounded(redis::cmd("SCARD").arg(&index).query_async(&mut conn))
            .await
            .unwrap()
    };
    let out = bounded(store.create(SessionRecord::new(identity("o-out"))))
        .await
        .unwrap();
    assert_eq!(members().await, 1);
    bounded(store.delete(&out)).await.unwrap();
    assert_eq!(members().await, 0);

    for i in 0..50 {
        let record = SessionRecord::new(identity(&format!("o-idle-{i}")));
        bounded(store.create(record)).await.unwrap();
    }
    assert_eq!(members().await, 50);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..60 {
        let record = SessionRecord::new(identity(&format!("o-new-{i}")));
        bounded(store.create(record)).await.unwrap();
    }
    let left = members().await;
    assert!(left <= 70, "{left} entries for 60 live sessions");
    let ttl: i64 = bounded(
        redis::cmd("PTTL")
            .arg(&index)
            .query_async(&mut inspector(&server).await),
    )
    .await
    .unwrap();
    let max = i64::try_from(SessionSettings::default().ttl.as_millis()).unwrap();
    assert!(ttl > 0 && ttl <= max, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_and_flows_are_shared_between_instances() {
    let server = RedisServer::start();
    let prefix = prefix();
    let a = session_store(&server, &prefix).await;
    let b = session_store(&server, &prefix).await;

    let id = bounded(a.create(SessionRecord::new(identity("o-shared"))))
        .await
        .unwrap();
    let seen_by_b = bounded(b.load(&id)).await.unwrap().expect("visible to B");
    assert_eq!(seen_by_b.identity.openid, "o-shared");
    bounded(b.delete(&id)).await.unwrap();
    assert_eq!(
        bounded(a.load(&id)).await.unwrap(),
        None,
        "logout on B ends it on A"
    );

    // A login's callback may reach A or B (twice, even); the state is redeemed once across
    // instances.
    for _ in 0..10 {
        let key = FlowKey::new(FlowBinding::generate().expose_secret());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tasks.spawn(async move { store.consume_flow(&key, Duration::from_secs(60)).await });
        }
        let mut winners = 0;
        while let Some(joined) = bounded(tasks.join_next()).await {
            if joined.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    // A completed marker written by A is read by B.
    let key = FlowKey::new("state-done");
    let session = bounded(a.create(SessionRecord::new(identity("o-done"))))
        .await
        .unwrap();
    bounded(a.remember_completed(&key, &session, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(bounded(b.completed(&key)).await.unwrap(), Some(session));
}

#[tokio::test]
async fn prefixes_separate_deployments() {
    let server = RedisServer::start();
    let a = session_store(&server, "one:").await;
    let b = session_store(&server, "two:").await;
    let id = bounded(a.create(SessionRecord::new(identity("o-a"))))
        .await
        .unwrap();
    assert_eq!(bounded(b.load(&id)).await.unwrap(), None);
    assert!(!bounded(b.touch(&id)).await.unwrap());
    assert!(bounded(a.touch(&id)).await.unwrap());
}

#[tokio::test]
async fn keys_never_contain_session_ids_or_states() {
    let server = RedisServer::start();
    let store = session_store(&server, "wx:").await;
    let id = bounded(store.create(SessionRecord::new(identity("o-keys"))))
        .await
        .unwrap();
    let state = FlowKey::new("the-oauth-state-0123456789");
    assert!(
        bounded(store.consume_flow(&state, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    let redeemed = FlowKey::new("the-oauth-state-redeemed-only");
    assert!(
        bounded(store.consume_flow(&redeemed, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    bounded(store.remember_completed(&state, &id, Duration::from_secs(60)))
        .await
        .unwrap();
    let mut conn = inspector(&server).await;
    let keys: Vec<String> = bounded(redis::cmd("KEYS").arg("*").query_async(&mut conn))
        .await
        .unwrap();
    // The session, its appid's index set and the two redeemed markers.
    assert_eq!(keys.len(), 4, "{keys:?}");
    // The index holds the hashed session key, never the raw id.
    let index_key = format!("wx:appid:{}", identity("o-keys").appid.as_str());
    let members: Vec<String> = bounded(
        redis::cmd("SMEMBERS")
            .arg(&index_key)
            .query_async(&mut conn),
    )
    .await
    .unwrap();
    assert_eq!(members, vec![sha256_hex(id.expose_bytes().as_slice())]);
    // Every redeemed marker expires.
    for state in [&state, &redeemed] {
        let key = format!("wx:used:{}", sha256_hex(state.expose_secret().as_bytes()));
        let ttl: i64 = bounded(redis::cmd("PTTL").arg(&key).query_async(&mut conn))
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{key}: {ttl}");
    }
    for key in &keys {
        assert!(key.starts_with("wx:"), "{key}");
        assert!(!key.contains(&id.expose_secret()), "{key}");
        assert!(!key.contains("the-oauth-state"), "{key}");
    }
    // Session keys expire (idle timeout), they are never left without a TTL.
    let session_key = format!("wx:session:{}", sha256_hex(id.expose_bytes().as_slice()));
    let ttl: i64 = bounded(redis::cmd("PTTL").arg(&session_key).query_async(&mut conn))
        .await
        .unwrap();
    assert!(ttl > 0, "session key has no expiry: {ttl}");
    assert!(
        ttl <= i64::try_from(SessionSettings::default().idle_timeout.as_millis()).unwrap(),
        "{ttl}"
    );
}

#[tokio::test]
async fn garbled_stored_values_are_errors_not_panics() {
    let server = RedisServer::start();
    let store = session_store(&server, "g:").await;
    let mut conn = inspector(&server).await;

    // A session hash whose record is not JSON.
    let id = SessionId::generate();
    let key = format!("g:session:{}", sha256_hex(id.expose_bytes()));
    let _: () = bounded(
        redis::cmd("HSET")
            .arg(&key)
            .arg("r")
            .arg("{not json")
            .arg("d")
            .arg(i64::MAX / 4)
            .query_async(&mut conn),
    )
    .await
    .unwrap();
    let e = bounded(store.load(&id)).await.unwrap_err();
    assert!(matches!(e, SessionStoreError::Decode(_)), "{e:?}");

    // A key of the wrong type.
    let id = SessionId::generate();
    let key = format!("g:session:{}", sha256_hex(id.expose_bytes()));
    let _: () = bounded(redis::cmd("SET").arg(&key).arg("x").query_async(&mut conn))
        .await
        .unwrap();
    let e = bounded(store.load(&id)).await.unwrap_err();
    assert!(matches!(e, SessionStoreError::Backend(_)), "{e:?}");

    // A garbled completed marker.
    let state = FlowKey::new("garbled-state");
    let hash = sha256_hex(state.expose_secret().as_bytes());
    let _: () = bounded(
        redis::cmd("SET")
            .arg(format!("g:used:{hash}"))
            .arg("not-a-session-id")
            .query_async(&mut conn),
    )
    .await
    .unwrap();
    assert!(
        !bounded(store.consume_flow(&state, Duration::from_secs(60)))
            .await
            .unwrap(),
        "a marker of any content is redeemed"
    );
    assert!(matches!(
        bounded(store.completed(&state)).await,
        Err(SessionStoreError::Decode(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Platform store

/// What only Redis shows; the round trip, per-appid keys, a second instance reading what one
/// wrote and compare-before-invalidate are `tests/platform_conformance.rs` (`redis`,
/// `redis_durable`).
#[tokio::test]
async fn platform_values_are_per_prefix_ordered_and_expire() {
    let server = RedisServer::start();
    let prefix = prefix();
    let a = platform_store(&server, &prefix).await;
    let b = platform_store(&server, &prefix).await;

    bounded(a.save_ticket(&appid(), &ticket(100)))
        .await
        .unwrap();
    bounded(a.save_token(&appid(), &token("tok-a", 3600)))
        .await
        .unwrap();
    // Other prefixes see nothing.
    let elsewhere = platform_store(&server, "elsewhere:").await;
    assert_eq!(bounded(elsewhere.load_token(&appid())).await.unwrap(), None);

    // A newer ticket replaces, an older one does not (pushes may arrive out of order).
    bounded(b.save_ticket(&appid(), &ticket(200)))
        .await
        .unwrap();
    bounded(a.save_ticket(&appid(), &ticket(150)))
        .await
        .unwrap();
    assert_eq!(
        bounded(a.load_ticket(&appid())).await.unwrap(),
        Some(ticket(200))
    );

    // The token key expires with the token.
    let mut conn = inspector(&server).await;
    let pttl: i64 = bounded(
        redis::cmd("PTTL")
            .arg(format!("{prefix}wechat:token:wx0123456789abcdef"))
            .query_async(&mut conn),
    )
    .await
    .unwrap();
    assert!(pttl > 3_000_000 && pttl <= 3_600_000, "{pttl}");
    bounded(a.save_token(&appid(), &token("short", 1)))
        .await
        .unwrap();
    eventually(
        "an expired token stayed in redis",
        40,
        Duration::from_millis(100),
        async || bounded(b.load_token(&appid())).await.unwrap().is_none(),
    )
    .await;
    // An already expired token is not stored at all.
    bounded(a.save_token(&appid(), &token("stale", -5)))
        .await
        .unwrap();
    assert_eq!(bounded(b.load_token(&appid())).await.unwrap(), None);
}

#[tokio::test]
async fn the_refresh_lock_is_exclusive_owned_and_expires() {
    let server = RedisServer::start();
    let prefix = prefix();
    let a = platform_store(&server, &prefix).await;
    let b = platform_store(&server, &prefix).await;
    let ttl = Duration::from_secs(30);

    assert!(bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap());
    assert!(!bounded(b.try_lock_refresh(&appid(), ttl)).await.unwrap());
    assert!(!bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap());
    // Another appid has its own lock.
    let other = ComponentAppId::new("wxfedcba9876543210");
    assert!(bounded(b.try_lock_refresh(&other, ttl)).await.unwrap());
    // B does not hold A's lock: its release changes nothing.
    bounded(b.unlock_refresh(&appid())).await.unwrap();
    assert!(!bounded(b.try_lock_refresh(&appid(), ttl)).await.unwrap());
    // A releases; B gets it.
    bounded(a.unlock_refresh(&appid())).await.unwrap();
    assert!(bounded(b.try_lock_refresh(&appid(), ttl)).await.unwrap());
    bounded(b.unlock_refresh(&appid())).await.unwrap();

    // A crashed holder's lock expires by itself.
    assert!(
        bounded(a.try_lock_refresh(&appid(), Duration::from_millis(300)))
            .await
            .unwrap()
    );
    eventually(
        "an expired lock was never released",
        50,
        Duration::from_millis(100),
        async || bounded(b.try_lock_refresh(&appid(), ttl)).await.unwrap(),
    )
    .await;
    // A's late release does not free B's lock.
    bounded(a.unlock_refresh(&appid())).await.unwrap();
    assert!(!bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap());
}

#[tokio::test]
async fn the_lock_is_refused_when_a_token_was_stored_since_we_looked() {
    let server = RedisServer::start();
    let prefix = prefix();
    let a = platform_store(&server, &prefix).await;
    let b = platform_store(&server, &prefix).await;
    let ttl = Duration::from_secs(30);

    // A sees no token; B fetches, stores and releases before A asks for the lock.
    assert_eq!(bounded(a.load_token(&appid())).await.unwrap(), None);
    assert!(bounded(b.try_lock_refresh(&appid(), ttl)).await.unwrap());
    bounded(b.save_token(&appid(), &token("from-b", 3600)))
        .await
        .unwrap();
    bounded(b.unlock_refresh(&appid())).await.unwrap();
    assert!(
        !bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap(),
        "A would fetch again and invalidate B's fresh token"
    );
    // Once A has read the new token, it may take the lock (e.g. for its own early refresh).
    assert!(bounded(a.load_token(&appid())).await.unwrap().is_some());
    assert!(bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap());
    bounded(a.unlock_refresh(&appid())).await.unwrap();

    // After an invalidation (the store is empty again) nobody waits for a token that will
    // never come: the lock is granted.
    assert!(
        bounded(b.invalidate_token_if(&appid(), &ComponentAccessToken::new("from-b")))
            .await
            .unwrap()
    );
    assert!(bounded(a.try_lock_refresh(&appid(), ttl)).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Two proxy instances, one WeChat

#[cfg(feature = "sim")]
mod two_instances {
    use std::sync::Arc;

    use super::*;
    use support::{
        events::give_ticket,
        eventually,
        wechat::{
            component_oauth, component_settings, exchange_a_code, the_same_token, token_settings,
            tokens_at_once,
        },
    };
    use wechat_oauth_proxy::{
        sim::{Endpoint, SimWeChat},
        wechat::{error::WeChatError, oauth::WeChatOAuth, token::TokenSettings},
    };

    fn oauth(sim: &SimWeChat, store: Arc<dyn PlatformStore>) -> WeChatOAuth {
        component_oauth(sim, store, token_settings())
    }

    fn oauth_with(
        sim: &SimWeChat,
        store: Arc<dyn PlatformStore>,
        refresh_margin: Duration,
    ) -> WeChatOAuth {
        let token = TokenSettings {
            refresh_margin,
            ..token_settings()
        };
        component_oauth(sim, store, token)
    }

    /// Two instances sharing one Redis: a hundred concurrent `token()` calls spread over both
    /// make exactly one `api_component_token` call; the other instance reads the stored token
    /// and it is the one WeChat accepts. Several rounds (fresh instances, fresh prefix) to give
    /// the read-then-lock window a chance to show.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_token_fetch_for_two_instances() {
        let server = RedisServer::start();
        let sim = support::start_sim().await;
        for round in 1..=4u64 {
            let prefix = prefix();
            let a = oauth(&sim, Arc::new(platform_store(&server, &prefix).await));
            let b = oauth(&sim, Arc::new(platform_store(&server, &prefix).await));
            // The push reached instance A only.
            give_ticket(&sim, &a).await;

            let answers = tokens_at_once(100, |i| {
                let instance = if i % 2 == 0 { &a } else { &b };
                instance.token_manager().unwrap().clone()
            })
            .await;
            let what = format!("round {round}: both instances serve the same token");
            the_same_token(answers, &what);
            assert_eq!(
                sim.calls(Endpoint::ComponentToken),
                round,
                "round {round}: exactly one fetch for both instances"
            );
            assert_eq!(sim.issued_component_tokens(), round);

            // The token B read from Redis works for B's code exchange.
            exchange_a_code(&sim, &b).await.unwrap();
            assert_eq!(sim.calls(Endpoint::ComponentToken), round);
        }
    }

    /// Both instances run the background refresher: when the token enters its refresh margin
    /// exactly one of them fetches the next token and the other adopts it — a second fetch would
    /// invalidate the token the first one just shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn early_refresh_is_done_once_for_both_instances() {
        let server = RedisServer::start();
        let sim = support::start_sim().await;
        // 8 s tokens, 3 s margin: the refresh is due 5 s after a fetch.
        sim.set_token_ttl(Duration::from_secs(8));
        let prefix = prefix();
        let margin = Duration::from_secs(3);
        let a = oauth_with(
            &sim,
            Arc::new(platform_store(&server, &prefix).await),
            margin,
        );
        let b = oauth_with(
            &sim,
            Arc::new(platform_store(&server, &prefix).await),
            margin,
        );
        give_ticket(&sim, &a).await;
        let (ma, mb) = (
            a.token_manager().unwrap().clone(),
            b.token_manager().unwrap().clone(),
        );
        let first = bounded(ma.token()).await.unwrap();
        assert_eq!(bounded(mb.token()).await.unwrap(), first);
        assert_eq!(sim.calls(Endpoint::ComponentToken), 1);

        let refreshers = [a.start_background().unwrap(), b.start_background().unwrap()];
        // Nobody calls token(); one refresher must fetch before the 8 s expiry (bounded: 15 s).
        eventually(
            "no background refresh",
            300,
            Duration::from_millis(50),
            async || sim.calls(Endpoint::ComponentToken) >= 2,
        )
        .await;
        // Both instances settle on the new token (bounded: 5 s).
        eventually(
            "the instances did not agree on the new token",
            100,
            Duration::from_millis(50),
            async || {
                let (ta, tb) = (
                    bounded(ma.token()).await.unwrap(),
                    bounded(mb.token()).await.unwrap(),
                );
                ta == tb && ta != first
            },
        )
        .await;
        assert_eq!(
            sim.calls(Endpoint::ComponentToken),
            2,
            "one refresh, not one per instance"
        );
        // The shared token is the one WeChat accepts now: no 40001, no further fetch.
        for oauth in [&a, &b] {
            exchange_a_code(&sim, oauth).await.unwrap();
        }
        assert_eq!(sim.calls(Endpoint::ComponentToken), 2);
        for r in refreshers {
            r.abort();
        }
    }

    /// Redis gone: the token manager reports a store error (fail closed), it does not panic or
    /// hang.
    #[tokio::test]
    async fn a_missing_redis_is_a_store_error_for_the_token_manager() {
        let mut server = RedisServer::start();
        let sim = support::start_sim().await;
        let store = platform_store(&server, &prefix())
            .await
            .with_op_timeout(Duration::from_millis(500));
        let a = oauth(&sim, Arc::new(store));
        server.stop();
        let e = bounded(a.token_manager().unwrap().token())
            .await
            .unwrap_err();
        assert!(matches!(e, WeChatError::Store(_)), "{e:?}");
        assert_eq!(sim.calls(Endpoint::ComponentToken), 0);
    }

    /// Tenant state is shared through Redis: a revocation pushed to instance A reaches
    /// instance B at its next store read (explicit, or its background sync), with a broadcast
    /// change on B; an authorization learned by A reaches B the same way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tenant_state_is_shared_between_instances() {
        use wechat_oauth_proxy::{
            sim::{SimAuthorizer, SimConfig},
            wechat::{
                AuthorizerAppId,
                oauth::OAuthMode,
                tenants::{TenantMode, TenantSettings, TenantStatus},
            },
        };
        let server = RedisServer::start();
        let other = AuthorizerAppId::new("wxb00000000000001");
        let sim = bounded(SimWeChat::start(
            SimConfig::with_authorizers(vec![
                SimAuthorizer::new(other.clone(), "B").unauthorized(),
            ]),
            ([127, 0, 0, 1], 0).into(),
        ))
        .await
        .unwrap();
        let primary = sim.config().authorizer_appid.clone();
        let prefix = prefix();
        let instance = |sync: Option<Duration>| {
            let mut settings = component_settings(&sim, TokenSettings::default());
            if let OAuthMode::Component { tenants, .. } = &mut settings.mode {
                *tenants = TenantSettings {
                    store_sync_interval: sync,
                    ..TenantSettings::new(TenantMode::Static, vec![primary.clone(), other.clone()])
                };
            }
            settings
        };
        let a = WeChatOAuth::new(
            instance(None),
            Arc::new(platform_store(&server, &prefix).await),
        )
        .unwrap();
        let b = WeChatOAuth::new(
            instance(Some(Duration::from_millis(50))),
            Arc::new(platform_store(&server, &prefix).await),
        )
        .unwrap();
        give_ticket(&sim, &a).await;
        let receiver = support::events::EventsReceiver::start(a.clone()).await;
        sim.set_events_url(receiver.url.clone());

        // Revocation: explicit re-read on B.
        let mut changes = b.tenants().subscribe();
        bounded(sim.revoke_account(&primary)).await.unwrap();
        assert_eq!(a.tenants().status(&primary), TenantStatus::Revoked);
        assert_eq!(b.tenants().status(&primary), TenantStatus::Configured);
        assert_eq!(bounded(b.reload_tenants()).await.unwrap(), 1);
        assert_eq!(b.tenants().status(&primary), TenantStatus::Revoked);
        let change = changes.try_recv().unwrap();
        assert_eq!(
            (change.appid, change.status),
            (primary.clone(), TenantStatus::Revoked)
        );

        // Authorization learned by A: B's background sync picks it up.
        let background = b.start_background().unwrap();
        bounded(sim.authorize_account(&other, &[4])).await.unwrap();
        eventually(
            "B never saw the authorization",
            1_000,
            Duration::from_millis(10),
            async || b.tenants().status(&other) == TenantStatus::Active,
        )
        .await;
        assert_eq!(a.tenants().status(&other), TenantStatus::Active);
        assert_eq!(b.tenants().status(&primary), TenantStatus::Revoked);
        background.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Failure: Redis gone, Redis hung, bad credentials

#[tokio::test]
async fn a_redis_that_goes_away_fails_closed_and_recovers() {
    let mut server = RedisServer::start();
    let prefix = prefix();
    let sessions = session_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(500));
    let platform = platform_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(500));
    let id = bounded(sessions.create(SessionRecord::new(identity("o-gone"))))
        .await
        .unwrap();

    server.stop();
    assert!(matches!(
        bounded(sessions.load(&id)).await,
        Err(SessionStoreError::Backend(_))
    ));
    assert!(bounded(sessions.ping()).await.is_err());
    assert!(
        bounded(sessions.create(SessionRecord::new(identity("o-new"))))
            .await
            .is_err()
    );
    assert!(
        bounded(sessions.consume_flow(&FlowKey::new("s"), Duration::from_secs(1)))
            .await
            .is_err()
    );
    assert!(matches!(
        bounded(platform.load_token(&appid())).await,
        Err(PlatformStoreError::Backend(_))
    ));
    assert!(
        bounded(platform.try_lock_refresh(&appid(), Duration::from_secs(5)))
            .await
            .is_err()
    );
    assert!(bounded(platform.ping()).await.is_err());

    // A new (empty) server on the same address: the stores reconnect by themselves.
    server.restart();
    eventually(
        "the stores did not reconnect",
        50,
        Duration::from_millis(100),
        async || bounded(sessions.ping()).await.is_ok() && bounded(platform.ping()).await.is_ok(),
    )
    .await;
    // The old session died with the server; new ones work.
    assert_eq!(bounded(sessions.load(&id)).await.unwrap(), None);
    let id = bounded(sessions.create(SessionRecord::new(identity("o-back"))))
        .await
        .unwrap();
    assert!(bounded(sessions.touch(&id)).await.unwrap());
}

#[tokio::test]
async fn while_redis_restarts_recently_read_sessions_are_served_and_nothing_else() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let prefix = prefix();
    let sessions = session_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(500));
    let strict = session_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(500))
        .with_stale_if_error(Duration::ZERO, 0);
    let read = bounded(sessions.create(SessionRecord::new(identity("o-read"))))
        .await
        .unwrap();
    let unread = bounded(sessions.create(SessionRecord::new(identity("o-unread"))))
        .await
        .unwrap();
    let logged_out = bounded(sessions.create(SessionRecord::new(identity("o-out"))))
        .await
        .unwrap();
    for id in [&read, &logged_out] {
        assert!(bounded(sessions.load(id)).await.unwrap().is_some());
        assert!(bounded(strict.load(id)).await.unwrap().is_some());
    }
    // Logged out on this instance while Redis is down: the delete fails, the session is
    // forgotten all the same.
    server.stop();
    assert!(bounded(sessions.delete(&logged_out)).await.is_err());

    let served = bounded(sessions.load(&read))
        .await
        .unwrap()
        .expect("served");
    assert_eq!(served.identity.openid, "o-read");
    for id in [&unread, &logged_out] {
        assert!(matches!(
            bounded(sessions.load(id)).await,
            Err(SessionStoreError::Backend(_))
        ));
    }
    assert!(matches!(
        bounded(strict.load(&read)).await,
        Err(SessionStoreError::Backend(_))
    ));
    assert!(
        bounded(sessions.create(SessionRecord::new(identity("o-new"))))
            .await
            .is_err(),
        "a new login still fails closed"
    );

    // Back with its data: served from Redis again; a session Redis no longer has is gone here
    // too.
    server.restart();
    eventually(
        "the store did not reconnect",
        50,
        Duration::from_millis(100),
        async || bounded(sessions.ping()).await.is_ok(),
    )
    .await;
    assert!(bounded(sessions.load(&read)).await.unwrap().is_some());
    let mut inspect = inspector(&server).await;
    let key = format!("{prefix}session:{}", sha256_hex(read.expose_bytes()));
    let _: i64 = redis::AsyncCommands::del(&mut inspect, key).await.unwrap();
    assert_eq!(bounded(sessions.load(&read)).await.unwrap(), None);
    server.stop();
    assert!(
        bounded(sessions.load(&read)).await.is_err(),
        "a session Redis said is gone is never served from memory"
    );
}

#[tokio::test]
async fn a_hung_redis_fails_within_the_operation_timeout() {
    let server = RedisServer::start();
    let prefix = prefix();
    let sessions = session_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(300));
    let platform = platform_store(&server, &prefix)
        .await
        .with_op_timeout(Duration::from_millis(300));
    bounded(sessions.ping()).await.unwrap();

    // Every client is held for 3 s; each call must give up on its own well before that.
    assert_eq!(raw_command(server.port(), "CLIENT PAUSE 3000 ALL"), "+OK");
    let e = bounded(sessions.load(&SessionId::generate()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no reply within"), "{e}");
    let e = bounded(platform.load_ticket(&appid())).await.unwrap_err();
    assert!(e.to_string().contains("no reply within"), "{e}");

    // Afterwards the same stores work again.
    eventually(
        "the store did not recover",
        60,
        Duration::from_millis(100),
        async || bounded(sessions.ping()).await.is_ok(),
    )
    .await;
    bounded(platform.ping()).await.unwrap();
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "correct-horse-battery"]);
    let wrong = format!("redis://:wrong-secret-pw@127.0.0.1:{}/", server.port());
    let e = bounded(RedisSessionStore::new(
        &wrong,
        "p:",
        SessionSettings::default(),
    ))
    .await
    .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("wrong-secret-pw"), "{shown}");
    let e = bounded(RedisPlatformStore::new(&wrong, "p:"))
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("wrong-secret-pw"), "{shown}");

    // The right password works, and Debug of the stores does not show it either.
    let right = format!(
        "redis://:correct-horse-battery@127.0.0.1:{}/",
        server.port()
    );
    let sessions = bounded(RedisSessionStore::new(
        &right,
        "p:",
        SessionSettings::default(),
    ))
    .await
    .unwrap();
    bounded(sessions.ping()).await.unwrap();
    let platform = bounded(RedisPlatformStore::new(&right, "p:"))
        .await
        .unwrap();
    bounded(platform.ping()).await.unwrap();
    let shown = format!("{sessions:?} {platform:?}");
    assert!(!shown.contains("correct-horse"), "{shown}");

    // Nothing listens: a prompt error, no password in it.
    let port = server.port();
    drop(server);
    let closed = format!("redis://:wrong-secret-pw@127.0.0.1:{port}/");
    let e = bounded(RedisPlatformStore::new(&closed, "p:"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("wrong-secret-pw"), "{e}");
}

/// Hex of SHA-256, as the stores name their keys.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
