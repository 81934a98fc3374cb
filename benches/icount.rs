//! The instruction-count guard: instructions per request on the session-hit path and for one
//! proxied request, counted by callgrind (not timed: the count does not depend on the machine's
//! load), compared with the committed baseline `benches/icount-baseline.toml`.
//!
//! ```sh
//! cargo bench --bench icount --all-features                    # measure and compare (CI)
//! cargo bench --bench icount --all-features -- --rebaseline    # measure and write the baseline
//! ```
//!
//! It fails (exit 1) when a count is more than [`TOLERANCE`] above its baseline, and prints the
//! measured numbers next to the baseline either way. Needs `valgrind` (Debian: `apt-get install
//! valgrind`); without it, it fails and says so.
//!
//! How: the bench runs itself under `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect=<one function>` once per scenario. The child builds everything and warms it
//! up (first requests: lazy statics, the JWT cache, the connection pool) outside that function;
//! the function then serves [`REQUESTS`] requests on a current-thread runtime, so the count is
//! of everything those requests run on that thread (the layer, the inner service, the runtime),
//! divided by their number.
//!
//! - `session_hit`: `WeChatAuth` around a no-op service (the `layer/session_hit` case of
//!   `benches/layer.rs`): one session in the memory store, JWT cache on, a browser's headers.
//! - `proxied_request`: a whole request over loopback TCP, as the sidecar serves it: an HTTP/1.1
//!   client on a keep-alive connection → `server::serve` → the layer (session hit) → the
//!   reverse proxy (`Upstream`) → a hyper upstream answering `200 ok`, all tasks on the same
//!   thread. Counts user-space instructions of all three parties; the kernel's are not counted.
//! - `forward_auth`: the layer (forward auth on, around a no-op service that is never called)
//!   answering nginx's `auth_request` check with a session hit, as `deploy/nginx/forward-auth.conf`
//!   sends it in row (f) of `bench/load.sh`: `GET /_wxauth/auth/request` from a loopback peer,
//!   `Host` of the upstream block, `X-Original-Method`, an absolute `X-Original-URL`, and the
//!   browser's headers with its session cookie. In-process like `session_hit`.
//!
//! Counts depend on the toolchain and valgrind (the baseline file records both and the run
//! warns when they differ): after upgrading either, re-baseline in a separate commit.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/layer_fixture.rs"]
mod layer_fixture;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use layer_fixture::{browser_headers, cookie_pair, fixture, identity, noop, request};
use tower::{Layer, Service, ServiceExt};
use wechat_oauth_proxy::proxy::{ProxySettings, Upstream};
use wechat_oauth_proxy::server::{ClientAddr, ServerSettings, serve};
use wechat_oauth_proxy::session::SessionRecord;

/// Requests counted per scenario (after the warm-up).
const REQUESTS: usize = 2_000;
/// Requests served before counting.
const WARM_UP: usize = 200;
/// The largest growth over the baseline that passes: 10 %.
const TOLERANCE: f64 = 0.10;
/// Names the child is told which scenario to run by.
const SCENARIO_ENV: &str = "WXAUTH_ICOUNT_SCENARIO";
const SCENARIOS: [&str; 3] = ["session_hit", "proxied_request", "forward_auth"];

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/icount-baseline.toml")
}

