//! The snapshot as Prometheus text, for an application that serves `/metrics` without a
//! `metrics` recorder.

use std::fmt::Write as _;

use super::{Metrics, RouteStats};

impl Metrics {
    /// The counters as Prometheus text, every name starting with `namespace`: the counters of
    /// the [table](Metrics) (without the histograms and evictions) and
    /// `{ns}_cache_hit_ratio`, a gauge.
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
        for (name, help, get) in COUNTERS {
            let _ = writeln!(out, "# HELP {namespace}_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE {namespace}_cache_{name} counter");
            for s in &stats {
                let _ = writeln!(
                    out,
                    "{namespace}_cache_{name}{{route=\"{}\"}} {}",
                    escape(&s.route),
                    get(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {namespace}_cache_bypasses_total {BYPASSES_HELP}"
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

/// A per-route counter's name (after `{ns}_cache_`), help text and how to read it from a
/// route's stats: rendered by [`Metrics::render_prometheus`], described to the recorder.
type Counter = (&'static str, &'static str, fn(&RouteStats) -> u64);

pub(super) const COUNTERS: [Counter; 12] = [
    ("hits_total", "Requests answered from the cache.", |s| {
        s.hits
    }),
    (
        "misses_total",
        "Cacheable requests not answered from the cache.",
        |s| s.misses,
    ),
    ("stores_total", "Responses stored.", |s| s.stores),
    (
        "stored_bytes_total",
        "Body bytes of the responses stored.",
        |s| s.stored_bytes,
    ),
    (
        "store_errors_total",
        "Store failures treated as misses, timeouts included.",
        |s| s.store_errors,
    ),
    (
        "store_timeouts_total",
        "Store operations that ran out of time.",
        |s| s.store_timeouts,
    ),
    (
        "coalesced_total",
        "Requests that waited for a concurrent miss of the same key until it was done.",
        |s| s.coalesced,
    ),
    (
        "invalidated_total",
        "Stored responses found invalidated and not served.",
        |s| s.invalidated,
    ),
    (
        "soft_invalidated_total",
        "Of the stored responses found invalidated, those only soft-invalidated (stale).",
        |s| s.soft_invalidated,
    ),
    (
        "stale_total",
        "Requests answered from a stored response past its freshness.",
        |s| s.stale,
    ),
    (
        "refreshes_skipped_total",
        "Background refreshes of stale responses not started: too many in flight.",
        |s| s.refreshes_skipped,
    ),
    (
        "early_refreshes_total",
        "Background refreshes of still-fresh responses started early (XFetch).",
        |s| s.early_refreshes,
    ),
];

pub(super) const BYPASSES_HELP: &str =
    "Requests not looked up or responses not storable, by reason.";

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
