//! Issue 3's figures: the emulator's statements per second for tiny queries and MB/s served for a
//! large EXTERNAL_LINKS result, so it is never the bottleneck when other parts are measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use dbfed_emulator::Emulator;
use serde_json::json;

use crate::raw::RawWarehouse;
use crate::{emit, mb_per_s, run_workers};

const TOKEN: &str = "dapi-bench";

/// Flags of `emulator-throughput`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tiny statements to run.
    #[arg(long, default_value_t = 2_000)]
    pub statements: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// TPC-H scale factor for the large result (`lineitem`).
    #[arg(long, default_value_t = 0.5)]
    pub scale: f64,
    /// Concurrent downloads of the large result.
    #[arg(long, default_value_t = 4)]
    pub download_threads: usize,
    /// Hang guard of the whole scenario, in seconds: past it the process reports what hung
    /// and exits with code 124.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<()> {
    let _watchdog = crate::sys::Watchdog::arm(
        std::time::Duration::from_secs(args.timeout_s.max(1)),
        "emulator-throughput",
    );
    let emulator = Emulator::builder()
        .tpch_scale(args.scale)
        .token(TOKEN)
        .max_concurrent_statements(args.concurrency.max(1))
        .spawn("127.0.0.1:0")?;

    // Tiny statements, INLINE JSON, answered within wait_timeout.
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    run_workers(args.concurrency, || -> Result<()> {
        let raw = RawWarehouse::new(emulator.url(), TOKEN)?;
        while next.fetch_add(1, Ordering::Relaxed) < args.statements {
            raw.execute("SELECT 1", "INLINE", "JSON_ARRAY", false)?;
        }
        Ok(())
    })?;
    let tiny_per_s = args.statements as f64 / started.elapsed().as_secs_f64();

    // A large result: execute, then download every chunk with `download_threads` threads.
    let raw = RawWarehouse::new(emulator.url(), TOKEN)?;
    let started = Instant::now();
    let response = raw.execute(
        "SELECT * FROM samples.tpch.lineitem",
        "EXTERNAL_LINKS",
        "ARROW_STREAM",
        true,
    )?;
    let execute_secs = started.elapsed().as_secs_f64();
    let id = response["statement_id"].as_str().context("statement_id")?;
    let chunks = response["manifest"]["total_chunk_count"]
        .as_u64()
        .context("total_chunk_count")? as usize;
    let next = AtomicUsize::new(0);
    let served = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    run_workers(args.download_threads, || -> Result<()> {
        let raw = RawWarehouse::new(emulator.url(), TOKEN)?;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= chunks {
                return Ok(());
            }
            let bytes = raw.download(&raw.chunk_link(id, i as u64)?)?;
            served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    })?;
    let download_secs = started.elapsed().as_secs_f64();
    let served = served.into_inner();
    let served_mb_s = mb_per_s(served, download_secs);

    emit(
        "emulator-throughput",
        json!({"statements": args.statements, "concurrency": args.concurrency,
               "scale": args.scale, "download_threads": args.download_threads}),
        json!({
        "tiny_statements_per_s": tiny_per_s,
        "large_result_execute_s": execute_secs,
        "large_result_chunks": chunks,
        "large_result_lz4_bytes": served,
        "served_mb_s": served_mb_s,
        }),
    );
    eprintln!(
        "tiny statements: {tiny_per_s:.0}/s with {} callers\n\
         large result: executed in {execute_secs:.1} s, {chunks} chunks, {:.0} MB LZ4 served at {served_mb_s:.0} MB/s",
        args.concurrency,
        served as f64 / 1e6
    );
    Ok(())
}
