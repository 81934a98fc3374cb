//! The demo upstream: what a newcomer sees after logging in through the dev mode, and a JSON
//! echo for tests.
//!
//! - Any path requested by a browser (`Accept: text/html`) → an HTML page with the identity
//!   (nickname, avatar, openid, unionid), every `x-wechat-*` header it received (percent-decoded
//!   for display) and the JWT's decoded header and claims. The page says plainly that it
//!   **decodes without verifying** the signature and points to `/_wxauth/jwks.json` and
//!   `examples/verify_jwt.rs` for how a real upstream verifies it.
//! - `/_echo` (any method), and any non-browser request → JSON
//!   `{"method","path","query","headers":{name:[values]},"body_sha256","body_len"}` so tests can
//!   see exactly what the proxy forwarded. Bodies are streamed into the hash, never buffered.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::{
    SimError,
    http::{Resp, Server, escape, html, is_safe_image_url, respond},
};

/// Largest body `/_echo` hashes (bigger ones get 413).
const MAX_ECHO_BODY: u64 = 1 << 30;
/// Prefix of the identity headers the page lists.
const IDENTITY_PREFIX: &str = "x-wechat-";
/// The proxy's reserved path prefix (logout link, JWKS pointer).
const RESERVED_PREFIX: &str = "/_wxauth";

/// A running demo upstream. Dropping it stops the server.
#[derive(Debug)]
pub struct DemoUpstream {
    server: Option<Server>,
    addr: SocketAddr,
    url: Url,
}

