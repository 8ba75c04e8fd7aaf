//! The cache's settings as data — the equivalent of Django's `CACHES` — loaded from TOML or from
//! environment variables and validated at start-up, with errors that name the bad field.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::redis_url::{is_redis_url, redact, tls_unavailable};
use crate::{MemoryStore, ResponseCache, ResponseCacheBuilder, Store};

/// Where a cache keeps its entries and how it behaves, in one deserialisable value.
///
/// Every field has a default, so a file only names what it changes. `url` picks the store:
/// `memory` (the default), `redis://host:port/db`, `rediss://…` (feature `redis-tls`) or
/// `redis-cluster://host:port?node=host:port&node=…`.
///
/// ```
/// use tower_response_cache::CacheConfig;
/// let config = CacheConfig::from_toml_str(r#"
///     url = "redis://127.0.0.1:6379/0"
///     key_prefix = "twiscope"
///     default_ttl_secs = 600
///     command_timeout_ms = 150
/// "#).unwrap();
/// assert_eq!(config.command_timeout_ms, 150);
/// assert!(!config.require_redis_at_start, "an unreachable Redis does not stop start-up");
///
/// let err = CacheConfig::from_toml_str("command_timeout_ms = 0").unwrap_err();
/// assert_eq!(err.to_string(), "command_timeout_ms: must be between 1 and 60000, got 0");
/// ```
///
/// Building the cache it describes:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use tower_response_cache::CacheConfig;
/// let cache = CacheConfig::default().build().await.unwrap(); // a 128 MiB memory store
/// assert_eq!(cache.key_prefix(), "trc");
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The store: `memory`, `redis://…`, `rediss://…` or `redis-cluster://…` (default `memory`).
    pub url: String,
    /// Starts every key (Django's `KEY_PREFIX`; default `trc`).
    pub key_prefix: String,
    /// The namespace version in every key (Django's `VERSION`; default 1).
    pub version: u64,
    /// The TTL of routes without their own (Django's `TIMEOUT`; default 300).
    pub default_ttl_secs: u64,
    /// The largest body stored, in bytes (default 1 MiB).
    pub max_body_size: usize,
    /// The memory store's capacity in bytes (default 128 MiB).
    pub max_bytes: u64,
    /// Redis: how long to wait for a connection (default 1000).
    pub connect_timeout_ms: u64,
    /// Redis: the most one command may take before it counts as a miss (default 200).
    pub command_timeout_ms: u64,
    /// Redis: how many connections (default: one per CPU the process may run on, at most 4).
    pub pool_size: usize,
    /// Whether an unreachable Redis fails [`build`](Self::build) (default `false`: the cache
    /// starts anyway, every lookup a miss until Redis answers). Only start-up is concerned: once
    /// running, a store failure is always a miss, never an error. Environment variable
    /// `PREFIX_REQUIRE_REDIS_AT_START`; formerly `ignore_errors`, with the opposite sense.
    pub require_redis_at_start: bool,
    /// Redis: consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: u32,
    /// Redis: how long the breaker stays open before probing (default 2000).
    pub breaker_cooldown_ms: u64,
    /// How often another process's invalidations are looked for in a remote store (default
    /// 1000); see [`ResponseCacheBuilder::invalidation_poll`].
    pub invalidation_poll_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            url: "memory".to_owned(),
            key_prefix: "trc".to_owned(),
            version: 1,
            default_ttl_secs: 300,
            max_body_size: 1024 * 1024,
            max_bytes: 128 * 1024 * 1024,
            connect_timeout_ms: 1000,
            command_timeout_ms: 200,
            pool_size: crate::redis_url::default_pool_size(),
            require_redis_at_start: false,
            breaker_failures: 5,
            breaker_cooldown_ms: 2000,
            invalidation_poll_ms: 1000,
        }
    }
}

