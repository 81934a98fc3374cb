//! Pure request classification: what the layer should do with a request, decided from its
//! method, URI and headers alone (no I/O), so every rule is unit-tested on its own.
//!
//! Order (see [`dispatch`]): reserved path → skip rule → protected. Whether a protected request
//! has a valid session is decided afterwards by the layer (it needs the store); this module also
//! decides, up front, whether a request without a session is a *browser navigation* (302 to
//! WeChat) or an *API client* (401 JSON).
//!
//! # Path normalization: one path decides and is forwarded
//!
//! Skip rules and reserved routes are matched against a normalized path, never the raw one,
//! never the query, never a header, and the request that goes on (to the inner service, the
//! upstream or a reserved route) carries the **canonical** form of that same path
//! ([`normalize_path`]), so that no backend can read a different path from the one that was
//! classified:
//!
//! 1. the query is ignored for matching (`/private?/public/x` is `/private`) and forwarded as is;
//! 2. percent-escapes of unreserved characters (`%41`, `%2e`, `%7E`) are decoded, every other
//!    escape is kept with upper-case hex (RFC 3986 §6.2.2.1–2);
//! 3. `.` and `..` segments are removed (RFC 3986 §5.2.4) and `//` collapses;
//! 4. matching uses the fully percent-decoded form of the canonical path, which decodes to the
//!    same text as the raw path (property-tested).
//!
//! A path that is already canonical (every ordinary request) is forwarded byte for byte. A path
//! that has no unambiguous normal form is **refused with 400** on every path class — protected,
//! skipped and reserved alike — because backends disagree about what it means
//! ([`PathError`]): an escape that decodes to `/` or `\` (`%2F`, `%5C`), a raw `\`, a NUL or
//! other control character, invalid UTF-8, a malformed escape (`%zz`), a segment whose part
//! before `;` is a dot segment (`..;`, which Tomcat and others treat as `..`), or a target that
//! is not an absolute path (`OPTIONS *`).
//!
//! The code is split by topic: `path.rs` normalizes paths and matches skip rules,
//! `negotiate.rs` tells a browser navigation from an API client (and spots CORS preflights),
//! and this file puts them together into one decision: [`dispatch`] → [`Decision`]. The layer
//! takes the same steps but decides the client kind only when there is no session.

mod negotiate;
mod path;
mod prefix;
#[cfg(test)]
mod tests;

use http::{HeaderMap, Method, Uri};

pub(super) use self::negotiate::client_kind;
pub use self::negotiate::{
    ClientKind, accept_prefers_html, is_browser_navigation, is_cors_preflight,
};
pub use self::path::{NormalizedPath, PathError, SkipRule, SkipRuleError, normalize_path};
pub use self::prefix::{Prefix, PrefixError};

/// What the layer does with a request (the outcome of [`dispatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// One of our own endpoints under the reserved prefix.
    Reserved(Route),
    /// A skip rule matched: the request goes to the inner service without authentication
    /// (identity headers are still stripped).
    Skip,
    /// Authentication required. `client` says what to answer if there is no valid session.
    Protected {
        /// How the client is answered when it has no session.
        client: ClientKind,
    },
    /// The path has no unambiguous normal form: answered 400, never forwarded.
    Refused(PathError),
}

/// A reserved endpoint under the prefix (default `/_wxauth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `login?return=/path`: start a login flow.
    Login,
    /// `callback`: WeChat's redirect back with `code` and `state`.
    Callback,
    /// `events`: the platform's authorization event receive URL (ticket pushes).
    Events,
    /// `logout`: delete the session and clear the cookie.
    Logout,
    /// `jwks.json`: public keys for verifying our JWT.
    Jwks,
    /// `whoami`: the current identity as JSON.
    WhoAmI,
    /// `health`: liveness.
    Health,
    /// `ready`: readiness (store, ticket, token).
    Ready,
    /// `auth/request`, `auth/forward`, `auth/envoy/<original path>`: a front proxy asks whether
    /// the request it holds may pass, and as whom (off unless forward auth is enabled).
    ForwardAuth(ForwardAuthKind),
    /// `qr`, `qr/…`: the desktop QR login bridge (404 unless it is enabled).
    Qr(QrRoute),
    /// Anything else under the prefix: 404.
    NotFound,
}

/// A route of the desktop QR login bridge (see [`Route::Qr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrRoute {
    /// `qr?return=/path`: a new ticket and the desktop page.
    Page,
    /// `qr/code.svg?id=…`: the QR code of a ticket, for its desktop.
    Code,
    /// `qr/poll?id=…&seen=…`: the ticket's status, long-polled, for its desktop.
    Poll,
    /// `qr/s/<id>`: the QR link, opened by the phone.
    Scan,
    /// `qr/confirm`: the phone's confirmation page (GET) and decision (POST).
    Confirm,
    /// `qr/finish?id=…`: the desktop redeems the approved ticket.
    Finish,
}

/// Which front proxy's protocol a forward-auth request speaks (see [`Route::ForwardAuth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardAuthKind {
    /// `auth/request`: nginx `auth_request`, ingress-nginx `auth-url` (`X-Original-*`).
    Request,
    /// `auth/forward`: Traefik `ForwardAuth`, Caddy `forward_auth` (`X-Forwarded-*`).
    Forward,
    /// `auth/envoy/<original path>`: Envoy's HTTP `ext_authz` (the original request line).
    Envoy,
}

