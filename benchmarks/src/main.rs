//! `dbfed-bench`: dbfed's benchmark scenarios, one subcommand each.
//!
//! Every scenario starts its own emulator on loopback, is bounded in size and time, prints one
//! JSON object per result line on stdout (scenario, parameters, figures) and a short human summary
//! on stderr. Figures that compare are measured side by side in the same run: report their ratios.

mod client_throughput;
mod emulator_throughput;
mod executor_concurrency;
mod raw;

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
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::ClientThroughput(args) => client_throughput::run(args),
        Scenario::EmulatorThroughput(args) => emulator_throughput::run(args),
        Scenario::ExecutorConcurrency(args) => executor_concurrency::run(args),
    }
}

/// Prints one machine-readable result line.
pub fn emit(value: serde_json::Value) {
    println!("{value}");
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
