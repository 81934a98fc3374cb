//! Behaviour every `TicketStore` backend (the desktop QR login's tickets) must show, written
//! once and instantiated per backend with `ticket_conformance!`, like the session stores'
//! suite: never overwrite, never evict (refuse when full), compare-and-set, one winner of an
//! atomic take however many race, a lifetime fixed at insertion. Plus the Redis key layout and
//! the memory cost of a pending ticket (printed, not asserted).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::bounded;
use wechat_oauth_proxy::session::{MemoryTicketStore, TicketKey, TicketStore};

/// A ticket as the layer stores it (JSON of a pending ticket, realistic sizes).
fn pending(i: usize) -> Vec<u8> {
    format!(
        r#"{{"t":"wxa1b2c3d4e5f60708","r":"/orders/{i}?tab=1","d":"{:064x}","i":"203.0.113.7","u":"Chrome · Windows","c":1764700000000,"s":{{"k":"pending"}}}}"#,
        i
    )
    .into_bytes()
}

fn key(i: usize) -> TicketKey {
    TicketKey::of(&format!("ticket-{i}-{:016x}", rand::random::<u64>()))
}

const LONG: Duration = Duration::from_secs(300);

async fn insert_get_never_overwrites(store: Arc<dyn TicketStore>) {
    let k = key(1);
    assert!(bounded(store.insert(&k, pending(1), LONG)).await.unwrap());
    assert!(!bounded(store.insert(&k, pending(2), LONG)).await.unwrap());
    assert_eq!(bounded(store.get(&k)).await.unwrap(), Some(pending(1)));
    assert_eq!(bounded(store.get(&key(2))).await.unwrap(), None);
}

async fn replace_is_compare_and_set(store: Arc<dyn TicketStore>) {
    let k = key(1);
    assert!(
        !bounded(store.replace(&k, b"x", b"y".to_vec()))
            .await
            .unwrap(),
        "absent"
    );
    bounded(store.insert(&k, pending(1), LONG)).await.unwrap();
    assert!(
        !bounded(store.replace(&k, &pending(9), b"y".to_vec()))
            .await
            .unwrap()
    );
    assert!(
        bounded(store.replace(&k, &pending(1), b"y".to_vec()))
            .await
            .unwrap()
    );
    assert_eq!(bounded(store.get(&k)).await.unwrap(), Some(b"y".to_vec()));
    assert!(
        !bounded(store.replace(&k, &pending(1), b"z".to_vec()))
            .await
            .unwrap(),
        "stale"
    );
}

async fn take_is_compare_and_delete(store: Arc<dyn TicketStore>) {
    let k = key(1);
    bounded(store.insert(&k, pending(1), LONG)).await.unwrap();
    assert!(
        !bounded(store.take(&k, &pending(2))).await.unwrap(),
        "not what was read"
    );
    assert_eq!(
        bounded(store.get(&k)).await.unwrap(),
        Some(pending(1)),
        "kept"
    );
    assert!(bounded(store.take(&k, &pending(1))).await.unwrap());
    assert_eq!(bounded(store.get(&k)).await.unwrap(), None);
    assert!(!bounded(store.take(&k, &pending(1))).await.unwrap(), "once");
    bounded(store.insert(&k, pending(1), LONG)).await.unwrap();
    bounded(store.remove(&k)).await.unwrap();
    assert_eq!(bounded(store.get(&k)).await.unwrap(), None);
}