/// A configuration that cannot be used: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field (or environment variable) at fault; empty for a TOML syntax error.
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The fields in environment-variable order, for [`CacheConfig::from_vars`].
const FIELDS: [&str; 13] = [
    "url",
    "key_prefix",
    "version",
    "default_ttl_secs",
    "max_body_size",
    "max_bytes",
    "connect_timeout_ms",
    "command_timeout_ms",
    "pool_size",
    "require_redis_at_start",
    "breaker_failures",
    "breaker_cooldown_ms",
    "invalidation_poll_ms",
];

impl CacheConfig {
    /// Parses and validates TOML (every field optional).
    ///
    /// # Errors
    /// Syntax errors, unknown fields, wrong types (toml names the key) and invalid values.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(toml).map_err(|e| {
            let mut message = format!("invalid cache configuration: {e}");
            if e.message().contains("`ignore_errors`") {
                message.push_str(RENAMED_IGNORE_ERRORS);
            }
            ConfigError::new("", message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    /// When the file cannot be read, or as [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text)
    }

    /// The defaults overridden by environment variables named `PREFIX_FIELD`, e.g. with prefix
    /// `CACHE`: `CACHE_URL`, `CACHE_KEY_PREFIX`, `CACHE_COMMAND_TIMEOUT_MS`, …
    ///
    /// # Errors
    /// A variable under the prefix that names no field, a value that does not parse (either
    /// error names the variable), or an invalid value.
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Self::from_vars(prefix, std::env::vars())
    }

    /// Like [`from_env`](Self::from_env), from any list of variables.
    ///
    /// ```
    /// use tower_response_cache::CacheConfig;
    /// let vars = [("APP_CACHE_URL", "redis://cache:6379/1"), ("APP_CACHE_POOL_SIZE", "8")];
    /// let config = CacheConfig::from_vars("APP_CACHE", vars).unwrap();
    /// assert_eq!((config.url.as_str(), config.pool_size), ("redis://cache:6379/1", 8));
    ///
    /// let err = CacheConfig::from_vars("APP_CACHE", [("APP_CACHE_POOL_SIZE", "many")]).unwrap_err();
    /// assert_eq!(err.field(), "APP_CACHE_POOL_SIZE");
    /// ```
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_vars<K, V>(
        prefix: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let prefix = prefix.trim_end_matches('_');
        let mut config = Self::default();
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref().trim());
            let Some(field) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('_'))
                .map(str::to_ascii_lowercase)
            else {
                continue;
            };
            // A misspelt variable would otherwise leave its setting at the default unnoticed.
            if !FIELDS.contains(&field.as_str()) {
                return Err(unknown_variable(prefix, name, &field));
            }
            config
                .set(&field, value)
                .map_err(|m| ConfigError::new(name, m))?;
        }
        config.validate()?;
        Ok(config)
    }

    fn set(&mut self, field: &str, value: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("expected a non-negative integer, got {value:?}"))
        }
        match field {
            "url" => self.url = value.to_owned(),
            "key_prefix" => self.key_prefix = value.to_owned(),
            "version" => self.version = num(value)?,
            "default_ttl_secs" => self.default_ttl_secs = num(value)?,
            "max_body_size" => self.max_body_size = num(value)?,
            "max_bytes" => self.max_bytes = num(value)?,
            "connect_timeout_ms" => self.connect_timeout_ms = num(value)?,
            "command_timeout_ms" => self.command_timeout_ms = num(value)?,
            "pool_size" => self.pool_size = num(value)?,
            "breaker_failures" => self.breaker_failures = num(value)?,
            "breaker_cooldown_ms" => self.breaker_cooldown_ms = num(value)?,
            "invalidation_poll_ms" => self.invalidation_poll_ms = num(value)?,
            "require_redis_at_start" => {
                self.require_redis_at_start = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => return Err(format!("expected true or false, got {value:?}")),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks every field; the first bad one is reported.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field, the allowed range and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field,
                    format!("must be between {min} and {max}, got {value}"),
                ))
            }
        }
        self.store_kind()?;
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '{' && c != '}')
        {
            return Err(ConfigError::new(
                "key_prefix",
                format!(
                    "must be 1 to 64 printable ASCII characters without spaces or braces, got {:?}",
                    self.key_prefix
                ),
            ));
        }
        range(
            "default_ttl_secs",
            self.default_ttl_secs,
            1,
            365 * 24 * 3600,
        )?;
        range("max_body_size", self.max_body_size as u64, 1, 512 << 20)?;
        range("max_bytes", self.max_bytes, 1024, u64::MAX)?;
        range("connect_timeout_ms", self.connect_timeout_ms, 1, 60_000)?;
        range("command_timeout_ms", self.command_timeout_ms, 1, 60_000)?;
        range("pool_size", self.pool_size as u64, 1, 256)?;
        range(
            "breaker_failures",
            u64::from(self.breaker_failures),
            1,
            1000,
        )?;
        range("breaker_cooldown_ms", self.breaker_cooldown_ms, 1, 60_000)?;
        range(
            "invalidation_poll_ms",
            self.invalidation_poll_ms,
            1,
            3_600_000,
        )?;
        Ok(())
    }

    fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        let url = self.url.trim();
        if url.eq_ignore_ascii_case("memory") {
            return Ok(StoreKind::Memory);
        }
        if !is_redis_url(url) {
            return Err(ConfigError::new(
                "url",
                format!(
                    "expected \"memory\", redis://, rediss:// or redis-cluster://, got {:?}",
                    redact(url)
                ),
            ));
        }
        if let Some(why) = tls_unavailable(url) {
            return Err(ConfigError::new("url", why));
        }
        if cfg!(feature = "redis") {
            Ok(StoreKind::Redis)
        } else {
            Err(ConfigError::new(
                "url",
                "Redis support is not compiled in (enable the `redis` feature)",
            ))
        }
    }

    /// The store this configuration names, connected.
    ///
    /// # Errors
    /// An invalid configuration; an unreachable Redis only when `require_redis_at_start` is set.
    pub async fn build_store(&self) -> Result<Arc<dyn Store>, ConfigError> {
        self.validate()?;
        match self.store_kind()? {
            StoreKind::Memory => Ok(Arc::new(MemoryStore::new(self.max_bytes))),
            #[cfg(feature = "redis")]
            StoreKind::Redis => Ok(Arc::new(self.redis_store().await?)),
            #[cfg(not(feature = "redis"))]
            StoreKind::Redis => unreachable!("store_kind rejects Redis URLs without the feature"),
        }
    }

    /// The Redis store this configuration names, connected; keep a clone for its
    /// [`stats`](crate::RedisStore::stats).
    ///
    /// # Errors
    /// When `url` is not a Redis URL, as [`build_store`](Self::build_store) otherwise.
    #[cfg(feature = "redis")]
    pub async fn redis_store(&self) -> Result<crate::RedisStore, ConfigError> {
        self.validate()?;
        if !matches!(self.store_kind()?, StoreKind::Redis) {
            return Err(ConfigError::new("url", "is not a Redis URL"));
        }
        crate::RedisStore::builder(self.url.trim())
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .command_timeout(Duration::from_millis(self.command_timeout_ms))
            .pool_size(self.pool_size)
            .breaker(
                self.breaker_failures,
                Duration::from_millis(self.breaker_cooldown_ms),
            )
            .require_connection(self.require_redis_at_start)
            .connect()
            .await
            .map_err(|e| ConfigError::new("url", e.to_string()))
    }

    /// A [`ResponseCache`] builder with this configuration's store and settings applied, for
    /// further settings (a clock, a name) before [`build`](ResponseCacheBuilder::build).
    ///
    /// # Errors
    /// As [`build_store`](Self::build_store).
    pub async fn cache_builder(&self) -> Result<ResponseCacheBuilder, ConfigError> {
        Ok(self.apply(ResponseCache::builder().shared_store(self.build_store().await?)))
    }

    /// Applies every setting except the store to `builder`.
    pub fn apply(&self, builder: ResponseCacheBuilder) -> ResponseCacheBuilder {
        builder
            .key_prefix(self.key_prefix.clone())
            .version(self.version)
            .default_ttl(Duration::from_secs(self.default_ttl_secs))
            .max_body_size(self.max_body_size)
            .invalidation_poll(Duration::from_millis(self.invalidation_poll_ms))
    }

    /// The cache this configuration describes.
    ///
    /// # Errors
    /// As [`build_store`](Self::build_store).
    pub async fn build(&self) -> Result<ResponseCache, ConfigError> {
        Ok(self.cache_builder().await?.build())
    }
}

