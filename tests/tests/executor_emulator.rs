//! The executor over the Databricks driver against the emulator: bounded threads under many
//! concurrent queries, admission and pool limits, cancel on drop seen by the warehouse,
//! backpressure, and pre-ping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use dbfed_databricks::{Client, Param, ResultFormat};
use dbfed_emulator::{BackgroundEmulator, Emulator, StatementState};
use dbfed_executor::{
    DatabricksDriver, ExecutionMode, Executor, ExecutorBuilder, ExecutorError, QueryStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::support::{TOKEN, WAREHOUSE, client_builder, runtime, start, wait_for_record};

fn executor(client: Client) -> ExecutorBuilder {
    Executor::builder(
        DatabricksDriver::new(client)
            .poll_interval(Duration::from_millis(5), Duration::from_millis(50)),
    )
}

fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = cast(b.column(column), &DataType::Int64).expect("castable to int64");
            c.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// Runs `queries` copies of `sql` at once (query `i` binds `:k` to `i % 25`), drains every stream
/// and returns each query's key with the first column's values.
fn run_concurrently(
    rt: &tokio::runtime::Runtime,
    executor: &Executor,
    queries: usize,
    sql: &'static str,
) -> Vec<(i64, Vec<i64>)> {
    rt.block_on(async {
        let tasks: Vec<_> = (0..queries as i64)
            .map(|i| {
                let executor = executor.clone();
                tokio::spawn(async move {
                    let key = i % 25;
                    let stream = executor
                        .query(sql, &[Param::new("k", key)])
                        .await
                        .expect("the query runs");
                    let batches: Vec<RecordBatch> =
                        stream.try_collect().await.expect("the stream completes");
                    (key, ints(&batches, 0))
                })
            })
            .collect();
        let mut results = Vec::with_capacity(queries);
        for task in tasks {
            results.push(task.await.expect("the task does not panic"));
        }
        results
    })
}

/// OS threads of this process.
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs is mounted")
        .count()
}

/// Waits (hang guard: 10 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn no_statement_running(emulator: &BackgroundEmulator) -> bool {
    emulator.statements().iter().all(|r| r.state.is_terminal())
}

/// A query whose result has many small chunks: a paused consumer of it holds its worker and
/// session indefinitely (the worker blocks on the full stream buffer).
const MANY_CHUNKS: &str =
    "SELECT l_orderkey, l_linenumber FROM samples.tpch.lineitem ORDER BY l_orderkey, l_linenumber";

