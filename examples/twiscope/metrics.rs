//! `GET /metrics`: the installed `metrics-exporter-prometheus` recorder's text, with
//! `twiscope_db_queries_total` and the per-route hit ratio.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::routes::AppState;

/// `twiscope_db_queries_total`: a counter of the recorder, set from the database's own count.
const DB_QUERIES: &str = "twiscope_db_queries_total";

/// Describes twiscope's own metrics to the installed recorder (their `# HELP` lines).
pub(crate) fn describe() {
    metrics::describe_counter!(DB_QUERIES, "SQL queries run by request handlers.");
}

/// `GET /metrics`: the cache's per-route counters and the SQL query count. Runs no SQL.
/// The recorder's text (the cache's counters and histograms, `twiscope_db_queries_total`),
/// then `twiscope_cache_hit_ratio` per route, derived from the cache's counters as it is read.
pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
    metrics::counter!(DB_QUERIES).absolute(s.db.queries());
    s.prometheus.run_upkeep();
    let mut text = s.prometheus.render();
    if let Some(cache) = &s.cache {
        // A ratio is not an event to record: written here, from the same counters, in the
        // form twiscope has always served (six decimals).
        let stats = cache.stats();
        if !stats.is_empty() {
            text.push_str(
                "# HELP twiscope_cache_hit_ratio Hits over hits plus misses since start.\n\
                 # TYPE twiscope_cache_hit_ratio gauge\n",
            );
        }
        for route in &stats {
            let _ = writeln!(
                text,
                "twiscope_cache_hit_ratio{{route=\"{}\"}} {:.6}",
                route.route.replace('\\', "\\\\").replace('"', "\\\""),
                route.hit_ratio()
            );
        }
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            // Counters must never be served stale.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}
