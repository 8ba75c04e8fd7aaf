//! One client cannot multiply a URL's entries through a varied header: spellings of one
//! preference share an entry, and the variants kept per URL are capped.

mod common;

use axum::http::{header, HeaderMap};
use axum::routing::get as route_get;
use axum::Router;
use common::*;
use tower_response_cache::CacheLayer;

/// Eleven ways to ask for Spanish, as one field line each (the last is two lines).
const SPANISH: [&[&str]; 11] = [
    &["es"],
    &["ES"],
    &["Es"],
    &[" es "],
    &["es;q=1"],
    &["es; q=1.0"],
    &["es;Q=1.000"],
    &["es,es"],
    &["es, ES"],
    &["es,"],
    &["es", "es"],
];

/// `/page` answering in the language asked for, saying `Vary: Accept-Language` when `learned`.
fn app(calls: &Calls, layer: CacheLayer, learned: bool) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/page",
        route_get(move |headers: HeaderMap| {
            let n = c.bump();
            let spanish = headers
                .get_all(header::ACCEPT_LANGUAGE)
                .iter()
                .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("es"));
            let body = format!("{} #{n}", if spanish { "hola" } else { "hello" });
            let vary = if learned { "Accept-Language" } else { "Accept" };
            async move { ([(header::VARY, vary)], body) }
        })
        .layer(layer),
    )
}

fn with_lines(lines: &[&str]) -> http::Request<axum::body::Body> {
    let mut req = get("/page");
    for line in lines {
        req.headers_mut()
            .append(header::ACCEPT_LANGUAGE, line.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn spellings_of_one_language_share_one_learned_variant() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&calls, fx.cache.route(), true);
    for (i, lines) in SPANISH.iter().enumerate() {
        let r = send(&app, with_lines(lines)).await;
        assert_eq!(r.text(), "hola #1", "{lines:?}");
        let expected = if i == 0 { MISS.to_owned() } else { hit(60) };
        assert_eq!(r.cache_status(), expected, "{lines:?}");
    }
    assert_eq!(calls.get(), 1);
    // The learned `Vary` record and one variant.
    assert_eq!(fx.entries(), 2);
    // Another language is another representation.
    let en = send(&app, with_lines(&["en"])).await;
    assert_eq!((en.text(), en.cache_status()), ("hello #2", MISS));
}

#[tokio::test]
async fn spellings_of_one_language_share_one_configured_entry() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx.cache.route().vary_headers([header::ACCEPT_LANGUAGE]);
    let app = app(&calls, layer, false);
    for lines in SPANISH {
        let r = send(&app, with_lines(lines)).await;
        assert_eq!(r.text(), "hola #1", "{lines:?}");
    }
    assert_eq!(calls.get(), 1);
    // `Vary: Accept` is learned too: its record and one variant (no `Accept` was sent).
    assert_eq!(fx.entries(), 2);
}

/// A distinct made-up language tag per `i` (`x-a0b1…`), as a client probing the cache would send.
fn random_tag(i: u64) -> String {
    // splitmix64: distinct inputs, distinct and well spread outputs.
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("x-{:016x}", z ^ (z >> 31))
}

const TOO_MANY: &str = "tower-response-cache; fwd=uri-miss; detail=too-many-variants";

/// Asks `/page` with `n` made-up languages; how many responses were stored and how many refused.
async fn flood(app: &Router, n: u64) -> (usize, usize) {
    let (mut stored, mut refused) = (0, 0);
    for i in 0..n {
        let r = send(app, with_lines(&[&random_tag(i)])).await;
        assert_eq!(r.status, http::StatusCode::OK);
        assert_eq!(
            r.text(),
            format!("hello #{}", i + 1),
            "the handler's own body"
        );
        match r.cache_status() {
            MISS => stored += 1,
            TOO_MANY => refused += 1,
            other => panic!("request {i}: {other}"),
        }
    }
    (stored, refused)
}

#[tokio::test]
async fn variants_past_the_cap_are_served_not_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = app(&calls, fx.cache.route().max_variants(50), true);
    assert_eq!(flood(&app, 200).await, (50, 150));
    // Fifty variants and the learned `Vary` record.
    assert_eq!(fx.entries(), 51);
    // The variants kept are still answered; one refused is asked of the handler again.
    let kept = send(&app, with_lines(&[&random_tag(3)])).await;
    assert_eq!(
        (kept.text(), kept.cache_status()),
        ("hello #4", hit(60).as_str())
    );
    let refused = send(&app, with_lines(&[&random_tag(100)])).await;
    assert_eq!(
        (refused.text(), refused.cache_status()),
        ("hello #201", TOO_MANY)
    );

    // Once the kept variants expire, new ones may take their place.
    fx.clock.advance(std::time::Duration::from_secs(61));
    let r = send(&app, with_lines(&[&random_tag(100)])).await;
    assert_eq!((r.text(), r.cache_status()), ("hello #202", MISS));
}

#[tokio::test]
async fn the_default_cap_keeps_a_hundred_variants_and_invalidate_resets_it() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx.cache.route();
    let app = app(&calls, layer.clone(), true);
    assert_eq!(flood(&app, 130).await, (100, 30));
    assert_eq!(fx.entries(), 101);
    let removed = fx
        .cache
        .invalidate(&layer.key_for(&get("/page")))
        .await
        .unwrap();
    assert_eq!(removed, 101);
    let r = send(&app, with_lines(&["es"])).await;
    assert_eq!((r.text(), r.cache_status()), ("hola #131", MISS));
}

/// A URL that varied, then answers without `Vary`: its plain entry replaces the learned record,
/// so the next request is a hit on it (the learned `Vary` would send every lookup to a variant
/// that is no longer stored).
#[tokio::test]
async fn a_url_that_stops_varying_is_hit_through_its_plain_entry() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let fx = Fixture::new();
    let calls = Calls::default();
    let varies = Arc::new(AtomicBool::new(true));
    let (c, v) = (calls.clone(), varies.clone());
    let app = Router::new().route(
        "/page",
        route_get(move || {
            let n = c.bump();
            let vary = v
                .load(Ordering::SeqCst)
                .then_some((header::VARY, "Accept-Language"));
            async move { (axum::response::AppendHeaders(vary), format!("#{n}")) }
        })
        .layer(fx.cache.route()),
    );
    let ask = || send(&app, with_lines(&["es"]));
    assert_eq!(ask().await.cache_status(), MISS);
    assert_eq!(ask().await.cache_status(), hit(60));
    assert_eq!(fx.entries(), 2, "the Vary record and one variant");

    varies.store(false, Ordering::SeqCst);
    fx.clock.advance(Duration::from_secs(61));
    let plain = ask().await;
    assert_eq!((plain.text(), plain.cache_status()), ("#2", MISS));
    let again = ask().await;
    assert_eq!(again.text(), "#2");
    assert_eq!(again.cache_status(), hit(60));
    assert_eq!(calls.get(), 2);
}
