//! `[upstream]`: how requests are forwarded to `server.upstream` ([`crate::proxy`]).

use std::time::Duration;

use serde::Deserialize;

use super::Config;
use crate::proxy::{ForwardedProto, ProxySettings};

/// `[upstream]`: forwarding rules for the sidecar's upstream (its address is `server.upstream`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Forward client header fields whose names contain `_` or `.` (nginx's
    /// `underscores_in_headers on`). Default false: they are dropped, because CGI, PHP, Puma and
    /// others fold those characters into `-`. Aliases of a field the proxy owns
    /// (`X_Forwarded_For`, `X.Real.IP`, …) are dropped even when this is true.
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
}

impl Config {
    /// `[server]` + `[upstream]` → the forwarding settings for `upstream` (`server.upstream`, or
    /// the demo upstream in development mode).
    pub fn proxy_settings(&self, upstream: url::Url) -> ProxySettings {
        let mut settings = ProxySettings::new(upstream);
        settings.response_timeout = Duration::from_secs(self.server.upstream_timeout_secs);
        settings.allow_underscores_in_headers = self.upstream.allow_underscores_in_headers;
        settings.trusted_proxies = self.server.trusted_proxies.clone();
        if self.server.public_url.scheme() == "https" {
            settings.forwarded_proto = ForwardedProto::Https;
        }
        settings
    }
}
