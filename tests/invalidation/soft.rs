//! Soft invalidation answered stale, on every store: through a real axum Router on the memory
//! store (tests/invalidation.rs) and Redis (tests/invalidation_redis.rs). The handler can be
//! held (so a refresh stays in flight) and told to answer what may not be stored.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tower_response_cache::{CacheLayer, ResponseCache};

use crate::common::{self, Calls, Seen};
use crate::scenarios::{eventually, SOFT_STALE};

/// What the handler answers.
pub const OK: u8 = 0;
/// A `500`: never stored.
pub const ERROR: u8 = 1;
/// A `200` with `Set-Cookie`: never stored.
pub const COOKIE: u8 = 2;

/// `/item` and `/shadowed`, both tagged `item`, the second in shadow mode.
#[derive(Clone)]
pub struct Soft {
    pub cache: ResponseCache,
    pub app: Router,
    pub calls: Calls,
    /// While `false`, the handler waits (after counting its call).
    pub open: Arc<watch::Sender<bool>>,
    pub answer: Arc<AtomicU8>,
}

impl Soft {
    /// `layer` adds to each route's layer (a lease, say).
    pub fn new(cache: ResponseCache, layer: impl Fn(CacheLayer) -> CacheLayer) -> Self {
        let calls = Calls::default();
        let open = Arc::new(watch::channel(true).0);
        let answer = Arc::new(AtomicU8::new(OK));
        let handler = || {
            let (calls, open, answer) = (calls.clone(), open.clone(), answer.clone());
            get(move || {
                let n = calls.bump();
                let mut open = open.subscribe();
                let answer = answer.load(Ordering::SeqCst);
                async move {
                    open.wait_for(|open| *open).await.unwrap();
                    let body = format!("item n{n}");
                    match answer {
                        OK => body.into_response(),
                        ERROR => (StatusCode::INTERNAL_SERVER_ERROR, body).into_response(),
                        _ => ([(header::SET_COOKIE, "session=1")], body).into_response(),
                    }
                }
            })
        };
        let route = || layer(cache.ttl(Duration::from_secs(60)).tags(["item"]));
        let app = Router::new()
            .route("/item", handler().layer(route()))
            .route("/shadowed", handler().layer(route().shadow(true)));
        Self {
            cache,
            app,
            calls,
            open,
            answer,
        }
    }

    /// The response to `uri`, once any write it caused has landed; bounded, so a request held
    /// by a closed handler fails the test instead of hanging it.
    pub async fn get(&self, uri: &str) -> Seen {
        let seen = self.peek(uri).await;
        self.cache.flush().await;
        seen
    }

    /// The response to `uri`, not waiting for writes (a `flush` beside a background refresh
    /// would turn its write away as busy); bounded like [`get`](Self::get).
    pub async fn peek(&self, uri: &str) -> Seen {
        let sent = common::send(&self.app, common::get(uri));
        tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .unwrap_or_else(|_| panic!("{uri}: no answer (held by the handler?)"))
    }

    pub fn stale(&self) -> u64 {
        let stats = self.cache.metrics().snapshot();
        stats.iter().map(|s| s.stale).sum()
    }

    /// Fills `uri` and returns its body (a hit).
    pub async fn filled(&self, uri: &str) -> String {
        let miss = self.get(uri).await;
        assert!(miss.cache_status().contains("fwd=uri-miss"), "{miss:?}");
        let hit = self.get(uri).await;
        assert!(hit.cache_status().contains("; hit"), "{hit:?}");
        hit.text().to_owned()
    }

    /// Waits until `uri` is no longer answered stale: that answer.
    pub async fn until_refreshed(&self, uri: &str) -> Seen {
        let start = std::time::Instant::now();
        loop {
            let seen = self.peek(uri).await;
            if seen.cache_status() != SOFT_STALE {
                return seen;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never refreshed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// 20 concurrent requests to one soft-invalidated URL: all answered stale with the old body,
/// and the handler called once (its refresh, held until they are all answered).
pub async fn concurrent_requests_share_one_refresh(site: &Soft) {
    let old = site.filled("/item").await;
    site.cache.invalidate_tag_soft("item").await.unwrap();
    site.open.send_replace(false);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let site = site.clone();
            tokio::spawn(async move { site.peek("/item").await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    for seen in &answers {
        assert_eq!(seen.cache_status(), SOFT_STALE, "{seen:?}");
        assert_eq!(seen.text(), old);
    }
    assert_eq!(site.stale(), 20);
    eventually("the refresh calls the handler", || async {
        site.calls.get() == 2
    })
    .await;
    site.open.send_replace(true);
    let fresh = site.until_refreshed("/item").await;
    assert!(fresh.cache_status().contains("; hit"), "{fresh:?}");
    assert_eq!(fresh.text(), "item n2");
    assert_eq!(site.calls.get(), 2, "one refresh for 20 requests");
}

/// A refresh whose answer may not be stored (a `500`, a `Set-Cookie`) is never served: the
/// stale entry goes on being answered, with its old body. (Each on its own URL: a refused
/// answer is remembered for its key, which then starts no refresh for a while.)
pub async fn an_unstorable_refresh_answer_is_never_served(site: &Soft) {
    for (answer, uri) in [(ERROR, "/item?error"), (COOKIE, "/item?cookie")] {
        site.answer.store(OK, Ordering::SeqCst);
        let old = site.filled(uri).await;
        let calls = site.calls.get();
        site.cache.invalidate_tag_soft("item").await.unwrap();
        site.answer.store(answer, Ordering::SeqCst);
        let first = site.peek(uri).await;
        assert_eq!(first.cache_status(), SOFT_STALE, "{first:?}");
        assert_eq!(first.text(), old);
        eventually("the refresh calls the handler", || async {
            site.calls.get() > calls
        })
        .await;
        // The refresh's answer has been refused by now or is about to be; whichever, none of
        // these may be it.
        for _ in 0..5 {
            let seen = site.get(uri).await;
            assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
            assert_eq!(seen.cache_status(), SOFT_STALE, "{seen:?}");
            assert_eq!(seen.text(), old);
            assert_eq!(seen.header("set-cookie"), None);
        }
        assert_eq!(
            site.calls.get(),
            calls + 1,
            "one refresh, remembered refused"
        );
    }
}

/// A shadowed layer never answers a soft-invalidated entry stale: its handler answers (in the
/// foreground, so its call is counted by the time the response is out); the layer beside it,
/// on the same tag, does answer stale.
pub async fn a_shadowed_layer_never_serves_stale(site: &Soft) {
    let old = site.filled("/item").await;
    site.get("/shadowed").await;
    site.cache.invalidate_tag_soft("item").await.unwrap();
    let calls = site.calls.get();
    let shadowed = site.get("/shadowed").await;
    assert!(
        !shadowed.cache_status().contains("fwd=stale"),
        "{shadowed:?}"
    );
    assert_eq!(shadowed.text(), format!("item n{}", calls + 1));
    assert_eq!(site.calls.get(), calls + 1);
    assert_eq!(site.stale(), 0, "the shadowed layer answered stale");
    let served = site.peek("/item").await;
    assert_eq!(served.cache_status(), SOFT_STALE, "{served:?}");
    assert_eq!(served.text(), old);
    assert_eq!(site.stale(), 1);
}
