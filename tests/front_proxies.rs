//! Real nginx and real Caddy, each running the shipped configuration (`deploy/nginx/`,
//! `deploy/caddy/`) on a loopback port, in front of a recording upstream, asking the layer
//! (forward auth, with the simulated WeChat) who the user is. A whole login runs through each;
//! then forged identity headers in every spelling, forged `X-Forwarded-Uri` / `X-Original-URL`
//! and direct calls of the auth endpoints must leave the upstream with the real identity or
//! none.
//!
//! The binaries are required, not optional: a missing `nginx` or `caddy` fails the test
//! (`scripts/test.sh` installs both from the Debian packages).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    fs,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use http::{HeaderName, StatusCode};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use url::Url;
use wechat_oauth_proxy::{
    identity::{JWT_HEADER, PLAIN_HEADERS},
    layer::ForwardAuthSettings,
    server::{self, ServerSettings},
};

use support::{Browser, Echo, Echoed, Options, Reply, TempDir, World, bounded, jwt_issuer};

/// nginx lives in /usr/sbin, which is not on every user's PATH.
const NGINX: &str = "/usr/sbin/nginx";
const CADDY: &str = "caddy";

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `text` with each `(from, to, times)` replaced, checking that `from` occurs exactly `times`
/// times (so the test notices when the shipped file changes shape).
fn rewrite(mut text: String, replacements: &[(&str, &str, usize)]) -> String {
    for (from, to, times) in replacements {
        assert_eq!(
            text.matches(from).count(),
            *times,
            "{from:?} in the shipped config"
        );
        text = text.replace(from, to);
    }
    text
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A front proxy process; killed when dropped.
struct Front {
    name: &'static str,
    child: Child,
    log: PathBuf,
    origin: Url,
    _dir: TempDir,
}

impl Front {
    /// The front started as `child`, once it listens on `port`.
    async fn listening(
        name: &'static str,
        child: Child,
        log: PathBuf,
        port: u16,
        dir: TempDir,
    ) -> Front {
        let mut front = Front {
            name,
            child,
            log,
            origin: Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            _dir: dir,
        };
        front.wait_listening().await;
        front
    }

    fn url(&self, path_and_query: &str) -> Url {
        self.origin.join(path_and_query).unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the front accepts connections; fails with its log if it exits.
    async fn wait_listening(&mut self) {
        let addr = format!(
            "{}:{}",
            self.origin.host_str().unwrap(),
            self.origin.port().unwrap()
        );
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            if TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} never listened on {addr}:\n{}", self.name, self.log());
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({e}): scripts/test.sh installs it"))
}

/// nginx with `deploy/nginx/forward-auth.conf`, inside a minimal `nginx.conf` of the test's
/// own (foreground, one process, every path in a temp dir).
async fn start_nginx(port: u16, wxauth: SocketAddr, app: SocketAddr) -> Front {
    let dir = TempDir::new("nginx");
    fs::create_dir_all(dir.0.join("tmp")).unwrap();
    let site = rewrite(
        repo_file("deploy/nginx/forward-auth.conf"),
        &[
            ("server 127.0.0.1:8080;", &format!("server {wxauth};"), 1),
            ("server 127.0.0.1:3000;", &format!("server {app};"), 1),
            ("listen 80;", &format!("listen 127.0.0.1:{port};"), 1),
        ],
    );
    let site_path = dir.0.join("forward-auth.conf");
    fs::write(&site_path, site).unwrap();
    let d = dir.0.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  include {};\n}}\n",
        site_path.display()
    );
    let conf = dir.0.join("nginx.conf");
    fs::write(&conf, main).unwrap();
    let log = dir.0.join("error.log");
    let child = spawn(
        "nginx",
        Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.0.join("stderr.log")).unwrap()),
    );
    Front::listening("nginx", child, log, port, dir).await
}

/// Caddy with `deploy/caddy/Caddyfile` (plain HTTP on the test's port, no admin endpoint, every
/// file it writes in a temp dir).
async fn start_caddy(port: u16, wxauth: SocketAddr, app: SocketAddr) -> Front {
    let dir = TempDir::new("caddy");
    fs::create_dir_all(&dir.0).unwrap();
    let site = rewrite(
        repo_file("deploy/caddy/Caddyfile"),
        &[
            (
                "app.example.com {",
                &format!("http://127.0.0.1:{port} {{"),
                1,
            ),
            ("127.0.0.1:8080", &wxauth.to_string(), 2),
            ("127.0.0.1:3000", &app.to_string(), 1),
        ],
    );
    let conf = dir.0.join("Caddyfile");
    fs::write(
        &conf,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}"),
    )
    .unwrap();
    let log = dir.0.join("caddy.log");
    let child = spawn(
        "caddy",
        Command::new(CADDY)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            .env("HOME", &dir.0)
            .env("XDG_CONFIG_HOME", dir.0.join("config"))
            .env("XDG_DATA_HOME", dir.0.join("data"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap()),
    );
    Front::listening("caddy", child, log, port, dir).await
}

