//! The wall clock as Unix seconds: the one helper behind session expiry, JWT `iat`/`exp`, the
//! component token's expiry and the simulator's pushes.
//!
//! A leaf module: it imports nothing from the crate, so every module may use it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
