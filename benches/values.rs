//! Criterion bench of the low-level API on the memory store: what a value hit costs over the
//! store's own raw read (the envelope, serde_json and the metrics), and a counter increment.
//!
//! ```text
//! cargo bench -p trc-benches --bench values -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `store_get_value` is `Store::get_value` of the stored bytes (the floor); `get_hit` is
//! `ResponseCache::get::<Top>` of the same key, a small struct of five names; `get_or_insert_hit`
//! the same through `get_or_insert_with`; `get_hit_after_other_invalidation` a hit of a tagged
//! value after another tag was invalidated (the stamp's slow path); `incr` one atomic increment
//! of an existing counter.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use serde::{Deserialize, Serialize};
use tower_response_cache::{MemoryStore, ResponseCache, Store};

/// A "top 5 influencers" value, as twiscope caches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Top {
    platform: String,
    names: Vec<String>,
}

fn bench_values(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::default();
    let cache = ResponseCache::builder().store(store.clone()).build();
    let ttl = Duration::from_secs(3600);
    let top = Top {
        platform: "twitter".into(),
        names: (0..5).map(|i| format!("influencer-{i}")).collect(),
    };
    rt.block_on(async {
        cache.set("top:twitter", &top, ttl).await.unwrap();
        cache.incr("hits", 1).await.unwrap();
    });

    let mut group = c.benchmark_group("values");
    group.bench_function("store_get_value", |b| {
        b.iter(|| rt.block_on(async { black_box(store.get_value("trc:v:top:twitter").await) }));
    });
    group.bench_function("get_hit", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.get::<Top>("top:twitter").await) }));
    });
    group.bench_function("get_or_insert_hit", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    cache
                        .get_or_insert_with("top:twitter", ttl, || async { top.clone() })
                        .await,
                )
            })
        });
    });
    // The slow path of the stamp check: the store's invalidation sequence moved since the value
    // was written (another tag was invalidated), so each read parses the stamp and compares its
    // names' generations.
    let moved = ResponseCache::builder()
        .store(MemoryStore::default())
        .build();
    rt.block_on(async {
        let tags = &["platform:twitter"][..];
        moved
            .set_tagged("top:twitter", &top, ttl, tags)
            .await
            .unwrap();
        moved.invalidate_tag("platform:mastodon").await.unwrap();
    });
    group.bench_function("get_hit_after_other_invalidation", |b| {
        b.iter(|| rt.block_on(async { black_box(moved.get::<Top>("top:twitter").await) }));
    });
    group.bench_function("incr", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.incr("hits", 1).await) }));
    });
    group.finish();
}

// Written out instead of `criterion_group!`/`criterion_main!` so every item is documented.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_values(&mut c);
    c.final_summary();
}
