//! Behaviour every `PlatformStore` backend (memory, file, Redis) must show, written once and
//! instantiated per backend with `platform_conformance!`, as `tests/session_conformance.rs` does
//! for the session stores.
//!
//! - `platform_conformance!` (all backends): ticket and token round trip, keyed by appid;
//!   overwrite (a newer ticket or a new token replaces the stored one, and neither touches the
//!   other); compare-before-invalidate; the refresh lock can be taken, released and taken again;
//!   tenant records round trip, are replaced per tenant, are kept per component and never touch
//!   the ticket or the token.
//! - `durable_conformance!` (file and Redis, whose data outlives the instance): a second
//!   instance on the same storage reads what the first wrote (tenant records included), and a
//!   corrupt stored record reads as absent (never an error, never a panic) and is repaired by the
//!   next save.
//!
//! What only one backend does stays in its own suite: the Redis lock's exclusivity across
//! instances and the ticket's `CreateTime` ordering (`tests/redis_backends.rs`), the file
//! store's permissions and file names (`src/wechat/persist.rs`). Every store call is bounded.

// Test helpers outside `#[test]` functions: failing loudly is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{sync::Arc, time::Duration};

use support::{TempDir, bounded};
use wechat_oauth_proxy::wechat::{
    AuthorizerAppId, ComponentAccessToken, ComponentAppId, VerifyTicket,
    persist::{FileStore, MemoryPlatformStore, PlatformStore, StoredTicket, StoredToken},
    tenants::{TenantRecord, TenantStatus},
    token::now_unix,
};

fn appid() -> ComponentAppId {
    ComponentAppId::new("wx0123456789abcdef")
}

fn other_appid() -> ComponentAppId {
    ComponentAppId::new("wxffffffffffffffff")
}

/// A ticket pushed at `create_time` (received a second later).
fn ticket(create_time: i64) -> StoredTicket {
    StoredTicket {
        ticket: VerifyTicket::new(format!("ticket@@@t{create_time}")),
        create_time,
        received_at: create_time + 1,
    }
}

/// A token that expires in two hours (a store may drop an already expired one).
fn token(value: &str) -> StoredToken {
    StoredToken {
        token: ComponentAccessToken::new(value),
        expires_at: now_unix() + 7200,
    }
}

fn tenant_a() -> AuthorizerAppId {
    AuthorizerAppId::new("wxa1b2c3d4e5f60708")
}

fn tenant_b() -> AuthorizerAppId {
    AuthorizerAppId::new("wxb1b2c3d4e5f60708")
}

/// A learned tenant record with every field set.
fn active_record(updated_at: i64) -> TenantRecord {
    TenantRecord {
        func_ids: vec![1, 4, 15],
        nick_name: Some("A 店 🏪".to_owned()),
        service_type: Some(2),
        verify_type: Some(0),
        account_status: Some(1),
        ..TenantRecord::with_status(TenantStatus::Active, updated_at)
    }
}

