//! `cache.invalidate(&layer.key_for(&request))` for the request a user naturally writes: without
//! a Host it drops that URL on every host (and every `Vary` variant, header value and user);
//! with one, that host's entry only. Through a real axum Router, on memory and Redis.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, Request};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower_response_cache::{CacheLayer, MemoryStore, ResponseCache, Store};

use common::{get_with, send, Calls};

type Req<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Counts its calls; varies on `Accept-Language` when the request has one.
fn counted(calls: &Calls) -> MethodRouter {
    let calls = calls.clone();
    get(move |headers: HeaderMap| {
        let n = calls.bump();
        let varies = headers.contains_key(header::ACCEPT_LANGUAGE);
        async move {
            let mut res = format!("n{n}").into_response();
            if varies {
                res.headers_mut()
                    .insert(header::VARY, "accept-language".parse().unwrap());
            }
            res
        }
    })
}

struct Site {
    cache: ResponseCache,
    app: Router,
    calls: Calls,
    items: CacheLayer,
    tenants: CacheLayer,
    mine: CacheLayer,
    nested: CacheLayer,
}

impl Site {
    fn new(cache: ResponseCache) -> Self {
        let calls = Calls::default();
        let ttl = Duration::from_secs(60);
        let items = cache.ttl(ttl);
        let tenants = cache
            .ttl(ttl)
            .vary_headers([HeaderName::from_static("x-tenant")]);
        let mine = cache.ttl(ttl).per_user(|p: &http::request::Parts| {
            p.headers
                .get("x-user")
                .map(|v| v.to_str().unwrap().to_owned())
        });
        let nested = cache.ttl(ttl).vary_query(["page"]);
        let inner = Router::new().route("/items", counted(&calls).layer(nested.clone()));
        let app = Router::new()
            .route("/items", counted(&calls).layer(items.clone()))
            .route("/tenants", counted(&calls).layer(tenants.clone()))
            .route("/mine", counted(&calls).layer(mine.clone()))
            .nest("/v2", inner);
        Self {
            cache,
            app,
            calls,
            items,
            tenants,
            mine,
            nested,
        }
    }

