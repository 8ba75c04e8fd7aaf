//! Keys derived recently on this thread, remembered by the raw request parts they came from.
//!
//! The requests this crate is for ask one URL thousands of times a second; deriving its key
//! (canonical query, length-delimited SHA-256) every time costs more than the store lookup. A
//! small direct-mapped table per thread remembers the last key made from exactly these bytes:
//! layer, cache, namespace version, URI, `Host` and the values of the route's vary headers. A
//! memo hit compares all of them byte for byte, so it is the key the derivation would give,
//! never a neighbour's. Per-user keys are never remembered.
//!
//! The invariant holds only if the memo reads exactly what the derivation reads: both take the
//! request's inputs from one [`RequestParts`] (the URI the client sent, not the one a nested
//! router stripped; `Host`; the raw vary header values, which the derivation normalises, so
//! different raw spellings just derive separately and land on one key).

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use crate::key::{RawWriter, RequestParts};
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::CacheKey;

/// Slots per thread; a hot set larger than this still works, it just derives more often.
const SLOTS: usize = 64;
/// Requests whose raw parts are longer are not remembered (long URLs are rarely hot).
const MAX_RAW: usize = 384;

struct Slot {
    /// `Weak`s pin the allocations, so a dropped layer's address cannot come back as another
    /// layer while this slot still names it.
    shared: Weak<Shared>,
    policy: Weak<RoutePolicy>,
    version: u64,
    raw: Vec<u8>,
    key: CacheKey,
}

thread_local! {
    static MEMO: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// The primary key of a shared (not per-user) request: remembered, or made by `derive` and
/// remembered.
pub(crate) fn shared_key(
    shared: &Arc<Shared>,
    policy: &Arc<RoutePolicy>,
    version: u64,
    request: RequestParts<'_>,
    derive: impl FnOnce() -> CacheKey,
) -> CacheKey {
    let mut raw = Raw::new();
    if !request.write_raw(&policy.vary_headers, &mut raw) {
        return derive();
    }
    let raw = raw.bytes();
    let slot = slot_of(
        Arc::as_ptr(shared) as usize,
        Arc::as_ptr(policy) as usize,
        raw,
    );
    let same = |s: &Slot| {
        s.version == version
            && std::ptr::eq(s.shared.as_ptr(), Arc::as_ptr(shared))
            && std::ptr::eq(s.policy.as_ptr(), Arc::as_ptr(policy))
            && s.raw == raw
    };
    let known = MEMO.with_borrow(|memo| {
        memo.get(slot)
            .and_then(Option::as_ref)
            .filter(|s| same(s))
            .map(|s| s.key.clone())
    });
    if let Some(key) = known {
        return key;
    }
    let key = derive();
    MEMO.with_borrow_mut(|memo| {
        if memo.is_empty() {
            memo.resize_with(SLOTS, || None);
        }
        match &mut memo[slot] {
            Some(s) => {
                s.shared = Arc::downgrade(shared);
                s.policy = Arc::downgrade(policy);
                s.version = version;
                s.raw.clear();
                s.raw.extend_from_slice(raw);
                s.key = key.clone();
            }
            empty => {
                *empty = Some(Slot {
                    shared: Arc::downgrade(shared),
                    policy: Arc::downgrade(policy),
                    version,
                    raw: raw.to_vec(),
                    key: key.clone(),
                });
            }
        }
    });
    key
}

/// Which slot `raw` of this layer lands in: an FxHash-style mix, enough to spread a hot set.
fn slot_of(shared: usize, policy: usize, raw: &[u8]) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = mix(mix(0, shared as u64), policy as u64);
    let mut words = raw.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    for &b in words.remainder() {
        h = mix(h, u64::from(b));
    }
    // The high bits are the well-mixed ones.
    (h >> 58) as usize % SLOTS
}

/// The raw parts of a request, length-delimited, in a stack buffer.
struct Raw {
    buf: [u8; MAX_RAW],
    len: usize,
}

