//! Shadow mode through a real Router: a shadowed route calls its handler for every request and
//! answers with the handler's response, yet counts the hits it would have had, says so in
//! `Cache-Status`, and fills the store as a live route would; a live route on the same cache is
//! unaffected.

mod common;

use axum::Router;
use common::*;
use http::{Request, StatusCode};
use tower_response_cache::{CacheLayer, Entry, RouteStats, Store};

const WOULD_HIT: &str = "tower-response-cache; fwd=bypass; detail=shadow-hit";
const SHADOW_MISS: &str = "tower-response-cache; fwd=uri-miss; stored; detail=shadow";

fn stats(f: &Fixture, route: &str) -> RouteStats {
    f.cache
        .stats()
        .into_iter()
        .find(|s| s.route == route)
        .unwrap_or_else(|| panic!("no stats for {route}"))
}

fn app(f: &Fixture, shadowed: &Calls, live: &Calls) -> (Router, CacheLayer) {
    let shadow = f.cache.route().shadow(true);
    let app = Router::new()
        .route("/shadow", shadowed.handler().layer(shadow.clone()))
        .route("/live", live.handler().layer(f.cache.route()));
    (app, shadow)
}

fn stored_body(f: &Fixture, layer: &CacheLayer, uri: &str) -> Option<String> {
    let key = layer.key_for(&get(uri));
    match f.store.get_now(&key)? {
        Ok(Some(Entry::Response(r))) => Some(String::from_utf8(r.body().to_vec()).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn a_shadowed_route_never_serves_from_the_store_but_counts_its_would_be_hits() {
    let f = Fixture::new();
    let (shadowed, live) = (Calls::default(), Calls::default());
    let (app, layer) = app(&f, &shadowed, &live);

    let first = send(&app, get("/shadow")).await;
    assert_eq!(first.text(), "n1");
    assert_eq!(first.cache_status(), SHADOW_MISS);
    // Stored as a live miss would be.
    assert_eq!(stored_body(&f, &layer, "/shadow").as_deref(), Some("n1"));

    for n in 2..=4 {
        let seen = send(&app, get("/shadow")).await;
        // The handler's answer changes every call, and every call's answer is what goes out.
        assert_eq!(seen.text(), format!("n{n}"));
        assert_eq!(seen.cache_status(), WOULD_HIT);
        assert_eq!(seen.header("age"), None, "a would-be hit is not a hit");
    }
    assert_eq!(shadowed.get(), 4, "the handler answers every request");
    // The fresh entry is left as stored: a would-be hit writes nothing.
    assert_eq!(stored_body(&f, &layer, "/shadow").as_deref(), Some("n1"));

    let s = stats(&f, "/shadow");
    assert_eq!((s.hits, s.misses, s.stores), (3, 1, 1));
    assert!((s.hit_ratio() - 0.75).abs() < 1e-9);
}

#[tokio::test]
async fn a_live_route_on_the_same_cache_serves_hits_as_usual() {
    let f = Fixture::new();
    let (shadowed, live) = (Calls::default(), Calls::default());
    let (app, _) = app(&f, &shadowed, &live);
    send(&app, get("/shadow")).await;
    assert_eq!(send(&app, get("/live")).await.cache_status(), MISS);
    let seen = send(&app, get("/live")).await;
    assert_eq!((seen.text(), seen.cache_status()), ("n1", hit(60).as_str()));
    assert_eq!(live.get(), 1);
    let s = stats(&f, "/live");
    assert_eq!((s.hits, s.misses), (1, 1));
}

#[tokio::test]
async fn head_and_conditional_requests_are_answered_by_the_handler() {
    let f = Fixture::new();
    let (shadowed, live) = (Calls::default(), Calls::default());
    let (app, _) = app(&f, &shadowed, &live);
    let first = send(&app, get("/shadow")).await;
    // The handler's response goes out as it was: no ETag computed by the cache.
    assert_eq!(first.header("etag"), None);

    let head = Request::head("/shadow")
        .body(axum::body::Body::empty())
        .unwrap();
    let seen = send(&app, head).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.cache_status(), WOULD_HIT);
    assert_eq!(shadowed.get(), 2, "a would-be HEAD hit calls the handler");

    // The stored entry's ETag (read through a live layer over the same store) matches: live,
    // this would be a 304 from the store.
    let reader = Router::new().route("/shadow", Calls::default().handler().layer(f.cache.route()));
    let stored = send(&reader, get("/shadow")).await;
    assert_eq!(
        (stored.text(), stored.cache_status()),
        ("n1", hit(60).as_str())
    );
    let etag = stored.header("etag").expect("stored ETag").to_owned();
    let seen = send(&app, get_with("/shadow", &[("if-none-match", &etag)])).await;
    assert_eq!((seen.status, seen.text()), (StatusCode::OK, "n3"));
    assert_eq!(seen.cache_status(), WOULD_HIT);
    assert_eq!(shadowed.get(), 3);

    // A conditional miss (nothing stored yet for this URL) is not turned into a 304 either.
    let seen = send(&app, get_with("/shadow?x=1", &[("if-none-match", &etag)])).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.cache_status(), SHADOW_MISS);
    // The HEAD, the reader's real hit and the conditional request (all under `/shadow`).
    assert_eq!(stats(&f, "/shadow").hits, 3);
}

#[tokio::test]
async fn only_if_cached_is_answered_by_the_handler() {
    let f = Fixture::new();
    let (shadowed, live) = (Calls::default(), Calls::default());
    let (app, _) = app(&f, &shadowed, &live);
    let seen = send(
        &app,
        get_with("/shadow", &[("cache-control", "only-if-cached")]),
    )
    .await;
    assert_eq!((seen.status, seen.text()), (StatusCode::OK, "n1"));
    let seen = send(
        &app,
        get_with("/shadow", &[("cache-control", "only-if-cached")]),
    )
    .await;
    assert_eq!((seen.text(), seen.cache_status()), ("n2", WOULD_HIT));
}

#[tokio::test]
async fn a_route_shadowed_then_switched_on_serves_what_the_shadow_stored() {
    let f = Fixture::new();
    let calls = Calls::default();
    let shadow = Router::new().route("/r", calls.handler().layer(f.cache.route().shadow(true)));
    let live = Router::new().route("/r", calls.handler().layer(f.cache.route().shadow(false)));
    send(&shadow, get("/r")).await;
    let seen = send(&live, get("/r")).await;
    assert_eq!((seen.text(), seen.cache_status()), ("n1", hit(60).as_str()));
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_each_call_the_handler() {
    let f = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let slow = axum::routing::get(move || {
        let n = c.bump();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            format!("n{n}")
        }
    });
    let app = Router::new().route("/slow", slow.layer(f.cache.route().shadow(true)));
    // Live, the second would wait for the first's miss (coalescing) and answer its entry.
    let (a, b) = tokio::join!(send(&app, get("/slow")), send(&app, get("/slow")));
    let mut bodies = [a.text().to_owned(), b.text().to_owned()];
    bodies.sort();
    assert_eq!(bodies, ["n1", "n2"]);
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn a_refused_response_is_marked_as_shadowed_too() {
    let f = Fixture::new();
    let missing = axum::routing::get(|| async { (StatusCode::NOT_FOUND, "gone") });
    let app = Router::new().route("/gone", missing.layer(f.cache.route().shadow(true)));
    let seen = send(&app, get("/gone")).await;
    assert_eq!((seen.status, seen.text()), (StatusCode::NOT_FOUND, "gone"));
    assert_eq!(
        seen.cache_status(),
        "tower-response-cache; fwd=bypass; detail=shadow-status"
    );
}

#[tokio::test]
async fn the_builder_sets_every_layer_s_default_and_a_layer_overrides_it() {
    let cache = tower_response_cache::ResponseCache::builder()
        .shadow(true)
        .build();
    let (shadowed, live) = (Calls::default(), Calls::default());
    let app = Router::new()
        .route("/shadow", shadowed.handler().layer(cache.route()))
        .route("/live", live.handler().layer(cache.route().shadow(false)));
    for _ in 0..2 {
        send(&app, get("/shadow")).await;
        send(&app, get("/live")).await;
    }
    assert_eq!((shadowed.get(), live.get()), (2, 1));
    assert_eq!(send(&app, get("/shadow")).await.cache_status(), WOULD_HIT);
}
