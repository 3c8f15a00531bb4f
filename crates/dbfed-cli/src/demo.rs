//! `dbfed demo`: the embedded warehouse emulator, the Flight SQL endpoint, and a federated
//! showcase (Databricks tables joined with a local Parquet file).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::record_batch::RecordBatch;
use clap::Args;
use dbfed_databricks::config::{ClientConfig, ClientConfigBuilder};
use dbfed_databricks::{Client, Param};
use dbfed_emulator::{BackgroundEmulator, Emulator, EmulatorBuilder};
use dbfed_executor::{DatabricksDriver, Executor};
use dbfed_flight::{FlightSqlServer, StaticSessions};

use crate::config::{TableFormat, TableSource};

use crate::output::{OutputFormat, open_output, write_results};

/// Token the embedded emulator accepts in `demo` and `query --emulator`.
pub const DEMO_TOKEN: &str = "dapi-dbfed-demo";
/// Warehouse id used against the embedded emulator.
pub const DEMO_WAREHOUSE: &str = "dbfed-demo";

/// The showcase: TPC-H Q5's shape (revenue per nation of one region in one year), with the
/// region and the year as statement parameters.
const SHOWCASE_SQL: &str = "\
SELECT n.n_name AS nation, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue
FROM samples.tpch.customer c
JOIN samples.tpch.orders o ON c.c_custkey = o.o_custkey
JOIN samples.tpch.lineitem l ON l.l_orderkey = o.o_orderkey
JOIN samples.tpch.supplier s ON l.l_suppkey = s.s_suppkey AND c.c_nationkey = s.s_nationkey
JOIN samples.tpch.nation n ON s.s_nationkey = n.n_nationkey
JOIN samples.tpch.region r ON n.n_regionkey = r.r_regionkey
WHERE r.r_name = :region
  AND o.o_orderdate >= make_date(:year, 1, 1) AND o.o_orderdate < make_date(:year + 1, 1, 1)
GROUP BY n.n_name
ORDER BY revenue DESC";

/// The federated showcase: the same revenue per nation, computed on the warehouse (one pushed
/// statement), joined with the local Parquet file of sales targets.
const FEDERATED_SQL: &str = "\
SELECT r.nation, r.revenue, t.target, r.revenue / t.target AS attainment
FROM (
  SELECT n.n_name AS nation, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue
  FROM samples.tpch.customer c
  JOIN samples.tpch.orders o ON c.c_custkey = o.o_custkey
  JOIN samples.tpch.lineitem l ON l.l_orderkey = o.o_orderkey
  JOIN samples.tpch.supplier s ON l.l_suppkey = s.s_suppkey AND c.c_nationkey = s.s_nationkey
  JOIN samples.tpch.nation n ON s.s_nationkey = n.n_nationkey
  JOIN samples.tpch.region rg ON n.n_regionkey = rg.r_regionkey
  WHERE rg.r_name = 'ASIA' AND o.o_orderdate >= DATE '1995-01-01' AND o.o_orderdate < DATE '1996-01-01'
  GROUP BY n.n_name
) r
JOIN targets t ON t.nation = r.nation
ORDER BY attainment DESC";

/// Sales targets per nation at TPC-H scale 0.01 (scaled with `--tpch-scale`).
const TARGETS: [(&str, f64); 5] = [
    ("CHINA", 600_000.0),
    ("INDIA", 400_000.0),
    ("INDONESIA", 600_000.0),
    ("JAPAN", 420_000.0),
    ("VIETNAM", 950_000.0),
];

/// Flags of `dbfed demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the showcase and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Address of the Flight SQL endpoint (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address of the embedded warehouse emulator (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub emulator_listen: String,
    /// TPC-H scale factor of `samples.tpch`.
    #[arg(long, default_value_t = 0.01)]
    pub tpch_scale: f64,
    /// Statements the embedded emulator remembers (with their results); older finished ones
    /// are forgotten, so a long-running demo keeps little memory.
    #[arg(long, value_name = "N", default_value_t = DEMO_HISTORY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub history: usize,
    /// How long the embedded emulator keeps a finished result fetchable (`90s`, `10m`, `1h`,
    /// or seconds).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::emulator::parse_duration_flag)]
    pub result_ttl: std::time::Duration,
}

/// Default of `dbfed demo --history`.
pub const DEMO_HISTORY: usize = 100;

