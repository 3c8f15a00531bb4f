//! Scenario 1 (and the large-result half of scenario 3): one large result end to end, stage by
//! stage, at several result sizes.
//!
//! For each size (`SELECT * FROM samples.tpch.lineitem LIMIT n`):
//!
//! 1. **ceiling**: the statement's chunk files are fetched once with plain HTTP and written to
//!    local disk; reading and decoding them from disk with `--threads` threads is the ceiling
//!    (no network, no warehouse: the fastest any client can turn these files into batches);
//! 2. **stages**, each in a child process of its own (so its peak RSS and threads are its own):
//!    `client` (`dbfed_databricks::Client::execute`), `executor` (`dbfed_executor::Executor`, the
//!    async bridge), then the classic Python clients (`classic-sdk` on the same plain-HTTP
//!    emulator, `classic-connector` on a TLS one: the connector speaks only HTTPS).
//!
//! A stage's *read* time runs from the moment the warehouse finished the statement (the
//! emulator's `finished_at`, same wall clock) to the stage's last batch, so the warehouse's
//! execution time is not charged to the client; MB/s and rows/s are Arrow IPC bytes
//! (uncompressed, as decoded by the ceiling) and rows over that time. The warehouse's execution
//! time (`warehouse_execute_s`, submission to `finished_at`) is reported per stage: it is not the
//! same for every stage, since the emulator compresses the chunks before `finished_at` when the
//! client asks for LZ4. The end-to-end wall time and the time to first batch are measured from
//! the query's submission; the time to first batch also from `finished_at`.
//!
//! With `--first-batch-chunks N` a second emulator serves the whole table in about `N` chunks
//! (`series: "first-batch"` lines) to measure the time to first batch of a many-chunk result.
//! With `--perf DIR` each Rust stage's child process runs under `perf record` (see
//! [`crate::profile`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ResultFormat};
use dbfed_emulator::{BackgroundEmulator, Emulator, StatementRecord};
use dbfed_executor::{DatabricksDriver, Executor};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::classic::{ClassicClient, ClassicOptions};
use crate::engine;
use crate::profile::Perf;
use crate::raw::{RawWarehouse, decode_chunk};
use crate::sys::{
    Sampler, Watchdog, last_json_line, reset_peak_rss, run_process, status_bytes, unix_now,
};
use crate::{emit, mb_per_s, run_workers};

const TOKEN: &str = "dapi-bench";
const WAREHOUSE: &str = "bench";
const SCENARIO: &str = "large-result";

/// Flags of `large-result`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TPC-H scale factor of the emulator's `samples.tpch` (`lineitem` at SF 1: 6 M rows,
    /// ~1 GB of Arrow).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Result sizes in rows (`LIMIT n`); `0` reads the whole table.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000,0")]
    pub rows: Vec<u64>,
    /// Rows per chunk file of the emulator.
    #[arg(long, default_value_t = 200_000)]
    pub chunk_rows: usize,
    /// Download threads of the client (and threads of the disk ceiling).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Client prefetch budget in MiB.
    #[arg(long, default_value_t = 256)]
    pub prefetch_mib: u64,
    /// Python of a venv with `requirements-test.txt`: also run the classic clients.
    #[arg(long, env = "DBFED_TEST_PYTHON")]
    pub python: Option<PathBuf>,
    /// Hang guard per stage, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
    /// Also read the whole table from an emulator whose chunk size gives about this many chunks
    /// (e.g. 100: lineitem SF 1 in chunks of 60 000 rows) through the client, executor,
    /// DataFusion and Flight stages, for the time to first batch of a many-chunk result.
    #[arg(long)]
    pub first_batch_chunks: Option<u64>,
    /// Profile each Rust stage's child process with `perf record -F 499 -g` and write a text
    /// summary per stage into this folder (needs Linux `perf`).
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// Internal: run one stage in this (child) process against `--emulator-url`.
    #[arg(long, hide = true, requires_all = ["emulator_url", "sql"])]
    pub child_stage: Option<String>,
    /// Internal: the emulator a `--child-stage` process reads from.
    #[arg(long, hide = true)]
    pub emulator_url: Option<String>,
    /// Internal: the statement a `--child-stage` process runs.
    #[arg(long, hide = true)]
    pub sql: Option<String>,
}

