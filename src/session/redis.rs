//! The shared session store on Redis (feature `redis`), for several proxy instances.
//!
//! Layout (every key starts with the configured prefix, e.g. `wxauth:`):
//!
//! | key                                 | type   | value                                        |
//! |-------------------------------------|--------|----------------------------------------------|
//! | `<prefix>session:<sha256(id) hex>`  | hash   | `r` = record (JSON), `d` = absolute deadline, `a` = the identity's appid |
//! | `<prefix>appid:<appid>`             | set    | `<sha256(id) hex>` of the sessions of that appid |
//! | `<prefix>used:<sha256(state) hex>`  | string | `-` while redeemed, then the session id      |
//!
//! Session ids and OAuth states are bearer secrets, so keys carry their SHA-256 only: `KEYS`,
//! `MONITOR` of key names or a slow log never show a usable id.
//!
//! Expiry: a session key expires at `min(deadline, now + idle_timeout)`, recomputed atomically
//! (Lua) at every `load`/`touch`; the deadline is fixed at `create` (`now + ttl`). All times are
//! Redis' own clock (`TIME`), so instances with skewed clocks agree. Pending logins are not
//! stored (they live in the browser's flow cookie); a callback redeems its state with
//! `SET … NX PX` (single use even across instances), so Redis ≥ 2.6.12 is enough.
//!
//! The per-appid set is the index of [`SessionStore::end_sessions_of`]: `create` adds the
//! session and `delete` removes it; sessions that expire leave their entry behind, so every
//! `create` also checks a few random entries of its set and removes those whose session is gone
//! (the set stays within a small multiple of the appid's live sessions), and the set itself
//! expires with the newest session's absolute deadline. The scripts that maintain it name
//! session keys they compute, so this store needs a standalone Redis (not Redis Cluster).
//! Sessions created before the index existed are not in it; they end with their lifetime.
//!
//! Bounds: [`SessionSettings::capacity`] and [`SessionSettings::consumed_capacity`] are not
//! enforced here — every key carries a TTL, and memory is bounded by the server's `maxmemory`.
//! Login starts write nothing; only callbacks with a genuine flow cookie add a (short-lived)
//! key. Run the server with a `maxmemory` and a `volatile-*` eviction policy, so that the host
//! is never exhausted.
//!
//! Every call is bounded by an operation timeout (default 2 s): a hung Redis fails closed with
//! [`StoreError::Backend`] instead of stalling requests.
//!
//! **Stale if error.** A Redis restart (or failover) takes from a fraction of a second to the
//! time it needs to load its data back (`LOADING`). So that users who are already logged in do
//! not see errors meanwhile, each instance remembers, for [`DEFAULT_STALE_IF_ERROR`] (60 s,
//! [`RedisSessionStore::with_stale_if_error`]), the sessions it has just read from Redis
//! (bounded: [`DEFAULT_STALE_CAPACITY`] entries). When Redis *fails* — never when it answers
//! that a session is gone — a session this instance confirmed within that window, and whose
//! absolute lifetime has not run out, is served from that memory. A session deleted on this
//! instance is forgotten at once; one deleted on another instance just before an outage can
//! be served here until the window ends, which is the price of riding out the outage (set the
//! window to zero to fail closed on every Redis error instead). Everything else still fails
//! closed: an unknown session, a new login, a logout. Error messages name the operation and
//! the error category only — never a key, a value or the connection URL (which may hold a
//! password).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, RedisError, Script};
use sha2::{Digest as _, Sha256};

use super::{
    FlowKey, SESSION_ID_BYTES, SessionId, SessionRecord, SessionSettings, SessionStore, StoreError,
    create_with_fresh_id,
};
use crate::clock::unix_now;
use crate::ids::AppId;
use crate::redis_util::{self, millis};

/// Default bound on every Redis call (connect included).
pub const DEFAULT_OP_TIMEOUT: Duration = redis_util::DEFAULT_OP_TIMEOUT;

/// How long a session read from Redis may be served from this instance's memory while Redis
/// fails (see the module docs).
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(60);

/// How many recently read sessions an instance remembers for [`DEFAULT_STALE_IF_ERROR`].
pub const DEFAULT_STALE_CAPACITY: u64 = 100_000;

/// How many set members `end_sessions_of` handles per round trip.
const END_BATCH: usize = 500;