/// The recording upstream: the harness's `Echo` (every header it received, as JSON) served
/// on its own loopback port, with no layer in front of it.
struct App {
    echo: Echo,
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

async fn start_app() -> App {
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo::new();
    let (tx, rx) = oneshot::channel::<()>();
    let service = echo.clone();
    tokio::spawn(async move {
        let _ = server::serve(listener, service, ServerSettings::default(), async {
            let _ = rx.await;
        })
        .await;
    });
    App {
        echo,
        addr,
        _shutdown: tx,
    }
}

/// The simulated WeChat and the layer (forward auth on, plain headers on) whose public URL is
/// the front's address.
async fn start_world(front_port: u16) -> World {
    World::start_with(Options {
        forward_auth: Some(ForwardAuthSettings {
            enabled: true,
            ..ForwardAuthSettings::default()
        }),
        plain_headers: true,
        public_url: Some(Url::parse(&format!("http://127.0.0.1:{front_port}/")).unwrap()),
        ..Options::default()
    })
    .await
}

fn layer_addr(world: &World) -> SocketAddr {
    format!(
        "{}:{}",
        world.base.host_str().unwrap(),
        world.base.port().unwrap()
    )
    .parse()
    .unwrap()
}

/// Every header name the upstream saw that is an identity header in some spelling (`_` and
/// `.` read as `-`, any case).
fn identity_spellings(echoed: &Echoed) -> Vec<String> {
    echoed
        .header_names()
        .into_iter()
        .filter(|name| {
            let folded = name.to_ascii_lowercase().replace(['_', '.'], "-");
            std::iter::once(JWT_HEADER)
                .chain(PLAIN_HEADERS)
                .any(|ours| ours.as_str() == folded)
        })
        .collect()
}

/// Asserts the upstream saw exactly the real identity of `openid`: one value of each identity
/// header, spelled canonically, the JWT verifying with the layer's key.
fn assert_real_identity(reply: &Reply, openid: &str) {
    let echoed = reply
        .echoed()
        .unwrap_or_else(|| panic!("the upstream answered: {reply:?}"));
    for name in identity_spellings(&echoed) {
        let canonical: HeaderName = name.parse().unwrap();
        assert!(
            std::iter::once(JWT_HEADER)
                .chain(PLAIN_HEADERS)
                .any(|ours| ours == canonical && ours.as_str() == name),
            "only canonical spellings reach the upstream, not {name}"
        );
        assert_eq!(echoed.header_values(&name).len(), 1, "{name}");
    }
    let jwt = echoed.header("x-wechat-jwt").expect("the JWT");
    let claims = jwt_issuer().verify(&jwt).expect("the JWT is ours");
    assert_eq!(claims.openid.as_str(), openid);
    assert_eq!(echoed.header("x-wechat-openid").as_deref(), Some(openid));
    assert!(
        !echoed.headers_text().contains("forged"),
        "{}",
        echoed.headers_text()
    );
}

/// Forged identity headers in every spelling.
const FORGED_IDENTITY: [(&str, &str); 6] = [
    ("X-WeChat-Jwt", "forged.jwt.value"),
    ("X_WeChat_Jwt", "forged.jwt.value"),
    ("X.WeChat.Jwt", "forged.jwt.value"),
    ("x-wechat-openid", "o-forged-openid"),
    ("X_WECHAT_OPENID", "o-forged-openid"),
    ("X-WeChat-Nickname", "forged%20nick"),
];

/// A whole login through `front`, then every forgery; `app` is the upstream behind it.
async fn exercise(front: &Front, world: &World, app: &App) {
    let name = front.name;
    let browser = Browser::new(front.origin.clone());

    // 1. The login, redirect by redirect.
    let replies = browser.navigate(front.url("/orders/42?x=1")).await;
    let trail: Vec<_> = replies
        .iter()
        .map(|r| (r.status, r.url.as_str().to_owned()))
        .collect();
    assert_eq!(replies.len(), 5, "{name}: {trail:?}");
    let login = front.url("/_wxauth/login?return=%2Forders%2F42%3Fx%3D1");
    assert_eq!(
        replies[0].status,
        StatusCode::FOUND,
        "{name}: {:?}",
        replies[0]
    );
    assert_eq!(
        replies[0].raw_location(),
        Some(login.as_str()),
        "{name}: absolute login URL"
    );
    assert!(
        replies[0].set_cookies().is_empty(),
        "{name}: the check sets no cookie"
    );
    assert!(
        replies[1]
            .location()
            .path()
            .ends_with("/connect/oauth2/authorize")
    );
    assert_eq!(
        replies[3].url.origin(),
        front.origin.origin(),
        "{name}: callback via the front"
    );
    assert!(replies[3].sets_session(), "{name}");
    let page = &replies[4];
    assert_eq!(page.status, StatusCode::OK, "{name}: {page:?}");
    let echoed = page.echoed().expect("the upstream answered");
    assert_eq!(echoed.path(), "/orders/42");
    let openid = echoed.header("x-wechat-openid").expect("openid");
    assert_real_identity(page, &openid);
    assert_eq!(world.session_count().await, 1);

    // 2. With the session: forged identity, forged original-request metadata.
    let mut forged: Vec<(&str, &str)> = FORGED_IDENTITY.to_vec();
    forged.extend_from_slice(&[
        ("X-Forwarded-Uri", "/_wxauth/health"),
        ("X-Forwarded-Method", "OPTIONS"),
        ("X-Original-URL", "http://evil.example/_wxauth/health"),
        ("X-Original-Method", "OPTIONS"),
        ("X-Original-URI", "/_wxauth/health"),
    ]);
    let reply = browser.get_with(front.url("/account"), &forged).await;
    assert_eq!(reply.status, StatusCode::OK, "{name}: {reply:?}");
    assert_eq!(reply.echoed().unwrap().path(), "/account");
    assert_real_identity(&reply, &openid);

    // 3. Without a session, forgeries get nobody in: a browser goes to the login, an API
    //    client gets 401 JSON; the upstream never sees either.
    let stranger = browser.fresh();
    let calls = app.echo.calls();
    let navigation = stranger.get_with(front.url("/account"), &forged).await;
    assert_eq!(
        navigation.status,
        StatusCode::FOUND,
        "{name}: {navigation:?}"
    );
    assert_eq!(
        navigation.raw_location(),
        Some(front.url("/_wxauth/login?return=%2Faccount").as_str()),
        "{name}"
    );
    let mut api_headers = forged.clone();
    api_headers.push(("X-Requested-With", "XMLHttpRequest"));
    let api = stranger.get_with(front.url("/account"), &api_headers).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{name}: {api:?}");
    assert_eq!(api.json()["error"], "unauthenticated", "{name}");
    assert_eq!(
        api.json()["login_url"],
        front.url("/_wxauth/login?return=%2Faccount").as_str()
    );
    assert_eq!(
        app.echo.calls(),
        calls,
        "{name}: the upstream saw no stranger"
    );

    // 4. The auth endpoints are not for clients, whatever the spelling of the path.
    for path in [
        "/_wxauth/auth/forward",
        "/_wxauth/auth/request",
        "/_wxauth/auth/envoy/account",
        "/_wxauth/%61uth/forward",
    ] {
        let reply = browser
            .get_with(
                front.url(path),
                &[
                    ("X-Forwarded-Method", "GET"),
                    ("X-Forwarded-Proto", "http"),
                    ("X-Forwarded-Host", front.origin.authority()),
                    ("X-Forwarded-Uri", "/account"),
                    ("X-Original-Method", "GET"),
                    ("X-Original-URL", front.url("/account").as_str()),
                ],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{name} {path}: {reply:?}"
        );
        assert!(!reply.headers.contains_key("x-wechat-jwt"), "{name} {path}");
    }
    let cookie = browser.session_cookie().unwrap();
    for raw_path in ["/_wxauth/x/../auth/forward", "/_wxauth//auth/forward"] {
        let status = raw_get(front, raw_path, &cookie).await;
        assert!(!(200..300).contains(&status), "{name} {raw_path}: {status}");
    }

    // 5. The proxy's own pages pass through the front, with the session.
    let whoami = browser.get(front.url("/_wxauth/whoami")).await;
    assert_eq!(whoami.status, StatusCode::OK, "{name}");
    assert_eq!(whoami.json()["openid"], openid.as_str());
}

/// The status of a raw `GET path` through the front (for paths an HTTP client would clean).
async fn raw_get(front: &Front, path: &str, cookie: &str) -> u16 {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Uri: /account\r\nConnection: close\r\n\r\n",
        front.origin.authority()
    );
    support::raw_status(("127.0.0.1", front.origin.port().unwrap()), &request).await
}

#[tokio::test]
async fn nginx_auth_request_runs_a_login_and_passes_only_the_real_identity() {
    let app = start_app().await;
    let port = free_port();
    let world = start_world(port).await;
    let front = start_nginx(port, layer_addr(&world), app.addr).await;
    exercise(&front, &world, &app).await;
    assert!(
        !front.log().contains("[emerg]") && !front.log().contains("[alert]"),
        "{}",
        front.log()
    );
}

#[tokio::test]
async fn caddy_forward_auth_runs_a_login_and_passes_only_the_real_identity() {
    let app = start_app().await;
    let port = free_port();
    let world = start_world(port).await;
    let front = start_caddy(port, layer_addr(&world), app.addr).await;
    exercise(&front, &world, &app).await;
    // Caddy hands an alias of its metadata headers to the auth endpoint, which refuses it.
    let browser = Browser::new(front.origin.clone());
    let reply = browser
        .get_with(
            front.url("/account"),
            &[("X_Forwarded_Uri", "/_wxauth/health")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert_eq!(
        app.echo.calls(),
        2,
        "only the two logged-in requests reached the upstream"
    );
}
