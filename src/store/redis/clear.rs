//! Removing by pattern: `SCAN MATCH pattern` on the server (on every master of a cluster), then
//! `UNLINK` in batches that each stay within one hash slot. Clearing a prefix is the pattern
//! `prefix*`; the low-level API's `remove_pattern` is `<prefix>:v:<glob>`.

use std::collections::BTreeMap;
use std::pin::Pin;

use fred::prelude::*;
use fred::types::Key;
use futures_core::Stream;

use super::{Failure, RedisStore};
use crate::store::glob::escape as escape_glob;
use crate::StoreError;

/// How many keys one `UNLINK` removes at most.
const DEL_BATCH: usize = 256;

impl RedisStore {
    pub(super) async fn clear(&self, prefix: &str) -> Result<u64, StoreError> {
        self.remove_matching(&format!("{}*", escape_glob(prefix)))
            .await
    }

    /// Removes every key matching the glob `pattern`; how many were removed.
    pub(super) async fn remove_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let keys = self
            .call("SCAN", Box::pin(self.scan(pattern)))
            .await
            .map_err(Failure::into_error)?;
        let mut batches: Vec<Vec<Key>> = Vec::new();
        if self.is_clustered() {
            // A multi-key DEL must stay within one hash slot.
            let mut by_slot: BTreeMap<u16, Vec<Key>> = BTreeMap::new();
            for key in keys {
                by_slot
                    .entry(fred::util::redis_keyslot(key.as_bytes()))
                    .or_default()
                    .push(key);
            }
            for (_, keys) in by_slot {
                batches.extend(chunks(keys));
            }
        } else {
            batches.extend(chunks(keys));
        }
        let mut removed = 0;
        for batch in batches {
            // UNLINK frees the values off Redis's main thread, unlike DEL.
            let unlink = Box::pin(self.shared.client.unlink::<u64, _>(batch));
            removed += self
                .call("UNLINK", unlink)
                .await
                .map_err(Failure::into_error)?;
        }
        Ok(removed)
    }

    /// Every key matching `pattern`: `SCAN MATCH` on the server, or on every master of a
    /// cluster. Each page is bounded by the command timeout.
    async fn scan(&self, pattern: &str) -> Result<Vec<Key>, fred::error::Error> {
        let pattern = pattern.to_owned();
        let client = self.shared.pool.next_connected();
        let mut stream: Pin<Box<dyn Stream<Item = Result<Key, fred::error::Error>> + Send>> =
            if client.is_clustered() {
                Box::pin(client.scan_cluster_buffered(pattern, Some(1000), None))
            } else {
                Box::pin(client.scan_buffered(pattern, Some(1000), None))
            };
        let mut keys = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx));
            match tokio::time::timeout(self.shared.command_timeout, next).await {
                Ok(Some(key)) => keys.push(key?),
                Ok(None) => return Ok(keys),
                Err(_) => {
                    return Err(fred::error::Error::new(
                        fred::error::ErrorKind::Timeout,
                        "SCAN page timed out",
                    ))
                }
            }
        }
    }
}

fn chunks(keys: Vec<Key>) -> impl Iterator<Item = Vec<Key>> {
    let mut keys = keys.into_iter().peekable();
    std::iter::from_fn(move || {
        keys.peek()?;
        Some(keys.by_ref().take(DEL_BATCH).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_are_batched() {
        let keys: Vec<Key> = (0..DEL_BATCH * 2 + 1)
            .map(|i| Key::from(i.to_string()))
            .collect();
        let sizes: Vec<usize> = chunks(keys).map(|b| b.len()).collect();
        assert_eq!(sizes, [DEL_BATCH, DEL_BATCH, 1]);
    }
}
