//! The memory store's evictions, by cause, through the `metrics` facade:
//! `{ns}_cache_evictions_total{cause="size"|"expired"|"replaced"|"explicit"}`. The counters are
//! registered at the store's first eviction (under its current name), then only incremented.

#[cfg(feature = "metrics")]
pub(crate) use with_facade::Evictions;
#[cfg(not(feature = "metrics"))]
pub(crate) use without_facade::Evictions;

/// Why the memory store dropped an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Evicted to stay within the bound.
    Size,
    /// Past its deadline.
    Expired,
    /// Written over.
    Replaced,
    /// Removed (by key, prefix or pattern).
    Explicit,
}

/// The `cause` label of a removal.
fn cause(cause: Cause) -> usize {
    match cause {
        Cause::Size => 0,
        Cause::Expired => 1,
        Cause::Replaced => 2,
        Cause::Explicit => 3,
    }
}

#[cfg(feature = "metrics")]
mod with_facade {
    use std::sync::RwLock;

    use super::Cause;
    use metrics::Counter;

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

        pub(crate) fn evicted(&self, cause: Cause) {
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
    use super::Cause;

    #[derive(Debug)]
    pub(crate) struct Evictions;

    impl Evictions {
        pub(crate) fn new(_: &str) -> Self {
            Self
        }
        pub(crate) fn rename(&self, _: &str) {}
        pub(crate) fn evicted(&self, cause: Cause) {
            let _ = super::cause(cause);
        }
    }
}
