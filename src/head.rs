//! The header block of a hit, built once per hot entry and thread, then cloned.
//!
//! Rebuilding a `HeaderMap` from an entry's stored list hashes every header name on every hit;
//! cloning a finished map copies it instead. The finished map carries an `Age` and a
//! `Cache-Status` placeholder at its end, so filling in the two per-hit values replaces them in
//! place and never grows the map. A small table per thread remembers the maps of the entries it
//! answered last; entries are told apart by address, pinned by a `Weak` so an evicted entry's
//! address cannot come back as another entry while a slot names it.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use http::header::{self, Entry, HeaderMap, HeaderValue};

use crate::status::CACHE_STATUS;
use crate::CachedResponse;

const SLOTS: usize = 16;

/// An entry (by address, pinned) and the finished headers of its hits.
type Slot = Option<(Weak<CachedResponse>, HeaderMap)>;

thread_local! {
    // The invariant: a slot gives the headers of exactly the entry they were built from, and
    // nothing invalidates it. It is keyed by the entry's address, and its `Weak` keeps that
    // allocation from being freed while the slot names it, so no other entry (another key,
    // another cache, a later entry under the same key) can come to live at that address and
    // be answered with these headers. An entry never changes once shared, so its headers never
    // go stale; a write makes a new entry, which misses the slot and gets its own. The two
    // values a hit sets (`Age`, this cache's `Cache-Status`) are placeholders, replaced on
    // every hit.
    static HEADS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// The headers of a hit on `entry`, with `Age` and this cache's `Cache-Status` member set
/// (left out when it could not be made).
pub(crate) fn hit_headers(
    entry: &Arc<CachedResponse>,
    age: HeaderValue,
    status: Option<HeaderValue>,
) -> HeaderMap {
    let ptr = Arc::as_ptr(entry);
    if Arc::strong_count(entry) == 1 {
        // Nobody else holds it (a store that decodes every read, like Redis): it will not be
        // answered again, so remembering its headers would only cost.
        return fill(template(entry), age, status);
    }
    let slot = ((ptr as usize as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SLOTS;
    let headers = HEADS.with_borrow_mut(|heads| {
        if heads.is_empty() {
            heads.resize_with(SLOTS, || None);
        }
        if let Some((known, map)) = &heads[slot] {
            if std::ptr::eq(known.as_ptr(), ptr) {
                return map.clone();
            }
        }
        let map = template(entry);
        heads[slot] = Some((Arc::downgrade(entry), map.clone()));
        map
    });
    fill(headers, age, status)
}

/// Puts the per-hit values in place of the placeholders.
fn fill(mut headers: HeaderMap, age: HeaderValue, status: Option<HeaderValue>) -> HeaderMap {
    headers.insert(header::AGE, age);
    let Entry::Occupied(mut ours) = headers.entry(CACHE_STATUS) else {
        return headers;
    };
    // The placeholder is the last value: members from caches further in stay before it.
    match status {
        Some(status) => {
            if let Some(last) = ours.iter_mut().last() {
                *last = status;
            }
        }
        None => {
            let (_, values) = ours.remove_entry_mult();
            let mut values: Vec<HeaderValue> = values.collect();
            values.pop();
            for v in values {
                headers.append(CACHE_STATUS, v);
            }
        }
    }
    headers
}

/// The stored headers, `Content-Length` when missing, and the two placeholders.
fn template(entry: &CachedResponse) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(entry.headers.len() + 3);
    let mut has_length = false;
    for (name, value) in entry.headers.iter() {
        has_length |= name == header::CONTENT_LENGTH;
        map.append(name.clone(), value.clone());
    }
    if !has_length {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    }
    map.insert(header::AGE, HeaderValue::from_static("0"));
    map.append(CACHE_STATUS, HeaderValue::from_static("placeholder"));
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
            ["age: 1", "content-length: 5", "cache-status: upstream; hit"]
        );
    }

    #[test]
    fn an_entry_nobody_else_holds_is_not_remembered() {
        let e = entry(&[("content-type", "text/plain")]);
        let v = |s| HeaderValue::from_static(s);
        let some = |s| Some(HeaderValue::from_static(s));
        let map = hit_headers(&e, v("3"), some("x"));
        assert_eq!(
            lines(&map),
            [
                "content-type: text/plain",
                "content-length: 5",
                "age: 3",
                "cache-status: x"
            ]
        );
        assert_eq!(Arc::weak_count(&e), 0);
        let held = e.clone();
        let _ = hit_headers(&e, v("3"), some("x"));
        assert_eq!(Arc::weak_count(&held), 1);
    }

    #[test]
    fn a_new_entry_gets_its_own_headers() {
        let a = entry(&[("content-type", "text/plain")]);
        let b = entry(&[
            ("content-type", "application/json"),
            ("content-length", "5"),
        ]);
        // Held elsewhere too, as a store holds its entries: these go through the table.
        let in_store = (a.clone(), b.clone());
        let v = |s| HeaderValue::from_static(s);
        let some = |s| Some(HeaderValue::from_static(s));
        let _ = hit_headers(&a, v("0"), some("x"));
        let map = hit_headers(&b, v("0"), some("x"));
        assert_eq!(
            lines(&map),
            [
                "content-type: application/json",
                "content-length: 5",
                "age: 0",
                "cache-status: x"
            ]
        );
        assert_eq!(Arc::weak_count(&b), 1, "remembered");
        drop((b, in_store));
        // Same slot or not, a later entry never gets an earlier entry's headers.
        let c = entry(&[("etag", "\"c\"")]);
        let _c_in_store = c.clone();
        let map = hit_headers(&c, v("0"), some("x"));
        assert_eq!(map.get(header::ETAG).unwrap(), "\"c\"");
        assert!(map.get(header::CONTENT_TYPE).is_none());
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
