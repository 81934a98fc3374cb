//! Structured logs and request ids, with the real binary (issue 14 item 3): a whole login with
//! `[log] format = "json"` at `debug`, its standard output captured, must give JSON lines only,
//! the request id on every line of a request and in the audit lines, and not one secret, token,
//! code, state, cookie value, JWT or openid. And `X-Request-Id`: kept from a trusted peer when
//! sane and forwarded to the upstream, replaced otherwise (untrusted, CRLF, 500 characters,
//! non-ASCII), returned on every response, shown on error pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::header::{ACCEPT, COOKIE};
use support::sidecar::Sidecar;
use support::{Browser, Reply, STEP, bounded};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const COMPONENT_SECRET: &str = "logs-test-component-secret-0001";
const MESSAGE_TOKEN: &str = "logs_test_message_token";
const AES_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj";
const MASTER_SECRET: &str = "logs-test-master-secret-0123456789abcdef-xyz";
const HS256_SECRET: &str = "logs-test-hs256-signing-key-0123456789abcdef";
/// The peer address the sidecar trusts; the test's other requests come from 127.0.0.1.
const TRUSTED_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A development configuration (simulated WeChat, demo upstream) with JSON logs at `debug`,
/// HS256 with a known key, and 127.0.0.2 as the one trusted proxy.
fn config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
state_dir = "./state"
trusted_proxies = ["127.0.0.2/32"]

[auth]
api_prefixes = ["/api/"]

[wechat]
mode = "component"
appid = "wxa1b2c3d4e5f60708"
component_appid = "wx0123456789abcdef"
component_secret = "{COMPONENT_SECRET}"
message_token = "{MESSAGE_TOKEN}"
encoding_aes_key = "{AES_KEY}"

[session]
store = "durable"
master_secret = "{MASTER_SECRET}"
insecure_allow_http = true

[jwt]
algorithm = "HS256"
hs256_secret = "{HS256_SECRET}"
plain_headers = true

[dev]
simulate_wechat = true
demo_upstream = true

[log]
format = "json"
level = "debug"
"#
    )
}

/// A plain client (no redirects), optionally sending from `local`.
fn client(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local)
        .timeout(STEP)
        .build()
        .unwrap()
}

/// The `X-Request-Id` of a reply (panics without exactly one).
fn id_of(headers: &http::HeaderMap) -> String {
    let values: Vec<_> = headers.get_all("x-request-id").iter().collect();
    assert_eq!(values.len(), 1, "one X-Request-Id: {headers:?}");
    values[0].to_str().unwrap().to_owned()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A query parameter of `url`.
fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// The log's lines, each parsed (panics on a line that is not a JSON object).
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// The lines the request with id `id` wrote.
fn lines_of<'a>(lines: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|line| line["span"]["request_id"] == id)
        .collect()
}

