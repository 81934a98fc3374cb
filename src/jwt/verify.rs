//! Verifying identity JWTs: the one decoding path behind [`JwtIssuer::verify`](super::JwtIssuer)
//! and [`JwksVerifier`], which needs nothing but the published JWKS — what an upstream does,
//! and what `wechat-oauth-proxy jwt verify` runs for operators.
//!
//! Rules (RFC 8725): the algorithm is pinned by the verifier, never taken from the token; the
//! key is chosen by the token's `kid`; `exp`, `nbf` and `sub` are required and checked with
//! jsonwebtoken's default 60 s leeway, and an `iat` in the future (beyond the leeway) is refused
//! too; `iss` and `aud` are compared exactly when expected values are given.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::keys::VerifyKey;
use super::{Claims, JwtAlgorithm, JwtError, KindName as _};
use crate::clock::unix_now;

/// Largest JWKS document [`JwksSource::read`] accepts (1 MiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Timeout of a JWKS download (connect and read).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a token must match besides its signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The one algorithm accepted (default EdDSA): JWKS keys of other algorithms are ignored
    /// and a token naming another `alg` is refused.
    pub algorithm: JwtAlgorithm,
    /// The exact `iss`; `None` does not check it.
    pub issuer: Option<String>,
    /// The exact `aud`; `None` does not check it.
    pub audience: Option<String>,
}

/// Where a JWKS document comes from: an `http(s)://` URL (typically the proxy's
/// `/_wxauth/jwks.json`) or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// Downloaded with a GET (no redirects, [`JWKS_FETCH_TIMEOUT`]).
    Url(url::Url),
    /// Read from the file system.
    File(PathBuf),
}

impl FromStr for JwksSource {
    type Err = url::ParseError;

    /// `http://…` and `https://…` (any case) are URLs; anything else is a file path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            url::Url::parse(text).map(JwksSource::Url)
        } else {
            Ok(JwksSource::File(PathBuf::from(text)))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(url) => f.write_str(url.as_str()),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl JwksSource {
    /// The document's bytes: an HTTP 200 answer or the file, at most [`MAX_JWKS_BYTES`].
    pub async fn read(&self) -> Result<Vec<u8>, JwtError> {
        let fail = |why: String| JwtError::Jwks(format!("cannot load the JWKS from {self}: {why}"));
        match self {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(fail(format!("larger than {MAX_JWKS_BYTES} bytes")));
                }
                Ok(bytes)
            }
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                let mut response = client
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| fail(e.without_url().to_string()))?;
                if response.status() != reqwest::StatusCode::OK {
                    return Err(fail(format!("HTTP {}", response.status())));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| fail(e.without_url().to_string()))?
                {
                    if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(fail(format!("larger than {MAX_JWKS_BYTES} bytes")));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }
        }
    }
}

/// Verifies identity JWTs with the public keys of a JWKS document (no private key, no secret).
///
/// ```no_run
/// # async fn demo(token: &str) -> Result<(), wechat_oauth_proxy::jwt::JwtError> {
/// use wechat_oauth_proxy::jwt::{Expected, JwksSource, JwksVerifier};
/// let source: JwksSource = "http://127.0.0.1:8080/_wxauth/jwks.json".parse().expect("url");
/// let verifier = JwksVerifier::load(&source, Expected {
///     issuer: Some("wechat-oauth-proxy".into()),
///     audience: Some("upstream".into()),
///     ..Expected::default()
/// }).await?;
/// let claims = verifier.verify(token)?;
/// println!("hello {}", claims.nickname);
/// # Ok(()) }
/// ```
pub struct JwksVerifier {
    keys: Vec<VerifyKey>,
    expected: Expected,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("expected", &self.expected)
            .finish()
    }
}

impl JwksVerifier {
    /// Reads the JWKS from `source` and keeps its keys of the expected algorithm.
    pub async fn load(source: &JwksSource, expected: Expected) -> Result<Self, JwtError> {
        Self::from_jwks(&source.read().await?, expected)
    }