/// A Rust stage measured in a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `Client::execute`, batches read on the calling thread.
    Client,
    /// `Executor::query` on a tokio runtime: the async bridge over the client.
    Executor,
    /// DataFusion: `SELECT` through a `DatabricksSource` in a federated session.
    DataFusion,
    /// The Flight transport ceiling: the result (read beforehand, untimed) streamed from memory
    /// by a minimal Flight server to a Flight client on loopback.
    FlightCeiling,
    /// `dbfed-flight` over the DataFusion session, read by a Flight SQL client on loopback.
    Flight,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Client,
        Stage::Executor,
        Stage::DataFusion,
        Stage::FlightCeiling,
        Stage::Flight,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Client => "client",
            Stage::Executor => "executor",
            Stage::DataFusion => "datafusion",
            Stage::FlightCeiling => "flight-ceiling",
            Stage::Flight => "flight",
        }
    }

    /// Whether the warehouse receives the statement text as given (otherwise the federation
    /// layer writes its own SQL for it).
    fn sends_sql_verbatim(self) -> bool {
        matches!(self, Stage::Client | Stage::Executor | Stage::FlightCeiling)
    }

    fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| format!("unknown --child-stage {name:?}"))
    }
}

/// What the ceiling measured for one result size.
#[derive(Debug, Clone)]
struct Ceiling {
    sql: String,
    rows: u64,
    chunks: u64,
    ipc_bytes: u64,
    lz4_bytes: u64,
    mb_s: f64,
    secs: f64,
}

/// The lineitem statement reading `limit` rows (`0`: the whole table).
fn lineitem_sql(limit: u64) -> String {
    if limit == 0 {
        "SELECT * FROM samples.tpch.lineitem".to_owned()
    } else {
        format!("SELECT * FROM samples.tpch.lineitem LIMIT {limit}")
    }
}

/// What the stages of one run share.
struct Run<'a> {
    args: &'a Args,
    emulator: &'a BackgroundEmulator,
    perf: Option<&'a Perf>,
    timeout: Duration,
    /// `None` for the main sizes, `Some("first-batch")` for the many-chunk run.
    series: Option<&'a str>,
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.rows.is_empty() {
        bail!("--rows needs at least one size");
    }
    if args.first_batch_chunks == Some(0) {
        bail!("--first-batch-chunks must be at least 1");
    }
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    if let Some(stage) = &args.child_stage {
        return child(&args, Stage::parse(stage)?, timeout);
    }
    let perf = args.perf.as_deref().map(Perf::new).transpose()?;

    eprintln!(
        "starting the emulator with samples.tpch at SF {}",
        args.scale
    );
    let emulator = spawn_emulator(&args, false)?;
    let table_rows = match args.first_batch_chunks {
        Some(_) => Some(RawWarehouse::new(emulator.url(), TOKEN)?.count("samples.tpch.lineitem")?),
        None => None,
    };
    let run = Run {
        args: &args,
        emulator: &emulator,
        perf: perf.as_ref(),
        timeout,
        series: None,
    };
    let mut ceilings = Vec::new();
    for &limit in &args.rows {
        let ceiling = run.ceiling(limit)?;
        for stage in Stage::ALL {
            run.stage(stage, limit, &ceiling);
        }
        if let Some(python) = &args.python {
            let client = ClassicClient::Sdk;
            match classic(&emulator, python, client, &ceiling, timeout) {
                Ok(figures) => report_stage(&args, limit, client.case(), None, figures),
                Err(e) => stage_failed(&args, limit, client.case(), None, &e),
            }
        }
        ceilings.push((limit, ceiling));
    }
    drop(emulator);

    if let Some(python) = &args.python {
        eprintln!("starting a TLS emulator for the connector (same data, same settings)");
        let emulator = spawn_emulator(&args, true)?;
        for (limit, ceiling) in &ceilings {
            let client = ClassicClient::Connector;
            eprintln!("== {} rows", ceiling.rows);
            match classic(&emulator, python, client, ceiling, timeout) {
                Ok(figures) => report_stage(&args, *limit, client.case(), None, figures),
                Err(e) => stage_failed(&args, *limit, client.case(), None, &e),
            }
        }
    } else {
        eprintln!("classic clients skipped (no --python / DBFED_TEST_PYTHON)");
    }

    if let (Some(chunks), Some(rows)) = (args.first_batch_chunks, table_rows) {
        let chunk_rows = usize::try_from(rows.div_ceil(chunks).max(1))?;
        eprintln!(
            "starting an emulator with chunks of {chunk_rows} rows: the whole table ({rows} rows) \
             in about {chunks} chunks, for the time to first batch"
        );
        let args = Args {
            chunk_rows,
            ..args.clone()
        };
        let emulator = spawn_emulator(&args, false)?;
        let run = Run {
            args: &args,
            emulator: &emulator,
            perf: perf.as_ref(),
            timeout,
            series: Some(FIRST_BATCH),
        };
        let ceiling = run.ceiling(0)?;
        for stage in [
            Stage::Client,
            Stage::Executor,
            Stage::DataFusion,
            Stage::Flight,
        ] {
            run.stage(stage, 0, &ceiling);
        }
    }
    Ok(())
}

