//! A cache on Redis, configured from outside the code: a TOML file or `APP_CACHE_*` environment
//! variables become a `CacheConfig`, which builds the `RedisStore` and the `ResponseCache`.
//! A Redis that is down or slow costs misses, never errors: every request is still answered.
//!
//! ```text
//! # from the environment (any CacheConfig field, upper-cased, after the prefix):
//! APP_CACHE_URL=redis://127.0.0.1:6379/0 APP_CACHE_DEFAULT_TTL_SECS=120 \
//!     cargo run --example redis_from_config
//! # or from a file:
//! cargo run --example redis_from_config -- cache.toml
//! ```
//!
//! with `cache.toml` such as:
//!
//! ```toml
//! url = "redis://127.0.0.1:6379/0"
//! key_prefix = "shop"
//! default_ttl_secs = 120
//! command_timeout_ms = 150
//! ```

use axum::{routing::get, Router};
use tower_response_cache::{redact_url, CacheConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = match std::env::args().nth(1) {
        Some(path) => CacheConfig::from_toml_file(path)?,
        None => CacheConfig::from_env("APP_CACHE")?,
    };
    // Errors name the field and never print the Redis password.
    let cache = config.build().await?;
    let app = Router::new()
        .route("/catalogue", get(catalogue).layer(cache.route()))
        .layer(cache.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    // A password in the URL stays out of the logs.
    println!(
        "listening on http://{} (cache: {})",
        listener.local_addr()?,
        redact_url(&config.url)
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// Kept for `default_ttl_secs` by `cache.route()`.
async fn catalogue() -> &'static str {
    r#"[{"sku": 1, "name": "kettle"}]"#
}
