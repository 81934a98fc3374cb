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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, KeypairBytes};
use hkdf::Hkdf;
use http::HeaderValue;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::identity::Identity;
use crate::ids::{AppId, OpenId, Scope, UnionId};
use crate::secret::SecretString;

/// Minimum length of an HS256 secret and of the master secret used to derive a key (256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// Minimum RSA modulus size accepted for RS256, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// HKDF `info` for the derived Ed25519 signing key (distinct from the cookie key's).
const DERIVED_KEY_INFO: &[u8] = b"wechat-oauth-proxy v1 jwt ed25519 signing key";

/// Length of the per-session token cache key (the raw session id).
pub const CACHE_KEY_LEN: usize = 16;

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
    /// The token could not be verified (tests, `verify`).
    #[error("JWT verification failed: {0}")]
    Verify(String),
    /// The signed token is not a valid header value (not expected).
    #[error("JWT is not a valid header value")]
    HeaderValue,
}

/// The claims of the identity JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer ([`JwtSettings::issuer`]).
    pub iss: String,
    /// Audience ([`JwtSettings::audience`]).
    pub aud: String,
    /// Subject: the openid.
    pub sub: OpenId,
    /// Issued at (unix seconds, back-dated).
    pub iat: u64,
    /// Not before (unix seconds, back-dated).
    pub nbf: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// The user's openid under the authorizing official account.
    pub openid: OpenId,
    /// The user's unionid; absent (not `null`) when WeChat gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<UnionId>,
    /// Nickname (UTF-8; CJK and emoji as is).
    pub nickname: String,
    /// Avatar URL (may be empty).
    pub avatar: String,
    /// Appid of the authorizing official account.
    pub appid: AppId,
    /// Granted scope.
    pub scope: Scope,
}

#[derive(Clone)]
struct CachedToken {
    value: HeaderValue,
    /// Re-mint from this instant on (when a fifth of the token's life is left).
    refresh_at: Instant,
}

