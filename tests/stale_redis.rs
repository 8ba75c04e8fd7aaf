//! Stale serving on Redis: the scenarios of tests/stale.rs through the async lookup path.
//! Freshness moves with a `ManualClock`; tokio's clock is real here (the Redis client's
//! timeouts are real time), so the slow handler's seconds are real. Redis keeps each entry
//! for its TTL plus its longest window, in real time: far longer than a test runs.

mod common;
#[path = "stale/scenarios.rs"]
mod scenarios;

use common::redis_server::{fresh_prefix, RedisServer};
use scenarios::*;
use tower_response_cache::{ResponseCache, ResponseCacheBuilder};

async fn builder(server: &RedisServer) -> ResponseCacheBuilder {
    ResponseCache::builder()
        .store(common::connect_redis(&server.url()).await)
        .key_prefix(fresh_prefix("stale"))
}

macro_rules! on_redis {
    ($name:ident, |$site:ident| $body:expr) => {
        on_redis!($name, |b| b, |$site| $body);
    };
    ($name:ident, |$b:ident| $build:expr, |$site:ident| $body:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some(server) = RedisServer::start(stringify!($name)) else {
                return;
            };
            let $b = builder(&server).await;
            let $site = &Site::new($build);
            $body.await;
        }
    };
}

on_redis!(stale_inside_the_window_then_refreshed, |site| {
    scenarios::stale_inside_the_window_then_refreshed(site)
});
on_redis!(a_conditional_stale_request_gets_a_304, |site| {
    scenarios::a_conditional_stale_request_gets_a_304(site)
});
on_redis!(never_past_the_window, |site| {
    scenarios::never_past_the_window(site)
});
on_redis!(one_refresh_for_many_stale_requests, |site| {
    scenarios::one_refresh_for_many_stale_requests(site)
});
on_redis!(the_refresh_outlives_its_client, |site| {
    scenarios::the_refresh_outlives_its_client(site)
});
on_redis!(
    past_max_refreshes_stale_is_served_without_a_refresh,
    |b| b.max_refreshes(1),
    |site| scenarios::past_max_refreshes_stale_is_served_without_a_refresh(site)
);
on_redis!(a_refresh_answer_with_set_cookie_is_dropped, |site| {
    scenarios::an_unstorable_refresh_leaves_the_stale_entry(site, Mode::SetCookie)
});
on_redis!(a_refresh_answer_500_is_dropped, |site| {
    scenarios::an_unstorable_refresh_leaves_the_stale_entry(site, Mode::ServerError)
});
on_redis!(the_handlers_stale_while_revalidate_is_honoured, |site| {
    scenarios::the_handlers_window_is_honoured(site)
});
on_redis!(stale_if_error_for_a_5xx, |site| {
    scenarios::stale_if_error(site, Mode::ServerError)
});
on_redis!(stale_if_error_for_a_panic, |site| {
    scenarios::stale_if_error(site, Mode::Panic)
});
on_redis!(
    stale_if_error_from_the_handler_and_outside_the_window,
    |site| { scenarios::stale_if_error_from_the_handler_and_outside_the_window(site) }
);
on_redis!(a_bypassing_request_gets_the_error, |site| {
    scenarios::a_bypassing_request_gets_the_error(site)
});

/// Redis keeps an entry (and its `Vary` record's peers) for its TTL plus its longest window,
/// or it could not be served stale.
#[tokio::test]
async fn redis_keeps_an_entry_through_its_longest_window() {
    let Some(server) = RedisServer::start("redis_keeps_an_entry_through_its_longest_window") else {
        return;
    };
    let prefix = fresh_prefix("stale");
    let site = Site::new(
        ResponseCache::builder()
            .store(common::connect_redis(&server.url()).await)
            .key_prefix(&prefix),
    );
    let layer = site
        .cache
        .ttl(TTL)
        .stale_while_revalidate(WINDOW)
        .stale_if_error(TTL * 2);
    let app = site.app(layer);
    assert_eq!(
        send(&app, common::get("/doc")).await.cache_status(),
        common::MISS
    );
    let keys = server.cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty());
    for key in keys {
        let pttl: u64 = server.cli(&["PTTL", key]).trim().parse().unwrap();
        // 60 s fresh + 120 s stale-if-error, less the moments since it was written.
        assert!((175_000..=180_000).contains(&pttl), "{key}: {pttl}");
    }
}

// Early refresh (XFetch) on the async lookup path: the hit is decided after Redis answers.
on_redis!(an_early_refresh_replaces_a_fresh_entry, |site| {
    scenarios::an_early_refresh_replaces_a_fresh_entry(site)
});
