//! The official accounts (authorizers, 公众号) a third-party platform serves: which exist, which
//! may log users in right now, and how that changes (docs/wechat-protocol.md §2.2, §7).
//!
//! [`Tenants`] is the registry the auth layer asks on every request ([`Tenants::status`]: a
//! read lock and one hash lookup, no I/O, no await). It is filled from three sources, all driven
//! by [`WeChatOAuth`](super::oauth::WeChatOAuth):
//!
//! - the **configuration** ([`TenantSettings::configured`]): in [`TenantMode::Static`] only these
//!   appids exist; until WeChat confirms them they are [`TenantStatus::Configured`] (logins
//!   allowed, as before multi-tenancy);
//! - the **platform store**: what was learned earlier survives restarts and is shared between
//!   instances (Redis);
//! - **WeChat**: the `authorized` / `updateauthorized` / `unauthorized` pushes and the periodic
//!   reconciliation with `api_get_authorizer_list` / `api_get_authorizer_info`
//!   (see [`authorizer`](super::authorizer)).
//!
//! Every status change is broadcast as a [`TenantChange`] ([`Tenants::subscribe`]), so that the
//! layer can end a revoked tenant's sessions without this module knowing about sessions.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AuthorizerAppId;

/// Permission set id of 网页服务 (web pages): web OAuth on behalf of an account needs it. It is
/// exclusive — only one platform can hold it per account (docs/wechat-protocol.md §7).
pub const WEB_PERMISSION_SET: u32 = 4;

/// Default of [`TenantSettings::query_auth_retry_delays`]: 1 s, 5 s, 30 s.
pub const DEFAULT_QUERY_AUTH_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Suggested [`TenantSettings::reconcile_interval`]: 6 hours.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Default of [`TenantSettings::reconcile_retry`]: 60 s.
pub const DEFAULT_RECONCILE_RETRY: Duration = Duration::from_secs(60);

/// Default of [`TenantSettings::store_sync_interval`]: 30 s.
pub const DEFAULT_STORE_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// How many [`TenantChange`]s a slow subscriber may fall behind before it sees
/// [`broadcast::error::RecvError::Lagged`] (it should then re-read [`Tenants::list`]).
pub const CHANGE_CHANNEL_CAPACITY: usize = 1024;

/// Which official accounts the proxy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantMode {
    /// Only the appids listed in [`TenantSettings::configured`]; pushes and list entries for
    /// any other appid are ignored.
    Static,
    /// Any account that authorized the platform with the web permission set (id 4), learned
    /// from pushes and reconciliation; the configured appids are served from the start.
    Dynamic,
}

/// How the tenant registry is set up and kept in step with WeChat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSettings {
    /// Static (only `configured`) or dynamic (every authorizer with permission set 4).
    pub mode: TenantMode,
    /// The appids named in the configuration; [`TenantStatus::Configured`] until WeChat says
    /// otherwise.
    pub configured: Vec<AuthorizerAppId>,
    /// Reconcile with `api_get_authorizer_list` at start (once a component token is available)
    /// and then this often; `None` never reconciles.
    pub reconcile_interval: Option<Duration>,
    /// Pause before retrying a reconciliation round that could not fetch the list (no token
    /// yet, WeChat down); default [`DEFAULT_RECONCILE_RETRY`].
    pub reconcile_retry: Duration,
    /// Pauses before the retries of `api_query_auth` after an `authorized` push (one retry per
    /// entry; default [`DEFAULT_QUERY_AUTH_RETRY_DELAYS`]). After the last failure
    /// `api_get_authorizer_info` is asked once.
    pub query_auth_retry_delays: Vec<Duration>,
    /// Re-read the tenant records from the platform store this often, so that a push received
    /// by another instance (Redis) reaches this one; `None` reads them only at start.
    pub store_sync_interval: Option<Duration>,
}

impl TenantSettings {
    /// One configured account, static mode, no reconciliation, store re-read every
    /// [`DEFAULT_STORE_SYNC_INTERVAL`]: the single-tenant shorthand (`wechat.appid`).
    pub fn single(appid: AuthorizerAppId) -> Self {
        Self::new(TenantMode::Static, vec![appid])
    }

    /// `mode` with `configured`, no reconciliation, default retry delays and store re-reads.
    pub fn new(mode: TenantMode, configured: Vec<AuthorizerAppId>) -> Self {
        Self {
            mode,
            configured,
            reconcile_interval: None,
            reconcile_retry: DEFAULT_RECONCILE_RETRY,
            query_auth_retry_delays: DEFAULT_QUERY_AUTH_RETRY_DELAYS.to_vec(),
            store_sync_interval: Some(DEFAULT_STORE_SYNC_INTERVAL),
        }
    }
}

