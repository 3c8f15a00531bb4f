//! Helpers shared by the command tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// The `dbfed` binary with an environment free of the developer's Databricks settings.
pub fn dbfed(home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbfed"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DATABRICKS_") || key.starts_with("ARM_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("DBFED_CONFIG")
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .current_dir(home);
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("dbfed runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running `dbfed` process that printed `listening on URL` first, killed on drop.
pub struct Listening {
    pub child: Child,
    pub url: String,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `dbfed emulator`.
pub type EmulatorProcess = Listening;

/// Spawns `command` (stdout piped, stderr inherited) and waits for its first line,
/// `listening on URL`.
pub fn spawn_listening(command: &mut Command) -> Listening {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dbfed starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the first line arrives");
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line is `listening on URL`, got {first:?}"))
        .to_owned();
    Listening { child, url }
}

pub fn start_emulator(home: &std::path::Path, extra: &[&str]) -> EmulatorProcess {
    spawn_listening(
        dbfed(home)
            .args([
                "emulator",
                "--listen",
                "127.0.0.1:0",
                "--token",
                "dapi-cli-test",
            ])
            .args(extra),
    )
}

/// Writes `text` as `dbfed.toml` in `dir` and returns its path as a string.
pub fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("dbfed.toml");
    std::fs::write(&path, text).expect("config written");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Runs `sql` through a Flight SQL client and reads every endpoint's batches.
pub async fn flight_query(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<Vec<arrow::record_batch::RecordBatch>, arrow_flight::error::FlightError> {
    use futures::TryStreamExt;
    let info = client.execute(sql.to_owned(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or_else(|| {
            arrow_flight::error::FlightError::ProtocolError("an endpoint without a ticket".into())
        })?;
        let part: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        batches.extend(part);
    }
    Ok(batches)
}

/// A plaintext gRPC channel to a `grpc://HOST:PORT` address a `dbfed` process printed.
pub async fn flight_channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.replacen("grpc://", "http://", 1))
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(120))
        .connect()
        .await
        .expect("connect")
}
