//! Stampede protection: concurrent misses for one key run the handler once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::routing::get as route_get;
use axum::Router;
use common::*;
use tokio::sync::Semaphore;

fn slow_app(fx: &Fixture, calls: &Calls, cache_control: &'static str) -> Router {
    let c = calls.clone();
    Router::new()
        .route(
            "/slow",
            route_get(move || {
                let n = c.bump();
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    (
                        [(header::CACHE_CONTROL, cache_control)],
                        format!("expensive {n}"),
                    )
                }
            }),
        )
        .layer(fx.cache.layer())
}

async fn burst(app: &Router, n: usize) -> Vec<Seen> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/slow")).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_run_the_handler_once() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = slow_app(&fx, &calls, "max-age=60");
    let seen = burst(&app, 25).await;
    assert_eq!(calls.get(), 1);
    assert!(seen.iter().all(|r| r.text() == "expensive 1"));
    let misses = seen.iter().filter(|r| r.cache_status() == MISS).count();
    let hits = seen.iter().filter(|r| r.cache_status() == hit(60)).count();
    assert_eq!((misses, hits), (1, 24));
}

/// The figure: a thousand concurrent cold requests in one process, one handler call.
#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_cold_requests_run_the_handler_once() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = slow_app(&fx, &calls, "max-age=60");
    let seen = burst(&app, 1_000).await;
    assert_eq!(calls.get(), 1);
    assert!(seen.iter().all(|r| r.text() == "expensive 1"));
    let misses = seen.iter().filter(|r| r.cache_status() == MISS).count();
    assert_eq!(misses, 1);
}

#[tokio::test(start_paused = true)]
async fn uncacheable_urls_do_not_queue_behind_each_other() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = slow_app(&fx, &calls, "no-store");
    // The first burst learns the URL is not storable: the waiters then call the handler.
    let first = burst(&app, 5).await;
    assert!(first.iter().all(|r| r.cache_status() == bypass("no-store")));
    assert_eq!(calls.get(), 5);
    // From then on nobody waits: all run side by side, finishing in one handler time.
    let started = tokio::time::Instant::now();
    let second = burst(&app, 5).await;
    assert_eq!(calls.get(), 10);
    assert!(second
        .iter()
        .all(|r| r.cache_status() == bypass("no-store")));
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn coalescing_can_be_turned_off() {
    let clock = tower_response_cache::ManualClock::new(0);
    let cache = tower_response_cache::ResponseCache::builder()
        .clock(clock)
        .coalesce_wait(Duration::ZERO)
        .build();
    let fx = Fixture {
        cache,
        clock: tower_response_cache::ManualClock::new(0),
        store: tower_response_cache::MemoryStore::new(1 << 20),
    };
    let calls = Calls::default();
    let app = slow_app(&fx, &calls, "max-age=60");
    burst(&app, 4).await;
    assert_eq!(calls.get(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_route_layer_inside_the_app_wide_layer_never_waits_on_it() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/nested",
            route_get(move || {
                c.bump();
                async { "nested" }
            })
            .layer(fx.cache.route()),
        )
        .layer(fx.cache.layer());
    let started = tokio::time::Instant::now();
    let first = send(&app, get("/nested")).await;
    // On the paused clock, any wait for the coalescing timeout would show as elapsed time.
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(first.cache_status(), MISS);
    assert_eq!(send(&app, get("/nested")).await.cache_status(), hit(60));
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_when_the_leader_is_dropped() {
    let fx = Fixture::new();
    let calls = Calls::default();
    // The handler answers only when the test lets it: each permit lets one call through.
    let gate = Arc::new(Semaphore::new(0));
    let (c, g) = (calls.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/slow",
            route_get(move || {
                let n = c.bump();
                let g = g.clone();
                async move {
                    g.acquire().await.unwrap().forget();
                    (
                        [(header::CACHE_CONTROL, "max-age=60")],
                        format!("expensive {n}"),
                    )
                }
            }),
        )
        .layer(fx.cache.layer());
    let spawn = || {
        let app = app.clone();
        tokio::spawn(async move { send(&app, get("/slow")).await })
    };
    // On the paused clock a short sleep returns once every task is blocked: settled.
    let settle = || tokio::time::sleep(Duration::from_millis(1));

    let leader = spawn();
    settle().await;
    assert_eq!(calls.get(), 1);
    let followers: Vec<_> = (0..5).map(|_| spawn()).collect();
    settle().await;
    assert_eq!(calls.get(), 1, "the followers wait for the leader");

    // The leader's client hangs up: its future is dropped with the handler call in it.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    settle().await;
    assert_eq!(calls.get(), 2, "exactly one follower took over");

    gate.add_permits(1);
    let mut seen = Vec::new();
    for f in followers {
        seen.push(f.await.unwrap());
    }
    assert!(seen.iter().all(|r| r.text() == "expensive 2"), "{seen:?}");
    let misses = seen.iter().filter(|r| r.cache_status() == MISS).count();
    let hits = seen.iter().filter(|r| r.cache_status() == hit(60)).count();
    assert_eq!((misses, hits), (1, 4));
    assert_eq!(calls.get(), 2);
}
