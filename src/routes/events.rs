//! `events`: the platform's 授权事件接收URL. The body is bounded before it is read; the push
//! must carry a valid `msg_signature` and our component appid; the ticket is stored before we
//! answer exactly `success`. A forged push changes nothing.

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};

use crate::error::AuthError;
use crate::layer::response::{OwnResponse, text};
use crate::layer::{BoxError, Shared};
use crate::wechat::error::WeChatError;
use crate::wechat::events::{MAX_PUSH_BODY, PushQuery};

/// Handles `POST events?timestamp&nonce&msg_signature&…`.
pub(crate) async fn handle<B>(
    shared: &Shared,
    req: &Parts,
    body: B,
) -> Result<OwnResponse, AuthError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let query = PushQuery::from_query(req.uri.query().unwrap_or_default())
        .map_err(|_| AuthError::BadRequest("missing push signature parameters"))?;
    let body = Limited::new(body, MAX_PUSH_BODY)
        .collect()
        .await
        .map_err(|_| AuthError::PayloadTooLarge)?
        .to_bytes();
    match shared.wechat.accept_push(&query, &body).await {
        Ok(_) => Ok(text(StatusCode::OK, "success")),
        Err(WeChatError::Store(e)) => Err(AuthError::Store(e.to_string())),
        Err(err) => {
            tracing::warn!(error = %err, "ticket push refused");
            Err(AuthError::PushRejected(err.to_string()))
        }
    }
}