impl Raw {
    fn new() -> Self {
        Self {
            buf: [0; MAX_RAW],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// A tag, a length and the bytes.
    #[inline]
    fn tagged(&mut self, tag: u8, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        let end = self.len + 3 + bytes.len();
        if end > MAX_RAW {
            return false;
        }
        self.buf[self.len] = tag;
        self.buf[self.len + 1..self.len + 3].copy_from_slice(&len.to_le_bytes());
        self.buf[self.len + 3..end].copy_from_slice(bytes);
        self.len = end;
        true
    }
}

impl RawWriter for Raw {
    #[inline]
    fn part(&mut self, bytes: Option<&[u8]>) -> bool {
        match bytes {
            Some(b) => self.tagged(VALUE, b),
            None => self.tagged(ABSENT, &[]),
        }
    }

    #[inline]
    fn value(&mut self, bytes: &[u8]) -> bool {
        self.tagged(VALUE, bytes)
    }

    #[inline]
    fn end(&mut self) -> bool {
        self.tagged(END, &[])
    }
}

const ABSENT: u8 = 0;
const VALUE: u8 = 1;
const END: u8 = 2;

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use http::{header, HeaderName, HeaderValue, Request};

    use crate::service::key_at;
    use crate::{CacheLayer, ResponseCache};

    /// The memo's answer for `req`, and whether it had to derive it.
    fn memo_key(layer: &CacheLayer, version: u64, req: &Request<()>) -> (crate::CacheKey, bool) {
        let derived = Cell::new(false);
        let key = super::shared_key(
            &layer.shared,
            &layer.policy,
            version,
            crate::key::RequestParts::of(req),
            || {
                derived.set(true);
                key_at(&layer.shared, &layer.policy, req, None, version)
            },
        );
        (key, derived.get())
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get(uri).body(()).unwrap();
        for (n, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }

    #[test]
    fn a_repeated_request_is_derived_once_and_keyed_the_same() {
        let layer = ResponseCache::default().ttl(Duration::from_secs(1));
        let req = get("/trending?b=2&a=1", &[("host", "example.com")]);
        let (first, derived) = memo_key(&layer, 1, &req);
        assert!(derived);
        let (again, derived) = memo_key(&layer, 1, &req);
        assert!(!derived, "the second ask is answered from the memo");
        assert_eq!(again, first);
        assert_eq!(again, layer.key_for(&req));
    }

    #[test]
    fn anything_the_key_depends_on_is_derived_again() {
        let cache = ResponseCache::default();
        let layer = cache
            .ttl(Duration::from_secs(1))
            .vary_headers([header::ACCEPT, header::ACCEPT_LANGUAGE]);
        let base = get("/s?x=1", &[("host", "h"), ("accept", "a")]);
        let _ = memo_key(&layer, 1, &base);
        let others = [
            get("/s?x=2", &[("host", "h"), ("accept", "a")]),
            get("/s?x=1", &[("host", "g"), ("accept", "a")]),
            get("/S?x=1", &[("host", "h"), ("accept", "a")]),
            get("/s?x=1", &[("host", "h"), ("accept", "b")]),
            get("/s?x=1", &[("host", "h"), ("accept", "")]),
            get("/s?x=1", &[("host", "h")]),
            // The same value under the other vary header.
            get("/s?x=1", &[("host", "h"), ("accept-language", "a")]),
            get("/s?x=1", &[("host", "h"), ("accept", "a"), ("accept", "b")]),
        ];
        for req in &others {
            let (key, derived) = memo_key(&layer, 1, req);
            assert!(derived, "{req:?}");
            assert_eq!(key, layer.key_for(req), "{req:?}");
            assert_ne!(key, layer.key_for(&base), "{req:?}");
        }
        // Back to the base request, in a new namespace version, then under another layer.
        assert!(memo_key(&layer, 2, &base).1);
        let other_layer = cache.ttl(Duration::from_secs(1)).vary_query(["x"]);
        assert!(memo_key(&other_layer, 2, &base).1);
    }

    #[test]
    fn spellings_the_derivation_merges_are_remembered_apart_and_keyed_alike() {
        let layer = ResponseCache::default()
            .ttl(Duration::from_secs(1))
            .vary_headers([header::ACCEPT_LANGUAGE]);
        let (es, _) = memo_key(&layer, 1, &get("/s", &[("accept-language", "es")]));
        for spelling in [
            &[("accept-language", "ES")][..],
            &[("accept-language", " es;q=1")],
            &[("accept-language", "es"), ("accept-language", "es")],
        ] {
            let req = get("/s", spelling);
            let (key, derived) = memo_key(&layer, 1, &req);
            assert!(derived, "raw bytes name a slot: {spelling:?}");
            assert_eq!(key, es, "{spelling:?}");
            assert_eq!(
                memo_key(&layer, 1, &req),
                (es.clone(), false),
                "{spelling:?}"
            );
        }
        let (en, _) = memo_key(&layer, 1, &get("/s", &[("accept-language", "en")]));
        assert_ne!(en, es);
    }

    #[test]
    fn an_empty_value_and_a_missing_header_are_told_apart() {
        let layer = ResponseCache::default()
            .ttl(Duration::from_secs(1))
            .vary_headers([header::ACCEPT, header::ACCEPT_LANGUAGE]);
        let a = get("/s", &[("accept", "")]);
        let b = get("/s", &[("accept-language", "")]);
        let (ka, _) = memo_key(&layer, 1, &a);
        let (kb, derived) = memo_key(&layer, 1, &b);
        assert!(derived);
        assert_ne!(ka, kb);
    }

    #[test]
    fn mounts_of_one_inner_path_are_remembered_apart() {
        use axum::extract::OriginalUri;
        let layer = ResponseCache::default().ttl(Duration::from_secs(1));
        let nested = |original: &str| {
            let mut req = get("/users", &[]);
            let uri = original.parse().unwrap();
            req.extensions_mut().insert(OriginalUri(uri));
            req
        };
        let (v1, _) = memo_key(&layer, 1, &nested("/v1/users"));
        let (v2, derived) = memo_key(&layer, 1, &nested("/v2/users"));
        assert!(derived, "the stripped path is not what names the slot");
        assert_ne!(v1, v2);
        assert_eq!(v2, layer.key_for(&get("/v2/users", &[])));
        // Remembered or derived again (the two may share a slot, by address), still v1's key.
        assert_eq!(memo_key(&layer, 1, &nested("/v1/users")).0, v1);
    }

    #[test]
    fn long_requests_are_derived_every_time() {
        let layer = ResponseCache::default().ttl(Duration::from_secs(1));
        let req = get(&format!("/x?q={}", "a".repeat(super::MAX_RAW)), &[]);
        assert!(memo_key(&layer, 1, &req).1);
        assert!(memo_key(&layer, 1, &req).1);
    }

    mod agree {
        use proptest::prelude::*;

        use super::*;

        /// One generated request: few distinct values, so requests repeat and share slots.
        fn request() -> impl Strategy<Value = Request<()>> {
            let path = prop::sample::select(vec!["/a", "/b", "/A", "/a/b", "/%61"]);
            let query = prop::option::of(prop::sample::select(vec![
                "",
                "x=1",
                "x=2",
                "x=1&y=2",
                "y=2&x=1",
                "utm_source=z",
                "x",
            ]));
            let host = prop::option::of(prop::sample::select(vec!["h", "H", "h:8080", "g", ""]));
            let value = prop::sample::select(vec!["", "es", "ES", "en, es;q=0.5", "*", "a"]);
            let headers = prop::collection::vec(
                (
                    prop::sample::select(vec!["accept", "accept-language", "x-v"]),
                    value,
                ),
                0..4,
            );
            let mount = prop::option::of(prop::sample::select(vec!["/v1", "/v2"]));
            (path, query, host, headers, mount).prop_map(|(path, query, host, headers, mount)| {
                let uri = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                let mut pairs: Vec<(&str, &str)> = headers;
                if let Some(h) = host {
                    pairs.push(("host", h));
                }
                match mount {
                    // Inside a nest: the route sees the stripped URI, the client sent the whole.
                    Some(m) => {
                        let mut req = get(&uri, &pairs);
                        let original = format!("{m}{uri}").parse().unwrap();
                        req.extensions_mut()
                            .insert(axum::extract::OriginalUri(original));
                        req
                    }
                    None => get(&uri, &pairs),
                }
            })
        }

        proptest! {
            #[test]
            fn memoised_and_derived_keys_agree(
                reqs in prop::collection::vec((request(), 0..3usize, 1..3u64), 1..40)
            ) {
                let cache = ResponseCache::default();
                let layers = [
                    cache.ttl(Duration::from_secs(1)),
                    cache
                        .ttl(Duration::from_secs(1))
                        .vary_headers([header::ACCEPT_LANGUAGE, header::ACCEPT]),
                    cache.ttl(Duration::from_secs(1)).vary_query(["x"]),
                ];
                for (req, layer, version) in &reqs {
                    let layer = &layers[*layer];
                    let (memo, _) = memo_key(layer, *version, req);
                    let derived = key_at(&layer.shared, &layer.policy, req, None, *version);
                    prop_assert_eq!(memo, derived, "{:?}", req);
                }
            }
        }
    }
}
