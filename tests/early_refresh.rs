//! Probabilistic early refresh (XFetch) on the memory store, through a real axum Router: a
//! fresh hit near its expiry starts one background refresh, far from it none, and never with
//! beta 0 or an entry computed in no time. Freshness moves with a `ManualClock`; tokio's clock
//! is paused, so the handler's 2 s (its compute time, which XFetch weighs) take no real time.
//! The probabilities are chosen so each assertion fails by chance less than once in 10¹².

mod common;
#[path = "stale/scenarios.rs"]
mod scenarios;

use std::time::Duration;

use common::{get, hit, MISS};
use scenarios::*;
use tower_response_cache::{MemoryStore, ResponseCache};

fn site() -> Site {
    Site::new(
        ResponseCache::builder()
            .store(MemoryStore::new(16 * 1024 * 1024))
            .key_prefix("early"),
    )
}

#[tokio::test(start_paused = true)]
async fn a_hit_near_expiry_refreshes_early_and_is_a_normal_hit() {
    scenarios::an_early_refresh_replaces_a_fresh_entry(&site()).await;
}

/// Hits up to the last millisecond of freshness, `n` of them spread over the TTL.
async fn hits_to_the_end(site: &Site, app: &App, n: u64) {
    let step = Duration::from_millis(TTL.as_millis() as u64 / n);
    for _ in 0..n - 1 {
        site.clock.advance(step);
        let r = send(app, get("/doc")).await;
        assert_eq!(r.text(), "n1");
    }
    let left = TTL - step * u32::try_from(n - 1).unwrap();
    site.clock.advance(left - Duration::from_millis(1));
    assert_eq!(send(app, get("/doc")).await.text(), "n1");
}

#[tokio::test(start_paused = true)]
async fn never_with_beta_zero_or_off() {
    for layer in [
        |s: &Site| s.cache.ttl(TTL).early_refresh(0.0),
        |s: &Site| s.cache.ttl(TTL).early_refresh(-1.0),
        |s: &Site| s.cache.ttl(TTL).early_refresh(f64::NAN),
        |s: &Site| s.cache.ttl(TTL),
    ] {
        let site = site();
        let app = site.app(layer(&site));
        site.origin.set(Mode::Slow);
        assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
        hits_to_the_end(&site, &app, 1_000).await;
        tokio::time::sleep(PAST_SLOW).await;
        assert_eq!(site.origin.calls.get(), 1);
        assert_eq!(site.stats("/doc").early_refreshes, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn never_for_an_entry_computed_in_no_time() {
    let site = site();
    let app = site.app(site.cache.ttl(TTL).early_refresh(HUGE_BETA));
    // On the paused clock this handler takes 0 ms.
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    hits_to_the_end(&site, &app, 1_000).await;
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 1);
}

/// Beta 1, computed in 2 s, 10 minutes fresh: over the first 8 minutes at least 120 s are left,
/// so each hit refreshes with a chance of e^-60 (about 10⁻²⁶).
#[tokio::test(start_paused = true)]
async fn far_from_expiry_beta_one_never_refreshes() {
    let site = site();
    let ttl = Duration::from_secs(600);
    let app = site.app(site.cache.ttl(ttl).early_refresh(1.0));
    site.origin.set(Mode::Slow);
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    for _ in 0..1_000 {
        site.clock.advance(Duration::from_millis(480));
        assert_eq!(send(&app, get("/doc")).await.text(), "n1");
    }
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 1);
    let s = site.stats("/doc");
    assert_eq!((s.hits, s.early_refreshes), (1_000, 0));
}

/// Fifty concurrent hits near expiry: all answered fresh, one refresh.
#[tokio::test(start_paused = true)]
async fn one_early_refresh_per_key_under_concurrent_hits() {
    let site = site();
    let app = site.app(site.cache.ttl(TTL).early_refresh(HUGE_BETA));
    site.origin.set(Mode::Slow);
    send(&app, get("/doc")).await;
    site.clock.advance(TTL - Duration::from_secs(1));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/doc")).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.text(), r.cache_status()), ("n1", hit(1).as_str()));
    }
    site.settle(2).await;
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 2);
    let s = site.stats("/doc");
    assert_eq!((s.hits, s.early_refreshes), (50, 1));
}
