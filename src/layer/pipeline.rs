//! The request pipeline: what [`WeChatAuth`](super::WeChatAuth) does with every request (see the
//! module docs of `layer` for the order). Strip → normalize → classify → a reserved route, the
//! inner service as is (skip), or the session check (protected); without a session, the
//! login redirect or a 401.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, Uri, header::CACHE_CONTROL, request::Parts};
use tower::{BoxError, Service};

use super::{
    body::{OwnResponse, ResponseBody, wrap_own},
    dispatch::{Classified, ClientKind, classify, client_kind, normalize_path},
    error::AuthError,
    routes,
    sanitize::{strip_method_overrides, strip_unauthorized_upgrade},
    state::AuthState,
};
use crate::{negotiate::Answer, session::ReturnPath};

/// The whole pipeline for one request (see the module docs of `layer`).
pub(super) async fn handle<S, ReqBody, ResBody>(
    state: Arc<AuthState>,
    request: Request<ReqBody>,
    inner: S,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
{
    // Work on the parts only: the body is moved, never borrowed across an await (it need not
    // be `Sync`), and the extensions (hyper's `OnUpgrade` among them) stay with the request.
    let (mut parts, body) = request.into_parts();
    if parts.method == Method::CONNECT {
        // A tunnel to anywhere is never forwarded, whatever the path.
        return Ok(wrap_own(
            AuthError::MethodNotAllowed {
                allow: FORWARDED_METHODS,
            }
            .render(Answer::for_request(&parts.headers), None),
        ));
    }
    let stripped = state.strip.strip(&mut parts.headers);
    if stripped > 0 {
        tracing::debug!(names = stripped, "removed client-sent identity headers");
    }
    if strip_unauthorized_upgrade(&parts.method, parts.version, &mut parts.headers) {
        tracing::debug!("removed a protocol switch other than WebSocket");
    }
    // One path decides and is forwarded: the canonical form of the normalized path, or 400.
    let (classified, rewrite) = match normalize_path(parts.uri.path()) {
        Ok(path) => (
            classify(
                &parts.method,
                path.decoded(),
                &parts.headers,
                body.is_end_stream(),
                &state.settings.dispatch,
            ),
            path.into_rewrite(),
        ),
        Err(error) => {
            let answer = Answer::for_request(&parts.headers);
            return Ok(wrap_own(AuthError::BadPath(error).render(answer, None)));
        }
    };
    if let Some(canonical) = rewrite {
        match with_path(&parts.uri, &canonical) {
            Some(uri) => parts.uri = uri,
            None => {
                let error = AuthError::BadRequest("the normalized path is not a valid URI");
                return Ok(wrap_own(
                    error.render(Answer::for_request(&parts.headers), None),
                ));
            }
        }
    }
    match classified {
        Classified::Reserved(route) => {
            Ok(wrap_own(routes::serve(&state, route, parts, body).await))
        }
        Classified::Skip => {
            // Skipped for its method: no header may turn it into another one.
            if strip_method_overrides(&mut parts.headers) > 0 {
                tracing::debug!("removed method-override headers from a skipped request");
            }
            state.cookies.strip_own_cookies(&mut parts.headers);
            call_inner(inner, Request::from_parts(parts, body)).await
        }
        Classified::Protected { api_path } => {
            // Only needed for an answer of our own; a session hit never parses `Accept`.
            let client = || client_kind(api_path, &parts.method, &parts.headers);
            match state.session(&parts.headers).await {
                Ok(Some((id, record))) => {
                    match state
                        .jwt
                        .token_for(id.expose_bytes(), &record.identity)
                        .await
                    {
                        Ok(jwt) => {
                            let identity = record.identity;
                            identity.project_headers(
                                &state.settings.headers,
                                jwt,
                                &mut parts.headers,
                            );
                            state.cookies.strip_own_cookies(&mut parts.headers);
                            parts.extensions.insert(identity);
                            let mut response =
                                call_inner(inner, Request::from_parts(parts, body)).await?;
                            // A page made for one user must never be served to another
                            // by a shared cache or CDN.
                            response
                                .headers_mut()
                                .entry(CACHE_CONTROL)
                                .or_insert(HeaderValue::from_static("private"));
                            Ok(response)
                        }
                        Err(e) => Ok(wrap_own(AuthError::from(e).render(client().answer(), None))),
                    }
                }
                Ok(None) => Ok(wrap_own(no_session(&state, client(), &parts).await)),
                // Fail closed: a store we cannot read never means "allow".
                Err(e) => Ok(wrap_own(e.render(client().answer(), None))),
            }
        }
    }
}

/// The answer to a protected request without a session: into the login flow for a browser
/// navigation, 401 JSON otherwise.
async fn no_session(state: &AuthState, client: ClientKind, parts: &Parts) -> OwnResponse {
    let return_path = ReturnPath::from_request_uri(&parts.uri);
    match client {
        ClientKind::Browser => routes::login::start(state, &parts.headers, return_path)
            .await
            .unwrap_or_else(|e| {
                e.render(Answer::Html, Some(&state.login_url(&ReturnPath::default())))
            }),
        ClientKind::Api => {
            AuthError::Unauthenticated.render(Answer::Json, Some(&state.login_url(&return_path)))
        }
    }
}

async fn call_inner<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    // `inner` is the instance `WeChatAuth::poll_ready` polled ready before it was swapped out.
    let response = inner.call(request).await?;
    Ok(response.map(ResponseBody::inner))
}

/// The `Allow` value given with a refused `CONNECT`: the methods the layer forwards.
const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// `uri` with its path replaced by `path` (query, scheme and authority kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}
