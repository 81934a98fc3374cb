//! The in-process session store (default, one instance), on `moka` caches.
//!
//! Sessions live in a bounded cache keyed by the 16 raw id bytes, each value a compact record
//! (all identity strings in one buffer, behind an `Arc` so reads do not copy it): about
//! 0.7 KiB of RSS per session including moka's bookkeeping (measured with one million sessions
//! carrying a realistic identity: 30-byte ids, a 150-byte avatar URL).
//!
//! Expiry is per entry: a session dies at `create + ttl` (absolute) or after `idle_timeout`
//! without a `load`/`touch`, whichever comes first. Beyond `capacity` the least recently used session is evicted (LRU rather than
//! moka's default TinyLFU admission, which could refuse to keep a brand-new login).
//!
//! Redeemed-login markers (one per callback that carried a genuine flow cookie, see
//! [`SessionStore::consume_flow`]) live in a further cache, bounded by
//! [`SessionSettings::consumed_capacity`] (about 0.2 KiB each), keyed by the SHA-256 of the OAuth
//! state (the state itself is never kept). Pending logins are not stored at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest as _, Sha256};

use crate::identity::Identity;
use crate::ids::Scope;

use super::{
    FlowKey, SESSION_ID_BYTES, SessionId, SessionRecord, SessionSettings, SessionStore, StoreError,
};
use crate::clock::unix_now;

/// How many fresh ids `create` draws before giving up (a collision of 128-bit random ids is
/// astronomically unlikely; more than one means the RNG is broken).
const CREATE_ATTEMPTS: usize = 4;

type FlowHash = [u8; 32];

/// In-process [`SessionStore`] backed by `moka::future::Cache`.
///
/// Cheap to clone (the caches are reference-counted); clones share state.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<[u8; SESSION_ID_BYTES], Arc<CompactRecord>>,
    markers: Cache<FlowHash, Timed<Marker>>,
    settings: SessionSettings,
}

/// What the store knows about a redeemed login flow.
#[derive(Clone, Copy)]
enum Marker {
    /// The callback redeemed the state and is talking to WeChat.
    Consumed,
    /// The login completed with this session.
    Completed([u8; SESSION_ID_BYTES]),
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.sessions.entry_count())
            .field("markers", &self.markers.entry_count())
            .field("settings", &self.settings)
            .finish()
    }
}

/// A session record packed for memory: the five identity strings concatenated in one buffer,
/// the scope beside them.
///
/// Saves four allocations (and their allocator overhead) per session compared with keeping a
/// `SessionRecord`; `load` expands it back.
struct CompactRecord {
    text: Box<str>,
    /// End offset of each field in `text`: openid, unionid, nickname, avatar, appid.
    ends: [u32; 5],
    has_unionid: bool,
    scope: Scope,
    created_at: u64,
}

impl CompactRecord {
    fn new(record: &SessionRecord) -> Self {
        let identity = &record.identity;
        let fields = [
            identity.openid.as_str(),
            identity.unionid.as_ref().map_or("", |u| u.as_str()),
            identity.nickname.as_str(),
            identity.avatar.as_str(),
            identity.appid.as_str(),
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; 5];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            // Identities are a few hundred bytes; saturate rather than wrap on absurd input.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            has_unionid: identity.unionid.is_some(),
            scope: identity.scope,
            created_at: record.created_at,
        }
    }

    fn field(&self, index: usize) -> String {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        let end = self.ends[index] as usize;
        self.text.get(start..end).unwrap_or_default().to_owned()
    }

    fn expand(&self, last_seen: u64) -> SessionRecord {
        SessionRecord {
            identity: Identity {
                openid: self.field(0).into(),
                unionid: self.has_unionid.then(|| self.field(1).into()),
                nickname: self.field(2),
                avatar: self.field(3),
                appid: self.field(4).into(),
                scope: self.scope,
            },
            created_at: self.created_at,
            last_seen,
        }
    }
}

