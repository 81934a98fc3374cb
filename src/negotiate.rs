//! Content negotiation for the answers the crate writes itself: an HTML page for a browser,
//! JSON for everyone else. One rule ([`accept_prefers_html`], q-values per RFC 9110 §12.5.1)
//! for the layer's error pages and login redirects and the proxy's 502/504 pages.
//!
//! A leaf: it knows nothing of authentication or forwarding, so `layer` and `proxy` both import
//! it without importing each other.

use http::{HeaderMap, HeaderValue, header};

/// The form of an answer of our own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A small HTML page (the client prefers `text/html`: a browser).
    Html,
    /// JSON (API clients, scripts, anything that does not prefer HTML).
    Json,
}

impl Answer {
    /// The answer a request's headers ask for ([`accept_prefers_html`]).
    pub fn for_request(headers: &HeaderMap) -> Answer {
        Answer::for_accept(headers.get_all(header::ACCEPT))
    }

    /// The answer the given `Accept` field values ask for (e.g. the one value kept from a
    /// request that has since been forwarded).
    pub fn for_accept<'a>(accept: impl IntoIterator<Item = &'a HeaderValue>) -> Answer {
        if prefers_html(accept) {
            Answer::Html
        } else {
            Answer::Json
        }
    }
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

fn media_ranges<'a>(
    accept: impl IntoIterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = MediaRange<'a>> {
    accept
        .into_iter()
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

/// Whether `Accept` prefers `text/html`: named explicitly or as `text/*`, with a q above zero
/// and at least as high as any other listed type (XHTML counts as HTML). A bare `*/*`, or no
/// `Accept` at all, is not enough.
pub fn accept_prefers_html(headers: &HeaderMap) -> bool {
    prefers_html(headers.get_all(header::ACCEPT))
}

/// [`accept_prefers_html`] over the `Accept` field values themselves.
fn prefers_html<'a>(accept: impl IntoIterator<Item = &'a HeaderValue>) -> bool {
    // q of text/html by its most specific matching range: 2 = text/html, 1 = text/*, 0 = */*.
    let mut html: Option<(u8, u16)> = None;
    let mut best_other = 0u16;
    for range in media_ranges(accept) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(accept: &'static str) -> Answer {
        Answer::for_accept([&HeaderValue::from_static(accept)])
    }

    #[test]
    fn html_only_when_preferred_by_q_value() {
        assert_eq!(answer("text/html,*/*"), Answer::Html);
        assert_eq!(answer("text/*"), Answer::Html);
        assert_eq!(answer("application/json, text/html;q=0.9"), Answer::Json);
        assert_eq!(answer("text/html;q=0"), Answer::Json);
        assert_eq!(answer("*/*"), Answer::Json);
        assert_eq!(Answer::for_accept(None), Answer::Json);
        assert_eq!(Answer::for_request(&HeaderMap::new()), Answer::Json);
    }
}
