//! Chaos: the executor over the client over the emulator while the emulator's fault injection
//! fires. Every result is checked against the data itself — its row count and a checksum of
//! every column, and a multiset checksum of whole rows (so a lost row and a duplicated one cannot
//! cancel out) — against a fault-free run on the same warehouse: retried faults cost time, never
//! rows; failures that cannot be retried end the stream with an error, never a short result.
//!
//! Each run prints a `chaos:` line (faults fired, rows checked) for RELIABILITY.md; see them
//! with `cargo test -p dbfed-tests --test main chaos -- --nocapture`.

use std::time::Duration;

use dbfed_databricks::config::Credentials;
use dbfed_databricks::{Client, ClientBuilder, RetryPolicy};
use dbfed_emulator::{
    BackgroundEmulator, Emulator, EmulatorBuilder, Endpoint, FaultAction, FaultRule,
};
use dbfed_executor::{DatabricksDriver, Executor, ExecutorError};
use futures::StreamExt;

use dbfed_tests::Fingerprint;

use crate::support::{TOKEN, config_with, runtime};

/// 15 000 rows, nine columns of every kind (integers, decimals, dates, strings).
const SQL: &str = "SELECT * FROM samples.tpch.orders";
/// Rows per emulator chunk: the result has 30 chunks.
const CHUNK_ROWS: usize = 500;
/// Queries run at once in each scenario.
const QUERIES: usize = 3;

/// A patient retry policy with millisecond delays: storms are survived, quickly.
///
/// 30 attempts (the client's default): where two rules of rate 0.3 overlap, a request fails
/// 51% of the time, so 12 attempts lost one of ~100 chunk requests in ~3% of runs
/// (0.51^12 × 100); 30 attempts make that ~10⁻⁷.
fn patient_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(30)
        .base_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(50))
        .retry_after_bounds(Duration::from_millis(5), Duration::from_millis(50))
        .max_elapsed(Duration::from_secs(60))
}

fn client_builder(emulator: &BackgroundEmulator, credentials: Credentials) -> ClientBuilder {
    Client::builder(config_with(emulator, credentials))
        .retry_policy(patient_retries())
        .poll_interval(Duration::from_millis(5), Duration::from_millis(50))
        // Small prefetch: downloads stay a few chunks ahead, so faults hit mid-result.
        .prefetch_bytes(64 << 10)
        .download_threads(3)
        .download_timeout(Duration::from_secs(2))
}

/// One emulator (small chunks), a client and an executor over them.
struct Chaos {
    emulator: BackgroundEmulator,
    executor: Executor,
    rt: tokio::runtime::Runtime,
}

