//! The Redis store against real servers, through a real axum Router: Redis killed and restarted,
//! Redis slow, Redis down at start-up, corrupt entries, two apps sharing one Redis, a cluster.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_response_cache::{
    BreakerState, CacheKey, CachedResponse, Entry, RedisStore, ResponseCache, Store, StoreErrorKind,
};

use common::redis_server::{free_port, RedisCluster, RedisServer};
use common::slow_proxy::SlowProxy;

const TIMEOUT: Duration = Duration::from_millis(200);
/// A generous bound on what a request may cost while Redis misbehaves: several command
/// timeouts, so the tests check "bounded", not "fast".
const BOUND: Duration = Duration::from_secs(2);

/// A router with one cached route whose handler counts its calls.
fn app(cache: &ResponseCache, calls: &Arc<AtomicUsize>) -> Router {
    let calls = calls.clone();
    Router::new().route(
        "/page",
        get(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { "the page" }
        })
        .layer(cache.ttl(Duration::from_secs(60))),
    )
}

struct Sent {
    status: StatusCode,
    cache_status: String,
    body: Bytes,
    elapsed: Duration,
}

async fn send(app: &Router) -> Sent {
    let started = Instant::now();
    let res = app
        .clone()
        .oneshot(Request::get("/page").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let cache_status = res
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Sent {
        status,
        cache_status,
        body,
        elapsed: started.elapsed(),
    }
}

fn cache_on(store: &RedisStore, prefix: &str) -> ResponseCache {
    ResponseCache::builder()
        .key_prefix(prefix)
        .store(store.clone())
        .build()
}

#[tokio::test]
async fn killed_redis_is_a_miss_opens_the_breaker_and_recovers_after_restart() {
    let Some(mut server) = RedisServer::start("killed_redis") else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .command_timeout(TIMEOUT)
        .breaker(3, Duration::from_millis(300))
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    let cache = cache_on(&store, "kill");
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(&cache, &calls);

    assert!(send(&app).await.cache_status.contains("stored"));
    // The write follows the response; wait for it before reading the store.
    cache.flush().await;
    assert!(send(&app).await.cache_status.contains("hit"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    server.kill();
    let mut took = Vec::new();
    for i in 0..10 {
        let sent = send(&app).await;
        assert_eq!(sent.status, StatusCode::OK, "request {i} with Redis dead");
        assert_eq!(sent.body, "the page");
        assert!(sent.elapsed < BOUND, "request {i} took {:?}", sent.elapsed);
        took.push(sent.elapsed);
    }
    eprintln!("with Redis killed, request latencies: {took:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        11,
        "the handler served every request"
    );
    let stats = store.stats();
    assert!(stats.breaker_opened >= 1, "{stats:?}");
    assert!(
        stats.rejected > 0,
        "the open breaker failed calls fast: {stats:?}"
    );
    // fred learns of the dead connection from its own reader, asynchronously: the requests
    // above can all be answered (the breaker open) before it has. Polled, not slept.
    let deadline = Instant::now() + Duration::from_secs(2);
    while store.stats().connected {
        assert!(Instant::now() < deadline, "{:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        cache
            .metrics()
            .snapshot()
            .iter()
            .map(|r| r.store_errors)
            .sum::<u64>()
            > 0
    );

    // Same port, empty data: the next request stores again and the one after is a hit,
    // with the same cache and store objects.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = send(&app).await;
        assert_eq!(sent.status, StatusCode::OK);
        if sent.cache_status.contains("hit") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hits never resumed: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.stats().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn slow_redis_costs_at_most_the_timeout_and_stays_consistent() {
    let Some(server) = RedisServer::start("slow_redis") else {
        return;
    };
    let proxy = SlowProxy::start(server.port()).await;
    let store = RedisStore::builder(&format!("redis://127.0.0.1:{}/0", proxy.port))
        .command_timeout(Duration::from_millis(100))
        .pool_size(2)
        .require_connection(true)
        .connect()
        .await
        .expect("connect through the proxy");
    let cache = cache_on(&store, "slow");
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(&cache, &calls);

    proxy.set_delay(Duration::from_millis(600));
    for i in 0..3 {
        let sent = send(&app).await;
        assert_eq!(sent.status, StatusCode::OK);
        assert_eq!(sent.body, "the page");
        assert!(sent.elapsed < BOUND, "request {i} took {:?}", sent.elapsed);
        eprintln!(
            "with Redis 600 ms slow, request {i} took {:?}",
            sent.elapsed
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "every slow lookup fell back to the handler"
    );
    assert!(store.stats().timeouts >= 1, "{:?}", store.stats());

    // Once Redis is fast again, late replies to timed-out commands must not be mistaken for
    // answers to new ones.
    proxy.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The late replies reach the client only after their commands timed out.
    while proxy.held() > 0 {
        assert!(Instant::now() < deadline, "late replies never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ttl = Duration::from_secs(60);
    for i in 0..20u8 {
        let key = CacheKey::from_parts("slow-kv", &[&[i]]);
        let entry = CachedResponse::new(
            StatusCode::OK,
            &http::HeaderMap::new(),
            Bytes::from(vec![i; 8]),
            0,
            ttl,
        );
        // The breaker may still be cooling down from the timeouts: retry until it closes.
        while store.put(&key, entry.clone().into(), ttl).await.is_err() {
            assert!(Instant::now() < deadline, "{:?}", store.stats());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(Entry::Response(back)) = store.get(&key).await.unwrap() else {
            panic!("entry {i} missing")
        };
        assert_eq!(back.body(), &Bytes::from(vec![i; 8]));
    }
}

#[tokio::test]
async fn a_corrupt_entry_is_a_miss_and_is_overwritten() {
    let Some(server) = RedisServer::start("corrupt_entry") else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .require_connection(true)
        .connect()
        .await
        .unwrap();
    let cache = cache_on(&store, "corrupt");
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(&cache, &calls);

    assert!(send(&app).await.cache_status.contains("stored"));
    cache.flush().await;
    let keys = server.cli(&["--scan", "--pattern", "corrupt:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "one printable key: {keys:?}");
    let key = keys[0];
    assert!(key.starts_with("corrupt:{") && key.ends_with('}'), "{key}");

    server.cli(&["SET", key, "garbage from another program"]);
    let sent = send(&app).await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(
        sent.cache_status.contains("stored"),
        "{}",
        sent.cache_status
    );
    cache.flush().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the corrupt value was a miss"
    );
    assert_eq!(store.stats().corrupt, 1);
    assert!(
        server.cli(&["GET", key]).starts_with("TRC"),
        "overwritten with an entry"
    );
    assert!(send(&app).await.cache_status.contains("hit"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_apps_on_one_redis_share_entries() {
    let Some(server) = RedisServer::start("two_apps") else {
        return;
    };
    let connect = || async {
        RedisStore::builder(&server.url())
            .require_connection(true)
            .connect()
            .await
            .unwrap()
    };
    let (store_a, store_b) = (connect().await, connect().await);
    let (calls_a, calls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let cache_a = cache_on(&store_a, "shared");
    let app_a = app(&cache_a, &calls_a);
    let app_b = app(&cache_on(&store_b, "shared"), &calls_b);

    assert!(send(&app_a).await.cache_status.contains("stored"));
    cache_a.flush().await;
    let sent = send(&app_b).await;
    assert!(sent.cache_status.contains("hit"), "{}", sent.cache_status);
    assert_eq!(sent.body, "the page");
    assert_eq!(
        (
            calls_a.load(Ordering::SeqCst),
            calls_b.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn starts_while_redis_is_down_and_connects_when_it_comes_up() {
    if !common::redis_server::available("starts_while_down") {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let err = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(200))
        .require_connection(true)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);

    let started = Instant::now();
    let store = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(200))
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await
        .expect("the store starts without Redis");
    assert!(started.elapsed() < BOUND);
    let key = CacheKey::from_parts("down", &[b"k"]);
    let err = store.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);

    let mut server = RedisServer::stopped_on(port);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never connected: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ttl = Duration::from_secs(5);
    store
        .put(&key, Entry::Vary(vec![].into()), ttl)
        .await
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn cluster_entries_spread_across_masters_and_clear_everywhere() {
    let Some(cluster) = RedisCluster::start("cluster_spread") else {
        return;
    };
    let store = RedisStore::from_url(&cluster.url()).await.unwrap();
    assert!(store.is_clustered());
    let ttl = Duration::from_secs(60);
    for i in 0..100u32 {
        let key = CacheKey::from_parts("spread", &[&i.to_be_bytes()]);
        store
            .put(&key, Entry::Vary(vec![].into()), ttl)
            .await
            .unwrap();
    }
    let sizes = cluster.dbsizes();
    assert_eq!(sizes.iter().sum::<u64>(), 100, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n > 0),
        "every master holds some: {sizes:?}"
    );

    assert_eq!(store.clear_prefix("spread:").await.unwrap(), 100);
    assert_eq!(cluster.dbsizes(), [0, 0, 0]);
}
