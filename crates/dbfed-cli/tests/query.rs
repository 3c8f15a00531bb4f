//! `dbfed query`: formats read back, local tables, progress, Ctrl-C.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::{EmulatorProcess, dbfed, run, start_emulator, stderr, stdout};

fn query_command(home: &std::path::Path, emulator: &EmulatorProcess) -> Command {
    let mut command = dbfed(home);
    command
        .env("DATABRICKS_HOST", &emulator.url)
        .env("DATABRICKS_TOKEN", "dapi-cli-test")
        .env("DATABRICKS_WAREHOUSE_ID", "w")
        .arg("query");
    command
}

const NATIONS: &str = "SELECT n_nationkey, n_name FROM samples.tpch.nation WHERE n_regionkey = :r ORDER BY n_nationkey";

#[test]
fn parquet_output_reads_back_with_the_right_values() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    let file = home.path().join("asia.parquet");
    let output = run(query_command(home.path(), &emulator).args([
        NATIONS,
        "--param",
        "r:INT=2",
        "--format",
        "parquet",
        "--output",
        file.to_str().expect("utf-8"),
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("5 rows"), "{}", stderr(&output));
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).expect("written"))
            .expect("a Parquet file")
            .build()
            .expect("reader");
    let mut keys = Vec::new();
    let mut names = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        keys.extend(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
        let column =
            arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8).expect("utf8");
        let column = column.as_string::<i32>();
        names.extend((0..column.len()).map(|i| column.value(i).to_owned()));
    }
    assert_eq!(keys, vec![8, 9, 12, 18, 21]);
    assert_eq!(
        names,
        vec!["INDIA", "INDONESIA", "JAPAN", "CHINA", "VIETNAM"]
    );
}

#[test]
fn every_format_to_a_file_holds_the_same_rows() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    for format in ["table", "csv", "json", "arrow", "parquet"] {
        let file = home.path().join(format!("out.{format}"));
        let output = run(query_command(home.path(), &emulator).args([
            NATIONS,
            "--param",
            "r:INT=0",
            "--format",
            format,
            "--output",
            file.to_str().expect("utf-8"),
        ]));
        assert!(output.status.success(), "{format}: {}", stderr(&output));
        assert!(
            stdout(&output).is_empty(),
            "{format}: the result went to the file"
        );
        let bytes = std::fs::read(&file).expect("written");
        match format {
            "table" | "csv" | "json" => {
                let text = String::from_utf8(bytes).expect("text");
                for name in ["ALGERIA", "ETHIOPIA", "KENYA", "MOROCCO", "MOZAMBIQUE"] {
                    assert!(text.contains(name), "{format}: {text}");
                }
                assert!(!text.contains("BRAZIL"), "{format}: {text}");
                if format == "csv" {
                    assert!(
                        text.starts_with("n_nationkey,n_name\n0,ALGERIA\n"),
                        "{text}"
                    );
                }
                if format == "json" {
                    assert_eq!(text.lines().count(), 5, "{text}");
                }
            }
            "arrow" => {
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                        .expect("Arrow IPC");
                let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
                assert_eq!(rows, 5);
            }
            _ => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                    .expect("Parquet")
                    .build()
                    .expect("reader");
                let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
                assert_eq!(rows, 5);
            }
        }
    }
}

