//! The cache handle: one store, one key namespace and one set of metrics, from which the
//! app-wide and per-route layers are made.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::coalesce::Flights;
use crate::generations::{Gens, DEFAULT_POLL};
use crate::metrics::Judge;
use crate::policy::{BypassHook, Mode, RoutePolicy, DEFAULT_MAX_BODY};
use crate::shared::Shared;
use crate::shared::NEXT_ID;
use crate::variants::Variants;
use crate::{
    CacheKey, CacheLayer, Clock, MemoryStore, Metrics, Purge, RouteStats, Store, StoreError,
    SystemClock,
};

/// A response cache: the store, key prefix, namespace version and metrics that its layers share.
///
/// Cloning is cheap and shares everything. Make layers from it: [`layer`](Self::layer) for the
/// app-wide layer that stores what handlers mark cacheable, [`ttl`](Self::ttl) or
/// [`route`](Self::route) for a route with its own policy.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_response_cache::ResponseCache;
///
/// let cache = ResponseCache::builder()
///     .key_prefix("twiscope")
///     .default_ttl(Duration::from_secs(300))
///     .build();
/// let app: Router = Router::new()
///     .route("/trending", get(|| async { "top" }).layer(cache.ttl(Duration::from_secs(900))))
///     .route("/about", get(|| async { "about" }).layer(cache.route()))
///     .layer(cache.layer());
/// ```
#[derive(Clone)]
pub struct ResponseCache {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("ResponseCache")
            .field("store", &s.store)
            .field("prefix", &s.prefix)
            .field("version", &s.version)
            .field("invalidation", &s.gens)
            .field("default_ttl", &s.default_ttl)
            .finish_non_exhaustive()
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ResponseCache {
    /// Starts configuring a cache; the default store is a 128 MiB [`MemoryStore`].
    pub fn builder() -> ResponseCacheBuilder {
        ResponseCacheBuilder::default()
    }

    /// The app-wide layer: stores a response only when the handler's `Cache-Control` gives it a
    /// lifetime (`s-maxage` over `max-age`), and leaves routes with their own layer to it.
    pub fn layer(&self) -> CacheLayer {
        self.layer_with(Mode::AppWide { default_ttl: None })
    }

    /// A per-route layer with the cache's default TTL.
    pub fn route(&self) -> CacheLayer {
        self.ttl(self.shared.default_ttl)
    }

    /// A per-route layer that keeps responses for `ttl`, like Django's `cache_page(ttl)`.
    pub fn ttl(&self, ttl: Duration) -> CacheLayer {
        self.layer_with(Mode::Route { ttl })
    }

    fn layer_with(&self, mode: Mode) -> CacheLayer {
        let mut policy = RoutePolicy::new(mode, self.shared.max_body_size);
        policy.shadow = self.shared.shadow;
        CacheLayer::new(self.shared.clone(), policy)
    }

    /// The per-route counters.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Per route, sorted by route: the counters, the hit ratio, the mean handler and hit times,
    /// the time the hits saved and whether caching pays there ([`RouteStats::verdict`]). A
    /// route judged not to pay is logged once, as a warning, whether or not this is called.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder().build();
    /// for route in cache.stats() {
    ///     println!(
    ///         "{}: {:.0}% hits, saved {:?}: {}",
    ///         route.route,
    ///         route.hit_ratio() * 100.0,
    ///         route.time_saved,
    ///         route.verdict
    ///     );
    /// }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Vec<RouteStats> {
        self.shared.metrics.snapshot()
    }

