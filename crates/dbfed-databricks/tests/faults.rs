//! Fault injection against a small fake warehouse: retries, link refresh, corrupt chunks,
//! short chunks, cancellation, ordering and bounded prefetch of parallel downloads.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use arrow::ipc::writer::StreamWriter;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dbfed_databricks::{Client, Error, ResultFormat, ResultStream};
use serde_json::{Value, json};

use crate::support::{self, TOKEN, TestServer};

const STATEMENT: &str = "01f0-fake-statement";

/// A canned failure: status and optional `Retry-After` value.
type Failure = (u16, Option<&'static str>);

#[derive(Debug, Clone)]
struct Logged {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    link_header: Option<String>,
}

/// What the fake warehouse does.
#[derive(Default)]
struct Scenario {
    /// Rows in each chunk file.
    rows: Vec<usize>,
    /// Row counts the manifest announces (defaults to `rows`).
    manifest_rows: Option<Vec<usize>>,
    /// Manifest `byte_count` of each chunk.
    chunk_cost: u64,
    /// `RUNNING` answers before `SUCCEEDED` (`usize::MAX`: never finishes).
    running_polls: usize,
    execute_failures: Vec<Failure>,
    poll_failures: Vec<Failure>,
    /// The first links handed out (in the execute answer) are already expired, and the
    /// link host refuses them: the client must refresh through the chunk endpoint.
    expired_first_links: bool,
    /// Chunks whose first download answers 403.
    forbidden_once: HashSet<usize>,
    /// Chunks whose file is cut in the middle.
    truncated: HashSet<usize>,
    /// Chunk 0's download waits until chunk 1 has been requested (proves parallelism).
    chunk0_waits_for_chunk1: bool,
    /// INLINE + JSON_ARRAY paging instead of external links.
    inline: bool,
}

struct Fake {
    scenario: Scenario,
    base: OnceLock<String>,
    log: Mutex<Vec<Logged>>,
    execute_failures: Mutex<VecDeque<Failure>>,
    poll_failures: Mutex<VecDeque<Failure>>,
    polls: AtomicUsize,
    forbidden_done: Mutex<HashSet<usize>>,
    chunk1_requested: AtomicBool,
    chunk0_saw_chunk1: AtomicBool,
    tokens_issued: AtomicUsize,
    files: Vec<Vec<u8>>,
}

/// An LZ4-framed Arrow IPC stream with ids `start..start+n`, split across two frames.
fn chunk_file(start: usize, n: usize, truncate: bool) -> Vec<u8> {
    let ids: Vec<i64> = (start as i64..(start + n) as i64).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("s", Arc::new(StringArray::from(names)) as ArrayRef),
    ])
    .expect("batch");
    let mut ipc = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut ipc, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    if truncate {
        ipc.truncate(ipc.len() * 2 / 3);
    }
    let (a, b) = ipc.split_at(ipc.len() / 2);
    let mut out = Vec::new();
    for part in [a, b] {
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(part).expect("lz4");
        out.extend(enc.finish().expect("lz4 finish"));
    }
    out
}

