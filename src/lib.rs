//! Full-response caching for [axum] and [tower] services — Django's `cache_page` for Rust —
//! safe by default, backed by an embedded in-memory store or by Redis.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_response_cache::ResponseCache;
//!
//! let cache = ResponseCache::builder()          // embedded in-memory store by default
//!     .key_prefix("twiscope")
//!     .default_ttl(Duration::from_secs(300))
//!     .build();
//! let app: Router = Router::new()
//!     .route("/trending", get(|| async { "[]" }).layer(cache.ttl(Duration::from_secs(900))))
//!     .route(
//!         "/influencers/{platform}",
//!         get(|| async { "[]" }).layer(cache.ttl(Duration::from_secs(60)).vary_query(["limit"])),
//!     )
//!     .route("/me", get(|| async { "me" }))
//!     .layer(cache.layer()); // app-wide: stores what handlers mark with Cache-Control
//! ```
//!
//! # How it works
//!
//! A GET (or HEAD) request is turned into a [`CacheKey`]: the key prefix, the namespace
//! version, scheme, host, the path as the client sent it (a nested router's mount prefix
//! included), the canonical query (sorted, tracking parameters dropped), the configured request
//! headers, and — learned from the response's own `Vary` — the headers it varies on (`Accept`,
//! `Accept-Language` and `Accept-Encoding` in a canonical form, so `es` and `ES;q=1` are one
//! variant; at most [`CacheLayer::max_variants`] variants per URL). Components are
//! length-delimited and hashed with SHA-256, so keys never collide and never contain
//! credentials. A fresh entry answers without calling the handler (a `304` when
//! the client's validators match); otherwise the handler runs and, if the policy admits the
//! response, it is stored: a body of known length is read first, a stream is passed on frame
//! by frame and stored once it has ended whole within the size limit. A write to a remote store
//! (Redis) happens after the response is sent.
//!
//! # Invalidation
//!
//! Every entry carries the names it can be invalidated by — the namespace, its route's
//! [tags](CacheLayer::tags) and the handler's ([`CacheTags`]), its path and ancestors, its URL
//! and, per user, the hashed identity — with their generations when its miss started.
//! [`ResponseCache::invalidate_tag`], [`invalidate_path`](ResponseCache::invalidate_path),
//! [`invalidate_user`](ResponseCache::invalidate_user),
//! [`incr_version`](ResponseCache::incr_version) and
//! [`bump_version`](ResponseCache::bump_version) bump generations in the store, in O(1): an
//! entry is served only while its names are unchanged (checked with one atomic compare while
//! nothing was invalidated), so an invalidation during a slow miss wins. Processes sharing a
//! Redis store see each other's invalidations within
//! [`invalidation_poll`](ResponseCacheBuilder::invalidation_poll) (default 1 s) plus a round
//! trip; their own at once. [`invalidate_tag_soft`](ResponseCache::invalidate_tag_soft) and
//! [`invalidate_path_soft`](ResponseCache::invalidate_path_soft) mark entries stale instead
//! ([`Purge::Soft`]): such an entry is answered stale (`fwd=stale; detail=invalidated`) while
//! one background refresh replaces it.
//! [`invalidate`](ResponseCache::invalidate) with [`CacheLayer::key_for`] drops one URL (on
//! every host when the request names none), and a successful POST, PUT, PATCH or DELETE through
//! a layer drops its own path and its same-host `Location` on its own
//! ([`CacheLayer::invalidate_on_unsafe`], RFC 9111 §4.4).
//!
//! # Safe by default
//!
//! | rule | opt-out |
//! |---|---|
//! | only GET/HEAD are cached | — |
//! | `Authorization` or `Cookie` on the request bypasses the cache | [`CacheLayer::session_cookies`], [`CacheLayer::ignore_cookies`], [`CacheLayer::per_user`] |
//! | `Proxy-Authorization` on the request bypasses the cache | [`CacheLayer::per_user`] |
//! | credentials the cache cannot see (API keys, mTLS, extensions) bypass once declared with [`CacheLayer::bypass_when`] or [`ResponseCacheBuilder::bypass_when`] | — (opt-in) |
//! | `Set-Cookie`, `private`, `no-store`, `no-cache`, `Vary: *` are never stored | — |
//! | only `200` is stored | [`CacheLayer::statuses`] |
//! | bodies over 1 MiB, event streams and bodies contradicting their `Content-Length` pass through whole, unstored | [`CacheLayer::max_body_size`] |
//! | a client's `no-cache` does not force a miss | [`CacheLayer::honor_client_no_cache`] |
//! | a store failure is a miss, never an error | — |
//!
//! Every response a layer handles carries an RFC 9211 `Cache-Status`
//! (`tower-response-cache; hit; ttl=42`, `…; fwd=uri-miss; stored`,
//! `…; fwd=bypass; detail=cookie`); hits carry `Age`. A request's `Cache-Control:
//! only-if-cached` gets a fresh entry or an empty `504` (`…; detail=only-if-cached`), never the
//! handler.
//!
//! # Stores
//!
//! [`MemoryStore`] (the default) keeps entries in process, bounded by bytes. `RedisStore`
//! (feature `redis`) shares them between processes on Redis or Redis Cluster, fails open and
//! trips a circuit breaker when Redis is in trouble. `CacheConfig` (feature `config`) builds either from TOML or
//! environment variables, the way Django's `CACHES` setting does.
//!
//! The same cache and store also keep any serde value by key (feature `values`, Django's
//! low-level API and `{% cache %}`): `cache.get_or_insert_with("top:twitter", ttl, || query())`,
//! `cache.incr("version:twitter", 1)`, `cache.fragment("stats", &[platform], ttl, || render())`.
//! Values are invalidated as responses are: by `bump_version`, and by the tags given to
//! `set_tagged`, `get_or_insert_with_tags` or `fragment_tagged`.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | per-route metrics labelled by axum's `MatchedPath` (`/users/{id}`), keys from `OriginalUri` (the path as the client sent it, mount prefix of a nested router included) |
//! | `config` | yes | `CacheConfig`: settings from TOML or `PREFIX_FIELD` environment variables (serde, toml) |
//! | `metrics` | yes | hits, misses, bypasses, stores, store errors, evictions and timings recorded through the [`metrics`](https://docs.rs/metrics) facade: see [`Metrics`] for the names |
//! | `redis` | yes | `RedisStore` on fred: `redis://` and `redis-cluster://` URLs |
//! | `redis-tls` | no | `rediss://` URLs, through rustls |
//! | `values` | yes | the low-level API: [`ResponseCache::get`], `set`, `incr`, `get_or_insert_with`, `remove_pattern`, `fragment` for any serde value (serde, serde_json) |
//!
//! A plain tower service needs none of them: with `default-features = false` the crate builds
//! without axum, serde, toml, metrics or fred, keys on the request's own URI and counts every request
//! under the route `*`.
//!
//! [axum]: https://docs.rs/axum
//! [tower]: https://docs.rs/tower

