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
    // One pass over the names present finds what to remove (usually nothing, or `Connection`
    // and what it names), instead of a hashed removal of every name on the list.
    let listed = if headers.contains_key(CONNECTION) {
        connection_options(headers)
    } else {
        Vec::new()
    };
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || listed.contains(name))
        .cloned()
        .collect();
    if !present.is_empty() {
        // In the order of the rules (the fields `Connection` names, then the list), so that the
        // fields left keep the order they always had.
        for name in listed.iter().chain(&HOP_BY_HOP) {
            if present.contains(name) {
                headers.remove(name);
            }
        }
    }
    if websocket {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static(WEBSOCKET));
    }
    websocket
}

/// Whether the direct peer is a trusted proxy: the crate's one trust rule, shared with the
/// layer's `X-Request-Id` check.
pub use crate::server::is_trusted;

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
    let peer = info.peer.and_then(peer_value);

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
            set_or_remove(headers, X_FORWARDED_PROTO, proto_value(info.proto));
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            set_or_remove(headers, X_FORWARDED_HOST, info.host.clone());
        }
    } else {
        // Only the names present are removed (one pass over them, no hashed removal of every
        // name that could be there); the three set below replace any client value anyway.
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                UNTRUSTED_DROP.contains(name)
                    || (name.as_str().starts_with(X_FORWARDED_PREFIX)
                        && ![X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST].contains(name))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        set_or_remove(headers, X_FORWARDED_FOR, peer);
        set_or_remove(headers, X_FORWARDED_PROTO, proto_value(info.proto));
        set_or_remove(headers, X_FORWARDED_HOST, info.host.clone());
    }
}

/// The `X-Forwarded-Proto` value: the two the proxy uses are static (no allocation).
fn proto_value(proto: &str) -> Option<HeaderValue> {
    match proto {
        "http" => Some(HeaderValue::from_static("http")),
        "https" => Some(HeaderValue::from_static("https")),
        other => HeaderValue::from_str(other).ok(),
    }
}

/// The peer's address as a header value (IPv4-mapped IPv6 as IPv4), formatted once per peer
/// and thread: the last one is kept, and the peers of a proxy are few (often one: the load
/// balancer), so most requests reuse it.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let peer = peer.to_canonical();
    LAST.with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return Some(value.clone());
            }
        }
        let value = HeaderValue::from_str(&peer.to_string()).ok()?;
        *last = Some((peer, value.clone()));
        Some(value)
    })
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
mod tests;
