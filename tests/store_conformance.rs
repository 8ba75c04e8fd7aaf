//! One suite, every store: `MemoryStore`, `RedisStore` on a single node and on a 3-master
//! cluster must behave alike for round trips, expiry, removal, prefix clearing and bad values.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use tower_response_cache::{
    CacheKey, CachedResponse, Entry, MemoryStore, Purge, RedisStore, Store,
};

use common::redis_server::{RedisCluster, RedisServer};

/// Runs `redis-cli` arguments against the store's backend; its output.
type Raw = Box<dyn Fn(&[&str]) -> String>;

/// A store under test, with raw access to its backend when it has one.
struct Subject {
    name: &'static str,
    store: Arc<dyn Store>,
    /// Runs a raw Redis command (`redis-cli` arguments); `None` for the memory store.
    raw: Option<Raw>,
}

fn response(body: &'static [u8], ttl: Duration) -> CachedResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.append("x-many", "1".parse().unwrap());
    headers.append("x-many", "2".parse().unwrap());
    CachedResponse::new(
        StatusCode::OK,
        &headers,
        Bytes::from_static(body),
        1_700_000_000_000,
        ttl,
    )
}

fn key(prefix: &str, name: &str) -> CacheKey {
    CacheKey::from_parts(prefix, &[name.as_bytes()])
}

async fn body_of(s: &Subject, k: &CacheKey) -> Option<Bytes> {
    match s.store.get(k).await.expect("get") {
        Some(Entry::Response(r)) => Some(r.body().clone()),
        Some(other) => panic!("{}: expected a response, got {other:?}", s.name),
        None => None,
    }
}

async fn round_trips(s: &Subject) {
    let k = key("rt", "response");
    let original = response(b"{\"a\":1}", Duration::from_secs(60));
    s.store
        .put(&k, original.clone().into(), Duration::from_secs(60))
        .await
        .expect("put");
    let Some(Entry::Response(back)) = s.store.get(&k).await.expect("get") else {
        panic!("{}: response did not round-trip", s.name)
    };
    assert_eq!(*back, original, "{}", s.name);

    let vk = key("rt", "vary");
    let names: Arc<[HeaderName]> = vec![HeaderName::from_static("accept-language")].into();
    s.store
        .put(&vk, Entry::Vary(names.clone()), Duration::from_secs(60))
        .await
        .expect("put vary");
    let Some(Entry::Vary(back)) = s.store.get(&vk).await.expect("get vary") else {
        panic!("{}: vary did not round-trip", s.name)
    };
    assert_eq!(back, names, "{}", s.name);

    assert!(
        s.store.get(&key("rt", "absent")).await.unwrap().is_none(),
        "{}",
        s.name
    );
}

async fn overwrites(s: &Subject) {
    let k = key("ow", "k");
    let ttl = Duration::from_secs(60);
    s.store
        .put(&k, response(b"one", ttl).into(), ttl)
        .await
        .unwrap();
    // Read first: a store that remembers hot entries must not answer with the old one.
    assert_eq!(body_of(s, &k).await.as_deref(), Some(&b"one"[..]));
    assert_eq!(body_of(s, &k).await.as_deref(), Some(&b"one"[..]));
    s.store
        .put(&k, response(b"two", ttl).into(), ttl)
        .await
        .unwrap();
    assert_eq!(
        body_of(s, &k).await.as_deref(),
        Some(&b"two"[..]),
        "{}",
        s.name
    );
}

async fn expires(s: &Subject) {
    let long = key("ttl", "long");
    let ttl = Duration::from_secs(30);
    s.store
        .put(&long, response(b"l", ttl).into(), ttl)
        .await
        .unwrap();
    if let Some(raw) = &s.raw {
        // Redis keeps the TTL itself: nothing outlives it.
        let pttl: i64 = raw(&["PTTL", &long.to_string()]).trim().parse().unwrap();
        assert!((29_000..=30_000).contains(&pttl), "{}: PTTL {pttl}", s.name);
    }
    assert!(body_of(s, &long).await.is_some(), "{}", s.name);

    let zero = key("ttl", "zero");
    s.store
        .put(&zero, response(b"z", Duration::ZERO).into(), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        body_of(s, &zero).await.is_none(),
        "{}: zero TTL kept",
        s.name
    );

    // Real time only here: neither the memory store nor Redis lets a test move their clock.
    let short = key("ttl", "short");
    let ttl = Duration::from_millis(100);
    s.store
        .put(&short, response(b"s", ttl).into(), ttl)
        .await
        .unwrap();
    assert!(body_of(s, &short).await.is_some(), "{}", s.name);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        body_of(s, &short).await.is_none(),
        "{}: outlived its TTL",
        s.name
    );
}