impl Fake {
    fn new(scenario: Scenario) -> Arc<Self> {
        let mut start = 0;
        let files = scenario
            .rows
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let f = chunk_file(start, *n, scenario.truncated.contains(&i));
                start += n;
                f
            })
            .collect();
        Arc::new(Self {
            execute_failures: Mutex::new(scenario.execute_failures.iter().copied().collect()),
            poll_failures: Mutex::new(scenario.poll_failures.iter().copied().collect()),
            scenario,
            base: OnceLock::new(),
            log: Mutex::new(Vec::new()),
            polls: AtomicUsize::new(0),
            forbidden_done: Mutex::new(HashSet::new()),
            chunk1_requested: AtomicBool::new(false),
            chunk0_saw_chunk1: AtomicBool::new(false),
            tokens_issued: AtomicUsize::new(0),
            files,
        })
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap) {
        self.log.lock().expect("lock").push(Logged {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            link_header: headers
                .get("x-test-header")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }

    fn manifest_rows(&self) -> Vec<usize> {
        self.scenario
            .manifest_rows
            .clone()
            .unwrap_or_else(|| self.scenario.rows.clone())
    }

    fn row_offset(&self, i: usize) -> usize {
        self.manifest_rows()[..i].iter().sum()
    }

    fn link(&self, i: usize, fresh: bool) -> Value {
        let base = self.base.get().expect("base");
        let (expiration, generation) = if fresh {
            (chrono::Utc::now() + chrono::Duration::minutes(10), "fresh")
        } else {
            (chrono::Utc::now() - chrono::Duration::minutes(1), "stale")
        };
        let mut link = json!({
            "chunk_index": i,
            "row_offset": self.row_offset(i),
            "row_count": self.manifest_rows()[i],
            "byte_count": 999,
            "external_link": format!("{base}/files/{i}?X-Amz-Signature=sig-{generation}"),
            "expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "http_headers": {"x-test-header": "link-header"},
        });
        if i + 1 < self.scenario.rows.len() {
            link["next_chunk_index"] = json!(i + 1);
            link["next_chunk_internal_link"] = json!(format!(
                "/api/2.0/sql/statements/{STATEMENT}/result/chunks/{}",
                i + 1
            ));
        }
        link
    }

    fn inline_chunk(&self, i: usize) -> Value {
        let start = self.row_offset(i);
        let rows: Vec<Value> = (start..start + self.scenario.rows[i])
            .map(|id| json!([id.to_string(), format!("row-{id}")]))
            .collect();
        let mut chunk = json!({
            "chunk_index": i,
            "row_offset": start,
            "row_count": self.manifest_rows()[i],
            "data_array": rows,
        });
        if i + 1 < self.scenario.rows.len() {
            chunk["next_chunk_index"] = json!(i + 1);
            chunk["next_chunk_internal_link"] = json!(format!(
                "/api/2.0/sql/statements/{STATEMENT}/result/chunks/{}",
                i + 1
            ));
        }
        chunk
    }

    fn succeeded(&self) -> Value {
        let rows = self.manifest_rows();
        let chunks: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"chunk_index": i, "row_offset": self.row_offset(i), "row_count": n,
                       "byte_count": self.scenario.chunk_cost.max(1)})
            })
            .collect();
        let inline = self.scenario.inline;
        let mut manifest = json!({
            "format": if inline { "JSON_ARRAY" } else { "ARROW_STREAM" },
            "schema": {"column_count": 2, "columns": [
                {"name": "id", "type_name": "LONG", "type_text": "BIGINT", "position": 0},
                {"name": "s", "type_name": "STRING", "type_text": "STRING", "position": 1}]},
            "total_chunk_count": rows.len(),
            "chunks": chunks,
            "total_row_count": rows.iter().sum::<usize>().to_string(),
            "truncated": false,
        });
        if !inline {
            manifest["result_compression"] = json!("LZ4_FRAME");
        }
        let result = if rows.is_empty() {
            json!({})
        } else if inline {
            self.inline_chunk(0)
        } else {
            json!({"external_links": [self.link(0, !self.scenario.expired_first_links)]})
        };
        json!({"statement_id": STATEMENT, "status": {"state": "SUCCEEDED"},
               "manifest": manifest, "result": result})
    }

    fn logged(&self) -> Vec<Logged> {
        self.log.lock().expect("lock").clone()
    }

    fn count(&self, method: &str, path_suffix: &str) -> usize {
        self.logged()
            .iter()
            .filter(|l| l.method == method && l.path.ends_with(path_suffix))
            .count()
    }

    fn downloads(&self) -> Vec<Logged> {
        self.logged()
            .into_iter()
            .filter(|l| l.path.starts_with("/files/"))
            .collect()
    }
}

