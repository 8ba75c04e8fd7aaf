//! Hit throughput and latency on Redis, against what one plain fred pool achieves: the tool
//! behind `benches/redis_load.sh`. It starts nothing itself; point it at a Redis you own.
//!
//! ```text
//! cargo run --release -p trc-benches --bin redis_throughput -- \
//!     --redis redis://127.0.0.1:6390/0 --size 2300 --concurrency 32 --seconds 10
//! ```
//!
//! Three phases, each `--concurrency` tasks looping for `--seconds` in all, split into
//! `--rounds` (default 3) slots that alternate with the other phases so drift from other load
//! on the machine hits every phase alike; each slot starts with an unrecorded warm-up:
//!
//! | phase | what each task does |
//! |---|---|
//! | `raw_get` | a plain `GET` of a `--size`-byte value on a fred `Pool` of the store's size |
//! | `store_get` | `RedisStore::get` of an entry whose encoding is `--size` bytes |
//! | `router_hit` | a full cached hit through an axum `Router` + `RedisStore` (`oneshot`, body read), entry `--size` bytes |
//!
//! It prints ops/s, p50/p99 latency and client CPU per operation (process CPU time from
//! `/proc/self/stat`, on Linux) per phase, and the ratios `store_get/raw_get` and
//! `router_hit/raw_get` (the goal for hits is at least 0.8). Options: `--pool N` (default 4, the
//! store's default), `--warmup S` (default 1), `--phases a,b` (only those, e.g. to profile
//! one), and `--diagnose`, three more phases that split the store's overhead:
//! `raw_get_opts` (the raw `GET` with the per-command options the store sets: 200 ms timeout,
//! fail fast, one attempt), `raw_get_opts_guard` (the same inside a `tokio::time::timeout`
//! like the store's own guard) and `store_get_on_raw_pool` (`RedisStore::get` on the raw
//! phase's pool, through `RedisStore::builder_with_pool`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::TcpConfig;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{CacheKey, CachedResponse, Entry, RedisStore, ResponseCache, Store};

#[path = "../support/mod.rs"]
mod support;
use support::json_handler;

#[derive(Debug)]
struct Options {
    redis: String,
    size: usize,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    pool: usize,
    diagnose: bool,
    rounds: usize,
    phases: Option<Vec<String>>,
}

const USAGE: &str = "usage: redis_throughput --redis redis://HOST:PORT/DB [--size BYTES] \
[--concurrency N] [--seconds S] [--warmup S] [--pool N] [--rounds R] [--diagnose] [--phases a,b,..]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        redis: String::new(),
        size: 2300,
        concurrency: 32,
        seconds: 10.0,
        warmup: 1.0,
        pool: 4,
        diagnose: false,
        rounds: 3,
        phases: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        if flag == "--diagnose" {
            o.diagnose = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--redis" => o.redis.clone_from(&value),
            "--size" => o.size = value.parse().map_err(|e| bad(&e))?,
            "--concurrency" => o.concurrency = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => o.warmup = value.parse().map_err(|e| bad(&e))?,
            "--pool" => o.pool = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => o.rounds = value.parse().map_err(|e| bad(&e))?,
            "--phases" => o.phases = Some(value.split(',').map(str::to_owned).collect()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if o.redis.is_empty() {
        return Err(format!("--redis is required\n{USAGE}"));
    }
    if o.concurrency == 0 || o.pool == 0 || o.rounds == 0 || o.seconds <= 0.0 {
        return Err("--concurrency, --pool, --rounds and --seconds must be positive".to_owned());
    }
    Ok(o)
}

/// What one phase measured.
struct Outcome {
    ops: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU seconds the whole process used while the phase was measured.
    cpu: Option<f64>,
    /// Every latency, sorted, in nanoseconds.
    lat: Vec<u32>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// Client CPU per operation, in microseconds.
    fn cpu_us(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu * 1e6 / self.ops.max(1) as f64)
    }

    fn merge(rounds: Vec<Outcome>) -> Outcome {
        let secs = rounds.iter().map(|r| r.secs).sum();
        let cpu = rounds.iter().map(|r| r.cpu).sum();
        let mut lat: Vec<u32> = rounds.into_iter().flat_map(|r| r.lat).collect();
        lat.sort_unstable();
        Outcome {
            ops: lat.len() as u64,
            secs,
            p50_us: quantile(&lat, 0.50),
            p99_us: quantile(&lat, 0.99),
            cpu,
            lat,
        }
    }
}

