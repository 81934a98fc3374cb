//! The desktop QR login bridge: a desktop browser logs in by scanning a QR code with WeChat.
//!
//! Official-account web OAuth only works inside WeChat. With `qr.enabled`, a browser navigation
//! without a session whose User-Agent is not WeChat's gets this bridge's page (200) instead of
//! the redirect to WeChat's authorize page (a dead end on a PC): a QR code of a one-time link,
//! the account's name, the link as text, and a live status. The phone scans the code, runs the
//! ordinary tenant-aware OAuth inside WeChat, confirms on a page that says who asks, and the
//! desktop tab — and only it — redeems the ticket for a fresh session. Inside WeChat (phone, or
//! the PC client's browser) nothing changes; API clients keep the 401 JSON, with `qr_url`.
//!
//! | route (under the prefix) | who | what |
//! |---|---|---|
//! | `qr?return=/path` | desktop | a new ticket, the desktop cookie, the page (also what a no-session navigation gets); `HEAD`: the same status and headers, no ticket, no cookie |
//! | `qr/code.svg?id=…` | desktop | the QR code alone (SVG) |
//! | `qr/poll?id=…&seen=…` | desktop | `{"status","expires_in","next"?}`, long-polled up to `poll_wait` (`HEAD`: at once); `&html=1`: the no-script page |
//! | `qr/s/<id>` | phone | outside WeChat: "请使用微信扫一扫"; else the first phone owns the ticket and goes through OAuth; GET only (`HEAD`: 405, nothing claimed) |
//! | `callback` | phone | a flow bound to a ticket stores the identity in it (no phone session unless `also_login_phone`), 302 to `qr/confirm` |
//! | `qr/confirm?id=…` (GET), `qr/confirm` (POST) | phone | the confirmation page; the decision (POST, CSRF token, `Origin`) |
//! | `qr/finish?id=…` | desktop | the atomic take of an approved ticket, a fresh session (the callback's own code), 302 to the return path; GET only (`HEAD`: 405, nothing redeemed) |
//!
//! Files: `settings.rs` ([`QrSettings`]), `ticket.rs` (the pure state machine and its
//! lifetimes), `secrets.rs` (ids, cookies, CSRF token), `device.rs` (client address, browser
//! summary, masking), `limit.rs` (per-address counters), `code.rs` (the SVG), `pages.rs`,
//! `desktop.rs` and `phone.rs` (the routes of each side). Tickets live in a
//! [`TicketStore`](crate::session::TicketStore) (memory or Redis).
//!
//! Security properties (each a test in `tests/qr_login.rs`): the ticket id (128 bits) appears
//! only in the QR link; everything the desktop asks (code, poll, finish) needs the desktop's
//! cookie (`__Host-wxauth_qr` on https: HttpOnly, Secure, SameSite=Strict), and without it the
//! answer is the 404 of an unknown id; unknown ids count against the address (429 past
//! `misses_per_ip_per_minute`); the first phone wins; the identity only comes from the phone's
//! own server-side code exchange and is never in a status answer; the confirmation needs POST,
//! a token derived from the phone's cookie and a same-origin `Origin`; redemption is one atomic
//! take; a ticket is for the account of the host it was made on; new tickets are refused, never
//! old ones evicted, when the store is full; and nothing logs an id or a cookie (only
//! [`TicketKey::fingerprint`]).

mod code;
mod desktop;
mod device;
mod limit;
mod pages;
pub(super) mod phone;
mod secrets;
mod settings;
mod ticket;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, request::Parts};
use tokio::sync::{Semaphore, watch};
use tower::BoxError;

pub use self::settings::{DesktopLogin, DevPhone, MAX_ABSOLUTE_TTL, MAX_POLL_WAIT, QrSettings};
use self::{limit::PerIp, ticket::Ticket};
use super::{
    body::OwnResponse, dispatch::QrRoute, error::AuthError, state::AuthState,
    tenant::ResolvedTenant,
};
use crate::session::{TicketKey, TicketStore};

