//! The executor: admission queue, worker threads, housekeeping thread, async bridge.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use dbfed_databricks::Param;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parking_lot::{Condvar, Mutex};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{
    Backoff, BoxedReader, CancelToken, Driver, Execution, PendingStatement, Submitted,
};
use crate::error::{ConfigError, DriverError, ExecutorError, Result};
use crate::metrics::{Counters, MetricsSnapshot};
use crate::pool::{Pool, PoolConfig, Pooled};
use crate::queue::{AdmissionQueue, Queued};
use crate::stream::{QueryGuard, QueryStream};

/// What a worker sends to a query's stream, in order; the outcome follows on a oneshot
/// channel, so a worker never waits for a consumer to read the end.
pub(crate) enum Msg {
    Start {
        schema: SchemaRef,
        statement_id: Option<String>,
    },
    Batch(RecordBatch),
}

/// How a query ended: sent before the batch channel closes.
pub(crate) type End = std::result::Result<(), ExecutorError>;

/// How queries use the worker threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExecutionMode {
    /// A worker runs the whole query: submit, wait, read the result (the classic model). At
    /// most `threads` statements run at once.
    #[default]
    ThreadPerQuery,
    /// A worker submits the statement (`wait_timeout = 0s`) and returns; one poller thread
    /// tracks every running statement; a worker is taken again only to read the result. Up to
    /// `queue_depth` statements may run on the warehouse with a handful of threads. Drivers
    /// without [`Connection::submit`](crate::Connection::submit) support fall back to waiting.
    SubmitAndPoll,
}

enum Work {
    /// Run the statement.
    Run { sql: String, params: Vec<Param> },
    /// Read the result of a statement the poller saw finish.
    Fetch(Box<dyn PendingStatement>),
    /// Go on reading a result that waited (parked) for its consumer.
    Resume(Box<Parked>),
}

/// A result whose consumer was slower than it: it waits without a worker until the consumer
/// makes room in its stream's buffer.
struct Parked {
    reader: BoxedReader,
    rows: u64,
    /// The batch that did not fit in the buffer.
    batch: RecordBatch,
}

struct Job {
    id: u64,
    work: Work,
    enqueued: Instant,
    token: CancelToken,
    tx: mpsc::Sender<Msg>,
    end: oneshot::Sender<End>,
    span: tracing::Span,
    /// Set while the job is parked; the stream resumes it when it takes a batch.
    parked: Arc<AtomicBool>,
}

impl Queued for Job {
    fn id(&self) -> u64 {
        self.id
    }

    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

/// A statement the poller tracks.
struct Polled {
    job: Job,
    pending: Box<dyn PendingStatement>,
    due: Instant,
    backoff: Backoff,
}

struct State {
    queue: AdmissionQueue<Job>,
    /// Finished statements waiting for a worker to read them (served before `queue`).
    fetch: VecDeque<Job>,
    /// Statements handed to the poller, not yet picked up by it.
    to_poll: Vec<Polled>,
    /// Statements the poller tracks (in `to_poll` or in its own list).
    polling: usize,
    /// Tokens of queries being run, by query id (canceled at shutdown).
    running: HashMap<u64, CancelToken>,
    /// Results waiting for their consumer without a worker, by query id.
    parked: HashMap<u64, Job>,
    /// Tokens to cancel on the housekeeping thread (their callbacks may block).
    cancels: Vec<CancelToken>,
    shutdown: bool,
    next_id: u64,
}

#[derive(Debug, Clone)]
struct Config {
    threads: usize,
    queue_depth: usize,
    queue_depth_per_identity: usize,
    queue_timeout: Duration,
    stream_buffer: usize,
    max_parked: usize,
    starvation_threshold: Duration,
    mode: ExecutionMode,
    poll_interval: (Duration, Duration),
}

pub(crate) struct Shared {
    state: Mutex<State>,
    work: Condvar,
    housekeeping: Condvar,
    poller: Condvar,
    pool: Pool,
    pub(crate) counters: Arc<Counters>,
    config: Config,
}

impl Shared {
    /// Called when a query's future or stream is dropped before its end: a queued job leaves
    /// the queue; a running one is canceled on the housekeeping thread.
    pub(crate) fn abandon(&self, id: u64, token: &CancelToken) {
        Counters::add(&self.counters.cancellations, 1);
        let mut state = self.state.lock();
        if let Some(job) = state.queue.remove(id) {
            drop(state);
            tracing::debug!(
                query_id = id,
                "query dropped while queued: removed from the queue"
            );
            drop(job);
            return;
        }
        if let Some(job) = state.parked.remove(&id) {
            // Its reader is released on a worker (closing a result may block).
            state.fetch.push_front(job);
            self.work.notify_one();
        }
        state.cancels.push(token.clone());
        self.housekeeping.notify_one();
        self.poller.notify_one();
    }

    /// Called by a query's consumer each time it took a message from the buffer: a result
    /// parked for want of room goes on. Pairs with the fence in [`park`]: of a consumer making
    /// room and a result parking at once, one sees the other.
    pub(crate) fn made_room(&self, id: u64, parked: &AtomicBool) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if parked.load(Ordering::SeqCst) {
            self.unpark(id);
        }
    }

