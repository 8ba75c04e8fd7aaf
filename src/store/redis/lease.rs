//! Leases on Redis: `<entry key>:lock` holds the holder's token for the lease time. The entry
//! key's hash tag (`prefix:{hex}`) is in the lock key too, so on a cluster the lock lives in
//! its entry's slot, on the same node.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::{Failure, RedisStore};
use crate::{CacheKey, StoreError};

/// Deletes the lock only if it still holds the caller's token (a lease that expired and was
/// taken by another process is not ours to end).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The lock of the entry under `key`: same hash tag, so same slot.
pub(super) fn lock_key(key: &CacheKey) -> String {
    format!("{key}:lock")
}

impl RedisStore {
    /// `SET <key>:lock <token> NX PX <ttl>`: whether it was set.
    pub(super) async fn lease(
        &self,
        key: &CacheKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set = Box::pin(self.shared.client.set::<Option<String>, _, _>(
            lock_key(key),
            token,
            Some(Expiration::PX(millis)),
            Some(SetOptions::NX),
            false,
        ));
        let set = self
            .call("SET NX", set)
            .await
            .map_err(Failure::into_error)?;
        Ok(set.is_some())
    }

    /// One `EVAL` of the compare-and-delete script.
    pub(super) async fn release(&self, key: &CacheKey, token: &str) -> Result<bool, StoreError> {
        let eval = Box::pin(
            self.shared
                .client
                .eval::<i64, _, _, _>(RELEASE, lock_key(key), token),
        );
        let n = self.call("EVAL", eval).await.map_err(Failure::into_error)?;
        Ok(n > 0)
    }
}
