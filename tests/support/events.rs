//! A minimal 授权事件接收URL for suites that drive `WeChatOAuth` without the layer: every POST
//! goes to `accept_push`; `success` on `Ok`, 400 for a refused push, 503 otherwise. Also
//! [`give_ticket`], the shortcut for "a ticket push arrived".

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use url::Url;
use wechat_oauth_proxy::wechat::{error::WeChatError, events, oauth::WeChatOAuth};

/// The receiver's accept loop on `127.0.0.1:0`; dropping it stops the loop.
pub struct EventsReceiver {
    /// `http://127.0.0.1:<port>/_wxauth/events`.
    pub url: Url,
    task: tokio::task::JoinHandle<()>,
}

impl EventsReceiver {
    /// Starts receiving pushes for `oauth`.
    pub async fn start(oauth: WeChatOAuth) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/_wxauth/events",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let oauth = oauth.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let oauth = oauth.clone();
                        async move { Ok::<_, Infallible>(receive(&oauth, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for EventsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(oauth: &WeChatOAuth, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    let Ok(query) = events::PushQuery::from_query(req.uri().query().unwrap_or("")) else {
        return reply(StatusCode::BAD_REQUEST, "bad query");
    };
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, "too large");
    };
    match oauth.accept_push(&query, &body.to_bytes()).await {
        Ok(_) => reply(StatusCode::OK, "success"),
        Err(WeChatError::Push(_)) => reply(StatusCode::BAD_REQUEST, "refused"),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "try again"),
    }
}

/// Gives `oauth` the simulator's current ticket, as a ticket push would.
#[cfg(feature = "sim")]
pub async fn give_ticket(sim: &wechat_oauth_proxy::sim::SimWeChat, oauth: &WeChatOAuth) {
    use wechat_oauth_proxy::wechat::{persist::StoredTicket, token::now_unix};
    super::bounded(oauth.token_manager().unwrap().set_ticket(StoredTicket {
        ticket: sim.current_ticket(),
        create_time: now_unix(),
        received_at: now_unix(),
    }))
    .await
    .unwrap();
}
