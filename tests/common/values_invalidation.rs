//! Invalidation of the low-level API's values, run against every store (memory, Redis, Redis
//! Cluster) by `tests/values.rs` and `tests/values_redis.rs`, next to `values_suite.rs`: tags
//! and the namespace version reach values and fragments, the race, other caches on the store
//! (two caches stand for two processes), and counters, which take no part.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tower_response_cache::{ResponseCache, Store, StoreErrorKind};

use crate::suite::{ada, Influencer, TTL};

/// How often these caches poll a remote store's invalidation sequence.
pub const POLL: Duration = Duration::from_millis(50);

pub fn cache_on(store: &Arc<dyn Store>, prefix: &str) -> ResponseCache {
    ResponseCache::builder()
        .shared_store(store.clone())
        .key_prefix(prefix)
        .invalidation_poll(POLL)
        .build()
}

/// Every check, in turn, on `store`.
pub async fn conforms(store: Arc<dyn Store>) {
    tags_reach_values_and_fragments_and_nothing_else(&store).await;
    a_soft_invalidation_is_a_miss_for_values(&store).await;
    bump_version_reaches_values_but_not_counters(&store).await;
    an_invalidation_during_a_computation_wins(&store).await;
    other_caches_on_the_store_see_it(&store).await;
    failed_computations_are_never_stored(&store).await;
}

/// A computation that counts its runs.
fn counted<'a, T: 'a>(
    runs: &'a AtomicUsize,
    value: T,
) -> impl FnOnce() -> std::future::Ready<T> + 'a {
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(value)
    }
}

pub async fn tags_reach_values_and_fragments_and_nothing_else(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vinv-tags");
    let (tw, ma) = (&["platform:twitter"][..], &["platform:mastodon"][..]);
    cache
        .set_tagged("top:twitter", &ada(), TTL, tw)
        .await
        .unwrap();
    cache
        .set_tagged("top:mastodon", &ada(), TTL, ma)
        .await
        .unwrap();
    cache
        .set_tagged("both", &ada(), TTL, &["platform:twitter", "x"])
        .await
        .unwrap();
    cache.set("untagged", &ada(), TTL).await.unwrap();
    let runs = AtomicUsize::new(0);
    let computed = |key| cache.get_or_insert_with_tags(key, TTL, tw, counted(&runs, 7u32));
    assert_eq!(computed("count:twitter").await, 7);
    let frag = |vary: &'static str, tags, html: &'static str| {
        let vary: &'static [&'static str] = match vary {
            "twitter" => &["twitter"],
            _ => &["mastodon"],
        };
        cache.fragment_tagged("stats", vary, TTL, tags, counted(&runs, html.to_owned()))
    };
    assert_eq!(frag("twitter", tw, "<p>tw</p>").await, "<p>tw</p>");
    assert_eq!(frag("mastodon", ma, "<p>ma</p>").await, "<p>ma</p>");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // Cached: nothing recomputes.
    assert_eq!(computed("count:twitter").await, 7);
    assert_eq!(frag("twitter", tw, "<p>new</p>").await, "<p>tw</p>");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    cache.invalidate_tag("platform:twitter").await.unwrap();
    for gone in ["top:twitter", "both"] {
        assert_eq!(cache.get::<Influencer>(gone).await, None, "{gone}");
    }
    for kept in ["top:mastodon", "untagged"] {
        assert_eq!(cache.get::<Influencer>(kept).await, Some(ada()), "{kept}");
    }
    assert_eq!(frag("twitter", tw, "<p>tw2</p>").await, "<p>tw2</p>");
    assert_eq!(frag("mastodon", ma, "<p>new</p>").await, "<p>ma</p>");
    assert_eq!(computed("count:twitter").await, 7);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        5,
        "the twitter fragment and count recomputed"
    );
    // Written after the invalidation: served.
    cache
        .set_tagged("top:twitter", &ada(), TTL, tw)
        .await
        .unwrap();
    assert_eq!(cache.get::<Influencer>("top:twitter").await, Some(ada()));
    // A named version is the tag's generation.
    cache.incr_version("platform:mastodon").await.unwrap();
    assert_eq!(cache.get::<Influencer>("top:mastodon").await, None);
    assert_eq!(frag("mastodon", ma, "<p>ma2</p>").await, "<p>ma2</p>");
    // Several at once.
    cache.set_tagged("a", &1.5, TTL, &["a"]).await.unwrap();
    cache.set_tagged("b", &2.5, TTL, &["b"]).await.unwrap();
    cache.invalidate_tags(["a", "b"]).await.unwrap();
    assert_eq!(
        (cache.get::<f64>("a").await, cache.get::<f64>("b").await),
        (None, None)
    );
    assert_eq!(cache.get::<Influencer>("top:twitter").await, Some(ada()));
}

