//! How a value is stored: a format byte, an expiry on the cache's clock, its invalidation
//! stamp, then the serde_json bytes. Counters are stored as plain decimal integers instead.
//!
//! ```text
//! [FORMAT: u8][expires_at_millis: u64 BE][stamp_len: u16 BE][stamp: stamp_len bytes][json]
//! stamp = [seq: u64 BE][count: u16 BE] count × ([name_len: u16 BE][name][generation: u64 BE])
//! ```
//!
//! The stamp is the store's invalidation sequence and the generation of each name the value
//! can be invalidated by (`*` and its tags), as they were before the value was computed (see
//! [`generations`](crate::generations)). A stamp that does not parse, or none at all (a value
//! written before values were stamped), makes the value a miss: it could not be checked.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::entry::Stamp;

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
    /// The encoded invalidation stamp ([`stamp_seq`], [`parse_stamp`]); empty for a counter,
    /// which takes no part in invalidation.
    pub(crate) stamp: &'a [u8],
    /// The value's serde_json bytes.
    pub(crate) json: &'a [u8],
}

/// The stored form of a counter: `json` itself, when it is an integer that fits an `i64` (so
/// `incr` can add to it, and Redis's `INCRBY` reads it).
pub(crate) fn counter_form(json: &[u8]) -> Option<Bytes> {
    counter(json).map(|_| Bytes::copy_from_slice(json))
}

/// The envelope of `json`, expiring at `expires_at` and invalidated by `stamp`; `None` when
/// the stamp does not fit its section (names longer than 64 KiB in all).
pub(crate) fn encode(json: &[u8], expires_at: u64, stamp: &Stamp) -> Option<Bytes> {
    let stamp_len = 8
        + 2
        + stamp
            .names
            .iter()
            .map(|(name, _)| 2 + name.len() + 8)
            .sum::<usize>();
    let mut out = BytesMut::with_capacity(HEADER + stamp_len + json.len());
    out.put_u8(FORMAT);
    out.put_u64(expires_at);
    out.put_u16(u16::try_from(stamp_len).ok()?);
    out.put_u64(stamp.seq);
    out.put_u16(u16::try_from(stamp.names.len()).ok()?);
    for (name, gen) in &stamp.names {
        out.put_u16(u16::try_from(name.len()).ok()?);
        out.put_slice(name.as_bytes());
        out.put_u64(*gen);
    }
    out.put_slice(json);
    Some(out.freeze())
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

/// The sequence an encoded stamp was taken at, read without parsing its names (the fast
/// path of a check); `None` when there is no stamp.
pub(crate) fn stamp_seq(stamp: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(stamp.get(..8)?.try_into().ok()?))
}

/// The whole stamp; `None` when it does not parse to the last byte.
pub(crate) fn parse_stamp(stamp: &[u8]) -> Option<Stamp> {
    let seq = stamp_seq(stamp)?;
    let (count, mut rest) = take_u16(stamp.get(8..)?)?;
    let mut names = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let (len, after) = take_u16(rest)?;
        let len = usize::from(len);
        let name = std::str::from_utf8(after.get(..len)?).ok()?;
        let gen = u64::from_be_bytes(after.get(len..len + 8)?.try_into().ok()?);
        names.push((Arc::from(name), gen));
        rest = &after[len + 8..];
    }
    rest.is_empty().then(|| Stamp::new(seq, names))
}

fn take_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let n = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    Some((n, &bytes[2..]))
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

    fn stamp() -> Stamp {
        Stamp::new(
            7,
            vec![(Arc::from("*"), 2), (Arc::from("tag:platform:twitter"), 0)],
        )
    }

    #[test]
    fn values_round_trip_in_an_envelope_with_their_stamp() {
        let stored = encode(br#"{"a":[1,2]}"#, 1234, &stamp()).unwrap();
        assert_eq!(stored[0], FORMAT);
        let back = decode(&stored).unwrap();
        assert_eq!(back.expires_at, Some(1234));
        assert_eq!(back.json, br#"{"a":[1,2]}"#);
        assert_eq!(stamp_seq(back.stamp), Some(7));
        assert_eq!(parse_stamp(back.stamp), Some(stamp()));
        // Any integer can be enveloped too (a tagged one is): it is then no counter.
        let tagged = encode(b"42", 1, &stamp()).unwrap();
        assert_eq!(decode(&tagged).unwrap().json, b"42");
        assert_eq!(counter(&tagged), None);
    }

    #[test]
    fn integers_have_a_counter_form() {
        assert_eq!(counter_form(b"-42").as_deref(), Some(&b"-42"[..]));
        let back = decode(b"-42").unwrap();
        assert_eq!((back.expires_at, back.json), (None, &b"-42"[..]));
        assert!(back.stamp.is_empty());
        // Too big for INCRBY, or not an integer: no counter form.
        for json in [&b"9223372036854775808"[..], b"1.5", b"\"7\"", b"+7"] {
            assert_eq!(counter_form(json), None, "{json:?}");
        }
    }

    #[test]
    fn a_stamp_that_does_not_fit_is_refused() {
        let long: Arc<str> = Arc::from("t".repeat(70_000));
        assert_eq!(encode(b"1", 1, &Stamp::new(0, vec![(long, 0)])), None);
    }

    #[test]
    fn every_truncated_or_padded_stamp_is_refused() {
        let stored = encode(b"{}", 1, &stamp()).unwrap();
        let full = decode(&stored).unwrap().stamp.to_vec();
        for len in 0..full.len() {
            assert_eq!(parse_stamp(&full[..len]), None, "prefix of {len}");
        }
        let mut longer = full.clone();
        longer.push(0);
        assert_eq!(parse_stamp(&longer), None);
        let mut bad_utf8 = full;
        bad_utf8[12] = 0xFF; // the first byte of the first name
        assert_eq!(parse_stamp(&bad_utf8), None);
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