/// The `q` quantile of sorted nanoseconds, in microseconds.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q) as usize)
        .map_or(0.0, |&n| f64::from(n) / 1000.0)
}

/// One operation of a phase.
type Op = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Runs `op` in `tasks` loops for `warmup` (unrecorded) then `secs`; throughput and latency.
async fn phase(tasks: usize, warmup: f64, secs: f64, op: Op) -> Outcome {
    let start = Instant::now() + Duration::from_secs_f64(warmup);
    let end = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                op().await;
                if t >= start {
                    lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
                }
            }
            lat
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = process_cpu();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task panicked"));
    }
    let cpu = process_cpu().zip(cpu_start).map(|(b, a)| b - a);
    // Ops that started in the window; the last ones end a little after it, which is noise.
    let secs = end.saturating_duration_since(start).as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| quantile(&all, q);
    Outcome {
        ops: all.len() as u64,
        secs,
        p50_us: at(0.50),
        p99_us: at(0.99),
        cpu,
        lat: all,
    }
}

/// This process's CPU time (user + system, all threads) in seconds, from `/proc/self/stat`;
/// `None` off Linux.
fn process_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture Rust targets.
    Some(ticks / 100.0)
}

fn raw_pool(url: &str, size: usize) -> Result<Pool, String> {
    let connection = ConnectionConfig {
        tcp: TcpConfig {
            nodelay: Some(true),
            ..TcpConfig::default()
        },
        ..ConnectionConfig::default()
    };
    let config = Config::from_url(url).map_err(|e| format!("--redis: {e}"))?;
    Pool::new(config, None, Some(connection), None, size).map_err(|e| format!("pool: {e}"))
}

fn body_of(len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
            .collect::<Vec<u8>>(),
    )
}

