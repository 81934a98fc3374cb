//! `[jwt]`: the identity JWT's keys, claims and header ([`crate::jwt`], [`crate::identity`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigProblem, Problems, ResolvedSecrets};
use crate::identity::JwtCarrier;
use crate::jwt::{JwtAlgorithm, JwtSettings};
use crate::secret::SecretString;

/// `[jwt]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `EdDSA` (default), `ES256`, `RS256` or `HS256`.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// PEM private key for EdDSA / ES256 / RS256; none = an Ed25519 key derived from the master
    /// secret (so several instances agree).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// PEM public key of the previous key, still published in the JWKS during rotation.
    #[serde(default)]
    pub previous_public_key_file: Option<PathBuf>,
    /// HS256 secret (≥ 32 bytes).
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
    /// File holding the HS256 secret.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// `iss` claim.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` claim: who the token is for (your upstream).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Token lifetime, in seconds.
    #[serde(default = "default_jwt_ttl")]
    pub ttl_secs: u64,
    /// Header carrying the JWT: a header name (default `X-WeChat-Jwt`) or `Authorization`
    /// (then sent as `Bearer <jwt>`).
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// Also send `X-WeChat-OpenID`, `-UnionID`, `-Nickname`, `-Avatar`, `-AppID`.
    #[serde(default)]
    pub plain_headers: bool,
    /// Cache the minted JWT per session (default `true`); `false` signs on every request
    /// (only useful to measure the cost of signing).
    #[serde(default = "default_cache")]
    pub cache: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::default(),
            private_key_file: None,
            previous_public_key_file: None,
            hs256_secret: None,
            hs256_secret_file: None,
            issuer: default_issuer(),
            audience: default_audience(),
            ttl_secs: default_jwt_ttl(),
            header: default_jwt_header(),
            plain_headers: false,
            cache: default_cache(),
        }
    }
}

fn default_issuer() -> String {
    JwtSettings::default().issuer
}
fn default_audience() -> String {
    JwtSettings::default().audience
}
fn default_jwt_ttl() -> u64 {
    JwtSettings::default().ttl.as_secs()
}
fn default_cache() -> bool {
    JwtSettings::default().cache
}
fn default_jwt_header() -> String {
    // `identity::JWT_HEADER`, spelled as the README shows it (header names are
    // case-insensitive; `HeaderName` keeps them lowercase).
    "X-WeChat-Jwt".to_owned()
}

impl JwtConfig {
    pub(super) fn check(&self, secrets: &ResolvedSecrets, problems: &mut Problems) {
        let mut bad = |key: &str, message: String| problems.bad(key, message);
        match self.algorithm {
            JwtAlgorithm::HS256 => match &secrets.hs256_secret {
                None => bad(
                    "jwt.hs256_secret",
                    "is required for HS256 (or hs256_secret_file, or WXAUTH_JWT_HS256_SECRET)"
                        .into(),
                ),
                Some(s) if s.expose_secret().len() < 32 => {
                    bad("jwt.hs256_secret", "must be at least 32 bytes".into())
                }
                Some(_) => {}
            },
            JwtAlgorithm::ES256 | JwtAlgorithm::RS256 if self.private_key_file.is_none() => {
                bad(
                    "jwt.private_key_file",
                    format!("is required for {:?}", self.algorithm),
                );
            }
            _ => {}
        }
        if self.ttl_secs < 30 || self.ttl_secs > 24 * 3600 {
            bad("jwt.ttl_secs", "must be between 30 and 86400".into());
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            bad("jwt.header", "is not a valid header name".into());
        }
        if self.audience.is_empty() {
            bad("jwt.audience", "must not be empty".into());
        }
    }

    /// Whether the JWT travels as `Authorization: Bearer <jwt>`.
    fn bearer(&self) -> bool {
        self.header.eq_ignore_ascii_case("authorization")
    }

    /// `jwt.header` → where the layer puts the JWT.
    ///
    /// # Errors
    /// `jwt.header` is not a header name.
    pub fn carrier(&self) -> Result<JwtCarrier, ConfigProblem> {
        if self.bearer() {
            return Ok(JwtCarrier::AuthorizationBearer);
        }
        http::HeaderName::from_bytes(self.header.as_bytes())
            .map(JwtCarrier::Header)
            .map_err(|e| ConfigProblem::new("jwt.header", e.to_string()))
    }

    /// `[jwt]` + the HS256 secret → the issuer's settings; reads the key files.
    ///
    /// # Errors
    /// A key file cannot be read.
    pub fn settings(&self, secrets: &ResolvedSecrets) -> Result<JwtSettings, ConfigProblem> {
        let read = |key: &str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| {
                ConfigProblem::new(key, format!("cannot read {}: {e}", path.display()))
            })
        };
        let private_key_pem = self
            .private_key_file
            .as_ref()
            .map(|p| read("jwt.private_key_file", p))
            .transpose()?
            .map(SecretString::new);
        let previous_public_key_pem = self
            .previous_public_key_file
            .as_ref()
            .map(|p| read("jwt.previous_public_key_file", p))
            .transpose()?;
        Ok(JwtSettings {
            algorithm: self.algorithm,
            private_key_pem,
            previous_public_key_pem,
            hs256_secret: secrets.hs256_secret.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            ttl: Duration::from_secs(self.ttl_secs),
            cache: self.cache,
            // With `Authorization` as the carrier the cached header value already holds
            // `Bearer <jwt>`, so a cache hit allocates nothing (identity.rs passes it through).
            value_prefix: if self.bearer() {
                "Bearer ".to_owned()
            } else {
                String::new()
            },
            ..JwtSettings::default()
        })
    }
}