/// Starts an embedded emulator (accepting [`DEMO_TOKEN`]) on `listen` and returns it with a
/// client configuration pointing at it.
pub fn embedded_emulator(
    builder: EmulatorBuilder,
    listen: &str,
) -> Result<(BackgroundEmulator, ClientConfigBuilder)> {
    let emulator = builder
        .token(DEMO_TOKEN)
        .spawn(listen)
        .with_context(|| format!("cannot start the embedded emulator on {listen}"))?;
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(DEMO_WAREHOUSE)
        .token(DEMO_TOKEN);
    Ok((emulator, config))
}

/// Runs `dbfed demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    if !args.tpch_scale.is_finite() || args.tpch_scale <= 0.0 {
        anyhow::bail!(
            "--tpch-scale must be a positive number, got {}",
            args.tpch_scale
        );
    }
    let (emulator, config) = embedded_emulator(
        Emulator::builder()
            .tpch_scale(args.tpch_scale)
            .chunk_rows(20_000)
            .max_statement_history(args.history)
            .result_ttl(args.result_ttl),
        &args.emulator_listen,
    )?;
    let config = config.build()?;
    let targets = write_targets(args.tpch_scale)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dbfed-demo")
        // Planning and unparsing deep SQL plans (e.g. TPC-H) recurses deeply.
        .thread_stack_size(crate::RUNTIME_STACK_BYTES)
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::builder(config.clone()).build()?;
    let executor = Executor::builder(DatabricksDriver::new(client.clone()))
        .threads(4)
        .build()
        .context("cannot start the executor")?;
    let mut tables = BTreeMap::new();
    tables.insert(
        "targets".to_owned(),
        TableSource {
            path: targets.clone(),
            format: TableFormat::Parquet,
            declared_at: None,
        },
    );
    let compute_context = crate::serve::compute_context(&config);
    let outcome = runtime.block_on(async {
        // The Flight endpoint is bounded like `dbfed serve`'s default.
        let memory = crate::memory::MemoryBudget::new(crate::memory::default_memory_limit().limit)?;
        let ctx =
            crate::engine::federated_context(&executor, &compute_context, &tables, Some(&memory))
                .await?;
        let server = FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx.clone())))
            .serve(args.listen)
            .await
            .with_context(|| format!("cannot serve Flight SQL on {}", args.listen))?;
        let flight_url = server.url();
        println!("listening on {flight_url}");
        std::io::stdout().flush().ok();
        println!(
            "(Arrow Flight SQL over a local Databricks SQL Warehouse emulator at {}, samples.tpch at scale {}, \
             plus the local Parquet file {})\n",
            emulator.url(),
            args.tpch_scale,
            targets.display()
        );

        println!("-- ASIA 1995: revenue per nation (computed on the warehouse) against local sales targets");
        let started = Instant::now();
        // Records are matched by id: the emulator forgets old ones (`--history`).
        let before: std::collections::HashSet<String> =
            emulator.statements().into_iter().map(|r| r.id).collect();
        let batches = ctx
            .sql(FEDERATED_SQL)
            .await
            .context("planning the showcase")?
            .collect()
            .await
            .context("running the showcase")?;
        let table = arrow::util::pretty::pretty_format_batches(&batches)
            .context("formatting the result")?;
        println!("{table}");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        println!("{rows} rows in {:.0?}", started.elapsed());
        println!("\n-- pushed down to the warehouse (one statement; the join with `targets` ran locally):");
        for record in emulator
            .statements()
            .iter()
            .filter(|r| !before.contains(&r.id))
        {
            if record.sql.contains("lineitem") {
                println!("{}", record.sql);
                let params: Vec<String> = record
                    .parameters
                    .iter()
                    .map(|p| {
                        format!(
                            ":{}={}",
                            p.name.as_deref().unwrap_or("?"),
                            p.value.as_deref().unwrap_or("NULL")
                        )
                    })
                    .collect();
                if !params.is_empty() {
                    println!("-- parameters: {}", params.join(", "));
                }
                println!(
                    "-- statement {} {}: {} rows, {} ({} as {} {})",
                    record.id,
                    record.state.as_str(),
                    record.rows,
                    human_bytes(record.bytes_served),
                    record.disposition,
                    record.format,
                    record.result_compression,
                );
            }
        }
        Ok::<_, anyhow::Error>((server, flight_url))
    });
    let (server, flight_url) = outcome?;

    println!(
        "\n-- the client alone: TPC-H Q5's shape with :region and :year as statement parameters"
    );
    let started = Instant::now();
    let stream = client.execute(
        SHOWCASE_SQL,
        &[
            Param::new("region", "ASIA".to_owned()),
            Param::new("year", 1995_i64),
        ],
    )?;
    let statement_id = stream.statement_id().to_owned();
    let (out, _stdout) = open_output(None)?;
    write_results(stream, OutputFormat::Table, out)?;
    if let Some(record) = emulator.statements().iter().find(|r| r.id == statement_id) {
        println!(
            "statement {} {} in {:.0?}: {} rows, {} chunk(s), {} as {} {} ({})",
            record.id,
            record.state.as_str(),
            started.elapsed(),
            record.rows,
            record.chunks,
            record.disposition,
            record.format,
            record.result_compression,
            human_bytes(record.bytes_served),
        );
    }

    println!("\n-- streaming all of samples.tpch.lineitem (parallel LZ4 Arrow chunk downloads)");
    let started = Instant::now();
    let stream = client.execute("SELECT * FROM samples.tpch.lineitem", &[])?;
    let statement_id = stream.statement_id().to_owned();
    let (mut rows, mut batches) = (0usize, 0usize);
    for batch in stream {
        rows += batch?.num_rows();
        batches += 1;
    }
    let elapsed = started.elapsed();
    if let Some(record) = emulator.statements().iter().find(|r| r.id == statement_id) {
        println!(
            "{rows} rows in {batches} batches from {} chunks ({} of LZ4 Arrow transferred) in {elapsed:.1?}",
            record.chunks,
            human_bytes(record.bytes_served)
        );
    }

    println!("\nConnect with your own tools:");
    println!("  Flight SQL: {flight_url}   (tables: samples.tpch.*, targets)");
    println!("  Python (pip install adbc-driver-flightsql pyarrow):");
    println!("    import adbc_driver_flightsql.dbapi as flightsql");
    println!(
        "    with flightsql.connect(\"{flight_url}\", autocommit=True) as conn, conn.cursor() as cur:"
    );
    println!("        cur.execute(\"SELECT * FROM targets\"); print(cur.fetch_arrow_table())");
    if args.once {
        std::io::stdout().flush().ok();
    } else {
        // The emulator lives only as long as the demo serves: the hint is for that case.
        println!("  The warehouse emulator's REST API:");
        println!(
            "    DATABRICKS_HOST={} DATABRICKS_TOKEN={DEMO_TOKEN} \\",
            emulator.url()
        );
        println!(
            "    DATABRICKS_WAREHOUSE_ID={DEMO_WAREHOUSE} dbfed query \"SELECT * FROM samples.tpch.region\""
        );
        let mut signals = runtime.block_on(async { crate::signals::StopSignals::install() })?;
        println!("\nserving until Ctrl-C or SIGTERM");
        std::io::stdout().flush().ok();
        let stop = runtime.block_on(signals.recv())?;
        eprintln!("shutting down ({})", crate::serve::stop_name(stop));
    }
    runtime.block_on(server.shutdown());
    let _ = std::thread::spawn(move || executor.shutdown()).join();
    Ok(())
}