    /// The store behind this cache.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The key prefix.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The namespace version configured with [`ResponseCacheBuilder::version`], part of every
    /// key. [`bump_version`](Self::bump_version) moves the namespace version kept in the store
    /// on top of it; [`namespace_version`](Self::namespace_version) reads both.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.shared.version
    }

    /// Removes the entry under `key` and every `Vary` variant of it; how many were removed
    /// from the store.
    ///
    /// A key [`CacheLayer::key_for`] made from a request naming no host (no `Host` header, no
    /// authority) also stops every other entry of that URL being served — every host, `Vary`
    /// variant and user, in every process sharing the store — by bumping the URL's generation
    /// (as [`invalidate_path`](Self::invalidate_path) does for a path): those are not removed
    /// from the store, nor counted, but never served again; they expire in place.
    ///
    /// ```
    /// use http::Request;
    /// use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// let layer = cache.route();
    /// let key = layer.key_for(&Request::get("/items?page=1").body(()).unwrap());
    /// assert_eq!(cache.invalidate(&key).await.unwrap(), 0); // nothing was stored yet
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails.
    pub async fn invalidate(&self, key: &CacheKey) -> Result<u64, StoreError> {
        if let Some(url) = key.every_host() {
            self.shared
                .gens
                .bump(std::slice::from_ref(url), Purge::Hard)
                .await?;
        }
        let primary = key.without_variant();
        self.shared.vary.invalidate(primary.primary());
        self.shared.variants.forget(primary.primary());
        let removed = u64::from(self.shared.store.remove(&primary).await?);
        let variants = format!("{primary}:");
        Ok(removed + self.shared.store.clear_prefix(&variants).await?)
    }

    /// Waits until every write in flight to the store has finished: before shutting down, or
    /// in a test that reads the store right after a miss. Writes that start meanwhile may be
    /// skipped (as when the bound of [`max_writes_in_flight`] is reached).
    ///
    /// [`max_writes_in_flight`]: ResponseCacheBuilder::max_writes_in_flight
    pub async fn flush(&self) {
        let shared = &self.shared;
        // Holding every permit at once means no write is running.
        drop(shared.writes.acquire_many(shared.max_writes).await);
    }

    /// Removes every entry under this cache's key prefix from the store.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        self.shared.vary.invalidate_all();
        self.shared.variants.forget_all();
        let prefix = format!("{}:", self.shared.prefix);
        self.shared.store.clear_prefix(&prefix).await
    }
}

/// Configures a [`ResponseCache`].
#[derive(Debug)]
#[must_use]
pub struct ResponseCacheBuilder {
    store: Option<Arc<dyn Store>>,
    prefix: String,
    name: String,
    version: u64,
    invalidation_poll: Duration,
    default_ttl: Duration,
    max_body_size: usize,
    clock: Arc<dyn Clock>,
    coalesce_wait: Duration,
    bypass_hooks: Vec<BypassHook>,
    lookup_timeout: Option<Duration>,
    max_writes: u32,
    max_refreshes: usize,
    metrics_namespace: String,
    judge: Judge,
    shadow: bool,
}

impl Default for ResponseCacheBuilder {
    fn default() -> Self {
        Self {
            store: None,
            prefix: "trc".to_owned(),
            name: "tower-response-cache".to_owned(),
            version: 1,
            invalidation_poll: DEFAULT_POLL,
            default_ttl: Duration::from_secs(300),
            max_body_size: DEFAULT_MAX_BODY,
            clock: Arc::new(SystemClock),
            coalesce_wait: Duration::from_secs(10),
            bypass_hooks: Vec::new(),
            lookup_timeout: None,
            max_writes: 64,
            max_refreshes: 32,
            metrics_namespace: "http".to_owned(),
            judge: Judge::default(),
            shadow: false,
        }
    }
}

