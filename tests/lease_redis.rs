//! Fleet-wide stampede control (`CacheLayer::lease`) on a real Redis: two caches, each on its
//! own connection, stand for two processes of a fleet.
//!
//! Real time throughout, on purpose: a lease expires on Redis's clock (`PX`), which no paused
//! tokio clock moves. Durations are kept short (a few hundred ms) and the bounds generous.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get as route_get;
use axum::Router;
use tower_response_cache::{CacheLayer, MemoryStore, RedisStore, ResponseCache, Store};

use common::connect_redis as connect;
use common::redis_server::{RedisCluster, RedisServer};
use common::{get, send, Calls};

/// How long the handler computes: long enough that every request of a burst arrives while it
/// runs, short enough to keep the tests quick.
const WORK: Duration = Duration::from_millis(300);

fn cache(store: RedisStore, prefix: &str) -> ResponseCache {
    ResponseCache::builder()
        .store(store)
        .key_prefix(prefix)
        .build()
}

/// `/work` answering `n1`, `n2`… after [`WORK`], behind `layer`.
fn app(calls: &Calls, layer: CacheLayer) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/work",
        route_get(move || {
            let n = c.bump();
            async move {
                tokio::time::sleep(WORK).await;
                format!("n{n}")
            }
        })
        .layer(layer),
    )
}

fn leased(cache: &ResponseCache) -> CacheLayer {
    cache
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(3))
}

/// `n` concurrent cold requests for `/work`, alternating between `apps`; every response must be
/// a `200` with one body, which is returned.
async fn burst(apps: &[Router], n: usize) -> String {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let app = apps[i % apps.len()].clone();
            tokio::spawn(async move { send(&app, get("/work")).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(seen.status, 200);
        bodies.push(seen.text().to_owned());
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        1,
        "more than one computation served: {bodies:?}"
    );
    bodies.pop().unwrap()
}

/// Two "processes" (caches on their own connections, one prefix) and 40 cold requests split
/// between them: one handler call in the whole fleet.
async fn one_computation_fleet_wide(url: &str) {
    let prefix = common::redis_server::fresh_prefix("lease");
    let calls = Calls::default();
    let a = cache(connect(url).await, &prefix);
    let b = cache(connect(url).await, &prefix);
    let apps = [app(&calls, leased(&a)), app(&calls, leased(&b))];
    let body = burst(&apps, 40).await;
    assert_eq!(calls.get(), 1, "handler calls across both processes");
    assert_eq!(body, "n1");
    // The process that waited answered the other's entry as a hit.
    let waited: u64 = [&a, &b]
        .iter()
        .flat_map(|c| c.metrics().snapshot())
        .map(|r| r.coalesced)
        .sum();
    assert!(waited >= 1, "nobody waited on the other process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_run_the_handler_once() {
    let Some(server) = RedisServer::start("two_processes_run_the_handler_once") else {
        return;
    };
    one_computation_fleet_wide(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_cluster_run_the_handler_once() {
    let Some(cluster) = RedisCluster::start("two_processes_on_a_cluster_run_the_handler_once")
    else {
        return;
    };
    one_computation_fleet_wide(&cluster.url()).await;
}

/// The figure on Redis: a thousand concurrent cold requests in one process, no lease,
/// one handler call. Every request's first lookup goes to Redis and finds nothing; in-process
/// coalescing must still hold them all behind one leader (the waiters' lookup budget is for
/// reading Redis, not for waiting on that leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_requests_run_the_handler_once() {
    let Some(server) = RedisServer::start("a_thousand_concurrent_cold_requests") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("thousand");
    let calls = Calls::default();
    // A failed lookup is a miss that waits on nobody, by design: commands get ample time so a
    // loaded machine does not fail them. The lookup budget (1 s) is shorter than the handler
    // (2 s): the waiters' lookup after the leader must not be charged for the wait.
    let store = RedisStore::builder(&server.url())
        .command_timeout(Duration::from_secs(5))
        .require_connection(true)
        .connect()
        .await
        .unwrap();
    let c = ResponseCache::builder()
        .store(store)
        .key_prefix(prefix)
        .lookup_timeout(Duration::from_secs(1))
        .build();
    let cc = calls.clone();
    let app = Router::new().route(
        "/work",
        route_get(move || {
            let n = cc.bump();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                format!("n{n}")
            }
        })
        .layer(c.ttl(Duration::from_secs(60))),
    );
    assert_eq!(burst(&[app], 1_000).await, "n1");
    assert_eq!(calls.get(), 1, "handler calls");
}

/// The lock a process holds while computing `/work` under `layer`, as Redis names it.
fn lock_of(layer: &CacheLayer) -> String {
    format!("{}:lock", layer.key_for(&get("/work")))
}

/// A process that took the lease and died: its lease runs out, then a waiter computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_and_a_waiter_takes_over() {
    let Some(server) = RedisServer::start("a_dead_holders_lease_expires") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("lease");
    let store = connect(&server.url()).await;
    let c = cache(store.clone(), &prefix);
    let layer = c
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(1))
        .lease_wait(Duration::from_secs(2));
    let dead = Duration::from_millis(400);
    let key = layer.key_for(&get("/work"));
    assert!(store.take_lease(&key, "dead", dead).await.unwrap());
    let left: u64 = server
        .cli(&["pttl", &lock_of(&layer)])
        .trim()
        .parse()
        .unwrap();
    let calls = Calls::default();
    let app = app(&calls, layer);

    let start = Instant::now();
    let seen = send(&app, get("/work")).await;
    let took = start.elapsed();
    assert_eq!(seen.status, 200);
    assert_eq!(calls.get(), 1);
    // Waited for the lease to run out (then computed for WORK), and not past the bound.
    assert!(
        took >= Duration::from_millis(left) + WORK,
        "did not wait for the dead holder's lease ({left} ms left): {took:?}"
    );
    assert!(
        took <= Duration::from_secs(2) + WORK + Duration::from_millis(500),
        "{took:?}"
    );
}

