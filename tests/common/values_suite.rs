//! The low-level API's suite, run against every store (memory, Redis, Redis Cluster) by
//! `tests/values.rs` and `tests/values_redis.rs`: each check builds its own cache with its own
//! key prefix on the shared store, so checks never see each other's keys.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tower_response_cache::{CacheKey, Entry, ManualClock, ResponseCache, Store, StoreErrorKind};

pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Influencer {
    pub name: String,
    pub followers: u64,
}

pub fn ada() -> Influencer {
    Influencer {
        name: "ada".into(),
        followers: 1_815,
    }
}

pub fn cache_on(store: &Arc<dyn Store>, prefix: &str) -> ResponseCache {
    ResponseCache::builder()
        .shared_store(store.clone())
        .key_prefix(prefix)
        .build()
}

/// Every check, in turn, on `store`.
pub async fn conforms(store: Arc<dyn Store>) {
    round_trips_and_removes(&store).await;
    expires_on_the_cache_clock(&store).await;
    counts_atomically(&store).await;
    coalesces_one_computation(&store).await;
    corrupt_values_are_misses(&store).await;
    removes_by_pattern_only_values(&store).await;
    caches_fragments(&store).await;
    counters_expire_by_the_store(&store).await;
}

pub async fn round_trips_and_removes(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-rt");
    cache.set("influencer:1", &ada(), TTL).await.unwrap();
    assert_eq!(cache.get::<Influencer>("influencer:1").await, Some(ada()));
    // Another type does not decode: a miss, not an error.
    assert_eq!(cache.get::<Vec<u8>>("influencer:1").await, None);
    cache.set("influencer:1", &"replaced", TTL).await.unwrap();
    assert_eq!(
        cache.get::<String>("influencer:1").await.as_deref(),
        Some("replaced")
    );
    assert!(cache.remove("influencer:1").await.unwrap());
    assert!(!cache.remove("influencer:1").await.unwrap());
    assert_eq!(cache.get::<String>("influencer:1").await, None);
    // A zero TTL stores nothing.
    cache.set("gone", &1.5, Duration::ZERO).await.unwrap();
    assert_eq!(cache.get::<f64>("gone").await, None);
    // `clear()` drops the cache's values with its responses, on every store alike.
    cache.set("a", "str", TTL).await.unwrap();
    cache.incr("n", 1).await.unwrap();
    assert_eq!(cache.clear().await.unwrap(), 2);
    assert_eq!(cache.get::<String>("a").await, None);
    assert_eq!(cache.get::<i64>("n").await, None);
}

pub async fn expires_on_the_cache_clock(store: &Arc<dyn Store>) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = ResponseCache::builder()
        .shared_store(store.clone())
        .key_prefix("vals-ttl")
        .clock(clock.clone())
        .build();
    cache.set("k", &ada(), TTL).await.unwrap();
    clock.advance(TTL - Duration::from_millis(1));
    assert_eq!(cache.get::<Influencer>("k").await, Some(ada()));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<Influencer>("k").await, None);
    let computed = AtomicUsize::new(0);
    let fresh = cache
        .get_or_insert_with("k", TTL, || async {
            computed.fetch_add(1, Ordering::SeqCst);
            "fresh".to_owned()
        })
        .await;
    assert_eq!(
        (fresh.as_str(), computed.load(Ordering::SeqCst)),
        ("fresh", 1)
    );
    assert_eq!(cache.get::<String>("k").await.as_deref(), Some("fresh"));
}

pub async fn counts_atomically(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-incr");
    assert_eq!(cache.incr("new", 5).await.unwrap(), 5);
    assert_eq!(cache.decr("new", 7).await.unwrap(), -2);
    assert_eq!(cache.get::<i64>("new").await, Some(-2));
    // Django: set an integer, then incr it.
    cache.set("set-first", &41, TTL).await.unwrap();
    assert_eq!(cache.incr("set-first", 1).await.unwrap(), 42);
    // Not a counter: an error, and the value is left alone.
    cache.set("text", &"hello", TTL).await.unwrap();
    let err = cache.incr("text", 1).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    assert_eq!(cache.get::<String>("text").await.as_deref(), Some("hello"));
    cache.set("max", &i64::MAX, TTL).await.unwrap();
    let err = cache.incr("max", 1).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    assert_eq!(cache.get::<i64>("max").await, Some(i64::MAX));

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.incr("hits", 1).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=100).collect::<Vec<i64>>(),
        "each incr saw its own count"
    );
    assert_eq!(cache.get::<i64>("hits").await, Some(100));
}

pub async fn coalesces_one_computation(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-coalesce");
    let computed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, computed) = (cache.clone(), computed.clone());
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("top:twitter", TTL, || async move {
                        computed.fetch_add(1, Ordering::SeqCst);
                        // The slow query: every other caller arrives while it runs.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        vec![ada()]
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), vec![ada()]);
    }
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "one computation for 50 callers"
    );
    assert_eq!(
        cache.get::<Vec<Influencer>>("top:twitter").await,
        Some(vec![ada()])
    );
}