/// The hint for a setting that still uses the old name.
const RENAMED_IGNORE_ERRORS: &str =
    "; `ignore_errors` is now `require_redis_at_start`, with the opposite sense";

/// The error for `name`, under `prefix`, which names no field: it lists the variables that exist.
fn unknown_variable(prefix: &str, name: &str, field: &str) -> ConfigError {
    let var = |f: &str| format!("{prefix}_{}", f.to_ascii_uppercase());
    if field == "ignore_errors" {
        return ConfigError::new(
            name,
            format!(
                "names no cache setting{RENAMED_IGNORE_ERRORS}: use {}",
                var("require_redis_at_start")
            ),
        );
    }
    let hint = FIELDS
        .iter()
        .find(|f| !field.is_empty() && (f.starts_with(field) || field.starts_with(*f)))
        .map(|f| format!("did you mean {}? ", var(f)))
        .unwrap_or_default();
    let known: Vec<String> = FIELDS.iter().map(|f| var(f)).collect();
    ConfigError::new(
        name,
        format!(
            "names no cache setting; {hint}the variables are {}",
            known.join(", ")
        ),
    )
}

enum StoreKind {
    Memory,
    Redis,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(toml: &str) -> String {
        CacheConfig::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_safe() {
        let c = CacheConfig::from_toml_str("").unwrap();
        assert_eq!(c, CacheConfig::default());
        assert!(!c.require_redis_at_start);
        assert_eq!(c.command_timeout_ms, 200);
    }

    #[test]
    fn every_field_reads_from_toml() {
        let c = CacheConfig::from_toml_str(
            r#"
            url = "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001"
            key_prefix = "app"
            version = 3
            default_ttl_secs = 60
            max_body_size = 2048
            max_bytes = 4096
            connect_timeout_ms = 500
            command_timeout_ms = 100
            pool_size = 2
            require_redis_at_start = true
            breaker_failures = 7
            breaker_cooldown_ms = 900
            invalidation_poll_ms = 250
            "#,
        )
        .unwrap();
        assert_eq!(c.url, "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001");
        assert_eq!((c.key_prefix.as_str(), c.version), ("app", 3));
        assert_eq!(
            (c.default_ttl_secs, c.max_body_size, c.max_bytes),
            (60, 2048, 4096)
        );
        assert_eq!(
            (c.connect_timeout_ms, c.command_timeout_ms, c.pool_size),
            (500, 100, 2)
        );
        assert!(c.require_redis_at_start);
        assert_eq!((c.breaker_failures, c.breaker_cooldown_ms), (7, 900));
        assert_eq!(c.invalidation_poll_ms, 250);
    }

    #[test]
    fn bad_values_name_the_field_and_why() {
        assert_eq!(
            err("command_timeout_ms = 0"),
            "command_timeout_ms: must be between 1 and 60000, got 0"
        );
        assert_eq!(
            err("pool_size = 1000"),
            "pool_size: must be between 1 and 256, got 1000"
        );
        assert!(err("default_ttl_secs = 0").starts_with("default_ttl_secs: "));
        assert!(err("breaker_failures = 0").starts_with("breaker_failures: "));
        assert!(err("key_prefix = \"a b\"").starts_with("key_prefix: "));
        assert!(err("key_prefix = \"\"").starts_with("key_prefix: "));
        assert!(err("key_prefix = \"app{1}\"").starts_with("key_prefix: "));
        let e = err("url = \"http://user:secret@example.com\"");
        assert!(e.starts_with("url: ") && !e.contains("secret"), "{e}");
        // toml itself names unknown and mistyped keys.
        assert!(err("command_timeout = 5").contains("command_timeout"));
        assert!(err("pool_size = \"four\"").contains("pool_size"));
        // The old name of `require_redis_at_start` says what it became.
        let e = err("ignore_errors = false");
        assert!(e.contains("`require_redis_at_start`"), "{e}");
        let e = CacheConfig::from_vars("CACHE", [("CACHE_IGNORE_ERRORS", "no")]).unwrap_err();
        assert_eq!(e.field(), "CACHE_IGNORE_ERRORS");
        assert!(
            e.to_string().contains("CACHE_REQUIRE_REDIS_AT_START"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_defaults_and_names_the_variable() {
        let c = CacheConfig::from_vars(
            "CACHE_",
            [
                ("CACHE_URL", "redis://h:1/2"),
                ("CACHE_KEY_PREFIX", "env"),
                ("CACHE_REQUIRE_REDIS_AT_START", "yes"),
                ("CACHE_COMMAND_TIMEOUT_MS", " 150 "),
                ("OTHER_POOL_SIZE", "junk"),
                ("CACHEDIR", "not under the prefix"),
            ],
        )
        .unwrap();
        assert_eq!(c.url, "redis://h:1/2");
        assert_eq!(c.key_prefix, "env");
        assert!(c.require_redis_at_start);
        assert_eq!(c.command_timeout_ms, 150);
        // Untouched by a variable under another prefix: the default.
        assert_eq!(c.pool_size, crate::redis_url::default_pool_size());

        let e = CacheConfig::from_vars("CACHE", [("CACHE_MAX_BYTES", "-1")]).unwrap_err();
        assert_eq!(e.field(), "CACHE_MAX_BYTES");
        let e = CacheConfig::from_vars("CACHE", [("CACHE_POOL_SIZE", "0")]).unwrap_err();
        assert_eq!(e.to_string(), "pool_size: must be between 1 and 256, got 0");
    }

    #[test]
    fn a_variable_naming_no_field_is_an_error_listing_the_fields() {
        let e =
            CacheConfig::from_vars("APP_CACHE_", [("APP_CACHE_DEFAULT_TTL", "60")]).unwrap_err();
        assert_eq!(e.field(), "APP_CACHE_DEFAULT_TTL");
        let message = e.to_string();
        assert!(
            message.contains("did you mean APP_CACHE_DEFAULT_TTL_SECS?"),
            "{message}"
        );
        for field in FIELDS {
            let var = format!("APP_CACHE_{}", field.to_ascii_uppercase());
            assert!(message.contains(&var), "{var} missing from {message}");
        }
        let e = CacheConfig::from_vars("CACHE", [("CACHE_PORT", "1")]).unwrap_err();
        assert_eq!(e.field(), "CACHE_PORT");
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn a_tls_url_needs_the_tls_feature() {
        for url in [
            "rediss://:pw@h:6379/0",
            "rediss-cluster://h:7000",
            "valkeys://h",
        ] {
            let e = CacheConfig::from_toml_str(&format!("url = {url:?}")).unwrap_err();
            assert_eq!(e.field(), "url");
            let message = e.to_string();
            assert!(message.contains("`redis-tls`"), "{message}");
            assert!(!message.contains("pw"), "{message}");
            let e = CacheConfig::from_vars("C", [("C_URL", url)]).unwrap_err();
            assert_eq!(e.field(), "url");
        }
        assert!(CacheConfig::from_toml_str("url = \"redis://h:6379/0\"").is_ok());
    }

    #[test]
    fn reads_a_file() {
        let path = std::env::temp_dir().join(format!("trc-config-{}.toml", std::process::id()));
        std::fs::write(&path, "key_prefix = \"file\"\n").unwrap();
        let c = CacheConfig::from_toml_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.key_prefix, "file");
        assert!(CacheConfig::from_toml_file("/nonexistent/trc.toml").is_err());
    }

    #[tokio::test]
    async fn builds_the_described_cache() {
        let config = CacheConfig {
            key_prefix: "built".to_owned(),
            default_ttl_secs: 42,
            ..CacheConfig::default()
        };
        let cache = config.build().await.unwrap();
        assert_eq!(cache.key_prefix(), "built");
        let store = config.build_store().await.unwrap();
        assert!(format!("{store:?}").contains("MemoryStore"));
    }
}
