//! Executor tests with a fake synchronous driver (no network).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatchReader;
use futures::{StreamExt, TryStreamExt};
use parking_lot::{Condvar, Mutex};

use super::*;
use crate::driver::{Connection, Execution, PendingStatement, Submitted};

/// Shared state of the fake driver: what it was asked to do.
#[derive(Default)]
struct Fake {
    connects: AtomicUsize,
    closes: AtomicUsize,
    pings: AtomicUsize,
    executed: Mutex<Vec<String>>,
    /// Connections whose ping fails.
    dead: Mutex<HashSet<usize>>,
    /// Workers inside a `gate` statement.
    in_gate: AtomicUsize,
    gate_open: Mutex<bool>,
    gate_cv: Condvar,
    canceled_in_execute: AtomicUsize,
    canceller_runs: AtomicUsize,
    readers_dropped: AtomicUsize,
    submitted: AtomicUsize,
    polls: AtomicUsize,
    pending_canceled: AtomicUsize,
    /// A `stuck` reader is blocked until the canceller runs.
    stuck: AtomicBool,
    /// `connect` panics while this is above 0 (and decrements it).
    panic_connects: AtomicUsize,
    /// `ping` panics while set.
    panic_ping: AtomicBool,
    /// `PendingStatement::cancel` panics while set.
    panic_cancel: AtomicBool,
    /// `PendingStatement::statement_id` panics while set.
    panic_statement_id: AtomicBool,
}

/// A submitted `slow N` statement: ready after N polls.
#[derive(Debug)]
struct FakePending {
    fake: Arc<Fake>,
    conn: usize,
    polls_left: usize,
    /// `poll` blocks (counted in `in_gate`) until the gate opens, then reports done.
    gated: bool,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fake")
    }
}

impl PendingStatement for FakePending {
    fn poll(&mut self) -> Result<bool, DriverError> {
        self.fake.polls.fetch_add(1, Ordering::SeqCst);
        if self.gated {
            self.fake.in_gate.fetch_add(1, Ordering::SeqCst);
            let mut open = self.fake.gate_open.lock();
            while !*open {
                self.fake
                    .gate_cv
                    .wait_for(&mut open, Duration::from_secs(30));
            }
            drop(open);
            self.fake.in_gate.fetch_sub(1, Ordering::SeqCst);
            return Ok(true);
        }
        if self.polls_left > 0 {
            self.polls_left -= 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn open(self: Box<Self>) -> Result<Execution, DriverError> {
        Ok(Execution::new(Box::new(FakeReader {
            fake: self.fake.clone(),
            conn: self.conn,
            rows: 2,
            batches: Some(1),
            sent: 0,
            panic_at: None,
        })))
    }

    fn statement_id(&self) -> Option<&str> {
        if self.fake.panic_statement_id.load(Ordering::SeqCst) {
            panic!("statement_id boom");
        }
        None
    }

    fn cancel(&mut self) {
        self.fake.pending_canceled.fetch_add(1, Ordering::SeqCst);
        if self.fake.panic_cancel.load(Ordering::SeqCst) {
            panic!("cancel boom");
        }
    }
}

impl Fake {
    fn open_gate(&self) {
        *self.gate_open.lock() = true;
        self.gate_cv.notify_all();
    }
}

#[derive(Clone)]
struct FakeDriver(Arc<Fake>);

struct FakeConnection {
    id: usize,
    fake: Arc<Fake>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
}

fn batch(start: i64, rows: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(start..start + rows))],
    )
    .expect("valid batch")
}

/// Yields `batches` batches of `rows` rows (the first value is the connection id × 1000),
/// forever when `batches` is `None`; panics at batch `panic_at`.
struct FakeReader {
    fake: Arc<Fake>,
    conn: usize,
    rows: i64,
    batches: Option<usize>,
    sent: usize,
    panic_at: Option<usize>,
}

