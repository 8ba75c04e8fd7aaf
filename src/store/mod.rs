//! Where entries live: the [`Store`] trait and the stores that implement it.
//!
//! A store maps a [`CacheKey`] to an [`Entry`] for a given time to live. It only stores; what is
//! cacheable, fresh or varied is the layer's business.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{CacheKey, Entry};

mod evictions;
mod generations;
pub(crate) mod glob;
pub(crate) use generations::{bumps, Validity};
pub use generations::{Generations, Purge};
mod memory;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::{BreakerState, RedisServerStats, RedisStats, RedisStore, RedisStoreBuilder};

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A cache backend.
///
/// Methods return boxed futures so a store can sit behind `Arc<dyn Store>`. A `get` must cost a
/// single round trip to a remote store. Failures are reported, never panicked: the layer turns
/// any error into a miss and serves the request from the handler.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::{CacheKey, Entry, MemoryStore, Store};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new(1 << 20);
/// let key = CacheKey::from_parts("demo", &[b"k"]);
/// store.put(&key, Entry::Vary(vec![].into()), Duration::from_secs(5)).await.unwrap();
/// assert!(store.get(&key).await.unwrap().is_some());
/// assert!(store.remove(&key).await.unwrap());
/// assert!(store.get(&key).await.unwrap().is_none());
/// # });
/// ```
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The entry under `key`, if any.
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Entry>>;

    /// The entry under `key` if the store can answer without waiting (an in-process store);
    /// `None` means "ask [`get`](Self::get)". The layer tries this first on every lookup, which
    /// spares in-memory hits a boxed future. The default never answers.
    fn get_now(&self, key: &CacheKey) -> Option<Result<Option<Entry>, StoreError>> {
        let _ = key;
        None
    }

    /// How long one request may spend reading this store in all (a varying resource costs two
    /// [`get`](Self::get)s, a request that waited on a concurrent miss looks again) before the
    /// layer gives up and serves a miss; `None` (the default) sets no cap, for stores that
    /// answer at once. [`ResponseCacheBuilder::lookup_timeout`] overrides it.
    ///
    /// [`ResponseCacheBuilder::lookup_timeout`]: crate::ResponseCacheBuilder::lookup_timeout
    fn lookup_timeout(&self) -> Option<Duration> {
        None
    }

    /// Stores `entry` under `key`; the store drops it after `ttl`.
    fn put<'a>(&'a self, key: &'a CacheKey, entry: Entry, ttl: Duration) -> StoreFuture<'a, ()>;

    /// Removes the entry under `key`; whether there was one.
    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool>;

    /// Removes every entry whose key starts with `prefix`; how many were removed.
    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64>;

    // Invalidation: generation counters per key prefix (see `Generations`). No default: a
    // store that kept none would let every invalidation silently serve stale entries.

    /// The current [`Generations`] of `names` under `prefix`, read in one atomic step (`0` for a
    /// name never bumped). With no names, just the sequence: the cache polls it.
    fn generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
    ) -> StoreFuture<'a, Generations>;

    /// Adds [`purge.increment()`](Purge::increment) to the generation of each of `names` under
    /// `prefix` and one to its sequence, in one atomic step seen by every user of the store;
    /// the generations after it. Names are `*`, or start with a kind and a colon (`tag:`,
    /// `path:`); `__seq` is never one.
    fn bump_generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
        purge: Purge,
    ) -> StoreFuture<'a, Generations>;

    /// Every name bumped under `prefix` with its generation, and the sequence, read in one
    /// atomic step; `None` when there are more than `max` names, or the store cannot list them
    /// (the default). A cache that holds them all knows every other name is at `0` and needs
    /// no read for it: a miss on a URL never seen then stamps its entry without a round trip.
    fn all_generations<'a>(
        &'a self,
        prefix: &'a str,
        max: usize,
    ) -> StoreFuture<'a, Option<(Generations, Vec<Arc<str>>)>> {
        let _ = (prefix, max);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Like [`generations`](Self::generations) when the store can answer without waiting and
    /// is itself the authority (an in-process store); `None` (the default) means "ask
    /// `generations`". A store that answers here is read on every check and never polled.
    fn generations_now(
        &self,
        prefix: &str,
        names: &[Arc<str>],
    ) -> Option<Result<Generations, StoreError>> {
        let _ = (prefix, names);
        None
    }

    /// Whether an entry in this store may carry `name` under `prefix` (see
    /// [`generations`](Self::generations)): `Some(false)` only when none can, because the
    /// name's generation was never read; `None` (the default) when the store cannot tell, as a
    /// store shared with other processes cannot. Asked only of names an entry's stamp reads
    /// before its handler runs (its request's `path:` names), never of a handler's own tags.
    ///
    /// A successful write through the layer skips its invalidation when none of the names it
    /// would bump may be carried: the memory store's counters then do not grow with every path
    /// written to, and its entries stay on the fast check.
    fn may_carry(&self, prefix: &str, name: &str) -> Option<bool> {
        let _ = (prefix, name);
        None
    }

    // Leases, for fleet-wide stampede control (`CacheLayer::lease`): one process at a time
    // computes a missing entry. The defaults suit a store no other process shares (an
    // in-process store, where the layer's own coalescing already does this): every lease is
    // granted, and releasing one does nothing.

    /// Takes the lease on `key` for `ttl` under `token` if nobody holds it: whether it was
    /// granted. The lease ends by itself after `ttl` (a holder that died frees it). Redis:
    /// `SET <key>:lock <token> NX PX <ttl>`, in the entry's hash slot.
    fn take_lease<'a>(
        &'a self,
        key: &'a CacheKey,
        token: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let _ = (key, token, ttl);
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Ends the lease on `key` if `token` still holds it (a lease that expired and was taken by
    /// another is left alone): whether it was ended.
    fn release_lease<'a>(&'a self, key: &'a CacheKey, token: &'a str) -> StoreFuture<'a, bool> {
        let _ = (key, token);
        Box::pin(std::future::ready(Ok(false)))
    }

    // Raw values, for the low-level API (`ResponseCache::get`, `set`, `incr`…): bytes under a
    // readable string key (`<prefix>:v:<key>`), apart from the responses. The defaults fail
    // with `Backend` ("does not keep values"): a store that cannot keep values must say so,
    // never drop them silently.

    /// The raw value under `key`, if any. A counter ([`incr_value`](Self::incr_value)) reads
    /// as its decimal ASCII digits, as Redis stores it.
    fn get_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        let _ = key;
        unsupported()
    }

    /// Stores `value` under `key`; the store drops it after `ttl` (zero: removes it).
    fn put_value<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        let _ = (key, value, ttl);
        unsupported()
    }

    /// Removes the value under `key`; whether there was one.
    fn remove_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        let _ = key;
        unsupported()
    }

    /// Adds `delta` to the counter under `key` atomically and returns the new count. A missing
    /// key starts at 0 and never expires; an existing one keeps its time to live. A value that
    /// is not a decimal `i64`, or a sum that overflows, is a [`StoreErrorKind::Corrupt`] error
    /// and leaves the value as it was.
    fn incr_value<'a>(&'a self, key: &'a str, delta: i64) -> StoreFuture<'a, i64> {
        let _ = (key, delta);
        unsupported()
    }

    /// Removes every value whose key matches the Redis glob `pattern` (`*`, `?`, `[…]`, `\`);
    /// how many were removed. The cache always passes a pattern starting `<prefix>:v:`, which
    /// no response key matches. Redis: paged `SCAN` + `UNLINK` on every primary, never `KEYS`.
    fn remove_values_matching<'a>(&'a self, pattern: &'a str) -> StoreFuture<'a, u64> {
        let _ = pattern;
        unsupported()
    }
}

