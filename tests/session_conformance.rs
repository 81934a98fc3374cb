//! Behaviour every `SessionStore` backend must show, written once and instantiated per backend
//! with `store_conformance!` (tower-sessions' `route_tests!` pattern).
//!
//! Time-dependent tests use short lifetimes and generous margins (a session alive at a quarter
//! of its lifetime, dead after one and a half), and every wait is bounded.

// Test helpers outside `#[test]` functions: failing loudly is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{bounded, user};

use std::sync::Arc;
use std::time::Duration;

use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::ids::AppId;
use wechat_oauth_proxy::session::{
    DurableSettings, DurableStore, FlowBinding, FlowKey, MemoryStore, SessionId, SessionRecord,
    SessionSettings, SessionStore,
};

fn fresh_key() -> FlowKey {
    FlowKey::new(FlowBinding::generate().expose_secret())
}

/// Settings with lifetimes long enough that nothing expires during a test.
fn long_lived() -> SessionSettings {
    SessionSettings::default()
}

/// A created session loads back with the same identity and counts as live.
async fn create_then_load(store: Arc<dyn SessionStore>) {
    let record = SessionRecord::new(user("o-create"));
    let id = bounded(store.create(record.clone())).await.unwrap();
    let loaded = bounded(store.load(&id))
        .await
        .unwrap()
        .expect("session just created");
    assert_eq!(loaded.identity, record.identity);
    assert_eq!(loaded.created_at, record.created_at);
    assert!(loaded.last_seen >= record.created_at);
    assert!(bounded(store.touch(&id)).await.unwrap());
}

/// An id the store never issued is absent, untouchable, and deletable without error.
async fn unknown_ids_are_absent(store: Arc<dyn SessionStore>) {
    let id = SessionId::generate();
    assert_eq!(bounded(store.load(&id)).await.unwrap(), None);
    assert!(!bounded(store.touch(&id)).await.unwrap());
    bounded(store.delete(&id)).await.unwrap();
}

/// Logout: a deleted session is gone for good; other sessions stay.
async fn delete_kills_the_session(store: Arc<dyn SessionStore>) {
    let id = bounded(store.create(SessionRecord::new(user("o-delete"))))
        .await
        .unwrap();
    let other = bounded(store.create(SessionRecord::new(user("o-keep"))))
        .await
        .unwrap();
    bounded(store.delete(&id)).await.unwrap();
    assert_eq!(bounded(store.load(&id)).await.unwrap(), None);
    assert!(!bounded(store.touch(&id)).await.unwrap());
    // Deleting twice is fine; other sessions are untouched.
    bounded(store.delete(&id)).await.unwrap();
    let kept = bounded(store.load(&other)).await.unwrap().unwrap();
    assert_eq!(kept.identity.openid, "o-keep");
}

/// Collision safety: every create yields a distinct id that is its own session.
async fn every_create_gets_a_fresh_id(store: Arc<dyn SessionStore>) {
    // Same record many times: a fresh id each time, each its own session (collision-safe
    // create never hands out an id that is in use).
    let record = SessionRecord::new(user("o-many"));
    let mut ids: Vec<SessionId> = Vec::new();
    for _ in 0..200 {
        let id = bounded(store.create(record.clone())).await.unwrap();
        assert!(!ids.contains(&id), "create returned an id already in use");
        ids.push(id);
    }
    bounded(store.delete(&ids[0])).await.unwrap();
    for id in &ids[1..] {
        assert!(bounded(store.load(id)).await.unwrap().is_some());
    }
}

/// The absolute lifetime ends a session however busy it is.
async fn absolute_ttl_expires_even_when_active(store: Arc<dyn SessionStore>) {
    // Built with ttl = 2 s, idle = 60 s.
    let id = bounded(store.create(SessionRecord::new(user("o-ttl"))))
        .await
        .unwrap();
    assert!(bounded(store.load(&id)).await.unwrap().is_some());
    // Keep it busy; it must still die at its absolute deadline (bounded: 12 × 250 ms = 3 s).
    let mut died = false;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if bounded(store.load(&id)).await.unwrap().is_none() {
            died = true;
            break;
        }
    }
    assert!(died, "a session outlived its absolute lifetime");
    assert!(!bounded(store.touch(&id)).await.unwrap());
}