/// The values API serves nothing stale: a soft invalidation makes a value a miss, as a hard
/// one does, and recomputes it.
pub async fn a_soft_invalidation_is_a_miss_for_values(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vinv-soft");
    let tw = &["platform:twitter"][..];
    cache
        .set_tagged("top:twitter", &ada(), TTL, tw)
        .await
        .unwrap();
    let runs = AtomicUsize::new(0);
    let computed = |key| cache.get_or_insert_with_tags(key, TTL, tw, counted(&runs, 7u32));
    assert_eq!(computed("count:twitter").await, 7);
    cache.invalidate_tag_soft("platform:twitter").await.unwrap();
    assert_eq!(cache.get::<Influencer>("top:twitter").await, None);
    assert_eq!(computed("count:twitter").await, 7);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "recomputed");
}

pub async fn bump_version_reaches_values_but_not_counters(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vinv-version");
    cache.set("plain", &ada(), TTL).await.unwrap();
    cache
        .set_tagged("tagged", &ada(), TTL, &["t"])
        .await
        .unwrap();
    let first = cache
        .fragment("f", &[], TTL, || async { "one".to_owned() })
        .await;
    assert_eq!(first, "one");
    cache.incr("hits", 5).await.unwrap();
    cache.set("set-int", &41, TTL).await.unwrap();
    // A tagged integer is enveloped like any tagged value: invalidated, and no counter.
    cache
        .set_tagged("tagged-int", &41, TTL, &["t"])
        .await
        .unwrap();
    let err = cache.incr("tagged-int", 1).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");

    cache.bump_version().await.unwrap();
    for key in ["plain", "tagged"] {
        assert_eq!(cache.get::<Influencer>(key).await, None, "{key}");
    }
    assert_eq!(cache.get::<i64>("tagged-int").await, None);
    let again = cache
        .fragment("f", &[], TTL, || async { "two".to_owned() })
        .await;
    assert_eq!(again, "two");
    // Counters are plain integers without a stamp: invalidation never reaches them.
    assert_eq!(cache.get::<i64>("hits").await, Some(5));
    assert_eq!(cache.incr("set-int", 1).await.unwrap(), 42);
    cache.set("plain", &ada(), TTL).await.unwrap();
    assert_eq!(
        cache.get::<Influencer>("plain").await,
        Some(ada()),
        "set after the bump"
    );
}

/// A computation held until the test lets it finish, and the test's side of it.
struct Gate {
    entered: Semaphore,
    open: Semaphore,
}

impl Gate {
    fn new() -> Self {
        Self {
            entered: Semaphore::new(0),
            open: Semaphore::new(0),
        }
    }

    /// `get_or_insert_with_tags(key)` of a computation that waits for [`Gate::during`].
    fn held<'a>(
        &'a self,
        cache: &'a ResponseCache,
        key: &'a str,
        tags: &'a [&'a str],
    ) -> impl Future<Output = u32> + 'a {
        cache.get_or_insert_with_tags(key, TTL, tags, move || async move {
            self.entered.add_permits(1);
            self.open.acquire().await.unwrap().forget();
            1u32
        })
    }

    /// Runs `meanwhile` once the computation has started, then lets it finish.
    async fn during(&self, meanwhile: impl Future<Output = ()>) {
        self.entered.acquire().await.unwrap().forget();
        meanwhile.await;
        self.open.add_permits(1);
    }
}

