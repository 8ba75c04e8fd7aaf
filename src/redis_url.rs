//! Redis URLs as the Redis store and the configuration read them: which schemes are Redis, which
//! ask for TLS, and how to print one without its password.

/// Whether `url` has a scheme the Redis store understands.
pub(crate) fn is_redis_url(url: &str) -> bool {
    let Some((scheme, _)) = url.split_once("://") else {
        return false;
    };
    matches!(
        scheme,
        "redis" | "rediss" | "redis-cluster" | "rediss-cluster" | "valkey" | "valkeys"
    )
}

/// Whether `url` asks for TLS to Redis (`rediss://`, `rediss-cluster://`, `valkeys://`), as fred
/// reads the scheme.
pub(crate) fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        let scheme = scheme.to_ascii_lowercase();
        scheme.starts_with("rediss") || scheme.starts_with("valkeys")
    })
}

/// Why a TLS URL is refused by a build without TLS, or `None` when it can be honoured.
///
/// Without one of its TLS features fred connects to a `rediss://` URL in plaintext and sends the
/// password and every key in clear; a URL asking for TLS must never end up there.
pub(crate) fn tls_unavailable(url: &str) -> Option<String> {
    (is_tls_url(url) && !cfg!(feature = "redis-tls")).then(|| {
        format!(
            "{} asks for TLS, which this build cannot do: enable the `redis-tls` feature \
             (refusing to connect in plaintext)",
            redact(url)
        )
    })
}

/// The URL without its password, for messages.
pub(crate) use crate::redact::redact_url as redact;

/// The default number of Redis connections: one per CPU this process may run on, at most 4.
///
/// fred pipelines the commands of concurrent requests on a connection, so fewer connections
/// carry more commands per write: on one CPU a single connection served Redis hits about 1.1x
/// as fast as four (BENCHMARKS.md, "Against the other crates"). More CPUs get more
/// connections, so one connection's writer does not become the bottleneck.
pub(crate) fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