/// Use keeps a session alive past the idle timeout; disuse ends it.
async fn idle_timeout_expires_unused_sessions(store: Arc<dyn SessionStore>) {
    // Built with ttl = 60 s, idle = 2 s.
    let busy = bounded(store.create(SessionRecord::new(user("o-busy"))))
        .await
        .unwrap();
    let idle = bounded(store.create(SessionRecord::new(user("o-idle"))))
        .await
        .unwrap();
    // 6 × 500 ms = 3 s of activity, longer than the idle timeout: use keeps `busy` alive.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            bounded(store.touch(&busy)).await.unwrap(),
            "an active session expired"
        );
    }
    assert!(bounded(store.load(&busy)).await.unwrap().is_some());
    // `idle` has not been used for 3 s > 2 s.
    assert_eq!(bounded(store.load(&idle)).await.unwrap(), None);
}

/// A login flow can be redeemed once.
async fn flows_are_single_use(store: Arc<dyn SessionStore>) {
    let key = fresh_key();
    let ttl = Duration::from_secs(60);
    assert!(bounded(store.consume_flow(&key, ttl)).await.unwrap());
    assert!(!bounded(store.consume_flow(&key, ttl)).await.unwrap());
    assert!(!bounded(store.consume_flow(&key, ttl)).await.unwrap());
    // Redeeming is not "completed": a duplicate callback still waits for the first.
    assert_eq!(bounded(store.completed(&key)).await.unwrap(), None);
}

/// Flows under different keys do not interfere.
async fn flows_are_independent(store: Arc<dyn SessionStore>) {
    let (a, b) = (fresh_key(), fresh_key());
    let ttl = Duration::from_secs(60);
    assert!(bounded(store.consume_flow(&b, ttl)).await.unwrap());
    assert!(bounded(store.consume_flow(&a, ttl)).await.unwrap());
    assert!(!bounded(store.consume_flow(&b, ttl)).await.unwrap());
}

/// Concurrent callbacks with the same state: exactly one redeems it.
async fn concurrent_takes_yield_one_flow(store: Arc<dyn SessionStore>) {
    for round in 0..20 {
        let key = fresh_key();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, key) = (Arc::clone(&store), key.clone());
            tasks.spawn(async move { store.consume_flow(&key, Duration::from_secs(60)).await });
        }
        let mut winners = 0;
        while let Some(joined) = bounded(tasks.join_next()).await {
            if joined.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(
            winners, 1,
            "round {round}: {winners} callers redeemed the same flow"
        );
    }
}

