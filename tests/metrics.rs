//! Metrics through a real Router: every request counts exactly once, as a hit, a miss or a
//! bypass, so the hit ratio means what it says.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::routing::{get as route_get, post};
use axum::Router;
use common::*;
use tower_response_cache::{BypassReason, RouteStats};

fn mixed_app(fx: &Fixture) -> Router {
    Router::new()
        .route(
            "/page",
            route_get(|| async { "page" })
                .layer(fx.cache.ttl(Duration::from_secs(60)))
                .post(|| async { "posted" }),
        )
        .route(
            "/shared",
            route_get(|| async { ([(header::CACHE_CONTROL, "max-age=60")], "shared") }),
        )
        .route(
            "/counters",
            route_get(|| async { ([(header::CACHE_CONTROL, "no-store")], "counters") }),
        )
        .route("/silent", route_get(|| async { "silent" }))
        .route(
            "/missing",
            route_get(|| async { (StatusCode::NOT_FOUND, "gone") })
                .layer(fx.cache.ttl(Duration::from_secs(60))),
        )
        .route("/write", post(|| async { "written" }))
        .layer(fx.cache.layer())
}

fn stats(fx: &Fixture, route: &str) -> RouteStats {
    fx.cache
        .metrics()
        .snapshot()
        .into_iter()
        .find(|s| s.route == route)
        .unwrap_or_else(|| panic!("no stats for {route}"))
}

fn head(uri: &str) -> http::Request<Body> {
    http::Request::head(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn every_request_counts_once_as_a_hit_a_miss_or_a_bypass() {
    let fx = Fixture::new();
    let app = mixed_app(&fx);
    let requests = vec![
        get("/page"),                                                 // miss, stored
        get("/page"),                                                 // hit
        head("/page"),                                                // hit
        get_with("/page", &[("if-none-match", "*")]),                 // hit (304)
        get_with("/page", &[("authorization", "Bearer a")]),          // bypass: authorization
        http::Request::post("/page").body(Body::empty()).unwrap(),    // bypass: method
        get("/shared"),                                               // miss, stored
        get("/shared"),                                               // hit
        get("/counters"),                                             // bypass: no-store
        get("/counters"),                                             // bypass: no-store
        head("/counters"),                                            // bypass: no-store
        get("/silent"),                                               // bypass: no-ttl
        get("/missing"),                                              // bypass: status
        get_with("/missing", &[("cache-control", "only-if-cached")]), // miss (504)
        http::Request::post("/write").body(Body::empty()).unwrap(),   // bypass: method
    ];
    let sent = requests.len() as u64;
    for req in requests {
        send(&app, req).await;
    }
    let all = fx.cache.metrics().snapshot();
    assert_eq!(all.iter().map(RouteStats::requests).sum::<u64>(), sent);

    let page = stats(&fx, "/page");
    assert_eq!((page.hits, page.misses, page.requests()), (3, 1, 6));
    let counters = stats(&fx, "/counters");
    assert_eq!((counters.hits, counters.misses), (0, 0));
    assert_eq!(counters.bypasses, vec![(BypassReason::NoStore, 3)]);
    assert_eq!(counters.hit_ratio(), 0.0);
    assert_eq!(stats(&fx, "/silent").misses, 0);
    let missing = stats(&fx, "/missing");
    assert_eq!(missing.misses, 1);
    assert_eq!(missing.bypasses, vec![(BypassReason::Status, 1)]);
    let shared = stats(&fx, "/shared");
    assert_eq!(shared.hit_ratio(), 0.5);
}

#[tokio::test]
async fn prometheus_shows_a_refused_response_as_a_bypass_only() {
    let fx = Fixture::new();
    let app = mixed_app(&fx);
    for _ in 0..2 {
        let r = send(&app, get("/counters")).await;
        assert_eq!(r.cache_status(), bypass("no-store"));
    }
    let text = fx.cache.metrics().render_prometheus("app");
    assert!(
        text.contains("app_cache_misses_total{route=\"/counters\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("app_cache_bypasses_total{route=\"/counters\",reason=\"no-store\"} 2"),
        "{text}"
    );
}
