//! The Redis store: entries shared by every process on one Redis or Redis Cluster, through fred,
//! with a small command timeout and a circuit breaker so Redis trouble only ever costs a miss.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::WithOptions;
use fred::prelude::*;

use super::{Store, StoreError, StoreErrorKind, StoreFuture};
use crate::log::RateLimit;
use crate::{CacheKey, Entry};

mod batch;
mod breaker;
mod builder;
mod clear;
mod generations;
mod lease;
mod stats;
mod values;

use breaker::Breaker;
pub use breaker::BreakerState;
pub use builder::RedisStoreBuilder;
use stats::Counters;
pub use stats::{RedisServerStats, RedisStats};

/// A store on Redis or Redis Cluster, shared by every process that points at it.
///
/// One `GET` per lookup, one `SET … PX ttl` per store, so Redis expires entries itself; the
/// `GET`s and `SET`s of requests that arrive together leave in one write (see `batch.rs`: one
/// write and one wake-up of Redis per turn of the runtime, not per request). Values
/// are [`Entry::encode`]'s versioned bytes; a value that does not decode (corrupt, from another
/// program, from a future version) is a miss, counted, and overwritten by the next store. Keys
/// are [`CacheKey`]'s printable form, so operators can
/// `redis-cli --scan --pattern 'prefix:*'`. Invalidation counters live in one hash per prefix,
/// `{prefix}:gens` (one slot: a bump is one atomic script, also on a cluster); `clear` keeps it.
///
/// Fail-open: every Redis failure is a [`StoreError`] (the layer serves the handler's response)
/// and no call waits longer than the command timeout. After repeated failures the circuit
/// breaker opens and calls fail fast without touching Redis; after a cool-down one call probes
/// and a success closes it. Connections come back by themselves after Redis restarts.
///
/// Cloning is cheap and shares the connections, breaker and counters.
///
/// ```no_run
/// use tower_response_cache::{RedisStore, ResponseCache};
/// # async fn demo() -> Result<(), tower_response_cache::StoreError> {
/// let store = RedisStore::from_url("redis://127.0.0.1:6379/0").await?;
/// let cache = ResponseCache::builder()
///     .key_prefix("twiscope")
///     .store(store.clone())
///     .build();
/// // later, for a health endpoint or metrics:
/// let stats = store.stats();
/// println!("breaker {:?}, {} errors", stats.breaker, stats.errors);
/// # let _ = cache; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// The pool with per-command options: the timeout, one attempt, fail fast when disconnected.
    client: WithOptions<Pool>,
    /// Whether the store made the pool and so closes it when dropped.
    owned: bool,
    command_timeout: Duration,
    breaker: Breaker,
    counters: Counters,
    log_limit: RateLimit,
    batch: batch::Batch,
}

pub(super) struct Parts {
    pub(super) pool: Pool,
    pub(super) client: WithOptions<Pool>,
    pub(super) owned: bool,
    pub(super) command_timeout: Duration,
    pub(super) breaker: Breaker,
}

impl RedisStore {
    /// Connects with the default settings to `url`: `redis://[user:pass@]host:port/db`,
    /// `rediss://…` (with the `redis-tls` feature) or
    /// `redis-cluster://host:port?node=host:port&node=…`.
    ///
    /// Returns once connected or after the 1 s connect timeout; when Redis is down the store
    /// still starts, misses, and connects when Redis comes up.
    ///
    /// # Errors
    /// A [`StoreErrorKind::Config`] error when the URL is invalid.
    pub async fn from_url(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for `url`.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::from_url(url)
    }

    /// Starts configuring a store on a fred [`Pool`] the app already has (connected or not);
    /// the app keeps its connection settings and the store adds its command timeout and breaker.
    pub fn builder_with_pool(pool: Pool) -> RedisStoreBuilder {
        RedisStoreBuilder::from_pool(pool)
    }

