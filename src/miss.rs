//! The miss path: decide from the handler's response whether to store it, read its body up to
//! the limit, store it, and answer (a 304 when the client's validators already match).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::Response;
use http_body::Body;

use crate::body::{collect, Collected, PartialReason};
use crate::cache::Shared;
use crate::conditional::{not_modified, strong_etag, Validators};
use crate::lookup::store;
use crate::metrics::RouteCounters;
use crate::policy::{storable_headers, RoutePolicy};
use crate::respond::{bypass, not_modified_response, set_max_age, with_status};
use crate::{BypassReason, CacheKey, CachedResponse, ResponseBody};

/// Everything needed to answer a GET the handler just served.
pub(crate) struct Miss<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) policy: &'a RoutePolicy,
    pub(crate) counters: &'a RouteCounters,
    pub(crate) primary: &'a CacheKey,
    pub(crate) per_user: bool,
    pub(crate) req_headers: &'a HeaderMap,
    pub(crate) fwd: &'static str,
}

impl Miss<'_> {
    /// Stores the response if the policy admits it; returns what to send and whether it was
    /// storable (a store failure still counts as storable). Counts the request's one outcome:
    /// a miss, or a bypass when the policy refuses the response.
    pub(crate) async fn respond<B: Body>(
        &self,
        res: Response<B>,
    ) -> (Response<ResponseBody<B>>, bool) {
        let (mut parts, body) = res.into_parts();
        let refused = self
            .policy
            .admit_response(&parts, self.per_user)
            .and_then(|plan| {
                // Known to be too large before reading a byte: pass it through untouched.
                if body.size_hint().lower() > self.policy.max_body_size as u64 {
                    Err(BypassReason::TooLarge)
                } else {
                    Ok(plan)
                }
            });
        let plan = match refused {
            Ok(plan) => plan,
            Err(reason) => {
                let res = Response::from_parts(parts, ResponseBody::inner(body));
                return (self.bypass(res, reason), false);
            }
        };
        let chunks = match collect(body, self.policy.max_body_size).await {
            Collected::Complete(chunks) => chunks,
            Collected::Partial(body, why) => {
                let res = Response::from_parts(parts, body);
                let reason = match why {
                    PartialReason::TooLarge => BypassReason::TooLarge,
                    PartialReason::Trailers => BypassReason::Stream,
                    PartialReason::Error => {
                        self.counters.miss();
                        return (with_status(self.shared, res, &["fwd=", self.fwd]), false);
                    }
                };
                return (self.bypass(res, reason), false);
            }
        };

        let etag = (!parts.headers.contains_key(header::ETAG)).then(|| strong_etag(&chunks));
        let stored_body = StoredBody::new(&chunks, etag.as_ref().map(|t| &t[..]));
        let bytes = stored_body.body;
        if let Some(etag) = stored_body.etag {
            parts.headers.insert(header::ETAG, etag);
        }
        // The length is stored ready-made, so a hit clones it instead of formatting it.
        let headers = storable_headers(
            &parts.headers,
            [(header::CONTENT_LENGTH, stored_body.content_length)],
        );
        let stored_at_millis = self.shared.clock.now_millis();
        let entry = CachedResponse {
            status: parts.status,
            headers,
            body: bytes.clone(),
            stored_at_millis,
            ttl: plan.ttl,
        };
        let stored = store(
            self.shared,
            self.counters,
            self.primary,
            &plan.vary,
            self.req_headers,
            entry,
            self.policy.max_variants,
        )
        .await;

        if self.policy.downstream_max_age {
            set_max_age(&mut parts.headers, plan.ttl.as_secs());
        }
        self.counters.miss();
        let detail = stored.detail();
        let validators = Validators::of(|n| parts.headers.get(n), stored_at_millis);
        let res = if not_modified(self.req_headers, &validators) {
            not_modified_response(parts.headers.iter())
        } else {
            Response::from_parts(parts, ResponseBody::full(bytes))
        };
        (
            with_status(self.shared, res, &["fwd=", self.fwd, detail]),
            true,
        )
    }

    fn bypass<B>(&self, res: Response<B>, reason: BypassReason) -> Response<B> {
        self.counters.bypass(reason);
        bypass(self.shared, res, reason)
    }
}

/// A body laid out for storage: the bytes, then its `Content-Length` digits and any computed
/// `ETag`, in one exact-size allocation. The entry then holds exactly its bytes (not the
/// handler's spare capacity, nor a larger read buffer a frame was a slice of), and the two
/// header values cost no allocation of their own.
struct StoredBody {
    body: Bytes,
    content_length: HeaderValue,
    etag: Option<HeaderValue>,
}

impl StoredBody {
    fn new(chunks: &[Bytes], etag: Option<&[u8]>) -> Self {
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let digits = len.to_string();
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
