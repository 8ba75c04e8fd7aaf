//! Does caching pay on a route? `ResponseCache::stats` through a real Router, on tokio's paused
//! clock so handler and hit times are exactly what the handlers sleep: hit ratio, mean handler
//! and hit times, time saved, and the verdict, logged once when caching does not pay.

mod common;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get as route_get;
use axum::Router;
use common::*;
use tower_response_cache::{ResponseCache, RouteStats, Verdict};

const HANDLER: Duration = Duration::from_millis(100);

/// `/slow` sleeps `HANDLER` on tokio's clock; `/fast` answers at once; `/search?q=` is stored
/// per query.
fn app(cache: &ResponseCache) -> Router {
    Router::new()
        .route(
            "/slow",
            route_get(|| async {
                tokio::time::sleep(HANDLER).await;
                "slow"
            }),
        )
        .route("/fast", route_get(|| async { "fast" }))
        .route(
            "/search",
            route_get(|Query(q): Query<Vec<(String, String)>>| async move {
                tokio::time::sleep(HANDLER).await;
                format!("{q:?}")
            }),
        )
        .layer(cache.ttl(Duration::from_secs(60)))
}

fn cache() -> ResponseCache {
    ResponseCache::builder().verdict_min_requests(10).build()
}

fn route(cache: &ResponseCache, route: &str) -> RouteStats {
    cache
        .stats()
        .into_iter()
        .find(|s| s.route == route)
        .unwrap_or_else(|| panic!("no stats for {route}"))
}

async fn times(app: &Router, uri: &str, n: usize) {
    for _ in 0..n {
        send(app, get(uri)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_hits_saved_the_handler_time_they_did_not_spend() {
    let cache = cache();
    let app = app(&cache);
    times(&app, "/slow", 10).await; // one miss, nine hits
    let s = route(&cache, "/slow");
    assert_eq!((s.hits, s.misses), (9, 1));
    assert!((s.hit_ratio() - 0.9).abs() < 1e-9);
    assert_eq!(s.handler_time, Some(HANDLER));
    // Hits call no handler and sleep nowhere: on the paused clock they take no time.
    assert_eq!(s.hit_time, Some(Duration::ZERO));
    assert_eq!(s.time_saved, HANDLER * 9);
    assert_eq!(s.verdict, Verdict::Pays);
    assert!(!s.verdict.does_not_pay());
}

#[tokio::test(start_paused = true)]
async fn a_route_is_not_judged_before_enough_requests() {
    let cache = cache();
    let app = app(&cache);
    times(&app, "/slow", 9).await;
    let s = route(&cache, "/slow");
    assert_eq!(
        s.verdict,
        Verdict::TooEarly {
            requests: 9,
            needed: 10
        }
    );
    assert!(!s.verdict.does_not_pay());
}

#[tokio::test(start_paused = true)]
async fn a_hit_ratio_under_the_target_does_not_pay_and_is_logged_once() {
    let log = Log::default();
    let _subscriber = tracing::subscriber::set_default(log.subscriber());
    let cache = cache();
    let app = app(&cache);
    // Every query is new: seven misses, then three hits.
    for i in 0..7 {
        send(&app, get(&format!("/search?q={i}"))).await;
    }
    times(&app, "/search?q=0", 3).await;
    let s = route(&cache, "/search");
    assert_eq!((s.hits, s.misses), (3, 7));
    assert!(matches!(
        s.verdict,
        Verdict::LowHitRatio { hit_ratio, target } if (hit_ratio - 0.3).abs() < 1e-9 && target == 0.8
    ));
    assert_eq!(
        s.verdict.to_string(),
        "hit ratio 30.0% is under the 80.0% target"
    );
    assert_eq!(s.time_saved, HANDLER * 3);
    // Read again, and missed again: still said once.
    let _ = cache.stats();
    for i in 7..12 {
        send(&app, get(&format!("/search?q={i}"))).await;
    }
    let _ = cache.stats();
    let lines = log.lines("caching does not pay");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("route=/search"), "{}", lines[0]);
    assert!(lines[0].contains("under the 80.0% target"), "{}", lines[0]);
    // The other route was never flagged.
    times(&app, "/slow", 10).await;
    let _ = cache.stats();
    assert_eq!(log.lines("caching does not pay").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_about_as_fast_as_a_hit_does_not_pay() {
    let log = Log::default();
    let _subscriber = tracing::subscriber::set_default(log.subscriber());
    let cache = cache();
    let app = app(&cache);
    times(&app, "/fast", 20).await;
    let s = route(&cache, "/fast");
    assert_eq!((s.hits, s.misses), (19, 1));
    assert_eq!(
        s.verdict,
        Verdict::HandlerAsFastAsHit {
            handler: Duration::ZERO,
            hit: Duration::ZERO
        }
    );
    assert!(s.verdict.does_not_pay());
    assert_eq!(s.time_saved, Duration::ZERO);
    let lines = log.lines("caching does not pay");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("takes less than twice as long as a hit"));
}

#[tokio::test(start_paused = true)]
async fn the_target_and_the_minimum_are_the_builders() {
    let cache = ResponseCache::builder()
        .target_hit_ratio(0.25)
        .verdict_min_requests(4)
        .build();
    let app = app(&cache);
    for i in 0..3 {
        send(&app, get(&format!("/search?q={i}"))).await;
    }
    send(&app, get("/search?q=0")).await;
    let s = route(&cache, "/search");
    assert_eq!((s.hits, s.misses), (1, 3));
    assert_eq!(s.verdict, Verdict::Pays);
}

/// Everything logged while the guard is held, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || log.clone())
            .finish()
    }

    fn lines(&self, containing: &str) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(containing))
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