async fn removes(s: &Subject) {
    let k = key("rm", "k");
    let ttl = Duration::from_secs(60);
    s.store
        .put(&k, response(b"x", ttl).into(), ttl)
        .await
        .unwrap();
    assert!(body_of(s, &k).await.is_some(), "{}", s.name);
    assert!(s.store.remove(&k).await.unwrap(), "{}", s.name);
    assert!(s.store.get(&k).await.unwrap().is_none(), "{}", s.name);
    assert!(
        !s.store.remove(&k).await.unwrap(),
        "{}: removed twice",
        s.name
    );
}

async fn clears_a_prefix_only(s: &Subject) {
    let ttl = Duration::from_secs(60);
    let doomed: Vec<CacheKey> = (0..40).map(|i| key("clr", &i.to_string())).collect();
    let kept: Vec<CacheKey> = (0..5).map(|i| key("clrx", &i.to_string())).collect();
    for k in doomed.iter().chain(&kept) {
        s.store
            .put(k, response(b"c", ttl).into(), ttl)
            .await
            .unwrap();
        assert!(body_of(s, k).await.is_some(), "{}", s.name);
    }
    let removed = s.store.clear_prefix("clr:").await.expect("clear_prefix");
    assert_eq!(removed, 40, "{}", s.name);
    for k in &doomed {
        assert!(
            s.store.get(k).await.unwrap().is_none(),
            "{}: {k} survived",
            s.name
        );
    }
    for k in &kept {
        assert!(body_of(s, k).await.is_some(), "{}: {k} was cleared", s.name);
    }
    assert_eq!(s.store.clear_prefix("clr:").await.unwrap(), 0, "{}", s.name);
}

async fn bad_values_are_misses_and_get_overwritten(s: &Subject) {
    let Some(raw) = &s.raw else { return };
    let ttl = Duration::from_secs(60);
    let garbage = key("bad", "garbage");
    let printed = garbage.to_string();
    assert!(
        printed.is_ascii() && !printed.contains(' '),
        "printable key"
    );
    raw(&["SET", &printed, "not an entry"]);
    assert!(s
        .store
        .get(&garbage)
        .await
        .expect("a miss, not an error")
        .is_none());
    s.store
        .put(&garbage, response(b"ok", ttl).into(), ttl)
        .await
        .unwrap();
    assert_eq!(
        body_of(s, &garbage).await.as_deref(),
        Some(&b"ok"[..]),
        "{}",
        s.name
    );

    // Our magic, an encoding version from the future.
    let future = key("bad", "future");
    raw(&["SET", &future.to_string(), "TRC9later"]);
    assert!(
        s.store.get(&future).await.expect("a miss").is_none(),
        "{}",
        s.name
    );

    let list = key("bad", "list");
    raw(&["RPUSH", &list.to_string(), "a"]);
    assert!(s
        .store
        .get(&list)
        .await
        .expect("WRONGTYPE is a miss")
        .is_none());
    s.store
        .put(&list, response(b"mine", ttl).into(), ttl)
        .await
        .unwrap();
    assert_eq!(
        body_of(s, &list).await.as_deref(),
        Some(&b"mine"[..]),
        "{}",
        s.name
    );
}

/// A hard bump's increment: a generation counts soft bumps in its low 24 bits.
const HARD: u64 = 1 << 24;

async fn counts_generations_per_prefix(s: &Subject) {
    let names: Vec<Arc<str>> = vec![Arc::from("*"), Arc::from("tag:a"), Arc::from("tag:b")];
    let start = s.store.generations("gen-p", &names).await.unwrap();
    assert_eq!(start.gens, [0, 0, 0], "{}", s.name);
    let bumped = s
        .store
        .bump_generations("gen-p", &names[1..2], Purge::Hard)
        .await
        .unwrap();
    assert!(bumped.seq > start.seq, "{}", s.name);
    assert_eq!(bumped.gens, [HARD], "{}", s.name);
    let now = s.store.generations("gen-p", &names).await.unwrap();
    assert_eq!(
        (now.seq, now.gens),
        (bumped.seq, vec![0, HARD, 0]),
        "{}",
        s.name
    );
    let twice = s
        .store
        .bump_generations("gen-p", &names[1..], Purge::Hard)
        .await
        .unwrap();
    assert_eq!(twice.gens, [2 * HARD, HARD], "{}", s.name);
    // Another prefix keeps its own counters; clearing entries keeps them.
    let other = s.store.generations("gen-q", &names).await.unwrap();
    assert_eq!(other.gens, [0, 0, 0], "{}", s.name);
    s.store.clear_prefix("gen-p:").await.unwrap();
    let kept = s.store.generations("gen-p", &names[1..]).await.unwrap();
    assert_eq!(kept.gens, [2 * HARD, HARD], "{}", s.name);
}