/// Value of a redeemed flow's key until the login completes (then the session id).
const CONSUMED: &str = "-";

/// `KEYS[1]` session key, `KEYS[2]` the appid's index set; `ARGV[1]` record, `ARGV[2]` ttl ms,
/// `ARGV[3]` idle ms, `ARGV[4]` appid, `ARGV[5]` the session's member in the set, `ARGV[6]` the
/// session key prefix. Returns 1 when created, 0 when the key exists (never overwrites).
/// Also removes from the set up to three random members whose session is gone.
const CREATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'd', deadline, 'a', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], math.min(deadline, now + tonumber(ARGV[3])))
local sample = redis.call('SRANDMEMBER', KEYS[2], 3)
for _, member in ipairs(sample) do
  if redis.call('EXISTS', ARGV[6] .. member) == 0 then redis.call('SREM', KEYS[2], member) end
end
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], deadline)
return 1
";

/// `KEYS[1]` session key; `ARGV[1]` the index set prefix, `ARGV[2]` the session's member.
/// Deletes the session and its index entry.
const DELETE_LUA: &str = r"
local appid = redis.call('HGET', KEYS[1], 'a')
if appid then redis.call('SREM', ARGV[1] .. appid, ARGV[2]) end
return redis.call('DEL', KEYS[1])
";

/// `KEYS[1]` session key; `ARGV[1]` idle ms; `ARGV[2]` `r` to return the record, `t` for 1.
/// Returns nil when the session is not live; extends its expiry to `min(deadline, now + idle)`.
const LOAD_LUA: &str = r"
local v = redis.call('HMGET', KEYS[1], 'r', 'd')
if not v[1] or not v[2] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(v[2])
if not deadline or deadline <= now then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('PEXPIREAT', KEYS[1], math.min(deadline, now + tonumber(ARGV[1])))
if ARGV[2] == 'r' then return v[1] end
return 1
";

