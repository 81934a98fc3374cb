//! Sessions: the store trait, the cookie codec, return-path validation and the backends.
//!
//! Knows nothing about WeChat. The layer converts WeChat values (`OAuthState`, the user's
//! profile) into the types here ([`FlowKey`], [`crate::Identity`]).
//!
//! A pending login is not server state: it lives in the browser's encrypted flow cookie
//! ([`FlowCookie`]); the store only keeps a short-lived "redeemed" marker per completed
//! callback ([`SessionStore::consume_flow`]), so anonymous login starts cost the server nothing.
//!
//! - [`SessionStore`] is the one storage interface (held as `Arc<dyn SessionStore>`), with three
//!   backends: the in-process [`MemoryStore`]; the [`DurableStore`], the same memory in front of
//!   an embedded database file so that sessions survive a restart or a crash (the sidecar's
//!   default); and a Redis backend for several instances, behind a feature.
//! - [`cookie::CookieCodec`] reads and writes this proxy's encrypted cookies.
//! - [`return_path::ReturnPath`] is a validated same-origin relative path (open-redirect guard).
//!
//! Security notes: a session id is 128 bits from the OS CSPRNG, never logged (use
//! [`SessionId::fingerprint`] in logs), compared in constant time; a fresh id is created at every
//! login; store failures are errors the layer must treat as "no session" (fail closed).
//!
//! ```
//! use std::sync::Arc;
//! use http::{HeaderMap, HeaderValue, header};
//! use wechat_oauth_proxy::Identity;
//! use wechat_oauth_proxy::ids::Scope;
//! use wechat_oauth_proxy::secret::SecretString;
//! use wechat_oauth_proxy::session::{
//!     CookieCodec, CookieSettings, MemoryStore, SessionRecord, SessionSettings, SessionStore,
//! };
//!
//! # tokio_test_block_on(async {
//! let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(SessionSettings::default()));
//! let codec = CookieCodec::new(
//!     &SecretString::new("a master secret of at least 32 bytes!!"),
//!     CookieSettings::default(),
//! )?;
//!
//! // Callback: a fresh session and its cookie.
//! let identity = Identity {
//!     openid: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
//!     unionid: None,
//!     nickname: "小明".into(),
//!     avatar: String::new(),
//!     appid: "wx520c15f417810387".into(),
//!     scope: Scope::UserInfo,
//! };
//! let id = store.create(SessionRecord::new(identity.clone())).await?;
//! let set_cookie = codec.session_cookie(&id);
//!
//! // Next request: the browser sends the cookie back.
//! let pair = set_cookie.to_str()?.split(';').next().unwrap_or_default().to_owned();
//! let mut headers = HeaderMap::new();
//! headers.insert(header::COOKIE, HeaderValue::from_str(&pair)?);
//! let id = codec.read_session(&headers).expect("our cookie");
//! let record = store.load(&id).await?.expect("live session");
//! assert_eq!(record.identity, identity);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

pub mod cookie;
pub mod durable;
pub mod flow;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod return_path;
pub mod ticket;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::clock::unix_now;
use crate::identity::Identity;
use crate::ids::AppId;

pub use self::cookie::{CookieCodec, CookieKeyError, CookieSettings};
pub use self::durable::{DurableSettings, DurableStore};
pub use self::flow::{FlowBinding, FlowCookie, FlowKey, LoginFlow, QrTicketId};
pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisSessionStore;
pub use self::return_path::{ReturnPath, ReturnPathError};
#[cfg(feature = "redis")]
pub use self::ticket::RedisTicketStore;
pub use self::ticket::{MemoryTicketStore, TicketKey, TicketStore};

/// Number of random bytes in a [`SessionId`] (128 bits, the OWASP recommendation).
pub const SESSION_ID_BYTES: usize = 16;

/// Length of a [`SessionId`] in its base64url (unpadded) text form.
pub const SESSION_ID_TEXT_LEN: usize = 22;

/// An opaque session identifier: 128 bits from the operating system's CSPRNG.
///
/// It is a bearer secret: `Debug` is redacted, there is no `Display`, equality is constant-time,
/// and the text form is only reachable through [`SessionId::expose_secret`]. Log
/// [`SessionId::fingerprint`] instead.
#[derive(Clone)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// A fresh random id (from `OsRng`, so no user-space RNG state can be predicted).
    pub fn generate() -> Self {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the text form (22 base64url characters, no padding, canonical).
    ///
    /// Anything else — other lengths, other alphabets, padding, non-canonical trailing bits —
    /// is `None`: ids are untrusted input and we only accept what we could have issued.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != SESSION_ID_TEXT_LEN {
            return None;
        }
        let mut bytes = [0u8; SESSION_ID_BYTES];
        // URL_SAFE_NO_PAD rejects padding and non-canonical trailing bits.
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(SESSION_ID_BYTES) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// Builds an id from raw bytes (for storage backends that keep the binary form).
    pub fn from_bytes(bytes: [u8; SESSION_ID_BYTES]) -> Self {
        Self(bytes)
    }

    /// The text form (base64url, unpadded), as it goes into the encrypted cookie.
    ///
    /// # Security
    /// Never log or display the returned string.
    pub fn expose_secret(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The raw bytes, e.g. as a per-session cache key (`JwtIssuer::token_for`).
    ///
    /// # Security
    /// Never log or display them.
    pub fn expose_bytes(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.0
    }

    /// A short, non-reversible tag for logs (first 8 bytes of SHA-256, hex), so that session
    /// lifecycle events can be correlated without logging the id itself.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        crate::secret::constant_time_eq(&self.0, &other.0)
    }
}
impl Eq for SessionId {}