fn main() -> ExitCode {
    if let Ok(scenario) = std::env::var(SCENARIO_ENV) {
        run_child(&scenario);
        return ExitCode::SUCCESS;
    }
    let rebaseline = std::env::args().any(|a| a == "--rebaseline");
    let Some(valgrind) = tool_version("valgrind", &["--version"]) else {
        eprintln!("icount: valgrind not found (Debian: apt-get install valgrind)");
        return ExitCode::FAILURE;
    };
    let rustc = tool_version("rustc", &["-V"]).unwrap_or_else(|| "unknown".to_owned());
    let mut measured = BTreeMap::new();
    for scenario in SCENARIOS {
        match count(scenario) {
            Ok(n) => {
                measured.insert(scenario, n);
            }
            Err(e) => {
                eprintln!("icount: {scenario}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if rebaseline {
        write_baseline(&measured, &valgrind, &rustc);
        for (scenario, n) in &measured {
            println!("icount: {scenario:<16} {n:>9} instructions/request (new baseline)");
        }
        println!("icount: wrote {}", baseline_path().display());
        return ExitCode::SUCCESS;
    }
    compare(&measured, &valgrind, &rustc)
}

/// Measured against the baseline: a table, and failure when one grew beyond the tolerance.
fn compare(measured: &BTreeMap<&str, u64>, valgrind: &str, rustc: &str) -> ExitCode {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    let baseline: toml::Table = toml::from_str(&text).unwrap_or_default();
    for (key, now) in [("valgrind", valgrind), ("rustc", rustc)] {
        match baseline.get(key).and_then(toml::Value::as_str) {
            Some(then) if then == now => {}
            then => println!(
                "icount: warning: baseline made with {key} {then:?}, this is {now:?}: counts may \
                 differ for that reason alone (re-baseline after a toolchain upgrade)"
            ),
        }
    }
    let mut failed = false;
    println!(
        "icount: {:<16} {:>9} {:>9} {:>8}  (instructions per request, limit +{:.0} %)",
        "scenario",
        "measured",
        "baseline",
        "change",
        TOLERANCE * 100.0
    );
    for (scenario, &now) in measured {
        let then = baseline
            .get(*scenario)
            .and_then(|t| t.get("instructions_per_request"))
            .and_then(toml::Value::as_integer)
            .and_then(|n| u64::try_from(n).ok());
        match then {
            Some(then) => {
                let change = now as f64 / then as f64 - 1.0;
                let verdict = if change > TOLERANCE {
                    failed = true;
                    "FAIL"
                } else {
                    "ok"
                };
                println!(
                    "icount: {scenario:<16} {now:>9} {then:>9} {:>+7.1} %  {verdict}",
                    change * 100.0
                );
            }
            None => {
                failed = true;
                println!(
                    "icount: {scenario:<16} {now:>9} {:>9}  FAIL (no baseline)",
                    "-"
                );
            }
        }
    }
    if failed {
        println!(
            "icount: FAILED. If the growth is intended, re-baseline (and say why in the commit): \
             cargo bench --bench icount --all-features -- --rebaseline"
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn write_baseline(measured: &BTreeMap<&str, u64>, valgrind: &str, rustc: &str) {
    let mut text = String::from(
        "# Instructions per request counted by callgrind: the baseline of the instruction-count\n\
         # guard (benches/icount.rs, run by .ci/run). Written by\n\
         #   cargo bench --bench icount --all-features -- --rebaseline\n\
         # A run fails when a count grows by more than 10 % over these numbers.\n\n",
    );
    text.push_str(&format!("valgrind = {valgrind:?}\nrustc = {rustc:?}\n"));
    for (scenario, n) in measured {
        text.push_str(&format!("\n[{scenario}]\ninstructions_per_request = {n}\n"));
    }
    std::fs::write(baseline_path(), text).unwrap();
}

fn tool_version(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `scenario` in a child under callgrind; instructions per counted request.
fn count(scenario: &str) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_file = std::env::temp_dir().join(format!(
        "wxauth-icount-{scenario}-{}.out",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect=*{}*", measured_fn(scenario)))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg("--quiet")
        .arg(&exe)
        .env(SCENARIO_ENV, scenario)
        .status()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !status.success() {
        return Err(format!("the child under valgrind failed: {status}"));
    }
    let text = std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?;
    std::fs::remove_file(&out_file).ok();
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("no summary line in the callgrind output")?;
    if total == 0 {
        return Err(format!("nothing counted in {}", measured_fn(scenario)));
    }
    Ok(total / REQUESTS as u64)
}

/// The function whose instructions are counted for `scenario` (`--toggle-collect`).
fn measured_fn(scenario: &str) -> &'static str {
    match scenario {
        "session_hit" => "icount_measured_session_hit",
        "proxied_request" => "icount_measured_proxied_request",
        "forward_auth" => "icount_measured_forward_auth",
        other => panic!("unknown scenario {other}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run_child(scenario: &str) {
    match scenario {
        "session_hit" => session_hit(),
        "proxied_request" => proxied_request(),
        "forward_auth" => forward_auth(),
        other => panic!("unknown scenario {other}"),
    }
}

/// The runtime, the layer's fixture with one session in its memory store, and a maker of `n`
/// requests of a browser with that session (`GET /app/page?x=1`).
fn setup() -> (
    tokio::runtime::Runtime,
    layer_fixture::Fixture,
    impl Fn(usize) -> Vec<Request<Empty<Bytes>>>,
) {
    let rt = runtime();
    let f = fixture(false, true);
    let id = rt
        .block_on(f.store.create(SessionRecord::new(identity(1))))
        .unwrap();
    let cookie = format!("_ga=GA1.2.1; {}; lang=zh_CN", cookie_pair(&f.codec, &id));
    let headers = browser_headers(&[("cookie", &cookie)]);
    let requests = move |n| {
        (0..n)
            .map(|_| request(&Method::GET, "/app/page?x=1", &headers))
            .collect()
    };
    (rt, f, requests)
}

/// The layer around a no-op service; the requests are built before counting.
fn session_hit() {
    let (rt, f, requests) = setup();
    let mut svc = f.layer.layer(tower::service_fn(noop));
    rt.block_on(serve_all(&mut svc, requests(WARM_UP)));
    let counted = requests(REQUESTS);
    icount_measured_session_hit(&rt, &mut svc, counted);
}

#[inline(never)]
fn icount_measured_session_hit<S>(
    rt: &tokio::runtime::Runtime,
    svc: &mut S,
    requests: Vec<Request<Empty<Bytes>>>,
) where
    S: Service<
            Request<Empty<Bytes>>,
            Response = Response<wechat_oauth_proxy::layer::ResponseBody<Empty<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    rt.block_on(serve_all(svc, requests));
}

async fn serve_all<S, B>(svc: &mut S, requests: Vec<Request<Empty<Bytes>>>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    for req in requests {
        let response = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// The layer answering nginx's `auth_request` check (see the module docs); the requests are
/// built before counting.
fn forward_auth() {
    let rt = runtime();
    let f = layer_fixture::forward_auth_fixture();
    let id = rt
        .block_on(f.store.create(SessionRecord::new(identity(1))))
        .unwrap();
    let cookie = format!("_ga=GA1.2.1; {}; lang=zh_CN", cookie_pair(&f.codec, &id));
    // What nginx sends with `proxy_pass http://wxauth` and the config's `proxy_set_header`s:
    // the client's headers, `Host` replaced by the upstream's name, the original request.
    let mut headers = browser_headers(&[
        ("cookie", &cookie),
        ("x-original-method", "GET"),
        ("x-original-url", "https://app.example.com/app/page?x=1"),
    ]);
    headers.insert(http::header::HOST, http::HeaderValue::from_static("wxauth"));
    let peer = ClientAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)));
    let requests = |n| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut req = request(&Method::GET, "/_wxauth/auth/request", &headers);
                req.extensions_mut().insert(peer);
                req
            })
            .collect()
    };
    let mut svc = f.layer.layer(tower::service_fn(noop));
    let warm_up = requests(WARM_UP);
    let response = rt.block_on(async {
        let mut first = requests(1);
        svc.ready()
            .await
            .unwrap()
            .call(first.pop().unwrap())
            .await
            .unwrap()
    });
    // A session hit: the JWT in the answer (not a 200 without identity).
    assert!(
        response
            .headers()
            .get("x-wechat-jwt")
            .is_some_and(|jwt| !jwt.is_empty())
    );
    rt.block_on(serve_all(&mut svc, warm_up));
    let counted = requests(REQUESTS);
    icount_measured_forward_auth(&rt, &mut svc, counted);
}

#[inline(never)]
fn icount_measured_forward_auth<S>(
    rt: &tokio::runtime::Runtime,
    svc: &mut S,
    requests: Vec<Request<Empty<Bytes>>>,
) where
    S: Service<
            Request<Empty<Bytes>>,
            Response = Response<wechat_oauth_proxy::layer::ResponseBody<Empty<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    rt.block_on(serve_all(svc, requests));
}

/// Client → `server::serve` (layer + `Upstream`) → upstream, over loopback, on one thread.
fn proxied_request() {
    let (rt, f, requests) = setup();
    let mut sender = rt.block_on(async {
        // The upstream: answers every request `200 ok`.
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = upstream.accept().await.unwrap();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }),
                ));
            }
        });
        // The sidecar: the layer around the reverse proxy, served as the binary serves it.
        let proxy = Upstream::new(ProxySettings::new(
            format!("http://{upstream_addr}/").parse().unwrap(),
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            f.layer.layer(proxy),
            ServerSettings::default(),
            std::future::pending(),
        ));
        // The client: one keep-alive connection.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    });
    rt.block_on(send_all(&mut sender, requests(WARM_UP)));
    let counted = requests(REQUESTS);
    icount_measured_proxied_request(&rt, &mut sender, counted);
}

#[inline(never)]
fn icount_measured_proxied_request(
    rt: &tokio::runtime::Runtime,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    requests: Vec<Request<Empty<Bytes>>>,
) {
    rt.block_on(send_all(sender, requests));
}

async fn send_all(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    requests: Vec<Request<Empty<Bytes>>>,
) {
    for req in requests {
        sender.ready().await.unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
}