/// A redeemed marker dies after its own time to live (the flow it guards is dead by then).
async fn flows_expire(store: Arc<dyn SessionStore>) {
    let key = fresh_key();
    let kept = fresh_key();
    assert!(
        bounded(store.consume_flow(&key, Duration::from_secs(1)))
            .await
            .unwrap()
    );
    assert!(
        bounded(store.consume_flow(&kept, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        bounded(store.consume_flow(&key, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    assert!(
        !bounded(store.consume_flow(&kept, Duration::from_secs(60)))
            .await
            .unwrap()
    );
}

/// A completed flow is remembered (not consumed by reads) so a duplicate callback finds the session.
async fn completed_marker(store: Arc<dyn SessionStore>) {
    let key = fresh_key();
    assert_eq!(bounded(store.completed(&key)).await.unwrap(), None);
    let session = bounded(store.create(SessionRecord::new(user("o-done"))))
        .await
        .unwrap();
    assert!(
        bounded(store.consume_flow(&key, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    bounded(store.remember_completed(&key, &session, Duration::from_secs(60)))
        .await
        .unwrap();
    // A duplicate callback: the state stays redeemed, the marker names the session created.
    assert!(
        !bounded(store.consume_flow(&key, Duration::from_secs(60)))
            .await
            .unwrap()
    );
    assert_eq!(
        bounded(store.completed(&key)).await.unwrap(),
        Some(session.clone())
    );
    // Reading the marker does not consume it.
    assert_eq!(bounded(store.completed(&key)).await.unwrap(), Some(session));
    assert_eq!(bounded(store.completed(&fresh_key())).await.unwrap(), None);

    let short = fresh_key();
    let s2 = SessionId::generate();
    bounded(store.remember_completed(&short, &s2, Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(bounded(store.completed(&short)).await.unwrap(), None);
}

/// An official account that revokes the platform: all its sessions end, no other appid's.
async fn end_sessions_of_one_appid(store: Arc<dyn SessionStore>) {
    let revoked = AppId::from("wxrevoked000000001".to_owned());
    let of = |openid: &str, appid: &AppId| SessionRecord {
        identity: Identity {
            appid: appid.clone(),
            ..user(openid)
        },
        ..SessionRecord::new(user(openid))
    };
    let mut ended = Vec::new();
    for i in 0..3 {
        let record = of(&format!("o-revoked-{i}"), &revoked);
        ended.push(bounded(store.create(record)).await.unwrap());
    }
    // A session of that appid already logged out is not counted.
    let gone = bounded(store.create(of("o-revoked-out", &revoked)))
        .await
        .unwrap();
    bounded(store.delete(&gone)).await.unwrap();
    let kept = bounded(store.create(SessionRecord::new(user("o-other"))))
        .await
        .unwrap();

    assert_eq!(bounded(store.end_sessions_of(&revoked)).await.unwrap(), 3);
    for id in &ended {
        assert_eq!(bounded(store.load(id)).await.unwrap(), None);
        assert!(!bounded(store.touch(id)).await.unwrap());
    }
    let other = bounded(store.load(&kept)).await.unwrap().unwrap();
    assert_eq!(other.identity.openid, "o-other");
    // Nothing left to end; a later login of that appid is a session like any other.
    assert_eq!(bounded(store.end_sessions_of(&revoked)).await.unwrap(), 0);
    let again = bounded(store.create(of("o-revoked-again", &revoked)))
        .await
        .unwrap();
    assert!(bounded(store.load(&again)).await.unwrap().is_some());
    assert_eq!(
        bounded(store.end_sessions_of(&AppId::from("wxnobody0000000001".to_owned())))
            .await
            .unwrap(),
        0
    );
    assert!(bounded(store.load(&kept)).await.unwrap().is_some());
}

/// Readiness check of a healthy backend.
async fn ping_succeeds(store: Arc<dyn SessionStore>) {
    bounded(store.ping()).await.unwrap();
}

/// Instantiates the suite for one backend. `$make` is an async fn
/// `(SessionSettings) -> Arc<dyn SessionStore>`.
macro_rules! store_conformance {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            async fn store() -> Arc<dyn SessionStore> {
                $make(long_lived()).await
            }

            #[tokio::test]
            async fn create_then_load() {
                super::create_then_load(store().await).await;
            }
            #[tokio::test]
            async fn unknown_ids_are_absent() {
                super::unknown_ids_are_absent(store().await).await;
            }
            #[tokio::test]
            async fn delete_kills_the_session() {
                super::delete_kills_the_session(store().await).await;
            }
            #[tokio::test]
            async fn every_create_gets_a_fresh_id() {
                super::every_create_gets_a_fresh_id(store().await).await;
            }
            #[tokio::test]
            async fn absolute_ttl_expires_even_when_active() {
                let settings = SessionSettings {
                    ttl: Duration::from_secs(2),
                    idle_timeout: Duration::from_secs(60),
                    ..long_lived()
                };
                super::absolute_ttl_expires_even_when_active($make(settings).await).await;
            }
            #[tokio::test]
            async fn idle_timeout_expires_unused_sessions() {
                let settings = SessionSettings {
                    ttl: Duration::from_secs(60),
                    idle_timeout: Duration::from_secs(2),
                    ..long_lived()
                };
                super::idle_timeout_expires_unused_sessions($make(settings).await).await;
            }
            #[tokio::test]
            async fn flows_are_single_use() {
                super::flows_are_single_use(store().await).await;
            }
            #[tokio::test]
            async fn flows_are_independent() {
                super::flows_are_independent(store().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_takes_yield_one_flow() {
                super::concurrent_takes_yield_one_flow(store().await).await;
            }
            #[tokio::test]
            async fn flows_expire() {
                super::flows_expire(store().await).await;
            }
            #[tokio::test]
            async fn completed_marker() {
                super::completed_marker(store().await).await;
            }
            #[tokio::test]
            async fn end_sessions_of_one_appid() {
                super::end_sessions_of_one_appid(store().await).await;
            }
            #[tokio::test]
            async fn ping_succeeds() {
                super::ping_succeeds(store().await).await;
            }
        }
    };
}

async fn memory_store(settings: SessionSettings) -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new(settings))
}

store_conformance!(memory, memory_store);

/// A durable store in a fresh directory. The directory is removed at once: the open file lives
/// on, unlinked, until the store is dropped (Unix), so nothing is left behind.
async fn durable_store(settings: SessionSettings) -> Arc<dyn SessionStore> {
    let dir = support::TempDir::new("conformance");
    let store = bounded(DurableStore::open(
        &dir.0,
        settings,
        DurableSettings::default(),
    ))
    .await
    .unwrap();
    drop(dir);
    Arc::new(store)
}

store_conformance!(durable, durable_store);

/// A Redis store on its own throw-away `redis-server` (fails, never skips, without one).
#[cfg(feature = "redis")]
async fn redis_store(settings: SessionSettings) -> Arc<dyn SessionStore> {
    Arc::new(support::redis::ServerBoundSessionStore::start(settings).await)
}

#[cfg(feature = "redis")]
store_conformance!(redis_backend, redis_store);