#[test]
fn local_tables_from_flags_and_the_config_file() {
    let home = tempfile::tempdir().expect("temp home");
    std::fs::write(
        home.path().join("targets.csv"),
        "nation,target\nCHINA,100\nJAPAN,250\n",
    )
    .expect("csv");
    let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![(
        "nation",
        Arc::new(arrow::array::StringArray::from(vec!["JAPAN", "PERU"])) as Arc<dyn Array>,
    )])
    .expect("batch");
    let parquet = home.path().join("focus.parquet");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    std::fs::write(
        home.path().join("dbfed.toml"),
        "emulator = true\n[tables]\ntargets = \"targets.csv\"\n",
    )
    .expect("config");

    let output = run(dbfed(home.path()).args([
        "query",
        "--table",
        &format!("focus={}", parquet.display()),
        "--format",
        "csv",
        "SELECT t.nation, t.target FROM targets t JOIN focus f ON f.nation = t.nation",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "nation,target\nJAPAN,250\n");

    let output = run(dbfed(home.path()).args([
        "query",
        "--explain",
        "SELECT nation FROM targets WHERE target > 120",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    assert!(
        plan.contains("physical_plan") && plan.contains("target"),
        "{plan}"
    );

    let missing =
        run(dbfed(home.path()).args(["query", "--table", "gone=nothing-here.parquet", "SELECT 1"]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("nothing-here.parquet"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn progress_is_reported_on_stderr_when_asked() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--statement-latency-ms", "1500"]);
    let output = run(query_command(home.path(), &emulator).args([
        "SELECT COUNT(*) AS n FROM samples.tpch.region",
        "--progress",
        "always",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    // Not a terminal: plain lines, no cursor control.
    assert!(
        err.contains("EXECUTING 0 rows, ") && err.contains(" received, "),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "escape codes written to a non-terminal: {err:?}"
    );
    assert!(stdout(&output).contains("| 5 "), "{}", stdout(&output));
}

fn statements(url: &str) -> Vec<serde_json::Value> {
    let http = reqwest::blocking::Client::new();
    let value: serde_json::Value = http
        .get(format!("{url}/_emulator/statements"))
        .timeout(Duration::from_secs(10))
        .send()
        .expect("statements")
        .json()
        .expect("json");
    value.as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_cancels_the_statement_on_the_warehouse() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--statement-latency-ms", "120000"]);
    let mut child = query_command(home.path(), &emulator)
        .arg("SELECT * FROM samples.tpch.region")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbfed query starts");
    wait_for("the statement to run", || {
        statements(&emulator.url)
            .iter()
            .any(|s| s["state"] == "RUNNING" || s["state"] == "PENDING")
    });
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut status = None;
    wait_for("dbfed query to exit", || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let output = child.wait_with_output().expect("output");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("canceled"), "{}", stderr(&output));
    wait_for("the statement to be canceled", || {
        let all = statements(&emulator.url);
        all.len() == 1 && all[0]["state"] == "CANCELED"
    });
}

#[test]
fn explain_shows_the_sql_pushed_to_the_warehouse() {
    let home = tempfile::tempdir().expect("temp home");
    let targets = home.path().join("targets.csv");
    std::fs::write(&targets, "nation,target\nCHINA,100\nJAPAN,250\n").expect("csv");
    let output = run(dbfed(home.path()).args([
        "query",
        "--emulator",
        "--table",
        &format!("targets={}", targets.display()),
        "--explain",
        "SELECT n.n_name, t.target FROM samples.tpch.nation n \
         JOIN targets t ON t.nation = n.n_name WHERE n.n_regionkey = 2",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    let pushed = plan
        .lines()
        .find(|l| l.contains("VirtualExecutionPlan"))
        .unwrap_or_else(|| panic!("a pushed-down scan in the plan:\n{plan}"));
    let sql = pushed
        .split_once("base_sql=")
        .map(|(_, sql)| sql.trim().trim_end_matches('|').trim())
        .unwrap_or_else(|| panic!("the SQL sent to the warehouse: {pushed}"));
    assert!(sql.starts_with("SELECT "), "{sql}");
    assert!(sql.contains("FROM `samples`.`tpch`.`nation`"), "{sql}");
    assert!(
        sql.contains("`n_regionkey` = 2"),
        "the filter is pushed: {sql}"
    );
    assert!(
        !sql.contains("targets"),
        "the local table stays local: {sql}"
    );
    // The join with the local file runs locally, over the pushed scan.
    assert!(plan.contains("HashJoinExec"), "{plan}");
    assert!(plan.contains("targets.csv"), "{plan}");
}

/// The data rows of a pretty table (`| ... |` lines after the header).
fn table_rows(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .count()
        .saturating_sub(1)
}

#[test]
fn the_table_format_shows_the_first_rows_and_counts_the_rest() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--chunk-rows", "4000"]);
    // samples.tpch.orders has 15 000 rows at scale 0.01.
    let output =
        run(query_command(home.path(), &emulator).arg("SELECT * FROM samples.tpch.orders"));
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(table_rows(&out), 1000, "the default cap");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("… 14000 more rows"), "{last}");
    assert!(
        last.contains("--format") && last.contains("--output"),
        "{last}"
    );

    let output = run(query_command(home.path(), &emulator).args([
        "SELECT r_name FROM samples.tpch.region ORDER BY r_regionkey",
        "--max-rows",
        "2",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(table_rows(&out), 2, "{out}");
    assert!(
        out.contains("| AFRICA") && out.contains("| AMERICA"),
        "{out}"
    );
    assert!(!out.contains("ASIA"), "{out}");
    assert!(out.contains("… 3 more rows"), "{out}");

    let output = run(query_command(home.path(), &emulator).args([
        "SELECT * FROM samples.tpch.orders",
        "--max-rows",
        "0",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(table_rows(&out), 15_000, "0 shows every row");
    assert!(!out.contains("more row"), "nothing left to count");
}

/// Names in `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failure_mid_stream_leaves_no_partial_file() {
    let home = tempfile::tempdir().expect("temp home");
    // The first chunk arrives, every later chunk request fails.
    let emulator = start_emulator(
        home.path(),
        &["--chunk-rows", "1000", "--fault", "chunk:400"],
    );
    let out_dir = home.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let fresh = out_dir.join("orders.parquet");
    let existing = out_dir.join("previous.csv");
    std::fs::write(&existing, "keep,me\n").expect("an earlier result");
    for (format, file) in [("parquet", &fresh), ("csv", &existing)] {
        let output = run(query_command(home.path(), &emulator).args([
            "SELECT * FROM samples.tpch.orders",
            "--format",
            format,
            "--output",
            file.to_str().expect("utf-8"),
        ]));
        assert_eq!(
            output.status.code(),
            Some(1),
            "{format}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("injected fault"),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        listing(&out_dir),
        vec!["previous.csv"],
        "no partial or temporary file remains"
    );
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "keep,me\n",
        "a failed query leaves an existing file alone"
    );

    // The same query without the fault replaces the file whole.
    let healthy = start_emulator(home.path(), &[]);
    let output = run(query_command(home.path(), &healthy).args([
        "SELECT * FROM samples.tpch.orders",
        "--format",
        "csv",
        "--output",
        existing.to_str().expect("utf-8"),
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&existing).expect("read");
    assert_eq!(text.lines().count(), 15_001, "header and every row");
    assert_eq!(listing(&out_dir), vec!["previous.csv"]);
}

#[test]
fn a_rejected_token_is_reported_once() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    let output = run(query_command(home.path(), &emulator)
        .env("DATABRICKS_TOKEN", "dapi-wrong")
        .arg("SELECT 1"));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.matches("Invalid access token").count(), 1, "{err}");
    assert_eq!(err.matches("driver error").count(), 1, "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("dapi-wrong"),
        "the token is never printed: {err}"
    );
}

#[test]
fn the_statement_can_come_from_a_file() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    let sql = home.path().join("report.sql");
    std::fs::write(
        &sql,
        "-- regions of the world\nSELECT r_name\nFROM samples.tpch.region\nWHERE r_regionkey >= :k\nORDER BY r_regionkey\n",
    )
    .expect("sql file");
    let output = run(query_command(home.path(), &emulator).args([
        "-f",
        sql.to_str().expect("utf-8"),
        "--param",
        "k:INT=3",
        "--format",
        "csv",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "r_name\nEUROPE\nMIDDLE EAST\n");

    let missing = run(query_command(home.path(), &emulator).args(["--file", "absent.sql"]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("absent.sql"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_profile_of_databrickscfg_names_the_workspace() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    std::fs::write(
        home.path().join(".databrickscfg"),
        format!(
            "[DEFAULT]\nhost = http://127.0.0.1:9\ntoken = dapi-default\n\n\
             [dev]\nhost = {}\ntoken = dapi-cli-test\nwarehouse_id = w\n",
            emulator.url
        ),
    )
    .expect("databrickscfg");
    let output = run(dbfed(home.path()).args([
        "query",
        "--profile",
        "dev",
        "--format",
        "csv",
        "SELECT COUNT(*) AS n FROM samples.tpch.region",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "n\n5\n");

    let unknown = run(dbfed(home.path()).args(["query", "--profile", "nope", "SELECT 1"]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("nope"), "{}", stderr(&unknown));
}