#[test]
fn hundreds_of_concurrent_queries_run_on_a_bounded_number_of_threads() {
    const QUERIES: usize = 400;
    const THREADS: usize = 8;
    let emulator = start(
        Emulator::builder()
            .statement_latency(Duration::from_millis(20))
            .max_concurrent_statements(THREADS),
    );
    let client = client_builder(&emulator)
        .result_format(ResultFormat::JsonInline)
        .build()
        .expect("client builds");
    let rt = runtime();
    let baseline = os_threads();
    let executor = executor(client)
        .threads(THREADS)
        .queue_depth(QUERIES)
        .build()
        .expect("valid");

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                peak.fetch_max(os_threads(), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let results = run_concurrently(
        &rt,
        &executor,
        QUERIES,
        "SELECT n_nationkey FROM samples.tpch.nation WHERE n_nationkey = :k",
    );
    done.store(true, Ordering::Release);
    sampler.join().expect("the sampler does not panic");

    for (key, values) in &results {
        assert_eq!(values, &vec![*key], "each query gets its own row");
    }
    let m = executor.metrics();
    assert_eq!(
        (m.submitted, m.completed, m.failed),
        (QUERIES as u64, QUERIES as u64, 0)
    );
    assert!(m.peak_running <= THREADS as u64, "{m:?}");
    assert!(m.pool_in_use + m.pool_idle <= THREADS);
    assert!(m.queue_wait.count == QUERIES as u64);
    let peak = peak.load(Ordering::Acquire);
    // Other tests of this binary run in parallel and start threads too: allow them generous
    // room, still far below one thread per query.
    assert!(
        peak < baseline + QUERIES / 4,
        "peak {peak} OS threads, baseline {baseline}, for {QUERIES} concurrent queries"
    );
    let ran = emulator
        .statements()
        .iter()
        .filter(|r| r.sql.contains("n_nationkey = :k"))
        .count();
    assert_eq!(ran, QUERIES);
    assert!(no_statement_running(&emulator));
    drop(executor);
}

/// An emulator cutting results into chunks of `rows` rows, and a client that downloads one chunk
/// at a time and at most one ahead, so a paused reader holds its worker and stops downloads.
fn small_chunks_one_ahead(rows: usize) -> (BackgroundEmulator, Client) {
    let emulator = start(Emulator::builder().chunk_rows(rows));
    let client = client_builder(&emulator)
        .download_threads(1)
        .prefetch_bytes(1)
        .build()
        .expect("client builds");
    (emulator, client)
}

/// Starts `MANY_CHUNKS` and reads one batch, so the worker and its session stay busy.
async fn hold(executor: &Executor) -> QueryStream {
    let mut stream = executor.query(MANY_CHUNKS, &[]).await.expect("runs");
    let first = stream.next().await.expect("an item").expect("a batch");
    assert!(first.num_rows() > 0);
    stream
}

#[test]
fn a_full_queue_overloads_and_a_queued_query_times_out() {
    let (emulator, client) = small_chunks_one_ahead(500);
    let executor = executor(client)
        .threads(1)
        .queue_depth(1)
        .queue_timeout(Duration::from_millis(200))
        .stream_buffer(1)
        // A paused consumer keeps its worker (and session) only without parking places.
        .max_parked(0)
        .build()
        .expect("valid");
    let rt = runtime();
    rt.block_on(async {
        let held = hold(&executor).await;
        let e = executor.clone();
        let queued = tokio::spawn(async move { e.query("SELECT 1", &[]).await.map(|_| ()) });
        eventually("a query waits", || executor.metrics().queued == 1).await;
        let err = executor.query("SELECT 2", &[]).await.expect_err("full");
        assert!(
            matches!(err, ExecutorError::Overloaded { queue_depth: 1 }),
            "{err}"
        );
        let err = queued.await.expect("task").expect_err("times out");
        assert!(matches!(err, ExecutorError::QueueTimeout { .. }), "{err}");
        drop(held);
        eventually("the worker is free", || executor.metrics().running == 0).await;
        let batches: Vec<RecordBatch> = executor
            .query("SELECT 7 AS v", &[])
            .await
            .expect("runs")
            .try_collect()
            .await
            .expect("completes");
        assert_eq!(ints(&batches, 0), vec![7]);
    });
    let sqls: Vec<String> = emulator.statements().into_iter().map(|r| r.sql).collect();
    assert!(
        !sqls.iter().any(|s| s == "SELECT 1" || s == "SELECT 2"),
        "rejected queries never reached the warehouse: {sqls:?}"
    );
    let m = executor.metrics();
    assert_eq!((m.overloaded, m.queue_timeouts), (1, 1));
    drop(executor);
}

#[test]
fn checkout_times_out_when_every_session_is_busy() {
    let (_emulator, client) = small_chunks_one_ahead(500);
    let executor = executor(client)
        .threads(2)
        .pool_size(1)
        .pool_timeout(Duration::from_millis(200))
        .stream_buffer(1)
        .max_parked(0)
        .build()
        .expect("valid");
    let rt = runtime();
    rt.block_on(async {
        let held = hold(&executor).await;
        let err = executor
            .query("SELECT 1", &[])
            .await
            .expect_err("no session");
        assert!(
            matches!(err, ExecutorError::PoolTimeout { pool_size: 1, .. }),
            "{err}"
        );
        assert!(err.is_timeout());
        drop(held);
        eventually("the session returns", || executor.metrics().pool_idle == 1).await;
    });
    assert_eq!(executor.metrics().pool_timeouts, 1);
    assert_eq!(executor.metrics().sessions_opened, 1);
    drop(executor);
}

#[test]
fn dropping_a_running_query_cancels_it_on_the_warehouse() {
    let emulator = start(Emulator::builder().statement_latency(Duration::from_secs(60)));
    let client = client_builder(&emulator).build().expect("client builds");
    let executor = executor(client).threads(1).build().expect("valid");
    let rt = runtime();
    let id = rt.block_on(async {
        let e = executor.clone();
        let running = tokio::spawn(async move {
            e.query("SELECT COUNT(*) FROM samples.tpch.orders", &[])
                .await
                .map(|_| ())
        });
        eventually("the statement runs on the warehouse", || {
            emulator
                .statements()
                .iter()
                .any(|r| r.sql.contains("orders") && r.state == StatementState::Running)
        })
        .await;
        running.abort();
        let id = emulator
            .statements()
            .into_iter()
            .find(|r| r.sql.contains("orders"))
            .expect("the statement")
            .id;
        eventually("the session returns", || executor.metrics().pool_idle == 1).await;
        id
    });
    let record = wait_for_record(&emulator, &id, |r| r.state.is_terminal());
    assert_eq!(record.state, StatementState::Canceled);
    assert!(no_statement_running(&emulator));
    let m = executor.metrics();
    assert_eq!((m.cancellations, m.running, m.failed), (1, 0, 0));
    drop(executor);
}

#[test]
fn a_paused_consumer_stops_downloads_and_dropping_the_stream_releases_the_statement() {
    let (emulator, client) = small_chunks_one_ahead(1_000);
    let executor = executor(client)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let rt = runtime();
    rt.block_on(async {
        // A full read first: how many rows and chunks the result has.
        let all: Vec<RecordBatch> = executor
            .query(MANY_CHUNKS, &[])
            .await
            .expect("runs")
            .try_collect()
            .await
            .expect("completes");
        let total_rows: usize = all.iter().map(|b| b.num_rows()).sum();
        let full = emulator
            .statements()
            .into_iter()
            .find(|r| r.sql == MANY_CHUNKS)
            .expect("recorded");
        assert_eq!(full.rows as usize, total_rows);
        assert!(
            full.chunks >= 50,
            "the result has many chunks: {}",
            full.chunks
        );

        let stream = hold(&executor).await;
        let id = stream.statement_id().expect("a statement id").to_owned();
        // Paused: the served chunk count settles far below the total.
        let mut last = u64::MAX;
        let mut stable = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = crate::support::record(&emulator, &id).chunks_served;
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            if stable >= 10 {
                break;
            }
        }
        assert!(stable >= 10, "downloads stop while the consumer pauses");
        assert!(
            last <= 8,
            "only a few chunks are in flight with a paused consumer: {last} of {}",
            full.chunks
        );
        let rows_paused = executor.metrics().rows;
        assert!(rows_paused < (total_rows as u64) * 2, "{rows_paused}");
        drop(stream);
        let record = wait_for_record(&emulator, &id, |r| r.state == StatementState::Closed);
        assert_eq!(
            record.state,
            StatementState::Closed,
            "the dropped result is released"
        );
        assert!(record.chunks_served < full.chunks as u64);
        eventually("the worker is free", || executor.metrics().running == 0).await;
    });
    assert!(no_statement_running(&emulator));
    assert_eq!(executor.metrics().cancellations, 1);
    drop(executor);
}

