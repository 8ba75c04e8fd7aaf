//! Invalidation by generation counters: the [`Stamp`] every entry carries, and what this cache
//! knows of the store's counters ([`Gens`]), which decides whether a stamp still holds.
//!
//! An entry is served only if the store's sequence is the one it was stamped at (one atomic
//! compare: the usual case), or every name it carries still has the generation it had when its
//! miss started. A store that is its own authority in process (memory) is read on every check;
//! for a remote one (Redis) this keeps a mirror — the sequence and the names asked so far —
//! refreshed by a background poll and at once by this cache's own bumps.
//!
//! A miss takes its stamp before the handler runs ([`Gens::begin`]). When the generations are
//! at hand (in process, or all mirrored) that is the stamp; otherwise it notes the sequence it
//! knows and the names are read with the write, after the response is sent: the entry is
//! stored only if the sequence read then is the one noted, so nothing was invalidated between
//! the two and the generations read are those of before the handler ran. A miss never waits
//! on the store for its stamp.
//!
//! The poll also loads every name the store has counters for, when there are at most
//! [`MAX_NAMES`] ([`Store::all_generations`]): the mirror is then *complete*, any name it does
//! not hold is at `0`, and a miss on a URL never seen stamps its entry from the mirror, with no
//! read at write time. It stays complete through this cache's own bumps and is dropped with
//! the names on any other change, until the next poll loads it again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::entry::Stamp;
use crate::log::log_store_error;
use crate::store::Validity;
use crate::{Generations, Purge, Store, StoreError};

/// The default of `ResponseCacheBuilder::invalidation_poll`.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// How many names the mirror remembers; past it, it starts over (names reload lazily).
const MAX_NAMES: usize = 10_000;

/// A miss's stamp as taken before the handler ran: complete, or the sequence to confirm when
/// its generations are read at write time.
pub(crate) enum Pending {
    Ready(Stamp),
    /// `seq` is no newer than the store's when the handler started (the mirror's, or `0` when
    /// it knows none yet).
    Deferred {
        seq: u64,
        names: Vec<Arc<str>>,
    },
}

/// This cache's view of the store's counters for its prefix.
pub(crate) struct Gens {
    store: Arc<dyn Store>,
    prefix: Arc<str>,
    /// The store answers `generations_now`: it is read on every check, never mirrored.
    direct: bool,
    /// The mirror's sequence (mirror mode): written under `mirror`'s lock, read without it.
    seq: AtomicU64,
    mirror: Mutex<Mirror>,
    poll: Duration,
    /// Whether a poll task is running; it clears this when it ends, also when its runtime
    /// shuts down, so the next runtime to use the cache starts another.
    polling: Arc<AtomicBool>,
}

/// The mirror's sequence before the store was first read: no stamp holds at it.
const UNKNOWN: u64 = u64::MAX;

/// The generations of the names asked so far, all as of `seq`.
struct Mirror {
    seq: u64,
    names: HashMap<Arc<str>, u64>,
    /// `names` holds every name the store has a counter for at `seq`: any other is at `0`.
    complete: bool,
    /// How many times `seq` changed: a poll whose answer is older than `seq` is taken only if
    /// nothing newer arrived while it was out.
    changes: u64,
}

impl Default for Mirror {
    fn default() -> Self {
        Self {
            seq: UNKNOWN,
            names: HashMap::new(),
            complete: false,
            changes: 0,
        }
    }
}

/// Where counters the mirror takes in come from.
#[derive(Clone, Copy)]
enum Source {
    /// A lookup's or a write's read.
    Read,
    /// This cache's own bump: it moved the sequence by one if nobody else did.
    Bump,
    /// The poll, sent when the mirror had seen `changes` changes.
    Poll { changes: u64 },
}

impl Mirror {
    /// Takes in counters read or bumped in the store. An answer older than what the mirror
    /// knows is ignored (it was overtaken), except the poll's when nothing overtook it: the
    /// store lost its counters (flushed) and starts over.
    fn observe(&mut self, seen: &Generations, names: &[Arc<str>], source: Source) {
        let known = self.seq != UNKNOWN;
        let overtaken = match source {
            Source::Poll { changes } => changes != self.changes,
            Source::Read | Source::Bump => true,
        };
        if known && seen.seq < self.seq && overtaken {
            return;
        }
        let bumped = matches!(source, Source::Bump);
        let follows =
            known && (seen.seq == self.seq || (bumped && seen.seq == self.seq.wrapping_add(1)));
        if !follows {
            self.names.clear();
            self.complete = false;
        }
        if seen.seq != self.seq {
            self.changes += 1;
        }
        self.seq = seen.seq;
        if self.names.len() + names.len() > MAX_NAMES {
            self.names.clear();
            self.complete = false;
        }
        for (name, gen) in names.iter().zip(&seen.gens) {
            self.names.insert(name.clone(), *gen);
        }
    }
}

