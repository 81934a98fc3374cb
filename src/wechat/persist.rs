//! Persistence of the platform credentials — the `component_verify_ticket` and the
//! `component_access_token` — and of what the platform learned about its tenants (the official
//! accounts it serves, [`TenantRecord`]).
//!
//! Losing the ticket on restart blocks every token fetch until the next push (up to ten minutes)
//! — the most common complaint about WeChat SDKs (docs/wechat-protocol.md §6, §14). So both values go
//! through a [`PlatformStore`]: [`FileStore`] (the default; one small JSON file per component
//! appid, written atomically) or [`MemoryPlatformStore`] (tests, embedders that persist
//! elsewhere). A Redis implementation can share them between instances and implement the refresh
//! lock hook ([`PlatformStore::try_lock_refresh`]).

use std::{
    collections::HashMap,
    fmt::Debug,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    AuthorizerAppId, ComponentAccessToken, ComponentAppId, VerifyTicket, tenants::TenantRecord,
};

/// A `component_verify_ticket` as pushed by WeChat, with when it was made and received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTicket {
    /// The ticket (secret).
    pub ticket: VerifyTicket,
    /// The push's `CreateTime` (Unix seconds, WeChat's clock); a ticket lives 12 h from it.
    pub create_time: i64,
    /// When we received the push (Unix seconds, our clock).
    pub received_at: i64,
}

/// A `component_access_token` and its absolute expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token (secret).
    pub token: ComponentAccessToken,
    /// When it expires (Unix seconds, our clock).
    pub expires_at: i64,
}

/// A platform store failure. Carries descriptions only (no paths' contents, no secrets), and is
/// `Clone` so errors can be remembered and replayed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {path}: {message}")]
    Io {
        /// What we were doing (`create state dir`, `write`, `rename`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: String,
        /// The I/O error's description.
        message: String,
    },
    /// A backend (e.g. Redis) failed.
    #[error("backend: {0}")]
    Backend(String),
}

/// Where the ticket and the component token live, keyed by component appid.
///
/// Object-safe (`async_trait`) because the backend is chosen at runtime (file or Redis) and held
/// as `Arc<dyn PlatformStore>`.
#[async_trait]
pub trait PlatformStore: Send + Sync + Debug + 'static {
    /// The last stored ticket, if any.
    async fn load_ticket(&self, appid: &ComponentAppId)
    -> Result<Option<StoredTicket>, StoreError>;
    /// Replaces the stored ticket.
    async fn save_ticket(
        &self,
        appid: &ComponentAppId,
        ticket: &StoredTicket,
    ) -> Result<(), StoreError>;
    /// The last stored component token, if any (possibly expired; the caller checks).
    async fn load_token(&self, appid: &ComponentAppId) -> Result<Option<StoredToken>, StoreError>;
    /// Replaces the stored component token.
    async fn save_token(
        &self,
        appid: &ComponentAppId,
        token: &StoredToken,
    ) -> Result<(), StoreError>;
    /// Removes the stored token only if it still equals `failed` (compare-and-invalidate), so
    /// that a token another task or instance already replaced is not thrown away. Returns
    /// whether something was removed.
    async fn invalidate_token_if(
        &self,
        appid: &ComponentAppId,
        failed: &ComponentAccessToken,
    ) -> Result<bool, StoreError>;
    /// Every tenant record stored for the platform `component`, in no particular order. A
    /// corrupt record is logged and skipped, never an error.
    async fn load_tenants(
        &self,
        component: &ComponentAppId,
    ) -> Result<Vec<(AuthorizerAppId, TenantRecord)>, StoreError>;
    /// Replaces the record of tenant `appid` of the platform `component`.
    async fn save_tenant(
        &self,
        component: &ComponentAppId,
        appid: &AuthorizerAppId,
        record: &TenantRecord,
    ) -> Result<(), StoreError>;
    /// Checks that the store is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Takes the cross-instance refresh lock for `appid` for at most `ttl`; `false` means another
    /// instance is refreshing and this one should wait for its token. In-process stores have
    /// nobody to coordinate with, so the default always grants it.
    async fn try_lock_refresh(
        &self,
        appid: &ComponentAppId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let _ = (appid, ttl);
        Ok(true)
    }
    /// Releases the refresh lock taken by [`PlatformStore::try_lock_refresh`].
    async fn unlock_refresh(&self, appid: &ComponentAppId) -> Result<(), StoreError> {
        let _ = appid;
        Ok(())
    }
}

/// Everything stored for one component appid.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PlatformRecord {
    #[serde(default)]
    ticket: Option<StoredTicket>,
    #[serde(default)]
    token: Option<StoredToken>,
}

/// The tenants of one component appid, by authorizer appid (the file store keeps them in their
/// own file, so a tenant update never rewrites the ticket and the token).
type TenantFile = std::collections::BTreeMap<AuthorizerAppId, TenantRecord>;

