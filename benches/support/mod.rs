//! Shared by the benches and the Redis throughput tool: the body and handler every comparison
//! serves, so cached, bare and raw figures are about the same bytes.
#![allow(dead_code)]

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use bytes::Bytes;

/// A 2 KiB JSON array, the size of a typical cached API page.
pub(crate) fn json_body() -> Bytes {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < 2048 - 64 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user{i:05}\",\"score\":{}}}",
            i * 7
        ));
        i += 1;
    }
    s.push(']');
    Bytes::from(s)
}

/// A handler answering `body` as JSON, with nothing else to do.
pub(crate) fn json_handler(
    body: Bytes,
) -> impl Fn() -> std::future::Ready<axum::response::Response> + Clone + Send + Sync + 'static {
    move || {
        std::future::ready(
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body.clone(),
            )
                .into_response(),
        )
    }
}
