//! The PHP demo (a legacy upstream behind the sidecar): the real binary with the shipped
//! `examples/php-demo.toml` (simulated WeChat; only the PHP port and the sidecar's own address
//! changed), `php -S` serving `examples/php/index.php`, which verifies the JWT with
//! `examples/verify/php/wechat_jwt.php` and greets the user by nickname.
//!
//! - A whole login through the sidecar lands on the PHP page, which greets the simulated user.
//! - A forged `X-WeChat-Jwt` — validly signed with the demo's own key, so that PHP *would*
//!   greet "Mallory" if it ever got it (checked first, straight to PHP) — never reaches PHP: not
//!   without a session (PHP never sees the request), not on a public path (the header is
//!   stripped, in every spelling), not next to a real session (the proxy's token replaces it).
//!
//! What reached PHP is read from the page's own log: one line per request, with whether the
//! JWT header was present. PHP comes from `scripts/test.sh` (php-cli); without it the tests
//! fail.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::Browser;
use support::sidecar::{Running, Sidecar, free_port, repo_file, wait_for_200};
use url::Url;
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::config::Config;
use wechat_oauth_proxy::ids::Scope;
use wechat_oauth_proxy::jwt::JwtIssuer;

const DEMO_CONFIG: &str = "examples/php-demo.toml";
/// The PHP upstream address in the demo configuration (replaced by a free port here).
const DEMO_PHP_UPSTREAM: &str = "upstream = \"http://127.0.0.1:8081\"";

/// `php -S` with the demo page as its router script; killed on drop.
struct Php {
    _child: Running,
    base: Url,
    log: PathBuf,
}

