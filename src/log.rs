//! Rate-limited logging: when a store fails, it fails for every request; one line a second,
//! with a count of what was left out, says as much without flooding the log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lets one message through per wall-clock second and counts the rest.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub(crate) const fn new() -> Self {
        Self {
            last_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Runs `emit` unless something was logged this second; it gets how many were skipped.
    pub(crate) fn log(&self, emit: impl FnOnce(u64)) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_second.load(Relaxed);
        if now != last
            && self
                .last_second
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            emit(self.suppressed.swap(0, Relaxed));
        } else {
            self.suppressed.fetch_add(1, Relaxed);
        }
    }
}

/// Logs at most one store error a second, saying how many were not logged. Takes any error, so
/// the stores, which log through [`RateLimit`], do not make this module depend on them.
pub(crate) fn log_store_error(e: &impl std::fmt::Display) {
    static LIMIT: RateLimit = RateLimit::new();
    LIMIT.log(|suppressed| {
        tracing::warn!(error = %e, suppressed, "cache store failed; serving from the handler");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_a_second_and_the_rest_counted() {
        let limit = RateLimit::new();
        let mut emitted = Vec::new();
        for _ in 0..5 {
            limit.log(|skipped| emitted.push(skipped));
        }
        // All five calls fall within a second or two of each other.
        assert!(!emitted.is_empty() && emitted.len() <= 2, "{emitted:?}");
        assert_eq!(emitted[0], 0);
        let suppressed = limit.suppressed.load(Relaxed);
        assert_eq!(
            suppressed + emitted.len() as u64 + emitted.iter().sum::<u64>(),
            5
        );
    }
}
