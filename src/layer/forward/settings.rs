//! [`ForwardAuthSettings`]: whether the forward-auth endpoints answer, whom they answer and
//! whether skip rules count for them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Settings of the forward-auth endpoints (`{prefix}/auth/request`, `auth/forward`,
/// `auth/envoy/…`), through which a front proxy asks whether a request may pass and as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    /// Whether the endpoints answer at all (default off: they are then 404 like any unknown
    /// reserved path).
    pub enabled: bool,
    /// The TCP peers that may ask (the front proxies): everyone else gets 403, whatever they
    /// send. Default loopback only (`127.0.0.0/8`, `::1`). A network that contains every
    /// address (`0.0.0.0/0`, `::/0`) is refused: the endpoints believe what the caller says
    /// about the original request, so "anyone" would let anyone choose the path that is judged.
    pub allowed_callers: Vec<IpNet>,
    /// Whether the layer's skip rules (and `skip_preflight`) let an original request pass
    /// without a session (default off: in forward-auth mode every original request needs a
    /// session, except the layer's own public endpoints under the prefix).
    pub apply_skip_rules: bool,
}

impl Default for ForwardAuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_callers: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
            apply_skip_rules: false,
        }
    }
}

impl ForwardAuthSettings {
    /// Whether `peer` may use the endpoints. An unknown peer (no `ClientAddr`) never may;
    /// IPv4-mapped IPv6 addresses (dual-stack sockets) count as the IPv4 address they carry.
    /// The crate's one trust rule ([`crate::server::is_trusted`]).
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        crate::server::is_trusted(peer, &self.allowed_callers)
    }

    /// What is wrong with these settings, if anything (checked when the layer is built):
    /// enabled without any allowed caller, or with a network that holds every address.
    pub fn problem(&self) -> Option<&'static str> {
        if !self.enabled {
            None
        } else if self.allowed_callers.is_empty() {
            Some("allowed_callers is empty: no front proxy could ask")
        } else if self.allowed_callers.iter().any(|net| net.prefix_len() == 0) {
            Some("allowed_callers must not contain a network of every address (0.0.0.0/0, ::/0)")
        } else {
            None
        }
    }
}
