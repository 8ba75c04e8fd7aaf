//! What the cache did, per route: counted once per event in [`RouteCounters`], which feeds
//! both the snapshot ([`Metrics::snapshot`], [`RouteStats`]) and the `metrics` facade.
//!
//! The names and labels recorded through the facade are listed, in one table, on [`Metrics`].
//!
//! # Does caching pay?
//!
//! [`ResponseCache::stats`](crate::ResponseCache::stats) adds to each route's counters the
//! mean handler time, the mean time to answer a hit, the time the hits saved and a
//! [`Verdict`]. A route that is judged not to pay is also logged once, as a warning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::{BypassReason, StoreError};

mod prometheus;
mod recorded;
mod stats;
mod timing;

use recorded::Recorded;
pub(crate) use stats::Judge;
pub use stats::{RouteStats, Verdict};
use timing::Timing;
pub(crate) use timing::{HandlerTimer, Timer};

/// The cache's counters, one set per route. Shared by every layer of one
/// [`ResponseCache`](crate::ResponseCache); read it with
/// [`ResponseCache::metrics`](crate::ResponseCache::metrics) or
/// [`ResponseCache::stats`](crate::ResponseCache::stats) ([`RouteStats`]). Each event is
/// counted once, by one call that feeds both this snapshot and the `metrics` facade.
///
/// # Recorded through the `metrics` facade
///
/// With the `metrics` feature (default) every event is also recorded through the [`metrics`](https://docs.rs/metrics)
/// crate, to whatever recorder the application installed (`metrics-exporter-prometheus`, …).
/// Names start with a namespace, `http` unless set with
/// [`ResponseCacheBuilder::metrics_namespace`](crate::ResponseCacheBuilder::metrics_namespace),
/// and are the names [`render_prometheus`](Self::render_prometheus) writes. `route` is the route template
/// (axum's `MatchedPath`, e.g. `/users/{id}`), never the request's URL, so the label set stays
/// bounded; requests outside an axum router count under `*`.
///
/// | name | kind | labels | what it counts |
/// |---|---|---|---|
/// | `{ns}_cache_hits_total` | counter | `route` | requests answered from a fresh stored response (`200`, `304`, HEAD) |
/// | `{ns}_cache_misses_total` | counter | `route` | cacheable requests the handler answered (see [`RouteStats::misses`]) |
/// | `{ns}_cache_bypasses_total` | counter | `route`, `reason` | requests not looked up, or responses not storable, by [`BypassReason`] |
/// | `{ns}_cache_stores_total` | counter | `route` | responses stored |
/// | `{ns}_cache_stored_bytes_total` | counter | `route` | body bytes of the responses stored |
/// | `{ns}_cache_store_errors_total` | counter | `route` | store failures treated as misses, timeouts included |
/// | `{ns}_cache_store_timeouts_total` | counter | `route` | of those, the ones that ran out of time |
/// | `{ns}_cache_coalesced_total` | counter | `route` | requests that waited for a concurrent miss of the same key until it was done |
/// | `{ns}_cache_invalidated_total` | counter | `route` | stored responses found invalidated (a tag, path, user or version bumped since their miss began) and not served |
/// | `{ns}_cache_soft_invalidated_total` | counter | `route` | of those, the ones only soft-invalidated (`invalidate_tag_soft`…): stale, kept in the store |
/// | `{ns}_cache_stale_total` | counter | `route` | requests answered from a stored response past its freshness: inside its stale-while-revalidate window, or in place of a handler's error (see [`RouteStats::stale`]) |
/// | `{ns}_cache_refreshes_skipped_total` | counter | `route` | background refreshes of a stale response not started, [`max_refreshes`](crate::ResponseCacheBuilder::max_refreshes) being in flight |
/// | `{ns}_cache_early_refreshes_total` | counter | `route` | background refreshes of a still-fresh response started early, by [`early_refresh`](crate::CacheLayer::early_refresh) (XFetch) |
/// | `{ns}_cache_lookup_seconds` | histogram | `route` | store lookup, hit or not, on sampled requests (below) |
/// | `{ns}_cache_handler_seconds` | histogram | `route` | the handler, when the cache called it after a lookup |
/// | `{ns}_cache_evictions_total` | counter | `cause` | entries the [`MemoryStore`](crate::MemoryStore) dropped: `size`, `expired`, `replaced`, `explicit` |
/// | `{ns}_cache_breaker_state` | gauge | — | the [`RedisStore`](crate::RedisStore)'s circuit breaker: `0` closed, `1` half-open (one probe in flight), `2` open |
///
/// Every request counts exactly once, as a hit, a stale answer, a miss or a bypass. Lookups are timed on a
/// sample — the route's first hit, then about one request in 16 — so a hit reads no clock at
/// all most of the time. Handlers are timed on every call.
///
/// A route's handles are registered once, when the route is first seen (a bypass reason's when
/// it first occurs), and a request only increments them: no name or label is built per
/// request, and with no recorder installed an increment is a branch. Handles bind to the
/// recorder installed *when they are registered*: install the recorder before serving. (The
/// [`MemoryStore`](crate::MemoryStore)'s eviction counter is registered at its first eviction,
/// under the name [`MemoryStore::metrics_namespace`](crate::MemoryStore::metrics_namespace)
/// gave it; the store a cache makes for itself takes the cache's namespace. The Redis store's
/// breaker gauge is registered, at `0`, when the store connects, under the name
/// [`RedisStoreBuilder::metrics_namespace`](crate::RedisStoreBuilder::metrics_namespace) gave it,
/// and set at every transition.)
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_response_cache::ResponseCache;
///
/// // metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?; first, then:
/// let cache = ResponseCache::builder().metrics_namespace("twiscope").build();
/// let app: Router = Router::new()
///     .route("/trending", get(|| async { "[]" }).layer(cache.route()));
/// // `twiscope_cache_hits_total{route="/trending"}` and the rest, once /trending is requested.
/// ```
///
#[derive(Debug)]
pub struct Metrics {
    // A std lock: held only to find or insert a route's counters, never across an await.
    routes: RwLock<HashMap<Arc<str>, Arc<RouteCounters>>>,
    namespace: Arc<str>,
    judge: Judge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("http", Judge::default())
    }
}