fn failure(f: Failure) -> Response {
    let (status, retry_after) = f;
    let status = StatusCode::from_u16(status).expect("status");
    let body = json!({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected failure"});
    match retry_after {
        Some(v) => (status, [("retry-after", v)], body.to_string()).into_response(),
        None => (status, body.to_string()).into_response(),
    }
}

async fn execute(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    if let Some(f) = fake.execute_failures.lock().expect("lock").pop_front() {
        return failure(f);
    }
    if fake.scenario.running_polls > 0 {
        return axum::Json(json!({"statement_id": STATEMENT, "status": {"state": "PENDING"}}))
            .into_response();
    }
    axum::Json(fake.succeeded()).into_response()
}

async fn statement(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    if method == Method::DELETE {
        return axum::Json(json!({})).into_response();
    }
    if let Some(f) = fake.poll_failures.lock().expect("lock").pop_front() {
        return failure(f);
    }
    let polls = fake.polls.fetch_add(1, Ordering::SeqCst) + 1;
    if polls <= fake.scenario.running_polls {
        return axum::Json(json!({"statement_id": STATEMENT, "status": {"state": "RUNNING"}}))
            .into_response();
    }
    axum::Json(fake.succeeded()).into_response()
}

async fn cancel(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    StatusCode::OK.into_response()
}

async fn chunk(
    State(fake): State<Arc<Fake>>,
    Path(index): Path<usize>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    if index >= fake.scenario.rows.len() {
        return (StatusCode::NOT_FOUND, "no such chunk").into_response();
    }
    if fake.scenario.inline {
        return axum::Json(fake.inline_chunk(index)).into_response();
    }
    axum::Json(json!({"external_links": [fake.link(index, true)]})).into_response()
}

async fn file(
    State(fake): State<Arc<Fake>>,
    Path(index): Path<usize>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    if headers.contains_key("authorization") {
        return (StatusCode::BAD_REQUEST, "credentials sent to a link host").into_response();
    }
    if query.unwrap_or_default().contains("stale") {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code>Request has expired</Error>",
        )
            .into_response();
    }
    if fake.scenario.forbidden_once.contains(&index)
        && fake.forbidden_done.lock().expect("lock").insert(index)
    {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        )
            .into_response();
    }
    if index == 1 {
        fake.chunk1_requested.store(true, Ordering::SeqCst);
    }
    if index == 0 && fake.scenario.chunk0_waits_for_chunk1 {
        // Hang guard only: a sequential client would make this wait run out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fake.chunk1_requested.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.chunk0_saw_chunk1.store(
            fake.chunk1_requested.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }
    match fake.files.get(index) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn oidc_discovery(State(fake): State<Arc<Fake>>) -> Response {
    let base = fake.base.get().expect("base");
    axum::Json(json!({
        "issuer": format!("{base}/oidc"),
        "token_endpoint": format!("{base}/oidc/v1/token"),
        "authorization_endpoint": format!("{base}/oidc/v1/authorize"),
    }))
    .into_response()
}

async fn oidc_token(State(fake): State<Arc<Fake>>) -> Response {
    let n = fake.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({
        "access_token": format!("m2m-token-{n}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "all-apis",
    }))
    .into_response()
}

struct Env {
    fake: Arc<Fake>,
    server: TestServer,
}

impl Env {
    fn new(scenario: Scenario) -> Self {
        let fake = Fake::new(scenario);
        let app = axum::Router::new()
            .route("/api/2.0/sql/statements", post(execute))
            .route(
                "/api/2.0/sql/statements/{id}",
                get(statement).delete(statement),
            )
            .route("/api/2.0/sql/statements/{id}/cancel", post(cancel))
            .route(
                "/api/2.0/sql/statements/{id}/result/chunks/{index}",
                get(chunk_route),
            )
            .route("/files/{index}", get(file))
            .route(
                "/oidc/.well-known/oauth-authorization-server",
                get(oidc_discovery),
            )
            .route("/oidc/v1/token", post(oidc_token))
            .with_state(fake.clone());
        let server = TestServer::start(app);
        fake.base.set(server.base_url()).expect("base once");
        Self { fake, server }
    }

    fn client(&self) -> Client {
        self.builder().build().expect("client")
    }

    fn builder(&self) -> dbfed_databricks::ClientBuilder {
        support::client_builder(&self.server, "wh-1")
    }
}

async fn chunk_route(
    state: State<Arc<Fake>>,
    Path((_id, index)): Path<(String, usize)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    chunk(state, Path(index), method, uri, headers).await
}

fn ids(stream: ResultStream) -> Vec<i64> {
    let mut out = Vec::new();
    for batch in stream {
        let batch = batch.expect("batch");
        out.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
    }
    out
}

fn scenario(rows: &[usize]) -> Scenario {
    Scenario {
        rows: rows.to_vec(),
        chunk_cost: 1000,
        ..Scenario::default()
    }
}

#[test]
fn execute_retries_429_without_retry_after() {
    let env = Env::new(Scenario {
        execute_failures: vec![(429, None), (429, Some("1"))],
        ..scenario(&[3])
    });
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("retried")),
        vec![0, 1, 2]
    );
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 3);
}