/// Twenty racing takes (and replaces) of one ticket: exactly one wins.
async fn racing_steps_have_one_winner(store: Arc<dyn TicketStore>) {
    for replace in [false, true] {
        let k = key(1);
        bounded(store.insert(&k, pending(1), LONG)).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let store = Arc::clone(&store);
                let k = k.clone();
                tokio::spawn(async move {
                    if replace {
                        store.replace(&k, &pending(1), pending(100 + n)).await
                    } else {
                        store.take(&k, &pending(1)).await
                    }
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if bounded(task).await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "replace: {replace}");
    }
}

/// The lifetime is fixed when inserted: a replace does not extend it.
async fn lifetime_is_fixed_at_insertion(store: Arc<dyn TicketStore>) {
    let k = key(1);
    bounded(store.insert(&k, pending(1), Duration::from_millis(600)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bounded(store.replace(&k, &pending(1), pending(2)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bounded(store.get(&k)).await.unwrap(),
        None,
        "expired at 600 ms"
    );
    assert!(!bounded(store.take(&k, &pending(2))).await.unwrap());
}

/// Past the bound new tickets are refused; the ones held are kept, untouched.
async fn full_means_refused_never_evicted(store: Arc<dyn TicketStore>) {
    let keys: Vec<_> = (0..CAPACITY).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        assert!(bounded(store.insert(k, pending(i), LONG)).await.unwrap());
    }
    for i in 0..10 {
        assert!(
            !bounded(store.insert(&key(100 + i), pending(i), LONG))
                .await
                .unwrap(),
            "refused when full"
        );
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(bounded(store.get(k)).await.unwrap(), Some(pending(i)));
    }
}

/// The bound each backend is built with here.
const CAPACITY: usize = 5;

macro_rules! ticket_conformance {
    ($name:ident, $store:ident) => {
        mod $name {
            #[tokio::test]
            async fn insert_get_never_overwrites() {
                super::insert_get_never_overwrites(super::$store().await).await;
            }
            #[tokio::test]
            async fn replace_is_compare_and_set() {
                super::replace_is_compare_and_set(super::$store().await).await;
            }
            #[tokio::test]
            async fn take_is_compare_and_delete() {
                super::take_is_compare_and_delete(super::$store().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_steps_have_one_winner() {
                super::racing_steps_have_one_winner(super::$store().await).await;
            }
            #[tokio::test]
            async fn lifetime_is_fixed_at_insertion() {
                super::lifetime_is_fixed_at_insertion(super::$store().await).await;
            }
            #[tokio::test]
            async fn full_means_refused_never_evicted() {
                super::full_means_refused_never_evicted(super::$store().await).await;
            }
        }
    };
}

async fn memory() -> Arc<dyn TicketStore> {
    Arc::new(MemoryTicketStore::new(CAPACITY))
}

ticket_conformance!(memory_backend, memory);

#[cfg(feature = "redis")]
mod redis_support {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use wechat_oauth_proxy::session::{
        RedisSessionStore, RedisTicketStore, SessionSettings, StoreError, TicketKey, TicketStore,
    };

    use super::support::{bounded, redis::RedisServer};

    /// A Redis ticket store on its own throw-away `redis-server`, kept alive with it.
    #[derive(Debug)]
    pub(super) struct ServerBound {
        pub(super) store: RedisTicketStore,
        pub(super) server: Arc<RedisServer>,
    }

    pub(super) async fn start(capacity: usize) -> ServerBound {
        let server = Arc::new(RedisServer::start());
        let sessions = bounded(RedisSessionStore::new(
            &server.url(),
            "wxauth:",
            SessionSettings::default(),
        ))
        .await
        .expect("connect to the test redis-server");
        ServerBound {
            store: RedisTicketStore::new(sessions.connection(), "wxauth:", capacity),
            server,
        }
    }

    #[async_trait]
    impl TicketStore for ServerBound {
        async fn insert(
            &self,
            key: &TicketKey,
            value: Vec<u8>,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.store.insert(key, value, ttl).await
        }
        async fn get(&self, key: &TicketKey) -> Result<Option<Vec<u8>>, StoreError> {
            self.store.get(key).await
        }
        async fn replace(
            &self,
            key: &TicketKey,
            expected: &[u8],
            value: Vec<u8>,
        ) -> Result<bool, StoreError> {
            self.store.replace(key, expected, value).await
        }
        async fn take(&self, key: &TicketKey, expected: &[u8]) -> Result<bool, StoreError> {
            self.store.take(key, expected).await
        }
        async fn remove(&self, key: &TicketKey) -> Result<(), StoreError> {
            self.store.remove(key).await
        }
    }
}

#[cfg(feature = "redis")]
async fn redis() -> Arc<dyn TicketStore> {
    Arc::new(redis_support::start(CAPACITY).await)
}

#[cfg(feature = "redis")]
ticket_conformance!(redis_backend, redis);

/// Keys are `wxauth:qr:<sha256(id) hex>` with a TTL; the id itself never appears in Redis.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_keys_hide_the_ticket_id() {
    let bound = redis_support::start(100).await;
    let id = "SECRETidSECRETidSECRET";
    let k = TicketKey::of(id);
    assert!(
        bounded(bound.store.insert(&k, pending(1), LONG))
            .await
            .unwrap()
    );
    let port = bound.server.port();
    let exists = support::redis::raw_command(port, &format!("EXISTS wxauth:qr:{}", k.as_hex()));
    assert_eq!(exists, ":1");
    let with_id = support::redis::raw_command(port, &format!("KEYS *{id}*"));
    assert_eq!(with_id, "*0", "no key names the id");
    let ttl = support::redis::raw_command(port, &format!("PTTL wxauth:qr:{}", k.as_hex()));
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap_or(-1);
    assert!(ms > 290_000 && ms <= 300_000, "{ttl}");
}

/// The memory one pending ticket costs in the memory store, for the README: resident memory
/// before and after 10 000 tickets (single test thread; printed with `--nocapture`, not
/// asserted — allocator and page granularity make it an estimate).
#[tokio::test]
async fn memory_per_pending_ticket_measured() {
    const N: usize = 10_000;
    let store = MemoryTicketStore::new(N);
    let before = resident_bytes();
    let mut payload = 0;
    for i in 0..N {
        let value = pending(i);
        payload += value.len();
        assert!(store.insert(&key(i), value, LONG).await.unwrap());
    }
    let after = resident_bytes();
    assert_eq!(store.len(), N);
    assert!(
        !store.insert(&key(N), pending(N), LONG).await.unwrap(),
        "the bound"
    );
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "qr memory: {N} pending tickets: {} KiB resident more, {} bytes each (payload {} bytes each)",
            after.saturating_sub(before) / 1024,
            after.saturating_sub(before) / N as u64,
            payload / N
        );
    }
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
