//! The embedded store: a moka cache bounded by total bytes, each entry expiring at its own TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::{Store, StoreError, StoreFuture};
use crate::{CacheKey, Entry};

/// An in-process store; the default.
///
/// Bounded by the approximate bytes of its entries (body plus headers), evicting the least
/// useful first. Hits hand out the stored body `Bytes` without copying. Cloning is cheap and
/// shares the same entries.
///
/// ```
/// use tower_response_cache::{MemoryStore, ResponseCache};
/// let cache = ResponseCache::builder()
///     .store(MemoryStore::new(64 * 1024 * 1024)) // 64 MiB
///     .build();
/// # let _ = cache;
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Stored>,
}

#[derive(Debug, Clone)]
struct Stored {
    entry: Entry,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<CacheKey, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, v: &Stored, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        v: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` of entries.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &CacheKey, v: &Stored| {
                let w = v.entry.weight() + k.prefix().len() + 80;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { cache }
    }

    /// How many entries it holds (approximate until pending maintenance runs).
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// The approximate bytes of all entries.
    #[must_use]
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

impl MemoryStore {
    fn lookup(&self, key: &CacheKey) -> Option<Entry> {
        self.cache.get(key).map(|stored| stored.entry)
    }
}

impl Default for MemoryStore {
    /// 128 MiB.
    fn default() -> Self {
        Self::new(128 * 1024 * 1024)
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(std::future::ready(Ok(self.lookup(key))))
    }

    fn get_now(&self, key: &CacheKey) -> Option<Result<Option<Entry>, StoreError>> {
        Some(Ok(self.lookup(key)))
    }

    fn put<'a>(&'a self, key: &'a CacheKey, entry: Entry, ttl: Duration) -> StoreFuture<'a, ()> {
        self.cache.insert(key.clone(), Stored { entry, ttl });
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool> {
        let removed = self.cache.remove(key).is_some();
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let victims: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.to_string().starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        for k in &victims {
            self.cache.invalidate(k.as_ref());
        }
        Box::pin(std::future::ready(Ok(victims.len() as u64)))
    }
}
