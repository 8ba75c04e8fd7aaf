//! `RedisStore::server_stats`: Redis's own `keyspace_hits`, `keyspace_misses` and
//! `evicted_keys`, read from real servers (one, and every primary of a cluster) next to the
//! cache's own counts.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_response_cache::{
    CacheKey, CachedResponse, Entry, RedisServerStats, RedisStore, ResponseCache, Store,
};

use common::redis_server::{RedisCluster, RedisServer};

async fn send(app: &Router, uri: &str) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// `after - before`, field by field.
fn since(before: &RedisServerStats, after: &RedisServerStats) -> (u64, u64, u64) {
    (
        after.keyspace_hits - before.keyspace_hits,
        after.keyspace_misses - before.keyspace_misses,
        after.evicted_keys - before.evicted_keys,
    )
}

fn entry(len: usize) -> Entry {
    Entry::from(CachedResponse::new(
        StatusCode::OK,
        &http::HeaderMap::new(),
        Bytes::from(vec![b'x'; len]),
        0,
        Duration::from_secs(600),
    ))
}

#[tokio::test]
async fn the_servers_lookups_match_the_caches() {
    let Some(server) = RedisServer::start("server_stats_lookups") else {
        return;
    };
    let store = RedisStore::from_url(&server.url()).await.unwrap();
    assert_eq!(store.stats().server, None, "nothing read yet");
    // Polled once at the first miss, then not again within the test: the generation reads
    // counted below are all done before the server's numbers are read.
    let cache = ResponseCache::builder()
        .store(store.clone())
        .invalidation_poll(Duration::from_secs(3600))
        .build();
    let app = Router::new().route(
        "/page",
        get(|| async { "the page" }).layer(cache.ttl(Duration::from_secs(60))),
    );
    let before = store.server_stats().await.unwrap();
    // Every command that reads the invalidation counters, run alone or inside the poll's script.
    let counter_reads = |server: &RedisServer| {
        server.calls("hmget") + server.calls("hlen") + server.calls("hgetall")
    };
    let reads_before = counter_reads(&server);
    assert_eq!(before.servers, 1);
    send(&app, "/page").await; // GET finds nothing: a keyspace miss; then SET
    cache.flush().await;
    send(&app, "/page").await; // a keyspace hit
    send(&app, "/page").await; // a keyspace hit
    let after = store.server_stats().await.unwrap();
    assert_eq!(
        store.stats().server.as_ref(),
        Some(&after),
        "stats() keeps the last read"
    );
    let route = &cache.stats()[0];
    assert_eq!((route.hits, route.misses), (2, 1));
    // The cache also reads its invalidation generations (`HMGET`, and `HLEN` and `HGETALL` in
    // the poll's script, of a hash nothing has bumped yet, so each read is a keyspace miss): the
    // server counts those too.
    let generation_reads = counter_reads(&server) - reads_before;
    assert!(generation_reads >= 1);
    assert_eq!(since(&before, &after), (2, 1 + generation_reads, 0));
}

#[tokio::test]
async fn the_server_reports_what_it_evicted_under_maxmemory() {
    let Some(server) = RedisServer::start("server_stats_evicted") else {
        return;
    };
    let store = RedisStore::from_url(&server.url()).await.unwrap();
    let before = store.server_stats().await.unwrap();
    server.cli(&["config", "set", "maxmemory-policy", "allkeys-random"]);
    server.cli(&["config", "set", "maxmemory", "4mb"]);
    const KEYS: u64 = 400;
    let mut written = 0;
    for i in 0..KEYS {
        let key = CacheKey::from_parts("evict", &[&i.to_be_bytes()]);
        // Under a full maxmemory a write may itself be refused (OOM): only those written count.
        let put = store.put(&key, entry(32 * 1024), Duration::from_secs(600));
        written += u64::from(put.await.is_ok());
    }
    // Redis evicts before running any command while over maxmemory, `INFO` and `DBSIZE`
    // included: lift the limit so the two read the same keyspace.
    server.cli(&["config", "set", "maxmemory", "0"]);
    let after = store.server_stats().await.unwrap();
    let (_, _, evicted) = since(&before, &after);
    let kept: u64 = server.cli(&["dbsize"]).trim().parse().unwrap();
    assert!(evicted > 0, "nothing evicted, {kept} kept");
    // Every key written is either still there or was evicted.
    assert_eq!(kept + evicted, written);
    assert!(written > KEYS / 2, "only {written} written");
}

#[tokio::test]
async fn a_clusters_numbers_are_summed_over_its_primaries() {
    let Some(cluster) = RedisCluster::start("server_stats_cluster") else {
        return;
    };
    let store = RedisStore::builder(&cluster.url())
        .require_connection(true)
        .connect()
        .await
        .unwrap();
    let before = store.server_stats().await.unwrap();
    assert_eq!(before.servers, 3);
    let ttl = Duration::from_secs(60);
    // Keys spread over the three primaries: each found once and looked for once more missing.
    const KEYS: u32 = 30;
    for i in 0..KEYS {
        let key = CacheKey::from_parts("spread", &[&i.to_be_bytes()]);
        store.put(&key, entry(16), ttl).await.unwrap();
        assert!(store.get(&key).await.unwrap().is_some());
        let missing = CacheKey::from_parts("absent", &[&i.to_be_bytes()]);
        assert!(store.get(&missing).await.unwrap().is_none());
    }
    assert!(cluster.dbsizes().iter().all(|&n| n > 0));
    let after = store.server_stats().await.unwrap();
    assert_eq!(
        since(&before, &after),
        (u64::from(KEYS), u64::from(KEYS), 0)
    );
}
