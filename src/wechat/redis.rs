//! The shared platform store on Redis (feature `redis`): the `component_verify_ticket`, the
//! `component_access_token` and the cross-instance refresh lock, so that several proxy
//! instances use one token and only one of them asks WeChat for a new one; and the tenant
//! records, so that a push received by one instance reaches the others.
//!
//! Layout (every key starts with the configured prefix, e.g. `wxauth:`):
//!
//! | key                                | value                                  | expiry              |
//! |------------------------------------|----------------------------------------|---------------------|
//! | `<prefix>wechat:ticket:<appid>`    | [`StoredTicket`] (JSON)                | none (like the file)|
//! | `<prefix>wechat:token:<appid>`     | [`StoredToken`] (JSON)                 | at its `expires_at` |
//! | `<prefix>wechat:lock:<appid>`      | random owner id of the refreshing one  | lock TTL            |
//! | `<prefix>tenant:<authorizer appid>`| [`TenantRecord`] (JSON)                | none                |
//! | `<prefix>tenants:<appid>`          | set of the component's authorizer appids | none              |
//!
//! Atomicity (Lua): a ticket never replaces a newer one (by `CreateTime`); `invalidate_token_if`
//! is compare-and-delete; the lock is `SET NX PX` and is released by compare-and-delete with the
//! owner id, so an instance whose lock expired cannot release another's. A tenant record and its
//! index entry are written in one `MULTI`.
//!
//! **Stale-view guard.** The token manager reads the store, then asks for the lock. Between the
//! two another instance may have fetched, saved a token and released the lock; granting the lock
//! then would make this instance fetch again — and a new token invalidates the one the other
//! instances just adopted. So the store remembers, per appid, the token value it last read or
//! wrote, and grants the lock only if the stored token is still that value (or is gone). If
//! someone saved a different token meanwhile, the lock is refused: the manager then waits for
//! and adopts the stored token, exactly as if the other instance were still refreshing.
//!
//! Every call is bounded by an operation timeout (default 2 s); failures become
//! [`StoreError::Backend`] with the operation and error category only — never a key's value,
//! a token, a ticket or the connection URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::RngCore as _;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, RedisError, Script};

use super::persist::{PlatformStore, StoreError, StoredTicket, StoredToken};
use super::tenants::TenantRecord;
use super::{AuthorizerAppId, ComponentAccessToken, ComponentAppId};
use crate::redis_util::{self, millis};

/// Tenant records read per `MGET` when loading them all.
const TENANT_BATCH: usize = 500;

/// Default bound on every Redis call (connect included).
pub const DEFAULT_OP_TIMEOUT: Duration = redis_util::DEFAULT_OP_TIMEOUT;

