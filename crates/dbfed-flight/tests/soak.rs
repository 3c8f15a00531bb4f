//! Load through Flight: overload of a small executor reaches every Flight client as
//! `RESOURCE_EXHAUSTED` (never a hang, never a short result), and a bounded soak — clients ×
//! queries through the Flight server for `DBFED_SOAK_SECS` (default 10 s) — keeps the process's
//! threads, file descriptors and RSS flat after warm-up.
//!
//! Each test prints a `flight soak:` line with its figures. Also the shared [`Stack`] fixture
//! of `restart.rs` and `secrets.rs`: like `disconnect::federated`, with the executor's bounds,
//! the server's auth and the emulator's address chosen by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use dbfed_databricks::ClientBuilder;
use dbfed_emulator::{BackgroundEmulator, Emulator, EmulatorBuilder};
use dbfed_executor::Executor;
use dbfed_flight::{Auth, FlightServerHandle};
use dbfed_tests::client_config;
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::disconnect::{serve_federated, test_executor};
use crate::fixture::{client, code, i64_column, query, rows};

/// The token the stack's emulator accepts.
pub const TOKEN: &str = "dapi-flight-soak-0123456789abcdef";

/// Executor bounds of a [`Stack`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Worker threads (and pooled sessions).
    pub threads: usize,
    /// Queries that may wait for a worker before `Overloaded`.
    pub queue_depth: usize,
}

/// A Flight SQL server over a federated context over an executor over the emulator.
pub struct Stack {
    // Field order is drop order: the server first, then the engine; the emulator in `Drop`.
    pub server: FlightServerHandle,
    pub executor: Executor,
    emulator: Option<BackgroundEmulator>,
}

impl Stack {
    /// The running emulator.
    pub fn emulator(&self) -> &BackgroundEmulator {
        self.emulator.as_ref().expect("present until dropped")
    }

    /// Stops the emulator (on a plain thread: dropping its runtime on a worker panics).
    pub fn stop_emulator(&mut self) {
        if let Some(emulator) = self.emulator.take() {
            let _ = std::thread::spawn(move || drop(emulator)).join();
        }
    }

    /// Installs `emulator` as the stack's warehouse (after [`Stack::stop_emulator`]).
    pub fn put_emulator(&mut self, emulator: BackgroundEmulator) {
        assert!(self.emulator.is_none(), "stop the running emulator first");
        self.emulator = Some(emulator);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_emulator();
    }
}

/// Starts the emulator (SF 0.01, 500-row chunks, accepting [`TOKEN`]) on `emulator_addr`, an
/// executor with `bounds` whose client `configure` adjusts (fast retries, 64 KiB prefetch), a
/// federated context over every catalog and a Flight server with `auth` over it.
pub async fn stack(
    emulator: EmulatorBuilder,
    emulator_addr: &str,
    bounds: Bounds,
    auth: Auth,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder + Send + 'static,
) -> Stack {
    let emulator = emulator
        .tpch_scale(0.01)
        .chunk_rows(500)
        .token(TOKEN)
        .spawn(emulator_addr)
        .expect("the emulator starts");
    let config = client_config(&emulator, "fl0123456789abcd", TOKEN);
    let executor = test_executor(
        config,
        bounds.threads,
        bounds.queue_depth,
        Duration::from_secs(10),
        configure,
    )
    .await;
    let server = serve_federated(&executor, auth).await;
    Stack {
        server,
        executor,
        emulator: Some(emulator),
    }
}

/// Waits (hang guard: 20 s) until the executor has nothing running, queued, polled or checked
/// out and the warehouse no statement PENDING or RUNNING.
pub async fn assert_idle(what: &str, stack: &Stack) {
    for _ in 0..1000 {
        let m = stack.executor.metrics();
        let busy = stack
            .emulator()
            .statements()
            .iter()
            .filter(|s| !s.state.is_terminal())
            .count();
        if m.running == 0 && m.queued == 0 && m.polling == 0 && m.pool_in_use == 0 && busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{what}: not idle: {:?}, statements {:?}",
        stack.executor.metrics(),
        stack
            .emulator()
            .statements()
            .iter()
            .filter(|s| !s.state.is_terminal())
            .map(|s| (s.id.clone(), s.state, s.sql.clone()))
            .collect::<Vec<_>>()
    );
}