    /// Keeps the signing keys of `jwks` (a `{"keys":[…]}` document) that have a `kid` and are of
    /// the expected algorithm; fails when none is left.
    pub fn from_jwks(jwks: &[u8], expected: Expected) -> Result<Self, JwtError> {
        if expected.algorithm == JwtAlgorithm::HS256 {
            return Err(JwtError::Jwks(
                "HS256 keys are secret and never published: an HS256 token cannot be verified from a JWKS".into(),
            ));
        }
        let set: JwkSet = serde_json::from_slice(jwks)
            .map_err(|e| JwtError::Jwks(format!("not a JWKS document: {e}")))?;
        let pinned = expected.algorithm.to_jsonwebtoken();
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let signing = matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            );
            if !signing || jwk_algorithm(jwk) != Some(pinned) {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|_| JwtError::Jwks(format!("the key {kid:?} cannot be loaded")))?;
            keys.push(VerifyKey {
                kid,
                algorithm: pinned,
                key,
            });
        }
        if keys.is_empty() {
            return Err(JwtError::Jwks(format!(
                "the JWKS has no {:?} signing key with a kid",
                expected.algorithm
            )));
        }
        Ok(Self { keys, expected })
    }

    /// The `kid`s of the keys kept, in JWKS order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// What tokens must match.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Verifies `token`: pinned algorithm, a known `kid`, the signature, then the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let pinned = self.expected.algorithm.to_jsonwebtoken();
        let header = read_header(token, pinned)?;
        if header.alg != pinned {
            return Err(not_allowed(&format!("{:?}", header.alg), pinned));
        }
        let kid = header
            .kid
            .ok_or_else(|| JwtError::Verify("the token has no kid".into()))?;
        let key = find_key(&self.keys, &kid)?;
        decode(
            key,
            token,
            self.expected.issuer.as_deref(),
            self.expected.audience.as_deref(),
        )
    }
}

/// The algorithm a JWK is for: its `alg`, else what its key type implies (OKP Ed25519 →
/// EdDSA, EC P-256 → ES256, RSA → RS256).
fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}

/// The token's header; when jsonwebtoken cannot read it, says which `alg` it named if that is
/// why (`none`, for one, is no algorithm jsonwebtoken knows).
pub(super) fn read_header(
    token: &str,
    pinned: Algorithm,
) -> Result<jsonwebtoken::Header, JwtError> {
    jsonwebtoken::decode_header(token).map_err(|_| {
        let named = token
            .split('.')
            .next()
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|header| {
                header
                    .get("alg")
                    .and_then(|a| a.as_str())
                    .map(str::to_owned)
            });
        match named {
            Some(alg) if alg != format!("{pinned:?}") => not_allowed(&alg, pinned),
            _ => JwtError::Verify("not a JWT (unreadable header)".into()),
        }
    })
}

fn not_allowed(alg: &str, pinned: Algorithm) -> JwtError {
    JwtError::Verify(format!("alg {alg:?} is not allowed (only {pinned:?})"))
}

/// The key with `kid`.
pub(super) fn find_key<'k>(keys: &'k [VerifyKey], kid: &str) -> Result<&'k VerifyKey, JwtError> {
    keys.iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| JwtError::Verify("no key with this kid".into()))
}

/// The validation rules for `algorithm`: `exp`, `nbf` and `sub` required and checked, `iss` and
/// `aud` exactly when given.
pub(super) fn validation(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    let mut required = vec!["exp", "nbf", "sub"];
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation.validate_nbf = true;
    validation
}

/// Checks the signature of `token` with `key` (its algorithm pinned), then the claims.
pub(super) fn decode(
    key: &VerifyKey,
    token: &str,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Claims, JwtError> {
    let validation = validation(key.algorithm, issuer, audience);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|e| JwtError::Verify(reason(&e)))?;
    if claims.iat > unix_now().saturating_add(validation.leeway) {
        return Err(JwtError::Verify("iat is in the future".into()));
    }
    Ok(claims)
}

/// Why jsonwebtoken refused a token, in words; never echoes key material or the whole token.
fn reason(error: &Error) -> String {
    match error.kind() {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::ExpiredSignature => "expired (exp is in the past)".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidAudience => "aud does not match".into(),
        ErrorKind::InvalidIssuer => "iss does not match".into(),
        ErrorKind::InvalidAlgorithm => "alg does not match the key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the {claim} claim is missing"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "not a JWT".into(),
        // serde's message names the field (`missing field `exp``), never key material.
        ErrorKind::Json(e) => format!("the claims are not the identity claims: {e}"),
        _ => error.kind_name(),
    }
}
