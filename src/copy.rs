//! The copy of a miss's body kept for the store: laid out as one allocation ([`StoredBody`]),
//! gathered frame by frame while a stream goes out ([`StreamCopy`], driven by
//! [`ResponseBody`](crate::ResponseBody)), and checked against the length the handler declared.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use crate::conditional::strong_etag;
use crate::entry::{Grace, Stamp};
use crate::headers::{format_u64, itoa_buf};
use crate::policy::storable_headers;
use crate::write::Write;
use crate::CachedResponse;

/// Whether every `Content-Length` the handler declared is `len`; none declared is a match.
pub(crate) fn length_matches(headers: &HeaderMap, len: usize) -> bool {
    headers.get_all(header::CONTENT_LENGTH).iter().all(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|declared| declared == len as u64)
    })
}

/// The copy of a streamed body kept for the store, and what its entry needs besides.
pub(crate) struct StreamCopy {
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    grace: Grace,
    compute_millis: u32,
    stored_at_millis: u64,
    limit: usize,
    len: usize,
    chunks: Vec<Bytes>,
    /// Dropped with the copy when the body does not end (client gone, body failed): the flight
    /// then passes to a waiting request.
    write: Option<Write>,
}

impl StreamCopy {
    /// An empty copy of a body of at most `limit` bytes, to be stored by `write` with the
    /// response's `status` and `headers` once the body ends whole.
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        (ttl, grace, compute_millis): (Duration, Grace, u32),
        stored_at_millis: u64,
        limit: usize,
        write: Write,
    ) -> Self {
        Self {
            status,
            headers,
            ttl,
            grace,
            compute_millis,
            stored_at_millis,
            limit,
            len: 0,
            chunks: Vec::new(),
            write: Some(write),
        }
    }

    /// Copies `data`; `false` once the body has outgrown the limit.
    pub(crate) fn keep(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        if self.len > self.limit {
            return false;
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        true
    }

    /// The body cannot be stored (too large, trailers).
    pub(crate) fn unstorable(mut self: Box<Self>) {
        if let Some(write) = self.write.take() {
            write.unstorable();
        }
    }

    /// The body ended whole: store it, unless it is not the length the handler declared.
    pub(crate) fn finish(mut self: Box<Self>) {
        let Some(write) = self.write.take() else {
            return;
        };
        if !length_matches(&self.headers, self.len) {
            write.unstorable();
            return;
        }
        let etag = (!self.headers.contains_key(header::ETAG)).then(|| strong_etag(&self.chunks));
        let stored_body = StoredBody::new(&self.chunks, etag.as_ref().map(|t| &t[..]));
        let extra = [(header::CONTENT_LENGTH, stored_body.content_length)]
            .into_iter()
            .chain(stored_body.etag.map(|e| (header::ETAG, e)));
        let entry = CachedResponse {
            status: self.status,
            headers: storable_headers(&self.headers, extra),
            body: stored_body.body,
            stored_at_millis: self.stored_at_millis,
            ttl: self.ttl,
            stamp: Stamp::default(),
            grace: self.grace,
            compute_millis: self.compute_millis,
        };
        write.submit(entry);
    }
}

/// A body laid out for storage: the bytes, then its `Content-Length` digits and any computed
/// `ETag`, in one exact-size allocation. The entry then holds exactly its bytes (not the
/// handler's spare capacity, nor a larger read buffer a frame was a slice of), and the two
/// header values cost no allocation of their own.
pub(crate) struct StoredBody {
    pub(crate) body: Bytes,
    pub(crate) content_length: HeaderValue,
    pub(crate) etag: Option<HeaderValue>,
}

impl StoredBody {
    pub(crate) fn new(chunks: &[Bytes], etag: Option<&[u8]>) -> Self {
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let mut buf = itoa_buf();
        let digits = format_u64(&mut buf, len as u64);
        let etag_len = etag.map_or(0, <[u8]>::len);
        let mut all = Vec::with_capacity(len + digits.len() + etag_len);
        for chunk in chunks {
            all.extend_from_slice(chunk);
        }
        all.extend_from_slice(digits.as_bytes());
        all.extend_from_slice(etag.unwrap_or_default());
        let all = Bytes::from(all);
        let value = |range: std::ops::Range<usize>| {
            // Digits and a hex ETag are always valid header values.
            HeaderValue::from_maybe_shared(all.slice(range)).ok()
        };
        let cl_end = len + digits.len();
        Self {
            body: all.slice(..len),
            content_length: value(len..cl_end).unwrap_or_else(|| HeaderValue::from(len)),
            etag: etag.and_then(|_| value(cl_end..all.len())),
        }
    }
}
