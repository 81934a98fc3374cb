//! The real `wechat-oauth-proxy` binary with the shipped `config.toml` (ports and state dir
//! overridden): a full login through the in-process simulated WeChat with a plain HTTP client,
//! so the README's demo command cannot rot. Also the CLI contract: `--check` and exit codes,
//! and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use support::{STEP, bounded};

const BIN: &str = env!("CARGO_BIN_EXE_wechat-oauth-proxy");

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// A free loopback port (bound then released; the binary binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wxauth-e2e-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The running binary; killed on drop so a failing test never leaks a process.
struct Proxy {
    child: Child,
    base: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &PathBuf, state: &PathBuf) -> Proxy {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--public-url")
        .arg(&base)
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    Proxy { child, base }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(support::WECHAT_UA)
        .timeout(STEP)
        .build()
        .unwrap()
}

/// Polls `url` until it answers 200, for at most `tries` × 100 ms.
async fn wait_for_200(client: &reqwest::Client, url: &str, tries: u32) {
    for _ in 0..tries {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

/// A tiny cookie jar: name → value from `Set-Cookie`, parsed with the `cookie` crate.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, resp: &reqwest::Response) {
        for value in resp.headers().get_all(SET_COOKIE) {
            let parsed = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
            if parsed.max_age() == Some(cookie::time::Duration::ZERO) || parsed.value().is_empty() {
                self.0.remove(parsed.name());
            } else {
                self.0
                    .insert(parsed.name().to_owned(), parsed.value().to_owned());
            }
        }
    }
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", resp.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Steps 1–3 of a login through the simulated WeChat: `/hello?x=1` without a session, the
/// consent page, the callback; the browser's cookies after the callback's redirect.
async fn log_in(http: &reqwest::Client, proxy: &Proxy) -> Jar {
    // The simulator pushes a ticket at start; the component token follows.
    wait_for_200(http, &format!("{}/_wxauth/ready", proxy.base), 300).await;
    let mut jar = Jar::default();
    // 1. A browser navigation without a session is sent to the (simulated) WeChat.
    let resp = bounded(
        http.get(format!("{}/hello?x=1", proxy.base))
            .header(ACCEPT, "text/html,application/xhtml+xml")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    jar.take(&resp);
    let mut next = location(&resp);
    // The layer may route through its own /login first; follow our own redirects.
    while next.starts_with(&proxy.base) || next.starts_with('/') {
        let url = if next.starts_with('/') {
            format!("{}{next}", proxy.base)
        } else {
            next.clone()
        };
        let resp = http
            .get(url)
            .header(COOKIE, jar.header())
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        jar.take(&resp);
        next = location(&resp);
    }
    assert!(
        next.contains("/connect/oauth2/authorize?appid=wxa1b2c3d4e5f60708"),
        "{next}"
    );
    assert!(
        next.contains("component_appid=wx0123456789abcdef"),
        "{next}"
    );
    assert!(next.ends_with("#wechat_redirect"), "{next}");

    // 2. The consent page of the simulated WeChat lists the test users; pick the first one.
    let authorize = next.split('#').next().unwrap().to_owned();
    let page = http.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("张三"),
        "consent page lists the CJK test user"
    );
    let start = html
        .find("href=\"/_sim/authorize/choose?")
        .expect("a user link on the consent page");
    let href = &html[start + 6..];
    let href = href[..href.find('"').unwrap()].replace("&amp;", "&");
    let sim_base = {
        let u = url::Url::parse(&authorize).unwrap();
        format!("http://{}", u.host_str().unwrap()) + &format!(":{}", u.port().unwrap())
    };
    let chosen = http.get(format!("{sim_base}{href}")).send().await.unwrap();
    assert_eq!(chosen.status(), 302);
    let callback = location(&chosen);
    assert!(
        callback.starts_with(&format!("{}/_wxauth/callback?", proxy.base)),
        "{callback}"
    );
    assert!(callback.contains("code=") && callback.contains("state="));

    // 3. The callback creates the session and sends the browser back where it started.
    let back = http
        .get(&callback)
        .header(COOKIE, jar.header())
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.status(),
        302,
        "callback failed: {:?}",
        back.text().await
    );
    jar.take(&back);
    assert_eq!(location(&back), "/hello?x=1");
    jar
}