    /// Hands a parked result back to the workers (its consumer made room); a no-op when it is
    /// not parked (any more).
    pub(crate) fn unpark(&self, id: u64) {
        let mut state = self.state.lock();
        if let Some(job) = state.parked.remove(&id) {
            job.parked.store(false, Ordering::SeqCst);
            state.fetch.push_front(job);
            self.work.notify_one();
        }
    }
}

/// Builds an [`Executor`]. Every setting has a documented default; invalid combinations are
/// rejected by [`ExecutorBuilder::build`].
#[must_use]
pub struct ExecutorBuilder {
    driver: Arc<dyn Driver>,
    threads: Option<usize>,
    queue_depth: usize,
    queue_depth_per_identity: Option<usize>,
    queue_timeout: Duration,
    pool_size: Option<usize>,
    max_overflow: usize,
    pool_timeout: Duration,
    pool_recycle: Option<Duration>,
    pre_ping: bool,
    stream_buffer: usize,
    max_parked: Option<usize>,
    starvation_threshold: Duration,
    mode: ExecutionMode,
    poll_interval: (Duration, Duration),
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("threads", &self.threads)
            .field("queue_depth", &self.queue_depth)
            .field("queue_depth_per_identity", &self.queue_depth_per_identity)
            .field("queue_timeout", &self.queue_timeout)
            .field("pool_size", &self.pool_size)
            .field("max_overflow", &self.max_overflow)
            .field("pool_timeout", &self.pool_timeout)
            .field("pool_recycle", &self.pool_recycle)
            .field("pre_ping", &self.pre_ping)
            .field("stream_buffer", &self.stream_buffer)
            .field("max_parked", &self.max_parked)
            .field("starvation_threshold", &self.starvation_threshold)
            .field("mode", &self.mode)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Most worker threads an executor may have.
const MAX_THREADS: usize = 4096;

impl ExecutorBuilder {
    /// Worker threads (`dbfed-worker-N`). Default: `pool_size + max_overflow` when `pool_size`
    /// is set, else 8. Each running query holds one worker.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Queries that may wait for a worker (in submit-and-poll mode: plus statements running
    /// on the warehouse); one more fails at once with [`ExecutorError::Overloaded`].
    /// Default 1024.
    pub fn queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth;
        self
    }

    /// Queries one identity (see [`Executor::query_as`]) may have waiting; one more fails
    /// with [`ExecutorError::Overloaded`]. Default: `queue_depth`.
    pub fn queue_depth_per_identity(mut self, depth: usize) -> Self {
        self.queue_depth_per_identity = Some(depth);
        self
    }

    /// Longest wait for a worker before [`ExecutorError::QueueTimeout`]. Default 60 s.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Sessions kept open in the pool. Default: `threads - max_overflow` (all threads when
    /// neither is set: 8).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Extra sessions opened beyond `pool_size` under load and closed when returned.
    /// Default 0.
    pub fn max_overflow(mut self, overflow: usize) -> Self {
        self.max_overflow = overflow;
        self
    }

    /// Longest wait of a worker for a session before [`ExecutorError::PoolTimeout`].
    /// Default 30 s.
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// Sessions older than this are closed and replaced at checkout. Default: never.
    pub fn pool_recycle(mut self, max_age: Option<Duration>) -> Self {
        self.pool_recycle = max_age;
        self
    }

    /// Ping an idle session before handing it out and discard it if the ping fails.
    /// Default `false`.
    pub fn pre_ping(mut self, pre_ping: bool) -> Self {
        self.pre_ping = pre_ping;
        self
    }

    /// Batches buffered between a worker and its stream. Default 2.
    ///
    /// When the buffer is full (the consumer is slower than the result), the result *parks*:
    /// it waits for its consumer without a worker, which goes on with other queries, and the
    /// next worker free resumes it once the consumer took a batch. See
    /// [`max_parked`](Self::max_parked).
    pub fn stream_buffer(mut self, batches: usize) -> Self {
        self.stream_buffer = batches;
        self
    }

    /// Results that may wait for slow consumers without a worker at once; past it, a worker
    /// waits with its result (backpressure), so slow consumers can hold at most this many
    /// results plus one per worker open. Each open result holds at most the driver's prefetch
    /// (for Databricks: `ClientBuilder::prefetch_bytes`) of downloaded data. `0` never parks.
    /// Default: 4 × `threads`.
    pub fn max_parked(mut self, results: usize) -> Self {
        self.max_parked = Some(results);
        self
    }

    /// Queue wait beyond which a query counts as starved in the metrics (and is logged).
    /// Default 10 s.
    pub fn starvation_threshold(mut self, threshold: Duration) -> Self {
        self.starvation_threshold = threshold;
        self
    }

    /// How queries use the workers. Default [`ExecutionMode::ThreadPerQuery`].
    pub fn mode(mut self, mode: ExecutionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Submit-and-poll mode: a statement is first polled after `min`, then at intervals growing
    /// by half up to `max`; the intervals restart from `min` when a poll first sees the statement
    /// executing (out of the warehouse's queue, see [`PendingStatement::executing`]). Default
    /// 10 ms to 250 ms.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_interval = (min, max);
        self
    }