/// `KEYS[1]` ticket key; `ARGV[1]` ticket JSON, `ARGV[2]` its `create_time`.
/// Stores unless the stored ticket is strictly newer; returns 1 when stored.
const SAVE_TICKET_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and type(rec) == 'table' then
    local have = tonumber(rec['create_time'])
    if have and have > tonumber(ARGV[2]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// `KEYS[1]` token key; `ARGV[1]` the failed token. Deletes only if it is still stored.
const INVALIDATE_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, rec = pcall(cjson.decode, cur)
if ok and type(rec) == 'table' and rec['token'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// `KEYS[1]` lock key, `KEYS[2]` token key; `ARGV[1]` owner id, `ARGV[2]` ttl ms,
/// `ARGV[3]` `1` if `ARGV[4]` holds the token value last seen (empty: seen absent).
/// Returns 1 when the lock is taken.
const LOCK_LUA: &str = r"
if ARGV[3] == '1' then
  local cur = redis.call('GET', KEYS[2])
  if cur and cur ~= ARGV[4] then return 0 end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// `KEYS[1]` lock key; `ARGV[1]` owner id. Deletes only our own lock.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Shared [`PlatformStore`] on Redis, with a real cross-instance refresh lock.
///
/// Each proxy instance holds its own `RedisPlatformStore` (the stale-view guard is per
/// instance); clones share connection and state.
#[derive(Clone)]
pub struct RedisPlatformStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    op_timeout: Duration,
    scripts: Arc<Scripts>,
    /// Per appid: the owner id of the refresh lock this instance holds.
    locks: Arc<Mutex<HashMap<ComponentAppId, String>>>,
    /// Per appid: the raw token value last read or written (`None`: seen absent).
    seen: Arc<Mutex<HashMap<ComponentAppId, Option<String>>>>,
}

struct Scripts {
    save_ticket: Script,
    invalidate: Script,
    lock: Script,
    unlock: Script,
}

impl std::fmt::Debug for RedisPlatformStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL (it may carry a password), no tokens, no lock owner ids.
        f.debug_struct("RedisPlatformStore")
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisPlatformStore {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`) and namespaces every key
    /// under `key_prefix`.
    ///
    /// Connecting eagerly makes a wrong URL or an unreachable server a startup error. Calls are
    /// bounded by [`DEFAULT_OP_TIMEOUT`].
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the URL is invalid or the server cannot be reached in time
    /// (the message never contains the URL).
    pub async fn new(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let conn = redis_util::connect(url, DEFAULT_OP_TIMEOUT)
            .await
            .map_err(StoreError::Backend)?;
        Ok(Self::from_connection(conn, key_prefix))
    }

    /// A store on an existing connection (e.g. the one of the Redis session store, so a process
    /// holds a single connection).
    pub fn from_connection(conn: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            conn,
            prefix: Arc::from(key_prefix),
            op_timeout: DEFAULT_OP_TIMEOUT,
            scripts: Arc::new(Scripts {
                save_ticket: Script::new(SAVE_TICKET_LUA),
                invalidate: Script::new(INVALIDATE_LUA),
                lock: Script::new(LOCK_LUA),
                unlock: Script::new(UNLOCK_LUA),
            }),
            locks: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// Replaces the bound on every call (default [`DEFAULT_OP_TIMEOUT`]).
    #[must_use]
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// The underlying connection (multiplexed, reconnecting), to share it with other users.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn key(&self, kind: &str, appid: &ComponentAppId) -> String {
        format!("{}wechat:{kind}:{}", self.prefix, appid.as_str())
    }

    /// `<prefix>tenant:<authorizer appid>`: one tenant's record.
    fn tenant_key(&self, appid: &str) -> String {
        format!("{}tenant:{appid}", self.prefix)
    }

    /// `<prefix>tenants:<component appid>`: the set of the component's tenant appids.
    fn tenant_index_key(&self, component: &ComponentAppId) -> String {
        format!("{}tenants:{}", self.prefix, component.as_str())
    }

    fn locks(&self) -> MutexGuard<'_, HashMap<ComponentAppId, String>> {
        // Updates are single inserts/removes: a poisoned map is still consistent.
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<ComponentAppId, Option<String>>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
}

/// A random lock owner id (128 bits, hex).
fn owner_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("serialising the {what}: {e}")))
}

/// Decodes a stored value; a corrupt one is logged (without content) and read as absent, like
/// the file store: the next push or fetch replaces it.
fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    appid: &impl std::fmt::Display,
    raw: &str,
) -> Option<T> {
    match serde_json::from_str(raw) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(
                %appid,
                line = e.line(),
                column = e.column(),
                "corrupt stored {what} in redis; treating it as absent"
            );
            None
        }
    }
}

#[async_trait]
impl PlatformStore for RedisPlatformStore {
    async fn load_ticket(
        &self,
        appid: &ComponentAppId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .run("load ticket", conn.get(self.key("ticket", appid)))
            .await?;
        Ok(raw.and_then(|raw| decode("ticket", appid, &raw)))
    }

    async fn save_ticket(
        &self,
        appid: &ComponentAppId,
        ticket: &StoredTicket,
    ) -> Result<(), StoreError> {
        let encoded = encode("ticket", ticket)?;
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.save_ticket.key(self.key("ticket", appid));
        invocation.arg(encoded).arg(ticket.create_time);
        let stored: i64 = self
            .run("save ticket", invocation.invoke_async(&mut conn))
            .await?;
        if stored == 0 {
            tracing::debug!(%appid, "a newer ticket is already stored; keeping it");
        }
        Ok(())
    }

    async fn load_token(&self, appid: &ComponentAppId) -> Result<Option<StoredToken>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .run("load token", conn.get(self.key("token", appid)))
            .await?;
        self.seen().insert(appid.clone(), raw.clone());
        Ok(raw.and_then(|raw| decode("token", appid, &raw)))
    }

    async fn save_token(
        &self,
        appid: &ComponentAppId,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        let key = self.key("token", appid);
        let mut conn = self.conn.clone();
        let expires_at_ms = u64::try_from(token.expires_at)
            .unwrap_or(0)
            .saturating_mul(1000);
        let now_ms = u64::try_from(super::token::now_unix())
            .unwrap_or(0)
            .saturating_mul(1000);
        if expires_at_ms <= now_ms {
            // Already expired: nothing worth sharing (and Redis would drop it at once).
            let _: i64 = self.run("save token", conn.del(key)).await?;
            self.seen().insert(appid.clone(), None);
            return Ok(());
        }
        let encoded = encode("token", token)?;
        let options =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PXAT(expires_at_ms));
        let _: Option<String> = self
            .run("save token", conn.set_options(key, &encoded, options))
            .await?;
        self.seen().insert(appid.clone(), Some(encoded));
        Ok(())
    }

    async fn invalidate_token_if(
        &self,
        appid: &ComponentAppId,
        failed: &ComponentAccessToken,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.invalidate.key(self.key("token", appid));
        invocation.arg(failed.expose_secret());
        let removed: i64 = self
            .run("invalidate token", invocation.invoke_async(&mut conn))
            .await?;
        if removed == 1 {
            self.seen().insert(appid.clone(), None);
        }
        Ok(removed == 1)
    }

    async fn load_tenants(
        &self,
        component: &ComponentAppId,
    ) -> Result<Vec<(AuthorizerAppId, TenantRecord)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut appids: Vec<String> = self
            .run(
                "load tenant index",
                conn.smembers(self.tenant_index_key(component)),
            )
            .await?;
        appids.sort();
        let mut out = Vec::with_capacity(appids.len());
        for batch in appids.chunks(TENANT_BATCH) {
            let keys: Vec<String> = batch.iter().map(|a| self.tenant_key(a)).collect();
            let mut cmd = redis::cmd("MGET");
            cmd.arg(&keys);
            let raws: Vec<Option<String>> =
                self.run("load tenants", cmd.query_async(&mut conn)).await?;
            for (appid, raw) in batch.iter().zip(raws) {
                if let Some(record) = raw.and_then(|raw| decode("tenant", appid, &raw)) {
                    out.push((AuthorizerAppId::new(appid.as_str()), record));
                }
            }
        }
        Ok(out)
    }

    async fn save_tenant(
        &self,
        component: &ComponentAppId,
        appid: &AuthorizerAppId,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        let encoded = encode("tenant", record)?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(self.tenant_key(appid.as_str()), encoded)
            .ignore()
            .sadd(self.tenant_index_key(component), appid.as_str())
            .ignore();
        let () = self.run("save tenant", pipe.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_util::ping(&self.conn, self.op_timeout)
            .await
            .map_err(StoreError::Backend)
    }

    async fn try_lock_refresh(
        &self,
        appid: &ComponentAppId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let owner = owner_id();
        let seen = self.seen().get(appid).cloned();
        let (have_seen, seen_value) = match seen {
            Some(value) => ("1", value.unwrap_or_default()),
            None => ("0", String::new()),
        };
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.lock.key(self.key("lock", appid));
        invocation
            .key(self.key("token", appid))
            .arg(&owner)
            .arg(millis(ttl))
            .arg(have_seen)
            .arg(seen_value);
        let taken: i64 = self
            .run("take refresh lock", invocation.invoke_async(&mut conn))
            .await?;
        if taken == 1 {
            self.locks().insert(appid.clone(), owner);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn unlock_refresh(&self, appid: &ComponentAppId) -> Result<(), StoreError> {
        let Some(owner) = self.locks().remove(appid) else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.unlock.key(self.key("lock", appid));
        invocation.arg(owner);
        let _: i64 = self
            .run("release refresh lock", invocation.invoke_async(&mut conn))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_are_random_hex() {
        let (a, b) = (owner_id(), owner_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn corrupt_values_read_as_absent() {
        let appid = ComponentAppId::new("wx0123456789abcdef");
        assert_eq!(decode::<StoredToken>("token", &appid, "{not json"), None);
    }
}
