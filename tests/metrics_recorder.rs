//! The `metrics` facade through a real Router: a recorder installed for the test sees exactly
//! the per-route counters the snapshot reports, labelled by route template and outcome, and the
//! memory store's evictions by cause.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::routing::{get as route_get, post};
use axum::Router;
use common::test_store::TestStore;
use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_response_cache::{CacheKey, MemoryStore, ResponseCache, Store};

/// What the recorder holds: a counter's value, or a histogram's number of samples, by name and
/// sorted labels.
#[derive(Debug)]
struct Recorded(BTreeMap<(String, Vec<(String, String)>), u64>);

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut out = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => continue,
            };
            out.insert((key.name().to_owned(), labels), n);
        }
        Self(out)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0.get(&(name.to_owned(), labels)).copied()
    }

    fn route(&self, name: &str, route: &str) -> u64 {
        self.get(name, &[("route", route)])
            .unwrap_or_else(|| panic!("{name}{{route={route}}} not recorded: {self:#?}"))
    }
}

fn head(uri: &str) -> http::Request<Body> {
    http::Request::head(uri).body(Body::empty()).unwrap()
}

fn app(fx: &Fixture) -> Router {
    Router::new()
        .route(
            "/page",
            route_get(|| async { "page" })
                .layer(fx.cache.ttl(Duration::from_secs(60)))
                .post(|| async { "posted" }),
        )
        .route(
            "/users/{id}",
            route_get(|| async { ([(header::CACHE_CONTROL, "max-age=60")], "user") }),
        )
        .route(
            "/counters",
            route_get(|| async { ([(header::CACHE_CONTROL, "no-store")], "counters") }),
        )
        .route(
            "/missing",
            route_get(|| async { (StatusCode::NOT_FOUND, "gone") })
                .layer(fx.cache.ttl(Duration::from_secs(60))),
        )
        .route("/write", post(|| async { "written" }))
        .layer(fx.cache.layer())
}

#[tokio::test]
async fn every_outcome_is_recorded_once_per_route_template() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let fx = Fixture::new();
    let app = app(&fx);
    let requests = vec![
        get("/page"),                                               // miss, stored (4 bytes)
        get("/page"),                                               // hit
        head("/page"),                                              // hit
        get_with("/page", &[("if-none-match", "*")]),               // hit (304)
        get_with("/page", &[("authorization", "Bearer a")]),        // bypass: authorization
        http::Request::post("/page").body(Body::empty()).unwrap(),  // bypass: method
        get("/users/1"),                                            // miss, stored (4 bytes)
        get("/users/2"),                                            // miss, stored (4 bytes)
        get("/users/1"),                                            // hit
        get("/counters"),                                           // bypass: no-store
        get("/counters"),                                           // bypass: no-store
        get("/missing"),                                            // bypass: status
        http::Request::post("/write").body(Body::empty()).unwrap(), // bypass: method
    ];
    for req in requests {
        send(&app, req).await;
    }
    let seen = Recorded::take(&snapshotter);

    let page = "/page";
    assert_eq!(seen.route("http_cache_hits_total", page), 3);
    assert_eq!(seen.route("http_cache_misses_total", page), 1);
    assert_eq!(seen.route("http_cache_stores_total", page), 1);
    assert_eq!(seen.route("http_cache_stored_bytes_total", page), 4);
    let bypassed = |route: &str, reason: &str| {
        seen.get(
            "http_cache_bypasses_total",
            &[("route", route), ("reason", reason)],
        )
    };
    assert_eq!(bypassed(page, "authorization"), Some(1));
    assert_eq!(bypassed(page, "method"), Some(1));
    // Only the reasons a route has seen are registered.
    assert_eq!(bypassed(page, "no-store"), None);

    // The template, never the URL.
    let users = "/users/{id}";
    assert_eq!(seen.route("http_cache_misses_total", users), 2);
    assert_eq!(seen.route("http_cache_hits_total", users), 1);
    assert_eq!(seen.route("http_cache_stored_bytes_total", users), 8);
    assert!(seen.0.keys().all(|(_, labels)| labels
        .iter()
        .all(|(_, v)| !v.contains("/users/1") && !v.contains("/users/2"))));

    assert_eq!(bypassed("/counters", "no-store"), Some(2));
    assert_eq!(seen.route("http_cache_hits_total", "/counters"), 0);
    assert_eq!(bypassed("/missing", "status"), Some(1));
    assert_eq!(bypassed("/write", "method"), Some(1));

    // The handler is timed whenever the cache called it after a lookup: the misses, and the
    // responses the policy then refused.
    assert_eq!(seen.route("http_cache_handler_seconds", page), 1);
    assert_eq!(seen.route("http_cache_handler_seconds", users), 2);
    assert_eq!(seen.route("http_cache_handler_seconds", "/counters"), 2);
    // Lookups are timed on a sample: every one until the route's first hit, then one hit in 16.
    // Here the two before /page's first hit, and the app-wide layer's own lookup of the first
    // request, before it learnt that /page has a layer of its own.
    assert_eq!(seen.route("http_cache_lookup_seconds", page), 3);

    // The snapshot reads the same counters.
    for s in fx.cache.stats() {
        assert_eq!(
            seen.route("http_cache_hits_total", &s.route),
            s.hits,
            "{s:?}"
        );
        assert_eq!(seen.route("http_cache_misses_total", &s.route), s.misses);
        assert_eq!(seen.route("http_cache_stores_total", &s.route), s.stores);
        for (reason, n) in &s.bypasses {
            assert_eq!(bypassed(&s.route, reason.as_str()), Some(*n));
        }
    }
}

