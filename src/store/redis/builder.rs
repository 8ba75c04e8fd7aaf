//! How a [`RedisStore`] is configured and connected: safe defaults for the settings fred leaves
//! unbounded (command timeout, reconnect policy), and validation that names the bad setting.

use std::fmt;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Options, TcpConfig};

use super::RedisStore;
use crate::redis_url::{is_redis_url, redact, tls_unavailable};
use crate::{StoreError, StoreErrorKind};

/// The default command timeout: small, because a slow cache must cost little more than a miss.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(200);
/// The default connect timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of consecutive failures that opens the breaker.
pub(crate) const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// The default time an open breaker waits before probing.
pub(crate) const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

/// The longest timeout any setting accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Configures a [`RedisStore`]; made by [`RedisStore::builder`] or [`RedisStore::builder_with_pool`].
///
/// Every setting has a safe default: a 200 ms command timeout, a 1 s connect timeout,
/// reconnection forever with exponential back-off (50 ms up to 2 s), one connection per CPU (at
/// most 4), and a breaker
/// that opens after 5 consecutive failures for 2 s.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_response_cache::{RedisStore, ResponseCache};
/// # async fn demo() -> Result<(), tower_response_cache::StoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .command_timeout(Duration::from_millis(100))
///     .pool_size(8)
///     .breaker(3, Duration::from_secs(1))
///     .connect()
///     .await?;
/// let cache = ResponseCache::builder().store(store).build();
/// # let _ = cache; Ok(()) }
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    source: Source,
    pool_size: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    require_connection: bool,
    metrics_namespace: String,
}

