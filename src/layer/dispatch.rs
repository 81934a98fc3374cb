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

use http::{HeaderMap, Method, Uri, header};
use std::borrow::Cow;

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

/// Who is asking, for the "no session" answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A top-level GET/HEAD navigation that prefers HTML: gets a 302 into the login flow.
    Browser,
    /// Anything else (XHR/fetch, API paths, non-GET methods): gets 401 JSON with `login_url`, so a
    /// POST never silently loses its body to a redirect.
    Api,
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
    /// Anything else under the prefix: 404.
    NotFound,
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
            _ => Route::NotFound,
        }
    }
}

/// A public route: requests whose method and normalized path match skip authentication.
///
/// Patterns are either an exact path (`/favicon.ico`) or a subtree ending in `/*`
/// (`/public/*` matches `/public` and everything below it, not `/publicity`). A rule for `GET`
/// also matches `HEAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipRule {
    method: Option<Method>,
    pattern: SkipPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SkipPattern {
    Exact(String),
    /// The subtree root without the trailing `/*` (`/public`), or empty for `/*`.
    Subtree(String),
}

/// Why a skip pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipRuleError {
    /// The pattern does not start with `/`.
    #[error("skip pattern must start with '/'")]
    NotAbsolute,
    /// `*` appears anywhere but as a trailing `/*`.
    #[error("skip pattern may only use '*' as a trailing '/*'")]
    Wildcard,
    /// The pattern is not already normalized (dot segments, `%`, `\`, `//`, `;`, controls).
    #[error(
        "skip pattern must be a normalized path (no dot segments, '%', '\\\\', ';', '//', controls)"
    )]
    NotNormalized,
}

impl SkipRule {
    /// A rule for one method (`None` = any method) and a pattern (`/exact` or `/subtree/*`).
    ///
    /// # Errors
    /// [`SkipRuleError`] when the pattern is not an absolute, normalized path with at most a
    /// trailing `/*` wildcard.
    pub fn new(method: Option<Method>, pattern: &str) -> Result<SkipRule, SkipRuleError> {
        if !pattern.starts_with('/') {
            return Err(SkipRuleError::NotAbsolute);
        }
        let (base, subtree) = match pattern.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (pattern, false),
        };
        if base.contains('*') {
            return Err(SkipRuleError::Wildcard);
        }
        if base.contains(['%', '\\', ';', '?', '#'])
            || base.contains("//")
            || base.chars().any(char::is_control)
            || base.split('/').any(|s| s == "." || s == "..")
        {
            return Err(SkipRuleError::NotNormalized);
        }
        let pattern = if subtree {
            SkipPattern::Subtree(base.trim_end_matches('/').to_owned())
        } else {
            SkipPattern::Exact(base.to_owned())
        };
        Ok(SkipRule { method, pattern })
    }

    /// Whether this rule matches a method and an already [normalized](normalize_path) path.
    pub fn matches(&self, method: &Method, normalized_path: &str) -> bool {
        let method_ok = match &self.method {
            None => true,
            Some(m) => m == method || (*m == Method::GET && *method == Method::HEAD),
        };
        method_ok
            && match &self.pattern {
                SkipPattern::Exact(p) => p == normalized_path,
                SkipPattern::Subtree(root) => {
                    root.is_empty()
                        || normalized_path == root
                        || normalized_path
                            .strip_prefix(root.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                }
            }
    }
}

/// The inputs of [`dispatch`] that come from configuration (a view of the layer settings).
#[derive(Clone, Debug)]
pub struct DispatchSettings {
    /// Reserved prefix, normalized, without trailing `/` (`/_wxauth`).
    pub prefix: String,
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

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            prefix: "/_wxauth".to_owned(),
            skip: Vec::new(),
            api_prefixes: Vec::new(),
            skip_preflight: false,
        }
    }
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
pub(crate) enum Classified {
    Reserved(Route),
    Skip,
    /// `api_path`: the path lies under a configured API prefix (always 401, never a redirect).
    Protected {
        api_path: bool,
    },
}

