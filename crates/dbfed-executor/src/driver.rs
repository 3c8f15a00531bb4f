//! The synchronous driver abstraction the executor runs on its worker threads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatchReader;
use dbfed_databricks::Param;
use parking_lot::{Condvar, Mutex};

use crate::error::DriverError;

/// Opens [`Connection`]s (sessions) to a database. Called on the executor's worker threads.
pub trait Driver: Send + Sync + 'static {
    /// Opens a new connection (for Databricks: creates a SQL session).
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError>;

    /// Requests the driver retried after transient failures so far (reported in the
    /// executor's metrics). Default: 0, for drivers that do not retry or do not count.
    fn retries(&self) -> u64 {
        0
    }

    /// Bytes the driver received from the server so far (reported in the executor's metrics).
    /// Default: 0, for drivers that do not count.
    fn bytes_received(&self) -> u64 {
        0
    }
}

/// One blocking connection (session). The executor uses it from one worker thread at a time.
pub trait Connection: Send + 'static {
    /// Runs `sql` with `params` and returns a reader over its result once the statement has
    /// a result. While waiting, implementations should watch `cancel` (e.g. with
    /// [`CancelToken::wait_timeout`] between polls) and cancel the statement on the server when
    /// it fires, returning an error.
    fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Execution, DriverError>;

    /// Submits `sql` without waiting for it to finish (submit-and-poll mode): the returned
    /// [`PendingStatement`] is then polled by the executor's poller thread. The default runs
    /// [`Connection::execute`], i.e. waits on the calling worker.
    fn submit(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Submitted, DriverError> {
        self.execute(sql, params, cancel).map(Submitted::Ready)
    }

    /// Checks that the connection still works (SQLAlchemy's `pre_ping`).
    fn ping(&mut self) -> Result<(), DriverError>;

    /// Closes the connection on the server.
    fn close(self: Box<Self>) -> Result<(), DriverError>;
}

/// What [`Connection::submit`] returns.
#[derive(Debug)]
pub enum Submitted {
    /// The statement already has a result.
    Ready(Execution),
    /// The statement runs on the server: poll it.
    Pending(Box<dyn PendingStatement>),
}

/// A statement submitted with [`Connection::submit`] that has not finished yet. It no longer
/// needs its connection: the executor returns the session to the pool while it runs.
pub trait PendingStatement: Send + fmt::Debug + 'static {
    /// Checks the statement once, without waiting, on the poller thread: `Ok(true)` once it
    /// finished (successfully or not), `Ok(false)` while it runs.
    fn poll(&mut self) -> Result<bool, DriverError>;

    /// Opens the result of a finished statement, on a worker thread (downloads start here);
    /// a statement that failed returns its error.
    fn open(self: Box<Self>) -> Result<Execution, DriverError>;

    /// Cancels the statement on the server (best effort; errors are the driver's to log).
    fn cancel(&mut self);

    /// The server's statement id, if any.
    fn statement_id(&self) -> Option<&str> {
        None
    }

    /// Whether the last [`poll`](Self::poll) saw the statement executing (out of the server's
    /// queue). The poller restarts its back-off when this turns true, so a statement that
    /// queued for long is still noticed soon after it finishes. Default: `false` (no restart).
    fn executing(&self) -> bool {
        false
    }
}

/// A running statement's result as returned by [`Connection::execute`]: a blocking
/// [`RecordBatchReader`], plus an optional way to interrupt it from another thread.
pub struct Execution {
    reader: BoxedReader,
    canceller: Option<Callback>,
    statement_id: Option<String>,
}

impl Execution {
    /// A result read from `reader`.
    pub fn new(reader: Box<dyn RecordBatchReader + Send>) -> Self {
        Self {
            reader,
            canceller: None,
            statement_id: None,
        }
    }

    /// Sets the function that interrupts the reader (stops downloads, cancels the statement
    /// on the server) when the query is canceled. It runs on the executor's housekeeping
    /// thread, never on the async runtime, and may block briefly.
    pub fn with_canceller(mut self, cancel: impl FnOnce() + Send + 'static) -> Self {
        self.canceller = Some(Box::new(cancel));
        self
    }

    /// Records the server's statement id (reported on the stream and in traces).
    pub fn with_statement_id(mut self, id: impl Into<String>) -> Self {
        self.statement_id = Some(id.into());
        self
    }

    /// The statement id, if the driver gave one.
    pub fn statement_id(&self) -> Option<&str> {
        self.statement_id.as_deref()
    }

    pub(crate) fn into_parts(self) -> (BoxedReader, Option<Callback>, Option<String>) {
        (self.reader, self.canceller, self.statement_id)
    }
}

impl fmt::Debug for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Execution")
            .field("statement_id", &self.statement_id)
            .field("has_canceller", &self.canceller.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) type Callback = Box<dyn FnOnce() + Send>;
pub(crate) type BoxedReader = Box<dyn RecordBatchReader + Send>;

struct TokenInner {
    canceled: AtomicBool,
    callbacks: Mutex<Vec<Callback>>,
    changed: Condvar,
    /// Wakes async waiters ([`CancelToken::cancelled`]).
    notify: tokio::sync::Notify,
}

