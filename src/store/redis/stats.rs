//! What a [`RedisStore`] counts — hits, misses, errors, timeouts, corrupt values, calls the
//! breaker refused — the snapshot of those counters it hands out, and Redis's own counters
//! (`INFO stats`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fred::prelude::*;
use fred::types::InfoKind;

use super::{BreakerState, Failure, RedisStore};
use crate::{StoreError, StoreErrorKind};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) breaker_opened: AtomicU64,
    /// Redis's own counters as [`RedisStore::server_stats`] last read them.
    pub(super) server: std::sync::Mutex<Option<RedisServerStats>>,
}

/// A [`RedisStore`]'s counters at one moment; from [`RedisStore::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Lookups that found a decodable entry.
    pub hits: u64,
    /// Lookups that found nothing (including corrupt values).
    pub misses: u64,
    /// Calls that reached for Redis and failed (timeouts included).
    pub errors: u64,
    /// Of those, calls that ran out of the command timeout.
    pub timeouts: u64,
    /// Values under our keys that did not decode (treated as misses).
    pub corrupt: u64,
    /// Calls failed fast by the open breaker without touching Redis.
    pub rejected: u64,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// Whether every connection is up now.
    pub connected: bool,
    /// Redis's own `keyspace_hits`, `keyspace_misses` and `evicted_keys`, as the last call of
    /// [`RedisStore::server_stats`] read them (`None` before the first): `stats()` never waits
    /// on Redis, so call that to refresh them.
    pub server: Option<RedisServerStats>,
}

impl RedisStore {
    /// The counters and the breaker's state.
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.counters;
        RedisStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            errors: c.errors.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            breaker_opened: c.breaker_opened.load(Relaxed),
            breaker: self.shared.breaker.state(),
            connected: self.is_connected(),
            server: c.server.lock().map(|s| s.clone()).unwrap_or(None),
        }
    }
}

/// What Redis itself counts, from `INFO stats`, summed over every primary of a cluster; from
/// [`RedisStore::server_stats`].
///
/// These are the server's numbers, for every client and every key it holds, not only this
/// cache's: read them next to the cache's own ([`RedisStats`], [`crate::RouteStats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisServerStats {
    /// Lookups of an existing key (`keyspace_hits`).
    pub keyspace_hits: u64,
    /// Lookups of a missing key (`keyspace_misses`).
    pub keyspace_misses: u64,
    /// Keys Redis removed to stay under `maxmemory` (`evicted_keys`); entries the cache
    /// stored and lost before their TTL.
    pub evicted_keys: u64,
    /// How many servers answered (the primaries of a cluster, or one).
    pub servers: usize,
}

impl RedisStore {
    /// Redis's own `keyspace_hits`, `keyspace_misses` and `evicted_keys` (`INFO stats`),
    /// summed over every primary of a cluster. Each server is asked through the breaker and
    /// within the command timeout.
    ///
    /// ```no_run
    /// use tower_response_cache::RedisStore;
    /// # async fn demo() -> Result<(), tower_response_cache::StoreError> {
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379/0").await?;
    /// let server = store.server_stats().await?;
    /// println!("{} evicted by Redis", server.evicted_keys);
    /// // `stats()` carries the figures last read, without waiting on Redis.
    /// assert_eq!(store.stats().server, Some(server));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When a server does not answer in time, the breaker is open, or the reply is not `INFO`'s.
    pub async fn server_stats(&self) -> Result<RedisServerStats, StoreError> {
        let client = self.shared.pool.next_connected();
        let mut total = RedisServerStats {
            keyspace_hits: 0,
            keyspace_misses: 0,
            evicted_keys: 0,
            servers: 0,
        };
        let servers = if client.is_clustered() {
            // A clustered client connects to the primaries only (fred without `replicas`).
            client.active_connections().into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for server in servers {
            let info = match server {
                Some(server) => {
                    let node = client.with_cluster_node(server);
                    let info = node.info::<String>(Some(InfoKind::Stats));
                    self.call("INFO", Box::pin(info)).await
                }
                None => {
                    let info = client.info::<String>(Some(InfoKind::Stats));
                    self.call("INFO", Box::pin(info)).await
                }
            };
            let info = info.map_err(Failure::into_error)?;
            let field = |name: &str| -> Result<u64, StoreError> {
                info_field(&info, name).ok_or_else(|| {
                    StoreError::new(StoreErrorKind::Backend, format!("INFO stats has no {name}"))
                })
            };
            total.keyspace_hits += field("keyspace_hits")?;
            total.keyspace_misses += field("keyspace_misses")?;
            total.evicted_keys += field("evicted_keys")?;
            total.servers += 1;
        }
        if let Ok(mut last) = self.shared.counters.server.lock() {
            *last = Some(total.clone());
        }
        Ok(total)
    }
}

/// The number after `name:` on a line of an `INFO` reply.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::info_field;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Stats\r\nkeyspace_hits:12\r\nkeyspace_misses:3\r\nevicted_keys:0\r\n";
        assert_eq!(info_field(info, "keyspace_hits"), Some(12));
        assert_eq!(info_field(info, "keyspace_misses"), Some(3));
        assert_eq!(info_field(info, "evicted_keys"), Some(0));
        assert_eq!(info_field(info, "hits"), None);
    }
}