#[test]
fn pre_ping_replaces_a_session_closed_behind_the_pools_back() {
    let emulator = start(Emulator::builder());
    let client = client_builder(&emulator).build().expect("client builds");
    let driver = DatabricksDriver::new(client)
        .catalog("samples")
        .schema("tpch");
    let executor = Executor::builder(driver)
        .threads(1)
        .pre_ping(true)
        .build()
        .expect("valid");
    let rt = runtime();
    let run = |sql: &'static str| {
        rt.block_on(async {
            let batches: Vec<RecordBatch> = executor
                .query(sql, &[Param::new("r", 1)])
                .await
                .expect("runs")
                .try_collect()
                .await
                .expect("completes");
            ints(&batches, 0)
        })
    };
    let sql = "SELECT COUNT(*) FROM nation WHERE n_regionkey = :r";
    assert_eq!(run(sql), vec![5], "the session's catalog and schema apply");
    let first = emulator
        .statements()
        .into_iter()
        .find(|r| r.sql == sql)
        .expect("recorded");
    let old_session = first.session_id.clone().expect("ran in a session");
    assert_eq!(first.catalog.as_deref(), Some("samples"));

    // Someone closes the session on the warehouse.
    let response = reqwest::blocking::Client::new()
        .delete(format!(
            "{}/api/2.0/sql/sessions/{old_session}?warehouse_id={WAREHOUSE}",
            emulator.url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .expect("loopback request");
    assert!(response.status().is_success(), "{}", response.status());

    assert_eq!(run(sql), vec![5]);
    let records: Vec<_> = emulator
        .statements()
        .into_iter()
        .filter(|r| r.sql == sql)
        .collect();
    assert_eq!(records.len(), 2);
    let new_session = records[1].session_id.clone().expect("ran in a session");
    assert_ne!(
        new_session, old_session,
        "the broken session is never reused"
    );
    let m = executor.metrics();
    assert_eq!((m.sessions_discarded, m.sessions_opened), (1, 2));
    drop(executor);
}

/// Most statements the emulator ran at the same time (from its RUNNING intervals).
fn max_overlap(emulator: &BackgroundEmulator, sql_part: &str) -> usize {
    let mut events = Vec::new();
    for r in emulator.statements() {
        if r.sql.contains(sql_part)
            && let (Some(start), Some(end)) = (r.started_at, r.finished_at)
        {
            events.push((start, 1_i64));
            events.push((end, -1_i64));
        }
    }
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut now, mut max) = (0_i64, 0_i64);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

#[test]
fn submit_and_poll_keeps_many_statements_running_with_few_threads() {
    const QUERIES: usize = 1000;
    const THREADS: usize = 4;
    let emulator = start(
        Emulator::builder()
            .statement_latency(Duration::from_millis(100))
            .max_concurrent_statements(50),
    );
    let client = client_builder(&emulator).build().expect("client builds");
    let rt = runtime();
    let baseline = os_threads();
    let executor = executor(client)
        .threads(THREADS)
        .mode(ExecutionMode::SubmitAndPoll)
        .queue_depth(QUERIES)
        .build()
        .expect("valid");
    let results = run_concurrently(
        &rt,
        &executor,
        QUERIES,
        "SELECT n_regionkey FROM samples.tpch.nation WHERE n_nationkey = :k",
    );
    // n_regionkey of nation n in TPC-H.
    const REGION: [i64; 25] = [
        0, 1, 1, 1, 4, 0, 3, 3, 2, 2, 4, 4, 2, 4, 0, 0, 0, 1, 2, 3, 4, 2, 3, 3, 1,
    ];
    for (key, values) in &results {
        assert_eq!(values, &vec![REGION[*key as usize]], "nation {key}");
    }
    let m = executor.metrics();
    assert_eq!((m.completed, m.failed, m.polling), (QUERIES as u64, 0, 0));
    assert!(m.peak_running <= THREADS as u64, "{m:?}");
    let overlap = max_overlap(&emulator, "n_nationkey = :k");
    assert!(
        overlap > 2 * THREADS,
        "{overlap} statements ran at once on the warehouse with {THREADS} worker threads"
    );
    let threads_now = os_threads();
    // Other tests of this binary run in parallel and start threads too: the bound is loose, and
    // still a tenth of one thread per statement.
    assert!(
        threads_now < baseline + QUERIES / 10,
        "{threads_now} OS threads (baseline {baseline}) after {QUERIES} concurrent queries"
    );
    assert!(no_statement_running(&emulator));
    drop(executor);
}

#[test]
fn submit_and_poll_cancels_a_dropped_query_on_the_warehouse() {
    let emulator = start(Emulator::builder().statement_latency(Duration::from_secs(60)));
    let client = client_builder(&emulator).build().expect("client builds");
    let executor = executor(client)
        .threads(1)
        .mode(ExecutionMode::SubmitAndPoll)
        .build()
        .expect("valid");
    let rt = runtime();
    rt.block_on(async {
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let e = executor.clone();
                tokio::spawn(async move {
                    e.query("SELECT COUNT(*) FROM samples.tpch.part", &[])
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        eventually("five statements run with one worker", || {
            executor.metrics().polling == 5
        })
        .await;
        for t in &tasks {
            t.abort();
        }
        eventually("the poller lets them go", || {
            executor.metrics().polling == 0
        })
        .await;
    });
    let ids: Vec<String> = emulator
        .statements()
        .into_iter()
        .filter(|r| r.sql.contains("tpch.part"))
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 5);
    for id in &ids {
        let record = wait_for_record(&emulator, id, |r| r.state.is_terminal());
        assert_eq!(record.state, StatementState::Canceled, "{id}");
    }
    assert!(no_statement_running(&emulator));
    assert_eq!(executor.metrics().cancellations, 5);
    drop(executor);
}

#[test]
fn sql_errors_and_statement_timeouts_are_typed_and_keep_the_session() {
    let emulator = start(Emulator::builder());
    let client = client_builder(&emulator).build().expect("client builds");
    let executor = Executor::builder(
        DatabricksDriver::new(client).statement_timeout(Some(Duration::from_millis(300))),
    )
    .threads(1)
    .build()
    .expect("valid");
    let rt = runtime();
    rt.block_on(async {
        let err = executor
            .query("SELECT * FROM samples.tpch.no_such_table", &[])
            .await
            .expect_err("fails");
        let typed = err
            .driver_error::<dbfed_databricks::Error>()
            .expect("a Databricks error");
        assert!(
            matches!(typed, dbfed_databricks::Error::StatementFailed { .. }),
            "{typed:?}"
        );
        assert_eq!(
            executor.metrics().pool_idle,
            1,
            "a SQL error keeps the session"
        );
    });
    drop(executor);

    let slow = start(Emulator::builder().statement_latency(Duration::from_secs(60)));
    let client = client_builder(&slow).build().expect("client builds");
    let executor = Executor::builder(
        DatabricksDriver::new(client).statement_timeout(Some(Duration::from_millis(300))),
    )
    .threads(1)
    .build()
    .expect("valid");
    let err = rt.block_on(async {
        executor
            .query("SELECT COUNT(*) FROM samples.tpch.region", &[])
            .await
            .expect_err("times out")
    });
    let typed = err
        .driver_error::<dbfed_databricks::Error>()
        .expect("a Databricks error");
    assert!(typed.is_timeout(), "{typed:?}");
    let id = typed.statement_id().expect("the statement").to_owned();
    let record = wait_for_record(&slow, &id, |r| r.state.is_terminal());
    assert_eq!(record.state, StatementState::Canceled);
    assert_eq!(executor.metrics().pool_idle, 1);
    drop(executor);
}

#[test]
fn throttling_and_dropped_connections_cost_time_not_rows() {
    use dbfed_emulator::{Endpoint, FaultAction, FaultRule};

    let emulator = start(Emulator::builder());
    let faults = emulator.faults();
    faults.inject(FaultRule::status(Endpoint::ExecuteStatement, 429, None).times(5));
    faults.inject(FaultRule::status(Endpoint::GetStatement, 503, None).rate(0.3));
    let reset = faults.inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 10 },
        )
        .times(3),
    );
    let rt = runtime();
    let mut retries = 0;
    for mode in [ExecutionMode::ThreadPerQuery, ExecutionMode::SubmitAndPoll] {
        let client = client_builder(&emulator).build().expect("client builds");
        let executor = executor(client)
            .threads(4)
            .mode(mode)
            .build()
            .expect("valid");
        let sums: Vec<i64> = rt.block_on(async {
            let tasks: Vec<_> = (0..30)
                .map(|_| {
                    let e = executor.clone();
                    tokio::spawn(async move {
                        let batches: Vec<RecordBatch> = e
                            .query("SELECT n_nationkey FROM samples.tpch.nation", &[])
                            .await
                            .expect("runs despite faults")
                            .try_collect()
                            .await
                            .expect("completes despite faults");
                        ints(&batches, 0).iter().sum()
                    })
                })
                .collect();
            let mut sums = Vec::new();
            for t in tasks {
                sums.push(t.await.expect("task"));
            }
            sums
        });
        assert_eq!(sums, vec![300; 30], "{mode:?}: every row of every query");
        retries += executor.metrics().retries;
        drop(executor);
    }
    assert!(faults.fired_total() >= 8, "the faults fired");
    // Every throttled execute was retried, and the executor's metrics saw it.
    assert!(retries >= 5, "{retries} retries reported");
    assert_eq!(faults.fired(reset), 3);
    assert!(no_statement_running(&emulator));
}