    fn new(parts: Parts) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool: parts.pool,
                client: parts.client,
                owned: parts.owned,
                command_timeout: parts.command_timeout,
                breaker: parts.breaker,
                counters: Counters::default(),
                log_limit: RateLimit::new(),
                batch: batch::Batch::default(),
            }),
        }
    }

    /// Whether the store talks to a Redis Cluster.
    #[must_use]
    pub fn is_clustered(&self) -> bool {
        self.shared.pool.is_clustered()
    }

    /// Whether every connection is up now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.shared
            .pool
            .clients()
            .iter()
            .all(ClientLike::is_connected)
    }

    /// Sends `PING` (through the breaker, like any call): a health check.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout, or the breaker is open.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call("PING", Box::pin(self.shared.client.ping::<()>(None)))
            .await
            .map_err(Failure::into_error)
    }

    /// Runs one Redis call through the breaker and the command timeout.
    ///
    /// The call comes boxed: a fred command's future is ~5 KB, and every future that held one
    /// by value (this one, the timeout around it, the store's boxed `get`) would copy it
    /// whole each time it moves — 20 KB per `GET` when the batching held it unboxed.
    async fn call<T>(
        &self,
        op: &'static str,
        call: Pin<Box<impl Future<Output = Result<T, fred::error::Error>>>>,
    ) -> Result<T, Failure> {
        self.guarded(op, call).await
    }

    /// [`RedisStore::call`] for a call that is already small: a boxed command, or a
    /// [batched](RedisStore::batched) one (which boxes its command).
    async fn guarded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, Failure> {
        let shared = &self.shared;
        let Some(ticket) = shared.breaker.admit() else {
            shared.counters.rejected.fetch_add(1, Relaxed);
            return Err(Failure::Store(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("{op} not sent: the circuit breaker is open after repeated Redis failures"),
            )));
        };
        // fred enforces the timeout; this guard only bounds a call fred itself lost track of,
        // so it sits just past it: no call outlives the command timeout by more than the slack.
        let guard = shared.command_timeout + GUARD_SLACK;
        let result = match tokio::time::timeout(guard, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_foreign_type(&e) => Err(Failure::Foreign),
            Ok(Err(e)) => Err(Failure::Store(self.failed(op, &e))),
            Err(_) => {
                shared.counters.timeouts.fetch_add(1, Relaxed);
                Err(Failure::Store(StoreError::timeout(format!(
                    "{op} timed out after {guard:?}"
                ))))
            }
        };
        // Redis answered unless the call itself failed; a foreign value is an answer.
        let reached = !matches!(result, Err(Failure::Store(_)));
        if !reached {
            shared.counters.errors.fetch_add(1, Relaxed);
        }
        match ticket.finish(reached) {
            Some(BreakerState::Open) => {
                shared.counters.breaker_opened.fetch_add(1, Relaxed);
                tracing::warn!(
                    op,
                    "Redis failed repeatedly: circuit breaker open, the cache misses without calling it"
                );
            }
            Some(BreakerState::Closed) => tracing::info!("Redis answered: circuit breaker closed"),
            _ => {}
        }
        if let Err(Failure::Store(e)) = &result {
            // The caller (the layer) warns about every failed call it gets back; here only the
            // detail, so one outage is not reported twice at the same level.
            self.log(
                |suppressed| tracing::debug!(error = %e, suppressed, "Redis cache call failed"),
            );
        }
        result
    }

    fn failed(&self, op: &'static str, e: &fred::error::Error) -> StoreError {
        use fred::error::ErrorKind as K;
        let kind = match e.kind() {
            K::Timeout => {
                self.shared.counters.timeouts.fetch_add(1, Relaxed);
                StoreErrorKind::Unavailable
            }
            K::IO | K::Canceled | K::Cluster | K::Backpressure | K::Routing | K::Auth => {
                StoreErrorKind::Unavailable
            }
            _ => StoreErrorKind::Backend,
        };
        let message = format!("{op}: {:?}: {}", e.kind(), e.details());
        if e.kind() == &K::Timeout {
            return StoreError::timeout(message);
        }
        StoreError::new(kind, message)
    }

    /// Runs `emit` unless something was logged this second; it gets how many were skipped.
    fn log(&self, emit: impl FnOnce(u64)) {
        self.shared.log_limit.log(emit);
    }

    fn corrupt(&self, key: &str, why: &dyn fmt::Display) {
        self.shared.counters.corrupt.fetch_add(1, Relaxed);
        self.shared.counters.misses.fetch_add(1, Relaxed);
        self.log(|suppressed| {
            tracing::warn!(key, reason = %why, suppressed, "foreign or corrupt value under a cache key; treated as a miss");
        });
    }

    async fn get_entry(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let found = self.guarded("GET", self.batched_get(key.to_string())).await;
        let counters = &self.shared.counters;
        match found {
            Ok(Some(bytes)) => match Entry::decode(bytes) {
                Ok(entry) => {
                    counters.hits.fetch_add(1, Relaxed);
                    Ok(Some(entry))
                }
                Err(e) => {
                    // Printed again only here: a hit sends its key and keeps no copy.
                    self.corrupt(&key.to_string(), &e);
                    Ok(None)
                }
            },
            Ok(None) => {
                counters.misses.fetch_add(1, Relaxed);
                Ok(None)
            }
            Err(Failure::Foreign) => {
                self.corrupt(&key.to_string(), &"not a string value");
                Ok(None)
            }
            Err(Failure::Store(e)) => Err(e),
        }
    }

    async fn put_entry(
        &self,
        key: &CacheKey,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if ttl.is_zero() {
            // Redis rejects `PX 0`; an entry that expires at once is no entry.
            return self.remove_key(key).await.map(drop);
        }
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set = self.batched_set(key.to_string(), entry.encode(), millis);
        self.guarded("SET", set).await.map_err(Failure::into_error)
    }

    async fn remove_key(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let del = Box::pin(self.shared.client.del::<u64, _>(key.to_string()));
        self.call("DEL", del)
            .await
            .map(|n| n > 0)
            .map_err(Failure::into_error)
    }
}