    /// Validates the settings, starts the worker and housekeeping threads.
    pub fn build(self) -> Result<Executor, ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let threads = match (self.threads, self.pool_size) {
            (Some(threads), _) => threads,
            (None, Some(p)) => match p.checked_add(self.max_overflow) {
                Some(t) => t,
                None => {
                    return err(format!(
                        "pool_size ({p}) + max_overflow ({}) is too large",
                        self.max_overflow
                    ));
                }
            },
            (None, None) => 8,
        };
        if threads == 0 {
            return err("threads must be at least 1".into());
        }
        if threads > MAX_THREADS {
            return err(format!(
                "threads must be at most {MAX_THREADS}, not {threads}"
            ));
        }
        let pool_size = match self.pool_size {
            Some(p) => p,
            None => threads.saturating_sub(self.max_overflow).max(1),
        };
        if pool_size == 0 {
            return err("pool_size must be at least 1".into());
        }
        let capacity = pool_size.saturating_add(self.max_overflow);
        if capacity > threads {
            return err(format!(
                "pool_size + max_overflow ({capacity}) exceeds threads ({threads}): \
                 each worker uses one session at a time, so sessions beyond threads are never used"
            ));
        }
        // In submit-and-poll mode workers read results without a session: more workers than
        // sessions is the point there.
        if self.mode == ExecutionMode::ThreadPerQuery && threads > capacity.saturating_mul(2) {
            return err(format!(
                "threads ({threads}) exceed twice pool_size + max_overflow ({capacity}): \
                 the extra workers would only wait for sessions"
            ));
        }
        if self.queue_depth == 0 {
            return err("queue_depth must be at least 1".into());
        }
        let queue_depth_per_identity = self.queue_depth_per_identity.unwrap_or(self.queue_depth);
        if queue_depth_per_identity == 0 || queue_depth_per_identity > self.queue_depth {
            return err(format!(
                "queue_depth_per_identity ({queue_depth_per_identity}) must be between 1 and \
                 queue_depth ({})",
                self.queue_depth
            ));
        }
        if self.stream_buffer == 0 {
            return err("stream_buffer must be at least 1".into());
        }
        if self.queue_timeout.is_zero() {
            return err("queue_timeout must be positive".into());
        }
        if self.pool_timeout.is_zero() {
            return err("pool_timeout must be positive".into());
        }
        if self.poll_interval.0.is_zero() || self.poll_interval.1 < self.poll_interval.0 {
            return err("poll_interval needs 0 < min <= max".into());
        }
        if self.pool_recycle.is_some_and(|r| r.is_zero()) {
            return err("pool_recycle must be positive (or None)".into());
        }
        let counters = Arc::new(Counters::default());
        let pool = Pool::new(
            self.driver,
            PoolConfig {
                size: pool_size,
                max_overflow: self.max_overflow,
                timeout: self.pool_timeout,
                recycle: self.pool_recycle,
                pre_ping: self.pre_ping,
            },
            counters.clone(),
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: AdmissionQueue::new(),
                fetch: VecDeque::new(),
                to_poll: Vec::new(),
                polling: 0,
                running: HashMap::new(),
                parked: HashMap::new(),
                cancels: Vec::new(),
                shutdown: false,
                next_id: 0,
            }),
            work: Condvar::new(),
            housekeeping: Condvar::new(),
            poller: Condvar::new(),
            pool,
            counters,
            config: Config {
                threads,
                queue_depth: self.queue_depth,
                queue_depth_per_identity,
                queue_timeout: self.queue_timeout,
                stream_buffer: self.stream_buffer,
                max_parked: self.max_parked.unwrap_or(threads.saturating_mul(4)),
                starvation_threshold: self.starvation_threshold,
                mode: self.mode,
                poll_interval: self.poll_interval,
            },
        });
        let mut handles = Vec::with_capacity(threads + 1);
        let spawned = (|| -> std::io::Result<()> {
            for n in 0..threads {
                let s = shared.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("dbfed-worker-{n}"))
                        .spawn(move || worker(&s))?,
                );
            }
            let s = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("dbfed-housekeeper".into())
                    .spawn(move || housekeeper(&s))?,
            );
            if self.mode == ExecutionMode::SubmitAndPoll {
                let s = shared.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name("dbfed-poller".into())
                        .spawn(move || poller(&s))?,
                );
            }
            Ok(())
        })();
        let handle = Handle {
            shared,
            threads: Mutex::new(handles),
        };
        if let Err(e) = spawned {
            handle.shutdown();
            return err(format!("cannot start the worker threads: {e}"));
        }
        tracing::debug!(
            threads,
            pool_size,
            max_overflow = self.max_overflow,
            "executor started"
        );
        Ok(Executor {
            handle: Arc::new(handle),
        })
    }
}

struct Handle {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Handle {
    /// Runs the teardown on a scoped thread: it joins threads and closes sessions over HTTP,
    /// which must not happen on an async runtime's thread.
    fn shutdown(&self) {
        let run = || teardown(&self.shared, std::mem::take(&mut *self.threads.lock()));
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("dbfed-shutdown".into())
                .spawn_scoped(scope, run);
            match thread {
                Ok(thread) => {
                    if thread.join().is_err() {
                        tracing::error!("the executor's teardown panicked");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a teardown thread: tearing down here");
                    run();
                }
            }
        });
    }
}

