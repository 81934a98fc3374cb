//! Connection and call helpers shared by the Redis backends (feature `redis`): the session store
//! (`session::redis`) and the platform store (`wechat::redis`).
//!
//! A leaf module so that `session/` and `wechat/` share the code without importing each other.
//! Every failure comes back as a message that is safe to log and to put in an error: the
//! operation, the error category and the server's error code — never a key, a value, the
//! server's detail text or the connection URL (which may hold a password). Each backend wraps
//! the message in its own `StoreError::Backend`.
#![cfg(feature = "redis")]

use std::future::Future;
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Default bound on every Redis call (connect included), for both backends.
pub(crate) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects with a reconnecting, multiplexed connection whose connect and response timeouts
/// are `op_timeout`; the whole connect (retries included) is bounded by twice that, so an
/// unreachable server is a prompt startup error rather than a hang.
///
/// # Errors
/// A safe description (see the module docs) when the URL is invalid or no connection is made
/// in time.
pub(crate) async fn connect(url: &str, op_timeout: Duration) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| describe("open", &e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let limit = op_timeout.saturating_mul(2);
    match tokio::time::timeout(limit, ConnectionManager::new_with_config(client, config)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(describe("connect", &e)),
        Err(_) => Err(format!("redis connect: no connection within {limit:?}")),
    }
}

/// Runs one Redis call named `op` under `op_timeout`, so a hung server fails the call (closed)
/// instead of stalling the request that made it.
///
/// # Errors
/// A safe description (see the module docs) when the call fails or does not answer in time.
pub(crate) async fn bounded<T>(
    op_timeout: Duration,
    op: &str,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, String> {
    match tokio::time::timeout(op_timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(describe(op, &e)),
        Err(_) => Err(format!("redis {op}: no reply within {op_timeout:?}")),
    }
}

/// `PING` on `conn` under `op_timeout`: the readiness probe of both backends.
///
/// # Errors
/// A safe description (see the module docs) when the server does not answer `PONG` in time.
pub(crate) async fn ping(conn: &ConnectionManager, op_timeout: Duration) -> Result<(), String> {
    let mut conn = conn.clone();
    let reply: String = bounded(
        op_timeout,
        "ping",
        redis::cmd("PING").query_async(&mut conn),
    )
    .await?;
    if reply == "PONG" {
        Ok(())
    } else {
        Err("redis ping: unexpected reply".to_owned())
    }
}

/// A description of a Redis failure that cannot contain a secret: the operation, the error
/// category and the server's error code — never the server's detail text, a key, or the URL.
pub(crate) fn describe(op: &str, e: &RedisError) -> String {
    let mut text = format!("redis {op}: {}", e.category());
    if let Some(code) = e.code() {
        text.push_str(" (");
        text.push_str(code);
        text.push(')');
    }
    if e.is_timeout() {
        text.push_str(", timed out");
    } else if e.is_connection_refusal() {
        text.push_str(", connection refused");
    } else if e.is_connection_dropped() {
        text.push_str(", connection dropped");
    }
    text
}

/// Whole milliseconds, at least 1: Redis refuses a zero expiry (`PX 0`), and a sub-millisecond
/// TTL must still expire rather than be rejected.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn open_errors_do_not_echo_the_url() {
        for url in [
            "redis://:hunter2-password@[::1:6379/0",
            "redis://:hunter2@[::1:6379/",
        ] {
            let text = redis::Client::open(url)
                .err()
                .map(|e| describe("open", &e))
                .unwrap_or_default();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.starts_with("redis open: "), "{text}");
        }
    }

    #[tokio::test]
    async fn connect_errors_do_not_echo_the_url() {
        let text = connect("redis://:hunter2@[::1:6379/", Duration::from_millis(100))
            .await
            .err()
            .unwrap_or_default();
        assert!(text.starts_with("redis open: "), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn a_call_that_never_answers_times_out_with_its_name() {
        let never = std::future::pending::<Result<(), RedisError>>();
        let text = bounded(Duration::from_millis(10), "load thing", never)
            .await
            .err()
            .unwrap_or_default();
        assert!(
            text.starts_with("redis load thing: no reply within"),
            "{text}"
        );
    }
}
