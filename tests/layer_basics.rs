//! Hits, misses, expiry and what makes up the key, through a real axum Router.

mod common;

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::{header, HeaderMap};
use axum::routing::get as route_get;
use axum::Router;
use common::*;

fn counting_app(fx: &Fixture, calls: &Calls, layer: tower_response_cache::CacheLayer) -> Router {
    let calls = calls.clone();
    Router::new()
        .route(
            "/items/{id}",
            route_get(move |RawQuery(q): RawQuery| {
                let n = calls.bump();
                async move { format!("call {n} query {}", q.unwrap_or_default()) }
            })
            .layer(layer),
        )
        .with_state(())
        .layer(fx.cache.layer())
}

#[tokio::test]
async fn second_request_is_a_hit_without_calling_the_handler() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = counting_app(&fx, &calls, fx.cache.ttl(Duration::from_secs(60)));

    let first = send(&app, get("/items/1")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "call 1 query ");
    assert_eq!(first.cache_status(), MISS);
    assert!(first.header("age").is_none());
    let etag = first.header("etag").expect("computed ETag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");

    fx.clock.advance(Duration::from_secs(7));
    let second = send(&app, get("/items/1")).await;
    assert_eq!(calls.get(), 1);
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert_eq!(second.cache_status(), hit(53));
    assert_eq!(second.header("age"), Some("7"));
    assert_eq!(second.header("etag"), Some(etag.as_str()));
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_eq!(second.header("content-length"), Some("13"));
    assert_eq!(second.headers.get_all("cache-status").iter().count(), 1);
    assert_eq!(fx.entries(), 1);

    let stats = fx.cache.metrics().snapshot();
    let route = stats.iter().find(|s| s.route == "/items/{id}").unwrap();
    assert_eq!((route.hits, route.misses, route.stores), (1, 1, 1));
}

#[tokio::test]
async fn entries_expire_at_their_ttl() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = counting_app(&fx, &calls, fx.cache.ttl(Duration::from_secs(30)));
    send(&app, get("/items/1")).await;
    fx.clock.advance(Duration::from_millis(29_999));
    let last_hit = send(&app, get("/items/1")).await;
    assert_eq!(last_hit.cache_status(), hit(0));
    assert_eq!(last_hit.header("age"), Some("29"));
    assert_eq!(calls.get(), 1);
    fx.clock.advance(Duration::from_millis(1));
    let expired = send(&app, get("/items/1")).await;
    assert_eq!(expired.cache_status(), MISS);
    assert_eq!(expired.text(), "call 2 query ");
    let again = send(&app, get("/items/1")).await;
    assert_eq!(again.text(), "call 2 query ");
    assert_eq!(calls.get(), 2);
    // The renewed entry's own headers, not those remembered for the one it replaced.
    assert_eq!(again.cache_status(), hit(30));
    assert_eq!(again.header("age"), Some("0"));
    assert_eq!(again.header("etag"), expired.header("etag"));
    assert_ne!(again.header("etag"), last_hit.header("etag"));
}

#[tokio::test]
async fn query_is_canonicalised_and_tracking_parameters_dropped() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = counting_app(&fx, &calls, fx.cache.route());
    let a = send(&app, get("/items/1?b=2&a=1")).await;
    assert_eq!(a.cache_status(), MISS);
    for same in [
        "/items/1?a=1&b=2",
        "/items/1?b=2&utm_source=news&a=1&fbclid=xyz",
        "/items/1?gclid=1&a=1&b=2&utm_campaign=c",
        "/items/1?a=%31&b=2",
    ] {
        let r = send(&app, get(same)).await;
        assert_eq!(r.cache_status(), hit(60), "{same}");
        assert_eq!(r.body, a.body, "{same}");
    }
    assert_eq!(calls.get(), 1);
    for different in [
        "/items/1?a=1&b=3",
        "/items/1?a=1",
        "/items/2?a=1&b=2",
        "/items/1?a=1&b=2&b=3",
    ] {
        assert_eq!(
            send(&app, get(different)).await.cache_status(),
            MISS,
            "{different}"
        );
    }
    assert_eq!(calls.get(), 5);
}

