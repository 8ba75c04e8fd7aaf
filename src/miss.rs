//! The miss path: decide from the handler's response whether to store it, keep a copy of its
//! body up to the limit, store it once it is known whole, and answer (a 304 when the client's
//! validators already match a body read whole).
//!
//! A body of known length is read before answering, so its response carries the computed
//! `ETag` and can be a 304. A body of unknown length (a stream) goes out frame by frame while a
//! copy is kept: it has no computed `ETag` (that needs the whole body), its entry does. The
//! copy is laid out in [`copy`](crate::copy) and written by [`write`](crate::write); a HEAD
//! keeps nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::Response;
use http_body::Body;

use crate::body::{collect, Collected, PartialReason};
use crate::coalesce::Lead;
use crate::conditional::{not_modified, strong_etag, Validators};
use crate::copy::{length_matches, StoredBody, StreamCopy};
use crate::entry::Stamp;
use crate::generations::Pending;
use crate::metrics::RouteCounters;
use crate::policy::{storable_headers, RoutePolicy, StorePlan};
use crate::shared::Shared;
use crate::status::{bypass, not_modified_response, set_max_age, with_status};
use crate::write::Write;
use crate::{BypassReason, CacheKey, CachedResponse, ResponseBody};

/// Everything needed to answer a GET the handler just served, and to store it later.
pub(crate) struct Miss<'a> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) policy: &'a RoutePolicy,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) primary: CacheKey,
    pub(crate) per_user: bool,
    pub(crate) req_headers: HeaderMap,
    pub(crate) fwd: &'static str,
    /// This request's flight, when it leads one: it travels with the write.
    pub(crate) lead: Option<Lead>,
    /// The lookup failed: the store is in trouble, so no write is piled onto it.
    pub(crate) store_failed: bool,
    /// What the entry can be invalidated by, begun before the handler was called (`None`
    /// only for a HEAD, which stores nothing).
    pub(crate) stamp: Option<Pending>,
    /// The names of the tags the handler added (their generations are read at write time).
    pub(crate) late: Vec<Arc<str>>,
    /// How long the handler took, in milliseconds (saturating).
    pub(crate) compute_millis: u32,
    /// A background refresh of a stale entry: its request was counted when it was served stale,
    /// so this fill counts no outcome of its own (its store is still counted).
    pub(crate) refresh: bool,
}

