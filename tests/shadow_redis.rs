//! Shadow mode over Redis, whose lookups are awaited and whose writes follow the response: the
//! shadowed route fills Redis and counts its would-be hits, yet every answer is the handler's.

mod common;

use std::time::Duration;

use axum::Router;
use common::redis_server::RedisServer;
use common::*;
use tower_response_cache::{RedisStore, ResponseCache};

#[tokio::test]
async fn a_shadowed_route_over_redis_fills_the_store_and_never_serves_from_it() {
    let Some(server) = RedisServer::start("shadow_redis") else {
        return;
    };
    let store = RedisStore::from_url(&server.url()).await.unwrap();
    let cache = ResponseCache::builder()
        .key_prefix("shadow")
        .store(store)
        .build();
    let calls = Calls::default();
    let layer = cache.ttl(Duration::from_secs(60)).shadow(true);
    let app = Router::new().route("/feed", calls.handler().layer(layer.clone()));

    let first = send(&app, get("/feed")).await;
    assert_eq!(
        first.cache_status(),
        "tower-response-cache; fwd=uri-miss; stored; detail=shadow"
    );
    cache.flush().await;
    let key = layer.key_for(&get("/feed"));
    assert!(
        cache.store().get(&key).await.unwrap().is_some(),
        "stored in Redis"
    );

    for n in 2..=3 {
        let seen = send(&app, get("/feed")).await;
        assert_eq!(seen.text(), format!("n{n}"));
        assert_eq!(
            seen.cache_status(),
            "tower-response-cache; fwd=bypass; detail=shadow-hit"
        );
    }
    assert_eq!(calls.get(), 3);
    let s = cache
        .stats()
        .into_iter()
        .find(|s| s.route == "/feed")
        .unwrap();
    assert_eq!((s.hits, s.misses), (2, 1));
}