/// Where one official account stands with our platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// WeChat confirmed it authorized the platform with the web permission set (id 4).
    Active,
    /// Listed in the static configuration and not yet confirmed (or contradicted) by WeChat:
    /// logins are allowed, as they were before the platform learned about tenants.
    Configured,
    /// It authorized the platform, but without the web permission set: WeChat would refuse the
    /// authorize page (10015 / 10005).
    NoWebPermission,
    /// It revoked its authorization (`unauthorized` push, or absent from the authorizer list).
    Revoked,
    /// Not a tenant: not configured (static mode) or never seen (dynamic mode).
    Unknown,
}

impl TenantStatus {
    /// Whether a new login for this account may start (and complete).
    pub fn allows_login(self) -> bool {
        matches!(self, TenantStatus::Active | TenantStatus::Configured)
    }

    /// The status as a stable lowercase word (`active`, `configured`, `no_web_permission`,
    /// `revoked`, `unknown`), for JSON, logs and pages.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Configured => "configured",
            TenantStatus::NoWebPermission => "no_web_permission",
            TenantStatus::Revoked => "revoked",
            TenantStatus::Unknown => "unknown",
        }
    }

    /// Active iff the permission sets include [`WEB_PERMISSION_SET`], else no web permission.
    pub fn from_func_ids(func_ids: &[u32]) -> Self {
        if func_ids.contains(&WEB_PERMISSION_SET) {
            TenantStatus::Active
        } else {
            TenantStatus::NoWebPermission
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one tenant; also its persisted form (platform store). Never holds an
/// authorizer access or refresh token: web OAuth does not need them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Where the account stands.
    pub status: TenantStatus,
    /// The permission set ids it granted the platform (`func_info`), as last learned.
    #[serde(default)]
    pub func_ids: Vec<u32>,
    /// When this record last changed (Unix seconds, our clock); 0 for a configured account
    /// WeChat has not confirmed yet. The newer record wins when instances disagree.
    #[serde(default)]
    pub updated_at: i64,
    /// The account's name (`nick_name`), when known.
    #[serde(default)]
    pub nick_name: Option<String>,
    /// `service_type_info.id` (0 subscription, 1 upgraded old subscription, 2 service account).
    #[serde(default)]
    pub service_type: Option<i64>,
    /// `verify_type_info.id` (-1 unverified, 0 WeChat-verified, …).
    #[serde(default)]
    pub verify_type: Option<i64>,
    /// `account_status` (1 normal, 14 cancelled, 16 banned, 18 warned, 19 frozen).
    #[serde(default)]
    pub account_status: Option<i64>,
}

impl TenantRecord {
    /// A record with `status` only (no permission sets or account details), changed at
    /// `updated_at`.
    pub fn with_status(status: TenantStatus, updated_at: i64) -> Self {
        Self {
            status,
            func_ids: Vec::new(),
            updated_at,
            nick_name: None,
            service_type: None,
            verify_type: None,
            account_status: None,
        }
    }

    /// Same content, ignoring `updated_at`.
    fn same_content(&self, other: &TenantRecord) -> bool {
        self.status == other.status
            && self.func_ids == other.func_ids
            && self.nick_name == other.nick_name
            && self.service_type == other.service_type
            && self.verify_type == other.verify_type
            && self.account_status == other.account_status
    }
}

/// One tenant's status changed (broadcast by [`Tenants::subscribe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantChange {
    /// The official account.
    pub appid: AuthorizerAppId,
    /// Its status before.
    pub previous: TenantStatus,
    /// Its status now.
    pub status: TenantStatus,
}

/// The registry of tenants. Cheap to clone (one `Arc`); every clone sees the same state.
#[derive(Clone)]
pub struct Tenants {
    shared: Arc<Shared>,
}

struct Shared {
    mode: TenantMode,
    /// Replaced whole by [`Tenants::reconfigure`] (a configuration reload).
    configured: RwLock<HashSet<AuthorizerAppId>>,
    entries: RwLock<HashMap<AuthorizerAppId, Entry>>,
    changes: broadcast::Sender<TenantChange>,
}

/// One tenant in memory: its record and a counter bumped by every event about it, so that a
/// slow background lookup never overwrites a newer event (an `unauthorized` push that arrived
/// while `api_query_auth` was retrying).
#[derive(Clone, Debug)]
struct Entry {
    record: TenantRecord,
    epoch: u64,
}

impl Entry {
    /// A tenant heard of but not yet learned (dynamic mode).
    fn unknown() -> Self {
        Entry {
            record: TenantRecord::with_status(TenantStatus::Unknown, 0),
            epoch: 0,
        }
    }
}

