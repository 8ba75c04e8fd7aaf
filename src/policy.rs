//! What may be looked up and stored: the per-route settings, the safety rules that make a request
//! or a response bypass the cache, and how long a stored response stays fresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Request, StatusCode};

use crate::entry::{secs, Grace};
use crate::key::QueryKey;
use crate::StoredHeaders;

/// Why the cache let a request or response pass without serving or storing it; the `detail` of
/// `Cache-Status: …; fwd=bypass; detail=<reason>` and a label of the bypass metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BypassReason {
    /// The method is not GET or HEAD.
    Method,
    /// The request carries `Authorization`.
    Authorization,
    /// The request carries a cookie that may identify a user.
    Cookie,
    /// The response sets a cookie.
    SetCookie,
    /// The response is `Cache-Control: private`.
    Private,
    /// The response is `Cache-Control: no-store`.
    NoStore,
    /// The response is `Cache-Control: no-cache`.
    NoCache,
    /// The status is not among those the route stores.
    Status,
    /// The body is larger than the route's limit.
    TooLarge,
    /// The response is a stream (`text/event-stream`, an upgrade) or carries trailers.
    Stream,
    /// The response has `Vary: *`.
    VaryStar,
    /// Under the app-wide layer, the response says nothing of how long it may be kept.
    NoTtl,
    /// The request carries `Proxy-Authorization`.
    ProxyAuthorization,
    /// A [`bypass_when`](crate::CacheLayer::bypass_when) hook matched the request. Its
    /// `Cache-Status` detail is the hook's own reason; metrics count all hooks as `custom`.
    Custom,
}

impl BypassReason {
    /// All reasons, in a stable order: the metrics' counter slots. Crate-private because the
    /// enum is `#[non_exhaustive]`: a public list would break users' code whenever it grows.
    pub(crate) const ALL: [BypassReason; 14] = [
        Self::Method,
        Self::Authorization,
        Self::Cookie,
        Self::SetCookie,
        Self::Private,
        Self::NoStore,
        Self::NoCache,
        Self::Status,
        Self::TooLarge,
        Self::Stream,
        Self::VaryStar,
        Self::NoTtl,
        Self::ProxyAuthorization,
        Self::Custom,
    ];

    /// The stable token used in `Cache-Status` and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::SetCookie => "set-cookie",
            Self::Private => "private",
            Self::NoStore => "no-store",
            Self::NoCache => "no-cache",
            Self::Status => "status",
            Self::TooLarge => "too-large",
            Self::Stream => "stream",
            Self::VaryStar => "vary-star",
            Self::NoTtl => "no-ttl",
            Self::ProxyAuthorization => "proxy-authorization",
            Self::Custom => "custom",
        }
    }
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Derives the identity a per-user route is keyed on. Returning `None` makes a credentialed
/// request bypass the cache as usual.
pub(crate) type IdentityFn = Arc<dyn Fn(&request::Parts) -> Option<String> + Send + Sync>;

/// A request hook: the requests it matches bypass the cache with `detail=<reason>`.
#[derive(Clone)]
pub(crate) struct BypassHook {
    pub(crate) reason: &'static str,
    matches: Arc<dyn Fn(&request::Parts) -> bool + Send + Sync>,
}

impl BypassHook {
    /// # Panics
    /// When `reason` is not an RFC 8941 token, which `Cache-Status` needs it to be.
    pub(crate) fn new<F>(reason: &'static str, matches: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        assert!(
            is_token(reason),
            "bypass_when reason {reason:?} is not a token: a letter, then letters, digits or \
             any of !#$%&'*+-.^_`|~:/"
        );
        Self {
            reason,
            matches: Arc::new(matches),
        }
    }
}

impl fmt::Debug for BypassHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BypassHook").field(&self.reason).finish()
    }
}

/// An RFC 8941 token (`sf-token`).
fn is_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

/// How request cookies affect caching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieRule {
    /// Any `Cookie` header bypasses the cache (the default).
    AnyBypasses,
    /// Only these cookies mark a session; others are ignored.
    Session(Vec<String>),
    /// The route does not depend on cookies.
    Ignore,
}

/// Which kind of layer a policy belongs to: chosen by the constructor (`ResponseCache::layer`
/// or `ResponseCache::ttl`/`route`), never by a later setter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The app-wide layer: the handler's `Cache-Control` lifetime decides; `default_ttl` (set by
    /// `CacheLayer::ttl`) covers responses that give none. It leaves routes whose own layer of
    /// the same cache handled them to that layer.
    AppWide { default_ttl: Option<Duration> },
    /// A per-route layer: responses are kept for `ttl` whatever their lifetime says.
    Route { ttl: Duration },
}

/// A layer's lease (see `CacheLayer::lease`), as set: each in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaseConfig {
    pub(crate) time: Option<Duration>,
    pub(crate) wait: Option<Duration>,
}

