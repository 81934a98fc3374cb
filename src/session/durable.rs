//! The durable session store (the sidecar's default, one instance): the in-process
//! [`MemoryStore`] in front of an embedded database file, `<state_dir>/sessions.redb`, so that
//! sessions and redeemed-login markers survive a restart and a crash with nothing to install.
//!
//! **Why redb.** [redb](https://docs.rs/redb) is a pure-Rust, single-file, ACID key-value store
//! (copy-on-write B-trees, checksummed commit slots, `fsync` at every durable commit) with no
//! background threads and no dependencies of its own. One file is easy to report and to move
//! aside when it cannot be read; a single writer is all this store needs (it batches its own
//! writes); its *quick repair* mode makes the open after a crash instant instead of a walk over
//! the whole file. fjall, the LSM alternative, keeps a directory of segment files with
//! background flush and compaction threads — more moving parts for a table of a few hundred MB
//! that is read whole at start and then only written. redb 2.6 is the last line that builds
//! with this crate's MSRV (1.85); files are created in its v3 format, the one later versions
//! read.
//!
//! **Reads never touch the disk.** At start every live session and marker is read from the
//! file into memory ([`DurableStore::open`]); from then on `load`, `touch` and `completed`
//! answer from memory only, exactly as the [`MemoryStore`] does, and the file is written behind
//! them:
//!
//! | call | memory | file |
//! |---|---|---|
//! | `create` | inserted | committed (`fsync`) **before `create` returns**: the callback's redirect is sent after the session is durable |
//! | `delete`, `end_sessions_of` | removed | committed before the call returns (a logout stays a logout after a crash) |
//! | `consume_flow`, `remember_completed` | stored | queued, committed with the next batch (the login's `create`, or within milliseconds) |
//! | `load`, `touch` | idle timeout reset | the new `last_seen` is queued at most once per [`DurableSettings::touch_interval`] per session and written every `touch_interval` |
//! | capacity eviction | dropped (LRU) | deleted with the next batch |
//!
//! One writer thread owns the database and commits whatever is queued in one transaction
//! (group commit), so concurrent logins share an `fsync`. Expired records are purged in the
//! background, [`DurableSettings::purge_batch`] records per [`DurableSettings::purge_interval`]
//! (bounded work per round). After a crash at most the last `touch_interval` of idle
//! timestamps is lost, so a session may expire that much earlier than it would have.
//!
//! **A file that cannot be read** (corrupt, truncated, another format, unreadable) is reported
//! (an error log with its path), renamed to `sessions.redb.corrupt-<unix seconds>` and replaced
//! by an empty one: the users log in again, the proxy starts. A file another process has open
//! is refused instead (two instances must not share one state directory).
//!
//! The file holds session ids in the clear (as the memory does), so it is created `0600` in a
//! `0700` directory; a cookie for an id still needs the master secret.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use tokio::sync::oneshot;

use super::memory::{CompactRecord, FlowHash, IdBytes, Marker, flow_hash};
use super::{
    FlowKey, MemoryStore, SessionId, SessionRecord, SessionSettings, SessionStore, StoreError,
    create_with_fresh_id,
};
use crate::clock::unix_now;
use crate::identity::Identity;
use crate::ids::AppId;

/// Name of the database file in the state directory.
pub const FILE_NAME: &str = "sessions.redb";

/// Sessions: id → (created_at, last_seen, appid, identity as JSON — the format the Redis store
/// keeps too).
const SESSIONS: TableDefinition<IdBytes, (u64, u64, &str, &str)> = TableDefinition::new("sessions");
/// Redeemed-login markers: SHA-256 of the state → (expiry in unix milliseconds, the session
/// the login completed with).
const MARKERS: TableDefinition<FlowHash, (u64, Option<IdBytes>)> = TableDefinition::new("markers");
/// `format` → the layout version of the tables above.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout version this code writes and reads.
const FORMAT: u64 = 1;

/// Most queued operations committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Records handed from the reading thread to the memory per message at start.
const RESTORE_CHUNK: usize = 4096;

