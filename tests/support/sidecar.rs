//! The real `wechat-oauth-proxy` binary in development mode (`[dev] simulate_wechat`: the
//! simulated WeChat in the same process, interactive consent page), for the suites that put a
//! real upstream behind it or check what leaves it (`tests/verifiers.rs`,
//! `tests/php_upstream.rs`).
//!
//! - [`Sidecar::start`]: writes a configuration text into a fresh directory (also the state
//!   directory), starts the binary on a free loopback port and waits until `/_wxauth/ready`
//!   answers 200; the process is killed on drop.
//! - [`Sidecar::login`]: a [`Browser`] walks the whole login through the simulator's consent
//!   page, picking one of its test users.
//! - [`run`]: any other program the suite runs to completion (a verifier, a compiler), with a
//!   deadline; a program that cannot be started fails the test.
//!
//! Every loop is bounded and every wait has a timeout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use url::Url;

use super::layer::{Browser, Reply};
use super::{TempDir, bounded};

/// Where [`Sidecar::start_logged`] writes the binary's standard output, in its directory.
const LOG_FILE: &str = "stdout.log";

/// The sidecar binary Cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_wechat-oauth-proxy");

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A free loopback port (bound, then released for the program that binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `url` until it answers 200, for at most `tries` × 100 ms.
pub async fn wait_for_200(url: &Url, tries: u32) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for _ in 0..tries {
        if let Ok(resp) = client.get(url.clone()).send().await {
            if resp.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

/// A started program, killed (and reaped) on drop so a failing test never leaks a process.
#[derive(Debug)]
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running binary; killed on drop.
pub struct Sidecar {
    _child: Running,
    /// `http://127.0.0.1:<port>/`
    pub base: Url,
    /// Holds the configuration file and the state directory.
    pub dir: TempDir,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Sidecar {
    /// Starts the binary with the configuration `config` (listen address, public URL and state
    /// directory overridden on the command line) and waits until it is ready: the simulator's
    /// first ticket push arrived and the component token was fetched.
    pub async fn start(label: &str, config: &str) -> Sidecar {
        Self::start_with(label, config, false).await
    }

    /// [`start`](Self::start), with the binary's standard output (its log) written to
    /// [`log_path`](Self::log_path) and `RUST_LOG` unset, so that `[log]` decides.
    pub async fn start_logged(label: &str, config: &str) -> Sidecar {
        Self::start_with(label, config, true).await
    }

    async fn start_with(label: &str, config: &str, logged: bool) -> Sidecar {
        let dir = TempDir::new(label);
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let path = dir.0.join("config.toml");
        std::fs::write(&path, config).expect("config written");
        let port = free_port();
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
        let mut command = Command::new(BIN);
        if logged {
            let log = std::fs::File::create(dir.0.join(LOG_FILE)).expect("log file");
            command.env_remove("RUST_LOG").stdout(log);
        } else {
            command.env("RUST_LOG", "warn").stdout(Stdio::null());
        }
        let child = command
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--public-url")
            .arg(base.as_str().trim_end_matches('/'))
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let sidecar = Sidecar {
            _child: Running(child),
            base,
            dir,
        };
        wait_for_200(&sidecar.url("/_wxauth/ready"), 300).await;
        sidecar
    }

    /// The binary's standard output so far ([`start_logged`](Self::start_logged) only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join(LOG_FILE)).expect("log file")
    }

    pub fn url(&self, path_and_query: &str) -> Url {
        self.base.join(path_and_query).expect("url")
    }

    /// A fresh browser (empty jar) for this sidecar's origin.
    pub fn browser(&self) -> Browser {
        Browser::new(self.base.clone())
    }

    /// Logs `browser` in from `path` as the simulator's test user number `user` (0: 张三 with a
    /// unionid, 1: "Alice 🌸", 2: "李四😀" without unionid): the proxy sends the browser to the
    /// consent page, the browser follows the user's link, the callback sets the session and
    /// sends it back. Returns the page it lands on.
    pub async fn login(&self, browser: &Browser, path: &str, user: usize) -> Reply {
        let replies = self.login_replies(browser, path, user).await;
        replies.into_iter().last().expect("landing page")
    }

    /// [`login`](Self::login), returning every reply in order: the redirect to WeChat, the
    /// consent page, the user's choice (a redirect to the callback), the callback, the landing.
    pub async fn login_replies(&self, browser: &Browser, path: &str, user: usize) -> Vec<Reply> {
        let mut replies = browser.navigate(self.url(path)).await;
        let consent = replies.last().expect("a reply");
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
        assert!(
            consent.url.path().ends_with("/connect/oauth2/authorize"),
            "the consent page: {}",
            consent.url
        );
        let wanted = format!("&amp;user={user}\"");
        let href = consent
            .body
            .split("href=\"")
            .skip(1)
            .map(|rest| &rest[..=rest.find('"').expect("closing quote")])
            .find(|href| href.ends_with(&wanted))
            .unwrap_or_else(|| panic!("no link for user {user}: {}", consent.body));
        let href = href.trim_end_matches('"').replace("&amp;", "&");
        let chosen = consent.url.join(&href).expect("link resolves");
        let rest = browser.navigate(chosen).await;
        assert_eq!(rest.len(), 3, "choose, callback, landing: {rest:?}");
        assert!(rest[1].sets_session(), "the callback sets a session");
        replies.extend(rest);
        replies
    }
}

/// What a program printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with `stdin` as its standard input, killing it after `deadline` (the test
/// fails then). A program that cannot be started fails the test (with `hint` on how to get it):
/// it never skips.
pub async fn run(
    mut command: tokio::process::Command,
    stdin: &str,
    deadline: Duration,
    hint: &str,
) -> Ran {
    use tokio::io::AsyncWriteExt as _;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = format!("{:?}", command.as_std().get_program());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}. {hint}"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_owned();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(stdin.as_bytes()).await;
    });
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {deadline:?}"))
        .unwrap_or_else(|e| panic!("{program} failed: {e}"));
    bounded(writer).await.expect("stdin writer");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
