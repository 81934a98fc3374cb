//! `SIGHUP` on the real binary (the shipped development configuration, one process, the
//! simulated WeChat): the skip rules and tenants of the edited file apply without a restart and
//! without dropping a connection; a bad file is refused with the reason on stderr and the old
//! settings keep serving; a restart-only key that changed is named at `warn` and keeps its
//! start-up value.
#![cfg(all(unix, feature = "sim"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

mod support;

use support::STEP;
use support::sidecar::{BIN, free_port};

/// Bound of every "until" loop (start-up, a reload taking effect).
const TRIES: u32 = 300;

const ACCOUNT_B: &str = "[[tenants.authorizer]]\nappid = \"wxb2b2c3d4e5f60708\"\nhosts = [\"localhost\"]\nname = \"模拟公众号 B / Sim account B\"\naudience = \"demo-upstream-b\"\n";

/// The shipped `config.toml` on `port` with its state in `dir`, `edit`ed.
fn config_text(port: u16, dir: &std::path::Path, edit: impl Fn(String) -> String) -> String {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let text = shipped
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "public_url = \"http://127.0.0.1:8080\"",
            &format!("public_url = \"http://127.0.0.1:{port}\""),
        )
        .replace(
            "state_dir = \"./state\"",
            &format!("state_dir = {:?}", dir.join("state").display().to_string()),
        );
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains(ACCOUNT_B));
    edit(text)
}

/// Appends every line of `stream` to `sink`.
fn collect(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
}

/// The binary, its log collected line by line; killed on drop.
struct Proxy {
    child: Child,
    pid: u32,
    port: u16,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    /// Starts the binary on the shipped configuration `edit`ed (no command-line overrides:
    /// every key comes from the file) and waits for its health check.
    async fn start(tag: &str, edit: impl Fn(String) -> String) -> Proxy {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("wxauth-reload-{tag}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config_text(port, &dir, edit)).unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        // The log (stdout or stderr, whichever the subscriber writes to), line by line.
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), Arc::clone(&stderr));
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let pid = child.id().unwrap();
        let proxy = Proxy {
            child,
            pid,
            port,
            dir,
            stderr,
        };
        proxy
            .until("the health check answers", |p| async move {
                p.status("/_wxauth/health", None).await == Some(StatusCode::OK)
            })
            .await;
        proxy
    }

    /// Rewrites the configuration file (same path) with `edit` applied to the shipped one.
    fn rewrite(&self, edit: impl Fn(String) -> String) {
        let text = config_text(self.port, &self.dir, edit);
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    fn rewrite_raw(&self, text: &str) {
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    /// `kill -HUP <pid>`.
    fn hangup(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Still the same process, still running.
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the process exited"
        );
        assert_eq!(self.child.id(), Some(self.pid));
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds `needle` `times` times.
    async fn until_logged(&self, needle: &str, times: usize) {
        self.until(needle, |p| async move {
            p.log().matches(needle).count() >= times
        })
        .await;
    }

    async fn until<'a, F, Fut>(&'a self, what: &str, check: F)
    where
        F: Fn(&'a Proxy) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..TRIES {
            if check(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never: {what}\n--- log ---\n{}", self.log());
    }

    /// The status of an API-style `GET path` on a new connection, with `Host: host:port` when
    /// given; `None` when there was no answer.
    async fn status(&self, path: &str, host: Option<&str>) -> Option<StatusCode> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STEP)
            .build()
            .unwrap();
        let mut request = client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .header(header::ACCEPT, "application/json");
        if let Some(host) = host {
            request = request.header(header::HOST, format!("{host}:{}", self.port));
        }
        request.send().await.ok().map(|r| r.status())
    }

    /// One HTTP/1.1 keep-alive connection to the proxy.
    async fn connection(&self) -> Connection {
        let stream = tokio::time::timeout(
            STEP,
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .unwrap()
        .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Connection {
            send,
            port: self.port,
        }
    }
}

struct Connection {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    port: u16,
}

impl Connection {
    async fn status(&mut self, path: &str) -> StatusCode {
        let request = Request::get(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.port))
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .unwrap();
        tokio::time::timeout(STEP, async {
            self.send
                .ready()
                .await
                .expect("the connection is still open");
            let response = self.send.send_request(request).await.unwrap();
            let status = response.status();
            // Read the body to the end so the connection can carry the next request.
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
            status
        })
        .await
        .unwrap()
    }
}

fn with_skip(rule: &'static str) -> impl Fn(String) -> String {
    move |text| {
        text.replace(
            "skip = [\"GET /favicon.ico\", \"GET /public/*\"]",
            &format!("skip = [\"GET /favicon.ico\", \"GET /public/*\", {rule:?}]"),
        )
    }
}

fn without_account_b(text: String) -> String {
    text.replace(ACCOUNT_B, "")
}