/// How the durable store writes behind its memory. The lifetimes and bounds of sessions are
/// the [`SessionSettings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableSettings {
    /// A session's `last_seen` is queued for writing when the stored one is at least this old
    /// (capped at a quarter of the idle timeout), and the queue is written this often
    /// (default 60 s). The most a crash can lose of idle timestamps.
    pub touch_interval: Duration,
    /// How often a purge round runs (default 10 s).
    pub purge_interval: Duration,
    /// Most records a purge round examines (default 10 000), so a round's work is bounded
    /// whatever the size of the file.
    pub purge_batch: usize,
    /// Memory the database may use to cache pages (default 16 MiB); sessions themselves are in
    /// the [`MemoryStore`], the page cache only serves writes and the purge.
    pub page_cache_bytes: usize,
}

impl Default for DurableSettings {
    fn default() -> Self {
        Self {
            touch_interval: Duration::from_secs(60),
            purge_interval: Duration::from_secs(10),
            purge_batch: 10_000,
            page_cache_bytes: 16 << 20,
        }
    }
}

/// Durable [`SessionStore`]: a [`MemoryStore`] whose every change is also written to a redb
/// file (see the module docs).
///
/// Cheap to clone; clones share the store. When the last clone is dropped, the queued writes
/// (idle timestamps included) are committed and the file is closed, so it can be opened again.
#[derive(Clone)]
pub struct DurableStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    path: PathBuf,
    /// `None` only while dropping (closing the channel stops the writer).
    jobs: Option<Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the store's handle and its writer thread share.
struct Shared {
    memory: MemoryStore,
    settings: SessionSettings,
    durable: DurableSettings,
    /// `last_seen` updates waiting for the next write: (id, unix seconds).
    touched: Mutex<Vec<(IdBytes, u64)>>,
    /// Sessions the memory dropped for capacity, to delete from the file.
    evicted: Arc<Mutex<Vec<IdBytes>>>,
    /// Whether the last commit succeeded (readiness).
    healthy: AtomicBool,
    /// [`DurableSettings::touch_interval`] in whole seconds, capped (see there).
    touch_every: u32,
}

/// One queued operation, with the caller waiting for its commit when `done` is set.
struct Msg {
    job: Job,
    done: Option<oneshot::Sender<Result<u64, StoreError>>>,
}

enum Job {
    /// Insert a new session; answers 1, or 0 when the id is taken in the file.
    PutSession {
        id: IdBytes,
        created_at: u64,
        last_seen: u64,
        appid: String,
        identity: String,
    },
    /// Delete sessions; answers how many were stored.
    DeleteSessions(Vec<IdBytes>),
    /// Store a marker until `expires_ms`.
    PutMarker {
        hash: FlowHash,
        expires_ms: u64,
        session: Option<IdBytes>,
    },
    /// Delete every session of an appid; answers how many were stored.
    EndAppid(String),
    /// Write the queued idle timestamps and evictions now.
    Flush,
    /// Answers how many sessions the file holds.
    Count,
    /// Answers through `Read`'s own channel.
    Read(
        IdBytes,
        oneshot::Sender<Result<Option<SessionRecord>, StoreError>>,
    ),
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("path", &self.inner.path)
            .field("memory", &self.inner.shared.memory)
            .field("durable", &self.inner.shared.durable)
            .finish()
    }
}

