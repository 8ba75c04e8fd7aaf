//! Conditional requests against a stored response: `If-None-Match` and `If-Modified-Since`
//! (RFC 9110 §13), and the strong `ETag` the cache computes when a handler sends none.

use http::header::{self, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

/// A strong validator for a body given as chunks: 32 hex digits of its SHA-256, quoted.
pub(crate) fn strong_etag(chunks: &[bytes::Bytes]) -> [u8; 34] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut sha = Sha256::new();
    for chunk in chunks {
        sha.update(chunk);
    }
    let digest = sha.finalize();
    let mut tag = [b'"'; 34];
    for (i, b) in digest[..16].iter().enumerate() {
        tag[1 + 2 * i] = DIGITS[usize::from(b >> 4)];
        tag[2 + 2 * i] = DIGITS[usize::from(b & 0x0f)];
    }
    tag
}

/// Whether the client's copy is current, so a 304 may answer.
///
/// `etag` and `last_modified` are the stored response's validators. `If-None-Match` takes
/// precedence; it uses the weak comparison and accepts lists and `*`. `If-Modified-Since` is
/// only considered without it. Malformed headers never match.
pub(crate) fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    if !request.contains_key(header::IF_NONE_MATCH)
        && !request.contains_key(header::IF_MODIFIED_SINCE)
    {
        return false;
    }
    let inm: Vec<&HeaderValue> = request.get_all(header::IF_NONE_MATCH).iter().collect();
    if !inm.is_empty() {
        let Some(etag) = etag.and_then(|v| v.to_str().ok()) else {
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
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok());
    let modified = last_modified
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
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

    fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
        super::not_modified(
            request,
            stored.get(header::ETAG),
            stored.get(header::LAST_MODIFIED),
        )
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
}
