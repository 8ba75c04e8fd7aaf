//! Invalidation on Redis, single node and cluster: the scenarios of tests/invalidation.rs, and
//! the cross-process cases (two caches on two connections stand for two processes).

mod common;
#[path = "invalidation/scenarios.rs"]
mod scenarios;
#[path = "invalidation/soft.rs"]
mod soft;

use std::time::{Duration, Instant};

use tower_response_cache::{RedisStore, ResponseCache};

use common::connect_redis as connect;
use common::redis_server::{RedisCluster, RedisServer};
use scenarios::{Site, OTHERS, TWITTER};

/// How often the caches of these tests poll the store's invalidation sequence.
const POLL: Duration = Duration::from_millis(50);

/// A prefix no other cache of this test binary uses.
fn fresh_prefix() -> String {
    common::redis_server::fresh_prefix("inv")
}

fn cache(store: RedisStore, prefix: &str, poll: Duration) -> ResponseCache {
    ResponseCache::builder()
        .store(store)
        .key_prefix(prefix)
        .invalidation_poll(poll)
        .build()
}

async fn every_scenario(url: &str) {
    let store = connect(url).await;
    scenarios::all(|| cache(store.clone(), &fresh_prefix(), POLL)).await;
}

#[tokio::test]
async fn every_invalidation_on_a_single_redis() {
    let Some(server) = RedisServer::start("every_invalidation_on_a_single_redis") else {
        return;
    };
    every_scenario(&server.url()).await;
}

#[tokio::test]
async fn every_invalidation_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start("every_invalidation_on_a_redis_cluster") else {
        return;
    };
    every_scenario(&cluster.url()).await;
}