/// The `series` of the many-chunk run's lines.
const FIRST_BATCH: &str = "first-batch";

impl Run<'_> {
    /// Fetches the chunk files of `limit` rows, measures the disk ceiling and reports it.
    fn ceiling(&self, limit: u64) -> Result<Ceiling> {
        let sql = lineitem_sql(limit);
        let ceiling = ceiling(self.emulator, &sql, self.args.threads)?;
        eprintln!(
            "== {} rows, {:.1} MB of Arrow in {} chunks ({:.1} MB LZ4)\n{:<18} read {:>8.0} MB/s",
            ceiling.rows,
            ceiling.ipc_bytes as f64 / 1e6,
            ceiling.chunks,
            ceiling.lz4_bytes as f64 / 1e6,
            "ceiling (disk)",
            ceiling.mb_s,
        );
        emit(
            SCENARIO,
            params(self.args, limit, "ceiling", self.series),
            json!({
                "rows": ceiling.rows, "chunks": ceiling.chunks, "arrow_ipc_bytes": ceiling.ipc_bytes,
                "lz4_bytes": ceiling.lz4_bytes, "read_mb_s": ceiling.mb_s, "ratio_to_ceiling": 1.0,
                "read_s": ceiling.secs,
                "rows_per_s": ceiling.rows as f64 / ceiling.secs.max(1e-3),
            }),
        );
        Ok(ceiling)
    }

    /// Runs one Rust stage in a child process (under `perf` when asked) and reports it.
    fn stage(&self, stage: Stage, limit: u64, ceiling: &Ceiling) {
        let (args, timeout, series) = (self.args, self.timeout, self.series);
        if stage == Stage::Flight && !cfg!(feature = "flight") {
            eprintln!(
                "{:<18} skipped (built without the `flight` feature)",
                stage.name()
            );
            return;
        }
        let before = statement_ids(self.emulator);
        let label = format!(
            "{}-{}-{}",
            series.unwrap_or("rows"),
            if limit == 0 {
                "all".to_owned()
            } else {
                limit.to_string()
            },
            stage.name()
        );
        let measured = std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| {
                let mut command = Command::new(exe);
                command
                    .arg("large-result")
                    .args(["--child-stage", stage.name()])
                    .args(["--emulator-url", self.emulator.url()])
                    .args(["--sql", &ceiling.sql])
                    .args(["--threads", &args.threads.to_string()])
                    .args(["--prefetch-mib", &args.prefetch_mib.to_string()])
                    .args(["--timeout-s", &timeout.as_secs().to_string()])
                    .env("RUST_BACKTRACE", "0");
                let command = match self.perf {
                    Some(perf) => perf.wrap(&command, &label),
                    None => command,
                };
                run_process(command, timeout, stage.name())
            })
            .and_then(|stdout| last_json_line(&stdout, stage.name()))
            .and_then(|line| {
                if stage == Stage::FlightCeiling {
                    transport_figures(ceiling, &line["figures"])
                } else {
                    stage_figures(
                        self.emulator,
                        &before,
                        ceiling,
                        &line["figures"],
                        stage.sends_sql_verbatim(),
                    )
                }
            });
        match measured {
            Ok(mut figures) => {
                if let Some(perf) = self.perf {
                    match perf.summarize(&label, timeout) {
                        Ok(profile) => figures["profile"] = profile,
                        Err(e) => {
                            eprintln!("{:<18} no profile: {e:#}", stage.name());
                            figures["profile_error"] = json!(format!("{e:#}"));
                        }
                    }
                }
                report_stage(args, limit, stage.name(), series, figures);
            }
            // A stage that fails is reported as failed, with the statement the warehouse
            // rejected if any; the other stages still run.
            Err(e) => {
                let rejected = new_statements(self.emulator, &before)
                    .into_iter()
                    .find(|s| s.state.as_str() == "FAILED")
                    .map(|s| s.sql);
                let e = match rejected {
                    Some(sql) => e.context(format!("the warehouse rejected: {sql}")),
                    None => e,
                };
                stage_failed(args, limit, stage.name(), series, &e);
            }
        }
    }
}

