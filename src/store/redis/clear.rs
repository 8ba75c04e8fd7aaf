//! Clearing by prefix: `SCAN MATCH prefix*` on the server (on every master of a cluster), then
//! `DEL` in batches that each stay within one hash slot.

use std::collections::BTreeMap;
use std::pin::Pin;

use fred::prelude::*;
use fred::types::Key;
use futures_core::Stream;

use super::{Failure, RedisStore};
use crate::StoreError;

/// How many keys one `DEL` of [`crate::Store::clear_prefix`] removes at most.
const DEL_BATCH: usize = 256;

impl RedisStore {
    pub(super) async fn clear(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys = self
            .call("SCAN", self.scan(prefix))
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
            let del = self.shared.client.del::<u64, _>(batch);
            removed += self.call("DEL", del).await.map_err(Failure::into_error)?;
        }
        Ok(removed)
    }

    /// Every key starting with `prefix`: `SCAN MATCH` on the server, or on every master of a
    /// cluster. Each page is bounded by the command timeout.
    async fn scan(&self, prefix: &str) -> Result<Vec<Key>, fred::error::Error> {
        let pattern = format!("{}*", escape_glob(prefix));
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

/// Escapes Redis glob metacharacters so a prefix matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("app:{ab}:"), "app:{ab}:");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn deletes_are_batched() {
        let keys: Vec<Key> = (0..DEL_BATCH * 2 + 1)
            .map(|i| Key::from(i.to_string()))
            .collect();
        let sizes: Vec<usize> = chunks(keys).map(|b| b.len()).collect();
        assert_eq!(sizes, [DEL_BATCH, DEL_BATCH, 1]);
    }
}
