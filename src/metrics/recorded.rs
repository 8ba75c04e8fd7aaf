//! The handles through which a route's counters reach the `metrics` facade: registered once,
//! when the route is first seen, so a request only increments (no name or label is built).
//! Without the `metrics` feature every method is a no-op the compiler removes.

#[cfg(feature = "metrics")]
pub(crate) use with_facade::{describe, Recorded};
#[cfg(not(feature = "metrics"))]
pub(crate) use without_facade::Recorded;

/// The metric names under `namespace`: `{namespace}_cache_{what}`.
#[cfg(feature = "metrics")]
pub(crate) fn name(namespace: &str, what: &str) -> String {
    format!("{namespace}_cache_{what}")
}

#[cfg(feature = "metrics")]
mod with_facade {
    use std::sync::OnceLock;
    use std::time::Duration;

    use metrics::{Counter, Histogram, Label, Unit};

    use super::name;
    use crate::BypassReason;

    /// One route's handles, bound to the recorder installed when they were registered.
    #[derive(Debug)]
    pub(crate) struct Recorded {
        namespace: std::sync::Arc<str>,
        route: Label,
        hits: Counter,
        misses: Counter,
        stores: Counter,
        stored_bytes: Counter,
        store_errors: Counter,
        store_timeouts: Counter,
        coalesced: Counter,
        invalidated: Counter,
        soft_invalidated: Counter,
        stale: Counter,
        refreshes_skipped: Counter,
        early_refreshes: Counter,
        /// Registered at a reason's first bypass on the route: a route shows only the reasons
        /// it has seen, not fourteen zeros.
        bypasses: [OnceLock<Counter>; BypassReason::ALL.len()],
        lookup: Histogram,
        handler: Histogram,
    }

    impl Recorded {
        pub(crate) fn new(namespace: &std::sync::Arc<str>, route: &str) -> Self {
            let route = Label::new("route", route.to_owned());
            let labels = || vec![route.clone()];
            let counter = |what| metrics::counter!(name(namespace, what), labels());
            let histogram = |what| metrics::histogram!(name(namespace, what), labels());
            Self {
                hits: counter("hits_total"),
                misses: counter("misses_total"),
                stores: counter("stores_total"),
                stored_bytes: counter("stored_bytes_total"),
                store_errors: counter("store_errors_total"),
                store_timeouts: counter("store_timeouts_total"),
                coalesced: counter("coalesced_total"),
                invalidated: counter("invalidated_total"),
                soft_invalidated: counter("soft_invalidated_total"),
                stale: counter("stale_total"),
                refreshes_skipped: counter("refreshes_skipped_total"),
                early_refreshes: counter("early_refreshes_total"),
                bypasses: Default::default(),
                lookup: histogram("lookup_seconds"),
                handler: histogram("handler_seconds"),
                namespace: namespace.clone(),
                route,
            }
        }

        pub(crate) fn hit(&self) {
            self.hits.increment(1);
        }
        pub(crate) fn miss(&self) {
            self.misses.increment(1);
        }
        pub(crate) fn stored(&self, bytes: u64) {
            self.stores.increment(1);
            self.stored_bytes.increment(bytes);
        }
        pub(crate) fn store_error(&self, timeout: bool) {
            self.store_errors.increment(1);
            if timeout {
                self.store_timeouts.increment(1);
            }
        }
        pub(crate) fn coalesced(&self) {
            self.coalesced.increment(1);
        }
        pub(crate) fn invalidated(&self) {
            self.invalidated.increment(1);
        }
        pub(crate) fn soft_invalidated(&self) {
            self.soft_invalidated.increment(1);
        }
        pub(crate) fn stale(&self) {
            self.stale.increment(1);
        }
        pub(crate) fn refresh_skipped(&self) {
            self.refreshes_skipped.increment(1);
        }
        pub(crate) fn early_refresh(&self) {
            self.early_refreshes.increment(1);
        }
        pub(crate) fn bypass(&self, i: usize, reason: BypassReason) {
            let Some(slot) = self.bypasses.get(i) else {
                return;
            };
            slot.get_or_init(|| {
                let labels = vec![self.route.clone(), Label::new("reason", reason.as_str())];
                metrics::counter!(name(&self.namespace, "bypasses_total"), labels)
            })
            .increment(1);
        }
        pub(crate) fn lookup(&self, took: Duration) {
            self.lookup.record(took.as_secs_f64());
        }
        pub(crate) fn handler(&self, took: Duration) {
            self.handler.record(took.as_secs_f64());
        }
    }

    /// Describes every metric to the recorder installed now (its `# HELP` lines).
    pub(crate) fn describe(namespace: &str) {
        for (what, help, _) in super::super::prometheus::COUNTERS {
            let unit = if what.ends_with("bytes_total") {
                Unit::Bytes
            } else {
                Unit::Count
            };
            metrics::describe_counter!(name(namespace, what), unit, help);
        }
        metrics::describe_counter!(
            name(namespace, "bypasses_total"),
            Unit::Count,
            super::super::prometheus::BYPASSES_HELP
        );
        metrics::describe_histogram!(
            name(namespace, "lookup_seconds"),
            Unit::Seconds,
            "Time to look a request up in the store (sampled: see the crate's metrics docs)."
        );
        metrics::describe_histogram!(
            name(namespace, "handler_seconds"),
            Unit::Seconds,
            "Time the handler took when the cache called it after a lookup."
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod without_facade {
    use std::time::Duration;

    use crate::BypassReason;

    #[derive(Debug)]
    pub(crate) struct Recorded;

    impl Recorded {
        pub(crate) fn new(_: &std::sync::Arc<str>, _: &str) -> Self {
            Self
        }
        pub(crate) fn hit(&self) {}
        pub(crate) fn miss(&self) {}
        pub(crate) fn stored(&self, _: u64) {}
        pub(crate) fn store_error(&self, _: bool) {}
        pub(crate) fn coalesced(&self) {}
        pub(crate) fn invalidated(&self) {}
        pub(crate) fn soft_invalidated(&self) {}
        pub(crate) fn stale(&self) {}
        pub(crate) fn refresh_skipped(&self) {}
        pub(crate) fn early_refresh(&self) {}
        pub(crate) fn bypass(&self, _: usize, _: BypassReason) {}
        pub(crate) fn lookup(&self, _: Duration) {}
        pub(crate) fn handler(&self, _: Duration) {}
    }
}