impl Chaos {
    fn new(
        emulator: EmulatorBuilder,
        credentials: Credentials,
        client: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> Self {
        let emulator = emulator
            .chunk_rows(CHUNK_ROWS)
            .token(TOKEN)
            .spawn("127.0.0.1:0")
            .expect("the emulator starts");
        let client = client(client_builder(&emulator, credentials))
            .build()
            .expect("client builds");
        let executor = Executor::builder(
            DatabricksDriver::new(client)
                .poll_interval(Duration::from_millis(5), Duration::from_millis(50)),
        )
        .threads(QUERIES)
        .pool_size(QUERIES)
        .build()
        .expect("executor builds");
        let rt = runtime();
        Self {
            emulator,
            executor,
            rt,
        }
    }

    fn with_token(emulator: EmulatorBuilder) -> Self {
        Self::new(emulator, Credentials::token(TOKEN), |b| b)
    }

    /// Runs `QUERIES` copies of [`SQL`] at once; each outcome is the fingerprint of everything
    /// the stream delivered, or its error together with the rows delivered before it.
    fn run(&self, pause_per_batch: Duration) -> Vec<Result<Fingerprint, (ExecutorError, u64)>> {
        self.rt.block_on(async {
            let tasks: Vec<_> = (0..QUERIES)
                .map(|_| {
                    let executor = self.executor.clone();
                    tokio::spawn(async move {
                        let mut stream = match executor.query(SQL, &[]).await {
                            Ok(s) => s,
                            Err(e) => return Err((e, 0)),
                        };
                        let mut batches = Vec::new();
                        // Bounded by the result's chunks; the outer timeout is a hang guard.
                        while let Some(item) = stream.next().await {
                            match item {
                                Ok(b) => batches.push(b),
                                Err(e) => {
                                    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                                    return Err((e, rows));
                                }
                            }
                            if !pause_per_batch.is_zero() {
                                tokio::time::sleep(pause_per_batch).await;
                            }
                        }
                        Ok(Fingerprint::of(&batches))
                    })
                })
                .collect();
            let mut out = Vec::new();
            for task in tasks {
                let outcome = tokio::time::timeout(Duration::from_secs(120), task)
                    .await
                    .expect("hang guard: a query under faults still ends")
                    .expect("the query task does not panic");
                out.push(outcome);
            }
            out
        })
    }

    /// The fault-free fingerprint, from the same warehouse before any rule is injected.
    fn baseline(&self) -> Fingerprint {
        assert_eq!(self.emulator.faults().fired_total(), 0);
        let runs = self.run(Duration::ZERO);
        let first = match &runs[0] {
            Ok(fp) => fp.clone(),
            Err((e, rows)) => panic!("the fault-free run failed after {rows} rows: {e}"),
        };
        assert_eq!(first.rows, 15_000, "SF 0.01 orders");
        assert!(runs.iter().all(|r| r.as_ref().ok() == Some(&first)));
        first
    }

    /// After a run: nothing left running on the warehouse, every worker and session returned.
    fn assert_quiet(&self) {
        for _ in 0..500 {
            let busy = self
                .emulator
                .statements()
                .iter()
                .any(|s| !s.state.is_terminal());
            let m = self.executor.metrics();
            if !busy && m.running == 0 && m.pool_in_use == 0 && m.queued == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "still busy after the run: {:?} / {:?}",
            self.executor.metrics(),
            self.emulator
                .statements()
                .iter()
                .filter(|s| !s.state.is_terminal())
                .map(|s| (&s.id, s.state))
                .collect::<Vec<_>>()
        );
    }
}

/// Asserts that every query delivered exactly the baseline, and reports the figures.
fn assert_all_exact(
    scenario: &str,
    chaos: &Chaos,
    baseline: &Fingerprint,
    runs: &[Result<Fingerprint, (ExecutorError, u64)>],
) {
    for run in runs {
        match run {
            Ok(fp) => assert_eq!(
                fp, baseline,
                "{scenario}: a row was lost, changed or duplicated"
            ),
            Err((e, rows)) => {
                panic!("{scenario}: a retryable storm failed a query after {rows} rows: {e}")
            }
        }
    }
    let fired = chaos.emulator.faults().fired_total();
    eprintln!(
        "chaos: {scenario}: {} queries exact, {} rows checked, {fired} faults fired, {} retries",
        runs.len(),
        baseline.rows * runs.len() as u64,
        chaos.executor.metrics().retries
    );
    chaos.assert_quiet();
}

/// Asserts that every query either delivered exactly the baseline or ended with an error
/// (after fewer rows): never a stream that ends cleanly with other data.
fn assert_exact_or_error(
    scenario: &str,
    chaos: &Chaos,
    baseline: &Fingerprint,
    runs: &[Result<Fingerprint, (ExecutorError, u64)>],
) -> usize {
    let mut failed = 0;
    for run in runs {
        match run {
            Ok(fp) => assert_eq!(fp, baseline, "{scenario}: a clean end with other data"),
            Err((e, rows)) => {
                assert!(
                    *rows < baseline.rows,
                    "{scenario}: error after all rows: {e}"
                );
                failed += 1;
            }
        }
    }
    eprintln!(
        "chaos: {scenario}: {} exact, {failed} ended with an error, {} faults fired",
        runs.len() - failed,
        chaos.emulator.faults().fired_total()
    );
    chaos.assert_quiet();
    failed
}

#[test]
fn throttling_storms_with_retry_after_cost_no_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    // Every endpoint, execute included (429 is always safe to retry), a third of the time.
    let storm = faults.inject(
        FaultRule::status(Endpoint::Any, 429, Some(1))
            .rate(0.3)
            .times(200),
    );
    let busy = faults.inject(
        FaultRule::status(Endpoint::GetChunk, 503, Some(1))
            .rate(0.3)
            .times(100),
    );
    let runs = chaos.run(Duration::ZERO);
    assert!(
        faults.fired(storm) >= 10,
        "the storm fired {}",
        faults.fired(storm)
    );
    assert!(faults.fired(busy) + faults.fired(storm) > 10);
    assert_all_exact("429/503 storm with Retry-After", &chaos, &baseline, &runs);
}