/// Shared [`SessionStore`] on Redis; several proxy instances pointed at the same Redis and
/// prefix share sessions and redeemed-login markers.
///
/// Cheap to clone (the connection is multiplexed and reconnects by itself); clones share it.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    settings: SessionSettings,
    op_timeout: Duration,
    create: Arc<Script>,
    load: Arc<Script>,
    delete: Arc<Script>,
    /// Sessions read from Redis within the stale-if-error window (none when it is zero).
    recent: Option<moka::future::Cache<[u8; SESSION_ID_BYTES], Arc<SessionRecord>>>,
    /// When a stale session was last reported (unix seconds), so an outage logs once a second.
    stale_reported: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL (it may carry a password) and no connection internals.
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`, `rediss://` needs a TLS
    /// feature of the `redis` crate) and namespaces every key under `key_prefix`.
    ///
    /// Connecting eagerly makes a wrong URL or an unreachable server a startup error rather
    /// than a stream of failed logins. Calls are bounded by [`DEFAULT_OP_TIMEOUT`].
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the URL is invalid or the server cannot be reached in time
    /// (the message never contains the URL).
    pub async fn new(
        url: &str,
        key_prefix: &str,
        settings: SessionSettings,
    ) -> Result<Self, StoreError> {
        let conn = redis_util::connect(url, DEFAULT_OP_TIMEOUT)
            .await
            .map_err(StoreError::Backend)?;
        Ok(Self::from_connection(conn, key_prefix, settings))
    }

    /// A store on an existing connection, e.g. one shared with the Redis platform store so a
    /// process holds a single connection.
    pub fn from_connection(
        conn: ConnectionManager,
        key_prefix: &str,
        settings: SessionSettings,
    ) -> Self {
        Self {
            conn,
            prefix: Arc::from(key_prefix),
            settings,
            op_timeout: DEFAULT_OP_TIMEOUT,
            create: Arc::new(Script::new(CREATE_LUA)),
            load: Arc::new(Script::new(LOAD_LUA)),
            delete: Arc::new(Script::new(DELETE_LUA)),
            recent: recent_cache(DEFAULT_STALE_IF_ERROR, DEFAULT_STALE_CAPACITY),
            stale_reported: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Replaces the stale-if-error window (default [`DEFAULT_STALE_IF_ERROR`]) and the number
    /// of sessions remembered for it (default [`DEFAULT_STALE_CAPACITY`]); a zero window or
    /// capacity turns it off, so every Redis failure fails closed.
    #[must_use]
    pub fn with_stale_if_error(mut self, window: Duration, capacity: u64) -> Self {
        self.recent = recent_cache(window, capacity);
        self
    }

    /// Replaces the bound on every call (default [`DEFAULT_OP_TIMEOUT`]); past it a call fails
    /// with [`StoreError::Backend`].
    #[must_use]
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// The settings the store was built with.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The underlying connection (multiplexed, reconnecting), e.g. to build the Redis platform
    /// store on the same connection.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The answer to a failed `load`: a session this instance read within the stale-if-error
    /// window and whose absolute lifetime has not ended, or the error (fail closed).
    async fn stale(
        &self,
        id: &SessionId,
        error: StoreError,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let now = unix_now();
        let remembered = match &self.recent {
            Some(recent) => recent.get(id.expose_bytes()).await,
            None => None,
        };
        let Some(record) =
            remembered.filter(|r| r.created_at.saturating_add(self.settings.ttl.as_secs()) > now)
        else {
            return Err(error);
        };
        if self.stale_reported.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(%error, "Redis failed; serving sessions read in the last minute from memory");
        }
        let mut record = SessionRecord::clone(&record);
        record.last_seen = now;
        Ok(Some(record))
    }

    fn session_key(&self, id: &SessionId) -> String {
        self.session_key_of(&hex_sha256(id.expose_bytes()))
    }

    /// The session key of an index member (the hex SHA-256 of the id).
    fn session_key_of(&self, member: &str) -> String {
        format!("{}session:{member}", self.prefix)
    }

    /// The index set of `appid`'s sessions.
    fn appid_key(&self, appid: &str) -> String {
        format!("{}appid:{appid}", self.prefix)
    }

    fn used_key(&self, key: &FlowKey) -> String {
        format!(
            "{}used:{}",
            self.prefix,
            hex_sha256(key.expose_secret().as_bytes())
        )
    }

    /// Runs one Redis call under the operation timeout, mapping failures to safe messages.
    async fn run<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        redis_util::bounded(self.op_timeout, op, call)
            .await
            .map_err(StoreError::Backend)
    }

    /// The session's record (`want_record`) or just whether it is live, extending its expiry.
    async fn load_or_touch(
        &self,
        id: &SessionId,
        want_record: bool,
    ) -> Result<Option<String>, StoreError> {
        let key = self.session_key(id);
        let idle = millis(self.settings.idle_timeout);
        let mut conn = self.conn.clone();
        let mode = if want_record { "r" } else { "t" };
        let mut invocation = self.load.key(key);
        invocation.arg(idle).arg(mode);
        // `touch` answers 1 (an integer); convert everything to an optional string.
        let value: redis::Value = self
            .run("load session", invocation.invoke_async(&mut conn))
            .await?;
        match value {
            redis::Value::Nil => Ok(None),
            redis::Value::Int(_) => Ok(Some(String::new())),
            redis::Value::BulkString(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StoreError::Decode("session record is not UTF-8".to_owned())),
            _ => Err(StoreError::Backend(
                "redis load session: unexpected reply type".to_owned(),
            )),
        }
    }
}