/// A value with its own time to live.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    ttl: Duration,
    /// Checked again on reads, so an entry is never used past its TTL whatever moka's
    /// housekeeping timing.
    expires_at: Instant,
}

impl<V> Timed<V> {
    fn new(value: V, ttl: Duration) -> Self {
        Self {
            value,
            ttl,
            expires_at: Instant::now() + ttl,
        }
    }

    fn live(self) -> Option<V> {
        (Instant::now() < self.expires_at).then_some(self.value)
    }
}

/// Session expiry: absolute lifetime from insertion, capped by the idle timeout at every read.
struct SessionExpiry {
    ttl: Duration,
    idle: Duration,
}

impl Expiry<[u8; SESSION_ID_BYTES], Arc<CompactRecord>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; SESSION_ID_BYTES],
        _value: &Arc<CompactRecord>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.ttl.min(self.idle))
    }

    fn expire_after_read(
        &self,
        _key: &[u8; SESSION_ID_BYTES],
        _value: &Arc<CompactRecord>,
        read_at: Instant,
        _duration_until_expiry: Option<Duration>,
        last_modified_at: Instant,
    ) -> Option<Duration> {
        // Records are never updated in place, so `last_modified_at` is the creation instant.
        let absolute_left = (last_modified_at + self.ttl).saturating_duration_since(read_at);
        Some(absolute_left.min(self.idle))
    }

    fn expire_after_update(
        &self,
        _key: &[u8; SESSION_ID_BYTES],
        _value: &Arc<CompactRecord>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // Only reached when `create` replaces an entry moka already considers expired.
        Some(self.ttl.min(self.idle))
    }
}

/// Expiry of markers: the TTL given when they were stored.
struct TimedExpiry;

