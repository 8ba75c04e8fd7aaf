//! What the cache stores: a response (status, headers, body, when it was stored and for how
//! long) or a learned `Vary` record, and the versioned binary encoding every store shares.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::StoredHeaders;

const MAGIC: &[u8; 3] = b"TRC";
/// 3: a response carries its stale windows and the time its handler took; 2: its invalidation
/// stamp. Entries of an older version are misses.
const VERSION: u8 = 3;
const KIND_RESPONSE: u8 = 0;
const KIND_VARY: u8 = 1;

/// One value in a [`Store`](crate::Store).
///
/// A store need not look inside: an in-process store keeps the `Entry` itself and sizes it by
/// [`weight`](Self::weight); a remote one keeps the bytes of [`encode`](Self::encode) and gives
/// back what [`decode`](Self::decode) makes of them (an error is reported as a corrupt entry,
/// which the layer treats as a miss). The variants are public so a store's tests can check
/// what came back.
///
/// Cloning is cheap: the response is shared behind an `Arc` and its body is [`Bytes`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Entry {
    /// A stored response.
    Response(Arc<CachedResponse>),
    /// The request headers a resource varies on, stored under the primary key; the responses
    /// themselves live under the variant keys.
    Vary(Arc<[HeaderName]>),
}

/// A response as the cache keeps it; opaque.
///
/// The layer makes these; a [`Store`](crate::Store) only keeps them, as an [`Entry`] or as the
/// bytes of [`Entry::encode`]. The constructor and the accessors are there for a store's own
/// tests, to put a known response and check what comes back.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tower_response_cache::{CachedResponse, Entry};
///
/// let response = CachedResponse::new(
///     StatusCode::OK,
///     &HeaderMap::new(),
///     Bytes::from_static(b"hello"),
///     1_000,
///     Duration::from_secs(60),
/// );
/// let decoded = Entry::decode(Entry::from(response.clone()).encode()).unwrap();
/// let Entry::Response(r) = decoded else { panic!() };
/// assert_eq!(*r, response);
/// assert_eq!(r.body(), "hello");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub(crate) status: StatusCode,
    /// Credentials-bearing and hop-by-hop headers already removed.
    pub(crate) headers: StoredHeaders,
    pub(crate) body: Bytes,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub(crate) stored_at_millis: u64,
    /// How long it stays fresh.
    pub(crate) ttl: Duration,
    /// What can invalidate it (see [`generations`](crate::generations)).
    pub(crate) stamp: Stamp,
    /// How long past freshness it may still be served stale (see [`stale`](crate::stale)).
    pub(crate) grace: Grace,
    /// How long the handler took to make it, in milliseconds (saturating).
    pub(crate) compute_millis: u32,
}

/// The windows after freshness ends during which an entry may be served stale (RFC 5861), in
/// whole seconds as `Cache-Control` gives them (kept small: every entry in memory has one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Grace {
    /// Served at once while one background refresh replaces it.
    pub(crate) stale_while_revalidate: u32,
    /// Served in place of a handler's error.
    pub(crate) stale_if_error: u32,
}

impl Grace {
    /// The longer window: how long past freshness the entry must stay in the store.
    pub(crate) fn longest(self) -> Duration {
        Duration::from_secs(self.stale_while_revalidate.max(self.stale_if_error).into())
    }
}

/// A window in whole seconds (saturating).
pub(crate) fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// What a found entry is good for at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Past freshness: `revalidate` inside its stale-while-revalidate window, `if_error` inside
    /// its stale-if-error window.
    Stale {
        revalidate: bool,
        if_error: bool,
    },
    Expired,
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .field("stored_at_millis", &self.stored_at_millis)
            .field("ttl", &self.ttl)
            .field("stamp", &self.stamp)
            .field("grace", &self.grace)
            .field("compute_millis", &self.compute_millis)
            .finish()
    }
}

impl CachedResponse {
    /// A response with these parts, stored at `stored_at_millis` (milliseconds since the Unix
    /// epoch) and fresh for `ttl`. The headers are kept as given: the layer removes credentials
    /// and hop-by-hop headers before it makes one. It carries no invalidation names (the
    /// layer's own entries carry theirs), so no invalidation applies to it.
    #[must_use]
    pub fn new(
        status: StatusCode,
        headers: &http::HeaderMap,
        body: Bytes,
        stored_at_millis: u64,
        ttl: Duration,
    ) -> Self {
        Self {
            status,
            headers: headers.into(),
            body,
            stored_at_millis,
            ttl,
            stamp: Stamp::default(),
            grace: Grace::default(),
            compute_millis: 0,
        }
    }

