//! Many users with distinct credentials hammer the same URLs over real sockets: nobody ever
//! receives another user's body, whatever mix of shared, app-wide and per-user caching is on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get as route_get;
use axum::Router;

use common::raw_http;

/// Echoes who asked; tempts every cache with `public` lifetimes.
async fn whoami(headers: HeaderMap) -> impl IntoResponse {
    let who = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("anonymous")
        .to_owned();
    tokio::task::yield_now().await;
    (
        [(header::CACHE_CONTROL, "public, max-age=600")],
        format!("profile of {who}"),
    )
}

/// A GET over a fresh connection, with the user's token when there is one; returns the body.
async fn fetch(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let got = raw_http::get(addr, path, &headers).await;
    assert_eq!(got.status, 200, "{got:?}");
    got.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_ever_receives_another_users_body() {
    let fx = common::Fixture::new();
    let per_user = fx
        .cache
        .ttl(Duration::from_secs(600))
        .per_user(|p: &http::request::Parts| {
            let v = p.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            v.strip_prefix("Bearer ").map(str::to_owned)
        });
    let app = Router::new()
        .route(
            "/shared",
            route_get(whoami).layer(fx.cache.ttl(Duration::from_secs(600))),
        )
        .route("/app-wide", route_get(whoami))
        .route("/mine", route_get(whoami).layer(per_user))
        .layer(fx.cache.layer());
    let addr = raw_http::serve(app).await;

    let mut tasks = Vec::new();
    for user in 0..40 {
        tasks.push(tokio::spawn(async move {
            let token = (user % 4 != 0).then(|| format!("user-{user}"));
            let expected = format!("profile of {}", token.as_deref().unwrap_or("anonymous"));
            for round in 0..15 {
                let path = ["/shared", "/app-wide", "/mine"][(user + round) % 3];
                let body = fetch(addr, path, token.as_deref()).await;
                assert_eq!(body, expected, "user {user} on {path}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = fx.cache.metrics().snapshot();
    let hits: u64 = stats.iter().map(|s| s.hits).sum();
    assert!(hits > 0, "the cache was exercised: {stats:?}");
}
