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