impl Iterator for FakeReader {
    type Item = Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rows < 0 {
            // `gate-read`: one batch, then block (ignoring cancellation) until the gate opens.
            if self.sent == 0 {
                self.sent = 1;
                return Some(Ok(batch(0, 1)));
            }
            self.fake.in_gate.fetch_add(1, Ordering::SeqCst);
            let mut open = self.fake.gate_open.lock();
            while !*open {
                self.fake
                    .gate_cv
                    .wait_for(&mut open, Duration::from_secs(30));
            }
            drop(open);
            self.fake.in_gate.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        if self.rows == 0 {
            // `stuck`: one batch, then block like a download until canceled.
            if self.sent == 0 {
                self.sent = 1;
                return Some(Ok(batch(0, 1)));
            }
            self.fake.stuck.store(true, Ordering::SeqCst);
            for _ in 0..3000 {
                if self.fake.canceller_runs.load(Ordering::SeqCst) > 0 {
                    return Some(Err(ArrowError::ExternalError(Box::new(FakeError(
                        "canceled".into(),
                    )))));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return None;
        }
        if Some(self.sent) == self.panic_at {
            panic!("reader boom");
        }
        if self.batches.is_some_and(|b| self.sent >= b) {
            return None;
        }
        let start = (self.conn as i64) * 1000 + (self.sent as i64) * self.rows;
        self.sent += 1;
        Some(Ok(batch(start, self.rows)))
    }
}

impl RecordBatchReader for FakeReader {
    fn schema(&self) -> SchemaRef {
        schema()
    }
}

impl Drop for FakeReader {
    fn drop(&mut self) {
        self.fake.readers_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Driver for FakeDriver {
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        if self
            .0
            .panic_connects
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("connect boom");
        }
        let id = self.0.connects.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Box::new(FakeConnection {
            id,
            fake: self.0.clone(),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fake failure: {0}")]
struct FakeError(String);

impl Connection for FakeConnection {
    fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Execution, DriverError> {
        self.fake.executed.lock().push(sql.to_owned());
        let words: Vec<&str> = sql.split_whitespace().collect();
        let reader = |batches: Option<usize>, rows: i64, panic_at: Option<usize>| FakeReader {
            fake: self.fake.clone(),
            conn: self.id,
            rows,
            batches,
            sent: 0,
            panic_at,
        };
        let fake = self.fake.clone();
        let canceller = move || {
            fake.canceller_runs.fetch_add(1, Ordering::SeqCst);
        };
        match words.as_slice() {
            ["rows", rows, batches] => {
                let rows = rows
                    .parse()
                    .map_err(|_| DriverError::new(FakeError(sql.into())))?;
                let batches = batches
                    .parse()
                    .map_err(|_| DriverError::new(FakeError(sql.into())))?;
                Ok(Execution::new(Box::new(reader(Some(batches), rows, None)))
                    .with_statement_id(format!("fake-{}", params.len())))
            }
            ["endless"] => {
                Ok(Execution::new(Box::new(reader(None, 10, None))).with_canceller(canceller))
            }
            ["stuck"] => {
                Ok(Execution::new(Box::new(reader(None, 0, None))).with_canceller(canceller))
            }
            ["gate-read"] => {
                Ok(Execution::new(Box::new(reader(None, -1, None))).with_canceller(canceller))
            }
            ["panic"] => panic!("driver boom"),
            ["panic-mid"] => Ok(Execution::new(Box::new(reader(Some(5), 3, Some(1))))),
            ["fail"] => Err(DriverError::new(FakeError("syntax".into()))),
            ["break"] => Err(DriverError::broken(FakeError("connection reset".into()))),
            ["block"] => {
                for _ in 0..600 {
                    if cancel.wait_timeout(Duration::from_millis(100)) {
                        self.fake.canceled_in_execute.fetch_add(1, Ordering::SeqCst);
                        return Err(DriverError::new(FakeError("canceled".into())));
                    }
                }
                Err(DriverError::new(FakeError("never canceled".into())))
            }
            ["gate"] => {
                self.fake.in_gate.fetch_add(1, Ordering::SeqCst);
                let mut open = self.fake.gate_open.lock();
                while !*open {
                    self.fake
                        .gate_cv
                        .wait_for(&mut open, Duration::from_secs(30));
                }
                drop(open);
                self.fake.in_gate.fetch_sub(1, Ordering::SeqCst);
                Ok(Execution::new(Box::new(reader(Some(1), 1, None))))
            }
            _ => Err(DriverError::new(FakeError(format!("unknown {sql}")))),
        }
    }

    fn submit(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Submitted, DriverError> {
        match sql.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["slow", polls] => {
                self.fake.executed.lock().push(sql.to_owned());
                let polls = polls
                    .parse()
                    .map_err(|_| DriverError::new(FakeError(sql.into())))?;
                self.fake.submitted.fetch_add(1, Ordering::SeqCst);
                Ok(Submitted::Pending(Box::new(FakePending {
                    fake: self.fake.clone(),
                    conn: self.id,
                    polls_left: polls,
                    gated: false,
                })))
            }
            ["gated-poll"] => {
                self.fake.submitted.fetch_add(1, Ordering::SeqCst);
                Ok(Submitted::Pending(Box::new(FakePending {
                    fake: self.fake.clone(),
                    conn: self.id,
                    polls_left: 0,
                    gated: true,
                })))
            }
            _ => self.execute(sql, params, cancel).map(Submitted::Ready),
        }
    }

    fn ping(&mut self) -> Result<(), DriverError> {
        self.fake.pings.fetch_add(1, Ordering::SeqCst);
        if self.fake.panic_ping.load(Ordering::SeqCst) {
            panic!("ping boom");
        }
        if self.fake.dead.lock().contains(&self.id) {
            Err(DriverError::broken(FakeError("session gone".into())))
        } else {
            Ok(())
        }
    }

    fn close(self: Box<Self>) -> Result<(), DriverError> {
        self.fake.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn fake() -> (Arc<Fake>, FakeDriver) {
    let fake = Arc::new(Fake::default());
    (fake.clone(), FakeDriver(fake))
}

/// Runs a `gate` query that holds its worker (and session) until `fake.open_gate()`; returns
/// once it is inside the gate. The task yields the query's batches.
async fn hold_the_gate(
    executor: &Executor,
    fake: &Fake,
    what: &str,
) -> tokio::task::JoinHandle<Vec<RecordBatch>> {
    let e = executor.clone();
    let held = tokio::spawn(async move {
        let s = e.query("gate", &[]).await.expect("runs");
        s.try_collect::<Vec<_>>().await.expect("no error")
    });
    eventually(what, || fake.in_gate.load(Ordering::SeqCst) == 1).await;
    held
}

/// Waits (bounded: 10 s hang guard) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn values(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64 column")
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn batches_arrive_complete_and_in_order() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(2).build().expect("valid");
    let stream = executor
        .query("rows 4 3", &[Param::new("p", 1)])
        .await
        .expect("query runs");
    assert_eq!(stream.statement_id(), Some("fake-1"));
    assert_eq!(stream.schema(), schema());
    let batches: Vec<RecordBatch> = stream.try_collect().await.expect("no error");
    assert_eq!(values(&batches), (1000..1012).collect::<Vec<_>>());
    let m = executor.metrics();
    assert_eq!((m.submitted, m.completed, m.failed), (1, 1, 0));
    assert_eq!(m.rows, 12);
    assert!(m.bytes > 0);
    assert_eq!(m.queue_wait.count, 1);
    assert_eq!(m.checkout_wait.count, 1);
    assert_eq!((m.pool_in_use, m.pool_idle), (0, 1));
    assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
    // The session is reused.
    let again: Vec<RecordBatch> = executor
        .query("rows 1 1", &[])
        .await
        .expect("query runs")
        .try_collect()
        .await
        .expect("no error");
    assert_eq!(values(&again), vec![1000]);
    assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
    executor.shutdown();
    assert_eq!(
        fake.closes.load(Ordering::SeqCst),
        1,
        "shutdown closes the pool"
    );
}

#[tokio::test]
async fn driver_errors_are_typed_and_broken_sessions_discarded() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let err = executor.query("fail", &[]).await.expect_err("fails");
    assert_eq!(
        err.driver_error::<FakeError>().map(|e| e.0.as_str()),
        Some("syntax")
    );
    assert_eq!(
        executor.metrics().pool_idle,
        1,
        "a SQL error keeps the session"
    );
    let err = executor.query("break", &[]).await.expect_err("fails");
    assert!(matches!(&err, ExecutorError::Driver(d) if d.is_connection_broken()));
    let m = executor.metrics();
    assert_eq!((m.pool_idle, m.sessions_discarded, m.failed), (0, 1, 2));
    let batches: Vec<RecordBatch> = executor
        .query("rows 1 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("no error");
    assert_eq!(values(&batches), vec![2000], "runs on a new session");
    assert_eq!(fake.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_driver_panic_surfaces_as_an_error_and_the_executor_survives() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let err = executor.query("panic", &[]).await.expect_err("fails");
    match &err {
        ExecutorError::WorkerPanic { message } => assert_eq!(message, "driver boom"),
        other => panic!("expected WorkerPanic, got {other:?}"),
    }
    // A panic while streaming: the rows before it, then the error as the last item.
    let mut stream = executor.query("panic-mid", &[]).await.expect("starts");
    let first = stream.next().await.expect("an item").expect("first batch");
    assert_eq!(first.num_rows(), 3);
    let last = stream.next().await.expect("an item");
    assert!(
        matches!(&last, Err(ExecutorError::WorkerPanic { message }) if message == "reader boom"),
        "{last:?}"
    );
    assert!(stream.next().await.is_none());
    let m = executor.metrics();
    assert_eq!((m.panics, m.failed, m.sessions_discarded), (2, 2, 2));
    assert_eq!(m.running, 0);
    // The same single worker still runs queries.
    let batches: Vec<RecordBatch> = executor
        .query("rows 2 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("no error");
    assert_eq!(values(&batches), vec![3000, 3001]);
    assert_eq!(fake.connects.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_full_queue_overloads_and_a_long_wait_times_out() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .queue_depth(1)
        .queue_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    let held = hold_the_gate(&executor, &fake, "the worker is busy").await;
    let e = executor.clone();
    let queued = tokio::spawn(async move { e.query("rows 1 1", &[]).await.map(|_| ()) });
    eventually("one query waits", || executor.metrics().queued == 1).await;
    let err = executor.query("rows 1 1", &[]).await.expect_err("full");
    assert!(matches!(err, ExecutorError::Overloaded { queue_depth: 1 }));
    assert!(err.is_resource_exhausted());
    let err = queued.await.expect("task").expect_err("times out");
    assert!(
        matches!(err, ExecutorError::QueueTimeout { waited, .. } if waited >= Duration::from_millis(300))
    );
    fake.open_gate();
    assert_eq!(held.await.expect("task").len(), 1);
    let m = executor.metrics();
    assert_eq!((m.overloaded, m.queue_timeouts, m.queued), (1, 1, 0));
    assert_eq!(
        *fake.executed.lock(),
        vec!["gate".to_owned()],
        "the timed-out query never ran"
    );
}

#[tokio::test]
async fn checkout_times_out_when_the_pool_is_exhausted() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(2)
        .pool_size(1)
        .pool_timeout(Duration::from_millis(200))
        .build()
        .expect("valid");
    let held = hold_the_gate(&executor, &fake, "the session is in use").await;
    let err = executor
        .query("rows 1 1", &[])
        .await
        .expect_err("no session");
    assert!(matches!(
        err,
        ExecutorError::PoolTimeout {
            pool_size: 1,
            max_overflow: 0,
            ..
        }
    ));
    assert_eq!(executor.metrics().pool_in_use, 1);
    fake.open_gate();
    held.await.expect("task");
    assert_eq!(executor.metrics().pool_timeouts, 1);
    assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn overflow_sessions_open_under_load_and_close_on_return() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .pool_size(1)
        .max_overflow(1)
        .build()
        .expect("valid");
    assert_eq!(executor.metrics().threads, 2, "threads follow the pool");
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let e = executor.clone();
            tokio::spawn(async move {
                let s = e.query("gate", &[]).await.expect("runs");
                s.try_collect::<Vec<_>>().await.expect("no error")
            })
        })
        .collect();
    eventually("both run", || fake.in_gate.load(Ordering::SeqCst) == 2).await;
    let m = executor.metrics();
    assert_eq!((m.pool_in_use, m.pool_overflow), (2, 1));
    fake.open_gate();
    for t in tasks {
        t.await.expect("task");
    }
    eventually("sessions returned", || executor.metrics().pool_in_use == 0).await;
    let m = executor.metrics();
    assert_eq!((m.pool_idle, m.pool_overflow, m.sessions_closed), (1, 0, 1));
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pre_ping_discards_broken_sessions() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .pre_ping(true)
        .build()
        .expect("valid");
    let first: Vec<RecordBatch> = executor
        .query("rows 1 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("ok");
    assert_eq!(values(&first), vec![1000]);
    assert_eq!(
        fake.pings.load(Ordering::SeqCst),
        0,
        "a new session is not pinged"
    );
    fake.dead.lock().insert(1);
    let second: Vec<RecordBatch> = executor
        .query("rows 1 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("ok");
    assert_eq!(values(&second), vec![2000], "ran on a fresh session");
    assert_eq!(fake.pings.load(Ordering::SeqCst), 1);
    assert_eq!(executor.metrics().sessions_discarded, 1);
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pool_recycle_replaces_old_sessions() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .pool_recycle(Some(Duration::from_millis(1)))
        .build()
        .expect("valid");
    for expected in [1000, 2000] {
        let b: Vec<RecordBatch> = executor
            .query("rows 1 1", &[])
            .await
            .expect("runs")
            .try_collect()
            .await
            .expect("ok");
        assert_eq!(values(&b), vec![expected]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(executor.metrics().sessions_closed, 1);
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_a_queued_future_leaves_the_queue() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let held = hold_the_gate(&executor, &fake, "the worker is busy").await;
    let e = executor.clone();
    let queued = tokio::spawn(async move { e.query("rows 1 1", &[]).await.map(|_| ()) });
    eventually("one query waits", || executor.metrics().queued == 1).await;
    queued.abort();
    eventually("the queue is empty", || executor.metrics().queued == 0).await;
    fake.open_gate();
    held.await.expect("task");
    assert_eq!(*fake.executed.lock(), vec!["gate".to_owned()]);
    assert_eq!(executor.metrics().cancellations, 1);
}

#[tokio::test]
async fn dropping_the_future_of_a_running_statement_cancels_it() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let e = executor.clone();
    let running = tokio::spawn(async move { e.query("block", &[]).await.map(|_| ()) });
    eventually("it runs", || executor.metrics().running == 1).await;
    running.abort();
    eventually("the driver saw the cancel", || {
        fake.canceled_in_execute.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the session returns", || executor.metrics().pool_idle == 1).await;
    assert_eq!(executor.metrics().cancellations, 1);
    assert_eq!(executor.metrics().failed, 0, "a cancel is not a failure");
}

#[tokio::test]
async fn backpressure_blocks_the_worker_and_dropping_the_stream_cancels() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(2)
        .build()
        .expect("valid");
    let mut stream = executor.query("endless", &[]).await.expect("runs");
    let first = stream.next().await.expect("item").expect("batch");
    assert_eq!(first.num_rows(), 10);
    // Paused consumer: the worker fills the buffer and blocks; rows stop growing.
    eventually("the buffer is full", || executor.metrics().rows >= 3 * 10).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            executor.metrics().rows <= 4 * 10,
            "the producer is bounded by the buffer"
        );
    }
    drop(stream);
    eventually("the reader is dropped", || {
        fake.readers_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the worker is free", || executor.metrics().running == 0).await;
    let m = executor.metrics();
    assert_eq!((m.cancellations, m.pool_idle, m.completed), (1, 1, 0));
}

#[tokio::test]
async fn dropping_the_stream_interrupts_a_reader_blocked_in_the_driver() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let stream = executor.query("stuck", &[]).await.expect("runs");
    eventually("the reader blocks", || fake.stuck.load(Ordering::SeqCst)).await;
    drop(stream);
    eventually("the canceller ran", || {
        fake.canceller_runs.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the worker is free", || executor.metrics().running == 0).await;
    assert_eq!(fake.readers_dropped.load(Ordering::SeqCst), 1);
    let m = executor.metrics();
    assert_eq!(
        (m.cancellations, m.pool_idle, m.completed, m.failed),
        (1, 1, 0, 0)
    );
}

#[tokio::test]
async fn shutdown_fails_queued_queries_and_joins() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let e = executor.clone();
    let running = tokio::spawn(async move { e.query("block", &[]).await.map(|_| ()) });
    eventually("it runs", || executor.metrics().running == 1).await;
    let e = executor.clone();
    let queued = tokio::spawn(async move { e.query("rows 1 1", &[]).await.map(|_| ()) });
    eventually("one query waits", || executor.metrics().queued == 1).await;
    let e = executor.clone();
    tokio::task::spawn_blocking(move || e.shutdown())
        .await
        .expect("shutdown returns");
    assert!(matches!(
        queued.await.expect("task"),
        Err(ExecutorError::Shutdown)
    ));
    assert!(matches!(
        running.await.expect("task"),
        Err(ExecutorError::Shutdown)
    ));
    assert_eq!(fake.canceled_in_execute.load(Ordering::SeqCst), 1);
    assert!(matches!(
        executor.query("rows 1 1", &[]).await,
        Err(ExecutorError::Shutdown)
    ));
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_configurations_are_rejected() {
    let build = |b: ExecutorBuilder| b.build().map(|_| ()).map_err(|e| e.to_string());
    let (_, driver) = fake();
    let d = || Executor::builder(driver.clone());
    assert!(
        build(d().threads(0))
            .expect_err("zero")
            .contains("threads must be at least 1")
    );
    assert!(
        build(d().threads(4).pool_size(4).max_overflow(2))
            .expect_err("too many sessions")
            .contains("exceeds threads")
    );
    assert!(
        build(d().threads(10).pool_size(2))
            .expect_err("too many threads")
            .contains("twice")
    );
    assert!(
        build(d().queue_depth(0))
            .expect_err("zero")
            .contains("queue_depth")
    );
    assert!(
        build(d().stream_buffer(0))
            .expect_err("zero")
            .contains("stream_buffer")
    );
    assert!(
        build(d().queue_timeout(Duration::ZERO))
            .expect_err("zero")
            .contains("queue_timeout")
    );
    assert!(build(d()).is_ok());
    assert!(build(d().threads(3).pool_size(2)).is_ok());
    // Submit-and-poll workers read results without a session: fewer sessions are fine.
    assert_eq!(
        build(
            d().mode(ExecutionMode::SubmitAndPoll)
                .threads(8)
                .pool_size(2)
        ),
        Ok(())
    );
}

#[tokio::test]
async fn submit_and_poll_runs_more_statements_than_threads() {
    const QUERIES: usize = 20;
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .poll_interval(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid");
    // Hold the results until all are submitted: every statement is in flight at once.
    let tasks: Vec<_> = (0..QUERIES)
        .map(|_| {
            let e = executor.clone();
            tokio::spawn(async move { e.query("slow 1000000", &[]).await.map(|_| ()) })
        })
        .collect();
    eventually("all statements are submitted", || {
        fake.submitted.load(Ordering::SeqCst) == QUERIES
    })
    .await;
    eventually("the poller tracks them all", || {
        executor.metrics().polling == QUERIES
    })
    .await;
    let m = executor.metrics();
    assert_eq!((m.running, m.pool_in_use, m.pool_idle), (0, 0, 1), "{m:?}");
    assert_eq!(m.peak_polling, QUERIES as u64);
    // Dropping the futures cancels the statements on the server.
    for t in &tasks {
        t.abort();
    }
    eventually("every statement is canceled", || {
        fake.pending_canceled.load(Ordering::SeqCst) == QUERIES
    })
    .await;
    eventually("nothing is polled", || executor.metrics().polling == 0).await;

    // Short statements complete, each read by the single worker.
    let tasks: Vec<_> = (0..QUERIES)
        .map(|_| {
            let e = executor.clone();
            tokio::spawn(async move {
                let s = e.query("slow 3", &[]).await.expect("runs");
                s.try_collect::<Vec<_>>().await.expect("completes")
            })
        })
        .collect();
    for t in tasks {
        let batches = t.await.expect("task");
        assert_eq!(values(&batches), vec![1000, 1001]);
    }
    let m = executor.metrics();
    assert_eq!(m.completed, QUERIES as u64);
    assert!(fake.polls.load(Ordering::SeqCst) >= 4 * QUERIES);
    assert_eq!(
        fake.connects.load(Ordering::SeqCst),
        1,
        "one session submits them all"
    );
}

#[tokio::test]
async fn submit_and_poll_falls_back_to_waiting_for_drivers_without_submit() {
    let (_, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .build()
        .expect("valid");
    let batches: Vec<RecordBatch> = executor
        .query("rows 2 2", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("completes");
    assert_eq!(values(&batches), vec![1000, 1001, 1002, 1003]);
}

#[tokio::test]
async fn identities_take_turns_and_have_their_own_bound() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .queue_depth(8)
        .queue_depth_per_identity(3)
        .build()
        .expect("valid");
    let e = executor.clone();
    let held = tokio::spawn(async move {
        let s = e.query_as("heavy", "gate", &[]).await.expect("runs");
        s.try_collect::<Vec<_>>().await.expect("no error")
    });
    eventually("the worker is busy", || {
        fake.in_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut tasks = Vec::new();
    for (n, (identity, sql)) in [
        ("heavy", "rows 1 1"),
        ("heavy", "rows 1 1"),
        ("heavy", "rows 1 1"),
        ("light", "rows 2 1"),
    ]
    .into_iter()
    .enumerate()
    {
        let e = executor.clone();
        tasks.push(tokio::spawn(async move {
            let s = e.query_as(identity, sql, &[]).await.expect("runs");
            s.try_collect::<Vec<_>>().await.expect("no error")
        }));
        eventually("queued", || executor.metrics().queued == n + 1).await;
    }
    let err = executor
        .query_as("heavy", "rows 1 1", &[])
        .await
        .expect_err("heavy is at its bound");
    assert!(matches!(err, ExecutorError::Overloaded { .. }));
    fake.open_gate();
    held.await.expect("task");
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        *fake.executed.lock(),
        vec!["gate", "rows 1 1", "rows 2 1", "rows 1 1", "rows 1 1"],
        "the light identity does not wait behind every heavy query"
    );
}

#[tokio::test]
async fn query_stream_is_lazy_and_reports_errors_as_items() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let stream = executor.query_stream("", "rows 3 2", Vec::new());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        fake.executed.lock().is_empty(),
        "nothing runs before the first poll"
    );
    let batches: Vec<RecordBatch> = stream.try_collect().await.expect("completes");
    assert_eq!(values(&batches), (1000..1006).collect::<Vec<_>>());
    let mut failing = executor.query_stream("", "fail", Vec::new());
    assert!(matches!(
        failing.next().await,
        Some(Err(ExecutorError::Driver(_)))
    ));
    assert!(failing.next().await.is_none());
}

/// Runs `f` on its own thread and waits for it (hang guard: 10 s). Panics if it does not
/// return: the operation blocked.
fn returns_on_its_own(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        panic!("{what} blocked");
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_paused_consumer() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let mut stream = executor.query("endless", &[]).await.expect("runs");
    stream.next().await.expect("an item").expect("a batch");
    // The consumer pauses: the worker fills the buffer and waits for room.
    eventually("the buffer is full", || executor.metrics().rows >= 2 * 10).await;
    // Only the stream keeps the executor's state alive now.
    returns_on_its_own("shutdown with a paused consumer", move || {
        executor.shutdown();
    });
    // The consumer sees the rows already buffered, then an error: never a silent end.
    let mut last = None;
    for _ in 0..10 {
        match stream.next().await {
            Some(Ok(_)) => continue,
            other => {
                last = Some(other);
                break;
            }
        }
    }
    assert!(
        matches!(last, Some(Some(Err(ExecutorError::Shutdown)))),
        "{last:?}"
    );
    assert!(stream.next().await.is_none());
    assert_eq!(fake.readers_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_consumer_does_not_keep_a_canceled_query_running() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let stream = executor.query("endless", &[]).await.expect("runs");
    // Reads as fast as it can, forever (bounded: 100 000 batches).
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        let mut batches = 0_usize;
        for _ in 0..100_000 {
            match stream.next().await {
                Some(Ok(_)) => batches += 1,
                other => return (batches, other.map(|r| r.map(|_| ()))),
            }
        }
        (batches, None)
    });
    eventually("batches flow", || executor.metrics().rows >= 100).await;
    returns_on_its_own("shutdown with an endless reader", move || {
        executor.shutdown();
    });
    let (batches, last) = reader.await.expect("task");
    assert!(batches >= 10);
    assert!(
        matches!(last, Some(Err(ExecutorError::Shutdown))),
        "{batches} batches, then {last:?}"
    );
    assert_eq!(fake.readers_dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_the_last_clone_on_a_runtime_thread_does_not_block() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let mut stream = executor.query("gate-read", &[]).await.expect("runs");
    stream.next().await.expect("an item").expect("a batch");
    eventually("the reader blocks in the driver", || {
        fake.in_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    // Hang guard: the gate opens by itself after 10 s.
    let done = Arc::new(AtomicBool::new(false));
    let guard = {
        let (fake, done) = (fake.clone(), done.clone());
        std::thread::spawn(move || {
            for _ in 0..1000 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            fake.open_gate();
        })
    };
    // The stream holds the last handle once the executor is dropped; dropping it on this
    // runtime thread must not wait for the driver call (nor join any thread).
    drop(executor);
    drop(stream);
    assert_eq!(
        fake.in_gate.load(Ordering::SeqCst),
        1,
        "dropping the last handle waited for the running driver call"
    );
    done.store(true, Ordering::SeqCst);
    guard.join().expect("guard thread");
    // The teardown runs in the background: it cancels the query and closes the session.
    eventually("the query is canceled", || {
        fake.canceller_runs.load(Ordering::SeqCst) == 1
    })
    .await;
    fake.open_gate();
    eventually("the session is closed", || {
        fake.closes.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_stream_keeps_its_executor_alive() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver).threads(1).build().expect("valid");
    let stream = executor.query("rows 4 3", &[]).await.expect("runs");
    // The caller drops its executor handle (e.g. a cache evicts it) while the stream is read.
    drop(executor);
    let batches: Vec<RecordBatch> = stream.try_collect().await.expect("every batch, no error");
    assert_eq!(values(&batches), (1000..1012).collect::<Vec<_>>());
    // The stream held the last handle: the executor shuts down after it, in the background.
    eventually("the session is closed", || {
        fake.closes.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_panic_in_connect_or_ping_does_not_leak_a_pool_slot() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .pre_ping(true)
        .pool_timeout(Duration::from_secs(5))
        .build()
        .expect("valid");
    let run = |sql: &'static str| {
        let e = executor.clone();
        async move {
            let s = e.query(sql, &[]).await?;
            s.try_collect::<Vec<_>>().await
        }
    };
    fake.panic_connects.store(1, Ordering::SeqCst);
    let err = run("rows 1 1").await.expect_err("connect panics");
    assert!(
        matches!(&err, ExecutorError::WorkerPanic { message } if message == "connect boom"),
        "{err:?}"
    );
    let batches = run("rows 1 1").await.expect("the slot is free again");
    assert_eq!(values(&batches), vec![1000]);
    fake.panic_ping.store(true, Ordering::SeqCst);
    let err = run("rows 1 1").await.expect_err("ping panics");
    assert!(
        matches!(&err, ExecutorError::WorkerPanic { message } if message == "ping boom"),
        "{err:?}"
    );
    fake.panic_ping.store(false, Ordering::SeqCst);
    let batches = run("rows 1 1").await.expect("the slot is free again");
    assert_eq!(values(&batches), vec![2000], "a fresh session");
    let m = executor.metrics();
    assert_eq!((m.pool_in_use, m.pool_idle, m.pool_timeouts), (0, 1, 0));
}

#[tokio::test]
async fn a_statement_finishing_during_shutdown_still_answers_its_query() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .build()
        .expect("valid");
    let e = executor.clone();
    let query = tokio::spawn(async move { e.query("gated-poll", &[]).await.map(|_| ()) });
    eventually("the poller polls the statement", || {
        fake.in_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    let shutdown = std::thread::spawn(move || executor.shutdown());
    // The teardown closed the idle session: the executor is marked shut down.
    eventually("the teardown started", || {
        fake.closes.load(Ordering::SeqCst) == 1
    })
    .await;
    // Now the statement finishes.
    fake.open_gate();
    let result = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query is answered")
        .expect("task");
    assert!(matches!(result, Err(ExecutorError::Shutdown)), "{result:?}");
    shutdown.join().expect("shutdown returns");
}

#[test]
fn huge_sizes_are_rejected_not_overflowed() {
    let (_, driver) = fake();
    let err = Executor::builder(driver.clone())
        .pool_size(usize::MAX)
        .max_overflow(1)
        .build()
        .expect_err("too large");
    assert!(err.to_string().contains("too large"), "{err}");
    let err = Executor::builder(driver.clone())
        .threads(4)
        .pool_size(usize::MAX)
        .max_overflow(usize::MAX)
        .build()
        .expect_err("too large");
    assert!(err.to_string().contains("exceeds threads"), "{err}");
    let err = Executor::builder(driver)
        .pool_timeout(Duration::ZERO)
        .build()
        .expect_err("zero");
    assert_eq!(
        err.to_string(),
        "invalid executor configuration: pool_timeout must be positive"
    );
}

#[tokio::test]
async fn a_panic_while_canceling_a_statement_does_not_stop_the_poller() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .poll_interval(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid");
    fake.panic_cancel.store(true, Ordering::SeqCst);
    let e = executor.clone();
    let dropped = tokio::spawn(async move { e.query("slow 1000000", &[]).await.map(|_| ()) });
    eventually("the statement is polled", || {
        executor.metrics().polling == 1
    })
    .await;
    dropped.abort();
    eventually("the cancel ran", || {
        fake.pending_canceled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("nothing is polled", || executor.metrics().polling == 0).await;
    // The poller still tracks new statements to their end.
    let batches = tokio::time::timeout(Duration::from_secs(10), async {
        let s = executor.query("slow 2", &[]).await.expect("runs");
        s.try_collect::<Vec<_>>().await.expect("completes")
    })
    .await
    .expect("the poller still runs");
    assert_eq!(values(&batches), vec![1000, 1001]);
}

#[tokio::test]
async fn a_query_that_times_out_in_the_queue_counts_as_starved() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .queue_timeout(Duration::from_millis(200))
        .starvation_threshold(Duration::from_millis(50))
        .build()
        .expect("valid");
    let held = hold_the_gate(&executor, &fake, "the worker is busy").await;
    let err = executor
        .query("rows 1 1", &[])
        .await
        .expect_err("times out");
    assert!(matches!(err, ExecutorError::QueueTimeout { .. }), "{err:?}");
    let m = executor.metrics();
    assert_eq!((m.queue_timeouts, m.starved), (1, 1), "{m:?}");
    fake.open_gate();
    held.await.expect("task");
    assert_eq!(executor.metrics().starved, 1, "the gate query did not wait");
}

#[tokio::test]
async fn dropping_a_finished_stream_before_its_end_is_no_cancellation() {
    let (_, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(4)
        .build()
        .expect("valid");
    let mut stream = executor.query("rows 2 1", &[]).await.expect("runs");
    let batch = stream.next().await.expect("an item").expect("a batch");
    assert_eq!(values(&[batch]), vec![1000, 1001]);
    // The worker is done; the consumer stops without reading the end.
    eventually("the query completed", || executor.metrics().completed == 1).await;
    drop(stream);
    // A later query runs through the same (single) worker: the drop was fully handled.
    let again: Vec<RecordBatch> = executor
        .query("rows 1 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("completes");
    assert_eq!(values(&again), vec![1000]);
    let m = executor.metrics();
    assert_eq!((m.completed, m.cancellations, m.failed), (2, 0, 0), "{m:?}");
}

#[tokio::test]
async fn a_panic_outside_a_driver_call_ends_the_stream_and_keeps_the_worker() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .queue_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid");
    fake.panic_statement_id.store(true, Ordering::SeqCst);
    let err = executor.query("slow 1", &[]).await.expect_err("panics");
    assert!(matches!(err, ExecutorError::Incomplete), "{err:?}");
    fake.panic_statement_id.store(false, Ordering::SeqCst);
    // The single worker survived.
    let batches: Vec<RecordBatch> = executor
        .query("slow 1", &[])
        .await
        .expect("runs")
        .try_collect()
        .await
        .expect("completes");
    assert_eq!(values(&batches), vec![1000, 1001]);
    let m = executor.metrics();
    assert_eq!((m.panics, m.running, m.polling), (1, 0, 0), "{m:?}");
}

/// Reads one batch of a 20-batch result, then leaves the stream unread (a slow consumer).
async fn read_one_and_pause(executor: &Executor) -> QueryStream {
    let mut stream = executor.query("rows 10 20", &[]).await.expect("runs");
    let first = stream.next().await.expect("a batch").expect("no error");
    assert_eq!(first.num_rows(), 10);
    stream
}

#[tokio::test]
async fn a_slow_consumer_parks_its_result_and_frees_the_worker() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let mut slow = read_one_and_pause(&executor).await;
    eventually("the result parks", || executor.metrics().parked == 1).await;
    assert_eq!(executor.metrics().running, 0, "the worker is free");

    // The one worker serves another query meanwhile.
    let other = executor.query("rows 3 2", &[]).await.expect("runs");
    let other: Vec<RecordBatch> = other.try_collect().await.expect("no error");
    assert_eq!(other.iter().map(RecordBatch::num_rows).sum::<usize>(), 6);

    // The slow consumer goes on and gets every row, in order, with no gap.
    let rest: Vec<RecordBatch> = (&mut slow).try_collect().await.expect("no error");
    let values = values(&rest);
    assert_eq!(values.len(), 190);
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1), "{values:?}");
    let m = executor.metrics();
    assert!(m.parks >= 1, "{m:?}");
    assert_eq!((m.parked, m.completed, m.failed), (0, 2, 0));
    assert_eq!(fake.readers_dropped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_parking_places_a_slow_consumer_keeps_its_worker() {
    let (_fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .max_parked(0)
        .queue_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    let slow = read_one_and_pause(&executor).await;
    eventually("the worker waits on the full buffer", || {
        executor.metrics().running == 1
    })
    .await;
    let other = executor.query("rows 3 2", &[]).await;
    assert!(
        matches!(other, Err(ExecutorError::QueueTimeout { .. })),
        "{other:?}"
    );
    assert_eq!(executor.metrics().parks, 0);
    drop(slow);
}

#[tokio::test]
async fn a_parked_result_dropped_or_shut_down_releases_its_reader() {
    let (fake, driver) = fake();
    let executor = Executor::builder(driver)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let dropped = read_one_and_pause(&executor).await;
    eventually("the result parks", || executor.metrics().parked == 1).await;
    drop(dropped);
    eventually("its reader is released", || {
        fake.readers_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(executor.metrics().parked, 0);

    let mut shut = read_one_and_pause(&executor).await;
    eventually("the result parks", || executor.metrics().parked == 1).await;
    let e = executor.clone();
    tokio::task::spawn_blocking(move || e.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(fake.readers_dropped.load(Ordering::SeqCst), 2);
    let mut last = None;
    while let Some(item) = shut.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(ExecutorError::Shutdown))),
        "a parked result ends with Shutdown, not as complete: {last:?}"
    );
}