/// A wait bound shorter than the dead holder's lease: the request goes to the handler at the
/// bound, without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_falls_through_to_the_handler_at_its_bound() {
    let Some(server) = RedisServer::start("a_short_wait_falls_through") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("lease");
    let store = connect(&server.url()).await;
    let c = cache(store.clone(), &prefix);
    let bound = Duration::from_millis(300);
    let layer = c
        .ttl(Duration::from_secs(60))
        .lease_wait(bound)
        .lease(Duration::from_secs(1));
    let key = layer.key_for(&get("/work"));
    assert!(store
        .take_lease(&key, "dead", Duration::from_secs(10))
        .await
        .unwrap());
    let calls = Calls::default();
    let app = app(&calls, layer);

    let start = Instant::now();
    let seen = send(&app, get("/work")).await;
    let took = start.elapsed() - WORK;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.text(), "n1");
    assert_eq!(calls.get(), 1);
    assert!(took >= bound, "did not wait for the holder: {took:?}");
    assert!(
        took <= bound + Duration::from_millis(250),
        "waited past the bound: {took:?}"
    );
}

/// A lease Redis refuses (here: an ACL that lets this connection read and write entries but
/// not their locks) is a store error, and the request is served by the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lease_fails_open_as_a_store_error() {
    let Some(server) = RedisServer::start("a_failing_lease_fails_open") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("acl");
    // Entries end with their hash tag's `}`; locks end with `:lock`; the counters hash is
    // `{prefix}:gens`.
    let reply = server.cli(&[
        "acl",
        "setuser",
        "nolock",
        "on",
        ">pw",
        "+@all",
        &format!("~{prefix}:*}}"),
        &format!("~{{{prefix}}}:gens"),
    ]);
    assert_eq!(reply.trim(), "OK");
    let url = server.url().replace("redis://", "redis://nolock:pw@");
    let c = cache(connect(&url).await, &prefix);
    let calls = Calls::default();
    let app = app(&calls, leased(&c));

    let seen = send(&app, get("/work")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.text(), "n1");
    c.flush().await;
    let stats = &c.metrics().snapshot()[0];
    assert_eq!(
        stats.store_errors, 1,
        "the refused lease, and nothing else: {stats:?}"
    );
    assert_eq!(stats.stores, 1, "the entry itself was stored: {stats:?}");
    // The entry serves the next request.
    assert_eq!(send(&app, get("/work")).await.text(), "n1");
    assert_eq!(calls.get(), 1);
}

/// Redis freezing while a request waits on another process's lease: its next lease attempt
/// fails (the command timeout), and it goes to the handler then, not at its far wait bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_freezing_during_the_wait_sends_the_request_to_the_handler() {
    let Some(server) = RedisServer::start("a_redis_freezing_during_the_wait") else {
        return;
    };
    let server = Arc::new(server);
    let prefix = common::redis_server::fresh_prefix("lease");
    let store = connect(&server.url()).await;
    let c = cache(store.clone(), &prefix);
    let layer = c
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(10));
    let key = layer.key_for(&get("/work"));
    assert!(store
        .take_lease(&key, "alive", Duration::from_secs(10))
        .await
        .unwrap());
    let calls = Calls::default();
    let app = app(&calls, layer);
    let before_freeze = Duration::from_millis(400);
    let s = server.clone();
    let freezer = tokio::spawn(async move {
        tokio::time::sleep(before_freeze).await;
        s.freeze();
    });

    let start = Instant::now();
    let seen = send(&app, get("/work")).await;
    let took = start.elapsed();
    server.thaw();
    freezer.await.unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(seen.text(), "n1");
    assert_eq!(calls.get(), 1);
    assert!(
        took >= before_freeze + WORK,
        "did not wait while Redis was up: {took:?}"
    );
    assert!(
        took < before_freeze + WORK + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(c.metrics().snapshot()[0].store_errors >= 1);
}

