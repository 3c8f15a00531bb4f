//! Replays recorded Databricks traffic (WireMock mappings from the databricks-jdbc test suite)
//! through an in-process server and checks what the client decodes and what it sends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{
    Array, AsArray, DurationMicrosecondArray, Int32Array, Int64Array, IntervalYearMonthArray,
    RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dbfed_databricks::{Client, Error, Param, ResultFormat, ResultStream, StatementRequest};
use serde_json::Value;

use crate::support::{self, TOKEN, TestServer};

const WAREHOUSE: &str = "dd43ee29fedd958d";

fn recordings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/databricks-recordings")
}

/// One recorded request/answer pair.
#[derive(Debug)]
struct Mapping {
    method: String,
    path: String,
    /// Fields of the recorded JSON body the request must repeat.
    body_keys: Vec<(String, Value)>,
    scenario: Option<String>,
    required_state: Option<String>,
    new_state: Option<String>,
    status: u16,
    body: Option<Vec<u8>>,
    insertion_index: i64,
}

/// A request the replay server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

#[derive(Default)]
struct Replay {
    mappings: Vec<Mapping>,
    states: Mutex<HashMap<String, String>>,
    received: Mutex<Vec<Received>>,
    base: OnceLock<String>,
}

fn strip_slash(path: &str) -> &str {
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

fn load_folder(dir: &Path, out: &mut Vec<Mapping>) {
    let Ok(entries) = std::fs::read_dir(dir.join("mappings")) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("mapping file");
        let m: Value = serde_json::from_str(&text).expect("mapping json");
        let req = &m["request"];
        let url = req["url"]
            .as_str()
            .or(req["urlPath"].as_str())
            .expect("mapping url");
        let path_only = url.split('?').next().unwrap_or_default();
        let mut body_keys = Vec::new();
        if let Some(patterns) = req["bodyPatterns"].as_array() {
            for p in patterns {
                if let Some(expected) = p["equalToJson"].as_str() {
                    let expected: Value = serde_json::from_str(expected).expect("equalToJson");
                    for key in ["statement", "disposition"] {
                        if let Some(v) = expected.get(key) {
                            body_keys.push((key.to_owned(), v.clone()));
                        }
                    }
                }
            }
        }
        let resp = &m["response"];
        let body = if let Some(b) = resp["body"].as_str() {
            Some(b.as_bytes().to_vec())
        } else {
            resp["base64Body"].as_str().map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("base64Body")
            })
        };
        out.push(Mapping {
            method: req["method"].as_str().unwrap_or("GET").to_owned(),
            path: strip_slash(path_only).to_owned(),
            body_keys,
            scenario: m["scenarioName"].as_str().map(str::to_owned),
            required_state: m["requiredScenarioState"].as_str().map(str::to_owned),
            new_state: m["newScenarioState"].as_str().map(str::to_owned),
            status: resp["status"].as_u64().unwrap_or(200) as u16,
            // `bodyFileName` bodies are not part of the recordings: answer 404 for them.
            body,
            insertion_index: m["insertionIndex"].as_i64().unwrap_or(0),
        });
    }
}

/// Rewrites presigned links to the loopback server and pushes their expiry into the future
/// (the recorded ones expired long ago and would be refreshed through unrecorded calls).
fn rewrite(value: &mut Value, base: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("external_link", Value::String(link)) => {
                        if let Ok(u) = url::Url::parse(link) {
                            let rest = &link[u.origin().ascii_serialization().len()..];
                            *link = format!("{base}{rest}");
                        }
                    }
                    ("expiration", Value::String(exp)) => {
                        *exp = "2099-01-01T00:00:00.000Z".to_owned();
                    }
                    (_, v) => rewrite(v, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, base)),
        _ => {}
    }
}

