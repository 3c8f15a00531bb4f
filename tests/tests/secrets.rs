//! Secrets: tokens and client secrets never appear in logs (a process-wide tracing subscriber
//! at TRACE, every crate, scanned line by line), in any error's `Display` or `Debug` (with its
//! source chain), nor on external-link downloads (the emulator records each request's auth
//! scheme and refuses links that carry an `Authorization` header).
//!
//! The scanner keeps no log text, only counters and the targets of offending lines, so it can
//! stay installed for the rest of the test binary: every test that runs after it is scanned too.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use dbfed_databricks::config::Credentials;
use dbfed_databricks::{Client, Error, ResultFormat, ResultStream, RetryPolicy};
use dbfed_emulator::{BackgroundEmulator, Emulator, Endpoint, FaultAction, FaultRule};
use dbfed_executor::{DatabricksDriver, Executor};
use futures::TryStreamExt;

use crate::support::config_with;

const PAT: &str = "dapi-secrets-pat-7f3a9c0e1b2d4f6a";
const WRONG_PAT: &str = "dapi-secrets-wrong-5e8b1c2a9d0f";
const M2M_ID: &str = "secrets-m2m-client";
const M2M_SECRET: &str = "m2m-secret-Q9v8X7w6V5u4T3s2";
const WRONG_M2M_SECRET: &str = "m2m-wrong-secret-A1b2C3d4E5f6";
const AZURE_TENANT: &str = "secrets-tenant";
const AZURE_ID: &str = "secrets-azure-sp";
const AZURE_SECRET: &str = "azure-secret-K0j9H8g7F6e5D4c3";
const WRONG_AZURE_SECRET: &str = "azure-wrong-secret-Z9y8X7w6";

/// Every secret the tests hand out. Access tokens the emulator issues (`emu-<random>`) are
/// caught by their prefix.
const SECRETS: &[&str] = &[
    PAT,
    WRONG_PAT,
    M2M_SECRET,
    WRONG_M2M_SECRET,
    AZURE_SECRET,
    WRONG_AZURE_SECRET,
    "emu-",
];

/// Counts what the process logs and which log lines held a secret.
#[derive(Default)]
struct Scanner {
    lines: AtomicU64,
    bytes: AtomicU64,
    /// `(secret index, start of the offending line without the secret)`.
    hits: Mutex<Vec<(usize, String)>>,
}

#[derive(Clone)]
struct ScanWriter(Arc<Scanner>);

impl Write for ScanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.lines.fetch_add(1, Ordering::Relaxed);
        self.0.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        for (i, secret) in SECRETS.iter().enumerate() {
            if let Some(at) = text.find(secret) {
                let context: String = text[..at].chars().rev().take(160).collect();
                let context: String = context.chars().rev().collect();
                self.0.hits.lock().expect("scanner lock").push((i, context));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the TRACE scanner as the process's subscriber (once; `log` records included).
fn scanner() -> &'static Arc<Scanner> {
    static SCANNER: OnceLock<Arc<Scanner>> = OnceLock::new();
    SCANNER.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt;
        let scanner = Arc::new(Scanner::default());
        let writer = ScanWriter(scanner.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(move || writer.clone())
            .finish()
            .try_init()
            .expect("no other global subscriber in this test binary");
        scanner
    })
}

fn assert_logs_clean(scanner: &Scanner) {
    let hits = scanner.hits.lock().expect("scanner lock");
    assert!(
        hits.is_empty(),
        "secrets in the logs: {:?}",
        hits.iter()
            .map(|(i, context)| format!("secret #{i} after {context:?}"))
            .collect::<Vec<_>>()
    );
    assert!(
        scanner.lines.load(Ordering::Relaxed) > 0,
        "the scanner saw the logs"
    );
}

/// Display, Debug and the whole source chain of `error`.
fn shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(&format!(" | {s} {s:?}"));
        source = s.source();
    }
    text
}