/// A fresh channel to `server` (each simulated client has its own connection).
async fn connect(server: &FlightServerHandle) -> FlightSqlServiceClient<Channel> {
    tokio::time::timeout(Duration::from_secs(30), client(server))
        .await
        .expect("hang guard: connect")
}

const COUNT_ORDERS: &str = "SELECT count(*) FROM samples.tpch.orders";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_through_flight_is_resource_exhausted_never_a_hang() {
    const CLIENTS: usize = 40;
    let bounds = Bounds {
        threads: 2,
        queue_depth: 4,
    };
    let stack = stack(
        Emulator::builder().statement_latency(Duration::from_millis(400)),
        "127.0.0.1:0",
        bounds,
        Auth::None,
        |b| b,
    )
    .await;
    // Warm up: the catalog lookups are cached, so every later statement is one query.
    let mut c = connect(&stack.server).await;
    let warm = query(&mut c, COUNT_ORDERS).await.expect("warm-up");
    assert_eq!(i64_column(&warm, 0), vec![15_000]);

    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let addr = stack.server.local_addr();
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connect");
                let mut c = FlightSqlServiceClient::new(channel);
                // All 40 start at once.
                barrier.wait().await;
                query(&mut c, COUNT_ORDERS).await
            })
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("hang guard: an overloaded call still answers")
            .expect("the client task does not panic");
        match outcome {
            Ok(batches) => {
                assert_eq!(i64_column(&batches, 0), vec![15_000], "exact rows");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
                exhausted += 1;
            }
        }
    }
    assert_eq!(ok + exhausted, CLIENTS);
    assert!(ok >= 1, "some queries ran");
    assert!(exhausted >= 1, "overload was refused, not queued forever");
    let m = stack.executor.metrics();
    assert!(m.overloaded >= exhausted as u64, "{m:?}");
    assert_idle("after the overload", &stack).await;
    // The same server still answers, exactly.
    let after = query(&mut c, COUNT_ORDERS).await.expect("after");
    assert_eq!(i64_column(&after, 0), vec![15_000]);
    eprintln!(
        "flight soak: overload: {CLIENTS} concurrent Flight clients vs {} workers + queue {}: \
         {ok} exact, {exhausted} RESOURCE_EXHAUSTED; executor idle afterwards, server answers",
        bounds.threads, bounds.queue_depth
    );
}

/// One reading of this process from `/proc/self`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    threads: u64,
    fds: u64,
    rss_kb: u64,
}

fn sample() -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a numeric field in /proc/self/status")
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64;
    Sample {
        threads: field("Threads:"),
        fds,
        rss_kb: field("VmRSS:"),
    }
}

