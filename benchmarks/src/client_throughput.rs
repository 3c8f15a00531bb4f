//! Issue 2's figures: LZ4 Arrow chunk decode MB/s per core, and end-to-end client MB/s from the
//! emulator against the ceiling of reading the same chunk files from local disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ResultFormat, StatementRequest};
use dbfed_emulator::Emulator;
use serde_json::json;

use crate::raw::{RawWarehouse, decode_chunk};
use crate::{emit, mb_per_s, run_workers};

const TOKEN: &str = "dapi-bench";

/// Flags of `client-throughput`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TPC-H scale factor; `lineitem` at SF 1 is about 6 M rows, ~1 GB of Arrow.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Rows per chunk file.
    #[arg(long, default_value_t = 200_000)]
    pub chunk_rows: usize,
    /// Client download threads (and threads of the disk ceiling).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Client prefetch budget in MiB.
    #[arg(long, default_value_t = 256)]
    pub prefetch_mib: u64,
    /// Where the chunk files are written (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Hang guard of the whole scenario, in seconds: past it the process reports what hung
    /// and exits with code 124.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<()> {
    let _watchdog = crate::sys::Watchdog::arm(
        std::time::Duration::from_secs(args.timeout_s.max(1)),
        "client-throughput",
    );
    let sql = "SELECT * FROM samples.tpch.lineitem";
    eprintln!(
        "starting the emulator with samples.tpch at SF {}",
        args.scale
    );
    let emulator = Emulator::builder()
        .tpch_scale(args.scale)
        .token(TOKEN)
        .chunk_rows(args.chunk_rows)
        .chunk_bytes(usize::MAX)
        .spawn("127.0.0.1:0")?;

    // 1. Fetch the chunk files once, with plain HTTP, and keep them on local disk.
    let raw = RawWarehouse::new(emulator.url(), TOKEN)?;
    let response = raw.execute(sql, "EXTERNAL_LINKS", "ARROW_STREAM", true)?;
    let id = response["statement_id"].as_str().context("statement_id")?;
    let chunks = response["manifest"]["total_chunk_count"]
        .as_u64()
        .context("total_chunk_count")?;
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    let mut compressed = 0u64;
    let started = Instant::now();
    for index in 0..chunks {
        let bytes = raw.download(&raw.chunk_link(id, index)?)?;
        compressed += bytes.len() as u64;
        let path = dir.join(format!("chunk-{index:05}.arrow.lz4"));
        std::fs::write(&path, &bytes)?;
        files.push(path);
    }
    let fetch_secs = started.elapsed().as_secs_f64();

    // 2. Decode throughput of one core: LZ4 frames + Arrow IPC, in memory, the client's decoder.
    let first = std::fs::read(&files[0])?;
    let schema = arrow::ipc::reader::StreamReader::try_new(
        dbfed_databricks::decode::decompress_lz4_frames(&first, "chunk 0")?.as_slice(),
        None,
    )?
    .schema();
    let in_memory: Vec<Vec<u8>> = files
        .iter()
        .take(8)
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()?;
    let started = Instant::now();
    let mut decoded_bytes = 0u64;
    for bytes in &in_memory {
        let (batches, size) =
            dbfed_databricks::decode::decode_chunk(bytes, true, u64::MAX, &schema, "chunk")?;
        decoded_bytes += size;
        std::hint::black_box(batches);
    }
    let decode_mb_s = mb_per_s(decoded_bytes, started.elapsed().as_secs_f64());

    // 3. Ceiling: read the same files from local disk and decode them with `threads` threads.
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let totals = run_workers(args.threads, || -> Result<(usize, u64)> {
        let (mut rows, mut bytes) = (0, 0);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = files.get(i) else {
                return Ok((rows, bytes));
            };
            let (r, b) = decode_chunk(std::fs::read(path)?, true)?;
            rows += r;
            bytes += b;
        }
    })?;
    let ceiling_secs = started.elapsed().as_secs_f64();
    let (rows, ipc_bytes) = totals
        .iter()
        .fold((0, 0), |(r, b), (tr, tb)| (r + tr, b + tb));
    let ceiling_mb_s = mb_per_s(ipc_bytes, ceiling_secs);

    // 4. End to end: the client against the emulator, same statement, same bytes.
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id("bench")
        .token(TOKEN)
        .build()?;
    let client = Client::builder(config)
        .download_threads(args.threads)
        .prefetch_bytes(args.prefetch_mib << 20)
        .result_format(ResultFormat::ArrowLz4)
        .build()?;
    // The warehouse's execution time is not the client's: submit and wait first, then time the
    // download and decode of the result (the part the disk ceiling measures), and report the
    // whole round trip separately.
    let started = Instant::now();
    let submitted = client.submit(&StatementRequest::new(sql))?;
    let succeeded = client.wait(submitted.id(), None)?;
    let execute_secs = started.elapsed().as_secs_f64();
    let reading = Instant::now();
    let stream = client.result_stream(succeeded)?;
    let mut first_batch = None;
    let mut client_rows = 0;
    for batch in stream {
        let batch = batch?;
        first_batch.get_or_insert_with(|| reading.elapsed().as_secs_f64());
        client_rows += batch.num_rows();
    }
    let client_secs = reading.elapsed().as_secs_f64();
    let round_trip_secs = started.elapsed().as_secs_f64();
    if client_rows != rows {
        bail!("the client read {client_rows} rows, the files hold {rows}");
    }
    let client_mb_s = mb_per_s(ipc_bytes, client_secs);

    emit(
        "client-throughput",
        json!({"scale": args.scale, "chunk_rows": args.chunk_rows, "threads": args.threads,
               "prefetch_mib": args.prefetch_mib}),
        json!({
        "rows": rows, "chunks": chunks, "arrow_ipc_bytes": ipc_bytes, "lz4_bytes": compressed,
        "raw_fetch_mb_s": mb_per_s(ipc_bytes, fetch_secs),
        "decode_mb_s_per_core": decode_mb_s,
        "disk_ceiling_mb_s": ceiling_mb_s,
        "client_result_mb_s": client_mb_s,
        "client_time_to_first_batch_s": first_batch,
        "warehouse_execute_s": execute_secs,
        "round_trip_mb_s": mb_per_s(ipc_bytes, round_trip_secs),
        "ratio_client_to_ceiling": client_mb_s / ceiling_mb_s,
        }),
    );
    eprintln!(
        "{rows} rows, {:.0} MB of Arrow in {chunks} chunks ({:.0} MB LZ4)\n\
         decode, one core:       {decode_mb_s:>8.0} MB/s\n\
         disk ceiling, {} thr:    {ceiling_mb_s:>8.0} MB/s\n\
         client, result read:    {client_mb_s:>8.0} MB/s  ({:.0}% of the ceiling)\n\
         (the emulator executed the statement in {execute_secs:.1} s before that)",
        ipc_bytes as f64 / 1e6,
        compressed as f64 / 1e6,
        args.threads,
        100.0 * client_mb_s / ceiling_mb_s,
    );
    Ok(())
}
