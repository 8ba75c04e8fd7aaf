//! Nothing: the package exists for its benches (`hit_path.rs`, `redis_hit.rs`).