#[tokio::test]
async fn allow_listed_query_parameters_alone_make_the_key() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = counting_app(&fx, &calls, fx.cache.route().vary_query(["limit"]));
    let first = send(&app, get("/items/1?limit=5&page=1")).await;
    let second = send(&app, get("/items/1?page=7&limit=5&sort=x")).await;
    assert_eq!(second.cache_status(), hit(60));
    assert_eq!(second.body, first.body);
    assert_eq!(
        send(&app, get("/items/1?limit=6")).await.cache_status(),
        MISS
    );
    assert_eq!(send(&app, get("/items/1")).await.cache_status(), MISS);
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn configured_request_headers_vary_the_key() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new().route(
        "/greeting",
        route_get(move |headers: HeaderMap| {
            c.bump();
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .map_or("none", |v| v.to_str().unwrap())
                .to_owned();
            async move { format!("hello in {lang}") }
        })
        .layer(fx.cache.route().vary_headers([header::ACCEPT_LANGUAGE])),
    );
    let en = send(&app, get_with("/greeting", &[("accept-language", "en")])).await;
    let fr = send(&app, get_with("/greeting", &[("accept-language", "fr")])).await;
    let none = send(&app, get("/greeting")).await;
    assert_eq!(
        (en.text(), fr.text(), none.text()),
        ("hello in en", "hello in fr", "hello in none")
    );
    let en2 = send(&app, get_with("/greeting", &[("accept-language", "en")])).await;
    let fr2 = send(&app, get_with("/greeting", &[("accept-language", "fr")])).await;
    let none2 = send(&app, get("/greeting")).await;
    assert_eq!(
        (en2.text(), fr2.text(), none2.text()),
        ("hello in en", "hello in fr", "hello in none")
    );
    assert_eq!(en2.cache_status(), hit(60));
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn the_responses_own_vary_is_learned() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new().route(
        "/stats",
        route_get(move |headers: HeaderMap| {
            c.bump();
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .map_or("en", |v| v.to_str().unwrap())
                .to_owned();
            async move { ([(header::VARY, "Accept-Language")], format!("stats/{lang}")) }
        })
        .layer(fx.cache.route()),
    );
    let langs = ["en", "es", "fr"];
    for lang in langs {
        let r = send(&app, get_with("/stats", &[("accept-language", lang)])).await;
        assert_eq!(r.cache_status(), MISS);
        assert_eq!(r.text(), format!("stats/{lang}"));
    }
    for lang in langs {
        let r = send(&app, get_with("/stats", &[("accept-language", lang)])).await;
        assert_eq!(r.cache_status(), hit(60), "{lang}");
        assert_eq!(r.text(), format!("stats/{lang}"));
        assert_eq!(r.header("vary"), Some("Accept-Language"));
    }
    assert_eq!(calls.get(), 3);
    // One record of the learned Vary plus one entry per language.
    assert_eq!(fx.entries(), 4);

    // A second cache on the same store has not learned anything yet: it reads the Vary record.
    let other = tower_response_cache::ResponseCache::builder()
        .store(fx.store.clone())
        .clock(fx.clock.clone())
        .key_prefix("test")
        .build();
    let c2 = calls.clone();
    let app2 = Router::new().route(
        "/stats",
        route_get(move || {
            c2.bump();
            async { "never" }
        })
        .layer(other.ttl(Duration::from_secs(60))),
    );
    let r = send(&app2, get_with("/stats", &[("accept-language", "fr")])).await;
    assert_eq!(r.text(), "stats/fr");
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn namespace_version_and_invalidation_drop_entries() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx.cache.route();
    let app = counting_app(&fx, &calls, layer.clone());
    send(&app, get("/items/1?x=1")).await;
    assert_eq!(
        send(&app, get("/items/1?x=1")).await.cache_status(),
        hit(60)
    );
    assert_eq!(fx.cache.bump_version().await.unwrap(), 2);
    assert_eq!(send(&app, get("/items/1?x=1")).await.cache_status(), MISS);
    assert_eq!(calls.get(), 2);

    let key = layer.key_for(&get("/items/1?x=1"));
    assert_eq!(fx.cache.invalidate(&key).await.unwrap(), 1);
    assert_eq!(send(&app, get("/items/1?x=1")).await.cache_status(), MISS);
    assert_eq!(calls.get(), 3);
}

/// After an invalidation, a clear or a client's refresh, a hit is the new response, whole
/// (it guarded the per-thread tables that once sat on the hit path, and guards any that return).
#[tokio::test]
async fn a_hit_after_invalidate_clear_or_refresh_is_the_new_response() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx.cache.route().honor_client_no_cache(true);
    let app = counting_app(&fx, &calls, layer.clone());
    let key = layer.key_for(&get("/items/1"));
    let hits_answer = |app: Router, filled: Seen| async move {
        for _ in 0..3 {
            let again = send(&app, get("/items/1")).await;
            assert_eq!(again.cache_status(), hit(60));
            assert_eq!(again.text(), filled.text());
            assert!(again.header("etag").is_some());
            assert_eq!(again.header("etag"), filled.header("etag"));
        }
    };
    let first = send(&app, get("/items/1")).await;
    assert_eq!(
        (first.cache_status(), first.text()),
        (MISS, "call 1 query ")
    );
    hits_answer(app.clone(), first).await;

    assert_eq!(fx.cache.invalidate(&key).await.unwrap(), 1);
    let second = send(&app, get("/items/1")).await;
    assert_eq!(
        (second.cache_status(), second.text()),
        (MISS, "call 2 query ")
    );
    hits_answer(app.clone(), second).await;

    fx.cache.clear().await.unwrap();
    let third = send(&app, get("/items/1")).await;
    assert_eq!(
        (third.cache_status(), third.text()),
        (MISS, "call 3 query ")
    );
    hits_answer(app.clone(), third).await;

    let refreshed = send(&app, get_with("/items/1", &[("cache-control", "no-cache")])).await;
    assert_eq!(refreshed.text(), "call 4 query ");
    hits_answer(app.clone(), refreshed).await;
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn different_requests_never_share_an_entry() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/{*path}",
            route_get(move |uri: axum::http::Uri, headers: HeaderMap| {
                let n = c.bump();
                let host = headers
                    .get(header::HOST)
                    .map(|h| h.to_str().unwrap().to_owned());
                async move { format!("{n} {uri} {host:?}") }
            }),
        )
        .layer(fx.cache.route());
    let requests = [
        get("/x?a=bc"),
        get("/x?ab=c"),
        get("/x?a=b&c"),
        get("/X?a=bc"),
        get("/x/?a=bc"),
        get("/x?a=b%26c"),
        get_with("/x?a=bc", &[("host", "one.example")]),
        get_with("/x?a=bc", &[("host", "two.example")]),
    ];
    let mut bodies = Vec::new();
    for req in requests {
        let r = send(&app, req).await;
        assert_eq!(r.cache_status(), MISS, "{}", r.text());
        bodies.push(r.body);
    }
    assert_eq!(calls.get(), 8);
    assert_eq!(fx.entries(), 8);
}
