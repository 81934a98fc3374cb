//! The identity JWT handed to the inner service / upstream: signing keys, claims, a per-session
//! token cache and the JWKS document.
//!
//! Knows nothing about WeChat or sessions beyond [`Identity`]. Algorithms are pinned per key
//! (RFC 8725): the issuer signs with exactly one algorithm and the JWKS publishes each key with
//! its `alg`. With no key configured, an Ed25519 key is derived from the master secret
//! (HKDF-SHA256), so every instance sharing the master secret signs with the same key.
//!
//! Header: `{"typ":"JWT","alg":…,"kid":…}`. `typ` is the registered value `JWT` rather than an
//! explicit media type because common verifiers (Nimbus/Spring, for one) reject other values by
//! default; `iss` and `aud` are what keep our token from being confused with another.
//!
//! Files: this one holds the settings, the errors and [`JwtIssuer`] (start-up, minting,
//! verifying); `keys.rs` the key material (per-algorithm loading, the derived Ed25519 key, `kid`s,
//! the previous key, the JWKS document); `claims.rs` [`Claims`]; `cache.rs` the per-session
//! token cache ([`JwtIssuer::token_for`]); `verify.rs` the one verification path (pinned
//! algorithm, `kid`, claims) shared by [`JwtIssuer::verify`] and [`JwksVerifier`], which verifies
//! with nothing but a JWKS (`wechat-oauth-proxy jwt verify`); `tests.rs` the unit tests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::identity::Identity;
use crate::ids::Scope;
use crate::secret::SecretString;

mod cache;
mod claims;
mod keys;
mod verify;

pub use cache::refresh_after;
pub use claims::Claims;
pub use verify::{Expected, JWKS_FETCH_TIMEOUT, JwksSource, JwksVerifier, MAX_JWKS_BYTES};

/// Minimum length of an HS256 secret and of the master secret used to derive a key (256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// Minimum RSA modulus size accepted for RS256, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Length of the per-session token cache key (the raw session id).
pub const CACHE_KEY_LEN: usize = 16;

/// A token cache key: the raw session id and the audience (`None`: the configured one).
type CacheKey = ([u8; CACHE_KEY_LEN], Option<Arc<str>>);

/// The signing algorithm of the identity JWT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// Ed25519 (default): small, fast, no parameters to get wrong.
    #[default]
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSA PKCS#1 v1.5 with SHA-256 (for verifiers that know nothing else; slowest to sign).
    RS256,
    /// HMAC-SHA256 with a shared secret: simplest, but every verifier can also mint tokens.
    HS256,
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = JwtError;

    /// The names `config.toml` uses: `EdDSA`, `ES256`, `RS256`, `HS256` (exact case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "EdDSA" => Ok(JwtAlgorithm::EdDSA),
            "ES256" => Ok(JwtAlgorithm::ES256),
            "RS256" => Ok(JwtAlgorithm::RS256),
            "HS256" => Ok(JwtAlgorithm::HS256),
            _ => Err(JwtError::InvalidSetting(
                "algorithm must be one of EdDSA, ES256, RS256, HS256",
            )),
        }
    }
}

impl JwtAlgorithm {
    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::EdDSA => Algorithm::EdDSA,
            JwtAlgorithm::ES256 => Algorithm::ES256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::HS256 => Algorithm::HS256,
        }
    }
}

/// How identity tokens are signed, addressed and cached.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// Signing algorithm (default EdDSA).
    pub algorithm: JwtAlgorithm,
    /// PKCS#8 PEM private key (EdDSA, ES256) or PKCS#1/PKCS#8 PEM (RS256). With EdDSA and no key,
    /// one is derived from the master secret.
    pub private_key_pem: Option<SecretString>,
    /// The previous public key (SPKI PEM), still published in the JWKS during a key rotation so
    /// upstreams keep accepting tokens signed before the switch.
    pub previous_public_key_pem: Option<String>,
    /// Shared secret for HS256 (≥ 32 bytes, random — never a human password).
    pub hs256_secret: Option<SecretString>,
    /// `iss` claim (default `wechat-oauth-proxy`).
    pub issuer: String,
    /// `aud` claim: names the upstream, which must check it exactly (default `upstream`).
    pub audience: String,
    /// Token lifetime (default 300 s).
    pub ttl: Duration,
    /// How far `iat`/`nbf` are set in the past to absorb clock skew (default 5 s).
    pub backdate: Duration,
    /// Cache a token per session and re-mint only when a fifth of its life is left (default
    /// `true`); `false` mints on every request (benchmarks).
    pub cache: bool,
    /// Maximum number of cached tokens (default 100 000).
    pub cache_capacity: u64,
    /// Text put before the token in the header value, e.g. `"Bearer "` for `Authorization`
    /// (default empty).
    pub value_prefix: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::EdDSA,
            private_key_pem: None,
            previous_public_key_pem: None,
            hs256_secret: None,
            issuer: "wechat-oauth-proxy".to_owned(),
            audience: "upstream".to_owned(),
            ttl: Duration::from_secs(300),
            backdate: Duration::from_secs(5),
            cache: true,
            cache_capacity: 100_000,
            value_prefix: String::new(),
        }
    }
}

