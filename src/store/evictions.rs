//! The memory store's evictions, by cause, through the `metrics` facade:
//! `{ns}_cache_evictions_total{cause="size"|"expired"|"replaced"|"explicit"}`. The counters are
//! registered when the store is made (or renamed), so moka's eviction listener only increments.

use moka::notification::RemovalCause;

#[cfg(feature = "metrics")]
pub(crate) use with_facade::Evictions;
#[cfg(not(feature = "metrics"))]
pub(crate) use without_facade::Evictions;

/// The `cause` label of a removal.
fn cause(cause: RemovalCause) -> usize {
    match cause {
        RemovalCause::Size => 0,
        RemovalCause::Expired => 1,
        RemovalCause::Replaced => 2,
        RemovalCause::Explicit => 3,
    }
}

#[cfg(feature = "metrics")]
mod with_facade {
    use std::sync::RwLock;

    use metrics::Counter;
    use moka::notification::RemovalCause;

    use crate::metrics::metric_name;

    const CAUSES: [&str; 4] = ["size", "expired", "replaced", "explicit"];

    #[derive(Debug)]
    pub(crate) struct Evictions {
        // A std lock, read by the eviction listener and written only by a rename: evictions
        // never wait on each other.
        counters: RwLock<[Counter; 4]>,
    }

    impl Evictions {
        pub(crate) fn new(namespace: &str) -> Self {
            Self {
                counters: RwLock::new(register(namespace)),
            }
        }

        /// Registers the counters again under `namespace`, with the recorder installed now.
        pub(crate) fn rename(&self, namespace: &str) {
            *self.counters.write().unwrap_or_else(|e| e.into_inner()) = register(namespace);
        }

        pub(crate) fn evicted(&self, cause: RemovalCause) {
            let counters = self.counters.read().unwrap_or_else(|e| e.into_inner());
            counters[super::cause(cause)].increment(1);
        }
    }

    fn register(namespace: &str) -> [Counter; 4] {
        let name = metric_name(namespace, "evictions_total");
        metrics::describe_counter!(
            name.clone(),
            metrics::Unit::Count,
            "Entries the memory store dropped, by cause."
        );
        CAUSES.map(|cause| metrics::counter!(name.clone(), "cause" => cause))
    }
}

#[cfg(not(feature = "metrics"))]
mod without_facade {
    use moka::notification::RemovalCause;

    #[derive(Debug)]
    pub(crate) struct Evictions;

    impl Evictions {
        pub(crate) fn new(_: &str) -> Self {
            Self
        }
        pub(crate) fn rename(&self, _: &str) {}
        pub(crate) fn evicted(&self, cause: RemovalCause) {
            let _ = super::cause(cause);
        }
    }
}
