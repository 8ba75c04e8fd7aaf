//! Raw values of the low-level API on Redis: plain `GET`/`SET PX`/`DEL`/`INCRBY` on the readable
//! key, through the same breaker and command timeout as the responses' commands.

use bytes::Bytes;
use fred::prelude::*;
use std::time::Duration;

use super::{Failure, RedisStore};
use crate::{StoreError, StoreErrorKind};

impl RedisStore {
    pub(super) async fn get_raw(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.guarded("GET", self.batched_get(key.to_owned())).await {
            Ok(found) => Ok(found),
            // A hash or list under a value key: not ours, so a miss, as for responses.
            Err(Failure::Foreign) => {
                self.corrupt(key, &"not a string value");
                Ok(None)
            }
            Err(Failure::Store(e)) => Err(e),
        }
    }

    pub(super) async fn put_raw(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if ttl.is_zero() {
            // Redis rejects `PX 0`; a value that expires at once is no value.
            return self.remove_raw(key).await.map(drop);
        }
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set = self.batched_set(key.to_owned(), value, millis);
        self.guarded("SET", set).await.map_err(Failure::into_error)
    }

    pub(super) async fn remove_raw(&self, key: &str) -> Result<bool, StoreError> {
        let del = Box::pin(self.shared.client.del::<u64, _>(key));
        self.call("DEL", del)
            .await
            .map(|n| n > 0)
            .map_err(Failure::into_error)
    }

    /// `INCRBY`: atomic on the server, creates a missing key at 0 without a TTL and keeps the
    /// TTL of an existing one.
    pub(super) async fn incr_raw(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let incr = Box::pin(self.shared.client.incr_by::<i64, _>(key, delta));
        match self.call("INCRBY", incr).await {
            Ok(n) => Ok(n),
            Err(Failure::Foreign) => Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("{key}: not an integer counter, or adding {delta} overflows"),
            )),
            Err(Failure::Store(e)) => Err(e),
        }
    }
}
