//! Header rules applied when a request crosses the proxy: odd header names, hop-by-hop removal,
//! the one protocol switch that is relayed (WebSocket) and the `X-Forwarded-*` family.
//!
//! These are pure functions over [`HeaderMap`] so that every rule is unit tested without sockets.
//!
//! # Hop-by-hop headers
//!
//! RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before a
//! message is forwarded and, for each connection-option in this field, remove any header or
//! trailer field(s) from the message with the same name as the connection-option, and then remove
//! the Connection header field itself (or replace it with the intermediary's own control options
//! for the forwarded message)." On top of the names listed in `Connection`, the fields that only
//! ever describe one connection are removed: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`, `HTTP2-Settings`, `Proxy-Authenticate`,
//! `Proxy-Authorization`.
//!
//! # Protocol switches
//!
//! A WebSocket handshake ([`is_websocket_upgrade`]: exactly one `Upgrade` value, `websocket` in
//! any case, and `Connection` listing `upgrade`) is the one exception: for it the proxy re-adds
//! `Connection: upgrade` and `Upgrade: websocket` as its own control options. Every other
//! `Upgrade` (`h2c`, `foo`, `websocket, h2c`, several fields) is removed like any hop-by-hop
//! field, so the upstream sees a plain request and can never be talked into switching to a
//! protocol whose later requests the proxy would not see (an h2c tunnel would carry streams for
//! any path and any header).
//!
//! # Odd header names
//!
//! Many servers fold `_` (CGI, PHP, Puma, …) and sometimes `.` into `-` when they turn header
//! names into variables, so `X_Forwarded_For` or `X.Real.IP` would reach them as the field the
//! proxy vouches for. [`remove_odd_names`] drops every client field whose name contains `_` or
//! `.` and that folds into a field the proxy owns (the hop-by-hop list, `Host`, the
//! `X-Forwarded-*` family, `Forwarded`, `X-Real-IP`, …) — always — and by default every other
//! such field too, as nginx does (`underscores_in_headers off`).
//!
//! # Forwarding metadata
//!
//! `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` are only believed when the direct peer is
//! a configured trusted proxy (lesson of oauth2-proxy GHSA-7x63-xv5r-3p2x and Traefik
//! GHSA-6qq8-5wq3-86rp): from anyone else they are replaced, or dropped when we have nothing to
//! put in their place, so an upstream never sees a client-chosen value.

use std::net::IpAddr;

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{
        CONNECTION, FORWARDED, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
        TRANSFER_ENCODING, UPGRADE,
    },
};
use ipnet::IpNet;

use crate::identity::{connection_tokens, same_header_name};

/// `Keep-Alive` (not in the `http` crate's constants).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, a non-standard but widely sent cousin of `Connection`.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the original client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the original client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `HTTP2-Settings`: the settings of an `Upgrade: h2c` request, connection-specific
/// (RFC 7540 §3.2.1) and never forwarded.
pub const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
/// The one `Upgrade` token that is relayed.
const WEBSOCKET: &str = "websocket";
/// Prefix of the forwarding-metadata family; every member is the proxy's to set.
const X_FORWARDED_PREFIX: &str = "x-forwarded-";

/// Fields that describe a single connection and never cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HTTP2_SETTINGS,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Forwarding metadata outside the `X-Forwarded-*` family that we do not set ourselves but that
/// upstreams commonly believe; dropped when the peer is not trusted, like every `X-Forwarded-*`
/// field we do not set (Traefik GHSA-6qq8-5wq3-86rp was about `X-Forwarded-Prefix`).
/// `X-Original-URL` and `X-Rewrite-URL` make some frameworks (Symfony, Laminas, IIS) route a
/// different path than the one the proxy classified.
const UNTRUSTED_DROP: [HeaderName; 4] = [
    FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Whether a field name folds into a field the proxy owns or rewrites — the hop-by-hop list,
/// `Host`, the `X-Forwarded-*` family and the fields of [`UNTRUSTED_DROP`] — compared the way
/// servers that fold `_` and `.` into `-` see it ([`same_header_name`], the identity headers'
/// rule too).
fn folds_to_owned(name: &str) -> bool {
    let family = name.len() > X_FORWARDED_PREFIX.len()
        && name
            .get(..X_FORWARDED_PREFIX.len())
            .is_some_and(|prefix| same_header_name(prefix, X_FORWARDED_PREFIX));
    family
        || HOP_BY_HOP
            .iter()
            .chain(&UNTRUSTED_DROP)
            .chain([&HOST])
            .any(|owned| same_header_name(name, owned.as_str()))
}

/// Removes the client's fields whose names contain `_` or `.`: always those that fold into a
/// field the proxy owns or rewrites (`X_Forwarded_For`, `X.Real.IP`, `Transfer_Encoding`, …), and
/// every other one too unless `allow_odd_names` (nginx's `underscores_in_headers on`). Returns
/// how many fields (values) were removed.
pub fn remove_odd_names(headers: &mut HeaderMap, allow_odd_names: bool) -> usize {
    let is_odd = |name: &HeaderName| name.as_str().bytes().any(|b| b == b'_' || b == b'.');
    // The common case (no such name) allocates nothing.
    if !headers.keys().any(is_odd) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_odd(name))
        .filter(|name| !allow_odd_names || folds_to_owned(name.as_str()))
        .cloned()
        .collect();
    doomed
        .into_iter()
        .map(|name| match headers.entry(name) {
            http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.count(),
            http::header::Entry::Vacant(_) => 0,
        })
        .sum()
}

