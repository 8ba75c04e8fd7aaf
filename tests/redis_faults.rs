//! Redis frozen (SIGSTOP: connections open, nothing answered), behind an axum app served on a
//! real socket: a store failure costs a request at most about one command timeout, because a
//! miss never waits for its write, writes in flight are bounded, and a request's reads from the
//! store share one time budget.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use tower_response_cache::{RedisStore, ResponseCache};

use common::raw_http::{self, Reply};
use common::redis_server::RedisServer;
use common::slow_proxy::SlowProxy;

const TIMEOUT: Duration = Duration::from_millis(200);
/// What a request may cost beyond the command timeout: the handler (instant here), the HTTP
/// round trip and scheduling. Generous: this checks a bound, it is not a benchmark.
const SLACK: Duration = Duration::from_millis(180);

async fn serve(cache: &ResponseCache) -> SocketAddr {
    let app = Router::new().route(
        "/item/{n}",
        get(|Path(n): Path<u32>| async move {
            ([(header::CACHE_CONTROL, "max-age=60")], format!("item {n}"))
        })
        .layer(cache.route().honor_client_no_cache(true)),
    );
    raw_http::serve(app).await
}

/// One GET over a fresh connection; every route here answers 200.
async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let got = raw_http::get(addr, path, headers).await;
    assert_eq!(got.status, 200, "{got:?}");
    got
}

async fn store_on(server: &RedisServer, threshold: u32) -> RedisStore {
    RedisStore::builder(&server.url())
        .command_timeout(TIMEOUT)
        .breaker(threshold, Duration::from_millis(500))
        .require_connection(true)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_miss_at_most_one_command_timeout() {
    let Some(server) = RedisServer::start("frozen_redis_bound") else {
        return;
    };
    let store = store_on(&server, 5).await;
    let cache = ResponseCache::builder()
        .key_prefix("frozen")
        .store(store.clone())
        .build();
    let addr = serve(&cache).await;
    assert!(fetch(addr, "/item/0", &[])
        .await
        .cache_status()
        .contains("stored"));
    cache.flush().await;
    assert!(fetch(addr, "/item/0", &[])
        .await
        .cache_status()
        .contains("hit"));

    server.freeze();
    let bound = TIMEOUT + SLACK;
    let mut took = Vec::new();
    // Distinct misses, one after another: the first ones time out (the breaker counts them),
    // the rest fail fast on the open breaker.
    for n in 1..=10 {
        let got = fetch(addr, &format!("/item/{n}"), &[]).await;
        assert_eq!(got.body, format!("item {n}"));
        took.push(got.elapsed);
        assert!(
            got.elapsed < bound,
            "miss {n} took {:?}: {took:?}",
            got.elapsed
        );
    }
    eprintln!("with Redis frozen, miss latencies: {took:?}");
    let stats = store.stats();
    assert!(stats.breaker_opened >= 1, "{stats:?}");
    assert!(stats.rejected > 0, "{stats:?}");

    server.thaw();
    // Once the breaker's cool-down is over, a probe closes it and entries are stored again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fetch(addr, "/item/100", &[]).await;
        if got.cache_status().contains("stored") {
            cache.flush().await;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never stored again: {got:?}",
            got = got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hit = fetch(addr, "/item/100", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_never_waits_for_its_write_and_writes_in_flight_are_bounded() {
    let Some(server) = RedisServer::start("frozen_redis_writes") else {
        return;
    };
    // A breaker that does not open during the test: every write really waits on Redis.
    let store = store_on(&server, 1000).await;
    let cache = ResponseCache::builder()
        .key_prefix("writes")
        .store(store.clone())
        .max_writes_in_flight(2)
        .build();
    let addr = serve(&cache).await;
    server.freeze();
    // `no-cache` (honoured on this route) skips the lookup: all a request could wait on is
    // its write, which now happens after the response is sent.
    let mut statuses = Vec::new();
    for n in 1..=5 {
        let got = fetch(
            addr,
            &format!("/item/{n}"),
            &[("Cache-Control", "no-cache")],
        )
        .await;
        assert_eq!(got.body, format!("item {n}"));
        assert!(
            got.elapsed < SLACK,
            "miss {n} waited {:?} for its write",
            got.elapsed
        );
        statuses.push(got.cache_status().to_owned());
    }
    // Two writes wait on the frozen Redis; the others were skipped, not queued.
    let sent = statuses.iter().filter(|s| s.contains("stored")).count();
    let skipped = statuses
        .iter()
        .filter(|s| s.contains("store-error"))
        .count();
    assert_eq!((sent, skipped), (2, 3), "{statuses:?}");
    let started = Instant::now();
    cache.flush().await;
    assert!(started.elapsed() < TIMEOUT + SLACK, "the writes time out");
    server.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_reads_of_a_varying_resource_share_one_time_budget() {
    let Some(server) = RedisServer::start("lookup_budget") else {
        return;
    };
    let proxy = SlowProxy::start(server.port()).await;
    let connect = || async {
        RedisStore::builder(&format!("redis://127.0.0.1:{}/0", proxy.port))
            .command_timeout(TIMEOUT)
            .require_connection(true)
            .connect()
            .await
            .expect("connect through the proxy")
    };
    let app = |cache: &ResponseCache| {
        Router::new().route(
            "/item/{n}",
            get(|Path(n): Path<u32>| async move {
                let headers = [
                    (header::CACHE_CONTROL, "max-age=60"),
                    (header::VARY, "accept-language"),
                ];
                (headers, format!("item {n}"))
            })
            .layer(cache.route()),
        )
    };
    let fr = &[("Accept-Language", "fr")];
    let filler = ResponseCache::builder()
        .key_prefix("budget")
        .store(connect().await)
        .build();
    let addr = raw_http::serve(app(&filler)).await;
    assert!(fetch(addr, "/item/1", fr)
        .await
        .cache_status()
        .contains("stored"));
    filler.flush().await;

    // Another process, which has not learnt the `Vary`: its lookup reads the primary key's
    // `Vary` record, then the variant. Each reply is slow but within the command timeout.
    let reader = ResponseCache::builder()
        .key_prefix("budget")
        .store(connect().await)
        .build();
    let addr = raw_http::serve(app(&reader)).await;
    proxy.set_delay(Duration::from_millis(180));
    let got = fetch(addr, "/item/1", fr).await;
    assert_eq!(got.body, "item 1");
    // Two full reads would take 360 ms; the budget (about one command timeout) ends it sooner.
    assert!(
        got.elapsed < TIMEOUT + Duration::from_millis(100),
        "the lookup took {:?} ({})",
        got.elapsed,
        got.cache_status()
    );
    assert!(
        got.cache_status().contains("store-error"),
        "{}",
        got.cache_status()
    );
}