    /// The response status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The whole body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When it was stored, in milliseconds since the Unix epoch.
    #[must_use]
    pub fn stored_at_millis(&self) -> u64 {
        self.stored_at_millis
    }

    /// How long it stays fresh from [`stored_at_millis`](Self::stored_at_millis).
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Milliseconds since it was stored, at `now_millis`.
    #[must_use]
    pub(crate) fn age_millis(&self, now_millis: u64) -> u64 {
        now_millis.saturating_sub(self.stored_at_millis)
    }

    /// Whether it is still fresh at `now_millis`.
    #[must_use]
    pub(crate) fn is_fresh(&self, now_millis: u64) -> bool {
        u128::from(self.age_millis(now_millis)) < self.ttl.as_millis()
    }

    /// What it is good for at `now_millis`: fresh, stale inside a window, or expired. Each
    /// window ends strictly: at `ttl + window` it is over.
    #[must_use]
    pub(crate) fn freshness(&self, now_millis: u64) -> Freshness {
        let age = u128::from(self.age_millis(now_millis));
        let ttl = self.ttl.as_millis();
        if age < ttl {
            return Freshness::Fresh;
        }
        let window = |secs: u32| ttl + u128::from(secs) * 1000;
        let revalidate = age < window(self.grace.stale_while_revalidate);
        let if_error = age < window(self.grace.stale_if_error);
        if revalidate || if_error {
            Freshness::Stale {
                revalidate,
                if_error,
            }
        } else {
            Freshness::Expired
        }
    }

    /// How long the store must keep it: its freshness and its longest stale window.
    #[must_use]
    pub(crate) fn keep_for(&self) -> Duration {
        self.ttl.saturating_add(self.grace.longest())
    }

    /// Roughly how many bytes its body and headers hold. The memory store weighs more: what
    /// the allocator and its own bookkeeping take per entry too.
    #[must_use]
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 16)
            .sum();
        self.body.len() + headers + self.stamp.weight() + 96
    }
}

impl From<CachedResponse> for Entry {
    fn from(r: CachedResponse) -> Self {
        Entry::Response(Arc::new(r))
    }
}

/// What an entry can be invalidated by (see [`generations`](crate::generations)): each name with its generation when the entry's miss
/// started, and the store's sequence at that moment.
#[derive(Default)]
pub(crate) struct Stamp {
    pub(crate) seq: u64,
    pub(crate) names: Vec<(Arc<str>, u64)>,
    /// The latest sequence at which the names were found unchanged: a stored entry that passed
    /// the per-name check once is back on the fast path until the next invalidation.
    checked: AtomicU64,
}

impl Stamp {
    pub(crate) fn new(seq: u64, names: Vec<(Arc<str>, u64)>) -> Self {
        Self {
            seq,
            names,
            checked: AtomicU64::new(seq),
        }
    }

    /// Whether it was checked at `seq` already (or made then).
    pub(crate) fn holds_at(&self, seq: u64) -> bool {
        self.checked.load(Ordering::Relaxed) == seq
    }

    /// What its names keep allocated, by the allocator's count `allocated(bytes)`: the list,
    /// and each name's `Arc` (two counters and the text), counted as if none were shared.
    pub(crate) fn allocated(&self, allocated: impl Fn(usize) -> usize) -> usize {
        if self.names.is_empty() {
            return 0;
        }
        allocated(self.names.len() * std::mem::size_of::<(Arc<str>, u64)>())
            + self
                .names
                .iter()
                .map(|(n, _)| allocated(16 + n.len()))
                .sum::<usize>()
    }

    /// Found unchanged at `seq`: it holds there without another look at its names.
    pub(crate) fn mark_checked(&self, seq: u64) {
        self.checked.store(seq, Ordering::Relaxed);
    }

    pub(crate) fn weight(&self) -> usize {
        self.names.iter().map(|(n, _)| n.len() + 24).sum::<usize>() + 16
    }
}

impl Clone for Stamp {
    fn clone(&self) -> Self {
        Self {
            seq: self.seq,
            names: self.names.clone(),
            checked: AtomicU64::new(self.checked.load(Ordering::Relaxed)),
        }
    }
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.names == other.names
    }
}

impl Eq for Stamp {}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stamp")
            .field("seq", &self.seq)
            .field("names", &self.names)
            .finish()
    }
}

/// Why bytes could not be decoded into an [`Entry`]; the cache treats it as a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeError {
    reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode cache entry: {}", self.reason)
    }
}

