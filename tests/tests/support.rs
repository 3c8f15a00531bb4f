//! Fixtures shared by the end-to-end tests.

use std::time::{Duration, Instant};

use dbfed_databricks::config::{ClientConfig, Credentials};
use dbfed_databricks::{Client, ClientBuilder, RetryPolicy};
use dbfed_emulator::{BackgroundEmulator, EmulatorBuilder, StatementRecord};

/// The token every test emulator accepts.
pub const TOKEN: &str = "dapi-e2e-test-token-0123456789";
/// The warehouse id the tests use.
pub const WAREHOUSE: &str = "e2e0123456789abc";

/// Starts `builder` (with [`TOKEN`] accepted) on a free loopback port.
pub fn start(builder: EmulatorBuilder) -> BackgroundEmulator {
    builder
        .token(TOKEN)
        .spawn("127.0.0.1:0")
        .expect("the emulator starts on a free loopback port")
}

/// A client builder for `emulator`, authenticated with [`TOKEN`], with fast retries.
pub fn client_builder(emulator: &BackgroundEmulator) -> ClientBuilder {
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()
        .expect("valid configuration");
    Client::builder(config).retry_policy(fast_retries())
}

/// The configuration for `emulator` signing in with `credentials` (token endpoints on the
/// emulator too).
pub fn config_with(emulator: &BackgroundEmulator, credentials: Credentials) -> ClientConfig {
    ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(WAREHOUSE)
        .credentials(credentials)
        .azure_login_url(emulator.url())
        .build()
        .expect("valid configuration")
}

/// A client for `emulator` signing in with `credentials` (token endpoints on the emulator too).
pub fn client_with(emulator: &BackgroundEmulator, credentials: Credentials) -> Client {
    Client::builder(config_with(emulator, credentials))
        .retry_policy(fast_retries())
        .build()
        .expect("client builds")
}

/// A client for `emulator` with the default options but fast retries.
pub fn client(emulator: &BackgroundEmulator) -> Client {
    client_builder(emulator).build().expect("client builds")
}

/// A two-worker runtime for the tests that drive async code from a plain test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Retries with millisecond backoff, so fault tests stay quick.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .base_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(100))
        .retry_after_bounds(Duration::from_millis(10), Duration::from_millis(200))
        .max_elapsed(Duration::from_secs(30))
}

/// The emulator's record of `statement_id`.
pub fn record(emulator: &BackgroundEmulator, statement_id: &str) -> StatementRecord {
    emulator
        .statements()
        .into_iter()
        .find(|r| r.id == statement_id)
        .unwrap_or_else(|| panic!("the emulator has no statement {statement_id}"))
}

/// Waits (up to 10 s, a hang guard, not a timing assertion) until `check` holds for the record of
/// `statement_id`; returns the last record seen.
pub fn wait_for_record(
    emulator: &BackgroundEmulator,
    statement_id: &str,
    check: impl Fn(&StatementRecord) -> bool,
) -> StatementRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = record(emulator, statement_id);
        if check(&record) || Instant::now() > deadline {
            return record;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