/// Proof that a lookup started at a given point of a tenant's history; see
/// [`Tenants::begin`] and [`Tenants::apply_if_current`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("mode", &self.shared.mode)
            .field("configured", &self.configured().len())
            .field("known", &self.entries().len())
            .finish()
    }
}

impl Tenants {
    /// A registry with the configured appids as [`TenantStatus::Configured`]; nothing else is
    /// known until the store is read or WeChat reports.
    pub fn new(mode: TenantMode, configured: &[AuthorizerAppId]) -> Self {
        let configured: HashSet<AuthorizerAppId> = configured.iter().cloned().collect();
        let entries = configured
            .iter()
            .map(|appid| {
                (
                    appid.clone(),
                    Entry {
                        record: TenantRecord::with_status(TenantStatus::Configured, 0),
                        epoch: 0,
                    },
                )
            })
            .collect();
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        Self {
            shared: Arc::new(Shared {
                mode,
                configured: RwLock::new(configured),
                entries: RwLock::new(entries),
                changes,
            }),
        }
    }

    /// Static or dynamic.
    pub fn mode(&self) -> TenantMode {
        self.shared.mode
    }

    /// The account's status: O(1), no I/O, no await (runs on every request).
    pub fn status(&self, appid: &AuthorizerAppId) -> TenantStatus {
        self.entries()
            .get(appid)
            .map_or(TenantStatus::Unknown, |e| e.record.status)
    }

    /// What is known about the account, if it is a tenant at all.
    pub fn record(&self, appid: &AuthorizerAppId) -> Option<TenantRecord> {
        self.entries().get(appid).map(|e| e.record.clone())
    }

    /// Whether the appid is named in the configuration.
    pub fn is_configured(&self, appid: &AuthorizerAppId) -> bool {
        self.configured().contains(appid)
    }

    /// Replaces the configured appids (a configuration reload): a newly listed appid is
    /// [`TenantStatus::Configured`] unless something is known about it already; an appid no
    /// longer listed is forgotten ([`TenantStatus::Unknown`]) in static mode, and in dynamic
    /// mode only if WeChat never confirmed it (still `Configured`). Every status change is
    /// broadcast as usual; lookups under way about a forgotten appid are void. The mode cannot
    /// change. Returns the appids (added, removed).
    pub fn reconfigure(
        &self,
        configured: &[AuthorizerAppId],
    ) -> (Vec<AuthorizerAppId>, Vec<AuthorizerAppId>) {
        let new: HashSet<AuthorizerAppId> = configured.iter().cloned().collect();
        let mut changes = Vec::new();
        let (added, removed) = {
            let mut listed = self
                .shared
                .configured
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut entries = self.entries_mut();
            let added: Vec<_> = new.difference(&listed).cloned().collect();
            let removed: Vec<_> = listed.difference(&new).cloned().collect();
            for appid in &added {
                let entry = entries.entry(appid.clone()).or_insert_with(Entry::unknown);
                if entry.record.status == TenantStatus::Unknown {
                    entry.record = TenantRecord::with_status(TenantStatus::Configured, 0);
                    changes.push(TenantChange {
                        appid: appid.clone(),
                        previous: TenantStatus::Unknown,
                        status: TenantStatus::Configured,
                    });
                }
            }
            for appid in &removed {
                let forget = self.shared.mode == TenantMode::Static
                    || entries
                        .get(appid)
                        .is_some_and(|e| e.record.status == TenantStatus::Configured);
                if let Some(entry) = entries.get_mut(appid).filter(|_| forget) {
                    let previous = entry.record.status;
                    // A new epoch voids lookups under way; the entry stays as Unknown.
                    *entry = Entry {
                        record: TenantRecord::with_status(TenantStatus::Unknown, 0),
                        epoch: entry.epoch + 1,
                    };
                    if previous != TenantStatus::Unknown {
                        changes.push(TenantChange {
                            appid: appid.clone(),
                            previous,
                            status: TenantStatus::Unknown,
                        });
                    }
                }
            }
            *listed = new;
            (added, removed)
        };
        for change in changes {
            tracing::info!(appid = %change.appid, previous = %change.previous, status = %change.status, "tenant status changed by a configuration reload");
            // No receiver is fine: nobody needs to react.
            let _ = self.shared.changes.send(change);
        }
        (added, removed)
    }

    /// Whether the registry accepts news about `appid`: in static mode only configured appids,
    /// in dynamic mode every appid.
    pub fn accepts(&self, appid: &AuthorizerAppId) -> bool {
        match self.shared.mode {
            TenantMode::Static => self.is_configured(appid),
            TenantMode::Dynamic => true,
        }
    }

