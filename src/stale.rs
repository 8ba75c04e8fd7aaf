//! Serving past freshness (RFC 5861): what a found entry is good for — a fresh hit, a stale
//! answer while one refresh runs (`stale-while-revalidate`), or a stand-in for the handler's
//! failure (`stale-if-error`) — and the stale response itself.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::entry::Freshness;
use crate::hit::{answer, format_u64, hit, itoa_buf};
use crate::metrics::RouteCounters;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::status::status_value;
use crate::{CachedResponse, ResponseBody};

/// What a lookup's entry does for the request.
pub(crate) enum Found<B: Body> {
    /// Fresh: answer it (counted as a hit).
    Fresh(Response<ResponseBody<B>>),
    /// Stale inside its stale-while-revalidate window: answer it (counted as stale) and
    /// refresh the key in the background.
    Revalidate(Response<ResponseBody<B>>),
    /// Nothing to answer now: call the handler; `Some` is a stale entry inside its
    /// stale-if-error window, to answer in place of the handler's failure.
    Miss(Option<Arc<CachedResponse>>),
}

/// Decides, once, what the entry a lookup `found` is good for. A shadowed layer never answers
/// stale (it always answers from the handler).
pub(crate) fn found<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    found: Option<Arc<CachedResponse>>,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Found<B> {
    let Some(entry) = found else {
        return Found::Miss(None);
    };
    let now = shared.clock.now_millis();
    match entry.freshness(now) {
        Freshness::Fresh => {
            counters.hit();
            Found::Fresh(hit(shared, policy, &entry, now, is_head, req_headers))
        }
        _ if policy.shadow => Found::Miss(None),
        Freshness::Stale {
            revalidate: true, ..
        } => {
            counters.stale();
            let res = stale(shared, policy, &entry, now, is_head, req_headers, "");
            Found::Revalidate(res)
        }
        Freshness::Stale { if_error: true, .. } => Found::Miss(Some(entry)),
        Freshness::Stale { .. } | Freshness::Expired => Found::Miss(None),
    }
}

/// `entry` answered in place of a handler that failed, if it is still inside its
/// stale-if-error window (counted as stale); `None` once the window is over.
pub(crate) fn instead_of_error<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    entry: &Arc<CachedResponse>,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Option<Response<ResponseBody<B>>> {
    let now = shared.clock.now_millis();
    if !matches!(
        entry.freshness(now),
        Freshness::Stale { if_error: true, .. }
    ) {
        return None;
    }
    counters.stale();
    Some(stale(
        shared,
        policy,
        entry,
        now,
        is_head,
        req_headers,
        ORIGIN_ERROR,
    ))
}

const ORIGIN_ERROR: &str = "; detail=origin-error";

/// What a soft-invalidated `entry` (`invalidate_tag_soft`…) is good for: inside its freshness
/// or its stale-while-revalidate window, an answer now (counted as stale) while one refresh
/// replaces it, `Cache-Status: …; ttl=0; fwd=stale; detail=invalidated` (or `ttl=-N` past
/// freshness); past that, what an expired entry is good for (a stale-if-error stand-in, or
/// nothing), whatever the store still holds.
pub(crate) fn soft_stale<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    entry: &Arc<CachedResponse>,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Found<B> {
    let now = shared.clock.now_millis();
    match entry.freshness(now) {
        Freshness::Fresh
        | Freshness::Stale {
            revalidate: true, ..
        } => {
            counters.stale();
            let detail = "; detail=invalidated";
            Found::Revalidate(stale(
                shared,
                policy,
                entry,
                now,
                is_head,
                req_headers,
                detail,
            ))
        }
        Freshness::Stale { if_error: true, .. } => Found::Miss(Some(entry.clone())),
        Freshness::Stale { .. } | Freshness::Expired => Found::Miss(None),
    }
}

/// A stale entry's response: its real `Age`, and `Cache-Status: …; ttl=-N; fwd=stale` with N
/// the seconds past freshness (rounded up), then `detail`.
fn stale<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    entry: &Arc<CachedResponse>,
    now: u64,
    is_head: bool,
    req_headers: &HeaderMap,
    detail: &str,
) -> Response<ResponseBody<B>> {
    let age_ms = entry.age_millis(now);
    let ttl_ms = u64::try_from(entry.ttl.as_millis()).unwrap_or(u64::MAX);
    let past = age_ms.saturating_sub(ttl_ms).div_ceil(1000);
    let mut buf = itoa_buf();
    let (sign, digits) = if past == 0 {
        ("ttl=", "0")
    } else {
        ("ttl=-", format_u64(&mut buf, past))
    };
    let status = status_value(shared, &[sign, digits, "; fwd=stale", detail]);
    let age = HeaderValue::from(age_ms / 1000);
    answer(policy, entry, is_head, req_headers, (age, status), 0)
}

/// How a handler's call ended when a stale entry could stand in for its failure.
pub(crate) enum Guarded<R, E> {
    /// A response that is not a `5xx`.
    Ok(R),
    /// A `5xx` response.
    ServerError(R),
    Err(E),
    /// The call panicked; the payload, to resume the unwind with when nothing stands in.
    Panicked(Box<dyn Any + Send>),
    /// It took longer than the layer's `origin_timeout` (and was dropped).
    TimedOut,
}

/// Runs the handler's `call` catching a panic and, with `timeout`, bounding its time. Only
/// used when a stale entry can stand in: with none, the call runs bare and a panic unwinds.
pub(crate) async fn guarded<F, B, E>(call: F, timeout: Option<Duration>) -> Guarded<Response<B>, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    let call = CatchUnwind { fut: call };
    let ended = match timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(ended) => ended,
            Err(_) => return Guarded::TimedOut,
        },
        None => call.await,
    };
    match ended {
        Ok(Ok(res)) if res.status().is_server_error() => Guarded::ServerError(res),
        Ok(Ok(res)) => Guarded::Ok(res),
        Ok(Err(e)) => Guarded::Err(e),
        Err(panic) => Guarded::Panicked(panic),
    }
}

pin_project! {
    /// `fut`, with a panic while polling it caught and returned.
    struct CatchUnwind<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.project().fut;
        // Unwind safety: after a panic the future is never polled again, only dropped.
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
