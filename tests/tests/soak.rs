//! A bounded soak: many concurrent clients run many queries through one executor against the
//! emulator for `DBFED_SOAK_SECS` seconds (default 20). Every second the process's threads
//! (`/proc/self/task`), file descriptors (`/proc/self/fd`), resident memory (`VmRSS`) and the
//! executor's sessions are sampled; after warm-up they must stay flat (generous bounds). Then a
//! burst far beyond the admission queue must be refused with `Overloaded`, never hang.
//!
//! The soak runs in a child process (this test binary re-run on the ignored inner test), so the
//! other tests of the binary, running in parallel, do not disturb its readings. The child
//! prints one `soak-sample:` line per second and a `soak:` summary (see RELIABILITY.md).
//!
//! With `DBFED_SOAK_EMULATOR=process` the emulator runs in a process of its own (this binary
//! again, on another ignored test), so the soak child's readings are the client and executor
//! alone; the child also samples the emulator process's RSS (`emulator_rss=`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ClientBuilder, Param};
use dbfed_emulator::{Emulator, EmulatorBuilder};
use dbfed_executor::{DatabricksDriver, Executor, ExecutorError};
use futures::{StreamExt, TryStreamExt};

use crate::support::{TOKEN, WAREHOUSE, client_builder, fast_retries, runtime, start};

const CLIENTS: usize = 24;
const THREADS: usize = 8;
const QUEUE_DEPTH: usize = 32;

/// Where the soak's emulator runs: `DBFED_SOAK_EMULATOR=process` puts it in a process of its
/// own; anything else (the default) in the soak child.
fn emulator_in_own_process() -> bool {
    std::env::var("DBFED_SOAK_EMULATOR").is_ok_and(|v| v == "process")
}

/// The soak's emulator: small chunks, one slot per worker, results kept for a second (they are
/// read to the end, hence never closed) and a short statement history, so its own retention
/// does not read as growth.
fn soak_emulator() -> EmulatorBuilder {
    Emulator::builder()
        .chunk_rows(2_000)
        .max_concurrent_statements(THREADS)
        .result_ttl(Duration::from_secs(1))
        .max_statement_history(200)
}

/// The emulator child: this binary on [`emulator_in_this_process`]; stops when its stdin
/// closes (the child is also killed when this handle drops).
struct EmulatorProcess {
    child: Child,
    url: String,
}

impl EmulatorProcess {
    fn start() -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "soak::emulator_in_this_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DBFED_SOAK_EMULATOR_CHILD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the emulator child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // Read its URL on a thread, so a child that never prints cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // (libtest may have printed `test <name> ... ` on the same line.)
                if let Some((_, url)) = line.split_once("soak-emulator-url: ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("hang guard: the emulator child prints its URL");
        Self { child, url }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        // Closing stdin asks it to stop; kill is the fallback.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn soak_keeps_threads_fds_memory_and_sessions_flat() {
    let emulator = emulator_in_own_process().then(EmulatorProcess::start);
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe);
    child
        .args([
            "soak::soak_in_this_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DBFED_SOAK_CHILD", "1");
    if let Some(emulator) = &emulator {
        child
            .env("DBFED_SOAK_EMULATOR_URL", &emulator.url)
            .env("DBFED_SOAK_EMULATOR_PID", emulator.child.id().to_string());
    }
    let output = child.output().expect("the soak child runs");
    drop(emulator);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stdout.lines().chain(stderr.lines()) {
        if line.starts_with("soak") {
            eprintln!("{line}");
        }
    }
    assert!(
        output.status.success(),
        "the soak failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed") && stderr.contains("soak: "),
        "the soak ran:\n{stdout}\n{stderr}"
    );
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    threads: usize,
    fds: usize,
    rss_kib: u64,
    /// The emulator process's RSS (0 when it runs in this process).
    emulator_rss_kib: u64,
    sessions: usize,
    queries: u64,
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// `VmRSS` of `process` (`self` or a pid), 0 when unreadable.
fn rss_kib_of(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "run by soak_keeps_threads_fds_memory_and_sessions_flat in a child process"]
fn emulator_in_this_process() {
    assert!(
        std::env::var_os("DBFED_SOAK_EMULATOR_CHILD").is_some(),
        "run through soak_keeps_threads_fds_memory_and_sessions_flat"
    );
    let emulator = start(soak_emulator());
    println!("soak-emulator-url: {}", emulator.url());
    // Serve until stdin closes (the parent is done or gone); a day at most.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        // Bounded by stdin's end: EOF (or an error) ends the loop.
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(24 * 3600));
    eprintln!(
        "soak-emulator: {} statements in its history, {} requests in its log, RSS {} KiB",
        emulator.statements().len(),
        emulator.requests().len(),
        rss_kib_of("self")
    );
}

