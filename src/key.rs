//! Cache keys: which parts of a request name a stored response, canonicalised, length-delimited
//! and hashed so that two different requests never share a key and keys stay short.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Request, Uri};
use sha2::{Digest, Sha256};

use crate::negotiation::{is_negotiation, Members};

/// The key of one stored entry.
///
/// A key has a *primary* part, derived from the request line and the configured vary headers,
/// and optionally a *variant* part, derived from the request headers the response named in its
/// own `Vary`. Printed, it reads `prefix:{primary-hex}` or `prefix:{primary-hex}:variant-hex`;
/// the braces are a Redis Cluster hash tag, so an entry and its variants live in one slot.
///
/// ```
/// use tower_response_cache::CacheKey;
/// let key = CacheKey::from_parts("app", &[b"user", b"42"]);
/// assert!(key.to_string().starts_with("app:{"));
/// assert_ne!(key, CacheKey::from_parts("app", &[b"user4", b"2"]));
/// ```
#[derive(Clone)]
pub struct CacheKey {
    prefix: Arc<str>,
    primary: [u8; 32],
    variant: Option<[u8; 32]>,
    /// The `url:` name of every host's entries of this URL, when the key was made by
    /// [`CacheLayer::key_for`](crate::CacheLayer::key_for) from a request naming no host: what
    /// [`ResponseCache::invalidate`](crate::ResponseCache::invalidate) then also bumps. Not part
    /// of the key's identity (equality, hash, display).
    url: Option<Arc<str>>,
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.primary == other.primary
            && self.variant == other.variant
            && self.prefix == other.prefix
    }
}

impl Eq for CacheKey {}

impl CacheKey {
    /// A key from arbitrary components, each length-delimited before hashing.
    #[must_use]
    pub fn from_parts(prefix: &str, parts: &[&[u8]]) -> Self {
        let mut h = KeyHasher::new(b"trc:custom:v1");
        h.part(prefix.as_bytes());
        for p in parts {
            h.part(p);
        }
        Self {
            prefix: Arc::from(prefix),
            primary: h.finish(),
            variant: None,
            url: None,
        }
    }

    /// The key prefix this key was made with.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The primary hash.
    #[must_use]
    pub fn primary(&self) -> &[u8; 32] {
        &self.primary
    }

    /// The variant hash, when this key names one `Vary` variant of a primary key.
    #[must_use]
    pub fn variant(&self) -> Option<&[u8; 32]> {
        self.variant.as_ref()
    }

    /// What tells this key from every other: its variant hash if it has one, else its primary
    /// hash. Each hash commits to everything that makes the key (the prefix included) under its
    /// own domain, so two keys share an id only if they are equal.
    pub(crate) fn id(&self) -> [u8; 32] {
        self.variant.unwrap_or(self.primary)
    }

    /// The key without its variant part.
    #[must_use]
    pub fn without_variant(&self) -> Self {
        Self {
            variant: None,
            ..self.clone()
        }
    }

    /// The variant of this key selected by `names` (lower-case header names, sorted) in `headers`.
    pub(crate) fn with_variant(&self, names: &[HeaderName], headers: &HeaderMap) -> Self {
        let mut h = KeyHasher::new(b"trc:variant:v1");
        h.part(&self.primary);
        for name in names {
            h.header(name, headers);
        }
        Self {
            prefix: self.prefix.clone(),
            primary: self.primary,
            variant: Some(h.finish()),
            url: None,
        }
    }

    /// This key, also naming every host's entries of its URL by their `url:` name.
    pub(crate) fn for_every_host(self, url: Arc<str>) -> Self {
        Self {
            url: Some(url),
            ..self
        }
    }

    /// The `url:` name of every host's entries this key names too, if any.
    pub(crate) fn every_host(&self) -> Option<&Arc<str>> {
        self.url.as_ref()
    }
}

impl std::hash::Hash for CacheKey {
    /// The hashes are already uniform: eight bytes of each are plenty for a hash table, and
    /// cheaper to feed its hasher than the whole key. Equality still compares everything.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let word =
            |b: &[u8; 32]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        state.write_u64(word(&self.primary));
        if let Some(v) = &self.variant {
            state.write_u64(word(v));
        }
    }
}

