//! Invalidation counters: the [`Generations`] a store keeps per key prefix, how a bump moves
//! them ([`Purge`]), and the in-process table the memory store keeps them in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The invalidation counters a [`Store`](crate::Store) keeps for one key prefix, as of one
/// moment: the prefix's sequence `seq`, which moves whenever any generation under the prefix
/// moves, and the generation of each name asked for, in the order asked (`0` for a name never
/// bumped).
///
/// A generation counts two kinds of bump: a [`Purge::Hard`] one adds `2^24`, a [`Purge::Soft`]
/// one adds `1`, so the low 24 bits count the soft bumps since the last hard one. 2^24 soft
/// bumps carry into the hard part: they become one hard bump, never the other way round.
///
/// A store reads both in one atomic step, so `gens` are exactly the generations at `seq`. A store
/// may share one sequence across all its prefixes (the memory store does): `seq` only tells
/// whether anything may have changed.
///
/// ```
/// use std::sync::Arc;
/// use tower_response_cache::{Generations, MemoryStore, Purge, Store};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let names: Vec<Arc<str>> = vec![Arc::from("tag:a"), Arc::from("tag:b")];
/// let bumped = store.bump_generations("app", &names[..1], Purge::Hard).await.unwrap();
/// assert_eq!(bumped.gens, [1 << 24]);
/// let now = store.generations("app", &names).await.unwrap();
/// assert_eq!(now, Generations::new(bumped.seq, vec![1 << 24, 0]));
/// let soft = store.bump_generations("app", &names, Purge::Soft).await.unwrap();
/// assert_eq!(soft.gens, [(1 << 24) + 1, 1]);
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generations {
    /// The prefix's invalidation sequence.
    pub seq: u64,
    /// The generation of each name asked for, in order.
    pub gens: Vec<u64>,
}

impl Generations {
    /// Generations `gens` at sequence `seq`.
    #[must_use]
    pub fn new(seq: u64, gens: Vec<u64>) -> Self {
        Self { seq, gens }
    }
}

/// How a bump invalidates the entries carrying a name: [`Hard`](Self::Hard), they are never
/// served again; [`Soft`](Self::Soft), they are marked stale (Fastly's soft purge): the cache
/// answers one stale while a refresh replaces it (the values API treats it as invalid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Purge {
    /// Invalidated: never served again.
    #[default]
    Hard,
    /// Marked stale: may be served while it is refreshed.
    Soft,
}

/// How many low bits of a generation count soft bumps.
pub(crate) const SOFT_BITS: u32 = 24;

impl Purge {
    /// What the bump adds to each generation it moves: `2^24` hard, `1` soft.
    #[must_use]
    pub fn increment(self) -> u64 {
        match self {
            Self::Hard => 1 << SOFT_BITS,
            Self::Soft => 1,
        }
    }
}

/// Whether an entry stamped with a name at generation `stamped` holds now that it is at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Validity {
    /// Nothing it carries was bumped since it was stamped.
    Valid,
    /// Only soft bumps since: stale, not invalidated.
    Soft,
    /// A hard bump since, or counters that went back (the store lost them): never serve it.
    Invalid,
}

impl Validity {
    /// One name's validity. A counter written by a version of this crate that only knew hard
    /// bumps of `1` reads as soft bumps: an entry stamped under it is at worst `Soft`; a hard
    /// bump since always changes the hard part.
    pub(crate) fn of(stamped: u64, now: u64) -> Self {
        if stamped == now {
            Self::Valid
        } else if now > stamped && now >> SOFT_BITS == stamped >> SOFT_BITS {
            Self::Soft
        } else {
            Self::Invalid
        }
    }

    /// The validity of an entry carrying several names: the worst of theirs.
    pub(crate) fn and(self, other: Self) -> Self {
        self.max(other)
    }
}

/// The number of bumps a generation stands for (hard plus soft), as a version number: `1` per
/// bump, and a counter written by an older version of this crate reads as it did.
pub(crate) fn bumps(gen: u64) -> u64 {
    (gen >> SOFT_BITS) + (gen & ((1 << SOFT_BITS) - 1))
}

/// The memory store's counters: one sequence for the whole store (read with one atomic load,
/// the hit path's fast check) and a generation per prefix and name.
#[derive(Debug)]
pub(crate) struct GenerationTable {
    /// Written only under `names`' lock, so a reader holding it sees `seq` and the generations
    /// of one moment.
    seq: AtomicU64,
    // A std lock: held for a few map operations, never across an await.
    names: Mutex<HashMap<Arc<str>, NameGens>>,
    /// The names an entry may carry: one bit per hash of (prefix, name), set whenever the
    /// name's generation is read and never cleared. Every entry's stamp is such a read (taken
    /// before its handler runs), so a clear bit means no entry carries the name: bumping it
    /// would invalidate nothing. A hash shared by two names only costs a needless bump.
    carried: Box<[AtomicU64]>,
}

/// 2^18 bits (32 KiB): the filter fills up only with hundreds of thousands of distinct names,
/// and then a write's invalidation is simply always made.
const CARRIED_WORDS: usize = 1 << 12;

