//! Disconnect → cancel, end to end: a Flight client reading a large federated result from the
//! emulator goes away (stream dropped, channel dropped, `CancelFlightInfo`) and the warehouse is
//! left with no statement PENDING or RUNNING — every one CANCELED or CLOSED, checked through the
//! emulator's statement history — and the executor idle. Also: pass-through identities evicted
//! while their streams are still open.
//!
//! Each test prints a `disconnect:` line with the statements it released.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{CancelFlightInfoRequest, CancelStatus, FlightClient, FlightInfo};
use datafusion::prelude::SessionConfig;
use dbfed_databricks::config::{ClientConfig, Credentials};
use dbfed_databricks::{Client, ClientBuilder, RetryPolicy};
use dbfed_datafusion::{DatabricksSource, federated_session_context};
use dbfed_emulator::{Emulator, EmulatorBuilder, StatementRecord, StatementState, token_identity};
use dbfed_executor::{DatabricksDriver, Executor};
use dbfed_flight::{
    Auth, FlightServerHandle, FlightSqlServer, PassThroughSessions, StaticSessions,
};
use dbfed_tests::{client_config_with, off_runtime};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixture::{client, code, i64_column, start};
use crate::passthrough::{Warehouse, template, warehouse};

/// The token the federated fixture's emulator accepts.
pub const TOKEN: &str = "dapi-flight-reliability-0123456789";
/// ~60 000 rows in 120 chunks of 500.
pub const LONG: &str = "SELECT l_orderkey, l_partkey, l_comment FROM samples.tpch.lineitem";

/// A Flight SQL server over a federated context over an executor over the emulator.
pub struct Federated {
    // Field order is drop order: the server first, then the engine, then the warehouse.
    pub server: FlightServerHandle,
    pub executor: Executor,
    pub emulator: Warehouse,
}

/// Starts the emulator (SF 0.01, 500-row chunks), an executor with `threads` workers whose
/// client `configure` adjusts (64 KiB prefetch, so downloads stay a few chunks ahead of the
/// consumer), a federated context over every catalog, and a Flight server over it.
pub async fn federated(
    emulator: EmulatorBuilder,
    threads: usize,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder + Send + 'static,
) -> Federated {
    federated_with(emulator, Credentials::token(TOKEN), threads, configure).await
}

/// [`federated`] whose client signs in with `credentials` (the emulator accepts [`TOKEN`] and
/// whatever else `emulator` configures, e.g. an OAuth client whose tokens expire mid-query).
pub async fn federated_with(
    emulator: EmulatorBuilder,
    credentials: Credentials,
    threads: usize,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder + Send + 'static,
) -> Federated {
    let emulator = warehouse(emulator.tpch_scale(0.01).chunk_rows(500).token(TOKEN));
    let config = client_config_with(&emulator, "fl0123456789abcd", credentials);
    let executor = test_executor(config, threads, 64, Duration::from_secs(30), configure).await;
    let server = serve_federated(&executor, Auth::None).await;
    Federated {
        server,
        executor,
        emulator,
    }
}

/// An executor over the emulator for reliability tests: fast retries (giving up after
/// `max_elapsed`) and polling, 64 KiB prefetch and 2 download threads, so faults cost
/// milliseconds and downloads stay a few chunks ahead of the consumer; `configure` adjusts the
/// client. Built off the async workers (the blocking HTTP client starts threads).
pub async fn test_executor(
    config: ClientConfig,
    threads: usize,
    queue_depth: usize,
    max_elapsed: Duration,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder + Send + 'static,
) -> Executor {
    off_runtime(move || {
        let client = configure(
            Client::builder(config)
                .retry_policy(
                    RetryPolicy::default()
                        .base_delay(Duration::from_millis(5))
                        .max_delay(Duration::from_millis(50))
                        .retry_after_bounds(Duration::from_millis(5), Duration::from_millis(50))
                        .max_elapsed(max_elapsed),
                )
                .poll_interval(Duration::from_millis(5), Duration::from_millis(50))
                .prefetch_bytes(64 << 10)
                .download_threads(2),
        )
        .build()
        .expect("client");
        Executor::builder(
            DatabricksDriver::new(client)
                .poll_interval(Duration::from_millis(5), Duration::from_millis(50)),
        )
        .threads(threads)
        .pool_size(threads)
        .queue_depth(queue_depth)
        .build()
        .expect("executor")
    })
    .await
}

