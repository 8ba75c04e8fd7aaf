//! Two clocks meet on a hit: the cache's `Clock` decides freshness, the store's own clock
//! (the memory store's monotonic time, Redis's server time) decides when it drops an entry. An entry is
//! served only while both agree; whichever ends it first wins.

mod common;

use std::time::Duration;

use axum::Router;
use common::*;

fn app(fx: &Fixture, calls: &Calls, ttl: Duration) -> Router {
    Router::new().route("/doc", calls.handler().layer(fx.cache.ttl(ttl)))
}

#[tokio::test]
async fn the_clock_ends_freshness_while_the_store_still_holds_the_entry() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls, Duration::from_secs(30));
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    fx.clock.advance(Duration::from_secs(30));
    // The store has not dropped it (its own clock barely moved), yet the cache's clock says stale.
    assert_eq!(fx.entries(), 1);
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.cache_status(), r.text()), (MISS, "n2"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn the_store_ends_an_entry_the_clock_still_calls_fresh() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&fx, &calls, Duration::from_millis(200));
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    assert_eq!(send(&app, get("/doc")).await.text(), "n1");
    // A real sleep: the store expires entries on its own monotonic clock, which a test cannot move. The
    // cache's ManualClock stands still, so only the store's expiry can end this entry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.cache_status(), r.text()), (MISS, "n2"));
    assert_eq!(calls.get(), 2);
}