fn backend(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("session database: {op}: {e}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain queues: a panic elsewhere cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl DurableStore {
    /// Opens (or creates) `<dir>/sessions.redb`, reads every live session and marker into
    /// memory, and starts the writer. Takes as long as reading the file (see BENCHMARKS.md for
    /// a million sessions); run it at start-up.
    ///
    /// A file that cannot be read is logged, moved aside and replaced by an empty one (see the
    /// module docs).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory cannot be created, the file is open in
    /// another process, or not even a fresh file can be created.
    pub async fn open(
        dir: &Path,
        settings: SessionSettings,
        durable: DurableSettings,
    ) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let (memory, db) = match restore(&path, &settings, &durable, &evicted).await {
            Ok(opened) => opened,
            Err(Unreadable::InUse) => {
                return Err(backend(
                    "open",
                    format!(
                        "{} is in use by another process (two instances cannot share a state_dir)",
                        path.display()
                    ),
                ));
            }
            Err(Unreadable::File(error)) => {
                let aside = move_aside(&path)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    %error,
                    "the session database cannot be read; moved it aside and starting with an empty one (users log in again)"
                );
                lock(&evicted).clear(); // what the failed attempt's memory dropped
                restore(&path, &settings, &durable, &evicted)
                    .await
                    .map_err(|e| backend("open a fresh file", e))?
            }
        };
        let touch_every = {
            let quarter_idle = settings.idle_timeout.as_secs() / 4;
            let every = durable.touch_interval.as_secs().min(quarter_idle).max(1);
            u32::try_from(every).unwrap_or(u32::MAX)
        };
        let shared = Arc::new(Shared {
            memory,
            settings,
            durable,
            touched: Mutex::new(Vec::new()),
            evicted,
            healthy: AtomicBool::new(true),
            touch_every,
        });
        let (jobs, queue) = mpsc::channel();
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wxauth-session-db".to_owned())
                .spawn(move || Writer::new(db, shared).run(&queue))
                .map_err(|e| backend("start the writer thread", e))?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                path,
                jobs: Some(jobs),
                writer: Some(writer),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Approximate number of live sessions in memory (for metrics).
    pub fn session_count(&self) -> u64 {
        self.inner.shared.memory.session_count()
    }

    /// Number of sessions the file holds, expired ones not yet purged included (for tests and
    /// diagnostics).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be read.
    pub async fn stored_session_count(&self) -> Result<u64, StoreError> {
        self.call(Job::Count).await
    }

    /// The session `id` as the file holds it (its `last_seen` is the last one written), without
    /// counting as use; for tests and diagnostics.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be read or the record decoded.
    pub async fn stored_record(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Read(*id.expose_bytes(), tx), None)?;
        rx.await
            .map_err(|_| backend("read", "the writer stopped"))?
    }

    /// Writes the queued idle timestamps and evictions now and waits for the commit (they are
    /// otherwise written every [`DurableSettings::touch_interval`] and at close).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the commit fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Job::Flush).await.map(drop)
    }

    /// Runs the memory's pending maintenance now (evictions, expirations); for tests.
    pub async fn run_pending_tasks(&self) {
        self.inner.shared.memory.run_pending_tasks().await;
    }

    fn send(
        &self,
        job: Job,
        done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    ) -> Result<(), StoreError> {
        self.inner
            .jobs
            .as_ref()
            .and_then(|jobs| jobs.send(Msg { job, done }).ok())
            .ok_or_else(|| backend("queue", "the writer stopped"))
    }

    /// Queues `job` and waits until it is committed.
    async fn call(&self, job: Job) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(job, Some(tx))?;
        rx.await
            .map_err(|_| backend("commit", "the writer stopped"))?
    }

    /// Queues `job` to be committed with the next batch.
    fn queue(&self, job: Job) {
        if let Err(error) = self.send(job, None) {
            tracing::error!(%error, "session database: a write was not queued");
        }
    }

    /// Notes a use of `record` at `now`: the idle timestamp is queued when due.
    fn note_use(&self, id: &SessionId, record: &CompactRecord, now: u64) {
        let shared = &self.inner.shared;
        if record.note_use(now, shared.touch_every) {
            lock(&shared.touched).push((*id.expose_bytes(), now));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel makes the writer commit what is queued, then close the file.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("session database: the writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl SessionStore for DurableStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        let memory = &self.inner.shared.memory;
        let packed = Arc::new(CompactRecord::new(&record)?);
        // serde_json's messages name a position and a category, never the content.
        let identity = serde_json::to_string(&record.identity)
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        create_with_fresh_id(|id| {
            let packed = Arc::clone(&packed);
            let job = Job::PutSession {
                id: *id.expose_bytes(),
                created_at: record.created_at,
                last_seen: record.created_at,
                appid: record.identity.appid.as_str().to_owned(),
                identity: identity.clone(),
            };
            async move {
                if !memory.insert_new(&id, packed).await {
                    return Ok(false);
                }
                let stored = self.call(job).await;
                if stored.as_ref().is_ok_and(|&inserted| inserted == 1) {
                    return Ok(true);
                }
                memory.remove(id.expose_bytes()).await;
                stored.map(|_| false)
            }
        })
        .await
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let Some(record) = self.inner.shared.memory.get(id.expose_bytes()).await else {
            return Ok(None);
        };
        let now = unix_now();
        self.note_use(id, &record, now);
        Ok(Some(record.expand(now)))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.inner.shared.memory.remove(id.expose_bytes()).await;
        self.call(Job::DeleteSessions(vec![*id.expose_bytes()]))
            .await
            .map(drop)
    }

    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        let Some(record) = self.inner.shared.memory.get(id.expose_bytes()).await else {
            return Ok(false);
        };
        self.note_use(id, &record, unix_now());
        Ok(true)
    }

    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError> {
        let hash = flow_hash(key);
        if !self.inner.shared.memory.consume_hash(hash, ttl).await {
            return Ok(false);
        }
        self.queue(marker_job(hash, ttl, None));
        Ok(true)
    }

    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let hash = flow_hash(key);
        let bytes = *session.expose_bytes();
        let memory = &self.inner.shared.memory;
        memory.put_marker(hash, Marker::Completed(bytes), ttl).await;
        self.queue(marker_job(hash, ttl, Some(bytes)));
        Ok(())
    }

    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        self.inner.shared.memory.completed(key).await
    }

    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError> {
        let ended = self.inner.shared.memory.end_sessions_of(appid).await?;
        // The file is scanned too: it may hold a session the memory dropped a moment ago.
        self.call(Job::EndAppid(appid.as_str().to_owned())).await?;
        Ok(ended)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.writer.as_ref().is_none_or(|w| w.is_finished()) {
            Err(backend("ping", "the writer stopped"))
        } else if inner.shared.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(backend("ping", "the last commit failed"))
        }
    }

    fn active_sessions(&self) -> Option<u64> {
        Some(self.session_count())
    }
}

