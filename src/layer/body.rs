//! The response body type of [`WeChatAuth`](super::WeChatAuth).
//!
//! [`ResponseBody<B>`] is the one body type the layer returns: either the inner service's body
//! `B`, untouched and streaming ([`ResponseBody::inner`]), or one of our own small, complete
//! answers ([`ResponseBody::own`], a [`Full<Bytes>`]). Its error type is `B::Error`, so the inner
//! service's body errors pass through unchanged and our own bodies cannot fail. It implements
//! [`http_body::Body`] with `Data = Bytes`, which is what axum (`IntoResponse`) and hyper expect;
//! no boxing or allocation is added on the pass-through path.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// A response the layer built itself (before it is wrapped in [`ResponseBody`]).
pub type OwnResponse = Response<Full<Bytes>>;

pin_project! {
    /// The body of every response that leaves [`WeChatAuth`](super::WeChatAuth): the inner
    /// service's body or one of our own; see the module docs.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body (streamed as is).
    pub fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// Wraps one of our own complete bodies (redirect, JSON, HTML page).
    pub fn own(body: Full<Bytes>) -> Self {
        ResponseBody {
            kind: Kind::Own { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { body } => Pin::new(body).poll_frame(cx).map(|frame| {
                frame.map(|result| result.map_err(|never: Infallible| match never {}))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}

/// Converts one of our own responses into the layer's response type.
pub(crate) fn wrap_own<B>(response: OwnResponse) -> Response<ResponseBody<B>> {
    response.map(ResponseBody::own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn own_and_inner_bodies_stream() {
        let own: ResponseBody<Full<Bytes>> =
            ResponseBody::own(Full::new(Bytes::from_static(b"ours")));
        assert_eq!(own.collect().await.expect("infallible").to_bytes(), "ours");
        let inner: ResponseBody<Full<Bytes>> =
            ResponseBody::inner(Full::new(Bytes::from_static(b"theirs")));
        assert_eq!(inner.size_hint().exact(), Some(6));
        assert_eq!(
            inner.collect().await.expect("infallible").to_bytes(),
            "theirs"
        );
    }
}