/// The comma-separated tokens of every `Connection` field, lower-cased by [`HeaderName`] parsing.
/// Tokens that are not valid header names are skipped (they cannot name a field anyway).
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    connection_tokens(headers)
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect()
}

/// Whether the message's header asks for (a request) or agrees to (a 101 response) a WebSocket
/// switch: exactly one `Upgrade` field whose value is the single token `websocket` (any case),
/// and `Connection` listing `upgrade`. `Upgrade: h2c`, `Upgrade: websocket, h2c` or two
/// `Upgrade` fields are not. (The request's method and version are the caller's to check.)
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(UPGRADE).iter();
    let single_websocket = match (values.next(), values.next()) {
        (Some(value), None) => value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(WEBSOCKET.as_bytes()),
        _ => false,
    };
    single_websocket && connection_options(headers).contains(&UPGRADE)
}

/// Removes every hop-by-hop field (the fixed list, `Upgrade` and `HTTP2-Settings` included, and
/// each field named in `Connection`).
///
/// When `keep_websocket` is true and the message is a WebSocket switch
/// ([`is_websocket_upgrade`]), the proxy then adds `Connection: upgrade` and
/// `Upgrade: websocket` as its own control options, so that the handshake can be relayed; any
/// other upgrade is removed. Returns whether the WebSocket fields were added.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_websocket: bool) -> bool {
    let websocket = keep_websocket && is_websocket_upgrade(headers);
    for name in connection_options(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if websocket {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static(WEBSOCKET));
    }
    websocket
}

/// Whether `peer` lies in one of the trusted proxy networks. An unknown peer is never trusted.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as seen on dual-stack sockets) are compared as
/// the IPv4 address they carry.
pub fn is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.map(|ip| ip.to_canonical())
        .is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

/// What the proxy knows about the request it received, used to fill in the `X-Forwarded-*` fields.
#[derive(Clone, Debug)]
pub struct ForwardedFor<'a> {
    /// The direct peer's address (`None` when the server did not say, which counts as untrusted).
    pub peer: Option<IpAddr>,
    /// Whether `peer` is a configured trusted proxy (see [`is_trusted`]).
    pub trusted: bool,
    /// The scheme of the proxy's own listener as clients see it: `"http"` or `"https"`.
    pub proto: &'a str,
    /// The host the client asked for (its `Host` field, or the URI authority for HTTP/2).
    pub host: Option<HeaderValue>,
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
///
/// From a trusted peer the client-sent values are kept: the peer address is appended to
/// `X-Forwarded-For` (several fields are folded into one list first), and `-Proto` / `-Host` are
/// set only if the peer did not send them. From an untrusted peer every client-sent value is
/// replaced, and every other `X-Forwarded-*` field (`-Prefix`, `-Port`, `-Uri`, …), `Forwarded`,
/// `X-Real-IP`, `X-Original-URL` and `X-Rewrite-URL` are removed, since we do not vouch for them.
pub fn set_forwarded(headers: &mut HeaderMap, info: &ForwardedFor<'_>) {
    let peer = info
        .peer
        .map(|ip| ip.to_canonical())
        .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok());

    if info.trusted {
        let mut chain: Vec<u8> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let value = value.as_bytes().trim_ascii();
            if value.is_empty() {
                continue;
            }
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(value);
        }
        if let Some(peer) = &peer {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(peer.as_bytes());
        }
        // The pieces came from valid header values, so this only fails on a bug; fall back to
        // the peer alone rather than forwarding something we could not check.
        match HeaderValue::from_bytes(&chain) {
            Ok(value) if !chain.is_empty() => set_or_remove(headers, X_FORWARDED_FOR, Some(value)),
            _ => set_or_remove(headers, X_FORWARDED_FOR, peer),
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            set_or_remove(
                headers,
                X_FORWARDED_PROTO,
                HeaderValue::from_str(info.proto).ok(),
            );
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            set_or_remove(headers, X_FORWARDED_HOST, info.host.clone());
        }
    } else {
        let family: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(X_FORWARDED_PREFIX))
            .cloned()
            .collect();
        for name in family.iter().chain(&UNTRUSTED_DROP) {
            headers.remove(name);
        }
        set_or_remove(headers, X_FORWARDED_FOR, peer);
        set_or_remove(
            headers,
            X_FORWARDED_PROTO,
            HeaderValue::from_str(info.proto).ok(),
        );
        set_or_remove(headers, X_FORWARDED_HOST, info.host.clone());
    }
}

