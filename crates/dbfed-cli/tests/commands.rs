//! `dbfed demo`, `dbfed emulator` and `dbfed query` as processes.

use std::time::Duration;

use crate::support::{dbfed, run, start_emulator, stderr, stdout};

#[test]
fn demo_once_runs_the_showcase_and_exits() {
    let home = tempfile::tempdir().expect("temp home");
    let output = run(dbfed(home.path())
        .env("DBFED_CACHE_DIR", home.path().join("cache"))
        .args(["demo", "--once", "--listen", "127.0.0.1:0"]));
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("listening on grpc://127.0.0.1:"),
        "{first}"
    );
    let url = first.trim_start_matches("listening on ");
    // The federated showcase: warehouse revenue joined with the local targets.
    let line = |nation: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("| {nation} ")) && l.matches('|').count() == 5)
            .unwrap_or_else(|| panic!("a federated row for {nation}:\n{out}"))
            .to_owned()
    };
    assert!(
        line("VIETNAM").contains("1021329.5188") && line("VIETNAM").contains("950000.0"),
        "{out}"
    );
    assert!(
        line("JAPAN").contains("380793.9628") && line("JAPAN").contains("420000.0"),
        "{out}"
    );
    assert!(home.path().join("cache/demo/targets.parquet").is_file());
    // What was pushed: one statement holding the joins, with the literals as parameters.
    assert!(out.contains("pushed down to the warehouse"), "{out}");
    assert!(
        out.contains("INNER JOIN `samples`.`tpch`.`lineitem`"),
        "{out}"
    );
    assert!(out.contains(":__p3=ASIA") || out.contains("=ASIA"), "{out}");
    assert!(out.contains("SUCCEEDED"), "{out}");
    assert!(out.contains("rows in"), "{out}");
    // How to connect.
    assert!(
        out.contains(&format!("flightsql.connect(\"{url}\", autocommit=True)")),
        "{out}"
    );
    // The emulator is gone once `--once` returns: no hint pointing at it.
    assert!(!out.contains("DATABRICKS_HOST="), "{out}");
    assert!(!out.contains("serving until"), "{out}");
}

#[test]
fn emulator_serves_the_statement_api_with_its_tokens() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--warehouse-id", "cliwh"]);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let ok: serde_json::Value = http
        .post(format!("{}/api/2.0/sql/statements", emulator.url))
        .bearer_auth("dapi-cli-test")
        .json(&serde_json::json!({
            "statement": "SELECT COUNT(*) AS n FROM samples.tpch.region",
            "warehouse_id": "cliwh",
        }))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(ok["status"]["state"], "SUCCEEDED", "{ok}");
    assert_eq!(ok["result"]["data_array"][0][0], "5", "{ok}");
    let refused = http
        .post(format!("{}/api/2.0/sql/statements", emulator.url))
        .bearer_auth("dapi-not-configured")
        .json(&serde_json::json!({"statement": "SELECT 1", "warehouse_id": "cliwh"}))
        .send()
        .expect("request");
    assert!(matches!(refused.status().as_u16(), 401 | 403));
}

