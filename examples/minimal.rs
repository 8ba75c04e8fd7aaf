//! The smallest useful setup: one expensive route kept for a minute in the embedded memory store.
//!
//! ```text
//! cargo run --example minimal
//! curl -si http://127.0.0.1:3000/report | grep -i cache-status   # fwd=uri-miss; stored
//! curl -si http://127.0.0.1:3000/report | grep -i cache-status   # hit; ttl=59
//! ```

use std::time::Duration;

use axum::{routing::get, Router};
use tower_response_cache::ResponseCache;

#[tokio::main]
async fn main() {
    // One cache per process; clones share its store, so build it once and hand out layers.
    let cache = ResponseCache::builder().key_prefix("minimal").build();
    let app = Router::new().route(
        "/report",
        get(report).layer(cache.ttl(Duration::from_secs(60))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// Stands for a slow query: with the cache it runs once a minute, whatever the traffic.
async fn report() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    r#"{"visits": 1234}"#
}
