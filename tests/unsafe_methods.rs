//! RFC 9111 §4.4 through a real axum Router: a POST, PUT, PATCH or DELETE answered 2xx/3xx
//! drops the entries of its path and of a same-host `Location` / `Content-Location`; an error
//! drops nothing; a layer can opt out. On the memory store and a real redis-server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower::{Layer, ServiceExt};
use tower_response_cache::{MemoryStore, ResponseCache};

use common::test_store::TestStore;
use common::{send, Calls, Seen};

/// Answers a write with the status in `x-status` (default 201) and the `Location` /
/// `Content-Location` in `x-location` / `x-content-location`.
async fn write(headers: HeaderMap) -> impl IntoResponse {
    let status = headers
        .get("x-status")
        .map_or(201, |v| v.to_str().unwrap().parse().unwrap());
    let mut res = StatusCode::from_u16(status).unwrap().into_response();
    for (from, to) in [
        ("x-location", "location"),
        ("x-content-location", "content-location"),
    ] {
        if let Some(v) = headers.get(from) {
            res.headers_mut().insert(to, v.clone());
        }
    }
    res
}

/// A GET that counts its calls and, for the app-wide layer, marks itself cacheable.
fn page(calls: &Calls) -> MethodRouter {
    let calls = calls.clone();
    get(move || {
        let n = calls.bump();
        async move { ([("cache-control", "max-age=60")], format!("n{n}")) }
    })
}

struct Site {
    cache: ResponseCache,
    app: Router,
    calls: Calls,
}

impl Site {
    fn new(cache: ResponseCache) -> Self {
        let calls = Calls::default();
        let route = || cache.ttl(Duration::from_secs(60));
        let nested = Router::new()
            .route("/things", page(&calls).post(write).layer(route()))
            .route("/things/{id}", page(&calls).post(write).layer(route()));
        let app = Router::new()
            .route("/items", page(&calls).post(write).layer(route()))
            .route(
                "/items/{id}",
                page(&calls)
                    .post(write)
                    .put(write)
                    .patch(write)
                    .delete(write)
                    .layer(route()),
            )
            // Only the app-wide layer sees these writes.
            .route("/plain", page(&calls).post(write))
            .route(
                "/optout",
                page(&calls)
                    .post(write)
                    .layer(route().invalidate_on_unsafe(false)),
            )
            .nest("/v2", nested)
            .layer(cache.layer());
        Self { cache, app, calls }
    }

    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Seen {
        let mut req = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let seen = send(&self.app, req.body(Body::empty()).unwrap()).await;
        self.cache.flush().await;
        seen
    }

    /// Asserts every GET's outcome (`hit` or `miss`) and that the handler ran once per miss.
    async fn expect(&self, gets: &[(&str, &[(&str, &str)])], want: &str) {
        let before = self.calls.get();
        for (uri, headers) in gets {
            let seen = self.send("GET", uri, headers).await;
            let status = seen.cache_status();
            let got = if status.contains("; hit") {
                "hit"
            } else if status.contains("fwd=uri-miss") {
                "miss"
            } else {
                panic!("{uri}: neither hit nor miss: {status}")
            };
            assert_eq!(got, want, "GET {uri} {headers:?}");
        }
        let misses = if want == "miss" { gets.len() } else { 0 };
        assert_eq!(self.calls.get() - before, misses, "handler calls");
    }

    async fn fill(&self, gets: &[(&str, &[(&str, &str)])]) {
        self.expect(gets, "miss").await;
        self.expect(gets, "hit").await;
    }

    /// The store's invalidation sequence: one step per invalidation.
    async fn seq(&self) -> u64 {
        let prefix = self.cache.key_prefix();
        self.cache
            .store()
            .generations(prefix, &[])
            .await
            .unwrap()
            .seq
    }
}

const HOST: (&str, &str) = ("host", "example.com");
const ITEMS: &[(&str, &[(&str, &str)])] = &[
    ("/items", &[]),
    ("/items?page=1", &[]),
    ("/items?page=2", &[HOST]),
    ("/items", &[("host", "other.example")]),
];
const ITEM_7: &[(&str, &[(&str, &str)])] = &[("/items/7", &[]), ("/items/7?v=1", &[HOST])];
const ITEM_8: &[(&str, &[(&str, &str)])] = &[("/items/8", &[HOST])];