#[test]
fn queries_dropped_at_every_stage_leave_nothing_running() {
    let emulator = start(
        Emulator::builder()
            .statement_latency(Duration::from_millis(150))
            .max_concurrent_statements(6)
            .chunk_rows(5_000),
    );
    let rt = runtime();
    for mode in [ExecutionMode::ThreadPerQuery, ExecutionMode::SubmitAndPoll] {
        let client = client_builder(&emulator).build().expect("client builds");
        let executor = executor(client)
            .threads(3)
            .mode(mode)
            .build()
            .expect("valid");
        let full_reads: Vec<usize> = rt.block_on(async {
            let tasks: Vec<_> = (0..45_u64)
                .map(|i| {
                    let e = executor.clone();
                    tokio::spawn(async move {
                        let sql = "SELECT l_orderkey FROM samples.tpch.lineitem";
                        match i % 3 {
                            // Dropped while queued, submitted or running.
                            0 => {
                                let wait = Duration::from_millis(20 * (i % 15));
                                let _ = tokio::time::timeout(wait, e.query(sql, &[])).await;
                                None
                            }
                            // Dropped after the first batch.
                            1 => {
                                let mut s = e.query(sql, &[]).await.expect("runs");
                                s.next().await.expect("an item").expect("a batch");
                                None
                            }
                            _ => {
                                let batches: Vec<RecordBatch> = e
                                    .query(sql, &[])
                                    .await
                                    .expect("runs")
                                    .try_collect()
                                    .await
                                    .expect("completes");
                                Some(batches.iter().map(|b| b.num_rows()).sum::<usize>())
                            }
                        }
                    })
                })
                .collect();
            let mut full = Vec::new();
            for t in tasks {
                if let Some(rows) = t.await.expect("task") {
                    full.push(rows);
                }
            }
            eventually("the executor is idle", || {
                let m = executor.metrics();
                m.running == 0 && m.polling == 0 && m.queued == 0 && m.pool_in_use == 0
            })
            .await;
            full
        });
        assert_eq!(full_reads.len(), 15);
        let expected = full_reads[0];
        assert!(expected > 50_000, "lineitem at scale 0.01 has ~60k rows");
        assert!(
            full_reads.iter().all(|&r| r == expected),
            "{mode:?}: {full_reads:?}"
        );
        let m = executor.metrics();
        assert_eq!(m.completed, 15, "{mode:?}: {m:?}");
        assert!(m.cancellations >= 15, "{mode:?}: {m:?}");
        drop(executor);
    }
    // Every statement ends terminal: none is left running on the warehouse.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !no_statement_running(&emulator) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = emulator
        .statements()
        .into_iter()
        .filter(|r| !r.state.is_terminal())
        .map(|r| (r.id, r.state))
        .collect();
    assert!(left.is_empty(), "statements left running: {left:?}");
}