pub async fn an_invalidation_during_a_computation_wins(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vinv-race");
    let gate = Gate::new();
    let tags = &["platform:twitter"][..];
    // The tag is invalidated while the value is computed from what was read before it.
    let (value, ()) = tokio::join!(
        gate.held(&cache, "k", tags),
        gate.during(async { cache.invalidate_tag("platform:twitter").await.unwrap() })
    );
    assert_eq!(value, 1, "the caller gets what it computed");
    assert_eq!(cache.get::<u32>("k").await, None, "but it is never served");
    let fresh = cache
        .get_or_insert_with_tags("k", TTL, tags, || async { 2u32 })
        .await;
    assert_eq!(fresh, 2);
    assert_eq!(
        cache.get::<u32>("k").await,
        Some(2),
        "computed after: served"
    );

    // The same with the namespace version and an untagged value.
    let (value, ()) = tokio::join!(
        gate.held(&cache, "n", &[]),
        gate.during(async { cache.bump_version().await.map(drop).unwrap() })
    );
    assert_eq!(value, 1);
    assert_eq!(cache.get::<u32>("n").await, None);

    // Another tag's invalidation meanwhile does not cost the value.
    let (value, ()) = tokio::join!(
        gate.held(&cache, "m", tags),
        gate.during(async { cache.invalidate_tag("platform:mastodon").await.unwrap() })
    );
    assert_eq!(value, 1);
    assert_eq!(cache.get::<u32>("m").await, Some(1));
}

/// Reads `key` from `cache` until it is gone (at most 5 s); how long that took.
async fn until_gone(cache: &ResponseCache, key: &str) -> Duration {
    let start = Instant::now();
    while cache.get::<Influencer>(key).await.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{key}: never invalidated"
        );
        // Real time on purpose: a remote store's propagation is a real poll.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

pub async fn other_caches_on_the_store_see_it(store: &Arc<dyn Store>) {
    let prefix = "vinv-procs";
    let (a, b) = (cache_on(store, prefix), cache_on(store, prefix));
    a.set_tagged("tagged", &ada(), TTL, &["t"]).await.unwrap();
    a.set_tagged("other", &ada(), TTL, &["u"]).await.unwrap();
    a.set("plain", &ada(), TTL).await.unwrap();
    for key in ["tagged", "other", "plain"] {
        assert_eq!(b.get::<Influencer>(key).await, Some(ada()), "{key}");
    }
    a.invalidate_tag("t").await.unwrap();
    let by_tag = until_gone(&b, "tagged").await;
    assert_eq!(b.get::<Influencer>("other").await, Some(ada()));
    b.bump_version().await.unwrap();
    let by_version = until_gone(&a, "plain").await;
    assert_eq!(a.get::<Influencer>("other").await, None);
    for took in [by_tag, by_version] {
        // The bound is the poll interval plus a round trip; the margin is for a loaded machine.
        assert!(took < POLL * 10, "took {took:?}");
    }
    // A cache built after both, with the default poll: the counters are in the store.
    let later = ResponseCache::builder()
        .shared_store(store.clone())
        .key_prefix(prefix)
        .build();
    for key in ["tagged", "other", "plain"] {
        assert_eq!(later.get::<Influencer>(key).await, None, "{key}");
    }
    later
        .set_tagged("tagged", &ada(), TTL, &["t"])
        .await
        .unwrap();
    assert_eq!(a.get::<Influencer>("tagged").await, Some(ada()));
}

pub async fn failed_computations_are_never_stored(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vinv-try");
    let tags = &["platform:twitter"][..];
    let failed = cache
        .try_get_or_insert_with_tags("k", TTL, tags, || async { Err::<u32, _>("db down") })
        .await;
    assert_eq!(failed, Err("db down"));
    assert_eq!(cache.get::<u32>("k").await, None);
    let ok = cache
        .try_get_or_insert_with("k", TTL, || async { Ok::<_, ()>(3u32) })
        .await;
    assert_eq!(ok, Ok(3));
    assert_eq!(cache.get::<u32>("k").await, Some(3));
    let panel = cache
        .try_fragment_tagged("stats", &["twitter"], TTL, tags, || async {
            Err("db down")
        })
        .await;
    assert_eq!(panel, Err("db down"));
    let panel = cache
        .try_fragment_tagged("stats", &["twitter"], TTL, tags, || async {
            Ok::<_, &str>("<p>ok</p>".to_owned())
        })
        .await;
    assert_eq!(panel.as_deref(), Ok("<p>ok</p>"));

    // Callers waiting on a computation that fails compute again: one of them, once.
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                cache
                    .try_get_or_insert_with("shared", TTL, || async move {
                        let run = runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if run == 0 {
                            Err(i)
                        } else {
                            Ok(run)
                        }
                    })
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| **r == Ok(1)).count(),
        4,
        "{results:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