impl fmt::Display for CacheKey {
    /// `prefix:{hex}` or `prefix:{hex}:hex`, written in one go: Redis stores print this on
    /// every call.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 2 + 64 + 2 + 64];
        out[0] = b':';
        out[1] = b'{';
        hex(&self.primary, &mut out[2..66]);
        out[66] = b'}';
        let mut len = 67;
        if let Some(v) = &self.variant {
            out[67] = b':';
            hex(v, &mut out[68..132]);
            len = 132;
        }
        f.write_str(&self.prefix)?;
        f.write_str(std::str::from_utf8(&out[..len]).map_err(|_| fmt::Error)?)
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Which query parameters make up the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryKey {
    /// All parameters except tracking ones (unless `keep_tracking`).
    All { keep_tracking: bool },
    /// Only these names.
    Only(Vec<String>),
}

/// Parameters that identify a visitor's campaign, not the resource; they would split the cache.
fn is_tracking(name: &str) -> bool {
    name.starts_with("utm_")
        || matches!(
            name,
            "gclid"
                | "fbclid"
                | "msclkid"
                | "dclid"
                | "gbraid"
                | "wbraid"
                | "yclid"
                | "mc_cid"
                | "mc_eid"
                | "_ga"
                | "_gl"
                | "igshid"
                | "twclid"
                | "ttclid"
                | "li_fat_id"
        )
}

/// One decoded query pair: borrowed from the query string unless decoding changed it.
pub(crate) type QueryPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The canonical form of a query string: decoded pairs, filtered, sorted by name then value.
/// Pairs that need no decoding borrow from `query`: a plain query costs one allocation.
pub(crate) fn canonical_query<'a>(query: Option<&'a str>, rule: &QueryKey) -> Vec<QueryPair<'a>> {
    let Some(q) = query else { return Vec::new() };
    let mut pairs: Vec<QueryPair<'a>> = form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| match rule {
            QueryKey::All { keep_tracking } => *keep_tracking || !is_tracking(k),
            QueryKey::Only(names) => names.iter().any(|n| n == k),
        })
        .collect();
    pairs.sort_unstable();
    pairs
}

/// The URI a request's key is made from: the one the client sent (axum's `OriginalUri` when a
/// nested router stripped the mount prefix).
pub(crate) use crate::route::client_uri;

/// The parts of one request its primary key is made from, read here and nowhere else:
/// [`primary_key`] destructures it without `..`, so a new key input is a new field here.
#[derive(Clone, Copy)]
pub(crate) struct RequestParts<'a> {
    /// The URI the client sent ([`client_uri`]): scheme, authority, path and query.
    pub(crate) uri: &'a Uri,
    /// The request's headers: `Host` (when the URI has no authority) and the vary headers.
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> RequestParts<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            uri: client_uri(req),
            headers: req.headers(),
        }
    }
}

/// Everything a primary key is derived from.
pub(crate) struct KeyInput<'a> {
    pub(crate) prefix: &'a Arc<str>,
    pub(crate) version: u64,
    pub(crate) request: RequestParts<'a>,
    pub(crate) query: &'a QueryKey,
    pub(crate) vary_headers: &'a [HeaderName],
    pub(crate) identity: Option<&'a str>,
}

/// Derives the primary key of a GET/HEAD request (both share one key).
pub(crate) fn primary_key(input: &KeyInput<'_>) -> CacheKey {
    let RequestParts { uri, headers } = input.request;
    let mut h = KeyHasher::new(b"trc:request:v1");
    h.part(input.prefix.as_bytes());
    h.write(&input.version.to_be_bytes());
    h.part(Method::GET.as_str().as_bytes());
    h.part(uri.scheme_str().unwrap_or("http").as_bytes());
    let host = uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| headers.get(http::header::HOST).map(|v| v.as_bytes()))
        .unwrap_or_default();
    h.part_lowercase(host_name(host));
    h.part(uri.path().as_bytes());
    let query = canonical_query(uri.query(), input.query);
    h.count(query.len());
    for (k, v) in &query {
        h.part(k.as_bytes());
        h.part(v.as_bytes());
    }
    h.count(input.vary_headers.len());
    for name in input.vary_headers {
        h.header(name, headers);
    }
    match input.identity {
        // The identity is hashed with the rest: it never appears in the key in clear.
        Some(id) => {
            h.part(b"user");
            h.part(id.as_bytes());
        }
        None => h.part(b"shared"),
    }
    CacheKey {
        prefix: input.prefix.clone(),
        primary: h.finish(),
        variant: None,
        url: None,
    }
}