#[test]
fn unavailable_storms_without_retry_after_cost_no_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    // Idempotent calls (poll, chunk links, downloads) are retried on a bare 503.
    let mut rules = Vec::new();
    for endpoint in [
        Endpoint::GetStatement,
        Endpoint::GetChunk,
        Endpoint::Download,
    ] {
        rules.push(faults.inject(FaultRule::status(endpoint, 503, None).rate(0.3).times(100)));
    }
    let runs = chaos.run(Duration::ZERO);
    let fired: u64 = rules.iter().map(|r| faults.fired(*r)).sum();
    assert!(fired >= 10, "the storm fired {fired}");
    assert_all_exact("503 storm without Retry-After", &chaos, &baseline, &runs);
}

#[test]
fn an_unretryable_submission_failure_is_an_error_not_an_empty_result() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    // A bare 503 on execute may mean the statement was accepted: not retried, so it must fail.
    let rule = chaos
        .emulator
        .faults()
        .inject(FaultRule::status(Endpoint::ExecuteStatement, 503, None).times(2));
    let runs = chaos.run(Duration::ZERO);
    let failed = assert_exact_or_error("503 on execute", &chaos, &baseline, &runs);
    assert_eq!(failed, 2, "each fired 503 fails exactly its query");
    assert_eq!(chaos.emulator.faults().fired(rule), 2);
    for (e, rows) in runs.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(*rows, 0);
        let db = e
            .driver_error::<dbfed_databricks::Error>()
            .unwrap_or_else(|| panic!("a typed driver error: {e:?}"));
        assert_eq!(db.http_status(), Some(503), "{db}");
    }
}

#[test]
fn connection_resets_mid_chunk_cost_no_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    let early = faults.inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 64 },
        )
        .rate(0.25)
        .times(60),
    );
    let late = faults.inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 4_000 },
        )
        .rate(0.25)
        .times(60),
    );
    let runs = chaos.run(Duration::ZERO);
    assert!(faults.fired(early) + faults.fired(late) >= 10);
    assert_all_exact("connection resets mid-chunk", &chaos, &baseline, &runs);
}

#[test]
fn slow_and_stalled_downloads_cost_no_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    // Slow downloads within the 2 s download timeout, and stalled ones the client retries.
    let dbfed_tests::faults::SlowAndStalled { slow, stalled } =
        dbfed_tests::faults::slow_and_stalled_downloads(faults);
    let runs = chaos.run(Duration::ZERO);
    assert!(faults.fired(slow) >= 3, "{}", faults.fired(slow));
    assert_eq!(faults.fired(stalled), 3);
    assert_all_exact("slow and stalled downloads", &chaos, &baseline, &runs);
}

#[test]
fn expired_links_are_refreshed_without_losing_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    let at_execute = faults
        .inject(FaultRule::new(Endpoint::ExecuteStatement, FaultAction::ExpiredLinks).times(2));
    // Eight chunks get expired links twice in a row (the client refreshes a refused link up
    // to eight times: more in a row is a clear error, tested below).
    let at_chunk: Vec<_> = (1..=8)
        .map(|i| {
            faults.inject(
                FaultRule::new(Endpoint::GetChunk, FaultAction::ExpiredLinks)
                    .chunk_index(i * 3)
                    .times(2),
            )
        })
        .collect();
    let runs = chaos.run(Duration::ZERO);
    // Links are in the execute answer only when the statement finished within its wait.
    let fired = faults.fired(at_execute) + at_chunk.iter().map(|r| faults.fired(*r)).sum::<u64>();
    assert!(fired >= 16, "{fired}");
    assert_all_exact("expired links", &chaos, &baseline, &runs);
}

#[test]
fn a_statement_failing_after_some_chunks_ends_every_stream_with_an_error() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let rule = chaos.emulator.faults().inject(FaultRule::new(
        Endpoint::ExecuteStatement,
        FaultAction::FailAfterChunks {
            chunks: 7,
            error_code: "INTERNAL_ERROR".to_owned(),
            message: "[INTERNAL_ERROR] executor lost. SQLSTATE: XX000".to_owned(),
            sql_state: "XX000".to_owned(),
        },
    ));
    let runs = chaos.run(Duration::ZERO);
    let failed = assert_exact_or_error("failure after 7 chunks", &chaos, &baseline, &runs);
    assert_eq!(failed, QUERIES, "every statement failed");
    assert_eq!(chaos.emulator.faults().fired(rule), QUERIES as u64);
    for (e, _) in runs.iter().filter_map(|r| r.as_ref().err()) {
        let db = e
            .driver_error::<dbfed_databricks::Error>()
            .unwrap_or_else(|| panic!("a typed driver error: {e:?}"));
        assert_eq!(db.sql_state(), Some("XX000"), "{db}");
    }
}