fn marker_job(hash: FlowHash, ttl: Duration, session: Option<IdBytes>) -> Job {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Job::PutMarker {
        hash,
        expires_ms: unix_millis().saturating_add(ttl_ms),
        session,
    }
}

/// Why a file could not be opened.
enum Unreadable {
    /// Another process holds it: refused, never moved.
    InUse,
    /// Anything else: moved aside.
    File(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InUse => f.write_str("in use by another process"),
            Self::File(error) => f.write_str(error),
        }
    }
}

impl From<redb::Error> for Unreadable {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => Self::InUse,
            other => Self::File(other.to_string()),
        }
    }
}

/// A redb error, boxed (redb's own is large) for the writer's fallible steps.
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<redb::Error> for DbError {
    fn from(e: redb::Error) -> Self {
        Self(Box::new(e))
    }
}

/// `From` every redb error type for `$target`, through `redb::Error`.
macro_rules! from_redb {
    ($target:ty: $($error:ty),*) => {$(
        impl From<$error> for $target {
            fn from(e: $error) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
from_redb!(Unreadable: redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
from_redb!(DbError: redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Keys found by a purge round, and where the next round starts.
type Found<const N: usize> = (Vec<[u8; N]>, Option<[u8; N]>);

/// Opens the file and fills a fresh memory from it: the file is read on a blocking thread and
/// handed over in chunks while the memory takes them.
async fn restore(
    path: &Path,
    settings: &SessionSettings,
    durable: &DurableSettings,
    evicted: &Arc<Mutex<Vec<IdBytes>>>,
) -> Result<(MemoryStore, Database), Unreadable> {
    let memory = {
        let evicted = Arc::clone(evicted);
        MemoryStore::with_eviction_listener(settings.clone(), move |id| lock(&evicted).push(id))
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Restored>(4);
    let reader = {
        let (path, settings, cache) = (path.to_owned(), settings.clone(), durable.page_cache_bytes);
        tokio::task::spawn_blocking(move || read_file(&path, &settings, cache, &tx))
    };
    let mut sessions = 0u64;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Restored::Sessions(chunk) => {
                sessions += chunk.len() as u64;
                for (id, record) in chunk {
                    memory.restore(id, record).await;
                }
            }
            Restored::Markers(chunk) => {
                for (hash, marker, ttl) in chunk {
                    memory.restore_marker(hash, marker, ttl).await;
                }
            }
        }
    }
    let db = match reader.await {
        Ok(result) => result?,
        // A panic while reading a damaged file is a damaged file, not a crash of the proxy.
        Err(e) => return Err(Unreadable::File(format!("reading failed: {e}"))),
    };
    memory.run_pending_tasks().await;
    tracing::info!(path = %path.display(), sessions, "session database opened");
    Ok((memory, db))
}

/// Records read from the file at start.
enum Restored {
    Sessions(Vec<(IdBytes, CompactRecord)>),
    Markers(Vec<(FlowHash, Marker, Duration)>),
}

/// Opens (creating when missing) the file and sends every live record to `tx`.
fn read_file(
    path: &Path,
    settings: &SessionSettings,
    cache_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<Restored>,
) -> Result<Database, Unreadable> {
    let file = open_private_file(path).map_err(|e| Unreadable::File(e.to_string()))?;
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_file_format_v3(true)
        .create_file(file)?;
    // Create the tables (and check the format) of a new file.
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta.get("format")?.map(|v| v.value());
        match format {
            None => {
                meta.insert("format", FORMAT)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Unreadable::File(format!(
                    "layout version {other}, this build reads {FORMAT}"
                )));
            }
        }
        txn.open_table(SESSIONS)?;
        txn.open_table(MARKERS)?;
    }
    txn.commit()?;

    let now_ms = unix_millis();
    let now = now_ms / 1000;
    let read = db.begin_read()?;
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    for entry in read.open_table(SESSIONS)?.iter()? {
        let (id, value) = entry?;
        let (created_at, last_seen, _, identity) = value.value();
        if settings.live_until(created_at, last_seen) <= now {
            continue; // left to the purge
        }
        let identity: Identity = serde_json::from_str(identity)
            .map_err(|e| Unreadable::File(format!("a stored identity: {e}")))?;
        let record = SessionRecord {
            identity,
            created_at,
            last_seen,
        };
        let packed = CompactRecord::restored(&record, now_ms)
            .map_err(|e| Unreadable::File(e.to_string()))?;
        chunk.push((id.value(), packed));
        if chunk.len() == RESTORE_CHUNK {
            send(tx, Restored::Sessions(std::mem::take(&mut chunk)))?;
        }
    }
    send(tx, Restored::Sessions(chunk))?;
    let mut markers = Vec::new();
    for entry in read.open_table(MARKERS)?.iter()? {
        let (hash, value) = entry?;
        let (expires_ms, session) = value.value();
        if expires_ms > now_ms {
            let marker = session.map_or(Marker::Consumed, Marker::Completed);
            let ttl = Duration::from_millis(expires_ms - now_ms);
            markers.push((hash.value(), marker, ttl));
        }
    }
    send(tx, Restored::Markers(markers))?;
    drop(read);
    Ok(db)
}

fn send(tx: &tokio::sync::mpsc::Sender<Restored>, chunk: Restored) -> Result<(), Unreadable> {
    tx.blocking_send(chunk)
        .map_err(|_| Unreadable::File("the memory stopped taking records".to_owned()))
}

/// Renames an unreadable file to `<name>.corrupt-<unix seconds>` (a counter is added when that
/// name exists).
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = unix_now();
    for n in 0..100u32 {
        let suffix = if n == 0 {
            format!("corrupt-{stamp}")
        } else {
            format!("corrupt-{stamp}-{n}")
        };
        let aside = path.with_extension(format!("redb.{suffix}"));
        if aside.exists() {
            continue;
        }
        return std::fs::rename(path, &aside).map(|()| aside).map_err(|e| {
            backend(
                "move the unreadable file aside",
                format!("{}: {e}", path.display()),
            )
        });
    }
    Err(backend("move the unreadable file aside", "no free name"))
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        backend(
            "create the state directory",
            format!("{}: {e}", dir.display()),
        )
    })
}