    /// Every known tenant with its record, sorted by appid (for `/ready` and `--check`).
    pub fn list(&self) -> Vec<(AuthorizerAppId, TenantRecord)> {
        let mut all: Vec<_> = self
            .entries()
            .iter()
            .filter(|(_, e)| e.record.status != TenantStatus::Unknown)
            .map(|(appid, e)| (appid.clone(), e.record.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Status changes from now on. A receiver that falls more than
    /// [`CHANGE_CHANNEL_CAPACITY`] changes behind gets `Lagged` and should re-read
    /// [`list`](Self::list).
    pub fn subscribe(&self) -> broadcast::Receiver<TenantChange> {
        self.shared.changes.subscribe()
    }

    /// Marks the start of a lookup about `appid` (see [`apply_if_current`](Self::apply_if_current)).
    pub(crate) fn begin(&self, appid: &AuthorizerAppId) -> Epoch {
        Epoch(self.entries().get(appid).map_or(0, |e| e.epoch))
    }

    /// An event about `appid` arrived (an `authorized` push) whose outcome is looked up next:
    /// every lookup that started earlier is void. Returns the epoch the new lookup starts at,
    /// or `None` for an appid the registry does not [`accept`](Self::accepts).
    pub(crate) fn begin_event(&self, appid: &AuthorizerAppId) -> Option<Epoch> {
        if !self.accepts(appid) {
            return None;
        }
        let mut entries = self.entries_mut();
        let entry = entries.entry(appid.clone()).or_insert_with(Entry::unknown);
        entry.epoch += 1;
        Some(Epoch(entry.epoch))
    }

    /// Records an event about `appid` at once (an `unauthorized` push): the record replaces
    /// what was known and every lookup that started before it is void. Returns whether the
    /// content changed. Ignored (returns `false`) for an appid the registry does not
    /// [`accept`](Self::accepts).
    pub(crate) fn apply_event(&self, appid: &AuthorizerAppId, record: TenantRecord) -> bool {
        self.apply(appid, record, None, true)
    }

    /// Records the outcome of a lookup that began at `epoch`, unless an event about the same
    /// appid arrived since (then the outcome is stale and dropped). Returns whether the content
    /// changed.
    pub(crate) fn apply_if_current(
        &self,
        appid: &AuthorizerAppId,
        epoch: Epoch,
        record: TenantRecord,
    ) -> bool {
        self.apply(appid, record, Some(epoch), false)
    }

    /// Adopts a record read from the platform store if it is at least as new as the one held
    /// (by `updated_at`). Returns whether the content changed.
    pub(crate) fn adopt_stored(&self, appid: &AuthorizerAppId, record: TenantRecord) -> bool {
        let newer = self
            .entries()
            .get(appid)
            .is_none_or(|e| e.record.updated_at <= record.updated_at);
        newer && self.apply(appid, record, None, false)
    }

    /// The one place that changes an entry: writes it, bumps the epoch for events, broadcasts a
    /// status change.
    fn apply(
        &self,
        appid: &AuthorizerAppId,
        record: TenantRecord,
        expected: Option<Epoch>,
        event: bool,
    ) -> bool {
        if !self.accepts(appid) {
            return false;
        }
        let change = {
            let mut entries = self.entries_mut();
            let entry = entries.entry(appid.clone()).or_insert_with(Entry::unknown);
            if expected.is_some_and(|Epoch(at)| at != entry.epoch) {
                tracing::debug!(%appid, "dropping a stale tenant lookup: a newer event arrived meanwhile");
                return false;
            }
            if event {
                entry.epoch += 1;
            }
            if entry.record.same_content(&record) {
                entry.record.updated_at = entry.record.updated_at.max(record.updated_at);
                return false;
            }
            let previous = entry.record.status;
            entry.record = record;
            (previous != entry.record.status).then(|| TenantChange {
                appid: appid.clone(),
                previous,
                status: entry.record.status,
            })
        };
        if let Some(change) = change {
            tracing::info!(appid = %change.appid, previous = %change.previous, status = %change.status, "tenant status changed");
            // No receiver is fine: nobody needs to react.
            let _ = self.shared.changes.send(change);
        }
        true
    }

    fn configured(&self) -> RwLockReadGuard<'_, HashSet<AuthorizerAppId>> {
        // Replaced whole by `reconfigure`: a poisoned set is still consistent.
        self.shared
            .configured
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entries(&self) -> RwLockReadGuard<'_, HashMap<AuthorizerAppId, Entry>> {
        // Every write is a whole-entry assignment: a poisoned map is still consistent.
        self.shared
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entries_mut(&self) -> RwLockWriteGuard<'_, HashMap<AuthorizerAppId, Entry>> {
        self.shared
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
