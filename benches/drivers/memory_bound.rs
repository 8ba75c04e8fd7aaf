//! How much memory a `MemoryStore` really takes against the bound it was given: fills a cached
//! axum route with many distinct URLs, in process, and reports the process's peak RSS growth.
//!
//! ```text
//! cargo run --release -p trc-benches --bin memory_bound -- --body 1024 --urls 200000 --bound-mib 128
//! cargo run --release -p trc-benches --bin memory_bound -- --body 65536 --urls 20000 --bound-mib 128
//! ```
//!
//! Each request is `GET /page?n=N` for a new `N`: a miss whose response (`--body` bytes of JSON,
//! distinct per `N`) is stored, so the store fills up to its bound and then evicts. Requests run
//! on a two-worker tokio runtime, 16 at a time, as a small server would. Before the fill the
//! process's `VmRSS` is the baseline; after it, the peak (`VmHWM`) less the baseline is what the
//! store cost, shown against the bound.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Query;
use axum::http::{header, Request};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tower::ServiceExt as _;
use tower_response_cache::{MemoryStore, ResponseCache};

const USAGE: &str = "\
Usage: memory_bound [--body BYTES] [--urls N] [--bound-mib MIB]

  --body BYTES     each response body's size (default 1024)
  --urls N         how many distinct URLs to store (default 200000)
  --bound-mib MIB  the memory store's bound (default 128)
";

#[derive(Debug, Deserialize)]
struct N {
    n: u64,
}

/// `len` bytes of JSON naming `n`, so every body differs.
fn body(n: u64, len: usize) -> Vec<u8> {
    let mut out = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    out.resize(len.saturating_sub(2).max(out.len()), b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// A line of `/proc/self/status` in KiB, e.g. `VmRSS`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> std::process::ExitCode {
    let (mut body_len, mut urls, mut bound_mib) = (1024usize, 200_000u64, 128u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--body", Some(v)) => body_len = usize::try_from(v).unwrap_or(usize::MAX),
            ("--urls", Some(v)) => urls = v,
            ("--bound-mib", Some(v)) => bound_mib = v,
            _ => {
                eprint!("memory_bound: bad argument '{arg}'\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(fill(body_len, urls, bound_mib));
    std::process::ExitCode::SUCCESS
}

async fn fill(body_len: usize, urls: u64, bound_mib: u64) {
    let bound = bound_mib * 1024 * 1024;
    let store = MemoryStore::new(bound);
    let cache = ResponseCache::builder()
        .key_prefix("bound")
        .store(store.clone())
        .build();
    let handler = move |Query(q): Query<N>| async move {
        (
            [(header::CONTENT_TYPE, "application/json")],
            body(q.n, body_len),
        )
            .into_response()
    };
    let app: Router = Router::new().route(
        "/page",
        get(handler).layer(cache.ttl(Duration::from_secs(3600))),
    );
    let request = |n: u64| {
        Request::get(format!("/page?n={n}"))
            .header(header::HOST, "bench.example")
            .body(Body::empty())
            .expect("a request")
    };
    // Warm up everything but the store: one request, then forget its entry.
    let warm = app.clone().oneshot(request(0)).await.expect("infallible");
    let _ = warm.into_body().collect().await;
    cache.clear().await.expect("memory store");
    let baseline = status_kib("VmRSS");

    let started = Instant::now();
    let tasks: u64 = 16;
    let mut joins = Vec::new();
    for t in 0..tasks {
        let app = app.clone();
        joins.push(tokio::spawn(async move {
            let mut n = t + 1;
            while n <= urls {
                let res = app.clone().oneshot(request(n)).await.expect("infallible");
                let stored = res
                    .headers()
                    .get("cache-status")
                    .is_some_and(|v| v.as_bytes().ends_with(b"stored"));
                assert!(stored, "every request must be a miss that stores");
                let _ = res.into_body().collect().await;
                n += tasks;
            }
        }));
    }
    for j in joins {
        j.await.expect("a fill task");
    }
    let elapsed = started.elapsed();
    let (entries, weighted) = (store.entry_count(), store.weighted_size());
    let (rss, hwm) = (status_kib("VmRSS"), status_kib("VmHWM"));
    let growth = hwm.saturating_sub(baseline);
    println!(
        "body {body_len} B, {urls} distinct URLs in {elapsed:.1?}, bound {bound_mib} MiB: \
         baseline RSS {:.1} MiB, peak {:.1} MiB, now {:.1} MiB; peak growth {:.1} MiB = {:.2}x \
         the bound; {entries} entries weighing {:.1} MiB ({:.0} B each)",
        mib(baseline),
        mib(hwm),
        mib(rss),
        mib(growth),
        (growth * 1024) as f64 / bound as f64,
        weighted as f64 / 1048576.0,
        weighted as f64 / entries.max(1) as f64,
    );
}
