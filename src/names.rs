//! The names an entry can be invalidated by (see [`generations`](crate::generations)), derived
//! from its request, and the tags a handler adds to its response ([`CacheTags`], `cache-tag`).
//!
//! `*` (the namespace), `tag:<tag>` (route and handler tags), `path:<path>` (the exact path),
//! `prefix:<p>/` (each ancestor of the path, at most [`MAX_PREFIXES`]), `url:<path?query>` (the
//! path and canonical query) and, per user, `user:<hex>` (the hashed identity, never raw).

use std::sync::Arc;

use http::header::HeaderName;

use crate::key::{canonical_query, client_uri, user_hash, QueryPair};
use crate::policy::RoutePolicy;
use crate::route::route_label;
use crate::shared::Shared;

/// The name every entry carries: [`ResponseCache::bump_version`](crate::ResponseCache::bump_version) bumps it.
pub(crate) const NAMESPACE: &str = "*";

/// How many ancestor prefixes of a path an entry carries: `/a/b/c/…` past this depth is
/// invalidated with its deepest ancestor.
pub(crate) const MAX_PREFIXES: usize = 8;

/// The response header a handler may tag its response with; removed before the response leaves.
pub(crate) const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Tags a handler adds to its response, as a response extension: the entry stored from it can
/// then be invalidated by any of them with
/// [`ResponseCache::invalidate_tag`](crate::ResponseCache::invalidate_tag). A `cache-tag: a, b`
/// response header does the same (and is removed before the response leaves).
///
/// A handler's tags are known only once it has answered; if anything was invalidated meanwhile,
/// its response is served but not stored, since it might predate an invalidation of a tag it
/// carries.
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::response::IntoResponse;
/// use tower_response_cache::CacheTags;
///
/// async fn influencer() -> impl IntoResponse {
///     (CacheTags::new(["influencer:42", "platform:twitter"]), "{\"id\":42}")
/// }
/// # let _ = influencer;
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheTags(Vec<String>);

impl CacheTags {
    /// These tags.
    pub fn new<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(tags.into_iter().map(Into::into).collect())
    }

    /// Adds a tag.
    pub fn push(&mut self, tag: impl Into<String>) {
        self.0.push(tag.into());
    }

    /// The tags.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponseParts for CacheTags {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// The name of tag `tag`.
pub(crate) fn tag_name(tag: &str) -> Arc<str> {
    Arc::from(format!("tag:{tag}"))
}

/// The names `invalidate_path` bumps: `/a/*` is every path under `/a/`, anything else the path
/// itself.
pub(crate) fn path_pattern_name(pattern: &str) -> Arc<str> {
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => {
            // Entries carry ancestors down to MAX_PREFIXES deep: a deeper prefix is reached
            // through its ancestor at that depth.
            let cut = prefix
                .match_indices('/')
                .nth(MAX_PREFIXES - 1)
                .map_or(prefix.len(), |(i, _)| i + 1);
            Arc::from(format!("prefix:{}", &prefix[..cut]))
        }
        _ => path_name(pattern),
    }
}

/// The `path:` name of `path`: what every entry of a request for it carries, and what a
/// write to it bumps.
pub(crate) fn path_name(path: &str) -> Arc<str> {
    name("path:", path)
}