/// What the bridge keeps between requests, shared by every request and kept across reloads:
/// the ticket store, the per-address counters, the change signal long polls wait on, and the
/// bound on waiting polls.
#[derive(Debug)]
pub(crate) struct Bridge {
    store: Arc<dyn TicketStore>,
    creations: PerIp,
    misses: PerIp,
    /// Bumped at every change this instance makes; polls wake on it (and re-read the store
    /// every [`RECHECK`] for changes made by other instances and for deadlines).
    changes: watch::Sender<u64>,
    polls: Arc<Semaphore>,
}

/// How often a waiting poll re-reads its ticket without a local change signal.
const RECHECK: Duration = Duration::from_secs(1);

impl Bridge {
    /// The bridge for `settings` on `store`.
    pub(crate) fn new(settings: &QrSettings, store: Arc<dyn TicketStore>) -> Self {
        Self {
            store,
            creations: PerIp::per_minute(settings.per_ip_per_minute),
            misses: PerIp::per_minute(settings.misses_per_ip_per_minute),
            changes: watch::channel(0).0,
            polls: Arc::new(Semaphore::new(settings.max_polls)),
        }
    }

    /// The live ticket `id` and the exact bytes it was read from (for compare-and-set).
    async fn load(&self, id: &str) -> Result<Option<(Vec<u8>, Ticket)>, AuthError> {
        let key = TicketKey::of(id);
        let Some(raw) = self.store.get(&key).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Ticket>(&raw) {
            Ok(ticket) => Ok(Some((raw, ticket))),
            Err(_) => {
                tracing::warn!(ticket = key.fingerprint(), "unreadable QR ticket; ignored");
                Ok(None)
            }
        }
    }

    /// Stores a new ticket under `id` for `ttl`; `false` when the store refused it (full).
    async fn insert(&self, id: &str, ticket: &Ticket, ttl: Duration) -> Result<bool, AuthError> {
        Ok(self
            .store
            .insert(&TicketKey::of(id), encode(ticket)?, ttl)
            .await?)
    }

    /// Replaces the ticket read as `raw` with `next`; `false` when someone changed it first.
    async fn replace(&self, id: &str, raw: &[u8], next: &Ticket) -> Result<bool, AuthError> {
        let done = self
            .store
            .replace(&TicketKey::of(id), raw, encode(next)?)
            .await?;
        if done {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(done)
    }

    /// Takes the ticket read as `raw`: `true` for exactly one caller.
    async fn take(&self, id: &str, raw: &[u8]) -> Result<bool, AuthError> {
        let done = self.store.take(&TicketKey::of(id), raw).await?;
        if done {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(done)
    }
}

fn encode(ticket: &Ticket) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(ticket).map_err(|_| AuthError::Internal("QR ticket not encodable"))
}

/// The bridge of `auth`, or the 404 of a disabled feature.
fn bridge(auth: &AuthState) -> Result<&Bridge, AuthError> {
    auth.qr.as_deref().ok_or(AuthError::NotFound)
}

/// Whether a navigation without a session should get the QR page: the bridge is on and the
/// User-Agent is not WeChat's.
pub(super) fn wants_qr_page(auth: &AuthState, parts: &Parts) -> bool {
    auth.qr.is_some() && !device::is_wechat(&parts.headers)
}

/// The website app a navigation without a session is sent to (`qr.desktop` website mode and
/// the User-Agent is not WeChat's), if any.
pub(super) fn website_login<'a>(
    auth: &'a AuthState,
    parts: &Parts,
) -> Option<&'a crate::wechat::website::WebsiteApp> {
    auth.settings
        .qr
        .desktop
        .website()
        .filter(|_| !device::is_wechat(&parts.headers))
}

/// The desktop page for a navigation without a session (see [`wants_qr_page`]).
pub(super) async fn desktop_page(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    parts: &Parts,
    return_path: crate::session::ReturnPath,
) -> Result<OwnResponse, AuthError> {
    desktop::page(auth, bridge(auth)?, tenant, parts, return_path).await
}

