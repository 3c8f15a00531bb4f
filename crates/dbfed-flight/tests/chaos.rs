//! Chaos through Flight: the emulator's fault injection fires while a Flight SQL client reads a
//! multi-chunk federated result (`samples.tpch.orders`, 15 000 rows × 9 columns in 30 chunks).
//! Every result is compared with a fault-free run — row count, a checksum of every column and a
//! multiset checksum of whole rows — or, when the fault cannot be retried, must end with a gRPC
//! error after fewer rows: never a short result presented as complete.
//!
//! Each scenario prints a `flight chaos:` line with its figures.

use std::time::Duration;

use arrow_flight::error::FlightError;
use dbfed_emulator::{Emulator, Endpoint, FaultAction, FaultRule};
use futures::StreamExt;
use tonic::Code;

use dbfed_tests::Fingerprint;

use dbfed_databricks::config::Credentials;

use crate::disconnect::{Federated, assert_released, federated, federated_with};
use crate::fixture::client;

const SQL: &str = "SELECT * FROM samples.tpch.orders";
const ROWS: u64 = 15_000;
/// Queries read at once per round, each on its own channel.
const QUERIES: usize = 3;

/// The fingerprint of everything a query delivered, or its error with the rows before it.
type Outcome = Result<Fingerprint, (FlightError, u64)>;

/// Runs [`QUERIES`] copies of [`SQL`] at once, each over its own Flight channel.
async fn run(fed: &Federated) -> Vec<Outcome> {
    run_paced(fed, Duration::ZERO).await
}

