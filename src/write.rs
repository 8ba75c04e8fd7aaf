//! Writing a miss's entry without delaying its response: at once for a store that answers
//! without waiting (memory), otherwise in the background, with a bound on writes in flight.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::header::{HeaderMap, HeaderName};

use crate::coalesce::Lead;
use crate::generations::Pending;
use crate::log::log_store_error;
use crate::log::RateLimit;
use crate::metrics::RouteCounters;
use crate::shared::Shared;
use crate::{CacheKey, CachedResponse, Entry};

/// Where and how one entry is to be written, and the flight it ends.
pub(crate) struct Write {
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) primary: CacheKey,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) req_headers: HeaderMap,
    /// The most `Vary` variants its URL may have (see [`target`]).
    pub(crate) max_variants: usize,
    /// Held until the entry is written, so requests waiting on the flight then find it.
    pub(crate) lead: Option<Lead>,
    /// The entry's invalidation stamp, begun before the handler was called.
    pub(crate) stamp: Option<Pending>,
    /// The handler's tags, added to the stamp at write time.
    pub(crate) late: Vec<Arc<str>>,
}

impl Write {
    /// Writes `entry`: [`Stored::Yes`] when it was stored, or sent to be stored in the
    /// background; otherwise why not (the store failed at once, too many writes were already in
    /// flight, or its URL has too many variants).
    pub(crate) fn submit(mut self, entry: CachedResponse) -> Stored {
        let target = match target(
            &self.shared,
            &self.primary,
            &self.vary,
            &self.req_headers,
            &entry,
            self.max_variants,
        ) {
            Ok(target) => target,
            Err(refused) => {
                // Waiters look up, miss, and lead in turn: this URL is not uncacheable.
                if let Some(lead) = self.lead.take() {
                    lead.finish();
                }
                return refused;
            }
        };
        if self.shared.answers_now {
            // Such a store's put is done when first polled: no task, no wait, and a test (or a
            // follower) sees the entry as soon as the response is out.
            let mut write = Box::pin(self.run(target, entry));
            return match write.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(stored) => stored,
                Poll::Pending => match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(write);
                        Stored::Yes
                    }
                    Err(_) => Stored::Failed,
                },
            };
        }
        let permit = self.shared.writes.clone().try_acquire_owned();
        match (tokio::runtime::Handle::try_current(), permit) {
            (Ok(rt), Ok(permit)) => {
                rt.spawn(async move {
                    self.run(target, entry).await;
                    drop(permit);
                });
                Stored::Yes
            }
            _ => {
                self.skip();
                Stored::Failed
            }
        }
    }

    /// The response turned out not to be storable: the key's next requests go straight through.
    pub(crate) fn unstorable(mut self) {
        if let Some(lead) = self.lead.take() {
            lead.uncacheable();
        }
    }

    async fn run(mut self, target: Target, mut entry: CachedResponse) -> Stored {
        let late = std::mem::take(&mut self.late);
        let sealed = match self.stamp.take() {
            Some(pending) => self.shared.gens.seal(pending, late).await,
            None => Ok(None),
        };
        let stored = match sealed {
            Ok(Some(stamp)) => {
                entry.stamp = stamp;
                store(&self.shared, &self.counters, &self.primary, target, entry).await
            }
            Ok(None) => Stored::Stale,
            Err(e) => {
                self.counters.store_error();
                log_store_error(&e);
                Stored::Failed
            }
        };
        if let Some(mut lead) = self.lead.take() {
            // Ended before the flight: the write is in, other processes find it (a `flush`
            // waits for this too).
            if let Some(lease) = lead.take_lease() {
                lease.release().await;
            }
            lead.finish();
        }
        stored
    }

    /// Too many writes in flight (the store is slow or stalled): this one is dropped rather
    /// than queued, so a stalled store cannot grow memory without bound.
    fn skip(mut self) {
        static LIMIT: RateLimit = RateLimit::new();
        self.counters.store_error();
        LIMIT.log(|suppressed| {
            tracing::warn!(
                in_flight = self.shared.max_writes,
                suppressed,
                "cache store busy: response served but not stored"
            );
        });
        if let Some(lead) = self.lead.take() {
            lead.finish();
        }
    }
}

/// What became of a response the policy admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    Yes,
    /// The store failed (counted and logged).
    Failed,
    /// Its URL already has as many variants as the route keeps.
    TooManyVariants,
    /// Something was invalidated while its handler ran, and some of its names' generations
    /// were only read afterwards: it might predate an invalidation of one of them.
    Stale,
}

impl Stored {
    /// How the response's `Cache-Status` ends.
    pub(crate) fn detail(self) -> &'static str {
        match self {
            Self::Yes => "; stored",
            Self::Failed => "; detail=store-error",
            Self::TooManyVariants => "; detail=too-many-variants",
            Self::Stale => "",
        }
    }
}

/// Where an admitted entry goes: under its primary key, or under the variant its `Vary` selects
/// with a `Vary` record under the primary key.
pub(crate) enum Target {
    Primary,
    Variant(Arc<[HeaderName]>, CacheKey),
}

/// Where `entry` would be stored, keeping at most `max_variants` variants per URL in this
/// process. Decided before any write (and so before a background write is sent), so a refusal
/// can still be told to the client.
pub(crate) fn target(
    shared: &Shared,
    primary: &CacheKey,
    vary: &[HeaderName],
    req_headers: &HeaderMap,
    entry: &CachedResponse,
    max_variants: usize,
) -> Result<Target, Stored> {
    if vary.is_empty() {
        return Ok(Target::Primary);
    }
    let names: Arc<[HeaderName]> = vary.into();
    let variant = primary.with_variant(&names, req_headers);
    let now = entry.stored_at_millis;
    // Remembered as long as the entry is kept: stale windows included.
    let ttl_ms = u64::try_from(entry.keep_for().as_millis()).unwrap_or(u64::MAX);
    let id = variant.variant().unwrap_or(primary.primary());
    shared.varied.store(true, Ordering::Release);
    if shared.variants.admit(
        primary.primary(),
        id,
        now,
        now.saturating_add(ttl_ms),
        max_variants,
    ) {
        Ok(Target::Variant(names, variant))
    } else {
        Err(Stored::TooManyVariants)
    }
}

/// Stores `entry` under `primary`, or under its variant when the response varies.
pub(crate) async fn store(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    target: Target,
    entry: CachedResponse,
) -> Stored {
    // The store keeps it past freshness for as long as it may be served stale.
    let (ttl, bytes) = (entry.keep_for(), entry.body.len());
    let result = match target {
        Target::Primary => {
            // The URL may have varied before: its records would send lookups to variants.
            if shared.varied.load(Ordering::Acquire) {
                shared.vary.invalidate(primary.primary());
                shared.variants.forget(primary.primary());
            }
            shared.store.put(primary, Entry::from(entry), ttl).await
        }
        Target::Variant(names, variant) => {
            counters.set_varies();
            shared.vary.insert(*primary.primary(), names.clone());
            match shared.store.put(&variant, Entry::from(entry), ttl).await {
                Ok(()) => shared.store.put(primary, Entry::Vary(names), ttl).await,
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => {
            counters.stored(bytes);
            Stored::Yes
        }
        Err(e) => {
            counters.store_error_of(&e);
            log_store_error(&e);
            Stored::Failed
        }
    }
}
