//! When and how long to retry, as the official Databricks clients do.
//!
//! - Never retried: 400, 401, 403, 404, 405, 409-416, 501 (a 401 gets one retry after
//!   [`crate::auth::AuthProvider::invalidate`], handled by the client).
//! - Execute (`POST /api/2.0/sql/statements`, not idempotent): 429 always, 503 only with a
//!   `Retry-After` header; nothing else, not even connection errors.
//! - Every other call (idempotent): 429, any 5xx except 501, connection errors and I/O timeouts.
//! - Delay: the `Retry-After` header (seconds or HTTP date) clamped to
//!   [`RetryPolicy::retry_after_bounds`]; otherwise exponential backoff from
//!   [`RetryPolicy::base_delay`] doubling up to [`RetryPolicy::max_delay`], with full jitter in
//!   the upper half.
//! - Bounded both by [`RetryPolicy::max_attempts`] and [`RetryPolicy::max_elapsed`].

use std::time::{Duration, SystemTime};

/// Retry limits and delays. The defaults follow the official clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    base_delay: Duration,
    max_delay: Duration,
    retry_after_min: Duration,
    retry_after_max: Duration,
}

impl Default for RetryPolicy {
    /// 30 attempts, 900 s in total, backoff 1 s doubling to 60 s, `Retry-After` clamped to
    /// [1 s, 60 s].
    fn default() -> Self {
        Self {
            max_attempts: 30,
            max_elapsed: Duration::from_secs(900),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Total attempts per request, the first included (default 30; at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Total time budget for one request and its retries (default 900 s); no retry is started
    /// whose delay would end past it.
    pub fn max_elapsed(mut self, budget: Duration) -> Self {
        self.max_elapsed = budget;
        self
    }

    /// First backoff delay (default 1 s); it doubles on every retry.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Maximum backoff delay (default 60 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Bounds a server's `Retry-After` is clamped to (default [1 s, 60 s]).
    pub fn retry_after_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.retry_after_min = min.min(max);
        self.retry_after_max = max;
        self
    }

    /// The configured number of attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured total time budget.
    pub fn elapsed_budget(&self) -> Duration {
        self.max_elapsed
    }

    /// The delay before retry number `retry` (1 for the first retry), given the server's
    /// `Retry-After` if any.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(server) = retry_after {
            return server.clamp(self.retry_after_min, self.retry_after_max);
        }
        let exp = retry.saturating_sub(1).min(30);
        let backoff = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        // Jitter in [backoff/2, backoff]: spreads synchronized clients, never waits longer.
        let half = backoff / 2;
        let jitter_nanos = half.as_nanos().min(u64::MAX as u128) as u64;
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            rand::random_range(0..=jitter_nanos)
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Whether a request answered with `status` may be retried.
///
/// `idempotent` is false only for execute; `has_retry_after` tells whether the answer carried a
/// `Retry-After` header.
pub fn is_retryable_status(status: u16, idempotent: bool, has_retry_after: bool) -> bool {
    match status {
        400 | 401 | 403 | 404 | 405 | 409..=416 | 501 => false,
        429 => true,
        503 => idempotent || has_retry_after,
        500..=599 => idempotent,
        _ => false,
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_retried_statuses() {
        for s in [400, 401, 403, 404, 405, 409, 410, 412, 415, 416, 501] {
            assert!(!is_retryable_status(s, true, true), "{s}");
            assert!(!is_retryable_status(s, false, true), "{s}");
        }
    }

    #[test]
    fn execute_retries_only_429_and_503_with_retry_after() {
        assert!(is_retryable_status(429, false, false));
        assert!(is_retryable_status(429, false, true));
        assert!(is_retryable_status(503, false, true));
        assert!(!is_retryable_status(503, false, false));
        assert!(!is_retryable_status(500, false, true));
        assert!(!is_retryable_status(502, false, false));
        assert!(!is_retryable_status(504, false, false));
    }

    #[test]
    fn idempotent_calls_retry_5xx() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s, true, false), "{s}");
        }
        assert!(!is_retryable_status(200, true, false));
        assert!(!is_retryable_status(302, true, false));
        assert!(!is_retryable_status(408, true, false));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn retry_after_is_clamped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, Some(Duration::ZERO)), Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 1..=40 {
            let expected = Duration::from_secs(1)
                .saturating_mul(1u32 << (retry - 1).min(30))
                .min(Duration::from_secs(60));
            let d = p.delay(retry, None);
            assert!(d <= expected && d >= expected / 2, "retry {retry}: {d:?}");
        }
        let fast = RetryPolicy::default()
            .base_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(40));
        assert!(fast.delay(10, None) <= Duration::from_millis(40));
        assert_eq!(RetryPolicy::none().attempts(), 1);
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
    }
}