/// Waits (bounded) until the log has a line for which `found` holds.
async fn wait_for_line(sidecar: &Sidecar, found: impl Fn(&serde_json::Value) -> bool) {
    for _ in 0..100 {
        if json_lines(&sidecar.log()).iter().any(&found) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the expected line never came:\n{}", sidecar.log());
}

#[tokio::test]
async fn a_whole_login_in_json_logs_carries_request_ids_and_no_secret() {
    let sidecar = Sidecar::start_logged("logs-json", &config()).await;
    let browser = Browser::new(sidecar.base.clone());
    let replies: Vec<Reply> = sidecar.login_replies(&browser, "/private", 0).await;
    // [redirect to WeChat, consent page, choice → callback URL, callback, landing]
    let authorize = replies[0].location();
    let state = param(&authorize, "state");
    let callback_url = replies[2].location();
    let code = param(&callback_url, "code");
    let callback = &replies[3];
    assert!(callback.sets_session());
    let callback_id = id_of(&callback.headers);
    assert!(is_generated(&callback_id), "{callback_id}");
    let mut cookie_values: Vec<String> = replies
        .iter()
        .flat_map(Reply::set_cookies)
        .map(|text| cookie::Cookie::parse(text).unwrap().value().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    let session_cookie = browser.session_cookie().expect("a session");
    cookie_values.push(session_cookie.split_once('=').unwrap().1.to_owned());

    // What the upstream receives: the JWT, the openid, the request id.
    let echo = client(None)
        .get(sidecar.url("/api/echo"))
        .header(ACCEPT, "application/json")
        .header(COOKIE, &session_cookie)
        .send()
        .await
        .unwrap();
    let echo_id = id_of(echo.headers());
    let echoed: serde_json::Value = echo.json().await.unwrap();
    let header = |name: &str| echoed["headers"][name][0].as_str().unwrap().to_owned();
    let jwt = header("x-wechat-jwt");
    let openid = header("x-wechat-openid");
    let unionid = header("x-wechat-unionid");
    let nickname = percent_encoding::percent_decode_str(&header("x-wechat-nickname"))
        .decode_utf8()
        .unwrap()
        .into_owned();
    assert_eq!(header("x-request-id"), echo_id, "the upstream gets the id");

    // An error page, then the logout.
    let missing = browser.get(sidecar.url("/_wxauth/nope")).await;
    let missing_id = id_of(&missing.headers);
    assert!(
        missing
            .body
            .contains(&format!("请求编号 / Request ID: <code>{missing_id}</code>")),
        "{}",
        missing.body
    );
    // A forged push: refused, and audited as such.
    let forged = client(None)
        .post(sidecar.url("/_wxauth/events?msg_signature=00&timestamp=1&nonce=2&encrypt_type=aes"))
        .body("<xml><AppId>wx0123456789abcdef</AppId><Encrypt>AAAA</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert!(forged.status().is_client_error(), "{}", forged.status());
    let forged_id = id_of(forged.headers());
    let logout = browser.get(sidecar.url("/_wxauth/logout")).await;
    assert!(logout.status.is_redirection());
    let logout_id = id_of(&logout.headers);

    // The simulator's credentials of this run.
    let sim = authorize.join("/_sim/admin/calls").unwrap();
    let issued: serde_json::Value = client(None)
        .get(sim)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secrets: Vec<(String, String)> = vec![
        ("component secret".into(), COMPONENT_SECRET.into()),
        ("message token".into(), MESSAGE_TOKEN.into()),
        ("EncodingAESKey".into(), AES_KEY.into()),
        ("master secret (cookie key)".into(), MASTER_SECRET.into()),
        ("JWT signing key".into(), HS256_SECRET.into()),
        ("ticket".into(), issued["ticket"].as_str().unwrap().into()),
        (
            "component_access_token".into(),
            issued["component_access_token"].as_str().unwrap().into(),
        ),
        ("OAuth code".into(), code),
        ("state".into(), state),
        ("JWT".into(), jwt.clone()),
        ("openid".into(), openid.clone()),
        ("unionid".into(), unionid),
    ];
    for token in issued["user_access_tokens"].as_array().unwrap() {
        secrets.push(("user access token".into(), token.as_str().unwrap().into()));
    }
    for token in issued["refresh_tokens"].as_array().unwrap() {
        secrets.push(("user refresh token".into(), token.as_str().unwrap().into()));
    }
    assert!(
        !issued["user_access_tokens"].as_array().unwrap().is_empty(),
        "{issued}"
    );
    for value in cookie_values {
        secrets.push(("cookie value".into(), value));
    }
    // The JWT's signature alone too (the part no claim decoding reveals).
    secrets.push((
        "JWT signature".into(),
        jwt.rsplit('.').next().unwrap().to_owned(),
    ));

    wait_for_line(&sidecar, |l| {
        l["target"] == "audit" && l["event"] == "logout"
    })
    .await;
    let log = sidecar.log();
    let lines = json_lines(&log);
    assert!(lines.len() > 20, "a debug log of a login: {log}");
    // The nickname (张三: short, but nothing else in an ASCII log spells it).
    assert!(
        !nickname.is_empty() && !log.contains(&nickname),
        "the nickname appears in the log"
    );
    for (what, value) in &secrets {
        assert!(
            value.len() >= 8,
            "{what} is too short to search for: {value:?}"
        );
        assert!(
            !log.contains(value.as_str()),
            "the {what} appears in the log"
        );
    }

    // Every line has the usual fields; every line inside a request names its id.
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        if line["span"]["name"] == "request" {
            assert!(
                line["span"]["request_id"]
                    .as_str()
                    .is_some_and(is_generated),
                "{line}"
            );
        }
    }
    // The callback's lines: several, the login audit line among them.
    let of_callback = lines_of(&lines, &callback_id);
    let login = of_callback
        .iter()
        .find(|l| l["target"] == "audit" && l["event"] == "login")
        .unwrap_or_else(|| panic!("no login audit line for {callback_id}: {log}"));
    assert_eq!(login["level"], "INFO");
    assert_eq!(login["appid"], "wxa1b2c3d4e5f60708");
    assert_eq!(login["session"].as_str().unwrap().len(), 16);
    assert_eq!(
        login["user"],
        wechat_oauth_proxy::audit::user(&openid.as_str().into())
    );
    assert_eq!(login["span"]["path"], "/_wxauth/callback");
    let logout_line = lines_of(&lines, &logout_id)
        .into_iter()
        .find(|l| l["target"] == "audit" && l["event"] == "logout")
        .unwrap_or_else(|| panic!("no logout audit line for {logout_id}: {log}"));
    assert_eq!(logout_line["session"], login["session"]);
    let refused = lines_of(&lines, &forged_id)
        .into_iter()
        .find(|l| l["target"] == "audit" && l["event"] == "push")
        .unwrap_or_else(|| panic!("no push audit line for {forged_id}: {log}"));
    assert_eq!(refused["outcome"], "refused");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("push_")),
        "{refused}"
    );
    // Every request has its access line, under its id, with its status.
    for (id, status) in [
        (&callback_id, 302),
        (&echo_id, 200),
        (&missing_id, 404),
        (&logout_id, 302),
    ] {
        let access = lines_of(&lines, id)
            .into_iter()
            .find(|l| l["target"] == "access")
            .unwrap_or_else(|| panic!("no access line for {id}: {log}"));
        assert_eq!(access["status"], status, "{access}");
    }
    // The platform's side: the first ticket push and the token it made possible.
    assert!(lines.iter().any(|l| l["target"] == "audit"
        && l["event"] == "push"
        && l["outcome"] == "accepted"
        && l["info_type"] == "component_verify_ticket"));
    assert!(lines.iter().any(|l| l["target"] == "audit"
        && l["event"] == "component_token_refresh"
        && l["appid"] == "wx0123456789abcdef"));
}

