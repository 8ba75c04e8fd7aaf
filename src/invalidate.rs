//! Invalidation that reaches every process sharing the store: by tag, path, user, named version
//! and namespace version. Each bumps generation counters in the store (see
//! [`generations`](crate::generations)): O(1), no scan of the keyspace, and an entry whose miss
//! started before the bump is never served after it, even if it is stored later.

use std::sync::Arc;

use crate::key::user_hash;
use crate::names::{path_pattern_name, tag_name, user_name, NAMESPACE};
use crate::store::bumps;
use crate::{Purge, ResponseCache, StoreError};

impl ResponseCache {
    /// Stops serving every entry tagged `tag` — every query, host, `Vary` variant and user of
    /// every route carrying it — in every process sharing the store: this one at once, the
    /// others within [`invalidation_poll`](crate::ResponseCacheBuilder::invalidation_poll).
    /// Tags come from [`CacheLayer::tags`](crate::CacheLayer::tags) (with `{param}` filled from
    /// the path) and from the handler ([`CacheTags`](crate::CacheTags), `cache-tag`).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new().route(
    ///     "/influencers/{platform}",
    ///     get(|| async { "[]" }).layer(cache.route().tags(["platform:{platform}"])),
    /// );
    /// // After a write to twitter's influencers:
    /// cache.invalidate_tag("platform:twitter").await.unwrap();
    /// # let _ = app; });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.invalidate_tags([tag]).await
    }

    /// [`invalidate_tag`](Self::invalidate_tag) for several tags, in one atomic step.
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// cache.invalidate_tags(["influencer:42", "platform:twitter"]).await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_tags<I, S>(&self, tags: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: Vec<Arc<str>> = tags.into_iter().map(|t| tag_name(t.as_ref())).collect();
        self.bump(&names, Purge::Hard).await.map(drop)
    }

    /// Marks every entry tagged `tag` stale instead of dropping it (Fastly's soft purge), in
    /// every process sharing the store, reaching them as [`invalidate_tag`](Self::invalidate_tag)
    /// does: a stale entry may be served while one refresh runs. Until stale serving is wired
    /// into the layer, a stale entry is a miss, as after `invalidate_tag`, but it stays in the
    /// store. The values API ([`get_or_insert_with`](Self::get_or_insert_with)…) never serves
    /// a stale value. A hard invalidation, before or after, wins.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new().route(
    ///     "/trending",
    ///     get(|| async { "[]" }).layer(cache.route().tags(["trending"])),
    /// );
    /// // New posts arrived; the old list is still fine to show while it is refreshed:
    /// cache.invalidate_tag_soft("trending").await.unwrap();
    /// # let _ = app; });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_tag_soft(&self, tag: &str) -> Result<(), StoreError> {
        self.invalidate_tags_soft([tag]).await
    }

    /// [`invalidate_tag_soft`](Self::invalidate_tag_soft) for several tags, in one atomic step.
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// cache.invalidate_tags_soft(["influencer:42", "platform:twitter"]).await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_tags_soft<I, S>(&self, tags: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: Vec<Arc<str>> = tags.into_iter().map(|t| tag_name(t.as_ref())).collect();
        self.bump(&names, Purge::Soft).await.map(drop)
    }

    /// Stops serving every entry of a path, whatever its query, host, variants or user:
    /// `"/influencers/twitter"` is that path exactly; `"/influencers/*"` every path under
    /// `/influencers/` (not `/influencers` itself). Paths are as the client sends them (a
    /// nested router's mount prefix included). Entries know their ancestors 8 segments deep: a
    /// deeper pattern invalidates everything under its ancestor at depth 8.
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// cache.invalidate_path("/influencers/twitter").await.unwrap();
    /// cache.invalidate_path("/influencers/*").await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_path(&self, path: &str) -> Result<(), StoreError> {
        self.bump(&[path_pattern_name(path)], Purge::Hard)
            .await
            .map(drop)
    }

    /// Marks every entry of a path stale instead of dropping it, the paths read as by
    /// [`invalidate_path`](Self::invalidate_path), staleness as by
    /// [`invalidate_tag_soft`](Self::invalidate_tag_soft).
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// cache.invalidate_path_soft("/influencers/twitter").await.unwrap();
    /// cache.invalidate_path_soft("/influencers/*").await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_path_soft(&self, path: &str) -> Result<(), StoreError> {
        self.bump(&[path_pattern_name(path)], Purge::Soft)
            .await
            .map(drop)
    }

    /// Stops serving every entry cached for `identity` by a
    /// [`per_user`](crate::CacheLayer::per_user) layer (the identity its function returns), on
    /// every route. The store only ever sees a hash of it.
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// cache.invalidate_user("user-42").await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: nothing was invalidated.
    pub async fn invalidate_user(&self, identity: &str) -> Result<(), StoreError> {
        let name = user_name(&user_hash(&self.shared.prefix, identity));
        self.bump(&[name], Purge::Hard).await.map(drop)
    }

    /// Moves every process sharing the store to a new namespace version (Django's
    /// `incr_version` on the whole cache): no entry stored before is served again — here at
    /// once, elsewhere within [`invalidation_poll`](crate::ResponseCacheBuilder::invalidation_poll)
    /// — and a process started later uses the new version too, since it is kept in the store.
    /// Returns the new version: [`version`](Self::version) plus the number of bumps so far.
    ///
    /// ```
    /// # use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::builder().version(3).build();
    /// assert_eq!(cache.bump_version().await.unwrap(), 4);
    /// assert_eq!(cache.namespace_version().await.unwrap(), 4);
    /// # });
    /// ```
    ///
    /// # Errors
    /// When the store fails: the version did not move.
    pub async fn bump_version(&self) -> Result<u64, StoreError> {
        let now = self.bump(&[Arc::from(NAMESPACE)], Purge::Hard).await?;
        self.shared.vary.invalidate_all();
        self.shared.variants.forget_all();
        Ok(self.shared.version + version(&now))
    }

    /// The namespace version in force: [`version`](Self::version) plus the bumps of
    /// [`bump_version`](Self::bump_version) kept in the store, as this process knows them
    /// (another process's bump shows within
    /// [`invalidation_poll`](crate::ResponseCacheBuilder::invalidation_poll)).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn namespace_version(&self) -> Result<u64, StoreError> {
        let now = self.shared.gens.read(&[Arc::from(NAMESPACE)]).await?;
        Ok(self.shared.version + version(&now))
    }

    /// Bumps the version named `name` atomically, for every process sharing the store, and
    /// returns the new one (the guide's `cache.incr("version:twitter")` on every write). A
    /// named version is a tag's generation: it invalidates every entry tagged `name`, such as
    /// those of a route with [`version_from`](crate::CacheLayer::version_from).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = ResponseCache::default();
    /// let app: Router = Router::new().route(
    ///     "/influencers/{platform}",
    ///     get(|| async { "[]" }).layer(cache.route().version_from("platform")),
    /// );
    /// assert_eq!(cache.incr_version("platform:twitter").await.unwrap(), 1);
    /// assert_eq!(cache.named_version("platform:twitter").await.unwrap(), 1);
    /// # let _ = app; });
    /// ```
    ///
    /// # Errors
    /// When the store fails: the version did not move.
    pub async fn incr_version(&self, name: &str) -> Result<u64, StoreError> {
        let now = self.bump(&[tag_name(name)], Purge::Hard).await?;
        Ok(version(&now))
    }

    /// The current version named `name` (`0` until it is first bumped), as this process knows
    /// it (as for [`namespace_version`](Self::namespace_version)); see
    /// [`incr_version`](Self::incr_version).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn named_version(&self, name: &str) -> Result<u64, StoreError> {
        let now = self.shared.gens.read(&[tag_name(name)]).await?;
        Ok(version(&now))
    }

    async fn bump(
        &self,
        names: &[Arc<str>],
        purge: Purge,
    ) -> Result<crate::Generations, StoreError> {
        if names.is_empty() {
            return Ok(crate::Generations::default());
        }
        self.shared.gens.bump(names, purge).await
    }
}

/// The version a name's generation stands for: the number of its bumps, hard or soft (a
/// soft invalidation of a tag moves its named version too, as a hard one does).
fn version(now: &crate::Generations) -> u64 {
    now.gens.first().copied().map_or(0, bumps)
}