/// A cancellation signal shared by a query's async side and the worker running it.
///
/// Cheap to clone. Once canceled it stays canceled.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<TokenInner>,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("canceled", &self.is_canceled())
            .finish()
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not canceled.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(TokenInner {
                canceled: AtomicBool::new(false),
                callbacks: Mutex::new(Vec::new()),
                changed: Condvar::new(),
                notify: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Whether the token was canceled.
    pub fn is_canceled(&self) -> bool {
        self.inner.canceled.load(Ordering::Acquire)
    }

    /// Sleeps up to `timeout`, waking early on cancellation. Returns whether it is canceled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut callbacks = self.inner.callbacks.lock();
        while !self.is_canceled() {
            if self
                .inner
                .changed
                .wait_until(&mut callbacks, deadline)
                .timed_out()
            {
                break;
            }
        }
        self.is_canceled()
    }

    /// Completes once the token is canceled (at once if it already is). Runtime-agnostic: a
    /// worker thread may wait on it with `futures::executor::block_on`.
    pub async fn cancelled(&self) {
        loop {
            let mut notified = std::pin::pin!(self.inner.notify.notified());
            // Registered before the check, so a cancel in between is not lost.
            notified.as_mut().enable();
            if self.is_canceled() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `callback` when the token is canceled (at once, on this thread, if it already is).
    pub fn on_cancel(&self, callback: impl FnOnce() + Send + 'static) {
        let mut callbacks = self.inner.callbacks.lock();
        if self.is_canceled() {
            drop(callbacks);
            callback();
        } else {
            callbacks.push(Box::new(callback));
        }
    }

    /// Drops the registered callbacks without running them (the query ended normally).
    pub(crate) fn clear_callbacks(&self) {
        let callbacks = std::mem::take(&mut *self.inner.callbacks.lock());
        drop(callbacks);
    }

    /// Cancels: wakes waiters and runs the registered callbacks on this thread. Idempotent.
    pub fn cancel(&self) {
        let callbacks = {
            let mut callbacks = self.inner.callbacks.lock();
            self.inner.canceled.store(true, Ordering::Release);
            self.inner.changed.notify_all();
            std::mem::take(&mut *callbacks)
        };
        self.inner.notify.notify_waiters();
        for callback in callbacks {
            callback();
        }
    }
}

/// A statement's poll back-off: each interval is longer than the last by a fraction of it
/// (`1/growth_divisor`: 2 for half, 4 for a quarter), up to `max`, and it restarts from `min`
/// the first time a poll sees the statement executing (out of the warehouse's queue), so a long
/// queue wait does not delay noticing a short run. A statement is noticed at most that fraction
/// of its run (and at most `max`) after it finished.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    interval: Duration,
    growth_divisor: u32,
    executing: bool,
}

impl Backoff {
    pub(crate) fn new((min, max): (Duration, Duration), growth_divisor: u32) -> Self {
        Self {
            min,
            max,
            interval: min,
            growth_divisor: growth_divisor.max(1),
            executing: false,
        }
    }

    /// The wait before the next poll.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Records a poll that found the statement still running (`executing`: out of the queue).
    pub(crate) fn polled(&mut self, executing: bool) {
        self.interval = if executing && !self.executing {
            self.executing = true;
            self.min
        } else {
            (self.interval + self.interval / self.growth_divisor).min(self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_by_half_and_restarts_once_when_the_statement_executes() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new((ms(10), ms(40)), 2);
        let mut seen = vec![b.interval()];
        for executing in [false, false, false, false, true, false, true, true] {
            b.polled(executing);
            seen.push(b.interval());
        }
        // 10, 15, 22.5, 33.75, capped at 40; restart to 10 when it leaves the queue (once).
        let expected = [10.0, 15.0, 22.5, 33.75, 40.0, 10.0, 15.0, 22.5, 33.75];
        let got: Vec<f64> = seen.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }

        // Growing by a quarter: 8, 10, 12.5, 15.625.
        let mut b = Backoff::new((ms(8), ms(100)), 4);
        let mut seen = vec![b.interval()];
        for _ in 0..3 {
            b.polled(false);
            seen.push(b.interval());
        }
        let got: Vec<f64> = seen.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        for (g, e) in got.iter().zip([8.0, 10.0, 12.5, 15.625]) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }
    }

    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn callbacks_run_once_and_late_ones_run_at_once() {
        let token = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        token.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!token.is_canceled());
        token.cancel();
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let r = runs.clone();
        token.on_cancel(move || {
            r.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn wait_wakes_on_cancel() {
        let token = CancelToken::new();
        assert!(!token.wait_timeout(Duration::from_millis(1)));
        let t = token.clone();
        let waiter = std::thread::spawn(move || t.wait_timeout(Duration::from_secs(60)));
        token.cancel();
        assert!(waiter.join().expect("waiter does not panic"));
    }

    #[test]
    fn cancelled_completes_on_cancel_from_another_thread() {
        let token = CancelToken::new();
        let t = token.clone();
        let waiter = std::thread::spawn(move || futures::executor::block_on(t.cancelled()));
        token.cancel();
        waiter.join().expect("waiter does not panic");
        // Already canceled: completes at once.
        futures::executor::block_on(token.cancelled());
    }
}