impl DemoUpstream {
    /// Starts the demo upstream on `addr` (loopback only; port 0 for a free port).
    /// `jwt_header` is the header the proxy puts the JWT in (e.g. `x-wechat-jwt`, or
    /// `authorization` for the `Bearer` option).
    ///
    /// # Errors
    /// [`SimError::NotLoopback`] for a non-loopback address, [`SimError::Bind`] when the port
    /// is taken.
    pub async fn start(addr: SocketAddr, jwt_header: String) -> Result<DemoUpstream, SimError> {
        let listener = Server::bind(addr).await?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let url = Url::parse(&format!("http://{local}/")).map_err(|_| SimError::Bind {
            addr,
            source: std::io::Error::other("cannot form the base URL"),
        })?;
        let jwt_header: Arc<str> = Arc::from(jwt_header.to_ascii_lowercase());
        let server = Server::serve(listener, move |req| handle(jwt_header.clone(), req));
        tracing::info!(url = %url, "demo upstream listening");
        Ok(DemoUpstream {
            server: Some(server),
            addr: local,
            url,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/`, the address to configure as the proxy's upstream.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// Stops the server; open connections get a moment to finish.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

async fn handle(jwt_header: Arc<str>, req: Request<Incoming>) -> Resp {
    // The same rule as the proxy's own pages (q-values, not a substring).
    let wants_html =
        crate::negotiate::Answer::for_request(req.headers()) == crate::negotiate::Answer::Html;
    if req.uri().path() != "/_echo" && wants_html {
        let (parts, _body) = req.into_parts();
        return html(
            StatusCode::OK,
            page(&jwt_header, parts.uri.path(), &parts.headers),
        );
    }
    echo(req).await
}

/// The JSON echo.
async fn echo(req: Request<Incoming>) -> Resp {
    let (parts, mut body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "demo upstream: broken request body",
            );
        };
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > MAX_ECHO_BODY {
                return respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain; charset=utf-8",
                    "demo upstream: body too large",
                );
            }
            hasher.update(&data);
        }
    }
    let reply = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body_sha256": format!("{:x}", hasher.finalize()),
        "body_len": len,
    });
    respond(StatusCode::OK, "application/json", reply.to_string())
}

/// A JWT decoded for display: header and claims as JSON, or why it could not be decoded.
struct Decoded {
    header: Result<Value, String>,
    claims: Result<Value, String>,
}

/// Decodes (does **not** verify) a compact JWT.
fn decode_jwt(token: &str) -> Option<Decoded> {
    let token = token.trim();
    let token = match token.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token.get(7..)?.trim(),
        _ => token,
    };
    if token.is_empty() {
        return None;
    }
    let mut parts = token.split('.');
    let part = |segment: Option<&str>| -> Result<Value, String> {
        let segment = segment.ok_or("missing segment")?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .map_err(|e| format!("not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
    };
    let header = part(parts.next());
    let claims = part(parts.next());
    Some(Decoded { header, claims })
}

fn percent_decoded(value: &[u8]) -> String {
    percent_encoding::percent_decode(value)
        .decode_utf8_lossy()
        .into_owned()
}

fn pretty(value: &Result<Value, String>) -> String {
    match value {
        Ok(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
        Err(error) => format!("(cannot decode: {error})"),
    }
}

const STYLE: &str = "<style>\
body{font-family:-apple-system,BlinkMacSystemFont,'PingFang SC','Microsoft YaHei',sans-serif;\
margin:0;background:#f6f7f9;color:#1f2328}\
main{max-width:760px;margin:0 auto;padding:16px}\
.card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:16px;margin:12px 0}\
.who{display:flex;gap:16px;align-items:center}\
.who img{width:72px;height:72px;border-radius:8px}\
table{border-collapse:collapse;width:100%}td{border-top:1px solid #eee;padding:6px;\
vertical-align:top;word-break:break-all;font-size:14px}td:first-child{white-space:nowrap;color:#57606a}\
pre{background:#f6f8fa;padding:12px;border-radius:6px;overflow:auto;font-size:13px}\
.warn{background:#fff8c5;border-color:#d4a72c}\
</style>";

/// The HTML page for a browser.
fn page(jwt_header: &str, path: &str, headers: &HeaderMap) -> String {
    let decoded = headers
        .get(jwt_header)
        .and_then(|value| value.to_str().ok())
        .and_then(decode_jwt);
    let claims = decoded
        .as_ref()
        .and_then(|d| d.claims.as_ref().ok())
        .cloned()
        .unwrap_or(Value::Null);
    // Identity: from the JWT claims, else from the plain headers.
    let field = |claim: &str, header_name: &str| -> Option<String> {
        claims
            .get(claim)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(header_name)
                    .map(|v| percent_decoded(v.as_bytes()))
            })
            .filter(|s| !s.is_empty())
    };
    let openid = field("openid", "x-wechat-openid");
    let unionid = field("unionid", "x-wechat-unionid");
    let nickname = field("nickname", "x-wechat-nickname");
    let avatar = field("avatar", "x-wechat-avatar");

    let mut body = String::new();
    body.push_str("<h1>wechat-oauth-proxy · demo upstream</h1>");
    body.push_str(&format!(
        "<p>This page is served by the demo upstream behind the proxy (path <code>{}</code>). \
         It shows what the proxy forwarded.</p>",
        escape(path)
    ));
    body.push_str("<div class=\"card who\">");
    if let Some(avatar) = avatar.as_deref().filter(|a| is_safe_image_url(a)) {
        body.push_str(&format!("<img src=\"{}\" alt=\"avatar\">", escape(avatar)));
    }
    match &openid {
        Some(openid) => body.push_str(&format!(
            "<div><h2>你好，{} / Hello</h2><div>openid <code>{}</code></div>\
             <div>unionid <code>{}</code></div></div>",
            escape(
                nickname
                    .as_deref()
                    .unwrap_or("(no nickname — snsapi_base login)")
            ),
            escape(openid),
            escape(unionid.as_deref().unwrap_or("(none)")),
        )),
        None => body.push_str(
            "<div><h2>No identity received</h2><p>Are you calling the upstream directly \
             instead of through the proxy?</p></div>",
        ),
    }
    body.push_str("</div>");

    body.push_str("<div class=\"card\"><h3>Identity headers (<code>x-wechat-*</code>, percent-decoded)</h3><table>");
    let mut any = false;
    for (name, value) in headers {
        if name.as_str().starts_with(IDENTITY_PREFIX) || name.as_str() == jwt_header {
            any = true;
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(name.as_str()),
                escape(&percent_decoded(value.as_bytes()))
            ));
        }
    }
    if !any {
        body.push_str("<tr><td colspan=\"2\">(none)</td></tr>");
    }
    body.push_str("</table></div>");

    body.push_str(&format!(
        "<div class=\"card warn\"><h3>JWT (<code>{}</code> header), decoded</h3>\
         <p><b>This demo decodes the token but does not verify its signature.</b> A real \
         upstream must verify it with the proxy's public keys from \
         <a href=\"{RESERVED_PREFIX}/jwks.json\"><code>{RESERVED_PREFIX}/jwks.json</code></a> \
         — see <code>examples/verify_jwt.rs</code>.</p>",
        escape(jwt_header)
    ));
    match &decoded {
        Some(decoded) => body.push_str(&format!(
            "<h4>Header</h4><pre>{}</pre><h4>Claims</h4><pre>{}</pre>",
            escape(&pretty(&decoded.header)),
            escape(&pretty(&decoded.claims))
        )),
        None => body.push_str("<p>(no JWT received)</p>"),
    }
    body.push_str("</div>");
    body.push_str(&format!(
        "<p><a href=\"{RESERVED_PREFIX}/logout\">退出登录 / Log out</a></p>"
    ));
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>wechat-oauth-proxy demo upstream</title>{STYLE}</head><body><main>{body}</main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2ln",
            b64(&json!({"alg":"EdDSA","typ":"JWT","kid":"k1"})),
            b64(claims)
        )
    }

    #[test]
    fn decodes_claims_and_bearer_prefix() {
        let token = jwt(&json!({"openid":"o1","nickname":"张三"}));
        let decoded = decode_jwt(&format!("Bearer {token}")).expect("decoded");
        assert_eq!(decoded.claims.expect("claims")["nickname"], "张三");
        assert_eq!(decoded.header.expect("header")["kid"], "k1");
        assert!(decode_jwt("  ").is_none());
        let garbled = decode_jwt("%%%.###").expect("decoded");
        assert!(garbled.claims.is_err());
    }

    #[test]
    fn page_escapes_everything() {
        let mut headers = HeaderMap::new();
        let token = jwt(&json!({
            "openid": "o<script>",
            "nickname": "<img src=x onerror=alert(1)>李四😀",
            "avatar": "javascript:alert(1)",
        }));
        headers.insert("x-wechat-jwt", token.parse().expect("header"));
        headers.insert(
            "x-wechat-nickname",
            "%3Cb%3E%E6%9D%8E%E5%9B%9B".parse().expect("header"),
        );
        let html = page("x-wechat-jwt", "/<p>", &headers);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img src=x"));
        assert!(!html.contains("<b>李四"));
        assert!(html.contains("&lt;b&gt;李四"));
        assert!(html.contains("李四😀"));
        assert!(!html.contains("src=\"javascript:"));
        assert!(html.contains("charset=\"utf-8\""));
        assert!(html.contains("does not verify"));
        assert!(html.contains("/_wxauth/logout"));
    }
}
