//! The one test-support tree: a real axum Router behind the cache on a manual clock, a visible
//! store, handler call counters, and (in submodules) real Redis servers and a slow proxy.
#![allow(dead_code, unreachable_pub)]

pub mod raw_http;
pub mod redis_server;
pub mod slow_proxy;
pub mod test_store;
pub mod twiscope;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_response_cache::{ManualClock, MemoryStore, ResponseCache};

/// A cache on a manual clock with a store the test can inspect.
pub struct Fixture {
    pub cache: ResponseCache,
    pub clock: ManualClock,
    pub store: MemoryStore,
}

impl Fixture {
    pub fn new() -> Self {
        let clock = ManualClock::new(1_700_000_000_000);
        let store = MemoryStore::new(64 * 1024 * 1024);
        let cache = ResponseCache::builder()
            .store(store.clone())
            .clock(clock.clone())
            .key_prefix("test")
            .default_ttl(Duration::from_secs(60))
            .build();
        Self {
            cache,
            clock,
            store,
        }
    }

    pub fn entries(&self) -> u64 {
        self.store.entry_count()
    }
}

/// Counts handler calls.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// The counted handler: a GET route answering `n1`, `n2`, ... in call order, so a body
    /// tells which call produced it.
    pub fn handler(&self) -> axum::routing::MethodRouter {
        let c = self.clone();
        axum::routing::get(move || {
            let n = c.bump();
            async move { format!("n{n}") }
        })
    }
}

/// A response as the client sees it.
#[derive(Debug)]
pub struct Seen {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").expect("no Cache-Status")
    }
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Seen {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Seen {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Body::empty()).unwrap()
}

pub const MISS: &str = "tower-response-cache; fwd=uri-miss; stored";

pub fn hit(ttl: u64) -> String {
    format!("tower-response-cache; hit; ttl={ttl}")
}

pub fn bypass(reason: &str) -> String {
    format!("tower-response-cache; fwd=bypass; detail={reason}")
}

/// A Redis store on `url` that fails the test at once when Redis is not there.
#[cfg(feature = "redis")]
pub async fn connect_redis(url: &str) -> tower_response_cache::RedisStore {
    tower_response_cache::RedisStore::builder(url)
        .require_connection(true)
        .connect()
        .await
        .unwrap()
}
