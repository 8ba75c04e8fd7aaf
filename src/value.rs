//! The low-level API (Django's `cache.get/set/get_or_set/incr/delete_pattern` and
//! `{% cache %}`): any serde value by a readable key, on the same store as the responses.
//!
//! A value lives under `<prefix>:v:<key>`, in the [`envelope`] format: a value that does not
//! decode (corrupt, written by another program or a future format) is a miss, never an error.
//! Every value but a counter carries an invalidation stamp (the namespace `*` and its tags, see
//! [`generations`](crate::generations)) and is checked on every read as a response is: an
//! invalidated value is a miss, a soft-invalidated one too (no value is served stale). Reads are fail-open like the layers' lookups: a store failure is
//! a miss, logged and counted as a `store_error` under the [`VALUES_ROUTE`] label of
//! [`Metrics`](crate::Metrics).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::Stamp;
use crate::log::log_store_error;
use crate::names::{tag_name, NAMESPACE};
use crate::store::{glob, Validity};
use crate::{ResponseCache, StoreError, StoreErrorKind};

mod compute;
mod envelope;

/// The [`Metrics`](crate::Metrics) label the low-level API counts under: `hits` and `misses`
/// of [`get`](ResponseCache::get) and [`get_or_insert_with`](ResponseCache::get_or_insert_with)
/// (a caller served by another's computation is a hit), `invalidated` (values found
/// invalidated, which are misses too), `stores`, and `store_errors`.
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

    /// Stores `value` under `key` for `ttl` (Django's `cache.set`). It is served until it
    /// expires on the cache's [`Clock`](crate::Clock) or
    /// [`bump_version`](Self::bump_version) moves the namespace; to invalidate it by tag too,
    /// use [`set_tagged`](Self::set_tagged).
    ///
    /// An integer is stored as a plain counter instead, so [`incr`](Self::incr) can add to it:
    /// a counter expires by the store's clock alone and takes no part in invalidation (see
    /// [`incr`](Self::incr)).
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
        let json = to_json(key, value)?;
        let stored = match envelope::counter_form(&json) {
            Some(counter) => counter,
            None => {
                let stamp = self.stamp(&[]).await?;
                self.envelope(key, &json, ttl, &stamp)?
            }
        };
        self.put(&self.value_key(key), stored, ttl).await
    }

    /// [`set`](Self::set), invalidated also by each of `tags`: after
    /// [`invalidate_tag`](Self::invalidate_tag) of one of them (or
    /// [`invalidate_tag_soft`](Self::invalidate_tag_soft): values are never served stale, or
    /// [`incr_version`](Self::incr_version) of the same name), in this process at once and in
    /// every other sharing the store within
    /// [`invalidation_poll`](crate::ResponseCacheBuilder::invalidation_poll), it is a miss.
    /// Tags are literal (no `{param}`); they are the same tags as the layers' responses carry.
    ///
    /// A tagged value is never a counter, not even an integer: [`incr`](Self::incr) on it fails.
    ///
    /// # Errors
    /// When the store fails, or (kind [`StoreErrorKind::Encode`]) `value` does not serialise or
    /// the tags are too long (64 KiB in all).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let ttl = Duration::from_secs(60);
    /// cache.set_tagged("top:twitter", &["ada"], ttl, &["platform:twitter"]).await?;
    /// cache.set_tagged("top:mastodon", &["grace"], ttl, &["platform:mastodon"]).await?;
    /// cache.invalidate_tag("platform:twitter").await?;
    /// assert_eq!(cache.get::<Vec<String>>("top:twitter").await, None);
    /// assert_eq!(cache.get::<Vec<String>>("top:mastodon").await.unwrap(), ["grace"]);
    /// # Ok::<_, tower_response_cache::StoreError>(()) }).unwrap();
    /// ```
    pub async fn set_tagged<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        tags: &[&str],
    ) -> Result<(), StoreError> {
        let json = to_json(key, value)?;
        let stamp = self.stamp(tags).await?;
        let stored = self.envelope(key, &json, ttl, &stamp)?;
        self.put(&self.value_key(key), stored, ttl).await
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
    /// Counters are plain integers in the store (what `INCRBY` needs), without the stamp other
    /// values carry: no invalidation reaches them, not even
    /// [`bump_version`](Self::bump_version). They count things rather than cache them; use
    /// [`remove`](Self::remove), [`remove_pattern`](Self::remove_pattern) or
    /// [`clear`](Self::clear) to reset one. (A named version to invalidate by is
    /// [`incr_version`](Self::incr_version), not a counter.)
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

    pub(crate) fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.shared.prefix)
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

    /// The value under the full `key`: `None` when there is none or it does not decode, is
    /// expired on the cache's clock, or was invalidated (or carries no stamp to tell).
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.shared.store.get_value(key).await? else {
            return Ok(None);
        };
        let Some(value) = envelope::decode(&bytes) else {
            return Ok(None);
        };
        if let Some(at) = value.expires_at {
            // Not a counter: served only before it expires and while its stamp holds.
            if self.shared.clock.now_millis() >= at || !self.holds(value.stamp).await? {
                return Ok(None);
            }
        }
        Ok(serde_json::from_slice(value.json).ok())
    }

    /// Whether a value stamped `stamp` may be served: the store's sequence has not moved since
    /// (no parsing), or none of its names was invalidated since (as a response is checked).
    async fn holds(&self, stamp: &[u8]) -> Result<bool, StoreError> {
        let gens = &self.shared.gens;
        let Some(seq) = envelope::stamp_seq(stamp) else {
            return Ok(false); // written before values were stamped: cannot be checked
        };
        if gens.seq_is(seq) {
            return Ok(true);
        }
        let Some(stamp) = envelope::parse_stamp(stamp) else {
            return Ok(false);
        };
        // A soft-invalidated value is invalid here: the values API serves nothing stale.
        let holds = gens.check(&stamp).await? == Validity::Valid;
        if !holds {
            self.shared.metrics.route(VALUES_ROUTE).invalidated();
        }
        Ok(holds)
    }

    /// The stamp of a value tagged `tags`, taken now (a failure is counted, as a write's).
    pub(crate) async fn stamp(&self, tags: &[&str]) -> Result<Stamp, StoreError> {
        let mut names: Vec<Arc<str>> = Vec::with_capacity(1 + tags.len());
        names.push(Arc::from(NAMESPACE));
        names.extend(tags.iter().map(|t| tag_name(t)));
        self.shared.gens.stamp(names).await.inspect_err(|e| {
            self.shared.metrics.route(VALUES_ROUTE).store_error_of(e);
        })
    }

    /// The envelope of `json` stamped `stamp`, expiring `ttl` from now on the cache's clock.
    pub(crate) fn envelope(
        &self,
        key: &str,
        json: &[u8],
        ttl: Duration,
        stamp: &Stamp,
    ) -> Result<Bytes, StoreError> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at = self.shared.clock.now_millis().saturating_add(ttl_millis);
        envelope::encode(json, expires_at, stamp).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Encode,
                format!("{key}: its tags are longer than 64 KiB in all"),
            )
        })
    }

    /// A failed read: logged, counted, and a miss.
    pub(crate) fn failed<T>(&self, e: &StoreError) -> Option<T> {
        self.shared.metrics.route(VALUES_ROUTE).store_error_of(e);
        log_store_error(e);
        None
    }

    /// Writes the stored form of a value under the full `key`.
    pub(crate) async fn put(
        &self,
        key: &str,
        stored: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let counters = self.shared.metrics.route(VALUES_ROUTE);
        let bytes = stored.len();
        match self.shared.store.put_value(key, stored, ttl).await {
            Ok(()) => {
                counters.stored(bytes);
                Ok(())
            }
            Err(e) => {
                counters.store_error_of(&e);
                Err(e)
            }
        }
    }

    pub(crate) fn count(&self, hit: bool) {
        let counters = self.shared.metrics.route(VALUES_ROUTE);
        if hit {
            counters.hit();
        } else {
            counters.miss();
        }
    }
}

/// The serde_json bytes of `value`, stored under `key`.
fn to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::new(StoreErrorKind::Encode, format!("{key}: {e}")))
}