/// What a session stores: who the user is and when the session started.
///
/// Serde-encodable so that shared backends (Redis) can store it as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The authenticated user.
    pub identity: Identity,
    /// When the session was created (unix seconds).
    pub created_at: u64,
    /// Last activity seen by the store (unix seconds); `load` reports the time of that load.
    pub last_seen: u64,
}

impl SessionRecord {
    /// A record for a session that starts now.
    pub fn new(identity: Identity) -> Self {
        let now = unix_now();
        Self {
            identity,
            created_at: now,
            last_seen: now,
        }
    }
}

/// Lifetimes and bounds of sessions and of redeemed-login markers, shared by every backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Absolute lifetime of a session, counted from `create` (default 7 days).
    pub ttl: Duration,
    /// A session unused for this long expires (default 24 h); every `load`/`touch` is use.
    pub idle_timeout: Duration,
    /// Maximum number of sessions kept by an in-process store (default 1 000 000); the least
    /// recently used session is evicted beyond it.
    pub capacity: u64,
    /// Maximum number of redeemed-login markers ([`SessionStore::consume_flow`]) kept by an
    /// in-process store (default 100 000); the least recently used is evicted beyond it.
    ///
    /// Pending logins are not stored on the server at all (they live in the browser's flow
    /// cookie), so login starts never touch this bound; only callbacks that carry a genuine flow
    /// cookie add a marker. An evicted marker lets that one state be redeemed again — which
    /// still needs the same browser's flow cookie and a fresh, single-use code from WeChat —
    /// and turns a later duplicate callback into an error page instead of a quiet redirect.
    pub consumed_capacity: u64,
}

impl SessionSettings {
    /// The moment (unix seconds) a session created at `created_at` and last used at `last_seen`
    /// stops being live: its absolute deadline or its idle deadline, whichever comes first.
    pub fn live_until(&self, created_at: u64, last_seen: u64) -> u64 {
        let absolute = created_at.saturating_add(self.ttl.as_secs());
        let idle = last_seen.saturating_add(self.idle_timeout.as_secs());
        absolute.min(idle)
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(7 * 24 * 3600),
            idle_timeout: Duration::from_secs(24 * 3600),
            capacity: 1_000_000,
            consumed_capacity: 100_000,
        }
    }
}

/// A storage failure. The layer must treat it as "no session" / "login failed" (fail closed).
///
/// Messages never contain session ids, flow keys or record contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("session store backend error: {0}")]
    Backend(String),
    /// A record could not be encoded for storage.
    #[error("session record could not be encoded: {0}")]
    Encode(String),
    /// A stored record could not be decoded.
    #[error("session record could not be decoded: {0}")]
    Decode(String),
}

/// Server-side storage of sessions and of redeemed-login markers.
///
/// Held as `Arc<dyn SessionStore>`. Every backend passes the same conformance suite
/// (`tests/session_conformance.rs`).
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session under a fresh random id and returns the id.
    ///
    /// Collision-safe: an id that already exists is never overwritten (a new one is drawn).
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError>;

    /// Loads a live session; `None` when unknown, expired (absolute TTL) or idle too long.
    ///
    /// A hit counts as activity (resets the idle timeout).
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Deletes a session (logout). Deleting an unknown id is not an error.
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError>;

    /// Records activity without reading the record; `false` when the session is not live.
    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Marks the login flow `key` (its OAuth state) as redeemed for `ttl`; `true` for the one
    /// call that redeems it. Atomic: of any number of calls for the same key — concurrent, or
    /// on other instances sharing the backend — exactly one gets `true` while the marker lives.
    ///
    /// Pending flows are not stored (see [`flow`]); the callback checks the browser's flow
    /// cookie first and calls this last, so `ttl` must cover the rest of the flow's lifetime.
    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError>;

    /// Remembers, for `ttl`, that the flow `key` completed with `session` (replacing its
    /// redeemed marker), so that a duplicate callback (WeChat's in-app browser loads the
    /// callback twice; double click, reload) is recognised without a second session.
    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The session a completed flow produced, if remembered.
    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError>;

    /// Ends every session whose identity belongs to the official account `appid` (for example
    /// when that account revokes the platform's authorization) and returns how many live
    /// sessions it ended. Sessions of other appids are untouched; a session created while this
    /// runs may survive it.
    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError>;

    /// Readiness check: `Ok` when the backend can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Approximate number of live sessions, for the `wxauth_sessions_active` gauge, when the
    /// backend knows it without a scan (memory and durable stores); `None` otherwise (Redis).
    fn active_sessions(&self) -> Option<u64> {
        None
    }
}

