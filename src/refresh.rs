//! Background refreshes of stale entries: at most one per key (it leads the key's flight, so
//! no miss runs beside it) and at most `max_refreshes` per cache, each detached from the
//! request that started it, so it completes and stores even when that client goes away.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use http_body::Body;
use tokio::sync::OwnedSemaphorePermit;

use crate::coalesce::Lead;
use crate::metrics::RouteCounters;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::store::Validity;
use crate::{CacheKey, Entry};

/// Leave to run one refresh: the key's flight, a permit, and the runtime to run it on.
pub(crate) struct Ticket {
    lead: Lead,
    permit: OwnedSemaphorePermit,
    rt: tokio::runtime::Handle,
}

/// Whether a refresh of `key` starts now: not when a miss or refresh of it is in flight, nor
/// when it is remembered uncacheable (no lead), nor when `max_refreshes` are running (counted).
/// The one place a refresh is decided.
pub(crate) fn start(
    shared: &Shared,
    policy: &Arc<RoutePolicy>,
    counters: &RouteCounters,
    key: &CacheKey,
) -> Option<Ticket> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let layer = Arc::as_ptr(policy) as usize;
    let lead = shared.flights.try_lead(layer, key)?;
    if let Ok(permit) = shared.refreshes.clone().try_acquire_owned() {
        Some(Ticket { lead, permit, rt })
    } else {
        counters.refresh_skipped();
        lead.finish();
        None
    }
}

/// Runs the refresh `work` makes with the ticket's lead, on its own task.
pub(crate) fn run<F>(ticket: Ticket, work: impl FnOnce(Lead) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let Ticket { lead, permit, rt } = ticket;
    let work = work(lead);
    rt.spawn(async move {
        work.await;
        drop(permit);
    });
}

/// Whether the entry under `key` is now fresh and valid: a refresh of it landed between the
/// read that found it stale and this refresh taking the key's flight (on a remote store a
/// write can land while a read of the old entry is on its way back). Read without counting:
/// the request was counted when it was answered stale.
pub(crate) async fn landed(shared: &Shared, key: &CacheKey) -> bool {
    let Ok(Some(Entry::Response(r))) = shared.store.get(key).await else {
        return false;
    };
    r.is_fresh(shared.clock.now_millis())
        && matches!(shared.gens.check(&r.stamp).await, Ok(Validity::Valid))
}

/// Reads `body` to its end, so a streamed copy completes and is stored; nobody reads it else.
pub(crate) async fn drain<B: Body>(body: B) {
    let mut body = pin!(body);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if frame.is_err() {
            break;
        }
    }
}