/// Every event on one route, counted once: for the snapshot (the atomics) and for the
/// recorder (the handles), from the same call.
#[derive(Debug)]
pub(crate) struct RouteCounters {
    route: Arc<str>,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    stored_bytes: AtomicU64,
    store_errors: AtomicU64,
    store_timeouts: AtomicU64,
    coalesced: AtomicU64,
    invalidated: AtomicU64,
    soft_invalidated: AtomicU64,
    stale: AtomicU64,
    refreshes_skipped: AtomicU64,
    early_refreshes: AtomicU64,
    bypasses: [AtomicU64; BypassReason::ALL.len()],
    handler: Timing,
    hit: Timing,
    /// Set once the route answered with `Vary`: only then is the learned-`Vary` map consulted.
    varies: AtomicBool,
    judge: Judge,
    /// Set once the route was logged as not paying.
    flagged: AtomicBool,
    recorded: Recorded,
}

impl RouteCounters {
    fn new(route: &str, namespace: &Arc<str>, judge: Judge) -> Self {
        Self {
            route: Arc::from(route),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            store_timeouts: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            invalidated: AtomicU64::new(0),
            soft_invalidated: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            refreshes_skipped: AtomicU64::new(0),
            early_refreshes: AtomicU64::new(0),
            bypasses: Default::default(),
            handler: Timing::default(),
            hit: Timing::default(),
            varies: AtomicBool::new(false),
            judge,
            flagged: AtomicBool::new(false),
            recorded: Recorded::new(namespace, route),
        }
    }