/// How many fresh ids `create` draws before giving up (a collision of 128-bit random ids is
/// astronomically unlikely; more than one means the RNG is broken).
const CREATE_ATTEMPTS: usize = 4;

/// The `create` of every backend: draws a fresh id and lets `insert` store the record under it
/// unless that id is taken (`Ok(false)`), a few times, so an id in use is never overwritten.
pub(crate) async fn create_with_fresh_id<F, Fut>(mut insert: F) -> Result<SessionId, StoreError>
where
    F: FnMut(SessionId) -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    for _ in 0..CREATE_ATTEMPTS {
        let id = SessionId::generate();
        if insert(id.clone()).await? {
            tracing::debug!(session = %id.fingerprint(), "session created");
            return Ok(id);
        }
        tracing::warn!("session id collision; drawing a new id");
    }
    Err(StoreError::Backend(
        "could not allocate a unique session id".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_draws_again_on_a_collision_and_gives_up_after_a_few() {
        let mut calls = 0;
        let id = create_with_fresh_id(|_| {
            calls += 1;
            std::future::ready(Ok(calls == 3))
        })
        .await
        .unwrap();
        assert_eq!((calls, id.expose_secret().len()), (3, SESSION_ID_TEXT_LEN));
        let mut calls = 0;
        let err = create_with_fresh_id(|_| {
            calls += 1;
            std::future::ready(Ok(false))
        })
        .await
        .unwrap_err();
        assert_eq!(calls, CREATE_ATTEMPTS);
        assert!(err.to_string().contains("unique session id"), "{err}");
    }

    #[test]
    fn live_until_is_the_earlier_deadline() {
        let settings = SessionSettings {
            ttl: Duration::from_secs(100),
            idle_timeout: Duration::from_secs(10),
            ..SessionSettings::default()
        };
        assert_eq!(settings.live_until(1000, 1000), 1010);
        assert_eq!(settings.live_until(1000, 1095), 1100);
        assert_eq!(settings.live_until(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        let text = a.expose_secret();
        assert_eq!(text.len(), SESSION_ID_TEXT_LEN);
        assert_eq!(SessionId::parse(&text), Some(a));
    }

    #[test]
    fn parse_is_strict() {
        let good = SessionId::generate().expose_secret();
        assert!(SessionId::parse("").is_none());
        assert!(SessionId::parse(&good[..21]).is_none());
        assert!(SessionId::parse(&format!("{good}A")).is_none());
        assert!(SessionId::parse(&format!("{}==", &good[..20])).is_none());
        // Standard-alphabet characters are refused.
        assert!(SessionId::parse("AAAAAAAAAAAAAAAAAAAA+A").is_none());
        assert!(SessionId::parse("AAAAAAAAAAAAAAAAAAAA/A").is_none());
        // Non-canonical trailing bits (last char must encode zero low bits).
        assert!(SessionId::parse("AAAAAAAAAAAAAAAAAAAAAB").is_none());
        assert!(SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").is_some());
        // Multi-byte characters of the right byte length.
        assert!(SessionId::parse("ééééééééééé").is_none());
    }

    /// A record as today's format writes it to Redis (serde_json of `SessionRecord`, produced by
    /// the code before the identity fields were typed). Sessions stored before an upgrade must
    /// still load, and a record must be written back byte for byte the same.
    const STORED_RECORD: &str = r#"{"identity":{"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","nickname":"张三🐼 \"100%\"","avatar":"https://thirdwx.qlogo.cn/mmopen/a/132","appid":"wxa1b2c3d4e5f60708","scope":"snsapi_userinfo"},"created_at":1764680000,"last_seen":1764680123}"#;

    #[test]
    fn a_session_record_in_the_stored_format_reads_and_writes_back_identically() {
        let record: SessionRecord = serde_json::from_str(STORED_RECORD).unwrap();
        assert_eq!(
            record.identity.openid.as_str(),
            "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
        );
        assert_eq!(
            record.identity.unionid,
            Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into())
        );
        assert_eq!(record.identity.nickname, "张三🐼 \"100%\"");
        assert_eq!(record.identity.appid.as_str(), "wxa1b2c3d4e5f60708");
        assert_eq!(record.created_at, 1_764_680_000);
        assert_eq!(serde_json::to_string(&record).unwrap(), STORED_RECORD);
        // Without a unionid the key is absent, not null, both ways.
        let bare = STORED_RECORD.replace(r#""unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","#, "");
        let record: SessionRecord = serde_json::from_str(&bare).unwrap();
        assert_eq!(record.identity.unionid, None);
        assert_eq!(serde_json::to_string(&record).unwrap(), bare);
    }

    #[test]
    fn debug_is_redacted() {
        let id = SessionId::generate();
        let shown = format!("{id:?}");
        assert_eq!(shown, "SessionId([redacted])");
        assert!(!shown.contains(&id.expose_secret()));
        assert_eq!(id.fingerprint().len(), 16);
        assert!(!id.expose_secret().contains(&id.fingerprint()));
    }
}