/// Why a key could not be loaded or a token could not be produced or verified.
///
/// Messages never contain key material or tokens.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The algorithm needs a key that is not configured.
    #[error("no key configured for {0:?}")]
    MissingKey(JwtAlgorithm),
    /// A secret (HS256 or the master secret) is too short.
    #[error("secret must be at least {MIN_SECRET_LEN} bytes, got {0}")]
    SecretTooShort(usize),
    /// The configured key cannot be used with the configured algorithm.
    #[error("invalid signing key: {0}")]
    InvalidKey(&'static str),
    /// A setting other than the key is unusable (lifetime, header value prefix).
    #[error("invalid JWT setting: {0}")]
    InvalidSetting(&'static str),
    /// The previous public key is not a usable Ed25519, P-256 or RSA public key.
    #[error("invalid previous public key: {0}")]
    InvalidPreviousKey(&'static str),
    /// Signing failed.
    #[error("JWT signing failed: {0}")]
    Sign(String),
    /// The token could not be verified (tests, `verify`, [`JwksVerifier`]).
    #[error("JWT verification failed: {0}")]
    Verify(String),
    /// A JWKS document could not be loaded or holds no usable key ([`JwksVerifier`]).
    #[error("{0}")]
    Jwks(String),
    /// The signed token is not a valid header value (not expected).
    #[error("JWT is not a valid header value")]
    HeaderValue,
}

struct Inner {
    algorithm: JwtAlgorithm,
    encoding: EncodingKey,
    header: Header,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    backdate: Duration,
    value_prefix: String,
    jwks: Bytes,
    verify_keys: Vec<keys::VerifyKey>,
    /// Keyed by session and audience (`None`: the configured one).
    cache: Option<moka::future::Cache<CacheKey, cache::CachedToken>>,
}

/// Mints identity JWTs, caches them per session, and publishes the JWKS.
///
/// Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct JwtIssuer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("algorithm", &self.inner.algorithm)
            .field("kid", &self.inner.kid)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl", &self.inner.ttl)
            .field("cache", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtIssuer {
    /// Loads (or derives) the signing key, checks it signs and verifies with the configured
    /// algorithm, and renders the JWKS document once.
    pub fn new(settings: JwtSettings, master_secret: &SecretString) -> Result<Self, JwtError> {
        if settings.ttl < Duration::from_secs(1) {
            return Err(JwtError::InvalidSetting(
                "token lifetime must be at least one second",
            ));
        }
        if HeaderValue::from_str(&settings.value_prefix).is_err() {
            return Err(JwtError::InvalidSetting(
                "value prefix is not a valid header value",
            ));
        }
        let algorithm = settings.algorithm.to_jsonwebtoken();
        let (encoding, public_jwk, verify_key) = keys::signing_keys(&settings, master_secret)?;
        let keys::Published {
            kid,
            jwks,
            verify_keys,
        } = keys::publish(&settings, public_jwk, verify_key)?;

        let mut header = Header::new(algorithm);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(kid.clone());

        let cache = settings.cache.then(|| {
            moka::future::Cache::builder()
                .name("wxauth-jwt")
                .max_capacity(settings.cache_capacity)
                .time_to_live(settings.ttl)
                .build()
        });

        let issuer = Self {
            inner: Arc::new(Inner {
                algorithm: settings.algorithm,
                encoding,
                header,
                kid,
                issuer: settings.issuer,
                audience: settings.audience,
                ttl: settings.ttl,
                backdate: settings.backdate,
                value_prefix: settings.value_prefix,
                jwks,
                verify_keys,
                cache,
            }),
        };

        // Fail at startup, not at the first request, if the key does not fit the algorithm.
        let probe = Identity {
            openid: "startup-probe".into(),
            unionid: None,
            nickname: String::new(),
            avatar: String::new(),
            appid: "startup-probe".into(),
            scope: Scope::Base,
        };
        let token = issuer.mint(&probe)?;
        issuer
            .verify(&token)
            .map_err(|_| JwtError::InvalidKey("key does not verify its own signature"))?;
        Ok(issuer)
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.inner.algorithm
    }

    /// The `kid` of the current key: the RFC 7638 SHA-256 thumbprint of its public JWK (for
    /// HS256, a hash of the secret under a fixed label).
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The claims a token minted now for `identity` carries.
    pub fn claims(&self, identity: &Identity) -> Claims {
        self.claims_for(identity, None)
    }

    /// [`claims`](Self::claims) with `aud` = `audience` (`None`: the configured audience).
    pub fn claims_for(&self, identity: &Identity, audience: Option<&str>) -> Claims {
        let now = unix_now();
        let start = now.saturating_sub(self.inner.backdate.as_secs());
        Claims {
            iss: self.inner.issuer.clone(),
            aud: audience.unwrap_or(&self.inner.audience).to_owned(),
            sub: identity.openid.clone(),
            iat: start,
            nbf: start,
            exp: now.saturating_add(self.inner.ttl.as_secs()),
            openid: identity.openid.clone(),
            unionid: identity.unionid.clone(),
            nickname: identity.nickname.clone(),
            avatar: identity.avatar.clone(),
            appid: identity.appid.clone(),
            scope: identity.scope,
        }
    }

    /// Signs a fresh token for `identity` (no cache).
    pub fn mint(&self, identity: &Identity) -> Result<String, JwtError> {
        self.mint_for(identity, None)
    }

    /// Signs a fresh token for `identity` with `aud` = `audience` (`None`: the configured one).
    pub fn mint_for(
        &self,
        identity: &Identity,
        audience: Option<&str>,
    ) -> Result<String, JwtError> {
        jsonwebtoken::encode(
            &self.inner.header,
            &self.claims_for(identity, audience),
            &self.inner.encoding,
        )
        .map_err(|e| JwtError::Sign(e.kind_name()))
    }

    /// The JWKS document (`{"keys":[…]}`) with the current and, if configured, previous public
    /// key; empty for HS256. Rendered once; cloning is cheap.
    pub fn jwks_json(&self) -> Bytes {
        self.inner.jwks.clone()
    }

    /// Verifies a token we issued (current or previous key, pinned algorithm, exact `iss` and
    /// `aud`, `exp` and `nbf` checked with the default 60 s leeway). A token without `kid` is
    /// tried with the current key.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_for(token, &self.inner.audience)
    }

    /// [`verify`](Self::verify) expecting `aud` = `audience` (a tenant's own audience).
    pub fn verify_for(&self, token: &str, audience: &str) -> Result<Claims, JwtError> {
        let header = verify::read_header(token, self.inner.algorithm.to_jsonwebtoken())?;
        let kid = header.kid.as_deref().unwrap_or(&self.inner.kid);
        let key = verify::find_key(&self.inner.verify_keys, kid)?;
        verify::decode(key, token, Some(&self.inner.issuer), Some(audience))
    }

    /// The validation rules an upstream should apply (pinned algorithm, our `iss` and `aud`,
    /// `exp` and `nbf` required and checked).
    pub fn validation(&self) -> Validation {
        verify::validation(
            self.inner.algorithm.to_jsonwebtoken(),
            Some(&self.inner.issuer),
            Some(&self.inner.audience),
        )
    }

    fn header_value(
        &self,
        identity: &Identity,
        audience: Option<&str>,
    ) -> Result<HeaderValue, JwtError> {
        let token = self.mint_for(identity, audience)?;
        let text = if self.inner.value_prefix.is_empty() {
            token
        } else {
            format!("{}{token}", self.inner.value_prefix)
        };
        let mut value =
            HeaderValue::from_maybe_shared(Bytes::from(text)).map_err(|_| JwtError::HeaderValue)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    /// The error kind without any payload that could echo key material.
    fn kind_name(&self) -> String {
        let debug = format!("{:?}", self.kind());
        debug
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("unknown")
            .to_owned()
    }
}

#[cfg(test)]
mod tests;