enum Source {
    Url(String),
    Pool(Pool),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(url) => redact(url),
            Source::Pool(_) => "<fred pool>".to_owned(),
        };
        f.debug_struct("RedisStoreBuilder")
            .field("source", &source)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("require_connection", &self.require_connection)
            .field("metrics_namespace", &self.metrics_namespace)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    pub(super) fn from_url(url: &str) -> Self {
        Self::new(Source::Url(url.to_owned()))
    }

    pub(super) fn from_pool(pool: Pool) -> Self {
        Self::new(Source::Pool(pool))
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            pool_size: crate::redis_url::default_pool_size(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            require_connection: false,
            metrics_namespace: "http".to_owned(),
        }
    }

    /// How many connections to open (default: one per CPU the process may run on, at most 4).
    /// Ignored for a pool the app supplied.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// How long to wait for a connection, at start-up and on each reconnect (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most one command may take before it counts as a failure and the request is served
    /// from the handler (default 200 ms).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The reconnect back-off: from `min` doubling up to `max` (default 50 ms to 2 s), retried
    /// forever. Ignored for a pool the app supplied.
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Opens the circuit breaker after `failures` consecutive failures (default 5) for
    /// `cooldown` (default 2 s); while open, calls fail fast without touching Redis.
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// The first word of the breaker's gauge (default `http`): `{namespace}_cache_breaker_state`,
    /// 0 closed, 1 half-open, 2 open, recorded through the `metrics` facade (feature `metrics`)
    /// to the recorder installed when [`connect`](Self::connect) registers it, and set at every
    /// transition. Give it the cache's
    /// [`metrics_namespace`](crate::ResponseCacheBuilder::metrics_namespace).
    ///
    /// ```no_run
    /// use tower_response_cache::{RedisStore, ResponseCache};
    /// # async fn demo() -> Result<(), tower_response_cache::StoreError> {
    /// // Install the recorder first (`metrics_exporter_prometheus::PrometheusBuilder`, …).
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
    ///     .metrics_namespace("twiscope")
    ///     .connect()
    ///     .await?;
    /// let cache = ResponseCache::builder().metrics_namespace("twiscope").store(store).build();
    /// # let _ = cache; Ok(()) }
    /// ```
    pub fn metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metrics_namespace = namespace.into();
        self
    }

    /// Whether [`connect`](Self::connect) fails when Redis cannot be reached within the connect
    /// timeout (default `false`: the store starts disconnected, every call is a miss, and it
    /// connects by itself when Redis comes up).
    pub fn require_connection(mut self, require: bool) -> Self {
        self.require_connection = require;
        self
    }

    /// Validates the settings, starts connecting and waits at most the connect timeout.
    ///
    /// # Errors
    /// A [`StoreErrorKind::Config`] error naming the bad setting (URL — including a TLS URL such
    /// as `rediss://` in a build without the `redis-tls` feature, which is refused rather than
    /// connected in plaintext —, pool size, a zero or over-60 s timeout); with [`require_connection`](Self::require_connection), a
    /// [`StoreErrorKind::Unavailable`] error when Redis cannot be reached.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        self.validate()?;
        let (pool, owned) = match self.source {
            Source::Pool(pool) => (pool, false),
            Source::Url(ref url) => (self.pool(url)?, true),
        };
        let options = Options {
            timeout: Some(self.command_timeout),
            // A cache would rather miss now than wait for a reconnection.
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        if owned {
            // The connection task lives as long as the pool; the store quits it on drop.
            drop(pool.connect());
        }
        let connected = wait_connected(&pool, self.connect_timeout).await;
        if !connected {
            if self.require_connection {
                let _ = pool.quit().await;
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "could not connect to Redis within {:?}",
                        self.connect_timeout
                    ),
                ));
            }
            tracing::warn!(
                timeout = ?self.connect_timeout,
                "Redis is not reachable yet; the cache misses until it connects"
            );
        }
        Ok(RedisStore::new(super::Parts {
            client: pool.with_options(&options),
            pool,
            owned,
            command_timeout: self.command_timeout,
            breaker: super::breaker::Breaker::new(
                self.breaker_failures,
                self.breaker_cooldown,
                &self.metrics_namespace,
            ),
        }))
    }

    fn validate(&self) -> Result<(), StoreError> {
        let bad = |field: &str, why: String| {
            Err(StoreError::new(
                StoreErrorKind::Config,
                format!("{field}: {why}"),
            ))
        };
        if let Source::Url(url) = &self.source {
            if !is_redis_url(url) {
                return bad(
                    "url",
                    format!(
                        "expected redis://, rediss:// or redis-cluster://, got {}",
                        redact(url)
                    ),
                );
            }
            if let Some(why) = tls_unavailable(url) {
                return bad("url", why);
            }
        }
        if !(1..=256).contains(&self.pool_size) {
            return bad(
                "pool_size",
                format!("must be between 1 and 256, got {}", self.pool_size),
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return bad(
                    field,
                    format!("must be between 1 ms and 60 s, got {value:?}"),
                );
            }
        }
        if self.breaker_failures == 0 {
            return bad("breaker_failures", "must be at least 1, got 0".to_owned());
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad(
                "reconnect_delay",
                format!(
                    "min must be non-zero and at most max, got {:?}..{:?}",
                    self.reconnect_min, self.reconnect_max
                ),
            );
        }
        Ok(())
    }

    fn pool(&self, url: &str) -> Result<Pool, StoreError> {
        let mut config = Config::from_url(url).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Config,
                format!("url: cannot use {}: {}", redact(url), e.details()),
            )
        })?;
        // Start even when Redis is down: the reconnect policy keeps trying in the background.
        config.fail_fast = false;
        let perf = PerformanceConfig {
            default_command_timeout: self.command_timeout,
            ..PerformanceConfig::default()
        };
        let connection = ConnectionConfig {
            connection_timeout: self.connect_timeout,
            internal_command_timeout: self.connect_timeout,
            max_command_attempts: 1,
            tcp: TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            },
            ..ConnectionConfig::default()
        };
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let policy = ReconnectPolicy::new_exponential(
            0,
            millis(self.reconnect_min),
            millis(self.reconnect_max),
            2,
        );
        Pool::new(
            config,
            Some(perf),
            Some(connection),
            Some(policy),
            self.pool_size,
        )
        .map_err(|e| StoreError::new(StoreErrorKind::Config, format!("pool: {}", e.details())))
    }
}