/// Replaces every value of `name` with `value`, or removes the field when there is none.
fn set_or_remove(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn removes_fixed_hop_by_hop_list() {
        let mut headers = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("content-type", "text/plain"),
            ("content-length", "3"),
        ]);
        assert!(!remove_hop_by_hop(&mut headers, false));
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "content-length"]);
    }

    #[test]
    fn removes_fields_named_in_connection_across_lines_and_case() {
        let mut headers = map(&[
            ("connection", "X-Secret-Hop ,  close"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("X-Other", "2"),
            ("x-kept", "3"),
        ]);
        remove_hop_by_hop(&mut headers, true);
        assert!(!headers.contains_key("x-secret-hop"));
        assert!(!headers.contains_key("x-other"));
        assert!(!headers.contains_key("connection"));
        assert_eq!(values(&headers, "x-kept"), ["3"]);
    }

    #[test]
    fn invalid_connection_tokens_are_ignored() {
        let mut headers = map(&[
            ("connection", "bad token, ,x-a"),
            ("x-a", "1"),
            ("x-b", "2"),
        ]);
        remove_hop_by_hop(&mut headers, false);
        assert!(!headers.contains_key("x-a"));
        assert!(headers.contains_key("x-b"));
    }

    #[test]
    fn websocket_is_kept_only_when_asked_and_requested() {
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut kept = map(&upgrade);
        assert!(is_websocket_upgrade(&kept));
        assert!(remove_hop_by_hop(&mut kept, true));
        assert_eq!(values(&kept, "connection"), ["upgrade"]);
        assert_eq!(values(&kept, "upgrade"), ["websocket"]);
        assert!(kept.contains_key("sec-websocket-key"));

        let mut dropped = map(&upgrade);
        assert!(!remove_hop_by_hop(&mut dropped, false));
        assert!(!dropped.contains_key("connection"));
        assert!(!dropped.contains_key("upgrade"));

        // `Upgrade` without `Connection: upgrade` is not an upgrade request.
        let mut lone = map(&[("upgrade", "websocket")]);
        assert!(!is_websocket_upgrade(&lone));
        assert!(!remove_hop_by_hop(&mut lone, true));
        assert!(!lone.contains_key("upgrade"));
    }

    #[test]
    fn every_other_upgrade_is_removed() {
        let odd: [&[(&str, &str)]; 6] = [
            &[
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ],
            &[("upgrade", "foo")],
            &[("upgrade", "websocket, h2c")],
            &[("upgrade", "h2c, websocket")],
            &[("upgrade", "websocket"), ("upgrade", "h2c")],
            &[("upgrade", "websocket/13")],
        ];
        for fields in odd {
            let mut headers = map(&[("connection", "Upgrade, HTTP2-Settings")]);
            for (name, value) in fields {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert!(!is_websocket_upgrade(&headers), "{fields:?}");
            assert!(!remove_hop_by_hop(&mut headers, true), "{fields:?}");
            assert!(headers.is_empty(), "{fields:?} left {headers:?}");
        }
        // HTTP2-Settings goes even when `Connection` does not name it.
        let mut headers = map(&[("http2-settings", "AAMAAABk"), ("x-kept", "1")]);
        remove_hop_by_hop(&mut headers, true);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    const ALIASES: [&str; 12] = [
        "x_forwarded_for",
        "x.forwarded.for",
        "x-forwarded_for",
        "x_forwarded-host",
        "x.forwarded.proto",
        "x_forwarded_prefix",
        "x_forwarded_anything",
        "x-real_ip",
        "x.real.ip",
        "transfer_encoding",
        "http2_settings",
        "x_original_url",
    ];

    #[test]
    fn aliases_of_owned_fields_are_always_removed() {
        for allow in [false, true] {
            let mut headers = HeaderMap::new();
            for alias in ALIASES {
                headers.append(
                    HeaderName::from_bytes(alias.as_bytes()).unwrap(),
                    HeaderValue::from_static("6.6.6.6"),
                );
            }
            headers.append("x-real_ip", HeaderValue::from_static("7.7.7.7"));
            headers.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
            headers.insert("x_custom", HeaderValue::from_static("1"));
            headers.insert("x.custom", HeaderValue::from_static("2"));
            headers.insert("x-custom", HeaderValue::from_static("3"));
            let removed = remove_odd_names(&mut headers, allow);
            let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            if allow {
                assert_eq!(removed, ALIASES.len() + 1);
                assert_eq!(
                    left,
                    ["x-custom", "x-forwarded-for", "x.custom", "x_custom"]
                );
            } else {
                assert_eq!(removed, ALIASES.len() + 3);
                assert_eq!(left, ["x-custom", "x-forwarded-for"]);
            }
        }
    }

    #[test]
    fn ordinary_names_are_untouched() {
        let mut headers = map(&[("x-forwarded-for", "1.1.1.1"), ("accept", "*/*")]);
        assert_eq!(remove_odd_names(&mut headers, false), 0);
        assert_eq!(headers.len(), 2);
        // Folding only maps `_`/`.` onto `-`, never onto letters.
        assert!(!folds_to_owned("x_forwardes_for"));
        assert!(
            folds_to_owned("x_forwarded_fox"),
            "the whole X-Forwarded-* family is owned"
        );
        assert!(!folds_to_owned("x_real_ipx"));
        assert!(!folds_to_owned("x_forwarded_"));
        assert!(folds_to_owned("keep_alive"));
        assert!(folds_to_owned("x.real_ip"));
    }

    #[test]
    fn trust_matches_cidrs_and_mapped_addresses() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_trusted(Some("10.1.2.3".parse().unwrap()), &nets));
        assert!(is_trusted(Some("::ffff:10.1.2.3".parse().unwrap()), &nets));
        assert!(is_trusted(Some("::1".parse().unwrap()), &nets));
        assert!(!is_trusted(Some("11.0.0.1".parse().unwrap()), &nets));
        assert!(!is_trusted(None, &nets));
        assert!(!is_trusted(Some("10.1.2.3".parse().unwrap()), &[]));
    }

    fn info(peer: Option<&str>, trusted: bool) -> ForwardedFor<'static> {
        ForwardedFor {
            peer: peer.map(|p| p.parse().unwrap()),
            trusted,
            proto: "https",
            host: Some(HeaderValue::from_static("app.example.com")),
        }
    }

    fn spoofed() -> HeaderMap {
        map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6;host=evil.example"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
        ])
    }

    #[test]
    fn untrusted_peer_values_are_replaced() {
        let mut headers = spoofed();
        set_forwarded(&mut headers, &info(Some("203.0.113.9"), false));
        assert_eq!(values(&headers, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(values(&headers, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&headers, "x-forwarded-host"), ["app.example.com"]);
        assert!(!headers.contains_key("forwarded"));
        assert!(!headers.contains_key("x-forwarded-prefix"));
        assert!(!headers.contains_key("x-forwarded-uri"));
        assert!(!headers.contains_key("x-real-ip"));
        assert!(!headers.contains_key("x-original-url"));
    }

    #[test]
    fn unknown_peer_drops_client_chain() {
        let mut headers = spoofed();
        let mut unknown = info(None, false);
        unknown.host = None;
        set_forwarded(&mut headers, &unknown);
        assert!(!headers.contains_key("x-forwarded-for"));
        assert!(!headers.contains_key("x-forwarded-host"));
        assert_eq!(values(&headers, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn trusted_peer_values_are_kept_and_appended() {
        let mut headers = spoofed();
        set_forwarded(&mut headers, &info(Some("::ffff:10.0.0.2"), true));
        assert_eq!(
            values(&headers, "x-forwarded-for"),
            ["6.6.6.6, 7.7.7.7, 10.0.0.2"]
        );
        assert_eq!(values(&headers, "x-forwarded-proto"), ["gopher"]);
        assert_eq!(values(&headers, "x-forwarded-host"), ["evil.example"]);
        assert!(headers.contains_key("forwarded"));
    }

    #[test]
    fn trusted_peer_without_values_gets_ours() {
        let mut headers = HeaderMap::new();
        set_forwarded(&mut headers, &info(Some("2001:db8::1"), true));
        assert_eq!(values(&headers, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(values(&headers, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&headers, "x-forwarded-host"), ["app.example.com"]);
    }
}
