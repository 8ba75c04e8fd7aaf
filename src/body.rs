//! The body of a response the layer handled: a stored body, the handler's own body passed
//! through, the part the layer already read followed by the rest, or a stream passed on frame
//! by frame while a copy is kept for the store.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use crate::copy::StreamCopy;

/// The response body of [`CacheService`](crate::CacheService).
///
/// Yields [`Bytes`]; errors are the inner body's own.
pub struct ResponseBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    Full(Option<Bytes>),
    // Boxed so the whole body is `Unpin`; only the pass-through and replay paths pay for it.
    Inner(Pin<Box<B>>),
    Replay {
        frames: VecDeque<Frame<Bytes>>,
        rest: Option<Pin<Box<B>>>,
        error: Option<B::Error>,
    },
    /// A body of unknown length: each frame goes out as it comes, and into `copy` until the
    /// copy is stored (the body ended whole) or given up.
    Tee {
        body: Pin<Box<B>>,
        copy: Option<Box<StreamCopy>>,
    },
}

// Nothing inside is structurally pinned: the inner body is boxed, the rest is plain data.
impl<B: Body> Unpin for ResponseBody<B> {}

impl<B: Body> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        // A peer stops polling once the body says it has ended, possibly before any frame
        // (an empty stream): such a body is whole. Any other copy is dropped unstored.
        if let Kind::Tee { body, copy } = &mut self.kind {
            if body.is_end_stream() {
                if let Some(c) = copy.take() {
                    c.finish();
                }
            }
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "Full",
            Kind::Inner(_) => "Inner",
            Kind::Replay { .. } => "Replay",
            Kind::Tee { .. } => "Tee",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner(Box::pin(body)),
        }
    }

    /// A body read whole, sent as the chunks it came in.
    pub(crate) fn chunks(chunks: Vec<Bytes>) -> Self {
        let replay = Kind::Replay {
            frames: chunks.into_iter().map(Frame::data).collect(),
            rest: None,
            error: None,
        };
        Self { kind: replay }
    }

    /// `body` passed on as it comes, copied into `copy`.
    pub(crate) fn tee(body: B, copy: StreamCopy) -> Self {
        Self {
            kind: Kind::Tee {
                body: Box::pin(body),
                copy: Some(Box::new(copy)),
            },
        }
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Inner(body) => body
                .as_mut()
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map(to_bytes))),
            Kind::Replay {
                frames,
                rest,
                error,
            } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                match rest {
                    Some(body) => body
                        .as_mut()
                        .poll_frame(cx)
                        .map(|f| f.map(|r| r.map(to_bytes))),
                    None => Poll::Ready(None),
                }
            }
            Kind::Tee { body, copy } => {
                let polled = body.as_mut().poll_frame(cx);
                let Poll::Ready(polled) = polled else {
                    return Poll::Pending;
                };
                match polled.map(|r| r.map(to_bytes)) {
                    Some(Ok(frame)) => {
                        let kept = match (frame.data_ref(), copy.as_mut()) {
                            (Some(data), Some(c)) => c.keep(data),
                            // Trailers: the entry format has no place for them.
                            (None, _) => false,
                            (_, None) => true,
                        };
                        if !kept {
                            if let Some(c) = copy.take() {
                                c.unstorable();
                            }
                        } else if body.is_end_stream() {
                            // The peer may stop polling here; the body is whole.
                            if let Some(c) = copy.take() {
                                c.finish();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    None => {
                        if let Some(c) = copy.take() {
                            c.finish();
                        }
                        Poll::Ready(None)
                    }
                    // A failed body is not whole: the copy is dropped, and with it the
                    // flight, which a waiting request then takes over.
                    Some(Err(e)) => {
                        copy.take();
                        Poll::Ready(Some(Err(e)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Inner(body) => body.is_end_stream(),
            Kind::Replay {
                frames,
                rest,
                error,
            } => {
                frames.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
            Kind::Tee { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Inner(body) => body.size_hint(),
            Kind::Replay { frames, rest, .. } => {
                let read: u64 = frames
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                // Upper first: `set_lower` asserts it stays below the upper bound.
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint.set_lower(rest.lower() + read);
                hint
            }
            Kind::Tee { body, .. } => body.size_hint(),
        }
    }
}

/// What reading a body up to a limit produced.
pub(crate) enum Collected<B: Body> {
    /// The whole body, within the limit, as the chunks it arrived in.
    Complete(Vec<Bytes>),
    /// The body could not be kept; what was read is replayed ahead of the rest.
    Partial(ResponseBody<B>, PartialReason),
}

/// Why a body could not be kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartialReason {
    TooLarge,
    Trailers,
    Error,
}

/// Reads `body` to its end, unless it outgrows `limit`, carries trailers, or fails midway; then
/// nothing is lost: the bytes read so far come first in the returned body.
pub(crate) async fn collect<B: Body>(body: B, limit: usize) -> Collected<B> {
    let mut body = Box::pin(body);
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut total = 0usize;
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => {
                let frame = to_bytes(frame);
                let reason = match frame.data_ref() {
                    Some(d) => {
                        total += d.len();
                        (total > limit).then_some(PartialReason::TooLarge)
                    }
                    None => Some(PartialReason::Trailers),
                };
                frames.push_back(frame);
                if let Some(reason) = reason {
                    let replay = Kind::Replay {
                        frames,
                        rest: Some(body),
                        error: None,
                    };
                    return Collected::Partial(ResponseBody { kind: replay }, reason);
                }
            }
            Some(Err(e)) => {
                let replay = Kind::Replay {
                    frames,
                    rest: None,
                    error: Some(e),
                };
                return Collected::Partial(ResponseBody { kind: replay }, PartialReason::Error);
            }
        }
    }
    let chunks = frames
        .into_iter()
        .filter_map(|f| f.into_data().ok())
        .collect();
    Collected::Complete(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A body of fixed chunks that reports an exact size, like a `Content-Length` body.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
        }
    }

    fn chunks(n: usize, len: usize) -> Chunks {
        let all = (0..n)
            .map(|i| Bytes::from(vec![b'a' + i as u8; len]))
            .collect();
        Chunks(all)
    }

    #[tokio::test]
    async fn within_the_limit_the_body_is_collected_whole() {
        let Collected::Complete(chunks) = collect(chunks(3, 4), 12).await else {
            panic!("expected a complete body")
        };
        assert_eq!(chunks, ["aaaa", "bbbb", "cccc"]);
    }

    #[tokio::test]
    async fn an_outgrown_body_replays_every_byte_with_a_consistent_size_hint() {
        let Collected::Partial(body, reason) = collect(chunks(4, 4), 7).await else {
            panic!("expected the limit to be exceeded")
        };
        assert_eq!(reason, PartialReason::TooLarge);
        // Two chunks were read, two remain: the hint covers both, exactly.
        assert_eq!(body.size_hint().exact(), Some(16));
        let mut body = body;
        let mut all = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            all.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(all, b"aaaabbbbccccdddd");
        assert!(body.is_end_stream());
    }
}
