//! Issue 4's figures: many concurrent queries through the executor against a warehouse with
//! per-statement latency and a concurrency limit, in both execution modes (wall time against
//! the ideal, peak OS threads, peak RSS); the executor's own overhead per query; and the same
//! workload run the classic way (Python `asyncio.to_thread` over `databricks-sql-connector`,
//! `benchmarks/classic/classic_asyncio.py`) against the same emulator setup, in the same run.
//!
//! The emulator runs in this process; each executor mode runs in a child process (this binary
//! with hidden `--child-mode`), so its thread count and RSS are the client side's alone, like
//! the Python baseline's. The executor talks plain HTTP (the client has no option to trust a
//! self-signed certificate); the connector needs HTTPS, so its emulator serves TLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dbfed_databricks::Client;
use dbfed_databricks::config::ClientConfig;
use dbfed_emulator::{BackgroundEmulator, Emulator};
use dbfed_executor::{DatabricksDriver, ExecutionMode, Executor, MetricsSnapshot};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::classic::{ClassicClient, ClassicOptions};
use crate::emit;
use crate::sys::{Sampler, last_json_line, os_threads, reset_peak_rss, run_process, status_bytes};

const TOKEN: &str = "dapi-bench";
const WAREHOUSE: &str = "bench";

/// Flags of `executor-concurrency`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Queries submitted at once (each a tiny one-row statement).
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Time every statement spends RUNNING on the emulated warehouse, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Statements the warehouse runs at once (more wait PENDING).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Worker threads (and pooled sessions) of the submit-and-poll executor. The
    /// thread-per-query executor gets `concurrency` threads and sessions.
    #[arg(long, default_value_t = 8)]
    pub poll_threads: usize,
    /// Sequential tiny queries at zero latency for the overhead figure (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub overhead_queries: usize,
    /// First poll delay of a statement in the overhead figure (driver and poller), in ms: small,
    /// so the figure shows the executor's machinery rather than a poll sleep.
    #[arg(long, default_value_t = 1)]
    pub overhead_poll_ms: u64,
    /// Python of a venv with `requirements-test.txt`: also run the classic asyncio baseline.
    #[arg(long, env = "DBFED_TEST_PYTHON")]
    pub python: Option<PathBuf>,
    /// Threads of the Python baseline's `to_thread` pool (0: asyncio's default,
    /// `min(32, cpus + 4)`). Default: `concurrency`.
    #[arg(long)]
    pub python_workers: Option<usize>,
    /// Hang guard: a phase taking longer than this many seconds fails the scenario.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Internal: measure one mode in this (child) process against `--emulator-url`.
    #[arg(long, hide = true, requires = "emulator_url")]
    pub child_mode: Option<String>,
    /// Internal: the emulator a `--child-mode` process talks to.
    #[arg(long, hide = true)]
    pub emulator_url: Option<String>,
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<()> {
    if args.queries == 0 || args.concurrency == 0 || args.poll_threads == 0 {
        bail!("--queries, --concurrency and --poll-threads must be at least 1");
    }
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let latency = Duration::from_millis(args.latency_ms);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-runtime")
        .enable_all()
        .build()?;
    let ideal_s = args.queries.div_ceil(args.concurrency) as f64 * latency.as_secs_f64();
    let parameters = json!({
        "queries": args.queries, "latency_ms": args.latency_ms,
        "concurrency": args.concurrency, "poll_threads": args.poll_threads,
    });

    if let Some(name) = &args.child_mode {
        let (mode, threads) = match name.as_str() {
            "thread-per-query" => (ExecutionMode::ThreadPerQuery, args.concurrency),
            "submit-and-poll" => (ExecutionMode::SubmitAndPoll, args.poll_threads),
            other => bail!("unknown --child-mode {other:?}"),
        };
        let url = args.emulator_url.as_deref().context("--emulator-url")?;
        let figures = concurrent(&runtime, url, &args, mode, threads, timeout)?;
        let (params, figures) = figures_json(&figures, mode, threads, ideal_s, &parameters);
        emit(SCENARIO, params, figures);
        return Ok(());
    }

    // Each mode runs in a child process of its own, so its threads and RSS are the client
    // side's alone (the emulator lives here), as the Python baseline's are.
    let emulator = emulator(&args, latency, false)?;
    let mut walls = Vec::new();
    for mode in [ExecutionMode::ThreadPerQuery, ExecutionMode::SubmitAndPoll] {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("executor-concurrency")
            .args(["--child-mode", mode_name(mode)])
            .args(["--emulator-url", emulator.url()])
            .args(["--queries", &args.queries.to_string()])
            .args(["--latency-ms", &args.latency_ms.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--poll-threads", &args.poll_threads.to_string()])
            .args(["--timeout-s", &timeout.as_secs().to_string()]);
        let stdout = run_process(command, timeout, mode_name(mode))?;
        let value = last_json_line(&stdout, mode_name(mode))?;
        verify_statements(&emulator, &mode_sql(mode), args.queries, &["SUCCEEDED"])
            .with_context(|| mode_name(mode))?;
        let figures = &value["figures"];
        let wall = figures["wall_s"].as_f64().context("wall_s")?;
        eprintln!(
            "{:<18} {} queries in {wall:.2} s (ideal {ideal_s:.2} s, ×{:.2}); OS threads peak {}; \
             RSS peak {:.0} MiB (from {:.0}); executor peak running {}, polling {}",
            mode_name(mode),
            args.queries,
            wall / ideal_s.max(f64::EPSILON),
            figures["peak_os_threads"],
            figures["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
            figures["baseline_rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
            figures["metrics"]["peak_running"],
            figures["metrics"]["peak_polling"],
        );
        walls.push((mode_name(mode), wall));
        emit(SCENARIO, value["params"].clone(), figures.clone());
    }
    drop(emulator);

    if args.overhead_queries > 0 {
        overhead(&runtime, &args, timeout, &parameters)?;
    }

    let Some(python) = &args.python else {
        eprintln!("classic asyncio    skipped (no --python / DBFED_TEST_PYTHON)");
        return Ok(());
    };
    for classic_client in ClassicClient::ALL {
        let classic = classic(&args, python, classic_client, latency, timeout)?;
        let wall = classic["wall_s"]
            .as_f64()
            .context("the script printed no wall_s")?;
        let speedups: serde_json::Map<String, Value> = walls
            .iter()
            .map(|(mode, w)| ((*mode).to_owned(), json!(wall / w.max(f64::EPSILON))))
            .collect();
        let rss = |v: &Value| v.as_f64().unwrap_or(0.0);
        eprintln!(
            "{:<18} {} queries in {wall:.2} s (ideal {ideal_s:.2} s); threads peak {}; \
             RSS peak {:.0} MiB; dbfed speed-up: {}",
            classic_client.case(),
            args.queries,
            classic["peak_os_threads"],
            rss(&classic["peak_rss_bytes"]) / (1 << 20) as f64,
            speedups
                .iter()
                .map(|(m, s)| format!("{m} ×{:.2}", s.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut params = parameters.clone();
        params["case"] = json!(classic_client.case());
        params["workers"] = classic["workers"].clone();
        let mut figures = classic.clone();
        figures["ideal_s"] = json!(ideal_s);
        figures["wall_over_ideal"] = json!(wall / ideal_s.max(f64::EPSILON));
        figures["dbfed_speedup"] = Value::Object(speedups);
        emit(SCENARIO, params, figures);
    }
    Ok(())
}

const SCENARIO: &str = "executor-concurrency";

fn mode_name(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::ThreadPerQuery => "thread-per-query",
        ExecutionMode::SubmitAndPoll => "submit-and-poll",
        _ => "other",
    }
}

/// An emulator with the scenario's latency and concurrency, room to queue every query.
fn emulator(args: &Args, latency: Duration, tls: bool) -> Result<BackgroundEmulator> {
    let mut builder = Emulator::builder()
        .token(TOKEN)
        .warehouse_id(WAREHOUSE)
        .statement_latency(latency)
        .max_concurrent_statements(args.concurrency)
        .max_queued_statements(args.queries.max(1_000));
    if tls {
        builder = builder.tls_self_signed();
    }
    Ok(builder.spawn("127.0.0.1:0")?)
}

fn client(url: &str) -> Result<Client> {
    let config = ClientConfig::builder()
        .host(url)
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()?;
    Ok(Client::new(config)?)
}

/// The statement of a mode's queries (distinct, so the emulator's history tells them apart).
fn mode_sql(mode: ExecutionMode) -> String {
    format!("SELECT 1 AS {}", mode_name(mode).replace('-', "_"))
}

/// Checks that the warehouse ran `sql` exactly `n` times, each ending in one of `states`.
fn verify_statements(
    emulator: &BackgroundEmulator,
    sql: &str,
    n: usize,
    states: &[&str],
) -> Result<()> {
    let statements: Vec<_> = emulator
        .statements()
        .into_iter()
        .filter(|s| s.sql == sql)
        .collect();
    let done = statements
        .iter()
        .filter(|s| states.contains(&s.state.as_str()))
        .count();
    if statements.len() != n || done != n {
        bail!(
            "the warehouse saw {} statements, {done} ended in {states:?}; expected {n}",
            statements.len()
        );
    }
    Ok(())
}

/// The result line of one mode.
fn figures_json(
    figures: &Figures,
    mode: ExecutionMode,
    threads: usize,
    ideal_s: f64,
    parameters: &Value,
) -> (Value, Value) {
    let ratio = figures.wall_s / ideal_s.max(f64::EPSILON);
    let mut params = parameters.clone();
    params["case"] = json!(mode_name(mode));
    params["threads"] = json!(threads);
    let figures = json!({
        "wall_s": figures.wall_s,
        "ideal_s": ideal_s,
        "wall_over_ideal": ratio,
        "rows": figures.rows,
        "baseline_os_threads": figures.baseline_threads,
        "peak_os_threads": figures.peak_threads,
        "executor_os_threads": figures.peak_threads.saturating_sub(figures.baseline_threads),
        "os_threads_at_peak": figures.thread_names,
        "baseline_rss_bytes": figures.baseline_rss_bytes,
        "peak_rss_bytes": figures.peak_rss_bytes,
        "rss_growth_bytes": figures.peak_rss_bytes.saturating_sub(figures.baseline_rss_bytes),
        "vm_hwm_bytes": figures.vm_hwm_bytes,
        "metrics": metrics_json(&figures.metrics),
        // Issue 4's target: within 10% of the ideal with at most 32 threads.
        "target_met": ratio <= 1.1 && figures.peak_threads <= 32,
    });
    (params, figures)
}

struct Figures {
    wall_s: f64,
    rows: u64,
    baseline_threads: usize,
    baseline_rss_bytes: u64,
    peak_threads: usize,
    thread_names: BTreeMap<String, usize>,
    peak_rss_bytes: u64,
    vm_hwm_bytes: Option<u64>,
    metrics: MetricsSnapshot,
}

/// All queries submitted at once through one executor; every stream drained.
fn concurrent(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    args: &Args,
    mode: ExecutionMode,
    threads: usize,
    timeout: Duration,
) -> Result<Figures> {
    let sql = mode_sql(mode);
    reset_peak_rss();
    let baseline_threads = os_threads();
    let baseline_rss_bytes = status_bytes("VmRSS:").unwrap_or(0);
    let sampler = Sampler::start();
    let executor = Executor::builder(DatabricksDriver::new(client(url)?))
        .threads(threads)
        .pool_size(threads)
        .max_overflow(0)
        .queue_depth(args.queries.max(1))
        .queue_timeout(timeout)
        .pool_timeout(timeout)
        .mode(mode)
        .build()?;
    let started = Instant::now();
    let results = runtime.block_on(async {
        let queries = (0..args.queries).map(|_| async {
            let mut stream = executor.query(&sql, &[]).await?;
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows() as u64;
            }
            Ok::<_, dbfed_executor::ExecutorError>(rows)
        });
        tokio::time::timeout(timeout, futures::future::join_all(queries)).await
    });
    let wall_s = started.elapsed().as_secs_f64();
    let metrics = executor.metrics();
    drop(executor);
    let sampled = sampler.stop();
    let results = results
        .map_err(|_| anyhow::anyhow!("{} did not finish within {timeout:?}", mode_name(mode)))?;
    let mut rows = 0;
    for result in results {
        rows += result.with_context(|| format!("a {} query failed", mode_name(mode)))?;
    }
    if rows != args.queries as u64 {
        bail!(
            "{}: {rows} rows, expected {}",
            mode_name(mode),
            args.queries
        );
    }
    Ok(Figures {
        wall_s,
        rows,
        baseline_threads,
        baseline_rss_bytes,
        peak_threads: sampled.threads.max(baseline_threads),
        thread_names: sampled.names,
        peak_rss_bytes: sampled.rss_bytes,
        vm_hwm_bytes: status_bytes("VmHWM:"),
        metrics,
    })
}

/// The executor's own cost: sequential tiny queries at zero latency through the executor
/// against the same queries through `Client::execute`.
fn overhead(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    timeout: Duration,
    parameters: &Value,
) -> Result<()> {
    let n = args.overhead_queries;
    let emulator = Emulator::builder()
        .token(TOKEN)
        .warehouse_id(WAREHOUSE)
        .max_concurrent_statements(args.concurrency)
        .spawn("127.0.0.1:0")?;
    let sql = "SELECT 1 AS overhead";

    // Straight through the client, on this thread (the blocking client must not run on the
    // runtime).
    let client = client(emulator.url())?;
    let drain = |client: &Client| -> Result<u64> {
        let mut rows = 0;
        for batch in client.execute(sql, &[])? {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    };
    drain(&client)?; // warm the connection
    let started = Instant::now();
    let mut rows = 0;
    for _ in 0..n {
        rows += drain(&client)?;
        if started.elapsed() > timeout {
            bail!("overhead: the client baseline did not finish within {timeout:?}");
        }
    }
    let client_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    if rows != n as u64 {
        bail!("overhead: {rows} client rows, expected {n}");
    }

    let mut by_mode = serde_json::Map::new();
    let mut summary = Vec::new();
    for mode in [ExecutionMode::ThreadPerQuery, ExecutionMode::SubmitAndPoll] {
        let poll = Duration::from_millis(args.overhead_poll_ms.max(1));
        let driver = DatabricksDriver::new(client.clone()).poll_interval(poll, poll * 50);
        let executor = Executor::builder(driver)
            .threads(1)
            .pool_size(1)
            .mode(mode)
            .poll_interval(poll, poll * 50)
            .build()?;
        let (rows, secs) = runtime
            .block_on(async {
                let run = async {
                    let mut rows = 0u64;
                    // Warm the session before timing.
                    let mut warm = executor.query(sql, &[]).await?;
                    while warm.next().await.transpose()?.is_some() {}
                    let started = Instant::now();
                    for _ in 0..n {
                        let mut stream = executor.query(sql, &[]).await?;
                        while let Some(batch) = stream.next().await {
                            rows += batch?.num_rows() as u64;
                        }
                    }
                    Ok::<_, dbfed_executor::ExecutorError>((rows, started.elapsed().as_secs_f64()))
                };
                tokio::time::timeout(timeout, run).await
            })
            .map_err(|_| {
                anyhow::anyhow!("overhead: the executor did not finish within {timeout:?}")
            })??;
        drop(executor);
        if rows != n as u64 {
            bail!("overhead: {rows} executor rows, expected {n}");
        }
        let us = secs * 1e6 / n as f64;
        summary.push(format!(
            "{} {us:.0} µs/query ({:+.0} µs)",
            mode_name(mode),
            us - client_us
        ));
        by_mode.insert(
            mode_name(mode).to_owned(),
            json!({"us_per_query": us, "overhead_us_per_query": us - client_us}),
        );
    }
    eprintln!(
        "overhead         {n} sequential tiny queries: client {client_us:.0} µs/query; {}",
        summary.join("; ")
    );
    let mut params = parameters.clone();
    params["case"] = json!("overhead");
    params["overhead_queries"] = json!(n);
    params["poll_ms"] = json!(args.overhead_poll_ms.max(1));
    emit(
        SCENARIO,
        params,
        json!({"client_us_per_query": client_us, "executor": by_mode}),
    );
    Ok(())
}

/// Runs `classic_asyncio.py` with `client` against an emulator with the same latency and
/// concurrency (TLS for the connector, which speaks only HTTPS) and returns its JSON line.
fn classic(
    args: &Args,
    python: &Path,
    client: ClassicClient,
    latency: Duration,
    timeout: Duration,
) -> Result<Value> {
    let emulator = emulator(args, latency, client.needs_tls())?;
    let sql = format!("SELECT 1 AS {}", client.case().replace('-', "_"));
    let workers = args.python_workers.unwrap_or(args.concurrency);
    let value = crate::classic::run(
        python,
        client,
        emulator.url(),
        &ClassicOptions {
            token: TOKEN,
            warehouse: WAREHOUSE,
            sql: &sql,
            queries: args.queries,
            workers,
            timeout,
        },
    )?;
    if value["rows"].as_u64() != Some(args.queries as u64) {
        bail!(
            "{} read {} rows, expected {}",
            client.case(),
            value["rows"],
            args.queries
        );
    }
    // The connector closes each statement after reading it: CLOSED counts as done.
    verify_statements(&emulator, &sql, args.queries, &["SUCCEEDED", "CLOSED"])
        .with_context(|| client.case())?;
    Ok(value)
}

fn metrics_json(m: &MetricsSnapshot) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "threads": m.threads,
        "peak_running": m.peak_running,
        "peak_polling": m.peak_polling,
        "submitted": m.submitted,
        "completed": m.completed,
        "failed": m.failed,
        "overloaded": m.overloaded,
        "starved": m.starved,
        "sessions_opened": m.sessions_opened,
        "queue_wait_ms": {
            "count": m.queue_wait.count,
            "mean": ms(m.queue_wait.mean()),
            "p50": ms(m.queue_wait.quantile(0.5)),
            "p99": ms(m.queue_wait.quantile(0.99)),
            "max": ms(m.queue_wait.max),
        },
        "checkout_wait_ms": {
            "mean": ms(m.checkout_wait.mean()),
            "max": ms(m.checkout_wait.max),
        },
    })
}