/// A verification key we publish (current or previous).
struct VerifyKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
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
    verify_keys: Vec<VerifyKey>,
    cache: Option<moka::future::Cache<[u8; CACHE_KEY_LEN], CachedToken>>,
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
        let (encoding, public_jwk, verify_key) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = settings
                    .hs256_secret
                    .as_ref()
                    .ok_or(JwtError::MissingKey(JwtAlgorithm::HS256))?;
                let bytes = secret.expose_secret().as_bytes();
                if bytes.len() < MIN_SECRET_LEN {
                    return Err(JwtError::SecretTooShort(bytes.len()));
                }
                (
                    EncodingKey::from_secret(bytes),
                    None,
                    DecodingKey::from_secret(bytes),
                )
            }
            JwtAlgorithm::EdDSA => {
                let signing = match &settings.private_key_pem {
                    Some(pem) => {
                        let der = EncodingKey::from_ed_pem(pem.expose_secret().as_bytes())
                            .map_err(|_| {
                                JwtError::InvalidKey("not a PKCS#8 Ed25519 private key")
                            })?;
                        SigningKey::from_pkcs8_der(der.as_bytes())
                            .map_err(|_| JwtError::InvalidKey("not a PKCS#8 Ed25519 private key"))?
                    }
                    None => derive_ed25519(master_secret)?,
                };
                // jsonwebtoken's JWK export expects the 48-byte PKCS#8 v1 form (no public key).
                let der = KeypairBytes {
                    secret_key: signing.to_bytes(),
                    public_key: None,
                }
                .to_pkcs8_der()
                .map_err(|_| JwtError::InvalidKey("Ed25519 key could not be encoded"))?;
                let encoding = EncodingKey::from_ed_der(der.as_bytes());
                let jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(|_| {
                    JwtError::InvalidKey("Ed25519 public key could not be exported")
                })?;
                let public = signing.verifying_key();
                let decoding =
                    DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public.as_bytes()))
                        .map_err(|_| {
                            JwtError::InvalidKey("Ed25519 public key could not be loaded")
                        })?;
                (encoding, Some(jwk), decoding)
            }
            JwtAlgorithm::ES256 => {
                let pem = settings
                    .private_key_pem
                    .as_ref()
                    .ok_or(JwtError::MissingKey(JwtAlgorithm::ES256))?;
                let encoding = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes())
                    .map_err(|_| JwtError::InvalidKey("not a PKCS#8 P-256 private key"))?;
                let jwk = Jwk::from_encoding_key(&encoding, algorithm)
                    .map_err(|_| JwtError::InvalidKey("not a PKCS#8 P-256 private key"))?;
                let decoding = DecodingKey::from_jwk(&jwk)
                    .map_err(|_| JwtError::InvalidKey("P-256 public key could not be loaded"))?;
                (encoding, Some(jwk), decoding)
            }
            JwtAlgorithm::RS256 => {
                let pem = settings
                    .private_key_pem
                    .as_ref()
                    .ok_or(JwtError::MissingKey(JwtAlgorithm::RS256))?;
                let encoding = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
                    .map_err(|_| JwtError::InvalidKey("not a PEM RSA private key"))?;
                let jwk = Jwk::from_encoding_key(&encoding, algorithm)
                    .map_err(|_| JwtError::InvalidKey("not a PEM RSA private key"))?;
                check_rsa_size(&jwk).map_err(JwtError::InvalidKey)?;
                let decoding = DecodingKey::from_jwk(&jwk)
                    .map_err(|_| JwtError::InvalidKey("RSA public key could not be loaded"))?;
                (encoding, Some(jwk), decoding)
            }
        };

        let kid = match &public_jwk {
            Some(jwk) => thumbprint(jwk)?,
            None => hs256_kid(settings.hs256_secret.as_ref()),
        };

        let mut jwks = JwkSet::default();
        let mut verify_keys = vec![VerifyKey {
            kid: kid.clone(),
            algorithm,
            key: verify_key,
        }];
        if let Some(mut jwk) = public_jwk {
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwks.keys.push(jwk);
        }
        if let Some(pem) = &settings.previous_public_key_pem {
            let (mut jwk, previous) = load_previous(pem)?;
            if previous.kid != kid {
                jwk.common.key_id = Some(previous.kid.clone());
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                if settings.algorithm != JwtAlgorithm::HS256 {
                    jwks.keys.push(jwk);
                }
                verify_keys.push(previous);
            }
        }
        let jwks = serde_json::to_vec(&jwks)
            .map(Bytes::from)
            .map_err(|_| JwtError::InvalidKey("JWKS could not be rendered"))?;

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
        let now = unix_now();
        let start = now.saturating_sub(self.inner.backdate.as_secs());
        Claims {
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
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
        jsonwebtoken::encode(
            &self.inner.header,
            &self.claims(identity),
            &self.inner.encoding,
        )
        .map_err(|e| JwtError::Sign(e.kind_name()))
    }

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
        let Some(cache) = &self.inner.cache else {
            return self.header_value(identity);
        };
        let now = Instant::now();
        if let Some(hit) = cache.get(cache_key).await {
            if now < hit.refresh_at {
                return Ok(hit.value);
            }
        }
        let value = self.header_value(identity)?;
        let refresh_at = now + refresh_after(self.inner.ttl);
        cache
            .insert(
                *cache_key,
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
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(cache_key).await;
        }
    }

    /// The JWKS document (`{"keys":[…]}`) with the current and, if configured, previous public
    /// key; empty for HS256. Rendered once; cloning is cheap.
    pub fn jwks_json(&self) -> Bytes {
        self.inner.jwks.clone()
    }

    /// Verifies a token we issued (current or previous key, pinned algorithm, exact `iss` and
    /// `aud`, `exp` and `nbf` checked with the default 60 s leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Verify(e.kind_name()))?;
        let kid = header.kid.as_deref().unwrap_or(&self.inner.kid);
        let key = self
            .inner
            .verify_keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| JwtError::Verify("unknown kid".to_owned()))?;
        let validation = self.validation_for(key.algorithm);
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| JwtError::Verify(e.kind_name()))
    }

    /// The validation rules an upstream should apply (pinned algorithm, our `iss` and `aud`,
    /// `exp` and `nbf` required and checked).
    pub fn validation(&self) -> Validation {
        self.validation_for(self.inner.algorithm.to_jsonwebtoken())
    }

    fn validation_for(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation
    }

    fn header_value(&self, identity: &Identity) -> Result<HeaderValue, JwtError> {
        let token = self.mint(identity)?;
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

/// How long a cached token is served before it is re-minted: until a fifth of its life is left.
pub fn refresh_after(ttl: Duration) -> Duration {
    ttl.saturating_sub(ttl / 5)
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

fn derive_ed25519(master_secret: &SecretString) -> Result<SigningKey, JwtError> {
    let ikm = master_secret.expose_secret().as_bytes();
    if ikm.len() < MIN_SECRET_LEN {
        return Err(JwtError::SecretTooShort(ikm.len()));
    }
    let mut seed = [0u8; 32];
    Hkdf::<Sha256>::new(None, ikm)
        .expand(DERIVED_KEY_INFO, &mut seed)
        .map_err(|_| JwtError::InvalidKey("key derivation failed"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn thumbprint(jwk: &Jwk) -> Result<String, JwtError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| JwtError::InvalidKey("key thumbprint could not be computed"))
}

fn hs256_kid(secret: Option<&SecretString>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"wechat-oauth-proxy hs256 kid\0");
    if let Some(secret) = secret {
        hasher.update(secret.expose_secret().as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
}

fn check_rsa_size(jwk: &Jwk) -> Result<(), &'static str> {
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let n = URL_SAFE_NO_PAD
            .decode(&rsa.n)
            .map_err(|_| "RSA modulus could not be read")?;
        let leading_zeros = n.iter().take_while(|b| **b == 0).count();
        if (n.len() - leading_zeros) * 8 < MIN_RSA_BITS {
            return Err("RSA key must be at least 2048 bits");
        }
    }
    Ok(())
}

/// Reads the previous public key (SPKI PEM: Ed25519, P-256 or RSA).
fn load_previous(pem: &str) -> Result<(Jwk, VerifyKey), JwtError> {
    let bytes = pem.as_bytes();
    let candidates = [
        (Algorithm::EdDSA, DecodingKey::from_ed_pem(bytes)),
        (Algorithm::ES256, DecodingKey::from_ec_pem(bytes)),
        (Algorithm::RS256, DecodingKey::from_rsa_pem(bytes)),
    ];
    for (algorithm, key) in candidates {
        let Ok(key) = key else { continue };
        let jwk = Jwk::from_decoding_key(&key, Some(algorithm))
            .map_err(|_| JwtError::InvalidPreviousKey("public key could not be exported"))?;
        match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve != EllipticCurve::P256 => {
                return Err(JwtError::InvalidPreviousKey(
                    "only P-256 EC keys are supported",
                ));
            }
            AlgorithmParameters::RSA(_) => {
                check_rsa_size(&jwk).map_err(JwtError::InvalidPreviousKey)?;
            }
            _ => {}
        }
        // Re-load from the JWK so verification uses exactly what upstreams see.
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| JwtError::InvalidPreviousKey("public key could not be loaded"))?;
        let kid = thumbprint(&jwk)?;
        return Ok((
            jwk,
            VerifyKey {
                kid,
                algorithm,
                key,
            },
        ));
    }
    Err(JwtError::InvalidPreviousKey(
        "not an SPKI PEM Ed25519, P-256 or RSA public key",
    ))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;

    const ED25519_PEM: &str = include_str!("../../tests/fixtures/test-only-ed25519.pem");
    const ED25519_PUB_PEM: &str = include_str!("../../tests/fixtures/test-only-ed25519.pub.pem");
    const ED25519_OLD_PUB_PEM: &str =
        include_str!("../../tests/fixtures/test-only-ed25519-old.pub.pem");
    const P256_PEM: &str = include_str!("../../tests/fixtures/test-only-p256.pem");
    const P256_PUB_PEM: &str = include_str!("../../tests/fixtures/test-only-p256.pub.pem");
    const P384_PEM: &str = include_str!("../../tests/fixtures/test-only-p384.pem");
    const RSA_PEM: &str = include_str!("../../tests/fixtures/test-only-rsa2048.pem");
    const RSA_PKCS1_PEM: &str = include_str!("../../tests/fixtures/test-only-rsa2048-pkcs1.pem");
    const RSA_PUB_PEM: &str = include_str!("../../tests/fixtures/test-only-rsa2048.pub.pem");
    const RSA_1024_PEM: &str = include_str!("../../tests/fixtures/test-only-rsa1024.pem");
    const HS_SECRET: &str = "hs256-test-only-secret-0123456789abcdef";
    const MASTER: &str = "master-secret-test-only-0123456789abcdef";

    fn master() -> SecretString {
        SecretString::new(MASTER)
    }

    fn identity() -> Identity {
        Identity {
            openid: "oAbC-openid_123".into(),
            unionid: Some("uNiOn-456".into()),
            nickname: "小明🐼 Zoë".to_owned(),
            avatar: "https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132".to_owned(),
            appid: "wx0123456789abcdef".into(),
            scope: Scope::UserInfo,
        }
    }

    fn settings(algorithm: JwtAlgorithm, pem: Option<&str>) -> JwtSettings {
        JwtSettings {
            algorithm,
            private_key_pem: pem.map(SecretString::new),
            hs256_secret: Some(SecretString::new(HS_SECRET)),
            issuer: "https://auth.example.com".to_owned(),
            audience: "legacy-php".to_owned(),
            ..JwtSettings::default()
        }
    }

    fn issuer(algorithm: JwtAlgorithm, pem: Option<&str>) -> JwtIssuer {
        JwtIssuer::new(settings(algorithm, pem), &master()).unwrap()
    }

    /// Verifies the way an upstream would: key picked from the JWKS by `kid`, algorithm pinned.
    fn verify_with_jwks(issuer: &JwtIssuer, token: &str, algorithm: Algorithm) -> Claims {
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, algorithm);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let kid = header.kid.unwrap();
        assert_eq!(kid, issuer.kid());
        let jwks: JwkSet = serde_json::from_slice(&issuer.jwks_json()).unwrap();
        let jwk = jwks.find(&kid).expect("kid published in the JWKS");
        assert_eq!(jwk.common.public_key_use, Some(PublicKeyUse::Signature));
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&["https://auth.example.com"]);
        validation.set_audience(&["legacy-php"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .unwrap()
            .claims
    }

    fn check_claims(claims: &Claims, issuer: &JwtIssuer) {
        let id = identity();
        assert_eq!(claims.iss, "https://auth.example.com");
        assert_eq!(claims.aud, "legacy-php");
        assert_eq!(claims.sub, id.openid);
        assert_eq!(claims.openid, id.openid);
        assert_eq!(claims.unionid, id.unionid);
        assert_eq!(claims.nickname, "小明🐼 Zoë");
        assert_eq!(claims.avatar, id.avatar);
        assert_eq!(claims.appid, id.appid);
        assert_eq!(claims.scope, id.scope);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.exp - claims.iat, 300 + 5);
        let now = unix_now();
        assert!(claims.nbf < now, "nbf is back-dated");
        assert!(claims.exp > now);
        assert_eq!(
            issuer.verify(&issuer.mint(&id).unwrap()).unwrap().openid,
            id.openid
        );
    }

    #[test]
    fn every_asymmetric_algorithm_verifies_with_its_jwks_key() {
        let cases = [
            (JwtAlgorithm::EdDSA, None, Algorithm::EdDSA),
            (JwtAlgorithm::EdDSA, Some(ED25519_PEM), Algorithm::EdDSA),
            (JwtAlgorithm::ES256, Some(P256_PEM), Algorithm::ES256),
            (JwtAlgorithm::RS256, Some(RSA_PEM), Algorithm::RS256),
            (JwtAlgorithm::RS256, Some(RSA_PKCS1_PEM), Algorithm::RS256),
        ];
        for (alg, pem, jwt_alg) in cases {
            let issuer = issuer(alg, pem);
            let token = issuer.mint(&identity()).unwrap();
            let claims = verify_with_jwks(&issuer, &token, jwt_alg);
            check_claims(&claims, &issuer);
            let jwks: serde_json::Value = serde_json::from_slice(&issuer.jwks_json()).unwrap();
            assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        }
    }

    #[test]
    fn jwks_carries_the_public_parameters_of_the_configured_key() {
        let ed: serde_json::Value =
            serde_json::from_slice(&issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM)).jwks_json())
                .unwrap();
        let key = &ed["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        let from_pub = Jwk::from_decoding_key(
            &DecodingKey::from_ed_pem(ED25519_PUB_PEM.as_bytes()).unwrap(),
            None,
        )
        .unwrap();
        let AlgorithmParameters::OctetKeyPair(okp) = from_pub.algorithm else {
            panic!()
        };
        assert_eq!(key["x"], okp.x);
        assert!(key.get("d").is_none(), "private part must not be published");

        let ec: serde_json::Value =
            serde_json::from_slice(&issuer(JwtAlgorithm::ES256, Some(P256_PEM)).jwks_json())
                .unwrap();
        let key = &ec["keys"][0];
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        let from_pub = Jwk::from_decoding_key(
            &DecodingKey::from_ec_pem(P256_PUB_PEM.as_bytes()).unwrap(),
            None,
        )
        .unwrap();
        let AlgorithmParameters::EllipticCurve(p) = from_pub.algorithm else {
            panic!()
        };
        assert_eq!(
            (key["x"].as_str(), key["y"].as_str()),
            (Some(&*p.x), Some(&*p.y))
        );
        assert!(key.get("d").is_none());

        let rsa: serde_json::Value =
            serde_json::from_slice(&issuer(JwtAlgorithm::RS256, Some(RSA_PEM)).jwks_json())
                .unwrap();
        let key = &rsa["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["e"], "AQAB");
        let from_pub = Jwk::from_decoding_key(
            &DecodingKey::from_rsa_pem(RSA_PUB_PEM.as_bytes()).unwrap(),
            None,
        )
        .unwrap();
        let AlgorithmParameters::RSA(r) = from_pub.algorithm else {
            panic!()
        };
        assert_eq!(key["n"].as_str(), Some(&*r.n));
        assert!(key.get("d").is_none() && key.get("p").is_none());
    }

    #[test]
    fn hs256_verifies_with_the_secret_and_publishes_no_key() {
        let issuer = issuer(JwtAlgorithm::HS256, None);
        let token = issuer.mint(&identity()).unwrap();
        assert_eq!(&issuer.jwks_json()[..], br#"{"keys":[]}"#);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
        assert!(!issuer.kid().contains(HS_SECRET));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["https://auth.example.com"]);
        validation.set_audience(&["legacy-php"]);
        let claims = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(HS_SECRET.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims;
        check_claims(&claims, &issuer);
    }

    #[test]
    fn unionid_is_absent_not_null_when_missing() {
        let issuer = issuer(JwtAlgorithm::EdDSA, None);
        let payload = |identity: &Identity| -> serde_json::Value {
            let token = issuer.mint(identity).unwrap();
            let body = token.split('.').nth(1).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
        };
        let without = payload(&Identity {
            unionid: None,
            ..identity()
        });
        assert!(without.get("unionid").is_none(), "{without}");
        assert_eq!(without["nickname"], "小明🐼 Zoë");
        let with = payload(&identity());
        assert_eq!(with["unionid"], "uNiOn-456");
        // Raw UTF-8 in the payload, not escaped or mangled.
        let claims = issuer.verify(&issuer.mint(&identity()).unwrap()).unwrap();
        assert_eq!(claims.nickname, "小明🐼 Zoë");
    }

    /// The payload a token minted now carries, byte for byte: the claim set, its order and the
    /// JSON types (strings and integers) are what upstreams already parse, so typing the
    /// identity fields must not change them.
    #[test]
    fn a_minted_token_carries_exactly_the_claim_set_upstreams_parse() {
        let issuer = issuer(JwtAlgorithm::EdDSA, None);
        let token = issuer.mint(&identity()).unwrap();
        let body = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let body = String::from_utf8(body).unwrap();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (iat, nbf, exp) = (&value["iat"], &value["nbf"], &value["exp"]);
        assert!(iat.is_u64() && nbf.is_u64() && exp.is_u64(), "{body}");
        assert_eq!(
            body,
            format!(
                concat!(
                    r#"{{"iss":"https://auth.example.com","aud":"legacy-php","#,
                    r#""sub":"oAbC-openid_123","iat":{},"nbf":{},"exp":{},"#,
                    r#""openid":"oAbC-openid_123","unionid":"uNiOn-456","nickname":"小明🐼 Zoë","#,
                    r#""avatar":"https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132","#,
                    r#""appid":"wx0123456789abcdef","scope":"snsapi_userinfo"}}"#
                ),
                iat, nbf, exp
            )
        );
    }

    #[test]
    fn wrong_audience_issuer_and_tampering_are_refused() {
        let issuer = issuer(JwtAlgorithm::EdDSA, None);
        let token = issuer.mint(&identity()).unwrap();
        let jwks: JwkSet = serde_json::from_slice(&issuer.jwks_json()).unwrap();
        let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();

        let mut other_aud = Validation::new(Algorithm::EdDSA);
        other_aud.set_audience(&["legacy"]);
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &other_aud).is_err());
        let mut other_iss = Validation::new(Algorithm::EdDSA);
        other_iss.set_audience(&["legacy-php"]);
        other_iss.set_issuer(&["https://evil.example.com"]);
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &other_iss).is_err());

        // Swap the payload for one claiming another openid: signature no longer matches.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = issuer.claims(&identity());
        claims.openid = "attacker".into();
        claims.sub = "attacker".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(issuer.verify(&parts.join(".")).is_err());

        // Algorithm confusion: HS256 signed with the public key bytes must not verify.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(issuer.kid().to_owned());
        let AlgorithmParameters::OctetKeyPair(okp) = &jwks.keys[0].algorithm else {
            panic!()
        };
        let forged = jsonwebtoken::encode(
            &header,
            &issuer.claims(&identity()),
            &EncodingKey::from_secret(okp.x.as_bytes()),
        )
        .unwrap();
        assert!(issuer.verify(&forged).is_err());
    }

    #[test]
    fn derived_key_is_shared_by_instances_with_the_same_master_secret() {
        let a = issuer(JwtAlgorithm::EdDSA, None);
        let b = issuer(JwtAlgorithm::EdDSA, None);
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks_json(), b.jwks_json());
        // A token from one instance verifies on the other.
        assert!(b.verify(&a.mint(&identity()).unwrap()).is_ok());

        let other = JwtIssuer::new(
            settings(JwtAlgorithm::EdDSA, None),
            &SecretString::new("a-different-master-secret-0123456789"),
        )
        .unwrap();
        assert_ne!(other.kid(), a.kid());
        assert!(other.verify(&a.mint(&identity()).unwrap()).is_err());

        // The derived key is not the cookie key's sibling by accident: a configured key differs.
        assert_ne!(
            issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM)).kid(),
            a.kid()
        );
    }

    #[test]
    fn previous_key_is_published_and_accepted_during_rotation() {
        // Old deployment signed with the fixture key; the new one derives a key and lists the
        // fixture's public key as previous.
        let old = issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM));
        let old_token = old.mint(&identity()).unwrap();
        let new = JwtIssuer::new(
            JwtSettings {
                previous_public_key_pem: Some(ED25519_PUB_PEM.to_owned()),
                ..settings(JwtAlgorithm::EdDSA, None)
            },
            &master(),
        )
        .unwrap();
        let jwks: JwkSet = serde_json::from_slice(&new.jwks_json()).unwrap();
        assert_eq!(jwks.keys.len(), 2);
        assert!(jwks.find(new.kid()).is_some());
        assert!(jwks.find(old.kid()).is_some());
        assert_eq!(new.verify(&old_token).unwrap().openid, identity().openid);
        // Upstreams verify the old token through the JWKS too.
        verify_with_jwks(&old, &old_token, Algorithm::EdDSA);
        let key = DecodingKey::from_jwk(jwks.find(old.kid()).unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["legacy-php"]);
        assert!(jsonwebtoken::decode::<Claims>(&old_token, &key, &validation).is_ok());

        // Previous keys of other families are accepted as long as they are public keys.
        for pem in [ED25519_OLD_PUB_PEM, P256_PUB_PEM, RSA_PUB_PEM] {
            let issuer = JwtIssuer::new(
                JwtSettings {
                    previous_public_key_pem: Some(pem.to_owned()),
                    ..settings(JwtAlgorithm::EdDSA, None)
                },
                &master(),
            )
            .unwrap();
            let jwks: JwkSet = serde_json::from_slice(&issuer.jwks_json()).unwrap();
            assert_eq!(jwks.keys.len(), 2);
        }
        // A private key as "previous public key" is refused.
        let err = JwtIssuer::new(
            JwtSettings {
                previous_public_key_pem: Some(P256_PEM.to_owned()),
                ..settings(JwtAlgorithm::EdDSA, None)
            },
            &master(),
        )
        .unwrap_err();
        assert!(matches!(err, JwtError::InvalidPreviousKey(_)), "{err:?}");
    }

    #[test]
    fn bad_key_configurations_are_refused_at_startup() {
        let short_hs = JwtSettings {
            hs256_secret: Some(SecretString::new("short")),
            ..settings(JwtAlgorithm::HS256, None)
        };
        assert!(matches!(
            JwtIssuer::new(short_hs, &master()),
            Err(JwtError::SecretTooShort(5))
        ));
        let no_hs = JwtSettings {
            hs256_secret: None,
            ..settings(JwtAlgorithm::HS256, None)
        };
        assert!(matches!(
            JwtIssuer::new(no_hs, &master()),
            Err(JwtError::MissingKey(JwtAlgorithm::HS256))
        ));
        for alg in [JwtAlgorithm::ES256, JwtAlgorithm::RS256] {
            assert!(matches!(
                JwtIssuer::new(settings(alg, None), &master()),
                Err(JwtError::MissingKey(a)) if a == alg
            ));
        }
        let bad = [
            (JwtAlgorithm::RS256, RSA_1024_PEM),
            (JwtAlgorithm::ES256, P384_PEM),
            (JwtAlgorithm::ES256, RSA_PEM),
            (JwtAlgorithm::RS256, ED25519_PEM),
            (JwtAlgorithm::EdDSA, P256_PEM),
            (
                JwtAlgorithm::EdDSA,
                "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
            ),
            (JwtAlgorithm::EdDSA, "not a pem"),
        ];
        for (alg, pem) in bad {
            let result = JwtIssuer::new(settings(alg, Some(pem)), &master());
            assert!(
                matches!(result, Err(JwtError::InvalidKey(_))),
                "{alg:?} accepted a bad key: {result:?}"
            );
        }
        let zero_ttl = JwtSettings {
            ttl: Duration::ZERO,
            ..settings(JwtAlgorithm::EdDSA, None)
        };
        assert!(matches!(
            JwtIssuer::new(zero_ttl, &master()),
            Err(JwtError::InvalidSetting(_))
        ));
        let bad_prefix = JwtSettings {
            value_prefix: "Bearer\n".to_owned(),
            ..settings(JwtAlgorithm::EdDSA, None)
        };
        assert!(matches!(
            JwtIssuer::new(bad_prefix, &master()),
            Err(JwtError::InvalidSetting(_))
        ));
        let short_master = SecretString::new("too-short");
        assert!(matches!(
            JwtIssuer::new(settings(JwtAlgorithm::EdDSA, None), &short_master),
            Err(JwtError::SecretTooShort(9))
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        for issuer in [
            issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM)),
            issuer(JwtAlgorithm::HS256, None),
            issuer(JwtAlgorithm::RS256, Some(RSA_PEM)),
        ] {
            let shown = format!("{issuer:?}");
            assert!(shown.contains(issuer.kid()), "{shown}");
            assert!(
                !shown.contains(HS_SECRET) && !shown.contains(MASTER),
                "{shown}"
            );
            for pem in [ED25519_PEM, RSA_PEM] {
                let body_line = pem.lines().nth(1).unwrap();
                assert!(!shown.contains(&body_line[..20]), "{shown}");
            }
        }
        let err = JwtIssuer::new(settings(JwtAlgorithm::RS256, Some(ED25519_PEM)), &master())
            .unwrap_err();
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
    }

    #[tokio::test]
    async fn cache_hit_returns_the_same_value_without_reminting() {
        let issuer = issuer(JwtAlgorithm::EdDSA, None);
        let key = [7u8; CACHE_KEY_LEN];
        let first = issuer.token_for(&key, &identity()).await.unwrap();
        let second = issuer.token_for(&key, &identity()).await.unwrap();
        assert_eq!(first, second);
        assert!(first.is_sensitive());
        // Same buffer: a hit is a reference-count increment, not a new token.
        assert_eq!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        assert!(issuer.verify(first.to_str().unwrap()).is_ok());

        // Another session gets its own token.
        let other = issuer
            .token_for(&[8u8; CACHE_KEY_LEN], &identity())
            .await
            .unwrap();
        assert_ne!(other.as_bytes().as_ptr(), first.as_bytes().as_ptr());

        // Logout drops the cached token.
        issuer.invalidate(&key).await;
        let after = issuer.token_for(&key, &identity()).await.unwrap();
        assert_ne!(after.as_bytes().as_ptr(), first.as_bytes().as_ptr());
    }

    #[tokio::test]
    async fn without_cache_every_call_mints() {
        let issuer = JwtIssuer::new(
            JwtSettings {
                cache: false,
                ..settings(JwtAlgorithm::EdDSA, None)
            },
            &master(),
        )
        .unwrap();
        let key = [1u8; CACHE_KEY_LEN];
        let a = issuer.token_for(&key, &identity()).await.unwrap();
        let b = issuer.token_for(&key, &identity()).await.unwrap();
        assert_ne!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        issuer.invalidate(&key).await;
    }

    #[tokio::test]
    async fn value_prefix_is_applied() {
        let issuer = JwtIssuer::new(
            JwtSettings {
                value_prefix: "Bearer ".to_owned(),
                ..settings(JwtAlgorithm::EdDSA, None)
            },
            &master(),
        )
        .unwrap();
        let value = issuer
            .token_for(&[2u8; CACHE_KEY_LEN], &identity())
            .await
            .unwrap();
        let token = value.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        assert!(issuer.verify(token).is_ok());
    }

    #[test]
    fn refresh_point_is_four_fifths_of_the_lifetime() {
        assert_eq!(
            refresh_after(Duration::from_secs(300)),
            Duration::from_secs(240)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(5)),
            Duration::from_secs(4)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn near_expiry_tokens_are_reminted() {
        // ttl 2 s: served from cache until 1.6 s, re-minted after.
        let issuer = JwtIssuer::new(
            JwtSettings {
                ttl: Duration::from_secs(2),
                ..settings(JwtAlgorithm::EdDSA, None)
            },
            &master(),
        )
        .unwrap();
        let key = [3u8; CACHE_KEY_LEN];
        let first = issuer.token_for(&key, &identity()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let second = issuer.token_for(&key, &identity()).await.unwrap();
        assert_ne!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        let (c1, c2) = (
            issuer.verify(first.to_str().unwrap()).unwrap(),
            issuer.verify(second.to_str().unwrap()).unwrap(),
        );
        assert!(c2.exp > c1.exp, "the re-minted token lives longer");
        // And the new one is cached again.
        let third = issuer.token_for(&key, &identity()).await.unwrap();
        assert_eq!(third.as_bytes().as_ptr(), second.as_bytes().as_ptr());
    }
}