/// Marks the executor shut down: running queries are canceled, queued ones fail. Never blocks.
fn begin_shutdown(shared: &Shared) {
    let queued = {
        let mut state = shared.state.lock();
        state.shutdown = true;
        let running: Vec<CancelToken> = state.running.values().cloned().collect();
        state.cancels.extend(running);
        shared.work.notify_all();
        shared.housekeeping.notify_all();
        shared.poller.notify_all();
        let mut queued = state.queue.drain();
        queued.extend(std::mem::take(&mut state.fetch));
        queued.extend(std::mem::take(&mut state.parked).into_values());
        queued
    };
    for job in queued {
        let _ = job.end.send(Err(ExecutorError::Shutdown));
    }
}

/// Stops the executor (see [`Executor::shutdown`]); blocks until every thread is joined.
fn teardown(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    begin_shutdown(shared);
    shared.pool.close_all();
    for thread in threads {
        if thread.join().is_err() {
            tracing::error!("an executor thread panicked");
        }
    }
    // Sessions returned by the workers after the first `close_all` were closed on return.
    shared.pool.close_all();
    drop(shared.pool.take_driver());
}

impl Drop for Handle {
    /// Dropping the last [`Executor`] clone shuts it down. On a tokio runtime thread this must
    /// not block (joining workers that wait for a slow driver, closing sessions over HTTP
    /// would stall every task of that thread): the teardown then runs on a detached thread.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.shutdown();
            return;
        }
        let shared = self.shared.clone();
        let threads = std::mem::take(&mut *self.threads.lock());
        let detached = std::thread::Builder::new()
            .name("dbfed-shutdown".into())
            .spawn(move || teardown(&shared, threads));
        if let Err(e) = detached {
            // The threads are detached now; at least stop them and fail the waiting queries.
            tracing::warn!(error = %e, "cannot start a teardown thread: not joining the workers");
            begin_shutdown(&self.shared);
        }
    }
}

/// Runs blocking [`Driver`] queries on a fixed set of dedicated threads and streams their
/// results to async code.
///
/// Cheap to clone; each open [`QueryStream`] holds a clone too, so a stream keeps running after
/// the caller dropped its handles. The last clone dropped shuts the executor down (see
/// [`Executor::shutdown`]). Dropped on a tokio runtime thread, it does not block: the
/// teardown (joining threads, closing sessions) then finishes on a background thread.
#[derive(Clone)]
pub struct Executor {
    handle: Arc<Handle>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// A builder running queries through `driver`.
    pub fn builder(driver: impl Driver) -> ExecutorBuilder {
        ExecutorBuilder {
            driver: Arc::new(driver),
            threads: None,
            queue_depth: 1024,
            queue_depth_per_identity: None,
            queue_timeout: Duration::from_secs(60),
            pool_size: None,
            max_overflow: 0,
            pool_timeout: Duration::from_secs(30),
            pool_recycle: None,
            pre_ping: false,
            stream_buffer: 2,
            max_parked: None,
            starvation_threshold: Duration::from_secs(10),
            mode: ExecutionMode::default(),
            poll_interval: (Duration::from_millis(10), Duration::from_millis(250)),
        }
    }

    /// Runs `sql` with `params` on a worker thread. Resolves once the statement has a result
    /// (or failed); the stream then yields its batches as they arrive.
    ///
    /// Fails at once with [`ExecutorError::Overloaded`] when the queue is full; with
    /// [`ExecutorError::QueueTimeout`] / [`ExecutorError::PoolTimeout`] when no worker /
    /// session frees up in time. Dropping the future or the stream cancels the query.
    pub async fn query(&self, sql: &str, params: &[Param]) -> Result<QueryStream> {
        self.query_as("", sql, params).await
    }

