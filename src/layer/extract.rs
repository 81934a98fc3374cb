//! axum integration (feature `axum`): [`Identity`] as a handler argument.
//!
//! Behind [`WeChatAuthLayer`](super::WeChatAuthLayer), a protected request reaches the handler
//! with the user's [`Identity`] in its extensions; these impls hand it over:
//!
//! - `Identity` ([`FromRequestParts`]): the user, or else the handler is not called and the
//!   request gets exactly the answer the layer gives a protected request without a session —
//!   a browser navigation goes into the WeChat login (302 with the flow cookie), anything else
//!   gets `401` JSON `{ "error": "unauthenticated", "login_url": … }` ([`IdentityRejection`]).
//!   On a protected path the layer has already attached the user; on a path a skip rule lets
//!   through, the session is looked up only when a handler asks (the layer itself does not
//!   look at sessions there). A handler reached without the layer in front at all answers
//!   `500` (a wiring bug, never "allow");
//! - `Option<Identity>` ([`OptionalFromRequestParts`]): the user if there is one (on a skipped
//!   path: if the browser has a live session), `None` for a guest; rejects only when the
//!   session store fails (`503`, fail closed), and gives `None` without the layer.
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use wechat_oauth_proxy::Identity;
//!
//! async fn hello(who: Identity) -> String {
//!     format!("你好, {}", who.nickname)
//! }
//!
//! async fn home(who: Option<Identity>) -> String {
//!     who.map_or_else(|| "hello, guest".to_owned(), |who| format!("hello, {}", who.nickname))
//! }
//!
//! let app: Router = Router::new().route("/", get(home)).route("/hello", get(hello));
//! ```

use std::{fmt, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, header::COOKIE, request::Parts};

use super::{
    body::OwnResponse,
    dispatch::{ClientKind, client_kind, is_api_path},
    error::AuthError,
    pipeline::no_session,
    state::AuthState,
    tenant::ResolvedTenant,
};
use crate::{identity::Identity, negotiate::Answer};

/// Put into the extensions of a request a skip rule lets through (feature `axum`): what an
/// `Identity` argument needs to find the session or answer like the layer would — the state
/// in force, the request's tenant and its `Cookie` headers (the layer takes its own cookies
/// out of the request itself). Private to the layer: handlers cannot read it.
#[derive(Clone)]
pub(super) struct Skipped {
    state: Arc<AuthState>,
    tenant: ResolvedTenant,
    cookies: HeaderMap,
}

impl Skipped {
    pub(super) fn new(state: &Arc<AuthState>, tenant: ResolvedTenant, headers: &HeaderMap) -> Self {
        let mut cookies = HeaderMap::new();
        for value in headers.get_all(COOKIE) {
            cookies.append(COOKIE, value.clone());
        }
        Self {
            state: Arc::clone(state),
            tenant,
            cookies,
        }
    }
}

/// The answer to a handler argument [`Identity`] on a request without one: the layer's own
/// answer to a protected request without a session (a login redirect for a browser
/// navigation, `401` JSON with the `login_url` otherwise), or `500` when no
/// [`WeChatAuthLayer`](super::WeChatAuthLayer) is in front of the handler. Rendered by the
/// layer's one error renderer ([`AuthError`]).
pub struct IdentityRejection(OwnResponse);

impl IdentityRejection {
    /// The status the rejection answers with.
    pub fn status(&self) -> http::StatusCode {
        self.0.status()
    }
}

impl fmt::Debug for IdentityRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityRejection")
            .field(&self.0.status())
            .finish()
    }
}

impl fmt::Display for IdentityRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no WeChat identity on this request ({})",
            self.0.status()
        )
    }
}

impl std::error::Error for IdentityRejection {}

impl IntoResponse for IdentityRejection {
    fn into_response(self) -> Response {
        self.0.map(axum::body::Body::new)
    }
}

/// What the layer knows about the user of a request: the identity it attached (protected
/// path), the session's identity looked up now (skipped path; kept in the extensions for the
/// next argument), or none.
enum Lookup {
    Found(Identity),
    Guest(Skipped),
    NoLayer,
}

async fn lookup(parts: &mut Parts) -> Result<Lookup, IdentityRejection> {
    if let Some(identity) = parts.extensions.get::<Identity>() {
        return Ok(Lookup::Found(identity.clone()));
    }
    let Some(skipped) = parts.extensions.get::<Skipped>().cloned() else {
        return Ok(Lookup::NoLayer);
    };
    match skipped
        .state
        .session(&skipped.cookies, &skipped.tenant)
        .await
    {
        Ok(Some((_, record))) => {
            parts.extensions.insert(record.identity.clone());
            Ok(Lookup::Found(record.identity))
        }
        Ok(None) => Ok(Lookup::Guest(skipped)),
        // Fail closed: a store we cannot read never means "allow".
        Err(e) => {
            let client = client_of(&skipped.state, &skipped.tenant, parts);
            Err(IdentityRejection(e.render(client.answer(), None)))
        }
    }
}

/// Browser navigation or API client, by the layer's own rule for this path.
fn client_of(state: &AuthState, tenant: &ResolvedTenant, parts: &Parts) -> ClientKind {
    let path = tenant.local_path(parts.uri.path());
    let api_path = is_api_path(path, &state.settings.dispatch);
    client_kind(api_path, &parts.method, &parts.headers)
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = IdentityRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match lookup(parts).await? {
            Lookup::Found(identity) => Ok(identity),
            Lookup::Guest(Skipped { state, tenant, .. }) => {
                let client = client_of(&state, &tenant, parts);
                Err(IdentityRejection(
                    no_session(&state, client, parts, &tenant).await,
                ))
            }
            Lookup::NoLayer => {
                tracing::error!(
                    "an Identity argument without WeChatAuthLayer in front of the handler"
                );
                let error = AuthError::Internal("WeChatAuthLayer is not in front of this handler");
                Err(IdentityRejection(
                    error.render(Answer::for_request(&parts.headers), None),
                ))
            }
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = IdentityRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(match lookup(parts).await? {
            Lookup::Found(identity) => Some(identity),
            Lookup::Guest(_) | Lookup::NoLayer => None,
        })
    }
}
