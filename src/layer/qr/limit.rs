//! Per-client-address counters with a one-minute window: new tickets per address, and unknown
//! ids asked about per address (guessing). Bounded: at most [`TRACKED`] addresses are
//! remembered (moka evicts the least used beyond that, which only forgets counts; the store's
//! own bound still holds).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Addresses remembered at once per counter.
const TRACKED: u64 = 100_000;

/// A fixed-window counter per client address (the window starts at the address's first hit).
#[derive(Debug)]
pub(super) struct PerIp {
    counts: moka::future::Cache<Option<IpAddr>, Arc<AtomicU32>>,
    limit: u32,
}

impl PerIp {
    /// At most `limit` hits per address per minute.
    pub(super) fn per_minute(limit: u32) -> Self {
        Self {
            counts: moka::future::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_live(Duration::from_secs(60))
                .build(),
            limit,
        }
    }

    /// Counts one hit for `ip` (`None`: no known address, all such clients share one count);
    /// `false` when the address is over its limit.
    pub(super) async fn hit(&self, ip: Option<IpAddr>) -> bool {
        let count = self
            .counts
            .get_with(ip, async { Arc::new(AtomicU32::new(0)) })
            .await;
        count.fetch_add(1, Ordering::Relaxed) < self.limit
    }

    /// Whether `ip` is over its limit now, without counting.
    pub(super) async fn exceeded(&self, ip: Option<IpAddr>) -> bool {
        self.counts
            .get(&ip)
            .await
            .is_some_and(|c| c.load(Ordering::Relaxed) >= self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_per_address() {
        let limit = PerIp::per_minute(2);
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        assert!(limit.hit(a).await && limit.hit(a).await);
        assert!(!limit.exceeded(b).await);
        assert!(limit.exceeded(a).await);
        assert!(!limit.hit(a).await);
        assert!(limit.hit(b).await);
    }
}
