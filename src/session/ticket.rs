//! Short-lived login tickets of the desktop QR bridge: a tiny key–value store with
//! compare-and-set and an **atomic take**, and its backends.
//!
//! The store knows nothing about QR codes or WeChat: a ticket is an opaque byte string under a
//! [`TicketKey`] (the SHA-256 of the ticket id, so a key dump never shows a usable id). The
//! layer's state machine (`layer::qr::ticket`) decides what the bytes mean; the store only
//! guarantees that
//!
//! - [`TicketStore::insert`] never overwrites and never evicts: when the store is full a new
//!   ticket is **refused** (`Ok(false)`), so a flood of creations cannot push out a pending
//!   ticket;
//! - [`TicketStore::replace`] and [`TicketStore::take`] succeed only when the stored bytes are
//!   exactly the ones the caller read (compare-and-set), atomically, so two phones scanning at
//!   once, or two desktop tabs finishing at once, cannot both win;
//! - a ticket's lifetime is fixed when it is inserted (`replace` keeps it).
//!
//! Backends: [`MemoryTicketStore`] (one instance; also what the durable session store uses —
//! tickets live at most five minutes, so surviving a restart is not worth a disk write) and,
//! with the `redis` feature, [`RedisTicketStore`] (several instances), keys
//! `<prefix>qr:<sha256(id) hex>`, compare-and-set and take as Lua scripts.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::StoreError;

/// The store key of a ticket: the hex SHA-256 of its id. Derived, never the id itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TicketKey(String);