impl Miss<'_> {
    /// The response to send, storing it (now or once its body has ended) if the policy admits
    /// it. Counts the request's one outcome: a miss, or a bypass when the policy refuses the
    /// response.
    pub(crate) async fn respond<B: Body>(self, res: Response<B>) -> Response<ResponseBody<B>> {
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
                return self.bypass(res, reason);
            }
        };
        if self.store_failed {
            // Nothing is stored; the response is not held back either.
            self.count_miss();
            let res = Response::from_parts(parts, ResponseBody::inner(body));
            return with_status(&self.shared, res, &["fwd=", self.fwd, STORE_ERROR]);
        }
        if body.size_hint().exact().is_none() {
            // A miss even if the stream later outgrows the limit: its headers are already out.
            self.count_miss();
            return self.stream(parts, body, plan);
        }
        let chunks = match collect(body, self.policy.max_body_size).await {
            Collected::Complete(chunks) => chunks,
            Collected::Partial(body, why) => {
                let res = Response::from_parts(parts, body);
                let reason = match why {
                    PartialReason::TooLarge => BypassReason::TooLarge,
                    PartialReason::Trailers => BypassReason::Stream,
                    PartialReason::Error => {
                        self.count_miss();
                        // Not the URL's fault: a later request may lead again.
                        drop(self.lead);
                        return with_status(&self.shared, res, &["fwd=", self.fwd]);
                    }
                };
                return self.bypass(res, reason);
            }
        };
        self.count_miss();
        let len: usize = chunks.iter().map(Bytes::len).sum();
        if !length_matches(&parts.headers, len) {
            // Passed on as the handler made it: the length it declared is its own business,
            // but an entry must never present a truncated or padded body as complete.
            if let Some(lead) = self.lead {
                lead.uncacheable();
            }
            let res = Response::from_parts(parts, ResponseBody::chunks(chunks));
            return with_status(&self.shared, res, &["fwd=", self.fwd, LENGTH_MISMATCH]);
        }

        // Shadow mode answers with the handler's response as it came.
        let original = self.policy.shadow.then(|| parts.headers.clone());
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
            stamp: Stamp::default(),
            grace: plan.grace,
            compute_millis: self.compute_millis,
        };
        let (shared, fwd) = (self.shared.clone(), self.fwd);
        if self.policy.downstream_max_age {
            set_max_age(&mut parts.headers, plan.ttl.as_secs());
        }
        let validators = Validators::of(|n| parts.headers.get(n), stored_at_millis);
        let unchanged = not_modified(&self.req_headers, &validators);
        // `stored` once the entry is stored or on its way to the store (RFC 9211 has no word
        // for a write still in flight; one that then fails is counted and logged).
        let detail = self.write(plan).submit(entry).detail();
        let res = if let Some(headers) = original {
            parts.headers = headers;
            Response::from_parts(parts, ResponseBody::full(bytes))
        } else if unchanged {
            not_modified_response(parts.headers.iter())
        } else {
            Response::from_parts(parts, ResponseBody::full(bytes))
        };
        with_status(&shared, res, &["fwd=", fwd, detail])
    }

    /// A HEAD the handler answered: it has no body to keep (only a GET fills the entry a HEAD
    /// reads), and counts as the GET would: a bypass when the policy refuses it, else a miss.
    pub(crate) fn head<B: Body>(self, res: Response<B>) -> Response<ResponseBody<B>> {
        let (parts, body) = res.into_parts();
        let refused = self.policy.admit_response(&parts, self.per_user).err();
        let res = Response::from_parts(parts, ResponseBody::inner(body));
        match refused {
            Some(reason) => self.bypass(res, reason),
            None => {
                self.count_miss();
                with_status(&self.shared, res, &["fwd=", self.fwd])
            }
        }
    }

    /// A body of unknown length: sent as it comes, stored if it ends whole within the limit.
    fn stream<B: Body>(
        self,
        mut parts: http::response::Parts,
        body: B,
        plan: StorePlan,
    ) -> Response<ResponseBody<B>> {
        let (shared, fwd, policy) = (self.shared.clone(), self.fwd, self.policy);
        // Taken before `max-age` is rewritten for downstream: the entry keeps the handler's.
        let headers = parts.headers.clone();
        if policy.downstream_max_age && !policy.shadow {
            set_max_age(&mut parts.headers, plan.ttl.as_secs());
        }
        let copy = StreamCopy::new(
            parts.status,
            headers,
            (plan.ttl, plan.grace, self.compute_millis),
            shared.clock.now_millis(),
            policy.max_body_size,
            self.write(plan),
        );
        let res = Response::from_parts(parts, ResponseBody::tee(body, copy));
        with_status(&shared, res, &["fwd=", fwd, STREAMING])
    }

    fn write(self, plan: StorePlan) -> Write {
        Write {
            shared: self.shared,
            counters: self.counters,
            primary: self.primary,
            vary: plan.vary,
            req_headers: self.req_headers,
            max_variants: self.policy.max_variants,
            lead: self.lead,
            stamp: self.stamp,
            late: self.late,
        }
    }

    fn count_miss(&self) {
        if !self.refresh {
            self.counters.miss();
        }
    }

    /// A response the policy refused: counted as a bypass, never as a miss.
    fn bypass<B>(self, res: Response<B>, reason: BypassReason) -> Response<B> {
        if !self.refresh {
            self.counters.bypass(reason);
        }
        if let Some(lead) = self.lead {
            lead.uncacheable();
        }
        bypass(&self.shared, res, reason)
    }
}

/// `Cache-Status` details of a miss that was not stored, or not yet.
const STORE_ERROR: &str = "; detail=store-error";
const LENGTH_MISMATCH: &str = "; detail=length-mismatch";
/// Sent before its end is known: stored afterwards only if it ended whole within the limit.
const STREAMING: &str = "; detail=streaming";
