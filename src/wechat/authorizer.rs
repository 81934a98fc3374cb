//! Keeps the [`Tenants`] registry in step with WeChat and the platform store
//! (docs/wechat-protocol.md §2.2, §7).
//!
//! - **`authorized` / `updateauthorized` push**: the push is answered at once; a spawned task
//!   trades its `AuthorizationCode` for the permission sets (`api_query_auth`, retried after each
//!   of [`TenantSettings::query_auth_retry_delays`]), falls back to `api_get_authorizer_info`,
//!   and makes the tenant [`Active`](TenantStatus::Active) iff permission set 4 was granted, else
//!   [`NoWebPermission`](TenantStatus::NoWebPermission). When every call fails the tenant stays
//!   as it was.
//! - **`unauthorized` push**: [`Revoked`](TenantStatus::Revoked) at once, persisted before the
//!   push is answered.
//! - **Reconciliation** (at start once a component token exists, then every
//!   [`TenantSettings::reconcile_interval`]): the whole `api_get_authorizer_list`, paged; a known
//!   or configured tenant missing from it is revoked, every listed one is looked up with
//!   `api_get_authorizer_info` (in dynamic mode that is how accounts are discovered). One
//!   tenant's failure is logged and retried next round; it never stops the others.
//! - **Store sync**: the records are read at start and every
//!   [`TenantSettings::store_sync_interval`], so a push received by another instance arrives here.
//!
//! No authorizer access or refresh token is ever held: the client's reply types have no field
//! for them.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::task::JoinHandle;

use super::{
    AuthorizerAppId, AuthorizerCode, ComponentAppId,
    client::{Authorization, AuthorizerDetails, MAX_LIST_COUNT, WeChatClient},
    error::{ErrorClass, WeChatError},
    persist::PlatformStore,
    tenants::{Epoch, TenantRecord, TenantSettings, TenantStatus, Tenants},
    token::{ComponentTokenManager, now_unix},
};

/// Upper bound on the pages of one reconciliation (500 accounts each: 5 million accounts).
const MAX_LIST_PAGES: u64 = 10_000;

/// What one reconciliation round did (for logs, tests and `--check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Accounts WeChat lists as authorizers of the platform.
    pub listed: usize,
    /// Tenants looked up with `api_get_authorizer_info`.
    pub checked: usize,
    /// Tenants newly revoked because WeChat no longer lists them.
    pub revoked: usize,
    /// Tenants whose lookup failed (left as they were, retried next round).
    pub failed: usize,
}

/// The tenant synchroniser of one platform. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct AuthorizerSync {
    inner: Arc<Inner>,
}

struct Inner {
    component_appid: ComponentAppId,
    client: WeChatClient,
    tokens: ComponentTokenManager,
    store: Arc<dyn PlatformStore>,
    tenants: Tenants,
    settings: TenantSettings,
    /// Orders the writes of tenant records, so that the store always ends with the record held
    /// in memory at the time of the last write.
    persist_lock: tokio::sync::Mutex<()>,
}