impl TicketKey {
    /// The key of the ticket whose id is `id`.
    pub fn of(id: &str) -> Self {
        let digest = Sha256::digest(id.as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex digest (what the Redis key carries).
    pub fn as_hex(&self) -> &str {
        &self.0
    }

    /// A short tag for logs (the first 16 hex digits of the digest).
    pub fn fingerprint(&self) -> &str {
        &self.0[..16]
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKey({})", self.fingerprint())
    }
}

/// Storage of QR login tickets (held as `Arc<dyn TicketStore>`). Every backend passes the
/// conformance suite in `tests/ticket_conformance.rs`.
#[async_trait]
pub trait TicketStore: Send + Sync + fmt::Debug {
    /// Stores a new ticket that lives `ttl`. `Ok(false)` when the store is full or the key
    /// exists: nothing is overwritten and nothing is evicted.
    async fn insert(
        &self,
        key: &TicketKey,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// The ticket's bytes, if it is live.
    async fn get(&self, key: &TicketKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces the ticket with `value` if it still holds exactly `expected` (atomically);
    /// the ticket keeps its lifetime. `Ok(false)`: someone changed or removed it first.
    async fn replace(
        &self,
        key: &TicketKey,
        expected: &[u8],
        value: Vec<u8>,
    ) -> Result<bool, StoreError>;

    /// Removes the ticket if it still holds exactly `expected` (atomically): `Ok(true)` for
    /// exactly one caller, however many race.
    async fn take(&self, key: &TicketKey, expected: &[u8]) -> Result<bool, StoreError>;

    /// Removes the ticket, whatever it holds.
    async fn remove(&self, key: &TicketKey) -> Result<(), StoreError>;
}

/// Default bound of the memory store: pending tickets held at once.
pub const DEFAULT_TICKET_CAPACITY: usize = 10_000;

/// In-process [`TicketStore`]: a map under a mutex (no await while held), bounded.
///
/// Expiry: entries are purged in insertion order, which is expiry order when every ticket gets
/// the same lifetime (what the layer does: the absolute cap); an entry past its deadline is
/// absent for every operation even before it is purged. When `capacity` tickets are live, a new
/// one is refused; none is ever evicted.
pub struct MemoryTicketStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TicketKey, Entry>,
    order: VecDeque<(Instant, TicketKey)>,
}

struct Entry {
    value: Vec<u8>,
    deadline: Instant,
}

impl Inner {
    fn purge(&mut self, now: Instant) {
        while let Some((deadline, _)) = self.order.front() {
            if *deadline > now {
                break;
            }
            if let Some((deadline, key)) = self.order.pop_front() {
                if self.map.get(&key).is_some_and(|e| e.deadline <= deadline) {
                    self.map.remove(&key);
                }
            }
        }
    }

    fn live(&mut self, key: &TicketKey, now: Instant) -> Option<&mut Entry> {
        self.map.get_mut(key).filter(|e| e.deadline > now)
    }
}

impl MemoryTicketStore {
    /// A store holding at most `capacity` live tickets.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// Live tickets now (purges the expired ones first).
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        inner.purge(Instant::now());
        inner.map.len()
    }

    /// Whether no ticket is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given to [`new`](Self::new).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryTicketStore {
    fn default() -> Self {
        Self::new(DEFAULT_TICKET_CAPACITY)
    }
}

impl fmt::Debug for MemoryTicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTicketStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TicketStore for MemoryTicketStore {
    async fn insert(
        &self,
        key: &TicketKey,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge(now);
        if inner.live(key, now).is_some() || inner.map.len() >= self.capacity {
            return Ok(false);
        }
        let deadline = now + ttl;
        inner.map.insert(key.clone(), Entry { value, deadline });
        inner.order.push_back((deadline, key.clone()));
        Ok(true)
    }

    async fn get(&self, key: &TicketKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .live(key, Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn replace(
        &self,
        key: &TicketKey,
        expected: &[u8],
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.live(key, Instant::now()) {
            Some(entry) if entry.value == expected => {
                entry.value = value;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn take(&self, key: &TicketKey, expected: &[u8]) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.live(key, now).is_some_and(|e| e.value == expected) {
            inner.map.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn remove(&self, key: &TicketKey) -> Result<(), StoreError> {
        self.lock().map.remove(key);
        Ok(())
    }
}

#[cfg(feature = "redis")]
pub use self::redis_backend::RedisTicketStore;

#[cfg(feature = "redis")]
mod redis_backend {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use redis::aio::ConnectionManager;
    use redis::{AsyncCommands as _, Script};

    use super::{TicketKey, TicketStore};
    use crate::redis_util::{self, millis};
    use crate::session::StoreError;

    /// `KEYS[1]` ticket key; `ARGV[1]` value, `ARGV[2]` ttl ms, `ARGV[3]` bound, `ARGV[4]` the
    /// prefix of the per-minute creation counters. Returns 1 when stored, 0 when the key
    /// exists, -1 when the creations of the last six minutes (which cover every ticket that can
    /// still be live: the lifetime is at most five) reached the bound.
    const INSERT_LUA: &str = r"
local t = redis.call('TIME')
local m = math.floor(tonumber(t[1]) / 60)
local n = 0
for i = 0, 5 do n = n + tonumber(redis.call('GET', ARGV[4] .. (m - i)) or '0') end
if n >= tonumber(ARGV[3]) then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('INCR', ARGV[4] .. m)
redis.call('EXPIRE', ARGV[4] .. m, 420)
return 1
";

    /// `KEYS[1]` ticket key; `ARGV[1]` expected, `ARGV[2]` new value. Keeps the TTL.
    const REPLACE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
";

    /// `KEYS[1]` ticket key; `ARGV[1]` expected. Deletes when it matches.
    const TAKE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

    /// Shared [`TicketStore`] on Redis: `<prefix>qr:<sha256(id) hex>` strings with a TTL,
    /// compare-and-set and take in Lua (one round trip, atomic). The bound is a count of the
    /// creations of the last six minutes (`<prefix>qr-n:<minute>` counters), since every ticket
    /// lives at most five; the scripts compute counter keys, so this needs a standalone Redis
    /// (like the session store). Every call is bounded by the operation timeout.
    #[derive(Clone)]
    pub struct RedisTicketStore {
        conn: ConnectionManager,
        prefix: Arc<str>,
        capacity: usize,
        op_timeout: Duration,
        insert: Arc<Script>,
        replace: Arc<Script>,
        take: Arc<Script>,
    }

    impl std::fmt::Debug for RedisTicketStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisTicketStore")
                .field("prefix", &self.prefix)
                .field("capacity", &self.capacity)
                .finish_non_exhaustive()
        }
    }

    impl RedisTicketStore {
        /// A store on an existing connection (e.g. the session store's), keys under
        /// `key_prefix` (`wxauth:`), at most `capacity` creations per six minutes.
        pub fn new(conn: ConnectionManager, key_prefix: &str, capacity: usize) -> Self {
            Self {
                conn,
                prefix: Arc::from(key_prefix),
                capacity,
                op_timeout: redis_util::DEFAULT_OP_TIMEOUT,
                insert: Arc::new(Script::new(INSERT_LUA)),
                replace: Arc::new(Script::new(REPLACE_LUA)),
                take: Arc::new(Script::new(TAKE_LUA)),
            }
        }

        /// The Redis key of `key`.
        pub fn redis_key(&self, key: &TicketKey) -> String {
            format!("{}qr:{}", self.prefix, key.as_hex())
        }

        async fn run<T>(
            &self,
            op: &'static str,
            call: impl Future<Output = Result<T, redis::RedisError>>,
        ) -> Result<T, StoreError> {
            redis_util::bounded(self.op_timeout, op, call)
                .await
                .map_err(StoreError::Backend)
        }
    }

    #[async_trait]
    impl TicketStore for RedisTicketStore {
        async fn insert(
            &self,
            key: &TicketKey,
            value: Vec<u8>,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            let mut conn = self.conn.clone();
            let mut invocation = self.insert.key(self.redis_key(key));
            invocation
                .arg(value)
                .arg(millis(ttl).max(1))
                .arg(self.capacity)
                .arg(format!("{}qr-n:", self.prefix));
            let stored: i64 = self
                .run("insert ticket", invocation.invoke_async(&mut conn))
                .await?;
            Ok(stored == 1)
        }

        async fn get(&self, key: &TicketKey) -> Result<Option<Vec<u8>>, StoreError> {
            let mut conn = self.conn.clone();
            let redis_key = self.redis_key(key);
            self.run("get ticket", conn.get(redis_key)).await
        }

        async fn replace(
            &self,
            key: &TicketKey,
            expected: &[u8],
            value: Vec<u8>,
        ) -> Result<bool, StoreError> {
            let mut conn = self.conn.clone();
            let mut invocation = self.replace.key(self.redis_key(key));
            invocation.arg(expected).arg(value);
            let done: i64 = self
                .run("replace ticket", invocation.invoke_async(&mut conn))
                .await?;
            Ok(done == 1)
        }

        async fn take(&self, key: &TicketKey, expected: &[u8]) -> Result<bool, StoreError> {
            let mut conn = self.conn.clone();
            let mut invocation = self.take.key(self.redis_key(key));
            invocation.arg(expected);
            let done: i64 = self
                .run("take ticket", invocation.invoke_async(&mut conn))
                .await?;
            Ok(done == 1)
        }

        async fn remove(&self, key: &TicketKey) -> Result<(), StoreError> {
            let mut conn = self.conn.clone();
            let redis_key = self.redis_key(key);
            let _: i64 = self.run("remove ticket", conn.del(redis_key)).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_digests_and_debug_shows_a_fingerprint_only() {
        let key = TicketKey::of("AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(key.as_hex().len(), 64);
        assert!(!format!("{key:?}").contains("AAAA"));
        assert_eq!(format!("{key:?}").len(), "TicketKey()".len() + 16);
    }

    #[tokio::test]
    async fn expired_entries_are_absent_and_purged() {
        let store = MemoryTicketStore::new(2);
        let a = TicketKey::of("a");
        assert!(
            store
                .insert(&a, b"x".to_vec(), Duration::from_millis(1))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert!(!store.take(&a, b"x").await.unwrap());
        assert_eq!(store.len(), 0);
    }
}
