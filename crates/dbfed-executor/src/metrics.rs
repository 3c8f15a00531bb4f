//! Counters and histograms of an executor, read as a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the histogram buckets (the last bucket is unbounded).
const BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Default)]
struct HistogramInner {
    buckets: [u64; BOUNDS_MICROS.len() + 1],
    count: u64,
    sum_micros: u128,
    max_micros: u64,
}

/// A latency histogram with fixed buckets from 100 µs to 10 s.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    inner: Mutex<HistogramInner>,
}

impl Histogram {
    pub fn record(&self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let index = BOUNDS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(BOUNDS_MICROS.len());
        let mut inner = self.inner.lock();
        inner.buckets[index] += 1;
        inner.count += 1;
        inner.sum_micros += u128::from(micros);
        inner.max_micros = inner.max_micros.max(micros);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let inner = self.inner.lock();
        let mut buckets: Vec<(Option<Duration>, u64)> = BOUNDS_MICROS
            .iter()
            .map(|&b| Some(Duration::from_micros(b)))
            .zip(inner.buckets.iter().copied())
            .collect();
        buckets.push((None, inner.buckets[BOUNDS_MICROS.len()]));
        HistogramSnapshot {
            count: inner.count,
            sum: Duration::from_micros(u64::try_from(inner.sum_micros).unwrap_or(u64::MAX)),
            max: Duration::from_micros(inner.max_micros),
            buckets,
        }
    }
}

/// A point-in-time copy of a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Values recorded.
    pub count: u64,
    /// Sum of the values.
    pub sum: Duration,
    /// Largest value.
    pub max: Duration,
    /// `(upper bound, count)` per bucket; the last bucket (`None`) is unbounded.
    pub buckets: Vec<(Option<Duration>, u64)>,
}

impl HistogramSnapshot {
    /// Mean value, zero when empty.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.sum / u32::try_from(self.count).unwrap_or(u32::MAX)
        }
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the bound of the bucket holding it
    /// (the maximum for the last bucket).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bound, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return bound.map_or(self.max, |b| b.min(self.max));
            }
        }
        self.max
    }
}

/// Live counters, shared by the executor's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub overloaded: AtomicU64,
    pub queue_timeouts: AtomicU64,
    pub pool_timeouts: AtomicU64,
    pub cancellations: AtomicU64,
    pub parks: AtomicU64,
    pub panics: AtomicU64,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub starved: AtomicU64,
    pub running: AtomicU64,
    pub peak_running: AtomicU64,
    pub peak_polling: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub sessions_discarded: AtomicU64,
    pub queue_wait: Histogram,
    pub checkout_wait: Histogram,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn start_running(&self) {
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_running.fetch_max(now, Ordering::AcqRel);
    }

    pub fn stop_running(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A point-in-time view of an [`Executor`](crate::Executor)'s state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Worker threads.
    pub threads: usize,
    /// Queries a worker is running now.
    pub running: u64,
    /// Most queries running at once so far.
    pub peak_running: u64,
    /// Queries waiting in the admission queue now.
    pub queued: usize,
    /// Statements running on the warehouse without a worker (submit-and-poll mode).
    pub polling: usize,
    /// Most statements polled at once so far.
    pub peak_polling: u64,
    /// Sessions checked out now.
    pub pool_in_use: usize,
    /// Idle sessions in the pool now.
    pub pool_idle: usize,
    /// Open sessions beyond `pool_size` now.
    pub pool_overflow: usize,
    /// Queries admitted to the queue.
    pub submitted: u64,
    /// Queries whose stream ended without error.
    pub completed: u64,
    /// Queries that ended with an error (other than a cancellation).
    pub failed: u64,
    /// Queries rejected because the queue was full.
    pub overloaded: u64,
    /// Queries that timed out in the queue.
    pub queue_timeouts: u64,
    /// Queries that timed out waiting for a session.
    pub pool_timeouts: u64,
    /// Queries canceled (stream or future dropped early).
    pub cancellations: u64,
    /// Results waiting for their slow consumer without a worker now (see
    /// `ExecutorBuilder::max_parked`).
    pub parked: usize,
    /// Times a result parked so far.
    pub parks: u64,
    /// Driver panics caught.
    pub panics: u64,
    /// Rows delivered to streams.
    pub rows: u64,
    /// Bytes (Arrow memory size of the batches) delivered to streams.
    pub bytes: u64,
    /// Queries that waited in the queue longer than the starvation threshold.
    pub starved: u64,
    /// Requests the driver retried after transient failures (429, 503, resets, ...).
    pub retries: u64,
    /// Bytes the driver received from the server (for Databricks: API answers and result
    /// downloads as they arrive, compressed as on the wire).
    pub bytes_received: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed (returned overflow, recycled, shutdown).
    pub sessions_closed: u64,
    /// Sessions discarded as broken (failed pre-ping, broken connection, panic).
    pub sessions_discarded: u64,
    /// Time queries spent in the admission queue.
    pub queue_wait: HistogramSnapshot,
    /// Time workers waited to check out a session (including connecting and pre-ping).
    pub checkout_wait: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_buckets() {
        let h = Histogram::default();
        for ms in [1, 2, 3, 40, 900] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.max, Duration::from_millis(900));
        assert_eq!(s.quantile(0.2), Duration::from_millis(1));
        assert_eq!(s.quantile(0.6), Duration::from_micros(5_000));
        assert_eq!(s.quantile(1.0), Duration::from_millis(900));
        assert_eq!(s.mean(), Duration::from_micros(189_200));
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
    }
}