/// `/_wxauth/whoami`'s nickname for the browser's cookies; `None` when it has no session (401).
async fn whoami(http: &reqwest::Client, proxy: &Proxy, jar: &Jar) -> Option<serde_json::Value> {
    let who = bounded(
        http.get(format!("{}/_wxauth/whoami", proxy.base))
            .header(COOKIE, jar.header())
            .send(),
    )
    .await
    .unwrap();
    match who.status().as_u16() {
        200 => Some(who.json::<serde_json::Value>().await.unwrap()["nickname"].clone()),
        401 => None,
        other => panic!("whoami answered {other}"),
    }
}

/// The binary on `state` with the shipped config, once it answers its health check.
async fn start_healthy(http: &reqwest::Client, state: &PathBuf) -> Proxy {
    let proxy = start(&repo_file("config.toml"), state);
    wait_for_200(http, &format!("{}/_wxauth/health", proxy.base), 300).await;
    proxy
}

#[tokio::test]
async fn shipped_config_runs_a_whole_login_through_the_simulated_wechat() {
    let state = temp_dir("login");
    let proxy = start(&repo_file("config.toml"), &state);
    let http = client();
    wait_for_200(&http, &format!("{}/_wxauth/health", proxy.base), 300).await;
    let jar = log_in(&http, &proxy).await;

    // 4. The demo upstream now receives the identity.
    let landed = http
        .get(format!("{}/hello?x=1", proxy.base))
        .header(COOKIE, jar.header())
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), 200);
    let page = landed.text().await.unwrap();
    assert!(page.contains("张三"), "demo page shows the nickname");
    assert!(page.contains("openid"), "demo page shows the claims");

    // 5. whoami agrees; a forged identity header never reaches the upstream.
    assert_eq!(whoami(&http, &proxy, &jar).await.unwrap(), "张三");

    let echo = http
        .get(format!("{}/_echo", proxy.base))
        .header(COOKIE, jar.header())
        .header("X-WeChat-OpenID", "forged")
        .header("x_wechat_nickname", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    let echo: serde_json::Value = echo.json().await.unwrap();
    let headers = echo["headers"].as_object().unwrap();
    let openid = &headers["x-wechat-openid"];
    assert_eq!(openid.as_array().unwrap().len(), 1, "{openid}");
    assert_ne!(openid[0], "forged");
    assert!(!headers.contains_key("x_wechat_nickname"));
    assert!(headers.contains_key("x-wechat-jwt"));

    // The ticket and token were persisted in the state directory.
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
    assert!(!files.is_empty(), "state dir holds the platform state");
    drop(proxy);
    std::fs::remove_dir_all(&state).ok();
}

/// The shipped configuration keeps sessions in `state_dir/sessions.redb`: a user logged in
/// before a SIGKILL is still logged in, with the same cookie, after a restart — and after a
/// clean restart too.
#[tokio::test]
async fn a_login_survives_sigkill_and_a_restart() {
    let state = temp_dir("sigkill");
    let http = client();
    let mut proxy = start_healthy(&http, &state).await;
    let jar = log_in(&http, &proxy).await;
    assert_eq!(whoami(&http, &proxy, &jar).await.unwrap(), "张三");

    // kill -9 right after the login: no shutdown code runs.
    proxy.child.kill().unwrap(); // SIGKILL on Unix
    proxy.child.wait().unwrap();
    let mut proxy = start_healthy(&http, &state).await;
    assert_eq!(whoami(&http, &proxy, &jar).await.unwrap(), "张三");

    // SIGTERM: a clean stop, then the same.
    let pid = proxy.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stopped = false;
    for _ in 0..100 {
        if proxy.child.try_wait().unwrap().is_some() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "no exit after SIGTERM");
    let proxy = start_healthy(&http, &state).await;
    assert_eq!(whoami(&http, &proxy, &jar).await.unwrap(), "张三");

    // Logged out stays logged out across a SIGKILL.
    let logout = bounded(
        http.post(format!("{}/_wxauth/logout", proxy.base))
            .header(COOKIE, jar.header())
            .header("Origin", &proxy.base)
            .send(),
    )
    .await
    .unwrap();
    assert!(
        logout.status().is_redirection() || logout.status().is_success(),
        "{}",
        logout.status()
    );
    drop(proxy); // SIGKILL
    let proxy = start_healthy(&http, &state).await;
    assert_eq!(whoami(&http, &proxy, &jar).await, None);
    drop(proxy);
    std::fs::remove_dir_all(&state).ok();
}

