//! Cancellation: every way a consumer can stop early — a stream dropped mid-result, a LIMIT
//! satisfied after a few batches, a timeout around the query, a future dropped while queued or
//! while the statement runs, a driver statement timeout — leaves no statement PENDING or
//! RUNNING on the warehouse (checked through the emulator's statement history) and returns
//! every worker and session to the executor.
//!
//! Each test prints a `cancel:` line with the statements it canceled or closed.

use std::time::Duration;

use arrow::array::RecordBatch;
use dbfed_emulator::{
    BackgroundEmulator, Emulator, EmulatorBuilder, StatementRecord, StatementState,
};
use dbfed_executor::{DatabricksDriver, ExecutionMode, Executor, ExecutorBuilder, ExecutorError};
use futures::{StreamExt, TryStreamExt};

use crate::support::{client_builder, runtime, start};

/// ~60 000 rows in 120 chunks of 500.
const LONG: &str = "SELECT l_orderkey, l_partkey, l_comment FROM samples.tpch.lineitem";

fn setup(
    emulator: EmulatorBuilder,
    threads: usize,
    mode: ExecutionMode,
) -> (BackgroundEmulator, Executor) {
    setup_with(emulator, threads, mode, |b| b)
}

/// [`setup`] whose executor `tweak` adjusts.
fn setup_with(
    emulator: EmulatorBuilder,
    threads: usize,
    mode: ExecutionMode,
    tweak: impl FnOnce(ExecutorBuilder) -> ExecutorBuilder,
) -> (BackgroundEmulator, Executor) {
    let emulator = start(emulator.chunk_rows(500));
    let client = client_builder(&emulator)
        .download_threads(2)
        .prefetch_bytes(64 << 10)
        .build()
        .expect("client builds");
    let executor = tweak(
        Executor::builder(
            DatabricksDriver::new(client)
                .poll_interval(Duration::from_millis(5), Duration::from_millis(50)),
        )
        .threads(threads)
        .pool_size(threads)
        .queue_depth(64)
        .mode(mode),
    )
    .build()
    .expect("executor builds");
    (emulator, executor)
}

/// Waits (hang guard: 20 s) until every statement the warehouse saw was released — CANCELED
/// (stopped while running) or CLOSED (its result freed) — and the executor is idle; returns
/// how many ended each way. Every query of these tests stops early, so a statement left
/// PENDING, RUNNING or even SUCCEEDED-and-unreleased fails the test.
fn assert_released(
    what: &str,
    emulator: &BackgroundEmulator,
    executor: &Executor,
) -> (usize, usize) {
    let released =
        |s: &StatementRecord| matches!(s.state, StatementState::Canceled | StatementState::Closed);
    for _ in 0..1000 {
        let statements = emulator.statements();
        let m = executor.metrics();
        if statements.iter().all(released)
            && m.running == 0
            && m.queued == 0
            && m.polling == 0
            && m.pool_in_use == 0
        {
            let canceled = statements
                .iter()
                .filter(|s| s.state == StatementState::Canceled)
                .count();
            eprintln!(
                "cancel: {what}: {} statements, {canceled} canceled, {} closed, executor \
                 cancellations {}, sessions in use 0 of {} open",
                statements.len(),
                statements.len() - canceled,
                m.cancellations,
                m.pool_idle + m.pool_in_use
            );
            return (canceled, statements.len() - canceled);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = emulator
        .statements()
        .into_iter()
        .filter(|s| !released(s))
        .map(|s| (s.id, s.state))
        .collect();
    panic!("{what}: not released: {left:?}, {:?}", executor.metrics());
}

#[test]
fn streams_dropped_mid_result_release_their_statements() {
    let rt = runtime();
    for mode in [ExecutionMode::ThreadPerQuery, ExecutionMode::SubmitAndPoll] {
        let (emulator, executor) = setup(Emulator::builder(), 4, mode);
        let read: Vec<usize> = rt.block_on(async {
            let tasks: Vec<_> = (0..12usize)
                .map(|i| {
                    let executor = executor.clone();
                    tokio::spawn(async move {
                        let mut stream = executor.query(LONG, &[]).await.expect("runs");
                        // Drop after 1..=12 batches: at many points of the result.
                        let mut rows = 0;
                        for _ in 0..=i {
                            let batch = stream.next().await.expect("an item").expect("a batch");
                            rows += batch.num_rows();
                        }
                        drop(stream);
                        rows
                    })
                })
                .collect();
            let mut read = Vec::new();
            for t in tasks {
                read.push(t.await.expect("task"));
            }
            read
        });
        assert!(read.iter().all(|&r| r > 0 && r < 60_000), "{read:?}");
        let (canceled, closed) =
            assert_released(&format!("{mode:?} drop mid-result"), &emulator, &executor);
        assert_eq!(
            canceled + closed,
            12,
            "every dropped statement was released"
        );
        assert!(
            executor.metrics().cancellations >= 12,
            "{:?}",
            executor.metrics()
        );
    }
}

#[test]
fn a_satisfied_limit_stops_the_query_early() {
    let rt = runtime();
    let (emulator, executor) = setup(Emulator::builder(), 2, ExecutionMode::ThreadPerQuery);
    let rows: usize = rt.block_on(async {
        let stream = executor.query(LONG, &[]).await.expect("runs");
        // What a LIMIT 1200 operator above the scan does: take batches until it has enough.
        let batches: Vec<RecordBatch> = stream
            .try_take_while({
                let mut seen = 0usize;
                move |b| {
                    let more = seen < 1_200;
                    seen += b.num_rows();
                    futures::future::ready(Ok(more))
                }
            })
            .try_collect()
            .await
            .expect("batches");
        batches.iter().map(RecordBatch::num_rows).sum()
    });
    assert!((1_200..60_000).contains(&rows), "{rows}");
    let (canceled, closed) = assert_released("LIMIT satisfied", &emulator, &executor);
    assert_eq!(canceled + closed, 1);
    let record = &emulator.statements()[0];
    assert!(
        record.chunks_served < record.chunks as u64,
        "downloads stopped early: {} of {} chunks served",
        record.chunks_served,
        record.chunks
    );
}

#[test]
fn timeouts_around_running_queries_cancel_them_on_the_warehouse() {
    let rt = runtime();
    // Statements take 3 s on the warehouse: the caller gives up after 300 ms.
    let (emulator, executor) = setup(
        Emulator::builder().statement_latency(Duration::from_secs(3)),
        4,
        ExecutionMode::ThreadPerQuery,
    );
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let executor = executor.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(300), async {
                        let s = executor.query(LONG, &[]).await?;
                        s.try_collect::<Vec<RecordBatch>>().await
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.expect("task").is_err(), "the timeout fired first");
        }
    });
    let (canceled, _) = assert_released("timeout while running", &emulator, &executor);
    // A statement submitted before the timeout is canceled; one not yet submitted never ran.
    let statements = emulator.statements();
    assert_eq!(canceled, statements.len(), "{statements:?}");
}