impl Php {
    /// Starts `php -S 127.0.0.1:<port>` like scripts/demo-php.sh does, with the JWKS of the
    /// sidecar at `jwks_url`, its log and JWKS cache in `dir`.
    async fn start(port: u16, jwks_url: &Url, dir: &std::path::Path) -> Php {
        let log = dir.join("php.log");
        let tmp = dir.join("php-tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let child = Command::new("php")
            .arg("-S")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-t")
            .arg(repo_file("examples/php"))
            .arg(repo_file("examples/php/index.php"))
            .env("WECHAT_JWKS_URL", jwks_url.as_str())
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start php: {e}. Run scripts/test.sh, which installs php-cli")
            });
        let php = Php {
            _child: Running(child),
            base: Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            log,
        };
        wait_for_200(&php.base.join("/public/up").unwrap(), 100).await;
        php
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until PHP logged a request for `path`; returns that line.
    async fn logged(&self, path: &str) -> String {
        let needle = format!(" {path} X-WeChat-Jwt: ");
        for _ in 0..100 {
            if let Some(line) = self.log().lines().find(|l| l.contains(&needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("PHP never logged {path}:\n{}", self.log());
    }
}

/// The sidecar with the demo configuration in front of `php -S`.
struct Demo {
    php: Php,
    sidecar: Sidecar,
    /// Signs with the demo's key: what a forger who stole a token (or the key) could send.
    issuer: JwtIssuer,
}

impl Demo {
    async fn start(label: &str) -> Demo {
        let shipped = std::fs::read_to_string(repo_file(DEMO_CONFIG)).unwrap();
        assert!(shipped.contains(DEMO_PHP_UPSTREAM), "{DEMO_CONFIG} changed");
        let port = free_port();
        let config = shipped.replace(
            DEMO_PHP_UPSTREAM,
            &format!("upstream = \"http://127.0.0.1:{port}\""),
        );
        let (demo, secrets) = Config::load(&repo_file(DEMO_CONFIG), &HashMap::new()).unwrap();
        let issuer = JwtIssuer::new(
            demo.jwt.settings(&secrets).unwrap(),
            secrets.master_secret.as_ref().unwrap(),
        )
        .unwrap();
        // The page's defaults and the demo script name the configuration's issuer and audience.
        let page = std::fs::read_to_string(repo_file("examples/php/index.php")).unwrap();
        let script = std::fs::read_to_string(repo_file("scripts/demo-php.sh")).unwrap();
        for (variable, value) in [
            ("WECHAT_JWT_ISSUER", &demo.jwt.issuer),
            ("WECHAT_JWT_AUDIENCE", &demo.jwt.audience),
        ] {
            assert!(page.contains(&format!("getenv('{variable}') ?: '{value}'")));
            assert!(script.contains(&format!("{variable}={value} ")));
        }

        let sidecar = Sidecar::start(label, &config).await;
        let php = Php::start(port, &sidecar.url("/_wxauth/jwks.json"), &sidecar.dir.0).await;
        Demo {
            php,
            sidecar,
            issuer,
        }
    }

    /// A validly signed token for "Mallory" (with markup in the nickname).
    fn forged(&self) -> String {
        self.issuer
            .mint(&Identity {
                openid: "o9AgO5Mallory-forged-openid0".into(),
                unionid: None,
                nickname: "Mallory <script>alert(1)</script>".to_owned(),
                avatar: String::new(),
                appid: "wxa1b2c3d4e5f60708".into(),
                scope: Scope::UserInfo,
            })
            .unwrap()
    }
}

/// A unique path segment, so that log lines of one request cannot be confused with another's.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

#[tokio::test]
async fn a_login_through_the_sidecar_lands_on_the_php_page_which_greets_the_user() {
    let demo = Demo::start("php-login").await;
    let browser = demo.sidecar.browser();
    // User 1 of the simulator: "Alice 🌸" (a space and a 4-byte emoji that must survive).
    let path = format!("/{}?from=test", unique("orders"));
    let landed = demo.sidecar.login(&browser, &path, 1).await;
    assert_eq!(landed.url.path(), path.split('?').next().unwrap());
    assert_eq!(landed.status, 200, "{}", landed.body);
    assert!(
        landed.body.contains("你好，Alice 🌸！"),
        "the PHP page greets the user: {}",
        landed.body
    );
    assert!(landed.body.contains("o9AgO5Alice-SimUser-8nF2kQ4x"));
    assert!(landed.body.contains("o6_bmAliceSimUnionid-7Hd3Lp2q"));
    assert!(
        landed.body.contains("PHP "),
        "served by PHP: {}",
        landed.body
    );
    let line = demo.php.logged(&path).await;
    assert!(line.ends_with("X-WeChat-Jwt: present"), "{line}");

    // The next page is served from the session, and PHP verifies again.
    let again = browser.get(demo.sidecar.url("/another")).await;
    assert!(again.body.contains("你好，Alice 🌸！"), "{}", again.body);
    // After logout the proxy sends the browser back into the login: PHP is not asked.
    let out = browser.get(demo.sidecar.url("/_wxauth/logout")).await;
    assert_eq!(out.status, 302, "{}", out.body);
    let after = browser.get(demo.sidecar.url("/")).await;
    assert_eq!(after.status, 302);
    assert!(
        after
            .location()
            .path()
            .ends_with("/connect/oauth2/authorize"),
        "{}",
        after.location()
    );
}

#[tokio::test]
async fn a_forged_jwt_never_reaches_php() {
    let demo = Demo::start("php-forged").await;
    let forged = demo.forged();
    let direct = Browser::new(demo.php.base.clone());

    // Control: PHP accepts this token — it is signed with the demo's key — and escapes the
    // nickname. So if the proxy ever let it through, the checks below would see "Mallory".
    let straight = direct
        .get_with(
            demo.php.base.join("/direct").unwrap(),
            &[("X-WeChat-Jwt", &forged)],
        )
        .await;
    assert_eq!(straight.status, 200, "{}", straight.body);
    assert!(
        straight
            .body
            .contains("你好，Mallory &lt;script&gt;alert(1)&lt;/script&gt;！"),
        "{}",
        straight.body
    );
    assert!(!straight.body.contains("<script>"));
    // PHP reads the underscore spelling as the same header: forwarding it would be as bad.
    let underscore = direct
        .get_with(
            demo.php.base.join("/underscore").unwrap(),
            &[("x_wechat_jwt", &forged)],
        )
        .await;
    assert!(
        underscore.body.contains("你好，Mallory"),
        "{}",
        underscore.body
    );
    // And refuses garbage with a 401 page.
    let garbage = direct
        .get_with(
            demo.php.base.join("/garbage").unwrap(),
            &[("X-WeChat-Jwt", "a.b.c")],
        )
        .await;
    assert_eq!(garbage.status, 401, "{}", garbage.body);

    // 1. No session, a protected path: the proxy answers (login redirect, or 401 for an API
    //    client) and PHP never sees the request.
    let browser = demo.sidecar.browser();
    let protected = format!("/{}", unique("forged"));
    let navigation = browser
        .get_with(demo.sidecar.url(&protected), &[("X-WeChat-Jwt", &forged)])
        .await;
    assert_eq!(navigation.status, 302, "{}", navigation.body);
    let api = browser
        .get_with(
            demo.sidecar.url(&protected),
            &[("X-WeChat-Jwt", &forged), ("accept", "application/json")],
        )
        .await;
    assert_eq!(api.status, 401, "{}", api.body);
    assert!(!api.body.contains("Mallory") && !navigation.body.contains("Mallory"));

    // 2. No session, a public path (skip rule): PHP gets the request without the header, in
    //    every spelling a client tried (PHP would read `x_wechat_jwt` as the same variable).
    let public = format!("/public/{}", unique("probe"));
    let reply = browser
        .get_with(
            demo.sidecar.url(&public),
            &[
                ("X-WeChat-Jwt", &forged),
                ("x_wechat_jwt", &forged),
                ("X-WECHAT-JWT", &forged),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("未登录 / Not signed in"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("Mallory"));
    let line = demo.php.logged(&public).await;
    assert!(line.ends_with("X-WeChat-Jwt: absent"), "{line}");
    // PHP logged the later public request, so it would have logged the protected one by now.
    assert!(
        !demo.php.log().contains(&protected),
        "a request without a session reached PHP:\n{}",
        demo.php.log()
    );

    // 3. With a real session, a forged header next to it: the proxy's own token replaces it.
    let landed = demo.sidecar.login(&browser, "/", 0).await;
    assert!(landed.body.contains("你好，张三！"), "{}", landed.body);
    let mixed = browser
        .get_with(
            demo.sidecar.url("/mixed"),
            &[("X-WeChat-Jwt", &forged), ("x_wechat_jwt", &forged)],
        )
        .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert!(mixed.body.contains("你好，张三！"), "{}", mixed.body);
    assert!(!mixed.body.contains("Mallory"), "{}", mixed.body);
}