/// How far past the command timeout [`RedisStore::call`]'s own guard fires.
const GUARD_SLACK: Duration = Duration::from_millis(10);

/// A `WRONGTYPE` reply: something other than a string lives under our key; or, for `INCRBY`,
/// something other than an integer, or a sum that overflows. Redis answered: not a failure.
fn is_foreign_type(e: &fred::error::Error) -> bool {
    let details = e.details();
    details.starts_with("WRONGTYPE")
        || details.starts_with("ERR value is not an integer")
        || details.starts_with("ERR increment or decrement would overflow")
}

/// Why a call produced no value.
enum Failure {
    /// Redis answered, with a value of the wrong type.
    Foreign,
    /// Redis failed or was not called.
    Store(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Foreign => StoreError::new(StoreErrorKind::Corrupt, "WRONGTYPE"),
            Failure::Store(e) => e,
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("clustered", &self.is_clustered())
            .field("pool_size", &self.shared.pool.size())
            .field("command_timeout", &self.shared.command_timeout)
            .field("breaker", &self.shared.breaker.state())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The reconnect policy retries forever: a pool nobody uses must be told to stop.
        if self.owned {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let pool = self.pool.clone();
                rt.spawn(async move {
                    let _ = pool.quit().await;
                });
            }
        }
    }
}

impl Store for RedisStore {
    /// One command timeout, plus the guard's slack and a little more so that a stalled call
    /// ends in its own timeout first and the breaker counts it; a lookup whose first `GET`
    /// was slow gets no full timeout for its second.
    fn lookup_timeout(&self) -> Option<Duration> {
        Some(self.shared.command_timeout + GUARD_SLACK * 2)
    }

    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(self.get_entry(key))
    }

    fn put<'a>(&'a self, key: &'a CacheKey, entry: Entry, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.put_entry(key, &entry, ttl).await })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_key(key))
    }

    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(self.clear(prefix))
    }

    fn get_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(self.get_raw(key))
    }

    fn put_value<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(self.put_raw(key, value, ttl))
    }

    fn remove_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_raw(key))
    }

    fn incr_value<'a>(&'a self, key: &'a str, delta: i64) -> StoreFuture<'a, i64> {
        Box::pin(self.incr_raw(key, delta))
    }

    fn remove_values_matching<'a>(&'a self, pattern: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(self.remove_matching(pattern))
    }

    fn take_lease<'a>(
        &'a self,
        key: &'a CacheKey,
        token: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.lease(key, token, ttl))
    }

    fn release_lease<'a>(&'a self, key: &'a CacheKey, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.release(key, token))
    }

    fn generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
    ) -> StoreFuture<'a, super::Generations> {
        Box::pin(self.read_generations(prefix, names))
    }

    fn bump_generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
        purge: super::Purge,
    ) -> StoreFuture<'a, super::Generations> {
        Box::pin(self.bump(prefix, names, purge))
    }

    fn all_generations<'a>(
        &'a self,
        prefix: &'a str,
        max: usize,
    ) -> StoreFuture<'a, Option<(super::Generations, Vec<Arc<str>>)>> {
        Box::pin(self.read_all_generations(prefix, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `call` returns, without calling it (nor needing a store).
    fn future_size<'a, A: ?Sized + 'a, F: Future>(
        _call: impl FnOnce(&'a RedisStore, &'a A) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request that reaches Redis moves these futures (into the store's box, the
    /// timeout, the batch): they must not hold a fred command's future by value. They were
    /// ~21 KB each when the batching did; boxed commands make them a few hundred bytes.
    #[test]
    fn the_futures_a_request_moves_stay_small() {
        const MOST: usize = 2048;
        let entry = Entry::Vary(Arc::from(Vec::new()));
        let sizes = [
            ("get_entry", future_size(RedisStore::get_entry)),
            (
                "put_entry",
                future_size(|s, k: &CacheKey| s.put_entry(k, &entry, Duration::ZERO)),
            ),
            ("get_raw", future_size(RedisStore::get_raw)),
            (
                "put_raw",
                future_size(|s, k: &str| s.put_raw(k, Bytes::new(), Duration::ZERO)),
            ),
            ("ping", future_size(|s, _: &()| s.ping())),
        ];
        for (name, size) in sizes {
            assert!(size <= MOST, "{name}'s future is {size} bytes");
        }
    }
}
