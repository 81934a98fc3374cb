//! What the bridge learns about the two devices from their requests: the client address (the
//! TCP peer, or the address a trusted front proxy forwarded), a short browser/OS summary of the
//! desktop, whether a User-Agent is WeChat's, and the masked address the phone is shown.

use std::net::IpAddr;

use http::{HeaderMap, header, request::Parts};

use crate::server::{ClientAddr, is_trusted};

/// The client's address: the TCP peer, or — when the peer is one of `trusted` — the last
/// address of its `X-Forwarded-For` (the one the trusted proxy saw). `None` outside a server
/// that records peers.
pub(super) fn client_ip(parts: &Parts, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ClientAddr>()
        .map(|addr| addr.0.ip().to_canonical());
    if is_trusted(peer, trusted) {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|last| last.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return Some(ip.to_canonical());
        }
    }
    peer
}

/// Whether the request comes from WeChat's built-in browser (phone or PC client).
pub(super) fn is_wechat(headers: &HeaderMap) -> bool {
    user_agent(headers).contains("MicroMessenger")
}

/// Whether the request carries a cookie named `name` (any value).
pub(super) fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .any(|c| c.name() == name)
}

fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// "Chrome · Windows": the browser and the system named by a User-Agent, from a fixed list
/// (so the phone is never shown text the desktop chose).
pub(super) fn agent_summary(headers: &HeaderMap) -> String {
    let ua = user_agent(headers);
    // Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .iter()
    .find(|(mark, _)| ua.contains(mark))
    .map_or("浏览器 browser", |(_, name)| name);
    let system = [
        ("Windows", "Windows"),
        ("CrOS", "ChromeOS"),
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(mark, _)| ua.contains(mark))
    .map_or("未知系统 unknown system", |(_, name)| name);
    format!("{browser} · {system}")
}

/// The address as the phone is shown it: IPv4 without its last octet (`203.0.113.*`), IPv6
/// with its first three groups only.
pub(super) fn masked(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.*")
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:*", s[0], s[1], s[2])
        }
        Err(_) => "?".to_owned(),
    }
}

/// Whether two recorded addresses are on the same network: the same IPv4 address (a NAT's
/// public address), or the same IPv6 /64. Unknown addresses are never "the same".
pub(super) fn same_network(a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(Ok(a)), Some(Ok(b))) = (a.map(str::parse::<IpAddr>), b.map(str::parse::<IpAddr>))
    else {
        return false;
    };
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a == b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ua(s: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, HeaderValue::from_static(s));
        h
    }

    #[test]
    fn summaries_name_browser_and_system() {
        let edge = ua(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0",
        );
        assert_eq!(agent_summary(&edge), "Edge · Windows");
        let safari = ua(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        );
        assert_eq!(agent_summary(&safari), "Safari · macOS");
        assert!(agent_summary(&HeaderMap::new()).contains("unknown"));
        assert!(is_wechat(&ua("Mozilla/5.0 (iPhone) MicroMessenger/8.0.50")));
        assert!(!is_wechat(&edge));
    }

    #[test]
    fn addresses_are_masked_and_compared_by_network() {
        assert_eq!(masked("203.0.113.7"), "203.0.113.*");
        assert_eq!(masked("2001:db8:1:2::5"), "2001:db8:1:*");
        assert!(same_network(Some("203.0.113.7"), Some("203.0.113.7")));
        assert!(!same_network(Some("203.0.113.7"), Some("203.0.113.8")));
        assert!(same_network(
            Some("2001:db8:1:2::5"),
            Some("2001:db8:1:2::9")
        ));
        assert!(!same_network(None, Some("203.0.113.7")));
    }
}
