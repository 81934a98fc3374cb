//! Key material: the signing key per algorithm (loaded from PEM, or Ed25519 derived from the
//! master secret), the `kid`s, the previous public key kept during a rotation, and the JWKS
//! document rendered once at start-up.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, KeypairBytes};
use hkdf::Hkdf;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};

use super::{JwtAlgorithm, JwtError, JwtSettings, MIN_RSA_BITS, MIN_SECRET_LEN};
use crate::secret::SecretString;

/// HKDF `info` for the derived Ed25519 signing key (distinct from the cookie key's).
const DERIVED_KEY_INFO: &[u8] = b"wechat-oauth-proxy v1 jwt ed25519 signing key";

/// A verification key we publish (current or previous).
pub(super) struct VerifyKey {
    pub(super) kid: String,
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

/// What the issuer publishes and accepts: the current `kid`, the JWKS document and every key a
/// token of ours may be verified with (current first, then the previous one).
pub(super) struct Published {
    pub(super) kid: String,
    pub(super) jwks: Bytes,
    pub(super) verify_keys: Vec<VerifyKey>,
}

/// The signing key for the configured algorithm, its public JWK (none for HS256) and the key
/// that verifies its signatures.
pub(super) fn signing_keys(
    settings: &JwtSettings,
    master_secret: &SecretString,
) -> Result<(EncodingKey, Option<Jwk>, DecodingKey), JwtError> {
    let algorithm = settings.algorithm.to_jsonwebtoken();
    let keys = match settings.algorithm {
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
                        .map_err(|_| JwtError::InvalidKey("not a PKCS#8 Ed25519 private key"))?;
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
            let jwk = Jwk::from_encoding_key(&encoding, algorithm)
                .map_err(|_| JwtError::InvalidKey("Ed25519 public key could not be exported"))?;
            let public = signing.verifying_key();
            let decoding =
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public.as_bytes()))
                    .map_err(|_| JwtError::InvalidKey("Ed25519 public key could not be loaded"))?;
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
    Ok(keys)
}

/// The `kid`s, the JWKS document (current and previous public key; no key for HS256) and the
/// verification keys.
pub(super) fn publish(
    settings: &JwtSettings,
    public_jwk: Option<Jwk>,
    verify_key: DecodingKey,
) -> Result<Published, JwtError> {
    let kid = match &public_jwk {
        Some(jwk) => thumbprint(jwk)?,
        None => hs256_kid(settings.hs256_secret.as_ref()),
    };

    let algorithm = settings.algorithm.to_jsonwebtoken();
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
    Ok(Published {
        kid,
        jwks,
        verify_keys,
    })
}

pub(super) fn derive_ed25519(master_secret: &SecretString) -> Result<SigningKey, JwtError> {
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