impl std::error::Error for DecodeError {}

fn bad(reason: &'static str) -> DecodeError {
    DecodeError { reason }
}

impl Entry {
    /// Roughly how many bytes this entry occupies.
    #[must_use]
    pub fn weight(&self) -> usize {
        match self {
            Entry::Response(r) => r.weight(),
            Entry::Vary(names) => names.iter().map(|n| n.as_str().len() + 8).sum::<usize>() + 32,
        }
    }

    /// The versioned binary form: `TRC`, a version byte, a kind byte, then the fields.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight() + 16);
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        match self {
            Entry::Response(r) => {
                out.put_u8(KIND_RESPONSE);
                out.put_u64(r.stored_at_millis);
                out.put_u64(u64::try_from(r.ttl.as_millis()).unwrap_or(u64::MAX));
                out.put_u64(r.stamp.seq);
                out.put_u32(u32::try_from(r.stamp.names.len()).unwrap_or(u32::MAX));
                for (name, gen) in &r.stamp.names {
                    put_chunk(&mut out, name.as_bytes());
                    out.put_u64(*gen);
                }
                out.put_u16(r.status.as_u16());
                out.put_u32(u32::try_from(r.headers.len()).unwrap_or(u32::MAX));
                for (name, value) in r.headers.iter() {
                    put_chunk(&mut out, name.as_str().as_bytes());
                    put_chunk(&mut out, value.as_bytes());
                }
                put_chunk(&mut out, &r.body);
                out.put_u32(r.grace.stale_while_revalidate);
                out.put_u32(r.grace.stale_if_error);
                out.put_u32(r.compute_millis);
            }
            Entry::Vary(names) => {
                out.put_u8(KIND_VARY);
                out.put_u32(u32::try_from(names.len()).unwrap_or(u32::MAX));
                for name in names.iter() {
                    put_chunk(&mut out, name.as_str().as_bytes());
                }
            }
        }
        out.freeze()
    }

    /// Decodes [`Entry::encode`]'s output. The body is a slice of `bytes`, not a copy.
    ///
    /// # Errors
    /// Bytes that are truncated, from another program, or from an unknown encoding version.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut buf = bytes;
        if buf.len() < 5 || &buf[..3] != MAGIC {
            return Err(bad("not a tower-response-cache entry"));
        }
        if buf[3] != VERSION {
            return Err(bad("unknown encoding version"));
        }
        let kind = buf[4];
        buf.advance(5);
        let entry = match kind {
            KIND_RESPONSE => {
                need(&buf, 8 + 8)?;
                let stored_at_millis = buf.get_u64();
                let ttl = Duration::from_millis(buf.get_u64());
                let stamp = take_stamp(&mut buf)?;
                need(&buf, 2 + 4)?;
                let status = StatusCode::from_u16(buf.get_u16()).map_err(|_| bad("status"))?;
                let count = buf.get_u32() as usize;
                let mut headers = Vec::with_capacity(count.min(128));
                for _ in 0..count {
                    let name = take_chunk(&mut buf)?;
                    let value = take_chunk(&mut buf)?;
                    let name = HeaderName::from_bytes(&name).map_err(|_| bad("header name"))?;
                    let value =
                        HeaderValue::from_maybe_shared(value).map_err(|_| bad("header value"))?;
                    headers.push((name, value));
                }
                let headers: StoredHeaders = headers.into_iter().collect();
                let body = take_chunk(&mut buf)?;
                need(&buf, 4 * 3)?;
                let grace = Grace {
                    stale_while_revalidate: buf.get_u32(),
                    stale_if_error: buf.get_u32(),
                };
                let compute_millis = buf.get_u32();
                // The stored length frames the body on the wire: it must be the body's.
                if let Some(len) = headers.get(&http::header::CONTENT_LENGTH) {
                    if len.as_bytes() != body.len().to_string().as_bytes() {
                        return Err(bad("content-length does not match the body"));
                    }
                }
                Entry::from(CachedResponse {
                    status,
                    headers,
                    body,
                    stored_at_millis,
                    ttl,
                    stamp,
                    grace,
                    compute_millis,
                })
            }
            KIND_VARY => {
                need(&buf, 4)?;
                let count = buf.get_u32() as usize;
                let mut names = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    let name = take_chunk(&mut buf)?;
                    names.push(HeaderName::from_bytes(&name).map_err(|_| bad("vary name"))?);
                }
                Entry::Vary(names.into())
            }
            _ => return Err(bad("unknown entry kind")),
        };
        if buf.has_remaining() {
            return Err(bad("trailing bytes"));
        }
        Ok(entry)
    }
}

