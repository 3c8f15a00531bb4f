//! The seed use case: an async application runs many Databricks queries at once without blocking
//! its event loop and without unbounded threads. 200 queries go through the executor's 8 worker
//! threads while a ticker task on the same runtime keeps ticking; the example prints the longest
//! gap the ticker saw, the process's peak OS threads and the executor's metrics.
//!
//! By default it starts the embedded emulator (100 ms per statement, 10 at a time, like a small
//! warehouse). `--workspace` uses DATABRICKS_HOST / DATABRICKS_TOKEN / DATABRICKS_WAREHOUSE_ID.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use dbfed_databricks::config::{ClientConfig, ClientConfigBuilder};
use dbfed_databricks::{Client, Param};
use dbfed_emulator::Emulator;
use dbfed_executor::{DatabricksDriver, ExecutionMode, Executor};
use futures::TryStreamExt;
use futures::future::try_join_all;

const QUERIES: i64 = 200;

fn main() -> Result<()> {
    let use_workspace = std::env::args().any(|a| a == "--workspace");
    // The emulator runs on its own thread; the client is created outside the async runtime.
    let (config, _emulator) = if use_workspace {
        (ClientConfigBuilder::from_process_env().build()?, None)
    } else {
        let emulator = Emulator::builder()
            .token("dapi-example")
            .statement_latency(Duration::from_millis(100))
            .max_concurrent_statements(10)
            .spawn("127.0.0.1:0")?;
        let config = ClientConfig::builder()
            .host(emulator.url())
            .warehouse_id("example")
            .token("dapi-example")
            .build()?;
        (config, Some(emulator))
    };
    let executor = Executor::builder(DatabricksDriver::new(Client::new(config)?))
        .threads(8)
        .pool_size(8)
        .mode(ExecutionMode::SubmitAndPoll)
        .build()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let peak_threads = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (rows, max_tick_gap) = runtime.block_on(async {
        // A ticker on the same runtime: if anything blocked the event loop, its gaps would grow.
        let max_gap_us = Arc::new(AtomicU64::new(0));
        let ticker = {
            let max_gap_us = max_gap_us.clone();
            let peak_threads = peak_threads.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let gap = last.elapsed().as_micros() as u64;
                    max_gap_us.fetch_max(gap, Ordering::Relaxed);
                    peak_threads.fetch_max(os_threads(), Ordering::Relaxed);
                    last = Instant::now();
                }
            })
        };
        let queries = (0..QUERIES).map(|i| {
            let executor = executor.clone();
            async move {
                let batches: Vec<_> = executor
                    .query(
                        "SELECT n_name FROM samples.tpch.nation WHERE n_nationkey = :k",
                        &[Param::new("k", i % 25)],
                    )
                    .await?
                    .try_collect()
                    .await?;
                Ok::<usize, anyhow::Error>(batches.iter().map(|b| b.num_rows()).sum())
            }
        });
        let rows: usize = try_join_all(queries).await?.into_iter().sum();
        ticker.abort();
        Ok::<_, anyhow::Error>((
            rows,
            Duration::from_micros(max_gap_us.load(Ordering::Relaxed)),
        ))
    })?;
    let metrics = executor.metrics();
    println!(
        "{QUERIES} queries, {rows} rows in {:.2?}; longest event-loop tick gap {max_tick_gap:.1?}; \
         peak OS threads {}; peak running on {} workers: {}",
        started.elapsed(),
        peak_threads.load(Ordering::Relaxed),
        metrics.threads,
        metrics.peak_running,
    );
    anyhow::ensure!(rows as i64 == QUERIES, "every query returns its nation");
    Ok(())
}

/// OS threads of this process (Linux); 0 elsewhere.
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}