/// A router whose `/hit` is cached in `cache`, served `body_len` bytes; filled and checked.
async fn filled_router(cache: &ResponseCache, body_len: usize) -> Result<(Router, String), String> {
    let layer = cache.ttl(Duration::from_secs(3600));
    let key = layer
        .key_for(&Request::get("/hit").body(()).unwrap())
        .to_string();
    // `with_state` turns handlers into services once, as `axum::serve` does; without it axum
    // would apply the cache layer again on every call.
    let app: Router = Router::new()
        .route("/hit", get(json_handler(body_of(body_len))).layer(layer))
        .with_state(());
    for round in 0..2 {
        let res = app
            .clone()
            .oneshot(Request::get("/hit").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.headers()[HeaderName::from_static("cache-status")].clone();
        if round == 1 && !status.to_str().unwrap_or("").contains("; hit") {
            return Err(format!("the second request was not a hit: {status:?}"));
        }
    }
    Ok((app, key))
}

async fn run(o: Options) -> Result<(), String> {
    let pool = raw_pool(&o.redis, o.pool)?;
    pool.init().await.map_err(|e| format!("connect: {e}"))?;
    let store = RedisStore::builder(&o.redis)
        .pool_size(o.pool)
        .require_connection(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;

    // (a) a plain value of --size bytes.
    let raw_key = RAW_KEY;
    pool.set::<(), _, _>(raw_key, body_of(o.size), None, None, false)
        .await
        .map_err(|e| format!("SET: {e}"))?;

    // (b) an entry whose encoding is --size bytes.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let entry_of = |len: usize| {
        Entry::from(CachedResponse::new(
            StatusCode::OK,
            &headers,
            body_of(len),
            now_millis(),
            Duration::from_secs(3600),
        ))
    };
    let overhead = entry_of(0).encode().len();
    let entry = entry_of(o.size.saturating_sub(overhead));
    let entry_len = entry.encode().len();
    let store_key = CacheKey::from_parts("redis-throughput", &[b"store"]);
    store
        .put(&store_key, entry, Duration::from_secs(3600))
        .await
        .map_err(|e| e.to_string())?;

    // (c) the router's entry: probe the layer's overhead (headers it adds), then size the body.
    let probe = ResponseCache::builder()
        .key_prefix("redis-throughput-probe")
        .store(store.clone())
        .build();
    let (_, probe_key) = filled_router(&probe, 1000).await?;
    let probe_len = pool
        .strlen::<usize, _>(probe_key.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let router_body = o.size.saturating_sub(probe_len - 1000);
    let cache = ResponseCache::builder()
        .key_prefix("redis-throughput")
        .store(store.clone())
        .build();
    let (app, router_key) = filled_router(&cache, router_body).await?;
    let router_len = pool
        .strlen::<usize, _>(router_key.as_str())
        .await
        .map_err(|e| e.to_string())?;

    println!(
        "# redis {} · pool {} · concurrency {} · {} s per phase in {} rounds (+{} s warm-up each) · tokio workers {}",
        o.redis,
        o.pool,
        o.concurrency,
        o.seconds,
        o.rounds,
        o.warmup,
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    println!(
        "# value sizes: raw_get {} B, store_get {entry_len} B encoded, router_hit {router_len} B encoded ({router_body} B body)",
        o.size
    );

    let mut ops: Vec<(&'static str, Op)> = Vec::new();
    {
        let pool = pool.clone();
        let size = o.size;
        ops.push((
            "raw_get",
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    let v: Bytes = pool.get(raw_key).await.expect("GET failed");
                    assert_eq!(v.len(), size);
                })
            }),
        ));
    }
    {
        let store = store.clone();
        let key = Arc::new(store_key.clone());
        ops.push((
            "store_get",
            Arc::new(move || {
                let store = store.clone();
                let key = key.clone();
                Box::pin(async move {
                    let found = store.get(&key).await.expect("store get failed");
                    assert!(found.is_some(), "store get missed");
                })
            }),
        ));
    }
    {
        let app = app.clone();
        ops.push((
            "router_hit",
            Arc::new(move || {
                let app = app.clone();
                Box::pin(async move {
                    let res = app
                        .oneshot(Request::get("/hit").body(Body::empty()).unwrap())
                        .await
                        .unwrap();
                    let n = res.into_body().collect().await.unwrap().to_bytes().len();
                    assert_eq!(n, router_body);
                })
            }),
        ));
    }
    if o.diagnose {
        let options = fred::types::config::Options {
            timeout: Some(Duration::from_millis(200)),
            fail_fast: true,
            max_attempts: Some(1),
            ..fred::types::config::Options::default()
        };
        let with = Arc::new(pool.with_options(&options));
        // Futures are moved into boxes (the store's `StoreFuture`, tower's `ResponseFuture`):
        // their size is copied on every call.
        println!(
            "# future sizes: fred GET {} B, fred GET with options {} B, RedisStore::get {} B (boxed)",
            std::mem::size_of_val(&pool.get::<Bytes, _>(RAW_KEY)),
            std::mem::size_of_val(&with.get::<Bytes, _>(RAW_KEY)),
            std::mem::size_of_val(&*store.get(&store_key)),
        );
        let size = o.size;
        let w = with.clone();
        ops.push((
            "raw_get_opts",
            Arc::new(move || {
                let w = w.clone();
                Box::pin(async move {
                    let v: Bytes = w.get(raw_key).await.expect("GET failed");
                    assert_eq!(v.len(), size);
                })
            }),
        ));
        // The store's code on the raw pool: tells the pool's settings apart from the store's work.
        let on_raw = RedisStore::builder_with_pool(pool.clone())
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let key = Arc::new(store_key.clone());
        ops.push((
            "store_get_on_raw_pool",
            Arc::new(move || {
                let store = on_raw.clone();
                let key = key.clone();
                Box::pin(async move {
                    let found = store.get(&key).await.expect("store get failed");
                    assert!(found.is_some(), "store get missed");
                })
            }),
        ));
        ops.push((
            "raw_get_opts_guard",
            Arc::new(move || {
                let w = with.clone();
                Box::pin(async move {
                    let get = w.get::<Bytes, _>(raw_key);
                    let v = tokio::time::timeout(Duration::from_millis(410), get)
                        .await
                        .expect("guard")
                        .expect("GET failed");
                    assert_eq!(v.len(), size);
                })
            }),
        ));
    }

    if let Some(only) = &o.phases {
        // For profiling one phase at a time; ratios are then to the first phase kept.
        ops.retain(|(name, _)| only.iter().any(|p| p == name));
        if ops.is_empty() {
            return Err(format!("--phases {}: no such phase", only.join(",")));
        }
    }

    // Phases alternate round by round so drift (other load on the machine) hits them alike.
    let slot = o.seconds / o.rounds as f64;
    let mut results: Vec<Vec<Outcome>> = ops.iter().map(|_| Vec::new()).collect();
    for _ in 0..o.rounds {
        for ((_, op), out) in ops.iter().zip(results.iter_mut()) {
            out.push(phase(o.concurrency, o.warmup, slot, op.clone()).await);
        }
    }
    let merged: Vec<(&str, Outcome, Vec<f64>)> = ops
        .iter()
        .zip(results)
        .map(|((name, _), rounds)| {
            let per_round = rounds.iter().map(Outcome::rate).collect();
            (*name, Outcome::merge(rounds), per_round)
        })
        .collect();
    let stats = store.stats();
    if stats.errors > 0 || stats.timeouts > 0 {
        println!(
            "# WARNING: the store saw {} errors, {} timeouts: those ops were misses",
            stats.errors, stats.timeouts
        );
    }

    let a = &merged[0];
    println!();
    println!(
        "| phase | ops | ops/s | p50 µs | p99 µs | client CPU µs/op | ops/s ÷ raw_get | per-round ÷ raw_get |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (name, out, rounds) in &merged {
        let per_round: Vec<String> = rounds
            .iter()
            .zip(&a.2)
            .map(|(r, base)| format!("{:.2}", r / base))
            .collect();
        println!(
            "| {name} | {} | {:.0} | {:.1} | {:.1} | {} | {:.3} | {} |",
            out.ops,
            out.rate(),
            out.p50_us,
            out.p99_us,
            out.cpu_us().map_or("—".to_owned(), |c| format!("{c:.1}")),
            out.rate() / a.1.rate(),
            per_round.join(" ")
        );
    }
    if o.phases.is_some() {
        return cleanup(&pool, &store, &store_key, &[&cache, &probe]).await;
    }
    let (b, c) = (&merged[1].1, &merged[2].1);
    println!();
    println!(
        "ratios: store_get/raw_get {:.3}, router_hit/raw_get {:.3} (goal ≥ 0.8)",
        b.rate() / a.1.rate(),
        c.rate() / a.1.rate()
    );
    if let (Some(ca), Some(cb), Some(cc)) = (a.1.cpu_us(), b.cpu_us(), c.cpu_us()) {
        println!(
            "client CPU per op over raw_get: store_get {:+.1} µs, router_hit {:+.1} µs",
            cb - ca,
            cc - ca
        );
    }
    // Under load p50 is mostly queueing (concurrency ÷ throughput); the unloaded figure is
    // the redis_hit bench's.
    println!(
        "p50 at this concurrency, minus raw_get: store_get {:+.1} µs, router_hit {:+.1} µs \
         (queueing included; the 50 µs goal is checked unloaded by `cargo bench -p trc-benches --bench redis_hit`)",
        b.p50_us - a.1.p50_us,
        c.p50_us - a.1.p50_us
    );
    cleanup(&pool, &store, &store_key, &[&cache, &probe]).await
}

/// Removes what the run stored.
async fn cleanup(
    pool: &Pool,
    store: &RedisStore,
    store_key: &CacheKey,
    caches: &[&ResponseCache],
) -> Result<(), String> {
    let _ = pool.del::<u64, _>(RAW_KEY).await;
    let _ = store.remove(store_key).await;
    for cache in caches {
        let _ = cache.clear().await;
    }
    let _ = pool.quit().await;
    Ok(())
}

const RAW_KEY: &str = "redis-throughput:raw";

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(options)) {
        eprintln!("redis_throughput: {e}");
        std::process::exit(1);
    }
}
