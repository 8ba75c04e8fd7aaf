//! Credentials the cache cannot see: `bypass_when` hooks (per layer and for the whole cache)
//! and `Proxy-Authorization`, through a real Router.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get as route_get;
use axum::{Extension, Router};
use common::*;
use tower_response_cache::{BypassReason, CacheLayer, ManualClock, ResponseCache};

/// Who the handler thinks is asking: the API key, the mTLS principal an outer layer found, or
/// `anonymous`. The response says nothing about caching, so only the hooks keep it private.
fn whoami_app(calls: &Calls, layer: CacheLayer, app_wide: CacheLayer) -> Router {
    let c = calls.clone();
    Router::new()
        .route(
            "/whoami",
            route_get(
                move |headers: HeaderMap, principal: Option<Extension<Principal>>| {
                    c.bump();
                    let who = match (headers.get("x-api-key"), principal) {
                        (Some(key), _) => format!("key {}", key.to_str().unwrap()),
                        (None, Some(Extension(Principal(p)))) => format!("principal {p}"),
                        (None, None) => "anonymous".to_owned(),
                    };
                    async move { who }
                },
            )
            .layer(layer),
        )
        .route(
            "/feed",
            route_get(|headers: HeaderMap| async move {
                let who = headers
                    .get("x-api-key")
                    .map_or("anonymous", |v| v.to_str().unwrap())
                    .to_owned();
                (
                    [(header::CACHE_CONTROL, "max-age=60")],
                    format!("feed for {who}"),
                )
            }),
        )
        .layer(app_wide)
        // An auth layer outside the cache: a client certificate becomes a principal.
        .layer(tower::util::MapRequestLayer::new(
            |mut req: http::Request<Body>| {
                let cert = req.headers().get("x-client-cert").cloned();
                if let Some(cert) = cert {
                    let name = cert.to_str().unwrap().to_owned();
                    req.extensions_mut().insert(Principal(name));
                }
                req
            },
        ))
}

#[derive(Clone)]
struct Principal(String);

fn api_key(req: &http::request::Parts) -> bool {
    req.headers.contains_key("x-api-key")
}

fn mtls(req: &http::request::Parts) -> bool {
    req.extensions.get::<Principal>().is_some()
}

#[tokio::test]
async fn a_layer_hook_keeps_each_users_response_to_that_user() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx
        .cache
        .ttl(Duration::from_secs(60))
        .bypass_when("api-key", api_key)
        .bypass_when("mtls", mtls);
    let app = whoami_app(&calls, layer, fx.cache.layer());

    // User A asks first: served by the handler, never stored.
    let a = send(&app, get_with("/whoami", &[("x-api-key", "key-a")])).await;
    assert_eq!(a.text(), "key key-a");
    assert_eq!(a.cache_status(), bypass("api-key"));
    assert_eq!(a.headers.get_all("cache-status").iter().count(), 1);
    assert_eq!(fx.entries(), 0);

    // Neither user B nor an anonymous user ever gets A's answer.
    let b = send(&app, get_with("/whoami", &[("x-api-key", "key-b")])).await;
    assert_eq!(b.text(), "key key-b");
    let anonymous = send(&app, get("/whoami")).await;
    assert_eq!(anonymous.text(), "anonymous");
    assert_eq!(anonymous.cache_status(), MISS);
    assert_eq!(send(&app, get("/whoami")).await.text(), "anonymous");

    // And with an anonymous entry stored, a keyed request is still not served from it.
    let a = send(&app, get_with("/whoami", &[("x-api-key", "key-a")])).await;
    assert_eq!(a.text(), "key key-a");
    let cert = send(&app, get_with("/whoami", &[("x-client-cert", "carol")])).await;
    assert_eq!(cert.text(), "principal carol");
    assert_eq!(cert.cache_status(), bypass("mtls"));
    assert!(!cert.cache_status().contains("carol"));

    assert_eq!(calls.get(), 5);
    assert_eq!(fx.entries(), 1);
    let stats = &fx.cache.metrics().snapshot()[0];
    assert_eq!(stats.bypasses, vec![(BypassReason::Custom, 4)]);
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn a_cache_hook_applies_to_every_layer() {
    // A manual clock: the hit's `ttl=60` must not depend on how fast the machine is.
    let cache = ResponseCache::builder()
        .clock(ManualClock::new(1_700_000_000_000))
        .bypass_when("api-key", api_key)
        .build();
    let calls = Calls::default();
    let app = whoami_app(&calls, cache.ttl(Duration::from_secs(60)), cache.layer());
    for _ in 0..2 {
        let a = send(&app, get_with("/whoami", &[("x-api-key", "key-a")])).await;
        assert_eq!(a.text(), "key key-a");
        assert_eq!(a.cache_status(), bypass("api-key"));
        // The app-wide layer's route, which the handler marks cacheable for 60 s.
        let feed = send(&app, get_with("/feed", &[("x-api-key", "key-a")])).await;
        assert_eq!(feed.text(), "feed for key-a");
        assert_eq!(feed.cache_status(), bypass("api-key"));
    }
    let feed = send(&app, get("/feed")).await;
    assert_eq!(
        (feed.text(), feed.cache_status()),
        ("feed for anonymous", MISS)
    );
    let feed = send(&app, get("/feed")).await;
    assert_eq!(feed.text(), "feed for anonymous");
    assert_eq!(feed.cache_status(), hit(60));
    let keyed = send(&app, get_with("/feed", &[("x-api-key", "key-b")])).await;
    assert_eq!(keyed.text(), "feed for key-b");

    // A hooked request cannot be answered from the cache: only-if-cached gets a 504.
    let r = send(
        &app,
        get_with(
            "/feed",
            &[("x-api-key", "key-a"), ("cache-control", "only-if-cached")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        r.cache_status(),
        "tower-response-cache; detail=only-if-cached"
    );
}

#[tokio::test]
async fn proxy_authorization_bypasses_by_default() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new().route(
        "/p",
        route_get(move |headers: HeaderMap| {
            c.bump();
            let who = headers
                .get(header::PROXY_AUTHORIZATION)
                .map_or("anonymous", |v| v.to_str().unwrap())
                .to_owned();
            async move { who }
        })
        .layer(fx.cache.route()),
    );
    assert_eq!(send(&app, get("/p")).await.cache_status(), MISS);
    for _ in 0..2 {
        let r = send(
            &app,
            get_with("/p", &[("proxy-authorization", "Basic YTpi")]),
        )
        .await;
        assert_eq!(r.text(), "Basic YTpi");
        assert_eq!(r.cache_status(), bypass("proxy-authorization"));
    }
    assert_eq!(calls.get(), 3);
    assert_eq!(fx.entries(), 1);
    assert_eq!(send(&app, get("/p")).await.text(), "anonymous");
}

#[test]
#[should_panic(expected = "not a token")]
fn a_reason_that_is_not_a_token_is_refused() {
    let _ = ResponseCache::default()
        .route()
        .bypass_when("api key", api_key);
}