/// The hashed form of a per-user identity that `user:` invalidation names carry: the identity
/// itself never leaves the process. 128 bits of SHA-256, in hex.
pub(crate) fn user_hash(prefix: &str, identity: &str) -> String {
    let mut h = KeyHasher::new(b"trc:user:v1");
    h.part(prefix.as_bytes());
    h.part(identity.as_bytes());
    let digest = h.finish();
    let mut out = [0u8; 32];
    hex(&digest[..16], &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The host without its port (and without userinfo): a fleet of processes listening on
/// different ports behind one name serves the same site and shares one set of entries.
fn host_name(authority: &[u8]) -> &[u8] {
    let host = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if host.first() == Some(&b'[') {
        // An IPv6 literal: keep through the closing bracket.
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// SHA-256 over length-delimited parts: `a|bc` and `ab|c` hash differently.
///
/// Parts are gathered in a stack buffer and hashed in one go: feeding SHA-256 many small
/// slices costs more than the hashing itself, and this runs on every request.
struct KeyHasher {
    sha: Sha256,
    buf: [u8; 512],
    len: usize,
}

impl KeyHasher {
    fn new(domain: &[u8]) -> Self {
        let mut h = Self {
            sha: Sha256::new(),
            buf: [0; 512],
            len: 0,
        };
        h.part(domain);
        h
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.sha.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > self.buf.len() {
                self.sha.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// A length or count: four bytes (no URL, header or query comes near 4 GiB).
    #[inline]
    fn count(&mut self, n: usize) {
        self.write(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }

    #[inline]
    fn part(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.write(bytes);
    }

    /// Like [`part`](Self::part), ASCII-lower-cased on the way in (no allocation).
    fn part_lowercase(&mut self, bytes: &[u8]) {
        if !bytes.iter().any(u8::is_ascii_uppercase) {
            return self.part(bytes);
        }
        self.count(bytes.len());
        for chunk in bytes.chunks(64) {
            let mut lower = [0u8; 64];
            for (dst, src) in lower.iter_mut().zip(chunk) {
                *dst = src.to_ascii_lowercase();
            }
            self.write(&lower[..chunk.len()]);
        }
    }

    /// A header's name, whether it is present, and each of its values in order; a negotiation
    /// header's canonical members ([`negotiation`](crate::negotiation)) when it has them.
    fn header(&mut self, name: &HeaderName, headers: &HeaderMap) {
        self.part(name.as_str().as_bytes());
        let values = headers.get_all(name);
        if is_negotiation(name) {
            // The form is tagged, so a canonical list never hashes like values keyed as sent.
            let mut members = Members::new();
            if values.iter().next().is_some() && members.read(headers.get_all(name)) {
                self.write(b"c");
                self.count(members.len());
                for member in members.iter() {
                    self.part(member);
                }
                return;
            }
            self.write(b"r");
        }
        self.count(values.iter().count());
        for v in values {
            self.part(v.as_bytes());
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.sha.update(&self.buf[..self.len]);
        self.sha.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str, headers: &HeaderMap, query: &QueryKey, vary: &[HeaderName]) -> CacheKey {
        let prefix: Arc<str> = Arc::from("p");
        let uri: Uri = uri.parse().unwrap();
        primary_key(&KeyInput {
            prefix: &prefix,
            version: 1,
            request: RequestParts { uri: &uri, headers },
            query,
            vary_headers: vary,
            identity: None,
        })
    }

    const ALL: QueryKey = QueryKey::All {
        keep_tracking: false,
    };

    #[test]
    fn query_order_and_tracking_do_not_matter() {
        let h = HeaderMap::new();
        let a = key("/x?b=2&a=1&utm_source=t&fbclid=9", &h, &ALL, &[]);
        let b = key("/x?a=1&b=2", &h, &ALL, &[]);
        assert_eq!(a, b);
        assert_ne!(a, key("/x?a=1&b=3", &h, &ALL, &[]));
        assert_ne!(
            a,
            key("/X?a=1&b=2", &h, &ALL, &[]),
            "paths are case-sensitive"
        );
    }

    #[test]
    fn allow_list_keeps_only_named_parameters() {
        let h = HeaderMap::new();
        let only = QueryKey::Only(vec!["limit".into()]);
        assert_eq!(
            key("/i?limit=5&page=2", &h, &only, &[]),
            key("/i?page=9&limit=5", &h, &only, &[])
        );
        assert_ne!(
            key("/i?limit=5", &h, &only, &[]),
            key("/i?limit=6", &h, &only, &[])
        );
    }

    #[test]
    fn delimiting_prevents_collisions() {
        let h = HeaderMap::new();
        assert_ne!(key("/x?a=bc", &h, &ALL, &[]), key("/x?ab=c", &h, &ALL, &[]));
        assert_ne!(
            key("/x?a=1&b=", &h, &ALL, &[]),
            key("/x?a=1%26b%3D", &h, &ALL, &[])
        );
        assert_ne!(
            key("/x", &h, &ALL, &[]),
            key("/x?", &h, &ALL, &[]).with_variant(&[], &h)
        );
    }

    #[test]
    fn header_presence_and_value_vary_the_key() {
        let name = HeaderName::from_static("accept-language");
        let mut en = HeaderMap::new();
        en.insert(&name, "en".parse().unwrap());
        let mut empty = HeaderMap::new();
        empty.insert(&name, "".parse().unwrap());
        let none = HeaderMap::new();
        let vary = [name];
        let k = |h: &HeaderMap| key("/s", h, &ALL, &vary);
        assert_ne!(k(&en), k(&none));
        assert_ne!(k(&empty), k(&none));
        assert_eq!(k(&en), key("/s", &en, &ALL, &vary));
    }

    #[test]
    fn negotiation_values_are_keyed_by_their_canonical_form() {
        let headers = |pairs: &[(&HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(*n, v.parse().unwrap());
            }
            m
        };
        let (lang, enc) = (
            &http::header::ACCEPT_LANGUAGE,
            &http::header::ACCEPT_ENCODING,
        );
        let names = [enc.clone(), lang.clone()];
        let base = key("/s", &HeaderMap::new(), &ALL, &[]);
        // Configured (`vary_headers`) and learned (the response's `Vary`) alike.
        let configured = |h: &HeaderMap| key("/s", h, &ALL, &names);
        let learned = |h: &HeaderMap| base.with_variant(&names, h);
        for k in [&configured as &dyn Fn(&HeaderMap) -> CacheKey, &learned] {
            let es = k(&headers(&[(lang, "es"), (enc, "gzip")]));
            assert_eq!(k(&headers(&[(lang, "ES;q=1"), (enc, " GZIP, gzip")])), es);
            assert_eq!(
                k(&headers(&[(lang, "es"), (lang, "es"), (enc, "gzip")])),
                es
            );
            for other in [
                headers(&[(lang, "en"), (enc, "gzip")]),
                headers(&[(lang, "es"), (enc, "br")]),
                headers(&[(lang, "es;q=0"), (enc, "gzip")]),
                headers(&[(lang, "es"), (enc, "gzip, identity;q=0")]),
                headers(&[(lang, "es"), (enc, "")]),
                headers(&[(lang, "es")]),
                headers(&[(lang, "es, en"), (enc, "gzip")]),
                headers(&[(lang, "en, es"), (enc, "gzip")]),
            ] {
                assert_ne!(k(&other), es, "{other:?}");
            }
        }
        // Other headers are keyed as sent.
        let tenant = [HeaderName::from_static("x-tenant")];
        let t = HeaderName::from_static("x-tenant");
        assert_ne!(
            key("/s", &headers(&[(&t, "A")]), &ALL, &tenant),
            key("/s", &headers(&[(&t, "a")]), &ALL, &tenant)
        );
    }

    #[test]
    fn buffering_never_changes_the_hash() {
        for sizes in [
            &[3usize, 500, 9][..],
            &[600],
            &[511, 1],
            &[0, 512, 0, 2000, 7],
        ] {
            let mut h = KeyHasher::new(b"d");
            let mut plain = Sha256::new();
            plain.update(1u32.to_be_bytes());
            plain.update(b"d");
            for (i, n) in sizes.iter().enumerate() {
                let part = vec![i as u8; *n];
                h.part(&part);
                plain.update((*n as u32).to_be_bytes());
                plain.update(&part);
            }
            let expected: [u8; 32] = plain.finalize().into();
            assert_eq!(h.finish(), expected, "{sizes:?}");
        }
    }

    #[test]
    fn host_is_keyed_by_name_without_port() {
        let h = |host: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::HOST, host.parse().unwrap());
            m
        };
        let k = |host: &str| key("/x", &h(host), &ALL, &[]);
        assert_eq!(k("Example.com:8080"), k("example.com"));
        let long = "Sub.".repeat(40) + "Example.com";
        assert_eq!(k(&long), k(&long.to_ascii_lowercase()));
        assert_eq!(k("[::1]:3000"), k("[::1]"));
        assert_ne!(k("example.com"), k("example.org"));
        assert_ne!(k("[::1]"), k("[::2]"));
        assert_eq!(host_name(b"user@h:1"), b"h");
    }

    #[test]
    fn printable_form_is_prefix_then_tagged_hex() {
        let h = HeaderMap::new();
        let k = key("/x", &h, &ALL, &[]);
        let s = k.to_string();
        assert!(s.starts_with("p:{") && s.ends_with('}') && s.len() == 2 + 2 + 64);
        let v = k
            .with_variant(&[HeaderName::from_static("accept")], &h)
            .to_string();
        assert!(v.starts_with(&s) && v.len() == s.len() + 65);
    }
}
