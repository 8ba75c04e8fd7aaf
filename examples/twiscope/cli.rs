//! The command line: flags, their environment fallbacks, and the usage text. No parser
//! dependency; five flags do not need one.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const USAGE: &str = "\
twiscope: a social-analytics API cached with tower-response-cache

Usage: twiscope [--listen ADDR] [--cache URL] [--db PATH]

Options:
  --listen ADDR   where to listen (env TWISCOPE_LISTEN; default 127.0.0.1:3000);
                  port 0 picks a free port, and the start-up line names it
  --cache URL     the response cache (env CACHE_URL; default memory):
                    memory   the embedded in-memory store
                    off      no cache layers at all (the uncached origin)
                    redis://HOST[:PORT][/DB], rediss://…, redis-cluster://…
                             a shared Redis store (fails open: Redis down = misses)
  --db PATH       a SQLite file shared by every twiscope given the same PATH (env TWISCOPE_DB):
                  WAL mode, created and seeded on first start when empty, never re-seeded;
                  default: a private in-memory database, seeded at every start
  -h, --help      print this help

Environment: CACHE_INVALIDATION_POLL_MS (default 1000) is how often a twiscope on Redis looks
for the invalidations of the others sharing it: a POST to one shows in every other within it.

On Redis, /trending and /influencers/{platform} are computed once for the whole fleet: the
twiscope about to run the query takes a 5 s lease in Redis and the others wait for its answer
(at most 5 s, then they run it themselves; a crashed holder's lease expires on its own). Past
its TTL an entry is still served, stale, for up to one more TTL while a single refresh runs
(stale-while-revalidate), so no request waits for the query at expiry. On memory, concurrent
misses are coalesced within the process and an expired entry is recomputed on demand.

Testing: TWISCOPE_QUERY_DELAY_MS adds that long to each /trending and /influencers query;
TWISCOPE_TRENDING_TTL_MS and TWISCOPE_INFLUENCERS_TTL_MS override their TTLs; TWISCOPE_SWR=0
turns stale-while-revalidate off.

Logging: warnings (Redis unreachable, circuit breaker open) and the breaker's recovery go to
stderr; RUST_LOG overrides the default filter 'warn,tower_response_cache=info'.

Routes:
  GET  /trending                     top 20 hashtags; cached 15 min
  GET  /influencers/{platform}?limit=N
                                     top N (1..=100, default 10) by engagement; cached 60 s
  GET  /platforms/{platform}/stats   localised by Accept-Language (en, es, fr, de); cached 10 min
  GET  /platforms/{platform}         an HTML page, rendered per request: the stats panel (cached
                                     10 min as a fragment) and the top 5 (a value cached 60 s)
  GET  /me                           Authorization: Bearer token-<id>, or X-Api-Key: key-<id>;
                                     never cached
  POST /influencers/{platform}       {\"username\": \"…\", \"engagement\": N} records a post, creating
                                     the influencer if new; optional \"display_name\", \"followers\";
                                     invalidates everything cached of the platform (its tag
                                     platform:{platform}), in every twiscope sharing the cache
  GET  /metrics                      Prometheus text (metrics-exporter-prometheus)

Platforms: twitter, mastodon, bluesky.
";

/// The settings the server starts with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    pub(crate) listen: String,
    /// The `--cache` value as given (printed, redacted, in the start-up line).
    pub(crate) cache: String,
    /// What `cache` names.
    pub(crate) store: Store,
    /// The shared SQLite file, or `None` for a private in-memory database.
    pub(crate) db: Option<PathBuf>,
    /// Fraction of the default data set to seed. Hidden (tests seed small to start fast).
    pub(crate) scale: f64,
    /// The environment-only settings of tests and benchmarks.
    pub(crate) knobs: Knobs,
}

/// Settings for tests and benchmarks, from the environment only (the usage text's "Testing"
/// line): they make the expensive routes expensive and short-lived enough that a stampede or
/// an expiry happens within a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Knobs {
    /// Slept before each `/trending` and `/influencers` query: a simulated aggregation cost.
    pub(crate) query_delay: Duration,
    /// Overrides the `/trending` TTL.
    pub(crate) trending_ttl: Option<Duration>,
    /// Overrides the `/influencers/{platform}` TTL.
    pub(crate) influencers_ttl: Option<Duration>,
    /// Stale-while-revalidate on Redis; off (`TWISCOPE_SWR=0`) only for the benchmark's
    /// baseline.
    pub(crate) swr: bool,
}