/// A successful POST drops its own path (every query and host) before its response is
/// returned; other paths keep hitting; under the app-wide layer and the route's own layer it
/// invalidates once.
async fn a_successful_write_drops_its_path(site: &Site) {
    site.fill(ITEMS).await;
    site.fill(ITEM_7).await;
    let seq = site.seq().await;
    let res = site.send("POST", "/items", &[HOST]).await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert!(res.cache_status().contains("fwd=bypass; detail=method"));
    assert_eq!(
        site.seq().await,
        seq + 1,
        "one invalidation, not one per layer"
    );
    site.expect(ITEMS, "miss").await;
    site.expect(ITEM_7, "hit").await;

    // A redirect after the write (303 See Other) is a success too; so are PATCH and DELETE.
    site.expect(ITEMS, "hit").await;
    site.send("POST", "/items", &[("x-status", "303")]).await;
    site.expect(ITEMS, "miss").await;
    for method in ["PATCH", "DELETE"] {
        site.send(method, "/items/7", &[]).await;
        site.expect(ITEM_7, "miss").await;
        site.expect(ITEM_7, "hit").await;
    }
}

/// An error answer changed nothing, so it invalidates nothing.
async fn an_error_drops_nothing(site: &Site) {
    site.fill(ITEMS).await;
    let seq = site.seq().await;
    for status in ["500", "404", "422"] {
        let res = site.send("POST", "/items", &[("x-status", status)]).await;
        assert_eq!(res.status.as_str(), status);
    }
    assert_eq!(site.seq().await, seq);
    site.expect(ITEMS, "hit").await;
}

/// `Location` and `Content-Location` on the request's host (relative or absolute) are dropped
/// too; another host's, or a malformed header, never are.
async fn same_host_locations_are_dropped_others_ignored(site: &Site) {
    site.fill(ITEMS).await;
    site.fill(ITEM_7).await;
    site.fill(ITEM_8).await;
    site.send("PUT", "/items/7", &[HOST, ("x-location", "8")])
        .await;
    site.expect(ITEM_7, "miss").await;
    site.expect(ITEM_8, "miss").await;
    site.expect(ITEMS, "hit").await;

    let absolute = [
        HOST,
        ("x-content-location", "http://EXAMPLE.com:8080/items"),
    ];
    site.send("PUT", "/items/7", &absolute).await;
    site.expect(ITEMS, "miss").await;
    site.expect(ITEM_7, "miss").await;
    site.expect(ITEM_8, "hit").await;

    for (name, value) in [
        ("x-location", "http://other.example/items/8"),
        ("x-location", "//other.example/items/8"),
        ("x-content-location", "https://example.com.evil/items/8"),
        ("x-location", "http://[::1/items/8"),
    ] {
        site.send("PUT", "/items/7", &[HOST, (name, value)]).await;
        site.expect(ITEM_7, "miss").await;
        site.expect(ITEM_8, "hit").await;
        site.expect(ITEMS, "hit").await;
    }
    // Without a Host, an absolute Location cannot be on the same host.
    site.send(
        "PUT",
        "/items/7",
        &[("x-location", "http://example.com/items/8")],
    )
    .await;
    site.expect(ITEM_8, "hit").await;
}

/// A layer that opts out leaves its pages alone; a route only the app-wide layer covers is
/// invalidated by it.
async fn opt_out_and_app_wide(site: &Site) {
    let optout: &[(&str, &[(&str, &str)])] = &[("/optout", &[])];
    let plain: &[(&str, &[(&str, &str)])] = &[("/plain", &[]), ("/plain?a=1", &[])];
    site.fill(optout).await;
    site.fill(plain).await;
    let seq = site.seq().await;
    site.send("POST", "/optout", &[]).await;
    assert_eq!(site.seq().await, seq, "the route's own layer opted out");
    site.expect(optout, "hit").await;
    site.send("POST", "/plain", &[]).await;
    assert_eq!(site.seq().await, seq + 1);
    site.expect(plain, "miss").await;
    site.expect(optout, "hit").await;
}

/// In a nested router, paths are the client's: a relative `Location` resolves against the
/// path with its mount prefix, and an absolute one names it.
async fn nested_routers_use_the_clients_paths(site: &Site) {
    let things: &[(&str, &[(&str, &str)])] = &[("/v2/things", &[]), ("/v2/things?p=2", &[])];
    let nine: &[(&str, &[(&str, &str)])] = &[("/v2/things/9", &[])];
    let ten: &[(&str, &[(&str, &str)])] = &[("/v2/things/10", &[])];
    site.fill(things).await;
    site.fill(nine).await;
    site.fill(ten).await;
    site.send("POST", "/v2/things", &[("x-location", "things/9")])
        .await;
    site.expect(things, "miss").await;
    site.expect(nine, "miss").await;
    site.expect(ten, "hit").await;
    site.send("POST", "/v2/things", &[("x-location", "/v2/things/10")])
        .await;
    site.expect(ten, "miss").await;
    site.expect(nine, "hit").await;
}

async fn all<F: Fn() -> ResponseCache>(make: F) {
    a_successful_write_drops_its_path(&Site::new(make())).await;
    an_error_drops_nothing(&Site::new(make())).await;
    same_host_locations_are_dropped_others_ignored(&Site::new(make())).await;
    opt_out_and_app_wide(&Site::new(make())).await;
    nested_routers_use_the_clients_paths(&Site::new(make())).await;
}