    /// [`Executor::query`] on behalf of `identity` (a user, a tenant): queries of different
    /// identities take turns in the admission queue, and one identity may queue at most
    /// `queue_depth_per_identity` queries, so it cannot starve the others.
    pub async fn query_as(
        &self,
        identity: &str,
        sql: &str,
        params: &[Param],
    ) -> Result<QueryStream> {
        let shared = &self.handle.shared;
        let (tx, mut rx) = mpsc::channel(shared.config.stream_buffer);
        let (end, mut end_rx) = oneshot::channel();
        let token = CancelToken::new();
        let parked = Arc::new(AtomicBool::new(false));
        let id = {
            let mut state = shared.state.lock();
            if state.shutdown {
                return Err(ExecutorError::Shutdown);
            }
            if state.queue.len() + state.polling >= shared.config.queue_depth
                || state.queue.len_of(identity) >= shared.config.queue_depth_per_identity
            {
                Counters::add(&shared.counters.overloaded, 1);
                return Err(ExecutorError::Overloaded {
                    queue_depth: shared.config.queue_depth,
                });
            }
            let id = state.next_id;
            state.next_id += 1;
            let span = tracing::info_span!(
                "dbfed_query",
                query_id = id,
                statement_id = tracing::field::Empty
            );
            state.queue.push(
                identity,
                Job {
                    id,
                    work: Work::Run {
                        sql: sql.to_owned(),
                        params: params.to_vec(),
                    },
                    enqueued: Instant::now(),
                    token: token.clone(),
                    tx,
                    end,
                    span,
                    parked: parked.clone(),
                },
            );
            if state.queue.len() == 1 {
                shared.housekeeping.notify_one();
            }
            shared.work.notify_one();
            id
        };
        Counters::add(&shared.counters.submitted, 1);
        let mut guard = QueryGuard::new(shared.clone(), id, token);
        let start = rx.recv().await;
        shared.made_room(id, &parked);
        match start {
            Some(Msg::Start {
                schema,
                statement_id,
            }) => Ok(QueryStream::new(
                schema,
                statement_id,
                rx,
                end_rx,
                guard,
                parked,
                self.clone(),
            )),
            Some(Msg::Batch(_)) => {
                guard.finish();
                Err(ExecutorError::Incomplete)
            }
            None => {
                guard.finish();
                match end_rx.try_recv() {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) | Err(_) => Err(ExecutorError::Incomplete),
                }
            }
        }
    }

    /// A lazy form of [`Executor::query_as`] for synchronous callers such as DataFusion's
    /// `ExecutionPlan::execute`: nothing is queued until the stream is first polled; errors
    /// of the query (including `Overloaded`) are its first item.
    pub fn query_stream(
        &self,
        identity: impl Into<String>,
        sql: impl Into<String>,
        params: Vec<Param>,
    ) -> BoxStream<'static, Result<RecordBatch>> {
        let executor = self.clone();
        let (identity, sql) = (identity.into(), sql.into());
        futures::stream::once(async move { executor.query_as(&identity, &sql, &params).await })
            .try_flatten()
            .boxed()
    }

    /// A snapshot of the executor's state and counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let shared = &self.handle.shared;
        let c = &shared.counters;
        let (queued, polling, parked) = {
            let state = shared.state.lock();
            (state.queue.len(), state.polling, state.parked.len())
        };
        let (pool_in_use, pool_idle, pool_overflow) = shared.pool.sizes();
        MetricsSnapshot {
            threads: shared.config.threads,
            running: Counters::get(&c.running),
            peak_running: Counters::get(&c.peak_running),
            queued,
            polling,
            peak_polling: Counters::get(&c.peak_polling),
            pool_in_use,
            pool_idle,
            pool_overflow,
            submitted: Counters::get(&c.submitted),
            completed: Counters::get(&c.completed),
            failed: Counters::get(&c.failed),
            overloaded: Counters::get(&c.overloaded),
            queue_timeouts: Counters::get(&c.queue_timeouts),
            pool_timeouts: Counters::get(&c.pool_timeouts),
            cancellations: Counters::get(&c.cancellations),
            parked,
            parks: Counters::get(&c.parks),
            panics: Counters::get(&c.panics),
            rows: Counters::get(&c.rows),
            bytes: Counters::get(&c.bytes),
            starved: Counters::get(&c.starved),
            retries: shared.pool.driver_retries(),
            bytes_received: shared.pool.driver_bytes_received(),
            sessions_opened: Counters::get(&c.sessions_opened),
            sessions_closed: Counters::get(&c.sessions_closed),
            sessions_discarded: Counters::get(&c.sessions_discarded),
            queue_wait: c.queue_wait.snapshot(),
            checkout_wait: c.checkout_wait.snapshot(),
        }
    }

    /// Stops the executor: queued queries fail with [`ExecutorError::Shutdown`], running ones
    /// are canceled, every thread is joined and the pooled sessions are closed. Blocks until
    /// done (call it off the async runtime, e.g. in `spawn_blocking`); later queries fail with
    /// `Shutdown`. A stream still being read, or paused, ends with [`ExecutorError::Shutdown`]
    /// after the batches already buffered. Also runs when the last clone is dropped.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.state.lock();
            loop {
                if state.shutdown {
                    return;
                }
                if let Some(job) = state.fetch.pop_front().or_else(|| state.queue.pop()) {
                    state.running.insert(job.id, job.token.clone());
                    break job;
                }
                shared.work.wait(&mut state);
            }
        };
        let id = job.id;
        // Driver calls are caught inside `run`; anything else a driver does (a panicking
        // `statement_id`, a `Drop`) must not take the worker down: the thread count would
        // shrink silently. The query's stream then ends with `Incomplete`.
        if catch_unwind(AssertUnwindSafe(|| run(shared, job))).is_err() {
            Counters::add(&shared.counters.panics, 1);
            tracing::error!(query_id = id, "the driver panicked outside a driver call");
        }
        shared.state.lock().running.remove(&id);
    }
}

fn run(shared: &Shared, mut job: Job) {
    let counters = &shared.counters;
    let _enter = job.span.clone().entered();
    if matches!(job.work, Work::Run { .. }) {
        let waited = job.enqueued.elapsed();
        counters.queue_wait.record(waited);
        if waited > shared.config.starvation_threshold {
            Counters::add(&counters.starved, 1);
            tracing::warn!(?waited, "query starved in the admission queue");
        }
    }
    if job.tx.is_closed() || job.token.is_canceled() {
        return;
    }
    counters.start_running();
    let outcome = catch_unwind(AssertUnwindSafe(|| execute(shared, &mut job)));
    counters.stop_running();
    let end = match outcome {
        Ok(Outcome::Done) => None,
        Ok(Outcome::Abandoned) => {
            job.token.clear_callbacks();
            return;
        }
        Ok(Outcome::Failed(e)) => Some(e),
        Ok(Outcome::Pending(pending)) => {
            hand_to_poller(shared, job, pending);
            return;
        }
        Ok(Outcome::Park(parked)) => {
            park(shared, job, parked);
            return;
        }
        Err(payload) => {
            Counters::add(&counters.panics, 1);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            tracing::error!(%message, "driver panicked");
            Some(ExecutorError::WorkerPanic { message })
        }
    };
    finish(counters, job, end);
}

