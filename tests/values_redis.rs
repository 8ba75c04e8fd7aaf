//! The low-level API on a real Redis and a 3-master Redis Cluster (the suite of
//! `tests/values.rs`), and what it does when Redis is down.

mod common;
#[path = "common/values_invalidation.rs"]
mod invalidation;
#[path = "common/values_suite.rs"]
mod suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_response_cache::{RedisStore, ResponseCache};

use common::redis_server::{available, free_port, RedisCluster, RedisServer};
use suite::{ada, Influencer, TTL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_conforms() {
    let Some(server) = RedisServer::start("values_redis_conforms") else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    suite::conforms(Arc::new(store.clone())).await;
    invalidation::conforms(Arc::new(store.clone())).await;
    let stats = store.stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
    // What an operator sees: readable keys under the prefix.
    let cache = suite::cache_on(&(Arc::new(store) as _), "twiscope");
    cache.set("top:twitter", &ada(), TTL).await.unwrap();
    let cli = |args: &[&str]| server.cli(args).trim().to_owned();
    assert_eq!(cli(&["EXISTS", "twiscope:v:top:twitter"]), "1");
    cache.incr("version:twitter", 3).await.unwrap();
    assert_eq!(cli(&["GET", "twiscope:v:version:twitter"]), "3");
    assert_eq!(
        cli(&["TTL", "twiscope:v:version:twitter"]),
        "-1",
        "a new counter never expires"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_conforms() {
    let Some(cluster) = RedisCluster::start("values_redis_cluster_conforms") else {
        return;
    };
    let store = RedisStore::builder(&cluster.url())
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    assert!(store.is_clustered());
    suite::conforms(Arc::new(store.clone())).await;
    invalidation::conforms(Arc::new(store.clone())).await;
    assert_eq!(store.stats().errors, 0, "{:?}", store.stats());

    // Pattern removal reaches every primary, not only the one the client asks first.
    let cache = suite::cache_on(&(Arc::new(store) as _), "spread");
    let before = cluster.dbsizes();
    for i in 0..90 {
        cache.set(&format!("item:{i}"), &i, TTL).await.unwrap();
    }
    let sizes = cluster.dbsizes();
    let grew = sizes.iter().zip(&before).all(|(now, then)| now > then);
    assert!(grew, "keys on every primary: {before:?} -> {sizes:?}");
    assert_eq!(cache.remove_pattern("item:*").await.unwrap(), 90);
    assert_eq!(cluster.dbsizes(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_reads_miss_and_get_or_insert_with_still_computes() {
    if !available("values_redis_down") {
        return;
    }
    let server = RedisServer::stopped_on(free_port());
    let store = RedisStore::builder(&server.url())
        .command_timeout(Duration::from_millis(100))
        .connect()
        .await
        .expect("starts without Redis");
    let cache = ResponseCache::builder().store(store).build();
    assert_eq!(cache.get::<Influencer>("k").await, None);
    assert!(cache.set("k", &ada(), TTL).await.is_err());
    assert!(cache.incr("n", 1).await.is_err());
    assert!(cache.remove_pattern("*").await.is_err());
    let computed = AtomicUsize::new(0);
    for _ in 0..3 {
        let got = cache
            .get_or_insert_with("k", TTL, || async {
                computed.fetch_add(1, Ordering::SeqCst);
                ada()
            })
            .await;
        assert_eq!(got, ada());
    }
    assert_eq!(computed.load(Ordering::SeqCst), 3);
    let fragment = cache
        .fragment("f", &[], TTL, || async { "<p>rendered</p>".to_owned() })
        .await;
    assert_eq!(fragment, "<p>rendered</p>");
}