/// The tenant records stored for `component`, sorted by appid.
async fn tenants_of(
    store: &Arc<dyn PlatformStore>,
    component: &ComponentAppId,
) -> Vec<(AuthorizerAppId, TenantRecord)> {
    let mut all = bounded(store.load_tenants(component)).await.unwrap();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Where a backend keeps its data, so that it can be reopened and corrupted from outside.
enum Storage {
    /// Nothing outlives the instance.
    Memory,
    /// A state directory, removed on drop.
    File(TempDir),
    /// A throw-away `redis-server` and the key prefix of this test.
    #[cfg(feature = "redis")]
    Redis(support::redis::RedisServer, String),
}

/// One store under test and the storage behind it.
struct Backend {
    store: Arc<dyn PlatformStore>,
    storage: Storage,
}

impl Backend {
    async fn memory() -> Self {
        Self {
            store: Arc::new(MemoryPlatformStore::new()),
            storage: Storage::Memory,
        }
    }

    async fn file() -> Self {
        let dir = TempDir::new("platform-conformance");
        let store = FileStore::new(dir.0.join("state")).unwrap();
        Self {
            store: Arc::new(store),
            storage: Storage::File(dir),
        }
    }

    #[cfg(feature = "redis")]
    async fn redis() -> Self {
        let server = support::redis::RedisServer::start();
        let prefix = format!("t{:08x}:", rand::random::<u32>());
        let store = Self::redis_store(&server, &prefix).await;
        Self {
            store,
            storage: Storage::Redis(server, prefix),
        }
    }

    #[cfg(feature = "redis")]
    async fn redis_store(
        server: &support::redis::RedisServer,
        prefix: &str,
    ) -> Arc<dyn PlatformStore> {
        use wechat_oauth_proxy::wechat::redis::RedisPlatformStore;
        Arc::new(
            bounded(RedisPlatformStore::new(&server.url(), prefix))
                .await
                .expect("connect to the test redis-server"),
        )
    }

    /// A second, independent instance on the same storage.
    async fn reopen(&self) -> Arc<dyn PlatformStore> {
        match &self.storage {
            Storage::Memory => panic!("a memory store has no storage to reopen"),
            Storage::File(dir) => Arc::new(FileStore::new(dir.0.join("state")).unwrap()),
            #[cfg(feature = "redis")]
            Storage::Redis(server, prefix) => Self::redis_store(server, prefix).await,
        }
    }

    /// Replaces what the storage holds for `appid` (ticket, token, tenant A's record) with bytes that are not
    /// a stored record, from outside the store.
    fn corrupt(&self, appid: &ComponentAppId) {
        match &self.storage {
            Storage::Memory => panic!("a memory store holds values, not bytes"),
            Storage::File(dir) => {
                let path = dir
                    .0
                    .join("state")
                    .join(format!("platform-{}.json", appid.as_str()));
                std::fs::write(path, b"{\"ticket\": {\"ticket\": \"ticket@@@trunc").unwrap();
                let tenants = dir
                    .0
                    .join("state")
                    .join(format!("tenants-{}.json", appid.as_str()));
                std::fs::write(tenants, b"{\"wxa1b2c3d4e5f60708\": {\"status\": \"act").unwrap();
            }
            #[cfg(feature = "redis")]
            Storage::Redis(server, prefix) => {
                let reply = support::redis::raw_command(
                    server.port(),
                    &format!("SET {prefix}tenant:{} {{trunc", tenant_a().as_str()),
                );
                assert_eq!(reply, "+OK");
                for kind in ["ticket", "token"] {
                    let key = format!("{prefix}wechat:{kind}:{}", appid.as_str());
                    let reply =
                        support::redis::raw_command(server.port(), &format!("SET {key} {{trunc"));
                    assert_eq!(reply, "+OK");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every backend

/// A fresh store holds nothing and answers `ping`.
async fn a_fresh_store_is_empty_and_reachable(backend: Backend) {
    let store = &backend.store;
    assert_eq!(bounded(store.load_ticket(&appid())).await.unwrap(), None);
    assert_eq!(bounded(store.load_token(&appid())).await.unwrap(), None);
    bounded(store.ping()).await.unwrap();
}

/// A saved ticket loads back equal, for its appid only.
async fn ticket_round_trip(backend: Backend) {
    let store = &backend.store;
    bounded(store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_000))
    );
    assert_eq!(
        bounded(store.load_ticket(&other_appid())).await.unwrap(),
        None
    );
    assert_eq!(bounded(store.load_token(&appid())).await.unwrap(), None);
}

/// A saved token loads back equal, for its appid only.
async fn token_round_trip(backend: Backend) {
    let store = &backend.store;
    let saved = token("tok-round-trip");
    bounded(store.save_token(&appid(), &saved)).await.unwrap();
    assert_eq!(
        bounded(store.load_token(&appid())).await.unwrap(),
        Some(saved)
    );
    assert_eq!(
        bounded(store.load_token(&other_appid())).await.unwrap(),
        None
    );
    assert_eq!(bounded(store.load_ticket(&appid())).await.unwrap(), None);
}

/// A newer ticket replaces the stored one and a new token replaces the stored one; replacing
/// either keeps the other.
async fn saves_overwrite_and_keep_the_other_value(backend: Backend) {
    let store = &backend.store;
    bounded(store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    let first = token("tok-1");
    bounded(store.save_token(&appid(), &first)).await.unwrap();

    bounded(store.save_ticket(&appid(), &ticket(1_700_000_600)))
        .await
        .unwrap();
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_600))
    );
    assert_eq!(
        bounded(store.load_token(&appid())).await.unwrap(),
        Some(first)
    );

    let second = token("tok-2");
    bounded(store.save_token(&appid(), &second)).await.unwrap();
    assert_eq!(
        bounded(store.load_token(&appid())).await.unwrap(),
        Some(second)
    );
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_600))
    );
}