/// The `url:` name of a path and its canonical query.
pub(crate) fn url_name(path: &str, query: &[QueryPair<'_>]) -> Arc<str> {
    if query.is_empty() {
        return name("url:", path);
    }
    NAME.with_borrow_mut(|buf| {
        buf.clear();
        buf.push_str("url:");
        buf.push_str(path);
        buf.push('?');
        let at = buf.len();
        let mut out = form_urlencoded::Serializer::for_suffix(std::mem::take(buf), at);
        for (k, v) in query {
            out.append_pair(k, v);
        }
        *buf = out.finish();
        Arc::from(buf.as_str())
    })
}

thread_local! {
    /// Where a name is put together before its one allocation, its `Arc`.
    static NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The `prefix:` names made last on this thread: the ancestors of neighbouring requests'
    /// paths are mostly the same (`prefix:/`, `prefix:/items/`), so their entries share them.
    static PREFIXES: std::cell::RefCell<Vec<Arc<str>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `kind` followed by `rest`, in one allocation.
fn name(kind: &str, rest: &str) -> Arc<str> {
    NAME.with_borrow_mut(|buf| {
        buf.clear();
        buf.push_str(kind);
        buf.push_str(rest);
        Arc::from(buf.as_str())
    })
}

/// The `prefix:` name of `ancestor`, shared with the last entries that had it.
fn prefix_name(ancestor: &str) -> Arc<str> {
    const KIND: &str = "prefix:";
    PREFIXES.with_borrow_mut(|recent| {
        let same = |n: &Arc<str>| n.len() == KIND.len() + ancestor.len() && n.ends_with(ancestor);
        if let Some(n) = recent.iter().find(|n| same(n)) {
            return n.clone();
        }
        let made = name(KIND, ancestor);
        if recent.len() == MAX_PREFIXES {
            recent.remove(0);
        }
        recent.push(made.clone());
        made
    })
}

/// The namespace name, one allocation shared by every entry.
fn namespace() -> Arc<str> {
    static NS: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(NAMESPACE));
    NS.clone()
}

/// The `user:` name of a hashed identity.
pub(crate) fn user_name(hashed: &str) -> Arc<str> {
    Arc::from(format!("user:{hashed}"))
}

/// What one request's entry is named by.
pub(crate) struct Request<'a> {
    /// The path as the client sent it.
    pub(crate) path: &'a str,
    /// Its canonical query, as the route keys it.
    pub(crate) query: &'a [QueryPair<'a>],
    /// The route template the request matched (axum's `MatchedPath`).
    pub(crate) template: Option<&'a str>,
    /// The route's tags, `{param}` unfilled.
    pub(crate) tags: &'a [Arc<str>],
    /// The hashed identity, in per-user mode.
    pub(crate) user: Option<&'a str>,
}

/// Every name the entry of `req` carries, the namespace first.
pub(crate) fn names(req: &Request<'_>) -> Vec<Arc<str>> {
    let mut names = Vec::with_capacity(4 + req.tags.len() + MAX_PREFIXES);
    names.push(namespace());
    if !req.tags.is_empty() {
        let params = req
            .template
            .map(|t| path_params(t, req.path))
            .unwrap_or_default();
        for tag in req.tags {
            names.push(tag_name(&fill(tag, &params)));
        }
    }
    names.push(path_name(req.path));
    for (i, _) in req.path.match_indices('/').take(MAX_PREFIXES) {
        names.push(prefix_name(&req.path[..=i]));
    }
    names.push(url_name(req.path, req.query));
    if let Some(user) = req.user {
        names.push(user_name(user));
    }
    names
}

/// The names the entry of `req`, looked up with `identity` under `policy`, carries.
pub(crate) fn of_request<B>(
    shared: &Shared,
    policy: &RoutePolicy,
    req: &http::Request<B>,
    identity: Option<&str>,
) -> Vec<Arc<str>> {
    let uri = client_uri(req);
    let query = canonical_query(uri.query(), &policy.query);
    let user = identity.map(|id| user_hash(&shared.prefix, id));
    names(&Request {
        path: uri.path(),
        query: &query,
        template: route_label(req).map(|l| l.as_str()),
        tags: &policy.tags,
        user: user.as_deref(),
    })
}

/// The values of a route template's parameters in `path`: `{name}` takes one segment
/// (percent-decoded), `{*name}` the rest of the path.
pub(crate) fn path_params<'t>(template: &'t str, path: &str) -> Vec<(&'t str, String)> {
    let mut params = Vec::new();
    let mut segments = path.split('/');
    let mut rest = path;
    for part in template.split('/') {
        let segment = segments.next();
        let consumed = segment.map_or(0, |s| (s.len() + 1).min(rest.len()));
        if let Some(name) = part.strip_prefix("{*").and_then(|p| p.strip_suffix('}')) {
            params.push((name, percent_decode(rest)));
            break;
        }
        if let (Some(name), Some(segment)) = (
            part.strip_prefix('{').and_then(|p| p.strip_suffix('}')),
            segment,
        ) {
            params.push((name, percent_decode(segment)));
        }
        rest = &rest[consumed..];
    }
    params
}