impl LeaseConfig {
    /// The lease in force, if any.
    pub(crate) fn on(self) -> Option<LeaseSettings> {
        let time = self.time.filter(|t| !t.is_zero())?;
        Some(LeaseSettings {
            time,
            wait: self.wait.unwrap_or(time),
        })
    }
}

/// A layer's lease in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseSettings {
    /// How long a lease lasts: the longest a dead holder keeps others waiting.
    pub(crate) time: Duration,
    /// How long a request waits for another process's entry.
    pub(crate) wait: Duration,
}

/// One route's (or the app-wide layer's) settings.
#[derive(Clone)]
pub(crate) struct RoutePolicy {
    pub(crate) mode: Mode,
    pub(crate) query: QueryKey,
    pub(crate) vary_headers: Vec<HeaderName>,
    /// The most `Vary` variants of one URL stored (per process).
    pub(crate) max_variants: usize,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body_size: usize,
    pub(crate) downstream_max_age: bool,
    pub(crate) cookies: CookieRule,
    pub(crate) identity: Option<IdentityFn>,
    pub(crate) honor_client_no_cache: bool,
    /// The cache's hooks, then the layer's own.
    pub(crate) bypass_hooks: Vec<BypassHook>,
    /// Tags every entry of the route carries; `{param}` is filled from the request's path.
    pub(crate) tags: Vec<Arc<str>>,
    /// Shadow mode: look up, count and store as usual, but always answer from the handler.
    pub(crate) shadow: bool,
    /// A successful POST, PUT, PATCH or DELETE invalidates its path and same-host
    /// `Location` / `Content-Location` (RFC 9111 §4.4).
    pub(crate) invalidate_on_unsafe: bool,
    /// Fleet-wide stampede control: a missing key is computed under a lease in the store.
    pub(crate) lease: LeaseConfig,
    /// The layer's stale windows; a response's own `Cache-Control` overrides each.
    pub(crate) grace: Grace,
    /// How long the handler may take when a stale entry could answer in its place.
    pub(crate) origin_timeout: Option<Duration>,
    /// XFetch's beta: a fresh hit near its expiry may refresh the entry early; `None`: off.
    pub(crate) early_refresh: Option<f64>,
}

impl fmt::Debug for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePolicy")
            .field("mode", &self.mode)
            .field("query", &self.query)
            .field("vary_headers", &self.vary_headers)
            .field("max_variants", &self.max_variants)
            .field("statuses", &self.statuses)
            .field("max_body_size", &self.max_body_size)
            .field("downstream_max_age", &self.downstream_max_age)
            .field("cookies", &self.cookies)
            .field("per_user", &self.identity.is_some())
            .field("honor_client_no_cache", &self.honor_client_no_cache)
            .field("bypass_hooks", &self.bypass_hooks)
            .field("tags", &self.tags)
            .field("shadow", &self.shadow)
            .field("invalidate_on_unsafe", &self.invalidate_on_unsafe)
            .field("lease", &self.lease)
            .field("grace", &self.grace)
            .field("origin_timeout", &self.origin_timeout)
            .field("early_refresh", &self.early_refresh)
            .finish()
    }
}

