//! The low-level API (`get`, `set`, `incr`, `get_or_insert_with`, `remove_pattern`,
//! fragments) on the memory store, and what it does when the store cannot keep values.

#[path = "common/values_invalidation.rs"]
mod invalidation;
#[path = "common/values_suite.rs"]
mod suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_response_cache::{
    CacheKey, Entry, Generations, MemoryStore, Purge, ResponseCache, Store, StoreError,
    StoreErrorKind, StoreFuture, VALUES_ROUTE,
};

use suite::{ada, Influencer, TTL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    suite::conforms(Arc::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_invalidates_values() {
    invalidation::conforms(Arc::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_share_the_memory_bound_with_responses() {
    let store = MemoryStore::new(256 * 1024);
    let cache = ResponseCache::builder().store(store.clone()).build();
    let big = "x".repeat(4096);
    for i in 0..200 {
        cache.set(&format!("big:{i}"), &big, TTL).await.unwrap();
    }
    assert!(
        store.weighted_size() <= 256 * 1024,
        "{}",
        store.weighted_size()
    );
    assert!(
        store.entry_count() < 200,
        "values were evicted by the bound"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_computation_hands_over_to_a_waiter() {
    let cache = ResponseCache::default();
    let computed = Arc::new(AtomicUsize::new(0));
    let call = |cache: ResponseCache, computed: Arc<AtomicUsize>| async move {
        cache
            .get_or_insert_with("slow", TTL, || async move {
                computed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                ada()
            })
            .await
    };
    let leader = tokio::spawn(call(cache.clone(), computed.clone()));
    tokio::task::yield_now().await; // the leader starts computing
    let waiter = tokio::spawn(call(cache.clone(), computed.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    assert_eq!(waiter.await.unwrap(), ada());
    assert_eq!(
        computed.load(Ordering::SeqCst),
        2,
        "the waiter computed instead"
    );
}

#[tokio::test(start_paused = true)]
async fn coalescing_off_computes_for_every_caller() {
    let cache = ResponseCache::builder()
        .coalesce_wait(Duration::ZERO)
        .build();
    let computed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (cache, computed) = (cache.clone(), computed.clone());
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("k", TTL, || async move {
                        computed.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        1u8
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    assert_eq!(computed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn hits_and_misses_are_counted_under_the_values_label() {
    let cache = ResponseCache::default();
    assert_eq!(cache.get::<u8>("k").await, None);
    cache.get_or_insert_with("k", TTL, || async { 7u8 }).await;
    cache.get_or_insert_with("k", TTL, || async { 8u8 }).await;
    assert_eq!(cache.get::<u8>("k").await, Some(7));
    let stats = cache
        .metrics()
        .snapshot()
        .into_iter()
        .find(|r| r.route == VALUES_ROUTE)
        .expect("values counted");
    assert_eq!(
        (stats.hits, stats.misses, stats.stores),
        (2, 2, 1),
        "{stats:?}"
    );
}

/// A store that keeps responses but implements none of the value methods.
#[derive(Debug, Default)]
struct ResponsesOnly(MemoryStore);

impl Store for ResponsesOnly {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Entry>> {
        self.0.get(key)
    }
    fn put<'a>(&'a self, key: &'a CacheKey, entry: Entry, ttl: Duration) -> StoreFuture<'a, ()> {
        self.0.put(key, entry, ttl)
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool> {
        self.0.remove(key)
    }
    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        self.0.clear_prefix(prefix)
    }
    fn generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
    ) -> StoreFuture<'a, Generations> {
        self.0.generations(prefix, names)
    }
    fn bump_generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
        purge: Purge,
    ) -> StoreFuture<'a, Generations> {
        self.0.bump_generations(prefix, names, purge)
    }
}

#[tokio::test]
async fn a_store_without_values_fails_loudly_and_get_or_insert_with_still_computes() {
    let cache = ResponseCache::builder()
        .store(ResponsesOnly::default())
        .build();
    let err: StoreError = cache.set("k", &ada(), TTL).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Backend);
    assert!(cache.incr("n", 1).await.is_err());
    assert!(cache.remove("k").await.is_err());
    assert!(cache.remove_pattern("*").await.is_err());
    assert_eq!(cache.get::<Influencer>("k").await, None);
    let computed = AtomicUsize::new(0);
    for _ in 0..2 {
        let got = cache
            .get_or_insert_with("k", TTL, || async {
                computed.fetch_add(1, Ordering::SeqCst);
                ada()
            })
            .await;
        assert_eq!(got, ada());
    }
    assert_eq!(
        computed.load(Ordering::SeqCst),
        2,
        "nothing could be cached"
    );
}

#[tokio::test]
async fn a_value_that_does_not_serialise_is_an_error_and_get_or_insert_with_returns_it() {
    use std::collections::HashMap;
    let cache = ResponseCache::default();
    let unserialisable: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let err = cache.set("k", &unserialisable, TTL).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Encode, "{err}");
    let got = cache
        .get_or_insert_with("k", TTL, || async { unserialisable.clone() })
        .await;
    assert_eq!(got, unserialisable);
}
