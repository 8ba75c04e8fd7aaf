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
