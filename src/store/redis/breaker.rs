//! A circuit breaker: after repeated failures the store stops calling Redis for a cool-down,
//! then lets a single probe through and closes again when the probe succeeds.

use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock, so tests drive the cool-down with paused time instead of sleeping.
use tokio::time::Instant;

/// Where a [`RedisStore`](crate::RedisStore)'s circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Redis is called normally.
    Closed,
    /// Redis failed repeatedly: calls fail fast without touching it until the cool-down ends.
    Open,
    /// The cool-down is over and one probe is in flight; its outcome closes or reopens.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker itself; shared by every clone of a store.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    // A std mutex: held for a few instructions, never across an await.
    state: Mutex<State>,
    /// `{ns}_cache_breaker_state`, set under the lock at every transition.
    gauge: StateGauge,
}

/// Permission to make one call. Report its outcome with [`Ticket::finish`]; a ticket dropped
/// unfinished (the caller's future was cancelled) counts as a failure only if it was the probe,
/// so the breaker can never stay half-open forever.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (at least 1) and stays open for `cooldown`;
    /// its state is the gauge `{namespace}_cache_breaker_state`, registered here.
    pub(crate) fn new(threshold: u32, cooldown: Duration, namespace: &str) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            gauge: StateGauge::new(namespace),
        }
    }

    /// A ticket for one call, or `None` when the call must fail fast.
    pub(crate) fn admit(&self) -> Option<Ticket<'_>> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                self.gauge.set(BreakerState::HalfOpen);
                true
            }
            State::Open { .. } | State::HalfOpen => return None,
        };
        Some(Ticket {
            breaker: self,
            probe,
            done: false,
        })
    }

    /// The current state; an open breaker whose cool-down has ended still reads `Open` until the
    /// next call probes.
    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Records an outcome; the new state when it changed.
    fn record(&self, probe: bool, ok: bool) -> Option<BreakerState> {
        let mut state = self.lock();
        let changed = self.transition(&mut state, probe, ok);
        if let Some(new) = changed {
            self.gauge.set(new);
        }
        changed
    }

    /// Moves `state` on an outcome; the new state when it changed.
    fn transition(&self, state: &mut State, probe: bool, ok: bool) -> Option<BreakerState> {
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        match (&mut *state, ok) {
            (State::Closed { failures }, true) => {
                *failures = 0;
                None
            }
            (State::Closed { failures }, false) => {
                *failures += 1;
                if *failures >= self.threshold {
                    *state = open;
                    Some(BreakerState::Open)
                } else {
                    None
                }
            }
            (State::HalfOpen, true) if probe => {
                *state = State::Closed { failures: 0 };
                Some(BreakerState::Closed)
            }
            (State::HalfOpen, false) if probe => {
                *state = open;
                Some(BreakerState::Open)
            }
            // A call admitted before the breaker opened finished late: it changes nothing.
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The breaker's state as the gauge `{ns}_cache_breaker_state`: 0 closed, 1 half-open, 2 open.
/// Registered once, with the breaker, and set to 0; a no-op without the `metrics` feature.
#[derive(Debug)]
struct StateGauge {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

impl StateGauge {
    fn new(namespace: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let name = format!("{namespace}_cache_breaker_state");
            metrics::describe_gauge!(
                name.clone(),
                "The Redis store's circuit breaker: 0 closed, 1 half-open, 2 open."
            );
            let gauge = metrics::gauge!(name);
            gauge.set(0.0);
            Self { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = namespace;
            Self {}
        }
    }

    fn set(&self, state: BreakerState) {
        #[cfg(feature = "metrics")]
        self.gauge.set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        });
        #[cfg(not(feature = "metrics"))]
        let _ = state;
    }
}

impl Ticket<'_> {
    /// Whether this call is the half-open probe.
    #[cfg(test)]
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the call's outcome; the breaker's new state when it changed.
    pub(crate) fn finish(mut self, ok: bool) -> Option<BreakerState> {
        self.done = true;
        self.breaker.record(self.probe, ok)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.record(true, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    fn fail(b: &Breaker) -> Option<BreakerState> {
        b.admit().expect("admitted").finish(false)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let b = Breaker::new(3, COOLDOWN, "test");
        assert_eq!(fail(&b), None);
        assert_eq!(fail(&b), None);
        // A success in between resets the count.
        assert_eq!(b.admit().unwrap().finish(true), None);
        assert_eq!(fail(&b), None);
        assert_eq!(fail(&b), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(fail(&b), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_none(), "open: fail fast");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_after_cooldown_and_closes_on_success() {
        let b = Breaker::new(1, COOLDOWN, "test");
        fail(&b);
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(b.admit().is_none(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = b.admit().expect("probe admitted");
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_none(), "only one probe at a time");
        assert_eq!(probe.finish(true), Some(BreakerState::Closed));
        let next = b.admit().expect("closed again");
        assert!(!next.is_probe());
        assert_eq!(next.finish(true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_cooldown() {
        let b = Breaker::new(2, COOLDOWN, "test");
        fail(&b);
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(fail(&b), Some(BreakerState::Open));
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.admit().is_some_and(|t| t.is_probe()));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_probe_counts_as_failure() {
        let b = Breaker::new(1, COOLDOWN, "test");
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        drop(b.admit().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(COOLDOWN).await;
        assert!(b.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_of_calls_admitted_while_closed_do_not_close_it() {
        let b = Breaker::new(1, COOLDOWN, "test");
        let slow = b.admit().unwrap();
        fail(&b);
        assert_eq!(slow.finish(true), None);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