#[test]
fn execute_retries_503_only_with_retry_after() {
    let env = Env::new(Scenario {
        execute_failures: vec![(503, Some("1"))],
        ..scenario(&[2])
    });
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("retried")).len(),
        2
    );
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 2);

    let env = Env::new(Scenario {
        execute_failures: vec![(503, None)],
        ..scenario(&[2])
    });
    let err = env
        .client()
        .execute("SELECT 1", &[])
        .expect_err("not retried");
    assert_eq!(err.http_status(), Some(503));
    assert_eq!(err.error_code(), Some("TEMPORARILY_UNAVAILABLE"));
    assert!(err.is_retryable());
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 1);
}

#[test]
fn execute_does_not_retry_500_but_poll_does() {
    let env = Env::new(Scenario {
        execute_failures: vec![(500, None)],
        ..scenario(&[1])
    });
    let err = env
        .client()
        .execute("SELECT 1", &[])
        .expect_err("500 on execute");
    assert_eq!(err.http_status(), Some(500));
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 1);

    let env = Env::new(Scenario {
        running_polls: 2,
        poll_failures: vec![(500, None), (503, None), (502, None), (429, Some("1"))],
        ..scenario(&[4])
    });
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("polled")),
        vec![0, 1, 2, 3]
    );
    // 4 failures + 2 RUNNING + 1 SUCCEEDED.
    assert_eq!(
        env.fake.count("GET", &format!("/statements/{STATEMENT}")),
        7
    );
}

#[test]
fn poll_gives_up_on_non_retryable_status() {
    let env = Env::new(Scenario {
        running_polls: 1,
        poll_failures: vec![(404, None)],
        ..scenario(&[1])
    });
    let err = env.client().execute("SELECT 1", &[]).expect_err("404");
    assert_eq!(err.http_status(), Some(404));
    assert_eq!(
        env.fake.count("GET", &format!("/statements/{STATEMENT}")),
        1
    );
}

#[test]
fn retries_are_bounded() {
    let env = Env::new(Scenario {
        execute_failures: vec![(429, None); 20],
        ..scenario(&[1])
    });
    let err = env.client().execute("SELECT 1", &[]).expect_err("gives up");
    assert_eq!(err.http_status(), Some(429));
    // support::fast_retries allows 5 attempts.
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 5);
}

#[test]
fn expired_link_is_refreshed_through_the_chunk_endpoint() {
    let env = Env::new(Scenario {
        expired_first_links: true,
        ..scenario(&[2, 2])
    });
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("refreshed")),
        vec![0, 1, 2, 3]
    );
    assert_eq!(env.fake.count("GET", "/result/chunks/0"), 1);
    assert!(
        env.fake
            .downloads()
            .iter()
            .all(|d| !d.query.contains("stale"))
    );
}

#[test]
fn forbidden_link_is_refreshed() {
    let env = Env::new(Scenario {
        forbidden_once: [0, 1].into_iter().collect(),
        ..scenario(&[2, 3])
    });
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("refreshed")).len(),
        5
    );
    assert_eq!(env.fake.count("GET", "/files/0"), 2);
    assert_eq!(env.fake.count("GET", "/files/1"), 2);
    assert_eq!(env.fake.count("GET", "/result/chunks/0"), 1);
}

#[test]
fn downloads_carry_link_headers_and_never_the_token() {
    let env = Env::new(scenario(&[1, 1, 1]));
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("ok")),
        vec![0, 1, 2]
    );
    let logged = env.fake.logged();
    for l in &logged {
        if l.path.starts_with("/files/") {
            assert_eq!(l.authorization, None);
            assert_eq!(l.link_header.as_deref(), Some("link-header"));
        } else {
            assert_eq!(
                l.authorization.as_deref(),
                Some(format!("Bearer {TOKEN}").as_str())
            );
        }
    }
    assert_eq!(env.fake.downloads().len(), 3);
}

#[test]
fn truncated_ipc_is_a_decode_error() {
    let env = Env::new(Scenario {
        truncated: [1].into_iter().collect(),
        ..scenario(&[50, 50])
    });
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    let first = stream
        .next_batch()
        .expect("chunk 0 is fine")
        .expect("a batch");
    assert_eq!(first.num_rows(), 50);
    let err = stream.next_batch().expect_err("chunk 1 is truncated");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("chunk 1"), "{err}");
    assert!(stream.next_batch().expect("finished").is_none());
}

