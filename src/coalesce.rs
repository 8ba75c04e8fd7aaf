//! Stampede protection: when many requests miss the same key at once, the first one calls the
//! handler and the others wait for it to fill the entry, instead of all running the query.
//!
//! Keys whose response turned out not to be storable are remembered for a short while
//! ("hit-for-pass" in Varnish's words), so requests to uncacheable URLs never queue.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::CacheKey;

/// How long a key that produced an unstorable response is exempt from coalescing.
const PASS_MEMORY: Duration = Duration::from_secs(30);

pub(crate) struct Flights {
    // A std lock: held only to look up or edit the map, never across an await.
    inflight: Mutex<HashMap<Flight, Arc<Notify>>>,
    uncacheable: moka::sync::Cache<Flight, ()>,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// A key as seen by one layer. Nested layers of one cache (app-wide around per-route) can
/// derive the same key; keeping their flights apart stops the inner one waiting on the outer.
type Flight = (usize, CacheKey);

/// What a missing request should do.
pub(crate) enum Turn<'a> {
    /// It is the first: fill the entry; waiters wake when the guard drops.
    Lead(Lead<'a>),
    /// Another request is filling the entry: wait for it, then look up again.
    Wait(OwnedNotified),
    /// Go straight to the handler.
    Alone,
}

/// Held by the request filling an entry.
pub(crate) struct Lead<'a> {
    flights: &'a Flights,
    key: Flight,
}

impl Lead<'_> {
    /// The response was not storable: let the next requests for this key go straight through.
    pub(crate) fn uncacheable(&self) {
        self.flights.uncacheable.insert(self.key.clone(), ());
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let notify = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            inflight: Mutex::default(),
            uncacheable: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PASS_MEMORY)
                .build(),
        }
    }

    /// Joins the flight for `key` as seen by the layer identified by `layer`.
    pub(crate) fn join(&self, layer: usize, key: &CacheKey) -> Turn<'_> {
        let key = (layer, key.clone());
        if self.uncacheable.contains_key(&key) {
            return Turn::Alone;
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inflight.get(&key) {
            // Created under the lock, so the leader's `notify_waiters` cannot be missed.
            return Turn::Wait(n.clone().notified_owned());
        }
        inflight.insert(key.clone(), Arc::new(Notify::new()));
        Turn::Lead(Lead { flights: self, key })
    }
}