/// What a store that keeps no raw values answers.
fn unsupported<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Err(StoreError::new(
        StoreErrorKind::Backend,
        "this store does not keep values (the low-level API)",
    ))))
}

/// A store failure. The layer logs it and treats the request as a miss.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    timeout: bool,
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or did not answer in time.
    Unavailable,
    /// The backend answered with something that is not an entry of ours.
    Corrupt,
    /// Any other backend error.
    Backend,
    /// The store's settings are invalid (a bad URL, a zero timeout); reported when it is built.
    Config,
    /// A value of the low-level API could not be serialised; nothing was sent to the store.
    Encode,
}

impl StoreError {
    /// A new error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            timeout: false,
        }
    }

    /// An [`Unavailable`](StoreErrorKind::Unavailable) error for an operation that ran out of
    /// time; counted under `store_timeouts` as well as `store_errors` (see [`crate::Metrics`]).
    ///
    /// ```
    /// use tower_response_cache::{StoreError, StoreErrorKind};
    /// let e = StoreError::timeout("GET took longer than 50ms");
    /// assert_eq!(e.kind(), StoreErrorKind::Unavailable);
    /// assert!(e.is_timeout());
    /// ```
    pub fn timeout(message: impl Into<String>) -> Self {
        Self {
            timeout: true,
            ..Self::new(StoreErrorKind::Unavailable, message)
        }
    }

    /// Whether the operation ran out of time.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache store error ({:?}): {}", self.kind, self.message)
    }
}

impl std::error::Error for StoreError {}