pub async fn corrupt_values_are_misses(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-corrupt");
    let junk: [&[u8]; 4] = [b"garbage", b"\xA1\0", b"", b"\xA1\0\0\0\0\0\0\0\0\0\x09{}"];
    for (i, bytes) in junk.into_iter().enumerate() {
        let key = format!("k{i}");
        store
            .put_value(&format!("vals-corrupt:v:{key}"), Bytes::from(bytes), TTL)
            .await
            .unwrap();
        assert_eq!(cache.get::<Influencer>(&key).await, None, "{bytes:?}");
        let computed = AtomicUsize::new(0);
        let got = cache
            .get_or_insert_with(&key, TTL, || async {
                computed.fetch_add(1, Ordering::SeqCst);
                ada()
            })
            .await;
        assert_eq!((got, computed.load(Ordering::SeqCst)), (ada(), 1));
        assert_eq!(
            cache.get::<Influencer>(&key).await,
            Some(ada()),
            "overwritten"
        );
    }
}

pub async fn removes_by_pattern_only_values(store: &Arc<dyn Store>) {
    // `?` in the prefix would match the other cache's `X` if it were not escaped.
    let cache = cache_on(store, "vals?pat");
    let other = cache_on(store, "valsXpat");
    for key in [
        "user:1:profile",
        "user:2:profile",
        "user:2:feed",
        "site:motd",
    ] {
        cache.set(key, &key, TTL).await.unwrap();
        other.set(key, &key, TTL).await.unwrap();
    }
    // Many keys, spread over every node of a cluster.
    for i in 0..60 {
        cache.set(&format!("bulk:{i}"), &i, TTL).await.unwrap();
    }
    // A response entry of the same cache.
    let response = CacheKey::from_parts("vals?pat", &[b"GET /user:1"]);
    store
        .put(&response, Entry::Vary(vec![].into()), TTL)
        .await
        .unwrap();

    assert_eq!(cache.remove_pattern("user:*:profile").await.unwrap(), 2);
    assert_eq!(cache.get::<String>("user:1:profile").await, None);
    assert!(cache.get::<String>("user:2:feed").await.is_some());
    assert_eq!(cache.remove_pattern("bulk:*").await.unwrap(), 60);
    assert_eq!(cache.remove_pattern("bulk:*").await.unwrap(), 0);
    // Glob metacharacters of the prefix are escaped: "*" matches only this cache's values.
    assert_eq!(cache.remove_pattern("*").await.unwrap(), 2);
    assert!(
        store.get(&response).await.unwrap().is_some(),
        "response untouched"
    );
    for key in [
        "user:1:profile",
        "user:2:profile",
        "user:2:feed",
        "site:motd",
    ] {
        assert!(
            other.get::<String>(key).await.is_some(),
            "other prefix: {key}"
        );
    }
}

pub async fn caches_fragments(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-frag");
    let rendered = AtomicUsize::new(0);
    let render = |platform: &'static str| {
        let rendered = &rendered;
        move || async move {
            rendered.fetch_add(1, Ordering::SeqCst);
            format!("<p>{platform}</p>")
        }
    };
    let ttl = Duration::from_secs(600);
    let stats = "platform_stats";
    let twitter = cache
        .fragment(stats, &["twitter"], ttl, render("twitter"))
        .await;
    let again = cache
        .fragment(stats, &["twitter"], ttl, render("twitter"))
        .await;
    let mastodon = cache
        .fragment(stats, &["mastodon"], ttl, render("mastodon"))
        .await;
    assert_eq!(
        (twitter.as_str(), again.as_str()),
        ("<p>twitter</p>", "<p>twitter</p>")
    );
    assert_eq!(mastodon, "<p>mastodon</p>");
    assert_eq!(rendered.load(Ordering::SeqCst), 2);
    // Invalidate one variant by its key, then every variant by pattern.
    assert!(cache
        .remove(&cache.fragment_key(stats, &["twitter"]))
        .await
        .unwrap());
    cache
        .fragment(stats, &["twitter"], ttl, render("twitter"))
        .await;
    assert_eq!(rendered.load(Ordering::SeqCst), 3);
    assert_eq!(
        cache
            .remove_pattern("fragment:platform_stats:*")
            .await
            .unwrap(),
        2
    );
    cache
        .fragment(stats, &["mastodon"], ttl, render("mastodon"))
        .await;
    assert_eq!(rendered.load(Ordering::SeqCst), 4);
}

/// Counters carry no envelope, so only the store expires them: this sleeps, because neither
/// the memory store's monotonic clock nor Redis's can be moved.
pub async fn counters_expire_by_the_store(store: &Arc<dyn Store>) {
    let cache = cache_on(store, "vals-counter-ttl");
    cache
        .set("c", &0, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(cache.incr("c", 2).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get::<i64>("c").await, None, "incr kept the TTL");
    assert_eq!(cache.incr("c", 1).await.unwrap(), 1, "a new counter");
}