/// Reports how a query ended, then closes its batch channel.
fn finish(counters: &Counters, job: Job, end: Option<ExecutorError>) {
    // The result's canceller must not outlive the query (nor be dropped on the async side).
    job.token.clear_callbacks();
    let Job {
        tx, end: end_tx, ..
    } = job;
    // The outcome is sent before it is counted: whoever sees the count can read the outcome.
    match end {
        None => {
            let _ = end_tx.send(Ok(()));
            Counters::add(&counters.completed, 1);
        }
        Some(e) => {
            let failed = !matches!(e, ExecutorError::Canceled);
            if failed {
                tracing::debug!(error = %e, "query failed");
            }
            let _ = end_tx.send(Err(e));
            if failed {
                Counters::add(&counters.failed, 1);
            }
        }
    }
    // Closing the batch channel after the outcome is set lets the stream read it.
    drop(tx);
}

/// Returns a checked-out session to the pool, also when the driver panics (then discarded).
struct Checkout<'a> {
    pool: &'a Pool,
    pooled: Option<Pooled>,
    broken: bool,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            self.pool
                .checkin(pooled, self.broken || std::thread::panicking());
        }
    }
}

enum Outcome {
    /// The stream ended.
    Done,
    /// Nobody listens any more (the stream was dropped: counted as a cancellation).
    Abandoned,
    /// The query failed.
    Failed(ExecutorError),
    /// Submit-and-poll: the statement runs; the poller takes it from here.
    Pending(Box<dyn PendingStatement>),
    /// The consumer is slower than the result: it waits for the consumer without a worker.
    Park(Box<Parked>),
}

/// Runs the job's work: a statement on a pooled session, or reading a finished result.
fn execute(shared: &Shared, job: &mut Job) -> Outcome {
    let (sql, params) = match std::mem::replace(
        &mut job.work,
        Work::Run {
            sql: String::new(),
            params: Vec::new(),
        },
    ) {
        Work::Fetch(pending) => {
            return match pending.open() {
                Ok(execution) => stream(shared, job, execution),
                Err(e) => Outcome::Failed(ExecutorError::Driver(e)),
            };
        }
        Work::Resume(parked) => {
            let Parked {
                reader,
                rows,
                batch,
            } = *parked;
            return pump(shared, job, reader, rows, Some(batch));
        }
        Work::Run { sql, params } => (sql, params),
    };
    let started = Instant::now();
    let pooled = match shared.pool.checkout(&job.token) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    shared.counters.checkout_wait.record(started.elapsed());
    let mut checkout = Checkout {
        pool: &shared.pool,
        pooled: Some(pooled),
        broken: false,
    };
    let Some(pooled) = checkout.pooled.as_mut() else {
        return Outcome::Failed(ExecutorError::Incomplete);
    };
    let submitted = match shared.config.mode {
        ExecutionMode::ThreadPerQuery => pooled
            .conn
            .execute(&sql, &params, &job.token)
            .map(Submitted::Ready),
        ExecutionMode::SubmitAndPoll => pooled.conn.submit(&sql, &params, &job.token),
    };
    let execution = match submitted {
        Ok(Submitted::Ready(execution)) => execution,
        Ok(Submitted::Pending(pending)) => return Outcome::Pending(pending),
        Err(e) => {
            checkout.broken = e.is_connection_broken();
            if job.token.is_canceled() {
                return Blocked::Canceled.outcome(shared);
            }
            return Outcome::Failed(ExecutorError::Driver(e));
        }
    };
    if shared.config.mode == ExecutionMode::SubmitAndPoll {
        // Reading a result needs no session.
        drop(checkout);
    }
    stream(shared, job, execution)
}

/// Feeds the result to the job's stream.
fn stream(shared: &Shared, job: &Job, execution: Execution) -> Outcome {
    let (reader, canceller, statement_id) = execution.into_parts();
    if let Some(id) = &statement_id {
        job.span.record("statement_id", id.as_str());
    }
    if let Some(canceller) = canceller {
        job.token.on_cancel(canceller);
    }
    let start = Msg::Start {
        schema: reader.schema(),
        statement_id,
    };
    if let Err(blocked) = send(job, start) {
        return blocked.outcome(shared);
    }
    pump(shared, job, reader, 0, None)
}

