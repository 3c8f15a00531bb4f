//! The classic approach as a baseline: `benchmarks/classic/classic_asyncio.py`, an asyncio
//! application that wraps an official synchronous Python client in `asyncio.to_thread`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::sys::{last_json_line, run_process};

/// Which official Python client the classic baseline wraps in `asyncio.to_thread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicClient {
    /// `databricks-sql-connector` with `use_sea=True` (HTTPS only).
    Connector,
    /// `databricks-sdk` statement execution (plain HTTP works).
    Sdk,
}

impl ClassicClient {
    /// Both clients, in report order.
    pub const ALL: [ClassicClient; 2] = [ClassicClient::Connector, ClassicClient::Sdk];

    /// The `case` name in result lines.
    pub fn case(self) -> &'static str {
        match self {
            Self::Connector => "classic-connector",
            Self::Sdk => "classic-sdk",
        }
    }

    /// The script's `--client` value.
    fn flag(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::Sdk => "sdk",
        }
    }

    /// Whether the client needs an HTTPS emulator (the connector speaks only HTTPS).
    pub fn needs_tls(self) -> bool {
        self == Self::Connector
    }
}

/// What the script runs.
#[derive(Debug)]
pub struct ClassicOptions<'a> {
    /// Bearer token the emulator accepts.
    pub token: &'a str,
    /// Warehouse id.
    pub warehouse: &'a str,
    /// Statement each query runs.
    pub sql: &'a str,
    /// Queries submitted at once with `asyncio.gather`.
    pub queries: usize,
    /// Threads of the `to_thread` pool (0: asyncio's default).
    pub workers: usize,
    /// Hang guard for the whole run.
    pub timeout: Duration,
}

/// Runs the script with `python` against the emulator at `url` and returns its JSON line
/// (wall time, rows, timestamps, peak threads and RSS). Fails when any query failed.
pub fn run(
    python: &Path,
    client: ClassicClient,
    url: &str,
    options: &ClassicOptions,
) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("classic/classic_asyncio.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args(["--client", client.flag(), "--url", url])
        .args(["--token", options.token, "--warehouse", options.warehouse])
        .args(["--sql", options.sql])
        .args(["--queries", &options.queries.to_string()])
        .args(["--workers", &options.workers.to_string()])
        .args(["--timeout", &options.timeout.as_secs().to_string()])
        // The SDK must not pick up a developer's ~/.databrickscfg or DATABRICKS_* variables.
        .env("DATABRICKS_CONFIG_FILE", "/dev/null")
        .env_remove("DATABRICKS_HOST")
        .env_remove("DATABRICKS_TOKEN")
        .env_remove("DATABRICKS_CONFIG_PROFILE")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONWARNINGS", "ignore");
    let what = client.case();
    let stdout = run_process(command, options.timeout, what)?;
    let value = last_json_line(&stdout, what)?;
    if value["errors"].as_u64() != Some(0) {
        bail!(
            "{what}: {} queries failed, first: {}",
            value["errors"],
            value["first_error"]
        );
    }
    Ok(value)
}