/// The lock exists while the handler computes, and is gone as soon as the entry is written:
/// released, not left to expire (its lease time is far longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_released_once_the_entry_is_written() {
    let Some(server) = RedisServer::start("the_lease_is_released") else {
        return;
    };
    let server = Arc::new(server);
    let prefix = common::redis_server::fresh_prefix("lease");
    let c = cache(connect(&server.url()).await, &prefix);
    let layer = c
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(30));
    let lock = lock_of(&layer);
    let held = Arc::new(AtomicUsize::new(0));
    let (s, l, h) = (server.clone(), lock.clone(), held.clone());
    let app = Router::new().route(
        "/work",
        route_get(move || {
            let (s, l, h) = (s.clone(), l.clone(), h.clone());
            async move {
                let n = tokio::task::spawn_blocking(move || s.cli(&["exists", &l]))
                    .await
                    .unwrap();
                h.store(n.trim().parse().unwrap(), Ordering::SeqCst);
                "done"
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get("/work")).await.text(), "done");
    assert_eq!(
        held.load(Ordering::SeqCst),
        1,
        "no lock while the handler ran"
    );
    c.flush().await;
    assert_eq!(
        server.cli(&["exists", &lock]).trim(),
        "0",
        "lock left after the write"
    );
}

/// On a cluster the lock is in its entry's slot (same node, and a script over both could run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_lock_is_in_its_entrys_slot() {
    let Some(cluster) = RedisCluster::start("on_a_cluster_the_lock_is_in_its_entrys_slot") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("lease");
    let store = connect(&cluster.url()).await;
    let c = cache(store.clone(), &prefix);
    let layer = leased(&c);
    let entry = layer.key_for(&get("/work")).to_string();
    let lock = lock_of(&layer);
    assert!(store
        .take_lease(&layer.key_for(&get("/work")), "t", Duration::from_secs(5))
        .await
        .unwrap());
    assert_eq!(cluster.cli(&["exists", &lock]).trim(), "1");
    let slot = |k: &str| cluster.cli(&["cluster", "keyslot", k]).trim().to_owned();
    assert_eq!(slot(&lock), slot(&entry));
    // Released only with its own token.
    let key = layer.key_for(&get("/work"));
    assert!(!store.release_lease(&key, "other").await.unwrap());
    assert!(store.release_lease(&key, "t").await.unwrap());
    assert_eq!(cluster.cli(&["exists", &lock]).trim(), "0");
}

/// A memory store with a lease behaves as without: it grants every lease, so requests of one
/// process coalesce as usual and nobody waits for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_store_with_a_lease_only_coalesces_in_process() {
    let store = MemoryStore::new(1 << 20);
    let c = ResponseCache::builder().store(store.clone()).build();
    let calls = Calls::default();
    let apps = [app(&calls, leased(&c))];
    let start = Instant::now();
    assert_eq!(burst(&apps, 20).await, "n1");
    assert_eq!(calls.get(), 1);
    assert!(
        start.elapsed() < WORK + Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    let key = leased(&c).key_for(&get("/work"));
    assert!(store
        .take_lease(&key, "a", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(store
        .take_lease(&key, "b", Duration::from_secs(5))
        .await
        .unwrap());
}

/// A client that goes away while its request holds the lease: the lock goes with it (released
/// by the dropped flight), long before the lease would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_releases_the_lease() {
    let Some(server) = RedisServer::start("a_client_that_goes_away") else {
        return;
    };
    let prefix = common::redis_server::fresh_prefix("lease");
    let c = cache(connect(&server.url()).await, &prefix);
    let layer = c
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(30));
    let lock = lock_of(&layer);
    let calls = Calls::default();
    let app = app(&calls, layer);
    let request = tokio::spawn(async move { send(&app, get("/work")).await });
    let start = Instant::now();
    while calls.get() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "handler never called"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        server.cli(&["exists", &lock]).trim(),
        "1",
        "no lock while computing"
    );
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    let start = Instant::now();
    while server.cli(&["exists", &lock]).trim() != "0" {
        assert!(start.elapsed() < Duration::from_secs(2), "lock left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
