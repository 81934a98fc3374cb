//! The `component_access_token` manager (docs/wechat-protocol.md §5.2, §6, §14, §17.8–§17.9).
//!
//! Rules it implements:
//! - **single flight**: however many tasks need a token at once, WeChat is asked once (a tokio
//!   mutex with a double check; across instances the store's refresh lock hook). The fetch runs
//!   in its own task, so a caller that stops waiting (its login deadline ran out) never cancels
//!   the fetch the other callers wait on;
//! - **early refresh**: a background task ([`ComponentTokenManager::spawn_refresher`]) fetches a
//!   new token `refresh_margin` before expiry while requests keep using the still-valid one, so
//!   no request waits;
//! - **restart survival**: the ticket and the token are loaded from the [`PlatformStore`] and
//!   every new one is saved there;
//! - **compare-and-invalidate** on `40001`/`42001`/`40014`: only the token that failed is thrown
//!   away, never a newer one another task already fetched;
//! - **no retry storms**: transient failures (`-1`, timeouts, 5xx) are retried at most
//!   `max_retries` times inside one fetch; quota (`45009`), configuration and ticket failures
//!   are remembered for `failure_cooldown` and answered from memory.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::Notify, task::JoinHandle};

use super::{
    AppSecret, ComponentAccessToken, ComponentAppId,
    client::WeChatClient,
    error::{ErrorClass, WeChatError},
    persist::{PlatformStore, StoredTicket, StoredToken},
};

/// Lifetime assumed for a token loaded from the store (its fetch time is not stored); WeChat's
/// tokens live 7200 s.
const NOMINAL_LIFETIME: Duration = Duration::from_secs(7200);

/// While no ticket is known, [`ComponentTokenManager::ensure_ticket`] asks the store (another
/// instance may have received the push) at most this often, so a flood of login starts is not
/// a flood of store reads.
const TICKET_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the component token manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    /// Refresh this long before expiry (default 15 min; WeChat suggests ~10 min). Capped at half
    /// the token's lifetime so that short-lived tokens do not cause a refresh loop.
    pub refresh_margin: Duration,
    /// Pause before the first retry of a transient failure inside one fetch; doubles per retry
    /// (default 1 s).
    pub retry_backoff: Duration,
    /// Retries of a transient failure (`-1`, `45011`, timeout, 5xx) inside one fetch (default 2).
    pub max_retries: u32,
    /// How long a quota, configuration or ticket failure is remembered and answered without
    /// asking WeChat again (default 60 s). A new ticket push clears a remembered ticket failure.
    pub failure_cooldown: Duration,
    /// Shortest time between two early refreshes, and how long a transient failure (after its
    /// retries) is remembered (default 10 s).
    pub min_refetch_interval: Duration,
    /// How long the cross-instance refresh lock is held at most, and how long a caller without
    /// any valid token waits for another instance's refresh (default 30 s).
    pub refresh_lock_ttl: Duration,
    /// How often the background refresher looks again when it cannot do anything yet (no
    /// ticket, store down); a ticket push wakes it at once (default 30 s).
    pub idle_poll: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(15 * 60),
            retry_backoff: Duration::from_secs(1),
            max_retries: 2,
            failure_cooldown: Duration::from_secs(60),
            min_refetch_interval: Duration::from_secs(10),
            refresh_lock_ttl: Duration::from_secs(30),
            idle_poll: Duration::from_secs(30),
        }
    }
}

/// What the manager currently holds (for readiness checks and the health endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformStatus {
    /// A `component_verify_ticket` is known.
    pub ticket_present: bool,
    /// A non-expired `component_access_token` is known.
    pub token_present: bool,
    /// Remaining lifetime of that token.
    pub token_expires_in: Option<Duration>,
}

/// Fetches, caches, persists and refreshes the platform's `component_access_token`.
///
/// Cheap to clone (one `Arc`); all clones share the cache and the single-flight lock.
#[derive(Clone)]
pub struct ComponentTokenManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ComponentTokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentTokenManager")
            .field("appid", &self.inner.appid)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

struct Inner {
    appid: ComponentAppId,
    secret: AppSecret,
    client: WeChatClient,
    store: Arc<dyn PlatformStore>,
    settings: TokenSettings,
    state: Mutex<State>,
    /// Single flight: held for the whole of one fetch.
    fetch_lock: tokio::sync::Mutex<()>,
    /// The store has been read once.
    loaded: tokio::sync::OnceCell<()>,
    /// Wakes the background refresher (new ticket, invalidation).
    wake: Arc<Notify>,
    /// An early refresh spawned from `token()` is running.
    background_fetch: AtomicBool,
}