/// What one soak client does in one round; returns (queries, rows, dropped early).
async fn round(c: &mut FlightSqlServiceClient<Channel>, n: u64) -> (u64, u64, u64) {
    match n % 4 {
        0 => {
            let b = query(c, "SELECT count(*) FROM samples.tpch.nation")
                .await
                .expect("count");
            assert_eq!(i64_column(&b, 0), vec![25]);
            (1, 1, 0)
        }
        1 => {
            let b = query(
                c,
                "SELECT n_nationkey, n_name FROM samples.tpch.nation WHERE n_regionkey = 1",
            )
            .await
            .expect("filter");
            assert_eq!(rows(&b), 5);
            (1, 5, 0)
        }
        2 => {
            let b = query(c, "SELECT o_orderkey FROM samples.tpch.orders")
                .await
                .expect("scan");
            assert_eq!(rows(&b), 15_000, "never a short result");
            (1, 15_000, 0)
        }
        _ => {
            // A 60 000-row scan abandoned after its first batch.
            let info = c
                .execute(
                    "SELECT l_orderkey, l_comment FROM samples.tpch.lineitem".to_owned(),
                    None,
                )
                .await
                .expect("info");
            let ticket = info.endpoint[0].ticket.clone().expect("ticket");
            let mut stream = c.do_get(ticket).await.expect("do get");
            let first: Option<Result<RecordBatch, FlightError>> = stream.next().await;
            let batch = first.expect("a batch").expect("a batch");
            (1, batch.num_rows() as u64, 1)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_soak_through_flight_keeps_resources_flat() {
    const CLIENTS: u64 = 8;
    let secs: u64 = std::env::var("DBFED_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(4);
    let bounds = Bounds {
        threads: 4,
        queue_depth: 64,
    };
    // The emulator shares this process: it keeps a short history and results (read to the end,
    // hence never closed) for 10 s, so its own retention does not read as growth. (With its
    // defaults — 10 000 statements, results kept an hour — RSS climbs ~28 MB a minute until the
    // history is full: see RELIABILITY.md.)
    let stack = stack(
        Emulator::builder()
            .max_statement_history(200)
            .result_ttl(Duration::from_secs(10)),
        "127.0.0.1:0",
        bounds,
        Auth::None,
        |b| b,
    )
    .await;
    let queries = Arc::new(AtomicU64::new(0));
    let rows_read = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = stack.server.local_addr();
            let (queries, rows_read, dropped) = (
                Arc::clone(&queries),
                Arc::clone(&rows_read),
                Arc::clone(&dropped),
            );
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connect");
                let mut c = FlightSqlServiceClient::new(channel);
                // Bounded by the deadline and by a round count.
                for n in i..i + 100_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let (q, r, d) = tokio::time::timeout(Duration::from_secs(60), round(&mut c, n))
                        .await
                        .expect("hang guard: a soak query");
                    queries.fetch_add(q, Ordering::Relaxed);
                    rows_read.fetch_add(r, Ordering::Relaxed);
                    dropped.fetch_add(d, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Sample once a second while the clients run.
    let mut samples = vec![sample()];
    for _ in 0..secs + 120 {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(sample());
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("hang guard: the soak ends")
            .expect("a soak client does not panic");
    }
    assert_idle("after the soak", &stack).await;
    samples.push(sample());

    // Flat after warm-up (the first third): generous bounds, since other tests of this binary
    // may run in the same process at the same time.
    let warm = samples.len() / 3;
    let after = &samples[warm..];
    let range = |f: fn(&Sample) -> u64| {
        let min = after.iter().map(f).min().unwrap_or(0);
        let max = after.iter().map(f).max().unwrap_or(0);
        (min, max)
    };
    let threads = range(|s| s.threads);
    let fds = range(|s| s.fds);
    let rss = range(|s| s.rss_kb);
    let m = stack.executor.metrics();
    eprintln!(
        "flight soak: {secs} s, {CLIENTS} Flight clients: {} queries ({} dropped early), {} rows; \
         after warm-up threads {}–{}, fds {}–{}, RSS {}–{} MB; executor: {} completed, {} failed, \
         {} panics, {} cancellations",
        queries.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        rows_read.load(Ordering::Relaxed),
        threads.0,
        threads.1,
        fds.0,
        fds.1,
        rss.0 / 1024,
        rss.1 / 1024,
        m.completed,
        m.failed,
        m.panics,
        m.cancellations,
    );
    eprintln!(
        "flight soak: curve (threads, fds, RSS MB): {:?}",
        samples
            .iter()
            .map(|s| (s.threads, s.fds, s.rss_kb / 1024))
            .collect::<Vec<_>>()
    );
    assert!(queries.load(Ordering::Relaxed) >= CLIENTS, "the soak ran");
    assert!(threads.1 - threads.0 <= 64, "threads grew: {threads:?}");
    assert!(fds.1 - fds.0 <= 128, "descriptors grew: {fds:?}");
    assert!(rss.1 - rss.0 <= 512 * 1024, "RSS grew: {rss:?} KB");
    assert_eq!(m.panics, 0);
    assert_eq!(m.failed, 0, "{m:?}");
    assert!(m.pool_in_use == 0 && m.running == 0);
}
