//! The invalidation counters on Redis: one hash per key prefix, `{<prefix>}:gens`, with the
//! sequence in field `__seq` and one field per name. The braces are a hash tag, so the whole
//! hash is one key in one slot of a cluster and a bump is one atomic script.

use std::sync::Arc;

use fred::prelude::*;

use super::{Failure, RedisStore};
use crate::{Generations, Purge, StoreError, StoreErrorKind};

/// The field that holds the prefix's sequence.
const SEQ: &str = "__seq";

/// Bumps the sequence by one and every name given (`ARGV[2..]`) by the increment `ARGV[1]`
/// (`2^24` hard, `1` soft), atomically; returns the sequence, then each name's new generation.
/// HINCRBY does the integer arithmetic and the values go back as HGET's strings: a Lua number is
/// a double, exact only to 2^53, and a generation counts hard bumps in units of 2^24.
const BUMP: &str = r"
redis.call('HINCRBY', KEYS[1], '__seq', 1)
local out = { redis.call('HGET', KEYS[1], '__seq') }
for i = 2, #ARGV do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[1])
  out[i] = redis.call('HGET', KEYS[1], ARGV[i])
end
return out
";

/// `1` then the whole hash (field, value, …) if it has at most `ARGV[1]` fields besides the
/// sequence, else just `0`: one atomic read, bounded. (The flag tells "too many" from a hash
/// that does not exist yet, whose empty reply is as good as a complete list.)
const ALL: &str = r"
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[1]) + 1 then return { '0' } end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, '1')
return all
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

    /// One `EVAL` of the bounded `HGETALL` script: every name's generation and the sequence,
    /// or `None` past `max` names.
    pub(super) async fn read_all_generations(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Option<(Generations, Vec<Arc<str>>)>, StoreError> {
        let eval = Box::pin(self.shared.client.eval::<Vec<String>, _, _, _>(
            ALL,
            gens_key(prefix),
            max.to_string(),
        ));
        let reply = self.call("EVAL", eval).await.map_err(Failure::into_error)?;
        let (flag, flat) = reply.split_first().ok_or_else(corrupt)?;
        if flag != "1" {
            return Ok(None);
        }
        if flat.len() % 2 != 0 {
            return Err(corrupt());
        }
        let mut seq = 0;
        let (mut names, mut gens) = (Vec::new(), Vec::new());
        for pair in flat.chunks_exact(2) {
            let value = pair[1].parse::<u64>().map_err(|_| corrupt())?;
            if pair[0] == SEQ {
                seq = value;
            } else {
                names.push(Arc::from(pair[0].as_str()));
                gens.push(value);
            }
        }
        Ok(Some((Generations::new(seq, gens), names)))
    }

    /// One `EVAL` of the bump script.
    pub(super) async fn bump(
        &self,
        prefix: &str,
        names: &[Arc<str>],
        purge: Purge,
    ) -> Result<Generations, StoreError> {
        let mut args: Vec<String> = Vec::with_capacity(names.len() + 1);
        args.push(purge.increment().to_string());
        args.extend(names.iter().map(|n| n.to_string()));
        let eval = Box::pin(self.shared.client.eval::<Vec<Option<String>>, _, _, _>(
            BUMP,
            gens_key(prefix),
            args,
        ));
        let values = self.call("EVAL", eval).await.map_err(Failure::into_error)?;
        counters(values, names.len())
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