#[derive(Default)]
struct State {
    token: Option<MemToken>,
    ticket: Option<StoredTicket>,
    /// The last token WeChat rejected: never adopted again from the store.
    rejected: Option<ComponentAccessToken>,
    /// A failure answered from memory until `until`.
    failure: Option<RememberedFailure>,
    /// When the last successful fetch finished.
    last_fetch: Option<Instant>,
    /// When `ensure_ticket` last read the store for a ticket.
    last_ticket_probe: Option<Instant>,
}

#[derive(Clone)]
struct MemToken {
    token: ComponentAccessToken,
    expires_at: SystemTime,
    /// The refresh margin for this token (the setting capped at half its lifetime).
    margin: Duration,
}

impl MemToken {
    fn is_valid(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
    fn is_fresh(&self, now: SystemTime) -> bool {
        now + self.margin < self.expires_at
    }
    /// Time until this token enters its refresh margin (zero if it already has).
    fn refresh_due_in(&self, now: SystemTime) -> Duration {
        self.expires_at
            .checked_sub(self.margin)
            .and_then(|due| due.duration_since(now).ok())
            .unwrap_or(Duration::ZERO)
    }
}

struct RememberedFailure {
    error: WeChatError,
    until: Instant,
}

/// What a fetch must end with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Need {
    /// Any non-expired token (a caller is waiting).
    Valid,
    /// A token outside its refresh margin (early refresh; nobody waits).
    Fresh,
}