#[tokio::test]
async fn the_namespace_names_every_metric() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = ResponseCache::builder()
        .metrics_namespace("twiscope")
        .build();
    let app = Router::new()
        .route("/trending", route_get(|| async { "[]" }))
        .layer(cache.ttl(Duration::from_secs(60)));
    send(&app, get("/trending")).await;
    send(&app, get("/trending")).await;
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.route("twiscope_cache_hits_total", "/trending"), 1);
    assert_eq!(seen.route("twiscope_cache_misses_total", "/trending"), 1);
    assert!(seen.0.keys().all(|(name, _)| name.starts_with("twiscope_")));
    // The same names as the text the snapshot renders.
    let text = cache.metrics().render_prometheus("twiscope");
    assert!(text.contains("twiscope_cache_hits_total{route=\"/trending\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn store_errors_timeouts_and_coalesced_waits_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let store = TestStore::new();
    let cache = ResponseCache::builder()
        .store(store.clone())
        .lookup_timeout(Duration::from_millis(50))
        .build();
    let app = Router::new()
        .route(
            "/slow",
            route_get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "slow"
            }),
        )
        .layer(cache.ttl(Duration::from_secs(60)));

    // Three concurrent misses of one key: one calls the handler, two wait for it.
    let burst: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/slow")).await })
        })
        .collect();
    for task in burst {
        task.await.unwrap();
    }
    // A store slower than the lookup budget: a timeout. A store that is down: an error.
    store.set_delay(Duration::from_millis(100));
    send(&app, get("/slow")).await;
    store.set_delay(Duration::ZERO);
    store.set_down(true);
    send(&app, get("/slow")).await;

    let seen = Recorded::take(&snapshotter);
    let stats = &cache.stats()[0];
    assert_eq!(seen.route("http_cache_coalesced_total", "/slow"), 2);
    assert_eq!(stats.coalesced, 2);
    assert_eq!(seen.route("http_cache_hits_total", "/slow"), 2);
    assert_eq!(seen.route("http_cache_store_timeouts_total", "/slow"), 1);
    assert_eq!(stats.store_timeouts, 1);
    // The down store fails the lookup (the response is then not stored); with the timeout, two.
    assert_eq!(seen.route("http_cache_store_errors_total", "/slow"), 2);
    assert_eq!(stats.store_errors, 2);
}

#[tokio::test]
async fn the_memory_store_records_evictions_by_cause() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    // Room for a handful of 1 KiB entries (each weighs ~1.5 KiB with bookkeeping).
    let store = MemoryStore::new(8 * 1024);
    let cache = ResponseCache::builder().store(store.clone()).build();
    let app = Router::new().route(
        "/items/{id}",
        route_get(|| async { "x".repeat(1024) }).layer(cache.ttl(Duration::from_secs(60))),
    );
    const ITEMS: u64 = 40;
    for i in 0..ITEMS {
        send(&app, get(&format!("/items/{i}"))).await;
    }
    let left = store.entry_count();
    let seen = Recorded::take(&snapshotter);
    let evicted =
        |seen: &Recorded, cause| seen.get("http_cache_evictions_total", &[("cause", cause)]);
    // Every item is either still there or was evicted for size.
    assert_eq!(evicted(&seen, "size"), Some(ITEMS - left));
    assert!(left < ITEMS / 2, "{left} left");
    assert_eq!(seen.route("http_cache_stores_total", "/items/{id}"), ITEMS);

    // On a store with room to spare, so nothing more is evicted for size.
    // Stored over an entry that is there: replaced.
    let store = MemoryStore::new(1 << 20);
    let cache = ResponseCache::builder().store(store.clone()).build();
    let app = Router::new().route(
        "/brief",
        route_get(|| async { "brief" }).layer(cache.ttl(Duration::from_millis(1))),
    );
    let key = CacheKey::from_parts("trc", &[b"manual"]);
    let entry = || tower_response_cache::Entry::Vary(Arc::from(vec![]));
    let ttl = Duration::from_secs(60);
    store.put(&key, entry(), ttl).await.unwrap();
    store.put(&key, entry(), ttl).await.unwrap();
    // Removed: explicit.
    store.remove(&key).await.unwrap();
    // Past its TTL on the store's monotonic clock, which no test can move: expired, and dropped
    // when the store next counts its entries (polled: a few milliseconds).
    send(&app, get("/brief")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.entry_count() > 0 {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A snapshot takes the counters it reads: these are the evictions since the last.
    let seen = Recorded::take(&snapshotter);
    assert_eq!(evicted(&seen, "replaced"), Some(1));
    assert_eq!(evicted(&seen, "explicit"), Some(1));
    assert_eq!(evicted(&seen, "expired"), Some(1));
}
