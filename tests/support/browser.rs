//! A real browser for the suites that test what a person sees (`tests/browser_*.rs`): headless
//! Chromium from the Debian packages (`chromium`, `chromium-driver`, `fonts-noto-cjk`, installed
//! by `scripts/test.sh`), driven over WebDriver with `fantoccini`.
//!
//! - [`Driver::start`]: `chromedriver` on a free loopback port, in its own process group and with
//!   its own temporary directory; on drop the whole group (the driver and every browser it
//!   started) is killed and the directory removed, so a panicking test leaks no process.
//! - [`Driver::open`]: a fresh headless browser (empty profile) for a [`Profile`]: user agent
//!   ([`DESKTOP_UA`], or [`WECHAT_UA`] for the phone side, which the simulated WeChat requires),
//!   window size, `zh-CN` as the language, host names mapped to loopback.
//! - [`Chrome`]: navigation, bounded waits for an element, a text or a URL (never a fixed
//!   sleep), clicks, and [`Chrome::screenshot`] into `$WXAUTH_SCREENSHOTS` when that variable
//!   names a directory (so a normal run never writes into the tree).
//!
//! Every WebDriver command is bounded by [`bounded`]; every wait by [`WAIT`].

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, wd::WindowHandle};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use url::Url;

use super::sidecar::{free_port, wait_for_200};
use super::{TempDir, bounded};

/// How long a wait for a page condition may take (generous: 2 shared cores, a browser start).
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a wait checks its condition.
const POLL: Duration = Duration::from_millis(100);

/// The environment variable naming the directory [`Chrome::screenshot`] writes into.
pub const SCREENSHOTS_ENV: &str = "WXAUTH_SCREENSHOTS";

/// A desktop Chrome on Windows: not WeChat (no `MicroMessenger`).
pub const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// WeChat's built-in browser on Android (`MicroMessenger`): the phone side of every login (the
/// same user agent as the HTTP-level test browser's).
pub use super::layer::WECHAT_UA;

/// The `chromedriver` program (`WXAUTH_CHROMEDRIVER` overrides the PATH lookup).
fn chromedriver_program() -> String {
    std::env::var("WXAUTH_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned())
}

/// What a browser is: the user agent it sends, its window and the host names it resolves to
/// loopback.
#[derive(Debug, Clone)]
pub struct Profile {
    pub user_agent: &'static str,
    pub width: u32,
    pub height: u32,
    /// Host names that resolve to `127.0.0.1` in this browser (e.g. an unknown tenant's).
    pub loopback_hosts: Vec<String>,
    /// Whether pages may run scripts (`false`: a browser with JavaScript turned off; the
    /// harness's own scripts, sent over WebDriver, still run).
    pub javascript: bool,
}

impl Profile {
    /// A desktop browser: [`DESKTOP_UA`], 1280×900.
    pub fn desktop() -> Profile {
        Profile {
            user_agent: DESKTOP_UA,
            width: 1280,
            height: 900,
            loopback_hosts: Vec::new(),
            javascript: true,
        }
    }

    /// WeChat on a phone: [`WECHAT_UA`], 412×915 (a common Android viewport).
    pub fn wechat() -> Profile {
        Profile {
            user_agent: WECHAT_UA,
            width: 412,
            height: 915,
            loopback_hosts: Vec::new(),
            javascript: true,
        }
    }

    /// The same profile with JavaScript turned off for pages (`<noscript>` applies).
    pub fn without_javascript(mut self) -> Profile {
        self.javascript = false;
        self
    }

    /// The same profile, with `host` resolving to `127.0.0.1`.
    pub fn resolving(mut self, host: &str) -> Profile {
        self.loopback_hosts.push(host.to_owned());
        self
    }
}

/// A running `chromedriver` (leader of its own process group); the group is killed on drop.
pub struct Driver {
    child: Child,
    /// `http://127.0.0.1:<port>/`, the WebDriver endpoint.
    endpoint: String,
    /// The driver's log and temporary files, and one profile directory per browser.
    dir: TempDir,
    opened: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Whether this process runs as root (Chromium's sandbox refuses root: `--no-sandbox` then).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Driver {
    /// Starts `chromedriver` on a free loopback port and waits (bounded) until it answers
    /// `/status`. A missing program fails the test with how to install it: it never skips.
    pub async fn start() -> Driver {
        let dir = TempDir::new("chromedriver");
        let tmp = dir.0.join("tmp");
        std::fs::create_dir_all(&tmp).expect("driver temp dir");
        let port = free_port();
        let program = chromedriver_program();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.0.join("chromedriver.log").display()
            ))
            // Chromium and chromedriver put their scratch directories under TMPDIR: ours, so
            // they go away with the test.
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {program}: {e}. Install chromium, chromium-driver and \
                     fonts-noto-cjk (scripts/test.sh --setup-only does)"
                )
            });
        let driver = Driver {
            child,
            endpoint: format!("http://127.0.0.1:{port}/"),
            dir,
            opened: std::sync::atomic::AtomicUsize::new(0),
        };
        let status = Url::parse(&driver.endpoint)
            .and_then(|u| u.join("status"))
            .expect("status url");
        // 200 × 100 ms: chromedriver starts in well under a second, even on a busy machine.
        wait_for_200(&status, 200).await;
        driver
    }

    /// The driver's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("chromedriver.log")).unwrap_or_default()
    }

    /// Opens a fresh headless browser with an empty profile of its own.
    pub async fn open(&self, profile: &Profile) -> Chrome {
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile_dir = self.dir.0.join(format!("profile-{n}"));
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", profile_dir.display()),
            format!("--user-agent={}", profile.user_agent),
            format!("--window-size={},{}", profile.width, profile.height),
            "--lang=zh-CN".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--disable-breakpad".to_owned(),
            // Plain http:// stays plain (no HTTPS-first retries against the loopback server).
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable".to_owned(),
        ];
        if is_root() {
            args.push("--no-sandbox".to_owned());
        }
        if !profile.loopback_hosts.is_empty() {
            let rules: Vec<String> = profile
                .loopback_hosts
                .iter()
                .map(|host| format!("MAP {host} 127.0.0.1"))
                .collect();
            args.push(format!("--host-resolver-rules={}", rules.join(",")));
        }
        let millis = u64::try_from(WAIT.as_millis()).expect("wait fits");
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": millis, "script": millis, "implicit": 0 },
            "goog:chromeOptions": {
                "args": args,
                "prefs": {
                    "intl.accept_languages": "zh-CN,zh",
                    // 1: allow, 2: block (Chromium's content setting).
                    "profile.managed_default_content_settings.javascript":
                        if profile.javascript { 1 } else { 2 },
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let client = bounded(
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&self.endpoint),
        )
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}\n{}", self.log()));
        Chrome { client }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver leads its process group and every Chromium process it started is in it
        // (Chromium's crash handler, in a session of its own, exits when its browser does).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless browser (one WebDriver session, one window).