impl AuthorizerSync {
    /// A synchroniser for `component_appid`'s tenants; nothing runs until asked.
    pub(crate) fn new(
        component_appid: ComponentAppId,
        client: WeChatClient,
        tokens: ComponentTokenManager,
        store: Arc<dyn PlatformStore>,
        tenants: Tenants,
        settings: TenantSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                component_appid,
                client,
                tokens,
                store,
                tenants,
                settings,
                persist_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Reads every stored tenant record and adopts those at least as new as what is held.
    /// Returns how many records changed the registry.
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the store cannot be read (nothing changes).
    pub(crate) async fn load_from_store(&self) -> Result<usize, WeChatError> {
        let inner = &self.inner;
        let stored = inner.store.load_tenants(&inner.component_appid).await?;
        let mut changed = 0;
        for (appid, record) in stored {
            if inner.tenants.adopt_stored(&appid, record) {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// An `unauthorized` push: the tenant is revoked at once and the record persisted.
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the record cannot be persisted (memory already says revoked;
    /// the push should not be acknowledged so that WeChat sends it again).
    pub(crate) async fn revoke(&self, appid: &AuthorizerAppId) -> Result<(), WeChatError> {
        let tenants = &self.inner.tenants;
        if !tenants.accepts(appid) {
            tracing::info!(%appid, "ignoring the revocation of an account that is not a configured tenant");
            return Ok(());
        }
        let record = self.revoked_record(appid);
        tenants.apply_event(appid, record);
        tracing::warn!(%appid, "the official account revoked its authorization of the platform: its logins are refused from now on");
        self.persist(appid).await
    }

    /// An `authorized` / `updateauthorized` push: starts learning the grant in the background
    /// and returns at once. `None` when the appid is not a tenant (static mode) and the push is
    /// ignored.
    pub(crate) fn learn_in_background(
        &self,
        appid: &AuthorizerAppId,
        code: Option<AuthorizerCode>,
    ) -> Option<JoinHandle<()>> {
        let Some(epoch) = self.inner.tenants.begin_event(appid) else {
            tracing::info!(%appid, "ignoring the authorization of an account that is not a configured tenant");
            return None;
        };
        let this = self.clone();
        let appid = appid.clone();
        Some(tokio::spawn(async move {
            this.learn(&appid, code, epoch).await;
        }))
    }

    /// `api_query_auth` with bounded retries, else `api_get_authorizer_info`; the outcome is
    /// recorded unless a newer event arrived meanwhile. On total failure nothing changes.
    async fn learn(&self, appid: &AuthorizerAppId, code: Option<AuthorizerCode>, epoch: Epoch) {
        let mut record = None;
        if let Some(code) = code {
            match self.query_auth_with_retries(appid, &code).await {
                Ok(authorization) => {
                    record = Some(self.record_from(appid, &authorization, None));
                }
                Err(e) => {
                    tracing::warn!(%appid, error = %e, "api_query_auth failed; asking api_get_authorizer_info instead");
                }
            }
        }
        if record.is_none() {
            match self.details(appid).await {
                Ok(details) => {
                    record = Some(self.record_from(appid, &details.authorization, Some(&details)));
                }
                Err(e) => {
                    tracing::warn!(%appid, error = %e, "cannot learn the account's permission sets; the tenant keeps its previous state");
                }
            }
        }
        if let Some(record) = record {
            self.record(appid, epoch, record).await;
        }
    }

    /// `api_query_auth`, retried after each configured delay while the failure may pass.
    async fn query_auth_with_retries(
        &self,
        appid: &AuthorizerAppId,
        code: &AuthorizerCode,
    ) -> Result<Authorization, WeChatError> {
        let inner = &self.inner;
        let delays = &inner.settings.query_auth_retry_delays;
        let mut attempt = 0;
        loop {
            let result = inner
                .tokens
                .with_token(|token| async move {
                    inner
                        .client
                        .query_auth(&inner.component_appid, &token, code)
                        .await
                })
                .await;
            let error = match result {
                Ok(authorization) if &authorization.authorizer_appid == appid => {
                    return Ok(authorization);
                }
                Ok(_) => {
                    return Err(WeChatError::BadReply {
                        endpoint: super::client::endpoint::QUERY_AUTH,
                        reason: "the grant names another account than the push".to_owned(),
                    });
                }
                Err(e) => e,
            };
            let retryable = !matches!(
                error.class(),
                ErrorClass::Configuration | ErrorClass::Reauthorize
            );
            let Some(delay) = delays.get(attempt).filter(|_| retryable) else {
                return Err(error);
            };
            attempt += 1;
            tracing::info!(%appid, error = %error, attempt, "api_query_auth failed; retrying");
            tokio::time::sleep(*delay).await;
        }
    }

    /// `api_get_authorizer_info` (with one token refresh).
    async fn details(&self, appid: &AuthorizerAppId) -> Result<AuthorizerDetails, WeChatError> {
        let inner = &self.inner;
        inner
            .tokens
            .with_token(|token| async move {
                inner
                    .client
                    .authorizer_info(&inner.component_appid, &token, appid)
                    .await
            })
            .await
    }

    /// One reconciliation round (see the module documentation).
    ///
    /// # Errors
    /// The list cannot be fetched (no component token yet, WeChat unreachable): nothing changed.
    pub(crate) async fn reconcile(&self) -> Result<ReconcileReport, WeChatError> {
        let inner = &self.inner;
        let tenants = &inner.tenants;
        // Lookups start now: an event arriving during the round wins over its results.
        let mut candidates: BTreeSet<AuthorizerAppId> =
            tenants.list().into_iter().map(|(appid, _)| appid).collect();
        let epochs: HashMap<AuthorizerAppId, Epoch> = candidates
            .iter()
            .map(|appid| (appid.clone(), tenants.begin(appid)))
            .collect();
        let listed = self.list_all().await?;
        let mut report = ReconcileReport {
            listed: listed.len(),
            ..ReconcileReport::default()
        };
        candidates.extend(listed.iter().filter(|a| tenants.accepts(a)).cloned());
        for appid in &candidates {
            let epoch = epochs
                .get(appid)
                .copied()
                .unwrap_or_else(|| tenants.begin(appid));
            if !listed.contains(appid) {
                if tenants.status(appid) != TenantStatus::Revoked {
                    tracing::warn!(%appid, "WeChat no longer lists the account as an authorizer: revoked");
                    let record = self.revoked_record(appid);
                    if tenants.apply_if_current(appid, epoch, record) {
                        report.revoked += 1;
                        self.persist_logged(appid).await;
                    }
                }
                continue;
            }
            report.checked += 1;
            match self.details(appid).await {
                Ok(details) => {
                    let record = self.record_from(appid, &details.authorization, Some(&details));
                    self.record(appid, epoch, record).await;
                }
                Err(e) if e.code() == Some(61003) => {
                    // Listed a moment ago, not authorized now: a revocation crossed the round.
                    let record = self.revoked_record(appid);
                    if tenants.apply_if_current(appid, epoch, record) {
                        report.revoked += 1;
                        self.persist_logged(appid).await;
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(%appid, error = %e, "cannot look up a tenant during reconciliation; it keeps its state until the next round");
                }
            }
        }
        tracing::info!(
            listed = report.listed,
            checked = report.checked,
            revoked = report.revoked,
            failed = report.failed,
            "tenant reconciliation done"
        );
        Ok(report)
    }

    /// Every appid of `api_get_authorizer_list`, page by page (bounded).
    async fn list_all(&self) -> Result<BTreeSet<AuthorizerAppId>, WeChatError> {
        let inner = &self.inner;
        let mut listed = BTreeSet::new();
        let mut offset: u64 = 0;
        for _ in 0..MAX_LIST_PAGES {
            let page = inner
                .tokens
                .with_token(|token| async move {
                    inner
                        .client
                        .authorizer_list(&inner.component_appid, &token, offset, MAX_LIST_COUNT)
                        .await
                })
                .await?;
            let got = page.entries.len() as u64;
            listed.extend(page.entries.into_iter().map(|e| e.appid));
            offset += got;
            if got == 0 || offset >= page.total_count {
                return Ok(listed);
            }
        }
        tracing::warn!(
            pages = MAX_LIST_PAGES,
            "api_get_authorizer_list did not end within the page bound"
        );
        Ok(listed)
    }

    /// Records a lookup's outcome (unless stale) and persists it when it changed something.
    async fn record(&self, appid: &AuthorizerAppId, epoch: Epoch, record: TenantRecord) {
        let status = record.status;
        if self.inner.tenants.apply_if_current(appid, epoch, record) {
            tracing::info!(%appid, %status, "learned the tenant's permission sets");
            self.persist_logged(appid).await;
        }
    }

    /// [`persist`](Self::persist), logging a failure (the next change or round writes again).
    async fn persist_logged(&self, appid: &AuthorizerAppId) {
        if let Err(e) = self.persist(appid).await {
            tracing::warn!(%appid, error = %e, "cannot persist the tenant record");
        }
    }

    /// Writes the record held in memory for `appid` to the store.
    async fn persist(&self, appid: &AuthorizerAppId) -> Result<(), WeChatError> {
        let inner = &self.inner;
        let _ordered = inner.persist_lock.lock().await;
        let Some(record) = inner.tenants.record(appid) else {
            return Ok(());
        };
        inner
            .store
            .save_tenant(&inner.component_appid, appid, &record)
            .await?;
        Ok(())
    }

    /// The record after a revocation: no permission sets, the account details kept.
    fn revoked_record(&self, appid: &AuthorizerAppId) -> TenantRecord {
        let mut record = self
            .inner
            .tenants
            .record(appid)
            .unwrap_or_else(|| TenantRecord::with_status(TenantStatus::Revoked, 0));
        record.status = TenantStatus::Revoked;
        record.func_ids.clear();
        record.updated_at = now_unix();
        record
    }

    /// The record after learning a grant (and, from `api_get_authorizer_info`, the details);
    /// details not learned now are kept from before.
    fn record_from(
        &self,
        appid: &AuthorizerAppId,
        authorization: &Authorization,
        details: Option<&AuthorizerDetails>,
    ) -> TenantRecord {
        let mut record = self
            .inner
            .tenants
            .record(appid)
            .unwrap_or_else(|| TenantRecord::with_status(TenantStatus::Unknown, 0));
        record.status = TenantStatus::from_func_ids(&authorization.func_ids);
        record.func_ids.clone_from(&authorization.func_ids);
        record.updated_at = now_unix();
        if let Some(details) = details {
            record.nick_name.clone_from(&details.nick_name);
            record.service_type = details.service_type;
            record.verify_type = details.verify_type;
            record.account_status = details.account_status;
        }
        record
    }

    /// Starts the store sync and the reconciliation loops. They stop when every clone of this
    /// synchroniser is dropped, or when the handle is aborted.
    pub(crate) fn spawn(&self) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::join!(sync_loop(weak.clone()), reconcile_loop(weak));
        })
    }
}

/// Reads the store at once, then every `store_sync_interval` (retrying a failed first read
/// after `reconcile_retry`).
async fn sync_loop(weak: Weak<Inner>) {
    let mut loaded_once = false;
    loop {
        let wait = {
            let Some(inner) = weak.upgrade() else { return };
            let sync = AuthorizerSync { inner };
            let settings = &sync.inner.settings;
            match sync.load_from_store().await {
                Ok(changed) => {
                    if changed > 0 {
                        tracing::debug!(changed, "adopted tenant records from the store");
                    }
                    loaded_once = true;
                    settings.store_sync_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the tenant records from the store");
                    Some(if loaded_once {
                        settings
                            .store_sync_interval
                            .unwrap_or(settings.reconcile_retry)
                    } else {
                        settings.reconcile_retry
                    })
                }
            }
        };
        let Some(wait) = wait else { return };
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
}

/// Reconciles at once (retrying every `reconcile_retry` until it works, e.g. until a component
/// token exists), then every `reconcile_interval`; nothing when that is `None`.
async fn reconcile_loop(weak: Weak<Inner>) {
    loop {
        let wait = {
            let Some(inner) = weak.upgrade() else { return };
            let sync = AuthorizerSync { inner };
            let settings = sync.inner.settings.clone();
            let Some(interval) = settings.reconcile_interval else {
                return;
            };
            match sync.reconcile().await {
                Ok(_) => interval,
                Err(e) => {
                    tracing::warn!(error = %e, class = ?e.class(), "tenant reconciliation failed; retrying later");
                    settings.reconcile_retry.min(interval)
                }
            }
        };
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
}