impl<K, V> Expiry<K, Timed<V>> for TimedExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Timed<V>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &K,
        value: &Timed<V>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl MemoryStore {
    /// A store with the given lifetimes and bounds.
    pub fn new(settings: SessionSettings) -> Self {
        let sessions = Cache::builder()
            .name("wxauth-sessions")
            .max_capacity(settings.capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(SessionExpiry {
                ttl: settings.ttl,
                idle: settings.idle_timeout,
            })
            .build();
        let markers = Cache::builder()
            .name("wxauth-redeemed-flows")
            .max_capacity(settings.consumed_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(TimedExpiry)
            .build();
        Self {
            sessions,
            markers,
            settings,
        }
    }

    /// The settings the store was built with.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Approximate number of live sessions (for metrics; moka counts lazily).
    pub fn session_count(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// Approximate number of redeemed-login markers held (for metrics and tests).
    pub fn redeemed_flow_count(&self) -> u64 {
        self.markers.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, expirations) now; for tests and benchmarks.
    pub async fn run_pending_tasks(&self) {
        self.sessions.run_pending_tasks().await;
        self.markers.run_pending_tasks().await;
    }
}

impl MemoryStore {
    /// Inserts `record` under `id` unless a live session already has that id; `true` when
    /// inserted. Never overwrites (this is what makes `create` collision-safe).
    async fn insert_new(&self, id: &SessionId, record: Arc<CompactRecord>) -> bool {
        self.sessions
            .entry(*id.expose_bytes())
            .or_insert_with(std::future::ready(record))
            .await
            .is_fresh()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(SessionSettings::default())
    }
}

fn flow_hash(key: &FlowKey) -> FlowHash {
    Sha256::digest(key.expose_secret().as_bytes()).into()
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        let record = Arc::new(CompactRecord::new(&record));
        for _ in 0..CREATE_ATTEMPTS {
            let id = SessionId::generate();
            if self.insert_new(&id, Arc::clone(&record)).await {
                tracing::debug!(session = %id.fingerprint(), "session created");
                return Ok(id);
            }
            tracing::warn!("session id collision; drawing a new id");
        }
        Err(StoreError::Backend(
            "could not allocate a unique session id".to_owned(),
        ))
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .sessions
            .get(id.expose_bytes())
            .await
            .map(|record| record.expand(unix_now())))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.sessions.invalidate(id.expose_bytes()).await;
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions.get(id.expose_bytes()).await.is_some())
    }

    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError> {
        // The entry API inserts only when no live marker exists, atomically: of concurrent
        // callers exactly one sees a fresh entry.
        Ok(self
            .markers
            .entry(flow_hash(key))
            .or_insert_with(std::future::ready(Timed::new(Marker::Consumed, ttl)))
            .await
            .is_fresh())
    }

    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let marker = Marker::Completed(*session.expose_bytes());
        self.markers
            .insert(flow_hash(key), Timed::new(marker, ttl))
            .await;
        Ok(())
    }

    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        Ok(
            match self
                .markers
                .get(&flow_hash(key))
                .await
                .and_then(Timed::live)
            {
                Some(Marker::Completed(bytes)) => Some(SessionId::from_bytes(bytes)),
                Some(Marker::Consumed) | None => None,
            },
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn identity(openid: &str) -> Identity {
        Identity {
            openid: openid.into(),
            unionid: None,
            nickname: "测试🙂".to_owned(),
            avatar: String::new(),
            appid: "wx0123456789abcdef".into(),
            scope: Scope::UserInfo,
        }
    }

    #[tokio::test]
    async fn an_existing_id_is_never_overwritten() {
        let store = MemoryStore::default();
        let id = SessionId::generate();
        assert!(
            store
                .insert_new(
                    &id,
                    Arc::new(CompactRecord::new(&SessionRecord::new(identity("first"))))
                )
                .await
        );
        assert!(
            !store
                .insert_new(
                    &id,
                    Arc::new(CompactRecord::new(&SessionRecord::new(identity("second"))))
                )
                .await
        );
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.identity.openid, "first");
    }

    #[tokio::test]
    async fn capacity_is_bounded_and_new_logins_are_kept() {
        let settings = SessionSettings {
            capacity: 10,
            ..SessionSettings::default()
        };
        let store = MemoryStore::new(settings);
        let mut last = None;
        for i in 0..100 {
            last = Some(
                store
                    .create(SessionRecord::new(identity(&format!("u{i}"))))
                    .await
                    .unwrap(),
            );
        }
        store.run_pending_tasks().await;
        assert!(
            store.session_count() <= 10,
            "{} sessions kept",
            store.session_count()
        );
        let last = last.unwrap();
        let loaded = store.load(&last).await.unwrap();
        assert_eq!(loaded.map(|r| r.identity.openid), Some("u99".into()));
    }

    #[tokio::test]
    async fn redeemed_markers_are_bounded() {
        let settings = SessionSettings {
            consumed_capacity: 5,
            ..SessionSettings::default()
        };
        let store = MemoryStore::new(settings);
        for i in 0..50 {
            let key = FlowKey::new(format!("state-{i}"));
            assert!(
                store
                    .consume_flow(&key, Duration::from_secs(60))
                    .await
                    .unwrap()
            );
        }
        store.run_pending_tasks().await;
        assert!(
            store.markers.entry_count() <= 5,
            "{}",
            store.markers.entry_count()
        );
    }

    #[test]
    fn compact_record_round_trips() {
        let mut full = identity("o-compact");
        full.unionid = Some("u-1".into());
        full.avatar = "https://example.com/a.png".to_owned();
        for id in [
            full.clone(),
            identity("o-2"),
            Identity {
                nickname: String::new(),
                ..full
            },
        ] {
            let record = SessionRecord {
                identity: id,
                created_at: 42,
                last_seen: 43,
            };
            let back = CompactRecord::new(&record).expand(99);
            assert_eq!(back.identity, record.identity);
            assert_eq!((back.created_at, back.last_seen), (42, 99));
        }
    }

    #[test]
    fn debug_shows_counts_not_contents() {
        let shown = format!("{:?}", MemoryStore::default());
        assert!(shown.starts_with("MemoryStore"), "{shown}");
    }
}