impl Default for GenerationTable {
    fn default() -> Self {
        Self {
            seq: AtomicU64::default(),
            names: Mutex::default(),
            carried: (0..CARRIED_WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The filter's bit of `name` under `prefix`: FNV-1a over the bytes, then mixed.
fn carried_bit(prefix: &str, name: &str) -> (usize, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(prefix.as_bytes());
    // Not a byte of UTF-8: prefix `ab` with name `c` and `a` with `bc` stay apart.
    eat(&[0xff]);
    eat(name.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    let bit = (h as usize) % (CARRIED_WORDS * 64);
    (bit / 64, 1 << (bit % 64))
}

/// One prefix's generations by name.
type NameGens = HashMap<Arc<str>, u64>;

impl GenerationTable {
    pub(crate) fn read(&self, prefix: &str, names: &[Arc<str>]) -> Generations {
        if names.is_empty() {
            return Generations::new(self.seq.load(Ordering::Acquire), Vec::new());
        }
        // Outside the lock: a write's check takes none either. SeqCst with the load in
        // `may_carry`: a read that set the bit before a write's check is seen by it; one that
        // did not began after it (see `may_carry`).
        for name in names {
            let (word, bit) = carried_bit(prefix, name);
            let word = &self.carried[word];
            if word.load(Ordering::SeqCst) & bit == 0 {
                word.fetch_or(bit, Ordering::SeqCst);
            }
        }
        let table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.seq.load(Ordering::Acquire);
        let gens = match table.get(prefix) {
            Some(map) => names
                .iter()
                .map(|n| map.get(n).copied().unwrap_or(0))
                .collect(),
            None => vec![0; names.len()],
        };
        Generations::new(seq, gens)
    }

    /// Whether an entry may carry `name` under `prefix`: `false` only if its generation was
    /// never read. A miss reads its names before calling its handler, so a miss that reads one
    /// after this said `false` calls its handler after the write that asked had been answered:
    /// it sees what the write did.
    pub(crate) fn may_carry(&self, prefix: &str, name: &str) -> bool {
        let (word, bit) = carried_bit(prefix, name);
        self.carried[word].load(Ordering::SeqCst) & bit != 0
    }

    pub(crate) fn bump(&self, prefix: &str, names: &[Arc<str>], purge: Purge) -> Generations {
        let mut table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let map = match table.get_mut(prefix) {
            Some(map) => map,
            None => table.entry(Arc::from(prefix)).or_default(),
        };
        let gens = names
            .iter()
            .map(|n| {
                let gen = map.entry(n.clone()).or_insert(0);
                *gen = gen.wrapping_add(purge.increment());
                *gen
            })
            .collect();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        Generations::new(seq, gens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARD: u64 = 1 << SOFT_BITS;

    #[test]
    fn soft_bumps_alone_leave_an_entry_soft_and_any_hard_one_invalidates_it() {
        assert_eq!(Validity::of(HARD, HARD), Validity::Valid);
        assert_eq!(Validity::of(HARD, HARD + 1), Validity::Soft);
        assert_eq!(Validity::of(HARD, HARD + 2), Validity::Soft);
        assert_eq!(Validity::of(HARD, 2 * HARD + 1), Validity::Invalid);
        assert_eq!(Validity::of(HARD + 1, 2 * HARD + 1), Validity::Invalid);
        assert_eq!(Validity::of(HARD + 1, HARD), Validity::Invalid, "went back");
        // 2^24 soft bumps carry into the hard part: invalid, the safe direction.
        assert_eq!(Validity::of(HARD - 1, HARD), Validity::Invalid);
        assert_eq!(Validity::Valid.and(Validity::Soft), Validity::Soft);
        assert_eq!(Validity::Soft.and(Validity::Invalid), Validity::Invalid);
    }

    #[test]
    fn a_counter_of_an_older_version_reads_as_soft_bumps_and_a_hard_bump_invalidates_it() {
        // Written by a version that added 1 per (hard) bump.
        let old = 5;
        assert_eq!(bumps(old), 5);
        assert_eq!(Validity::of(old, old + HARD), Validity::Invalid);
        assert_eq!(bumps(old + HARD), 6);
        assert_eq!(bumps(3 * HARD + 2), 5);
    }

    #[test]
    fn a_name_may_be_carried_once_its_generation_was_read_under_its_prefix() {
        let table = GenerationTable::default();
        let a: Vec<Arc<str>> = vec![Arc::from("path:/a")];
        assert!(!table.may_carry("p", "path:/a"));
        table.bump("p", &a, Purge::Hard);
        assert!(!table.may_carry("p", "path:/a"), "a bump is no read");
        table.read("p", &a);
        assert!(table.may_carry("p", "path:/a"));
        assert!(!table.may_carry("q", "path:/a"), "another prefix");
        assert!(!table.may_carry("p", "path:/b"));
        // The sequence alone reads no name.
        table.read("p", &[]);
        assert!(!table.may_carry("p", "path:/b"));
    }

    #[test]
    fn the_table_adds_the_purges_increment() {
        let table = GenerationTable::default();
        let a: Vec<Arc<str>> = vec![Arc::from("tag:a")];
        assert_eq!(table.bump("p", &a, Purge::Soft).gens, [1]);
        assert_eq!(table.bump("p", &a, Purge::Hard).gens, [HARD + 1]);
        assert_eq!(
            table.bump("p", &a, Purge::Soft).seq,
            3,
            "the sequence moves by one"
        );
    }
}
