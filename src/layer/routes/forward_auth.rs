//! `auth/request`, `auth/forward`, `auth/envoy/<original path>`: forward auth. A front proxy
//! asks whether the original request it holds may pass, and as whom; the answer is decided by
//! the inline layer's own code — [`classify`] on the original method and normalized path, then
//! [`AuthState::session`] on the original `Cookie`, [`JwtIssuer::token_for`] and
//! [`Identity::project_headers`] — and never has a side effect: no cookie is set, WeChat is
//! never called, no session or login flow is created, and every answer is
//! `Cache-Control: no-store`.
//!
//! In order:
//!
//! 1. forward auth disabled → 404, as any unknown reserved path;
//! 2. the TCP peer ([`ClientAddr`]) is not in `forward_auth.allowed_callers`, or unknown → 403;
//! 3. `auth/request` and `auth/forward` accept `GET` and `HEAD` only (405); `auth/envoy` takes
//!    the original method from the request line;
//! 4. the original request is read once ([`forward::parse`]); anything missing, repeated or
//!    malformed → 400;
//! 5. the decision:
//!    - an original path under the reserved prefix is answered by the layer itself when it gets
//!      there: its public endpoints (`login`, `callback`, `events`, `logout`, `jwks.json`,
//!      `whoami`, `health`, `ready`) → 200 *without* identity; anything else there (the
//!      forward-auth endpoints themselves, unknown paths) → 404, as the layer would answer;
//!    - a skip rule matches and `forward_auth.apply_skip_rules` is on → 200 without identity;
//!    - a session → 200 with the JWT header and the plain headers;
//!    - no session → the login URL (absolute): `auth/request` answers 401 (nginx allows only
//!      2xx, 401 and 403 from an auth subrequest) with the URL in `X-WeChat-Login-URL`, and in
//!      `Location` for a browser navigation;
//!      `auth/forward` and `auth/envoy` answer 302 to it for a browser navigation and 401 JSON
//!      otherwise;
//!    - a store failure → 503, a JWT failure → 500: fail closed.
//!
//! A 200 always carries every identity header the layer owns, empty when there is nothing to
//! say, so that a front proxy that *overrides* the listed headers (Traefik
//! `authResponseHeaders`, Envoy `allowed_upstream_headers`) replaces any copy a client sent.

use http::{
    HeaderName, HeaderValue, Method, StatusCode,
    header::{LOCATION, WWW_AUTHENTICATE},
    request::Parts,
};

#[cfg(doc)]
use crate::jwt::JwtIssuer;

/// Where `auth/request` puts the login URL for nginx (which never sees the JSON body).
const LOGIN_URL_HEADER: HeaderName = HeaderName::from_static("x-wechat-login-url");
use crate::{
    identity::Identity,
    layer::{
        body::OwnResponse,
        dispatch::{
            Classified, ClientKind, ForwardAuthKind, Route, classify, client_kind, is_api_path,
        },
        error::AuthError,
        forward::{self, OriginalRequest},
        respond::{redirect, text_with_room},
        state::AuthState,
        tenant::{ResolvedTenant, normalize_host},
    },
    negotiate::Answer,
    server::ClientAddr,
};

/// Answers one forward-auth request of protocol `kind`. Never fails: refusals are answers.
pub(super) async fn serve(auth: &AuthState, kind: ForwardAuthKind, parts: &Parts) -> OwnResponse {
    let settings = &auth.settings.forward_auth;
    // Only a refusal needs it: an allowed answer never parses `Accept`.
    let answer = || Answer::for_request(&parts.headers);
    if !settings.enabled {
        return AuthError::NotFound.render(answer(), None);
    }
    let peer = parts.extensions.get::<ClientAddr>().map(|addr| addr.0.ip());
    if !settings.allows(peer) {
        tracing::warn!(
            ?peer,
            "forward-auth request from a peer not in allowed_callers"
        );
        return AuthError::UntrustedCaller.render(answer(), None);
    }
    let read_only = parts.method == Method::GET || parts.method == Method::HEAD;
    if kind != ForwardAuthKind::Envoy && !read_only {
        return AuthError::MethodNotAllowed { allow: "GET, HEAD" }.render(answer(), None);
    }
    match forward::parse(kind, parts, &auth.settings.dispatch.prefix) {
        Ok(original) => decide(auth, kind, &original, parts).await,
        Err(error) => AuthError::from(error).render(answer(), None),
    }
}