/// One raw HTTP/1.1 request from 127.0.0.2 (trusted); the response head, lower-cased.
async fn raw_head(sidecar: &Sidecar, request: &[u8]) -> String {
    let addr = format!("127.0.0.1:{}", sidecar.base.port().unwrap());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(TRUSTED_PEER, 0))
        .unwrap();
    let mut stream = bounded(socket.connect(addr.parse().unwrap()))
        .await
        .unwrap();
    bounded(stream.write_all(request)).await.unwrap();
    let mut buf = Vec::new();
    bounded(stream.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

#[tokio::test]
async fn request_ids_are_kept_from_trusted_peers_only_and_only_when_sane() {
    let sidecar = Sidecar::start_logged("logs-ids", &config()).await;
    let browser = Browser::new(sidecar.base.clone());
    sidecar.login(&browser, "/private", 1).await;
    let cookie = browser.session_cookie().unwrap();
    let echo = |local: Option<IpAddr>, id: Vec<u8>| {
        let url = sidecar.url("/api/echo");
        let cookie = cookie.clone();
        async move {
            let response = client(local)
                .get(url)
                .header(ACCEPT, "application/json")
                .header(COOKIE, cookie)
                .header("x-request-id", http::HeaderValue::from_bytes(&id).unwrap())
                .header("x_request_id", "alias-spelling")
                .header("x.request.id", "alias-spelling")
                .header("connection", "x-request-id")
                .send()
                .await
                .unwrap();
            let returned = id_of(response.headers());
            let echoed: serde_json::Value = response.json().await.unwrap();
            let upstream: Vec<String> = echoed["headers"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(name, _)| {
                    wechat_oauth_proxy::identity::same_header_name(name, "x-request-id")
                })
                .flat_map(|(_, values)| values.as_array().unwrap().clone())
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            (returned, upstream)
        }
    };

    // Trusted and sane: kept, forwarded (and nothing else of that name), returned.
    let (returned, upstream) = echo(Some(TRUSTED_PEER), b"lb-7f3a:trace.01_x".to_vec()).await;
    assert_eq!(returned, "lb-7f3a:trace.01_x");
    assert_eq!(upstream, vec!["lb-7f3a:trace.01_x".to_owned()]);

    // Untrusted: replaced, even when sane.
    let (returned, upstream) = echo(None, b"lb-7f3a:trace.01_x".to_vec()).await;
    assert!(is_generated(&returned), "{returned}");
    assert_eq!(upstream, vec![returned]);

    // Trusted but malformed: replaced, never reflected.
    let long = vec![b'a'; 500];
    let utf8 = "请求-1".as_bytes().to_vec();
    for bad in [long, utf8, b"a b".to_vec(), b"<script>".to_vec()] {
        let (returned, upstream) = echo(Some(TRUSTED_PEER), bad.clone()).await;
        assert!(is_generated(&returned), "{returned} for {bad:?}");
        assert_eq!(upstream, vec![returned]);
    }

    // A CR LF inside the value (obs-fold, or a bare CR): refused by the HTTP parser or
    // replaced; the continuation is never reflected as a header of ours.
    for raw in [
        &b"GET /_wxauth/health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: abc\r\n set-cookie: injected=1\r\nconnection: close\r\n\r\n"[..],
        &b"GET /_wxauth/health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: abc\rset-cookie: injected=1\r\nconnection: close\r\n\r\n"[..],
    ] {
        let head = raw_head(&sidecar, raw).await;
        assert!(!head.contains("injected"), "{head}");
        if let Some(line) = head.lines().find(|l| l.starts_with("x-request-id:")) {
            let id = line["x-request-id:".len()..].trim();
            assert!(is_generated(id), "{head}");
        }
    }
    // A sane one on a raw request from the trusted peer is kept (the raw path works).
    let head = raw_head(
        &sidecar,
        b"GET /_wxauth/health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: raw-1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(head.contains("\r\nx-request-id: raw-1"), "{head}");

    // The error pages show the id, as HTML and as JSON.
    let page = browser
        .get_with(
            sidecar.url("/_wxauth/nope").as_str(),
            &[("x-request-id", "not-trusted-so-replaced")],
        )
        .await;
    let id = id_of(&page.headers);
    assert!(is_generated(&id));
    assert!(
        page.body
            .contains(&format!("请求编号 / Request ID: <code>{id}</code>"))
    );
    assert!(!page.body.contains("not-trusted-so-replaced"));
    let api = client(None)
        .get(sidecar.url("/api/private"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let id = id_of(api.headers());
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
}