/// In-memory [`PlatformStore`] for tests and for embedders that persist elsewhere. Nothing
/// survives the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryPlatformStore {
    records: Arc<Mutex<HashMap<ComponentAppId, PlatformRecord>>>,
    tenants: Arc<Mutex<HashMap<ComponentAppId, TenantFile>>>,
}

impl MemoryPlatformStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> MutexGuard<'_, HashMap<ComponentAppId, PlatformRecord>> {
        // A panic elsewhere while holding the lock cannot leave a record half-written (every
        // update is a single assignment), so a poisoned lock is still consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tenants(&self) -> MutexGuard<'_, HashMap<ComponentAppId, TenantFile>> {
        // Same reasoning as `records`: single assignments only.
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl PlatformStore for MemoryPlatformStore {
    async fn load_ticket(
        &self,
        appid: &ComponentAppId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        Ok(self.records().get(appid).and_then(|r| r.ticket.clone()))
    }

    async fn save_ticket(
        &self,
        appid: &ComponentAppId,
        ticket: &StoredTicket,
    ) -> Result<(), StoreError> {
        self.records().entry(appid.clone()).or_default().ticket = Some(ticket.clone());
        Ok(())
    }

    async fn load_token(&self, appid: &ComponentAppId) -> Result<Option<StoredToken>, StoreError> {
        Ok(self.records().get(appid).and_then(|r| r.token.clone()))
    }

    async fn save_token(
        &self,
        appid: &ComponentAppId,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        self.records().entry(appid.clone()).or_default().token = Some(token.clone());
        Ok(())
    }

    async fn invalidate_token_if(
        &self,
        appid: &ComponentAppId,
        failed: &ComponentAccessToken,
    ) -> Result<bool, StoreError> {
        let mut records = self.records();
        let Some(record) = records.get_mut(appid) else {
            return Ok(false);
        };
        if record.token.as_ref().is_some_and(|t| &t.token == failed) {
            record.token = None;
            return Ok(true);
        }
        Ok(false)
    }

    async fn load_tenants(
        &self,
        component: &ComponentAppId,
    ) -> Result<Vec<(AuthorizerAppId, TenantRecord)>, StoreError> {
        Ok(self
            .tenants()
            .get(component)
            .map(|all| all.iter().map(|(a, r)| (a.clone(), r.clone())).collect())
            .unwrap_or_default())
    }

    async fn save_tenant(
        &self,
        component: &ComponentAppId,
        appid: &AuthorizerAppId,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        self.tenants()
            .entry(component.clone())
            .or_default()
            .insert(appid.clone(), record.clone());
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// File-backed [`PlatformStore`]: one JSON file per component appid in a state directory.
///
/// Writes are atomic (temporary file in the same directory, `fsync`, `rename`), the directory is
/// created `0700` and files are `0600` on Unix. A missing or corrupt file is logged (without its
/// contents) and read as empty — the next push or fetch repairs it; it never stops the process.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: Arc<PathBuf>,
    /// Serialises read-modify-write cycles inside this process.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl FileStore {
    /// Opens (creating if needed) the state directory.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created or is not a directory.
    pub fn new(dir: PathBuf) -> Result<Self, StoreError> {
        create_private_dir(&dir)?;
        Ok(Self {
            dir: Arc::new(dir),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `appid`'s record. Appids are `wx` + hex, but they come from
    /// configuration: anything outside `[A-Za-z0-9_-]` is percent-escaped so a file name can
    /// never leave the directory.
    fn path_for(&self, appid: &ComponentAppId) -> PathBuf {
        self.file_for("platform-", appid)
    }

    /// The file holding the tenant records of `appid` (`tenants-<appid>.json`).
    fn tenants_path_for(&self, appid: &ComponentAppId) -> PathBuf {
        self.file_for("tenants-", appid)
    }

    /// `<dir>/<kind><escaped appid>.json`.
    fn file_for(&self, kind: &str, appid: &ComponentAppId) -> PathBuf {
        let mut name = String::from(kind);
        for b in appid.as_str().bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    async fn read(&self, appid: &ComponentAppId) -> Result<PlatformRecord, StoreError> {
        let path = self.path_for(appid);
        blocking(move || Ok(read_record(&path))).await
    }

    async fn write(
        &self,
        appid: &ComponentAppId,
        record: PlatformRecord,
    ) -> Result<(), StoreError> {
        self.write_file(self.path_for(appid), record).await
    }

    /// Writes any record to `path` atomically, off the async threads.
    async fn write_file<R: Serialize + Send + 'static>(
        &self,
        path: PathBuf,
        record: R,
    ) -> Result<(), StoreError> {
        let dir = Arc::clone(&self.dir);
        blocking(move || write_record(&dir, &path, &record)).await
    }

    async fn read_tenants(&self, appid: &ComponentAppId) -> Result<TenantFile, StoreError> {
        let path = self.tenants_path_for(appid);
        blocking(move || Ok(read_record(&path))).await
    }

    /// Read-modify-write under the in-process lock. `update` returns whether to write.
    async fn modify<T>(
        &self,
        appid: &ComponentAppId,
        update: impl FnOnce(&mut PlatformRecord) -> (bool, T),
    ) -> Result<T, StoreError> {
        let _guard = self.lock.lock().await;
        let mut record = self.read(appid).await?;
        let (changed, out) = update(&mut record);
        if changed {
            self.write(appid, record).await?;
        }
        Ok(out)
    }
}

#[async_trait]
impl PlatformStore for FileStore {
    async fn load_ticket(
        &self,
        appid: &ComponentAppId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        Ok(self.read(appid).await?.ticket)
    }

    async fn save_ticket(
        &self,
        appid: &ComponentAppId,
        ticket: &StoredTicket,
    ) -> Result<(), StoreError> {
        self.modify(appid, |r| {
            r.ticket = Some(ticket.clone());
            (true, ())
        })
        .await
    }

    async fn load_token(&self, appid: &ComponentAppId) -> Result<Option<StoredToken>, StoreError> {
        Ok(self.read(appid).await?.token)
    }

    async fn save_token(
        &self,
        appid: &ComponentAppId,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        self.modify(appid, |r| {
            r.token = Some(token.clone());
            (true, ())
        })
        .await
    }

    async fn invalidate_token_if(
        &self,
        appid: &ComponentAppId,
        failed: &ComponentAccessToken,
    ) -> Result<bool, StoreError> {
        self.modify(appid, |r| {
            if r.token.as_ref().is_some_and(|t| &t.token == failed) {
                r.token = None;
                (true, true)
            } else {
                (false, false)
            }
        })
        .await
    }

    async fn load_tenants(
        &self,
        component: &ComponentAppId,
    ) -> Result<Vec<(AuthorizerAppId, TenantRecord)>, StoreError> {
        Ok(self.read_tenants(component).await?.into_iter().collect())
    }

    async fn save_tenant(
        &self,
        component: &ComponentAppId,
        appid: &AuthorizerAppId,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        let _guard = self.lock.lock().await;
        let mut all = self.read_tenants(component).await?;
        all.insert(appid.clone(), record.clone());
        self.write_file(self.tenants_path_for(component), all).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let dir = Arc::clone(&self.dir);
        blocking(move || match std::fs::metadata(dir.as_path()) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(io_error("check state dir", &dir, "not a directory")),
            Err(e) => Err(io_error("check state dir", &dir, e)),
        })
        .await
    }
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("file store task failed: {e}")))?
}

fn io_error(op: &'static str, path: &Path, message: impl ToString) -> StoreError {
    StoreError::Io {
        op,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_error("create state dir", dir, e))?;
    if !std::fs::metadata(dir)
        .map_err(|e| io_error("check state dir", dir, e))?
        .is_dir()
    {
        return Err(io_error("check state dir", dir, "not a directory"));
    }
    Ok(())
}

/// Reads a record; a missing file is empty, an unreadable or corrupt one is logged and empty.
fn read_record<R: serde::de::DeserializeOwned + Default>(path: &Path) -> R {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return R::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read platform state file; treating it as empty");
            return R::default();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(record) => record,
        Err(e) => {
            // serde_json's message names a position and a category, never the content.
            tracing::warn!(
                path = %path.display(),
                line = e.line(),
                column = e.column(),
                "corrupt platform state file; treating it as empty (it is replaced on the next write)"
            );
            R::default()
        }
    }
}

