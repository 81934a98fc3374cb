//! The small HTTP plumbing shared by the simulated WeChat and the demo upstream: a loopback-only
//! accept loop with shutdown, bounded body reading, response builders and HTML escaping.

use std::{
    collections::HashMap, convert::Infallible, future::Future, net::SocketAddr, time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use super::SimError;

/// The response type of every simulated endpoint.
pub(crate) type Resp = Response<Full<Bytes>>;

/// How long a graceful shutdown waits for open connections before they are aborted.
const DRAIN: Duration = Duration::from_secs(1);

/// A running accept loop; dropping it stops the loop and aborts every connection.
#[derive(Debug)]
pub(crate) struct Server {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr`, refusing anything but a loopback address.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
        if !addr.ip().is_loopback() {
            return Err(SimError::NotLoopback(addr));
        }
        TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })
    }

    /// Serves every connection accepted on `listener` with `handler`.
    pub(crate) fn serve<F, Fut>(listener: TcpListener, handler: F) -> Server
    where
        F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, handler, stopped));
        Server {
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting, gives open connections a moment to finish, then aborts them.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), task).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F, mut stopped: watch::Receiver<bool>)
where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Typically EMFILE; back off a little instead of spinning.
                        tracing::warn!(%error, "sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(%error, "sim: connection ended with an error");
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN, drain).await;
    connections.abort_all();
}

/// Reads a request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Option<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}

/// A response with the given status, content type and body.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An HTML page (UTF-8).
pub(crate) fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

/// A 302 to `location`; falls back to a plain 500 if the location is not a valid header value
/// (it always is: it comes from `url::Url`, which percent-encodes).
pub(crate) fn redirect(location: &str) -> Resp {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = respond(StatusCode::FOUND, "text/plain; charset=utf-8", "");
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "sim: bad redirect location",
        ),
    }
}

/// Escapes text for HTML element content and quoted attribute values (the crate's one escaper).
pub(crate) use crate::html::escape_html as escape;

/// Whether an image URL is safe to put into `<img src>`: http(s) or an inline `data:image/`.
pub(crate) fn is_safe_image_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("data:image/")
}

/// Random bytes as unpadded base64url (tokens, codes, tickets).
pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Random lowercase hex of `len` characters (WeChat `rid`s, nonces).
pub(crate) fn random_hex(len: usize) -> String {
    use rand::Rng as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(HEX[rng.gen_range(0..16)]))
        .collect()
}

/// Query parameters by name; the first occurrence wins.
pub(crate) fn params(query: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        map.entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_data_images_are_rendered() {
        assert!(is_safe_image_url("https://thirdwx.qlogo.cn/x/132"));
        assert!(is_safe_image_url("data:image/svg+xml;base64,AAAA"));
        assert!(!is_safe_image_url("javascript:alert(1)"));
        assert!(!is_safe_image_url("data:text/html,<script>"));
    }

    #[test]
    fn random_values_have_the_asked_shape() {
        assert_eq!(random_token(64).len(), 86);
        let rid = random_hex(8);
        assert_eq!(rid.len(), 8);
        assert!(rid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(random_token(16), random_token(16));
    }
}