fn put_chunk(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(bad("truncated"))
    } else {
        Ok(())
    }
}

/// The stamp: its sequence, then each name (a chunk) with its generation.
fn take_stamp(buf: &mut Bytes) -> Result<Stamp, DecodeError> {
    need(buf, 8 + 4)?;
    let seq = buf.get_u64();
    let count = buf.get_u32() as usize;
    let mut names = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take_chunk(buf)?;
        let name = std::str::from_utf8(&name).map_err(|_| bad("stamp name"))?;
        need(buf, 8)?;
        names.push((Arc::from(name), buf.get_u64()));
    }
    Ok(Stamp::new(seq, names))
}

fn take_chunk(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    need(buf, 4)?;
    let len = buf.get_u32() as usize;
    need(buf, len)?;
    Ok(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedResponse {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-many", "1".parse().unwrap());
        headers.append("x-many", "2".parse().unwrap());
        CachedResponse {
            status: StatusCode::NOT_FOUND,
            headers: headers.into(),
            body: Bytes::from_static(b"{\"a\":1}"),
            stored_at_millis: 123_456,
            ttl: Duration::from_millis(60_500),
            stamp: Stamp::new(7, vec![(Arc::from("*"), 2), (Arc::from("tag:a"), 0)]),
            grace: Grace {
                stale_while_revalidate: 30,
                stale_if_error: 600,
            },
            compute_millis: 42,
        }
    }

    #[test]
    fn response_round_trips() {
        let bytes = Entry::from(sample()).encode();
        let Entry::Response(r) = Entry::decode(bytes).unwrap() else {
            panic!("kind changed")
        };
        assert_eq!(*r, sample());
    }

    #[test]
    fn vary_round_trips() {
        let names: Arc<[HeaderName]> = vec![HeaderName::from_static("accept-language")].into();
        let Entry::Vary(back) = Entry::decode(Entry::Vary(names.clone()).encode()).unwrap() else {
            panic!("kind changed")
        };
        assert_eq!(back, names);
    }

    #[test]
    fn every_truncation_and_foreign_value_is_an_error() {
        let bytes = Entry::from(sample()).encode();
        for len in 0..bytes.len() {
            assert!(
                Entry::decode(bytes.slice(..len)).is_err(),
                "prefix of {len}"
            );
        }
        assert!(Entry::decode(Bytes::from_static(b"hello world")).is_err());
        let mut future = bytes.to_vec();
        future[3] = 99;
        assert!(Entry::decode(future.into()).is_err());
        // An entry written before stamps existed is a miss, never served unchecked; one written
        // before stale windows existed is a miss too (its layout differs).
        for version in [1, 2] {
            let mut old = bytes.to_vec();
            old[3] = version;
            assert!(Entry::decode(old.into()).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Entry::decode(longer.into()).is_err());
    }

    #[test]
    fn a_content_length_that_disagrees_with_the_body_is_corrupt() {
        let mut r = sample();
        let with_length = |len: &'static str| {
            let mut map = sample().headers.to_header_map();
            map.insert("content-length", HeaderValue::from_static(len));
            StoredHeaders::from(map)
        };
        r.headers = with_length("7");
        assert!(Entry::decode(Entry::from(r.clone()).encode()).is_ok());
        r.headers = with_length("8");
        assert!(Entry::decode(Entry::from(r).encode()).is_err());
    }

    #[test]
    fn stale_windows_end_strictly() {
        let r = sample();
        let stale = |revalidate, if_error| Freshness::Stale {
            revalidate,
            if_error,
        };
        assert_eq!(r.freshness(123_456 + 60_499), Freshness::Fresh);
        assert_eq!(r.freshness(123_456 + 60_500), stale(true, true));
        assert_eq!(r.freshness(123_456 + 90_499), stale(true, true));
        assert_eq!(r.freshness(123_456 + 90_500), stale(false, true));
        assert_eq!(r.freshness(123_456 + 660_499), stale(false, true));
        assert_eq!(r.freshness(123_456 + 660_500), Freshness::Expired);
        assert_eq!(r.keep_for(), Duration::from_millis(660_500));
    }

    #[test]
    fn freshness_follows_ttl() {
        let r = sample();
        assert!(r.is_fresh(123_456 + 60_499));
        assert!(!r.is_fresh(123_456 + 60_500));
        assert_eq!(r.age_millis(100), 0);
    }
}
