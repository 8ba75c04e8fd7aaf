//! The per-URL variant cap over Redis, whose writes follow the response: a response past the cap
//! must still say so, and never reach the store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_response_cache::{RedisStore, ResponseCache};

use common::redis_server::RedisServer;

#[tokio::test]
async fn past_the_variant_cap_a_redis_write_is_never_sent_and_the_client_is_told() {
    let Some(server) = RedisServer::start("redis_variants") else {
        return;
    };
    let store = RedisStore::from_url(&server.url()).await.unwrap();
    let cache = ResponseCache::builder()
        .key_prefix("variants")
        .store(store)
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/page",
        get(move |headers: HeaderMap| {
            c.fetch_add(1, Ordering::SeqCst);
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            async move {
                (
                    [(header::VARY, "Accept-Language")],
                    format!("page in {lang}"),
                )
            }
        })
        .layer(cache.ttl(Duration::from_secs(60)).max_variants(2)),
    );
    let send = |lang: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::get("/page")
                .header(header::ACCEPT_LANGUAGE, lang)
                .body(Body::empty())
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    let stored = "tower-response-cache; fwd=uri-miss; stored";
    let refused = "tower-response-cache; fwd=uri-miss; detail=too-many-variants";
    for (lang, expected) in [
        ("en", stored),
        ("fr", stored),
        ("de", refused),
        ("it", refused),
    ] {
        let (status, body) = send(lang).await;
        assert_eq!(
            (status.as_str(), body),
            (expected, format!("page in {lang}"))
        );
        cache.flush().await;
    }
    // Two variants and the `Vary` record under the URL's primary key; nothing for de or it.
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "3");
    assert!(send("en").await.0.contains("hit"));
    assert_eq!(send("de").await.0, refused);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