#[test]
fn a_download_refused_for_good_mid_result_is_an_error_not_a_short_result() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    // 404 is not retryable: chunk 17 of every result can never be read.
    let rule = chaos
        .emulator
        .faults()
        .inject(FaultRule::status(Endpoint::Download, 404, None).chunk_index(17));
    let runs = chaos.run(Duration::ZERO);
    let failed = assert_exact_or_error("download 404 at chunk 17", &chaos, &baseline, &runs);
    assert_eq!(failed, QUERIES);
    assert!(chaos.emulator.faults().fired(rule) >= QUERIES as u64);
    for (e, rows) in runs.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            *rows <= 17 * CHUNK_ROWS as u64,
            "no row after the gap: {rows}"
        );
        let db = e
            .driver_error::<dbfed_databricks::Error>()
            .unwrap_or_else(|| panic!("a typed driver error: {e:?}"));
        assert_eq!(db.http_status(), Some(404), "{db}");
    }
}

#[test]
fn oauth_tokens_expiring_mid_query_are_renewed_without_losing_rows() {
    // Tokens live 42 s; the client renews them 40 s early, i.e. every 2 s, while queries run.
    let chaos = Chaos::new(
        Emulator::builder()
            .oauth_client("chaos-client", "chaos-secret-0123456789")
            .token_lifetime(Duration::from_secs(42)),
        Credentials::oauth_m2m("chaos-client", "chaos-secret-0123456789"),
        |b| b,
    );
    let baseline = chaos.baseline();
    // And tokens revoked mid-query: the warehouse answers 401, the client renews the token and
    // retries once (a second 401 in a row means the credentials are bad: an error).
    let revoked = dbfed_tests::faults::revoke_tokens_mid_result(chaos.emulator.faults());
    let revocations = || {
        revoked
            .iter()
            .map(|r| chaos.emulator.faults().fired(*r))
            .sum::<u64>()
    };
    // ~40 ms per batch over 30 chunks, two rounds: the queries outlive several tokens.
    let mut runs = chaos.run(Duration::from_millis(40));
    runs.extend(chaos.run(Duration::from_millis(40)));
    let token_calls = chaos
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/oidc/v1/token")
        .count();
    assert!(
        token_calls >= 3,
        "tokens were renewed mid-query ({token_calls} token calls)"
    );
    assert_eq!(revocations(), 4);
    assert_all_exact(
        "token expiry and revocation mid-query",
        &chaos,
        &baseline,
        &runs,
    );
    eprintln!(
        "chaos: token expiry: {token_calls} token calls, {} revocations (401) survived",
        revocations()
    );
}

#[test]
fn everything_at_once_costs_no_rows() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let faults = chaos.emulator.faults();
    faults.inject(
        FaultRule::status(Endpoint::Any, 429, Some(1))
            .rate(0.1)
            .times(100),
    );
    faults.inject(
        FaultRule::status(Endpoint::GetStatement, 503, None)
            .rate(0.1)
            .times(50),
    );
    faults.inject(
        FaultRule::status(Endpoint::Download, 500, None)
            .rate(0.1)
            .times(50),
    );
    faults.inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 1_000 },
        )
        .rate(0.1)
        .times(50),
    );
    faults.inject(
        FaultRule::new(Endpoint::GetChunk, FaultAction::ExpiredLinks)
            .rate(0.1)
            .times(50),
    );
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(chaos.run(Duration::ZERO));
    }
    assert!(faults.fired_total() >= 10, "{}", faults.fired_total());
    assert_all_exact("mixed storm, 3 rounds", &chaos, &baseline, &all);
}

#[test]
fn links_that_stay_expired_end_the_stream_with_an_error() {
    let chaos = Chaos::with_token(Emulator::builder());
    let baseline = chaos.baseline();
    let rule = chaos
        .emulator
        .faults()
        .inject(FaultRule::new(Endpoint::GetChunk, FaultAction::ExpiredLinks).chunk_index(12));
    let runs = chaos.run(Duration::ZERO);
    let failed = assert_exact_or_error("chunk 12 always expired", &chaos, &baseline, &runs);
    assert_eq!(failed, QUERIES);
    assert!(chaos.emulator.faults().fired(rule) >= QUERIES as u64);
    for (e, _) in runs.iter().filter_map(|r| r.as_ref().err()) {
        let db = e
            .driver_error::<dbfed_databricks::Error>()
            .unwrap_or_else(|| panic!("a typed driver error: {e:?}"));
        assert_eq!(db.http_status(), Some(403), "{db}");
    }
}