/// The decision for a validated original request (see the module docs, step 5).
async fn decide(
    auth: &AuthState,
    kind: ForwardAuthKind,
    original: &OriginalRequest<'_>,
    parts: &Parts,
) -> OwnResponse {
    let headers = &parts.headers;
    let method = original.method();
    // The original request's account, resolved exactly as the layer resolves a request it
    // serves (issue 11); a tenant mounted by path prefix classifies the rest of the path.
    // One account answers whatever the host: then the host is not even normalized.
    let host = if auth.resolver.is_single() {
        None
    } else {
        normalize_host(original.authority().as_str())
    };
    let tenant = match auth
        .resolver
        .resolve(host.as_deref(), original.decoded_path())
    {
        Ok(tenant) => tenant,
        Err(rejection) => {
            return AuthError::Tenant(rejection).render(Answer::for_request(headers), None);
        }
    };
    let path = tenant.local_path(original.decoded_path());
    let dispatch = &auth.settings.dispatch;
    // The original request's body is not here; a preflight has none.
    let api_path = match classify(method, path, headers, true, dispatch) {
        Classified::Reserved(route) => return reserved(auth, route),
        Classified::Skip if auth.settings.forward_auth.apply_skip_rules => {
            return allowed(auth, None);
        }
        Classified::Skip => is_api_path(path, dispatch),
        Classified::Protected { api_path } => api_path,
    };
    let client = || client_kind(api_path, method, headers);
    match auth.session(headers, &tenant).await {
        Ok(Some((id, record))) => match auth
            .jwt
            .token_for_audience(id.expose_bytes(), &record.identity, tenant.audience())
            .await
        {
            Ok(jwt) => allowed(auth, Some((&record.identity, jwt))),
            Err(e) => AuthError::from(e).render(client().answer(), None),
        },
        Ok(None) => login_required(auth, kind, original, &tenant, client()),
        // Fail closed: a store we cannot read never means "allow".
        Err(e) => e.render(client().answer(), None),
    }
}

/// An original request under the reserved prefix: the layer answers it itself, with its own
/// checks, when it arrives; only the public endpoints are let through (without identity).
fn reserved(auth: &AuthState, route: Route) -> OwnResponse {
    match route {
        Route::Login
        | Route::Callback
        | Route::Events
        | Route::Logout
        | Route::Jwks
        | Route::WhoAmI
        | Route::Health
        | Route::Ready => allowed(auth, None),
        _ => AuthError::NotFound.render(Answer::Json, None),
    }
}

/// 200 with the identity headers: the JWT and plain headers of `identity`, and every other
/// identity header the layer owns present and empty (all of them empty without identity).
fn allowed(auth: &AuthState, identity: Option<(&Identity, HeaderValue)>) -> OwnResponse {
    // Room for every header at once: one allocation of the table, no rehash per insert.
    let names = auth.strip.names();
    let mut response = text_with_room(StatusCode::OK, "", names.len());
    let headers = response.headers_mut();
    if let Some((identity, jwt)) = identity {
        identity.project_headers(&auth.settings.headers, jwt, headers);
    }
    for name in names {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(""));
    }
    response
}

/// No session: where to log in, in the form each protocol needs.
fn login_required(
    auth: &AuthState,
    kind: ForwardAuthKind,
    original: &OriginalRequest<'_>,
    tenant: &ResolvedTenant,
    client: ClientKind,
) -> OwnResponse {
    // One account: `public_url`'s origin (see `served_origin`); several: the account's own.
    let origin = if auth.resolver.is_single() {
        served_origin(auth, original).unwrap_or(&auth.origin)
    } else {
        tenant.origin()
    };
    let return_path = original.return_path();
    let login_url = format!("{origin}{}", auth.login_url(tenant.mount(), &return_path));
    match (kind, client) {
        (ForwardAuthKind::Forward | ForwardAuthKind::Envoy, ClientKind::Browser) => {
            redirect(&login_url)
        }
        _ => {
            let mut response = AuthError::Unauthenticated.render(Answer::Json, Some(&login_url));
            let headers = response.headers_mut();
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("WeChat"));
            // nginx drops the body of an auth answer: the login URL travels in headers, which
            // it reads with `auth_request_set` — `Location` only for a browser navigation
            // (nginx makes the 302), `X-WeChat-Login-URL` always (for its 401 JSON).
            if let (ForwardAuthKind::Request, Ok(url)) = (kind, HeaderValue::from_str(&login_url)) {
                if client == ClientKind::Browser {
                    headers.insert(LOCATION, url.clone());
                }
                headers.insert(LOGIN_URL_HEADER, url);
            }
            response
        }
    }
}

/// The origin the login URL of `original` starts with, when the original host is one this
/// layer serves: today that is only `public_url`'s host and port (compared as the browser
/// would: host case-insensitively, the scheme's default port when none is given). Any other
/// host — a forged `X-Forwarded-Host` included — gets `public_url`'s origin, so the login URL
/// can never point elsewhere.
fn served_origin<'s>(auth: &'s AuthState, original: &OriginalRequest<'_>) -> Option<&'s str> {
    let public = &auth.settings.public_url;
    let authority = original.authority();
    let default_port = |scheme: &str| if scheme == "https" { 443 } else { 80 };
    let scheme = original.scheme().map_or(public.scheme(), |s| s.as_str());
    let port = authority.port_u16().unwrap_or(default_port(scheme));
    let same_host = public
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case(authority.host()));
    let same_port = public.port_or_known_default() == Some(port);
    (scheme == public.scheme() && same_host && same_port).then_some(auth.origin.as_str())
}
