//! twiscope: a social-analytics API cached with tower-response-cache (work in progress).
fn main() {}
