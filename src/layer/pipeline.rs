//! The request pipeline: what [`WeChatAuth`](super::WeChatAuth) does with every request (see the
//! module docs of `layer` for the order). Strip → normalize → classify → a reserved route, the
//! inner service as is (skip), or the session check (protected); without a session, the
//! login redirect or a 401.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, Uri, header::CACHE_CONTROL, request::Parts};
use tower::{BoxError, Service};

use super::{
    body::{OwnResponse, ResponseBody, wrap_own},
    dispatch::{Classified, ClientKind, Route, classify, client_kind, normalize_path},
    error::AuthError,
    forward::{self, ForwardError},
    routes,
    sanitize::{strip_method_overrides, strip_unauthorized_upgrade},
    state::AuthState,
    tenant::{ResolvedTenant, TenantRejection, request_host},
};
use crate::{metrics::Outcome, negotiate::Answer, session::ReturnPath};

/// The whole pipeline for one request (see the module docs of `layer`).
///
/// The futures of the paths that are not a session hit (reserved routes, the login start, the
/// session-named tenant) are boxed where they are awaited: inline they made this future (and
/// every move of it, per request) several kilobytes large, for the few requests that take them.
pub(super) async fn handle<S, ReqBody, ResBody>(
    state: Arc<AuthState>,
    request: Request<ReqBody>,
    inner: S,
    outcome: &mut Outcome,
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
    // One host, in one spelling; two different ones (or a repeated `Host`) are refused.
    let host = match request_host(&parts.uri, &parts.headers) {
        Ok(host) => host,
        Err(rejection) => return Ok(wrap_own(refuse(&parts, rejection))),
    };
    // One path decides and is forwarded: the canonical form of the normalized path, or 400.
    // The tenant is resolved on it; a tenant mounted by path prefix classifies the rest.
    let (classified, tenant, rewrite) = match normalize_path(parts.uri.path()) {
        Ok(path)
            if forward::escapes_envoy_prefix(
                parts.uri.path(),
                path.decoded(),
                &state.settings.dispatch.prefix,
            ) =>
        {
            let error = AuthError::BadForwardMetadata(ForwardError::Escape);
            return Ok(wrap_own(error.render(Answer::Json, None)));
        }
        Ok(path) => {
            let tenant = state.resolver.resolve(host.as_deref(), path.decoded());
            let local = tenant
                .as_ref()
                .map_or(path.decoded(), |t| t.local_path(path.decoded()));
            let classified = classify(
                &parts.method,
                local,
                &parts.headers,
                body.is_end_stream(),
                &state.settings.dispatch,
            );
            (classified, tenant, path.into_rewrite())
        }
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
    let tenant = match (classified, tenant) {
        // Events, keys, health and readiness belong to the platform, not to an account.
        (Classified::Reserved(route), _) if platform_wide(route) => {
            *outcome = Outcome::Reserved;
            return Ok(wrap_own(
                Box::pin(routes::serve(&state, route, None, parts, body)).await,
            ));
        }
        (_, Ok(tenant)) => Some(tenant),
        // The seed's style, opt-in: the login endpoint names its account.
        (Classified::Reserved(Route::Login), Err(TenantRejection::Unknown))
            if state.resolver.allows_query() =>
        {
            let named = routes::query_param(&parts, "appid").unwrap_or_default();
            match state.resolver.by_query(&named) {
                Ok(tenant) => Some(tenant),
                Err(rejection) => return Ok(wrap_own(refuse(&parts, rejection))),
            }
        }
        // A login started by `appid` comes back on the platform's host: its flow names it.
        (Classified::Reserved(Route::Callback), Err(TenantRejection::Unknown))
            if state.resolver.allows_query() =>
        {
            None
        }
        // Query selection: elsewhere on the platform's host, the session names its account.
        (_, Err(TenantRejection::Unknown)) if state.resolver.allows_query() => {
            match Box::pin(session_tenant(&state, &parts)).await {
                Ok(Some(tenant)) => Some(tenant),
                Ok(None) => return Ok(wrap_own(refuse(&parts, TenantRejection::Unknown))),
                Err(e) => {
                    return Ok(wrap_own(
                        e.render(Answer::for_request(&parts.headers), None),
                    ));
                }
            }
        }
        (_, Err(rejection)) => return Ok(wrap_own(refuse(&parts, rejection))),
    };
    match (classified, tenant) {
        (Classified::Reserved(route), tenant) => {
            *outcome = Outcome::Reserved;
            Ok(wrap_own(
                Box::pin(routes::serve(&state, route, tenant.as_ref(), parts, body)).await,
            ))
        }
        (Classified::Skip, Some(tenant)) => {
            // Skipped for its method: no header may turn it into another one.
            if strip_method_overrides(&mut parts.headers) > 0 {
                tracing::debug!("removed method-override headers from a skipped request");
            }
            // What an axum `Identity` argument needs to find the session (the cookies are
            // taken out of the request below) or answer like the layer would.
            #[cfg(feature = "axum")]
            let skipped = super::extract::Skipped::new(&state, tenant, &parts.headers);
            #[cfg(not(feature = "axum"))]
            let _ = tenant;
            state.cookies.strip_own_cookies(&mut parts.headers);
            #[cfg(feature = "axum")]
            parts.extensions.insert(skipped);
            *outcome = Outcome::Skipped;
            call_inner(inner, Request::from_parts(parts, body)).await
        }
        (Classified::Protected { api_path }, Some(tenant)) => {
            // Only needed for an answer of our own; a session hit never parses `Accept`.
            let client = || client_kind(api_path, &parts.method, &parts.headers);
            // One parse of the cookies: the session id, and the removal of ours for upstream.
            let (id, strip) = state.cookies.read_session_for_upstream(&parts.headers);
            match state.session_of(id, &tenant).await {
                Ok(Some((id, record))) => {
                    match state
                        .jwt
                        .token_for_audience(id.expose_bytes(), &record.identity, tenant.audience())
                        .await
                    {
                        Ok(jwt) => {
                            let identity = record.identity;
                            identity.project_headers(
                                &state.settings.headers,
                                jwt,
                                &mut parts.headers,
                            );
                            state.cookies.strip_planned(strip, &mut parts.headers);
                            parts.extensions.insert(identity);
                            *outcome = Outcome::Forwarded;
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
                Ok(None) => {
                    let client = client();
                    *outcome = match client {
                        ClientKind::Browser => Outcome::LoginRedirect,
                        ClientKind::Api => Outcome::Unauthenticated,
                    };
                    Ok(wrap_own(
                        Box::pin(no_session(&state, client, &parts, &tenant)).await,
                    ))
                }
                // Fail closed: a store we cannot read never means "allow".
                Err(e) => Ok(wrap_own(e.render(client().answer(), None))),
            }
        }
        // Only a callback can be without a tenant here (handled above).
        (Classified::Skip | Classified::Protected { .. }, None) => Ok(wrap_own(
            AuthError::Internal("no tenant").render(Answer::for_request(&parts.headers), None),
        )),
    }
}

/// With `allow_query_appid`, on a host and path that name no account: the account of the
/// request's session, if it has one and the account is still known. Never chooses an account
/// for a request without a session (that would be OAuth for an arbitrary appid).
async fn session_tenant(
    state: &AuthState,
    parts: &Parts,
) -> Result<Option<ResolvedTenant>, AuthError> {
    let Some(id) = state.cookies.read_session(&parts.headers) else {
        return Ok(None);
    };
    Ok(state
        .sessions
        .load(&id)
        .await?
        .and_then(|record| state.resolver.by_query(record.identity.appid.as_str()).ok()))
}

/// Routes that belong to the platform rather than to one account: served on any host, never
/// refused for a tenant.
fn platform_wide(route: Route) -> bool {
    matches!(
        route,
        Route::Events
            | Route::Jwks
            | Route::Health
            | Route::Ready
            | Route::NotFound
            // A front proxy asks about an original request whose account forward auth
            // resolves from the original host and path.
            | Route::ForwardAuth(_)
    )
}

/// The page (or JSON) for a request without a usable tenant.
fn refuse(parts: &Parts, rejection: TenantRejection) -> OwnResponse {
    AuthError::Tenant(rejection).render(Answer::for_request(&parts.headers), None)
}

/// The answer to a protected request without a session: into the login flow for a browser
/// navigation, 401 JSON otherwise.
pub(super) async fn no_session(
    state: &AuthState,
    client: ClientKind,
    parts: &Parts,
    tenant: &ResolvedTenant,
) -> OwnResponse {
    let return_path = ReturnPath::from_request_uri(&parts.uri);
    let mount = tenant.mount();
    match client {
        ClientKind::Browser => routes::login::start(state, tenant, parts, return_path)
            .await
            .unwrap_or_else(|e| {
                e.render(
                    Answer::Html,
                    Some(&state.login_url(mount, &ReturnPath::default())),
                )
            }),
        ClientKind::Api => AuthError::Unauthenticated.render_with(
            Answer::Json,
            Some(&state.login_url(mount, &return_path)),
            super::qr::qr_url(state, tenant, &return_path)
                .as_deref()
                .map(|url| ("qr_url", url)),
        ),
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