async fn answer(
    State(replay): State<Arc<Replay>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let path = strip_slash(uri.path()).to_owned();
    replay.received.lock().expect("lock").push(Received {
        method: method.to_string(),
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body_text.clone(),
    });
    let json: Option<Value> = serde_json::from_str(&body_text).ok();
    let mut states = replay.states.lock().expect("lock");
    let candidate = replay
        .mappings
        .iter()
        .filter(|m| m.method == method.as_str() && m.path == path)
        .filter(|m| {
            m.body_keys
                .iter()
                .all(|(k, v)| json.as_ref().and_then(|j| j.get(k)) == Some(v))
        })
        .filter(|m| match (&m.scenario, &m.required_state) {
            (Some(s), Some(required)) => {
                states.get(s).map(String::as_str).unwrap_or("Started") == required
            }
            _ => true,
        })
        .max_by_key(|m| m.insertion_index);
    let Some(m) = candidate else {
        return (StatusCode::NOT_FOUND, "no recorded mapping").into_response();
    };
    if let (Some(s), Some(new)) = (&m.scenario, &m.new_state) {
        states.insert(s.clone(), new.clone());
    }
    drop(states);
    let status = StatusCode::from_u16(m.status).expect("status");
    let Some(bytes) = &m.body else {
        return (StatusCode::NOT_FOUND, "recorded body file not included").into_response();
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            rewrite(&mut v, replay.base.get().expect("base url"));
            (
                status,
                [("content-type", "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Err(_) => (status, bytes.clone()).into_response(),
    }
}

struct Harness {
    replay: Arc<Replay>,
    server: TestServer,
}

impl Harness {
    /// Loads `sqlexecapi/<test>` and `cloudfetchapi/<test>` (when present).
    fn new(test: &str) -> Self {
        let mut mappings = Vec::new();
        load_folder(&recordings().join("sqlexecapi").join(test), &mut mappings);
        assert!(!mappings.is_empty(), "no mappings for {test}");
        load_folder(
            &recordings().join("cloudfetchapi").join(test),
            &mut mappings,
        );
        let replay = Arc::new(Replay {
            mappings,
            ..Replay::default()
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(replay.clone());
        let server = TestServer::start(app);
        replay
            .base
            .set(server.base_url())
            .expect("base url set once");
        Self { replay, server }
    }

    fn client(&self) -> Client {
        support::client_builder(&self.server, WAREHOUSE)
            .build()
            .expect("client")
    }

    fn client_with(&self, format: ResultFormat) -> Client {
        support::client_builder(&self.server, WAREHOUSE)
            .result_format(format)
            .build()
            .expect("client")
    }

    fn received(&self) -> Vec<Received> {
        self.replay.received.lock().expect("lock").clone()
    }

    /// Requests that went to presigned-link paths (not the API).
    fn downloads(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| !r.path.starts_with("/api/"))
            .collect()
    }

    /// Asserts the API calls carried the token and downloads carried none.
    fn assert_token_only_on_api(&self) {
        let received = self.received();
        assert!(!received.is_empty());
        for r in &received {
            if r.path.starts_with("/api/") {
                assert_eq!(
                    r.authorization.as_deref(),
                    Some(format!("Bearer {TOKEN}").as_str()),
                    "{} {}",
                    r.method,
                    r.path
                );
            } else {
                assert_eq!(
                    r.authorization, None,
                    "token sent to a link host: {}",
                    r.path
                );
                assert!(!r.body.contains(TOKEN));
            }
        }
    }
}

fn collect(stream: ResultStream) -> Vec<RecordBatch> {
    stream.map(|b| b.expect("batch")).collect::<Vec<_>>()
}

fn single(batches: &[RecordBatch]) -> RecordBatch {
    let schema = batches.first().expect("at least one batch").schema();
    arrow::compute::concat_batches(&schema, batches).expect("concat")
}

#[test]
fn interval_types_from_lz4_arrow_chunks() {
    let h = Harness::new("datatypesintegrationtests/testintervaltypes");
    let client = h.client();
    let stream = client
        .execute("SELECT * FROM main.jdbc_test_schema.intervals_demo", &[])
        .expect("execute");
    let schema = stream.result_schema().clone();
    assert_eq!(schema.columns().len(), 12);
    assert_eq!(
        schema.columns()[2].type_interval_type.as_deref(),
        Some("YEAR TO MONTH")
    );
    let arrow = schema.arrow_schema();
    for i in 0..3 {
        assert_eq!(
            arrow.field(i).data_type(),
            &DataType::Interval(IntervalUnit::YearMonth)
        );
    }
    for i in 3..12 {
        assert_eq!(
            arrow.field(i).data_type(),
            &DataType::Duration(TimeUnit::Microsecond)
        );
    }
    let batch = single(&collect(stream));
    assert_eq!(batch.num_rows(), 1);
    let ym = |c: usize| {
        batch
            .column(c)
            .as_any()
            .downcast_ref::<IntervalYearMonthArray>()
            .expect("year-month")
            .value(0)
    };
    let dt = |c: usize| {
        batch
            .column(c)
            .as_any()
            .downcast_ref::<DurationMicrosecondArray>()
            .expect("duration")
            .value(0)
    };
    // INTERVAL '100' YEAR, '1200' MONTH, '100-0' YEAR TO MONTH.
    assert_eq!((ym(0), ym(1), ym(2)), (1200, 1200, 1200));
    let s = 1_000_000i64;
    let (m, hr, d) = (60 * s, 3600 * s, 86_400 * s);
    assert_eq!(dt(3), 3 * d); // '3' DAY
    assert_eq!(dt(4), 3 * d + 4 * hr); // '3 4' DAY TO HOUR
    assert_eq!(dt(5), 3 * d + 4 * hr + 30 * m); // '3 04:30' DAY TO MINUTE
    assert_eq!(dt(6), 3 * d + 4 * hr + 30 * m + 20_123_000); // '3 04:30:20.123'
    assert_eq!(dt(7), 27 * hr); // '27' HOUR
    assert_eq!(dt(8), 27 * hr + 15 * m); // '27:15' HOUR TO MINUTE
    assert_eq!(dt(9), 27 * hr + 15 * m + 20_456_000); // '27:15:20.456'
    assert_eq!(dt(10), 90 * m + 30_500_000); // '90:30.5' MINUTE TO SECOND
    assert_eq!(dt(11), 45_789_000); // '45.789' SECOND

    h.assert_token_only_on_api();
    assert_eq!(h.downloads().len(), 1);
    // What the client sent: the default format, no statement spliced values.
    let post = h
        .received()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/api/2.0/sql/statements")
        .expect("execute request");
    let body: Value = serde_json::from_str(&post.body).expect("json body");
    assert_eq!(body["warehouse_id"], WAREHOUSE);
    assert_eq!(body["disposition"], "EXTERNAL_LINKS");
    assert_eq!(body["format"], "ARROW_STREAM");
    assert_eq!(body["result_compression"], "LZ4_FRAME");
    assert_eq!(body["wait_timeout"], "10s");
}

fn timestamps(batch: &RecordBatch) -> (Vec<i32>, Vec<Option<i64>>) {
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int32Array>()
        .expect("int ids");
    let ts = batch
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("timestamps");
    (
        ids.values().to_vec(),
        (0..ts.len())
            .map(|i| (!ts.is_null(i)).then(|| ts.value(i)))
            .collect(),
    )
}

#[test]
fn timestamps_agree_between_arrow_and_json_results() {
    let h = Harness::new("datatypesintegrationtests/testtimestamp");
    let sql = "SELECT id, ts FROM main.jdbc_test_schema.timestamp_test_table ORDER BY id";
    let arrow_batch = single(&collect(h.client().execute(sql, &[]).expect("arrow")));
    let json_stream = h
        .client_with(ResultFormat::JsonInline)
        .execute(sql, &[])
        .expect("json");
    assert_eq!(
        json_stream
            .result_schema()
            .arrow_schema()
            .field(1)
            .data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let json_batch = single(&collect(json_stream));
    // Recorded as '2021-01-01T10:00:00.000-08:00' and '2021-06-15T12:34:56.789-07:00'.
    let expected = (
        vec![1, 2, 3],
        vec![
            Some(1_609_524_000_000_000),
            Some(1_623_785_696_789_000),
            None,
        ],
    );
    assert_eq!(timestamps(&json_batch), expected);
    assert_eq!(timestamps(&arrow_batch), expected);
    assert_eq!(arrow_batch.schema(), json_batch.schema());
    h.assert_token_only_on_api();
}

fn strings(batch: &RecordBatch, col: usize) -> Vec<Option<String>> {
    let a = batch.column(col).as_string::<i32>();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_owned()))
        .collect()
}

#[test]
fn string_edge_cases_both_formats() {
    let h = Harness::new("datatypesintegrationtests/teststringedgecases");
    let sql = "SELECT * FROM (VALUES (1, '   leading and trailing spaces   '),(2, 'こんにちは'),(3, 'special chars: !@#$%^&*()'),(4, 'string with \"double quotes\" inside'),(5, NULL)) AS string_edge_cases(id, test_string) ORDER BY id";
    let expected = vec![
        Some("   leading and trailing spaces   ".to_owned()),
        Some("こんにちは".to_owned()),
        Some("special chars: !@#$%^&*()".to_owned()),
        Some("string with \"double quotes\" inside".to_owned()),
        None,
    ];
    for format in [ResultFormat::ArrowLz4, ResultFormat::JsonInline] {
        let batch = single(&collect(
            h.client_with(format).execute(sql, &[]).expect("execute"),
        ));
        assert_eq!(strings(&batch, 1), expected, "{format:?}");
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("ids");
        assert_eq!(ids.values(), &[1, 2, 3, 4, 5]);
    }
}

#[test]
fn variant_values_are_json_text() {
    let h = Harness::new("datatypesintegrationtests/testvarianttypes");
    let stream = h
        .client()
        .execute(
            "SELECT id, variant_col FROM main.jdbc_test_schema.variant_types_table ORDER BY id",
            &[],
        )
        .expect("execute");
    assert_eq!(stream.result_schema().columns()[1].type_name, "VARIANT");
    let batch = single(&collect(stream));
    let values = strings(&batch, 1);
    assert_eq!(values.len(), 3);
    let first: Value = serde_json::from_str(values[0].as_deref().expect("row 1")).expect("json");
    assert_eq!(first, serde_json::json!({"key": "value", "number": 123}));
    let second: Value = serde_json::from_str(values[1].as_deref().expect("row 2")).expect("json");
    assert_eq!(
        second,
        serde_json::json!({"nested": {"a": "b", "c": [1, 2, 3]}, "flag": true})
    );
    assert_eq!(values[2], None);
}

#[test]
fn select_null_is_a_null_column() {
    let h = Harness::new("datatypesintegrationtests/testnullhandling.invocation1");
    for format in [ResultFormat::ArrowLz4, ResultFormat::JsonInline] {
        let stream = h
            .client_with(format)
            .execute("SELECT NULL", &[])
            .expect("execute");
        assert_eq!(
            stream.result_schema().arrow_schema().field(0).data_type(),
            &DataType::Null
        );
        let batch = single(&collect(stream));
        assert_eq!(batch.num_rows(), 1, "{format:?}");
        assert_eq!(batch.column(0).logical_null_count(), 1);
    }
}

#[test]
fn dml_returns_affected_rows() {
    let h = Harness::new("datatypesintegrationtests/testtimestamp");
    let batch = single(&collect(
        h.client()
            .execute(
                "INSERT INTO main.jdbc_test_schema.timestamp_test_table (id, ts) VALUES (1, '2021-01-01 10:00:00'), (2, '2021-06-15 12:34:56.789'), (3, NULL)",
                &[],
            )
            .expect("insert"),
    ));
    assert_eq!(batch.schema().field(0).name(), "num_affected_rows");
    let n = batch
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("num_inserted_rows");
    assert_eq!(n.value(0), 3);
}

#[test]
fn ddl_has_an_empty_result() {
    let h = Harness::new("datatypesintegrationtests/testintervaltypes");
    let stream = h
        .client()
        .execute(
            "DROP TABLE IF EXISTS main.jdbc_test_schema.intervals_demo",
            &[],
        )
        .expect("drop");
    assert!(stream.result_schema().columns().is_empty());
    assert_eq!(collect(stream).len(), 0);
    assert!(h.downloads().is_empty());
}

#[test]
fn syntax_error_is_a_typed_failure() {
    let h = Harness::new("errorhandlingintegrationtests/testquerysyntaxerror");
    let err = h
        .client()
        .execute(
            "INSER INTO main.jdbc_test_schema.query_syntax_error_test_table (id, col1, col2) VALUES (1, 'value1', 'value2')",
            &[],
        )
        .expect_err("syntax error");
    assert!(matches!(err, Error::StatementFailed { .. }), "{err:?}");
    assert_eq!(err.sql_state(), Some("42601"));
    assert_eq!(err.error_code(), Some("BAD_REQUEST"));
    assert_eq!(
        err.statement_id(),
        Some("01ef9de4-091e-1cca-a458-a00ed5ab7b11")
    );
    assert!(err.to_string().contains("PARSE_SYNTAX_ERROR"), "{err}");
    assert!(!err.is_retryable() && !err.is_auth());
}

#[test]
fn rejected_credentials_are_auth_errors() {
    for (test, status, message) in [
        (
            "connectionintegrationtests/testincorrectcredentialsforpat",
            401,
            "Credential was not sent",
        ),
        (
            "connectionintegrationtests/testincorrectcredentialsforoauth",
            403,
            "Invalid access token.",
        ),
    ] {
        let h = Harness::new(test);
        let err = h
            .client()
            .create_session(Some("SPARK"), Some("default"), &BTreeMap::new())
            .expect_err("rejected");
        assert_eq!(err.http_status(), Some(status), "{err}");
        assert_eq!(err.error_code(), Some(status.to_string().as_str()));
        assert!(err.is_auth() && !err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(!err.to_string().contains(TOKEN));
        // Not retried: one request only.
        assert_eq!(h.received().len(), 1);
    }
}

#[test]
fn sessions_are_created_and_closed() {
    let h = Harness::new("connectionintegrationtests/testsuccessfulconnection");
    let session = h
        .client()
        .create_session(Some("SPARK"), Some("default"), &BTreeMap::new())
        .expect("session");
    assert_eq!(session.id(), "01ef9de4-936a-1e69-a6d6-79b0fe6ba048");
    drop(session);
    let received = h.received();
    let create: Value = serde_json::from_str(&received[0].body).expect("create body");
    assert_eq!(
        create,
        serde_json::json!({"warehouse_id": WAREHOUSE, "catalog": "SPARK", "schema": "default"})
    );
    assert_eq!(received[1].method, "DELETE");
    assert_eq!(
        received[1].path,
        "/api/2.0/sql/sessions/01ef9de4-936a-1e69-a6d6-79b0fe6ba048"
    );
}

#[test]
fn pending_statement_is_polled_to_success() {
    let h = Harness::new(
        "preparedstatementintegrationtests/testpreparedstatementcomplexqueryexecution",
    );
    let stream = h
        .client()
        .execute(
            "CREATE TABLE IF NOT EXISTS main.jdbc_test_schema.prepared_statement_complex_query_test_table (id INT PRIMARY KEY, col1 VARCHAR(255), col2 VARCHAR(255))",
            &[],
        )
        .expect("create table");
    assert_eq!(collect(stream).len(), 0);
    let polls = h
        .received()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("01ef9de2-e893-19cc-bb7e-9c955fbba9eb"))
        .count();
    // Recorded: PENDING, 18 x RUNNING, then SUCCEEDED.
    assert_eq!(polls, 19);
}

#[test]
fn positional_parameters_and_inline_dml() {
    let h = Harness::new(
        "preparedstatementintegrationtests/testpreparedstatementcomplexqueryexecution",
    );
    let client = h.client();
    let batch = single(&collect(
        client
            .execute(
                "SELECT col1, col2 FROM main.jdbc_test_schema.prepared_statement_complex_query_test_table WHERE id = ?",
                &[Param::positional(1)],
            )
            .expect("select"),
    ));
    assert_eq!(strings(&batch, 0).len(), 1);
    assert!(strings(&batch, 0)[0].is_some());

    let stream = client
        .execute_request(
            &StatementRequest::new(
                "UPDATE main.jdbc_test_schema.prepared_statement_complex_query_test_table SET col1 = ? WHERE id = ?",
            )
            .parameters([Param::positional("Updated value"), Param::positional(1)])
            .result_format(ResultFormat::JsonInline),
        )
        .expect("update");
    let batch = single(&collect(stream));
    let n = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("num_affected_rows");
    assert_eq!(n.value(0), 1);

    let bodies: Vec<Value> = h
        .received()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/2.0/sql/statements")
        .map(|r| serde_json::from_str(&r.body).expect("json"))
        .collect();
    assert_eq!(
        bodies[0]["parameters"],
        serde_json::json!([{"ordinal": 1, "value": "1", "type": "INT"}])
    );
    assert_eq!(
        bodies[1]["parameters"],
        serde_json::json!([
            {"ordinal": 1, "value": "Updated value", "type": "STRING"},
            {"ordinal": 2, "value": "1", "type": "INT"}
        ])
    );
    assert_eq!(bodies[1]["disposition"], "INLINE");
    assert_eq!(bodies[1]["format"], "JSON_ARRAY");
    assert!(bodies[1].get("result_compression").is_none());
}

#[test]
fn multichunk_result_with_a_missing_chunk_is_an_error() {
    // The recording holds chunk 1's file but not chunk 0's (122 880 rows, not included): the
    // client must read the real multi-chunk manifest, download without credentials, and report
    // the missing chunk 0 as an error instead of a short result.
    let h = Harness::new("multichunkexecutionintegrationtests/testmultichunkselect");
    let client = support::client_builder(&h.server, WAREHOUSE)
        .download_threads(2)
        .build()
        .expect("client");
    let mut stream = client
        .execute_request(
            &StatementRequest::new("SELECT * FROM samples.tpch.lineitem limit 122900")
                .row_limit(122_900),
        )
        .expect("execute");
    assert_eq!(stream.total_row_count(), Some(122_900));
    let schema = stream.result_schema().arrow_schema().clone();
    assert_eq!(schema.fields().len(), 16);
    assert_eq!(schema.field(4).data_type(), &DataType::Decimal128(18, 2));
    assert_eq!(schema.field(10).data_type(), &DataType::Date32);
    let err = stream.next_batch().expect_err("chunk 0 file is missing");
    assert_eq!(err.http_status(), Some(404), "{err}");
    assert!(
        !err.to_string().contains("X-Amz"),
        "query string leaked: {err}"
    );
    drop(stream);

    // Whether the second download thread reached chunk 1 before chunk 0's failure stopped the
    // download depends on thread timing, so it is not asserted here: fetching links through the
    // chunk endpoint is covered deterministically by faults.rs and the emulator end-to-end tests.
    let received = h.received();
    let body: Value = serde_json::from_str(
        &received
            .iter()
            .find(|r| r.method == "POST")
            .expect("execute")
            .body,
    )
    .expect("json");
    assert_eq!(body["row_limit"], 122_900);
    h.assert_token_only_on_api();
}
