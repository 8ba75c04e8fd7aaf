//! The debug span per cached request, captured by a small `tracing` layer around a real Router:
//! its fields say the route, the decision, the reason, the key's short hash and the store's
//! latency, and no field carries the raw URL, its query, an identity, an `Authorization` value
//! or a cookie. With debug off for the crate, no span is made.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use axum::Router;
use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

/// Every `cache` span, in creation order, with the fields recorded on it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Id, Fields)>>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "cache" {
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        self.0.lock().unwrap().push((id.clone(), fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Visitor(fields));
        }
    }
}

impl Captured {
    fn spans(&self) -> Vec<Fields> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn app(f: &Fixture, calls: &Calls, users: &Calls, shadowed: &Calls) -> Router {
    let per_user = f.cache.route().per_user(|p: &http::request::Parts| {
        p.headers
            .get("x-user")
            .map(|v| v.to_str().unwrap().to_owned())
    });
    Router::new()
        .route("/items/{id}", calls.handler().layer(f.cache.route()))
        .route("/me", users.handler().layer(per_user))
        .route(
            "/shadow",
            shadowed.handler().layer(f.cache.route().shadow(true)),
        )
}

fn field<'a>(span: &'a Fields, name: &str) -> Option<&'a str> {
    span.get(name).map(String::as_str)
}

#[tokio::test]
async fn each_request_has_a_span_with_its_decision_and_nothing_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(
        captured
            .clone()
            .with_filter(Targets::new().with_target("tower_response_cache", LevelFilter::DEBUG)),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let f = Fixture::new();
    let (calls, users, shadowed) = (Calls::default(), Calls::default(), Calls::default());
    let app = app(&f, &calls, &users, &shadowed);

    send(&app, get("/items/1?token=query-secret")).await;
    send(&app, get("/items/1?token=query-secret")).await;
    send(
        &app,
        get_with("/items/1", &[("authorization", "Bearer auth-secret")]),
    )
    .await;
    send(
        &app,
        get_with("/items/1", &[("cookie", "sessionid=cookie-secret")]),
    )
    .await;
    send(&app, get_with("/me", &[("x-user", "alice-identity")])).await;
    send(&app, get_with("/me", &[("x-user", "alice-identity")])).await;
    send(&app, get("/shadow")).await;
    send(&app, get("/shadow")).await;

    let spans = captured.spans();
    assert_eq!(spans.len(), 8, "{spans:#?}");
    let decisions: Vec<_> = spans
        .iter()
        .map(|s| (field(s, "route").unwrap(), field(s, "decision").unwrap()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("/items/{id}", "miss"),
            ("/items/{id}", "hit"),
            ("/items/{id}", "bypass"),
            ("/items/{id}", "bypass"),
            ("/me", "miss"),
            ("/me", "hit"),
            ("/shadow", "miss"),
            ("/shadow", "shadow-hit"),
        ]
    );
    assert_eq!(field(&spans[2], "reason"), Some("authorization"));
    assert_eq!(field(&spans[3], "reason"), Some("cookie"));
    assert_eq!(field(&spans[6], "reason"), Some("shadow"));

    // The key: 16 hex digits, the same for a miss and the hit it stored, per user for `/me`.
    for i in [0, 1, 4, 5, 6, 7] {
        let key = field(&spans[i], "key").unwrap_or_else(|| panic!("no key: {:?}", spans[i]));
        assert_eq!(key.len(), 16);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        let us = field(&spans[i], "store_us").unwrap_or_else(|| panic!("{:?}", spans[i]));
        us.parse::<u64>().expect("store latency in microseconds");
    }
    assert_eq!(field(&spans[0], "key"), field(&spans[1], "key"));
    assert_ne!(field(&spans[0], "key"), field(&spans[4], "key"));
    // Bypassed before any key was made.
    assert_eq!(field(&spans[2], "key"), None);

    for span in &spans {
        for (name, value) in span {
            for secret in [
                "query-secret",
                "token",
                "auth-secret",
                "Bearer",
                "cookie-secret",
                "sessionid",
                "alice",
                "/items/1",
            ] {
                assert!(!value.contains(secret), "{name}={value} leaks {secret}");
            }
        }
    }
}

#[tokio::test]
async fn with_debug_off_no_span_is_made() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(
        captured
            .clone()
            .with_filter(Targets::new().with_target("tower_response_cache", LevelFilter::INFO)),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let f = Fixture::new();
    let (calls, users, shadowed) = (Calls::default(), Calls::default(), Calls::default());
    let app = app(&f, &calls, &users, &shadowed);
    send(&app, get("/items/1")).await;
    let seen = send(&app, get("/items/1")).await;
    assert_eq!(seen.cache_status(), hit(60));
    assert!(captured.spans().is_empty());
}
