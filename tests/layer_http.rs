//! HTTP semantics on the way out: HEAD, conditional requests, `Cache-Control` from the handler,
//! downstream max-age, and the three ways to plug the layer into axum.

mod common;

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get as route_get;
use axum::Router;
use common::test_store::TestStore;
use common::*;
use tower_response_cache::{ManualClock, MemoryStore, ResponseCache, Store};

fn app(fx: &Fixture, calls: &Calls) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/doc",
        route_get(move || {
            let n = c.bump();
            async move {
                (
                    [(header::LAST_MODIFIED, "Wed, 21 Oct 2015 07:28:00 GMT")],
                    format!("document {n}"),
                )
            }
        })
        .layer(fx.cache.route()),
    )
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls);
    let got = send(&app, get("/doc")).await;
    let head = send(
        &app,
        http::Request::head("/doc")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(calls.get(), 1);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(head.header("etag"), got.header("etag"));
    assert_eq!(head.cache_status(), hit(60));
}

#[tokio::test]
async fn a_head_miss_never_makes_an_entry() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls);
    let head = send(
        &app,
        http::Request::head("/doc")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.cache_status(), "tower-response-cache; fwd=uri-miss");
    assert!(head.body.is_empty());
    assert_eq!(fx.entries(), 0);
    let got = send(&app, get("/doc")).await;
    assert_eq!(got.text(), "document 2");
    assert_eq!(got.cache_status(), MISS);
}

#[tokio::test]
async fn if_none_match_gets_a_304_from_the_cache() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls);
    let first = send(&app, get("/doc")).await;
    let etag = first.header("etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let list = format!("\"other\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = send(&app, get_with("/doc", &[("if-none-match", inm)])).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.cache_status(), hit(60));
        assert_eq!(r.header("age"), Some("0"));
    }
    let r = send(&app, get_with("/doc", &[("if-none-match", "\"stale\"")])).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "document 1"));
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn if_modified_since_is_checked_against_last_modified() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls);
    send(&app, get("/doc")).await;
    let same = send(
        &app,
        get_with(
            "/doc",
            &[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")],
        ),
    )
    .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    let older = send(
        &app,
        get_with(
            "/doc",
            &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")],
        ),
    )
    .await;
    assert_eq!(older.status, StatusCode::OK);
    let garbage = send(
        &app,
        get_with("/doc", &[("if-modified-since", "not a date")]),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::OK);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_handler_etag_is_kept() {
    let fx = Fixture::new();
    let app = Router::new().route(
        "/tagged",
        route_get(|| async { ([(header::ETAG, "\"v42\"")], "tagged") }).layer(fx.cache.route()),
    );
    assert_eq!(
        send(&app, get("/tagged")).await.header("etag"),
        Some("\"v42\"")
    );
    let r = send(&app, get_with("/tagged", &[("if-none-match", "W/\"v42\"")])).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

fn cc_app(fx: &Fixture, calls: &Calls) -> Router {
    let c = calls.clone();
    let handler = move |cc: &'static str| {
        let c = c.clone();
        move || {
            let n = c.bump();
            async move {
                let mut res = format!("n{n}").into_response();
                if !cc.is_empty() {
                    res.headers_mut()
                        .insert(header::CACHE_CONTROL, cc.parse().unwrap());
                }
                res
            }
        }
    };
    Router::new()
        .route(
            "/shared",
            route_get(handler("public, max-age=60, s-maxage=600")),
        )
        .route("/browser", route_get(handler("max-age=30")))
        .route("/silent", route_get(handler("")))
        .route(
            "/own",
            route_get(handler("max-age=100")).layer(fx.cache.ttl(Duration::from_secs(10))),
        )
        .layer(fx.cache.layer())
}

#[tokio::test]
async fn app_wide_layer_takes_the_ttl_from_cache_control() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = cc_app(&fx, &calls);
    for (path, ttl) in [("/shared", 600), ("/browser", 30)] {
        assert_eq!(send(&app, get(path)).await.cache_status(), MISS);
        let r = send(&app, get(path)).await;
        assert_eq!(r.cache_status(), hit(ttl), "{path}");
    }
    for _ in 0..2 {
        assert_eq!(
            send(&app, get("/silent")).await.cache_status(),
            bypass("no-ttl")
        );
    }
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn a_per_route_policy_wins_over_the_app_wide_layer() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = cc_app(&fx, &calls);
    for _ in 0..3 {
        send(&app, get("/own")).await;
    }
    let r = send(&app, get("/own")).await;
    assert_eq!(r.cache_status(), hit(10));
    assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
    // The handler's browser policy is left alone unless downstream headers are on.
    assert_eq!(r.header("cache-control"), Some("max-age=100"));
    assert_eq!(calls.get(), 1);
    assert_eq!(fx.entries(), 1);
}

