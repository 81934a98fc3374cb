//! Who is asking: a browser navigation (which may be redirected into the login flow) or an API
//! client (which gets 401 JSON), and whether a request is a CORS preflight. Read from the
//! method and headers only.

use http::{HeaderMap, Method, header};

/// Who is asking, for the "no session" answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A top-level GET/HEAD navigation that prefers HTML: gets a 302 into the login flow.
    Browser,
    /// Anything else (XHR/fetch, API paths, non-GET methods): gets 401 JSON with `login_url`, so a
    /// POST never silently loses its body to a redirect.
    Api,
}

/// A CORS preflight as browsers send it (Fetch standard, "CORS-preflight fetch"): `OPTIONS`
/// with `Origin` and `Access-Control-Request-Method`, and no body. Anything announcing a body
/// is not a preflight; callers must also check that the body really is empty on the wire
/// (an HTTP/2 request can send DATA frames without `content-length`), as [`dispatch`](super::dispatch) does.
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
