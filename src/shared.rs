//! What every layer of one cache shares: the store, the key namespace, the metrics and the
//! state learned at run time (delegated routes, `Vary` names, flights).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderName;

use crate::coalesce::Flights;
use crate::generations::Gens;
use crate::policy::BypassHook;
use crate::variants::Variants;
use crate::{Clock, Metrics, Store};

/// The next cache instance's `Shared::id`.
pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    /// Whether the store answers lookups without waiting (`Store::get_now`), so hits can be
    /// served while the request is being called.
    pub(crate) answers_now: bool,
    pub(crate) prefix: Arc<str>,
    /// `name; `: how this cache's `Cache-Status` member starts.
    pub(crate) status_prefix: String,
    /// This cache instance, unique in the process: the mark its layers put on the responses
    /// they handled (see `status::Handled`), so another cache with the same name, or a proxied
    /// response carrying our `Cache-Status`, is never taken for one of ours.
    pub(crate) id: u64,
    /// The configured namespace version in every key; `bump_version` moves the stored one.
    pub(crate) version: u64,
    /// The store's invalidation counters as this cache knows them.
    pub(crate) gens: Arc<Gens>,
    pub(crate) default_ttl: Duration,
    pub(crate) max_body_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    /// Routes whose own per-route layer answered; the app-wide layer leaves them alone.
    pub(crate) delegated: RwLock<HashSet<Arc<str>>>,
    /// Learned `Vary` names per primary key, so a varying resource costs one store round trip.
    pub(crate) vary: moka::sync::Cache<[u8; 32], Arc<[HeaderName]>>,
    /// How many variants of each varying URL were stored, for `CacheLayer::max_variants`.
    pub(crate) variants: Variants,
    /// Set before any `Vary` record is kept (learned from the store or stored): until then
    /// `vary` and `variants` are empty, and storing a plain entry has nothing there to clear.
    pub(crate) varied: AtomicBool,
    pub(crate) flights: Flights,
    /// How long a miss waits for a concurrent miss of the same key; zero disables coalescing.
    pub(crate) coalesce_wait: Duration,
    /// The layers' default for shadow mode ([`CacheLayer::shadow`](crate::CacheLayer::shadow)).
    pub(crate) shadow: bool,
    /// Hooks every layer of this cache starts with.
    pub(crate) bypass_hooks: Vec<BypassHook>,
    /// A request's time budget for reading the store; `None`: no cap.
    pub(crate) lookup_timeout: Option<Duration>,
    /// Permits for background writes: a write that finds none is skipped, never queued.
    pub(crate) writes: Arc<tokio::sync::Semaphore>,
    pub(crate) max_writes: u32,
    /// Permits for background refreshes of stale entries: none left, the refresh is skipped.
    pub(crate) refreshes: Arc<tokio::sync::Semaphore>,
    /// `get_or_insert_with` computations in progress.
    #[cfg(feature = "values")]
    pub(crate) value_flights: crate::value_flight::Flights,
}