/// `tag` with each `{name}` replaced by the parameter's value; an unknown parameter is left as
/// written.
fn fill(tag: &str, params: &[(&str, String)]) -> String {
    if !tag.contains('{') {
        return tag.to_owned();
    }
    let mut out = String::with_capacity(tag.len() + 16);
    let mut rest = tag;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        match params.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// `%XX` escapes decoded; an invalid escape or non-UTF-8 result is kept as sent.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// The names of the tags a handler put on its response, taken off it: the [`CacheTags`]
/// extension and every `cache-tag` header (comma-separated).
pub(crate) fn take_handler_tags<B>(res: &mut http::Response<B>) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = res
        .extensions_mut()
        .remove::<CacheTags>()
        .map(|t| t.iter().map(tag_name).collect())
        .unwrap_or_default();
    let headers = res.headers_mut();
    if headers.contains_key(&CACHE_TAG) {
        if let http::header::Entry::Occupied(e) = headers.entry(CACHE_TAG) {
            for value in e.remove_entry_mult().1 {
                let Ok(value) = value.to_str() else { continue };
                names.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(tag_name),
                );
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(names: &[Arc<str>]) -> Vec<&str> {
        names.iter().map(|n| &**n).collect()
    }

    #[test]
    fn a_request_is_named_by_namespace_tags_path_prefixes_url_and_user() {
        let query = [("limit".into(), "5".into())];
        let tags = [Arc::from("platform:{platform}"), Arc::from("static")];
        let names = names(&Request {
            path: "/influencers/twitter",
            query: &query,
            template: Some("/influencers/{platform}"),
            tags: &tags,
            user: Some("abc"),
        });
        assert_eq!(
            strs(&names),
            [
                "*",
                "tag:platform:twitter",
                "tag:static",
                "path:/influencers/twitter",
                "prefix:/",
                "prefix:/influencers/",
                "url:/influencers/twitter?limit=5",
                "user:abc",
            ]
        );
    }

    #[test]
    fn neighbouring_requests_share_their_ancestors_names_and_nothing_else() {
        let of = |path| {
            names(&Request {
                path,
                query: &[],
                template: None,
                tags: &[],
                user: None,
            })
        };
        let (a, b) = (of("/a/b"), of("/a/c"));
        assert_eq!(
            strs(&b),
            ["*", "path:/a/c", "prefix:/", "prefix:/a/", "url:/a/c"]
        );
        for i in [0, 2, 3] {
            assert!(Arc::ptr_eq(&a[i], &b[i]), "{} is shared", a[i]);
        }
        assert_ne!(a[1], b[1]);
        // A prefix that only looks like another one's tail is its own name.
        assert_eq!(
            strs(&of("/b/a/"))[2..5],
            ["prefix:/", "prefix:/b/", "prefix:/b/a/"]
        );
        let q = [("q".into(), "a b&c".into())];
        assert_eq!(&*url_name("/x", &q), "url:/x?q=a+b%26c");
    }

    #[test]
    fn params_fill_from_segments_and_wildcards() {
        let p = path_params("/v2/{a}/x/{b}", "/v2/caf%C3%A9/x/2");
        assert_eq!(p, [("a", "café".to_owned()), ("b", "2".to_owned())]);
        let p = path_params("/files/{*rest}", "/files/a/b/c.txt");
        assert_eq!(p, [("rest", "a/b/c.txt".to_owned())]);
        assert_eq!(
            fill("{a}-{b}-{c}", &[("a", "1".into()), ("b", "2".into())]),
            "1-2-{c}"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn prefixes_stop_at_the_cap_and_patterns_reach_them() {
        let deep = "/1/2/3/4/5/6/7/8/9/10";
        let names = names(&Request {
            path: deep,
            query: &[],
            template: None,
            tags: &[],
            user: None,
        });
        let prefixes: Vec<&str> = strs(&names)
            .into_iter()
            .filter(|n| n.starts_with("prefix:"))
            .collect();
        assert_eq!(prefixes.len(), MAX_PREFIXES);
        assert_eq!(prefixes[MAX_PREFIXES - 1], "prefix:/1/2/3/4/5/6/7/");
        assert_eq!(
            &*path_pattern_name("/1/2/3/4/5/6/7/8/9/*"),
            "prefix:/1/2/3/4/5/6/7/"
        );
        assert_eq!(&*path_pattern_name("/a/*"), "prefix:/a/");
        assert_eq!(&*path_pattern_name("/*"), "prefix:/");
        assert_eq!(&*path_pattern_name("/a/b"), "path:/a/b");
    }

    #[test]
    fn handler_tags_come_off_the_response() {
        let mut res = http::Response::new(());
        res.headers_mut().append(CACHE_TAG, "a, b".parse().unwrap());
        res.headers_mut().append(CACHE_TAG, "c".parse().unwrap());
        res.extensions_mut().insert(CacheTags::new(["x"]));
        let names = take_handler_tags(&mut res);
        assert_eq!(strs(&names), ["tag:x", "tag:a", "tag:b", "tag:c"]);
        assert!(res.headers().is_empty() && res.extensions().get::<CacheTags>().is_none());
    }
}
