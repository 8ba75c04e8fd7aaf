//! The memory store's evictions, by cause, through the `metrics` facade:
//! `{ns}_cache_evictions_total{cause="size"|"expired"|"replaced"|"explicit"}`. The counters are
//! registered at the store's first eviction (under its current name), then only incremented.

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

    const CAUSES: [&str; 4] = ["size", "expired", "replaced", "explicit"];

    #[derive(Debug)]
    pub(crate) struct Evictions {
        // A std lock, read by the eviction listener, written once per name: evictions never
        // wait on each other.
        state: RwLock<State>,
    }

    #[derive(Debug)]
    struct State {
        namespace: String,
        /// Registered at the first eviction under this name, so a store renamed before it
        /// evicts anything leaves no series under its old name.
        counters: Option<[Counter; 4]>,
    }

    impl Evictions {
        pub(crate) fn new(namespace: &str) -> Self {
            Self {
                state: RwLock::new(State {
                    namespace: namespace.to_owned(),
                    counters: None,
                }),
            }
        }

        /// Names the counters under `namespace` from the next eviction on.
        pub(crate) fn rename(&self, namespace: &str) {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.namespace = namespace.to_owned();
            state.counters = None;
        }

        pub(crate) fn evicted(&self, cause: RemovalCause) {
            let i = super::cause(cause);
            {
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                if let Some(counters) = &state.counters {
                    counters[i].increment(1);
                    return;
                }
            }
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let State {
                namespace,
                counters,
            } = &mut *state;
            counters.get_or_insert_with(|| register(namespace))[i].increment(1);
        }
    }

    fn register(namespace: &str) -> [Counter; 4] {
        // Named as the cache's own metrics are (`{namespace}_cache_…`); spelt out here so the
        // store does not reach into the cache's metrics module.
        let name = format!("{namespace}_cache_evictions_total");
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