/// The QR login URL of `tenant` that returns to `return_path` (what API clients get as
/// `qr_url`), when the bridge is on.
pub(super) fn qr_url(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    return_path: &crate::session::ReturnPath,
) -> Option<String> {
    auth.qr.as_ref()?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", return_path.as_str())
        .finish();
    Some(format!("{}?{query}", route_path(auth, tenant, "/qr")))
}

/// `{mount}{prefix}{suffix}`: a same-origin path of one of the bridge's routes.
fn route_path(auth: &AuthState, tenant: &ResolvedTenant, suffix: &str) -> String {
    format!(
        "{}{}{suffix}",
        tenant.mount(),
        auth.settings.dispatch.prefix
    )
}

/// Whether the tenant's pages are served over https (then cookies are `Secure` and
/// `__Host-`).
fn secure(tenant: &ResolvedTenant) -> bool {
    tenant.origin().starts_with("https://")
}

/// The display name of `tenant` (`tenants.accounts[].name`), else its host.
fn tenant_name(auth: &AuthState, tenant: &ResolvedTenant) -> String {
    auth.settings
        .tenants
        .as_ref()
        .and_then(|r| r.sites.iter().find(|s| &s.appid == tenant.appid()))
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| host_of(tenant).to_owned())
}

fn host_of(tenant: &ResolvedTenant) -> &str {
    let origin = tenant.origin();
    origin.split_once("://").map_or(origin, |(_, host)| host)
}

/// Answers a route of the bridge (404 when it is off).
pub(super) async fn serve<B>(
    auth: &AuthState,
    route: QrRoute,
    tenant: &ResolvedTenant,
    parts: &Parts,
    body: B,
) -> Result<OwnResponse, AuthError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let bridge = bridge(auth)?;
    let read_only = parts.method == Method::GET || parts.method == Method::HEAD;
    match route {
        QrRoute::Confirm if parts.method == Method::POST => {
            phone::decide(auth, bridge, tenant, parts, body).await
        }
        QrRoute::Confirm if read_only => phone::confirm_page(auth, bridge, tenant, parts).await,
        QrRoute::Confirm => Err(AuthError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
        // The two one-shot links change state when followed (the first phone owns the ticket;
        // the desktop redeems it): a `HEAD` (a link preview, a checker) must not, so only GET.
        QrRoute::Scan | QrRoute::Finish if parts.method != Method::GET => {
            Err(AuthError::MethodNotAllowed { allow: "GET" })
        }
        _ if !read_only => Err(AuthError::MethodNotAllowed { allow: "GET, HEAD" }),
        QrRoute::Page => {
            let return_path = super::routes::return_param(parts);
            desktop::page(auth, bridge, tenant, parts, return_path).await
        }
        QrRoute::Code => desktop::code(auth, bridge, tenant, parts).await,
        QrRoute::Poll => desktop::poll(auth, bridge, tenant, parts).await,
        QrRoute::Finish => desktop::finish(auth, bridge, tenant, parts).await,
        QrRoute::Scan => phone::scan(auth, bridge, tenant, parts).await,
    }
}

/// The metric events of the bridge (`wxauth_qr_tickets_total{event}`).
mod event {
    pub(super) const CREATED: &str = "created";
    pub(super) const SCANNED: &str = "scanned";
    pub(super) const AUTHORIZED: &str = "authorized";
    pub(super) const APPROVED: &str = "approved";
    pub(super) const REJECTED: &str = "rejected";
    pub(super) const REDEEMED: &str = "redeemed";
    pub(super) const REFUSED_RATE: &str = "refused_rate_limit";
    pub(super) const REFUSED_FULL: &str = "refused_full";
    pub(super) const REFUSED_UNKNOWN: &str = "refused_unknown";
    pub(super) const REFUSED_EXPIRED: &str = "refused_expired";
    pub(super) const REFUSED_USED: &str = "refused_used";
    pub(super) const REFUSED_CONFIRM: &str = "refused_confirm";
}