    pub(crate) fn varies(&self) -> bool {
        self.varies.load(Relaxed)
    }
    pub(crate) fn set_varies(&self) {
        self.varies.store(true, Relaxed);
    }
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
        self.recorded.hit();
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
        self.recorded.miss();
        // Only a miss lowers the hit ratio: the moment to look at the verdict.
        self.judge_now();
    }
    /// A response of `bytes` body bytes was stored.
    pub(crate) fn stored(&self, bytes: usize) {
        let bytes = bytes as u64;
        self.stores.fetch_add(1, Relaxed);
        self.stored_bytes.fetch_add(bytes, Relaxed);
        self.recorded.stored(bytes);
    }
    /// A store failure that is not known to be a timeout.
    pub(crate) fn store_error(&self) {
        self.store_failed(false);
    }
    /// The store failed with `e`.
    pub(crate) fn store_error_of(&self, e: &StoreError) {
        self.store_failed(e.is_timeout());
    }
    /// The request's lookup budget ran out.
    pub(crate) fn store_timeout(&self) {
        self.store_failed(true);
    }
    fn store_failed(&self, timeout: bool) {
        self.store_errors.fetch_add(1, Relaxed);
        if timeout {
            self.store_timeouts.fetch_add(1, Relaxed);
        }
        self.recorded.store_error(timeout);
    }
    /// A missing request waited for a concurrent miss of its key until it was done.
    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
        self.recorded.coalesced();
    }
    /// A stored response was found invalidated, and not served.
    pub(crate) fn invalidated(&self) {
        self.invalidated.fetch_add(1, Relaxed);
        self.recorded.invalidated();
    }
    /// A stored response was found soft-invalidated (stale, still stored), and not served.
    pub(crate) fn soft_invalidated(&self) {
        self.invalidated();
        self.soft_invalidated.fetch_add(1, Relaxed);
        self.recorded.soft_invalidated();
    }
    /// A request was answered from a stored response past its freshness.
    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Relaxed);
        self.recorded.stale();
    }
    /// A stale response's refresh was not started: too many were in flight.
    pub(crate) fn refresh_skipped(&self) {
        self.refreshes_skipped.fetch_add(1, Relaxed);
        self.recorded.refresh_skipped();
    }
    /// A fresh response's refresh was started early (XFetch).
    pub(crate) fn early_refresh(&self) {
        self.early_refreshes.fetch_add(1, Relaxed);
        self.recorded.early_refresh();
    }
    pub(crate) fn bypass(&self, reason: BypassReason) {
        let i = BypassReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.bypasses[i].fetch_add(1, Relaxed);
        self.recorded.bypass(i, reason);
    }

    /// Starts timing a lookup, when this one falls on the sample.
    pub(crate) fn timer(&self) -> Timer {
        Timer::sampled(self.hits.load(Relaxed))
    }
    /// The lookup `timer` timed has its answer.
    pub(crate) fn looked_up(&self, timer: Timer) {
        if let Some(took) = timer.elapsed() {
            self.recorded.lookup(took);
        }
    }
    /// The lookup `timer` timed was answered with a hit.
    pub(crate) fn hit_took(&self, timer: Timer) {
        if let Some(took) = timer.elapsed() {
            self.hit.add(took);
            self.judge_now();
        }
    }
    /// The handler called at `called` has answered.
    pub(crate) fn handler_took(&self, called: HandlerTimer) -> Duration {
        let took = called.elapsed();
        self.handler.add(took);
        self.recorded.handler(took);
        took
    }

    fn verdict(&self) -> Verdict {
        self.judge.verdict(
            self.hits.load(Relaxed),
            self.misses.load(Relaxed),
            self.handler.mean(),
            self.hit.mean(),
        )
    }

    /// Judges the route and, the first time it does not pay, says so in the log.
    fn judge_now(&self) -> Verdict {
        let verdict = self.verdict();
        if verdict.does_not_pay() && !self.flagged.swap(true, Relaxed) {
            tracing::warn!(
                route = %self.route,
                reason = %verdict,
                "caching does not pay on this route"
            );
        }
        verdict
    }

    fn stats(&self) -> RouteStats {
        let hits = self.hits.load(Relaxed);
        let handler_time = self.handler.mean();
        let hit_time = self.hit.mean();
        let saved_each = handler_time.map_or(Duration::ZERO, |handler| {
            handler.saturating_sub(hit_time.unwrap_or_default())
        });
        RouteStats {
            route: self.route.to_string(),
            hits,
            misses: self.misses.load(Relaxed),
            stores: self.stores.load(Relaxed),
            stored_bytes: self.stored_bytes.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            store_timeouts: self.store_timeouts.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            invalidated: self.invalidated.load(Relaxed),
            soft_invalidated: self.soft_invalidated.load(Relaxed),
            stale: self.stale.load(Relaxed),
            refreshes_skipped: self.refreshes_skipped.load(Relaxed),
            early_refreshes: self.early_refreshes.load(Relaxed),
            bypasses: BypassReason::ALL
                .iter()
                .zip(&self.bypasses)
                .map(|(r, n)| (*r, n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            handler_time,
            hit_time,
            time_saved: times(saved_each, hits),
            verdict: self.judge_now(),
        }
    }
}

impl Metrics {
    /// Counters named under `namespace`, routes judged by `judge`.
    pub(crate) fn new(namespace: &str, judge: Judge) -> Self {
        #[cfg(feature = "metrics")]
        recorded::describe(namespace);
        Self {
            routes: RwLock::default(),
            namespace: Arc::from(namespace),
            judge,
        }
    }

    pub(crate) fn route(&self, label: &str) -> Arc<RouteCounters> {
        if let Some(c) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
        {
            return c.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(Arc::from(label))
            .or_insert_with(|| Arc::new(RouteCounters::new(label, &self.namespace, self.judge)))
            .clone()
    }

    /// Every route's counters, sorted by route; a route judged not to pay is logged once.
    #[must_use]
    pub fn snapshot(&self) -> Vec<RouteStats> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RouteStats> = routes.values().map(|c| c.stats()).collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }
}

/// `each × n`, saturating.
fn times(each: Duration, n: u64) -> Duration {
    let nanos = each.as_nanos().saturating_mul(u128::from(n));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
