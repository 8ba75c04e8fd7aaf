//! The low-level API (Django's `cache.get/set/get_or_set/incr/delete_pattern` and
//! `{% cache %}`): any serde value by a readable key, on the same store as the responses.
//!
//! A value lives under `<prefix>:v:<key>`, in the [`envelope`] format: a value that does not
//! decode (corrupt, written by another program or a future format) is a miss, never an error.
//! Reads are fail-open like the layers' lookups: a store failure is a miss, logged and counted
//! as a `store_error` under the [`VALUES_ROUTE`] label of [`Metrics`](crate::Metrics).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::log::log_store_error;
use crate::store::glob;
use crate::{ResponseCache, StoreError, StoreErrorKind};

mod envelope;

use crate::value_flight::Turn;

/// The [`Metrics`](crate::Metrics) label the low-level API counts under: `hits` and `misses`
/// of [`get`](ResponseCache::get) and [`get_or_insert_with`](ResponseCache::get_or_insert_with)
/// (a caller served by another's computation is a hit), `stores`, and `store_errors`.
pub const VALUES_ROUTE: &str = "values";

impl ResponseCache {
    /// The value under `key`, or `None` when there is none, it expired on the cache's clock,
    /// it does not decode as a `T`, or the store failed (logged: fail-open, like the layers).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// cache.set("greeting", &"hello", Duration::from_secs(60)).await?;
    /// assert_eq!(cache.get::<String>("greeting").await.as_deref(), Some("hello"));
    /// assert_eq!(cache.get::<String>("nothing").await, None);
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let found = self.read(&self.value_key(key)).await;
        let found = found.unwrap_or_else(|e| self.failed(&e));
        self.count(found.is_some());
        found
    }

    /// Stores `value` under `key` for `ttl` (Django's `cache.set`). Integers are stored as
    /// plain counters, so [`incr`](Self::incr) can add to them; a counter expires by the
    /// store's clock alone, any other value also by the cache's [`Clock`](crate::Clock).
    ///
    /// # Errors
    /// When the store fails, or (kind [`StoreErrorKind::Encode`]) `value` does not serialise.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// cache.set("top:twitter", &vec!["ada", "grace"], Duration::from_secs(60)).await?;
    /// let top: Vec<String> = cache.get("top:twitter").await.unwrap();
    /// assert_eq!(top, ["ada", "grace"]);
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StoreError::new(StoreErrorKind::Encode, format!("{key}: {e}")))?;
        self.write(&self.value_key(key), &json, ttl).await
    }

    /// Removes the value under `key` (Django's `cache.delete`); whether there was one.
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # use std::time::Duration;
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// cache.set("k", &1.5, Duration::from_secs(60)).await?;
    /// assert!(cache.remove("k").await?);
    /// assert!(!cache.remove("k").await?);
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.shared.store.remove_value(&self.value_key(key)).await
    }

    /// Adds `delta` to the counter under `key`, atomically across every process on the store,
    /// and returns the new count (Django's `cache.incr`, Redis's `INCRBY`).
    ///
    /// A missing counter starts at 0 and has no time to live: it stays until removed, cleared
    /// or evicted (by the memory store's bound, or Redis's `maxmemory` policy). An existing
    /// one keeps its time to live, so to make a counter that expires, [`set`](Self::set) it
    /// first: `cache.set("hits", &0, ttl)`. [`get::<i64>`](Self::get) reads it.
    ///
    /// # Errors
    /// When the store fails, or (kind [`StoreErrorKind::Corrupt`]) the value under `key` is
    /// not an integer or the sum overflows an `i64`; the value is then left as it was.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// assert_eq!(cache.incr("version:twitter", 1).await?, 1);
    /// assert_eq!(cache.incr("version:twitter", 5).await?, 6);
    /// assert_eq!(cache.get::<i64>("version:twitter").await, Some(6));
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.shared
            .store
            .incr_value(&self.value_key(key), delta)
            .await
    }

    /// Subtracts `delta` from the counter under `key`: [`incr`](Self::incr) by `-delta`.
    ///
    /// # Errors
    /// As [`incr`](Self::incr); also when `delta` is `i64::MIN`, which has no negation.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// cache.incr("seats", 10).await?;
    /// assert_eq!(cache.decr("seats", 3).await?, 7);
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn decr(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let Some(delta) = delta.checked_neg() else {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("{key}: cannot subtract i64::MIN"),
            ));
        };
        self.incr(key, delta).await
    }

    /// The value under `key`, or else `compute()`'s, stored for `ttl` (Django's
    /// `cache.get_or_set`).
    ///
    /// Concurrent callers of one key in this process run one computation: the others wait for
    /// it (up to the cache's [`coalesce_wait`], then compute themselves) and get its result.
    /// Never fails: a store that is down, slow or holding something undecodable means
    /// `compute()` runs and its value is returned (and stored when the store takes it).
    ///
    /// [`coalesce_wait`]: crate::ResponseCacheBuilder::coalesce_wait
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// async fn top_influencers(platform: &str) -> Vec<String> {
    ///     vec![format!("{platform}-star")] // the slow query
    /// }
    ///
    /// let cache = ResponseCache::default();
    /// let ttl = Duration::from_secs(60);
    /// let top = cache
    ///     .get_or_insert_with("top:twitter", ttl, || top_influencers("twitter"))
    ///     .await;
    /// assert_eq!(top, ["twitter-star"]);
    /// // Now cached: the closure does not run.
    /// let again: Vec<String> = cache
    ///     .get_or_insert_with("top:twitter", ttl, || async { unreachable!() })
    ///     .await;
    /// assert_eq!(again, top);
    /// # });
    /// ```
    pub async fn get_or_insert_with<T, F, Fut>(&self, key: &str, ttl: Duration, compute: F) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let key = self.value_key(key);
        let first = self.read(&key).await;
        let store_up = first.is_ok();
        if let Some(found) = first.unwrap_or_else(|e| self.failed(&e)) {
            self.count(true);
            return found;
        }
        let wait = self.shared.coalesce_wait;
        let lead = loop {
            if wait.is_zero() {
                break None;
            }
            let waited = match self.shared.value_flights.join(&key) {
                Turn::Lead(lead) => break Some(lead),
                Turn::Landed(json) => Some(json),
                Turn::Wait(w) => match tokio::time::timeout(wait, w.landed()).await {
                    Ok(None) => continue, // the leader went away: one of us leads now
                    Ok(Some(json)) => Some(json),
                    Err(_) => break None, // waited long enough: compute alone
                },
            };
            if let Some(found) = waited.and_then(|json| serde_json::from_slice(&json).ok()) {
                self.count(true);
                return found;
            }
            break None;
        };
        if lead.is_some() && store_up {
            // A flight that ended between our read and our join has written the value.
            if let Ok(Some(found)) = self.read(&key).await {
                self.count(true);
                return found;
            }
        }
        self.count(false);
        let value = compute().await;
        match serde_json::to_vec(&value) {
            Ok(json) => {
                let json = Bytes::from(json);
                if let Some(lead) = &lead {
                    lead.publish(json.clone());
                }
                if let Err(e) = self.write(&key, &json, ttl).await {
                    log_store_error(&e); // and the value is returned all the same
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "value does not serialise; not cached"),
        }
        drop(lead);
        value
    }

    /// Removes every value whose key matches the Redis glob `pattern` (`*`, `?`, `[a-z]`,
    /// `[^x]`, `\` escapes; django-redis's `delete_pattern`); how many were removed. Only this
    /// cache's values are matched (the pattern is applied under `<prefix>:v:`), never its
    /// responses. On Redis: paged `SCAN` + `UNLINK` on every primary of a cluster, never `KEYS`.
    ///
    /// # Errors
    /// When the store fails; some values may have been removed by then.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # use std::time::Duration;
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// let ttl = Duration::from_secs(60);
    /// cache.set("user:1:profile", &"ada", ttl).await?;
    /// cache.set("user:2:profile", &"grace", ttl).await?;
    /// cache.set("site:motd", &"hi", ttl).await?;
    /// assert_eq!(cache.remove_pattern("user:*").await?, 2);
    /// assert_eq!(cache.get::<String>("site:motd").await.as_deref(), Some("hi"));
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn remove_pattern(&self, pattern: &str) -> Result<u64, StoreError> {
        let full = format!("{}:v:{pattern}", glob::escape(&self.shared.prefix));
        self.shared.store.remove_values_matching(&full).await
    }

    /// The key of a fragment, like Django's `make_template_fragment_key`: readable
    /// `fragment:<name>:<hash of the vary parts>`, so [`remove`](Self::remove) drops one
    /// variant and `remove_pattern("fragment:<name>:*")` all of them.
    ///
    /// ```
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// let key = cache.fragment_key("platform_stats", &["twitter"]);
    /// assert!(key.starts_with("fragment:platform_stats:"));
    /// assert_ne!(key, cache.fragment_key("platform_stats", &["mastodon"]));
    /// // Parts are length-delimited: ["ab", "c"] and ["a", "bc"] differ.
    /// assert_ne!(cache.fragment_key("f", &["ab", "c"]), cache.fragment_key("f", &["a", "bc"]));
    /// ```
    #[must_use]
    pub fn fragment_key(&self, name: &str, vary: &[&str]) -> String {
        let mut h = Sha256::new();
        for part in vary {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let mut key = format!("fragment:{name}:");
        for b in &digest[..16] {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }

    /// A rendered fragment (Django's `{% cache ttl name vary… %}`): the `String` stored under
    /// [`fragment_key(name, vary)`](Self::fragment_key), or else `render()`'s, stored for
    /// `ttl`; as [`get_or_insert_with`](Self::get_or_insert_with), coalesced and fail-open.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// let platform = "twitter";
    /// let html = cache
    ///     .fragment("platform_stats", &[platform], Duration::from_secs(600), || async {
    ///         format!("<section>{platform}: 42 influencers</section>")
    ///     })
    ///     .await;
    /// assert_eq!(html, "<section>twitter: 42 influencers</section>");
    /// # });
    /// ```
    pub async fn fragment<F, Fut>(
        &self,
        name: &str,
        vary: &[&str],
        ttl: Duration,
        render: F,
    ) -> String
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = String>,
    {
        let key = self.fragment_key(name, vary);
        self.get_or_insert_with(&key, ttl, render).await
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.shared.prefix)
    }

    /// The value under the full `key`: `None` when there is none or it does not decode, is
    /// expired on the cache's clock, or carries a stamp this build cannot check.
    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.shared.store.get_value(key).await? else {
            return Ok(None);
        };
        let Some(value) = envelope::decode(&bytes) else {
            return Ok(None);
        };
        let expired = value
            .expires_at
            .is_some_and(|at| self.shared.clock.now_millis() >= at);
        // A non-empty stamp: written by a build that stamps values, which this one cannot check.
        if expired || !value.stamp.is_empty() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(value.json).ok())
    }

    /// A failed read: logged, counted, and a miss.
    fn failed<T>(&self, e: &StoreError) -> Option<T> {
        self.shared.metrics.route(VALUES_ROUTE).store_error_of(e);
        log_store_error(e);
        None
    }

    async fn write(&self, key: &str, json: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at = self.shared.clock.now_millis().saturating_add(ttl_millis);
        let stored = envelope::encode(json, expires_at);
        let counters = self.shared.metrics.route(VALUES_ROUTE);
        match self.shared.store.put_value(key, stored, ttl).await {
            Ok(()) => {
                counters.stored(json.len());
                Ok(())
            }
            Err(e) => {
                counters.store_error_of(&e);
                Err(e)
            }
        }
    }

    fn count(&self, hit: bool) {
        let counters = self.shared.metrics.route(VALUES_ROUTE);
        if hit {
            counters.hit();
        } else {
            counters.miss();
        }
    }
}