impl ComponentTokenManager {
    /// A manager for `appid`. Nothing is read or fetched until first use.
    pub fn new(
        appid: ComponentAppId,
        secret: AppSecret,
        client: WeChatClient,
        store: Arc<dyn PlatformStore>,
        settings: TokenSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                appid,
                secret,
                client,
                store,
                settings,
                state: Mutex::new(State::default()),
                fetch_lock: tokio::sync::Mutex::new(()),
                loaded: tokio::sync::OnceCell::new(),
                wake: Arc::new(Notify::new()),
                background_fetch: AtomicBool::new(false),
            }),
        }
    }

    /// The component appid this manager serves.
    pub fn appid(&self) -> &ComponentAppId {
        &self.inner.appid
    }

    /// Reads the persisted ticket and token (once; later calls return at once).
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the store cannot be read (retried on the next call).
    pub async fn load(&self) -> Result<(), WeChatError> {
        let inner = &self.inner;
        inner
            .loaded
            .get_or_try_init(|| async {
                let ticket = inner.store.load_ticket(&inner.appid).await?;
                let token = inner.store.load_token(&inner.appid).await?;
                let mut state = self.state();
                if let Some(ticket) = ticket {
                    merge_ticket(&mut state, ticket);
                }
                if let Some(stored) = token {
                    self.adopt_stored(&mut state, stored);
                }
                tracing::debug!(
                    appid = %inner.appid,
                    ticket = state.ticket.is_some(),
                    token = state.token.is_some(),
                    "loaded persisted platform credentials"
                );
                Ok::<(), WeChatError>(())
            })
            .await?;
        Ok(())
    }

    /// A valid `component_access_token`.
    ///
    /// Answered from memory while the token is valid; inside the refresh margin the old token is
    /// still answered and an early refresh is started in the background. Without a valid token
    /// the caller waits for the one single-flight fetch.
    ///
    /// # Errors
    /// [`WeChatError::NoTicket`] before the first ticket push; any WeChat error of the fetch
    /// (possibly remembered from a recent failure, see [`TokenSettings::failure_cooldown`]).
    pub async fn token(&self) -> Result<ComponentAccessToken, WeChatError> {
        self.load().await?;
        let now = SystemTime::now();
        let current = self.state().token.clone();
        if let Some(t) = current.filter(|t| t.is_valid(now)) {
            if !t.is_fresh(now) {
                self.refresh_in_background();
            }
            return Ok(t.token);
        }
        // The single-flight fetch runs in its own task: a caller that gives up waiting (its
        // login deadline) drops only its wait, never the fetch other callers rely on.
        let this = self.clone();
        tokio::spawn(async move { this.fetch(Need::Valid).await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(appid = %self.inner.appid, error = %e, "the component_access_token fetch task failed");
                Err(WeChatError::BadReply {
                    endpoint: "api_component_token",
                    reason: "the fetch task failed".to_owned(),
                })
            })
    }

    /// Runs one WeChat call with the current token; if WeChat rejects the token
    /// (`40001`/`42001`/`40014`), exactly that token is invalidated, a new one is fetched
    /// (single flight) and the call is made once more with it.
    ///
    /// # Errors
    /// The call's error, or the token fetch's.
    pub async fn with_token<T, F, Fut>(&self, mut call: F) -> Result<T, WeChatError>
    where
        F: FnMut(ComponentAccessToken) -> Fut,
        Fut: Future<Output = Result<T, WeChatError>>,
    {
        let token = self.token().await?;
        match call(token.clone()).await {
            Err(e) if e.class() == ErrorClass::RefreshToken => {
                tracing::info!(
                    appid = %self.inner.appid,
                    code = e.code(),
                    "component_access_token rejected; fetching a new one and retrying once"
                );
                if let Err(e) = self.invalidate(&token).await {
                    // Memory is already updated; the store catches up on the next save.
                    tracing::warn!(appid = %self.inner.appid, error = %e, "cannot invalidate the stored component_access_token");
                }
                let fresh = self.token().await?;
                call(fresh).await
            }
            other => other,
        }
    }

    /// `Ok` when a login can complete as far as the platform is concerned: a
    /// `component_verify_ticket` is known (in memory, else in the store, read at most once per
    /// second) or a valid token is held.
    ///
    /// # Errors
    /// [`WeChatError::NoTicket`] when neither is known.
    pub async fn ensure_ticket(&self) -> Result<(), WeChatError> {
        if self.holds_ticket_or_token() {
            return Ok(());
        }
        if let Err(e) = self.load().await {
            tracing::warn!(appid = %self.inner.appid, error = %e, "cannot read the platform store");
        }
        let probe = {
            let mut state = self.state();
            let due = state
                .last_ticket_probe
                .is_none_or(|at| at.elapsed() >= TICKET_PROBE_INTERVAL);
            if due {
                state.last_ticket_probe = Some(Instant::now());
            }
            due
        };
        if probe {
            self.newest_ticket().await;
        }
        if self.holds_ticket_or_token() {
            Ok(())
        } else {
            Err(WeChatError::NoTicket)
        }
    }

    fn holds_ticket_or_token(&self) -> bool {
        let status = self.status();
        status.ticket_present || status.token_present
    }

    /// Forgets `failed` after WeChat rejected it (`40001`, `42001`, `40014`) — only if it is
    /// still the current token, in memory and in the store, so a newer token fetched meanwhile
    /// survives. The next [`token`](Self::token) call fetches a new one (single flight).
    ///
    /// Returns whether the in-memory token was dropped.
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the store cannot be updated (memory is updated anyway).
    pub async fn invalidate(&self, failed: &ComponentAccessToken) -> Result<bool, WeChatError> {
        let dropped = {
            let mut state = self.state();
            state.rejected = Some(failed.clone());
            if state.token.as_ref().is_some_and(|t| &t.token == failed) {
                state.token = None;
                true
            } else {
                false
            }
        };
        if dropped {
            tracing::info!(appid = %self.inner.appid, "component_access_token rejected by WeChat; invalidated");
        }
        self.inner
            .store
            .invalidate_token_if(&self.inner.appid, failed)
            .await?;
        Ok(dropped)
    }

    /// Records a newly pushed `component_verify_ticket`: persists it (before the push is
    /// answered), keeps it in memory, clears a remembered ticket failure and wakes the
    /// refresher. A ticket older than the one held (by `CreateTime`) is ignored.
    ///
    /// # Errors
    /// [`WeChatError::Store`] if the ticket cannot be persisted (the push should then not be
    /// acknowledged, so WeChat's next push is not lost on restart).
    pub async fn set_ticket(&self, ticket: StoredTicket) -> Result<(), WeChatError> {
        self.load().await?;
        let newer = {
            let state = self.state();
            state
                .ticket
                .as_ref()
                .is_none_or(|old| old.create_time <= ticket.create_time)
        };
        if !newer {
            tracing::debug!(appid = %self.inner.appid, "ignoring a ticket push older than the stored ticket");
            return Ok(());
        }
        self.inner
            .store
            .save_ticket(&self.inner.appid, &ticket)
            .await?;
        {
            let mut state = self.state();
            merge_ticket(&mut state, ticket);
            if state
                .failure
                .as_ref()
                .is_some_and(|f| matches!(f.error.class(), ErrorClass::Ticket))
            {
                state.failure = None;
            }
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// What the manager holds right now (memory only; call [`load`](Self::load) first to
    /// include persisted values).
    pub fn status(&self) -> PlatformStatus {
        let now = SystemTime::now();
        let state = self.state();
        let token = state.token.as_ref().filter(|t| t.is_valid(now));
        PlatformStatus {
            ticket_present: state.ticket.is_some(),
            token_present: token.is_some(),
            token_expires_in: token.and_then(|t| t.expires_at.duration_since(now).ok()),
        }
    }

    /// Starts the background refresher: it fetches a token as soon as a ticket is known and
    /// refreshes it `refresh_margin` before expiry, so requests never wait for WeChat. It stops
    /// when every clone of this manager is dropped, or when the handle is aborted.
    pub fn spawn_refresher(&self) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.wake);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(inner) = weak.upgrade() else { return };
                    ComponentTokenManager { inner }.refresher_step().await
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                }
            }
        })
    }

    /// One round of the background refresher; returns how long to sleep.
    async fn refresher_step(&self) -> Duration {
        let settings = &self.inner.settings;
        if let Err(e) = self.load().await {
            tracing::warn!(appid = %self.inner.appid, error = %e, "cannot read the platform store");
            return settings.idle_poll.min(settings.min_refetch_interval);
        }
        let now = SystemTime::now();
        let (token, has_ticket, hold) = {
            let state = self.state();
            (
                state.token.clone(),
                state.ticket.is_some(),
                state
                    .failure
                    .as_ref()
                    .and_then(|f| f.until.checked_duration_since(Instant::now())),
            )
        };
        if let Some(t) = token.as_ref().filter(|t| t.is_fresh(now)) {
            return t.refresh_due_in(now);
        }
        if !has_ticket {
            return settings.idle_poll;
        }
        if let Some(hold) = hold {
            return hold;
        }
        if let Some(wait) = self.refetch_too_soon() {
            return wait;
        }
        match self.fetch(Need::Fresh).await {
            // Look again at once when the token is fresh now (to sleep until its margin);
            // otherwise (another instance holds the lock) pause instead of spinning.
            Ok(_) if self.satisfying(Need::Fresh).is_some() => Duration::ZERO,
            Ok(_) => settings.min_refetch_interval.max(Duration::from_secs(1)),
            Err(e) => {
                tracing::warn!(
                    appid = %self.inner.appid,
                    error = %e,
                    class = ?e.class(),
                    "background component_access_token refresh failed"
                );
                settings.min_refetch_interval.max(settings.retry_backoff)
            }
        }
    }

    /// Starts one early refresh in the background unless one is already running or a failure
    /// is being held.
    fn refresh_in_background(&self) {
        if self.refetch_too_soon().is_some() || self.state().failure_held().is_some() {
            return;
        }
        if self
            .inner
            .background_fetch
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.fetch(Need::Fresh).await {
                tracing::warn!(appid = %this.inner.appid, error = %e, "early component_access_token refresh failed");
            }
            this.inner.background_fetch.store(false, Ordering::Release);
        });
    }

    /// `Some(wait)` if the last successful fetch was less than `min_refetch_interval` ago.
    fn refetch_too_soon(&self) -> Option<Duration> {
        let last = self.state().last_fetch?;
        self.inner
            .settings
            .min_refetch_interval
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// The single-flight fetch.
    async fn fetch(&self, need: Need) -> Result<ComponentAccessToken, WeChatError> {
        let inner = &self.inner;
        let _flight = inner.fetch_lock.lock().await;

        // Someone else may have fetched while we waited for the lock.
        if let Some(t) = self.satisfying(need) {
            return Ok(t);
        }
        if let Some(error) = self.state().failure_held() {
            return Err(error);
        }
        // Another instance may have stored a newer token.
        self.adopt_from_store().await;
        if let Some(t) = self.satisfying(need) {
            return Ok(t);
        }

        // A lock backend that fails must not stop logins: the in-process single flight still
        // holds, so go ahead (at worst two instances fetch once each).
        let locked = match inner
            .store
            .try_lock_refresh(&inner.appid, inner.settings.refresh_lock_ttl)
            .await
        {
            Ok(locked) => locked,
            Err(e) => {
                tracing::warn!(appid = %inner.appid, error = %e, "cannot take the refresh lock; fetching without it");
                true
            }
        };
        if !locked {
            if let Some(t) = self.wait_for_other_instance(need).await {
                return Ok(t);
            }
            tracing::warn!(appid = %inner.appid, "another instance holds the refresh lock but stored no token; fetching anyway");
        }
        // Double-checked across instances: another instance may have fetched, stored and
        // released the lock between our store read and our lock; fetching again would
        // invalidate the token it just shared.
        let result = if locked {
            self.adopt_from_store().await;
            match self.satisfying(need) {
                Some(t) => Ok(t),
                None => self.fetch_from_wechat().await,
            }
        } else {
            self.fetch_from_wechat().await
        };
        if locked {
            if let Err(e) = inner.store.unlock_refresh(&inner.appid).await {
                tracing::warn!(appid = %inner.appid, error = %e, "cannot release the refresh lock");
            }
        }
        result
    }

    /// Asks WeChat (bounded retries on transient failures), stores and persists the token.
    async fn fetch_from_wechat(&self) -> Result<ComponentAccessToken, WeChatError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let ticket = self.newest_ticket().await.ok_or(WeChatError::NoTicket)?;

        let mut attempt: u32 = 0;
        let outcome = loop {
            let sent_at = SystemTime::now();
            match inner
                .client
                .component_token(&inner.appid, &inner.secret, &ticket.ticket)
                .await
            {
                Ok((token, lifetime)) => break Ok((token, lifetime, sent_at)),
                Err(e) if e.class() == ErrorClass::Retry && attempt < settings.max_retries => {
                    let pause = settings.retry_backoff.saturating_mul(1 << attempt.min(16));
                    attempt += 1;
                    tracing::info!(appid = %inner.appid, error = %e, attempt, "component_access_token fetch failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => break Err(e),
            }
        };

        match outcome {
            Ok((token, lifetime, sent_at)) => {
                let mem = MemToken {
                    token: token.clone(),
                    // Count the lifetime from when we asked: errs on the early side.
                    expires_at: sent_at + lifetime,
                    margin: settings.refresh_margin.min(lifetime / 2),
                };
                let stored = StoredToken {
                    token: token.clone(),
                    expires_at: unix_seconds(mem.expires_at),
                };
                {
                    let mut state = self.state();
                    state.token = Some(mem);
                    state.failure = None;
                    state.last_fetch = Some(Instant::now());
                }
                tracing::info!(target: "audit", event = "component_token_refresh", appid = %inner.appid, expires_in = lifetime.as_secs(), "fetched a new component_access_token");
                crate::metrics::component_token_refresh(Ok(stored.expires_at));
                if let Err(e) = inner.store.save_token(&inner.appid, &stored).await {
                    // The token works; only a restart would have to fetch again.
                    tracing::warn!(appid = %inner.appid, error = %e, "cannot persist the component_access_token");
                }
                Ok(token)
            }
            Err(error) => {
                let hold = match error.class() {
                    ErrorClass::Retry => settings.min_refetch_interval,
                    _ => settings.failure_cooldown,
                };
                tracing::warn!(
                    appid = %inner.appid,
                    error = %error,
                    class = ?error.class(),
                    hold_secs = hold.as_secs_f32(),
                    "cannot fetch a component_access_token"
                );
                crate::metrics::component_token_refresh(Err(()));
                self.state().failure = Some(RememberedFailure {
                    error: error.clone(),
                    until: Instant::now() + hold,
                });
                Err(error)
            }
        }
    }

    /// Polls the store while another instance refreshes; bounded by `refresh_lock_ttl`.
    async fn wait_for_other_instance(&self, need: Need) -> Option<ComponentAccessToken> {
        // An early refresh does not wait: the current token is still valid.
        if need == Need::Fresh {
            return self.satisfying(Need::Valid);
        }
        let step = Duration::from_millis(250);
        let rounds = (self.inner.settings.refresh_lock_ttl.as_millis() / step.as_millis()).max(1);
        for _ in 0..rounds {
            tokio::time::sleep(step).await;
            self.adopt_from_store().await;
            if let Some(t) = self.satisfying(need) {
                return Some(t);
            }
        }
        None
    }

    /// The current token if it satisfies `need`.
    fn satisfying(&self, need: Need) -> Option<ComponentAccessToken> {
        let now = SystemTime::now();
        let state = self.state();
        let t = state.token.as_ref()?;
        let ok = match need {
            Need::Valid => t.is_valid(now),
            Need::Fresh => t.is_fresh(now),
        };
        ok.then(|| t.token.clone())
    }

    /// Re-reads the stored token and adopts it if it is valid, not rejected and lives longer
    /// than ours (another instance refreshed).
    async fn adopt_from_store(&self) {
        match self.inner.store.load_token(&self.inner.appid).await {
            Ok(Some(stored)) => {
                let mut state = self.state();
                self.adopt_stored(&mut state, stored);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(appid = %self.inner.appid, error = %e, "cannot read the stored component_access_token");
            }
        }
    }

    fn adopt_stored(&self, state: &mut State, stored: StoredToken) {
        if state.rejected.as_ref() == Some(&stored.token) {
            return;
        }
        let expires_at = from_unix_seconds(stored.expires_at);
        if expires_at <= SystemTime::now() {
            return;
        }
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.expires_at >= expires_at || t.token == stored.token)
        {
            return;
        }
        crate::metrics::component_token_expiry(stored.expires_at);
        state.token = Some(MemToken {
            token: stored.token,
            expires_at,
            margin: self.inner.settings.refresh_margin.min(NOMINAL_LIFETIME / 2),
        });
    }

    /// The newest ticket of memory and store (another instance may have received the push).
    async fn newest_ticket(&self) -> Option<StoredTicket> {
        match self.inner.store.load_ticket(&self.inner.appid).await {
            Ok(Some(stored)) => merge_ticket(&mut self.state(), stored),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(appid = %self.inner.appid, error = %e, "cannot read the stored ticket; using the one in memory");
            }
        }
        self.state().ticket.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a plain assignment; a poisoned lock is consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// The remembered failure, if it is still being held.
    fn failure_held(&self) -> Option<WeChatError> {
        self.failure
            .as_ref()
            .filter(|f| Instant::now() < f.until)
            .map(|f| f.error.clone())
    }
}

