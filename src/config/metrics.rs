//! `[metrics]`: the Prometheus endpoint, on a listener of its own (off unless `listen` is set).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, Problems};
use crate::metrics::TENANT_LABEL_MAX_TENANTS;
use crate::wechat::tenants::TenantMode;

/// `[metrics]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (e.g. `127.0.0.1:9464`); absent (default): no metrics
    /// listener. Never the public listener: keep it on loopback or a private network.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Label the login and session series with the tenant's appid (default off). Refused in
    /// dynamic tenant mode and with more than
    /// [`TENANT_LABEL_MAX_TENANTS`](crate::metrics::TENANT_LABEL_MAX_TENANTS) configured
    /// tenants, where the number of series would not be bounded.
    #[serde(default)]
    pub tenant_label: bool,
}

impl MetricsConfig {
    pub(super) fn check(&self, config: &Config, problems: &mut Problems) {
        if let Some(listen) = self.listen
            && listen == config.server.listen
        {
            problems.bad(
                "metrics.listen",
                "must differ from server.listen: metrics are never served on the public listener",
            );
        }
        if self.tenant_label
            && let Some(tenants) = &config.tenants
        {
            if tenants.mode == TenantMode::Dynamic {
                problems.bad(
                    "metrics.tenant_label",
                    "not available in dynamic tenant mode (the number of tenants is not bounded)",
                );
            } else if tenants.authorizers.len() > TENANT_LABEL_MAX_TENANTS {
                problems.bad(
                    "metrics.tenant_label",
                    format!(
                        "at most {TENANT_LABEL_MAX_TENANTS} tenants may be named in metric labels \
                         ({} are configured)",
                        tenants.authorizers.len()
                    ),
                );
            }
        }
    }
}