#[tokio::test]
async fn other_methods_on_a_route_with_its_own_layer_still_get_cache_status() {
    let fx = Fixture::new();
    let app = Router::new()
        .route(
            "/items",
            route_get(|| async { "list" })
                .layer(fx.cache.route())
                .post(|| async { (StatusCode::CREATED, "made") }),
        )
        .layer(fx.cache.layer());
    assert_eq!(send(&app, get("/items")).await.cache_status(), MISS);
    assert_eq!(send(&app, get("/items")).await.cache_status(), hit(60));
    for _ in 0..2 {
        let post = http::Request::post("/items")
            .body(axum::body::Body::empty())
            .unwrap();
        let r = send(&app, post).await;
        assert_eq!((r.status, r.text()), (StatusCode::CREATED, "made"));
        assert_eq!(r.cache_status(), bypass("method"));
    }
}

#[tokio::test]
async fn a_route_layer_on_another_method_does_not_hide_get_from_the_app_wide_layer() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let get_feed = route_get(move || {
        c.bump();
        async { ([(header::CACHE_CONTROL, "max-age=30")], "feed") }
    });
    // Only POST has a layer of this cache; GET is left to the app-wide layer.
    let post_feed = axum::routing::post(|| async { "posted" }).layer(fx.cache.route());
    let app = Router::new()
        .route("/feed", get_feed.merge(post_feed))
        .layer(fx.cache.layer());
    let post = http::Request::post("/feed")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, post).await.cache_status(), bypass("method"));
    assert_eq!(send(&app, get("/feed")).await.cache_status(), MISS);
    let again = send(&app, get("/feed")).await;
    assert_eq!(again.cache_status(), hit(30));
    assert_eq!(again.text(), "feed");
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn downstream_max_age_carries_the_remaining_ttl() {
    let fx = Fixture::new();
    let app = Router::new().route(
        "/d",
        route_get(|| async { ([(header::CACHE_CONTROL, "public, max-age=5")], "d") }).layer(
            fx.cache
                .ttl(Duration::from_secs(120))
                .downstream_max_age(true),
        ),
    );
    let first = send(&app, get("/d")).await;
    assert_eq!(first.header("cache-control"), Some("public, max-age=120"));
    fx.clock.advance(Duration::from_secs(20));
    let later = send(&app, get("/d")).await;
    assert_eq!(later.header("cache-control"), Some("public, max-age=100"));
    assert_eq!(later.cache_status(), hit(100));
}

#[tokio::test]
async fn plugs_into_router_layer_route_layer_and_method_router_layer() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let counted = |calls: &Calls| calls.handler();
    let by_router = Router::new()
        .route("/a", counted(&calls))
        .layer(fx.cache.route());
    let by_route_layer = Router::new()
        .route("/b", counted(&calls))
        .route_layer(fx.cache.route());
    let by_method_router = Router::new().route("/c", counted(&calls).layer(fx.cache.route()));
    for (app, path) in [
        (&by_router, "/a"),
        (&by_route_layer, "/b"),
        (&by_method_router, "/c"),
    ] {
        let before = calls.get();
        assert_eq!(send(app, get(path)).await.cache_status(), MISS);
        assert_eq!(send(app, get(path)).await.cache_status(), hit(60));
        assert_eq!(calls.get(), before + 1, "{path}");
    }
}

