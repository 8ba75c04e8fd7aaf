//! The embedded store: a table bounded by total bytes, each entry expiring at its own TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::evictions::Evictions;
use super::generations::GenerationTable;
use super::{Generations, Purge, Store, StoreError, StoreFuture};
use crate::{CacheKey, CachedResponse, Entry};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

mod table;
mod values;
use table::Table;
use values::value_slot;

/// An in-process store; the default.
///
/// Bounded by what its entries cost in memory — body, headers and the store's own bookkeeping
/// per entry, as the allocator counts them — so the process grows by about the bound when the
/// store is full. It evicts with CLOCK: in insertion order, passing over (once) an entry read
/// since the hand last came by, which keeps hot pages much as LRU would. Each entry expires at
/// its own deadline. Hits hand out the stored body `Bytes` without copying. Cloning is cheap
/// and shares the same entries.
///
/// The store is the authority on its invalidation counters ([`Generations`]): every cache on it
/// (through any clone) sees an invalidation at once.
///
/// ```
/// use tower_response_cache::{MemoryStore, ResponseCache};
/// let cache = ResponseCache::builder()
///     .store(MemoryStore::new(64 * 1024 * 1024)) // 64 MiB
///     .build();
/// # let _ = cache;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    table: Arc<Table<Held>>,
    evictions: Arc<Evictions>,
    /// The invalidation counters, shared by the clones: the store is their authority.
    gens: Arc<GenerationTable>,
}

/// What one slot holds: a response entry, or a raw value of the low-level API.
#[derive(Debug, Clone)]
enum Held {
    Entry(Entry),
    /// Under `value_slot`'s key. Boxed: values are rare, and every slot is as large as its
    /// largest variant.
    Value(Box<Value>),
}

/// A raw value; `key` is the readable one, for pattern removal.
#[derive(Debug, Clone)]
struct Value {
    key: Arc<str>,
    bytes: Bytes,
}

/// What one entry costs the process beyond the allocations [`cost`] counts: the table's
/// bookkeeping for it (its hash-map bucket at the map's load factor, the boxed key, its place
/// in the eviction queue) and the heap's slack under churn. Measured, not derived: with
/// `benches/drivers/memory_bound.rs` filling a 128 MiB store with 200k distinct 1 KiB responses
/// (so it evicts all along), peak RSS growth was 1.05x the bound with this figure and 1.11x
/// with moka's old 480 B (see BENCHMARKS.md). A store that never evicts grows less than its
/// weight (16 B bodies: 105 MiB for 125 MiB weighed).
const ENTRY_OVERHEAD: usize = 640;

/// What a `Bytes` that has been cloned or sliced adds: its shared control block.
const SHARED_BYTES: usize = 32;