fn on(store: Arc<dyn tower_response_cache::Store>) -> ResponseCache {
    ResponseCache::builder()
        .shared_store(store)
        .key_prefix("unsafe")
        .build()
}

#[tokio::test]
async fn writes_invalidate_on_the_memory_store() {
    all(|| on(Arc::new(MemoryStore::new(16 << 20)))).await;
}

/// On the memory store, a write to paths no entry was ever stamped with bumps nothing: the
/// counters do not grow with every path written to, and cached pages keep their fast check.
/// The store decides, not the cache: a second cache sharing the store still reaches the
/// first one's entries, and a carried `Location` is still dropped.
#[tokio::test]
async fn writes_no_entry_carries_bump_nothing_on_the_memory_store() {
    let store: Arc<dyn tower_response_cache::Store> = Arc::new(MemoryStore::new(16 << 20));
    let site = Site::new(on(store.clone()));
    let other = Site::new(on(store.clone()));
    let prefix = site.cache.key_prefix().to_owned();
    let gen_of = |path: &str| {
        let (store, prefix) = (store.clone(), prefix.clone());
        let name: Arc<str> = Arc::from(format!("path:{path}"));
        async move { store.generations(&prefix, &[name]).await.unwrap().gens[0] }
    };
    let seq = site.seq().await;
    for path in ["/items", "/items/7", "/plain"] {
        let res = site.send("POST", path, &[]).await;
        assert_eq!(res.status, StatusCode::CREATED);
        assert!(res.cache_status().contains("fwd=bypass; detail=method"));
    }
    assert_eq!(site.seq().await, seq, "nothing was cached: nothing bumped");
    assert_eq!(gen_of("/items").await, 0, "no counter made for the path");

    // Cached through the other cache: this one's write still drops it.
    other.fill(ITEMS).await;
    site.send("POST", "/items", &[]).await;
    assert_eq!(site.seq().await, seq + 1);
    assert_ne!(gen_of("/items").await, 0);
    other.expect(ITEMS, "miss").await;

    // Only the Location is carried: still one invalidation, and it drops that page.
    site.fill(ITEM_7).await;
    site.send("POST", "/plain", &[("x-location", "/items/7")])
        .await;
    assert_eq!(site.seq().await, seq + 2);
    site.expect(ITEM_7, "miss").await;
    other.expect(ITEMS, "hit").await;
}

/// A store that only answers asynchronously takes the boxed invalidation's waiting path.
#[tokio::test]
async fn writes_invalidate_on_a_store_that_answers_later() {
    all(|| on(Arc::new(TestStore::waiting()))).await;
}

#[cfg(feature = "redis")]
async fn on_redis(url: &str) {
    use common::redis_server::fresh_prefix;
    let store = common::connect_redis(url).await;
    all(|| {
        ResponseCache::builder()
            .store(store.clone())
            .key_prefix(fresh_prefix("unsafe"))
            .build()
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn writes_invalidate_on_redis() {
    let Some(server) = common::redis_server::RedisServer::start("unsafe_methods_redis") else {
        return;
    };
    on_redis(&server.url()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn writes_invalidate_on_a_redis_cluster() {
    let Some(cluster) = common::redis_server::RedisCluster::start("unsafe_methods_cluster") else {
        return;
    };
    on_redis(&cluster.url()).await;
}

/// A store that fails the invalidation: the write's response goes out unchanged.
#[tokio::test]
async fn a_store_failure_leaves_the_response_unchanged() {
    let store = TestStore::new();
    let site = Site::new(on(Arc::new(store.clone())));
    store.set_down(true);
    let res = site
        .send("POST", "/items", &[("x-location", "/items/7")])
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(res.header("location"), Some("/items/7"));
}

/// The service's `Err` invalidates nothing either (plain tower: axum handlers cannot fail).
#[tokio::test]
async fn a_failed_service_drops_nothing() {
    let cache = on(Arc::new(MemoryStore::new(1 << 20)));
    let calls = Calls::default();
    let counted = calls.clone();
    let svc =
        cache
            .ttl(Duration::from_secs(60))
            .layer(tower::service_fn(move |req: Request<Body>| {
                let n = counted.bump();
                async move {
                    if req.method() == "POST" {
                        Err::<axum::response::Response, _>("down")
                    } else {
                        Ok::<_, &str>(format!("n{n}").into_response())
                    }
                }
            }));
    let req = |m: &str| Request::builder().method(m).uri("/a").body(Body::empty());
    svc.clone().oneshot(req("GET").unwrap()).await.unwrap();
    let hit = svc.clone().oneshot(req("GET").unwrap()).await.unwrap();
    assert!(hit.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("hit"));
    assert!(svc.clone().oneshot(req("POST").unwrap()).await.is_err());
    let hit = svc.clone().oneshot(req("GET").unwrap()).await.unwrap();
    assert!(hit.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("hit"));
}