/// The bounded memory of recently read sessions, `None` when the window or capacity is zero.
fn recent_cache(
    window: Duration,
    capacity: u64,
) -> Option<moka::future::Cache<[u8; SESSION_ID_BYTES], Arc<SessionRecord>>> {
    (!window.is_zero() && capacity > 0).then(|| {
        moka::future::Cache::builder()
            .name("wxauth-redis-recent-sessions")
            .max_capacity(capacity)
            .time_to_live(window)
            .build()
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        let encoded =
            serde_json::to_string(&record).map_err(|e| StoreError::Encode(e.to_string()))?;
        let ttl = millis(self.settings.ttl);
        let idle = millis(self.settings.idle_timeout);
        let appid = record.identity.appid.as_str();
        let index = self.appid_key(appid);
        let key_prefix = self.session_key_of("");
        create_with_fresh_id(|id| {
            let member = hex_sha256(id.expose_bytes());
            let mut invocation = self.create.key(self.session_key_of(&member));
            invocation.key(&index);
            invocation
                .arg(&encoded)
                .arg(ttl)
                .arg(idle)
                .arg(appid)
                .arg(member)
                .arg(&key_prefix);
            let mut conn = self.conn.clone();
            async move {
                let created: i64 = self
                    .run("create session", invocation.invoke_async(&mut conn))
                    .await?;
                Ok(created == 1)
            }
        })
        .await
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let encoded = match self.load_or_touch(id, true).await {
            Ok(Some(encoded)) => encoded,
            Ok(None) => {
                // Redis says it is gone: never serve it from memory again.
                if let Some(recent) = &self.recent {
                    recent.invalidate(id.expose_bytes()).await;
                }
                return Ok(None);
            }
            Err(error) => return self.stale(id, error).await,
        };
        // serde_json's messages name a position and a category, never the content.
        let mut record: SessionRecord =
            serde_json::from_str(&encoded).map_err(|e| StoreError::Decode(e.to_string()))?;
        record.last_seen = unix_now();
        if let Some(recent) = &self.recent {
            recent
                .insert(*id.expose_bytes(), Arc::new(record.clone()))
                .await;
        }
        Ok(Some(record))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        // Forget it here first: even if Redis fails below, this instance never serves it again.
        if let Some(recent) = &self.recent {
            recent.invalidate(id.expose_bytes()).await;
        }
        let member = hex_sha256(id.expose_bytes());
        let mut invocation = self.delete.key(self.session_key_of(&member));
        invocation.arg(self.appid_key("")).arg(member);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run("delete session", invocation.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.load_or_touch(id, false).await?.is_some())
    }

    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.used_key(key);
        let mut conn = self.conn.clone();
        // SET NX is one atomic command: of concurrent redeemers (any instance) one gets OK.
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(CONSUMED)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let reply: Option<String> = self
            .run("redeem login flow", cmd.query_async(&mut conn))
            .await?;
        Ok(reply.is_some())
    }

    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.used_key(key);
        let mut conn = self.conn.clone();
        let _: () = self
            .run(
                "remember completed flow",
                conn.pset_ex(key, session.expose_secret(), millis(ttl)),
            )
            .await?;
        Ok(())
    }

    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        let key = self.used_key(key);
        let mut conn = self.conn.clone();
        let value: Option<String> = self.run("read completed flow", conn.get(key)).await?;
        match value.as_deref() {
            None | Some(CONSUMED) => Ok(None),
            Some(text) => SessionId::parse(text)
                .map(Some)
                .ok_or_else(|| StoreError::Decode("stored session id is malformed".to_owned())),
        }
    }

    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError> {
        // This instance must not serve them from memory during an outage either.
        if let Some(recent) = &self.recent {
            let ended: Vec<_> = recent
                .iter()
                .filter(|(_, record)| record.identity.appid == *appid)
                .map(|(id, _)| id)
                .collect();
            for id in ended {
                recent.invalidate(id.as_ref()).await;
            }
        }
        let index = self.appid_key(appid.as_str());
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        let mut ended = 0u64;
        // SSCAN visits every member present from start to end in a finite number of rounds.
        loop {
            let mut scan = redis::cmd("SSCAN");
            scan.arg(&index).arg(cursor).arg("COUNT").arg(END_BATCH);
            let (next, members): (u64, Vec<String>) = self
                .run("scan appid sessions", scan.query_async(&mut conn))
                .await?;
            if !members.is_empty() {
                let mut pipe = redis::pipe();
                for member in &members {
                    pipe.del(self.session_key_of(member));
                }
                pipe.srem(&index, &members).ignore();
                let deleted: Vec<u64> = self
                    .run("end appid sessions", pipe.query_async(&mut conn))
                    .await?;
                ended += deleted.iter().sum::<u64>();
            }
            if next == 0 {
                return Ok(ended);
            }
            cursor = next;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_util::ping(&self.conn, self.op_timeout)
            .await
            .map_err(StoreError::Backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_ids_and_states() {
        let id = SessionId::generate();
        let state = FlowKey::new("state-secret-value");
        let session_key = format!("wx:session:{}", hex_sha256(id.expose_bytes()));
        assert!(!session_key.contains(&id.expose_secret()));
        assert_eq!(session_key.len(), "wx:session:".len() + 64);
        let flow = format!("wx:used:{}", hex_sha256(state.expose_secret().as_bytes()));
        assert!(!flow.contains("state-secret-value"));
    }
}
