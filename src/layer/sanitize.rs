//! Request rules applied before classification, on every path: no method the proxy must never
//! forward, and no protocol switch that was not authorized.
//!
//! Only a WebSocket handshake may switch protocols, and only as an ordinary `GET` that then goes
//! through the same checks as any request. Every other `Upgrade` (`h2c`, arbitrary tokens, a
//! list) and `HTTP2-Settings` are removed — the request continues as a plain HTTP/1.1 request,
//! which is what a client offering `h2c` expects when the server declines — so an upstream that
//! implements the h2c upgrade can never be turned into a tunnel that serves further requests
//! past the layer.
//!
//! A request let through by a skip rule is let through for its method: the method-override
//! headers that frameworks honour (`X-HTTP-Method-Override` in Laravel, Express's
//! method-override, Symfony, ASP.NET; any spelling) are removed from it, so `GET /public/x` with
//! `X-HTTP-Method-Override: DELETE` cannot become a `DELETE` the skip rule never allowed.

use http::{HeaderMap, HeaderName, Method, Version, header};

use crate::identity::{connection_tokens, retain_connection_tokens, same_header_name};

/// `HTTP2-Settings`, sent with an `h2c` upgrade offer (RFC 7540 §3.2.1).
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether the request is a WebSocket handshake the layer may let through: `GET` over
/// HTTP/1.1, one `Upgrade` field whose only token is `websocket`, and `Connection` listing
/// `upgrade`.
pub(crate) fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let only_websocket = match (upgrades.next(), upgrades.next()) {
        (Some(value), None) => value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    *method == Method::GET
        && version == Version::HTTP_11
        && only_websocket
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Method-override headers (compared like identity headers: any case, `_` or `.` for `-`).
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Removes every method-override header (see the module docs); returns how many names.
pub(crate) fn strip_method_overrides(headers: &mut HeaderMap) -> usize {
    let is_override = |name: &HeaderName| {
        METHOD_OVERRIDES
            .iter()
            .any(|o| same_header_name(o, name.as_str()))
    };
    if !headers.keys().any(is_override) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| is_override(n)).cloned().collect();
    for name in &doomed {
        headers.remove(name);
    }
    doomed.len()
}

/// Removes every protocol-switch request that is not a [WebSocket
/// handshake](is_websocket_upgrade): the `Upgrade` and `HTTP2-Settings` fields and the
/// `Connection` tokens naming them. Returns whether anything was removed.
pub(crate) fn strip_unauthorized_upgrade(
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
) -> bool {
    let offered = headers.contains_key(header::UPGRADE)
        || headers.contains_key(HTTP2_SETTINGS)
        || connection_tokens(headers).any(|t| {
            t.eq_ignore_ascii_case(b"upgrade") || t.eq_ignore_ascii_case(b"http2-settings")
        });
    if !offered || is_websocket_upgrade(method, version, headers) {
        return false;
    }
    headers.remove(header::UPGRADE);
    headers.remove(HTTP2_SETTINGS);
    retain_connection_tokens(headers, |t| {
        !t.eq_ignore_ascii_case(b"upgrade") && !t.eq_ignore_ascii_case(b"http2-settings")
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn method_overrides_are_removed_in_every_spelling() {
        let mut h = headers(&[
            ("x-http-method-override", "DELETE"),
            ("X_HTTP_Method", "PUT"),
            ("x.method.override", "PATCH"),
            ("x-http-method-overrides", "kept"),
        ]);
        assert_eq!(strip_method_overrides(&mut h), 3);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-http-method-overrides"));
    }

    #[test]
    fn only_a_websocket_get_keeps_its_upgrade() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        let mut kept = ws.clone();
        assert!(!strip_unauthorized_upgrade(
            &Method::GET,
            Version::HTTP_11,
            &mut kept
        ));
        assert_eq!(kept, ws);

        for (method, version, fields) in [
            (
                Method::GET,
                Version::HTTP_11,
                vec![
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAMAAABkAAQAAP__"),
                ],
            ),
            (
                Method::GET,
                Version::HTTP_11,
                vec![("connection", "upgrade"), ("upgrade", "foo")],
            ),
            (
                Method::GET,
                Version::HTTP_11,
                vec![("connection", "upgrade"), ("upgrade", "websocket, h2c")],
            ),
            (
                Method::GET,
                Version::HTTP_11,
                vec![
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("upgrade", "h2c"),
                ],
            ),
            (
                Method::POST,
                Version::HTTP_11,
                vec![("connection", "upgrade"), ("upgrade", "websocket")],
            ),
            (
                Method::GET,
                Version::HTTP_10,
                vec![("connection", "upgrade"), ("upgrade", "websocket")],
            ),
            (Method::GET, Version::HTTP_11, vec![("upgrade", "h2c")]),
            (
                Method::GET,
                Version::HTTP_11,
                vec![("http2-settings", "AAMAAABkAAQAAP__")],
            ),
        ] {
            let mut h = headers(&fields);
            h.append("connection", HeaderValue::from_static("close"));
            assert!(
                strip_unauthorized_upgrade(&method, version, &mut h),
                "{fields:?}"
            );
            assert!(h.get(header::UPGRADE).is_none(), "{fields:?}");
            assert!(h.get(HTTP2_SETTINGS).is_none(), "{fields:?}");
            let connection: Vec<_> = h.get_all(header::CONNECTION).iter().collect();
            assert_eq!(connection, ["close"], "{fields:?}");
        }
        let mut plain = headers(&[("connection", "close")]);
        assert!(!strip_unauthorized_upgrade(
            &Method::GET,
            Version::HTTP_11,
            &mut plain
        ));
    }
}