/// A client builder for the emulator at `url` (another process), like `client_builder`.
fn client_builder_for(url: &str) -> ClientBuilder {
    let config = ClientConfig::builder()
        .host(url)
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()
        .expect("valid configuration");
    Client::builder(config).retry_policy(fast_retries())
}

#[test]
#[ignore = "run by soak_keeps_threads_fds_memory_and_sessions_flat in a child process"]
fn soak_in_this_process() {
    assert!(
        std::env::var_os("DBFED_SOAK_CHILD").is_some(),
        "run through soak_keeps_threads_fds_memory_and_sessions_flat"
    );
    let secs: u64 = std::env::var("DBFED_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(8);
    let duration = Duration::from_secs(secs);
    let warmup = Duration::from_secs((secs / 4).max(4));

    // The emulator lives in this process too, unless the parent started one of its own.
    let remote = std::env::var("DBFED_SOAK_EMULATOR_URL").ok();
    let emulator_pid = std::env::var("DBFED_SOAK_EMULATOR_PID").ok();
    let emulator = remote.is_none().then(|| start(soak_emulator()));
    let builder = match (&remote, &emulator) {
        (Some(url), _) => client_builder_for(url),
        (None, Some(emulator)) => client_builder(emulator),
        (None, None) => unreachable!("an emulator in one place or the other"),
    };
    let client = builder
        .download_threads(2)
        .prefetch_bytes(256 << 10)
        .build()
        .expect("client builds");
    let executor = Executor::builder(
        DatabricksDriver::new(client)
            .poll_interval(Duration::from_millis(2), Duration::from_millis(20)),
    )
    .threads(THREADS)
    .pool_size(THREADS)
    .queue_depth(QUEUE_DEPTH)
    .build()
    .expect("executor builds");
    let rt = runtime();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    // The sampler: one reading a second on its own thread.
    let sampler = {
        let stop = stop.clone();
        let done = done.clone();
        let executor = executor.clone();
        let emulator_pid = emulator_pid.clone();
        std::thread::Builder::new()
            .name("soak-sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_secs(1));
                    let m = executor.metrics();
                    let s = Sample {
                        at: started.elapsed(),
                        threads: count_dir("/proc/self/task"),
                        fds: count_dir("/proc/self/fd"),
                        rss_kib: rss_kib_of("self"),
                        emulator_rss_kib: emulator_pid.as_deref().map_or(0, rss_kib_of),
                        sessions: m.pool_idle + m.pool_in_use,
                        queries: done.load(Ordering::Relaxed),
                    };
                    eprintln!(
                        "soak-sample: t={:>3}s threads={} fds={} rss={}KiB emulator_rss={}KiB \
                         sessions={} queries={}",
                        s.at.as_secs(),
                        s.threads,
                        s.fds,
                        s.rss_kib,
                        s.emulator_rss_kib,
                        s.sessions,
                        s.queries
                    );
                    samples.push(s);
                }
                samples
            })
            .expect("sampler thread")
    };

    // CLIENTS loops: full reads of three query shapes, and one in four dropped after a batch.
    rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let executor = executor.clone();
                let done = done.clone();
                let rows = rows.clone();
                let dropped = dropped.clone();
                tokio::spawn(async move {
                    let mut i = c;
                    while started.elapsed() < duration {
                        i += CLIENTS;
                        let (sql, params) = match i % 4 {
                            0 => ("SELECT * FROM samples.tpch.orders WHERE o_orderkey % 7 = :k", vec![Param::new("k", (i % 7) as i64)]),
                            1 => ("SELECT n_name, COUNT(*) AS c FROM samples.tpch.nation GROUP BY n_name", vec![]),
                            2 => ("SELECT l_orderkey, l_comment FROM samples.tpch.lineitem", vec![]),
                            _ => ("SELECT c_custkey, c_name FROM samples.tpch.customer WHERE c_nationkey = :n", vec![Param::new("n", (i % 25) as i64)]),
                        };
                        let mut stream = match executor.query(sql, &params).await {
                            Ok(s) => s,
                            Err(e) if e.is_resource_exhausted() => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                            Err(e) => panic!("query failed: {e}"),
                        };
                        if i % 4 == 2 {
                            // The big scan: read one batch, then drop (cancel on drop).
                            stream.next().await.expect("an item").expect("a batch");
                            dropped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let batches: Vec<RecordBatch> =
                                stream.try_collect().await.expect("the stream completes");
                            rows.fetch_add(
                                batches.iter().map(|b| b.num_rows() as u64).sum(),
                                Ordering::Relaxed,
                            );
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(duration + Duration::from_secs(60), t)
                .await
                .expect("hang guard: a soak client finishes")
                .expect("a soak client does not panic");
        }
    });

    // Overload: far more queries at once than threads + queue; each either runs or is refused
    // at once with Overloaded; none hangs.
    let burst = 10 * (THREADS + QUEUE_DEPTH);
    let (ran, overloaded) = rt.block_on(async {
        let tasks: Vec<_> = (0..burst)
            .map(|_| {
                let executor = executor.clone();
                tokio::spawn(async move {
                    match executor
                        .query("SELECT COUNT(*) FROM samples.tpch.orders", &[])
                        .await
                    {
                        Ok(s) => s.try_collect::<Vec<RecordBatch>>().await.map(|_| true),
                        Err(ExecutorError::Overloaded { .. }) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
            })
            .collect();
        let (mut ran, mut overloaded) = (0, 0);
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("hang guard: an overloaded executor answers")
                .expect("no panic")
            {
                Ok(true) => ran += 1,
                Ok(false) => overloaded += 1,
                Err(e) => panic!("under overload a query failed with {e}, not Overloaded"),
            }
        }
        (ran, overloaded)
    });
    stop.store(true, Ordering::Release);
    let samples = sampler.join().expect("sampler");

    let m = executor.metrics();
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
    assert!(steady.len() >= 3, "{samples:?}");
    let first = steady[0];
    let max = |f: fn(&Sample) -> u64| steady.iter().map(|s| f(s)).max().unwrap_or(0);
    let min = |f: fn(&Sample) -> u64| steady.iter().map(|s| f(s)).min().unwrap_or(0);
    let (threads_min, threads_max) = (min(|s| s.threads as u64), max(|s| s.threads as u64));
    let (fds_min, fds_max) = (min(|s| s.fds as u64), max(|s| s.fds as u64));
    let (rss_min, rss_max) = (min(|s| s.rss_kib), max(|s| s.rss_kib));
    let (emu_min, emu_max) = (min(|s| s.emulator_rss_kib), max(|s| s.emulator_rss_kib));
    let sessions_max = max(|s| s.sessions as u64);
    let place = if remote.is_some() {
        format!("emulator in its own process (RSS {emu_min}..{emu_max} KiB)")
    } else {
        "emulator in this process".to_owned()
    };
    eprintln!(
        "soak: {secs}s, {CLIENTS} clients, {THREADS} workers, {place}: {} queries ({} dropped early), \
         {} rows read; after {}s warm-up: threads {threads_min}..{threads_max}, fds {fds_min}..{fds_max}, \
         RSS {rss_min}..{rss_max} KiB, sessions <= {sessions_max}; burst of {burst}: {ran} ran, \
         {overloaded} Overloaded; executor: {} completed, {} cancellations, {} failed, {} overloaded",
        done.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        rows.load(Ordering::Relaxed),
        warmup.as_secs(),
        m.completed,
        m.cancellations,
        m.failed,
        m.overloaded,
    );
    assert!(
        done.load(Ordering::Relaxed) >= CLIENTS as u64,
        "the soak made progress"
    );
    // Generous bounds: the machine is shared and noisy, but a leak of one thread, descriptor or
    // session per query would blow through them within seconds.
    assert!(
        threads_max <= first.threads as u64 + 24,
        "threads grew: {threads_min}..{threads_max}"
    );
    assert!(
        fds_max <= first.fds as u64 + 64,
        "descriptors grew: {fds_min}..{fds_max}"
    );
    assert!(
        rss_max <= first.rss_kib + 256 * 1024,
        "RSS grew by more than 256 MiB: {rss_min}..{rss_max} KiB"
    );
    assert!(
        sessions_max <= THREADS as u64,
        "sessions stay within the pool"
    );
    assert!(overloaded > 0, "the burst overloaded the executor");
    assert_eq!(m.failed, 0, "{m:?}");
    assert_eq!(m.panics, 0, "{m:?}");
}
