//! The app-wide layer: one `cache.layer()` on the whole Router, and each handler decides with
//! `Cache-Control` what is stored and for how long. Routes that say nothing are never stored.
//!
//! ```text
//! cargo run --example app_wide
//! curl -si http://127.0.0.1:3000/articles | grep -i cache-status   # stored for 30 s
//! curl -si http://127.0.0.1:3000/clock    | grep -i cache-status   # no max-age: not stored
//! ```

use axum::{http::header, response::IntoResponse, routing::get, Router};
use tower_response_cache::ResponseCache;

#[tokio::main]
async fn main() {
    let cache = ResponseCache::builder().key_prefix("app_wide").build();
    let app = Router::new()
        .route("/articles", get(articles))
        .route("/clock", get(clock))
        // Last, so it wraps every route: it looks up each GET and stores what a handler marked
        // cacheable (`s-maxage` over `max-age`), for that long.
        .layer(cache.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// Shared by everyone for 30 seconds.
async fn articles() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=30")],
        r#"[{"title": "Caching whole responses"}]"#,
    )
}

/// No `Cache-Control`: never stored (`Cache-Status: …; fwd=bypass; detail=no-ttl`).
async fn clock() -> String {
    format!("{:?}", std::time::SystemTime::now())
}
