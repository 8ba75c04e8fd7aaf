//! Invalidation on Redis, single node and cluster: the scenarios of tests/invalidation.rs, and
//! the cross-process cases (two caches on two connections stand for two processes).

mod common;
#[path = "invalidation/scenarios.rs"]
mod scenarios;

fn main() {}
