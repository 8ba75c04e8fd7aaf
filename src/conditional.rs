//! Conditional requests against a stored response: `If-None-Match` and `If-Modified-Since`
//! (RFC 9110 §13), and the strong `ETag` the cache computes when a handler sends none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// A strong validator for a body given as chunks: 32 hex digits of its 128-bit XXH3, quoted.
///
/// A validator only has to change when the body does; nothing trusts it against a forger (a
/// client that sends a matching `If-None-Match` gets a 304 for a body it names, no more), so a
/// fast non-cryptographic hash does: at ~2 KiB it costs a tenth of SHA-256, on every miss.
pub(crate) fn strong_etag(chunks: &[bytes::Bytes]) -> [u8; 34] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = match chunks {
        [one] => xxh3_128(one),
        more => {
            let mut h = Xxh3::new();
            for chunk in more {
                h.update(chunk);
            }
            h.digest128()
        }
    }
    .to_be_bytes();
    let mut tag = [b'"'; 34];
    for (i, b) in digest.iter().enumerate() {
        tag[1 + 2 * i] = DIGITS[usize::from(b >> 4)];
        tag[2 + 2 * i] = DIGITS[usize::from(b & 0x0f)];
    }
    tag
}

/// The validators of a stored (or just stored) response.
pub(crate) struct Validators<'a> {
    pub(crate) etag: Option<&'a HeaderValue>,
    pub(crate) last_modified: Option<&'a HeaderValue>,
    pub(crate) date: Option<&'a HeaderValue>,
    /// When the cache stored it, in milliseconds since the Unix epoch.
    pub(crate) stored_at_millis: u64,
}

impl<'a> Validators<'a> {
    /// The validators among `get`'s headers, for a response stored at `stored_at_millis`.
    pub(crate) fn of(
        get: impl Fn(&HeaderName) -> Option<&'a HeaderValue>,
        stored_at_millis: u64,
    ) -> Self {
        Self {
            etag: get(&header::ETAG),
            last_modified: get(&header::LAST_MODIFIED),
            date: get(&header::DATE),
            stored_at_millis,
        }
    }

    /// The time `If-Modified-Since` is compared with (RFC 9111 §4.3.2): `Last-Modified`, else
    /// the response's `Date`, else when the cache stored it. Any of them is no earlier than
    /// the last change a client could have seen, so a `304` is never sent for a newer copy.
    fn modified(&self) -> SystemTime {
        let parse = |v: Option<&HeaderValue>| {
            v.and_then(|v| v.to_str().ok())
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        parse(self.last_modified)
            .or_else(|| parse(self.date))
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_millis(self.stored_at_millis))
    }
}

/// Whether the client's copy is current, so a 304 may answer.
///
/// `If-None-Match` takes precedence; it uses the weak comparison and accepts lists and `*`.
/// `If-Modified-Since` is only considered without it, and ignored unless it is exactly one
/// valid HTTP-date (RFC 9110 §13.1.3). Malformed headers never match.
pub(crate) fn not_modified(request: &HeaderMap, stored: &Validators<'_>) -> bool {
    if !request.contains_key(header::IF_NONE_MATCH)
        && !request.contains_key(header::IF_MODIFIED_SINCE)
    {
        return false;
    }
    let inm: Vec<&HeaderValue> = request.get_all(header::IF_NONE_MATCH).iter().collect();
    if !inm.is_empty() {
        let Some(etag) = stored.etag.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let ours = opaque(etag);
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || (!tag.is_empty() && opaque(tag) == ours));
    }
    let mut values = request.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(since) = since
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    stored.modified() <= since
}

/// The opaque part of an entity tag, for the weak comparison.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Headers a 304 carries over from the stored 200 (RFC 9110 §15.4.5).
pub(crate) const NOT_MODIFIED_HEADERS: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_computed_etag_depends_on_the_bytes_not_on_how_they_were_chunked() {
        use bytes::Bytes;
        let whole = strong_etag(&[Bytes::from_static(b"hello world")]);
        let split = strong_etag(&[
            Bytes::from_static(b"hel"),
            Bytes::from_static(b"lo wor"),
            Bytes::from_static(b"ld"),
        ]);
        assert_eq!(whole, split);
        assert_ne!(whole, strong_etag(&[Bytes::from_static(b"hello world!")]));
        assert_ne!(whole, strong_etag(&[]));
        // Quoted, 32 lower-case hex digits.
        assert!(whole[0] == b'"' && whole[33] == b'"');
        assert!(whole[1..33]
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    /// Stored at 2015-10-21 07:28:00.500 UTC.
    const STORED_AT: u64 = 1_445_412_480_500;

    fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
        super::not_modified(request, &Validators::of(|n| stored.get(n), STORED_AT))
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_none_match_uses_weak_comparison_lists_and_star() {
        let stored = map(&[("etag", "\"abc\"")]);
        assert!(not_modified(&map(&[("if-none-match", "\"abc\"")]), &stored));
        assert!(not_modified(
            &map(&[("if-none-match", "W/\"abc\"")]),
            &stored
        ));
        assert!(not_modified(
            &map(&[("if-none-match", "\"x\", \"abc\"")]),
            &stored
        ));
        assert!(not_modified(&map(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &map(&[("if-none-match", "\"abcd\"")]),
            &stored
        ));
        assert!(!not_modified(&map(&[("if-none-match", "abc")]), &stored));
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_etags() {
        let stored = map(&[
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("etag", "\"a\""),
        ]);
        assert!(not_modified(
            &map(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &map(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &map(&[("if-modified-since", "yesterday")]),
            &stored
        ));
        let both = map(&[
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("if-none-match", "\"b\""),
        ]);
        assert!(!not_modified(&both, &stored));
    }

    #[test]
    fn if_modified_since_falls_back_to_date_then_to_the_store_time() {
        let at = |t: &'static str| map(&[("if-modified-since", t)]);
        let dated = map(&[("date", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert!(not_modified(&at("Wed, 21 Oct 2015 07:28:00 GMT"), &dated));
        assert!(!not_modified(&at("Wed, 21 Oct 2015 07:27:59 GMT"), &dated));
        // Last-Modified wins over Date.
        let both = map(&[
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("last-modified", "Tue, 20 Oct 2015 07:28:00 GMT"),
        ]);
        assert!(not_modified(&at("Tue, 20 Oct 2015 07:28:00 GMT"), &both));
        // Neither: the store time, to the millisecond (stored half a second into :00).
        let bare = HeaderMap::new();
        assert!(!not_modified(&at("Wed, 21 Oct 2015 07:28:00 GMT"), &bare));
        assert!(not_modified(&at("Wed, 21 Oct 2015 07:28:01 GMT"), &bare));
    }

    #[test]
    fn more_than_one_if_modified_since_is_ignored() {
        let stored = map(&[("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        let two = map(&[
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert!(!not_modified(&two, &stored));
    }
}