fn assert_error_clean(error: &(dyn std::error::Error + 'static)) {
    let text = shown(error);
    for secret in SECRETS {
        assert!(!text.contains(secret), "a secret in an error: {text}");
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
        .retry_after_bounds(Duration::from_millis(5), Duration::from_millis(20))
}

fn client(emulator: &BackgroundEmulator, credentials: Credentials, format: ResultFormat) -> Client {
    let config = config_with(emulator, credentials);
    assert_error_clean_debug(&config);
    Client::builder(config)
        .retry_policy(fast_retries())
        .result_format(format)
        .download_timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

fn assert_error_clean_debug(value: &impl std::fmt::Debug) {
    let text = format!("{value:?}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "a secret in Debug output: {text}");
    }
}

fn drain(stream: ResultStream) -> Result<usize, Error> {
    let mut stream = stream;
    let mut rows = 0;
    while let Some(batch) = stream.next_batch()? {
        rows += batch.num_rows();
    }
    Ok(rows)
}

fn run(client: &Client, sql: &str) -> Result<usize, Error> {
    client.execute(sql, &[]).and_then(drain)
}

const MULTI_CHUNK: &str = "SELECT * FROM samples.tpch.orders";

/// Every request to an external link came without `Authorization`; every API request with it.
fn assert_links_anonymous(emulator: &BackgroundEmulator) -> usize {
    let requests = emulator.requests();
    let downloads: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/_emulator/results/"))
        .collect();
    assert!(
        downloads.iter().all(|r| r.auth_scheme.is_none()),
        "a download carried credentials: {:?}",
        downloads
            .iter()
            .filter(|r| r.auth_scheme.is_some())
            .collect::<Vec<_>>()
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path.starts_with("/api/2.0/sql/"))
            .all(|r| r.auth_scheme.as_deref() == Some("Bearer")),
        "API calls are authenticated"
    );
    downloads.len()
}

#[test]
fn personal_access_tokens_stay_out_of_logs_errors_and_downloads() {
    let scanner = scanner();
    let emulator = Emulator::builder()
        .token(PAT)
        .chunk_rows(1_000)
        .link_http_headers(true)
        .spawn("127.0.0.1:0")
        .expect("emulator");
    let good = client(&emulator, Credentials::token(PAT), ResultFormat::ArrowLz4);
    assert_error_clean_debug(&good);
    assert_eq!(run(&good, MULTI_CHUNK).expect("runs"), 15_000);
    let inline = client(&emulator, Credentials::token(PAT), ResultFormat::JsonInline);
    assert_eq!(
        run(&inline, "SELECT * FROM samples.tpch.nation").expect("runs"),
        25
    );

    let mut errors: Vec<Error> = Vec::new();
    // Wrong token: 401/403.
    let wrong = client(
        &emulator,
        Credentials::token(WRONG_PAT),
        ResultFormat::ArrowLz4,
    );
    let e = run(&wrong, "SELECT 1").expect_err("refused");
    assert!(e.is_auth(), "{e}");
    errors.push(e);
    // Faults: links refused for good, corrupt-looking downloads cut short, a failing statement,
    // an unretryable 503 on execute, a storm that outlasts the retries.
    let faults = emulator.faults();
    let refused = faults.inject(FaultRule::status(Endpoint::Download, 403, None).chunk_index(3));
    errors.push(run(&good, MULTI_CHUNK).expect_err("link refused for good"));
    faults.remove(refused);
    let reset = faults.inject(FaultRule::new(
        Endpoint::Download,
        FaultAction::ResetMidDownload { after_bytes: 10 },
    ));
    errors.push(run(&good, MULTI_CHUNK).expect_err("every download reset"));
    faults.remove(reset);
    let failing = faults.inject(FaultRule::new(
        Endpoint::ExecuteStatement,
        FaultAction::FailAfterChunks {
            chunks: 2,
            error_code: "INTERNAL_ERROR".into(),
            message: "worker lost".into(),
            sql_state: "XX000".into(),
        },
    ));
    errors.push(run(&good, MULTI_CHUNK).expect_err("failed statement"));
    faults.remove(failing);
    let unavailable =
        faults.inject(FaultRule::status(Endpoint::ExecuteStatement, 503, None).times(1));
    errors.push(run(&good, "SELECT 1").expect_err("503 on execute"));
    faults.remove(unavailable);
    let storm = faults.inject(FaultRule::status(Endpoint::GetChunk, 429, Some(1)));
    errors.push(run(&good, MULTI_CHUNK).expect_err("the storm outlasts the retries"));
    faults.remove(storm);
    errors.push(run(&good, "SELEC broken").expect_err("syntax error"));
    for e in &errors {
        assert_error_clean(e);
        let arrow: arrow::error::ArrowError = clone_via_display(e);
        assert_error_clean(&arrow);
    }
    let downloads = assert_links_anonymous(&emulator);
    assert!(downloads >= 15, "{downloads} downloads checked");
    assert_logs_clean(scanner);
    eprintln!(
        "secrets: PAT: {} errors, {downloads} downloads without credentials, {} log lines ({} bytes) scanned",
        errors.len(),
        scanner.lines.load(Ordering::Relaxed),
        scanner.bytes.load(Ordering::Relaxed)
    );
}

/// An `ArrowError` carrying `e`'s message, as consumers of the `RecordBatchReader` see it.
fn clone_via_display(e: &Error) -> arrow::error::ArrowError {
    arrow::error::ArrowError::ExternalError(Box::new(std::io::Error::other(e.to_string())))
}

#[test]
fn oauth_and_azure_secrets_stay_out_of_logs_errors_and_downloads() {
    let scanner = scanner();
    let emulator = Emulator::builder()
        .oauth_client(M2M_ID, M2M_SECRET)
        .oauth_client(AZURE_ID, AZURE_SECRET)
        .azure_tenant(AZURE_TENANT)
        .token_lifetime(Duration::from_secs(2))
        .chunk_rows(1_000)
        .spawn("127.0.0.1:0")
        .expect("emulator");
    let m2m = client(
        &emulator,
        Credentials::oauth_m2m(M2M_ID, M2M_SECRET),
        ResultFormat::ArrowLz4,
    );
    let azure = client(
        &emulator,
        Credentials::azure_service_principal(AZURE_TENANT, AZURE_ID, AZURE_SECRET),
        ResultFormat::ArrowLz4,
    );
    assert_error_clean_debug(&m2m);
    assert_error_clean_debug(&azure);
    for c in [&m2m, &azure] {
        assert_eq!(run(c, MULTI_CHUNK).expect("runs"), 15_000);
    }
    // Through the executor too (its spans and metrics).
    let executor = Executor::builder(DatabricksDriver::new(m2m.clone()))
        .threads(2)
        .build()
        .expect("executor");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let rows: usize = rt.block_on(async {
        let batches: Vec<RecordBatch> = executor
            .query(MULTI_CHUNK, &[])
            .await
            .expect("runs")
            .try_collect()
            .await
            .expect("completes");
        batches.iter().map(RecordBatch::num_rows).sum()
    });
    assert_eq!(rows, 15_000);
    assert_error_clean_debug(&executor.metrics());

    let mut errors: Vec<Box<dyn std::error::Error>> = Vec::new();
    for credentials in [
        Credentials::oauth_m2m(M2M_ID, WRONG_M2M_SECRET),
        Credentials::azure_service_principal(AZURE_TENANT, AZURE_ID, WRONG_AZURE_SECRET),
        Credentials::azure_service_principal("no-such-tenant", AZURE_ID, AZURE_SECRET),
    ] {
        let c = client(&emulator, credentials, ResultFormat::ArrowLz4);
        let e = run(&c, "SELECT 1").expect_err("refused");
        assert!(e.is_auth(), "{e}");
        errors.push(Box::new(e));
    }
    // The token endpoint throttled and failing.
    let token_down = emulator
        .faults()
        .inject(FaultRule::status(Endpoint::Token, 500, None));
    let fresh = client(
        &emulator,
        Credentials::oauth_m2m(M2M_ID, M2M_SECRET),
        ResultFormat::ArrowLz4,
    );
    errors.push(Box::new(
        run(&fresh, "SELECT 1").expect_err("token endpoint down"),
    ));
    emulator.faults().remove(token_down);
    // Executor-level errors wrap driver errors: same check.
    let bad_executor = Executor::builder(DatabricksDriver::new(client(
        &emulator,
        Credentials::oauth_m2m(M2M_ID, WRONG_M2M_SECRET),
        ResultFormat::ArrowLz4,
    )))
    .threads(1)
    .build()
    .expect("executor");
    let e = rt.block_on(async {
        match bad_executor.query("SELECT 1", &[]).await {
            Ok(s) => s
                .try_collect::<Vec<RecordBatch>>()
                .await
                .expect_err("refused"),
            Err(e) => e,
        }
    });
    errors.push(Box::new(e));
    for e in &errors {
        assert_error_clean(e.as_ref());
    }
    let downloads = assert_links_anonymous(&emulator);
    assert!(downloads >= 45, "{downloads} downloads checked");
    assert_logs_clean(scanner);
    eprintln!(
        "secrets: OAuth M2M and Azure: {} errors, {downloads} downloads without credentials, {} log lines scanned",
        errors.len(),
        scanner.lines.load(Ordering::Relaxed)
    );
}