#[test]
fn check_reports_every_problem_with_its_key_and_exits_64() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(repo_file("config.toml"))
        .unwrap()
        .replace("wx0123456789abcdef", "not-an-appid")
        .replace("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "too-short")
        .replace("dev-only-master-secret-0123456789abcdef-change-me", "short");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "wechat.component_appid",
        "wechat.encoding_aes_key",
        "session.master_secret",
    ] {
        assert!(stderr.contains(key), "{key} not reported:\n{stderr}");
    }
    assert!(!stderr.contains("dev-component-secret-not-for-production"));

    let good = Command::new(BIN)
        .arg("--config")
        .arg(repo_file("config.toml"))
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let unknown = dir.join("unknown.toml");
    std::fs::write(
        &unknown,
        std::fs::read_to_string(repo_file("config.toml"))
            .unwrap()
            .replace("[session]", "[session]\ncookie_nmae = \"x\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&unknown)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cookie_nmae"));

    // What start-up refuses, --check refuses: the same construction runs in both.
    for (from, to) in [
        (
            r#"skip = ["GET /favicon.ico", "GET /public/*"]"#,
            r#"skip = ["GET /a/../b"]"#,
        ),
        (
            r#"skip = ["GET /favicon.ico", "GET /public/*"]"#,
            r#"skip = ["* /pub*lic"]"#,
        ),
        (
            r#"skip = ["GET /favicon.ico", "GET /public/*"]"#,
            r#"skip = ["GET /a%2Fb"]"#,
        ),
        (r#"prefix = "/_wxauth""#, r#"prefix = "/a/./b""#),
        (r#"prefix = "/_wxauth""#, r#"prefix = "/a%2e/b""#),
    ] {
        let config = dir.join("startup.toml");
        let text = std::fs::read_to_string(repo_file("config.toml")).unwrap();
        assert!(text.contains(from), "config.toml changed: {from}");
        std::fs::write(&config, text.replace(from, to)).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{to}: {stderr}");
        assert!(stderr.contains("auth"), "{to}: {stderr}");
    }

    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits() {
    // A slow upstream: answers after 1.5 s.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr: SocketAddr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = upstream.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow done")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let dir = temp_dir("sigterm");
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(repo_file("config.toml"))
        .unwrap()
        .replace(
            "# No upstream: dev.demo_upstream starts one in-process.",
            &format!("upstream = \"http://{upstream_addr}\""),
        )
        .replace("skip = [", "skip = [\"GET /slow\", ")
        // The single-threaded scheduler (the shipped config uses one thread per CPU, which the
        // login test above covers): serving, SIGTERM and draining must work on both.
        .replace("[server]\n", "[server]\nworker_threads = 1\n");
    assert!(text.contains("worker_threads = 1"));
    std::fs::write(&config, text).unwrap();
    let mut proxy = start(&config, &dir);
    let http = client();
    wait_for_200(&http, &format!("{}/_wxauth/health", proxy.base), 300).await;

    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{}/slow", proxy.base);
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = proxy.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    let body = bounded(slow).await.unwrap();
    assert_eq!(body, "slow done", "the in-flight request completed");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("the process exits after draining");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    std::fs::remove_dir_all(&dir).ok();
}