/// Sends `req` to `site` until it misses; how long that took.
async fn until_miss(site: &Site, req: scenarios::Req) -> Duration {
    let start = Instant::now();
    while site.outcome(req.0, req.1).await == "hit" {
        assert!(start.elapsed() < Duration::from_secs(5), "never propagated");
        // Real time on purpose: this measures a real poll against a real Redis.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// Two processes: an invalidation in one is seen by the other within the poll interval (plus
/// a round trip), and a process started later uses the namespace version in the store.
async fn across_processes(url: &str) {
    let prefix = fresh_prefix();
    let a = Site::new(cache(connect(url).await, &prefix, POLL));
    let b = Site::new(cache(connect(url).await, &prefix, POLL));
    a.expect(TWITTER, "miss").await;
    b.expect(TWITTER, "hit").await;
    b.expect(OTHERS, "miss").await;
    a.expect(OTHERS, "hit").await;

    a.cache.invalidate_tag("platform:twitter").await.unwrap();
    let by_tag = until_miss(&b, TWITTER[0]).await;
    b.expect(&TWITTER[1..], "miss").await;
    b.expect(OTHERS, "hit").await;

    let version = b.cache.bump_version().await.unwrap();
    let by_version = until_miss(&a, OTHERS[0]).await;
    a.expect(&OTHERS[1..], "miss").await;
    println!("propagation with a {POLL:?} poll: tag {by_tag:?}, namespace version {by_version:?}");
    for took in [by_tag, by_version] {
        // The bound is the poll interval plus a round trip; the margin is for a loaded machine.
        assert!(took < POLL * 10, "took {took:?}");
    }

    // A process started after the bump, with the default poll: the version is in the store,
    // so entries from before it are never served, not even before its first poll.
    let later = Site::new(
        ResponseCache::builder()
            .store(connect(url).await)
            .key_prefix(prefix.as_str())
            .build(),
    );
    assert_eq!(later.cache.namespace_version().await.unwrap(), version);
    later.expect(&TWITTER[1..], "miss").await;
    later.expect(&OTHERS[1..], "hit").await;
}

#[tokio::test]
async fn another_process_sees_invalidations_within_the_poll_on_a_single_redis() {
    let Some(server) = RedisServer::start("cross_process_single") else {
        return;
    };
    across_processes(&server.url()).await;
}

#[tokio::test]
async fn another_process_sees_invalidations_within_the_poll_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start("cross_process_cluster") else {
        return;
    };
    across_processes(&cluster.url()).await;
}

/// Sends `req` to `site` until it is answered stale; how long that took.
async fn until_stale(site: &Site, req: scenarios::Req) -> Duration {
    let start = Instant::now();
    while scenarios::outcome(&site.peek(req.0, req.1).await) == "hit" {
        assert!(start.elapsed() < Duration::from_secs(5), "never propagated");
        // Real time on purpose: this measures a real poll against a real Redis.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// Two processes: a soft invalidation in one reaches the other through its mirror and poll as
/// soft (answered stale while one refresh replaces it), a hard one after it as hard, and a
/// soft one after that leaves it hard.
#[tokio::test]
async fn another_process_sees_a_soft_invalidation_as_soft_on_a_single_redis() {
    let Some(server) = RedisServer::start("soft_cross_process") else {
        return;
    };
    let url = server.url();
    let prefix = fresh_prefix();
    let a = Site::new(cache(connect(&url).await, &prefix, POLL));
    let b = Site::new(cache(connect(&url).await, &prefix, POLL));
    // a's bodies count from n1001, b's from n1: a refresh by b says so in its body.
    for _ in 0..1000 {
        a.calls.bump();
    }
    a.expect(TWITTER, "miss").await;
    b.expect(TWITTER, "hit").await;

    scenarios::bodies(&b, &TWITTER[..1]).await;
    let rest = scenarios::bodies(&b, &TWITTER[1..]).await;
    a.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    until_stale(&b, TWITTER[0]).await;
    assert_eq!(scenarios::invalidated(&b), (1, 1));
    // That request started b's refresh of TWITTER[0]: one handler call, then a fresh entry.
    let refreshed = scenarios::until_refreshed(&b, TWITTER[0]).await;
    assert_eq!(scenarios::outcome(&refreshed), "hit");
    // b's handler ran once, for the refresh (a's and b's bodies both count from n1).
    assert_eq!(b.calls.get(), 1);
    scenarios::expect_soft(&b, &TWITTER[1..], &rest).await;
    let n = TWITTER.len() as u64;
    let (all, soft) = scenarios::invalidated(&b);
    assert!(all >= n && all == soft, "all soft: {all} {soft}");
    // a reads what b's refreshes stored.
    a.expect(TWITTER, "hit").await;

    a.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    a.cache.invalidate_tag("platform:twitter").await.unwrap();
    a.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    let before = scenarios::stale(&b);
    until_miss(&b, TWITTER[0]).await;
    b.expect(&TWITTER[1..], "miss").await;
    assert_eq!(scenarios::invalidated(&b), (all + n, soft), "hard wins");
    assert_eq!(scenarios::stale(&b), before, "nothing answered stale");
}

async fn soft_site(url: &str, lease: bool) -> soft::Soft {
    let cache = cache(connect(url).await, &fresh_prefix(), POLL);
    soft::Soft::new(cache, move |layer| {
        if lease {
            layer.lease(Duration::from_secs(5))
        } else {
            layer
        }
    })
}

#[tokio::test]
async fn concurrent_requests_to_a_soft_invalidated_url_share_one_refresh_on_redis() {
    let Some(server) = RedisServer::start("soft_concurrent") else {
        return;
    };
    soft::concurrent_requests_share_one_refresh(&soft_site(&server.url(), false).await).await;
}

#[tokio::test]
async fn an_unstorable_refresh_answer_is_never_served_on_redis() {
    let Some(server) = RedisServer::start("soft_unstorable") else {
        return;
    };
    soft::an_unstorable_refresh_answer_is_never_served(&soft_site(&server.url(), false).await)
        .await;
}

#[tokio::test]
async fn a_shadowed_layer_never_serves_a_soft_invalidated_entry_on_redis() {
    let Some(server) = RedisServer::start("soft_shadowed") else {
        return;
    };
    soft::a_shadowed_layer_never_serves_stale(&soft_site(&server.url(), false).await).await;
}

/// Two processes with the lease on: after a soft invalidation both answer stale, and only the
/// one holding the lease refreshes; the other's requests find it held and call no handler.
#[tokio::test]
async fn with_the_lease_one_refresh_runs_fleet_wide_after_a_soft_invalidation() {
    let Some(server) = RedisServer::start("soft_lease") else {
        return;
    };
    let url = server.url();
    let prefix = fresh_prefix();
    let site = |store| {
        soft::Soft::new(cache(store, &prefix, POLL), |layer| {
            layer.lease(Duration::from_secs(5))
        })
    };
    let a = site(connect(&url).await);
    let b = site(connect(&url).await);
    let old = a.filled("/item").await;
    let hit = b.get("/item").await;
    assert!(hit.cache_status().contains("; hit"), "{hit:?}");

    a.cache.invalidate_tag_soft("item").await.unwrap();
    // Both handlers wait: a's refresh holds the lease while b is asked.
    a.open.send_replace(false);
    b.open.send_replace(false);
    let first = a.peek("/item").await;
    assert_eq!(first.cache_status(), scenarios::SOFT_STALE, "{first:?}");
    assert_eq!(first.text(), old);
    scenarios::eventually("a's refresh calls its handler", || async {
        a.calls.get() == 2
    })
    .await;
    // b learns of the invalidation from its poll.
    let start = Instant::now();
    while b.peek("/item").await.cache_status() != scenarios::SOFT_STALE {
        assert!(start.elapsed() < Duration::from_secs(5), "never propagated");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..5 {
        let seen = b.peek("/item").await;
        assert_eq!(seen.cache_status(), scenarios::SOFT_STALE, "{seen:?}");
        assert_eq!(seen.text(), old);
    }
    assert_eq!(b.calls.get(), 0, "b refreshed beside the lease holder");

    a.open.send_replace(true);
    b.open.send_replace(true);
    for site in [&a, &b] {
        let fresh = site.until_refreshed("/item").await;
        assert!(fresh.cache_status().contains("; hit"), "{fresh:?}");
        assert_eq!(fresh.text(), "item n2");
    }
    assert_eq!(a.calls.get() + b.calls.get(), 2, "one refresh fleet-wide");
}

/// Once a poll has loaded every counter the store has, a miss on URLs never seen stamps their
/// entries from the mirror: no `HMGET` per miss. Those entries hold for another process and
/// are invalidated as any other, here and there.
#[tokio::test]
async fn misses_on_new_urls_read_no_counters_once_the_mirror_holds_them_all() {
    let Some(server) = RedisServer::start("complete_mirror") else {
        return;
    };
    let prefix = fresh_prefix();
    // `a` polls at once, then not again for the length of the test: any HMGET is a miss's.
    let a = Site::new(cache(
        connect(&server.url()).await,
        &prefix,
        Duration::from_secs(30),
    ));
    let b = Site::new(cache(connect(&server.url()).await, &prefix, POLL));
    // A counter exists; `a`'s first poll loads the whole list (real time: a real poll of a real
    // Redis, a few milliseconds).
    a.cache.invalidate_tag("platform:other").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = server.calls("hmget");
    a.expect(TWITTER, "miss").await;
    a.expect(TWITTER, "hit").await;
    assert_eq!(
        server.calls("hmget"),
        before,
        "a counter was read for a miss"
    );
    b.expect(TWITTER, "hit").await;

    // Invalidated by `a`: within the poll there, then filled again by `b`, whose entries hold
    // here; at once here.
    a.cache.invalidate_tag("platform:twitter").await.unwrap();
    until_miss(&b, TWITTER[0]).await;
    b.expect(&TWITTER[1..], "miss").await;
    a.expect(TWITTER, "hit").await;
    a.cache.invalidate_tag("platform:twitter").await.unwrap();
    a.expect(TWITTER, "miss").await;
}

/// The same for a prefix nothing was ever invalidated under (no counters hash at all).
#[tokio::test]
async fn misses_read_no_counters_where_nothing_was_ever_invalidated() {
    let Some(server) = RedisServer::start("complete_mirror_empty") else {
        return;
    };
    let a = Site::new(cache(
        connect(&server.url()).await,
        &fresh_prefix(),
        Duration::from_secs(30),
    ));
    // The first request starts the poll, which loads the (empty) list.
    a.expect(&TWITTER[..1], "miss").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.calls("hmget");
    a.expect(&TWITTER[1..], "miss").await;
    a.expect(TWITTER, "hit").await;
    assert_eq!(
        server.calls("hmget"),
        before,
        "a counter was read for a miss"
    );
}

/// `all_generations` lists every counter with the sequence in one read, or nothing past `max`.
#[tokio::test]
async fn the_store_lists_all_its_counters_up_to_a_bound() {
    use std::sync::Arc;
    use tower_response_cache::{Purge, Store};
    let Some(server) = RedisServer::start("all_generations") else {
        return;
    };
    let store = connect(&server.url()).await;
    let prefix = fresh_prefix();
    let none = store.all_generations(&prefix, 2).await.unwrap().unwrap();
    assert_eq!(
        (none.0.seq, none.1.len()),
        (0, 0),
        "no hash yet: complete and empty"
    );
    let names: Vec<Arc<str>> = ["tag:a", "tag:b", "path:/c"].map(Arc::from).to_vec();
    store
        .bump_generations(&prefix, &names, Purge::Hard)
        .await
        .unwrap();
    let bumped = store
        .bump_generations(&prefix, &names[..1], Purge::Soft)
        .await
        .unwrap();
    assert_eq!(store.all_generations(&prefix, 2).await.unwrap(), None);
    let (all, mut listed) = store.all_generations(&prefix, 3).await.unwrap().unwrap();
    assert_eq!(all.seq, bumped.seq);
    let mut pairs: Vec<(Arc<str>, u64)> = listed.drain(..).zip(all.gens).collect();
    pairs.sort();
    let hard = Purge::Hard.increment();
    assert_eq!(
        pairs,
        [
            (Arc::from("path:/c"), hard),
            (Arc::from("tag:a"), hard + 1),
            (Arc::from("tag:b"), hard),
        ]
    );
}
