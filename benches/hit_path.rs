//! Criterion benches of key derivation and of the hit path through a real axum `Router`.
//!
//! ```text
//! cargo bench -p trc-benches --bench hit_path -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `router/*` drive one request at a time through `Router::call` on a current-thread runtime
//! and read the whole response body, so the figures compare like with like: `bare` is the
//! handler with no cache layer, `cached_hit` the same handler behind `cache.ttl(..)` answered
//! from the memory store, `miss_store` a distinct URL every iteration (handler runs, body is
//! buffered and stored), `head_hit` a HEAD answered from the GET entry, and `not_modified` a
//! `304` for a matching `If-None-Match`. BENCHMARKS.md reports them as ratios to `bare`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use criterion::{BenchmarkId, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{CacheLayer, MemoryStore, ResponseCache};

#[path = "support/mod.rs"]
mod support;
use support::{json_body, json_handler};

fn bench_keys(c: &mut Criterion) {
    let cache = ResponseCache::default();
    let plain = cache.ttl(Duration::from_secs(60));
    let varying = cache
        .ttl(Duration::from_secs(60))
        .vary_headers([header::ACCEPT_LANGUAGE, header::ACCEPT_ENCODING]);

    let short = Request::get("/trending").body(()).unwrap();
    let query: Vec<String> = (0..20)
        .map(|i| format!("param{i:02}=value{i:02}"))
        .collect();
    let long_uri = format!(
        "/influencers/twitter/posts/2024/archive?{}&utm_source=newsletter",
        query.join("&")
    );
    let long = Request::get(long_uri.as_str())
        .header(header::HOST, "api.example.com")
        .body(())
        .unwrap();
    let with_headers = Request::get(long_uri.as_str())
        .header(header::HOST, "api.example.com")
        .header(header::ACCEPT_LANGUAGE, "fr-CH, fr;q=0.9, en;q=0.8")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .body(())
        .unwrap();

    let mut group = c.benchmark_group("key_for");
    let cases: [(&str, &CacheLayer, &Request<()>); 3] = [
        ("short_url", &plain, &short),
        ("long_url_20_params", &plain, &long),
        ("long_url_20_params_2_vary_headers", &varying, &with_headers),
    ];
    for (name, layer, req) in cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), req, |b, req| {
            b.iter(|| layer.key_for(black_box(req)));
        });
    }
    group.finish();
}

/// Sends `req` through the router and reads the whole body, as a server would.
async fn send(app: &Router, req: Request<Body>, expect: StatusCode) -> usize {
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), expect);
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench_router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = json_body();
    let store = MemoryStore::new(256 * 1024 * 1024);
    let cache = ResponseCache::builder().store(store.clone()).build();
    let ttl = Duration::from_secs(3600);
    let app: Router = Router::new()
        .route("/bare", get(json_handler(body.clone())))
        .route(
            "/cached",
            get(json_handler(body.clone())).layer(cache.ttl(ttl)),
        )
        .route("/miss", get(json_handler(body)).layer(cache.ttl(ttl)))
        // As `axum::serve` does: turn handlers into services once, so layers are applied once
        // and not on every call.
        .with_state(());

    // Fill the entry and learn its ETag for the 304 case.
    let etag = rt.block_on(async {
        let res = app
            .clone()
            .oneshot(Request::get("/cached").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let etag = res.headers()[header::ETAG].clone();
        let res = app
            .clone()
            .oneshot(Request::get("/cached").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.headers()[HeaderName::from_static("cache-status")].clone();
        assert!(status.to_str().unwrap().contains("hit"), "{status:?}");
        etag
    });

    let mut group = c.benchmark_group("router");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::get("/bare").body(Body::empty()).unwrap();
            send(&app, req, StatusCode::OK).await
        });
    });
    group.bench_function("cached_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::get("/cached").body(Body::empty()).unwrap();
            send(&app, req, StatusCode::OK).await
        });
    });
    group.bench_function("head_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::head("/cached").body(Body::empty()).unwrap();
            send(&app, req, StatusCode::OK).await
        });
    });
    group.bench_function("not_modified", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::get("/cached")
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .unwrap();
            send(&app, req, StatusCode::NOT_MODIFIED).await
        });
    });
    // Every iteration a new URL: the handler runs and the response is buffered and stored.
    let n = AtomicU64::new(0);
    group.bench_function("miss_store", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let req = Request::get(format!("/miss?n={i}"))
                .body(Body::empty())
                .unwrap();
            send(&app, req, StatusCode::OK).await
        });
    });
    // The same URL building cost without the cache, so `miss_store` can be read against it.
    group.bench_function("bare_distinct_urls", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let req = Request::get(format!("/bare?n={i}"))
                .body(Body::empty())
                .unwrap();
            send(&app, req, StatusCode::OK).await
        });
    });
    group.finish();
    eprintln!(
        "memory store after the run: {} entries, {} weighted bytes",
        store.entry_count(),
        store.weighted_size()
    );
}

/// Writes through a route layer (RFC 9111 §4.4): `bare` no layer, `opt_out` a layer with
/// `invalidate_on_unsafe(false)` (the bypass as it was before writes invalidated), `error` a
/// `422` (no invalidation: the bypass stays unboxed), `invalidating` a `201` that bumps the
/// path's generation before the response returns.
fn bench_writes(c: &mut Criterion) {
    use axum::routing::post;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = ResponseCache::default();
    let ttl = Duration::from_secs(3600);
    let created = || post(|| async { (StatusCode::CREATED, "made") });
    let app: Router = Router::new()
        .route("/bare", created())
        .route(
            "/opt_out",
            created().layer(cache.ttl(ttl).invalidate_on_unsafe(false)),
        )
        .route(
            "/error",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "no") }).layer(cache.ttl(ttl)),
        )
        .route("/invalidating", created().layer(cache.ttl(ttl)))
        .with_state(());
    let mut group = c.benchmark_group("writes");
    group.throughput(criterion::Throughput::Elements(1));
    for (name, status) in [
        ("bare", StatusCode::CREATED),
        ("opt_out", StatusCode::CREATED),
        ("error", StatusCode::UNPROCESSABLE_ENTITY),
        ("invalidating", StatusCode::CREATED),
    ] {
        let uri = format!("/{name}");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let req = Request::post(uri.as_str())
                    .header(header::HOST, "api.example.com")
                    .body(Body::empty())
                    .unwrap();
                send(&app, req, status).await
            });
        });
    }
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out so every item is documented.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_keys(&mut c);
    bench_router(&mut c);
    bench_writes(&mut c);
    c.final_summary();
}