fn params(args: &Args, limit: u64, stage: &str, series: Option<&str>) -> Value {
    let mut params = json!({
        "scale": args.scale, "limit": limit, "stage": stage, "threads": args.threads,
        "chunk_rows": args.chunk_rows, "prefetch_mib": args.prefetch_mib,
    });
    if let Some(series) = series {
        params["series"] = json!(series);
    }
    params
}

fn report_stage(args: &Args, limit: u64, stage: &str, series: Option<&str>, figures: Value) {
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / (1 << 20) as f64;
    let seconds = |key: &str| {
        figures[key]
            .as_f64()
            .map_or("–".to_owned(), |s| format!("{s:.3} s"))
    };
    eprintln!(
        "{stage:<18} read {:>8.0} MB/s, {:>10.0} rows/s ({:>3.0}% of the ceiling); wall {}; \
         first batch {}; RSS peak {:.0} MiB",
        figures["read_mb_s"].as_f64().unwrap_or(0.0),
        figures["rows_per_s"].as_f64().unwrap_or(0.0),
        100.0 * figures["ratio_to_ceiling"].as_f64().unwrap_or(0.0),
        seconds("wall_s"),
        seconds("time_to_first_batch_s"),
        mib(&figures["peak_rss_bytes"]),
    );
    emit(SCENARIO, params(args, limit, stage, series), figures);
}

/// Reports a stage that failed (its error's first and last lines) and goes on.
fn stage_failed(args: &Args, limit: u64, stage: &str, series: Option<&str>, error: &anyhow::Error) {
    let text = format!("{error:#}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let summary = match lines.as_slice() {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [first, .., last] => format!("{first} … {last}"),
    };
    let summary: String = summary.chars().take(1200).collect();
    eprintln!("{stage:<18} FAILED: {summary}");
    emit(
        SCENARIO,
        params(args, limit, stage, series),
        json!({ "error": summary }),
    );
}

fn spawn_emulator(args: &Args, tls: bool) -> Result<BackgroundEmulator> {
    let mut builder = Emulator::builder()
        .tpch_scale(args.scale)
        .token(TOKEN)
        .warehouse_id(WAREHOUSE)
        .chunk_rows(args.chunk_rows)
        .chunk_bytes(usize::MAX)
        // Results of earlier stages are not read again: free their memory soon.
        .result_ttl(Duration::from_secs(args.timeout_s.clamp(60, 900)));
    if tls {
        builder = builder.tls_self_signed();
    }
    Ok(builder.spawn("127.0.0.1:0")?)
}

/// Fetches the chunk files of `sql` with plain HTTP onto local disk, then reads and decodes
/// them from disk with `threads` threads.
fn ceiling(emulator: &BackgroundEmulator, sql: &str, threads: usize) -> Result<Ceiling> {
    let raw = RawWarehouse::new(emulator.url(), TOKEN)?;
    let response = raw.execute(sql, "EXTERNAL_LINKS", "ARROW_STREAM", true)?;
    let id = response["statement_id"].as_str().context("statement_id")?;
    let chunks = response["manifest"]["total_chunk_count"]
        .as_u64()
        .context("total_chunk_count")?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    let mut lz4_bytes = 0u64;
    for index in 0..chunks {
        let bytes = raw.download(&raw.chunk_link(id, index)?)?;
        lz4_bytes += bytes.len() as u64;
        let path = dir.path().join(format!("chunk-{index:05}.arrow.lz4"));
        std::fs::write(&path, &bytes)?;
        files.push(path);
    }
    let (rows, ipc_bytes, secs) = read_from_disk(&files, threads)?;
    Ok(Ceiling {
        sql: sql.to_owned(),
        rows,
        chunks,
        ipc_bytes,
        lz4_bytes,
        mb_s: mb_per_s(ipc_bytes, secs),
        secs,
    })
}

/// Reads and decodes `files` with `threads` threads; returns (rows, IPC bytes, seconds).
fn read_from_disk(files: &[PathBuf], threads: usize) -> Result<(u64, u64, f64)> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let totals = run_workers(threads, || -> Result<(u64, u64)> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        loop {
            let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok((rows, bytes));
            };
            let (r, b) = decode_chunk(std::fs::read(path)?, true)?;
            rows += r as u64;
            bytes += b;
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    let (rows, bytes) = totals
        .iter()
        .fold((0, 0), |(r, b), (tr, tb)| (r + tr, b + tb));
    Ok((rows, bytes, secs))
}

