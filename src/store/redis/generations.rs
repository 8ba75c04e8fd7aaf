//! The invalidation counters on Redis: one hash per key prefix, `{<prefix>}:gens`, with the
//! sequence in field `__seq` and one field per name. The braces are a hash tag, so the whole
//! hash is one key in one slot of a cluster and a bump is one atomic script.

use std::sync::Arc;

use fred::prelude::*;

use super::{Failure, RedisStore};
use crate::{Generations, StoreError, StoreErrorKind};

/// The field that holds the prefix's sequence.
const SEQ: &str = "__seq";

/// Bumps the sequence and every name given (`ARGV`), atomically; returns the sequence, then each
/// name's new generation.
const BUMP: &str = r"
local out = { redis.call('HINCRBY', KEYS[1], '__seq', 1) }
for i, name in ipairs(ARGV) do
  out[i + 1] = redis.call('HINCRBY', KEYS[1], name, 1)
end
return out
";

/// The hash holding `prefix`'s counters.
pub(super) fn gens_key(prefix: &str) -> String {
    format!("{{{prefix}}}:gens")
}

impl RedisStore {
    /// `HMGET {prefix}:gens __seq names…`: one round trip, one atomic read.
    pub(super) async fn read_generations(
        &self,
        prefix: &str,
        names: &[Arc<str>],
    ) -> Result<Generations, StoreError> {
        let mut fields: Vec<String> = Vec::with_capacity(names.len() + 1);
        fields.push(SEQ.to_owned());
        fields.extend(names.iter().map(|n| n.to_string()));
        let read = Box::pin(
            self.shared
                .client
                .hmget::<Vec<Option<String>>, _, _>(gens_key(prefix), fields),
        );
        let values = self
            .call("HMGET", read)
            .await
            .map_err(Failure::into_error)?;
        counters(values, names.len())
    }

    /// One `EVAL` of the bump script.
    pub(super) async fn bump(
        &self,
        prefix: &str,
        names: &[Arc<str>],
    ) -> Result<Generations, StoreError> {
        let args: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let eval = Box::pin(self.shared.client.eval::<Vec<i64>, _, _, _>(
            BUMP,
            gens_key(prefix),
            args,
        ));
        let values = self.call("EVAL", eval).await.map_err(Failure::into_error)?;
        counters(
            values.into_iter().map(|v| Some(v.to_string())).collect(),
            names.len(),
        )
    }
}

/// The sequence and the generations in a reply; a missing field is `0`.
fn counters(values: Vec<Option<String>>, names: usize) -> Result<Generations, StoreError> {
    if values.len() != names + 1 {
        return Err(corrupt());
    }
    let mut numbers = values.into_iter().map(|v| match v {
        None => Ok(0),
        Some(v) => v.parse::<u64>().map_err(|_| corrupt()),
    });
    let seq = numbers.next().unwrap_or(Ok(0))?;
    let gens = numbers.collect::<Result<Vec<u64>, StoreError>>()?;
    Ok(Generations::new(seq, gens))
}

fn corrupt() -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        "the invalidation counters hash holds something that is not a counter",
    )
}