    async fn expect(&self, reqs: &[Req<'_>], want: &str) {
        let before = self.calls.get();
        for (uri, headers) in reqs {
            let seen = send(&self.app, get_with(uri, headers)).await;
            self.cache.flush().await;
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
        let misses = if want == "miss" { reqs.len() } else { 0 };
        assert_eq!(self.calls.get() - before, misses, "handler calls");
    }

    async fn fill(&self, reqs: &[Req<'_>]) {
        self.expect(reqs, "miss").await;
        self.expect(reqs, "hit").await;
    }

    async fn invalidate(&self, layer: &CacheLayer, uri: &str, host: Option<&str>) -> u64 {
        let mut req = Request::get(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        let key = layer.key_for(&req.body(()).unwrap());
        self.cache.invalidate(&key).await.unwrap()
    }
}

const BROWSER: (&str, &str) = ("host", "localhost:3000");
const PAGE_1: &[Req<'static>] = &[
    ("/items?page=1", &[BROWSER]),
    ("/items?page=1&utm_source=mail", &[("host", "b.example")]),
];
const PAGE_2: &[Req<'static>] = &[("/items?page=2", &[BROWSER])];

/// The issue's scenario: browsers send a Host; the recipe's request has none. Page 1 misses
/// on every host, page 2 still hits.
async fn the_issue_scenario(site: &Site) {
    site.fill(PAGE_1).await;
    site.fill(PAGE_2).await;
    site.invalidate(&site.items, "/items?page=1", None).await;
    site.expect(PAGE_1, "miss").await;
    site.expect(PAGE_2, "hit").await;
    site.expect(PAGE_1, "hit").await;
}

/// With a Host, only that host's entry goes, and it is removed from the store.
async fn with_a_host_the_exact_entry(site: &Site) {
    site.fill(PAGE_1).await;
    let removed = site
        .invalidate(&site.items, "/items?page=1", Some("localhost:8080"))
        .await;
    assert_eq!(removed, 1);
    site.expect(&PAGE_1[..1], "miss").await;
    site.expect(&PAGE_1[1..], "hit").await;
    // An absolute URI names its host the same way.
    site.invalidate(&site.items, "http://b.example/items?page=1", None)
        .await;
    site.expect(&PAGE_1[1..], "miss").await;
    site.expect(&PAGE_1[..1], "hit").await;
}

/// Every `Vary` variant, configured header value and user of the URL goes.
async fn variants_headers_and_users(site: &Site) {
    let langs: &[Req<'_>] = &[
        ("/items?page=1", &[BROWSER, ("accept-language", "en")]),
        ("/items?page=1", &[BROWSER, ("accept-language", "es")]),
    ];
    let tenants: &[Req<'_>] = &[
        ("/tenants", &[BROWSER, ("x-tenant", "a")]),
        ("/tenants", &[BROWSER, ("x-tenant", "b")]),
    ];
    let users: &[Req<'_>] = &[
        ("/mine", &[BROWSER, ("x-user", "alice")]),
        ("/mine", &[BROWSER, ("x-user", "bob")]),
    ];
    site.fill(langs).await;
    site.fill(tenants).await;
    site.fill(users).await;
    site.invalidate(&site.items, "/items?page=1", None).await;
    site.expect(langs, "miss").await;
    site.expect(tenants, "hit").await;
    site.invalidate(&site.tenants, "/tenants", None).await;
    site.expect(tenants, "miss").await;
    site.expect(users, "hit").await;
    site.invalidate(&site.mine, "/mine", None).await;
    site.expect(users, "miss").await;
    site.expect(langs, "hit").await;
}

/// In a nested router, `key_for` on the inner layer takes the path the client sends.
async fn nested_routers(site: &Site) {
    let page_1: &[Req<'_>] = &[("/v2/items?page=1&sort=new", &[BROWSER])];
    let page_2: &[Req<'_>] = &[("/v2/items?page=2", &[BROWSER])];
    site.fill(page_1).await;
    site.fill(page_2).await;
    site.invalidate(&site.nested, "/items?page=1", None).await;
    site.expect(page_1, "hit").await;
    site.invalidate(&site.nested, "/v2/items?page=1", None)
        .await;
    site.expect(page_1, "miss").await;
    site.expect(page_2, "hit").await;
}

async fn all<F: Fn() -> ResponseCache>(make: F) {
    the_issue_scenario(&Site::new(make())).await;
    with_a_host_the_exact_entry(&Site::new(make())).await;
    variants_headers_and_users(&Site::new(make())).await;
    nested_routers(&Site::new(make())).await;
}

fn on(store: Arc<dyn Store>) -> ResponseCache {
    ResponseCache::builder()
        .shared_store(store)
        .key_prefix("keyfor")
        .build()
}

#[tokio::test]
async fn key_for_and_invalidate_on_the_memory_store() {
    all(|| on(Arc::new(MemoryStore::new(16 << 20)))).await;
}

async fn on_redis(url: &str) {
    use common::redis_server::fresh_prefix;
    let store = common::connect_redis(url).await;
    all(|| {
        ResponseCache::builder()
            .store(store.clone())
            .key_prefix(fresh_prefix("keyfor"))
            .build()
    })
    .await;
}

#[tokio::test]
async fn key_for_and_invalidate_on_redis() {
    let Some(server) = common::redis_server::RedisServer::start("key_for_invalidate_redis") else {
        return;
    };
    on_redis(&server.url()).await;
}

#[tokio::test]
async fn key_for_and_invalidate_on_a_redis_cluster() {
    let Some(cluster) = common::redis_server::RedisCluster::start("key_for_invalidate_cluster")
    else {
        return;
    };
    on_redis(&cluster.url()).await;
}

/// A key made for every host still equals the layer's key of a request without a host, and
/// still removes that entry (and says so).
#[tokio::test]
async fn a_key_for_every_host_is_still_the_hostless_entry() {
    let site = Site::new(on(Arc::new(MemoryStore::new(1 << 20))));
    site.fill(&[("/items?page=3", &[])]).await;
    assert_eq!(site.invalidate(&site.items, "/items?page=3", None).await, 1);
    site.expect(&[("/items?page=3", &[])], "miss").await;
}