/// Where the demo keeps its files: `$DBFED_CACHE_DIR`, else `$XDG_CACHE_HOME/dbfed`, else
/// `~/.cache/dbfed`, else the system temp directory; `demo/` inside it.
fn demo_dir() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DBFED_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("dbfed")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("dbfed")))
        .unwrap_or_else(|| std::env::temp_dir().join("dbfed"))
        .join("demo")
}

/// Writes `targets.parquet` (nation, target) for `scale` and returns its path.
fn write_targets(scale: f64) -> Result<PathBuf> {
    let dir = demo_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("targets.parquet");
    let factor = scale / 0.01;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "nation",
            Arc::new(StringArray::from_iter_values(
                TARGETS.iter().map(|(n, _)| *n),
            )) as ArrayRef,
        ),
        (
            "target",
            Arc::new(Float64Array::from_iter_values(
                TARGETS.iter().map(|(_, t)| (t * factor).round()),
            )) as ArrayRef,
        ),
    ])
    .context("building the targets")?;
    // Write next to the final name, then rename: a concurrent demo never reads half a file.
    let partial = dir.join(format!("targets.parquet.{}.partial", std::process::id()));
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .context("writing the targets")?;
    writer.write(&batch).context("writing the targets")?;
    writer.close().context("writing the targets")?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
