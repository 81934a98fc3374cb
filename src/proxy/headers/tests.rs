use super::*;
use ipnet::IpNet;

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

#[test]
fn the_peer_value_kept_per_thread_follows_the_peer() {
    // The same peer twice (the kept value), another one, then the first again, then its
    // IPv4-mapped spelling: each request names its own peer.
    for peer in [
        "203.0.113.9",
        "203.0.113.9",
        "198.51.100.7",
        "2001:db8::1",
        "203.0.113.9",
        "::ffff:203.0.113.9",
    ] {
        let mut headers = HeaderMap::new();
        set_forwarded(&mut headers, &info(Some(peer), false));
        let expected = peer.trim_start_matches("::ffff:");
        assert_eq!(values(&headers, "x-forwarded-for"), [expected], "{peer}");
    }
}
