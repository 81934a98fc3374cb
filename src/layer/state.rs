//! The state every request shares: one `Arc` per layer, built once by the
//! [builder](super::WeChatAuthLayerBuilder) — the collaborators, the validated settings and the
//! URLs computed from them — plus the small queries the pipeline and the routes both ask.
//! Data only: it calls nothing in `pipeline` or `routes`.

use std::sync::Arc;

use http::HeaderMap;

use super::{LayerSettings, error::AuthError};
use crate::{
    identity::StripList,
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
}

impl AuthState {
    /// The live session named by the request's cookie, if any. A missing, tampered or unknown
    /// cookie is `Ok(None)`; a store failure is an error (fail closed).
    pub(super) async fn session(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(SessionId, SessionRecord)>, AuthError> {
        let Some(id) = self.cookies.read_session(headers) else {
            return Ok(None);
        };
        match self.sessions.load(&id).await? {
            Some(record) => Ok(Some((id, record))),
            None => {
                tracing::debug!(session = %id.fingerprint(), "session cookie names no live session");
                Ok(None)
            }
        }
    }

    /// The login endpoint that returns to `return_path` afterwards, as a same-origin path
    /// (`/_wxauth/login?return=%2Fpage`): valid wherever our pages and API answers are read.
    pub(super) fn login_url(&self, return_path: &ReturnPath) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return", return_path.as_str())
            .finish();
        format!("{}/login?{query}", self.settings.dispatch.prefix)
    }
}
