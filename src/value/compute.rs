//! Values computed on a miss (`get_or_insert_with` and its tagged and fallible forms) and
//! rendered fragments: one computation per key in this process, stamped before it starts, so a
//! value computed across an invalidation of its names is returned but never served afterwards.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::log::log_store_error;
use crate::value_flight::Turn;
use crate::ResponseCache;

impl ResponseCache {
    /// The value under `key`, or else `compute()`'s, stored for `ttl` (Django's
    /// `cache.get_or_set`). Like [`set`](Self::set)'s, the value is invalidated by
    /// [`bump_version`](Self::bump_version); [`get_or_insert_with_tags`] by tags as well.
    ///
    /// Concurrent callers of one key in this process run one computation: the others wait for
    /// it (up to the cache's [`coalesce_wait`], then compute themselves) and get its result.
    /// Never fails: a store that is down, slow or holding something undecodable means
    /// `compute()` runs and its value is returned (and stored when the store takes it).
    ///
    /// [`coalesce_wait`]: crate::ResponseCacheBuilder::coalesce_wait
    /// [`get_or_insert_with_tags`]: Self::get_or_insert_with_tags
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
        self.get_or_insert_with_tags(key, ttl, &[], compute).await
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with), the value invalidated also by each
    /// of `tags` (see [`set_tagged`](Self::set_tagged)).
    ///
    /// The stamp is taken before `compute()` starts: if one of the value's tags (or the
    /// namespace) is invalidated while it runs, the value is returned to the callers waiting
    /// for it but never served from the cache afterwards, so a value read from before a write
    /// cannot outlive the write's invalidation.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let (ttl, tags) = (Duration::from_secs(60), &["platform:twitter"][..]);
    /// let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    /// let top = cache
    ///     .get_or_insert_with_tags("top:twitter", ttl, tags, || async { names(&["ada"]) })
    ///     .await;
    /// assert_eq!(top, ["ada"]);
    /// // A write to twitter's influencers, then:
    /// cache.invalidate_tag("platform:twitter").await.unwrap();
    /// let top = cache
    ///     .get_or_insert_with_tags("top:twitter", ttl, tags, || async { names(&["grace", "ada"]) })
    ///     .await;
    /// assert_eq!(top, ["grace", "ada"]);
    /// # });
    /// ```
    pub async fn get_or_insert_with_tags<T, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        tags: &[&str],
        compute: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let infallible = || async move { Ok::<T, Infallible>(compute().await) };
        let found = self
            .try_get_or_insert_with_tags(key, ttl, tags, infallible)
            .await;
        found.unwrap_or_else(|never| match never {})
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) for a computation that can fail (moka's
    /// `try_get_with`): an `Err` is returned to this caller and never stored, so a failed
    /// query is not cached as if it were an answer. Callers waiting on the failed computation
    /// compute again themselves.
    ///
    /// # Errors
    /// `compute()`'s error. The cache's own failures are never returned (fail-open).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let ttl = Duration::from_secs(60);
    /// let failed = cache
    ///     .try_get_or_insert_with("top:twitter", ttl, || async { Err::<Vec<u64>, _>("db down") })
    ///     .await;
    /// assert_eq!(failed, Err("db down"));
    /// assert_eq!(cache.get::<Vec<u64>>("top:twitter").await, None, "not stored");
    /// let top = cache
    ///     .try_get_or_insert_with("top:twitter", ttl, || async { Ok::<_, &str>(vec![1, 2]) })
    ///     .await;
    /// assert_eq!(top, Ok(vec![1, 2]));
    /// # });
    /// ```
    pub async fn try_get_or_insert_with<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_get_or_insert_with_tags(key, ttl, &[], compute)
            .await
    }

    /// [`try_get_or_insert_with`](Self::try_get_or_insert_with) with `tags`, as
    /// [`get_or_insert_with_tags`](Self::get_or_insert_with_tags): what every other form of
    /// it calls.
    ///
    /// # Errors
    /// `compute()`'s error, which is not stored.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let top = cache
    ///     .try_get_or_insert_with_tags(
    ///         "top:twitter",
    ///         Duration::from_secs(60),
    ///         &["platform:twitter"],
    ///         || async { Ok::<_, std::io::Error>(vec!["ada".to_owned()]) },
    ///     )
    ///     .await?;
    /// assert_eq!(top, ["ada"]);
    /// # Ok::<_, std::io::Error>(()) }).unwrap();
    /// ```
    pub async fn try_get_or_insert_with_tags<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        tags: &[&str],
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = self.value_key(key);
        let first = self.read(&key).await;
        let store_up = first.is_ok();
        if let Some(found) = first.unwrap_or_else(|e| self.failed(&e)) {
            self.count(true);
            return Ok(found);
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
                    Ok(None) => continue, // the leader went away or failed: one of us leads now
                    Ok(Some(json)) => Some(json),
                    Err(_) => break None, // waited long enough: compute alone
                },
            };
            if let Some(found) = waited.and_then(|json| serde_json::from_slice(&json).ok()) {
                self.count(true);
                return Ok(found);
            }
            break None;
        };
        if lead.is_some() && store_up {
            // A flight that ended between our read and our join has written the value.
            if let Ok(Some(found)) = self.read(&key).await {
                self.count(true);
                return Ok(found);
            }
        }
        self.count(false);
        // Taken before the computation (see `generations`). A store that failed the read is
        // not asked again: the value is computed and returned, not stored.
        let stamp = if store_up {
            self.stamp(tags).await.map_err(|e| log_store_error(&e)).ok()
        } else {
            None
        };
        let value = compute().await?;
        match serde_json::to_vec(&value) {
            Ok(json) => {
                let json = Bytes::from(json);
                if let Some(lead) = &lead {
                    lead.publish(json.clone());
                }
                if let Some(stamp) = stamp {
                    let stored = self.envelope(&key, &json, ttl, &stamp);
                    let written = match stored {
                        Ok(stored) => self.put(&key, stored, ttl).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        log_store_error(&e); // and the value is returned all the same
                    }
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "value does not serialise; not cached"),
        }
        drop(lead);
        Ok(value)
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
    /// `ttl`; as [`get_or_insert_with`](Self::get_or_insert_with), coalesced and fail-open,
    /// and invalidated by [`bump_version`](Self::bump_version).
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
        self.fragment_tagged(name, vary, ttl, &[], render).await
    }

    /// [`fragment`](Self::fragment), invalidated also by each of `tags` (see
    /// [`get_or_insert_with_tags`](Self::get_or_insert_with_tags)).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// let (ttl, tags) = (Duration::from_secs(600), &["platform:twitter"][..]);
    /// let render = |n: u32| move || async move { format!("<p>{n} influencers</p>") };
    /// let html = cache.fragment_tagged("stats", &["twitter"], ttl, tags, render(1)).await;
    /// assert_eq!(html, "<p>1 influencers</p>");
    /// cache.invalidate_tag("platform:twitter").await.unwrap();
    /// let html = cache.fragment_tagged("stats", &["twitter"], ttl, tags, render(2)).await;
    /// assert_eq!(html, "<p>2 influencers</p>");
    /// # });
    /// ```
    pub async fn fragment_tagged<F, Fut>(
        &self,
        name: &str,
        vary: &[&str],
        ttl: Duration,
        tags: &[&str],
        render: F,
    ) -> String
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = String>,
    {
        let key = self.fragment_key(name, vary);
        self.get_or_insert_with_tags(&key, ttl, tags, render).await
    }

    /// [`fragment_tagged`](Self::fragment_tagged) for a rendering that can fail: an `Err` (say,
    /// the database was unreachable) is returned and never stored, so an error panel is not
    /// cached in place of the fragment.
    ///
    /// # Errors
    /// `render()`'s error, which is not stored.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// # let cache = tower_response_cache::ResponseCache::default();
    /// let ttl = Duration::from_secs(600);
    /// let failed = cache
    ///     .try_fragment_tagged("stats", &["twitter"], ttl, &[], || async { Err("db down") })
    ///     .await;
    /// assert_eq!(failed, Err("db down"));
    /// let html = cache
    ///     .try_fragment_tagged("stats", &["twitter"], ttl, &[], || async {
    ///         Ok::<_, &str>("<p>42</p>".to_owned())
    ///     })
    ///     .await;
    /// assert_eq!(html.as_deref(), Ok("<p>42</p>"));
    /// # });
    /// ```
    pub async fn try_fragment_tagged<E, F, Fut>(
        &self,
        name: &str,
        vary: &[&str],
        ttl: Duration,
        tags: &[&str],
        render: F,
    ) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let key = self.fragment_key(name, vary);
        self.try_get_or_insert_with_tags(&key, ttl, tags, render)
            .await
    }
}
