//! Criterion bench of a Redis hit against a memory hit, a bare handler and a raw fred `GET`,
//! all in one run against one private `redis-server`.
//!
//! ```text
//! cargo bench -p trc-benches --bench redis_hit -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every case drives one request at a time on a current-thread runtime. `router/*` go through a
//! real axum `Router` with `oneshot` and read the whole body, which is the same 2 KiB of JSON in
//! every case: `bare` (no cache layer), `memory_hit` (`cache.ttl(..)` on a [`MemoryStore`]) and
//! `redis_hit` (the same layer on a [`RedisStore`]). `redis/raw_fred_get` is a plain `GET` of
//! the very key the Redis hit reads, on a fred pool with the store's pool size, so
//! `redis_hit − raw_get` is the cache's own work on a Redis hit; `redis/store_get`
//! (`RedisStore::get` of that key, no router) splits it into the store's share and the layer's.
//!
//! After criterion, an interleaved latency pass prints p50/p99 per case from individual
//! timings (criterion reports per-sample means), the derived "own work" figures against the
//! issue's goals, and `redis-benchmark -t get` with the same value size against the same server
//! as the floor. Without `redis-server` the bench prints that it is skipped and exits 0.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::Criterion;
use fred::prelude::*;
use fred::types::config::TcpConfig;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{CacheKey, MemoryStore, RedisStore, ResponseCache, Store};

#[path = "support/mod.rs"]
mod support;
use support::{json_body, json_handler};

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/redis_server.rs"]
mod redis_server;

/// The store's default pool size; the raw fred pool uses the same.
const POOL_SIZE: usize = 4;

/// Sends a GET for `path` through the router and reads the whole body, as a server would.
async fn send(app: &Router, path: &'static str) -> usize {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    debug_assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap().to_bytes().len()
}

async fn raw_pool(url: &str) -> Pool {
    let connection = ConnectionConfig {
        tcp: TcpConfig {
            nodelay: Some(true),
            ..TcpConfig::default()
        },
        ..ConnectionConfig::default()
    };
    let pool = Pool::new(
        Config::from_url(url).unwrap(),
        None,
        Some(connection),
        None,
        POOL_SIZE,
    )
    .unwrap();
    pool.init().await.unwrap();
    pool
}

struct Setup {
    app: Router,
    pool: Pool,
    store: RedisStore,
    key: CacheKey,
    redis_key: String,
    entry_len: usize,
    body_len: usize,
}

async fn setup(url: &str) -> Setup {
    let body = json_body();
    let ttl = Duration::from_secs(3600);
    let memory = ResponseCache::builder()
        .key_prefix("bench")
        .store(MemoryStore::new(64 << 20))
        .build();
    let store = RedisStore::builder(url)
        .require_connection(true)
        .connect()
        .await
        .unwrap();
    let redis = ResponseCache::builder()
        .key_prefix("bench")
        .store(store.clone())
        .build();
    let redis_layer = redis.ttl(ttl);
    let key = redis_layer.key_for(&Request::get("/redis").body(()).unwrap());
    let redis_key = key.to_string();
    let app: Router = Router::new()
        .route("/bare", get(json_handler(body.clone())))
        .route(
            "/memory",
            get(json_handler(body.clone())).layer(memory.ttl(ttl)),
        )
        .route("/redis", get(json_handler(body.clone())).layer(redis_layer))
        // As `axum::serve` does: layers applied once, not on every call.
        .with_state(());

    // Fill both entries, then check that the second request of each is a hit.
    for path in ["/memory", "/redis"] {
        for round in 0..2 {
            let res = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = res.headers()[HeaderName::from_static("cache-status")].clone();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes, body, "{path} serves other bytes");
            if round == 1 {
                assert!(
                    status.to_str().unwrap().contains("; hit"),
                    "{path}: {status:?}"
                );
            }
        }
    }
    let pool = raw_pool(url).await;
    let stored: Bytes = pool.get(redis_key.as_str()).await.unwrap();
    Setup {
        app,
        pool,
        store,
        key,
        redis_key,
        entry_len: stored.len(),
        body_len: body.len(),
    }
}