/// A Flight server with `auth` over a federated context of every catalog `executor` reaches.
pub async fn serve_federated(executor: &Executor, auth: Auth) -> FlightServerHandle {
    let source = DatabricksSource::builder(executor.clone())
        .build()
        .expect("source");
    let ctx = federated_session_context(SessionConfig::new().with_information_schema(true));
    source.register(&ctx).await.expect("register");
    start(FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx))).auth(auth)).await
}

/// The statements that ran `sql_part` (planning runs none; metadata lookups are other SQL).
pub fn statements_of(fed: &Federated, sql_part: &str) -> Vec<StatementRecord> {
    fed.emulator
        .statements()
        .into_iter()
        .filter(|s| s.sql.contains(sql_part))
        .collect()
}

/// Waits (hang guard: 20 s) until no statement the warehouse saw is PENDING or RUNNING, every
/// statement whose SQL contains `stopped_early` (queries the client abandoned) is CANCELED or
/// CLOSED — not merely terminal: a result left SUCCEEDED and unreleased fails too — and the
/// executor has nothing running, queued, polled or checked out. Returns (canceled, closed) of
/// the abandoned statements.
pub async fn assert_released(
    what: &str,
    fed: &Federated,
    stopped_early: Option<&str>,
) -> (usize, usize) {
    let released = |s: &StatementRecord| {
        let abandoned = stopped_early.is_some_and(|part| s.sql.contains(part));
        if abandoned {
            matches!(s.state, StatementState::Canceled | StatementState::Closed)
        } else {
            s.state.is_terminal()
        }
    };
    for _ in 0..1000 {
        let statements = fed.emulator.statements();
        let m = fed.executor.metrics();
        if statements.iter().all(released)
            && m.running == 0
            && m.queued == 0
            && m.polling == 0
            && m.pool_in_use == 0
        {
            let abandoned: Vec<_> = statements
                .iter()
                .filter(|s| stopped_early.is_some_and(|part| s.sql.contains(part)))
                .collect();
            let canceled = abandoned
                .iter()
                .filter(|s| s.state == StatementState::Canceled)
                .count();
            eprintln!(
                "disconnect: {what}: {} statements, none pending or running; {} abandoned: \
                 {canceled} canceled, {} closed; executor cancellations {}, sessions in use 0",
                statements.len(),
                abandoned.len(),
                abandoned.len() - canceled,
                m.cancellations,
            );
            return (canceled, abandoned.len() - canceled);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = fed
        .emulator
        .statements()
        .into_iter()
        .filter(|s| !released(s))
        .map(|s| (s.id, s.state, s.sql))
        .collect();
    panic!(
        "{what}: not released: {left:?}, {:?}",
        fed.executor.metrics()
    );
}

async fn open(
    c: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> (FlightInfo, arrow_flight::decode::FlightRecordBatchStream) {
    let info = c.execute(sql.to_owned(), None).await.expect("info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = c.do_get(ticket).await.expect("do get");
    (info, stream)
}

async fn read_batches(
    stream: &mut arrow_flight::decode::FlightRecordBatchStream,
    n: usize,
) -> usize {
    let mut rows = 0;
    for _ in 0..n {
        let batch: RecordBatch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("hang guard")
            .expect("an item")
            .expect("a batch");
        rows += batch.num_rows();
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_and_channels_cancel_their_statements() {
    let fed = federated(Emulator::builder(), 4, |b| b).await;
    let mut shared = client(&fed.server).await;

    // 1. Streams dropped after 1..=4 batches, the channel kept open.
    let mut read = Vec::new();
    for n in 1..=4 {
        let (_, mut stream) = open(&mut shared, LONG).await;
        read.push(read_batches(&mut stream, n).await);
        drop(stream);
    }
    // 2. Whole clients (their channels) dropped mid-stream, two at once.
    for _ in 0..2 {
        let mut a = client(&fed.server).await;
        let mut b = client(&fed.server).await;
        let (_, mut sa) = open(&mut a, LONG).await;
        let (_, mut sb) = open(&mut b, LONG).await;
        read.push(read_batches(&mut sa, 1).await);
        read.push(read_batches(&mut sb, 2).await);
        drop((sa, a, sb, b));
    }
    // 3. A stream dropped before its first batch.
    let (_, stream) = open(&mut shared, LONG).await;
    drop(stream);

    assert!(read.iter().all(|&r| r > 0 && r < 60_000), "{read:?}");
    let (canceled, closed) =
        assert_released("streams and channels dropped", &fed, Some("lineitem")).await;
    let long = statements_of(&fed, "lineitem");
    // One statement per DoGet (the one dropped before its first batch may not have started).
    assert!((8..=9).contains(&long.len()), "{long:?}");
    assert_eq!(canceled + closed, long.len());
    for s in &long {
        // (A statement canceled before it finished has no chunks at all.)
        assert!(
            s.state == StatementState::Canceled || s.chunks_served < s.chunks as u64,
            "downloads of {} stopped early: {} of {} chunks served",
            s.id,
            s.chunks_served,
            s.chunks
        );
    }
    // The engine still serves: a full count after the disconnects.
    let batches = crate::fixture::query(&mut shared, "SELECT count(*) FROM samples.tpch.nation")
        .await
        .expect("count");
    assert_eq!(i64_column(&batches, 0), vec![25]);
    assert_released("after the follow-up query", &fed, Some("lineitem")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_cancels_the_warehouse_statement() {
    let fed = federated(Emulator::builder(), 2, |b| b).await;
    let mut c = client(&fed.server).await;
    let (info, mut stream) = open(&mut c, LONG).await;
    let before = read_batches(&mut stream, 1).await;
    assert!(before > 0);

    let mut flight = FlightClient::new_from_inner(c.inner().clone());
    let result = flight
        .cancel_flight_info(CancelFlightInfoRequest::new(info.clone()))
        .await
        .expect("cancel");
    assert_eq!(result.status, CancelStatus::Cancelled as i32);

    // The open stream ends with CANCELLED (after at most what was already in flight), never a
    // clean end: bounded by the result's 120 chunks.
    let mut outcome = None;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("hang guard")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                outcome = Some(e);
                break;
            }
            None => panic!("a canceled stream ended cleanly"),
        }
    }
    let err = outcome.expect("the stream ended with an error");
    assert_eq!(code(&err), Code::Cancelled, "{err}");

    // A later DoGet of the same ticket is refused too, and never reaches the warehouse.
    let err = crate::fixture::fetch(&mut c, &info)
        .await
        .expect_err("canceled ticket");
    assert_eq!(code(&err), Code::Cancelled, "{err}");

    assert_released("CancelFlightInfo", &fed, Some("lineitem")).await;
    let long = statements_of(&fed, "lineitem");
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(long[0].chunks_served < long[0].chunks as u64);
}

/// Pass-through with room for one identity and two callers alternating: every call evicts the
/// other's context (its executor and blocking client are dropped inside the async runtime),
/// including while the evicted caller still has a stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_identities_neither_panics_nor_blocks_nor_cuts_open_streams() {
    const A: &str = "dapi-evict-a-000000000000000";
    const B: &str = "dapi-evict-b-000000000000000";
    let emulator = warehouse(
        Emulator::builder()
            .tpch_scale(0.01)
            .chunk_rows(500)
            .token(A)
            .token(B)
            .grant(A, ["samples"])
            .grant(B, ["samples"]),
    );
    let sessions = Arc::new(
        PassThroughSessions::databricks(template(&emulator))
            .max_identities(1)
            .build(),
    );
    let server =
        start(FlightSqlServer::builder(Arc::clone(&sessions) as _).auth(Auth::PassThrough)).await;
    let mut a = client(&server).await;
    a.set_token(A.into());
    let mut b = client(&server).await;
    b.set_token(B.into());

    let count = "SELECT count(*) FROM samples.tpch.nation";
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        for round in 0..3 {
            for (who, c) in [("a", &mut a), ("b", &mut b)] {
                let batches = crate::fixture::query(c, count)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, {who}: {e}"));
                assert_eq!(i64_column(&batches, 0), vec![25]);
                assert_eq!(sessions.cached_identities(), 1);
            }
        }
        // A opens a long stream; B's call evicts A's context while the stream is open.
        let (_, mut stream) = open(&mut a, "SELECT o_orderkey FROM samples.tpch.orders").await;
        let mut rows = read_batches(&mut stream, 1).await;
        let batches = crate::fixture::query(&mut b, count)
            .await
            .expect("b evicts a");
        assert_eq!(i64_column(&batches, 0), vec![25]);
        // The evicted context still finishes A's stream, every row.
        let mut keys = 0i64;
        while let Some(batch) = stream.next().await {
            let batch = batch.expect("a's stream survives the eviction");
            rows += batch.num_rows();
            keys += 1;
        }
        assert!(keys > 0);
        assert_eq!(
            rows, 15_000,
            "A's stream lost rows when its context was evicted"
        );
        // Dropping the finished stream drops the last reference to A's executor, on a worker.
        drop(stream);
        // The runtime still answers both callers.
        for c in [&mut a, &mut b] {
            let batches = crate::fixture::query(c, count).await.expect("after");
            assert_eq!(i64_column(&batches, 0), vec![25]);
        }
    })
    .await;
    result.expect("hang guard: eviction blocked the runtime");
    let identities = |id: &str| {
        emulator
            .statements()
            .iter()
            .filter(|s| s.identity == token_identity(id))
            .count()
    };
    assert!(identities(A) >= 4 && identities(B) >= 4);
    eprintln!(
        "disconnect: eviction: {} statements as A, {} as B, 1 identity cached",
        identities(A),
        identities(B)
    );
    drop(server);
}

/// More slow clients than workers: each result waits for its client without a worker (it
/// parks), so a fast client is still served, and every slow client then gets every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_the_workers() {
    const WORKERS: usize = 2;
    let fed = federated(Emulator::builder(), WORKERS, |b| b).await;
    let mut slow = Vec::new();
    for _ in 0..2 * WORKERS {
        let mut c = client(&fed.server).await;
        let (_, mut stream) = open(&mut c, LONG).await;
        let rows = read_batches(&mut stream, 1).await;
        slow.push((c, stream, rows));
    }
    let executor = fed.executor.clone();
    let parked = move || executor.metrics().parked;
    for _ in 0..600 {
        if parked() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(parked() > 0, "{:?}", fed.executor.metrics());

    let mut fast = client(&fed.server).await;
    let batches = tokio::time::timeout(
        Duration::from_secs(120),
        crate::fixture::query(&mut fast, "SELECT count(*) FROM samples.tpch.lineitem"),
    )
    .await
    .expect("hang guard")
    .expect("the fast client is served while the slow ones sit unread");
    let total = i64_column(&batches, 0)[0] as usize;

    for (_client, mut stream, mut rows) in slow {
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("hang guard")
        {
            rows += batch.expect("a batch").num_rows();
        }
        assert_eq!(rows, total, "a slow client gets every row");
    }
    let m = fed.executor.metrics();
    assert!(m.parks > 0 && m.parked == 0, "{m:?}");
    assert_released("slow clients served", &fed, None).await;
}