mod body;
mod bypass;
mod cache;
mod clock;
mod coalesce;
mod conditional;
#[cfg(feature = "config")]
mod config;
mod copy;
mod entry;
mod future;
mod generations;
mod head;
mod headers;
mod hit;
mod invalidate;
mod key;
mod layer;
mod lease;
mod lease_wait;
mod log;
mod metrics;
mod miss;
mod names;
mod negotiation;
mod plan;
mod policy;
mod redact;
#[cfg(any(feature = "config", feature = "redis"))]
mod redis_url;
mod refresh;
mod route;
mod service;
mod shadow;
mod shadow_layer;
mod shared;
mod stale;
mod status;
mod store;
mod trace;
mod unsafe_methods;
#[cfg(feature = "values")]
mod value;
#[cfg(feature = "values")]
mod value_flight;
mod variants;
mod write;

pub use body::ResponseBody;
pub use cache::{ResponseCache, ResponseCacheBuilder};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "config")]
pub use config::{CacheConfig, ConfigError};
pub use entry::{CachedResponse, DecodeError, Entry};
pub use future::ResponseFuture;
pub(crate) use headers::StoredHeaders;
pub use key::CacheKey;
pub use layer::{CacheLayer, Query};
pub use metrics::{Metrics, RouteStats, Verdict};
pub use names::CacheTags;
pub use policy::BypassReason;
pub use redact::redact_url;
pub use service::CacheService;
#[cfg(feature = "values")]
pub use value::VALUES_ROUTE;
/// The README's Rust blocks, compiled by `cargo test` so its quick start cannot drift from the API.
/// Its examples use every default feature.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "config",
    feature = "redis",
    feature = "values"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "redis")]
pub use store::{BreakerState, RedisServerStats, RedisStats, RedisStore, RedisStoreBuilder};
pub use store::{Generations, MemoryStore, Purge, Store, StoreError, StoreErrorKind, StoreFuture};
