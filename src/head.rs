//! The header block of a hit, built from the entry's stored list on every hit.
//!
//! A per-thread table of finished header maps once lived here; on real CPU it bought nothing
//! measurable (BENCHMARKS.md, "Per-thread tables"), so each hit builds its headers afresh.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};

use crate::status::CACHE_STATUS;
use crate::CachedResponse;

/// The headers of a hit on `entry`, with `Age` and this cache's `Cache-Status` member set
/// (left out when it could not be made).
pub(crate) fn hit_headers(
    entry: &Arc<CachedResponse>,
    age: HeaderValue,
    status: Option<HeaderValue>,
) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(entry.headers.len() + 3);
    let mut has_length = false;
    for (name, value) in entry.headers.iter() {
        has_length |= name == header::CONTENT_LENGTH;
        map.append(name.clone(), value.clone());
    }
    if !has_length {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    }
    map.insert(header::AGE, age);
    if let Some(status) = status {
        map.append(CACHE_STATUS, status);
    }
    map
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::StatusCode;

    use super::*;
    use crate::StoredHeaders;

    fn entry(headers: &[(&'static str, &'static str)]) -> Arc<CachedResponse> {
        let headers: StoredHeaders = headers
            .iter()
            .map(|(n, v)| {
                (
                    header::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect();
        Arc::new(CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            stored_at_millis: 0,
            ttl: Duration::from_secs(60),
            stamp: crate::entry::Stamp::default(),
            grace: crate::entry::Grace::default(),
            compute_millis: 0,
        })
    }

    fn lines(map: &HeaderMap) -> Vec<String> {
        map.iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn per_hit_values_replace_the_placeholders_every_time() {
        let e = entry(&[
            ("content-type", "text/plain"),
            ("age", "7"),
            ("cache-status", "upstream; hit"),
        ]);
        let _in_store = e.clone();
        for (age, status) in [("1", "us; hit; ttl=59"), ("2", "us; hit; ttl=58")] {
            let map = hit_headers(
                &e,
                HeaderValue::from_static(age),
                Some(HeaderValue::from_static(status)),
            );
            assert_eq!(
                lines(&map),
                [
                    "content-type: text/plain".to_owned(),
                    format!("age: {age}"),
                    "cache-status: upstream; hit".into(),
                    format!("cache-status: {status}"),
                    "content-length: 5".into(),
                ]
            );
        }
    }

    #[test]
    fn without_a_status_value_only_the_placeholder_goes() {
        let e = entry(&[("cache-status", "upstream; hit")]);
        let _in_store = e.clone();
        let map = hit_headers(&e, HeaderValue::from_static("1"), None);
        assert_eq!(
            lines(&map),
            ["cache-status: upstream; hit", "content-length: 5", "age: 1"]
        );
    }

    #[test]
    fn a_slot_never_answers_for_an_entry_at_an_address_it_once_named() {
        let v = |s| HeaderValue::from_static(s);
        // Entries come and go (evicted, replaced) while hits are answered: each one, wherever
        // the allocator puts it, is answered with its own headers.
        for i in 0..200_u32 {
            let e = Arc::new(CachedResponse {
                status: StatusCode::OK,
                headers: [(header::ETAG, HeaderValue::from(i))].into_iter().collect(),
                body: Bytes::from_static(b"hello"),
                stored_at_millis: 0,
                ttl: Duration::from_secs(60),
                stamp: crate::entry::Stamp::default(),
                grace: crate::entry::Grace::default(),
                compute_millis: 0,
            });
            let in_store = e.clone();
            let map = hit_headers(&e, v("0"), Some(v("x")));
            assert_eq!(map.get(header::ETAG).unwrap(), &HeaderValue::from(i));
            drop((e, in_store));
        }
    }

    #[test]
    fn every_hit_gets_its_own_age_and_status() {
        let e = entry(&[("content-type", "text/plain")]);
        let _in_store = e.clone();
        for (age, status) in [("1", "a; hit"), ("2", "b; hit"), ("3", "a; hit")] {
            let map = hit_headers(
                &e,
                HeaderValue::from_static(age),
                Some(HeaderValue::from_static(status)),
            );
            assert_eq!(map.get(header::AGE).unwrap(), age);
            assert_eq!(
                map.get_all(CACHE_STATUS).iter().collect::<Vec<_>>(),
                [status]
            );
        }
    }
}
