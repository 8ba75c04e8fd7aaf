//! Coalescing for `get_or_insert_with`: concurrent callers of one missing key in this process
//! run one computation; the others get its serialised result straight from the leader, so
//! they need neither the store nor a `Clone` bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// The computations in progress, by full value key.
#[derive(Default)]
pub(crate) struct Flights {
    // A std lock: held only to look up or edit the map, never across an await.
    inflight: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
}

#[derive(Default)]
struct Flight {
    /// The leader's result (serde_json bytes), set once before the waiters are woken.
    landed: OnceLock<Bytes>,
    notify: Arc<Notify>,
}

/// What a caller that missed should do.
pub(crate) enum Turn<'a> {
    /// Compute; the others wait for [`Lead::publish`].
    Lead(Lead<'a>),
    /// Another caller is computing: wait for it.
    Wait(Wait),
    /// Another caller has computed it just now.
    Landed(Bytes),
}

/// Held by the caller computing a value. Dropped (done, cancelled or panicked), it ends the
/// flight and wakes the waiters; those that find no result compute again.
pub(crate) struct Lead<'a> {
    flights: &'a Flights,
    key: Arc<str>,
    flight: Arc<Flight>,
}

/// A caller waiting for another's computation.
pub(crate) struct Wait {
    flight: Arc<Flight>,
    notified: OwnedNotified,
}

impl Flights {
    pub(crate) fn join(&self, key: &str) -> Turn<'_> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = inflight.get(key) {
            // Made before the check: a `publish` after the check still wakes it.
            let notified = flight.notify.clone().notified_owned();
            if let Some(json) = flight.landed.get() {
                return Turn::Landed(json.clone());
            }
            return Turn::Wait(Wait {
                flight: flight.clone(),
                notified,
            });
        }
        let key: Arc<str> = Arc::from(key);
        let flight = Arc::new(Flight::default());
        inflight.insert(key.clone(), flight.clone());
        Turn::Lead(Lead {
            flights: self,
            key,
            flight,
        })
    }
}

impl Lead<'_> {
    /// Hands the result to the waiters (and to callers joining until the lead is dropped).
    pub(crate) fn publish(&self, json: Bytes) {
        let _ = self.flight.landed.set(json);
        self.flight.notify.notify_waiters();
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            inflight.remove(&self.key);
        }
        drop(inflight);
        self.flight.notify.notify_waiters();
    }
}

impl Wait {
    /// The leader's result, or `None` when it went away without one.
    pub(crate) async fn landed(self) -> Option<Bytes> {
        self.notified.await;
        self.flight.landed.get().cloned()
    }
}
