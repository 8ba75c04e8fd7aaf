//! What a miss stores of a body: only a body that is whole (its declared length met, its stream
//! ended cleanly), and never at the cost of holding a stream back from the client.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Response};
use axum::routing::get as route_get;
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Notify};
use tower::ServiceExt;

/// How long a test waits for something that should happen at once, before failing.
const PATIENCE: Duration = Duration::from_secs(5);
const STREAMING: &str = "tower-response-cache; fwd=uri-miss; detail=streaming";

/// A route whose handler answers `body` with `Content-Length: declared`, counting its calls.
fn lying_app(fx: &Fixture, calls: &Calls, declared: &'static str, streamed: bool) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/lies",
        route_get(move || {
            c.bump();
            async move {
                let body = if streamed {
                    let (tx, rx) = mpsc::channel(2);
                    tx.try_send(Ok::<_, Infallible>(Bytes::from_static(b"ab")))
                        .unwrap();
                    tx.try_send(Ok(Bytes::from_static(b"c"))).unwrap();
                    Body::from_stream(ReceiverStream(rx))
                } else {
                    Body::from("abc")
                };
                Response::builder()
                    .header(header::CONTENT_LENGTH, declared)
                    .body(body)
                    .unwrap()
            }
        })
        .layer(fx.cache.route()),
    )
}

async fn assert_never_stored(declared: &'static str, streamed: bool) {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = lying_app(&fx, &calls, declared, streamed);
    for n in 1..=2 {
        let r = send(&app, get("/lies")).await;
        assert_eq!(r.text(), "abc", "passed on as the handler made it");
        assert_eq!(r.header("content-length"), Some(declared));
        assert!(!r.cache_status().contains("stored"), "{}", r.cache_status());
        assert_eq!(
            fx.entries(),
            0,
            "a body of the wrong length is never stored"
        );
        assert_eq!(calls.get(), n, "the next request calls the handler again");
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_never_stored() {
    assert_never_stored("10", false).await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_never_stored() {
    assert_never_stored("2", false).await;
}

#[tokio::test]
async fn a_streamed_body_of_the_wrong_declared_length_is_never_stored() {
    assert_never_stored("10", true).await;
    assert_never_stored("2", true).await;
}

#[tokio::test]
async fn a_body_of_the_declared_length_is_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let app = lying_app(&fx, &calls, "3", false);
    assert_eq!(send(&app, get("/lies")).await.cache_status(), MISS);
    let hit = send(&app, get("/lies")).await;
    assert_eq!(
        (hit.text(), hit.header("content-length")),
        ("abc", Some("3"))
    );
    assert_eq!(calls.get(), 1);
}

/// A handler that sends `first`, waits for the test to open `gate`, then sends `second`.
fn gated_app(
    fx: &Fixture,
    calls: &Calls,
    gate: &Arc<Notify>,
    content_type: &'static str,
) -> Router {
    let (c, gate) = (calls.clone(), gate.clone());
    Router::new().route(
        "/export",
        route_get(move || {
            c.bump();
            let gate = gate.clone();
            async move {
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(async move {
                    let _ = tx.send(Ok::<_, Infallible>(Bytes::from("first\n"))).await;
                    gate.notified().await;
                    let _ = tx.send(Ok(Bytes::from("second\n"))).await;
                });
                Response::builder()
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from_stream(ReceiverStream(rx)))
                    .unwrap()
            }
        })
        .layer(fx.cache.route()),
    )
}

async fn next_data(body: &mut Body) -> Option<Bytes> {
    let frame = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the next frame must come without the test's help");
    frame.map(|f| f.unwrap().into_data().unwrap())
}

#[tokio::test]
async fn a_stream_reaches_the_client_frame_by_frame_and_is_stored_once_whole() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let gate = Arc::new(Notify::new());
    let app = gated_app(&fx, &calls, &gate, "application/x-ndjson");

    let res = tokio::time::timeout(PATIENCE, app.clone().oneshot(get("/export")))
        .await
        .expect("the head must not wait for the body to end")
        .unwrap();
    assert_eq!(res.headers()["cache-status"], STREAMING);
    assert!(
        !res.headers().contains_key(header::ETAG),
        "an ETag of the body cannot be known before the body"
    );
    let mut body = res.into_body();
    // The second frame is only produced once the first has been read.
    assert_eq!(next_data(&mut body).await.unwrap(), "first\n");
    assert_eq!(fx.entries(), 0, "nothing stored before the end");
    gate.notify_one();
    assert_eq!(next_data(&mut body).await.unwrap(), "second\n");
    assert_eq!(next_data(&mut body).await, None);
    drop(body);

    let again = send(&app, get("/export")).await;
    assert_eq!(again.cache_status(), hit(60));
    assert_eq!(again.text(), "first\nsecond\n");
    assert_eq!(again.header("content-length"), Some("13"));
    assert!(
        again.header("etag").is_some(),
        "the stored entry has an ETag"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_not_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let gate = Arc::new(Notify::new());
    let app = gated_app(&fx, &calls, &gate, "text/csv");

    let res = tokio::time::timeout(PATIENCE, app.clone().oneshot(get("/export")))
        .await
        .expect("the head must not wait for the body to end")
        .unwrap();
    let mut body = res.into_body();
    assert_eq!(next_data(&mut body).await.unwrap(), "first\n");
    drop(body);
    gate.notify_one();
    tokio::task::yield_now().await;
    assert_eq!(fx.entries(), 0);

    gate.notify_one();
    let again = send(&app, get("/export")).await;
    assert_eq!(again.cache_status(), STREAMING);
    assert_eq!(again.text(), "first\nsecond\n");
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn an_event_stream_is_never_stored() {
    let fx = Fixture::new();
    let calls = Calls::default();
    let gate = Arc::new(Notify::new());
    let app = gated_app(&fx, &calls, &gate, "text/event-stream");
    gate.notify_one();
    let first = send(&app, get("/export")).await;
    assert_eq!(first.cache_status(), bypass("stream"));
    assert_eq!(first.text(), "first\nsecond\n");
    assert_eq!(fx.entries(), 0);
}

struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