#[tokio::test]
async fn a_skip_rule_added_to_the_file_applies_on_sighup_and_open_connections_stay() {
    let mut proxy = Proxy::start("skip", |t| t).await;
    let mut kept = proxy.connection().await;
    assert_eq!(kept.status("/open-now").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        proxy.status("/open-now", None).await,
        Some(StatusCode::UNAUTHORIZED)
    );

    proxy.rewrite(with_skip("GET /open-now"));
    proxy.hangup();
    proxy.until_logged("configuration reloaded", 1).await;
    assert_eq!(proxy.status("/open-now", None).await, Some(StatusCode::OK));
    // The connection opened before the reload carries on, under the new rules.
    assert_eq!(kept.status("/open-now").await, StatusCode::OK);
    assert_eq!(
        kept.status("/still-private").await,
        StatusCode::UNAUTHORIZED
    );
    proxy.assert_alive();
    assert!(!proxy.log().contains("need a restart"), "{}", proxy.log());
}

#[tokio::test]
async fn a_bad_file_is_refused_with_the_reason_logged_and_the_old_rules_stay() {
    let mut proxy = Proxy::start("bad", with_skip("GET /open-before")).await;
    let mut kept = proxy.connection().await;
    assert_eq!(kept.status("/open-before").await, StatusCode::OK);

    // Not TOML at all.
    proxy.rewrite_raw("[server\nlisten = ");
    proxy.hangup();
    proxy.until_logged("configuration reload refused", 1).await;
    assert!(proxy.log().contains("TOML parse error"), "{}", proxy.log());

    // TOML, but a skip rule that is not a path (and the old rule gone): refused as --check
    // refuses it.
    proxy.rewrite(|text| {
        text.replace(
            "skip = [\"GET /favicon.ico\", \"GET /public/*\"]",
            "skip = [\"GET relative/path\", \"GET /open-after\"]",
        )
    });
    proxy.hangup();
    proxy.until_logged("configuration reload refused", 2).await;
    assert!(proxy.log().contains("auth.skip[0]"), "{}", proxy.log());

    assert_eq!(
        proxy.status("/open-before", None).await,
        Some(StatusCode::OK)
    );
    assert_eq!(
        proxy.status("/open-after", None).await,
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(kept.status("/open-before").await, StatusCode::OK);
    assert!(!proxy.log().contains("configuration reloaded"));
    proxy.assert_alive();

    // Fixed: the next SIGHUP applies it.
    proxy.rewrite(with_skip("GET /open-after"));
    proxy.hangup();
    proxy.until_logged("configuration reloaded", 1).await;
    assert_eq!(
        proxy.status("/open-after", None).await,
        Some(StatusCode::OK)
    );
}

#[tokio::test]
async fn a_tenant_added_to_the_file_resolves_after_sighup() {
    let mut proxy = Proxy::start("tenant", without_account_b).await;
    assert_eq!(
        proxy.status("/hello", Some("localhost")).await,
        Some(StatusCode::NOT_FOUND),
        "no account on localhost yet"
    );

    proxy.rewrite(|t| t);
    proxy.hangup();
    proxy.until_logged("configuration reloaded", 1).await;
    assert_eq!(
        proxy.status("/hello", Some("localhost")).await,
        Some(StatusCode::UNAUTHORIZED)
    );
    // A browser (WeChat's: the shipped demo sends desktop browsers to the QR login) on it is
    // sent to (the simulated) WeChat for account B.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .user_agent(support::WECHAT_UA)
        .build()
        .unwrap();
    let login = client
        .get(format!("http://127.0.0.1:{}/hello", proxy.port))
        .header(header::HOST, format!("localhost:{}", proxy.port))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FOUND);
    let location = login.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.contains("appid=wxb2b2c3d4e5f60708"), "{location}");

    // Removed again: localhost is nobody's once more.
    proxy.rewrite(without_account_b);
    proxy.hangup();
    proxy.until_logged("configuration reloaded", 2).await;
    assert_eq!(
        proxy.status("/hello", Some("localhost")).await,
        Some(StatusCode::NOT_FOUND)
    );
    proxy.assert_alive();
}

#[tokio::test]
async fn a_restart_only_key_is_named_and_keeps_its_start_up_value() {
    let mut proxy = Proxy::start("restart", |t| t).await;
    let other = free_port();
    let port = proxy.port;
    proxy.rewrite(|text| {
        text.replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = \"127.0.0.1:{other}\""),
        )
        .replace(
            "issuer = \"wechat-oauth-proxy-dev\"",
            "issuer = \"another-issuer\"",
        )
    });
    proxy.hangup();
    proxy.until_logged("need a restart", 1).await;
    let log = proxy.log();
    let warning = log.lines().find(|l| l.contains("need a restart")).unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("server.listen") && warning.contains("jwt.issuer"),
        "{warning}"
    );
    assert!(!warning.contains("auth.skip"), "{warning}");
    // Still on the old port, nothing on the new one; the rules are as they were.
    assert_eq!(
        proxy.status("/_wxauth/health", None).await,
        Some(StatusCode::OK)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", other)).is_err());
    assert_eq!(proxy.status("/public/x", None).await, Some(StatusCode::OK));
    assert_eq!(
        proxy.status("/private", None).await,
        Some(StatusCode::UNAUTHORIZED)
    );
    proxy.assert_alive();
}