impl Knobs {
    /// The knobs `env` sets; a malformed value is an error naming its variable.
    fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, UsageError> {
        // A TTL of a whole day is far past any test; a delay of a minute past any query.
        const TTL_MS: RangeInclusive<u64> = 1..=86_400_000;
        let swr = match env("TWISCOPE_SWR").filter(|v| !v.is_empty()).as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(UsageError(format!(
                    "TWISCOPE_SWR must be 0 or 1, got '{other}'"
                )))
            }
        };
        Ok(Self {
            query_delay: millis(env, "TWISCOPE_QUERY_DELAY_MS", 0..=60_000)?.unwrap_or_default(),
            trending_ttl: millis(env, "TWISCOPE_TRENDING_TTL_MS", TTL_MS)?,
            influencers_ttl: millis(env, "TWISCOPE_INFLUENCERS_TTL_MS", TTL_MS)?,
            swr,
        })
    }

    /// The knobs that differ from the defaults, for the start-up diagnostics; empty if none.
    pub(crate) fn describe(&self) -> String {
        let mut set = Vec::new();
        if !self.query_delay.is_zero() {
            set.push(format!("query delay {:?}", self.query_delay));
        }
        if let Some(ttl) = self.trending_ttl {
            set.push(format!("/trending TTL {ttl:?}"));
        }
        if let Some(ttl) = self.influencers_ttl {
            set.push(format!("/influencers TTL {ttl:?}"));
        }
        if !self.swr {
            set.push("stale-while-revalidate off".to_owned());
        }
        set.join(", ")
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            query_delay: Duration::ZERO,
            trending_ttl: None,
            influencers_ttl: None,
            swr: true,
        }
    }
}

/// The variable `name` read by `env` as milliseconds within `range`; `None` when unset or empty.
fn millis(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    range: RangeInclusive<u64>,
) -> Result<Option<Duration>, UsageError> {
    let Some(value) = env(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<u64>()
        .ok()
        .filter(|ms| range.contains(ms))
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            UsageError(format!(
                "{name} must be a whole number of milliseconds from {} to {}, got '{value}'",
                range.start(),
                range.end()
            ))
        })
}

/// The cache a `--cache` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    Off,
    Memory,
    /// A Redis URL, handed to `RedisStore` (which validates the rest of it).
    Redis,
}