/// [`run`], each client pausing `pause_per_batch` after every batch (a slow consumer: the
/// queries stay open for seconds).
async fn run_paced(fed: &Federated, pause_per_batch: Duration) -> Vec<Outcome> {
    let tasks: Vec<_> = (0..QUERIES)
        .map(|_| {
            let server = fed.server.local_addr();
            tokio::spawn(async move {
                let mut endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://{server}"))
                        .expect("endpoint");
                if !pause_per_batch.is_zero() {
                    // Small HTTP/2 windows: a slow consumer holds the server back (with the
                    // defaults the client would buffer the whole result and the warehouse
                    // would be done long before the consumer).
                    endpoint = endpoint
                        .initial_stream_window_size(Some(64 << 10))
                        .initial_connection_window_size(Some(64 << 10));
                }
                let channel = endpoint.connect().await.expect("connect");
                let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
                let info = match c.execute(SQL.to_owned(), None).await {
                    Ok(info) => info,
                    Err(e) => return Err((e, 0)),
                };
                let mut batches = Vec::new();
                for endpoint in &info.endpoint {
                    let ticket = endpoint.ticket.clone().expect("ticket");
                    let mut stream = match c.do_get(ticket).await {
                        Ok(s) => s,
                        Err(e) => return Err((e, 0)),
                    };
                    // Bounded by the result's chunks; the outer timeout is the hang guard.
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
                }
                Ok(Fingerprint::of(&batches))
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("hang guard: a query under faults still ends")
                .expect("the query task does not panic"),
        );
    }
    out
}

async fn baseline(fed: &Federated) -> Fingerprint {
    assert_eq!(fed.emulator.faults().fired_total(), 0);
    let runs = run(fed).await;
    let first = match &runs[0] {
        Ok(fp) => fp.clone(),
        Err((e, rows)) => panic!("the fault-free run failed after {rows} rows: {e}"),
    };
    assert_eq!(first.rows, ROWS, "SF 0.01 orders");
    assert_eq!(first.columns.len(), 9);
    assert!(runs.iter().all(|r| r.as_ref().ok() == Some(&first)));
    first
}

fn assert_all_exact(scenario: &str, fed: &Federated, baseline: &Fingerprint, runs: &[Outcome]) {
    for run in runs {
        match run {
            Ok(fp) => assert_eq!(
                fp, baseline,
                "{scenario}: a row was lost, changed or duplicated"
            ),
            Err((e, rows)) => {
                panic!("{scenario}: a retryable fault failed a query after {rows} rows: {e}")
            }
        }
    }
    eprintln!(
        "flight chaos: {scenario}: {} queries exact, {} rows checked, {} faults fired, {} retries",
        runs.len(),
        baseline.rows * runs.len() as u64,
        fed.emulator.faults().fired_total(),
        fed.executor.metrics().retries
    );
}

/// Every query either delivered exactly the baseline or ended with a gRPC error after fewer
/// rows; returns the errors.
fn assert_exact_or_error<'a>(
    scenario: &str,
    fed: &Federated,
    baseline: &Fingerprint,
    runs: &'a [Outcome],
) -> Vec<(&'a FlightError, u64)> {
    let mut failed = Vec::new();
    for run in runs {
        match run {
            Ok(fp) => assert_eq!(fp, baseline, "{scenario}: a clean end with other data"),
            Err((e, rows)) => {
                assert!(
                    *rows < baseline.rows,
                    "{scenario}: error after all rows: {e}"
                );
                assert!(
                    matches!(e, FlightError::Tonic(_)),
                    "{scenario}: not a gRPC status: {e:?}"
                );
                failed.push((e, *rows));
            }
        }
    }
    eprintln!(
        "flight chaos: {scenario}: {} exact, {} ended with a gRPC error, {} faults fired",
        runs.len() - failed.len(),
        failed.len(),
        fed.emulator.faults().fired_total()
    );
    failed
}

fn status(e: &FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(s) => (s.code(), s.message().to_owned()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_storms_through_flight_cost_no_rows() {
    let fed = federated(Emulator::builder(), QUERIES, |b| {
        b.download_timeout(Duration::from_secs(2))
    })
    .await;
    let baseline = baseline(&fed).await;
    let faults = fed.emulator.faults();
    let rules = [
        faults.inject(
            FaultRule::status(Endpoint::Any, 429, Some(1))
                .rate(0.15)
                .times(100),
        ),
        faults.inject(
            FaultRule::status(Endpoint::GetStatement, 503, None)
                .rate(0.15)
                .times(50),
        ),
        faults.inject(
            FaultRule::status(Endpoint::GetChunk, 503, Some(1))
                .rate(0.15)
                .times(50),
        ),
        faults.inject(
            FaultRule::status(Endpoint::Download, 500, None)
                .rate(0.1)
                .times(50),
        ),
        faults.inject(
            FaultRule::new(
                Endpoint::Download,
                FaultAction::ResetMidDownload { after_bytes: 64 },
            )
            .rate(0.1)
            .times(50),
        ),
        faults.inject(
            FaultRule::new(
                Endpoint::Download,
                FaultAction::ResetMidDownload { after_bytes: 4_000 },
            )
            .rate(0.1)
            .times(50),
        ),
        faults.inject(
            FaultRule::new(Endpoint::GetChunk, FaultAction::ExpiredLinks)
                .rate(0.1)
                .times(50),
        ),
    ];
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.extend(run(&fed).await);
    }
    let fired: u64 = rules.iter().map(|r| faults.fired(*r)).sum();
    assert!(fired >= 10, "the storm fired {fired}");
    assert_all_exact(
        "429/503/500, resets, expired links, 2 rounds",
        &fed,
        &baseline,
        &runs,
    );
    faults.clear();
    assert_released("after the storm", &fed, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unretryable_failures_mid_result_reach_the_flight_client_as_errors() {
    let fed = federated(Emulator::builder(), QUERIES, |b| b).await;
    let baseline = baseline(&fed).await;
    let faults = fed.emulator.faults();

    // The statement FAILS after 7 of its 30 chunks.
    let rule = faults.inject(
        FaultRule::new(
            Endpoint::ExecuteStatement,
            FaultAction::FailAfterChunks {
                chunks: 7,
                error_code: "INTERNAL_ERROR".to_owned(),
                message: "[INTERNAL_ERROR] executor lost. SQLSTATE: XX000".to_owned(),
                sql_state: "XX000".to_owned(),
            },
        )
        .sql_contains("orders"),
    );
    let runs = run(&fed).await;
    let failed = assert_exact_or_error("statement FAILED after 7 chunks", &fed, &baseline, &runs);
    assert_eq!(failed.len(), QUERIES, "every statement failed");
    assert_eq!(faults.fired(rule), QUERIES as u64);
    for (e, _) in &failed {
        let (code, message) = status(e);
        assert_ne!(code, Code::Ok);
        assert!(
            message.contains("XX000") || message.contains("INTERNAL_ERROR"),
            "{message}"
        );
    }
    faults.clear();

    // Chunk 17's download is refused for good (404 is not retryable).
    let rule = faults.inject(FaultRule::status(Endpoint::Download, 404, None).chunk_index(17));
    let runs = run(&fed).await;
    let failed = assert_exact_or_error("download 404 at chunk 17", &fed, &baseline, &runs);
    assert_eq!(failed.len(), QUERIES);
    assert!(faults.fired(rule) >= QUERIES as u64);
    for (e, rows) in &failed {
        assert!(*rows <= 17 * 500, "no row after the gap: {rows}");
        assert_ne!(status(e).0, Code::Ok);
    }
    faults.clear();

    // A bare 503 on execute (the statement may have been accepted: not retried).
    let rule = faults.inject(
        // (`sql_contains` does not apply to status faults; metadata is cached by now.)
        FaultRule::status(Endpoint::ExecuteStatement, 503, None).times(2),
    );
    let runs = run(&fed).await;
    let failed = assert_exact_or_error("503 on execute", &fed, &baseline, &runs);
    assert_eq!(failed.len(), 2, "each fired 503 fails exactly its query");
    assert_eq!(faults.fired(rule), 2);
    for (e, rows) in &failed {
        assert_eq!(*rows, 0);
        assert_eq!(status(e).0, Code::Unavailable, "{e}");
    }
    faults.clear();

    // Nothing left running, and the server still serves the exact result.
    assert_released("after the failures", &fed, None).await;
    let mut c = client(&fed.server).await;
    let batches = crate::fixture::query(&mut c, SQL).await.expect("after");
    assert_eq!(Fingerprint::of(&batches), baseline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stalled_downloads_through_flight_cost_no_rows() {
    // A download slower than this timeout is abandoned (after at most twice it) and retried.
    let fed = federated(Emulator::builder(), QUERIES, |b| {
        b.download_timeout(Duration::from_secs(2))
    })
    .await;
    let baseline = baseline(&fed).await;
    let faults = fed.emulator.faults();
    // Slow downloads within the timeout, and stalled ones the client retries.
    let dbfed_tests::faults::SlowAndStalled { slow, stalled } =
        dbfed_tests::faults::slow_and_stalled_downloads(faults);
    let downloads_before = downloads(&fed);
    let runs = run(&fed).await;
    let downloads = downloads(&fed) - downloads_before;
    let (slowed, stalls) = (faults.fired(slow), faults.fired(stalled));
    assert!(slowed >= 3, "slow downloads fired {slowed}");
    assert_eq!(stalls, 3, "every stall fired");
    // Each stalled download was abandoned and asked for again: more downloads than chunks.
    assert!(
        downloads >= QUERIES as u64 * 30 + stalls,
        "{downloads} downloads for {} chunks and {stalls} stalls",
        QUERIES * 30
    );
    assert_all_exact("slow and stalled downloads", &fed, &baseline, &runs);
    eprintln!(
        "flight chaos: slow and stalled downloads: {slowed} slow (64 KiB/s), {stalls} stalled \
         (1 B/s vs a 2 s timeout) retried; {downloads} downloads for {} chunks",
        QUERIES * 30
    );
    faults.clear();
    assert_released("after slow and stalled downloads", &fed, None).await;
}

/// Downloads of result chunks the emulator answered (any status).
fn downloads(fed: &Federated) -> u64 {
    fed.emulator
        .requests()
        .iter()
        .filter(|r| r.path.contains("/_emulator/results/"))
        .count() as u64
}

/// Token requests the emulator answered among its newest requests after the first `since`:
/// (all of them, those between the first and the last chunk download — while results were
/// being read).
fn token_calls(fed: &Federated, since: usize) -> (usize, usize) {
    let requests = fed.emulator.requests();
    let requests = requests.get(since..).unwrap_or_default();
    let is_token = |r: &&dbfed_emulator::RequestRecord| r.path == "/oidc/v1/token";
    let is_download = |r: &dbfed_emulator::RequestRecord| r.path.contains("/_emulator/results/");
    let all = requests.iter().filter(is_token).count();
    let mid = match (
        requests.iter().position(is_download),
        requests.iter().rposition(is_download),
    ) {
        (Some(first), Some(last)) => requests[first..last].iter().filter(is_token).count(),
        _ => 0,
    };
    (all, mid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_expiring_mid_query_through_flight_are_renewed_without_losing_rows() {
    // Tokens live 41 s; the client renews them 40 s early, i.e. every second, while the Flight
    // clients read.
    let fed = federated_with(
        Emulator::builder()
            .oauth_client("flight-chaos-client", "flight-chaos-secret-0123456789")
            .token_lifetime(Duration::from_secs(41)),
        Credentials::oauth_m2m("flight-chaos-client", "flight-chaos-secret-0123456789"),
        QUERIES,
        |b| b,
    )
    .await;
    let baseline = baseline(&fed).await;
    assert!(
        token_calls(&fed, 0).0 >= 1,
        "the server signed in with OAuth M2M"
    );
    let faults = fed.emulator.faults();
    // And tokens revoked mid-query: the warehouse answers 401, the client renews the token and
    // retries once (a second 401 in a row means the credentials are bad: an error).
    let revoked = dbfed_tests::faults::revoke_tokens_mid_result(faults);
    // Slow Flight consumers (30 batches, 150 ms each): every query stays open ~4.5 s, two
    // rounds, so the queries outlive several tokens.
    let (mut renewals, mut mid_query) = (0, 0);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let since = fed.emulator.requests().len();
        runs.extend(run_paced(&fed, Duration::from_millis(150)).await);
        let (all, mid) = token_calls(&fed, since);
        renewals += all;
        mid_query += mid;
    }
    let revocations: u64 = revoked.iter().map(|r| faults.fired(*r)).sum();
    assert_eq!(revocations, 4, "every revocation fired");
    // 4 renewals answer the revocations; the others are expiries while results were read.
    assert!(
        mid_query >= 4 + 2,
        "tokens expired mid-query ({renewals} token calls, {mid_query} between downloads)"
    );
    assert_all_exact(
        "OAuth tokens expiring and revoked mid-query",
        &fed,
        &baseline,
        &runs,
    );
    eprintln!(
        "flight chaos: token expiry: {renewals} token calls while the queries ran, {mid_query} \
         of them between chunk downloads; {revocations} revocations (401) survived"
    );
    faults.clear();
    assert_released("after token expiry", &fed, None).await;
}
