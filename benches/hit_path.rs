//! Criterion benches of the hit path and key derivation (filled in below).
fn main() {}
