//! Stale serving through a real axum Router, for any store: the scenarios tests/stale.rs runs
//! on the memory store and tests/stale_redis.rs on Redis. Freshness moves with the cache's
//! `ManualClock`; the handler's own delays and the waits for a background refresh use tokio's
//! time (paused on the memory store; real on Redis, whose client has real timeouts).
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use http::{header, StatusCode};
use tower_response_cache::{CacheLayer, ManualClock, ResponseCache, ResponseCacheBuilder};

use crate::common::{get, get_with, Calls, Seen, MISS};

/// The routes, and the cache whose writes each request waits for (Redis writes in the
/// background: the next request must find what the last one stored).
#[derive(Clone)]
pub struct App {
    pub router: Router,
    cache: ResponseCache,
}

pub async fn send(app: &App, req: http::Request<axum::body::Body>) -> Seen {
    let seen = crate::common::send(&app.router, req).await;
    app.cache.flush().await;
    seen
}

pub const TTL: Duration = Duration::from_secs(60);
pub const WINDOW: Duration = Duration::from_secs(30);
/// How long a slow answer takes, and a wait that outlasts it.
pub const SLOW: Duration = Duration::from_secs(2);
pub const PAST_SLOW: Duration = Duration::from_secs(3);

/// What the origin answers next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Ok,
    ServerError,
    Panic,
    SetCookie,
    /// Answers after 2 s.
    Slow,
    /// `Cache-Control: max-age=60, stale-while-revalidate=30`.
    SwrHeader,
    /// `Cache-Control: max-age=60, stale-if-error=30`, or a 500 once switched to `ServerError`.
    SieHeader,
}

/// The handler behind every route: counts its calls and answers `n1`, `n2`, … as `mode` says.
#[derive(Clone, Default)]
pub struct Origin {
    pub calls: Calls,
    mode: Arc<Mutex<Mode>>,
}

impl Origin {
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn route(&self) -> MethodRouter {
        let o = self.clone();
        axum::routing::get(move || {
            let o = o.clone();
            async move { o.answer().await }
        })
    }

    async fn answer(&self) -> Response {
        let n = self.calls.bump();
        let mode = *self.mode.lock().unwrap();
        let body = format!("n{n}");
        match mode {
            Mode::Ok => body.into_response(),
            Mode::ServerError => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("e{n}")).into_response()
            }
            Mode::Panic => panic!("the origin fell over"),
            Mode::SetCookie => ([(header::SET_COOKIE, "s=1")], body).into_response(),
            Mode::Slow => {
                tokio::time::sleep(SLOW).await;
                body.into_response()
            }
            Mode::SwrHeader => (
                [(
                    header::CACHE_CONTROL,
                    "max-age=60, stale-while-revalidate=30",
                )],
                body,
            )
                .into_response(),
            Mode::SieHeader => (
                [(header::CACHE_CONTROL, "max-age=60, stale-if-error=30")],
                body,
            )
                .into_response(),
        }
    }
}

/// A cache on a manual clock and its origin.
pub struct Site {
    pub cache: ResponseCache,
    pub clock: ManualClock,
    pub origin: Origin,
}

impl Site {
    pub fn new(builder: ResponseCacheBuilder) -> Self {
        let clock = ManualClock::new(1_700_000_000_000);
        Self {
            cache: builder.clock(clock.clone()).build(),
            clock,
            origin: Origin::default(),
        }
    }

    /// `/doc` and `/other` behind `layer`, a layer of this site's cache.
    pub fn app(&self, layer: CacheLayer) -> App {
        App {
            router: Router::new()
                .route("/doc", self.origin.route().layer(layer.clone()))
                .route("/other", self.origin.route().layer(layer)),
            cache: self.cache.clone(),
        }
    }

    /// A route layer: fresh for [`TTL`], served stale for [`WINDOW`] while it is refreshed.
    pub fn swr(&self) -> CacheLayer {
        self.cache.ttl(TTL).stale_while_revalidate(WINDOW)
    }

    pub fn sie(&self) -> CacheLayer {
        self.cache.ttl(TTL).stale_if_error(WINDOW)
    }

    pub fn stats(&self, route: &str) -> tower_response_cache::RouteStats {
        self.cache
            .stats()
            .into_iter()
            .find(|s| s.route == route)
            .expect("route never seen")
    }

    /// Waits (on tokio's clock) until the handler was called `n` times and its answer, if
    /// storable, had time to be stored.
    pub async fn settle(&self, n: usize) {
        for _ in 0..2_000 {
            if self.origin.calls.get() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(self.origin.calls.get(), n, "handler calls");
        // The refresh stores after the handler answered, on its own task (and for Redis, on
        // another write task): give both the time a round trip takes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn stale(past: u64, detail: &str) -> String {
    format!("tower-response-cache; ttl=-{past}; fwd=stale{detail}")
}

pub const ORIGIN_ERROR: &str = "; detail=origin-error";

/// Inside the window: the stale entry at once, with its real age; one refresh replaces it and
/// is then served fresh.
pub async fn stale_inside_the_window_then_refreshed(site: &Site) {
    let app = site.app(site.swr());
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    site.clock.advance(TTL + Duration::from_secs(5));
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "n1");
    assert_eq!(r.header("age"), Some("65"));
    assert_eq!(r.cache_status(), stale(5, ""));
    site.settle(2).await;
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n2", crate::common::hit(60).as_str())
    );
    assert_eq!(r.header("age"), Some("0"));
    let s = site.stats("/doc");
    // One miss, one stale answer, one hit: the refresh is not a request and counts none.
    assert_eq!((s.misses, s.stale, s.hits, s.stores), (1, 1, 1, 2));
    assert_eq!(s.requests(), 3);
}