impl Mirror {
    /// The generation of `name` as of `seq`, if known: held, or `0` in a complete mirror.
    fn get(&self, name: &Arc<str>) -> Option<u64> {
        match self.names.get(name) {
            Some(gen) => Some(*gen),
            None => self.complete.then_some(0),
        }
    }

    /// Takes in every name the store has, read by a poll sent when the mirror had seen
    /// `changes` changes; ignored if anything changed since (it may be older than what is
    /// known).
    fn load(&mut self, all: Generations, names: Vec<Arc<str>>, changes: u64) {
        if changes != self.changes {
            return;
        }
        if all.seq != self.seq {
            self.changes += 1;
        }
        self.seq = all.seq;
        self.names = names.into_iter().zip(all.gens).collect();
        self.complete = true;
    }
}

impl fmt::Debug for Gens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gens")
            .field("direct", &self.direct)
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Gens {
    pub(crate) fn new(store: Arc<dyn Store>, prefix: Arc<str>, poll: Duration) -> Self {
        let direct = store.generations_now(&prefix, &[]).is_some();
        Self {
            store,
            prefix,
            direct,
            seq: AtomicU64::new(UNKNOWN),
            mirror: Mutex::default(),
            poll,
            polling: Arc::default(),
        }
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `stamp` holds, if that can be told without waiting; `None`: ask [`check`].
    ///
    /// [`check`]: Self::check
    pub(crate) fn check_now(&self, stamp: &Stamp) -> Option<Result<Validity, StoreError>> {
        if !self.direct {
            let seq = self.seq.load(Ordering::Acquire);
            if stamp.holds_at(seq) {
                return Some(Ok(Validity::Valid));
            }
            let mirror = self.mirror();
            if mirror.seq != UNKNOWN && stamp.seq > mirror.seq {
                // Stamped by a process that knew a newer sequence than this mirror does: what
                // the mirror holds may be older than the stamp, so the store decides.
                return None;
            }
            let mut unknown = false;
            let mut validity = Validity::Valid;
            for (name, gen) in &stamp.names {
                match mirror.get(name) {
                    Some(now) => validity = validity.and(Validity::of(*gen, now)),
                    None => unknown = true,
                }
                if validity == Validity::Invalid {
                    return Some(Ok(validity));
                }
            }
            if unknown {
                return None;
            }
            if validity == Validity::Valid {
                stamp.mark_checked(mirror.seq);
            }
            return Some(Ok(validity));
        }
        let now = match self.store.generations_now(&self.prefix, &[])? {
            Ok(now) => now,
            Err(e) => return Some(Err(e)),
        };
        if stamp.holds_at(now.seq) {
            return Some(Ok(Validity::Valid));
        }
        let names: Vec<Arc<str>> = stamp.names.iter().map(|(n, _)| n.clone()).collect();
        Some(
            self.store
                .generations_now(&self.prefix, &names)?
                .map(|now| compare(stamp, &now)),
        )
    }

    /// Whether `stamp` holds: its sequence is current, or each of its names is unchanged
    /// ([`Validity::Valid`]); only soft-invalidated since ([`Validity::Soft`]); or not.
    pub(crate) async fn check(self: &Arc<Self>, stamp: &Stamp) -> Result<Validity, StoreError> {
        self.poll_in_background();
        if let Some(holds) = self.check_now(stamp) {
            return holds;
        }
        let names: Vec<Arc<str>> = stamp.names.iter().map(|(n, _)| n.clone()).collect();
        let now = self.read(&names).await?;
        Ok(compare(stamp, &now))
    }

    /// The counters of `names` now, from the mirror when it knows them all.
    pub(crate) async fn read(
        self: &Arc<Self>,
        names: &[Arc<str>],
    ) -> Result<Generations, StoreError> {
        if self.direct {
            if let Some(now) = self.store.generations_now(&self.prefix, names) {
                return now;
            }
            return self.store.generations(&self.prefix, names).await;
        }
        self.poll_in_background();
        {
            let mirror = self.mirror();
            let known: Option<Vec<u64>> = names.iter().map(|n| mirror.get(n)).collect();
            if let Some(gens) = known {
                return Ok(Generations::new(mirror.seq, gens));
            }
        }
        let now = self.store.generations(&self.prefix, names).await?;
        self.observe(&now, names, Source::Read);
        Ok(now)
    }

    /// Whether the store's sequence is still `seq` as far as this cache knows (the fast path of
    /// a check, for a stamp not parsed yet): `false` means "check the names", not "invalidated".
    #[cfg(feature = "values")]
    pub(crate) fn seq_is(self: &Arc<Self>, seq: u64) -> bool {
        if self.direct {
            return matches!(
                self.store.generations_now(&self.prefix, &[]),
                Some(Ok(now)) if now.seq == seq
            );
        }
        self.poll_in_background();
        self.seq.load(Ordering::Acquire) == seq
    }

    /// The stamp of a value carrying `names`, taken now: before it is computed (or, for a
    /// value given, before it is written). Unlike [`begin`](Self::begin) it waits on the store
    /// when the names are not known here, so the value is always stamped and can be stored.
    #[cfg(feature = "values")]
    pub(crate) async fn stamp(self: &Arc<Self>, names: Vec<Arc<str>>) -> Result<Stamp, StoreError> {
        let now = self.read(&names).await?;
        Ok(stamp(now, names))
    }

    /// The stamp of an entry carrying `names`, taken now, before its handler runs, without
    /// waiting on the store (see the module docs).
    pub(crate) fn begin(self: &Arc<Self>, names: Vec<Arc<str>>) -> Pending {
        if self.direct {
            return match self.store.generations_now(&self.prefix, &names) {
                Some(Ok(now)) => Pending::Ready(stamp(now, names)),
                _ => Pending::Deferred { seq: 0, names },
            };
        }
        self.poll_in_background();
        let mirror = self.mirror();
        let known: Option<Vec<u64>> = names.iter().map(|n| mirror.get(n)).collect();
        match known {
            Some(gens) => Pending::Ready(stamp(Generations::new(mirror.seq, gens), names)),
            None if mirror.seq == UNKNOWN => Pending::Deferred { seq: 0, names },
            None => Pending::Deferred {
                seq: mirror.seq,
                names,
            },
        }
    }

    /// The stamp an entry is stored with: `pending` completed, plus the handler's tags
    /// (`late`), whose generations are only read now. `None` when the store's sequence moved
    /// since the stamp was begun: the response might predate an invalidation of a name whose
    /// generation is only read now, so it is not stored.
    pub(crate) async fn seal(
        self: &Arc<Self>,
        pending: Pending,
        late: Vec<Arc<str>>,
    ) -> Result<Option<Stamp>, StoreError> {
        let (seq, mut named, mut unread) = match pending {
            Pending::Ready(stamp) if late.is_empty() => return Ok(Some(stamp)),
            Pending::Ready(stamp) => (stamp.seq, stamp.names, late),
            Pending::Deferred { seq, mut names } => {
                names.extend(late);
                (seq, Vec::new(), names)
            }
        };
        unread.dedup();
        let now = self.read(&unread).await?;
        if now.seq != seq {
            return Ok(None);
        }
        named.extend(unread.into_iter().zip(now.gens));
        Ok(Some(Stamp::new(seq, named)))
    }

    /// Bumps `names` in the store: every entry carrying one of them stops being served
    /// ([`Purge::Hard`]) or turns stale ([`Purge::Soft`]).
    pub(crate) async fn bump(
        self: &Arc<Self>,
        names: &[Arc<str>],
        purge: Purge,
    ) -> Result<Generations, StoreError> {
        let now = self
            .store
            .bump_generations(&self.prefix, names, purge)
            .await?;
        if !self.direct {
            self.observe(&now, names, Source::Bump);
            self.poll_in_background();
        }
        Ok(now)
    }

    fn observe(&self, now: &Generations, names: &[Arc<str>], source: Source) {
        let mut mirror = self.mirror();
        mirror.observe(now, names, source);
        self.seq.store(mirror.seq, Ordering::Release);
    }

    /// Reads the store's sequence: a change drops what the mirror knew. Then, unless the
    /// mirror is complete at that sequence already, loads every name if the store lists them.
    async fn refresh(&self) -> Result<(), StoreError> {
        let changes = self.mirror().changes;
        let now = self.store.generations(&self.prefix, &[]).await?;
        self.observe(&now, &[], Source::Poll { changes });
        let (changes, complete, seq) = {
            let m = self.mirror();
            (m.changes, m.complete, m.seq)
        };
        if complete && seq == now.seq {
            return Ok(());
        }
        if let Some((all, names)) = self.store.all_generations(&self.prefix, MAX_NAMES).await? {
            let mut mirror = self.mirror();
            mirror.load(all, names, changes);
            self.seq.store(mirror.seq, Ordering::Release);
        }
        Ok(())
    }

    /// Starts the poll of the store's sequence, once, when a runtime is there to run it. It ends
    /// when the cache is dropped.
    fn poll_in_background(self: &Arc<Self>) {
        if self.direct || self.polling.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let poll = self.poll;
        let running = Running(self.polling.clone());
        rt.spawn(async move {
            let _running = running;
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gens) = weak.upgrade() else { break };
                if let Err(e) = gens.refresh().await {
                    log_store_error(&e);
                }
            }
        });
    }
}

