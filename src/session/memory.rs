//! The in-process session store (default, one instance), on `moka` caches.
//!
//! Sessions live in a bounded cache keyed by the 16 raw id bytes, each value a compact record
//! (all identity strings in one buffer, behind an `Arc` so reads do not copy it): about
//! 0.6 KiB of RSS per session including moka's bookkeeping (measured with one million sessions
//! carrying a realistic identity: 30-byte ids, a 150-byte avatar URL).
//!
//! The same memory is the front of the [`DurableStore`](super::DurableStore), which fills it
//! from its file at start (sessions keep their age and idle time across a restart) and hears of
//! capacity evictions through a listener.
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use sha2::{Digest as _, Sha256};

use crate::identity::Identity;
use crate::ids::{AppId, Scope};

use super::{
    FlowKey, SESSION_ID_BYTES, SessionId, SessionRecord, SessionSettings, SessionStore, StoreError,
    create_with_fresh_id,
};
use crate::clock::unix_now;

/// The SHA-256 of an OAuth state: how redeemed-login markers are keyed (the state itself is
/// never kept).
pub(super) type FlowHash = [u8; 32];

/// Raw bytes of a session id, the key of the session cache.
pub(super) type IdBytes = [u8; SESSION_ID_BYTES];

/// In-process [`SessionStore`] backed by `moka::future::Cache`.
///
/// Cheap to clone (the caches are reference-counted); clones share state.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<IdBytes, Arc<CompactRecord>>,
    markers: Cache<FlowHash, Timed<Marker>>,
    settings: SessionSettings,
}

/// What the store knows about a redeemed login flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Marker {
    /// The callback redeemed the state and is talking to WeChat.
    Consumed,
    /// The login completed with this session.
    Completed(IdBytes),
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
/// `SessionRecord`; `load` expands it back. 48 bytes besides the text.
pub(super) struct CompactRecord {
    text: Box<str>,
    created_at: u64,
    /// End offset of each field in `text`: openid, unionid, nickname, avatar, appid.
    ends: [u16; 5],
    has_unionid: bool,
    scope: Scope,
    /// How old the session was (seconds) when it entered the cache: 0 for a new login, its age
    /// for one restored from a file, so the absolute lifetime still counts from `created_at`.
    age_at_insert: u32,
    /// Last recorded use, in seconds after `created_at`: the restored `last_seen` at insertion,
    /// then advanced (coarsely) by [`CompactRecord::note_use`] for a durable backend.
    seen: AtomicU32,
}

