//! The session pool: SQLAlchemy's `QueuePool` semantics over [`Driver`] connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::driver::{CancelToken, Connection, Driver};
use crate::error::ExecutorError;
use crate::metrics::Counters;

/// Longest slice a checkout sleeps before looking at its cancel token again.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub size: usize,
    pub max_overflow: usize,
    pub timeout: Duration,
    pub recycle: Option<Duration>,
    pub pre_ping: bool,
}

struct Idle {
    conn: Box<dyn Connection>,
    created: Instant,
}

struct PoolState {
    idle: Vec<Idle>,
    /// Open connections: idle, checked out, and being opened.
    open: usize,
    closed: bool,
}

/// A checked-out connection; give it back with [`Pool::checkin`].
pub(crate) struct Pooled {
    pub conn: Box<dyn Connection>,
    created: Instant,
}

pub(crate) struct Pool {
    /// Taken at shutdown so the driver (and its HTTP client) drops on the teardown thread.
    driver: Mutex<Option<Arc<dyn Driver>>>,
    config: PoolConfig,
    state: Mutex<PoolState>,
    freed: Condvar,
    counters: Arc<Counters>,
}

/// A slot of `open` taken by a checkout; freed on drop unless kept.
struct Slot<'a> {
    pool: &'a Pool,
    held: bool,
}

impl Slot<'_> {
    /// The connection of this slot was handed out: it stays counted.
    fn keep(mut self) {
        self.held = false;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.pool.forget();
        }
    }
}

enum Next {
    Reuse(Idle),
    Open,
}

impl Pool {
    pub fn new(driver: Arc<dyn Driver>, config: PoolConfig, counters: Arc<Counters>) -> Self {
        Self {
            driver: Mutex::new(Some(driver)),
            config,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                closed: false,
            }),
            freed: Condvar::new(),
            counters,
        }
    }

    fn capacity(&self) -> usize {
        self.config.size + self.config.max_overflow
    }

    /// Checks out a connection: the most recently returned idle one (recycled when too old,
    /// pinged when `pre_ping`), or a new one while under `pool_size + max_overflow`; otherwise
    /// waits up to `pool_timeout`.
    pub fn checkout(&self, cancel: &CancelToken) -> Result<Pooled, ExecutorError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let next = {
                let mut state = self.state.lock();
                loop {
                    if state.closed {
                        return Err(ExecutorError::Shutdown);
                    }
                    if cancel.is_canceled() {
                        return Err(ExecutorError::Canceled);
                    }
                    if let Some(idle) = state.idle.pop() {
                        break Next::Reuse(idle);
                    }
                    if state.open < self.capacity() {
                        state.open += 1;
                        break Next::Open;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        Counters::add(&self.counters.pool_timeouts, 1);
                        return Err(ExecutorError::PoolTimeout {
                            timeout: self.config.timeout,
                            pool_size: self.config.size,
                            max_overflow: self.config.max_overflow,
                        });
                    }
                    let until = deadline.min(now + CANCEL_CHECK);
                    self.freed.wait_until(&mut state, until);
                }
            };
            // Owns the slot counted in `open` until the connection is handed out, so a driver
            // that panics in `connect`, `ping` or `close` does not leak it.
            let slot = Slot {
                pool: self,
                held: true,
            };
            match next {
                Next::Open => {
                    let conn = self.connect()?;
                    slot.keep();
                    Counters::add(&self.counters.sessions_opened, 1);
                    return Ok(Pooled {
                        conn,
                        created: Instant::now(),
                    });
                }
                Next::Reuse(mut idle) => {
                    if let Some(max_age) = self.config.recycle
                        && idle.created.elapsed() >= max_age
                    {
                        tracing::debug!("recycling a session past pool_recycle");
                        self.dispose(idle.conn, false);
                        continue;
                    }
                    if self.config.pre_ping
                        && let Err(e) = idle.conn.ping()
                    {
                        tracing::info!(error = %e, "pre-ping failed: discarding the session");
                        self.dispose(idle.conn, true);
                        continue;
                    }
                    slot.keep();
                    return Ok(Pooled {
                        conn: idle.conn,
                        created: idle.created,
                    });
                }
            }
        }
    }

    fn connect(&self) -> Result<Box<dyn Connection>, ExecutorError> {
        let driver = self.driver.lock().clone().ok_or(ExecutorError::Shutdown)?;
        driver.connect().map_err(ExecutorError::Driver)
    }

    /// Retries reported by the driver (0 after shutdown).
    pub fn driver_retries(&self) -> u64 {
        self.driver.lock().as_ref().map_or(0, |d| d.retries())
    }

    /// Bytes the driver received (0 after shutdown).
    pub fn driver_bytes_received(&self) -> u64 {
        self.driver
            .lock()
            .as_ref()
            .map_or(0, |d| d.bytes_received())
    }

    /// Releases the driver (after [`Pool::close_all`]).
    pub fn take_driver(&self) -> Option<Arc<dyn Driver>> {
        self.driver.lock().take()
    }

    /// Returns a connection: discarded when `broken` or the pool is closed, closed when it is
    /// an overflow connection, kept idle otherwise.
    pub fn checkin(&self, pooled: Pooled, broken: bool) {
        {
            let mut state = self.state.lock();
            // `open` counts this connection: above `pool_size` it is an overflow one.
            if !broken && !state.closed && state.open <= self.config.size {
                state.idle.push(Idle {
                    conn: pooled.conn,
                    created: pooled.created,
                });
                self.freed.notify_one();
                return;
            }
            // Free the slot now, under the lock, so concurrent returns count correctly.
            state.open = state.open.saturating_sub(1);
            self.freed.notify_one();
        }
        self.dispose(pooled.conn, broken);
    }

    /// Closes a connection outside the lock and frees its slot.
    fn close(&self, conn: Box<dyn Connection>, broken: bool) {
        self.dispose(conn, broken);
        self.forget();
    }

    /// Closes a connection whose slot is already freed.
    fn dispose(&self, conn: Box<dyn Connection>, broken: bool) {
        if broken {
            Counters::add(&self.counters.sessions_discarded, 1);
        } else {
            Counters::add(&self.counters.sessions_closed, 1);
        }
        if let Err(e) = conn.close() {
            tracing::debug!(error = %e, "closing a session failed");
        }
    }

    /// Frees the slot of a connection that is gone.
    fn forget(&self) {
        let mut state = self.state.lock();
        state.open = state.open.saturating_sub(1);
        self.freed.notify_one();
    }

    /// `(in use, idle, overflow)`.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let state = self.state.lock();
        let idle = state.idle.len();
        (
            state.open.saturating_sub(idle),
            idle,
            state.open.saturating_sub(self.config.size),
        )
    }

    /// Closes the pool: idle connections are closed now, checked-out ones when returned.
    pub fn close_all(&self) {
        let idle = {
            let mut state = self.state.lock();
            state.closed = true;
            self.freed.notify_all();
            std::mem::take(&mut state.idle)
        };
        for idle in idle {
            self.close(idle.conn, false);
        }
    }
}
