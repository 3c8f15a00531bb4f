//! `dbfed demo`: the embedded warehouse emulator and a showcase of the client.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dbfed_databricks::config::{ClientConfig, ClientConfigBuilder};
use dbfed_databricks::{Client, Param};
use dbfed_emulator::{BackgroundEmulator, Emulator, EmulatorBuilder};

use crate::output::{OutputFormat, write_results};

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

/// Flags of `dbfed demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the showcase and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Address of the embedded warehouse emulator (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// TPC-H scale factor of `samples.tpch`.
    #[arg(long, default_value_t = 0.01)]
    pub tpch_scale: f64,
}

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
    let (emulator, config) = embedded_emulator(
        Emulator::builder()
            .tpch_scale(args.tpch_scale)
            .chunk_rows(20_000),
        &args.listen,
    )?;
    println!("listening on {}", emulator.url());
    println!(
        "(a local Databricks SQL Warehouse emulator with samples.tpch at scale {})\n",
        args.tpch_scale
    );

    let client = Client::builder(config.build()?).build()?;

    println!("-- revenue per nation in ASIA, 1995 (parameters :region and :year)");
    let started = Instant::now();
    let stream = client.execute(
        SHOWCASE_SQL,
        &[
            Param::new("region", "ASIA".to_owned()),
            Param::new("year", 1995_i64),
        ],
    )?;
    let statement_id = stream.statement_id().to_owned();
    let mut stdout = std::io::stdout().lock();
    write_results(stream, OutputFormat::Table, &mut stdout)?;
    drop(stdout);
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
    println!(
        "  DATABRICKS_HOST={} DATABRICKS_TOKEN={DEMO_TOKEN} \\",
        emulator.url()
    );
    println!(
        "  DATABRICKS_WAREHOUSE_ID={DEMO_WAREHOUSE} dbfed query \"SELECT * FROM samples.tpch.region\""
    );
    if args.once {
        return Ok(());
    }
    println!("\nserving until Ctrl-C");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal listener")?
        .block_on(tokio::signal::ctrl_c())
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}

/// `1.5 MiB`-style sizes.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
