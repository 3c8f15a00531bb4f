//! `dbfed-bench`: dbfed's benchmark scenarios, one subcommand each.
//!
//! Every scenario starts its own emulator on loopback, is bounded in size and time, prints one
//! JSON object per result line on stdout, `{"scenario": .., "params": {..}, "figures": {..}}`,
//! and a short human summary on stderr. Figures that compare are measured side by side in the
//! same run: report their ratios. `report` turns a file of such lines into `BENCHMARKS.md` and
//! SVG plots.

mod adbc;
mod classic;
mod client_throughput;
mod emulator_throughput;
mod engine;
mod executor_concurrency;
mod federation;
mod large_result;
mod profile;
mod raw;
mod report;
mod svg;
mod sys;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "dbfed-bench", about = "dbfed benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// LZ4 Arrow chunk decode MB/s per core, and end-to-end client MB/s from the emulator against
    /// the ceiling of reading the same chunk files from local disk.
    ClientThroughput(client_throughput::Args),
    /// Emulator statements per second for tiny queries and MB/s served for a large result.
    EmulatorThroughput(emulator_throughput::Args),
    /// Many concurrent queries through the executor (both modes) against a warehouse with
    /// latency and a concurrency limit: wall time against the ideal, peak threads and RSS; the
    /// executor's overhead per query; the classic Python asyncio baseline with `--python`.
    ExecutorConcurrency(executor_concurrency::Args),
    /// Scenario 1 (+ 3): one large result end to end, stage by stage (disk ceiling, client,
    /// executor, the classic Python clients) at several result sizes: MB/s, ratio to the
    /// ceiling, time to first batch, peak RSS; each stage in its own process.
    LargeResult(large_result::Args),
    /// Scenario 2 (+ 3): `executor-concurrency` at several concurrency levels.
    ConcurrencySweep(SweepArgs),
    /// Scenario 4: TPC-H with mixed placement under each pushdown level: bytes and rows the
    /// warehouse served, against what each query really needs.
    Federation(federation::Args),
    /// Scenario 5: ADBC Python `fetch_arrow_table` throughput from dbfed's Flight SQL server.
    Adbc(adbc::Args),
    /// Reads a results file (JSON lines) and writes `BENCHMARKS.md` and SVG plots.
    Report(report::Args),
}

/// Flags of `concurrency-sweep`.
#[derive(Debug, clap::Args)]
struct SweepArgs {
    /// Concurrent query counts, in order.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000")]
    levels: Vec<usize>,
    /// The flags of each level's `executor-concurrency` run (`--queries` comes from `--levels`;
    /// the overhead figure runs once, at the last level).
    #[command(flatten)]
    level: executor_concurrency::Args,
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::ClientThroughput(args) => client_throughput::run(args),
        Scenario::EmulatorThroughput(args) => emulator_throughput::run(args),
        Scenario::ExecutorConcurrency(args) => executor_concurrency::run(args),
        Scenario::LargeResult(args) => large_result::run(args),
        Scenario::ConcurrencySweep(args) => sweep(args),
        Scenario::Federation(args) => federation::run(args),
        Scenario::Adbc(args) => adbc::run(args),
        Scenario::Report(args) => report::run(args),
    }
}

fn sweep(args: SweepArgs) -> Result<()> {
    let SweepArgs { levels, level } = args;
    if levels.is_empty() || levels.contains(&0) {
        anyhow::bail!("--levels needs at least one count, each at least 1");
    }
    let overhead = level.overhead_queries;
    let mut failed = Vec::new();
    for (i, queries) in levels.iter().enumerate() {
        eprintln!("== {queries} concurrent queries");
        let last = i + 1 == levels.len();
        let run = executor_concurrency::run(executor_concurrency::Args {
            queries: *queries,
            overhead_queries: if last { overhead } else { 0 },
            emulator_url: None,
            child_mode: None,
            ..level.clone()
        });
        // A failed level is recorded and the sweep goes on to the next one.
        if let Err(e) = run {
            let error = format!("{e:#}");
            eprintln!("{queries} concurrent queries FAILED: {error}");
            emit(
                "executor-concurrency",
                serde_json::json!({"queries": queries, "case": "failed"}),
                serde_json::json!({"error": error.chars().take(1200).collect::<String>()}),
            );
            failed.push(*queries);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("concurrency levels {failed:?} failed (their lines say why)");
    }
    Ok(())
}

/// Where the figures come from: the git commit of the benchmark sources at run time and whether
/// the work tree had uncommitted changes (`{"commit": "unknown"}` outside a git checkout).
pub fn provenance() -> &'static serde_json::Value {
    static PROVENANCE: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    PROVENANCE.get_or_init(|| {
        let dir = env!("CARGO_MANIFEST_DIR");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        match git(&["rev-parse", "--short", "HEAD"]) {
            Some(commit) if !commit.is_empty() => {
                // The report's own output (BENCHMARKS.md, plots, copied results) is not a
                // change of what is measured.
                let dirty = git(&[
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ".",
                    ":!BENCHMARKS.md",
                    ":!benchmarks/report",
                ])
                .map(|s| !s.is_empty());
                serde_json::json!({"commit": commit, "dirty": dirty, "at_unix": sys::unix_now()})
            }
            _ => serde_json::json!({"commit": "unknown", "at_unix": sys::unix_now()}),
        }
    })
}

/// Prints one machine-readable result line: `{"scenario", "params", "figures", "provenance"}`
/// (see [`provenance`]).
pub fn emit(scenario: &str, params: serde_json::Value, figures: serde_json::Value) {
    // A child process's lines are read by its parent, which stamps its own.
    let provenance = if params["child"] == serde_json::Value::Bool(true) {
        serde_json::Value::Null
    } else {
        provenance().clone()
    };
    println!(
        "{}",
        serde_json::json!({
            "scenario": scenario, "params": params, "figures": figures,
            "provenance": provenance,
        })
    );
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 / 1e6 / seconds
}

/// Runs `work` on `threads` scoped threads and returns each thread's result; the first error (or
/// panic) wins.
pub fn run_workers<T: Send>(threads: usize, work: impl Fn() -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(&work)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
            })
            .collect()
    })
}
