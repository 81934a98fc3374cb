//! The verifier kit (`examples/verify/<language>/`) and `wechat-oauth-proxy jwt verify`
//! against a live proxy: the real binary in development mode (simulated WeChat, demo upstream)
//! with the shipped `config.toml` plus a previous key (a rotation in progress).
//!
//! Each test logs a browser in through the sidecar, captures the JWT the upstream received
//! (`/_echo`), and runs one verifier (PHP, Node.js, Python, Go, Java, the Rust subcommand) on:
//!
//! - the real token → accepted, with the identity `/_wxauth/whoami` reports (also with the
//!   JWKS read from a file);
//! - a token signed with the previous key (its `kid` published in the JWKS) → accepted;
//! - a tampered payload, a token signed by a key the proxy never had under the proxy's `kid`,
//!   an expired token, a wrong audience, a wrong issuer, `alg: none`, HS256 keyed with the
//!   public key (algorithm confusion) and an unknown `kid` → each refused, exit code 1, a reason
//!   naming what was wrong, nothing on stdout.
//!
//! The toolchains come from `scripts/test.sh` (Debian packages; jose from npm and PyJWT from
//! PyPI into `target/test-deps/`). A missing one fails its test: nothing is skipped.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, KeypairBytes};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::sidecar::{Ran, Sidecar, repo_file, run};

/// `[jwt] issuer` and `audience` of the shipped `config.toml`.
const ISSUER: &str = "wechat-oauth-proxy-dev";
const AUDIENCE: &str = "demo-upstream";

/// The previous key of the rotation: the proxy publishes its public half, the test signs
/// with its private half.
const PREVIOUS_PRIVATE_PEM: &str = include_str!("fixtures/test-only-ed25519.pem");
const PREVIOUS_PUBLIC_PEM: &str = "tests/fixtures/test-only-ed25519.pub.pem";

/// How long a compiler may take (a cold Go build cache compiles the standard library).
const COMPILE: Duration = Duration::from_secs(300);
/// How long one verifier run may take.
const VERIFY: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run scripts/test.sh (or scripts/test.sh --setup-only), which installs \
    php-cli, golang-go, a JDK, Node.js with jose and PyJWT";

/// The wall clock in Unix seconds.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Where `scripts/test.sh` put the npm and PyPI packages.
fn test_deps() -> PathBuf {
    std::env::var_os("TEST_DEPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-deps"))
}