impl ResponseCacheBuilder {
    /// Where entries live (default: a 128 MiB [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared behind an `Arc`.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts every key (Django's `KEY_PREFIX`; default `trc`). Caches with different prefixes
    /// never see each other's entries, even in one store.
    ///
    /// # Panics
    /// When `prefix` contains `{` or `}`: Redis Cluster hashes only what is between the first
    /// braces of a key, so a brace in the prefix would send every key to one slot (or split a
    /// URL's entries across slots). `CacheConfig` (feature `config`) reports the same
    /// mistake as a `key_prefix` error instead.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            !prefix.contains(['{', '}']),
            "key_prefix {prefix:?} contains `{{` or `}}`, which would break Redis Cluster hash tags"
        );
        self.prefix = prefix;
        self
    }

    /// The cache's name in `Cache-Status` (default `tower-response-cache`). Characters outside
    /// an RFC 8941 token are replaced by `-`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The namespace version in every key (Django's `VERSION`; default 1).
    /// [`ResponseCache::bump_version`] moves the version kept in the store on top of it.
    pub fn version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// How often the cache reads a remote store's invalidation sequence (default 1 s): another
    /// process's invalidation ([`ResponseCache::invalidate_tag`] and the others,
    /// [`ResponseCache::bump_version`]) is seen here within this interval plus one round trip;
    /// this process's own at once. The poll is one small read (`HMGET` on Redis) per interval,
    /// from a task that starts with the first request and ends when the cache is dropped. A
    /// store that answers in process ([`MemoryStore`]) is read directly and never polled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder()
    ///     .invalidation_poll(Duration::from_millis(250))
    ///     .build();
    /// # let _ = cache;
    /// ```
    ///
    /// # Panics
    /// When `every` is zero.
    pub fn invalidation_poll(mut self, every: Duration) -> Self {
        assert!(!every.is_zero(), "invalidation_poll must be more than zero");
        self.invalidation_poll = every;
        self
    }

    /// The TTL of [`ResponseCache::route`] layers (Django's `TIMEOUT`; default 300 s).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The largest body any layer of this cache stores (default 1 MiB); routes may lower or
    /// raise it.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Where the cache reads the time (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether the cache's layers start in shadow mode (default `false`): each layer looks up,
    /// counts and stores, but answers from the handler; see [`CacheLayer::shadow`], which
    /// overrides this per layer.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// // Everything in shadow while measuring, but `/search` serves already.
    /// let cache = ResponseCache::builder().shadow(true).build();
    /// let search = cache.route().shadow(false);
    /// # let _ = search;
    /// ```
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// Stampede protection: how long a miss waits for a concurrent miss of the same key to fill
    /// the entry before calling the handler itself (default 10 s; zero turns coalescing off).
    pub fn coalesce_wait(mut self, wait: Duration) -> Self {
        self.coalesce_wait = wait;
        self
    }

    /// Bypass the cache, in every layer made from it, for requests `matches` picks out, with
    /// `Cache-Status: …; fwd=bypass; detail=<reason>`; see [`CacheLayer::bypass_when`], which
    /// adds a hook to one layer. Use it for credentials the cache cannot see, so no layer
    /// forgets them:
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder()
    ///     .bypass_when("api-key", |req: &http::request::Parts| {
    ///         req.headers.contains_key("x-api-key")
    ///     })
    ///     .build();
    /// # let _ = cache;
    /// ```
    ///
    /// # Panics
    /// When `reason` is not an RFC 8941 token (a letter, then letters, digits or any of
    /// ``!#$%&'*+-.^_`|~:/``), as `Cache-Status` requires.
    pub fn bypass_when<F>(mut self, reason: &'static str, matches: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.bypass_hooks.push(BypassHook::new(reason, matches));
        self
    }

    /// How long one request may spend reading the store in all before it gives up and calls
    /// the handler (default: the store's own [`Store::lookup_timeout`], one command timeout for
    /// Redis, none for memory).
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// How many entries may be on their way to a store that answers later (Redis) at once
    /// (default 64). A miss's response never waits for its write; past this bound, when the
    /// store is slow or stalled, a write is skipped and counted as a store error rather than
    /// queued. At least 1.
    pub fn max_writes_in_flight(mut self, writes: u32) -> Self {
        self.max_writes = writes.max(1);
        self
    }

    /// How many background refreshes of stale entries may run at once in this cache (default
    /// 32; see [`CacheLayer::stale_while_revalidate`](crate::CacheLayer::stale_while_revalidate)).
    /// Past it a stale entry is still served, its refresh is skipped and counted
    /// ([`RouteStats::refreshes_skipped`](crate::RouteStats::refreshes_skipped)), and a later
    /// request starts it. At least 1.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// // At most 4 handlers run in the background at once, whatever expires together.
    /// let cache = ResponseCache::builder().max_refreshes(4).build();
    /// ```
    pub fn max_refreshes(mut self, refreshes: usize) -> Self {
        self.max_refreshes = refreshes.max(1);
        self
    }

    /// The first word of every metric name (default `http`): `{namespace}_cache_hits_total`
    /// and the rest of [the table](crate::Metrics), as recorded through the `metrics` facade
    /// (feature `metrics`). Set it to keep the names a dashboard already uses.
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder().metrics_namespace("twiscope").build();
    /// # let _ = cache;
    /// ```
    pub fn metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metrics_namespace = namespace.into();
        self
    }

    /// The hit ratio under which caching does not pay on a route (default 0.8, 80 %): see
    /// [`Verdict`](crate::Verdict).
    ///
    /// ```
    /// use tower_response_cache::ResponseCache;
    /// let cache = ResponseCache::builder()
    ///     .target_hit_ratio(0.5)
    ///     .verdict_min_requests(1_000)
    ///     .build();
    /// # let _ = cache;
    /// ```
    pub fn target_hit_ratio(mut self, ratio: f64) -> Self {
        self.judge.target_hit_ratio = ratio;
        self
    }

    /// How many hits plus misses a route must have seen before it is judged (default 100): see
    /// [`Verdict`](crate::Verdict).
    pub fn verdict_min_requests(mut self, requests: u64) -> Self {
        self.judge.min_requests = requests;
        self
    }

    /// Builds the cache.
    #[must_use]
    pub fn build(self) -> ResponseCache {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '*') {
            name
        } else {
            format!("c{name}")
        };
        let store = self.store.unwrap_or_else(|| {
            Arc::new(MemoryStore::default().metrics_namespace(&self.metrics_namespace))
        });
        let probe = CacheKey::from_parts(&self.prefix, &[b"probe"]);
        let answers_now = store.get_now(&probe).is_some();
        let lookup_timeout = self.lookup_timeout.or_else(|| store.lookup_timeout());
        let prefix: Arc<str> = Arc::from(self.prefix);
        let gens = Arc::new(Gens::new(
            store.clone(),
            prefix.clone(),
            self.invalidation_poll,
        ));
        ResponseCache {
            shared: Arc::new(Shared {
                store,
                answers_now,
                prefix,
                status_prefix: format!("{name}; "),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                version: self.version,
                gens,
                default_ttl: self.default_ttl,
                max_body_size: self.max_body_size,
                clock: self.clock,
                metrics: Metrics::new(&self.metrics_namespace, self.judge),
                delegated: RwLock::default(),
                vary: moka::sync::Cache::new(100_000),
                variants: Variants::new(),
                varied: std::sync::atomic::AtomicBool::new(false),
                flights: Flights::new(),
                coalesce_wait: self.coalesce_wait,
                shadow: self.shadow,
                bypass_hooks: self.bypass_hooks,
                lookup_timeout,
                writes: Arc::new(tokio::sync::Semaphore::new(self.max_writes as usize)),
                max_writes: self.max_writes,
                refreshes: Arc::new(tokio::sync::Semaphore::new(self.max_refreshes)),
                #[cfg(feature = "values")]
                value_flights: crate::value_flight::Flights::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ResponseCache;

    #[test]
    #[should_panic(expected = "would break Redis Cluster hash tags")]
    fn key_prefix_rejects_hash_tag_braces() {
        let _ = ResponseCache::builder().key_prefix("app{1}");
    }

    #[test]
    fn key_prefix_accepts_plain_names() {
        let cache = ResponseCache::builder().key_prefix("app:v2").build();
        assert_eq!(cache.key_prefix(), "app:v2");
    }
}