/// Held by the poll task: clears the flag when the task ends or is dropped with its runtime.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How `stamp` fares against the generations of its names `now` (in its order); marked checked
/// at `now.seq` when it holds, so the next check at that sequence is one compare.
fn compare(stamp: &Stamp, now: &Generations) -> Validity {
    let validity = stamp
        .names
        .iter()
        .zip(&now.gens)
        .fold(Validity::Valid, |v, ((_, g), n)| {
            v.and(Validity::of(*g, *n))
        });
    if validity == Validity::Valid {
        stamp.mark_checked(now.seq);
    }
    validity
}

/// A stamp of `names` at `now`.
fn stamp(now: Generations, names: Vec<Arc<str>>) -> Stamp {
    Stamp::new(now.seq, names.into_iter().zip(now.gens).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, gens: &[u64]) -> Generations {
        Generations::new(seq, gens.to_vec())
    }

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn the_mirror_keeps_what_still_holds_and_drops_what_may_not() {
        let (a, b) = (names(&["tag:a"]), names(&["tag:b"]));
        let mut m = Mirror::default();
        m.observe(&at(5, &[1]), &a, Source::Read);
        m.observe(&at(5, &[0]), &b, Source::Read);
        assert_eq!((m.seq, m.names.len()), (5, 2));
        // Our own bump, nobody else's in between: the other names still hold.
        m.observe(&at(6, &[2]), &a, Source::Bump);
        assert_eq!((m.seq, m.names.get(&b[0]).copied()), (6, Some(0)));
        // Someone else bumped too (the sequence moved by more): start over.
        m.observe(&at(8, &[3]), &a, Source::Bump);
        assert_eq!((m.seq, m.names.len()), (8, 1));
        // A read sent before that answer arrived says nothing about now.
        m.observe(&at(7, &[9]), &b, Source::Read);
        assert_eq!((m.seq, m.names.get(&b[0])), (8, None));
    }

    #[test]
    fn a_poll_overtaken_by_a_newer_answer_is_ignored_and_one_that_was_not_is_taken() {
        let a = names(&["tag:a"]);
        let mut m = Mirror::default();
        m.observe(&at(5, &[1]), &a, Source::Read);
        let sent = m.changes;
        m.observe(&at(6, &[2]), &a, Source::Bump);
        m.observe(&at(5, &[]), &[], Source::Poll { changes: sent });
        assert_eq!(m.seq, 6, "the bump overtook the poll");
        // The store lost its counters: the next poll, not overtaken, starts over.
        let sent = m.changes;
        m.observe(&at(0, &[]), &[], Source::Poll { changes: sent });
        assert_eq!((m.seq, m.names.len()), (0, 0));
    }

    #[test]
    fn a_complete_mirror_knows_every_name_until_someone_else_changes_one() {
        let (a, b) = (names(&["tag:a"]), names(&["path:/never-bumped"]));
        let mut m = Mirror::default();
        let sent = m.changes;
        m.load(at(5, &[1 << 24]), a.clone(), sent);
        assert_eq!(
            (m.seq, m.get(&a[0]), m.get(&b[0])),
            (5, Some(1 << 24), Some(0))
        );
        // Our own bump, nobody else's: still complete.
        m.observe(&at(6, &[2 << 24]), &a, Source::Bump);
        assert_eq!((m.get(&a[0]), m.get(&b[0])), (Some(2 << 24), Some(0)));
        // Someone else's (the sequence moved by more): nothing is known until reloaded.
        m.observe(&at(9, &[]), &[], Source::Poll { changes: m.changes });
        assert_eq!((m.get(&a[0]), m.get(&b[0])), (None, None));
        // A load sent before a change it did not see is not taken.
        let sent = m.changes;
        m.observe(&at(10, &[3 << 24]), &a, Source::Bump);
        m.load(at(9, &[2 << 24]), a.clone(), sent);
        assert_eq!((m.seq, m.get(&b[0])), (10, None));
    }

    #[test]
    fn a_stamp_checked_once_holds_at_that_sequence_only() {
        let stamp = Stamp::new(3, vec![(Arc::from("*"), 1)]);
        assert!(stamp.holds_at(3) && !stamp.holds_at(4));
        stamp.mark_checked(4);
        assert!(stamp.holds_at(4) && !stamp.holds_at(3));
        assert!(!Stamp::default().holds_at(UNKNOWN));
    }
}
