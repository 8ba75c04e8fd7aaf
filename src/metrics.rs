//! Per-route counters of what the cache did (hits, misses, stores, bypasses by reason, store
//! errors), readable as a snapshot or as Prometheus text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use crate::BypassReason;

/// The cache's counters, one set per route. Shared by every layer of one
/// [`ResponseCache`](crate::ResponseCache); read it with [`ResponseCache::metrics`](crate::ResponseCache::metrics).
///
/// Routes are labelled by axum's `MatchedPath` (the route template, e.g. `/users/{id}`), so
/// the label set stays bounded; requests outside an axum router count under `*`.
#[derive(Debug, Default)]
pub struct Metrics {
    // A std lock: held only to find or insert a route's counters, never across an await.
    routes: RwLock<HashMap<Arc<str>, Arc<RouteCounters>>>,
}

#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    store_errors: AtomicU64,
    invalidated: AtomicU64,
    bypasses: [AtomicU64; BypassReason::ALL.len()],
    /// Set once the route answered with `Vary`: only then is the learned-`Vary` map consulted.
    varies: AtomicBool,
}

impl RouteCounters {
    pub(crate) fn varies(&self) -> bool {
        self.varies.load(Relaxed)
    }
    pub(crate) fn set_varies(&self) {
        self.varies.store(true, Relaxed);
    }
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub(crate) fn stored(&self) {
        self.stores.fetch_add(1, Relaxed);
    }
    pub(crate) fn store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn invalidated(&self) {
        self.invalidated.fetch_add(1, Relaxed);
    }
    pub(crate) fn bypass(&self, reason: BypassReason) {
        let i = BypassReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.bypasses[i].fetch_add(1, Relaxed);
    }
}

/// One route's counters at one moment.
///
/// Every request a layer of the cache handles counts exactly once, under `hits`, `misses` or
/// `bypasses` (a route with its own layer inside the app-wide one is counted by its own layer
/// alone), so [`requests`](Self::requests) is their sum and [`hit_ratio`](Self::hit_ratio) is
/// the share of cacheable requests served from the cache. `stores` and `store_errors` count
/// events, not requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// The route template, or `*`; `values` counts the low-level API (`ResponseCache::get`…).
    pub route: String,
    /// Requests answered from a fresh stored response (`200`, `304` or HEAD).
    pub hits: u64,
    /// Requests that could use the cache and were not answered from it: nothing fresh was
    /// stored (or the client's `no-cache` was honoured) and the handler's response was one the
    /// policy stores, whether storing it then succeeded or not; and the `504`s answering
    /// `only-if-cached` when nothing fresh was stored.
    pub misses: u64,
    /// Responses stored.
    pub stores: u64,
    /// Store operations that failed and were treated as misses.
    pub store_errors: u64,
    /// Stored responses found invalidated (a tag, path, user or namespace version bumped since
    /// their miss started) and so not served: each is a lookup that then missed, not a request.
    pub invalidated: u64,
    /// Requests that bypassed the cache, by reason; only non-zero reasons. A request bypasses
    /// when it may not use the cache (its method, credentials, a
    /// [`bypass_when`](crate::CacheLayer::bypass_when) hook) or when the handler's response
    /// may not be stored (`no-store`, `private`, its status, its size…); it is then not also a
    /// miss.
    pub bypasses: Vec<(BypassReason, u64)>,
}

impl RouteStats {
    /// Hits over hits plus misses: the share of requests that could be served from the cache
    /// and were; `0.0` before any.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let ratio = self.hits as f64 / total as f64;
            ratio
        }
    }

    /// Every request counted: hits, misses and bypasses.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.hits + self.misses + self.bypasses.iter().map(|(_, n)| n).sum::<u64>()
    }
}

impl Metrics {
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
        routes.entry(Arc::from(label)).or_default().clone()
    }

    /// Every route's counters, sorted by route.
    #[must_use]
    pub fn snapshot(&self) -> Vec<RouteStats> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RouteStats> = routes
            .iter()
            .map(|(route, c)| RouteStats {
                route: route.to_string(),
                hits: c.hits.load(Relaxed),
                misses: c.misses.load(Relaxed),
                stores: c.stores.load(Relaxed),
                store_errors: c.store_errors.load(Relaxed),
                invalidated: c.invalidated.load(Relaxed),
                bypasses: BypassReason::ALL
                    .iter()
                    .zip(&c.bypasses)
                    .map(|(r, n)| (*r, n.load(Relaxed)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }

    /// The counters as Prometheus text, every name starting with `namespace`:
    /// `{ns}_cache_hits_total`, `{ns}_cache_misses_total`, `{ns}_cache_stores_total`,
    /// `{ns}_cache_store_errors_total`, `{ns}_cache_invalidated_total` (label `route`),
    /// `{ns}_cache_bypasses_total` (labels
    /// `route`, `reason`) and `{ns}_cache_hit_ratio`.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder().build();
    /// let text = cache.metrics().render_prometheus("app");
    /// assert!(text.contains("# TYPE app_cache_hits_total counter"));
    /// ```
    #[must_use]
    pub fn render_prometheus(&self, namespace: &str) -> String {
        let stats = self.snapshot();
        let mut out = String::new();
        let counters: [Counter; 5] = [
            ("hits", "Requests answered from the cache.", |s| s.hits),
            (
                "misses",
                "Cacheable requests not answered from the cache.",
                |s| s.misses,
            ),
            ("stores", "Responses stored.", |s| s.stores),
            ("store_errors", "Store failures treated as misses.", |s| {
                s.store_errors
            }),
            (
                "invalidated",
                "Stored responses found invalidated and not served.",
                |s| s.invalidated,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {namespace}_cache_{name}_total {help}");
            let _ = writeln!(out, "# TYPE {namespace}_cache_{name}_total counter");
            for s in &stats {
                let _ = writeln!(
                    out,
                    "{namespace}_cache_{name}_total{{route=\"{}\"}} {}",
                    escape(&s.route),
                    get(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {namespace}_cache_bypasses_total Requests not looked up or responses not storable, by reason."
        );
        let _ = writeln!(out, "# TYPE {namespace}_cache_bypasses_total counter");
        for s in &stats {
            for (reason, n) in &s.bypasses {
                let _ = writeln!(
                    out,
                    "{namespace}_cache_bypasses_total{{route=\"{}\",reason=\"{reason}\"}} {n}",
                    escape(&s.route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {namespace}_cache_hit_ratio Hits over hits plus misses since start."
        );
        let _ = writeln!(out, "# TYPE {namespace}_cache_hit_ratio gauge");
        for s in &stats {
            let _ = writeln!(
                out,
                "{namespace}_cache_hit_ratio{{route=\"{}\"}} {:.6}",
                escape(&s.route),
                s.hit_ratio()
            );
        }
        out
    }
}

/// A counter's name, help text and how to read it from a route's stats.
type Counter = (&'static str, &'static str, fn(&RouteStats) -> u64);

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