/// A scratch directory for compiled verifiers, unique to this test.
fn scratch(language: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("verifiers-{language}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How to run one verifier on one JWKS source: `program args… <jwks> <iss> <aud>`, token on
/// stdin (the Rust subcommand spells its arguments as options).
struct Verifier {
    language: &'static str,
    command: Box<dyn Fn(&str) -> tokio::process::Command + Send + Sync>,
}

impl Verifier {
    /// A program taking `<jwks> <iss> <aud>` after `args`.
    fn positional(language: &'static str, program: PathBuf, args: Vec<String>) -> Self {
        Self::with_env(language, program, args, Vec::new())
    }

    fn with_env(
        language: &'static str,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        Verifier {
            language,
            command: Box::new(move |jwks| {
                let mut command = tokio::process::Command::new(&program);
                command
                    .args(&args)
                    .args([jwks, ISSUER, AUDIENCE])
                    .envs(env.iter().map(|(k, v)| (k, v)));
                command
            }),
        }
    }

    async fn verify(&self, jwks: &str, token: &str) -> Ran {
        run((self.command)(jwks), token, VERIFY, SETUP_HINT).await
    }
}

/// Compiles with `command`; fails the test with the compiler's output if it does not succeed.
async fn compile(command: tokio::process::Command) {
    let ran = run(command, "", COMPILE, SETUP_HINT).await;
    assert_eq!(ran.code, Some(0), "compilation failed: {ran:?}");
}

/// What every test shares: the sidecar, a logged-in identity and the tokens to try.
struct Live {
    sidecar: Sidecar,
    jwks_url: String,
    jwks_file: PathBuf,
    whoami: Value,
    /// The JWT the upstream received.
    real: String,
}

impl Live {
    async fn start(language: &str) -> Live {
        let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
        assert!(shipped.contains(&format!("issuer = \"{ISSUER}\"")));
        assert!(shipped.contains(&format!("audience = \"{AUDIENCE}\"")));
        let config = shipped.replace(
            "[jwt]\n",
            &format!(
                "[jwt]\nprevious_public_key_file = {:?}\n",
                repo_file(PREVIOUS_PUBLIC_PEM)
            ),
        );
        assert_ne!(config, shipped, "config.toml has a [jwt] section");
        let sidecar = Sidecar::start(&format!("verifiers-{language}"), &config).await;
        let browser = sidecar.browser();
        let landed = sidecar.login(&browser, "/hello", 0).await;
        assert_eq!(landed.status, 200, "{}", landed.body);

        let echo = browser
            .get_with(sidecar.url("/_echo"), &[("accept", "application/json")])
            .await;
        assert_eq!(echo.status, 200, "{}", echo.body);
        let real = echo.json()["headers"]["x-wechat-jwt"][0]
            .as_str()
            .expect("the upstream received a JWT")
            .to_owned();
        let whoami = browser.get(sidecar.url("/_wxauth/whoami")).await.json();
        assert_eq!(whoami["nickname"], "张三");

        let jwks_url = sidecar.url("/_wxauth/jwks.json").to_string();
        let jwks = browser.get(&jwks_url).await;
        assert_eq!(jwks.status, 200);
        let jwks_file = sidecar.dir.0.join("jwks.json");
        std::fs::write(&jwks_file, &jwks.body).unwrap();
        Live {
            sidecar,
            jwks_url,
            jwks_file,
            whoami,
            real,
        }
    }

    fn jwks(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.jwks_file).unwrap()).unwrap()
    }

    /// The `kid` of the real token (the current key).
    fn current_kid(&self) -> String {
        let header = jsonwebtoken::decode_header(&self.real).unwrap();
        header.kid.unwrap()
    }

    /// The `kid` of the previous key: the other key the JWKS publishes.
    fn previous_kid(&self) -> String {
        let jwks = self.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "current and previous key published: {jwks}");
        let current = self.current_kid();
        keys.iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .find(|kid| *kid != current)
            .unwrap()
    }

    /// The real token's claims with fresh times, then `change` applied.
    fn claims(&self, change: impl FnOnce(&mut Value)) -> Value {
        let payload = self.real.split('.').nth(1).unwrap();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let now = now();
        claims["iat"] = json!(now - 5);
        claims["nbf"] = json!(now - 5);
        claims["exp"] = json!(now + 300);
        change(&mut claims);
        claims
    }

    /// The cases: (what, token, `Some(keyword)` of the refusal, or `None` when it must pass).
    fn cases(&self) -> Vec<(&'static str, String, Option<&'static str>)> {
        let previous = EncodingKey::from_ed_pem(PREVIOUS_PRIVATE_PEM.as_bytes()).unwrap();
        let stranger = KeypairBytes {
            secret_key: rand::random(),
            public_key: None,
        }
        .to_pkcs8_der()
        .unwrap();
        let stranger = EncodingKey::from_ed_der(stranger.as_bytes());
        let sign = |kid: String, claims: Value, key: &EncodingKey| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some("JWT".to_owned());
            header.kid = Some(kid);
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        };
        let by_previous =
            |change: fn(&mut Value)| sign(self.previous_kid(), self.claims(change), &previous);
        let real_parts: Vec<&str> = self.real.split('.').collect();
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());

        let tampered = format!(
            "{}.{}.{}",
            real_parts[0],
            encode(&self.claims(|c| c["nickname"] = json!("Mallory"))),
            real_parts[2]
        );
        let none = format!(
            "{}.{}.",
            encode(&json!({"alg": "none", "typ": "JWT", "kid": self.current_kid()})),
            real_parts[1]
        );
        let public_x = self.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == self.current_kid().as_str())
            .unwrap()["x"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(self.current_kid());
        let confused = jsonwebtoken::encode(
            &hs_header,
            &self.claims(|_| {}),
            &EncodingKey::from_secret(public_x.as_bytes()),
        )
        .unwrap();
        vec![
            ("the real token", self.real.clone(), None),
            ("signed with the previous key", by_previous(|_| {}), None),
            ("tampered payload", tampered, Some("signature")),
            (
                "signed by another key under the proxy's kid",
                sign(self.current_kid(), self.claims(|_| {}), &stranger),
                Some("signature"),
            ),
            (
                "expired",
                by_previous(|c| {
                    let now = now();
                    c["exp"] = json!(now - 3600);
                    c["iat"] = json!(now - 4000);
                    c["nbf"] = json!(now - 4000);
                }),
                Some("exp"),
            ),
            (
                "wrong audience",
                by_previous(|c| c["aud"] = json!("another-app")),
                Some("aud"),
            ),
            (
                "wrong issuer",
                by_previous(|c| c["iss"] = json!("https://evil.example.com")),
                Some("iss"),
            ),
            ("alg none", none, Some("alg")),
            ("HS256 keyed with the public key", confused, Some("alg")),
            (
                "unknown kid",
                sign(
                    "not-a-published-kid".to_owned(),
                    self.claims(|_| {}),
                    &stranger,
                ),
                Some("key"),
            ),
        ]
    }

    /// Runs `verifier` on every case and checks its verdict.
    async fn check(&self, verifier: &Verifier) {
        let language = verifier.language;
        for (what, token, refusal) in self.cases() {
            let ran = verifier.verify(&self.jwks_url, &token).await;
            match refusal {
                None => self.assert_accepted(language, what, &ran),
                Some(keyword) => {
                    assert_eq!(
                        ran.code,
                        Some(1),
                        "{language}: {what} must be refused: {ran:?}"
                    );
                    assert!(ran.stdout.is_empty(), "{language}: {what}: {ran:?}");
                    let reason = ran.stderr.trim().to_lowercase();
                    assert!(
                        reason.starts_with("rejected:") && reason.contains(keyword),
                        "{language}: {what}: the reason should name {keyword:?}: {ran:?}"
                    );
                }
            }
        }
        // The JWKS from a file works the same.
        let file = self.jwks_file.to_str().unwrap();
        let ran = verifier.verify(file, &self.real).await;
        self.assert_accepted(language, "the real token, JWKS from a file", &ran);
        // A proxy that is gone is a refusal too, not a crash or a pass.
        let gone = "http://127.0.0.1:9/_wxauth/jwks.json";
        let ran = verifier.verify(gone, &self.real).await;
        assert_eq!(ran.code, Some(1), "{language}: unreachable JWKS: {ran:?}");
        assert!(
            ran.stdout.is_empty(),
            "{language}: unreachable JWKS: {ran:?}"
        );
    }

    fn assert_accepted(&self, language: &str, what: &str, ran: &Ran) {
        assert_eq!(ran.code, Some(0), "{language}: {what} must pass: {ran:?}");
        let identity: Value = serde_json::from_str(ran.stdout.trim())
            .unwrap_or_else(|e| panic!("{language}: {what}: not JSON ({e}): {ran:?}"));
        for field in ["openid", "unionid", "nickname", "avatar", "appid"] {
            assert_eq!(
                identity[field], self.whoami[field],
                "{language}: {what}: {field}"
            );
        }
        assert!(
            self.whoami["unionid"].is_string(),
            "the first simulated user has a unionid"
        );
    }
}