/// A conditional stale request gets its 304, marked stale.
pub async fn a_conditional_stale_request_gets_a_304(site: &Site) {
    let app = site.app(site.swr());
    let etag = send(&app, get("/doc"))
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    site.clock.advance(TTL + Duration::from_secs(1));
    let r = send(&app, get_with("/doc", &[("if-none-match", &etag)])).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.cache_status(), stale(1, ""));
    assert_eq!(r.header("age"), Some("61"));
    site.settle(2).await;
}

/// 1 ms past the window the entry is a miss, answered by the handler itself.
pub async fn never_past_the_window(site: &Site) {
    let app = site.app(site.swr());
    send(&app, get("/doc")).await;
    send(&app, get("/other")).await;
    site.clock.advance(TTL + WINDOW - Duration::from_millis(1));
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.text(), r.cache_status()), ("n1", stale(30, "").as_str()));
    site.settle(3).await;
    site.clock.advance(Duration::from_millis(2));
    let r = send(&app, get("/other")).await;
    assert_eq!((r.text(), r.cache_status()), ("n4", MISS));
    assert_eq!(site.origin.calls.get(), 4);
}

/// Fifty concurrent requests for one stale key: all answered stale, one refresh.
pub async fn one_refresh_for_many_stale_requests(site: &Site) {
    let app = site.app(site.swr());
    send(&app, get("/doc")).await;
    site.origin.set(Mode::Slow);
    site.clock.advance(TTL + Duration::from_secs(1));
    let all = futures_join(&app, 50).await;
    assert!(all
        .iter()
        .all(|(text, status)| text == "n1" && *status == stale(1, "")));
    site.settle(2).await;
    // The slow refresh is still running: more stale requests start no second one.
    futures_join(&app, 10).await;
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 2);
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.text(), "n2");
    assert_eq!(site.stats("/doc").stale, 60);
}

async fn futures_join(app: &App, n: usize) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = send(&app, get("/doc")).await;
                (r.text().to_owned(), r.cache_status().to_owned())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The client takes the stale response and goes away without reading it: the refresh runs
/// and stores all the same.
pub async fn the_refresh_outlives_its_client(site: &Site) {
    use tower::ServiceExt;
    let app = site.app(site.swr());
    send(&app, get("/doc")).await;
    site.origin.set(Mode::Slow);
    site.clock.advance(TTL + Duration::from_secs(1));
    let res = app.router.clone().oneshot(get("/doc")).await.unwrap();
    drop(res);
    tokio::time::sleep(PAST_SLOW).await;
    site.settle(2).await;
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n2", crate::common::hit(60).as_str())
    );
}

/// With every refresh permit taken, a stale entry is still served and its refresh skipped.
pub async fn past_max_refreshes_stale_is_served_without_a_refresh(site: &Site) {
    let app = site.app(site.swr());
    send(&app, get("/doc")).await;
    send(&app, get("/other")).await;
    site.origin.set(Mode::Slow);
    site.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(send(&app, get("/doc")).await.cache_status(), stale(1, ""));
    let r = send(&app, get("/other")).await;
    assert_eq!((r.text(), r.cache_status()), ("n2", stale(1, "").as_str()));
    site.settle(3).await;
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 3, "/other was not refreshed");
    assert_eq!(site.stats("/other").refreshes_skipped, 1);
    assert_eq!(site.stats("/doc").refreshes_skipped, 0);
    // The permit is back: the next stale request of /other refreshes it.
    site.origin.set(Mode::Ok);
    send(&app, get("/other")).await;
    site.settle(4).await;
}

/// A refresh whose answer may not be stored is dropped, never served; the stale entry stays.
pub async fn an_unstorable_refresh_leaves_the_stale_entry(site: &Site, mode: Mode) {
    let app = site.app(site.swr());
    send(&app, get("/doc")).await;
    site.origin.set(mode);
    site.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(send(&app, get("/doc")).await.text(), "n1");
    site.settle(2).await;
    site.clock.advance(Duration::from_secs(10));
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.text(), r.cache_status()), ("n1", stale(11, "").as_str()));
    assert_eq!(r.header("set-cookie"), None);
    let s = site.stats("/doc");
    // The refresh counted no bypass: both requests were answered stale.
    assert_eq!((s.misses, s.stale, s.stores), (1, 2, 1));
    assert!(s.bypasses.is_empty(), "{:?}", s.bypasses);
}

