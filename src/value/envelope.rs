//! How a value is stored: a format byte, an expiry on the cache's clock, a reserved stamp
//! section, then the serde_json bytes. Counters are stored as plain decimal integers instead.
//!
//! ```text
//! [FORMAT: u8][expires_at_millis: u64 BE][stamp_len: u16 BE][stamp: stamp_len bytes][json]
//! ```
//!
//! The stamp section carries the invalidation stamp (the generations of the names the value
//! can be invalidated by) once values take tags; today it is always empty, and a value with a
//! stamp this build cannot check is a miss. Being length-prefixed, it can be filled without
//! changing the format byte.

use bytes::{BufMut, Bytes, BytesMut};

/// Format version 1. Not an ASCII digit or `-`, so a counter never reads as an envelope.
const FORMAT: u8 = 0xA1;

/// Format byte, expiry and stamp length.
const HEADER: usize = 1 + 8 + 2;

/// A stored value taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    /// When the value stops being served, in the cache clock's milliseconds; `None` for a
    /// counter, which only the store expires.
    pub(crate) expires_at: Option<u64>,
    /// The reserved invalidation stamp; empty until values take tags.
    pub(crate) stamp: &'a [u8],
    /// The value's serde_json bytes.
    pub(crate) json: &'a [u8],
}

/// The stored form of `json`: a plain integer (so `incr` can add to it, and Redis's `INCRBY`
/// reads it) when it is one that fits an `i64`, else an envelope expiring at `expires_at`.
pub(crate) fn encode(json: &[u8], expires_at: u64) -> Bytes {
    if counter(json).is_some() {
        return Bytes::copy_from_slice(json);
    }
    let mut out = BytesMut::with_capacity(HEADER + json.len());
    out.put_u8(FORMAT);
    out.put_u64(expires_at);
    out.put_u16(0); // no stamp yet
    out.put_slice(json);
    out.freeze()
}

/// Takes a stored value apart; `None` when it is neither an envelope of this format nor a
/// counter (corrupt, another program's, a future format): a miss.
pub(crate) fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
    if counter(bytes).is_some() {
        return Some(Decoded {
            expires_at: None,
            stamp: &[],
            json: bytes,
        });
    }
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT || rest.len() < HEADER - 1 {
        return None;
    }
    let (expires_at, rest) = rest.split_at(8);
    let (stamp_len, rest) = rest.split_at(2);
    let stamp_len = usize::from(u16::from_be_bytes(stamp_len.try_into().ok()?));
    if rest.len() < stamp_len {
        return None;
    }
    let (stamp, json) = rest.split_at(stamp_len);
    Some(Decoded {
        expires_at: Some(u64::from_be_bytes(expires_at.try_into().ok()?)),
        stamp,
        json,
    })
}

/// The count, when `bytes` are a decimal `i64` as Redis writes one (optional `-`, digits).
pub(crate) fn counter(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_an_envelope() {
        let stored = encode(br#"{"a":[1,2]}"#, 1234);
        assert_eq!(stored[0], FORMAT);
        let back = decode(&stored).unwrap();
        assert_eq!(back.expires_at, Some(1234));
        assert!(back.stamp.is_empty());
        assert_eq!(back.json, br#"{"a":[1,2]}"#);
    }

    #[test]
    fn integers_are_stored_as_counters() {
        assert_eq!(&encode(b"-42", 1234)[..], b"-42");
        let back = decode(b"-42").unwrap();
        assert_eq!((back.expires_at, back.json), (None, &b"-42"[..]));
        // Too big for INCRBY, or not an integer: enveloped like any value.
        assert_eq!(encode(b"9223372036854775808", 1)[0], FORMAT);
        assert_eq!(encode(b"1.5", 1)[0], FORMAT);
        assert_eq!(encode(b"\"7\"", 1)[0], FORMAT);
        assert_eq!(counter(b"+7"), None);
    }

    #[test]
    fn anything_else_is_a_miss() {
        for junk in [
            &b""[..],
            b"\xA1",
            b"\xA1\0\0\0\0\0\0\0\0\0\x05{}",
            b"garbage",
            b"\x02xx",
        ] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
    }
}
