//! Scenario 5: ADBC Python `fetch_arrow_table` throughput from dbfed's Flight SQL server.
//!
//! The emulator, a federated DataFusion session over it and `dbfed-flight` run in this process
//! on loopback; `benchmarks/clients/adbc_fetch.py` (adbc-driver-flightsql) reads
//! `SELECT * FROM samples.tpch.lineitem LIMIT n` into a `pyarrow.Table`, and must read every row
//! (`n`, or the whole table's `COUNT(*)`). Wall MB/s (`mb_s`) are the table's Arrow bytes over
//! the client's wall time (from `execute` to the table), which includes the warehouse's
//! execution; read MB/s (`read_mb_s`) count from the warehouse's `finished_at` to the table, as
//! `large-result` does. The warehouse's execution time is reported beside them.
//!
//! Needs the `flight` feature (dbfed-flight); without it the subcommand says so and fails.
#![cfg_attr(not(feature = "flight"), allow(unused_imports, dead_code))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ResultFormat};
use dbfed_emulator::Emulator;
#[cfg(feature = "flight")]
use dbfed_flight::{FlightSqlServer, StaticSessions};
use serde_json::json;

use crate::sys::{last_json_line, run_process};
use crate::{emit, engine, mb_per_s};

const TOKEN: &str = "dapi-bench";
const WAREHOUSE: &str = "bench";

/// Flags of `adbc`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TPC-H scale factor of the emulator's `samples.tpch`.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Result sizes in rows (`LIMIT n`); `0` reads the whole table.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,0")]
    pub rows: Vec<u64>,
    /// Python of a venv with `adbc-driver-flightsql` (required).
    #[arg(long, env = "DBFED_TEST_PYTHON")]
    pub python: Option<PathBuf>,
    /// Hang guard per read, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

/// Without the `flight` feature there is no Flight SQL server to read from.
#[cfg(not(feature = "flight"))]
pub fn run(_: Args) -> Result<()> {
    bail!("dbfed-bench was built without the `flight` feature")
}

/// Runs the scenario.
#[cfg(feature = "flight")]
pub fn run(args: Args) -> Result<()> {
    let python = args
        .python
        .as_deref()
        .context("adbc needs --python (a venv with adbc-driver-flightsql)")?;
    let probe = Command::new(python)
        .args(["-c", "import adbc_driver_flightsql.dbapi"])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !probe.status.success() {
        bail!(
            "{} has no adbc-driver-flightsql (add it to requirements-test.txt)",
            python.display()
        );
    }
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    eprintln!(
        "starting the emulator with samples.tpch at SF {}",
        args.scale
    );
    let emulator = Emulator::builder()
        .tpch_scale(args.scale)
        .token(TOKEN)
        .warehouse_id(WAREHOUSE)
        .result_ttl(Duration::from_secs(120))
        .spawn("127.0.0.1:0")?;
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()?;
    let client = Client::builder(config)
        .download_threads(4)
        .result_format(ResultFormat::ArrowLz4)
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-runtime")
        .enable_all()
        .build()?;
    let server = runtime.block_on(async {
        let ctx = engine::session(client).await?;
        let server = FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx)))
            .serve("127.0.0.1:0".parse()?)
            .await?;
        Ok::<_, anyhow::Error>(server)
    })?;
    let uri = format!("grpc://{}", server.local_addr());
    let table_rows =
        crate::raw::RawWarehouse::new(emulator.url(), TOKEN)?.count("samples.tpch.lineitem")?;
    for &limit in &args.rows {
        let sql = if limit == 0 {
            "SELECT * FROM samples.tpch.lineitem".to_owned()
        } else {
            format!("SELECT * FROM samples.tpch.lineitem LIMIT {limit}")
        };
        let before: std::collections::HashSet<String> =
            emulator.statements().into_iter().map(|s| s.id).collect();
        let line = fetch(python, &uri, &sql, timeout)?;
        let rows = line["rows"].as_u64().context("rows")?;
        let expected = if limit == 0 {
            table_rows
        } else {
            limit.min(table_rows)
        };
        if rows != expected {
            bail!("ADBC read {rows} rows for {sql:?}, the warehouse holds {expected}");
        }
        let bytes = line["arrow_bytes"].as_u64().context("arrow_bytes")?;
        let wall = line["wall_s"].as_f64().context("wall_s")?;
        let statements: Vec<_> = emulator
            .statements()
            .into_iter()
            .filter(|s| !before.contains(&s.id))
            .collect();
        let execute_s = statements
            .iter()
            .filter_map(|s| {
                let done = s.finished_at?;
                Some((done - s.created_at).num_microseconds()? as f64 / 1e6)
            })
            .fold(0.0, f64::max);
        // The result's statement finished last; the read runs from then to the table.
        let finished_at = statements
            .iter()
            .filter_map(|s| Some(s.finished_at?.timestamp_micros() as f64 / 1e6))
            .fold(None, |acc: Option<f64>, t| {
                Some(acc.map_or(t, |a| a.max(t)))
            });
        let read_s = match (finished_at, line["finished_unix"].as_f64()) {
            (Some(from), Some(to)) => Some((to - from).max(1e-3)),
            _ => None,
        };
        let read_mb_s = read_s.map(|s| mb_per_s(bytes, s));
        let mb_s = mb_per_s(bytes, wall);
        eprintln!(
            "ADBC fetch_arrow_table: {rows} rows, {:.1} MB in {wall:.2} s = {mb_s:.0} MB/s \
             (warehouse execution {execute_s:.2} s; read after it {} MB/s)",
            bytes as f64 / 1e6,
            read_mb_s.map_or("?".to_owned(), |r| format!("{r:.0}")),
        );
        let mut figures = line.clone();
        figures["mb_s"] = json!(mb_s);
        figures["read_s"] = json!(read_s);
        figures["read_mb_s"] = json!(read_mb_s);
        figures["warehouse_execute_s"] = json!(execute_s);
        emit(
            "adbc",
            json!({"scale": args.scale, "limit": limit}),
            figures,
        );
    }
    runtime.block_on(server.shutdown());
    Ok(())
}

#[cfg(feature = "flight")]
fn fetch(python: &Path, uri: &str, sql: &str, timeout: Duration) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/adbc_fetch.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args(["--uri", uri, "--sql", sql])
        .env("PYTHONUNBUFFERED", "1");
    let stdout = run_process(command, timeout, "the ADBC client")?;
    last_json_line(&stdout, "the ADBC client")
}