#[tokio::test]
async fn a_failing_store_is_a_miss_never_an_error() {
    let cache = ResponseCache::builder().store(TestStore::down()).build();
    let calls = Calls::default();
    let app = Router::new().route("/x", calls.handler().layer(cache.route()));
    for n in 1..=3 {
        let r = send(&app, get("/x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("n{n}"));
        assert_eq!(
            r.cache_status(),
            "tower-response-cache; fwd=uri-miss; detail=store-error"
        );
    }
    // Each request's lookup failed; no write is piled onto a store that just failed.
    let stats = cache.metrics().snapshot();
    assert_eq!(stats[0].store_errors, 3);
}

#[tokio::test]
async fn wraps_a_plain_tower_service_outside_axum() {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let svc = tower::service_fn(move |_req: http::Request<String>| {
        let n = c.bump();
        async move { Ok::<_, std::convert::Infallible>(http::Response::new(format!("n{n}"))) }
    });
    let mut svc = tower::Layer::layer(&fx.cache.route(), svc);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = http::Request::get("http://example.com/a")
            .body(String::new())
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        seen.push((status, body));
    }
    assert_eq!(seen[0], (MISS.to_owned(), bytes::Bytes::from("n1")));
    assert_eq!(seen[1], (hit(60), bytes::Bytes::from("n1")));
    assert_eq!(calls.get(), 1);
    // Outside axum there is no route template: the counters go under `*`.
    assert_eq!(fx.cache.metrics().snapshot()[0].route, "*");
}

#[tokio::test]
async fn the_app_wide_layer_stops_looking_up_a_route_with_its_own_layer() {
    let store = TestStore::new();
    let cache = ResponseCache::builder()
        .store(store.clone())
        .clock(ManualClock::new(1_700_000_000_000))
        .build();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/own",
            route_get(move || {
                c.bump();
                async { "own" }
            })
            // Keyed on `x` only, so the app-wide layer's key (all parameters) is another one.
            .layer(cache.ttl(Duration::from_secs(60)).vary_query(["x"])),
        )
        .layer(cache.layer());
    assert_eq!(send(&app, get("/own?x=1&y=2")).await.cache_status(), MISS);
    let before = store.lookups();
    for _ in 0..5 {
        let r = send(&app, get("/own?x=1&y=2")).await;
        assert_eq!((r.cache_status(), r.text()), (hit(60).as_str(), "own"));
    }
    // One lookup per request, the route layer's: the app-wide layer learned to step aside.
    assert_eq!(store.lookups() - before, 5);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn if_modified_since_falls_back_to_date_then_to_the_time_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let counted = |date: Option<&'static str>| {
        let c = calls.clone();
        route_get(move || {
            let n = c.bump();
            async move {
                let mut res = format!("n{n}").into_response();
                if let Some(date) = date {
                    res.headers_mut()
                        .insert(header::DATE, date.parse().unwrap());
                }
                res
            }
        })
        .layer(fx.cache.route())
    };
    let app = Router::new()
        .route("/dated", counted(Some("Wed, 21 Oct 2015 07:28:00 GMT")))
        .route("/bare", counted(None));
    let ims = |path: &str, date: &str| get_with(path, &[("if-modified-since", date)]);

    // No Last-Modified: the stored response's Date is the validator.
    assert_eq!(send(&app, get("/dated")).await.cache_status(), MISS);
    let same = send(&app, ims("/dated", "Wed, 21 Oct 2015 07:28:00 GMT")).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.cache_status(), hit(60));
    assert!(same.body.is_empty());
    let before = send(&app, ims("/dated", "Wed, 21 Oct 2015 07:27:59 GMT")).await;
    assert_eq!((before.status, before.text()), (StatusCode::OK, "n1"));
    assert_eq!(before.cache_status(), hit(60));

    // Neither Last-Modified nor Date: when the cache stored it (the fixture's clock starts at
    // Tue, 14 Nov 2023 22:13:20 GMT; half a second later here).
    fx.clock.advance(Duration::from_millis(500));
    assert_eq!(send(&app, get("/bare")).await.cache_status(), MISS);
    let that_second = send(&app, ims("/bare", "Tue, 14 Nov 2023 22:13:20 GMT")).await;
    assert_eq!(
        (that_second.status, that_second.text()),
        (StatusCode::OK, "n2")
    );
    let next_second = send(&app, ims("/bare", "Tue, 14 Nov 2023 22:13:21 GMT")).await;
    assert_eq!(next_second.status, StatusCode::NOT_MODIFIED);
    assert_eq!(next_second.cache_status(), hit(60));
    assert_eq!(calls.get(), 2);

    // The miss path answers the same way: the response it just stored is not newer.
    fx.cache.clear().await.unwrap();
    let first = send(&app, ims("/bare", "Tue, 14 Nov 2023 22:13:21 GMT")).await;
    assert_eq!(first.status, StatusCode::NOT_MODIFIED);
    assert_eq!(first.cache_status(), MISS);
    assert_eq!(calls.get(), 3);
}