/// Writes a record atomically: temporary file (0600) in the same directory, fsync, rename over
/// the old file, fsync the directory.
fn write_record<R: Serialize>(dir: &Path, path: &Path, record: &R) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| StoreError::Backend(format!("serialising platform state: {e}")))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .map_err(|e| io_error("create temp file", &tmp, e))?;
        file.write_all(&json)
            .map_err(|e| io_error("write", &tmp, e))?;
        file.sync_all().map_err(|e| io_error("fsync", &tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io_error("rename", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; not every platform can open a directory, so best effort.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appid() -> ComponentAppId {
        ComponentAppId::new("wx0123456789abcdef")
    }

    fn ticket(n: i64) -> StoredTicket {
        StoredTicket {
            ticket: VerifyTicket::new(format!("ticket@@@t{n}")),
            create_time: n,
            received_at: n + 1,
        }
    }

    fn token(v: &str) -> StoredToken {
        StoredToken {
            token: ComponentAccessToken::new(v),
            expires_at: 1_900_000_000,
        }
    }

    /// A unique, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "wop-persist-test-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn exercise(store: &dyn PlatformStore) {
        let a = appid();
        let other = ComponentAppId::new("wxffffffffffffffff");
        assert_eq!(store.load_ticket(&a).await.unwrap(), None);
        assert_eq!(store.load_token(&a).await.unwrap(), None);
        store.save_ticket(&a, &ticket(1)).await.unwrap();
        store.save_token(&a, &token("tok-1")).await.unwrap();
        assert_eq!(store.load_ticket(&a).await.unwrap(), Some(ticket(1)));
        assert_eq!(store.load_token(&a).await.unwrap(), Some(token("tok-1")));
        // keyed by appid
        assert_eq!(store.load_ticket(&other).await.unwrap(), None);
        // replacing the ticket keeps the token and vice versa
        store.save_ticket(&a, &ticket(2)).await.unwrap();
        assert_eq!(store.load_token(&a).await.unwrap(), Some(token("tok-1")));
        assert_eq!(store.load_ticket(&a).await.unwrap(), Some(ticket(2)));
        // compare-and-invalidate
        assert!(
            !store
                .invalidate_token_if(&a, &ComponentAccessToken::new("tok-0"))
                .await
                .unwrap()
        );
        assert_eq!(store.load_token(&a).await.unwrap(), Some(token("tok-1")));
        assert!(
            store
                .invalidate_token_if(&a, &ComponentAccessToken::new("tok-1"))
                .await
                .unwrap()
        );
        assert_eq!(store.load_token(&a).await.unwrap(), None);
        assert_eq!(store.load_ticket(&a).await.unwrap(), Some(ticket(2)));
        assert!(
            !store
                .invalidate_token_if(&other, &ComponentAccessToken::new("tok-1"))
                .await
                .unwrap()
        );
        store.ping().await.unwrap();
        assert!(
            store
                .try_lock_refresh(&a, Duration::from_secs(5))
                .await
                .unwrap()
        );
        store.unlock_refresh(&a).await.unwrap();
    }

    #[tokio::test]
    async fn memory_store_behaves() {
        exercise(&MemoryPlatformStore::new()).await;
    }

    #[tokio::test]
    async fn file_store_behaves_and_survives_reopen() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("nested").join("state");
        let store = FileStore::new(dir.clone()).unwrap();
        exercise(&store).await;
        store.save_token(&appid(), &token("tok-9")).await.unwrap();
        drop(store);
        let reopened = FileStore::new(dir.clone()).unwrap();
        assert_eq!(
            reopened.load_ticket(&appid()).await.unwrap(),
            Some(ticket(2))
        );
        assert_eq!(
            reopened.load_token(&appid()).await.unwrap(),
            Some(token("tok-9"))
        );
        // no temporary files left behind
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["platform-wx0123456789abcdef.json".to_owned()]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn file_store_permissions_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = TempDir::new();
        let store = FileStore::new(tmp.0.clone()).unwrap();
        store.save_ticket(&appid(), &ticket(1)).await.unwrap();
        let dir_mode = std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777;
        let file_mode = std::fs::metadata(store.path_for(&appid()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(file_mode, 0o600);
    }

    #[tokio::test]
    async fn corrupt_file_reads_as_empty_and_is_repaired() {
        let tmp = TempDir::new();
        let store = FileStore::new(tmp.0.clone()).unwrap();
        let path = store.path_for(&appid());
        std::fs::write(&path, b"{\"ticket\": {\"ticket\": \"ticket@@@sec").unwrap();
        assert_eq!(store.load_ticket(&appid()).await.unwrap(), None);
        assert_eq!(store.load_token(&appid()).await.unwrap(), None);
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(store.load_ticket(&appid()).await.unwrap(), None);
        store.save_ticket(&appid(), &ticket(3)).await.unwrap();
        assert_eq!(store.load_ticket(&appid()).await.unwrap(), Some(ticket(3)));
    }

    #[test]
    fn file_names_cannot_escape_the_dir() {
        let tmp = TempDir::new();
        let store = FileStore::new(tmp.0.clone()).unwrap();
        let p = store.path_for(&ComponentAppId::new("../../etc/passwd"));
        assert_eq!(p.parent(), Some(tmp.0.as_path()));
        assert!(!p.file_name().unwrap().to_string_lossy().contains('/'));
    }

    #[test]
    fn file_store_refuses_a_file_as_dir() {
        let tmp = TempDir::new();
        std::fs::create_dir_all(&tmp.0).unwrap();
        let file = tmp.0.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(FileStore::new(file).is_err());
    }

    #[test]
    fn stored_values_debug_hides_secrets() {
        let shown = format!("{:?} {:?}", ticket(1), token("tok-secret-xyz"));
        assert!(!shown.contains("ticket@@@"), "{shown}");
        assert!(!shown.contains("tok-secret-xyz"), "{shown}");
    }
}
