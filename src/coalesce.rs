//! Stampede protection: when many requests miss the same key at once, the first one calls the
//! handler and the others wait for it to fill the entry, instead of all running the query.
//!
//! Keys whose response turned out not to be storable are remembered for a short while
//! ("hit-for-pass" in Varnish's words), so requests to uncacheable URLs never queue. A leader
//! that goes away before it is done (its client hung up) hands the flight to one of the waiters.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::lease::LeaseGuard;
use crate::CacheKey;

/// How long a key that produced an unstorable response is exempt from coalescing.
const PASS_MEMORY: Duration = Duration::from_secs(30);

/// The flights in progress, shared with their leaders: a [`Lead`] may outlive the request that
/// took it (it travels with the response body until the entry is written).
pub(crate) struct Flights {
    inner: Arc<Inner>,
}

struct Inner {
    // A std lock: held only to look up or edit the map, never across an await.
    inflight: Mutex<HashMap<Flight, Arc<State>>>,
    uncacheable: moka::sync::Cache<Flight, ()>,
}

/// One flight as its waiters see it.
struct State {
    notify: Arc<Notify>,
    /// Set before the waiters are woken when the leader went away without finishing.
    abandoned: AtomicBool,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// A key as seen by one layer. Nested layers of one cache (app-wide around per-route) can
/// derive the same key; keeping their flights apart stops the inner one waiting on the outer.
type Flight = (usize, CacheKey);

/// What a missing request does once it has taken its turn in the flight of its key.
pub(crate) enum Joined {
    /// It is the first: fill the entry; waiters wake when the guard drops.
    Lead(Lead),
    /// Another request filled the entry meanwhile: look it up again.
    Landed,
    /// Go straight to the handler.
    Alone,
}

/// What a missing request should do, at once.
enum Turn {
    /// It is the first: fill the entry; waiters wake when the guard drops.
    Lead(Lead),
    /// Another request is filling the entry: wait for it, then look up again.
    Wait(Wait),
    /// Go straight to the handler.
    Alone,
}

/// Held by the request filling an entry, until the entry is written or known unstorable.
/// Dropped unfinished (the request or its body went away), it hands the flight over.
pub(crate) struct Lead {
    inner: Arc<Inner>,
    key: Flight,
    finished: bool,
    /// The fleet-wide lease on the key, when the layer takes one: it ends with the flight
    /// (released after the write, or by its own drop when the flight ends otherwise).
    /// Boxed: most flights take none, and a `Lead` travels with every miss.
    lease: Option<Box<LeaseGuard>>,
}

impl fmt::Debug for Lead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lead").finish_non_exhaustive()
    }
}

impl Lead {
    /// The flight also holds the key's fleet-wide lease.
    pub(crate) fn hold(&mut self, lease: LeaseGuard) {
        self.lease = Some(Box::new(lease));
    }

    /// The lease this flight holds, to be released once the entry is written.
    pub(crate) fn take_lease(&mut self) -> Option<LeaseGuard> {
        self.lease.take().map(|l| *l)
    }

    /// The entry was written, or the write failed: waiters look again, then go on alone.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }

    /// The response was not storable: let the next requests for this key go straight through.
    pub(crate) fn uncacheable(mut self) {
        self.inner.uncacheable.insert(self.key.clone(), ());
        self.finished = true;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let state = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if let Some(state) = state {
            // Release: a waiter that reads the flag after waking sees this store.
            state.abandoned.store(!self.finished, Ordering::Release);
            state.notify.notify_waiters();
        }
    }
}

/// A request waiting for another to fill the entry.
struct Wait {
    state: Arc<State>,
    notified: OwnedNotified,
}

impl Wait {
    /// Resolves when the leader is done: `true` when it finished (look the entry up again),
    /// `false` when it went away unfinished (join the flight again: one waiter then leads).
    async fn landed(self) -> bool {
        self.notified.await;
        !self.state.abandoned.load(Ordering::Acquire)
    }
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                inflight: Mutex::default(),
                uncacheable: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(PASS_MEMORY)
                    .build(),
            }),
        }
    }

    /// Joins the flight for `key` as seen by the layer identified by `layer`, waiting for its
    /// leader if there is one, for `patience` at most in all, whatever happens to the leaders.
    pub(crate) async fn take_turn(
        &self,
        layer: usize,
        key: &CacheKey,
        patience: Duration,
    ) -> Joined {
        let until = tokio::time::Instant::now().checked_add(patience);
        loop {
            let wait = match self.join(layer, key) {
                Turn::Lead(lead) => return Joined::Lead(lead),
                Turn::Alone => return Joined::Alone,
                Turn::Wait(wait) => wait,
            };
            let landed = match until {
                Some(until) => tokio::time::timeout_at(until, wait.landed()).await,
                None => Ok(wait.landed().await),
            };
            match landed {
                Ok(true) => return Joined::Landed,
                // The leader went away unfinished (its client hung up): join again, and the
                // first waiter back leads while the others keep waiting.
                Ok(false) => {}
                Err(_) => return Joined::Alone,
            }
        }
    }

    /// Leads the flight for `key` if nobody does (no miss, no refresh) and the key is not
    /// remembered uncacheable; never waits. A stale entry's refresh starts only with a lead.
    pub(crate) fn try_lead(&self, layer: usize, key: &CacheKey) -> Option<Lead> {
        match self.join(layer, key) {
            Turn::Lead(lead) => Some(lead),
            Turn::Wait(_) | Turn::Alone => None,
        }
    }

    /// Joins the flight for `key` as seen by the layer identified by `layer`.
    fn join(&self, layer: usize, key: &CacheKey) -> Turn {
        let key = (layer, key.clone());
        if self.inner.uncacheable.contains_key(&key) {
            return Turn::Alone;
        }
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(state) = inflight.get(&key) {
            // Created under the lock, so the leader's `notify_waiters` cannot be missed.
            return Turn::Wait(Wait {
                state: state.clone(),
                notified: state.notify.clone().notified_owned(),
            });
        }
        let state = State {
            notify: Arc::new(Notify::new()),
            abandoned: AtomicBool::new(false),
        };
        inflight.insert(key.clone(), Arc::new(state));
        Turn::Lead(Lead {
            inner: self.inner.clone(),
            key,
            finished: false,
            lease: None,
        })
    }
}
