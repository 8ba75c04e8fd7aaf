//! The headers of a stored response, kept as a compact list: an entry lives for its whole TTL,
//! and a `HeaderMap`'s hash index and spare buckets would cost more than the headers themselves.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// A stored response's headers, in order, in exactly the space they need.
///
/// Built from a [`HeaderMap`] (or any iterator of pairs); read back by name or in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct StoredHeaders(Box<[(HeaderName, HeaderValue)]>);

impl StoredHeaders {
    /// How many header lines there are.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The first value of `name`.
    #[must_use]
    pub(crate) fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Whether `name` is present.
    #[cfg(test)]
    pub(crate) fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The headers as a [`HeaderMap`].
    #[cfg(test)]
    pub(crate) fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        for (name, value) in self.iter() {
            map.append(name.clone(), value.clone());
        }
        map
    }

    /// Every header line, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

impl FromIterator<(HeaderName, HeaderValue)> for StoredHeaders {
    fn from_iter<I: IntoIterator<Item = (HeaderName, HeaderValue)>>(iter: I) -> Self {
        Self(iter.into_iter().collect::<Vec<_>>().into_boxed_slice())
    }
}

impl From<&HeaderMap> for StoredHeaders {
    fn from(map: &HeaderMap) -> Self {
        map.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }
}

impl From<HeaderMap> for StoredHeaders {
    fn from(map: HeaderMap) -> Self {
        Self::from(&map)
    }
}

impl fmt::Debug for StoredHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A buffer for [`format_u64`].
pub(crate) fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, without the formatting machinery: this runs on every hit (`Age`,
/// `Cache-Status`) and every stored entry (`Content-Length`).
pub(crate) fn format_u64(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use http::{header, HeaderMap};

    use super::StoredHeaders;

    #[test]
    fn keeps_every_line_in_order() {
        let mut map = HeaderMap::new();
        map.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        map.append(header::VARY, "accept".parse().unwrap());
        map.append(header::VARY, "accept-language".parse().unwrap());
        let stored = StoredHeaders::from(&map);
        assert_eq!(stored.len(), 3);
        assert_eq!(stored.get(&header::CONTENT_TYPE).unwrap(), "text/plain");
        assert!(stored.contains_key(&header::VARY));
        assert_eq!(stored.to_header_map(), map);
    }
}