/// Keeps the newer of the held ticket and `ticket` (by `CreateTime`, ties go to the new one).
fn merge_ticket(state: &mut State, ticket: StoredTicket) {
    if state
        .ticket
        .as_ref()
        .is_none_or(|old| old.create_time <= ticket.create_time)
    {
        state.ticket = Some(ticket);
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_unix_seconds(secs: i64) -> SystemTime {
    u64::try_from(secs)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or(UNIX_EPOCH)
}

/// The current time as Unix seconds (for [`StoredTicket::received_at`]).
pub fn now_unix() -> i64 {
    i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        net::SocketAddr,
        sync::atomic::{AtomicU64, Ordering},
    };

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response, body::Incoming, service::service_fn};
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::wechat::{
        VerifyTicket,
        client::ClientSettings,
        persist::{MemoryPlatformStore, StoredToken},
    };

    /// A fake `api_component_token` endpoint answering scripted bodies (then a default one).
    struct FakeWeChat {
        addr: SocketAddr,
        calls: Arc<AtomicU64>,
        script: Arc<Mutex<VecDeque<String>>>,
        task: JoinHandle<()>,
    }

    impl FakeWeChat {
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let calls = Arc::new(AtomicU64::new(0));
            let script: Arc<Mutex<VecDeque<String>>> = Arc::default();
            let (c, s) = (Arc::clone(&calls), Arc::clone(&script));
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (c, s) = (Arc::clone(&c), Arc::clone(&s));
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req: Request<Incoming>| {
                            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                            let body = s.lock().unwrap().pop_front().unwrap_or_else(|| {
                                format!(
                                    r#"{{"component_access_token":"tok-{n}","expires_in":7200}}"#
                                )
                            });
                            async move {
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from(body),
                                )))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Self {
                addr,
                calls,
                script,
                task,
            }
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
        fn push(&self, body: &str) {
            self.script.lock().unwrap().push_back(body.to_owned());
        }
    }

    impl Drop for FakeWeChat {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn settings() -> TokenSettings {
        TokenSettings {
            retry_backoff: Duration::from_millis(10),
            min_refetch_interval: Duration::from_millis(200),
            ..TokenSettings::default()
        }
    }

    fn manager(
        fake: &FakeWeChat,
        store: Arc<dyn PlatformStore>,
        settings: TokenSettings,
    ) -> ComponentTokenManager {
        let client = WeChatClient::new(ClientSettings {
            api_base: url::Url::parse(&format!("http://{}/", fake.addr)).unwrap(),
            ..ClientSettings::default()
        })
        .unwrap();
        ComponentTokenManager::new(
            ComponentAppId::new("wx0123456789abcdef"),
            AppSecret::new("secret"),
            client,
            store,
            settings,
        )
    }

    fn ticket(create_time: i64) -> StoredTicket {
        StoredTicket {
            ticket: VerifyTicket::new(format!("ticket@@@{create_time}")),
            create_time,
            received_at: create_time,
        }
    }

    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn no_ticket_means_no_ticket_error_and_no_call() {
        let fake = FakeWeChat::start().await;
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        let e = bounded(m.token()).await.unwrap_err();
        assert!(matches!(e, WeChatError::NoTicket), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Ticket);
        assert_eq!(fake.calls(), 0);
        assert!(!m.status().ticket_present);
    }

    #[tokio::test]
    async fn ensure_ticket_sees_a_ticket_another_instance_stored() {
        let fake = FakeWeChat::start().await;
        let store = Arc::new(MemoryPlatformStore::new());
        let m = manager(&fake, store.clone(), settings());
        let e = bounded(m.ensure_ticket()).await.unwrap_err();
        assert!(matches!(e, WeChatError::NoTicket), "{e:?}");
        // Another instance receives the push and stores it; this one finds it in the store (at
        // most one store read per probe interval).
        let appid = ComponentAppId::new("wx0123456789abcdef");
        store.save_ticket(&appid, &ticket(7)).await.unwrap();
        tokio::time::sleep(TICKET_PROBE_INTERVAL).await;
        bounded(m.ensure_ticket()).await.unwrap();
        assert!(m.status().ticket_present);
        assert_eq!(fake.calls(), 0, "no WeChat call to check");
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_does_not_cancel_the_shared_fetch() {
        let fake = FakeWeChat::start().await;
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        // Poll the caller once (the fetch starts), then drop it, as a login deadline would.
        let gave_up = futures_util::FutureExt::now_or_never(m.token());
        assert!(
            gave_up.is_none(),
            "the fetch cannot finish without yielding"
        );
        // The fetch goes on in its own task and its token serves the next caller.
        for _ in 0..400 {
            if m.status().token_present {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(m.status().token_present, "the abandoned fetch completed");
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("tok-1")
        );
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_it_is_persisted() {
        let fake = FakeWeChat::start().await;
        let store = Arc::new(MemoryPlatformStore::new());
        let m = manager(&fake, store.clone(), settings());
        bounded(m.set_ticket(ticket(100))).await.unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.token().await })
            })
            .collect();
        for t in tasks {
            let token = bounded(t).await.unwrap().unwrap();
            assert_eq!(token, ComponentAccessToken::new("tok-1"));
        }
        assert_eq!(fake.calls(), 1);
        let appid = ComponentAppId::new("wx0123456789abcdef");
        let stored = store.load_token(&appid).await.unwrap().unwrap();
        assert_eq!(stored.token, ComponentAccessToken::new("tok-1"));
        assert!(stored.expires_at > now_unix() + 7000);
        assert_eq!(store.load_ticket(&appid).await.unwrap(), Some(ticket(100)));
        let status = m.status();
        assert!(status.ticket_present && status.token_present);
        assert!(status.token_expires_in.unwrap() > Duration::from_secs(7000));
    }

    #[tokio::test]
    async fn a_persisted_token_is_used_without_asking_wechat() {
        let fake = FakeWeChat::start().await;
        let store = Arc::new(MemoryPlatformStore::new());
        let appid = ComponentAppId::new("wx0123456789abcdef");
        store.save_ticket(&appid, &ticket(5)).await.unwrap();
        store
            .save_token(
                &appid,
                &StoredToken {
                    token: ComponentAccessToken::new("persisted"),
                    expires_at: now_unix() + 3600,
                },
            )
            .await
            .unwrap();
        let m = manager(&fake, store.clone(), settings());
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("persisted")
        );
        assert_eq!(fake.calls(), 0);

        // An expired persisted token is not used.
        store
            .save_token(
                &appid,
                &StoredToken {
                    token: ComponentAccessToken::new("old"),
                    expires_at: now_unix() - 1,
                },
            )
            .await
            .unwrap();
        let m = manager(&fake, store, settings());
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("tok-1")
        );
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn quota_exhausted_is_remembered_not_retried() {
        let fake = FakeWeChat::start().await;
        fake.push(r#"{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 1-2"}"#);
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        for _ in 0..20 {
            let e = bounded(m.token()).await.unwrap_err();
            assert_eq!(e.class(), ErrorClass::Quota, "{e:?}");
            assert_eq!(e.code(), Some(45009));
        }
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let fake = FakeWeChat::start().await;
        fake.push(r#"{"errcode":-1,"errmsg":"system error"}"#);
        fake.push("<html>busy</html>");
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("tok-3")
        );
        assert_eq!(fake.calls(), 3);

        let fake = FakeWeChat::start().await;
        for _ in 0..10 {
            fake.push(r#"{"errcode":-1,"errmsg":"system error"}"#);
        }
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        let e = bounded(m.token()).await.unwrap_err();
        assert_eq!(e.code(), Some(-1));
        assert_eq!(fake.calls(), 3, "one call plus max_retries (2)");
        // remembered for min_refetch_interval: no new calls right away
        let _ = bounded(m.token()).await.unwrap_err();
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn invalidate_compares_before_dropping() {
        let fake = FakeWeChat::start().await;
        let store = Arc::new(MemoryPlatformStore::new());
        let m = manager(&fake, store.clone(), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        let first = bounded(m.token()).await.unwrap();
        assert!(
            !bounded(m.invalidate(&ComponentAccessToken::new("someone-elses")))
                .await
                .unwrap()
        );
        assert_eq!(bounded(m.token()).await.unwrap(), first);
        assert_eq!(fake.calls(), 1);

        assert!(bounded(m.invalidate(&first)).await.unwrap());
        let appid = ComponentAppId::new("wx0123456789abcdef");
        assert_eq!(store.load_token(&appid).await.unwrap(), None);
        let second = bounded(m.token()).await.unwrap();
        assert_eq!(second, ComponentAccessToken::new("tok-2"));
        assert_eq!(fake.calls(), 2);
        // a late invalidation of the old token does not throw the new one away
        assert!(!bounded(m.invalidate(&first)).await.unwrap());
        assert_eq!(bounded(m.token()).await.unwrap(), second);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn a_new_ticket_clears_a_ticket_failure_and_old_tickets_are_ignored() {
        let fake = FakeWeChat::start().await;
        fake.push(r#"{"errcode":61006,"errmsg":"component ticket is invalid"}"#);
        let m = manager(&fake, Arc::new(MemoryPlatformStore::new()), settings());
        bounded(m.set_ticket(ticket(10))).await.unwrap();
        let e = bounded(m.token()).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Ticket);
        let _ = bounded(m.token()).await.unwrap_err();
        assert_eq!(fake.calls(), 1, "held during the cool-down");

        bounded(m.set_ticket(ticket(5))).await.unwrap(); // older: ignored
        let _ = bounded(m.token()).await.unwrap_err();
        assert_eq!(fake.calls(), 1);

        bounded(m.set_ticket(ticket(20))).await.unwrap();
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("tok-2")
        );
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn within_the_margin_the_old_token_is_served_and_refreshed_in_background() {
        let fake = FakeWeChat::start().await;
        // lifetime 4 s → margin capped at 2 s; with a 3 s setting: fetched token is "fresh" for 2 s
        fake.push(r#"{"component_access_token":"short","expires_in":4}"#);
        let m = manager(
            &fake,
            Arc::new(MemoryPlatformStore::new()),
            TokenSettings {
                refresh_margin: Duration::from_secs(3),
                min_refetch_interval: Duration::ZERO,
                ..settings()
            },
        );
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("short")
        );
        // Wait (bounded) until the token is inside its margin; token() keeps answering the old
        // token while a background fetch replaces it.
        let mut saw_new = false;
        for _ in 0..200 {
            let t = bounded(m.token()).await.unwrap();
            if t == ComponentAccessToken::new("tok-2") {
                saw_new = true;
                break;
            }
            assert_eq!(t, ComponentAccessToken::new("short"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(saw_new);
        assert_eq!(fake.calls(), 2);
    }

    /// A store whose refresh lock is always held by "another instance".
    #[derive(Debug, Default)]
    struct LockedElsewhere(MemoryPlatformStore);

    #[async_trait::async_trait]
    impl PlatformStore for LockedElsewhere {
        async fn load_ticket(
            &self,
            a: &ComponentAppId,
        ) -> Result<Option<StoredTicket>, crate::wechat::persist::StoreError> {
            self.0.load_ticket(a).await
        }
        async fn save_ticket(
            &self,
            a: &ComponentAppId,
            t: &StoredTicket,
        ) -> Result<(), crate::wechat::persist::StoreError> {
            self.0.save_ticket(a, t).await
        }
        async fn load_token(
            &self,
            a: &ComponentAppId,
        ) -> Result<Option<StoredToken>, crate::wechat::persist::StoreError> {
            self.0.load_token(a).await
        }
        async fn save_token(
            &self,
            a: &ComponentAppId,
            t: &StoredToken,
        ) -> Result<(), crate::wechat::persist::StoreError> {
            self.0.save_token(a, t).await
        }
        async fn invalidate_token_if(
            &self,
            a: &ComponentAppId,
            f: &ComponentAccessToken,
        ) -> Result<bool, crate::wechat::persist::StoreError> {
            self.0.invalidate_token_if(a, f).await
        }
        async fn load_tenants(
            &self,
            a: &ComponentAppId,
        ) -> Result<
            Vec<(
                crate::wechat::AuthorizerAppId,
                crate::wechat::tenants::TenantRecord,
            )>,
            crate::wechat::persist::StoreError,
        > {
            self.0.load_tenants(a).await
        }
        async fn save_tenant(
            &self,
            a: &ComponentAppId,
            t: &crate::wechat::AuthorizerAppId,
            r: &crate::wechat::tenants::TenantRecord,
        ) -> Result<(), crate::wechat::persist::StoreError> {
            self.0.save_tenant(a, t, r).await
        }
        async fn ping(&self) -> Result<(), crate::wechat::persist::StoreError> {
            Ok(())
        }
        async fn try_lock_refresh(
            &self,
            _: &ComponentAppId,
            _: Duration,
        ) -> Result<bool, crate::wechat::persist::StoreError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn while_another_instance_refreshes_its_stored_token_is_adopted() {
        let fake = FakeWeChat::start().await;
        let store = Arc::new(LockedElsewhere::default());
        let m = manager(&fake, store.clone(), settings());
        bounded(m.set_ticket(ticket(1))).await.unwrap();
        let writer = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                store
                    .save_token(
                        &ComponentAppId::new("wx0123456789abcdef"),
                        &StoredToken {
                            token: ComponentAccessToken::new("from-the-other-instance"),
                            expires_at: now_unix() + 7200,
                        },
                    )
                    .await
                    .unwrap();
            })
        };
        assert_eq!(
            bounded(m.token()).await.unwrap(),
            ComponentAccessToken::new("from-the-other-instance")
        );
        assert_eq!(fake.calls(), 0);
        bounded(writer).await.unwrap();
    }
}