/// Individually timed, interleaved requests: p50/p99 per case, in microseconds.
async fn latency_pass(s: &Setup, rounds: usize, per_round: usize) -> Vec<(&'static str, f64, f64)> {
    let names = ["bare", "memory_hit", "redis_hit", "store_get", "raw_get"];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(rounds * per_round); names.len()];
    for _ in 0..rounds {
        for (case, out) in samples.iter_mut().enumerate() {
            for _ in 0..per_round {
                let t = Instant::now();
                match case {
                    0 => {
                        black_box(send(&s.app, "/bare").await);
                    }
                    1 => {
                        black_box(send(&s.app, "/memory").await);
                    }
                    2 => {
                        black_box(send(&s.app, "/redis").await);
                    }
                    3 => {
                        black_box(s.store.get(&s.key).await.unwrap().unwrap());
                    }
                    _ => {
                        let v: Bytes = s.pool.get(s.redis_key.as_str()).await.unwrap();
                        black_box(v);
                    }
                }
                out.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
    names
        .iter()
        .zip(samples.iter_mut())
        .map(|(name, v)| {
            v.sort_unstable();
            let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
            (*name, at(0.50), at(0.99))
        })
        .collect()
}

/// `redis-benchmark -t get` of a value of `size` bytes under the key it reads; its quiet line.
fn redis_benchmark_floor(port: u16, size: usize, clients: u32) -> Option<String> {
    let value = "x".repeat(size);
    let set = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "set", "key:__rand_int__", &value])
        .output()
        .ok()?;
    if !set.status.success() {
        return None;
    }
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "-d",
            &size.to_string(),
        ])
        .args(["-n", "100000", "-c", &clients.to_string(), "-P", "1", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Quiet mode redraws progress with `\r`; the last segment is the result.
    text.rsplit('\r')
        .next()
        .map(|line| line.trim().to_owned())
        .filter(|line| line.starts_with("GET"))
}

// Written out instead of `criterion_group!`/`criterion_main!` so every item is documented.
fn main() {
    let Some(server) = redis_server::RedisServer::start("bench redis_hit") else {
        eprintln!("redis_hit bench skipped: redis-server is not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(setup(&server.url()));
    eprintln!(
        "redis-server on port {}; body {} B, encoded entry {} B under {}",
        server.port(),
        s.body_len,
        s.entry_len,
        s.redis_key
    );

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("router");
    group.throughput(criterion::Throughput::Elements(1));
    for (name, path) in [
        ("bare", "/bare"),
        ("memory_hit", "/memory"),
        ("redis_hit", "/redis"),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| send(&s.app, path));
        });
    }
    group.finish();
    let mut group = c.benchmark_group("redis");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("store_get", |b| {
        b.to_async(&rt)
            .iter(|| async { s.store.get(&s.key).await.unwrap().unwrap() });
    });
    group.bench_function("raw_fred_get", |b| {
        b.to_async(&rt).iter(|| async {
            let v: Bytes = s.pool.get(s.redis_key.as_str()).await.unwrap();
            v
        });
    });
    group.finish();
    c.final_summary();

    // Only `cargo bench` passes `--bench`; `cargo test --benches` and `--list` stop here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let lat = rt.block_on(latency_pass(&s, 10, 2000));
    println!();
    println!("interleaved latency, 10 rounds × 2000 requests per case, one at a time (µs):");
    println!("| case | p50 | p99 |");
    println!("|---|---:|---:|");
    for (name, p50, p99) in &lat {
        println!("| {name} | {p50:.1} | {p99:.1} |");
    }
    let p = |n: &str| lat.iter().find(|(name, ..)| *name == n).unwrap().1;
    let own = p("redis_hit") - p("raw_get");
    let added = p("redis_hit") - p("bare");
    println!(
        "own work on a Redis hit at p50 = redis_hit − raw_get = {own:.1} µs (goal ≤ 50 µs: {})",
        if own <= 50.0 { "met" } else { "MISSED" }
    );
    println!(
        "a Redis hit adds {added:.1} µs over bare; one GET round trip + 50 µs = {:.1} µs ({})",
        p("raw_get") + 50.0,
        if added <= p("raw_get") + 50.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    for clients in [1, 32] {
        match redis_benchmark_floor(server.port(), s.entry_len, clients) {
            Some(line) => println!(
                "floor: redis-benchmark -t get -d {} -c {clients}: {line}",
                s.entry_len
            ),
            None => println!("floor: redis-benchmark not available or failed"),
        }
    }
    drop(s);
    drop(rt);
}