fn open_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// The writer thread: owns the database, commits queued jobs in batches, writes idle
/// timestamps and evictions every `touch_interval`, purges every `purge_interval`.
struct Writer {
    db: Database,
    shared: Arc<Shared>,
    /// Where the next purge round of sessions / markers starts.
    session_cursor: Option<IdBytes>,
    marker_cursor: Option<FlowHash>,
}

impl Writer {
    fn new(db: Database, shared: Arc<Shared>) -> Self {
        Self {
            db,
            shared,
            session_cursor: None,
            marker_cursor: None,
        }
    }

    fn run(mut self, queue: &Receiver<Msg>) {
        let durable = self.shared.durable.clone();
        let mut next_flush = Instant::now() + durable.touch_interval;
        let mut next_purge = Instant::now() + durable.purge_interval;
        loop {
            let wait = next_flush
                .min(next_purge)
                .saturating_duration_since(Instant::now());
            let mut batch = Vec::new();
            let closed = match queue.recv_timeout(wait) {
                Ok(msg) => {
                    batch.push(msg);
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(msg) => batch.push(msg),
                            Err(_) => break,
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let now = Instant::now();
            let flush =
                closed || now >= next_flush || batch.iter().any(|m| matches!(m.job, Job::Flush));
            if flush {
                next_flush = now + durable.touch_interval;
            }
            self.commit(batch, flush);
            if closed {
                return;
            }
            if now >= next_purge {
                next_purge = now + durable.purge_interval;
                if let Err(error) = self.purge() {
                    tracing::error!(%error, "session database: purge failed");
                }
            }
        }
    }

    /// Commits the writes of `batch` (and, when `flush`, the queued idle timestamps and
    /// evictions) in one transaction, answers every waiting caller, then serves the reads.
    fn commit(&mut self, batch: Vec<Msg>, flush: bool) {
        let (touched, evicted) = if flush {
            (
                std::mem::take(&mut *lock(&self.shared.touched)),
                std::mem::take(&mut *lock(&self.shared.evicted)),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let (reads, writes): (Vec<Msg>, Vec<Msg>) = batch
            .into_iter()
            .partition(|msg| matches!(msg.job, Job::Count | Job::Read(..)));
        if !writes.is_empty() || !touched.is_empty() || !evicted.is_empty() {
            let results = self.write(&writes, &touched, &evicted).map_err(|e| {
                let error = e.to_string();
                tracing::error!(%error, writes = writes.len(), "session database: commit failed");
                error
            });
            self.shared
                .healthy
                .store(results.is_ok(), Ordering::Relaxed);
            for (n, msg) in writes.into_iter().enumerate() {
                let answer = match &results {
                    Ok(results) => Ok(results.get(n).copied().unwrap_or_default()),
                    Err(error) => Err(backend("commit", error)),
                };
                if let Some(done) = msg.done {
                    let _ = done.send(answer); // the caller may have gone: nothing to do
                }
            }
        }
        for msg in reads {
            match msg.job {
                Job::Read(id, reply) => {
                    let _ = reply.send(self.read(&id));
                }
                _ => {
                    if let Some(done) = msg.done {
                        let _ = done.send(self.count());
                    }
                }
            }
        }
    }

    /// One write transaction for `jobs`, idle timestamps and evictions: the answer of each job.
    fn write(
        &self,
        jobs: &[Msg],
        touched: &[(IdBytes, u64)],
        evicted: &[IdBytes],
    ) -> Result<Vec<u64>, DbError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.set_quick_repair(true);
        let mut results = Vec::with_capacity(jobs.len());
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut markers = txn.open_table(MARKERS)?;
            for msg in jobs {
                results.push(match &msg.job {
                    Job::PutSession {
                        id,
                        created_at,
                        last_seen,
                        appid,
                        identity,
                    } => {
                        if sessions.get(id)?.is_some() {
                            0
                        } else {
                            let value =
                                (*created_at, *last_seen, appid.as_str(), identity.as_str());
                            sessions.insert(id, value)?;
                            1
                        }
                    }
                    Job::DeleteSessions(ids) => {
                        let mut removed = 0;
                        for id in ids {
                            if sessions.remove(id)?.is_some() {
                                removed += 1;
                            }
                        }
                        removed
                    }
                    Job::PutMarker {
                        hash,
                        expires_ms,
                        session,
                    } => {
                        markers.insert(hash, (*expires_ms, *session))?;
                        0
                    }
                    Job::EndAppid(appid) => {
                        let before = sessions.len()?;
                        sessions.retain(|_, (_, _, stored, _)| stored != appid.as_str())?;
                        before.saturating_sub(sessions.len()?)
                    }
                    Job::Flush | Job::Count | Job::Read(..) => 0,
                });
            }
            for (id, seen) in touched {
                let current = sessions.get(id)?.map(|v| {
                    let (created_at, last_seen, appid, identity) = v.value();
                    (created_at, last_seen, appid.to_owned(), identity.to_owned())
                });
                if let Some((created_at, last_seen, appid, identity)) = current {
                    if *seen > last_seen {
                        let value = (created_at, *seen, appid.as_str(), identity.as_str());
                        sessions.insert(id, value)?;
                    }
                }
            }
            for id in evicted {
                sessions.remove(id)?;
            }
        }
        txn.commit()?;
        Ok(results)
    }

    fn count(&self) -> Result<u64, StoreError> {
        (|| -> Result<u64, DbError> { Ok(self.db.begin_read()?.open_table(SESSIONS)?.len()?) })()
            .map_err(|e| backend("count", e))
    }

    fn read(&self, id: &IdBytes) -> Result<Option<SessionRecord>, StoreError> {
        let stored = (|| -> Result<_, DbError> {
            let table = self.db.begin_read()?.open_table(SESSIONS)?;
            Ok(table.get(id)?.map(|v| {
                let (created_at, last_seen, _, identity) = v.value();
                (created_at, last_seen, identity.to_owned())
            }))
        })()
        .map_err(|e| backend("read", e))?;
        stored
            .map(|(created_at, last_seen, identity)| {
                Ok(SessionRecord {
                    identity: serde_json::from_str(&identity)
                        .map_err(|e| StoreError::Decode(e.to_string()))?,
                    created_at,
                    last_seen,
                })
            })
            .transpose()
    }

    /// One purge round: at most `purge_batch` sessions and as many markers examined, from where
    /// the last round stopped; expired ones deleted (a session the memory still holds is kept:
    /// its newer `last_seen` is on its way).
    fn purge(&mut self) -> Result<(), DbError> {
        let batch = self.shared.durable.purge_batch.max(1);
        let (settings, memory) = (&self.shared.settings, &self.shared.memory);
        let now = unix_now();
        let now_ms = unix_millis();
        let txn = self.db.begin_write()?;
        let purged = {
            let mut sessions = txn.open_table(SESSIONS)?;
            let (expired, next) =
                expired_from(&sessions, self.session_cursor, batch, |id, value| {
                    settings.live_until(value.0, value.1) <= now && !memory.contains(&id)
                })?;
            for id in &expired {
                sessions.remove(id)?;
            }
            self.session_cursor = next;
            let mut markers = txn.open_table(MARKERS)?;
            let (expired_markers, next) =
                expired_from(&markers, self.marker_cursor, batch, |_, value| {
                    value.0 <= now_ms
                })?;
            for hash in &expired_markers {
                markers.remove(hash)?;
            }
            self.marker_cursor = next;
            expired.len() + expired_markers.len()
        };
        if purged == 0 {
            txn.abort()?;
        } else {
            txn.commit()?;
            tracing::debug!(purged, "session database: expired records purged");
        }
        Ok(())
    }
}

/// Up to `batch` keys of `table` from `cursor` (the start when `None`) for which `expired`
/// holds, and where the next round starts (`None`: back at the start).
fn expired_from<const N: usize, V: redb::Value + 'static>(
    table: &redb::Table<'_, [u8; N], V>,
    cursor: Option<[u8; N]>,
    batch: usize,
    mut expired: impl for<'v> FnMut([u8; N], V::SelfType<'v>) -> bool,
) -> Result<Found<N>, DbError> {
    let range = match cursor {
        Some(from) => table.range(from..)?,
        None => table.range::<[u8; N]>(..)?,
    };
    let mut found = Vec::new();
    for (seen, entry) in range.enumerate() {
        let (key, value) = entry?;
        let key = key.value();
        if seen == batch {
            return Ok((found, Some(key)));
        }
        if expired(key, value.value()) {
            found.push(key);
        }
    }
    Ok((found, None))
}
