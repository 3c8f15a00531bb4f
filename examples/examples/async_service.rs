//! An async HTTP service (axum) whose handlers query Databricks: the seed use case.
//!
//! The Databricks client is synchronous, like the official connectors. Called from a handler it
//! would block the event loop; `dbfed_executor::Executor` runs it on a fixed set of dedicated
//! worker threads behind a bounded admission queue and hands the results back as an async
//! stream. Here the service answers `GET /nations/{key}` with one warehouse query per request,
//! and the example fires 200 concurrent requests at itself on 127.0.0.1, then prints the
//! executor's metrics: 4 worker threads served them all, the event loop kept ticking, and the
//! process's thread count stayed far below one thread per request.
//!
//! It runs on the embedded emulator, set up like a small warehouse (100 ms per statement, 10
//! statements at a time). Against a real workspace, replace the emulator block by one line
//! (see `warehouse_config`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, Param};
use dbfed_emulator::{BackgroundEmulator, Emulator};
use dbfed_executor::{DatabricksDriver, ExecutionMode, Executor, ExecutorError};
use futures::TryStreamExt;
use serde_json::{Value, json};

const TOKEN: &str = "dapi-example";
const REQUESTS: usize = 200;
const WORKER_THREADS: usize = 4;

/// TPC-H's nations by key: what every response must say.
const NATIONS: [&str; 25] = [
    "ALGERIA",
    "ARGENTINA",
    "BRAZIL",
    "CANADA",
    "EGYPT",
    "ETHIOPIA",
    "FRANCE",
    "GERMANY",
    "INDIA",
    "INDONESIA",
    "IRAN",
    "IRAQ",
    "JAPAN",
    "JORDAN",
    "KENYA",
    "MOROCCO",
    "MOZAMBIQUE",
    "PERU",
    "CHINA",
    "ROMANIA",
    "SAUDI ARABIA",
    "VIETNAM",
    "RUSSIA",
    "UNITED KINGDOM",
    "UNITED STATES",
];

fn main() -> Result<()> {
    // The synchronous client (and the executor around it) is built outside the async runtime.
    let (config, _emulator) = warehouse_config()?;
    let executor = Executor::builder(DatabricksDriver::new(Client::new(config)?))
        .threads(WORKER_THREADS)
        .pool_size(WORKER_THREADS)
        // One poller thread tracks every running statement; workers only submit and decode.
        .mode(ExecutionMode::SubmitAndPoll)
        .build()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve_and_load(executor.clone()))?;
    drop(runtime);

    let m = executor.metrics();
    println!(
        "executor: {} worker threads, peak {} running and {} on the warehouse at once, \
         {} submitted, {} completed, {} failed, {} rows; queue wait p50 {:.1?}, p99 {:.1?}",
        m.threads,
        m.peak_running,
        m.peak_polling,
        m.submitted,
        m.completed,
        m.failed,
        m.rows,
        m.queue_wait.quantile(0.5),
        m.queue_wait.quantile(0.99),
    );
    ensure!(
        m.completed >= REQUESTS as u64 && m.failed == 0,
        "every request's query completed"
    );
    ensure!(
        m.peak_running <= WORKER_THREADS as u64,
        "never more queries on workers than worker threads"
    );
    Ok(())
}

/// The service: one route, the executor as its state.
fn app(executor: Executor) -> Router {
    Router::new()
        .route("/nations/{key}", get(nation))
        .with_state(executor)
}