#[test]
fn shutdown_with_a_paused_consumer_returns_and_releases_the_statement() {
    let (emulator, client) = small_chunks_one_ahead(500);
    let executor = executor(client)
        .threads(1)
        .stream_buffer(1)
        .build()
        .expect("valid");
    let rt = runtime();
    let mut stream = rt.block_on(async {
        let mut stream = executor.query(MANY_CHUNKS, &[]).await.expect("runs");
        let first = stream.next().await.expect("an item").expect("a batch");
        // The consumer pauses: one batch waits in the buffer, the worker holds the next one
        // and waits for room.
        let rows = first.num_rows() as u64;
        eventually("the worker waits for the consumer", || {
            executor.metrics().rows >= 3 * rows
        })
        .await;
        stream
    });
    let id = stream.statement_id().expect("a statement id").to_owned();
    // Shutdown must not wait for the paused consumer (hang guard: 30 s).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        executor.shutdown();
        drop(executor);
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("shutdown returns while a consumer pauses");
    // The consumer then gets the buffered rows and an error: never a silent, short result.
    let rest: Vec<Result<RecordBatch, ExecutorError>> = rt.block_on(async {
        let mut rest = Vec::new();
        while let Some(item) = stream.next().await {
            rest.push(item);
            assert!(rest.len() < 100, "the stream ends");
        }
        rest
    });
    assert!(
        matches!(rest.last(), Some(Err(ExecutorError::Shutdown))),
        "{rest:?}"
    );
    let record = wait_for_record(&emulator, &id, |r| r.state.is_terminal());
    assert!(record.state.is_terminal(), "{:?}", record.state);
    assert!(no_statement_running(&emulator));
}

#[test]
fn metrics_count_the_bytes_received_from_the_warehouse() {
    let (emulator, client) = small_chunks_one_ahead(20_000);
    let rt = runtime();
    let executor = executor(client).threads(1).build().expect("valid");
    assert_eq!(executor.metrics().bytes_received, 0);
    let rows = rt.block_on(async {
        let stream = executor
            .query("SELECT * FROM samples.tpch.lineitem LIMIT 20000", &[])
            .await
            .expect("query starts");
        let batches: Vec<RecordBatch> = stream.try_collect().await.expect("query ends");
        batches.iter().map(|b| b.num_rows()).sum::<usize>()
    });
    assert_eq!(rows, 20_000);
    let served: u64 = emulator
        .statements()
        .iter()
        .filter(|r| r.sql.contains("lineitem"))
        .map(|r| r.bytes_served)
        .sum();
    let received = executor.metrics().bytes_received;
    // Every chunk downloaded, plus the API's JSON answers (session, submit, polls, links).
    assert!(served > 100_000, "{served}");
    assert!(
        received >= served && received < served + 1_000_000,
        "received {received}, the warehouse served {served}"
    );
}
