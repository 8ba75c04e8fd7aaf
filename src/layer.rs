//! The layer and its per-route settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{request, HeaderName, Request, StatusCode};
use tower_layer::Layer;

use crate::entry::secs;
use crate::key::{canonical_query, client_uri, QueryKey};
use crate::names::url_name;
use crate::policy::{BypassHook, CookieRule, Mode, RoutePolicy};
use crate::service::request_key;
use crate::shared::Shared;
use crate::{CacheKey, CacheService};

/// A tower [`Layer`] that caches responses; made by a [`ResponseCache`](crate::ResponseCache).
///
/// Cheap to clone. Settings are builder methods; a per-route setting overrides the app-wide
/// layer for that route.
///
/// The default per-route layer keys on the whole canonical query, stores only `200`s up to the
/// cache's body limit, bypasses requests with `Authorization` or any cookie, and leaves
/// `Cache-Control` to the handler:
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_response_cache::ResponseCache;
///
/// let cache = ResponseCache::default();
/// let app: Router = Router::new()
///     .route("/trending", get(|| async { "[]" }).layer(cache.ttl(Duration::from_secs(900))));
/// ```
///
/// Customised: key only on `limit` and `Accept-Language`, also keep `404`s, tell browsers how
/// long the copy stays fresh, and ignore a theme cookie:
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use http::{header, StatusCode};
/// use tower_response_cache::ResponseCache;
///
/// let cache = ResponseCache::default();
/// let layer = cache
///     .ttl(Duration::from_secs(60))
///     .vary_query(["limit"])
///     .vary_headers([header::ACCEPT_LANGUAGE])
///     .statuses([StatusCode::OK, StatusCode::NOT_FOUND])
///     .downstream_max_age(true)
///     .session_cookies(["sessionid"]);
/// let app: Router = Router::new().route("/top/{platform}", get(|| async { "[]" }).layer(layer));
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) policy: Arc<RoutePolicy>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    pub(crate) fn new(shared: Arc<Shared>, mut policy: RoutePolicy) -> Self {
        policy.bypass_hooks.clone_from(&shared.bypass_hooks);
        Self {
            shared,
            policy: Arc::new(policy),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut RoutePolicy)) -> Self {
        f(Arc::make_mut(&mut self.policy));
        self
    }

    /// The key this layer looks `req` up under, to pass to
    /// [`ResponseCache::invalidate`](crate::ResponseCache::invalidate) and drop that URL.
    ///
    /// What takes part, as in the layer's own keys:
    /// - **Path**: as the client sends it, mount prefix included (`/v2/users` for a route
    ///   `/users` nested under `/v2`). axum keeps it in the `OriginalUri` extension when a
    ///   nested router strips the prefix, so a request as axum hands it inside the mount gives
    ///   the same key.
    /// - **Query**: canonical, under this layer's [`query`](Self::query) rule: parameters
    ///   sorted, tracking parameters dropped, only the [`vary_query`](Self::vary_query) names
    ///   if set. `?page=1&utm_source=x` and `?page=1` are one key; `?page=1` and `?page=2` two.
    /// - **Host**: a request with no host — no `Host` header and no authority in its URI, as
    ///   `Request::get("/items?page=1")` builds it — names that URL on **every** host:
    ///   `invalidate` then drops every entry of that path and canonical query, whatever the
    ///   `Host` browsers sent, its `Vary` variants and [`vary_headers`](Self::vary_headers)
    ///   values, and its per-user entries, in every process sharing the store. With a `Host`
    ///   header (or an absolute URI, `http://example.com/items`), it names that host's entry
    ///   only (the port is ignored), and its `Vary` variants.
    /// - **Headers**: the [`vary_headers`](Self::vary_headers) values of `req`, for the exact
    ///   entry; a key for every host drops every value anyway.
    ///
    /// The key is the shared (not per-user) entry, before any variant learned from the
    /// response's `Vary`; [`invalidate`](crate::ResponseCache::invalidate) drops those variants
    /// with it.
    ///
    /// ```
    /// use axum::{extract::OriginalUri, routing::get, Router};
    /// use http::Request;
    /// use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// let layer = cache.route().vary_query(["page"]);
    /// let app: Router = Router::new().route("/items", get(|| async { "[]" }).layer(layer.clone()));
    ///
    /// // After page 1 changed: every host's `/items?page=1` misses next; page 2 still hits.
    /// let page_1 = Request::get("/items?page=1").body(()).unwrap();
    /// cache.invalidate(&layer.key_for(&page_1)).await.unwrap();
    ///
    /// // Only what `example.com` was served.
    /// let there = Request::get("/items?page=1").header("host", "example.com").body(()).unwrap();
    /// cache.invalidate(&layer.key_for(&there)).await.unwrap();
    ///
    /// // Parameters the layer does not key on do not matter.
    /// let noisy = Request::get("/items?page=1&sort=new").body(()).unwrap();
    /// assert_eq!(layer.key_for(&noisy), layer.key_for(&page_1));
    ///
    /// // Inside `Router::nest("/v2", …)`, the route sees `/items`; the key is that of
    /// // `/v2/items` (feature `axum`: without it, `OriginalUri` is not read).
    /// # #[cfg(feature = "axum")] {
    /// let mut inner = Request::get("/items?page=1").body(()).unwrap();
    /// inner.extensions_mut().insert(OriginalUri("/v2/items?page=1".parse().unwrap()));
    /// let outer = Request::get("/v2/items?page=1").body(()).unwrap();
    /// assert_eq!(layer.key_for(&inner), layer.key_for(&outer));
    /// # }
    /// # let _ = app; });
    /// ```
    #[must_use]
    pub fn key_for<B>(&self, req: &Request<B>) -> CacheKey {
        let key = request_key(&self.shared, &self.policy, req, None);
        let uri = client_uri(req);
        if uri.authority().is_some() || req.headers().contains_key(http::header::HOST) {
            return key;
        }
        let query = canonical_query(uri.query(), &self.policy.query);
        key.for_every_host(url_name(uri.path(), &query))
    }

    /// Tags every entry this layer stores carries, so
    /// [`ResponseCache::invalidate_tag`](crate::ResponseCache::invalidate_tag) can drop them
    /// all (every query, host, variant and user). `{param}` is filled from the request's path
    /// by the route template (axum's `MatchedPath`): `"platform:{platform}"` on
    /// `/influencers/{platform}` tags `/influencers/twitter` with `platform:twitter`; `{*rest}`
    /// takes the rest of the path. Adds to the tags set before; handlers can add their own
    /// ([`CacheTags`](crate::CacheTags)).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new().route(
    ///     "/influencers/{platform}",
    ///     get(|| async { "[]" }).layer(cache.route().tags(["influencers", "platform:{platform}"])),
    /// );
    /// ```
    pub fn tags<I, S>(self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tags: Vec<Arc<str>> = tags.into_iter().map(|t| Arc::from(t.as_ref())).collect();
        self.with(|p| p.tags.extend(tags))
    }

    /// Entries of this route follow the named version of a path parameter's value: with
    /// `version_from("platform")`, `/influencers/twitter` is dropped by
    /// [`ResponseCache::incr_version("platform:twitter")`](crate::ResponseCache::incr_version).
    /// The same as `tags(["platform:{platform}"])`.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::default();
    /// let layer = cache.route().version_from("platform");
    /// # let _ = layer;
    /// ```
    pub fn version_from(self, param: &str) -> Self {
        self.tags([format!("{param}:{{{param}}}")])
    }

    /// On a per-route layer ([`ResponseCache::ttl`](crate::ResponseCache::ttl),
    /// [`ResponseCache::route`](crate::ResponseCache::route)): keep responses for `ttl` whatever
    /// the handler's `Cache-Control` says of lifetime (it can still refuse with `no-store`,
    /// `private` or `no-cache`).
    ///
    /// On the app-wide layer ([`ResponseCache::layer`](crate::ResponseCache::layer)): the
    /// lifetime of responses whose `Cache-Control` gives none (no `s-maxage` or `max-age`). The
    /// layer stays app-wide: a handler's own lifetime still wins, and routes with their own
    /// layer are still left to it.
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|p| match &mut p.mode {
            Mode::AppWide { default_ttl } => *default_ttl = Some(ttl),
            Mode::Route { ttl: t } => *t = ttl,
        })
    }

    /// Whether a POST, PUT, PATCH or DELETE through this layer that is answered `2xx` or `3xx`
    /// invalidates what it may have changed (RFC 9111 §4.4; default on): every entry of its
    /// path (as [`ResponseCache::invalidate_path`](crate::ResponseCache::invalidate_path) does:
    /// every query, host, `Vary` variant and user), and of the path its `Location` or
    /// `Content-Location` names when that is relative or on the request's host. Any other
    /// reference, or a malformed header, is ignored; an error response (`4xx`, `5xx`, or the
    /// service's `Err`) invalidates nothing.
    ///
    /// The invalidation completes before the response is returned, so the client's next GET
    /// misses (read-your-writes), and in the other processes sharing the store within
    /// [`invalidation_poll`](crate::ResponseCacheBuilder::invalidation_poll). It waits at most
    /// the cache's [`lookup_timeout`](crate::ResponseCacheBuilder::lookup_timeout); a store
    /// failure is logged and the response goes out unchanged. Under both the app-wide layer and
    /// a route's own layer, the route's layer decides and the write invalidates once.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new()
    ///     // A POST answered 201 with `Location: /items/7` drops `/items` and `/items/7`.
    ///     .route("/items", get(|| async { "[]" }).post(|| async { "made" }).layer(cache.route()))
    ///     // This route's writes (a counter) leave its cached pages alone.
    ///     .route(
    ///         "/stats",
    ///         get(|| async { "{}" })
    ///             .post(|| async { "counted" })
    ///             .layer(cache.route().invalidate_on_unsafe(false)),
    ///     );
    /// ```
    pub fn invalidate_on_unsafe(self, on: bool) -> Self {
        self.with(|p| p.invalidate_on_unsafe = on)
    }

    /// Fleet-wide stampede control (default off): before calling the handler for a missing
    /// key, the process that leads in-process coalescing takes a lease on the key in the store,
    /// for `time`. Processes that find it taken wait for the holder's entry, polling the store
    /// (every `wait / 10`, at most every 50 ms) and retrying the lease on each round, then
    /// answer it as a hit, counted as coalesced. A holder that dies leaves a lease that expires
    /// after `time`: a waiter then takes it. Past [`lease_wait`](Self::lease_wait) (default:
    /// `time`) a waiter calls the handler anyway; it never fails for want of the lease.
    ///
    /// The holder releases the lease once its entry is written, or when its flight ends
    /// otherwise (an unstorable response, a client gone). Pick `time` a little above the
    /// handler's slowest run: too short, and a second process computes while the first still
    /// runs. On Redis the lease is `SET <entry key>:lock <token> NX PX <time>` in the entry's
    /// slot; a Redis failure counts as a store error and the request goes to the handler. A
    /// store no other process shares ([`MemoryStore`](crate::MemoryStore)) grants every lease:
    /// in-process coalescing does it all. HEAD requests, shadowed layers and requests that
    /// skip the stored copy take no lease. A zero `time` turns it off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// // One process of the fleet computes `/trending`; the others wait up to 2 s for it.
    /// let layer = cache
    ///     .ttl(Duration::from_secs(900))
    ///     .lease(Duration::from_secs(5))
    ///     .lease_wait(Duration::from_secs(2));
    /// # #[cfg(feature = "axum")] {
    /// use axum::{routing::get, Router};
    /// let app: Router = Router::new().route("/trending", get(|| async { "[]" }).layer(layer));
    /// # }
    /// ```
    pub fn lease(self, time: Duration) -> Self {
        self.with(|p| p.lease.time = Some(time))
    }

    /// How long a request waits for another process's entry under
    /// [`lease`](Self::lease) before it calls the handler itself (default: the lease time).
    /// Has no effect without a lease; may be set before or after it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let layer = cache.route().lease(Duration::from_secs(10)).lease_wait(Duration::from_millis(500));
    /// # let _ = layer;
    /// ```
    pub fn lease_wait(self, wait: Duration) -> Self {
        self.with(|p| p.lease.wait = Some(wait))
    }

    /// Which query parameters make up the key (default [`Query::All`]: every parameter, sorted,
    /// tracking parameters dropped). One setting: calling it again, or
    /// [`vary_query`](Self::vary_query), replaces the previous choice.
    ///
    /// ```
    /// use tower_response_cache::{Query, ResponseCache};
    /// let cache = ResponseCache::default();
    /// let layer = cache.route().query(Query::Ignore);
    /// let a = http::Request::get("/feed?page=2").body(()).unwrap();
    /// let b = http::Request::get("/feed").body(()).unwrap();
    /// assert_eq!(layer.key_for(&a), layer.key_for(&b));
    /// ```
    pub fn query(self, query: Query) -> Self {
        let rule = match query {
            Query::All => QueryKey::All {
                keep_tracking: false,
            },
            Query::AllWithTracking => QueryKey::All {
                keep_tracking: true,
            },
            Query::Only(names) => QueryKey::Only(names),
            Query::Ignore => QueryKey::Only(Vec::new()),
        };
        self.with(|p| p.query = rule)
    }

    /// Key on these query parameters only; all others are ignored. Shorthand for
    /// [`query(Query::only(names))`](Self::query), and the same setting: the last call decides.
    pub fn vary_query<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.query(Query::only(names))
    }

    /// Key on these request headers too (Django's `vary_on_headers`). Headers named by the
    /// response's own `Vary` are learned without this.
    pub fn vary_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut names: Vec<HeaderName> = names.into_iter().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        self.with(|p| p.vary_headers = names)
    }

    /// The most variants of one URL kept when its responses name request headers in their
    /// own `Vary`; default 100.
    ///
    /// Values of `Accept`, `Accept-Language` and `Accept-Encoding` are normalised first, so
    /// `es`, `ES` and `es;q=1` are one variant; still, a client sending random values would make
    /// a new variant each. Past the cap, a response is served but not stored, with
    /// `Cache-Status: …; fwd=uri-miss; detail=too-many-variants`. A variant stops counting when
    /// its TTL ends or the URL is invalidated. Counted in each process: with a shared Redis
    /// store, each process stores up to `n`.
    ///
    /// Headers configured with [`vary_headers`](Self::vary_headers) are part of the URL's key,
    /// as query parameters are, and are not capped: name only headers with few values there.
    pub fn max_variants(self, n: usize) -> Self {
        self.with(|p| p.max_variants = n)
    }

    /// The statuses that may be stored (default: `200` only).
    pub fn statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let statuses = statuses.into_iter().collect();
        self.with(|p| p.statuses = statuses)
    }

    /// The largest body stored; larger ones pass through whole.
    pub fn max_body_size(self, bytes: usize) -> Self {
        self.with(|p| p.max_body_size = bytes)
    }

    /// Send `Cache-Control: max-age=<remaining TTL>` downstream, as Django does (default off:
    /// browser caching is left to the handler).
    pub fn downstream_max_age(self, on: bool) -> Self {
        self.with(|p| p.downstream_max_age = on)
    }

    /// Only these cookies mark a session and make a request bypass the cache; other cookies
    /// (themes, consent banners) are ignored and do not enter the key.
    pub fn session_cookies<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.with(|p| p.cookies = CookieRule::Session(names))
    }

    /// Declare the route independent of cookies: requests with cookies are served and stored.
    /// Responses that set cookies are still never stored.
    pub fn ignore_cookies(self) -> Self {
        self.with(|p| p.cookies = CookieRule::Ignore)
    }

    /// Cache per user: `identify` returns the caller's identity (from a verified session, not a
    /// raw token you have not checked), which is hashed into the key. Requests it returns `None`
    /// for follow the usual credential rules. Responses marked `private` may then be stored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::default();
    /// let layer = cache.ttl(Duration::from_secs(30)).per_user(|req: &http::request::Parts| {
    ///     req.extensions.get::<UserId>().map(|u| u.0.to_string())
    /// });
    /// #[derive(Clone)] struct UserId(u64);
    /// # let _ = layer;
    /// ```
    pub fn per_user<F>(self, identify: F) -> Self
    where
        F: Fn(&request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.with(|p| p.identity = Some(Arc::new(identify)))
    }

    /// How long after freshness ends an entry is still answered at once, stale, while one
    /// background request refreshes it (RFC 5861 `stale-while-revalidate`; default zero: off).
    /// A handler's `Cache-Control: stale-while-revalidate=N` overrides it for its response.
    ///
    /// Inside the window a request gets the stored response with its real `Age` and
    /// `Cache-Status: …; ttl=-N; fwd=stale` (N seconds past freshness), and, if no miss or
    /// refresh of the key is in flight and fewer than
    /// [`max_refreshes`](crate::ResponseCacheBuilder::max_refreshes) run, the request itself
    /// goes on to the handler in a spawned task whose response replaces the entry under the
    /// usual rules. The task completes even when the client goes away; a refresh answer that
    /// may not be stored is dropped, never served, and the stale entry lasts to the end of its
    /// window. A shadowed layer, a HEAD and a client's honoured `no-cache` start no refresh.
    /// The store keeps each entry for its TTL plus its longest window.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[cfg(feature = "axum")] {
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// // Fresh for a minute; for ten more, answered at once while one request refreshes it.
    /// let app: Router = Router::new().route(
    ///     "/trending",
    ///     get(|| async { "[]" }).layer(
    ///         cache
    ///             .ttl(Duration::from_secs(60))
    ///             .stale_while_revalidate(Duration::from_secs(600)),
    ///     ),
    /// );
    /// # }
    /// ```
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        self.with(|p| p.grace.stale_while_revalidate = secs(window))
    }

    /// How long after freshness ends an entry may answer in place of the handler's failure
    /// (RFC 5861 `stale-if-error`; default zero: off). A handler's
    /// `Cache-Control: stale-if-error=N` overrides it for its response.
    ///
    /// Past freshness (and past any stale-while-revalidate window) but inside this one, the
    /// request goes to the handler as a miss; when the handler returns `Err`, a `5xx` or
    /// panics, or takes longer than [`origin_timeout`](Self::origin_timeout), the stale entry
    /// is served instead, with `Cache-Status: …; ttl=-N; fwd=stale; detail=origin-error`, and
    /// the error (its body unread) is dropped. Outside the window, or for a request that
    /// bypasses the cache, the error goes out as it is; a panic with no stale entry to serve
    /// unwinds as before.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[cfg(feature = "axum")] {
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// // If the database is down, yesterday's page beats an error page.
    /// let app: Router = Router::new().route(
    ///     "/report",
    ///     get(|| async { "report" }).layer(
    ///         cache
    ///             .ttl(Duration::from_secs(300))
    ///             .stale_if_error(Duration::from_secs(86_400))
    ///             .origin_timeout(Duration::from_secs(5)),
    ///     ),
    /// );
    /// # }
    /// ```
    pub fn stale_if_error(self, window: Duration) -> Self {
        self.with(|p| p.grace.stale_if_error = secs(window))
    }

    /// How long the handler may take when a stale entry inside its
    /// [`stale_if_error`](Self::stale_if_error) window could answer instead (default: no
    /// limit). Past it the stale entry is served as for an error, and the handler's future is
    /// dropped (cancelled at its next `.await`); its entry is not refreshed by it. Requests
    /// with no stale entry to fall back on wait for the handler as long as it takes.
    pub fn origin_timeout(self, timeout: Duration) -> Self {
        self.with(|p| p.origin_timeout = Some(timeout))
    }

    /// Probabilistic early refresh ("XFetch", Vattani et al., *Optimal Probabilistic Cache
    /// Stampede Prevention*): a fresh hit may start the background refresh a
    /// [`stale_while_revalidate`](Self::stale_while_revalidate) answer starts, before the entry
    /// expires, so a hot key is replaced before anyone finds it stale or missing and its expiry
    /// does not line up across a fleet. Off by default; `1.0` is the paper's default, larger
    /// refreshes earlier, `0.0` never. A negative or NaN `beta` is clamped to `0.0` (off).
    ///
    /// A hit with `r` milliseconds of freshness left refreshes when
    /// `compute * beta * -ln(U) >= r`, `U` uniform in (0, 1] and `compute` how long the
    /// handler took to make the entry: the slower the handler and the nearer the expiry, the
    /// likelier. An entry whose handler took under a millisecond never refreshes early. The
    /// hit is answered and counted as the usual hit; the refresh follows the usual rules (one
    /// per key, at most [`max_refreshes`](crate::ResponseCacheBuilder::max_refreshes), with a
    /// [`lease`](Self::lease) only in the process holding it; not for a HEAD nor a shadowed
    /// layer) and is counted in
    /// [`RouteStats::early_refreshes`](crate::RouteStats::early_refreshes).
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[cfg(feature = "axum")] {
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new().route(
    ///     "/trending",
    ///     get(|| async { "[]" }).layer(cache.ttl(Duration::from_secs(60)).early_refresh(1.0)),
    /// );
    /// # }
    /// ```
    pub fn early_refresh(self, beta: f64) -> Self {
        // `max` turns NaN into 0.0 as well.
        let beta = beta.max(0.0);
        self.with(|p| p.early_refresh = (beta > 0.0).then_some(beta))
    }

    /// Let a client's `Cache-Control: no-cache` or `Pragma: no-cache` skip the stored copy
    /// (default off: otherwise any client can force the expensive path).
    pub fn honor_client_no_cache(self, on: bool) -> Self {
        self.with(|p| p.honor_client_no_cache = on)
    }

    /// Bypass the cache for requests `matches` picks out, with `Cache-Status: …; fwd=bypass;
    /// detail=<reason>`: they are neither looked up nor stored, like requests with
    /// `Authorization`. For credentials the layer cannot see itself: an API-key header, an
    /// mTLS principal or a user an auth layer put in the request's extensions. Hooks run on
    /// GET and HEAD requests, the cache's own (see
    /// [`ResponseCacheBuilder::bypass_when`](crate::ResponseCacheBuilder::bypass_when)) first,
    /// then the layer's in the order added; the first that matches names the reason. They run
    /// before [`per_user`](Self::per_user) is asked. Metrics count them under
    /// [`BypassReason::Custom`](crate::BypassReason::Custom).
    ///
    /// A hook covers the requests its layer handles. A route's own layer wins over the app-wide
    /// layer, so a hook added to the app-wide layer alone does not reach routes with their own
    /// layer: declare credentials on the builder to cover every layer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    /// # #[derive(Clone)] struct Principal;
    /// let cache = ResponseCache::default();
    /// let layer = cache
    ///     .ttl(Duration::from_secs(60))
    ///     .bypass_when("api-key", |req: &http::request::Parts| {
    ///         req.headers.contains_key("x-api-key")
    ///     })
    ///     .bypass_when("mtls", |req: &http::request::Parts| {
    ///         req.extensions.get::<Principal>().is_some()
    ///     });
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    /// When `reason` is not an RFC 8941 token (a letter, then letters, digits or any of
    /// ``!#$%&'*+-.^_`|~:/``), as `Cache-Status` requires.
    pub fn bypass_when<F>(self, reason: &'static str, matches: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        let hook = BypassHook::new(reason, matches);
        self.with(|p| p.bypass_hooks.push(hook))
    }
}

/// Which query parameters make up a route's key; see [`CacheLayer::query`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// Every parameter, sorted, with tracking parameters (`utm_*`, `gclid`, `fbclid`, …)
    /// dropped: they identify a visitor's campaign, not the resource. The default.
    #[default]
    All,
    /// Every parameter, tracking parameters included.
    AllWithTracking,
    /// Only the parameters with these names; all others are ignored.
    Only(Vec<String>),
    /// None: the query string is ignored.
    Ignore,
}

