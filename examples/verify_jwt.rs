//! An upstream that trusts nothing but the identity JWT: it fetches the proxy's JWKS, verifies
//! `X-WeChat-Jwt` on every request (algorithm pinned, `iss`, `aud`, `exp` checked) and answers
//! with the verified claims.
//!
//! ```sh
//! # terminal 1: the demo proxy, pointed at this upstream
//! cargo run --release -- --config config.toml   # (set server.upstream = "http://127.0.0.1:3000")
//! # terminal 2:
//! cargo run --example verify_jwt -- http://127.0.0.1:8080/_wxauth/jwks.json 127.0.0.1:3000 \
//!     wechat-oauth-proxy-dev demo-upstream
//! ```
//! Arguments: JWKS URL, listen address, expected issuer, expected audience.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The keys and rules a request is checked against.
struct Verifier {
    jwks: JwkSet,
    issuer: String,
    audience: String,
}

impl Verifier {
    /// Verifies one token: the `kid` selects a key we already trust; the algorithm comes from
    /// that key, never from the token.
    fn verify(&self, token: &str) -> Result<serde_json::Value, BoxError> {
        let header = decode_header(token)?;
        let kid = header.kid.ok_or("token has no kid")?;
        let jwk = self.jwks.find(&kid).ok_or("unknown kid")?;
        let algorithm = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => {
                jsonwebtoken::Algorithm::EdDSA
            }
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                jsonwebtoken::Algorithm::ES256
            }
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => jsonwebtoken::Algorithm::RS256,
            _ => return Err("unsupported key type".into()),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let key = DecodingKey::from_jwk(jwk)?;
        Ok(decode::<serde_json::Value>(token, &key, &validation)?.claims)
    }
}

async fn handle(
    verifier: Arc<Verifier>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let token = req
        .headers()
        .get("x-wechat-jwt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (status, body) = match verifier.verify(token) {
        Ok(claims) => (
            StatusCode::OK,
            serde_json::to_string_pretty(&claims).unwrap_or_default(),
        ),
        Err(err) => (
            StatusCode::UNAUTHORIZED,
            format!("{{\"error\": {:?}}}", err.to_string()),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let jwks_url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/_wxauth/jwks.json".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let issuer = args
        .next()
        .unwrap_or_else(|| "wechat-oauth-proxy-dev".into());
    let audience = args.next().unwrap_or_else(|| "demo-upstream".into());

    // A real upstream would refresh the JWKS periodically (or on an unknown kid).
    let jwks: JwkSet = reqwest::get(&jwks_url).await?.json().await?;
    let verifier = Arc::new(Verifier {
        jwks,
        issuer,
        audience,
    });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("verifying upstream on http://{listen} (keys from {jwks_url})");
    loop {
        let (stream, _) = listener.accept().await?;
        let verifier = Arc::clone(&verifier);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&verifier), req));
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {err}");
            }
        });
    }
}