/// 1 MiB.
pub(crate) const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Variants kept per URL unless a layer says otherwise: ample for real negotiation (a few
/// encodings, a few dozen language preferences), small enough that no client fills the store.
pub(crate) const DEFAULT_MAX_VARIANTS: usize = 100;

impl RoutePolicy {
    pub(crate) fn new(mode: Mode, max_body_size: usize) -> Self {
        Self {
            mode,
            query: QueryKey::All {
                keep_tracking: false,
            },
            vary_headers: Vec::new(),
            max_variants: DEFAULT_MAX_VARIANTS,
            statuses: vec![StatusCode::OK],
            max_body_size,
            downstream_max_age: false,
            cookies: CookieRule::AnyBypasses,
            identity: None,
            tags: Vec::new(),
            invalidate_on_unsafe: true,
            lease: LeaseConfig::default(),
            honor_client_no_cache: false,
            bypass_hooks: Vec::new(),
            shadow: false,
            grace: Grace::default(),
            origin_timeout: None,
            early_refresh: None,
        }
    }

    /// The reason of the first bypass hook that matches a GET or HEAD request (other methods
    /// bypass anyway, as `method`). Hooks read the request as [`request::Parts`], so it is
    /// taken apart and put together again.
    pub(crate) fn hooked<B>(&self, req: Request<B>) -> (Request<B>, Option<&'static str>) {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return (req, None);
        }
        let (parts, body) = req.into_parts();
        let reason = self
            .bypass_hooks
            .iter()
            .find(|hook| (hook.matches)(&parts))
            .map(|hook| hook.reason);
        (Request::from_parts(parts, body), reason)
    }

    /// Whether the request may use the cache. `Ok(None)` for a shared entry, `Ok(Some(id))` for a
    /// per-user one; `identity` is what the route's identity function returned, if it has one.
    pub(crate) fn admit_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        identity: Option<String>,
    ) -> Result<Option<String>, BypassReason> {
        if method != Method::GET && method != Method::HEAD {
            return Err(BypassReason::Method);
        }
        if self.identity.is_some() && identity.is_some() {
            return Ok(identity);
        }
        if headers.contains_key(header::AUTHORIZATION) {
            Err(BypassReason::Authorization)
        } else if headers.contains_key(header::PROXY_AUTHORIZATION) {
            Err(BypassReason::ProxyAuthorization)
        } else if self.has_session_cookie(headers) {
            Err(BypassReason::Cookie)
        } else {
            Ok(None)
        }
    }

    fn has_session_cookie(&self, headers: &HeaderMap) -> bool {
        let mut cookies = headers.get_all(header::COOKIE).iter();
        match &self.cookies {
            CookieRule::Ignore => false,
            CookieRule::AnyBypasses => cookies.next().is_some(),
            CookieRule::Session(names) => cookies.any(|v| {
                // A cookie header we cannot read is treated as carrying a session.
                let Ok(s) = v.to_str() else { return true };
                s.split(';').any(|pair| {
                    let name = pair.split('=').next().unwrap_or("").trim();
                    names.iter().any(|n| n == name)
                })
            }),
        }
    }

    /// Whether the client asked to skip the stored copy, and we honour that.
    pub(crate) fn client_forces_miss(&self, headers: &HeaderMap) -> bool {
        self.honor_client_no_cache
            && (directives(headers.get_all(header::CACHE_CONTROL).iter())
                .any(|(name, _)| name.eq_ignore_ascii_case("no-cache"))
                || headers
                    .get_all(header::PRAGMA)
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")))
    }

    /// Decides from the status and headers alone whether a response may be stored, and for how
    /// long. Body size is checked again while buffering.
    pub(crate) fn admit_response(
        &self,
        parts: &response::Parts,
        per_user: bool,
    ) -> Result<StorePlan, BypassReason> {
        let headers = &parts.headers;
        if !self.statuses.contains(&parts.status) {
            return Err(BypassReason::Status);
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err(BypassReason::SetCookie);
        }
        let mut max_age = None;
        let mut s_maxage = None;
        let mut grace = self.grace;
        for (name, value) in directives(headers.get_all(header::CACHE_CONTROL).iter()) {
            match name.to_ascii_lowercase().as_str() {
                "no-store" => return Err(BypassReason::NoStore),
                "no-cache" => return Err(BypassReason::NoCache),
                "private" if !per_user => return Err(BypassReason::Private),
                "max-age" => max_age = value.and_then(parse_seconds),
                "s-maxage" => s_maxage = value.and_then(parse_seconds),
                // RFC 5861: the handler's own windows win over the layer's, in both modes.
                "stale-while-revalidate" => {
                    if let Some(d) = value.and_then(parse_seconds) {
                        grace.stale_while_revalidate = secs(d);
                    }
                }
                "stale-if-error" => {
                    if let Some(d) = value.and_then(parse_seconds) {
                        grace.stale_if_error = secs(d);
                    }
                }
                _ => {}
            }
        }
        let vary = vary_names(headers).ok_or(BypassReason::VaryStar)?;
        if is_stream(parts) {
            return Err(BypassReason::Stream);
        }
        if let Some(len) = content_length(headers) {
            if len > self.max_body_size as u64 {
                return Err(BypassReason::TooLarge);
            }
        }
        let ttl = match self.mode {
            Mode::Route { ttl } => ttl,
            Mode::AppWide { default_ttl } => s_maxage
                .or(max_age)
                .or(default_ttl)
                .ok_or(BypassReason::NoTtl)?,
        };
        if ttl.is_zero() {
            return Err(BypassReason::NoTtl);
        }
        Ok(StorePlan { ttl, vary, grace })
    }
}

/// What an admitted response will be stored as.
#[derive(Debug)]
pub(crate) struct StorePlan {
    pub(crate) ttl: Duration,
    /// The request headers the response varies on: lower-case, sorted, deduplicated.
    pub(crate) vary: Vec<HeaderName>,
    /// How long past `ttl` it may be served stale.
    pub(crate) grace: Grace,
}

/// Whether the request says `Cache-Control: only-if-cached`: a stored response or a `504`,
/// never the handler (RFC 9111 §5.2.1.7).
pub(crate) fn only_if_cached(headers: &HeaderMap) -> bool {
    directives(headers.get_all(header::CACHE_CONTROL).iter())
        .any(|(name, _)| name.eq_ignore_ascii_case("only-if-cached"))
}

