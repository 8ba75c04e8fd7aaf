//! The future [`CacheService`](crate::CacheService) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::Body;

use crate::ResponseBody;

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

/// Resolves to the cached, stored or passed-through response.
pub struct ResponseFuture<B: Body, E> {
    kind: Kind<B, E>,
}

enum Kind<B: Body, E> {
    /// A hit answered while the request was being called: nothing left to wait for.
    Ready(Option<Response<ResponseBody<B>>>),
    Boxed(Boxed<B, E>),
}

// Nothing is structurally pinned: the pending future is boxed, a ready response is plain data.
impl<B: Body, E> Unpin for ResponseFuture<B, E> {}

impl<B: Body, E> ResponseFuture<B, E> {
    pub(crate) fn new(
        fut: impl Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Boxed(Box::pin(fut)),
        }
    }

    pub(crate) fn ready(res: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready(Some(res)),
        }
    }
}

impl<B: Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            Kind::Ready(res) => Poll::Ready(Ok(res.take().expect("polled after completion"))),
            Kind::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<B: Body, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