/// [`dispatch`] up to the client kind, on an already [normalized](normalize_path) (decoded)
/// path; reads no header but the preflight's.
pub(crate) fn classify(
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
    let api_path = settings
        .api_prefixes
        .iter()
        .any(|prefix| under_prefix(path, prefix));
    Classified::Protected { api_path }
}

/// A CORS preflight as browsers send it (Fetch standard, "CORS-preflight fetch"): `OPTIONS`
/// with `Origin` and `Access-Control-Request-Method`, and no body. Anything announcing a body
/// is not a preflight; callers must also check that the body really is empty on the wire
/// (an HTTP/2 request can send DATA frames without `content-length`), as [`dispatch`] does.
pub fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && !has_body
}

/// How a protected request without a session is answered (see [`ClientKind`]).
pub(crate) fn client_kind(api_path: bool, method: &Method, headers: &HeaderMap) -> ClientKind {
    if !api_path && is_browser_navigation(method, headers) {
        ClientKind::Browser
    } else {
        ClientKind::Api
    }
}

fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a request is a top-level browser navigation that may be redirected to a login page:
/// GET or HEAD; `Accept` prefers `text/html` by q-value (named explicitly or as `text/*`, with a
/// q at least as high as any other listed type — a bare `*/*` is not enough); no
/// `X-Requested-With: XMLHttpRequest`; and, when the browser sends `Sec-Fetch-Mode`, it says
/// `navigate` (a `fetch()` is never a navigation).
pub fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let xhr = headers
        .get_all("x-requested-with")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    if xhr {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        let mode = mode.as_bytes();
        if !mode.eq_ignore_ascii_case(b"navigate") && !mode.eq_ignore_ascii_case(b"nested-navigate")
        {
            return false;
        }
    }
    accept_prefers_html(headers)
}

/// One media range of an `Accept` header.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: u16, // thousandths, 0..=1000
}

fn parse_q(value: &str) -> Option<u16> {
    // RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn media_ranges(headers: &HeaderMap) -> impl Iterator<Item = MediaRange<'_>> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let mime = parts.next()?.trim();
            let (kind, subtype) = mime.split_once('/')?;
            let mut q = 1000;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_q(v.trim())?;
                    }
                }
            }
            Some(MediaRange {
                kind: kind.trim(),
                subtype: subtype.trim(),
                q,
            })
        })
}

/// Whether `Accept` prefers `text/html` (see [`is_browser_navigation`]).
pub fn accept_prefers_html(headers: &HeaderMap) -> bool {
    // q of text/html by its most specific matching range: 2 = text/html, 1 = text/*, 0 = */*.
    let mut html: Option<(u8, u16)> = None;
    let mut best_other = 0u16;
    for range in media_ranges(headers) {
        let specificity = if range.kind.eq_ignore_ascii_case("text")
            && range.subtype.eq_ignore_ascii_case("html")
        {
            Some(2)
        } else if range.kind.eq_ignore_ascii_case("text") && range.subtype == "*" {
            Some(1)
        } else if range.kind == "*" && range.subtype == "*" {
            Some(0)
        } else {
            None
        };
        if let Some(s) = specificity {
            if html.is_none_or(|(best, _)| s > best) {
                html = Some((s, range.q));
            }
        }
        // A concrete non-HTML type competes with HTML; XHTML counts as HTML.
        if specificity.is_none() && !range.subtype.eq_ignore_ascii_case("xhtml+xml") {
            best_other = best_other.max(range.q);
        }
    }
    match html {
        Some((specificity, q)) if specificity >= 1 => q > 0 && q >= best_other,
        _ => false,
    }
}

