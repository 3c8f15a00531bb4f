//! Real third-party clients: Python ADBC (DBAPI) and pyarrow.flight, run against a server
//! over the emulator plus a local table. A federated TPC-H join must return the same rows as
//! the same join run on local TPC-H data.
//!
//! The Python interpreter comes from `DBFED_TEST_PYTHON` (set by `scripts/test`, with
//! `requirements-test.txt` installed); without it these tests print a note and pass.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::{Client, RetryPolicy};
use dbfed_datafusion::{DatabricksSource, federated_session_context, register_local_table};
use dbfed_emulator::Emulator;
use dbfed_executor::{DatabricksDriver, Executor};
use dbfed_flight::{Auth, Credentials, FlightSqlServer, StaticSessions};
use dbfed_tests::{client_config, off_runtime};
use serde_json::Value;
use tpchgen::generators::{CustomerGenerator, NationGenerator};
use tpchgen_arrow::{CustomerArrow, NationArrow};

use crate::fixture::start;
use crate::passthrough::{Warehouse, warehouse};

const TOKEN: &str = "dapi-flight-python-test-000000";
const USER: &str = "analyst";
const PASSWORD: &str = "analyst-pw";

const JOIN: &str = "SELECT n.n_name AS nation, count(*) AS customers, sum(c.c_custkey) AS key_sum \
     FROM samples.tpch.customer c JOIN nation_local n ON c.c_nationkey = n.n_nationkey \
     WHERE c.c_mktsegment = 'BUILDING' GROUP BY n.n_name ORDER BY n.n_name";

fn python() -> Option<String> {
    match std::env::var("DBFED_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            println!(
                "note: DBFED_TEST_PYTHON is not set: skipping the Python client test (scripts/test sets it)"
            );
            None
        }
    }
}

fn nation_batches() -> Vec<RecordBatch> {
    NationArrow::new(NationGenerator::new(0.01, 1, 1))
        .collect::<Result<_, _>>()
        .expect("nation generates")
}

fn write_nation(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("nation_local.parquet");
    let batches = nation_batches();
    let file = std::fs::File::create(&path).expect("create");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        file,
        NationArrow::schema_ref().clone(),
        None,
    )
    .expect("writer");
    for b in &batches {
        writer.write(b).expect("write");
    }
    writer.close().expect("close");
    path
}

/// The join on purely local TPC-H data (same generator and scale as the emulator).
async fn expected_rows() -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    let customer: Vec<RecordBatch> = CustomerArrow::new(CustomerGenerator::new(0.01, 1, 1))
        .collect::<Result<_, _>>()
        .expect("customer generates");
    ctx.register_table(
        "customer",
        Arc::new(
            MemTable::try_new(CustomerArrow::schema_ref().clone(), vec![customer]).expect("mem"),
        ),
    )
    .expect("customer");
    ctx.register_table(
        "nation_local",
        Arc::new(
            MemTable::try_new(NationArrow::schema_ref().clone(), vec![nation_batches()])
                .expect("mem"),
        ),
    )
    .expect("nation");
    let sql = JOIN.replace("samples.tpch.customer", "customer");
    let batches = ctx
        .sql(&sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).expect("display"))
                    .collect(),
            );
        }
    }
    rows
}

fn json_rows(value: &Value) -> Vec<Vec<String>> {
    value
        .as_array()
        .expect("rows array")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row array")
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

struct Served {
    _warehouse: Warehouse,
    _dir: tempfile::TempDir,
    server: dbfed_flight::FlightServerHandle,
}

async fn serve() -> Served {
    let emulator = warehouse(Emulator::builder().tpch_scale(0.01).token(TOKEN));
    let dir = tempfile::tempdir().expect("tempdir");
    let nation = write_nation(dir.path());
    let config = client_config(&emulator, "fl0123456789abcd", TOKEN);
    // The blocking HTTP client must be built off the async workers.
    let executor = off_runtime(move || {
        let client = Client::builder(config)
            .retry_policy(RetryPolicy::default().base_delay(Duration::from_millis(10)))
            .build()
            .expect("client");
        Executor::builder(DatabricksDriver::new(client))
            .threads(4)
            .build()
            .expect("executor")
    })
    .await;
    let source = DatabricksSource::builder(executor)
        .catalogs(["samples"])
        .build()
        .expect("source");
    let ctx = federated_session_context(SessionConfig::new().with_information_schema(true));
    source.register(&ctx).await.expect("register");
    register_local_table(&ctx, "nation_local", &nation)
        .await
        .expect("local table");
    let server = start(
        FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx)))
            .auth(Auth::Basic(Credentials::new().user(USER, PASSWORD))),
    )
    .await;
    Served {
        _warehouse: emulator,
        _dir: dir,
        server,
    }
}

async fn run_script(python: String, script: &str, url: String) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&script)
            .arg(url)
            .arg(USER)
            .arg(PASSWORD)
            .arg(JOIN)
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "script failed: {stderr}\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_dbapi_client() {
    let Some(python) = python() else { return };
    let served = serve().await;
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        run_script(python, "adbc_client.py", served.server.url()),
    )
    .await
    .expect("hang guard");

    let expected = expected_rows().await;
    assert_eq!(expected.len(), 25);
    assert_eq!(json_rows(&out["join_rows"]), expected);
    assert_eq!(
        out["join_columns"],
        serde_json::json!(["nation", "customers", "key_sum"])
    );
    assert_eq!(
        json_rows(&out["param_rows"]),
        vec![vec!["GERMANY".to_owned()], vec!["INDIA".to_owned()]]
    );
    assert_eq!(json_rows(&out["local_count"]), vec![vec!["25".to_owned()]]);

    let objects = out["objects"].as_array().expect("objects");
    let nation = objects
        .iter()
        .find(|o| o[0] == "samples" && o[1] == "tpch" && o[2] == "nation")
        .unwrap_or_else(|| panic!("samples.tpch.nation missing from {objects:?}"));
    assert_eq!(
        nation[3],
        serde_json::json!(["n_nationkey", "n_name", "n_regionkey", "n_comment"])
    );
    assert!(objects.iter().any(|o| o[2] == "lineitem"), "{objects:?}");
    assert_eq!(
        out["nation_schema"],
        serde_json::json!(["n_nationkey", "n_name", "n_regionkey", "n_comment"])
    );
    let insert = out["insert"].as_str().expect("insert outcome");
    assert!(
        insert.contains("PERMISSION_DENIED") || insert.contains("read-only"),
        "{insert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_flight_client() {
    let Some(python) = python() else { return };
    let served = serve().await;
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        run_script(python, "pyarrow_client.py", served.server.url()),
    )
    .await
    .expect("hang guard");
    assert_eq!(json_rows(&out["join_rows"]), expected_rows().await);
    assert_eq!(
        out["schema"],
        serde_json::json!(["nation", "customers", "key_sum"])
    );
    assert_eq!(out["wrong_password"], "unauthenticated");
    assert_eq!(out["no_token"], "unauthenticated");
    let actions = out["actions"].as_array().expect("actions");
    for action in [
        "CancelFlightInfo",
        "CloseSession",
        "CreatePreparedStatement",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing: {actions:?}"
        );
    }
}