/// Reads the result into the job's stream, starting with `batch` (one that did not fit
/// before), until it ends, fails, is canceled, or parks because the consumer is slower.
fn pump(
    shared: &Shared,
    job: &Job,
    mut reader: BoxedReader,
    mut rows: u64,
    mut batch: Option<RecordBatch>,
) -> Outcome {
    loop {
        if let Some(next) = batch.take() {
            let delivered = match job.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(Msg::Batch(next));
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Full(())) if may_park(shared) => {
                    return Outcome::Park(Box::new(Parked {
                        reader,
                        rows,
                        batch: next,
                    }));
                }
                // Every parking place is taken: wait here with the result (backpressure).
                Err(mpsc::error::TrySendError::Full(())) => send(job, Msg::Batch(next)),
                Err(mpsc::error::TrySendError::Closed(())) => Err(Blocked::Closed),
            };
            if let Err(blocked) = delivered {
                tracing::debug!(?blocked, "stopping the query");
                return blocked.outcome(shared);
            }
        }
        if job.token.is_canceled() {
            return Blocked::Canceled.outcome(shared);
        }
        match reader.next() {
            None if job.token.is_canceled() => {
                // A reader may stop early when interrupted: after a cancel its end does not
                // prove every row was read.
                return Blocked::Canceled.outcome(shared);
            }
            None => {
                tracing::debug!(rows, "query complete");
                return Outcome::Done;
            }
            Some(Ok(next)) => {
                rows += next.num_rows() as u64;
                Counters::add(&shared.counters.rows, next.num_rows() as u64);
                Counters::add(&shared.counters.bytes, next.get_array_memory_size() as u64);
                batch = Some(next);
            }
            Some(Err(e)) => {
                if job.token.is_canceled() {
                    return Blocked::Canceled.outcome(shared);
                }
                return Outcome::Failed(ExecutorError::Driver(arrow_to_driver(e)));
            }
        }
    }
}

/// Whether a result may park now (a parking place is free).
fn may_park(shared: &Shared) -> bool {
    let max = shared.config.max_parked;
    max > 0 && shared.state.lock().parked.len() < max
}

/// Parks a result until its consumer takes a batch (see [`Shared::unpark`]).
fn park(shared: &Shared, mut job: Job, parked: Box<Parked>) {
    job.work = Work::Resume(parked);
    let (id, flag, tx) = (job.id, job.parked.clone(), job.tx.clone());
    {
        let mut state = shared.state.lock();
        if state.shutdown {
            drop(state);
            finish(&shared.counters, job, Some(ExecutorError::Shutdown));
            return;
        }
        state.parked.insert(id, job);
        flag.store(true, Ordering::SeqCst);
        Counters::add(&shared.counters.parks, 1);
    }
    // Pairs with the fence in `Shared::made_room`: one of the two sees the other.
    std::sync::atomic::fence(Ordering::SeqCst);
    tracing::trace!("the consumer is slower than the result: parked");
    // The consumer may have taken a batch before the flag was set: then nobody else resumes
    // it (a consumer that took one after sees the flag and resumes it itself).
    if tx.capacity() > 0 {
        shared.unpark(id);
    }
}

/// Why [`send`] could not deliver a message.
#[derive(Debug)]
enum Blocked {
    /// The stream was dropped.
    Closed,
    /// The query was canceled (the stream is being dropped, or the executor shuts down).
    Canceled,
}

impl Blocked {
    fn outcome(self, shared: &Shared) -> Outcome {
        match self {
            Blocked::Closed => Outcome::Abandoned,
            Blocked::Canceled if shared.state.lock().shutdown => {
                Outcome::Failed(ExecutorError::Shutdown)
            }
            Blocked::Canceled => Outcome::Failed(ExecutorError::Canceled),
        }
    }
}

/// Sends `msg` to the query's stream, waiting while its buffer is full (backpressure) but
/// never past a cancellation: a paused consumer must not keep a worker, and with it
/// [`Executor::shutdown`], blocked forever.
fn send(job: &Job, msg: Msg) -> std::result::Result<(), Blocked> {
    if job.token.is_canceled() {
        // Canceled (by shutdown, or the stream is going away) while the consumer still
        // reads: stop, whatever the reader would still produce.
        return Err(Blocked::Canceled);
    }
    futures::executor::block_on(async {
        let reserve = std::pin::pin!(job.tx.reserve());
        let canceled = std::pin::pin!(job.token.cancelled());
        match futures::future::select(reserve, canceled).await {
            futures::future::Either::Left((Ok(permit), _)) => {
                permit.send(msg);
                Ok(())
            }
            futures::future::Either::Left((Err(_), _)) => Err(Blocked::Closed),
            futures::future::Either::Right(((), _)) => Err(Blocked::Canceled),
        }
    })
}

fn hand_to_poller(shared: &Shared, job: Job, pending: Box<dyn PendingStatement>) {
    if let Some(id) = pending.statement_id() {
        job.span.record("statement_id", id);
    }
    tracing::debug!("statement submitted: polling");
    // One poller polls every statement in turn: growing by half keeps its rounds short.
    let backoff = Backoff::new(shared.config.poll_interval, 2);
    let mut state = shared.state.lock();
    if state.shutdown {
        drop(state);
        cancel_pending(pending);
        finish(&shared.counters, job, Some(ExecutorError::Shutdown));
        return;
    }
    state.polling += 1;
    shared
        .counters
        .peak_polling
        .fetch_max(state.polling as u64, std::sync::atomic::Ordering::Relaxed);
    state.to_poll.push(Polled {
        job,
        pending,
        due: Instant::now() + backoff.interval(),
        backoff,
    });
    shared.poller.notify_one();
}