/// A soft bump adds one to each name, a hard one 2^24; either moves the sequence by one.
async fn counts_soft_bumps_apart_from_hard_ones(s: &Subject) {
    let names: Vec<Arc<str>> = vec![Arc::from("tag:a"), Arc::from("tag:b")];
    let soft = s
        .store
        .bump_generations("soft-p", &names, Purge::Soft)
        .await
        .unwrap();
    assert_eq!(soft.gens, [1, 1], "{}", s.name);
    let again = s
        .store
        .bump_generations("soft-p", &names[..1], Purge::Soft)
        .await
        .unwrap();
    assert_eq!(
        (again.seq, again.gens),
        (soft.seq + 1, vec![2]),
        "{}",
        s.name
    );
    let hard = s
        .store
        .bump_generations("soft-p", &names[1..], Purge::Hard)
        .await
        .unwrap();
    assert_eq!(
        (hard.seq, hard.gens),
        (soft.seq + 2, vec![HARD + 1]),
        "{}",
        s.name
    );
    let now = s.store.generations("soft-p", &names).await.unwrap();
    assert_eq!(now.gens, [2, HARD + 1], "{}", s.name);
}

/// Counters past 2^53 (a Lua number's exact range) still move by exactly the increment: the
/// bump script leaves the arithmetic to HINCRBY and reads the values back as strings. Also a
/// counter written by an older version (one per bump) is moved, not reset.
async fn keeps_large_and_old_counters_exact(s: &Subject) {
    let Some(raw) = &s.raw else { return };
    let names: Vec<Arc<str>> = vec![Arc::from("tag:big"), Arc::from("tag:old")];
    let big: u64 = (1 << 60) + 1;
    raw(&[
        "HSET",
        "{big-p}:gens",
        "tag:big",
        &big.to_string(),
        "tag:old",
        "5",
    ]);
    let soft = s
        .store
        .bump_generations("big-p", &names, Purge::Soft)
        .await
        .unwrap();
    assert_eq!(soft.gens, [big + 1, 6], "{}", s.name);
    let hard = s
        .store
        .bump_generations("big-p", &names, Purge::Hard)
        .await
        .unwrap();
    assert_eq!(hard.gens, [big + 1 + HARD, 6 + HARD], "{}", s.name);
    let now = s.store.generations("big-p", &names).await.unwrap();
    assert_eq!(now.gens, hard.gens, "{}", s.name);
}

async fn conforms(s: Subject) {
    counts_generations_per_prefix(&s).await;
    counts_soft_bumps_apart_from_hard_ones(&s).await;
    keeps_large_and_old_counters_exact(&s).await;
    round_trips(&s).await;
    overwrites(&s).await;
    expires(&s).await;
    removes(&s).await;
    clears_a_prefix_only(&s).await;
    bad_values_are_misses_and_get_overwritten(&s).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    conforms(Subject {
        name: "memory",
        store: Arc::new(MemoryStore::new(16 << 20)),
        raw: None,
    })
    .await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let Some(server) = RedisServer::start("redis_store_conforms") else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    assert!(!store.is_clustered());
    let server = Arc::new(server);
    let cli = server.clone();
    conforms(Subject {
        name: "redis",
        store: Arc::new(store.clone()),
        raw: Some(Box::new(move |args| cli.cli(args))),
    })
    .await;
    let stats = store.stats();
    assert_eq!(stats.corrupt, 3, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
}

#[tokio::test]
async fn redis_cluster_conforms() {
    let Some(cluster) = RedisCluster::start("redis_cluster_conforms") else {
        return;
    };
    let store = RedisStore::builder(&cluster.url())
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    assert!(store.is_clustered());
    let cluster = Arc::new(cluster);
    let cli = cluster.clone();
    conforms(Subject {
        name: "redis-cluster",
        store: Arc::new(store.clone()),
        raw: Some(Box::new(move |args| cli.cli(args))),
    })
    .await;
    assert_eq!(store.stats().errors, 0, "{:?}", store.stats());
}
