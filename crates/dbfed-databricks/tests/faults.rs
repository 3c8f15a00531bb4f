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
    host: Option<String>,
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
    cancel_failures: Vec<Failure>,
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
    /// DELETEs (statement close, session close) hang for two minutes before answering.
    slow_delete: bool,
    /// Links point at `/redirect/{i}`, which redirects to `{Fake::redirect_base}/files/{i}`.
    redirect_links: bool,
    /// The link host answers 400 with an S3-style error echoing the signature and headers.
    echo_signature: bool,
    /// The chunk endpoint answers a link whose `row_count` is not a number.
    malformed_chunk_links: bool,
    /// Chunks whose first download answers 503 with `Retry-After: 1`.
    throttled_once: HashSet<usize>,
    /// The manifest lists no chunks and no `total_row_count`: only links carry row counts.
    sparse_manifest: bool,
    /// Replaces the manifest's `format`.
    manifest_format: Option<&'static str>,
    /// Inline `next_chunk_internal_link`s are protocol-relative (`//host/...`) URLs pointing
    /// at `Fake::redirect_base`'s host.
    hostile_next_link: bool,
}

struct Fake {
    scenario: Scenario,
    base: OnceLock<String>,
    redirect_base: OnceLock<String>,
    log: Mutex<Vec<Logged>>,
    execute_failures: Mutex<VecDeque<Failure>>,
    poll_failures: Mutex<VecDeque<Failure>>,
    cancel_failures: Mutex<VecDeque<Failure>>,
    polls: AtomicUsize,
    forbidden_done: Mutex<HashSet<usize>>,
    throttled_done: Mutex<HashSet<usize>>,
    /// Set by `POST .../cancel`: later polls answer CANCELED.
    canceled: AtomicBool,
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
            cancel_failures: Mutex::new(scenario.cancel_failures.iter().copied().collect()),
            scenario,
            base: OnceLock::new(),
            redirect_base: OnceLock::new(),
            log: Mutex::new(Vec::new()),
            polls: AtomicUsize::new(0),
            forbidden_done: Mutex::new(HashSet::new()),
            throttled_done: Mutex::new(HashSet::new()),
            canceled: AtomicBool::new(false),
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
            host: headers
                .get("host")
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
            "external_link": if self.scenario.redirect_links {
                format!("{base}/redirect/{i}?X-Amz-Signature=sig-{generation}")
            } else {
                format!("{base}/files/{i}?X-Amz-Signature=sig-{generation}")
            },
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
            let host = if self.scenario.hostile_next_link {
                let other = self.redirect_base.get().expect("redirect base");
                format!("//{}", other.trim_start_matches("http://"))
            } else {
                String::new()
            };
            chunk["next_chunk_internal_link"] = json!(format!(
                "{host}/api/2.0/sql/statements/{STATEMENT}/result/chunks/{}",
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
        if let Some(format) = self.scenario.manifest_format {
            manifest["format"] = json!(format);
        }
        if self.scenario.sparse_manifest {
            let m = manifest.as_object_mut().expect("manifest object");
            m.remove("chunks");
            m.remove("total_row_count");
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
        if fake.scenario.slow_delete {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        return axum::Json(json!({})).into_response();
    }
    if let Some(f) = fake.poll_failures.lock().expect("lock").pop_front() {
        return failure(f);
    }
    if fake.canceled.load(Ordering::SeqCst) {
        return axum::Json(json!({"statement_id": STATEMENT, "status": {"state": "CANCELED"}}))
            .into_response();
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
    if let Some(f) = fake.cancel_failures.lock().expect("lock").pop_front() {
        return failure(f);
    }
    fake.canceled.store(true, Ordering::SeqCst);
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
    if fake.scenario.malformed_chunk_links {
        let mut link = fake.link(index, true);
        link["row_count"] = json!("many");
        return axum::Json(json!({"external_links": [link]})).into_response();
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
    let query = query.unwrap_or_default();
    if fake.scenario.echo_signature {
        let header = headers
            .get("x-test-header")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let body = format!(
            "<Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>GET /files/{index} \
             {query} x-test-header:{header}</CanonicalRequest></Error>"
        );
        return (StatusCode::BAD_REQUEST, body).into_response();
    }
    if query.contains("stale") {
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
    if fake.scenario.throttled_once.contains(&index)
        && fake.throttled_done.lock().expect("lock").insert(index)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "<Error><Code>SlowDown</Code></Error>",
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

async fn redirect(
    State(fake): State<Arc<Fake>>,
    Path(index): Path<usize>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    let target = fake.redirect_base.get().expect("redirect base");
    (
        StatusCode::FOUND,
        [(
            "location",
            format!("{target}/files/{index}?X-Amz-Signature=sig-redirected"),
        )],
    )
        .into_response()
}

async fn create_session(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fake.record(&method, &uri, &headers);
    axum::Json(json!({"session_id": "01f0-fake-session"})).into_response()
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
        let server = TestServer::start(Self::app(&fake));
        fake.base.set(server.base_url()).expect("base once");
        Self { fake, server }
    }

    fn app(fake: &Arc<Fake>) -> axum::Router {
        axum::Router::new()
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
            .route("/redirect/{index}", get(redirect))
            .route("/api/2.0/sql/sessions", post(create_session))
            .route(
                "/api/2.0/sql/sessions/{id}",
                axum::routing::delete(statement),
            )
            .route(
                "/oidc/.well-known/oauth-authorization-server",
                get(oidc_discovery),
            )
            .route("/oidc/v1/token", post(oidc_token))
            .with_state(fake.clone())
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
    // The statement is gone: nothing to cancel.
    assert_eq!(env.fake.count("POST", "/cancel"), 0);
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

/// Runs `f` on a thread and returns its result, or `None` if it is still blocked after a
/// generous hang guard (the tested behaviour finishes in milliseconds; the bug took minutes).
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

#[test]
fn dropping_a_stream_or_session_is_bounded_by_the_close_timeout() {
    // The warehouse hangs on DELETE; the API timeout is long. A drop must not block for it.
    let env = Env::new(Scenario {
        slow_delete: true,
        ..scenario(&[5, 5, 5])
    });
    let client = env
        .builder()
        .request_timeout(Duration::from_secs(600))
        .close_timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut stream = client.execute("SELECT 1", &[]).expect("execute");
    assert_eq!(
        stream
            .next_batch()
            .expect("first")
            .expect("batch")
            .num_rows(),
        5
    );
    assert!(
        finishes(move || drop(stream)).is_some(),
        "dropping the stream blocked on the hanging DELETE"
    );
    assert_eq!(
        env.fake
            .count("DELETE", &format!("/statements/{STATEMENT}")),
        1,
        "the close was still attempted"
    );

    let session = client.create_default_session().expect("session");
    assert_eq!(session.id(), "01f0-fake-session");
    assert!(
        finishes(move || drop(session)).is_some(),
        "dropping the session blocked on the hanging DELETE"
    );
    let closes: Vec<Logged> = env
        .fake
        .logged()
        .into_iter()
        .filter(|l| l.method == "DELETE" && l.path.ends_with("/sessions/01f0-fake-session"))
        .collect();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].query, "warehouse_id=wh-1");
}

#[test]
fn statement_timeout_is_not_overrun_by_poll_retries() {
    // Polls (and the cancel) answer 503 with a 30 s Retry-After: a retry must not sleep past
    // the statement timeout, which must still cancel the statement and report a timeout.
    let env = Env::new(Scenario {
        running_polls: usize::MAX,
        poll_failures: vec![(503, Some("30")); 10],
        cancel_failures: vec![(503, Some("30")); 10],
        ..scenario(&[1])
    });
    let client = env
        .builder()
        .retry_policy(
            dbfed_databricks::RetryPolicy::default()
                .retry_after_bounds(Duration::from_millis(1), Duration::from_secs(60)),
        )
        .statement_timeout(Some(Duration::from_millis(300)))
        .close_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let err = finishes(move || client.execute("SELECT 1", &[]).map(|_| ()))
        .expect("execute returned near its statement timeout")
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.statement_id(), Some(STATEMENT));
    assert_eq!(env.fake.count("POST", "/cancel"), 1, "one cancel attempt");
}

#[test]
fn lying_manifest_byte_counts_do_not_defeat_the_prefetch_budget() {
    // The manifest claims 1 byte per chunk; each chunk really decodes to a few KiB. With a
    // 1000-byte budget a stalled consumer must not let the whole result pile up in memory.
    let env = Env::new(Scenario {
        chunk_cost: 1,
        ..scenario(&[200; 20])
    });
    let mut stream = env
        .builder()
        .download_threads(2)
        .prefetch_bytes(1000)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    let first = stream.next_batch().expect("first").expect("batch");
    assert_eq!(first.num_rows(), 200);
    std::thread::sleep(Duration::from_millis(300));
    let downloaded = env.fake.downloads().len();
    assert!(
        downloaded <= 4,
        "{downloaded} of 20 chunks downloaded ahead of a stalled consumer"
    );
    let mut rows = 200;
    while let Some(b) = stream.next_batch().expect("rest") {
        rows += b.num_rows();
    }
    assert_eq!(rows, 4000);
    assert_eq!(env.fake.downloads().len(), 20);
}

#[test]
fn link_redirects_stay_on_the_link_origin() {
    // A redirect within the link's origin is followed.
    let env = Env::new(Scenario {
        redirect_links: true,
        ..scenario(&[2, 2])
    });
    env.fake
        .redirect_base
        .set(env.server.base_url())
        .expect("redirect base");
    assert_eq!(
        ids(env.client().execute("SELECT 1", &[]).expect("same origin")),
        vec![0, 1, 2, 3]
    );

    // A redirect to another host is not: the link's headers must not travel there.
    let env = Env::new(Scenario {
        redirect_links: true,
        ..scenario(&[2, 2])
    });
    let elsewhere = TestServer::start(Env::app(&env.fake));
    env.fake
        .redirect_base
        .set(elsewhere.base_url())
        .expect("redirect base");
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    let err = stream.next_batch().expect_err("redirect refused");
    assert_eq!(err.http_status(), Some(302), "{err:?}");
    assert!(!err.to_string().contains("sig-"), "{err}");
    let other_host = elsewhere
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let leaked: Vec<Logged> = env
        .fake
        .downloads()
        .into_iter()
        .filter(|d| d.host.as_deref() == Some(other_host.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "requests reached the other host: {leaked:?}"
    );
}

#[test]
fn link_host_errors_do_not_echo_link_secrets() {
    let env = Env::new(Scenario {
        echo_signature: true,
        ..scenario(&[2])
    });
    let client = env.client();
    let mut stream = client.execute("SELECT 1", &[]).expect("execute");
    let err = stream.next_batch().expect_err("400 from the link host");
    assert_eq!(err.http_status(), Some(400), "{err:?}");
    let shown = format!("{err} {err:?} {stream:?} {client:?}");
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    for secret in ["sig-fresh", "X-Amz-Signature=", "link-header", TOKEN] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn a_result_that_cannot_be_read_is_closed_not_leaked() {
    let env = Env::new(Scenario {
        manifest_format: Some("CSV"),
        ..scenario(&[2])
    });
    let err = env
        .client()
        .execute("SELECT 1", &[])
        .expect_err("CSV is not supported");
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert_eq!(
        env.fake
            .count("DELETE", &format!("/statements/{STATEMENT}")),
        1,
        "the succeeded statement's result was left on the warehouse"
    );
}

#[test]
fn server_given_chunk_paths_cannot_send_the_token_elsewhere() {
    let env = Env::new(Scenario {
        inline: true,
        hostile_next_link: true,
        ..scenario(&[2, 2])
    });
    let elsewhere = TestServer::start(Env::app(&env.fake));
    env.fake
        .redirect_base
        .set(elsewhere.base_url())
        .expect("redirect base");
    let mut stream = env
        .builder()
        .result_format(ResultFormat::JsonInline)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    let err = stream
        .next_batch()
        .expect_err("a path off the workspace host");
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    let other_host = elsewhere
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let leaked: Vec<Logged> = env
        .fake
        .logged()
        .into_iter()
        .filter(|l| l.host.as_deref() == Some(other_host.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "the token went to another host: {leaked:?}"
    );
}

#[test]
fn dropping_a_stream_inside_an_async_runtime_does_not_block_or_panic() {
    let env = Env::new(scenario(&[5, 5, 5]));
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    assert!(stream.next_batch().expect("first").is_some());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move { drop(stream) });
    // Inside a runtime the release runs on a thread of its own: wait for it (bounded).
    let close = format!("/statements/{STATEMENT}");
    assert!(
        eventually(|| env.fake.count("DELETE", &close) == 1),
        "the statement was not closed"
    );

    let session = env.client().create_default_session().expect("session");
    rt.block_on(async move { drop(session) });
    assert!(
        eventually(|| env.fake.count("DELETE", "/sessions/01f0-fake-session") == 1),
        "the session was not closed"
    );
}

/// Polls `condition` for up to 20 s (a hang guard; it normally holds within milliseconds).
fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

#[test]
fn throttled_downloads_follow_retry_after() {
    // Backoff alone would wait 30-60 s; the storage's Retry-After (clamped to 50 ms by the
    // policy) says to come back sooner.
    let env = Env::new(Scenario {
        throttled_once: [0, 1].into_iter().collect(),
        ..scenario(&[2, 2])
    });
    let client = env
        .builder()
        .retry_policy(
            dbfed_databricks::RetryPolicy::default()
                .base_delay(Duration::from_secs(60))
                .max_delay(Duration::from_secs(60))
                .retry_after_bounds(Duration::from_millis(1), Duration::from_millis(50)),
        )
        .build()
        .expect("client");
    let got = finishes(move || ids(client.execute("SELECT 1", &[]).expect("execute")))
        .expect("the downloads waited for their backoff, not the Retry-After");
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(env.fake.count("GET", "/files/0"), 2);
    assert_eq!(env.fake.count("GET", "/files/1"), 2);
}

#[test]
fn malformed_chunk_answers_do_not_echo_signed_links() {
    let env = Env::new(Scenario {
        malformed_chunk_links: true,
        ..scenario(&[2, 2])
    });
    let mut stream = env
        .builder()
        .download_threads(1)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    assert_eq!(
        ids_of(stream.next_batch().expect("chunk 0").expect("batch")),
        vec![0, 1]
    );
    let err = stream
        .next_batch()
        .expect_err("chunk 1's link is malformed");
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("many"),
        "the error shows the problem: {shown}"
    );
    assert!(!shown.contains("sig-fresh"), "signature leaked: {shown}");
}

fn ids_of(batch: RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[test]
fn statement_timeout_is_not_overrun_by_execute_throttling() {
    // Execute answers 429 with a 30 s Retry-After: the statement timeout must still fire.
    let env = Env::new(Scenario {
        execute_failures: vec![(429, Some("30")); 10],
        ..scenario(&[1])
    });
    let client = env
        .builder()
        .retry_policy(
            dbfed_databricks::RetryPolicy::default()
                .retry_after_bounds(Duration::from_millis(1), Duration::from_secs(60)),
        )
        .statement_timeout(Some(Duration::from_millis(300)))
        .build()
        .expect("client");
    let err = finishes(move || client.execute("SELECT 1", &[]).map(|_| ()))
        .expect("execute returned near its statement timeout")
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.statement_id(), None, "no statement was created");
    assert_eq!(env.fake.count("POST", "/api/2.0/sql/statements"), 1);
}

#[test]
fn chunks_larger_than_the_budget_are_fetched_one_at_a_time() {
    // Every chunk (10 000 manifest bytes) exceeds the 100-byte budget: the stream must still
    // make progress, one chunk ahead at most, and deliver everything in order.
    let env = Env::new(Scenario {
        chunk_cost: 10_000,
        ..scenario(&[3; 6])
    });
    let mut stream = env
        .builder()
        .download_threads(4)
        .prefetch_bytes(100)
        .build()
        .expect("client")
        .execute("SELECT 1", &[])
        .expect("execute");
    let first = stream.next_batch().expect("first").expect("batch");
    assert_eq!(ids_of(first), vec![0, 1, 2]);
    std::thread::sleep(Duration::from_millis(200));
    let downloaded = env.fake.downloads().len();
    assert!(
        downloaded <= 2,
        "{downloaded} chunks fetched past the budget"
    );
    let rest = finishes(move || ids(stream)).expect("no deadlock");
    assert_eq!(rest, (3..18).collect::<Vec<i64>>());
}

#[test]
fn short_chunks_are_caught_by_their_link_row_count() {
    // Without manifest counts, the row_count of a link fetched from the chunk endpoint is the
    // only promise for its chunk: a short file must not pass as a short result.
    let env = Env::new(Scenario {
        sparse_manifest: true,
        manifest_rows: Some(vec![3, 5]),
        ..scenario(&[3, 3])
    });
    let mut stream = env.client().execute("SELECT 1", &[]).expect("execute");
    assert_eq!(stream.total_row_count(), None);
    assert_eq!(
        ids_of(stream.next_batch().expect("chunk 0").expect("batch")),
        vec![0, 1, 2]
    );
    match stream.next_batch() {
        Err(Error::ResultMismatch {
            chunk_index,
            expected,
            actual,
            ..
        }) => assert_eq!((chunk_index, expected, actual), (Some(1), 5, 3)),
        other => panic!("chunk 1 is short, got {other:?}"),
    }
    assert_eq!(env.fake.count("GET", "/result/chunks/1"), 1);
}

#[test]
fn an_unbounded_wait_ends_when_another_thread_cancels_the_statement() {
    let env = Env::new(Scenario {
        running_polls: usize::MAX,
        ..scenario(&[1])
    });
    let client = env.client();
    let submitted = client
        .submit(&dbfed_databricks::StatementRequest::new("SELECT 1").wait_timeout(Duration::ZERO))
        .expect("submit");
    let waiter = {
        let client = client.clone();
        let id = submitted.id().to_owned();
        std::thread::spawn(move || client.wait(&id, None))
    };
    assert!(eventually(|| env.fake.polls.load(Ordering::SeqCst) >= 2));
    client.cancel(submitted.id()).expect("cancel");
    let result = finishes(move || waiter.join().expect("waiter thread"))
        .expect("wait(None) returned after the cancel");
    assert!(result.expect_err("canceled").is_canceled());
}

#[test]
fn a_statement_whose_polls_fail_is_canceled_not_left_running() {
    let env = Env::new(Scenario {
        running_polls: usize::MAX,
        poll_failures: vec![(500, None); 5],
        ..scenario(&[1])
    });
    let err = env
        .client()
        .execute("SELECT 1", &[])
        .expect_err("polls keep failing");
    assert_eq!(err.http_status(), Some(500), "{err:?}");
    // support::fast_retries allows 5 attempts; then the statement is canceled.
    assert_eq!(
        env.fake.count("GET", &format!("/statements/{STATEMENT}")),
        5
    );
    assert_eq!(env.fake.count("POST", "/cancel"), 1);
}