impl Route {
    /// Path of the route under the prefix (`"/login"`), `None` for [`Route::NotFound`].
    pub fn suffix(self) -> Option<&'static str> {
        Some(match self {
            Route::Login => "/login",
            Route::Callback => "/callback",
            Route::Events => "/events",
            Route::Logout => "/logout",
            Route::Jwks => "/jwks.json",
            Route::WhoAmI => "/whoami",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::ForwardAuth(ForwardAuthKind::Request) => "/auth/request",
            Route::ForwardAuth(ForwardAuthKind::Forward) => "/auth/forward",
            Route::ForwardAuth(ForwardAuthKind::Envoy) => ENVOY_SUFFIX,
            Route::Qr(QrRoute::Page) => "/qr",
            Route::Qr(QrRoute::Code) => "/qr/code.svg",
            Route::Qr(QrRoute::Poll) => "/qr/poll",
            Route::Qr(QrRoute::Scan) => QR_SCAN_SUFFIX,
            Route::Qr(QrRoute::Confirm) => "/qr/confirm",
            Route::Qr(QrRoute::Finish) => "/qr/finish",
            Route::NotFound => return None,
        })
    }

    fn from_suffix(suffix: &str) -> Route {
        match suffix {
            "/login" => Route::Login,
            "/callback" => Route::Callback,
            "/events" => Route::Events,
            "/logout" => Route::Logout,
            "/jwks.json" => Route::Jwks,
            "/whoami" => Route::WhoAmI,
            "/health" => Route::Health,
            "/ready" => Route::Ready,
            "/auth/request" => Route::ForwardAuth(ForwardAuthKind::Request),
            "/auth/forward" => Route::ForwardAuth(ForwardAuthKind::Forward),
            _ if under_prefix(suffix, ENVOY_SUFFIX) => Route::ForwardAuth(ForwardAuthKind::Envoy),
            "/qr" => Route::Qr(QrRoute::Page),
            "/qr/code.svg" => Route::Qr(QrRoute::Code),
            "/qr/poll" => Route::Qr(QrRoute::Poll),
            "/qr/confirm" => Route::Qr(QrRoute::Confirm),
            "/qr/finish" => Route::Qr(QrRoute::Finish),
            // Exactly one segment after `qr/s/`: the ticket id.
            _ if suffix
                .strip_prefix(QR_SCAN_SUFFIX)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                Route::Qr(QrRoute::Scan)
            }
            _ => Route::NotFound,
        }
    }
}

/// The Envoy route's path under the prefix; the original path follows it.
pub(super) const ENVOY_SUFFIX: &str = "/auth/envoy";

/// The QR link's path under the prefix; the ticket id follows it (`/qr/s/<id>`).
pub(super) const QR_SCAN_SUFFIX: &str = "/qr/s";

/// The inputs of [`dispatch`] that come from configuration: the classification part of the
/// layer's settings (`LayerSettings::dispatch`, their only home).
#[derive(Clone, Debug, Default)]
pub struct DispatchSettings {
    /// Reserved prefix (`/_wxauth`).
    pub prefix: Prefix,
    /// Public routes.
    pub skip: Vec<SkipRule>,
    /// Path prefixes that are always API (401, never a redirect), e.g. `/api`. Same matching as
    /// a subtree skip rule.
    pub api_prefixes: Vec<String>,
    /// Let CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) through without a
    /// session: browsers never send cookies on a preflight, so a cross-origin API call with
    /// credentials cannot succeed otherwise. Off by default (the upstream then sees anonymous
    /// `OPTIONS` requests); identity headers are stripped either way.
    pub skip_preflight: bool,
}

/// Classifies a request. Pure: reads method, URI and headers, never the body, never I/O.
///
/// `body_is_empty` is whether the request body is known to be empty on any protocol
/// (`http_body::Body::is_end_stream`), which a CORS preflight must be.
///
/// Callers strip client-sent identity headers *before* anything else, on every path; this
/// function does not depend on them.
pub fn dispatch(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_is_empty: bool,
    settings: &DispatchSettings,
) -> Decision {
    let path = match normalize_path(uri.path()) {
        Ok(path) => path,
        Err(error) => return Decision::Refused(error),
    };
    match classify(method, path.decoded(), headers, body_is_empty, settings) {
        Classified::Reserved(route) => Decision::Reserved(route),
        Classified::Skip => Decision::Skip,
        Classified::Protected { api_path } => Decision::Protected {
            client: client_kind(api_path, method, headers),
        },
    }
}

/// [`dispatch`] without the client kind, which only matters when there is no session: the
/// layer decides it lazily, so a request with a valid session never parses `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Classified {
    Reserved(Route),
    Skip,
    /// `api_path`: the path lies under a configured API prefix (always 401, never a redirect).
    Protected {
        api_path: bool,
    },
}

/// [`dispatch`] up to the client kind, on an already [normalized](normalize_path) (decoded)
/// path; reads no header but the preflight's.
pub(super) fn classify(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body_is_empty: bool,
    settings: &DispatchSettings,
) -> Classified {
    if let Some(rest) = path.strip_prefix(settings.prefix.as_str()) {
        if rest.is_empty() || rest.starts_with('/') {
            return Classified::Reserved(Route::from_suffix(rest));
        }
    }
    if settings.skip.iter().any(|rule| rule.matches(method, path)) {
        return Classified::Skip;
    }
    if settings.skip_preflight && body_is_empty && is_cors_preflight(method, headers) {
        return Classified::Skip;
    }
    Classified::Protected {
        api_path: is_api_path(path, settings),
    }
}

/// Whether a [normalized](normalize_path) path lies under a configured API prefix.
pub(super) fn is_api_path(path: &str, settings: &DispatchSettings) -> bool {
    settings
        .api_prefixes
        .iter()
        .any(|prefix| under_prefix(path, prefix))
}

fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}