/// Waits until every connection of `pool` is up, at most `timeout`.
async fn wait_connected(pool: &Pool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if pool.clients().iter().all(ClientLike::is_connected) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        // `wait_for_connect` can miss a connection made just before it subscribed: re-check
        // the state every few milliseconds rather than trust one notification.
        let step = left.min(Duration::from_millis(20));
        let _ = tokio::time::timeout(step, pool.wait_for_connect()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }

    #[tokio::test]
    async fn bad_settings_name_the_field() {
        let err = |b: RedisStoreBuilder| async move { b.connect().await.unwrap_err().to_string() };
        let b = || RedisStore::builder("redis://127.0.0.1:1/0");
        assert!(err(b().pool_size(0))
            .await
            .contains("pool_size: must be between 1 and 256, got 0"));
        assert!(err(b().command_timeout(Duration::ZERO))
            .await
            .contains("command_timeout:"));
        assert!(err(b().breaker(0, Duration::from_secs(1)))
            .await
            .contains("breaker_failures:"));
        let e = err(RedisStore::builder("http://x:secret@nowhere")).await;
        assert!(e.contains("url:") && !e.contains("secret"), "{e}");
    }

    /// What a listener on a free loopback port received while `urls` (each naming its port
    /// through `{port}`) were connected with a short timeout, and what each connect returned.
    async fn connect_to_listener(urls: &[&str]) -> (Vec<Result<RedisStore, StoreError>>, Vec<u8>) {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let recorder = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            // Record whatever arrives on any connection until the test says it is done.
            while rx.try_recv().is_err() {
                match listener.accept() {
                    Ok((mut socket, _)) => {
                        socket.set_nonblocking(false).unwrap();
                        socket
                            .set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        if let Ok(n) = socket.read(&mut buf) {
                            got.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            got
        });
        let mut results = Vec::new();
        for url in urls {
            let store = RedisStore::builder(&url.replace("{port}", &port))
                .connect_timeout(Duration::from_millis(300))
                .connect()
                .await;
            results.push(store);
        }
        // Give a connection made in the background time to send its first bytes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(()).unwrap();
        (results, recorder.join().unwrap())
    }

    const TLS_URLS: [&str; 3] = [
        "rediss://user:pw@127.0.0.1:{port}/0",
        "rediss-cluster://user:pw@127.0.0.1:{port}",
        "valkeys://:pw@127.0.0.1:{port}/0",
    ];

    #[cfg(not(feature = "redis-tls"))]
    #[tokio::test]
    async fn a_tls_url_without_tls_is_refused_before_a_byte_is_sent() {
        let (results, received) = connect_to_listener(&TLS_URLS).await;
        assert!(
            received.is_empty(),
            "sent in plaintext: {:?}",
            String::from_utf8_lossy(&received)
        );
        for result in results {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Config);
            let message = err.to_string();
            assert!(message.contains("url:"), "{message}");
            assert!(message.contains("`redis-tls`"), "{message}");
            assert!(!message.contains("pw@"), "{message}");
        }
    }

    #[cfg(feature = "redis-tls")]
    #[tokio::test]
    async fn a_tls_url_sends_a_tls_client_hello_first() {
        let (_, received) = connect_to_listener(&TLS_URLS[..1]).await;
        // A TLS record of type handshake (22), never a RESP command such as `AUTH`.
        assert_eq!(received.first(), Some(&0x16), "{received:?}");
        let text = String::from_utf8_lossy(&received).to_ascii_uppercase();
        assert!(!text.contains("AUTH") && !text.contains("HELLO"), "{text}");
    }
}
