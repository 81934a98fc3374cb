//! The state every request shares: one `Arc` per layer, built once by the
//! [builder](super::WeChatAuthLayerBuilder) — the collaborators, the validated settings and the
//! URLs computed from them — plus the small queries the pipeline and the routes both ask.
//! Data only: it calls nothing in `pipeline` or `routes`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;

use super::{
    LayerSettings,
    error::AuthError,
    tenant::{ResolvedTenant, TenantResolver},
};
use crate::{
    access::AccessLists,
    identity::{Identity, StripList},
    jwt::JwtIssuer,
    session::{CookieCodec, ReturnPath, SessionId, SessionRecord, SessionStore},
    wechat::oauth::WeChatOAuth,
};

/// Everything the layer and the reserved routes need, built once by the builder.
#[derive(Debug)]
pub(super) struct AuthState {
    pub(super) settings: LayerSettings,
    pub(super) strip: StripList,
    /// `scheme://host[:port]` of the public URL.
    pub(super) origin: String,
    /// `origin + prefix + "/callback"`, the `redirect_uri` given to WeChat.
    pub(super) callback_url: String,
    pub(super) wechat: WeChatOAuth,
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) cookies: CookieCodec,
    pub(super) jwt: JwtIssuer,
    /// Request → tenant resolution, built once.
    pub(super) resolver: TenantResolver,
    /// Whether log lines name the tenant (bounded cardinality, see
    /// [`LOG_LABEL_MAX_TENANTS`](super::tenant::LOG_LABEL_MAX_TENANTS)).
    pub(super) log_label: bool,
    /// Who may log in: read once per request, swapped whole by
    /// [`set_access_lists`](super::WeChatAuthLayer::set_access_lists).
    pub(super) access: Arc<ArcSwap<AccessLists>>,
    /// The desktop QR login bridge, when `qr.enabled` (kept across reloads).
    pub(super) qr: Option<Arc<super::qr::Bridge>>,
}

impl AuthState {
    /// Whether a session whose identity names `appid` is one of `tenant`'s: the tenant's own
    /// account, or — in `qr.desktop` website mode, single account only — the website app.
    pub(super) fn session_is_for(&self, appid: &str, tenant: &ResolvedTenant) -> bool {
        appid == tenant.appid().as_str()
            || (self.resolver.is_single()
                && self
                    .settings
                    .qr
                    .desktop
                    .website()
                    .is_some_and(|app| app.appid().as_str() == appid))
    }

    /// The live session of `tenant` named by the request's cookie, if any. A missing,
    /// tampered or unknown cookie is `Ok(None)`, and so is another tenant's session (a new
    /// login for this one; the other session is untouched, never a cross-tenant JWT); a store
    /// failure is an error (fail closed). A session whose person the access lists refuse (now:
    /// the lists are read on every call) is [`AuthError::AccessDenied`]; the session itself is
    /// kept, so putting the person back on the list restores it.
    pub(super) async fn session(
        &self,
        headers: &HeaderMap,
        tenant: &ResolvedTenant,
    ) -> Result<Option<(SessionId, SessionRecord)>, AuthError> {
        self.session_of(self.cookies.read_session(headers), tenant)
            .await
    }

    /// [`AuthState::session`] for the session id already read from the request's cookie
    /// (`None`: no usable cookie).
    pub(super) async fn session_of(
        &self,
        id: Option<SessionId>,
        tenant: &ResolvedTenant,
    ) -> Result<Option<(SessionId, SessionRecord)>, AuthError> {
        let Some(id) = id else {
            return Ok(None);
        };
        match self.sessions.load(&id).await? {
            Some(record) if !self.session_is_for(record.identity.appid.as_str(), tenant) => {
                tracing::debug!(
                    session = %id.fingerprint(),
                    tenant = self.label(tenant),
                    "the session belongs to another official account; no session for this one"
                );
                Ok(None)
            }
            Some(record) => {
                self.admit(&record.identity)?;
                Ok(Some((id, record)))
            }
            None => {
                tracing::debug!(session = %id.fingerprint(), "session cookie names no live session");
                Ok(None)
            }
        }
    }

    /// Whether the access lists (as they are now) let `identity` in: `Ok(())`, or
    /// [`AuthError::AccessDenied`] (logged without the ids).
    pub(super) fn admit(&self, identity: &Identity) -> Result<(), AuthError> {
        self.access.load().check(identity).map_err(|refusal| {
            tracing::info!(reason = refusal.as_str(), "refused by the access lists");
            AuthError::AccessDenied
        })
    }

    /// The login endpoint of the tenant mounted at `mount` (`""`, or `/t/{appid}` by path
    /// prefix) that returns to `return_path` afterwards, as a same-origin path
    /// (`/_wxauth/login?return=%2Fpage`): valid wherever our pages and API answers are read.
    pub(super) fn login_url(&self, mount: &str, return_path: &ReturnPath) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return", return_path.as_str())
            .finish();
        format!("{mount}{}/login?{query}", self.settings.dispatch.prefix)
    }

    /// The absolute callback URL (`redirect_uri`) of `tenant`: its origin, its mount, the
    /// prefix, `/callback`.
    pub(super) fn callback_url_for(&self, tenant: &ResolvedTenant) -> String {
        format!(
            "{}{}{}/callback",
            tenant.origin(),
            tenant.mount(),
            self.settings.dispatch.prefix
        )
    }

    /// The tenant's appid for a log line, when log lines name tenants.
    pub(super) fn label<'t>(&self, tenant: &'t ResolvedTenant) -> Option<&'t str> {
        self.log_label.then(|| tenant.appid().as_str())
    }
}