/// What the allocator takes for a request of `n` bytes: glibc rounds `n` plus an 8-byte header
/// up to 16, and never hands out less than 32.
fn allocated(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// What a large allocation costs beyond itself once the store churns: evicted bodies leave holes
/// in the allocator's heap that differently sized blocks cannot reuse, and the heap stays
/// resident. With 64 KiB bodies and nothing else weighed this way, the process settled 11–26 %
/// above the bound after 5k–60k distinct URLs; 1 KiB bodies showed no such creep (3–5 %).
/// Weighed as an eighth of every body from 4 KiB up.
fn churn_slack(body_len: usize) -> usize {
    if body_len >= 4096 {
        body_len / 8
    } else {
        0
    }
}

/// The bytes an entry keeps allocated while it is stored, as the allocator counts them, so the
/// store's bound holds for the process's memory and not only for the bodies (under 200k distinct
/// URLs a store weighing body and headers alone grew the process to 1.6–2.4× its bound).
///
/// Header values are counted as if each had its own allocation; those sliced from the body's
/// allocation (`Content-Length`, a computed `ETag`) do not, which errs on the side of the bound.
fn cost(held: &Held) -> usize {
    let own = match held {
        Held::Value(v) => {
            // The box, the `Arc<str>` (two counters and the key), the bytes and their control
            // block.
            allocated(std::mem::size_of::<Value>())
                + allocated(16 + v.key.len())
                + allocated(v.bytes.len())
                + SHARED_BYTES
        }
        Held::Entry(Entry::Response(r)) => {
            let pairs = std::mem::size_of::<(HeaderName, HeaderValue)>() * r.headers.len();
            // Values own their bytes (a few are slices of the body's allocation and cost less);
            // names are almost always the standard ones, which are static.
            let header_bytes: usize = r.headers.iter().map(|(_, v)| allocated(v.len())).sum();
            // The `Arc<CachedResponse>` (two counters and the response), the headers' slice,
            // their bytes, the body's allocation and its control block.
            allocated(16 + std::mem::size_of::<CachedResponse>())
                + allocated(pairs)
                + header_bytes
                + allocated(r.body.len())
                + churn_slack(r.body.len())
                + SHARED_BYTES
                + r.stamp.allocated(allocated)
        }
        Held::Entry(Entry::Vary(names)) => {
            let slice = 16 + std::mem::size_of::<HeaderName>() * names.len();
            allocated(slice)
                + names
                    .iter()
                    .map(|n| allocated(n.as_str().len()))
                    .sum::<usize>()
        }
    };
    own + ENTRY_OVERHEAD
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` of entries.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(Evictions::new("http"));
        Self {
            table: Arc::new(Table::new(max_bytes, evictions.clone())),
            evictions,
            gens: Arc::default(),
        }
    }

    /// The first word of the eviction counter's name (default `http`):
    /// `{namespace}_cache_evictions_total{cause}`, recorded through the `metrics` facade
    /// (feature `metrics`) to the recorder installed at the store's first eviction under that
    /// name. Clones share the counter.
    ///
    /// ```
    /// use tower_response_cache::{MemoryStore, ResponseCache};
    /// let cache = ResponseCache::builder()
    ///     .metrics_namespace("twiscope")
    ///     .store(MemoryStore::new(64 << 20).metrics_namespace("twiscope"))
    ///     .build();
    /// # let _ = cache;
    /// ```
    #[must_use]
    pub fn metrics_namespace(self, namespace: &str) -> Self {
        self.evictions.rename(namespace);
        self
    }

    /// How many live entries it holds (dropping the expired ones first).
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.table.sizes(Instant::now()).0
    }

    /// The approximate bytes of all live entries (dropping the expired ones first).
    #[must_use]
    pub fn weighted_size(&self) -> u64 {
        self.table.sizes(Instant::now()).1
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// The entry under `key`.
    fn lookup(&self, key: &CacheKey) -> Option<Entry> {
        match self.table.get(key, Instant::now())? {
            Held::Entry(entry) => Some(entry),
            Held::Value(_) => None,
        }
    }

    /// Stores `held` under `key` until `deadline`.
    fn keep(&self, key: CacheKey, held: Held, deadline: Instant) {
        let weight = cost(&held) as u64;
        self.table.insert(key, held, deadline, weight);
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
        self.keep(key.clone(), Held::Entry(entry), Instant::now() + ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, bool> {
        let removed = self.table.remove(key).is_some();
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn clear_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let removed = self
            .table
            .remove_where(|k, _| k.to_string().starts_with(prefix));
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn get_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(std::future::ready(Ok(self.value(key))))
    }

    fn put_value<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.insert_value(key, value, Instant::now() + ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove_value<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        let removed = self.table.remove(&value_slot(key)).is_some();
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn incr_value<'a>(&'a self, key: &'a str, delta: i64) -> StoreFuture<'a, i64> {
        Box::pin(std::future::ready(self.add(key, delta)))
    }

    fn remove_values_matching<'a>(&'a self, pattern: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(Ok(self.remove_matching(pattern))))
    }

    fn generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
    ) -> StoreFuture<'a, Generations> {
        Box::pin(std::future::ready(Ok(self.gens.read(prefix, names))))
    }

    fn bump_generations<'a>(
        &'a self,
        prefix: &'a str,
        names: &'a [Arc<str>],
        purge: Purge,
    ) -> StoreFuture<'a, Generations> {
        Box::pin(std::future::ready(Ok(self.gens.bump(prefix, names, purge))))
    }

    fn generations_now(
        &self,
        prefix: &str,
        names: &[Arc<str>],
    ) -> Option<Result<Generations, StoreError>> {
        Some(Ok(self.gens.read(prefix, names)))
    }

    fn may_carry(&self, prefix: &str, name: &str) -> Option<bool> {
        Some(self.gens.may_carry(prefix, name))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::StatusCode;

    use super::*;
    use crate::CachedResponse;

    fn entry(body: &'static str) -> Entry {
        Entry::from(CachedResponse {
            status: StatusCode::OK,
            headers: crate::StoredHeaders::default(),
            body: Bytes::from_static(body.as_bytes()),
            stored_at_millis: 0,
            ttl: Duration::from_secs(60),
            stamp: crate::entry::Stamp::default(),
            grace: crate::entry::Grace::default(),
            compute_millis: 0,
        })
    }

    fn body(store: &MemoryStore, key: &CacheKey) -> Option<Bytes> {
        match store.lookup(key)? {
            Entry::Response(r) => Some(r.body.clone()),
            Entry::Vary(_) => None,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_remembered_entry_gives_way_to_a_write_through_any_clone() {
        let store = MemoryStore::default();
        let clone = store.clone();
        let k = CacheKey::from_parts("t", &[b"k"]);
        store.put(&k, entry("one"), TTL).await.unwrap();
        for _ in 0..100 {
            assert_eq!(body(&store, &k).as_deref(), Some(&b"one"[..]));
        }
        clone.put(&k, entry("two"), TTL).await.unwrap();
        assert_eq!(body(&store, &k).as_deref(), Some(&b"two"[..]));
        clone.remove(&k).await.unwrap();
        assert_eq!(body(&store, &k), None);
    }

    #[test]
    fn a_write_on_one_thread_reaches_readers_on_others() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = MemoryStore::default();
        let k = CacheKey::from_parts("t", &[b"k"]);
        rt.block_on(store.put(&k, entry("one"), TTL)).unwrap();
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel::<Option<Bytes>>();
        std::thread::scope(|s| {
            s.spawn(|| {
                // The reader's thread remembers "one", then must see what the writer did since.
                for () in asked {
                    let _ = body(&store, &k);
                    tell.send(body(&store, &k)).unwrap();
                }
            });
            ask.send(()).unwrap();
            assert_eq!(told.recv().unwrap().as_deref(), Some(&b"one"[..]));
            rt.block_on(store.put(&k, entry("two"), TTL)).unwrap();
            ask.send(()).unwrap();
            assert_eq!(told.recv().unwrap().as_deref(), Some(&b"two"[..]));
            rt.block_on(store.remove(&k)).unwrap();
            ask.send(()).unwrap();
            assert_eq!(told.recv().unwrap(), None);
            drop(ask);
        });
    }

    #[tokio::test]
    async fn a_cleared_entry_is_never_answered_from_the_table() {
        let store = MemoryStore::default();
        let (gone, kept) = (
            CacheKey::from_parts("gone", &[b"k"]),
            CacheKey::from_parts("kept", &[b"k"]),
        );
        store.put(&gone, entry("gone"), TTL).await.unwrap();
        store.put(&kept, entry("kept"), TTL).await.unwrap();
        for _ in 0..3 {
            assert!(body(&store, &gone).is_some() && body(&store, &kept).is_some());
        }
        assert_eq!(store.clone().clear_prefix("gone").await.unwrap(), 1);
        assert_eq!(body(&store, &gone), None);
        assert_eq!(body(&store, &kept).as_deref(), Some(&b"kept"[..]));
    }

    #[tokio::test]
    async fn two_stores_never_answer_for_each_other() {
        let (a, b) = (MemoryStore::default(), MemoryStore::default());
        let k = CacheKey::from_parts("t", &[b"k"]);
        a.put(&k, entry("a"), TTL).await.unwrap();
        assert_eq!(body(&a, &k).as_deref(), Some(&b"a"[..]));
        assert_eq!(body(&b, &k), None);
        b.put(&k, entry("b"), TTL).await.unwrap();
        assert_eq!(body(&b, &k).as_deref(), Some(&b"b"[..]));
        assert_eq!(body(&a, &k).as_deref(), Some(&b"a"[..]));
    }

    #[tokio::test]
    async fn an_entry_weighs_its_body_headers_and_the_stores_bookkeeping() {
        let store = MemoryStore::new(1 << 30);
        let headers: crate::StoredHeaders = [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::ETAG, "\"0123456789abcdef\""),
        ]
        .into_iter()
        .map(|(n, v)| (n, HeaderValue::from_static(v)))
        .collect();
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let e = Entry::from(CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(vec![b'x'; 1000]),
            stored_at_millis: 0,
            ttl: TTL,
            stamp: crate::entry::Stamp::default(),
            grace: crate::entry::Grace::default(),
            compute_millis: 0,
        });
        store
            .put(&CacheKey::from_parts("t", &[b"k"]), e, TTL)
            .await
            .unwrap();
        // What the entry holds, its structs, and ~450 B of the table's bookkeeping and the key,
        // measured per entry (see `ENTRY_OVERHEAD`).
        let structs = std::mem::size_of::<CachedResponse>()
            + 2 * std::mem::size_of::<(HeaderName, HeaderValue)>();
        let floor = 1000 + header_bytes + structs + 450;
        let weight = store.weighted_size();
        assert!(
            weight >= floor as u64,
            "weighs {weight}, costs at least {floor}"
        );
        // …and not wildly more, or the bound wastes memory it could use.
        assert!(weight <= (floor + 600) as u64, "weighs {weight}");
    }

    #[test]
    fn an_entry_weighs_the_names_it_can_be_invalidated_by() {
        let with_names = |names: Vec<(Arc<str>, u64)>| {
            Entry::from(CachedResponse {
                status: StatusCode::OK,
                headers: crate::StoredHeaders::default(),
                body: Bytes::from_static(b"x"),
                stored_at_millis: 0,
                ttl: TTL,
                stamp: crate::entry::Stamp::new(1, names),
                grace: crate::entry::Grace::default(),
                compute_millis: 0,
            })
        };
        let name: Arc<str> = Arc::from("url:/influencers/twitter?limit=5");
        let named = cost(&Held::Entry(with_names(vec![(name.clone(), 0); 8])));
        let bare = cost(&Held::Entry(with_names(Vec::new())));
        assert!(
            named >= bare + 8 * (16 + name.len() + 16),
            "{named} vs {bare}"
        );
    }

    #[test]
    fn a_large_body_also_weighs_the_heap_holes_eviction_leaves() {
        let body = |len: usize| {
            Entry::from(CachedResponse {
                status: StatusCode::OK,
                headers: crate::StoredHeaders::default(),
                body: Bytes::from(vec![b'x'; len]),
                stored_at_millis: 0,
                ttl: TTL,
                stamp: crate::entry::Stamp::default(),
                grace: crate::entry::Grace::default(),
                compute_millis: 0,
            })
        };
        assert!(cost(&Held::Entry(body(64 * 1024))) >= 64 * 1024 * 9 / 8 + ENTRY_OVERHEAD);
        // No slack for a small body: the body, the response itself and a little more.
        let small = 1024 + ENTRY_OVERHEAD + std::mem::size_of::<CachedResponse>() + 100;
        assert!(cost(&Held::Entry(body(1024))) < small);
    }

    #[tokio::test]
    async fn a_full_store_holds_what_fits_in_its_bound_with_overhead() {
        let store = MemoryStore::new(1 << 20);
        for i in 0..2000u32 {
            let k = CacheKey::from_parts("t", &[&i.to_be_bytes()]);
            let e = Entry::from(CachedResponse {
                status: StatusCode::OK,
                headers: crate::StoredHeaders::default(),
                body: Bytes::from(vec![b'x'; 1024]),
                stored_at_millis: 0,
                ttl: TTL,
                stamp: crate::entry::Stamp::default(),
                grace: crate::entry::Grace::default(),
                compute_millis: 0,
            });
            store.put(&k, e, TTL).await.unwrap();
        }
        // 1 MiB of 1 KiB bodies, each costing ~1.6 KiB in process memory.
        let entries = store.entry_count();
        assert!(entries <= (1 << 20) / (1024 + 600), "{entries} entries");
        assert!(store.weighted_size() <= 1 << 20);
    }
}