#[derive(Debug, Clone)]
pub struct Chrome {
    client: Client,
}

impl Chrome {
    /// The WebDriver client, for what this wrapper does not offer.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &Url) {
        bounded(self.client.goto(url.as_str()))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The URL of the page shown now.
    pub async fn url(&self) -> Url {
        bounded(self.client.current_url())
            .await
            .expect("current url")
    }

    /// The page's visible text (`document.body.innerText`; empty while there is no body).
    pub async fn text(&self) -> String {
        self.eval("return document.body ? document.body.innerText : '';")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        bounded(self.client.execute(script, Vec::new()))
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// The status of a `GET path` (JSON accepted) that the page shown sends itself: same origin,
    /// with the browser's cookies.
    pub async fn status_of(&self, path: &str) -> u64 {
        let status = self
            .eval(&format!(
                "const x = new XMLHttpRequest(); x.open('GET', {path:?}, false); \
                 x.setRequestHeader('Accept', 'application/json'); x.send(); return x.status;"
            ))
            .await;
        status.as_u64().expect("a status")
    }

    /// Waits until `check` holds of the page, checking every [`POLL`] for at most [`WAIT`];
    /// fails the test with `what`, the URL and the text of the page otherwise. A command that
    /// fails while a page is loading counts as "not yet".
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut(&Chrome) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(found)) = tokio::time::timeout_at(deadline, check(self)).await {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let url = self.client.current_url().await.ok();
                let text = self.text().await;
                panic!("{what}: not within {WAIT:?}; at {url:?}, page text:\n{text}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for an element matching the CSS `selector`.
    pub async fn wait_for(&self, selector: &str) -> Element {
        self.wait_until(&format!("an element {selector}"), async |chrome| {
            chrome.client.find(Locator::Css(selector)).await.ok()
        })
        .await
    }

    /// Waits until the page's visible text contains `needle`; returns the text.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        self.wait_until(&format!("the text {needle:?}"), async |chrome| {
            let text = chrome.client.execute(
                "return document.body ? document.body.innerText : '';",
                Vec::new(),
            );
            match text.await {
                Ok(Value::String(text)) if text.contains(needle) => Some(text),
                _ => None,
            }
        })
        .await
    }

    /// Waits until the page's URL satisfies `check`; returns it.
    pub async fn wait_for_url(&self, what: &str, check: impl Fn(&Url) -> bool) -> Url {
        self.wait_until(what, async |chrome| {
            chrome
                .client
                .current_url()
                .await
                .ok()
                .filter(|url| check(url))
        })
        .await
    }

    /// Waits for the element matching `selector` and clicks it.
    pub async fn click(&self, selector: &str) {
        let element = self.wait_for(selector).await;
        bounded(element.click())
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Waits until the page opened another window (a `target="_blank"` link), switches to it
    /// and returns the window this browser showed before, for [`switch_to`](Self::switch_to).
    pub async fn switch_to_new_window(&self) -> WindowHandle {
        let before = bounded(self.client.window()).await.expect("window");
        let opened = self
            .wait_until("a new window", async |chrome| {
                let windows = chrome.client.windows().await.ok()?;
                windows.into_iter().find(|w| *w != before)
            })
            .await;
        self.switch_to(opened).await;
        before
    }

    /// Shows `window` (commands go to it from now on).
    pub async fn switch_to(&self, window: WindowHandle) {
        bounded(self.client.switch_to_window(window))
            .await
            .expect("switch window");
    }

    /// When `$WXAUTH_SCREENSHOTS` names a directory: a PNG of the window into it as
    /// `<name>.png` (the directory is created). Otherwise nothing: a normal run writes nothing.
    /// Returns the path written.
    pub async fn screenshot(&self, name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os(SCREENSHOTS_ENV)?;
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let png = bounded(self.client.screenshot()).await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        Some(path)
    }

    /// Ends the WebDriver session (the browser exits). [`Driver`]'s drop kills it anyway.
    pub async fn close(&self) {
        let _ = bounded(self.client.clone().close()).await;
    }
}