/// Why a request path was refused (see the module docs): it has no unambiguous normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The target is not an absolute path (`*`, or empty).
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    /// An escape decodes to a path separator (`%2F`, `%5C`), or a raw `\` appears.
    #[error("the path contains an encoded '/' or a backslash")]
    Separator,
    /// A NUL or other control character, raw or escaped.
    #[error("the path contains a control character")]
    Control,
    /// The percent-decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// A dot segment with parameters (`..;x`), read as `..` by some servers.
    #[error("the path contains a dot segment with parameters")]
    DotParameters,
}

/// A request path in normal form: the decoded text that rules are matched against and the
/// canonical, still percent-encoded form that is forwarded. See [`normalize_path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    decoded: Cow<'a, str>,
    canonical: Cow<'a, str>,
}

impl<'a> NormalizedPath<'a> {
    /// The percent-decoded path (what skip rules and reserved routes match).
    pub fn decoded(&self) -> &str {
        &self.decoded
    }

    /// The canonical encoded path (what is forwarded); equal to the raw path when that was
    /// already canonical.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The canonical path, owned when it differs from the raw one (`None` when the raw path is
    /// forwarded unchanged).
    pub fn into_rewrite(self) -> Option<String> {
        match self.canonical {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path),
        }
    }
}

/// Normalizes a request path (see the module docs): `Err` means the path is ambiguous and the
/// request must be refused.
///
/// # Errors
/// [`PathError`] naming the first ambiguity found.
pub fn normalize_path(raw: &str) -> Result<NormalizedPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normalized(raw) {
        // The common case (every ordinary request): nothing to decode or remove, no allocation;
        // without `%` the decoded and canonical forms are the raw path.
        return Ok(NormalizedPath {
            decoded: Cow::Borrowed(raw),
            canonical: Cow::Borrowed(raw),
        });
    }
    let mut segments: Vec<(String, String)> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in raw.split('/').skip(1) {
        let (decoded, canonical) = normalize_segment(raw_segment)?;
        let before_params = decoded.split(';').next().unwrap_or("");
        if decoded.contains(';') && (before_params == "." || before_params == "..") {
            return Err(PathError::DotParameters);
        }
        trailing_slash = false;
        match decoded.as_str() {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push((decoded, canonical)),
        }
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut canonical = String::with_capacity(raw.len());
    for (d, c) in &segments {
        decoded.push('/');
        decoded.push_str(d);
        canonical.push('/');
        canonical.push_str(c);
    }
    if trailing_slash || decoded.is_empty() {
        decoded.push('/');
        canonical.push('/');
    }
    let canonical = if canonical == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(canonical)
    };
    Ok(NormalizedPath {
        decoded: Cow::Owned(decoded),
        canonical,
    })
}

