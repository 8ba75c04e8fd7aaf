//! twiscope: a small social-analytics API over SQLite, cached with tower-response-cache the way
//! Django's caching guide caches views.
//!
//! ```text
//! cargo run --release --example twiscope -- --listen 127.0.0.1:3000 --cache memory
//! cargo run --release --example twiscope -- --listen 127.0.0.1:3001 --db /tmp/twiscope.db
//! curl -i localhost:3000/trending                      # miss, then a hit for 15 min
//! curl -i 'localhost:3000/influencers/twitter?limit=5' # keyed on `limit` only
//! curl -i -H 'Accept-Language: es' localhost:3000/platforms/twitter/stats
//! curl -i -H 'Authorization: Bearer token-42' localhost:3000/me   # never cached
//! curl -i -H 'X-Api-Key: key-42' localhost:3000/me                # the same, by API key
//! curl -i -X POST -H 'content-type: application/json' \
//!      -d '{"username":"ada","engagement":7}' localhost:3000/influencers/mastodon
//! curl -i localhost:3000/platforms/mastodon            # HTML: stats and the top 5
//! curl -s localhost:3000/metrics                       # cache outcomes per route, SQL count
//! ```
//!
//! The database is seeded deterministically (10 000 influencers, 200 000 posts with their
//! hashtags), so responses are identical run to run and the aggregations cost real
//! milliseconds. It is in memory, or with `--db PATH` a SQLite file that every twiscope given
//! the same path shares (seeded by the first start). `--cache off` serves the same API with no
//! cache layer, for comparison.

mod cli;
mod db;
mod i18n;
mod metrics;
mod page;
mod record;
mod routes;
mod seed;

use std::io::Write as _;
use std::net::ToSocketAddrs as _;
use std::process::ExitCode;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusBuilder;
use tower_response_cache::{redact_url, CacheConfig, ResponseCache};
use tracing_subscriber::filter::Targets;

use crate::cli::{Command, Options, Store, UsageError};
use crate::db::{Db, Opened};

fn main() -> ExitCode {
    init_logging();
    let options = match cli::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twiscope: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(options))
}

/// Sends the crate's log events to stderr (stdout carries only the start-up line): warnings
/// such as "Redis is not reachable" or "circuit breaker open" are what an operator must see.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // `Targets` reads the `target=level` directives `RUST_LOG` is written in, without the regex
    // engine `EnvFilter` brings (a third of a cold build's extra crates).
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("twiscope: ignoring RUST_LOG ({e}); using {DEFAULT_LOG_FILTER}");
            default_filter()
        }),
        Err(_) => default_filter(),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}

fn default_filter() -> Targets {
    DEFAULT_LOG_FILTER.parse().unwrap_or_default()
}

/// Warnings from everything, and the crate's recoveries (the breaker closing) too.
const DEFAULT_LOG_FILTER: &str = "warn,tower_response_cache=info";

fn usage_error(e: &UsageError) -> ExitCode {
    eprintln!("twiscope: {e}\nTry 'twiscope --help'.");
    ExitCode::from(2)
}

async fn run(options: Options) -> ExitCode {
    // Installed before the cache is built: the cache binds a route's metric handles to the
    // recorder installed when it first sees the route, and describes its metrics at build.
    let prometheus = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("twiscope: cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    metrics::describe();
    let cache = match open_cache(options.store, &options.cache).await {
        Ok(cache) => cache,
        Err(e) => return usage_error(&e),
    };
    if options.listen.to_socket_addrs().is_err() {
        return usage_error(&UsageError(format!(
            "--listen '{}' is not an address (expected HOST:PORT, e.g. 127.0.0.1:3000)",
            options.listen
        )));
    }
    // Bind before seeding: a busy port fails at once, not after the seed.
    let listener = match tokio::net::TcpListener::bind(&options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("twiscope: --listen {}: cannot listen: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let (scale, path) = (options.scale, options.db.clone());
    let started = Instant::now();
    let where_ = options.db.as_ref().map_or_else(
        || "the in-memory database".to_owned(),
        |p| p.display().to_string(),
    );
    let db = match tokio::task::spawn_blocking(move || Db::open(path.as_deref(), scale)).await {
        Ok(Ok((db, opened))) => {
            // A diagnostic on stderr; stdout carries only the start-up line.
            match opened {
                Opened::Seeded(stats) => eprintln!(
                    "twiscope: seeded {where_}: {} influencers, {} posts, {} post hashtags in {:.2?}",
                    stats.influencers,
                    stats.posts,
                    stats.post_tags,
                    started.elapsed()
                ),
                Opened::Existing { influencers, posts } => eprintln!(
                    "twiscope: opened {where_}, already seeded: {influencers} influencers, \
                     {posts} posts"
                ),
            }
            db
        }
        Ok(Err(e)) => {
            eprintln!("twiscope: cannot open {where_}: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("twiscope: seeding failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("twiscope: cannot read the bound address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let expensive = routes::Expensive::new(options.store, &options.knobs);
    if let Some(what) = expensive.describe() {
        eprintln!("twiscope: {what}");
    }
    let knobs = options.knobs.describe();
    if !knobs.is_empty() {
        eprintln!("twiscope: testing: {knobs}");
    }
    // The one start-up line; tests and load scripts parse the address out of it.
    println!(
        "twiscope listening on http://{addr} (cache: {})",
        redact_url(&options.cache)
    );
    let _ = std::io::stdout().flush();

    let app = routes::app(db, cache, prometheus, expensive, options.knobs.query_delay);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("twiscope: server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The cache `store` (parsed from the `--cache` value `url`) names; `None` for `off`.
///
/// Built through `CacheConfig`, as an app configured from a file or the environment would be:
/// a 128 MiB memory store, or Redis with the crate's timeouts and breaker. Fail-open: if Redis
/// is down now, the store starts anyway (with a warning on stderr) and connects later.
async fn open_cache(store: Store, url: &str) -> Result<Option<ResponseCache>, UsageError> {
    let mut config = CacheConfig::default();
    match store {
        Store::Off => return Ok(None),
        Store::Memory => {}
        Store::Redis => config.url = url.to_owned(),
    }
    config.key_prefix = "twiscope".to_owned();
    config.default_ttl_secs = 300;
    // How soon a write in another twiscope on the same Redis shows here (the crate's default 1 s
    // unless set); read and checked as `CacheConfig::from_env("CACHE")` reads it.
    let poll = std::env::vars().filter(|(k, _)| k == POLL_VAR);
    config.invalidation_poll_ms = CacheConfig::from_vars("CACHE", poll)
        .map_err(|e| UsageError(e.to_string()))?
        .invalidation_poll_ms;
    let builder = config
        .cache_builder()
        .await
        .map_err(|e| UsageError(format!("--cache {}: {e}", redact_url(url))))?;
    Ok(Some(
        builder
            .name("twiscope")
            // `twiscope_cache_hits_total{route="/trending"}` and the rest of the crate's table.
            .metrics_namespace("twiscope")
            // `/me` also takes `X-Api-Key`, a credential the cache cannot know about: declare
            // it, so no layer ever stores or serves a response to a keyed request.
            .bypass_when("api-key", |req| req.headers.contains_key("x-api-key"))
            .build(),
    ))
}

/// The variable that sets how often a Redis-backed twiscope looks for other processes'
/// invalidations, in milliseconds.
const POLL_VAR: &str = "CACHE_INVALIDATION_POLL_MS";

/// Resolves on Ctrl-C (or SIGTERM on Unix), for a graceful shutdown.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
