//! A lease on a missing key in a store every process shares: the holder computes the entry,
//! the others wait for it (see [`lease_wait`](crate::lease_wait)). This part knows only the
//! store: taking a lease, and the guard that ends it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::log::log_store_error;
use crate::metrics::RouteCounters;
use crate::{CacheKey, Store};

/// What asking for a lease gave.
pub(crate) enum Taken {
    /// This process holds it: compute, store, then let the guard go.
    Granted(LeaseGuard),
    /// Another process holds it.
    Held,
    /// The store failed (counted and logged): fail open, go to the handler.
    Failed,
}

/// Held while this process computes a key under a lease; ends it when released or dropped (a
/// drop outside a runtime leaves it to expire).
pub(crate) struct LeaseGuard {
    store: Arc<dyn Store>,
    key: CacheKey,
    token: String,
    held: bool,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("key", &self.key.to_string())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// Ends the lease now, and waits for the store to say so.
    pub(crate) async fn release(mut self) {
        self.held = false;
        end(&*self.store, &self.key, &self.token).await;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key) = (self.store.clone(), self.key.clone());
            let token = std::mem::take(&mut self.token);
            rt.spawn(async move { end(&*store, &key, &token).await });
        }
    }
}

async fn end(store: &dyn Store, key: &CacheKey, token: &str) {
    if let Err(e) = store.release_lease(key, token).await {
        // Not a request's failure: the lease runs out by itself.
        tracing::debug!(error = %e, "cache lease not released; it expires by itself");
    }
}

/// Asks `store` for the lease on `key`, for `time`.
pub(crate) async fn take(
    store: &Arc<dyn Store>,
    counters: &RouteCounters,
    key: &CacheKey,
    time: Duration,
) -> Taken {
    let token = token();
    match store.take_lease(key, &token, time).await {
        Ok(true) => Taken::Granted(LeaseGuard {
            store: store.clone(),
            key: key.clone(),
            token,
            held: true,
        }),
        Ok(false) => Taken::Held,
        Err(e) => {
            counters.store_error_of(&e);
            log_store_error(&e);
            Taken::Failed
        }
    }
}

/// A token no other lease has: this process's random hasher keys, its id and a count. Only
/// uniqueness matters (a holder ends only its own lease); it guards nothing secret.
fn token() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let n = COUNT.fetch_add(1, Relaxed);
    h.write_u64(n);
    format!("{:016x}-{:x}-{n:x}", h.finish(), std::process::id())
}