/// `invalidate_token_if` removes the token only while it still equals the failed one, and
/// never touches the ticket or another appid.
async fn invalidation_compares_before_deleting(backend: Backend) {
    let store = &backend.store;
    let failed = ComponentAccessToken::new("tok-failed");
    // Nothing stored: nothing removed.
    assert!(
        !bounded(store.invalidate_token_if(&appid(), &failed))
            .await
            .unwrap()
    );

    bounded(store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    let current = token("tok-current");
    bounded(store.save_token(&appid(), &current)).await.unwrap();
    bounded(store.save_token(&other_appid(), &token("tok-current")))
        .await
        .unwrap();

    // Another task already replaced the failed token: the current one stays.
    assert!(
        !bounded(store.invalidate_token_if(&appid(), &failed))
            .await
            .unwrap()
    );
    assert_eq!(
        bounded(store.load_token(&appid())).await.unwrap(),
        Some(current.clone())
    );

    // The failed token is the stored one: removed, and only for this appid.
    assert!(
        bounded(store.invalidate_token_if(&appid(), &current.token))
            .await
            .unwrap()
    );
    assert_eq!(bounded(store.load_token(&appid())).await.unwrap(), None);
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_000))
    );
    assert!(
        bounded(store.load_token(&other_appid()))
            .await
            .unwrap()
            .is_some()
    );
    // Already gone: a second invalidation removes nothing.
    assert!(
        !bounded(store.invalidate_token_if(&appid(), &current.token))
            .await
            .unwrap()
    );
}

/// The refresh lock is granted to a first taker, can be released, and is granted again after
/// the release; releasing a lock that is not held is not an error.
async fn the_refresh_lock_is_taken_released_and_taken_again(backend: Backend) {
    let store = &backend.store;
    let ttl = Duration::from_secs(30);
    bounded(store.unlock_refresh(&appid())).await.unwrap();
    assert!(
        bounded(store.try_lock_refresh(&appid(), ttl))
            .await
            .unwrap()
    );
    bounded(store.unlock_refresh(&appid())).await.unwrap();
    assert!(
        bounded(store.try_lock_refresh(&appid(), ttl))
            .await
            .unwrap()
    );
    bounded(store.unlock_refresh(&appid())).await.unwrap();
}

/// Tenant records load back equal, one per tenant, replaced per tenant, kept per component,
/// and beside (never instead of) the ticket and the token.
async fn tenant_records_round_trip_per_component(backend: Backend) {
    let store = &backend.store;
    assert!(tenants_of(store, &appid()).await.is_empty());
    bounded(store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    bounded(store.save_tenant(&appid(), &tenant_a(), &active_record(10)))
        .await
        .unwrap();
    let revoked = TenantRecord::with_status(TenantStatus::Revoked, 11);
    bounded(store.save_tenant(&appid(), &tenant_b(), &revoked))
        .await
        .unwrap();
    assert_eq!(
        tenants_of(store, &appid()).await,
        vec![
            (tenant_a(), active_record(10)),
            (tenant_b(), revoked.clone())
        ]
    );
    // Replacing one tenant's record keeps the other's.
    let no_web = TenantRecord {
        func_ids: vec![1],
        ..TenantRecord::with_status(TenantStatus::NoWebPermission, 12)
    };
    bounded(store.save_tenant(&appid(), &tenant_a(), &no_web))
        .await
        .unwrap();
    assert_eq!(
        tenants_of(store, &appid()).await,
        vec![(tenant_a(), no_web), (tenant_b(), revoked)]
    );
    // Another platform has its own tenants.
    assert!(tenants_of(store, &other_appid()).await.is_empty());
    // The ticket is untouched, and no token appeared.
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_000))
    );
    assert_eq!(bounded(store.load_token(&appid())).await.unwrap(), None);
}