/// `Cache-Control` directives as (name, optional unquoted value); malformed parts are skipped.
pub(crate) fn directives<'a>(
    values: impl Iterator<Item = &'a http::HeaderValue>,
) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            })
        })
}

fn parse_seconds(s: &str) -> Option<Duration> {
    s.parse::<u64>().ok().map(Duration::from_secs)
}

/// The names in the response's `Vary`, or `None` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(s) = value.to_str() else { continue };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                names.push(n);
            }
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_stream(parts: &response::Parts) -> bool {
    parts.status == StatusCode::SWITCHING_PROTOCOLS
        || parts.headers.contains_key(header::UPGRADE)
        || parts.headers.contains_key(header::TRAILER)
        || parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            })
}

/// Headers that must never be persisted: credentials, per-connection headers, and what the
/// cache itself adds on the way out.
const UNSTORABLE: [HeaderName; 15] = [
    header::SET_COOKIE,
    header::WWW_AUTHENTICATE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("authentication-info"),
    HeaderName::from_static("proxy-authentication-info"),
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::AGE,
    HeaderName::from_static("cache-status"),
];

/// The headers of `headers` that may be persisted, followed by `extra`.
pub(crate) fn storable_headers(
    headers: &HeaderMap,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
) -> StoredHeaders {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    headers
        .iter()
        .filter(|(n, _)| !UNSTORABLE.contains(n) && !named.contains(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .chain(extra)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn parts(
        build: impl FnOnce(http::response::Builder) -> http::response::Builder,
    ) -> response::Parts {
        build(Response::builder()).body(()).unwrap().into_parts().0
    }

    #[test]
    fn app_wide_ttl_prefers_s_maxage() {
        let p = RoutePolicy::new(Mode::AppWide { default_ttl: None }, DEFAULT_MAX_BODY);
        let r = parts(|b| b.header("cache-control", "public, max-age=60, s-maxage=600"));
        assert_eq!(
            p.admit_response(&r, false).unwrap().ttl,
            Duration::from_secs(600)
        );
        let r = parts(|b| b.header("cache-control", "max-age=60"));
        assert_eq!(
            p.admit_response(&r, false).unwrap().ttl,
            Duration::from_secs(60)
        );
        let r = parts(|b| b);
        assert_eq!(
            p.admit_response(&r, false).unwrap_err(),
            BypassReason::NoTtl
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let p = RoutePolicy::new(
            Mode::Route {
                ttl: Duration::from_secs(5),
            },
            10,
        );
        let cases = [
            ("set-cookie", "a=b", BypassReason::SetCookie),
            ("cache-control", "private", BypassReason::Private),
            (
                "cache-control",
                "max-age=5, no-store",
                BypassReason::NoStore,
            ),
            ("cache-control", "no-cache", BypassReason::NoCache),
            ("vary", "accept, *", BypassReason::VaryStar),
            ("content-type", "text/event-stream", BypassReason::Stream),
            ("content-length", "11", BypassReason::TooLarge),
        ];
        for (name, value, reason) in cases {
            let r = parts(|b| b.header(name, value));
            assert_eq!(
                p.admit_response(&r, false).unwrap_err(),
                reason,
                "{name}: {value}"
            );
        }
        let r = parts(|b| b.status(404));
        assert_eq!(
            p.admit_response(&r, false).unwrap_err(),
            BypassReason::Status
        );
    }

    #[test]
    fn vary_is_normalised() {
        let p = RoutePolicy::new(
            Mode::Route {
                ttl: Duration::from_secs(5),
            },
            10,
        );
        let r = parts(|b| {
            b.header("vary", "Accept-Language, accept")
                .header("vary", "Accept")
        });
        let names = p.admit_response(&r, false).unwrap().vary;
        assert_eq!(names, vec![header::ACCEPT, header::ACCEPT_LANGUAGE]);
    }

    #[test]
    fn session_cookies_only_bypass_when_named() {
        let mut p = RoutePolicy::new(
            Mode::Route {
                ttl: Duration::from_secs(5),
            },
            10,
        );
        p.cookies = CookieRule::Session(vec!["sessionid".into()]);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "theme=dark; lang=en".parse().unwrap());
        assert_eq!(p.admit_request(&Method::GET, &h, None), Ok(None));
        h.insert(header::COOKIE, "theme=dark; sessionid=abc".parse().unwrap());
        assert_eq!(
            p.admit_request(&Method::GET, &h, None),
            Err(BypassReason::Cookie)
        );
    }

    #[test]
    fn hop_by_hop_and_credentials_are_stripped() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("www-authenticate", "Bearer"),
            ("authentication-info", "a"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ] {
            h.insert(HeaderName::from_static(n), v.parse().unwrap());
        }
        let kept = storable_headers(&h, []);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key(&header::CONTENT_TYPE));
    }
}