const ONLY_IF_CACHED: &str = "tower-response-cache; detail=only-if-cached";

async fn only_if_cached_is_a_stored_response_or_a_504(store: impl Store) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = ResponseCache::builder()
        .store(store)
        .clock(clock.clone())
        .build();
    let calls = Calls::default();
    let app = Router::new().route(
        "/doc",
        calls.handler().layer(cache.ttl(Duration::from_secs(60))),
    );
    let cached_only = |extra: &[(&str, &str)]| {
        let mut headers = vec![("cache-control", "max-stale=0, only-if-cached")];
        headers.extend_from_slice(extra);
        get_with("/doc", &headers)
    };
    let timeout = |r: &Seen| {
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.cache_status(), ONLY_IF_CACHED);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("0"));
    };

    // Nothing stored yet: 504, and the handler is not called.
    timeout(&send(&app, cached_only(&[])).await);
    assert_eq!(calls.get(), 0);

    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    // A store that waits is written after the response: let the write land.
    cache.flush().await;
    let r = send(&app, cached_only(&[])).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "n1"));
    assert_eq!(r.cache_status(), hit(60));
    let head = http::Request::head("/doc")
        .header("cache-control", "only-if-cached")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, head).await.status, StatusCode::OK);

    // A request the cache may not answer (credentials) cannot be served from it either.
    timeout(&send(&app, cached_only(&[("authorization", "Bearer a")])).await);

    // Expired: no longer fresh, so 504 again.
    clock.advance(Duration::from_secs(61));
    timeout(&send(&app, cached_only(&[])).await);
    assert_eq!(calls.get(), 1);
    let stats = &cache.metrics().snapshot()[0];
    assert_eq!((stats.hits, stats.misses), (2, 3));
    assert_eq!(
        stats.bypasses,
        vec![(tower_response_cache::BypassReason::Authorization, 1)]
    );
}

#[tokio::test]
async fn only_if_cached_on_the_memory_store() {
    only_if_cached_is_a_stored_response_or_a_504(MemoryStore::default()).await;
}

#[tokio::test]
async fn only_if_cached_on_a_store_that_waits() {
    only_if_cached_is_a_stored_response_or_a_504(TestStore::waiting()).await;
}

#[tokio::test]
async fn only_if_cached_under_the_app_wide_layer() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = cc_app(&fx, &calls);
    let cached_only = |path: &str| get_with(path, &[("cache-control", "only-if-cached")]);
    for path in ["/shared", "/silent", "/own"] {
        let r = send(&app, cached_only(path)).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert_eq!(r.cache_status(), ONLY_IF_CACHED, "{path}");
    }
    assert_eq!(calls.get(), 0);
    // `/own` answers through its own layer once the app-wide layer has learned to step aside.
    for (path, body) in [("/shared", "n1"), ("/own", "n2")] {
        send(&app, get(path)).await;
        let r = send(&app, cached_only(path)).await;
        assert_eq!((r.status, r.text()), (StatusCode::OK, body), "{path}");
        assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
    }
    // A client's no-cache with only-if-cached: no stored copy and no handler, so 504.
    let honoring = Router::new().route(
        "/d",
        route_get(|| async { "d" }).layer(fx.cache.route().honor_client_no_cache(true)),
    );
    send(&honoring, get("/d")).await;
    let r = send(
        &honoring,
        get_with("/d", &[("cache-control", "no-cache, only-if-cached")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.get(), 2);
}