/// The handler's `stale-while-revalidate` opens the window with no layer setting.
pub async fn the_handlers_window_is_honoured(site: &Site) {
    let app = site.app(site.cache.layer());
    site.origin.set(Mode::SwrHeader);
    send(&app, get("/doc")).await;
    site.clock.advance(TTL + Duration::from_secs(10));
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.text(), r.cache_status()), ("n1", stale(10, "").as_str()));
    site.settle(2).await;
    site.clock.advance(TTL + WINDOW);
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
}

/// Stale-if-error: a 5xx, or a panic, inside the window is answered by the stale entry.
pub async fn stale_if_error(site: &Site, mode: Mode) {
    let app = site.app(site.sie());
    send(&app, get("/doc")).await;
    site.origin.set(mode);
    site.clock.advance(TTL + Duration::from_secs(20));
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n1", stale(20, ORIGIN_ERROR).as_str())
    );
    assert_eq!(r.header("age"), Some("80"));
    assert_eq!(site.origin.calls.get(), 2);
    // The handler recovers: its answer is stored and served as a miss.
    site.origin.set(Mode::Ok);
    let r = send(&app, get("/doc")).await;
    assert_eq!((r.text(), r.cache_status()), ("n3", MISS));
    let s = site.stats("/doc");
    assert_eq!((s.misses, s.stale, s.stores), (2, 1, 2));
}

/// The handler's `stale-if-error` opens the window with no layer setting; outside it, the
/// error goes out as it is.
pub async fn stale_if_error_from_the_handler_and_outside_the_window(site: &Site) {
    let app = site.app(site.cache.layer());
    site.origin.set(Mode::SieHeader);
    send(&app, get("/doc")).await;
    site.origin.set(Mode::ServerError);
    site.clock.advance(TTL + WINDOW - Duration::from_millis(1));
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n1", stale(30, ORIGIN_ERROR).as_str())
    );
    site.clock.advance(Duration::from_millis(1));
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.text(), "e3");
    assert_eq!(r.cache_status(), crate::common::bypass("status"));
}

/// A request that bypasses the cache gets the handler's error, stale entry or not.
pub async fn a_bypassing_request_gets_the_error(site: &Site) {
    let app = site.app(site.sie());
    send(&app, get("/doc")).await;
    site.origin.set(Mode::ServerError);
    site.clock.advance(TTL + Duration::from_secs(1));
    let r = send(&app, get_with("/doc", &[("authorization", "Bearer x")])).await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::INTERNAL_SERVER_ERROR, "e2")
    );
    assert_eq!(r.cache_status(), crate::common::bypass("authorization"));
}

/// A soft-invalidated entry is answered stale only inside its freshness or its
/// stale-while-revalidate window; past them (the store may still hold it: its clock is not the
/// cache's) it is a miss like any expired entry.
pub async fn a_soft_invalidated_entry_past_its_window_is_a_miss(site: &Site) {
    let app = site.app(site.cache.ttl(TTL));
    send(&app, get("/doc")).await;
    send(&app, get("/other")).await;
    site.cache.invalidate_path_soft("/doc").await.unwrap();
    site.cache.invalidate_path_soft("/other").await.unwrap();
    let r = send(&app, get("/doc")).await;
    assert_eq!(r.text(), "n1");
    assert!(
        r.cache_status().ends_with("fwd=stale; detail=invalidated"),
        "{r:?}"
    );
    site.settle(3).await;
    site.clock.advance(TTL + Duration::from_millis(1));
    let r = send(&app, get("/other")).await;
    assert_eq!((r.text(), r.cache_status()), ("n4", MISS));
    assert_eq!(site.origin.calls.get(), 4);
}

/// A beta so large that a hit with a second of freshness left, on an entry computed in 2 s,
/// refreshes early unless `-ln(U)` falls under 1,000 / (2,000 · 10¹²): a chance below 10⁻¹².
pub const HUGE_BETA: f64 = 1e12;

/// Early refresh (XFetch): a fresh hit near its expiry is answered as the usual hit and starts
/// one background refresh, whose answer the next hit serves. Its refresh takes no time, so the
/// new entry (computed in 0 ms) never refreshes early itself.
pub async fn an_early_refresh_replaces_a_fresh_entry(site: &Site) {
    let app = site.app(site.cache.ttl(TTL).early_refresh(HUGE_BETA));
    site.origin.set(Mode::Slow);
    assert_eq!(send(&app, get("/doc")).await.cache_status(), MISS);
    site.origin.set(Mode::Ok);
    site.clock.advance(TTL - Duration::from_secs(1));
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n1", crate::common::hit(1).as_str())
    );
    assert_eq!(r.header("age"), Some("59"));
    site.settle(2).await;
    let r = send(&app, get("/doc")).await;
    assert_eq!(
        (r.text(), r.cache_status()),
        ("n2", crate::common::hit(60).as_str())
    );
    tokio::time::sleep(PAST_SLOW).await;
    assert_eq!(site.origin.calls.get(), 2);
    let s = site.stats("/doc");
    // Both hits are hits; the refresh is no request and counts none but its own.
    assert_eq!((s.misses, s.hits, s.stale, s.stores), (1, 2, 0, 2));
    assert_eq!(s.early_refreshes, 1);
}
