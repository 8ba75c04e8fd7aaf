//! Fleet-wide stampede control for a missing key (`CacheLayer::lease`): after in-process
//! coalescing made a request its process's leader, it takes the key's lease in the store
//! before calling the handler. Another process holding it computes the entry meanwhile: the
//! request polls the store for it, retrying the lease on each round (a holder that died lets
//! it expire), and past its wait bound goes to the handler. It never fails and never waits
//! longer than the bound.

use std::time::Duration;

use http::{HeaderMap, Response};
use http_body::Body;
use tokio::time::Instant;

use crate::hit::{fresh_hit, lookup};
use crate::lease::{take, LeaseGuard, Taken};
use crate::metrics::RouteCounters;
use crate::policy::{LeaseSettings, RoutePolicy};
use crate::shared::Shared;
use crate::{CacheKey, ResponseBody};

/// The longest pause between two looks at the store while another process computes.
const MAX_POLL: Duration = Duration::from_millis(50);

/// What a request that missed does once the lease was asked for.
pub(crate) enum Leased<B: Body> {
    /// It holds the lease: call the handler, store, then release.
    Lead(LeaseGuard),
    /// Another process stored the entry meanwhile: this is its hit.
    Hit(Response<ResponseBody<B>>),
    /// Go to the handler without the lease: the store failed, or the wait ran out.
    Through,
}

/// Takes the lease on `key` for `settings.time`, or waits for the process holding it to store
/// the entry (looked up under `primary`, as the request's own lookup was), at most
/// `settings.wait`.
pub(crate) async fn take_or_wait<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    settings: LeaseSettings,
    primary: &CacheKey,
    key: &CacheKey,
    headers: &HeaderMap,
) -> Leased<B> {
    let wait = settings.wait;
    let until = Instant::now().checked_add(wait);
    let every = (wait / 10).clamp(Duration::from_millis(1), MAX_POLL);
    loop {
        match take(&shared.store, counters, key, settings.time).await {
            Taken::Granted(guard) => return Leased::Lead(guard),
            Taken::Failed => return Leased::Through,
            Taken::Held => {}
        }
        let now = Instant::now();
        let next = now.checked_add(every);
        let last = match (until, next) {
            (Some(until), Some(next)) => next >= until,
            _ => false,
        };
        let wake = if last { until } else { next };
        if let Some(wake) = wake {
            tokio::time::sleep_until(wake).await;
        }
        let deadline = shared
            .lookup_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let found = lookup(shared, counters, primary, headers, deadline)
            .await
            .found;
        if let Some(res) = fresh_hit(shared, policy, counters, found, false, headers) {
            counters.coalesced();
            return Leased::Hit(res);
        }
        if last {
            return Leased::Through;
        }
    }
}

/// For a background refresh of `key` (stale-while-revalidate): takes the layer's lease now,
/// without waiting. `None` when the layer has no lease (refresh as usual); otherwise
/// [`Taken::Granted`] (refresh, and let the guard go when the entry is written),
/// [`Taken::Held`] (another process refreshes: skip) or [`Taken::Failed`] (the store failed,
/// counted: fail open and refresh).
pub(crate) async fn try_now(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    key: &CacheKey,
) -> Option<Taken> {
    let settings = policy.lease.on()?;
    Some(take(&shared.store, counters, key, settings.time).await)
}