impl CompactRecord {
    /// Packs a record for a session that starts now.
    ///
    /// # Errors
    /// [`StoreError::Encode`] when the identity's text exceeds 64 KiB (WeChat's are a few
    /// hundred bytes).
    pub(super) fn new(record: &SessionRecord) -> Result<Self, StoreError> {
        let identity = &record.identity;
        let fields = [
            identity.openid.as_str(),
            identity.unionid.as_ref().map_or("", |u| u.as_str()),
            identity.nickname.as_str(),
            identity.avatar.as_str(),
            identity.appid.as_str(),
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u16; 5];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            *end = u16::try_from(text.len())
                .map_err(|_| StoreError::Encode("identity larger than 64 KiB".to_owned()))?;
        }
        Ok(Self {
            text: text.into_boxed_str(),
            created_at: record.created_at,
            ends,
            has_unionid: identity.unionid.is_some(),
            scope: identity.scope,
            age_at_insert: 0,
            seen: AtomicU32::new(0),
        })
    }

    /// Packs a stored record, read at `now_ms` (unix milliseconds), that was last used at
    /// `record.last_seen`, so that the cache expires it when it would have expired anyway (its
    /// age rounded up: never later).
    pub(super) fn restored(record: &SessionRecord, now_ms: u64) -> Result<Self, StoreError> {
        let mut packed = Self::new(record)?;
        let age_ms = now_ms.saturating_sub(record.created_at.saturating_mul(1000));
        packed.age_at_insert = u32::try_from(age_ms.div_ceil(1000)).unwrap_or(u32::MAX);
        packed.seen = AtomicU32::new(secs_after(record.created_at, record.last_seen));
        Ok(packed)
    }

    fn field(&self, index: usize) -> &str {
        let start = index
            .checked_sub(1)
            .map_or(0, |i| usize::from(self.ends[i]));
        let end = usize::from(self.ends[index]);
        self.text.get(start..end).unwrap_or_default()
    }

    /// The appid of the session's identity.
    pub(super) fn appid(&self) -> &str {
        self.field(4)
    }

    /// The record, reporting `last_seen`.
    pub(super) fn expand(&self, last_seen: u64) -> SessionRecord {
        SessionRecord {
            identity: Identity {
                openid: self.field(0).to_owned().into(),
                unionid: self.has_unionid.then(|| self.field(1).to_owned().into()),
                nickname: self.field(2).to_owned(),
                avatar: self.field(3).to_owned(),
                appid: self.field(4).to_owned().into(),
                scope: self.scope,
            },
            created_at: self.created_at,
            last_seen,
        }
    }

    /// Records a use at `now`; `true` (for exactly one caller) when the last recorded use is at
    /// least `every` seconds older, i.e. when a durable backend should write it down.
    pub(super) fn note_use(&self, now: u64, every: u32) -> bool {
        let offset = secs_after(self.created_at, now);
        let seen = self.seen.load(Ordering::Relaxed);
        offset >= seen.saturating_add(every)
            && self
                .seen
                .compare_exchange(seen, offset, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// `later - earlier` in seconds, 0 when `later` is earlier, saturated to `u32`.
fn secs_after(earlier: u64, later: u64) -> u32 {
    u32::try_from(later.saturating_sub(earlier)).unwrap_or(u32::MAX)
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

/// Session expiry: absolute lifetime from creation, capped by the idle timeout at every read.
struct SessionExpiry {
    ttl: Duration,
    idle: Duration,
}

impl SessionExpiry {
    /// Time left at insertion: a new session gets `min(ttl, idle)`; a restored one what its age
    /// and its last use leave of them.
    fn at_insert(&self, value: &CompactRecord) -> Duration {
        let age = value.age_at_insert;
        let idle_age = age.saturating_sub(value.seen.load(Ordering::Relaxed));
        let absolute = self.ttl.saturating_sub(secs(age));
        absolute.min(self.idle.saturating_sub(secs(idle_age)))
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl Expiry<IdBytes, Arc<CompactRecord>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &IdBytes,
        value: &Arc<CompactRecord>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.at_insert(value))
    }

    fn expire_after_read(
        &self,
        _key: &IdBytes,
        value: &Arc<CompactRecord>,
        read_at: Instant,
        _duration_until_expiry: Option<Duration>,
        last_modified_at: Instant,
    ) -> Option<Duration> {
        // Records are never updated in place, so `last_modified_at` is the insertion instant,
        // when the session was `age_at_insert` old.
        let deadline = last_modified_at + self.ttl.saturating_sub(secs(value.age_at_insert));
        let absolute_left = deadline.saturating_duration_since(read_at);
        Some(absolute_left.min(self.idle))
    }

    fn expire_after_update(
        &self,
        _key: &IdBytes,
        value: &Arc<CompactRecord>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // Only reached when `create` replaces an entry moka already considers expired.
        Some(self.at_insert(value))
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
        Self::build(settings, None)
    }

    /// A store that calls `evicted` with the id of every session dropped to stay within
    /// `capacity` (not for expiry or deletion), so a durable backend drops it too.
    pub(super) fn with_eviction_listener(
        settings: SessionSettings,
        evicted: impl Fn(IdBytes) + Send + Sync + 'static,
    ) -> Self {
        Self::build(settings, Some(Box::new(evicted)))
    }

    #[allow(clippy::type_complexity, reason = "a boxed callback, used once")]
    fn build(
        settings: SessionSettings,
        evicted: Option<Box<dyn Fn(IdBytes) + Send + Sync + 'static>>,
    ) -> Self {
        let mut sessions = Cache::builder()
            .name("wxauth-sessions")
            .max_capacity(settings.capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(SessionExpiry {
                ttl: settings.ttl,
                idle: settings.idle_timeout,
            });
        // Counts the sessions that end by themselves (`wxauth_sessions_ended_total`); a delete
        // (logout, revocation) is counted where it is asked for.
        sessions = sessions.eviction_listener(move |key: Arc<IdBytes>, _, cause| match cause {
            RemovalCause::Size => {
                crate::metrics::sessions_ended(crate::metrics::SessionEnd::Evicted, 1);
                if let Some(evicted) = &evicted {
                    evicted(*key);
                }
            }
            RemovalCause::Expired => {
                crate::metrics::sessions_ended(crate::metrics::SessionEnd::Expired, 1);
            }
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        });
        let markers = Cache::builder()
            .name("wxauth-redeemed-flows")
            .max_capacity(settings.consumed_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(TimedExpiry)
            .build();
        Self {
            sessions: sessions.build(),
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
    pub(super) async fn insert_new(&self, id: &SessionId, record: Arc<CompactRecord>) -> bool {
        self.sessions
            .entry(*id.expose_bytes())
            .or_insert_with(std::future::ready(record))
            .await
            .is_fresh()
    }

    /// The live session `id`; counts as use (resets its idle timeout).
    pub(super) async fn get(&self, id: &IdBytes) -> Option<Arc<CompactRecord>> {
        self.sessions.get(id).await
    }

    /// Whether `id` is live, without counting as use.
    pub(super) fn contains(&self, id: &IdBytes) -> bool {
        self.sessions.contains_key(id)
    }

    /// Removes a session; `true` when it was live.
    pub(super) async fn remove(&self, id: &IdBytes) -> bool {
        self.sessions.remove(id).await.is_some()
    }

    /// Puts back a session read from storage (see [`CompactRecord::restored`]).
    pub(super) async fn restore(&self, id: IdBytes, record: CompactRecord) {
        self.sessions.insert(id, Arc::new(record)).await;
    }

    /// Puts back a marker read from storage, for the `ttl` it has left.
    pub(super) async fn restore_marker(&self, hash: FlowHash, marker: Marker, ttl: Duration) {
        self.markers.insert(hash, Timed::new(marker, ttl)).await;
    }

    /// The ids of the live sessions of `appid` (a scan of the whole cache).
    pub(super) fn sessions_of(&self, appid: &AppId) -> Vec<IdBytes> {
        self.sessions
            .iter()
            .filter(|(_, record)| record.appid() == appid.as_str())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Redeems `hash` (see [`SessionStore::consume_flow`]).
    pub(super) async fn consume_hash(&self, hash: FlowHash, ttl: Duration) -> bool {
        // The entry API inserts only when no live marker exists, atomically: of concurrent
        // callers exactly one sees a fresh entry.
        self.markers
            .entry(hash)
            .or_insert_with(std::future::ready(Timed::new(Marker::Consumed, ttl)))
            .await
            .is_fresh()
    }

    /// Stores `marker` under `hash` for `ttl`, replacing what was there.
    pub(super) async fn put_marker(&self, hash: FlowHash, marker: Marker, ttl: Duration) {
        self.markers.insert(hash, Timed::new(marker, ttl)).await;
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(SessionSettings::default())
    }
}

/// The key of a login flow's marker.
pub(super) fn flow_hash(key: &FlowKey) -> FlowHash {
    Sha256::digest(key.expose_secret().as_bytes()).into()
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        let record = Arc::new(CompactRecord::new(&record)?);
        create_with_fresh_id(|id| {
            let record = Arc::clone(&record);
            async move { Ok(self.insert_new(&id, record).await) }
        })
        .await
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
        Ok(self.consume_hash(flow_hash(key), ttl).await)
    }

    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let marker = Marker::Completed(*session.expose_bytes());
        self.put_marker(flow_hash(key), marker, ttl).await;
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

    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError> {
        let mut ended = 0;
        for id in self.sessions_of(appid) {
            if self.remove(&id).await {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn active_sessions(&self) -> Option<u64> {
        Some(self.session_count())
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
                    Arc::new(CompactRecord::new(&SessionRecord::new(identity("first"))).unwrap())
                )
                .await
        );
        assert!(
            !store
                .insert_new(
                    &id,
                    Arc::new(CompactRecord::new(&SessionRecord::new(identity("second"))).unwrap())
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
            let back = CompactRecord::new(&record).unwrap().expand(99);
            assert_eq!(back.identity, record.identity);
            assert_eq!((back.created_at, back.last_seen), (42, 99));
        }
    }

    #[tokio::test]
    async fn an_identity_beyond_64_kib_is_refused_not_cut() {
        let mut huge = identity("o-huge");
        huge.nickname = "长".repeat(30_000); // 90 000 bytes
        let err = MemoryStore::default()
            .create(SessionRecord::new(huge))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Encode(_)), "{err}");
    }

    #[test]
    fn a_restored_record_keeps_its_age_and_last_use() {
        let record = SessionRecord {
            created_at: 1_000,
            last_seen: 1_040,
            ..SessionRecord::new(identity("o-old"))
        };
        let packed = CompactRecord::restored(&record, 1_100_500).unwrap();
        assert_eq!(packed.age_at_insert, 101); // 100.5 s, rounded up
        let expiry = SessionExpiry {
            ttl: Duration::from_secs(1_000),
            idle: Duration::from_secs(100),
        };
        // Idle for 61 s of its 100: 39 s left (the absolute deadline is 899 s away).
        assert_eq!(expiry.at_insert(&packed), Duration::from_secs(39));
        assert!(!packed.note_use(1_050, 60));
        assert!(packed.note_use(1_100, 60));
        assert!(
            !packed.note_use(1_100, 60),
            "only one caller writes it down"
        );
    }

    #[test]
    fn debug_shows_counts_not_contents() {
        let shown = format!("{:?}", MemoryStore::default());
        assert!(shown.starts_with("MemoryStore"), "{shown}");
    }
}
