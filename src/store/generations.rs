//! Invalidation counters: the [`Generations`] a store keeps per key prefix, and the in-process
//! table the memory store keeps them in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The invalidation counters a [`Store`](crate::Store) keeps for one key prefix, as of one
/// moment: the prefix's sequence `seq`, which moves whenever any generation under the prefix
/// moves, and the generation of each name asked for, in the order asked (`0` for a name never
/// bumped).
///
/// A store reads both in one atomic step, so `gens` are exactly the generations at `seq`. A store
/// may share one sequence across all its prefixes (the memory store does): `seq` only tells
/// whether anything may have changed.
///
/// ```
/// use std::sync::Arc;
/// use tower_response_cache::{Generations, MemoryStore, Store};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let names: Vec<Arc<str>> = vec![Arc::from("tag:a"), Arc::from("tag:b")];
/// let bumped = store.bump_generations("app", &names[..1]).await.unwrap();
/// assert_eq!(bumped.gens, [1]);
/// let now = store.generations("app", &names).await.unwrap();
/// assert_eq!(now, Generations::new(bumped.seq, vec![1, 0]));
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

/// The memory store's counters: one sequence for the whole store (read with one atomic load,
/// the hit path's fast check) and a generation per prefix and name.
#[derive(Debug, Default)]
pub(crate) struct GenerationTable {
    /// Written only under `names`' lock, so a reader holding it sees `seq` and the generations
    /// of one moment.
    seq: AtomicU64,
    // A std lock: held for a few map operations, never across an await.
    names: Mutex<HashMap<Arc<str>, NameGens>>,
}

/// One prefix's generations by name.
type NameGens = HashMap<Arc<str>, u64>;

impl GenerationTable {
    pub(crate) fn read(&self, prefix: &str, names: &[Arc<str>]) -> Generations {
        if names.is_empty() {
            return Generations::new(self.seq.load(Ordering::Acquire), Vec::new());
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

    pub(crate) fn bump(&self, prefix: &str, names: &[Arc<str>]) -> Generations {
        let mut table = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let map = match table.get_mut(prefix) {
            Some(map) => map,
            None => table.entry(Arc::from(prefix)).or_default(),
        };
        let gens = names
            .iter()
            .map(|n| {
                let gen = map.entry(n.clone()).or_insert(0);
                *gen += 1;
                *gen
            })
            .collect();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        Generations::new(seq, gens)
    }
}