impl Store {
    /// What `value` names; only the exact forms the usage text lists are accepted, so a typo
    /// (`memory://x`, `off://`, `Memory`) is an error rather than a silently different cache.
    pub(crate) fn parse(value: &str) -> Result<Self, UsageError> {
        match value {
            "off" => return Ok(Self::Off),
            "memory" => return Ok(Self::Memory),
            _ => {}
        }
        match value.split_once("://") {
            Some(("redis" | "rediss" | "redis-cluster" | "rediss-cluster", rest))
                if !rest.is_empty() =>
            {
                Ok(Self::Redis)
            }
            _ => Err(UsageError(format!(
                "--cache '{}' is not a cache (expected exactly memory, off, \
                 redis://HOST[:PORT][/DB], rediss://… or redis-cluster://…)",
                tower_response_cache::redact_url(value)
            ))),
        }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    Run(Options),
    Help,
}

/// A usage error: the process prints it with a hint and exits with status 2.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `args` (without the program name); `env` reads an environment variable. Flags win
/// over the environment.
pub(crate) fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    let mut listen = None;
    let mut cache = None;
    let mut scale = None;
    let mut db = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => &mut listen,
            "--cache" => &mut cache,
            "--scale" => &mut scale,
            "--db" => &mut db,
            _ if flag.starts_with('-') => {
                return Err(UsageError(format!("unknown flag '{flag}'")));
            }
            _ => return Err(UsageError(format!("unexpected argument '{arg}'"))),
        };
        let value = match inline {
            Some(v) => v.to_owned(),
            None => args
                .next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| UsageError(format!("flag '{flag}' needs a value")))?,
        };
        if value.is_empty() {
            return Err(UsageError(format!("flag '{flag}' needs a value")));
        }
        *slot = Some(value);
    }

    let listen = listen
        .or_else(|| env("TWISCOPE_LISTEN").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let cache = cache
        .or_else(|| env("CACHE_URL").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "memory".to_owned());
    let store = Store::parse(&cache)?;
    let db = db
        .or_else(|| env("TWISCOPE_DB").filter(|v| !v.is_empty()))
        .map(PathBuf::from);
    let scale = match scale.or_else(|| env("TWISCOPE_SCALE").filter(|v| !v.is_empty())) {
        None => 1.0,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|f| *f > 0.0 && *f <= 1.0)
            .ok_or_else(|| {
                UsageError(format!(
                    "--scale (or TWISCOPE_SCALE) must be a number in (0, 1], got '{s}'"
                ))
            })?,
    };
    let knobs = Knobs::from_env(&env)?;
    Ok(Command::Run(Options {
        listen,
        cache,
        store,
        db,
        scale,
        knobs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, UsageError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(args.iter().map(|a| (*a).to_owned()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_env_and_flags() {
        let Ok(Command::Run(o)) = run(&[], &[]) else {
            panic!()
        };
        assert_eq!(
            (o.listen.as_str(), o.cache.as_str()),
            ("127.0.0.1:3000", "memory")
        );
        let Ok(Command::Run(o)) = run(&[], &[("CACHE_URL", "off"), ("TWISCOPE_LISTEN", ":1")])
        else {
            panic!()
        };
        assert_eq!((o.listen.as_str(), o.cache.as_str()), (":1", "off"));
        let Ok(Command::Run(o)) = run(
            &["--cache=memory", "--listen", "0.0.0.0:0"],
            &[("CACHE_URL", "off")],
        ) else {
            panic!()
        };
        assert_eq!(
            (o.listen.as_str(), o.cache.as_str()),
            ("0.0.0.0:0", "memory")
        );
    }

    #[test]
    fn db_from_flag_or_env() {
        let Ok(Command::Run(o)) = run(&[], &[]) else {
            panic!()
        };
        assert_eq!(o.db, None, "in memory by default");
        let Ok(Command::Run(o)) = run(&[], &[("TWISCOPE_DB", "/tmp/a.db")]) else {
            panic!()
        };
        assert_eq!(o.db, Some(PathBuf::from("/tmp/a.db")));
        let Ok(Command::Run(o)) = run(&["--db=b.db"], &[("TWISCOPE_DB", "/tmp/a.db")]) else {
            panic!()
        };
        assert_eq!(o.db, Some(PathBuf::from("b.db")));
        assert!(run(&["--db"], &[]).unwrap_err().0.contains("--db"));
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(run(&["--bogus"], &[]).unwrap_err().0.contains("--bogus"));
        assert!(run(&["--listen"], &[]).unwrap_err().0.contains("--listen"));
        assert!(run(&["--cache", "--listen", "x"], &[])
            .unwrap_err()
            .0
            .contains("--cache"));
        assert!(run(&["--scale", "2"], &[])
            .unwrap_err()
            .0
            .contains("--scale"));
        assert_eq!(run(&["-h"], &[]), Ok(Command::Help));
    }

    #[test]
    fn testing_knobs_from_the_environment() {
        let Ok(Command::Run(o)) = run(&[], &[]) else {
            panic!()
        };
        assert_eq!(o.knobs, Knobs::default());
        assert_eq!(o.knobs.describe(), "");
        let Ok(Command::Run(o)) = run(
            &[],
            &[
                ("TWISCOPE_QUERY_DELAY_MS", "300"),
                ("TWISCOPE_TRENDING_TTL_MS", "2000"),
                ("TWISCOPE_INFLUENCERS_TTL_MS", "1"),
                ("TWISCOPE_SWR", "0"),
            ],
        ) else {
            panic!()
        };
        assert_eq!(
            o.knobs,
            Knobs {
                query_delay: Duration::from_millis(300),
                trending_ttl: Some(Duration::from_secs(2)),
                influencers_ttl: Some(Duration::from_millis(1)),
                swr: false,
            }
        );
        assert_eq!(
            o.knobs.describe(),
            "query delay 300ms, /trending TTL 2s, /influencers TTL 1ms, \
             stale-while-revalidate off"
        );
        for (name, value) in [
            ("TWISCOPE_QUERY_DELAY_MS", "-1"),
            ("TWISCOPE_QUERY_DELAY_MS", "60001"),
            ("TWISCOPE_QUERY_DELAY_MS", "0.5"),
            ("TWISCOPE_TRENDING_TTL_MS", "0"),
            ("TWISCOPE_TRENDING_TTL_MS", "2s"),
            ("TWISCOPE_INFLUENCERS_TTL_MS", "86400001"),
            ("TWISCOPE_SWR", "no"),
        ] {
            let e = run(&[], &[(name, value)]).unwrap_err().0;
            assert!(e.contains(name) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn only_the_exact_cache_forms_are_accepted() {
        for (value, store) in [
            ("off", Store::Off),
            ("memory", Store::Memory),
            ("redis://127.0.0.1:6379/0", Store::Redis),
            ("rediss://:pw@h:6380", Store::Redis),
            ("redis-cluster://h:7000?node=h:7001", Store::Redis),
        ] {
            let Ok(Command::Run(o)) = run(&["--cache", value], &[]) else {
                panic!("{value}")
            };
            assert_eq!(o.store, store, "{value}");
        }
        for value in [
            "memory://x",
            "off://",
            "Memory",
            " off",
            "redis://",
            "memcached://x",
            "redis:/h",
        ] {
            let e = run(&["--cache", value], &[]).unwrap_err().0;
            assert!(
                e.contains("--cache") && e.contains("expected exactly"),
                "{e}"
            );
            // The environment is held to the same forms.
            assert!(run(&[], &[("CACHE_URL", value)]).is_err(), "{value}");
        }
        let e = run(&["--cache", "mem://u:secret@h"], &[]).unwrap_err().0;
        assert!(!e.contains("secret"), "{e}");
    }
}
