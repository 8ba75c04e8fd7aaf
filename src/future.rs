//! The future [`CacheService`](crate::CacheService) returns: one variant per outcome `call`
//! decided, as tower-http's futures are built.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::bypass::Bypassed;
use crate::unsafe_methods::Invalidation;
use crate::ResponseBody;

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// Resolves to the cached, stored or passed-through response.
    ///
    /// `F` is the inner service's future: a bypassed request (a POST, a request with
    /// credentials) drives it directly, with no box and no clone of the inner service.
    pub struct ResponseFuture<F, B: Body, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B: Body, E> {
        // A hit (or a `504` for `only-if-cached`) answered while the request was being called.
        Ready { res: Option<Response<ResponseBody<B>>> },
        // The inner service's own future; `finish` adds the bypass's `Cache-Status` and counts
        // it (`None`: a route an inner layer of this cache handles, passed on untouched).
        Bypass { #[pin] fut: F, finish: Option<Bypassed> },
        // A lookup in a store that must be waited for, or a miss that fills the entry.
        Fill { fut: Boxed<B, E> },
        // A bypassed write that succeeded: its invalidation runs before `res` is returned, so
        // the client's next GET misses. Only then is anything boxed.
        Invalidate { work: Invalidation, res: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn ready(res: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready { res: Some(res) },
        }
    }

    pub(crate) fn bypass(fut: F, finish: Option<Bypassed>) -> Self {
        Self {
            kind: Kind::Bypass { fut, finish },
        }
    }

    pub(crate) fn fill(
        fut: impl Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Fill { fut: Box::pin(fut) },
        }
    }
}

impl<F, B: Body, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        match kind.as_mut().project() {
            KindProj::Ready { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
            KindProj::Bypass { fut, finish } => {
                let res = ready!(fut.poll(cx))?;
                let (res, work) = match finish.take() {
                    Some(finish) => finish.finish(res),
                    None => (res.map(ResponseBody::inner), None),
                };
                let Some(mut work) = work else {
                    return Poll::Ready(Ok(res));
                };
                if work.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(res));
                }
                kind.set(Kind::Invalidate {
                    work,
                    res: Some(res),
                });
                Poll::Pending
            }
            KindProj::Invalidate { work, res } => {
                ready!(work.as_mut().poll(cx));
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
            KindProj::Fill { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl<F, B: Body, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Ready { .. } => "Ready",
            Kind::Bypass { .. } => "Bypass",
            Kind::Fill { .. } => "Fill",
            Kind::Invalidate { .. } => "Invalidate",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