#[test]
fn futures_dropped_while_queued_never_reach_the_warehouse() {
    let rt = runtime();
    // Without parking places, a paused consumer keeps its worker.
    let (emulator, executor) =
        setup_with(Emulator::builder(), 1, ExecutionMode::ThreadPerQuery, |b| {
            b.max_parked(0)
        });
    rt.block_on(async {
        // The only worker is held by a paused consumer.
        let mut holder = executor.query(LONG, &[]).await.expect("runs");
        holder.next().await.expect("an item").expect("a batch");
        let queued: Vec<_> = (0..10)
            .map(|_| {
                let executor = executor.clone();
                tokio::spawn(async move { executor.query("SELECT 1", &[]).await.map(|_| ()) })
            })
            .collect();
        for _ in 0..500 {
            if executor.metrics().queued == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(executor.metrics().queued, 10);
        for t in &queued {
            t.abort();
        }
        for t in queued {
            assert!(t.await.is_err_and(|e| e.is_cancelled()));
        }
        for _ in 0..500 {
            if executor.metrics().queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            executor.metrics().queued,
            0,
            "dropped futures leave the queue"
        );
        drop(holder);
    });
    let (canceled, closed) = assert_released("futures dropped while queued", &emulator, &executor);
    assert_eq!(
        emulator.statements().len(),
        1,
        "no queued query reached the warehouse"
    );
    assert_eq!(canceled + closed, 1);
}

#[test]
fn a_driver_statement_timeout_is_typed_and_cancels_on_the_warehouse() {
    let rt = runtime();
    let emulator = start(Emulator::builder().statement_latency(Duration::from_secs(5)));
    let client = client_builder(&emulator).build().expect("client builds");
    let executor = Executor::builder(
        DatabricksDriver::new(client)
            .poll_interval(Duration::from_millis(5), Duration::from_millis(50))
            .statement_timeout(Some(Duration::from_millis(300))),
    )
    .threads(2)
    .build()
    .expect("executor builds");
    let error: ExecutorError = rt.block_on(async {
        match executor.query("SELECT 1", &[]).await {
            Ok(s) => s
                .try_collect::<Vec<RecordBatch>>()
                .await
                .expect_err("the statement times out"),
            Err(e) => e,
        }
    });
    let db = error
        .driver_error::<dbfed_databricks::Error>()
        .unwrap_or_else(|| panic!("a typed driver error: {error:?}"));
    assert!(db.is_timeout(), "{db:?}");
    let (canceled, _) = assert_released("driver statement timeout", &emulator, &executor);
    assert_eq!(canceled, 1);
}
