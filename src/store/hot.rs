//! A per-thread table of the memory store's hottest small entries, in front of moka.
//!
//! A hot entry is read thousands of times a second; each moka read also records the access
//! (read buffer, frequency sketch, periodic housekeeping), which costs more than the rest of
//! a hit's lookup. Each thread keeps the entries it read last, tagged with the store's
//! *generation*: every write to the store (put, remove, clear) bumps it after the write, so a
//! remembered entry is served only while nothing in the store has changed since it was read,
//! exactly what moka would have answered. A remembered entry is never served past its TTL;
//! moka's evictions for size also bump the generation, a little later than they happen, so a
//! remembered entry can outlive its eviction briefly, as if it had been read just before.
//!
//! Two limits keep the table honest with the store's byte bound and eviction policy: only
//! entries up to [`MAX_WEIGHT`] bytes are remembered (at most `SLOTS × MAX_WEIGHT` per thread
//! outside the bound), and every [`RECORD_EVERY`]th read of a remembered entry still goes to
//! moka, so the entries hot here stay hot in moka's eyes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::{CacheKey, Entry};

const SLOTS: usize = 16;
/// Entries with larger bodies are always read from moka.
pub(crate) const MAX_WEIGHT: usize = 64 * 1024;
/// One read in this many of a remembered entry is a real moka read.
const RECORD_EVERY: u32 = 32;

/// What a store shares with its clones: the generation its writes bump.
#[derive(Debug, Default)]
pub(crate) struct Generation(AtomicU64);

impl Generation {
    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Called after every write: entries read before it are not served again.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

struct Slot {
    /// Holding the `Arc` pins its address: no other store can be mistaken for this one.
    store: Arc<Generation>,
    generation: u64,
    key: CacheKey,
    entry: Entry,
    deadline: Instant,
    reads: u32,
}

thread_local! {
    static HOT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(key: &CacheKey) -> usize {
    let word =
        |b: &[u8; 32]| u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    let h = word(key.primary()) ^ key.variant().map_or(0, |v| word(v).rotate_left(17));
    (h % SLOTS as u64) as usize
}

/// The entry for `key` remembered on this thread, if the store has not changed since.
///
/// The invariant: a slot answers only for the store (`Arc<Generation>`) and the key it was
/// read under, only while that store's generation is the one taken *before* the read, and only
/// until the entry's deadline. Every change to the store (put, remove, clear, eviction) bumps
/// the generation *after* it is made, which invalidates every slot of that store on every
/// thread at once: a reader racing a write remembers the old generation and never serves it.
/// Nothing else invalidates a slot; a store method that changes moka without bumping breaks
/// this (the store's tests check put, remove and clear).
pub(crate) fn get(store: &Arc<Generation>, key: &CacheKey) -> Option<Entry> {
    let current = store.current();
    HOT.with_borrow_mut(|hot| {
        let slot = hot.get_mut(slot_of(key))?.as_mut()?;
        if !Arc::ptr_eq(&slot.store, store) || slot.generation != current || slot.key != *key {
            return None;
        }
        if Instant::now() >= slot.deadline {
            return None;
        }
        slot.reads += 1;
        if slot.reads % RECORD_EVERY == 0 {
            // Let moka see this read: the caller reads it there and remembers it again.
            return None;
        }
        Some(slot.entry.clone())
    })
}

/// Remembers `entry`, read from the store at `generation` (taken before the read).
pub(crate) fn remember(
    store: &Arc<Generation>,
    generation: u64,
    key: &CacheKey,
    entry: &Entry,
    deadline: Instant,
) {
    if matches!(entry, Entry::Response(r) if r.body.len() > MAX_WEIGHT) {
        return;
    }
    HOT.with_borrow_mut(|hot| {
        if hot.is_empty() {
            hot.resize_with(SLOTS, || None);
        }
        let slot = &mut hot[slot_of(key)];
        let reads = match slot {
            Some(s) if s.key == *key && Arc::ptr_eq(&s.store, store) => s.reads,
            _ => 0,
        };
        *slot = Some(Slot {
            store: store.clone(),
            generation,
            key: key.clone(),
            entry: entry.clone(),
            deadline,
            reads,
        });
    });
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
        })
    }

    fn body(entry: Option<Entry>) -> Option<Bytes> {
        match entry? {
            Entry::Response(r) => Some(r.body.clone()),
            Entry::Vary(_) => None,
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn key(name: &str) -> CacheKey {
        CacheKey::from_parts("hot", &[name.as_bytes()])
    }

    #[test]
    fn an_entry_read_before_a_write_is_not_served_after_it() {
        let store = Arc::new(Generation::default());
        let k = key("k");
        // Read at generation 0; a write lands (and bumps) before the reader remembers it.
        let read_at = store.current();
        store.bump();
        remember(&store, read_at, &k, &entry("old"), later());
        assert_eq!(body(get(&store, &k)), None);
        // Read after the write: served.
        remember(&store, store.current(), &k, &entry("new"), later());
        assert_eq!(body(get(&store, &k)).as_deref(), Some(&b"new"[..]));
        store.bump();
        assert_eq!(body(get(&store, &k)), None);
    }

    #[test]
    fn an_entry_is_never_served_past_its_deadline() {
        let store = Arc::new(Generation::default());
        let k = key("k");
        remember(&store, store.current(), &k, &entry("e"), Instant::now());
        assert_eq!(body(get(&store, &k)), None);
    }

    #[test]
    fn a_slot_never_answers_for_another_key() {
        let store = Arc::new(Generation::default());
        let a = key("a");
        let b = (0..)
            .map(|i| key(&format!("b{i}")))
            .find(|b| slot_of(b) == slot_of(&a))
            .unwrap();
        remember(&store, store.current(), &a, &entry("a"), later());
        assert_eq!(body(get(&store, &b)), None, "same slot, another key");
        assert_eq!(body(get(&store, &a)).as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn a_slot_never_answers_for_another_store() {
        // Both at generation 0: only their identity tells them apart.
        let (one, two) = (Arc::new(Generation::default()), Arc::default());
        let k = key("k");
        remember(&one, 0, &k, &entry("one"), later());
        assert_eq!(body(get(&two, &k)), None);
        assert_eq!(body(get(&one, &k)).as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn one_read_in_record_every_goes_to_the_store() {
        let store = Arc::new(Generation::default());
        let k = key("k");
        remember(&store, 0, &k, &entry("e"), later());
        let misses = (0..RECORD_EVERY * 4)
            .filter(|_| get(&store, &k).is_none())
            .count();
        assert_eq!(misses, 4);
    }
}
