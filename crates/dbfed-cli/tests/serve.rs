//! `dbfed serve` as a process, queried by a Flight SQL client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::sql::client::FlightSqlServiceClient;

use crate::support::{dbfed, flight_channel, flight_query, spawn_listening, write_config};

#[test]
fn serve_prints_its_address_and_answers_a_federated_flight_query() {
    let home = tempfile::tempdir().expect("temp home");
    std::fs::write(
        home.path().join("targets.csv"),
        "nation,target\nCHINA,100\nJAPAN,250\nATLANTIS,1\n",
    )
    .expect("csv");
    let config = write_config(
        home.path(),
        "emulator = true\n[server]\nlisten = \"127.0.0.1:0\"\n[server.auth]\ntokens = [\"${SERVE_TEST_TOKEN}\"]\n[tables]\ntargets = \"targets.csv\"\n",
    );
    let server = spawn_listening(
        dbfed(home.path())
            .env("SERVE_TEST_TOKEN", "flight-secret")
            .args(["serve", "--config", &config]),
    );
    assert!(
        server.url.starts_with("grpc://127.0.0.1:"),
        "{}",
        server.url
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = flight_channel(&server.url).await;
        let mut anonymous = FlightSqlServiceClient::new(channel.clone());
        let refused = flight_query(&mut anonymous, "SELECT 1")
            .await
            .expect_err("no token");
        match refused {
            arrow_flight::error::FlightError::Tonic(status) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
            }
            other => panic!("expected a gRPC status, got {other:?}"),
        }

        let mut client = FlightSqlServiceClient::new(channel);
        client.set_header("authorization", "Bearer flight-secret");
        let batches = flight_query(
            &mut client,
            "SELECT n.n_nationkey, t.target FROM samples.tpch.nation n \
             JOIN targets t ON t.nation = n.n_name ORDER BY n.n_nationkey",
        )
        .await
        .expect("the federated query runs");
        let mut rows = Vec::new();
        for batch in &batches {
            let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64)
                .expect("int64");
            let targets = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Int64)
                .expect("int64");
            let keys = keys.as_primitive::<Int64Type>();
            let targets = targets.as_primitive::<Int64Type>();
            for i in 0..keys.len() {
                rows.push((keys.value(i), targets.value(i)));
            }
        }
        assert_eq!(rows, vec![(12, 250), (18, 100)]);
    });
}

/// Sends `signal` (e.g. `TERM`) to `child` with `kill`, then waits (bounded) for it to exit.
pub fn signal_and_wait(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let home = tempfile::tempdir().expect("temp home");
    let mut child = dbfed(home.path())
        .args(["serve", "--emulator", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbfed serve starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("the first line");
    assert!(first.starts_with("listening on grpc://"), "{first:?}");
    let status = signal_and_wait(&mut child, "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(0), "a clean exit: {err}");
    assert!(err.contains("shutting down (SIGTERM)"), "{err}");
}

#[test]
fn demo_serves_until_sigterm() {
    let home = tempfile::tempdir().expect("temp home");
    let mut child = dbfed(home.path())
        .env("DBFED_CACHE_DIR", home.path().join("cache"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbfed demo starts");
    let mut out = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    // Bounded: the demo prints a few hundred lines, then waits.
    for _ in 0..2000 {
        let Some(line) = lines.next() else { break };
        let line = line.expect("a line");
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("serving until") {
            break;
        }
    }
    assert!(out.contains("serving until Ctrl-C or SIGTERM"), "{out}");
    // While it serves, the emulator's address is worth printing.
    assert!(
        out.contains("DATABRICKS_HOST=http://127.0.0.1:") && out.contains("dbfed query"),
        "{out}"
    );
    let status = signal_and_wait(&mut child, "TERM");
    assert_eq!(status.code(), Some(0), "{out}");
}