/// One segment: (fully decoded text, canonical encoding). Unreserved escapes are decoded,
/// every other escape is kept in upper case, raw characters stay as they are.
///
/// Written out rather than with `percent_encoding::percent_decode`, which is lenient (a
/// malformed `%zz` passes through as text) and does not say which octets were escaped — the
/// canonical form needs both (`%3B` and `;` mean different things to some servers).
fn normalize_segment(raw: &str) -> Result<(String, String), PathError> {
    if raw.contains('\\') {
        return Err(PathError::Separator);
    }
    let bytes = raw.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut canonical: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            canonical.push(b);
            i += 1;
            continue;
        }
        let value = match bytes.get(i + 1..i + 3) {
            Some(&[hi, lo]) => hex_value(hi)
                .zip(hex_value(lo))
                .map(|(hi, lo)| hi << 4 | lo)
                .ok_or(PathError::BadEscape)?,
            _ => return Err(PathError::BadEscape),
        };
        decoded.push(value);
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            canonical.push(value);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            canonical.extend_from_slice(&[
                b'%',
                HEX[usize::from(value >> 4)],
                HEX[usize::from(value & 0xf)],
            ]);
        }
        i += 3;
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if decoded.contains(['/', '\\']) {
        return Err(PathError::Separator);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    // Raw bytes of a `&str` plus ASCII escapes: always UTF-8.
    let canonical = String::from_utf8(canonical).map_err(|_| PathError::NotUtf8)?;
    Ok((decoded, canonical))
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A path that [`normalize_path`] would return unchanged: no `%`, `\`, `;`, empty segment
/// (except a trailing `/`) or dot segment. `http::Uri` already refuses control characters.
fn is_already_normalized(raw: &str) -> bool {
    if raw.contains(['%', '\\', ';']) || raw.bytes().any(|b| b.is_ascii_control()) {
        return false;
    }
    let inner = raw[1..].strip_suffix('/').unwrap_or(&raw[1..]);
    raw == "/"
        || inner
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn settings() -> DispatchSettings {
        DispatchSettings {
            prefix: "/_wxauth".into(),
            skip: vec![
                SkipRule::new(Some(Method::GET), "/public/*").expect("rule"),
                SkipRule::new(None, "/healthz").expect("rule"),
            ],
            api_prefixes: vec!["/api".into()],
            skip_preflight: false,
        }
    }

    #[test]
    fn cors_preflight_passes_only_when_enabled() {
        let mut preflight = HeaderMap::new();
        preflight.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        preflight.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        let uri: Uri = "/api/orders".parse().unwrap();
        let protected_api = Decision::Protected {
            client: ClientKind::Api,
        };

        // Off (the default): a preflight is an anonymous request like any other.
        let off = settings();
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &preflight, true, &off),
            protected_api
        );

        let on = DispatchSettings {
            skip_preflight: true,
            ..settings()
        };
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &preflight, true, &on),
            Decision::Skip
        );
        // Not a preflight: OPTIONS without Access-Control-Request-Method or Origin, with a
        // body, or another method.
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &HeaderMap::new(), true, &on),
            protected_api
        );
        let mut no_origin = preflight.clone();
        no_origin.remove(header::ORIGIN);
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &no_origin, true, &on),
            protected_api
        );
        for (name, value) in [
            (header::CONTENT_LENGTH, "12"),
            (header::TRANSFER_ENCODING, "chunked"),
        ] {
            let mut with_body = preflight.clone();
            with_body.insert(name, HeaderValue::from_static(value));
            assert_eq!(
                dispatch(&Method::OPTIONS, &uri, &with_body, true, &on),
                protected_api
            );
        }
        let mut empty_body = preflight.clone();
        empty_body.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &empty_body, true, &on),
            Decision::Skip
        );
        assert_eq!(
            dispatch(&Method::POST, &uri, &preflight, true, &on),
            protected_api
        );
        // An HTTP/2 preflight can carry DATA frames without content-length: a body on the
        // wire is never a preflight.
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &preflight, false, &on),
            protected_api
        );
        // Reserved routes stay reserved; ambiguous paths stay protected.
        assert_eq!(
            dispatch(
                &Method::OPTIONS,
                &"/_wxauth/whoami".parse().unwrap(),
                &preflight,
                true,
                &on
            ),
            Decision::Reserved(Route::WhoAmI)
        );
        assert_eq!(
            dispatch(
                &Method::OPTIONS,
                &"/api/a%2Fb".parse().unwrap(),
                &preflight,
                true,
                &on
            ),
            Decision::Refused(PathError::Separator)
        );
    }

    fn browser_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
            ),
        );
        h
    }

    fn decide(method: Method, uri: &str, headers: &HeaderMap) -> Decision {
        let uri: Uri = uri.parse().expect("uri");
        dispatch(&method, &uri, headers, true, &settings())
    }

    #[test]
    fn normalization() {
        // (raw, decoded, canonical)
        let cases = [
            ("/", "/", "/"),
            ("/a/b", "/a/b", "/a/b"),
            ("/a//b", "/a/b", "/a/b"),
            ("/a/./b/", "/a/b/", "/a/b/"),
            ("/a/../b", "/b", "/b"),
            ("/../../b", "/b", "/b"),
            ("/public/../private", "/private", "/private"),
            ("/public/%2e%2e/private", "/private", "/private"),
            ("/public/%2E%2E/private", "/private", "/private"),
            ("/public/.%2e/private", "/private", "/private"),
            ("/%70ublic/x", "/public/x", "/public/x"),
            ("/public/..", "/", "/"),
            ("/a%7eb/%7E", "/a~b/~", "/a~b/~"),
            ("/a%20b", "/a b", "/a%20b"),
            ("/a%2bb/c+d", "/a+b/c+d", "/a%2Bb/c+d"),
            ("/%e4%b8%ad/x", "/中/x", "/%E4%B8%AD/x"),
            ("/a;v=1/b", "/a;v=1/b", "/a;v=1/b"),
            ("/a/%3b", "/a/;", "/a/%3B"),
        ];
        for (raw, decoded, canonical) in cases {
            let path = normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(path.decoded(), decoded, "{raw}");
            assert_eq!(path.canonical(), canonical, "{raw}");
            assert_eq!(
                path.clone().into_rewrite().is_none(),
                raw == canonical,
                "{raw}"
            );
        }
        let refused = [
            ("/public%2F..%2Fprivate", PathError::Separator),
            ("/public/..%2fprivate", PathError::Separator),
            ("/public/..%5cprivate", PathError::Separator),
            ("/public/..\\private", PathError::Separator),
            ("/public/..;/private", PathError::DotParameters),
            ("/public/.;x/private", PathError::DotParameters),
            ("/public/%2e%2e%3b/private", PathError::DotParameters),
            ("/public/%00", PathError::Control),
            ("/public/%0a", PathError::Control),
            ("/public/%ff", PathError::NotUtf8),
            ("/public/%zz", PathError::BadEscape),
            ("/public/%4", PathError::BadEscape),
            ("/public/%", PathError::BadEscape),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (raw, error) in refused {
            assert_eq!(normalize_path(raw), Err(error), "{raw}");
        }
        for plain in ["/", "/a", "/a/b/", "/a.b/c..d/.e"] {
            let path = normalize_path(plain).expect("plain path");
            assert!(
                matches!(path.canonical, Cow::Borrowed(p) if p == plain),
                "{plain}"
            );
            assert!(path.into_rewrite().is_none());
        }
    }

    #[test]
    fn skip_rules_match_normalized_paths_only() {
        let h = browser_headers();
        assert_eq!(decide(Method::GET, "/public/x.css", &h), Decision::Skip);
        assert_eq!(decide(Method::HEAD, "/public/x.css", &h), Decision::Skip);
        assert_eq!(decide(Method::GET, "/public", &h), Decision::Skip);
        assert_eq!(decide(Method::GET, "/public/a/../b", &h), Decision::Skip);
        for uri in [
            "/public%2F..%2Fprivate",
            "/public/..%2Fprivate",
            "/public/..;/private",
        ] {
            assert!(
                matches!(decide(Method::GET, uri, &h), Decision::Refused(_)),
                "{uri}"
            );
        }
        for uri in [
            "/public/../private",
            "/public/%2e%2e/private",
            "/public/%2E%2e/private",
            "/publicity",
            "/private?/public/x",
            "/private?x=/public/",
            "/private#/public/x",
        ] {
            assert!(
                matches!(decide(Method::GET, uri, &h), Decision::Protected { .. }),
                "{uri}"
            );
        }
        assert!(matches!(
            decide(Method::POST, "/public/x", &h),
            Decision::Protected {
                client: ClientKind::Api
            }
        ));
        assert_eq!(decide(Method::DELETE, "/healthz", &h), Decision::Skip);
    }

    #[test]
    fn reserved_routes_are_exact_under_the_prefix() {
        let h = HeaderMap::new();
        assert_eq!(
            decide(Method::GET, "/_wxauth/login?return=/x", &h),
            Decision::Reserved(Route::Login)
        );
        assert_eq!(
            decide(Method::GET, "/_wxauth/callback", &h),
            Decision::Reserved(Route::Callback)
        );
        assert_eq!(
            decide(Method::POST, "/_wxauth/events", &h),
            Decision::Reserved(Route::Events)
        );
        assert_eq!(
            decide(Method::GET, "/_wxauth/jwks.json", &h),
            Decision::Reserved(Route::Jwks)
        );
        assert_eq!(
            decide(Method::GET, "/_wxauth/health", &h),
            Decision::Reserved(Route::Health)
        );
        assert_eq!(
            decide(Method::GET, "/_wxauth/nope", &h),
            Decision::Reserved(Route::NotFound)
        );
        assert_eq!(
            decide(Method::GET, "/_wxauth", &h),
            Decision::Reserved(Route::NotFound)
        );
        assert!(matches!(
            decide(Method::GET, "/_wxauthx/login", &h),
            Decision::Protected { .. }
        ));
        assert!(matches!(
            decide(Method::GET, "/_wxauth/../private", &h),
            Decision::Protected { .. }
        ));
        assert_eq!(
            decide(Method::GET, "/private/../_wxauth/whoami", &h),
            Decision::Reserved(Route::WhoAmI)
        );
        assert!(matches!(
            decide(Method::GET, "/_wxauth/..%2Fwhoami", &h),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn browser_vs_api() {
        let mut h = browser_headers();
        assert_eq!(
            decide(Method::GET, "/private", &h),
            Decision::Protected {
                client: ClientKind::Browser
            }
        );
        assert_eq!(
            decide(Method::POST, "/private", &h),
            Decision::Protected {
                client: ClientKind::Api
            }
        );
        assert_eq!(
            decide(Method::GET, "/api/things", &h),
            Decision::Protected {
                client: ClientKind::Api
            }
        );
        assert_eq!(
            decide(Method::GET, "/apidocs", &h),
            Decision::Protected {
                client: ClientKind::Browser
            }
        );
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert_eq!(
            decide(Method::GET, "/private", &h),
            Decision::Protected {
                client: ClientKind::Api
            }
        );
    }

    fn accept(value: &'static str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(value));
        is_browser_navigation(&Method::GET, &h)
    }

    #[test]
    fn accept_q_values() {
        assert!(accept("text/html"));
        assert!(accept("text/*"));
        assert!(accept("text/html;q=0.9, application/xhtml+xml"));
        assert!(accept("application/json;q=0.5, text/html"));
        assert!(!accept("application/json, text/html;q=0.9"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json"));
        assert!(!accept("text/html;q=0"));
        assert!(!accept("text/html;q=2"));
        assert!(!accept(
            "text/html;q=0.5, */*;q=0.1, application/json;q=0.6"
        ));
        assert!(accept("TEXT/HTML; Q=1.0"));
        assert!(!is_browser_navigation(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn fetch_mode_overrides_accept() {
        let mut h = browser_headers();
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert!(!is_browser_navigation(&Method::GET, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(is_browser_navigation(&Method::GET, &h));
    }

    #[test]
    fn skip_patterns_are_validated() {
        assert_eq!(
            SkipRule::new(None, "public/*"),
            Err(SkipRuleError::NotAbsolute)
        );
        assert_eq!(SkipRule::new(None, "/pub*"), Err(SkipRuleError::Wildcard));
        assert_eq!(
            SkipRule::new(None, "/a/../b"),
            Err(SkipRuleError::NotNormalized)
        );
        assert_eq!(
            SkipRule::new(None, "/a%2fb"),
            Err(SkipRuleError::NotNormalized)
        );
        let all = SkipRule::new(None, "/*").expect("rule");
        assert!(all.matches(&Method::GET, "/anything"));
    }
}
