//! The safety rules: credentialed requests bypass, unsafe responses are never stored, streams
//! and oversized bodies flow through whole.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get as route_get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test]
async fn only_get_and_head_use_the_cache() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/thing",
            post(move || {
                let n = c.bump();
                async move { format!("posted {n}") }
            }),
        )
        .layer(fx.cache.route());
    for n in 1..=2 {
        let req = http::Request::post("/thing").body(Body::empty()).unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.text(), format!("posted {n}"));
        assert_eq!(r.cache_status(), bypass("method"));
    }
    assert_eq!(fx.entries(), 0);
}

fn whoami_app(fx: &Fixture, calls: &Calls, layer: tower_response_cache::CacheLayer) -> Router {
    let c = calls.clone();
    Router::new()
        .route(
            "/whoami",
            route_get(move |headers: HeaderMap| {
                c.bump();
                let who = headers
                    .get(header::AUTHORIZATION)
                    .or_else(|| headers.get(header::COOKIE))
                    .map_or("anonymous", |v| v.to_str().unwrap())
                    .to_owned();
                async move { who }
            })
            .layer(layer),
        )
        .layer(fx.cache.layer())
}

#[tokio::test]
async fn credentials_bypass_lookup_and_store() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = whoami_app(&fx, &calls, fx.cache.route());
    // An anonymous entry exists…
    assert_eq!(send(&app, get("/whoami")).await.cache_status(), MISS);
    // …but neither a token nor a cookie is ever answered from it, nor stored.
    for _ in 0..2 {
        let r = send(
            &app,
            get_with("/whoami", &[("authorization", "Bearer alice")]),
        )
        .await;
        assert_eq!(r.text(), "Bearer alice");
        assert_eq!(r.cache_status(), bypass("authorization"));
        let r = send(&app, get_with("/whoami", &[("cookie", "sessionid=bob")])).await;
        assert_eq!(r.text(), "sessionid=bob");
        assert_eq!(r.cache_status(), bypass("cookie"));
        assert!(!r.cache_status().contains("bob"));
    }
    assert_eq!(calls.get(), 5);
    assert_eq!(fx.entries(), 1);
    assert_eq!(send(&app, get("/whoami")).await.text(), "anonymous");
}

#[tokio::test]
async fn named_session_cookies_alone_bypass_and_cookie_free_routes_ignore_them() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = whoami_app(&fx, &calls, fx.cache.route().session_cookies(["sessionid"]));
    let theme = send(&app, get_with("/whoami", &[("cookie", "theme=dark")])).await;
    assert_eq!(theme.cache_status(), MISS);
    let other = send(
        &app,
        get_with("/whoami", &[("cookie", "theme=light; consent=1")]),
    )
    .await;
    assert_eq!(other.cache_status(), hit(60));
    assert_eq!(other.text(), "theme=dark");
    let session = send(
        &app,
        get_with("/whoami", &[("cookie", "theme=dark; sessionid=x")]),
    )
    .await;
    assert_eq!(session.cache_status(), bypass("cookie"));
    assert_eq!(session.text(), "theme=dark; sessionid=x");
    assert_eq!(calls.get(), 2);

    let fx = Fixture::new();
    let calls = Calls::default();
    let app = whoami_app(&fx, &calls, fx.cache.route().ignore_cookies());
    send(&app, get_with("/whoami", &[("cookie", "a=1")])).await;
    let r = send(&app, get_with("/whoami", &[("cookie", "sessionid=2")])).await;
    assert_eq!(r.cache_status(), hit(60));
    // Authorization still bypasses on a cookie-independent route.
    let r = send(&app, get_with("/whoami", &[("authorization", "Bearer z")])).await;
    assert_eq!(r.cache_status(), bypass("authorization"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn per_user_mode_keys_on_the_hashed_identity() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let layer = fx.cache.route().per_user(|parts: &http::request::Parts| {
        let token = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        token.strip_prefix("Bearer ").map(str::to_owned)
    });
    let app = whoami_app(&fx, &calls, layer);
    for token in ["Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob"] {
        let r = send(&app, get_with("/whoami", &[("authorization", token)])).await;
        assert_eq!(r.text(), token);
    }
    assert_eq!(calls.get(), 2);
    // Nobody's identity leaks into the shared entry.
    assert_eq!(send(&app, get("/whoami")).await.text(), "anonymous");
    assert_eq!(calls.get(), 3);
}

fn refusing_app(fx: &Fixture, calls: &Calls) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/r/{case}",
        route_get(
            move |axum::extract::Path(case): axum::extract::Path<String>| {
                let n = c.bump();
                async move {
                    let body = format!("body {n}");
                    let mut res = body.into_response();
                    let h = res.headers_mut();
                    match case.as_str() {
                        "set-cookie" => drop(h.insert(header::SET_COOKIE, "s=1".parse().unwrap())),
                        "private" => drop(h.insert(
                            header::CACHE_CONTROL,
                            "private, max-age=60".parse().unwrap(),
                        )),
                        "no-store" => {
                            drop(h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap()))
                        }
                        "no-cache" => {
                            drop(h.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap()))
                        }
                        "vary-star" => drop(h.insert(header::VARY, "*".parse().unwrap())),
                        "status" => *res.status_mut() = StatusCode::NOT_FOUND,
                        "too-large" => return (StatusCode::OK, "x".repeat(2048)).into_response(),
                        _ => {}
                    }
                    res
                }
            },
        )
        .layer(fx.cache.route().max_body_size(1024)),
    )
}

