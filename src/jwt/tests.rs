use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};

use super::*;

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
        serde_json::from_slice(&issuer(JwtAlgorithm::ES256, Some(P256_PEM)).jwks_json()).unwrap();
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
        serde_json::from_slice(&issuer(JwtAlgorithm::RS256, Some(RSA_PEM)).jwks_json()).unwrap();
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

/// A rotation: the old deployment signed with the fixture key; the new one derives a key and
/// lists the fixture's public key as previous.
fn rotated() -> (JwtIssuer, JwtIssuer) {
    let old = issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM));
    let new = JwtIssuer::new(
        JwtSettings {
            previous_public_key_pem: Some(ED25519_PUB_PEM.to_owned()),
            ..settings(JwtAlgorithm::EdDSA, None)
        },
        &master(),
    )
    .unwrap();
    (old, new)
}

#[test]
fn previous_key_is_published_and_accepted_during_rotation() {
    let (old, new) = rotated();
    let old_token = old.mint(&identity()).unwrap();
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
    let err =
        JwtIssuer::new(settings(JwtAlgorithm::RS256, Some(ED25519_PEM)), &master()).unwrap_err();
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

// ---------------------------------------------------------------------------------------------
// JwksVerifier: verifying with nothing but the JWKS
// ---------------------------------------------------------------------------------------------

fn expected() -> Expected {
    Expected {
        algorithm: JwtAlgorithm::EdDSA,
        issuer: Some("https://auth.example.com".to_owned()),
        audience: Some("legacy-php".to_owned()),
    }
}

/// A token signed with the fixture Ed25519 key (`kid` given) carrying `claims`.
fn signed_with_fixture(kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn refusal(verifier: &JwksVerifier, token: &str) -> String {
    match verifier.verify(token) {
        Err(JwtError::Verify(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn jwks_verifier_accepts_current_and_previous_key_by_kid() {
    let (old, new) = rotated();
    let verifier = JwksVerifier::from_jwks(&new.jwks_json(), expected()).unwrap();
    assert_eq!(
        verifier.kids().collect::<Vec<_>>(),
        [new.kid(), old.kid()],
        "current key first, then the previous one"
    );
    let claims = verifier.verify(&new.mint(&identity()).unwrap()).unwrap();
    check_claims(&claims, &new);
    let old_claims = verifier.verify(&old.mint(&identity()).unwrap()).unwrap();
    assert_eq!(old_claims.nickname, identity().nickname);

    // Without the previous key in the JWKS, the old token is refused.
    let alone = JwksVerifier::from_jwks(&issuer(JwtAlgorithm::EdDSA, None).jwks_json(), expected())
        .unwrap();
    assert_eq!(
        refusal(&alone, &old.mint(&identity()).unwrap()),
        "no key with this kid"
    );
}

#[test]
fn jwks_verifier_refuses_bad_claims_algorithms_and_signatures() {
    let issuer = issuer(JwtAlgorithm::EdDSA, Some(ED25519_PEM));
    let verifier = JwksVerifier::from_jwks(&issuer.jwks_json(), expected()).unwrap();
    let kid = issuer.kid();
    let now = unix_now();
    let good = serde_json::to_value(issuer.claims(&identity())).unwrap();
    assert!(verifier.verify(&signed_with_fixture(kid, &good)).is_ok());
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[name] = value;
        signed_with_fixture(kid, &claims)
    };
    let cases = [
        (with("exp", (now - 3600).into()), "expired"),
        (with("aud", "someone-else".into()), "aud"),
        (with("iss", "https://evil.example.com".into()), "iss"),
        (with("nbf", (now + 3600).into()), "nbf"),
        (with("iat", (now + 3600).into()), "iat"),
    ];
    for (token, expected_reason) in cases {
        let reason = refusal(&verifier, &token);
        assert!(
            reason.contains(expected_reason),
            "{expected_reason}: {reason}"
        );
    }
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let reason = refusal(&verifier, &signed_with_fixture(kid, &no_exp));
    assert!(reason.contains("exp"), "{reason}");

    let token = issuer.mint(&identity()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    // alg none, with our kid and payload and no signature.
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let none = format!("{none_header}.{}.", parts[1]);
    assert_eq!(
        refusal(&verifier, &none),
        r#"alg "none" is not allowed (only EdDSA)"#
    );
    // HS256 keyed with the public key bytes (algorithm confusion).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let jwks: JwkSet = serde_json::from_slice(&issuer.jwks_json()).unwrap();
    let AlgorithmParameters::OctetKeyPair(okp) = &jwks.keys[0].algorithm else {
        panic!()
    };
    let confused =
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(okp.x.as_bytes())).unwrap();
    assert!(refusal(&verifier, &confused).contains("not allowed"));
    // Tampered payload; signature by another key under our kid; no kid.
    let mut claims = good.clone();
    claims["nickname"] = "Mallory".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(refusal(&verifier, &tampered), "bad signature");
    let stranger = JwtIssuer::new(
        settings(JwtAlgorithm::EdDSA, None),
        &SecretString::new("another-master-secret-0123456789abcdef"),
    )
    .unwrap();
    let foreign = stranger.mint(&identity()).unwrap();
    let foreign_parts: Vec<&str> = foreign.split('.').collect();
    let under_our_kid = format!("{}.{}.{}", parts[0], foreign_parts[1], foreign_parts[2]);
    assert_eq!(refusal(&verifier, &under_our_kid), "bad signature");
    let mut no_kid = Header::new(Algorithm::EdDSA);
    no_kid.kid = None;
    let key = EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).unwrap();
    let no_kid = jsonwebtoken::encode(&no_kid, &good, &key).unwrap();
    assert_eq!(refusal(&verifier, &no_kid), "the token has no kid");
    assert_eq!(
        refusal(&verifier, "not-a-jwt"),
        "not a JWT (unreadable header)"
    );
}

#[test]
fn jwks_verifier_checks_iss_and_aud_only_when_expected() {
    let issuer = issuer(JwtAlgorithm::EdDSA, None);
    let lax = JwksVerifier::from_jwks(
        &issuer.jwks_json(),
        Expected {
            issuer: None,
            audience: None,
            ..expected()
        },
    )
    .unwrap();
    let claims = lax.verify(&issuer.mint(&identity()).unwrap()).unwrap();
    assert_eq!(claims.aud, "legacy-php");
}

#[test]
fn jwks_verifier_keeps_only_keys_of_the_pinned_algorithm() {
    let ed = issuer(JwtAlgorithm::EdDSA, None);
    let es = issuer(JwtAlgorithm::ES256, Some(P256_PEM));
    let pinned_es = Expected {
        algorithm: JwtAlgorithm::ES256,
        ..expected()
    };
    match JwksVerifier::from_jwks(&ed.jwks_json(), pinned_es.clone()) {
        Err(JwtError::Jwks(why)) => assert!(why.contains("no ES256"), "{why}"),
        other => panic!("{other:?}"),
    }
    let verifier = JwksVerifier::from_jwks(&es.jwks_json(), pinned_es).unwrap();
    assert!(verifier.verify(&es.mint(&identity()).unwrap()).is_ok());
    // An EdDSA token is refused by an ES256 verifier before any key is looked at.
    assert!(refusal(&verifier, &ed.mint(&identity()).unwrap()).contains("not allowed"));
    // HS256 is never verifiable from a JWKS; garbage is not a JWKS.
    let hs = Expected {
        algorithm: JwtAlgorithm::HS256,
        ..expected()
    };
    assert!(matches!(
        JwksVerifier::from_jwks(br#"{"keys":[]}"#, hs),
        Err(JwtError::Jwks(_))
    ));
    assert!(matches!(
        JwksVerifier::from_jwks(b"<html>", expected()),
        Err(JwtError::Jwks(_))
    ));
}

#[test]
fn jwks_source_and_algorithm_parse_from_the_command_line() {
    assert_eq!(
        "https://auth.example.com/_wxauth/jwks.json"
            .parse::<JwksSource>()
            .unwrap(),
        JwksSource::Url(
            "https://auth.example.com/_wxauth/jwks.json"
                .parse()
                .unwrap()
        )
    );
    assert!(matches!(
        "HTTP://127.0.0.1:8080/_wxauth/jwks.json".parse::<JwksSource>(),
        Ok(JwksSource::Url(_))
    ));
    assert_eq!(
        "./jwks.json".parse::<JwksSource>().unwrap(),
        JwksSource::File("./jwks.json".into())
    );
    assert!("http://".parse::<JwksSource>().is_err());
    assert_eq!(
        "EdDSA".parse::<JwtAlgorithm>().unwrap(),
        JwtAlgorithm::EdDSA
    );
    assert_eq!(
        "RS256".parse::<JwtAlgorithm>().unwrap(),
        JwtAlgorithm::RS256
    );
    assert!("eddsa".parse::<JwtAlgorithm>().is_err());
    assert!("none".parse::<JwtAlgorithm>().is_err());
}

#[tokio::test]
async fn jwks_source_reads_a_file_and_refuses_a_missing_one() {
    let issuer = issuer(JwtAlgorithm::EdDSA, None);
    let path = std::env::temp_dir().join(format!("wop-jwks-{}.json", std::process::id()));
    std::fs::write(&path, issuer.jwks_json()).unwrap();
    let source = JwksSource::File(path.clone());
    let verifier = JwksVerifier::load(&source, expected()).await.unwrap();
    assert_eq!(verifier.kids().collect::<Vec<_>>(), [issuer.kid()]);
    std::fs::remove_file(&path).unwrap();
    match JwksVerifier::load(&source, expected()).await {
        Err(JwtError::Jwks(why)) => assert!(why.contains("cannot load the JWKS"), "{why}"),
        other => panic!("{other:?}"),
    }
}
