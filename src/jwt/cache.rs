//! The per-session token cache: a hit is a lookup and a reference-count increment, a miss (or a
//! token past four fifths of its life) mints a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::{CACHE_KEY_LEN, JwtError, JwtIssuer};
use crate::identity::Identity;

#[derive(Clone)]
pub(super) struct CachedToken {
    value: HeaderValue,
    /// Re-mint from this instant on (when a fifth of the token's life is left).
    refresh_at: Instant,
}

impl JwtIssuer {
    /// The header value for `identity` in the session `cache_key`: a cached token while more
    /// than a fifth of its life is left, otherwise a freshly minted one.
    ///
    /// A hit costs a cache lookup and a reference-count increment (no allocation). Sessions are
    /// immutable (a new login gets a new id), so the identity cannot change under a key; call
    /// [`JwtIssuer::invalidate`] on logout.
    pub async fn token_for(
        &self,
        cache_key: &[u8; CACHE_KEY_LEN],
        identity: &Identity,
    ) -> Result<HeaderValue, JwtError> {
        self.token_for_audience(cache_key, identity, None).await
    }

    /// [`token_for`](Self::token_for) with `aud` = `audience` instead of the configured
    /// audience (a tenant's own audience; `None`: the configured one). The cache key is the
    /// session *and* the audience, so a token is never served for another audience.
    pub async fn token_for_audience(
        &self,
        cache_key: &[u8; CACHE_KEY_LEN],
        identity: &Identity,
        audience: Option<&Arc<str>>,
    ) -> Result<HeaderValue, JwtError> {
        let Some(cache) = &self.inner.cache else {
            return self.header_value(identity, audience.map(|a| &**a));
        };
        let now = Instant::now();
        let key = (*cache_key, audience.cloned());
        if let Some(hit) = cache.get(&key).await {
            if now < hit.refresh_at {
                return Ok(hit.value);
            }
        }
        let value = self.header_value(identity, audience.map(|a| &**a))?;
        let refresh_at = now + refresh_after(self.inner.ttl);
        cache
            .insert(
                key,
                CachedToken {
                    value: value.clone(),
                    refresh_at,
                },
            )
            .await;
        Ok(value)
    }

    /// Drops the cached token of a session (logout).
    pub async fn invalidate(&self, cache_key: &[u8; CACHE_KEY_LEN]) {
        self.invalidate_audience(cache_key, None).await;
    }

    /// Drops the cached token of a session minted for `audience` (see
    /// [`token_for_audience`](Self::token_for_audience)).
    pub async fn invalidate_audience(
        &self,
        cache_key: &[u8; CACHE_KEY_LEN],
        audience: Option<&Arc<str>>,
    ) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(&(*cache_key, audience.cloned())).await;
        }
    }
}

/// How long a cached token is served before it is re-minted: until a fifth of its life is left.
pub fn refresh_after(ttl: Duration) -> Duration {
    ttl.saturating_sub(ttl / 5)
}
