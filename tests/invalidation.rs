//! Invalidation on the memory store: by tag (static, from path parameters, from the handler),
//! path, user, named and namespace version, and the race with a slow miss. The same scenarios
//! run on Redis in tests/invalidation_redis.rs.

mod common;
#[path = "invalidation/scenarios.rs"]
mod scenarios;
#[path = "invalidation/soft.rs"]
mod soft;

use std::sync::Arc;
use std::time::Duration;

use tower_response_cache::{Entry, MemoryStore, ResponseCache, Store};

use common::test_store::TestStore;
use scenarios::{Site, OTHERS, TWITTER};

fn cache_on(store: Arc<dyn Store>) -> ResponseCache {
    ResponseCache::builder()
        .shared_store(store)
        .key_prefix("inv")
        .build()
}

fn fresh() -> ResponseCache {
    cache_on(Arc::new(MemoryStore::new(16 << 20)))
}

#[tokio::test]
async fn a_soft_invalidation_is_answered_stale_while_one_refresh_replaces_it_and_a_hard_one_wins() {
    scenarios::soft_purges(&Site::new(fresh())).await;
}

/// A soft-invalidated entry is not removed from the store: it is the copy answered stale, and
/// its refresh replaces it in place.
#[tokio::test]
async fn a_soft_invalidated_entry_stays_in_the_store_until_its_refresh_replaces_it() {
    let store = Arc::new(MemoryStore::new(16 << 20));
    let site = Site::new(cache_on(store.clone()));
    site.expect(&TWITTER[..1], "miss").await;
    let (uri, _) = TWITTER[0];
    let layer = site.cache.ttl(Duration::from_secs(60));
    let key = layer.key_for(&http::Request::get(uri).body(()).unwrap());
    let stored = || async {
        match store.get(&key).await.unwrap() {
            Some(Entry::Response(r)) => r.body().clone(),
            other => panic!("not a stored response: {other:?}"),
        }
    };
    let old = stored().await;
    site.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    assert_eq!(stored().await, old, "removed by the invalidation");
    let entries = store.entry_count();
    scenarios::expect_soft(&site, &TWITTER[..1], &[site_text(&old)]).await;
    assert_eq!(scenarios::invalidated(&site), (1, 1));
    assert_eq!(store.entry_count(), entries);
    assert_ne!(stored().await, old, "replaced by the refresh");
}

fn soft_site() -> soft::Soft {
    soft::Soft::new(fresh(), |layer| layer)
}

#[tokio::test]
async fn concurrent_requests_to_a_soft_invalidated_url_share_one_refresh() {
    soft::concurrent_requests_share_one_refresh(&soft_site()).await;
}

#[tokio::test]
async fn an_unstorable_refresh_answer_is_never_served() {
    soft::an_unstorable_refresh_answer_is_never_served(&soft_site()).await;
}

#[tokio::test]
async fn a_shadowed_layer_never_serves_a_soft_invalidated_entry() {
    soft::a_shadowed_layer_never_serves_stale(&soft_site()).await;
}

fn site_text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_tag_from_path_parameters_drops_every_variant_of_its_value_only() {
    scenarios::tag_from_path_params(&Site::new(fresh())).await;
}

#[tokio::test]
async fn static_and_wildcard_tags() {
    scenarios::static_and_wildcard_tags(&Site::new(fresh())).await;
}

#[tokio::test]
async fn paths_exact_and_by_prefix() {
    scenarios::paths_exact_and_prefix(&Site::new(fresh())).await;
}

#[tokio::test]
async fn one_users_entries() {
    scenarios::one_user(&Site::new(fresh())).await;
}

#[tokio::test]
async fn tags_the_handler_adds_and_never_sends() {
    scenarios::handler_tags(&Site::new(fresh())).await;
}

#[tokio::test]
async fn named_and_namespace_versions() {
    scenarios::versions(&Site::new(fresh())).await;
}

#[tokio::test]
async fn an_invalidation_during_a_slow_miss_wins() {
    scenarios::invalidation_during_a_slow_miss_wins(&Site::new(fresh())).await;
}

/// A store that answers only asynchronously takes the other lookup path: the same rules hold.
#[tokio::test]
async fn the_async_lookup_path_checks_stamps_too() {
    scenarios::all(|| cache_on(Arc::new(TestStore::waiting()))).await;
}