#[test]
fn fewer_rows_than_promised_is_an_error_not_a_short_result() {
    let env = Env::new(Scenario {
        manifest_rows: Some(vec![3, 5]),
        ..scenario(&[3, 3])
    });
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    assert_eq!(
        stream
            .next_batch()
            .expect("chunk 0")
            .expect("batch")
            .num_rows(),
        3
    );
    let err = stream.next_batch().expect_err("chunk 1 is short");
    match err {
        Error::ResultMismatch {
            chunk_index,
            expected,
            actual,
            ..
        } => assert_eq!((chunk_index, expected, actual), (Some(1), 5, 3)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn dropping_the_stream_early_closes_the_statement() {
    let env = Env::new(scenario(&[10; 8]));
    let mut stream = env
        .builder()
        .download_threads(2)
        .prefetch_bytes(2000)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    assert!(stream.next_batch().expect("first").is_some());
    let close = format!("/statements/{STATEMENT}");
    assert_eq!(env.fake.count("DELETE", &close), 0);
    drop(stream);
    // The statement already succeeded: closing it is what frees the warehouse's result.
    assert_eq!(env.fake.count("DELETE", &close), 1);
    // Prefetch is bounded: at most the consumed chunk plus two reserved ones were requested.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        env.fake.downloads().len() <= 3,
        "{:?}",
        env.fake.downloads()
    );
}

#[test]
fn reading_to_the_end_does_not_cancel() {
    let env = Env::new(scenario(&[2, 2]));
    let stream = env.client().execute("SELECT 1", &[]).expect("execute");
    assert_eq!(ids(stream), vec![0, 1, 2, 3]);
    assert_eq!(env.fake.count("POST", "/cancel"), 0);
    assert_eq!(
        env.fake
            .count("DELETE", &format!("/statements/{STATEMENT}")),
        0
    );
}

#[test]
fn cancel_handle_works_from_another_thread() {
    let env = Env::new(scenario(&[5, 5, 5]));
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    let handle = stream.cancel_handle();
    std::thread::spawn(move || handle.cancel())
        .join()
        .expect("cancel thread");
    let mut saw_canceled = false;
    for _ in 0..10 {
        match stream.next_batch() {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                saw_canceled = e.is_canceled();
                break;
            }
        }
    }
    assert!(saw_canceled);
    let close = format!("/statements/{STATEMENT}");
    assert_eq!(env.fake.count("DELETE", &close), 1);
    drop(stream);
    assert_eq!(env.fake.count("DELETE", &close), 1, "released once");
}

#[test]
fn slow_consumer_bounds_prefetch() {
    // Ten chunks of 1000 (manifest) bytes, budget 2500: at most two chunks ahead.
    let env = Env::new(scenario(&[4; 10]));
    let mut stream = env
        .builder()
        .download_threads(4)
        .prefetch_bytes(2500)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    let first = stream.next_batch().expect("first").expect("batch");
    assert_eq!(first.num_rows(), 4);
    std::thread::sleep(Duration::from_millis(300));
    let downloaded = env.fake.downloads().len();
    assert!(
        downloaded <= 3,
        "{downloaded} chunks downloaded ahead of a stalled consumer"
    );
    let mut rest = vec![];
    while let Some(b) = stream.next_batch().expect("rest") {
        rest.extend(
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    assert_eq!(rest, (4..40).collect::<Vec<i64>>());
    assert_eq!(env.fake.downloads().len(), 10);
}

#[test]
fn parallel_downloads_are_delivered_in_order() {
    let env = Env::new(Scenario {
        chunk0_waits_for_chunk1: true,
        ..scenario(&[3, 1, 4, 1, 5, 9])
    });
    let stream = env
        .builder()
        .download_threads(4)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    assert_eq!(ids(stream), (0..23).collect::<Vec<i64>>());
    assert!(
        env.fake.chunk0_saw_chunk1.load(Ordering::SeqCst),
        "chunk 1 was not requested while chunk 0 was in flight"
    );
}

#[test]
fn statement_timeout_cancels_on_the_warehouse() {
    let env = Env::new(Scenario {
        running_polls: usize::MAX,
        ..scenario(&[1])
    });
    let err = env
        .builder()
        .statement_timeout(Some(Duration::from_millis(200)))
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.statement_id(), Some(STATEMENT));
    assert_eq!(env.fake.count("POST", "/cancel"), 1);
    let body_wait = env
        .fake
        .logged()
        .iter()
        .filter(|l| l.method == "POST")
        .count();
    assert!(body_wait >= 2);
}

#[test]
fn inline_json_results_page_through_every_chunk() {
    let env = Env::new(Scenario {
        inline: true,
        ..scenario(&[2, 3, 4])
    });
    let stream = env
        .builder()
        .result_format(ResultFormat::JsonInline)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    assert_eq!(ids(stream), (0..9).collect::<Vec<i64>>());
    assert_eq!(env.fake.count("GET", "/result/chunks/1"), 1);
    assert_eq!(env.fake.count("GET", "/result/chunks/2"), 1);
}

#[test]
fn inline_short_chunk_is_an_error() {
    let env = Env::new(Scenario {
        inline: true,
        manifest_rows: Some(vec![2, 5]),
        ..scenario(&[2, 3])
    });
    let mut stream = env
        .builder()
        .result_format(ResultFormat::JsonInline)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    assert!(stream.next_batch().expect("chunk 0").is_some());
    let err = stream.next_batch().expect_err("short");
    assert!(matches!(err, Error::ResultMismatch { .. }), "{err:?}");
}

#[test]
fn submit_poll_wait_close() {
    let env = Env::new(Scenario {
        running_polls: 2,
        ..scenario(&[2])
    });
    let client = env.client();
    let st = client
        .submit(&dbfed_databricks::StatementRequest::new("SELECT 1").wait_timeout(Duration::ZERO))
        .expect("submit");
    assert_eq!(st.id(), STATEMENT);
    assert!(!st.is_terminal());
    let polled = client.poll(st.id()).expect("poll");
    assert_eq!(polled.state(), &dbfed_databricks::StatementState::Running);
    let done = client
        .wait(st.id(), Some(Instant::now() + Duration::from_secs(30)))
        .expect("wait");
    assert!(done.has_result());
    assert_eq!(done.total_row_count(), Some(2));
    assert_eq!(ids(client.result_stream(done).expect("stream")), vec![0, 1]);
    client.close(STATEMENT).expect("close");
    assert_eq!(env.fake.count("DELETE", STATEMENT), 1);
    let post = env.fake.logged();
    assert!(post.iter().any(|l| l.method == "POST"));
}

#[test]
fn oauth_401_fetches_a_fresh_token_once() {
    let env = Env::new(Scenario {
        execute_failures: vec![(401, None)],
        ..scenario(&[2])
    });
    let config = dbfed_databricks::config::ClientConfig::builder()
        .host(env.server.base_url())
        .warehouse_id("wh-1")
        .credentials(dbfed_databricks::config::Credentials::oauth_m2m(
            "client-id",
            "client-secret",
        ))
        .build()
        .expect("oauth config");
    let client = Client::builder(config)
        .retry_policy(support::fast_retries())
        .build()
        .expect("client");
    assert_eq!(
        ids(client.execute("SELECT 1", &[]).expect("after re-auth")),
        vec![0, 1]
    );
    let posts: Vec<Option<String>> = env
        .fake
        .logged()
        .into_iter()
        .filter(|l| l.method == "POST" && l.path == "/api/2.0/sql/statements")
        .map(|l| l.authorization)
        .collect();
    assert_eq!(
        posts,
        vec![
            Some("Bearer m2m-token-1".to_owned()),
            Some("Bearer m2m-token-2".to_owned())
        ]
    );

    // A second 401 in a row is not retried again.
    let env = Env::new(Scenario {
        execute_failures: vec![(401, None), (401, None)],
        ..scenario(&[2])
    });
    let config = dbfed_databricks::config::ClientConfig::builder()
        .host(env.server.base_url())
        .warehouse_id("wh-1")
        .credentials(dbfed_databricks::config::Credentials::oauth_m2m("c", "s"))
        .build()
        .expect("oauth config");
    let err = Client::builder(config)
        .retry_policy(support::fast_retries())
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect_err("401 twice");
    assert_eq!(err.http_status(), Some(401));
    assert!(err.is_auth());
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 2);
}

#[test]
fn pat_401_is_not_retried() {
    let env = Env::new(Scenario {
        execute_failures: vec![(401, None)],
        ..scenario(&[2])
    });
    let err = env.client().execute("SELECT 1", &[]).expect_err("401");
    assert!(err.is_auth());
    assert!(!err.to_string().contains(TOKEN));
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 1);
}