#[tokio::test]
async fn unsafe_responses_are_never_stored_and_reach_the_client_unchanged() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = refusing_app(&fx, &calls);
    let cases = [
        ("set-cookie", "set-cookie", Some(("set-cookie", "s=1"))),
        (
            "private",
            "private",
            Some(("cache-control", "private, max-age=60")),
        ),
        ("no-store", "no-store", Some(("cache-control", "no-store"))),
        ("no-cache", "no-cache", Some(("cache-control", "no-cache"))),
        ("vary-star", "vary-star", Some(("vary", "*"))),
        ("status", "status", None),
        ("too-large", "too-large", None),
    ];
    for (case, reason, header) in cases {
        let before = calls.get();
        for _ in 0..2 {
            let r = send(&app, get(&format!("/r/{case}"))).await;
            assert_eq!(r.cache_status(), bypass(reason), "{case}");
            if let Some((name, value)) = header {
                assert_eq!(r.header(name), Some(value), "{case}");
            }
            if case == "too-large" {
                assert_eq!(r.body.len(), 2048);
            } else {
                assert!(r.text().starts_with("body "), "{case}");
            }
        }
        assert_eq!(calls.get(), before + 2, "{case} was served from the cache");
    }
    assert_eq!(fx.entries(), 0);
    let stats = fx.cache.metrics().snapshot();
    let bypasses = &stats
        .iter()
        .find(|s| s.route == "/r/{case}")
        .unwrap()
        .bypasses;
    assert_eq!(bypasses.len(), 7);
    assert!(bypasses.iter().all(|(_, n)| *n == 2));
}

#[tokio::test]
async fn a_body_outgrowing_the_limit_midway_is_sent_whole_and_not_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new().route(
        "/big",
        route_get(move || {
            c.bump();
            async {
                // No Content-Length: the size is only discovered while reading.
                let chunks =
                    (0..10u8).map(|i| Ok::<_, Infallible>(Bytes::from(vec![b'a' + i; 300])));
                Body::from_stream(futures_stream(chunks))
            }
        })
        .layer(fx.cache.route().max_body_size(1000)),
    );
    let mut expected = Vec::new();
    for i in 0..10u8 {
        expected.extend(std::iter::repeat_n(b'a' + i, 300));
    }
    for _ in 0..2 {
        let r = send(&app, get("/big")).await;
        assert_eq!(r.body.as_ref(), expected.as_slice());
        // Streamed as it came: the size was learnt after the head went out.
        assert_eq!(
            r.cache_status(),
            "tower-response-cache; fwd=uri-miss; detail=streaming"
        );
    }
    assert_eq!(calls.get(), 2);
    assert_eq!(fx.entries(), 0);
}

/// A `Stream` over an iterator, without pulling in a streams crate.
fn futures_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

#[tokio::test]
async fn an_endless_event_stream_flows_through_the_app_wide_layer() {
    let fx = Fixture::new();
    let app = Router::new()
        .route(
            "/events",
            route_get(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while tx
                        .send(Ok(Bytes::from(format!("data: {i}\n\n"))))
                        .await
                        .is_ok()
                    {
                        i += 1;
                    }
                });
                let stream = ReceiverStream(rx);
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "max-age=60")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }),
        )
        .layer(fx.cache.layer());
    let res = tokio::time::timeout(Duration::from_secs(10), app.oneshot(get("/events")))
        .await
        .expect("the response head must not wait for the stream to end")
        .unwrap();
    assert_eq!(res.headers()["cache-status"], bypass("stream").as_str());
    let mut body = res.into_body();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("events must flow")
            .unwrap()
            .unwrap();
        seen.push(frame.into_data().unwrap());
    }
    assert_eq!(seen, ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]);
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn client_no_cache_cannot_force_a_miss_unless_allowed() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let c = calls.clone();
    let handler = move || {
        let n = c.bump();
        async move { format!("v{n}") }
    };
    let app = Router::new()
        .route(
            "/default",
            route_get(handler.clone()).layer(fx.cache.route()),
        )
        .route(
            "/honoured",
            route_get(handler).layer(fx.cache.route().honor_client_no_cache(true)),
        );
    send(&app, get("/default")).await;
    let r = send(&app, get_with("/default", &[("cache-control", "no-cache")])).await;
    assert_eq!((r.text(), r.cache_status()), ("v1", hit(60).as_str()));
    let r = send(&app, get_with("/default", &[("pragma", "no-cache")])).await;
    assert_eq!(r.text(), "v1");

    send(&app, get("/honoured")).await;
    let r = send(
        &app,
        get_with("/honoured", &[("cache-control", "no-cache")]),
    )
    .await;
    assert_eq!(r.text(), "v3");
    assert_eq!(
        r.cache_status(),
        "tower-response-cache; fwd=request; stored"
    );
    let r = send(&app, get("/honoured")).await;
    assert_eq!((r.text(), r.cache_status()), ("v3", hit(60).as_str()));
    assert_eq!(calls.get(), 3);
}
