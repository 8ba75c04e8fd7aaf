//! How long handlers and hits take, kept as sums and counts so a mean costs nothing to keep.
//!
//! Time is read from tokio's clock (the system's monotonic clock unless a test pauses it), so a
//! test with a paused clock measures exactly the time its handlers sleep.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// One hit in this many is timed (two clock reads); the others read no clock at all.
pub(crate) const HIT_SAMPLE: u64 = 16;

/// A sum of durations and how many there were.
#[derive(Debug, Default)]
pub(crate) struct Timing {
    nanos: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    pub(crate) fn add(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The mean so far; `None` before the first.
    pub(crate) fn mean(&self) -> Option<Duration> {
        // Read the count first: a concurrent `add` then at worst adds to the sum, not the count.
        let count = self.count.load(Relaxed);
        let nanos = self.nanos.load(Relaxed);
        (count > 0).then(|| Duration::from_nanos(nanos / count))
    }
}

/// The start of a lookup that is being timed, or nothing when this one is not sampled.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(crate) struct Timer(Option<Instant>);

impl Timer {
    /// Times the lookup when `hits_so_far` falls on the sample: the route's first hit is timed,
    /// then one in [`HIT_SAMPLE`], and the choice costs no shared write.
    pub(crate) fn sampled(hits_so_far: u64) -> Self {
        Self((hits_so_far % HIT_SAMPLE == 0).then(Instant::now))
    }

    /// How long since the start, when timed.
    pub(crate) fn elapsed(self) -> Option<Duration> {
        self.0.map(|start| start.elapsed())
    }
}

/// When the handler was called: every call is timed, a miss costs far more than two clock reads.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(crate) struct HandlerTimer(Instant);

impl HandlerTimer {
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    pub(crate) fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}