#[test]
fn query_against_a_workspace_from_the_environment_in_every_format() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    let query = |args: &[&str]| {
        run(dbfed(home.path())
            .env("DATABRICKS_HOST", &emulator.url)
            .env("DATABRICKS_TOKEN", "dapi-cli-test")
            .env("DATABRICKS_HTTP_PATH", "/sql/1.0/warehouses/abc123")
            .arg("query")
            .args(args))
    };
    let sql =
        "SELECT r_regionkey, r_name FROM samples.tpch.region WHERE r_regionkey < :n ORDER BY 1";

    let table = query(&[sql, "--param", "n:INT=2"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let out = stdout(&table);
    assert!(
        out.contains("| AFRICA") && out.contains("| AMERICA"),
        "{out}"
    );
    assert!(!out.contains("ASIA"), "the parameter filtered: {out}");

    let csv = query(&[sql, "--param", "n:INT=2", "--format", "csv", "--inline"]);
    assert!(csv.status.success(), "{}", stderr(&csv));
    assert_eq!(stdout(&csv), "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\n");

    let json = query(&[sql, "--param", "n:INT=1", "--format", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    assert_eq!(
        stdout(&json).trim(),
        r#"{"r_regionkey":0,"r_name":"AFRICA"}"#
    );

    let file = home.path().join("regions.arrow");
    let arrow_out = query(&[
        "SELECT * FROM samples.tpch.region",
        "--format",
        "arrow",
        "--output",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(arrow_out.status.success(), "{}", stderr(&arrow_out));
    let reader = arrow::ipc::reader::StreamReader::try_new(
        std::fs::File::open(&file).expect("written"),
        None,
    )
    .expect("an Arrow IPC stream");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 5);
}

#[test]
fn query_errors_are_clear() {
    let home = tempfile::tempdir().expect("temp home");

    let unconfigured = run(dbfed(home.path()).args(["query", "SELECT 1"]));
    assert!(!unconfigured.status.success());
    let err = stderr(&unconfigured);
    assert!(
        err.contains("DATABRICKS_HOST"),
        "names the missing setting: {err}"
    );

    let bad_param =
        run(dbfed(home.path()).args(["query", "--emulator", "SELECT 1", "--param", "oops"]));
    assert!(!bad_param.status.success());
    assert!(
        stderr(&bad_param).contains("oops"),
        "{}",
        stderr(&bad_param)
    );

    let sql_error = run(dbfed(home.path()).args(["query", "--emulator", "SELEC 1"]));
    assert!(!sql_error.status.success());
    let err = stderr(&sql_error);
    assert!(
        err.contains("42601") || err.contains("PARSE_SYNTAX_ERROR"),
        "{err}"
    );

    let bad_scale = run(dbfed(home.path()).args(["emulator", "--tpch-scale=-1"]));
    assert!(!bad_scale.status.success());
    assert!(
        stderr(&bad_scale).contains("--tpch-scale"),
        "{}",
        stderr(&bad_scale)
    );
}

#[test]
fn emulator_faults_from_the_command_line() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(
        home.path(),
        &["--fault", "execute:503,retry-after=7,times=1"],
    );
    let http = reqwest::blocking::Client::new();
    let execute = || {
        http.post(format!("{}/api/2.0/sql/statements", emulator.url))
            .bearer_auth("dapi-cli-test")
            .json(&serde_json::json!({"statement": "SELECT 1", "warehouse_id": "w"}))
            .send()
            .expect("request")
    };
    let first = execute();
    assert_eq!(first.status().as_u16(), 503);
    assert_eq!(
        first
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert!(execute().status().is_success(), "the fault fired once");

    let bad = run(dbfed(home.path()).args(["emulator", "--fault", "chunks:503"]));
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unknown endpoint `chunks`"),
        "{}",
        stderr(&bad)
    );
}

/// Runs `sql` on the emulator process and returns the statement's JSON.
fn execute(http: &reqwest::blocking::Client, url: &str, sql: &str) -> serde_json::Value {
    http.post(format!("{url}/api/2.0/sql/statements"))
        .bearer_auth("dapi-cli-test")
        .json(&serde_json::json!({ "statement": sql, "warehouse_id": "w" }))
        .send()
        .expect("request")
        .json()
        .expect("json")
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

#[test]
fn emulator_history_forgets_the_oldest_statements() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--history", "2"]);
    let http = http();
    let ids: Vec<String> = ["SELECT 1 AS a", "SELECT 2 AS b", "SELECT 3 AS c"]
        .iter()
        .map(|sql| {
            let answer = execute(&http, &emulator.url, sql);
            assert_eq!(answer["status"]["state"], "SUCCEEDED", "{answer}");
            answer["statement_id"]
                .as_str()
                .expect("a statement id")
                .to_owned()
        })
        .collect();
    let records: serde_json::Value = http
        .get(format!("{}/_emulator/statements", emulator.url))
        .send()
        .expect("statements")
        .json()
        .expect("json");
    let sqls: Vec<&str> = records
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["sql"].as_str())
        .collect();
    assert_eq!(sqls, ["SELECT 2 AS b", "SELECT 3 AS c"], "{records}");
    let poll = |id: &str| {
        http.get(format!("{}/api/2.0/sql/statements/{id}", emulator.url))
            .bearer_auth("dapi-cli-test")
            .send()
            .expect("poll")
            .status()
            .as_u16()
    };
    assert_eq!(poll(&ids[0]), 404, "the oldest statement is forgotten");
    assert_eq!(poll(&ids[2]), 200);
}

#[test]
fn emulator_result_ttl_closes_finished_results() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--result-ttl", "0s"]);
    let http = http();
    let answer = execute(&http, &emulator.url, "SELECT 1 AS a");
    assert_eq!(answer["status"]["state"], "SUCCEEDED", "{answer}");
    let id = answer["statement_id"].as_str().expect("an id").to_owned();
    // The emulator sweeps expired results about once a second: poll until CLOSED (bounded).
    let mut state = String::new();
    for _ in 0..600 {
        let polled: serde_json::Value = http
            .get(format!("{}/api/2.0/sql/statements/{id}", emulator.url))
            .bearer_auth("dapi-cli-test")
            .send()
            .expect("poll")
            .json()
            .expect("json");
        state = polled["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state == "CLOSED" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "CLOSED", "a zero result TTL closes the result");
}

#[test]
fn emulator_history_and_ttl_flags_are_validated() {
    let home = tempfile::tempdir().expect("temp home");
    for (flag, value) in [
        ("--history", "0"),
        ("--history", "many"),
        ("--result-ttl", "soon"),
    ] {
        let output = run(dbfed(home.path()).args(["emulator", flag, value]));
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&output).contains(flag), "{}", stderr(&output));
    }
    let output = run(dbfed(home.path()).args(["demo", "--help"]));
    let help = stdout(&output);
    assert!(
        help.contains("--history") && help.contains("[default: 100]"),
        "{help}"
    );
}