macro_rules! platform_conformance {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn a_fresh_store_is_empty_and_reachable() {
                super::a_fresh_store_is_empty_and_reachable($make().await).await;
            }
            #[tokio::test]
            async fn ticket_round_trip() {
                super::ticket_round_trip($make().await).await;
            }
            #[tokio::test]
            async fn token_round_trip() {
                super::token_round_trip($make().await).await;
            }
            #[tokio::test]
            async fn saves_overwrite_and_keep_the_other_value() {
                super::saves_overwrite_and_keep_the_other_value($make().await).await;
            }
            #[tokio::test]
            async fn invalidation_compares_before_deleting() {
                super::invalidation_compares_before_deleting($make().await).await;
            }
            #[tokio::test]
            async fn the_refresh_lock_is_taken_released_and_taken_again() {
                super::the_refresh_lock_is_taken_released_and_taken_again($make().await).await;
            }
            #[tokio::test]
            async fn tenant_records_round_trip_per_component() {
                super::tenant_records_round_trip_per_component($make().await).await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Backends whose data outlives the instance

/// A second instance on the same storage reads what the first wrote, including an
/// invalidation.
async fn another_instance_reads_what_one_wrote(backend: Backend) {
    let saved = token("tok-shared");
    bounded(backend.store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    bounded(backend.store.save_token(&appid(), &saved))
        .await
        .unwrap();
    let other = backend.reopen().await;
    assert_eq!(
        bounded(other.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_000))
    );
    assert_eq!(
        bounded(other.load_token(&appid())).await.unwrap(),
        Some(saved.clone())
    );
    assert!(
        bounded(other.invalidate_token_if(&appid(), &saved.token))
            .await
            .unwrap()
    );
    bounded(
        backend
            .store
            .save_tenant(&appid(), &tenant_a(), &active_record(7)),
    )
    .await
    .unwrap();
    assert_eq!(
        tenants_of(&other, &appid()).await,
        vec![(tenant_a(), active_record(7))]
    );
    assert_eq!(
        bounded(backend.store.load_token(&appid())).await.unwrap(),
        None
    );
}

/// A corrupt stored record reads as absent (not an error: the next push or fetch replaces it)
/// and the next save repairs it; another appid is unaffected.
async fn corrupt_records_read_as_absent_and_are_repaired(backend: Backend) {
    let store = &backend.store;
    bounded(store.save_ticket(&appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    bounded(store.save_token(&appid(), &token("tok-before")))
        .await
        .unwrap();
    bounded(store.save_ticket(&other_appid(), &ticket(1_700_000_000)))
        .await
        .unwrap();
    bounded(store.save_tenant(&appid(), &tenant_a(), &active_record(1)))
        .await
        .unwrap();

    backend.corrupt(&appid());
    assert!(tenants_of(store, &appid()).await.is_empty());
    bounded(store.save_tenant(&appid(), &tenant_a(), &active_record(2)))
        .await
        .unwrap();
    assert_eq!(
        tenants_of(store, &appid()).await,
        vec![(tenant_a(), active_record(2))]
    );
    assert_eq!(bounded(store.load_ticket(&appid())).await.unwrap(), None);
    assert_eq!(bounded(store.load_token(&appid())).await.unwrap(), None);
    assert_eq!(
        bounded(store.load_ticket(&other_appid())).await.unwrap(),
        Some(ticket(1_700_000_000))
    );

    bounded(store.save_ticket(&appid(), &ticket(1_700_000_600)))
        .await
        .unwrap();
    let after = token("tok-after");
    bounded(store.save_token(&appid(), &after)).await.unwrap();
    assert_eq!(
        bounded(store.load_ticket(&appid())).await.unwrap(),
        Some(ticket(1_700_000_600))
    );
    assert_eq!(
        bounded(store.load_token(&appid())).await.unwrap(),
        Some(after)
    );
}

macro_rules! durable_conformance {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn another_instance_reads_what_one_wrote() {
                super::another_instance_reads_what_one_wrote($make().await).await;
            }
            #[tokio::test]
            async fn corrupt_records_read_as_absent_and_are_repaired() {
                super::corrupt_records_read_as_absent_and_are_repaired($make().await).await;
            }
        }
    };
}

platform_conformance!(memory, Backend::memory);
platform_conformance!(file, Backend::file);
durable_conformance!(file_durable, Backend::file);

#[cfg(feature = "redis")]
platform_conformance!(redis, Backend::redis);
#[cfg(feature = "redis")]
durable_conformance!(redis_durable, Backend::redis);
