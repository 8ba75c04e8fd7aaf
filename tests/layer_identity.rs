//! Which responses a layer takes as already handled (only those of its own cache instance), and
//! the two layer modes chosen by the constructor.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Response};
use axum::routing::get as route_get;
use axum::Router;
use common::*;
use tower::ServiceExt;
use tower_response_cache::{MemoryStore, ResponseCache};

/// A cache with the default name (`tower-response-cache`) and its own store.
fn default_named() -> (ResponseCache, MemoryStore) {
    let store = MemoryStore::new(16 * 1024 * 1024);
    let cache = ResponseCache::builder().store(store.clone()).build();
    (cache, store)
}

/// A handler counting its calls and giving its responses a minute of lifetime.
fn counted(calls: &Calls) -> axum::routing::MethodRouter {
    let calls = calls.clone();
    route_get(move || {
        let n = calls.bump();
        async move { ([(header::CACHE_CONTROL, "max-age=60")], format!("call {n}")) }
    })
}

#[tokio::test]
async fn two_caches_with_the_same_name_in_one_app_each_work() {
    let (outer, outer_store) = default_named();
    let (inner, inner_store) = default_named();
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/r",
            counted(&calls).layer(inner.ttl(Duration::from_secs(30))),
        )
        .layer(outer.layer());

    let first = send(&app, get("/r")).await;
    assert_eq!(first.text(), "call 1");
    // Each cache adds its own member: the inner one's response is, to the outer cache, any
    // response the app gave.
    assert_eq!(first.headers.get_all("cache-status").iter().count(), 2);
    assert_eq!(inner_store.entry_count(), 1);
    assert_eq!(
        outer_store.entry_count(),
        1,
        "the outer cache stored it too"
    );

    let second = send(&app, get("/r")).await;
    assert_eq!(second.text(), "call 1");
    assert_eq!(calls.get(), 1);
    assert!(second.cache_status().contains("hit"), "{second:?}");
    let outer_route = outer.metrics().snapshot();
    assert_eq!(outer_route.iter().map(|s| s.hits).sum::<u64>(), 1);
}

#[tokio::test]
async fn a_gateway_caches_what_a_service_using_this_crate_answered() {
    // The backend caches with the default name; its `Cache-Status` travels back to the
    // gateway as a header, with none of the backend's response extensions (as over HTTP).
    let (backend_cache, _) = default_named();
    let backend_calls = Calls::default();
    let backend = Router::new().route(
        "/p",
        counted(&backend_calls).layer(backend_cache.ttl(Duration::from_secs(30))),
    );
    let (gateway_cache, gateway_store) = default_named();
    let proxied = Calls::default();
    let proxy = {
        let proxied = proxied.clone();
        route_get(move |req: Request| {
            proxied.bump();
            let backend = backend.clone();
            async move {
                let (parts, body) = backend.oneshot(req).await.unwrap().into_parts();
                // Status and headers only: extensions do not cross the network.
                let mut out = Response::new(Body::new(body));
                *out.status_mut() = parts.status;
                *out.headers_mut() = parts.headers;
                out
            }
        })
    };
    let app = Router::new()
        .route("/p", proxy)
        .layer(gateway_cache.layer());

    let first = send(&app, get("/p")).await;
    assert_eq!(first.text(), "call 1");
    assert_eq!(gateway_store.entry_count(), 1, "{first:?}");
    let second = send(&app, get("/p")).await;
    assert_eq!(second.text(), "call 1");
    assert_eq!(proxied.get(), 1, "the gateway answered from its own store");
    assert_eq!(backend_calls.get(), 1);
}

#[tokio::test]
async fn ttl_on_the_app_wide_layer_is_a_default_lifetime_and_it_stays_app_wide() {
    let fx = Fixture::new();
    let (own, none, inner) = (Calls::default(), Calls::default(), Calls::default());
    let none_route = {
        let none = none.clone();
        route_get(move || {
            none.bump();
            async { "no lifetime" }
        })
    };
    let own_route = {
        let own = own.clone();
        route_get(move || {
            own.bump();
            async { ([(header::CACHE_CONTROL, "max-age=5")], "own lifetime") }
        })
    };
    let app = Router::new()
        .route("/none", none_route)
        .route("/own", own_route)
        .route(
            "/inner",
            counted(&inner).layer(fx.cache.ttl(Duration::from_secs(60))),
        )
        .layer(fx.cache.layer().ttl(Duration::from_secs(30)));

    for path in ["/none", "/own", "/inner"] {
        send(&app, get(path)).await;
    }
    // A response with no lifetime gets the default; the handler's own lifetime wins.
    assert_eq!(send(&app, get("/none")).await.cache_status(), hit(30));
    assert_eq!(send(&app, get("/own")).await.cache_status(), hit(5));
    // A route with its own layer is still left to it: one member, that layer's TTL.
    let seen = send(&app, get("/inner")).await;
    assert_eq!(seen.cache_status(), hit(60));
    assert_eq!(seen.headers.get_all("cache-status").iter().count(), 1);
    assert_eq!((none.get(), own.get(), inner.get()), (1, 1, 1));
}