impl Query {
    /// [`Query::Only`] from any list of names.
    pub fn only<I, N>(names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        Self::Only(names.into_iter().map(Into::into).collect())
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            shared: self.shared.clone(),
            policy: self.policy.clone(),
            route: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Query;
    use crate::ResponseCache;

    fn same(layer: &super::CacheLayer, a: &str, b: &str) -> bool {
        let req = |uri: &str| http::Request::get(uri).body(()).unwrap();
        layer.key_for(&req(a)) == layer.key_for(&req(b))
    }

    #[test]
    fn each_query_choice_keys_as_documented() {
        let cache = ResponseCache::default();
        let all = cache.route();
        assert!(same(&all, "/p?b=2&a=1&utm_source=x", "/p?a=1&b=2"));
        assert!(!same(&all, "/p?a=1", "/p?a=2"));

        let tracking = cache.route().query(Query::AllWithTracking);
        assert!(!same(&tracking, "/p?a=1&utm_source=x", "/p?a=1"));
        assert!(same(
            &tracking,
            "/p?utm_source=x&a=1",
            "/p?a=1&utm_source=x"
        ));

        let only = cache.route().query(Query::only(["limit"]));
        assert!(same(&only, "/p?limit=5&page=2", "/p?limit=5"));
        assert!(!same(&only, "/p?limit=5", "/p?limit=6"));

        let ignore = cache.route().query(Query::Ignore);
        assert!(same(&ignore, "/p?limit=5&page=2", "/p"));
    }

    #[test]
    fn the_last_query_choice_wins() {
        let cache = ResponseCache::default();
        let layer = cache.route().vary_query(["limit"]).query(Query::Ignore);
        assert!(same(&layer, "/p?limit=5", "/p?limit=6"));
        let layer = cache.route().query(Query::Ignore).vary_query(["limit"]);
        assert!(!same(&layer, "/p?limit=5", "/p?limit=6"));
        assert!(same(&layer, "/p?limit=5&page=1", "/p?limit=5"));
    }
}
