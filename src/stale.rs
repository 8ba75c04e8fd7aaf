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
use crate::headers::{format_u64, itoa_buf};
use crate::hit::{answer, hit};
use crate::metrics::RouteCounters;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::status::status_value;
use crate::{CachedResponse, ResponseBody};

/// What a lookup's entry does for the request.
pub(crate) enum Found<B: Body> {
    /// Fresh: answer it (counted as a hit).
    Fresh(Response<ResponseBody<B>>),
    /// Fresh, and near enough its expiry that it is refreshed early (XFetch): answer it
    /// (counted as a hit) and refresh the key in the background, as for `Revalidate`.
    Early(Response<ResponseBody<B>>),
    /// Stale inside its stale-while-revalidate window: answer it (counted as stale) and
    /// refresh the key in the background.
    Revalidate(Response<ResponseBody<B>>),
    /// Nothing to answer now: call the handler; `Some` is a stale entry inside its
    /// stale-if-error window, to answer in place of the handler's failure.
    Miss(Option<Arc<CachedResponse>>),
}

/// Decides, once, what the entry a lookup `found` is good for. A `soft`-invalidated entry
/// (`invalidate_tag_soft`…) is never fresh: inside its freshness or stale-while-revalidate
/// window it is answered stale (`detail=invalidated`) while one refresh replaces it, past them
/// it is what any expired entry is, whatever the store still holds. A shadowed layer never
/// answers stale (it always answers from the handler).
pub(crate) fn found<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    found: Option<Arc<CachedResponse>>,
    soft: bool,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Found<B> {
    let Some(entry) = found else {
        return Found::Miss(None);
    };
    let now = shared.clock.now_millis();
    match entry.freshness(now) {
        Freshness::Fresh if !soft => {
            counters.hit();
            let res = hit(shared, policy, &entry, now, is_head, req_headers);
            match policy.early_refresh {
                // A HEAD stores nothing and a shadowed layer refreshes nothing.
                Some(beta) if !is_head && !policy.shadow && refreshes_early(&entry, now, beta) => {
                    Found::Early(res)
                }
                _ => Found::Fresh(res),
            }
        }
        _ if policy.shadow => Found::Miss(None),
        // A soft-invalidated entry is stale from the moment it was invalidated.
        Freshness::Fresh
        | Freshness::Stale {
            revalidate: true, ..
        } => {
            counters.stale();
            let detail = if soft { INVALIDATED } else { "" };
            let res = stale(shared, policy, &entry, now, is_head, req_headers, detail);
            Found::Revalidate(res)
        }
        Freshness::Stale { if_error: true, .. } => Found::Miss(Some(entry)),
        Freshness::Stale { .. } | Freshness::Expired => Found::Miss(None),
    }
}

/// Whether a fresh `entry` is refreshed early at `now` (XFetch), with a fresh draw of `U`
/// (not drawn for an entry computed in no time, which the test never passes).
fn refreshes_early(entry: &CachedResponse, now: u64, beta: f64) -> bool {
    entry.compute_millis > 0 && early_at(entry, now, beta, uniform())
}

/// XFetch's test (Vattani et al.): `compute * beta * -ln(u) >= r`, `r` the milliseconds of
/// freshness left and `u` in (0, 1]. A fresh entry has at least 1 ms left, so one computed in
/// under a millisecond never passes.
fn early_at(entry: &CachedResponse, now: u64, beta: f64, u: f64) -> bool {
    let left = entry
        .ttl
        .as_millis()
        .saturating_sub(u128::from(entry.age_millis(now)));
    // Precision is no concern: milliseconds of a TTL fit an f64's 53 bits.
    #[allow(clippy::cast_precision_loss)]
    let left = left as f64;
    f64::from(entry.compute_millis) * beta * -u.ln() >= left
}

/// A draw uniform in (0, 1]: a thread-local xorshift64*, seeded per thread from the standard
/// library's random hasher keys. Not for secrets: it only spreads refreshes over time.
fn uniform() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    let x = STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // The top 53 bits, plus one, over 2^53: in (0, 1].
    #[allow(clippy::cast_precision_loss)]
    let u = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64;
    u
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
/// Answered stale because it was soft-invalidated (`invalidate_tag_soft`…).
const INVALIDATED: &str = "; detail=invalidated";

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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    /// Stored at 0, fresh for 60 s, made by a handler that took `compute` ms.
    fn entry(compute: u32) -> CachedResponse {
        let mut e = CachedResponse::new(
            StatusCode::OK,
            &HeaderMap::new(),
            Bytes::new(),
            0,
            Duration::from_secs(60),
        );
        e.compute_millis = compute;
        e
    }

    #[test]
    fn early_when_the_draw_reaches_the_freshness_left() {
        let e = entry(100);
        // 1,000 ms left: -ln(u) must reach 10 with beta 1, i.e. u <= e^-10.
        let now = 59_000;
        assert!(early_at(&e, now, 1.0, 1e-5));
        assert!(!early_at(&e, now, 1.0, 1e-4));
        // beta scales the compute time: with 10, -ln(u) must reach 1.
        assert!(early_at(&e, now, 10.0, 0.36));
        assert!(!early_at(&e, now, 10.0, 0.37));
    }

    #[test]
    fn u_of_one_never_refreshes_a_fresh_entry() {
        assert!(!early_at(&entry(1_000_000), 59_999, 1e9, 1.0));
    }

    #[test]
    fn beta_zero_and_no_compute_time_never_refresh() {
        assert!(!early_at(&entry(100), 59_999, 0.0, 1e-300));
        assert!(!early_at(&entry(0), 59_999, 1e9, 1e-300));
        assert!(!refreshes_early(&entry(0), 59_999, 1e9));
    }

    #[test]
    fn nearer_expiry_is_likelier() {
        let e = entry(100);
        let u = 0.01; // -ln(u) ~ 4.6: refreshes with under 460 ms left.
        assert!(!early_at(&e, 59_000, 1.0, u));
        assert!(early_at(&e, 59_600, 1.0, u));
    }

    #[test]
    fn draws_are_in_the_half_open_unit_interval_and_spread() {
        let draws: Vec<f64> = (0..10_000).map(|_| uniform()).collect();
        assert!(draws.iter().all(|u| *u > 0.0 && *u <= 1.0));
        let below_half = draws.iter().filter(|u| **u < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }
}
