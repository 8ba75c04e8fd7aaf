//! `TestStore`: the memory store behind a switchboard, for tests about how the cache treats its
//! store. It counts the calls it gets and can fail, answer only asynchronously, or be slow.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_response_cache::{
    CacheKey, Entry, Generations, MemoryStore, Purge, Store, StoreError, StoreErrorKind,
    StoreFuture,
};

/// A clonable handle; clones share the entries, the counters and the switches.
#[derive(Debug, Clone, Default)]
pub struct TestStore {
    inner: MemoryStore,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    lookups: AtomicUsize,
    puts: AtomicUsize,
    down: AtomicBool,
    /// No `get_now`: every lookup takes the store's async path, as a networked store does.
    waiting: AtomicBool,
    delay_ms: AtomicU64,
}

impl TestStore {
    /// A working store that answers hits synchronously, like the memory store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that is down: every operation fails with `Unavailable`.
    pub fn down() -> Self {
        let store = Self::new();
        store.set_down(true);
        store
    }

    /// A store whose lookups always wait (no `get_now`), so every request takes the full path.
    pub fn waiting() -> Self {
        let store = Self::new();
        store.shared.waiting.store(true, Ordering::SeqCst);
        store
    }

    /// Takes the store down or brings it back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Every operation first waits `delay` (on tokio's clock, so a paused test stays instant);
    /// implies `waiting`.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Lookups asked of the store, sync or async, failed or not.
    pub fn lookups(&self) -> usize {
        self.shared.lookups.load(Ordering::SeqCst)
    }

    /// Writes asked of the store, failed or not.
    pub fn puts(&self) -> usize {
        self.shared.puts.load(Ordering::SeqCst)
    }

    /// Entries held now.
    pub fn entries(&self) -> u64 {
        self.inner.entry_count()
    }

    fn sync_ok(&self) -> bool {
        !self.shared.waiting.load(Ordering::SeqCst)
            && !self.shared.down.load(Ordering::SeqCst)
            && self.shared.delay_ms.load(Ordering::SeqCst) == 0
    }

    /// Waits out the delay, then fails if the store is down.
    async fn gate(&self) -> Result<(), StoreError> {
        let ms = self.shared.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.shared.down.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Unavailable, "down"));
        }
        Ok(())
    }
}

impl Store for TestStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Entry>> {
        self.shared.lookups.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.gate().await?;
            self.inner.get(key).await
        })
    }
    fn get_now(&self, key: &CacheKey) -> Option<Result<Option<Entry>, StoreError>> {
        if !self.sync_ok() {
            return None;
        }
        self.shared.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.get_now(key)
    }
    fn put<'a>(&'a self, key: &'a CacheKey, entry: Entry, ttl: Duration) -> StoreFuture<'a, ()> {
        self.shared.puts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.gate().await?;
            self.inner.put(key, entry, ttl).await
        })
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            self.inner.remove(key).await
        })
    }
    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            self.gate().await?;
            self.inner.clear_prefix(prefix).await
        })
    }
    fn generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
    ) -> StoreFuture<'a, Generations> {
        Box::pin(async move {
            self.gate().await?;
            self.inner.generations(prefix, names).await
        })
    }
    fn bump_generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
        purge: Purge,
    ) -> StoreFuture<'a, Generations> {
        Box::pin(async move {
            self.gate().await?;
            self.inner.bump_generations(prefix, names, purge).await
        })
    }
    fn generations_now(
        &self,
        prefix: &str,
        names: &[Arc<str>],
    ) -> Option<Result<Generations, StoreError>> {
        if !self.sync_ok() {
            return None;
        }
        self.inner.generations_now(prefix, names)
    }
}
