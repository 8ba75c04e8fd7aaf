//! Stale serving (RFC 5861) on the memory store: stale-while-revalidate with one bounded,
//! detached refresh per key, and stale-if-error for `Err`, `5xx`, panics and slow handlers.
//! Freshness moves with a `ManualClock`; tokio's clock is paused, so handler delays, origin
//! timeouts and the waits for a refresh take no real time.

mod common;
#[path = "stale/scenarios.rs"]
mod scenarios;

use std::time::Duration;

use axum::body::Body;
use common::{get, get_with, Calls, MISS};
use http::{Request, Response, StatusCode};
use scenarios::*;
use tower::{Layer, ServiceExt};
use tower_response_cache::{MemoryStore, ResponseCache, ResponseCacheBuilder};

fn builder() -> ResponseCacheBuilder {
    ResponseCache::builder()
        .store(MemoryStore::new(16 * 1024 * 1024))
        .key_prefix("stale")
}

fn site() -> Site {
    Site::new(builder())
}

#[tokio::test(start_paused = true)]
async fn stale_inside_the_window_then_refreshed() {
    scenarios::stale_inside_the_window_then_refreshed(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn a_conditional_stale_request_gets_a_304() {
    scenarios::a_conditional_stale_request_gets_a_304(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn never_past_the_window() {
    scenarios::never_past_the_window(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn one_refresh_for_many_stale_requests() {
    scenarios::one_refresh_for_many_stale_requests(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn the_refresh_outlives_its_client() {
    scenarios::the_refresh_outlives_its_client(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn past_max_refreshes_stale_is_served_without_a_refresh() {
    let site = Site::new(builder().max_refreshes(1));
    scenarios::past_max_refreshes_stale_is_served_without_a_refresh(&site).await;
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answer_with_set_cookie_is_dropped() {
    scenarios::an_unstorable_refresh_leaves_the_stale_entry(&site(), Mode::SetCookie).await;
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answer_500_is_dropped() {
    scenarios::an_unstorable_refresh_leaves_the_stale_entry(&site(), Mode::ServerError).await;
}

#[tokio::test(start_paused = true)]
async fn the_handlers_stale_while_revalidate_is_honoured() {
    scenarios::the_handlers_window_is_honoured(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_for_a_5xx() {
    scenarios::stale_if_error(&site(), Mode::ServerError).await;
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_for_a_panic() {
    scenarios::stale_if_error(&site(), Mode::Panic).await;
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_from_the_handler_and_outside_the_window() {
    scenarios::stale_if_error_from_the_handler_and_outside_the_window(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn a_bypassing_request_gets_the_error() {
    scenarios::a_bypassing_request_gets_the_error(&site()).await;
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_for_a_slow_handler() {
    let site = site();
    let app = site.app(site.sie().origin_timeout(Duration::from_secs(1)));
    send(&app, get("/doc")).await;
    site.origin.set(Mode::Slow);
    site.clock.advance(TTL + Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n1", stale(1, ORIGIN_ERROR).as_str())
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // A fresh entry, or none, waits for the handler however long it takes.
    let r = send(&app, get("/other")).await;
    assert_eq!((r.text(), r.cache_status()), ("n3", MISS));
    assert_eq!(started.elapsed(), Duration::from_secs(1) + SLOW);
}

/// The inner service's `Err` (axum's handlers cannot fail; a plain tower service can).
#[tokio::test(start_paused = true)]
async fn stale_if_error_for_err() {
    let site = site();
    let calls = Calls::default();
    let c = calls.clone();
    let svc = site
        .sie()
        .layer(tower::service_fn(move |_req: Request<Body>| {
            let n = c.bump();
            async move {
                if n == 1 {
                    Ok(Response::new(Body::from("n1")))
                } else {
                    Err(std::io::Error::other("origin down"))
                }
            }
        }));
    let call = |svc: &_| {
        let svc: &tower_response_cache::CacheService<_> = svc;
        svc.clone().oneshot(get("/doc"))
    };
    assert!(call(&svc).await.is_ok());
    site.clock.advance(TTL + Duration::from_secs(1));
    let res = call(&svc).await.expect("the stale entry, not the error");
    assert_eq!(
        res.headers()["cache-status"],
        stale(1, ORIGIN_ERROR).as_str()
    );
    site.clock.advance(WINDOW);
    assert!(call(&svc).await.is_err(), "past the window: the error");
    assert_eq!(calls.get(), 3);
}

/// A stale HEAD is answered stale and starts no refresh; a shadowed layer and a client's
/// honoured `no-cache` never answer stale.
#[tokio::test(start_paused = true)]
async fn head_shadow_and_no_cache_start_no_refresh() {
    let site = site();
    let app = site.app(site.swr().honor_client_no_cache(true));
    send(&app, get("/doc")).await;
    site.clock.advance(TTL + Duration::from_secs(1));
    let head = Request::head("/doc").body(Body::empty()).unwrap();
    let r = send(&app, head).await;
    assert_eq!((r.text(), r.cache_status()), ("", stale(1, "").as_str()));
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 1, "a HEAD refreshes nothing");
    let r = send(&app, get_with("/doc", &[("cache-control", "no-cache")])).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n2", "tower-response-cache; fwd=request; stored")
    );

    let shadow = Site::new(builder().shadow(true));
    let app = shadow.app(shadow.swr());
    send(&app, get("/doc")).await;
    shadow.clock.advance(TTL + Duration::from_secs(1));
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.text(), "n2");
    assert_eq!(shadow.stats("/doc").stale, 0);
}

/// Without a stale entry to stand in, a panicking handler unwinds as it always did.
#[tokio::test(start_paused = true)]
async fn without_a_stale_entry_a_panic_unwinds() {
    let site = site();
    let app = site.app(site.sie());
    site.origin.set(Mode::Panic);
    let sent = tokio::spawn(async move { send(&app, get("/doc")).await });
    assert!(sent.await.unwrap_err().is_panic());
    assert_eq!(StatusCode::OK, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_soft_invalidated_entry_past_its_window_is_a_miss() {
    scenarios::a_soft_invalidated_entry_past_its_window_is_a_miss(&site()).await;
}
