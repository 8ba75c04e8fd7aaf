//! Helpers for tests that need real Redis servers.
#![allow(dead_code, unreachable_pub)]

pub mod redis_server;
pub mod slow_proxy;
