//! [`CacheLayer::shadow`], apart from the layer's other settings: [`shadow`](crate::shadow) is
//! used by the request path, which the layer module depends on, so it must not name the layer.

use crate::CacheLayer;

impl CacheLayer {
    /// Shadow mode (off by default): keys, lookups, hits and misses are computed, counted
    /// ([`stats`](crate::ResponseCache::stats), the metrics) and stored as usual, but every
    /// response comes from the handler, unchanged but for a `Cache-Status` member with a
    /// `shadow` detail (`fwd=bypass; detail=shadow-hit` where the cache would have answered).
    /// A shadowed layer neither coalesces requests nor answers `only-if-cached` with a `504`.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// // Measure what caching `/feed` would give before letting it serve.
    /// let app: Router = Router::new()
    ///     .route("/feed", get(|| async { "[]" }).layer(cache.route().shadow(true)));
    /// ```
    pub fn shadow(mut self, on: bool) -> Self {
        std::sync::Arc::make_mut(&mut self.policy).shadow = on;
        self
    }
}