#[tokio::test]
async fn php_verifier_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("php").await;
    let script = repo_file("examples/verify/php/verify.php");
    let verifier = Verifier::positional(
        "php",
        "php".into(),
        vec![script.to_str().unwrap().to_owned()],
    );
    live.check(&verifier).await;
}

#[tokio::test]
async fn node_verifier_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("node").await;
    let modules = test_deps().join("npm/node_modules");
    let node_path = match std::env::var("NODE_PATH") {
        Ok(existing) if !existing.is_empty() => format!("{}:{existing}", modules.display()),
        _ => modules.display().to_string(),
    };
    let script = repo_file("examples/verify/node/verify.js");
    let verifier = Verifier::with_env(
        "node",
        "node".into(),
        vec![script.to_str().unwrap().to_owned()],
        vec![("NODE_PATH".to_owned(), node_path)],
    );
    live.check(&verifier).await;
}

#[tokio::test]
async fn python_verifier_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("python").await;
    let venv = test_deps().join("venv/bin/python3");
    let python = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let script = repo_file("examples/verify/python/verify.py");
    let verifier =
        Verifier::positional("python", python, vec![script.to_str().unwrap().to_owned()]);
    live.check(&verifier).await;
}

#[tokio::test]
async fn go_verifier_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("go").await;
    let out = scratch("go");
    let binary = out.join("verify");
    let mut build = tokio::process::Command::new("go");
    build
        .current_dir(repo_file("examples/verify/go"))
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        // Standard library only: never download a module or a toolchain.
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", out.join("cache"));
    compile(build).await;
    live.check(&Verifier::positional("go", binary, Vec::new()))
        .await;
}

#[tokio::test]
async fn java_verifier_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("java").await;
    let out = scratch("java");
    let mut build = tokio::process::Command::new("javac");
    build
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&out)
        .arg(repo_file("examples/verify/java/WeChatJwtVerifier.java"));
    compile(build).await;
    let verifier = Verifier::positional(
        "java",
        "java".into(),
        vec![
            "-cp".to_owned(),
            out.to_str().unwrap().to_owned(),
            "WeChatJwtVerifier".to_owned(),
        ],
    );
    live.check(&verifier).await;
}

#[tokio::test]
async fn jwt_verify_subcommand_accepts_the_proxys_token_and_refuses_forgeries() {
    let live = Live::start("subcommand").await;
    let verifier = Verifier {
        language: "wechat-oauth-proxy jwt verify",
        command: Box::new(|jwks| {
            let mut command = tokio::process::Command::new(support::sidecar::BIN);
            command.args([
                "jwt", "verify", "--jwks", jwks, "--iss", ISSUER, "--aud", AUDIENCE,
            ]);
            command
        }),
    };
    // The subcommand prints every claim; the identity fields are the ones compared.
    live.check(&verifier).await;

    // Without --iss/--aud it says so, and a wrong audience then passes: the operator asked for
    // no audience check.
    let ran = run(
        {
            let mut command = tokio::process::Command::new(support::sidecar::BIN);
            command.args(["jwt", "verify", "--jwks", &live.jwks_url]);
            command
        },
        &live.real,
        VERIFY,
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stderr.contains("iss is not checked") && ran.stderr.contains("aud is not checked"));
    let claims: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], live.whoami["openid"]);
    drop(live.sidecar);
}