/// `GET /nations/{key}`: the nation and its region, read from the warehouse.
async fn nation(
    State(executor): State<Executor>,
    Path(key): Path<i64>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let sql = "SELECT n.n_name, r.r_name FROM samples.tpch.nation n \
               JOIN samples.tpch.region r ON n.n_regionkey = r.r_regionkey \
               WHERE n.n_nationkey = :key";
    // Waits for a worker without blocking this task's thread; dropping the future (the client
    // went away) removes the query from the queue or cancels it on the warehouse.
    let batches: Vec<RecordBatch> = executor
        .query(sql, &[Param::new("key", key)])
        .await
        .map_err(error_response)?
        .try_collect()
        .await
        .map_err(error_response)?;
    let row = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or((StatusCode::NOT_FOUND, format!("no nation {key}")))?;
    let text = |column: usize| -> Result<String, (StatusCode, String)> {
        let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
        let strings =
            cast(row.column(column), &DataType::Utf8).map_err(|e| internal(e.to_string()))?;
        let strings = strings
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| internal("not a string column".into()))?;
        Ok(if strings.is_null(0) {
            String::new()
        } else {
            strings.value(0).to_owned()
        })
    };
    Ok(Json(
        json!({ "key": key, "nation": text(0)?, "region": text(1)? }),
    ))
}

/// Overload is the client's cue to back off (503); anything else is a server error.
fn error_response(e: ExecutorError) -> (StatusCode, String) {
    let status = match e {
        ExecutorError::Overloaded { .. } | ExecutorError::QueueTimeout { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string())
}

/// Serves on 127.0.0.1:0, fires [`REQUESTS`] concurrent requests at the service while a ticker
/// task watches the event loop, checks every answer, then shuts the server down.
async fn serve_and_load(executor: Executor) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(executor))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("service listening on {base}");

    // A ticker on the same runtime: a blocked event loop would show as a long gap.
    let max_gap_us = Arc::new(AtomicU64::new(0));
    let peak_threads = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let (max_gap_us, peak_threads) = (max_gap_us.clone(), peak_threads.clone());
        async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = u64::try_from(last.elapsed().as_micros()).unwrap_or(u64::MAX);
                max_gap_us.fetch_max(gap, Ordering::Relaxed);
                peak_threads.fetch_max(os_threads(), Ordering::Relaxed);
                last = Instant::now();
            }
        }
    });

    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            let key = i % NATIONS.len();
            tokio::spawn(async move {
                let response = http.get(format!("{base}/nations/{key}")).send().await?;
                let status = response.status();
                let body: Value = response.json().await?;
                anyhow::Ok((key, status, body))
            })
        })
        .collect();
    let mut sample = None;
    for request in requests {
        let (key, status, body) = request.await??;
        ensure!(status.is_success(), "GET /nations/{key}: {status} {body}");
        ensure!(
            body["nation"] == NATIONS[key],
            "GET /nations/{key} answered {body}, expected {}",
            NATIONS[key]
        );
        if key == 6 {
            sample = Some(body);
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();

    let _ = stop.send(());
    server.await.context("the server task")??;

    println!(
        "GET /nations/6 -> {}",
        sample.context("a request for key 6")?
    );
    let peak_threads = peak_threads.load(Ordering::Relaxed);
    println!(
        "{REQUESTS} concurrent requests answered in {elapsed:.2?}; longest event-loop tick gap \
         {:.1?}; peak OS threads of the process {peak_threads}",
        Duration::from_micros(max_gap_us.load(Ordering::Relaxed)),
    );
    // Structural, not timing: nothing spawned a thread per request.
    ensure!(
        peak_threads < REQUESTS / 2,
        "the process peaked at {peak_threads} threads for {REQUESTS} requests"
    );
    Ok(())
}

/// The warehouse to query: the embedded emulator, kept alive as long as the client uses it.
fn warehouse_config() -> Result<(ClientConfig, Option<BackgroundEmulator>)> {
    // A real workspace instead (DATABRICKS_HOST, DATABRICKS_HTTP_PATH, DATABRICKS_TOKEN or a
    // ~/.databrickscfg profile):
    //     return Ok((ClientConfig::from_env()?, None));
    let emulator = Emulator::builder()
        .token(TOKEN)
        .statement_latency(Duration::from_millis(100))
        .max_concurrent_statements(10)
        .spawn("127.0.0.1:0")?;
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id("example")
        .token(TOKEN)
        .build()?;
    Ok((config, Some(emulator)))
}

/// OS threads of this process (Linux); 0 elsewhere.
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}