/// Two caches on one memory store are two handles on one set of counters: an invalidation
/// through either is seen by both at once, and a cache built later starts from them.
#[tokio::test]
async fn caches_sharing_a_memory_store_see_each_others_invalidations_at_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(16 << 20));
    let (a, b) = (
        Site::new(cache_on(store.clone())),
        Site::new(cache_on(store.clone())),
    );
    a.expect(TWITTER, "miss").await;
    b.expect(TWITTER, "hit").await;
    b.cache.invalidate_tag("platform:twitter").await.unwrap();
    a.expect(TWITTER, "miss").await;
    b.expect(OTHERS, "miss").await;
    assert_eq!(a.cache.bump_version().await.unwrap(), 2);
    b.expect(OTHERS, "miss").await;
    let later = Site::new(cache_on(store));
    assert_eq!(later.cache.namespace_version().await.unwrap(), 2);
    later.expect(OTHERS, "hit").await;
    later.expect(TWITTER, "miss").await;
}

/// An invalidation the store cannot record is an error, never a silent success; lookups then
/// miss rather than serve what may be stale.
#[tokio::test]
async fn a_store_that_fails_reports_the_invalidation_and_serves_nothing_unchecked() {
    let store = TestStore::new();
    let site = Site::new(cache_on(Arc::new(store.clone())));
    site.expect(TWITTER, "miss").await;
    store.set_down(true);
    assert!(site.cache.invalidate_tag("platform:twitter").await.is_err());
    assert!(site.cache.bump_version().await.is_err());
    store.set_down(false);
    site.expect(TWITTER, "hit").await;
}

#[test]
fn the_poll_setting_rejects_zero() {
    let built =
        std::panic::catch_unwind(|| ResponseCache::builder().invalidation_poll(Duration::ZERO));
    assert!(built.is_err());
}

/// Two caches on a store that is not its own authority in process (as Redis): each mirrors the
/// counters and polls the sequence, so another cache's invalidation shows within the poll
/// interval, its own at once.
#[tokio::test(start_paused = true)]
async fn a_store_read_remotely_is_polled_and_bounds_propagation_by_the_interval() {
    let store: Arc<dyn Store> = Arc::new(TestStore::waiting());
    let poll = Duration::from_secs(1);
    let polled = |store: Arc<dyn Store>| {
        ResponseCache::builder()
            .shared_store(store)
            .key_prefix("inv")
            .invalidation_poll(poll)
            .build()
    };
    let (a, b) = (Site::new(polled(store.clone())), Site::new(polled(store)));
    a.expect(TWITTER, "miss").await;
    b.expect(TWITTER, "hit").await;
    a.cache.invalidate_tag("platform:twitter").await.unwrap();
    a.expect(&TWITTER[..1], "miss").await;
    // Until b polls, it may still serve what it had; after one interval it may not.
    tokio::time::sleep(poll).await;
    b.expect(&TWITTER[1..], "miss").await;
    b.expect(OTHERS, "miss").await;
    a.expect(OTHERS, "hit").await;
}

/// A cache outlives the runtime its poll started in: the next runtime polls again.
#[test]
fn the_poll_restarts_in_a_new_runtime() {
    let store: Arc<dyn Store> = Arc::new(TestStore::waiting());
    let site = |store: Arc<dyn Store>| {
        Site::new(
            ResponseCache::builder()
                .shared_store(store)
                .key_prefix("inv")
                .invalidation_poll(Duration::from_secs(1))
                .build(),
        )
    };
    let (a, b) = (site(store.clone()), site(store));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        a.expect(TWITTER, "miss").await;
        b.expect(TWITTER, "hit").await;
    });
    runtime().block_on(async {
        b.expect(TWITTER, "hit").await;
        a.cache.invalidate_tag("platform:twitter").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.expect(TWITTER, "miss").await;
    });
}

/// In a nested router, names come from the path as the client sent it (mount prefix included)
/// and `{param}` from the full route template.
#[tokio::test]
async fn names_in_a_nested_router_use_the_full_path() {
    use axum::Router;
    use common::{get, send, Calls};
    let cache = fresh();
    let calls = Calls::default();
    let inner = Router::new().route(
        "/items/{id}",
        calls.handler().layer(cache.route().tags(["item:{id}"])),
    );
    let app = Router::new().nest("/v2", inner);
    let status = |seen: common::Seen| scenarios::outcome(&seen);
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "miss");
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "hit");
    cache.invalidate_tag("item:7").await.unwrap();
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "miss");
    cache.invalidate_path("/items/7").await.unwrap();
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "hit");
    cache.invalidate_path("/v2/items/7").await.unwrap();
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "miss");
    cache.invalidate_path("/v2/*").await.unwrap();
    assert_eq!(status(send(&app, get("/v2/items/7")).await), "miss");
    assert_eq!(calls.get(), 4);
}
