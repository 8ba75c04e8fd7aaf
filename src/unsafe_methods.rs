//! RFC 9111 §4.4: a POST, PUT, PATCH or DELETE that succeeds (2xx or 3xx) invalidates the
//! entries of its own path and of a same-host `Location` / `Content-Location`; an error
//! response invalidates nothing. See [`CacheLayer::invalidate_on_unsafe`](crate::CacheLayer::invalidate_on_unsafe).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};

use crate::key::client_uri;
use crate::log::log_store_error;
use crate::names::path_name;
use crate::shared::Shared;
use crate::{Purge, StoreError, StoreErrorKind};

/// The invalidation of one write, run before its response is returned.
pub(crate) type Invalidation = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Whether `method` may change the resource (RFC 9110 §9.2.1's unsafe methods this acts on).
pub(crate) fn is_unsafe(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// What a write's invalidation needs of its request: the URI as the client sent it and the
/// `Host`. Both are reference-counted clones: no copy of the path is made unless the response
/// succeeds.
pub(crate) struct Write {
    uri: Uri,
    host: Option<HeaderValue>,
}

impl Write {
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        Self {
            uri: client_uri(req).clone(),
            host: req.headers().get(header::HOST).cloned(),
        }
    }

    /// The invalidation `res` calls for, if it succeeded.
    pub(crate) fn after<B>(self, shared: &Arc<Shared>, res: &Response<B>) -> Option<Invalidation> {
        let status = res.status();
        if !(status.is_success() || status.is_redirection()) {
            return None;
        }
        let names = self.names(res.headers());
        // No entry carries any of them (an in-process store knows): a bump would change nothing
        // but grow the counters and send every entry to the slow check.
        if names
            .iter()
            .all(|n| shared.store.may_carry(&shared.prefix, n) == Some(false))
        {
            return None;
        }
        let shared = shared.clone();
        Some(Box::pin(async move {
            let bump = shared.gens.bump(&names, Purge::Hard);
            let done = match shared.lookup_timeout {
                Some(limit) => match tokio::time::timeout(limit, bump).await {
                    Ok(done) => done.map(drop),
                    Err(_) => Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        "the invalidation of a write timed out",
                    )),
                },
                None => bump.await.map(drop),
            };
            if let Err(e) = done {
                log_store_error(&e);
            }
        }))
    }

    /// `path:` of the request's path, and of each same-host `Location` / `Content-Location`.
    fn names(&self, headers: &HeaderMap) -> Vec<Arc<str>> {
        let mut names = vec![path_name(self.uri.path())];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let mut values = headers.get_all(&name).iter();
            // One value, or the header is malformed and ignored.
            let (Some(value), None) = (values.next(), values.next()) else {
                continue;
            };
            let Ok(value) = value.to_str() else { continue };
            if let Some(path) = self.same_host_path(value.trim()) {
                let path = path_name(&path);
                if !names.contains(&path) {
                    names.push(path);
                }
            }
        }
        names
    }

    /// The path `reference` names, resolved against the request's URI (RFC 3986 §5.2), when it
    /// is on the request's host; `None` for another host or anything unparsable.
    fn same_host_path(&self, reference: &str) -> Option<String> {
        let reference = reference
            .split_once('#')
            .map_or(reference, |(before, _)| before);
        let reference = reference
            .split_once('?')
            .map_or(reference, |(before, _)| before);
        let has_scheme = reference
            .find(':')
            .is_some_and(|colon| is_scheme(&reference[..colon]));
        if has_scheme || reference.starts_with("//") {
            let uri: Uri = if has_scheme {
                reference.parse().ok()?
            } else {
                format!("http:{reference}").parse().ok()?
            };
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return None;
            }
            let there = uri.authority()?;
            let here = self.host()?;
            if !same_host(there.host(), host_of(here)) {
                return None;
            }
            let path = if uri.path().is_empty() {
                "/"
            } else {
                uri.path()
            };
            return Some(remove_dot_segments(path));
        }
        if reference.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return None;
        }
        let base = self.uri.path();
        if reference.is_empty() {
            return Some(base.to_owned());
        }
        if reference.starts_with('/') {
            return Some(remove_dot_segments(reference));
        }
        let dir = base.rfind('/').map_or("/", |i| &base[..=i]);
        Some(remove_dot_segments(&format!("{dir}{reference}")))
    }

    /// The request's host: its URI's authority, else its `Host` header.
    fn host(&self) -> Option<&str> {
        match self.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => self.host.as_ref()?.to_str().ok(),
        }
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The host of an authority, without userinfo and port.
fn host_of(authority: &str) -> &str {
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Hosts compare case-insensitively; the port is not compared (RFC 9111 §4.4 names the host).
fn same_host(a: &str, b: &str) -> bool {
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(uri: &str, host: Option<&str>) -> Write {
        let mut req = Request::post(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        Write::of(&req.body(()).unwrap())
    }

    #[test]
    fn references_resolve_against_the_request_on_its_host_only() {
        let w = write("/v2/items?x=1", Some("Example.com:8080"));
        let at = |r: &str| w.same_host_path(r);
        assert_eq!(at("/v2/items/7?a=b#f").as_deref(), Some("/v2/items/7"));
        assert_eq!(at("items/7").as_deref(), Some("/v2/items/7"));
        assert_eq!(at("./a/../b").as_deref(), Some("/v2/b"));
        assert_eq!(at("../../../x").as_deref(), Some("/x"));
        assert_eq!(at("").as_deref(), Some("/v2/items"));
        assert_eq!(at("http://example.COM/a").as_deref(), Some("/a"));
        assert_eq!(at("https://example.com:443").as_deref(), Some("/"));
        assert_eq!(at("//example.com/b").as_deref(), Some("/b"));
        assert_eq!(at("http://evil.example/a"), None);
        assert_eq!(at("//evil.example/a"), None);
        assert_eq!(at("http://example.com.evil/a"), None);
        assert_eq!(at("mailto:a@example.com"), None);
        assert_eq!(at("http://[::1/a"), None);
        assert_eq!(at("a b"), None);
        // Without a host to compare, absolute references are ignored; paths still resolve.
        let w = write("/a/b", None);
        assert_eq!(w.same_host_path("http://example.com/x"), None);
        assert_eq!(w.same_host_path("c").as_deref(), Some("/a/c"));
        // An absolute request URI names its own host.
        let w = write("http://example.com/a/b", None);
        assert_eq!(
            w.same_host_path("http://example.com/x").as_deref(),
            Some("/x")
        );
    }

    #[test]
    fn names_are_the_paths_of_the_request_and_its_locations_once_each() {
        let w = write("/items", Some("example.com"));
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, "/items/7".parse().unwrap());
        headers.insert(header::CONTENT_LOCATION, "/items".parse().unwrap());
        let names = w.names(&headers);
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["path:/items", "path:/items/7"]
        );
        // Two Locations: malformed, ignored; a value that is not text too.
        headers.append(header::LOCATION, "/other".parse().unwrap());
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_bytes(b"/caf\xe9").unwrap(),
        );
        assert_eq!(w.names(&headers).len(), 1);
    }
}