fn statement_ids(emulator: &BackgroundEmulator) -> std::collections::HashSet<String> {
    emulator.statements().into_iter().map(|s| s.id).collect()
}

/// The statements `emulator` saw since `before`.
fn new_statements(
    emulator: &BackgroundEmulator,
    before: &std::collections::HashSet<String>,
) -> Vec<StatementRecord> {
    emulator
        .statements()
        .into_iter()
        .filter(|s| !before.contains(&s.id))
        .collect()
}

/// Turns a stage's timestamps into figures against the warehouse's own record of the statement.
fn stage_figures(
    emulator: &BackgroundEmulator,
    before: &std::collections::HashSet<String>,
    ceiling: &Ceiling,
    child: &Value,
    verbatim: bool,
) -> Result<Value> {
    let rows = child["rows"].as_u64().context("rows")?;
    if rows != ceiling.rows {
        bail!("read {rows} rows, the chunk files hold {}", ceiling.rows);
    }
    let statements = new_statements(emulator, before);
    let statement = if verbatim {
        let executed: Vec<_> = statements.iter().filter(|s| s.sql == ceiling.sql).collect();
        let [statement] = executed.as_slice() else {
            bail!(
                "expected the warehouse to run {:?} once, it ran it {} times ({} statements in all)",
                ceiling.sql,
                executed.len(),
                statements.len()
            );
        };
        *statement
    } else {
        // The federation layer writes its own SQL (and runs discovery statements first): the
        // result's statement is the one that served the most bytes.
        statements
            .iter()
            .filter(|s| s.sql.to_ascii_lowercase().contains("lineitem"))
            .max_by_key(|s| s.bytes_served)
            .with_context(|| {
                format!(
                    "the warehouse ran no statement on lineitem ({} statements in all)",
                    statements.len()
                )
            })?
    };
    let finished = statement
        .finished_at
        .context("the statement never finished on the warehouse")?;
    let execution_finished_unix = finished.timestamp_micros() as f64 / 1e6;
    let created_unix = statement.created_at.timestamp_micros() as f64 / 1e6;
    let started = child["started_unix"].as_f64().context("started_unix")?;
    let done = child["finished_unix"].as_f64().context("finished_unix")?;
    let first = child["first_batch_unix"].as_f64();
    // Never below a millisecond: tiny results are dominated by clock resolution.
    let read_s = (done - execution_finished_unix).max(1e-3);
    let read_mb_s = mb_per_s(ceiling.ipc_bytes, read_s);
    let mut figures = child.clone();
    let extra = json!({
        "arrow_ipc_bytes": ceiling.ipc_bytes,
        "warehouse_execute_s": execution_finished_unix - created_unix,
        "wall_s": done - started,
        "read_s": read_s,
        "read_mb_s": read_mb_s,
        "rows_per_s": rows as f64 / read_s,
        "end_to_end_mb_s": mb_per_s(ceiling.ipc_bytes, done - started),
        "ratio_to_ceiling": read_mb_s / ceiling.mb_s.max(f64::EPSILON),
        "time_to_first_batch_s": first.map(|f| f - started),
        "first_batch_after_execution_s": first.map(|f| f - execution_finished_unix),
        "bytes_served": statement.bytes_served,
    });
    if let (Some(target), Some(extra)) = (figures.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    Ok(figures)
}

/// Figures of the Flight transport ceiling, which times itself (no warehouse involved).
fn transport_figures(ceiling: &Ceiling, child: &Value) -> Result<Value> {
    let rows = child["rows"].as_u64().context("rows")?;
    if rows != ceiling.rows {
        bail!(
            "streamed {rows} rows, the chunk files hold {}",
            ceiling.rows
        );
    }
    let read_s = child["read_s"].as_f64().context("read_s")?.max(1e-3);
    let read_mb_s = mb_per_s(ceiling.ipc_bytes, read_s);
    let mut figures = child.clone();
    figures["arrow_ipc_bytes"] = json!(ceiling.ipc_bytes);
    figures["read_mb_s"] = json!(read_mb_s);
    figures["rows_per_s"] = json!(rows as f64 / read_s);
    figures["ratio_to_ceiling"] = json!(read_mb_s / ceiling.mb_s.max(f64::EPSILON));
    Ok(figures)
}

/// Runs a classic Python client once against `emulator` and returns its figures.
fn classic(
    emulator: &BackgroundEmulator,
    python: &Path,
    client: ClassicClient,
    ceiling: &Ceiling,
    timeout: Duration,
) -> Result<Value> {
    let before = statement_ids(emulator);
    let line = crate::classic::run(
        python,
        client,
        emulator.url(),
        &ClassicOptions {
            token: TOKEN,
            warehouse: WAREHOUSE,
            sql: &ceiling.sql,
            queries: 1,
            workers: 1,
            timeout,
        },
    )?;
    stage_figures(emulator, &before, ceiling, &line, true).with_context(|| client.case())
}

/// A child process: runs `--sql` once through one stage and prints its timestamps and peaks.
fn child(args: &Args, stage: Stage, timeout: Duration) -> Result<()> {
    let url = args.emulator_url.as_deref().context("--emulator-url")?;
    let sql = args.sql.as_deref().context("--sql")?;
    // Covers what the stages' own guards do not (the Flight ceiling's untimed pre-read, the
    // client's blocking read).
    let _watchdog = Watchdog::arm(timeout, &format!("the {} stage", stage.name()));
    let config = ClientConfig::builder()
        .host(url)
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()?;
    let client = Client::builder(config)
        .download_threads(args.threads)
        .prefetch_bytes(args.prefetch_mib << 20)
        .result_format(ResultFormat::ArrowLz4)
        .build()?;
    reset_peak_rss();
    let baseline_rss_bytes = status_bytes("VmRSS:").unwrap_or(0);
    let sampler = Sampler::start();
    let mut first_batch_unix = None;
    let mut rows = 0u64;
    let mut started_unix = unix_now();
    let mut read_s = None;
    let engine_runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-runtime")
            .enable_all()
            .build()
    };
    let guard =
        |what: &'static str| move |_| anyhow::anyhow!("the {what} stage took over {timeout:?}");
    match stage {
        Stage::DataFusion | Stage::Flight => {
            let runtime = engine_runtime()?;
            let read = runtime.block_on(async {
                let run = async {
                    let ctx = engine::session(client).await?;
                    let started = || started_unix = unix_now();
                    if stage == Stage::Flight {
                        engine::flight(ctx, sql, started).await
                    } else {
                        engine::datafusion(&ctx, sql, started).await
                    }
                };
                tokio::time::timeout(timeout, run)
                    .await
                    .map_err(guard(stage.name()))?
            })?;
            rows = read.rows;
            first_batch_unix = read.first_batch_unix;
        }
        Stage::FlightCeiling => {
            let batches = engine::collect(&client, sql)?;
            let runtime = engine_runtime()?;
            started_unix = unix_now();
            let (read, secs) = runtime.block_on(async {
                tokio::time::timeout(timeout, engine::flight_ceiling(batches))
                    .await
                    .map_err(guard(stage.name()))?
            })?;
            rows = read.rows;
            first_batch_unix = read.first_batch_unix;
            read_s = Some(secs);
        }
        Stage::Client => {
            for batch in client.execute(sql, &[])? {
                let batch = batch?;
                first_batch_unix.get_or_insert_with(unix_now);
                rows += batch.num_rows() as u64;
            }
        }
        Stage::Executor => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-runtime")
                .enable_all()
                .build()?;
            let executor = Executor::builder(DatabricksDriver::new(client))
                .threads(1)
                .pool_size(1)
                .build()?;
            runtime.block_on(async {
                let run = async {
                    let mut stream = executor.query(sql, &[]).await?;
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        first_batch_unix.get_or_insert_with(unix_now);
                        rows += batch.num_rows() as u64;
                    }
                    Ok::<_, dbfed_executor::ExecutorError>(())
                };
                tokio::time::timeout(timeout, run)
                    .await
                    .map_err(|_| anyhow::anyhow!("the executor stage took over {timeout:?}"))?
                    .map_err(anyhow::Error::from)
            })?;
        }
    }
    let finished_unix = unix_now();
    let sampled = sampler.stop();
    emit(
        SCENARIO,
        json!({"stage": stage.name(), "child": true}),
        json!({
            "rows": rows,
            "read_s": read_s,
            "started_unix": started_unix,
            "first_batch_unix": first_batch_unix,
            "finished_unix": finished_unix,
            "baseline_rss_bytes": baseline_rss_bytes,
            "peak_rss_bytes": sampled.rss_bytes,
            "vm_hwm_bytes": status_bytes("VmHWM:"),
            "peak_os_threads": sampled.threads,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_round_trip_their_names() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.name()).expect("known stage"), stage);
        }
        assert!(Stage::parse("nope").is_err());
    }
}