/// Cancels a submitted statement on the server. A driver that panics here must not take the
/// poller (and with it every running statement) or a worker down.
fn cancel_pending(mut pending: Box<dyn PendingStatement>) {
    if catch_unwind(AssertUnwindSafe(|| pending.cancel())).is_err() {
        tracing::error!("the driver panicked while canceling a statement");
    }
}

/// The poller thread (submit-and-poll mode): polls every running statement when due, hands
/// finished ones to the workers, cancels abandoned ones.
fn poller(shared: &Shared) {
    let counters = &shared.counters;
    let mut tracked: Vec<Polled> = Vec::new();
    loop {
        {
            let mut state = shared.state.lock();
            loop {
                tracked.append(&mut state.to_poll);
                if state.shutdown {
                    break;
                }
                let now = Instant::now();
                let ready = tracked
                    .iter()
                    .any(|p| p.due <= now || p.job.token.is_canceled() || p.job.tx.is_closed());
                if ready {
                    break;
                }
                match tracked.iter().map(|p| p.due).min() {
                    Some(due) => {
                        shared.poller.wait_until(&mut state, due);
                    }
                    None => shared.poller.wait(&mut state),
                }
            }
            if state.shutdown {
                drop(state);
                for p in tracked.drain(..) {
                    cancel_pending(p.pending);
                    finish(counters, p.job, Some(ExecutorError::Shutdown));
                }
                shared.state.lock().polling = 0;
                return;
            }
        }
        let now = Instant::now();
        let mut still = Vec::with_capacity(tracked.len());
        let mut finished = Vec::new();
        let mut gone = 0;
        for mut p in tracked.drain(..) {
            let _enter = p.job.span.clone().entered();
            if p.job.token.is_canceled() || p.job.tx.is_closed() {
                tracing::debug!("query abandoned while its statement runs: canceling it");
                cancel_pending(p.pending);
                finish(counters, p.job, Some(ExecutorError::Canceled));
                gone += 1;
                continue;
            }
            if p.due > now {
                still.push(p);
                continue;
            }
            let polled = catch_unwind(AssertUnwindSafe(|| p.pending.poll()));
            match polled {
                Ok(Ok(false)) => {
                    p.backoff.polled(p.pending.executing());
                    p.due = Instant::now() + p.backoff.interval();
                    still.push(p);
                }
                Ok(Ok(true)) => {
                    let mut job = p.job;
                    job.work = Work::Fetch(p.pending);
                    finished.push(job);
                    gone += 1;
                }
                Ok(Err(e)) => {
                    finish(counters, p.job, Some(ExecutorError::Driver(e)));
                    gone += 1;
                }
                Err(_) => {
                    Counters::add(&counters.panics, 1);
                    finish(
                        counters,
                        p.job,
                        Some(ExecutorError::WorkerPanic {
                            message: "the driver panicked while polling a statement".into(),
                        }),
                    );
                    gone += 1;
                }
            }
        }
        tracked = still;
        let mut state = shared.state.lock();
        state.polling = state.polling.saturating_sub(gone);
        if state.shutdown {
            // The workers are gone (or going) and the teardown already drained `fetch`:
            // a finished statement queued now would never be read, its query never answered.
            drop(state);
            for job in finished {
                finish(counters, job, Some(ExecutorError::Shutdown));
            }
            continue;
        }
        for _ in 0..finished.len() {
            shared.work.notify_one();
        }
        state.fetch.extend(finished);
    }
}

fn arrow_to_driver(e: ArrowError) -> DriverError {
    match e {
        ArrowError::ExternalError(source) => DriverError::new(source),
        other => DriverError::new(other),
    }
}

fn housekeeper(shared: &Shared) {
    let timeout = shared.config.queue_timeout;
    let mut state = shared.state.lock();
    loop {
        if !state.cancels.is_empty() {
            let cancels = std::mem::take(&mut state.cancels);
            drop(state);
            for token in cancels {
                token.cancel();
            }
            state = shared.state.lock();
            continue;
        }
        if state.shutdown {
            return;
        }
        let now = Instant::now();
        let expired = state.queue.pop_expired(now, timeout);
        if !expired.is_empty() {
            drop(state);
            for job in expired {
                let waited = job.enqueued.elapsed();
                shared.counters.queue_wait.record(waited);
                Counters::add(&shared.counters.queue_timeouts, 1);
                let _enter = job.span.enter();
                // The most starved queries are those that never ran.
                if waited > shared.config.starvation_threshold {
                    Counters::add(&shared.counters.starved, 1);
                    tracing::warn!(?waited, "query starved in the admission queue");
                }
                tracing::debug!(?waited, "query timed out in the admission queue");
                let _ = job
                    .end
                    .send(Err(ExecutorError::QueueTimeout { waited, timeout }));
            }
            state = shared.state.lock();
            continue;
        }
        match state.queue.oldest().map(|enqueued| enqueued + timeout) {
            Some(deadline) => {
                shared.housekeeping.wait_until(&mut state, deadline);
            }
            None => shared.housekeeping.wait(&mut state),
        }
    }
}

#[cfg(test)]
mod tests;
