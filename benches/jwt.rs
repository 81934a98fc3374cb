//! Identity JWT: minting per algorithm (EdDSA, ES256, RS256, HS256, with the test-only fixture
//! keys) against a per-session cache hit of `JwtIssuer::token_for`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::ids::Scope;
use wechat_oauth_proxy::jwt::{JwtAlgorithm, JwtIssuer, JwtSettings};
use wechat_oauth_proxy::secret::SecretString;

const MASTER_SECRET: &str = "bench-only-master-secret-0123456789abcdef";
const ED25519_PEM: &str = include_str!("../tests/fixtures/test-only-ed25519.pem");
const P256_PEM: &str = include_str!("../tests/fixtures/test-only-p256.pem");
const RSA_PEM: &str = include_str!("../tests/fixtures/test-only-rsa2048.pem");
const HS256_SECRET: &str = "bench-only-hs256-secret-0123456789abcdef";

fn identity() -> Identity {
    Identity {
        openid: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
        unionid: Some("oUnion_2sgVt7hMZOPfL2M0123456".into()),
        nickname: "小明🙂".to_owned(),
        avatar: "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTLkGl5cW3icVmyiaVd3eZdkAFOh9z5qJTxTrw7iaUcXGj4YbIBuRSiaiaq/132".to_owned(),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: Scope::UserInfo,
    }
}

fn issuer(algorithm: JwtAlgorithm, cache: bool) -> JwtIssuer {
    let mut settings = JwtSettings {
        algorithm,
        cache,
        ..JwtSettings::default()
    };
    match algorithm {
        JwtAlgorithm::EdDSA => settings.private_key_pem = Some(SecretString::new(ED25519_PEM)),
        JwtAlgorithm::ES256 => settings.private_key_pem = Some(SecretString::new(P256_PEM)),
        JwtAlgorithm::RS256 => settings.private_key_pem = Some(SecretString::new(RSA_PEM)),
        JwtAlgorithm::HS256 => settings.hs256_secret = Some(SecretString::new(HS256_SECRET)),
    }
    JwtIssuer::new(settings, &SecretString::new(MASTER_SECRET)).unwrap()
}

fn jwt(c: &mut Criterion) {
    let identity = identity();
    let mut group = c.benchmark_group("jwt");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for algorithm in [
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::ES256,
        JwtAlgorithm::RS256,
        JwtAlgorithm::HS256,
    ] {
        let issuer = issuer(algorithm, false);
        let token = issuer.mint(&identity).unwrap();
        assert_eq!(issuer.verify(&token).unwrap().openid, identity.openid);
        group.bench_function(format!("mint/{algorithm:?}"), |b| {
            b.iter(|| issuer.mint(black_box(&identity)).unwrap())
        });
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Cache on: after the first call every call is a hit (the algorithm no longer matters).
    let cached = issuer(JwtAlgorithm::EdDSA, true);
    let key = [7u8; 16];
    let first = rt.block_on(cached.token_for(&key, &identity)).unwrap();
    let again = rt.block_on(cached.token_for(&key, &identity)).unwrap();
    // Same bytes: a hit hands out the cached value, it does not sign again.
    assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr());
    group.bench_function("token_for/cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cached.token_for(black_box(&key), &identity).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    // Cache off (the `cache: false` setting): every call signs, as load row (d) forces.
    let uncached = issuer(JwtAlgorithm::EdDSA, false);
    group.bench_function("token_for/cache_off/EdDSA", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        uncached
                            .token_for(black_box(&key), &identity)
                            .await
                            .unwrap(),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
