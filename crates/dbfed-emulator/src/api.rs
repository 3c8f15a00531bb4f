//! HTTP handlers of the Statement Execution API, sessions, downloads and introspection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{Identity, authenticate, base_url};
use crate::error::{ApiError, object_store_error};
use crate::execution::{FailAfter, run_statement};
use crate::faults::{Endpoint, FaultAction, FaultContext, FaultKind};
use crate::links::{self, DOWNLOAD_PREFIX, LINK_HEADER, LinkRejection};
use crate::records::{ParameterRecord, RequestRecord, StatementState};
use crate::state::{
    ChunkBody, Compression, Disposition, Format, ResultSet, Session, Shared, Statement,
    StatementSpec, Status,
};

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest accepted statement text (documented limit).
const MAX_STATEMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most `query_tags` accepted.
const MAX_QUERY_TAGS: usize = 20;

type ApiResult = Result<Response, ApiError>;

// ---------------------------------------------------------------------------------------------
// Middleware

/// Longest text kept per field of a [`RequestRecord`]: a client sending huge paths or headers
/// must not make the 10 000 kept records cost gigabytes.
const MAX_RECORDED_TEXT: usize = 1024;

/// `text`, cut to at most [`MAX_RECORDED_TEXT`] bytes (on a character boundary).
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_RECORDED_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Records every request (method, path, status, auth scheme, user agent).
pub(crate) async fn record_requests(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let method = clip(request.method().as_str());
    let path = clip(request.uri().path());
    let headers = request.headers();
    let auth_scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| clip(v.split(' ').next().unwrap_or_default()));
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(clip);
    let at = Utc::now();
    let response = next.run(request).await;
    if !path.starts_with("/_emulator/statements") && !path.starts_with("/_emulator/requests") {
        shared.push_request(RequestRecord {
            method,
            path,
            status: response.status().as_u16(),
            auth_scheme,
            user_agent,
            at,
        });
    }
    response
}

/// Which fault endpoint a request is, and its chunk index.
fn classify(method: &Method, path: &str) -> Option<(Endpoint, Option<usize>)> {
    let path = path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("/api/2.0/sql/statements") {
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        return match (method, parts.as_slice()) {
            (&Method::POST, []) => Some((Endpoint::ExecuteStatement, None)),
            (&Method::GET, [_]) => Some((Endpoint::GetStatement, None)),
            (&Method::DELETE, [_]) => Some((Endpoint::CloseStatement, None)),
            (&Method::POST, [_, "cancel"]) => Some((Endpoint::CancelStatement, None)),
            (&Method::GET, [_, "result", "chunks", i]) => {
                Some((Endpoint::GetChunk, i.parse().ok()))
            }
            _ => None,
        };
    }
    if path.starts_with("/api/2.0/sql/sessions") {
        return Some((Endpoint::Sessions, None));
    }
    if let Some(rest) = path.strip_prefix(DOWNLOAD_PREFIX) {
        let chunk = rest.rsplit('/').next().and_then(|i| i.parse().ok());
        return Some((Endpoint::Download, chunk));
    }
    if path == "/oidc/v1/token"
        || path.ends_with("/oauth2/v2.0/token")
        || path.ends_with("/oauth2/token")
    {
        return Some((Endpoint::Token, None));
    }
    None
}

/// Answers with an injected status when a fault rule fires.
pub(crate) async fn inject_faults(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some((endpoint, chunk_index)) = classify(request.method(), request.uri().path()) {
        let ctx = FaultContext {
            endpoint,
            chunk_index,
            sql: None,
        };
        if let Some(FaultAction::Status {
            status,
            retry_after,
        }) = shared.faults.take(FaultKind::Status, ctx)
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = if endpoint == Endpoint::Download {
                let code = if status == StatusCode::SERVICE_UNAVAILABLE {
                    "SlowDown"
                } else {
                    "InternalError"
                };
                object_store_error(status, code, "injected fault")
            } else {
                let code = match status.as_u16() {
                    429 => "TOO_MANY_REQUESTS",
                    503 => "TEMPORARILY_UNAVAILABLE",
                    504 => "DEADLINE_EXCEEDED",
                    400..=499 => "BAD_REQUEST",
                    _ => "INTERNAL_ERROR",
                };
                ApiError::new(status, code, "injected fault (dbfed emulator)").into_response()
            };
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
    }
    next.run(request).await
}

/// Authenticates `/api/` requests; the [`Identity`] goes into the request extensions.
pub(crate) async fn require_auth(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&shared, request.headers()) {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// 404 for unknown `/api/` paths, shaped like Databricks.
pub(crate) async fn api_not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        format!("No API found for '{method} {}'", uri.path()),
    )
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Request parsing

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_PARAMETER_VALUE",
                format!("The request body exceeds the limit of {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::invalid(format!("Could not read the request body: {e}"))
        }
    })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "Could not parse request object: the body is empty",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "Could not parse request object: expected a JSON object",
        )),
        Err(e) => Err(ApiError::invalid(format!(
            "Could not parse request object: {e}"
        ))),
    }
}

fn opt_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid value for field '{field}': expected a string, got {other}"
        ))),
    }
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match opt_string(obj, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::invalid(format!(
            "Missing required field: {field}"
        ))),
    }
}

/// An int64 field sent as a JSON number or a string.
fn opt_i64(obj: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    let bad = |v: &Value| {
        ApiError::invalid(format!(
            "Invalid value for field '{field}': {v} is not an int64"
        ))
    };
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

fn enum_value<T: Copy>(
    obj: &Map<String, Value>,
    field: &str,
    default: T,
    allowed: &[(&str, T)],
) -> Result<T, ApiError> {
    let Some(value) = opt_string(obj, field)? else {
        return Ok(default);
    };
    allowed
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&value))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            ApiError::invalid(format!(
                "Invalid value '{value}' for parameter '{field}'. Allowed values: {}",
                names.join(", ")
            ))
        })
}

/// `"10s"` → 10; only `0s` and `5s`..=`50s` are valid.
fn parse_wait_timeout(value: Option<String>) -> Result<u64, ApiError> {
    let Some(value) = value else {
        return Ok(10);
    };
    let secs = value
        .strip_suffix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid wait_timeout '{value}': expected a number of seconds such as '10s'"
            ))
        })?;
    if secs == 0 || (5..=50).contains(&secs) {
        Ok(secs)
    } else {
        Err(ApiError::invalid(format!(
            "Invalid wait_timeout '{value}': must be 0s or between 5s and 50s"
        )))
    }
}

fn parse_parameters(obj: &Map<String, Value>) -> Result<Vec<ParameterRecord>, ApiError> {
    let list = match obj.get("parameters") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid value for field 'parameters': expected an array",
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let Value::Object(p) = p else {
                return Err(ApiError::invalid(format!(
                    "Invalid parameter at index {i}: expected an object"
                )));
            };
            let value = match p.get("value") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                Some(v) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid value for parameter at index {i}: {v} (ARRAY, MAP and STRUCT parameters are not supported)"
                    )));
                }
            };
            let ordinal = opt_i64(p, "ordinal")?
                .map(|o| {
                    usize::try_from(o).ok().filter(|o| *o >= 1).ok_or_else(|| {
                        ApiError::invalid(format!("Invalid ordinal {o} for parameter at index {i}"))
                    })
                })
                .transpose()?;
            Ok(ParameterRecord {
                name: opt_string(p, "name")?,
                ordinal,
                value,
                type_text: opt_string(p, "type")?,
            })
        })
        .collect()
}

fn parse_confs(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    match obj.get("session_confs") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                _ => Err(ApiError::invalid(format!(
                    "Invalid value for session_confs['{k}']: expected a string"
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(
            "Invalid value for field 'session_confs': expected an object",
        )),
    }
}

/// The warehouse must exist (404 otherwise) and the caller may use it (403 otherwise).
fn check_warehouse(
    shared: &Shared,
    identity: &Identity,
    warehouse_id: &str,
) -> Result<(), ApiError> {
    match &shared.config.warehouse_id {
        Some(pinned) if pinned != warehouse_id => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            format!("SQL warehouse {warehouse_id} does not exist."),
        )),
        _ if identity.warehouse_denied => Err(ApiError::permission_denied(format!(
            "You do not have permission to use the SQL warehouse {warehouse_id}. \
             Ask a workspace admin for the CAN USE permission."
        ))),
        _ => Ok(()),
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------------------------
// Statements

/// `POST /api/2.0/sql/statements`.
pub(crate) async fn execute_statement(
    State(shared): State<Arc<Shared>>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(body)?;
    let obj = parse_object(&body)?;
    let sql = required_string(&obj, "statement")?;
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(ApiError::invalid(format!(
            "The statement is {} bytes long; the limit is {MAX_STATEMENT_BYTES} bytes (16 MiB)",
            sql.len()
        )));
    }
    let warehouse_id = required_string(&obj, "warehouse_id")?;
    check_warehouse(&shared, &identity, &warehouse_id)?;
    let disposition = enum_value(
        &obj,
        "disposition",
        Disposition::Inline,
        &[
            ("INLINE", Disposition::Inline),
            ("EXTERNAL_LINKS", Disposition::ExternalLinks),
        ],
    )?;
    let format = enum_value(
        &obj,
        "format",
        Format::JsonArray,
        &[
            ("JSON_ARRAY", Format::JsonArray),
            ("ARROW_STREAM", Format::ArrowStream),
            ("CSV", Format::Csv),
        ],
    )?;
    let compression = enum_value(
        &obj,
        "result_compression",
        Compression::None,
        &[
            ("NONE", Compression::None),
            ("LZ4_FRAME", Compression::Lz4Frame),
        ],
    )?;
    let cancel_on_timeout = enum_value(
        &obj,
        "on_wait_timeout",
        false,
        &[("CONTINUE", false), ("CANCEL", true)],
    )?;
    let wait_secs = parse_wait_timeout(opt_string(&obj, "wait_timeout")?)?;
    if disposition == Disposition::Inline && format != Format::JsonArray {
        return Err(ApiError::invalid(format!(
            "The {} format is not supported with the INLINE disposition; use EXTERNAL_LINKS",
            format.as_str()
        )));
    }
    let row_limit = opt_i64(&obj, "row_limit")?;
    let byte_limit = opt_i64(&obj, "byte_limit")?;
    for (name, value) in [("row_limit", row_limit), ("byte_limit", byte_limit)] {
        if value.is_some_and(|v| v < 0) {
            return Err(ApiError::invalid(format!(
                "Invalid value for field '{name}': must not be negative"
            )));
        }
    }
    match obj.get("query_tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) if tags.len() <= MAX_QUERY_TAGS => {}
        Some(Value::Array(tags)) => {
            return Err(ApiError::invalid(format!(
                "Too many query_tags: {} (at most {MAX_QUERY_TAGS})",
                tags.len()
            )));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid value for field 'query_tags': expected an array",
            ));
        }
    }
    let parameters = parse_parameters(&obj)?;
    let session_id = opt_string(&obj, "session_id")?;
    let mut catalog = opt_string(&obj, "catalog")?;
    let mut schema = opt_string(&obj, "schema")?;
    let mut session_confs = BTreeMap::new();
    if let Some(id) = &session_id {
        let session = shared.sessions.lock().get(id).cloned().ok_or_else(|| {
            ApiError::not_found(format!("Session {id} does not exist or was closed."))
        })?;
        catalog = catalog.or(session.catalog);
        schema = schema.or(session.schema);
        session_confs = session.session_confs;
    }

    shared.sweep_expired_results();
    let Some(admission) = shared.admit() else {
        return Err(ApiError::too_many_requests(
            "The SQL warehouse queue is full; retry later.",
            shared.config.retry_after,
        ));
    };
    let spec = StatementSpec {
        sql,
        parameters,
        warehouse_id,
        session_id,
        catalog,
        schema,
        session_confs,
        disposition,
        format,
        compression,
        row_limit: row_limit.map(|v| v.unsigned_abs()),
        byte_limit: byte_limit.map(|v| v.unsigned_abs()),
        identity: identity.label,
        grants: identity.grants,
    };
    let fail_after = shared
        .faults
        .take(
            FaultKind::FailAfterChunks,
            FaultContext {
                endpoint: Endpoint::ExecuteStatement,
                chunk_index: None,
                sql: Some(&spec.sql),
            },
        )
        .and_then(FailAfter::from_action);
    let statement = Arc::new(Statement::new(new_id(), spec));
    shared.insert_statement(statement.clone());
    let initial = statement.snapshot();
    let mut watcher = statement.status.subscribe();
    tokio::spawn(run_statement(
        shared.clone(),
        statement.clone(),
        admission,
        fail_after,
    ));

    let status = if wait_secs == 0 {
        // Asynchronous mode: answer at once, before the statement even starts.
        initial
    } else {
        let finished = tokio::time::timeout(
            Duration::from_secs(wait_secs),
            watcher.wait_for(|s| s.state.is_terminal()),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        if !finished && cancel_on_timeout {
            statement
                .status
                .send_if_modified(|s| s.finish(StatementState::Canceled));
            statement.request_cancel();
        }
        statement.snapshot()
    };
    Ok(statement_response(
        &shared,
        &statement,
        &status,
        &base_url(&shared, &headers),
        Endpoint::ExecuteStatement,
    ))
}

/// Path parameters, or the 404 of an unknown statement when they cannot be decoded (e.g. an id
/// that is not UTF-8 once percent-decoded): no statement has such an id.
fn statement_path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value).map_err(|e| {
        ApiError::not_found(format!(
            "Statement does not exist or is no longer available: {e}"
        ))
    })
}

fn lookup(shared: &Shared, id: &str) -> Result<Arc<Statement>, ApiError> {
    shared.statement(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "Statement {id} does not exist or is no longer available."
        ))
    })
}

/// `GET /api/2.0/sql/statements/{id}`.
pub(crate) async fn get_statement(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    shared.sweep_expired_results();
    let id = statement_path(path)?;
    let statement = lookup(&shared, &id)?;
    let status = statement.snapshot();
    Ok(statement_response(
        &shared,
        &statement,
        &status,
        &base_url(&shared, &headers),
        Endpoint::GetStatement,
    ))
}

/// `GET /api/2.0/sql/statements/{id}/result/chunks/{chunk_index}`.
pub(crate) async fn get_chunk(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let (id, chunk) = statement_path(path)?;
    let statement = lookup(&shared, &id)?;
    let chunk: usize = chunk
        .parse()
        .map_err(|_| ApiError::invalid(format!("Invalid chunk index '{chunk}'")))?;
    let status = statement.snapshot();
    let result = match (&status.state, &status.result) {
        (StatementState::Succeeded, Some(result)) => result.clone(),
        (state, _) => {
            return Err(ApiError::bad_request(format!(
                "The results of statement {id} are not available: the statement is {}.",
                state.as_str()
            )));
        }
    };
    if chunk >= result.chunks.len() {
        return Err(ApiError::invalid(format!(
            "Invalid chunk index {chunk}: the result has {} chunk(s)",
            result.chunks.len()
        )));
    }
    let base = base_url(&shared, &headers);
    let body = result_body(
        &shared,
        &statement,
        &result,
        chunk,
        &base,
        Endpoint::GetChunk,
    );
    Ok(json_response(&body))
}

/// `POST /api/2.0/sql/statements/{id}/cancel`.
pub(crate) async fn cancel_statement(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = statement_path(path)?;
    let statement = lookup(&shared, &id)?;
    statement
        .status
        .send_if_modified(|s| s.finish(StatementState::Canceled));
    statement.request_cancel();
    Ok(empty_object())
}

/// `DELETE /api/2.0/sql/statements/{id}`.
pub(crate) async fn close_statement(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = statement_path(path)?;
    let statement = lookup(&shared, &id)?;
    statement.request_cancel();
    statement.status.send_modify(|s| {
        s.finish(StatementState::Closed);
        s.state = StatementState::Closed;
        s.result = None;
    });
    Ok(empty_object())
}

fn empty_object() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

fn json_response(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("cannot serialize the response: {e}"),
        )
        .into_response(),
    }
}

#[derive(Serialize)]
struct StatementBody<'a> {
    statement_id: &'a str,
    status: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultBody<'a>>,
}

#[derive(Serialize, Default)]
struct ResultBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_array: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_links: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_chunk_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_chunk_internal_link: Option<String>,
}

fn chunk_path(statement_id: &str, chunk: usize) -> String {
    format!("/api/2.0/sql/statements/{statement_id}/result/chunks/{chunk}")
}

/// The `result` object (or chunk response) for chunk `index`.
fn result_body<'a>(
    shared: &Shared,
    statement: &Statement,
    result: &'a ResultSet,
    index: usize,
    base: &str,
    endpoint: Endpoint,
) -> ResultBody<'a> {
    let Some(chunk) = result.chunks.get(index) else {
        return ResultBody::default();
    };
    let next = (index + 1 < result.chunks.len()).then_some(index + 1);
    let next_link = next.map(|n| chunk_path(&statement.id, n));
    match &chunk.body {
        ChunkBody::Inline(rows) => {
            statement.served(rows.get().len() as u64);
            ResultBody {
                chunk_index: Some(index),
                row_offset: Some(chunk.row_offset),
                row_count: Some(chunk.row_count),
                data_array: Some(rows),
                next_chunk_index: next,
                next_chunk_internal_link: next_link,
                ..ResultBody::default()
            }
        }
        ChunkBody::File(_) => {
            let expired = shared
                .faults
                .take(
                    FaultKind::ExpiredLinks,
                    FaultContext {
                        endpoint,
                        chunk_index: Some(index),
                        sql: Some(&statement.spec.sql),
                    },
                )
                .is_some();
            let now = Utc::now();
            // A huge TTL means "never expires": saturate instead of overflowing (a panic).
            let expires = if expired {
                now - chrono::Duration::seconds(1)
            } else {
                chrono::Duration::from_std(shared.config.link_ttl)
                    .ok()
                    .and_then(|ttl| now.checked_add_signed(ttl))
                    .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
            };
            let link = links::sign(
                &shared.link_key,
                base,
                &statement.id,
                index,
                expires,
                shared.config.link_http_headers,
            );
            let mut object = serde_json::json!({
                "chunk_index": index,
                "row_offset": chunk.row_offset,
                "row_count": chunk.row_count,
                "byte_count": chunk.byte_count,
                "external_link": link.url,
                "expiration": link.expiration,
            });
            if let Value::Object(map) = &mut object {
                if let Some(header) = link.header {
                    map.insert(
                        "http_headers".into(),
                        serde_json::json!({ LINK_HEADER: header }),
                    );
                }
                if let (Some(n), Some(l)) = (next, next_link) {
                    map.insert("next_chunk_index".into(), Value::from(n));
                    map.insert("next_chunk_internal_link".into(), Value::from(l));
                }
            }
            ResultBody {
                external_links: Some(vec![object]),
                ..ResultBody::default()
            }
        }
    }
}

fn manifest(statement: &Statement, result: &ResultSet) -> Value {
    let spec = &statement.spec;
    let inline = spec.disposition == Disposition::Inline;
    let mut schema = Map::new();
    schema.insert("column_count".into(), Value::from(result.columns.len()));
    if !result.columns.is_empty() {
        let columns: Vec<Value> = result
            .columns
            .iter()
            .enumerate()
            .map(|(position, c)| {
                let mut col = serde_json::json!({
                    "name": c.name,
                    "type_text": c.type_text,
                    "type_name": c.type_name,
                    "position": position,
                });
                if let Value::Object(map) = &mut col {
                    if let Some(p) = c.type_precision {
                        map.insert("type_precision".into(), Value::from(p));
                    }
                    if let Some(s) = c.type_scale {
                        map.insert("type_scale".into(), Value::from(s));
                    }
                    if let Some(i) = &c.type_interval_type {
                        map.insert("type_interval_type".into(), Value::from(i.clone()));
                    }
                }
                col
            })
            .collect();
        schema.insert("columns".into(), Value::Array(columns));
    }
    let mut m = Map::new();
    m.insert("format".into(), Value::from(spec.format.as_str()));
    m.insert("schema".into(), Value::Object(schema));
    m.insert("total_chunk_count".into(), Value::from(result.chunks.len()));
    if !result.chunks.is_empty() {
        let chunks: Vec<Value> = result
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut info = serde_json::json!({
                    "chunk_index": i,
                    "row_offset": c.row_offset,
                    "row_count": c.row_count,
                });
                if !inline && let Value::Object(map) = &mut info {
                    map.insert("byte_count".into(), Value::from(c.byte_count));
                }
                info
            })
            .collect();
        m.insert("chunks".into(), Value::Array(chunks));
    }
    m.insert("total_row_count".into(), Value::from(result.total_rows));
    if !inline {
        m.insert("total_byte_count".into(), Value::from(result.total_bytes));
    }
    m.insert("truncated".into(), Value::from(result.truncated));
    if !inline {
        m.insert(
            "result_compression".into(),
            Value::from(spec.compression.as_str()),
        );
    }
    Value::Object(m)
}

/// The statement response for a status snapshot.
fn statement_response(
    shared: &Shared,
    statement: &Statement,
    status: &Status,
    base: &str,
    endpoint: Endpoint,
) -> Response {
    let mut status_json = serde_json::json!({ "state": status.state.as_str() });
    if status.state == StatementState::Failed
        && let (Some(error), Value::Object(map)) = (&status.error, &mut status_json)
    {
        map.insert(
            "error".into(),
            serde_json::json!({ "error_code": error.error_code, "message": error.message }),
        );
        if !error.sql_state.is_empty() {
            map.insert("sql_state".into(), Value::from(error.sql_state.clone()));
        }
    }
    let (manifest, result) = match (&status.state, &status.result) {
        (StatementState::Succeeded, Some(result)) => (
            Some(manifest(statement, result)),
            Some(result_body(shared, statement, result, 0, base, endpoint)),
        ),
        _ => (None, None),
    };
    json_response(&StatementBody {
        statement_id: &statement.id,
        status: status_json,
        manifest,
        result,
    })
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// `POST /api/2.0/sql/sessions`.
pub(crate) async fn create_session(
    State(shared): State<Arc<Shared>>,
    Extension(identity): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(body)?;
    let obj = parse_object(&body)?;
    let warehouse_id = required_string(&obj, "warehouse_id")?;
    check_warehouse(&shared, &identity, &warehouse_id)?;
    let session = Session {
        warehouse_id,
        catalog: opt_string(&obj, "catalog")?,
        schema: opt_string(&obj, "schema")?,
        session_confs: parse_confs(&obj)?,
    };
    let id = new_id();
    shared.sessions.lock().insert(id.clone(), session);
    Ok(json_response(&serde_json::json!({ "session_id": id })))
}

/// `DELETE /api/2.0/sql/sessions/{id}?warehouse_id=...`.
pub(crate) async fn delete_session(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let id = path
        .map(|Path(id)| id)
        .map_err(|e| ApiError::not_found(format!("Session does not exist or was closed: {e}")))?;
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("Invalid query string: {e}")))?;
    let mut sessions = shared.sessions.lock();
    match sessions.get(&id) {
        Some(session) => {
            if let Some(w) = query.get("warehouse_id")
                && *w != session.warehouse_id
            {
                return Err(ApiError::invalid(format!(
                    "Session {id} does not belong to warehouse {w}"
                )));
            }
            sessions.remove(&id);
            Ok(empty_object())
        }
        None => Err(ApiError::not_found(format!(
            "Session {id} does not exist or was closed."
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Downloads

/// `GET /_emulator/results/{statement_id}/{chunk}?expires=..&signature=..`: behaves like a
/// presigned object-store URL.
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // Like an object store: an undecodable key is not there, an undecodable query is not signed.
    let Ok(Path((id, chunk))) = path else {
        return object_store_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    let query = query.map(|Query(q)| q).unwrap_or_default();
    if headers.contains_key(header::AUTHORIZATION) {
        return object_store_error(
            StatusCode::FORBIDDEN,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        );
    }
    let (Ok(chunk), Some(Ok(expires)), Some(signature)) = (
        chunk.parse::<usize>(),
        query.get("expires").map(|e| e.parse::<i64>()),
        query.get("signature"),
    ) else {
        return object_store_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Query-string authentication requires the expires and signature parameters",
        );
    };
    match links::verify(&shared.link_key, &id, chunk, expires, signature, Utc::now()) {
        Ok(()) => {}
        Err(LinkRejection::BadSignature) => {
            return object_store_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        Err(LinkRejection::Expired) => {
            return object_store_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired",
            );
        }
    }
    if shared.config.link_http_headers {
        let sent = headers.get(LINK_HEADER).and_then(|v| v.to_str().ok());
        if !links::verify_header(&shared.link_key, &id, chunk, expires, sent) {
            return object_store_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "There were headers present in the request which were not signed",
            );
        }
    }
    let Some(statement) = shared.statement(&id) else {
        return object_store_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    let result = statement.snapshot().result;
    let Some(data) = result
        .as_ref()
        .and_then(|r| match r.chunks.get(chunk).map(|c| &c.body) {
            Some(ChunkBody::File(bytes)) => Some(bytes.clone()),
            _ => None,
        })
    else {
        return object_store_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    drop(result);
    if !shared.config.chunk_latency.is_zero() {
        tokio::time::sleep(shared.config.chunk_latency).await;
    }
    let content_type = match statement.spec.format {
        Format::ArrowStream => "application/vnd.apache.arrow.stream",
        Format::Csv => "text/csv",
        Format::JsonArray => "application/json",
    };
    let total = data.len();
    let fault = shared.faults.take(
        FaultKind::Download,
        FaultContext {
            endpoint: Endpoint::Download,
            chunk_index: Some(chunk),
            sql: Some(&statement.spec.sql),
        },
    );
    let body = match fault {
        Some(FaultAction::ResetMidDownload { after_bytes }) => {
            let part = data.slice(..after_bytes.min(total));
            statement.served(part.len() as u64);
            // Let the head and the first bytes reach the client before the connection breaks.
            let stream = futures::stream::unfold((0u8, part), |(step, part)| async move {
                match step {
                    0 => Some((Ok(part.clone()), (1, part))),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let reset = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "injected connection reset",
                        );
                        Some((Err(reset), (2, part)))
                    }
                    _ => None,
                }
            });
            Body::from_stream(stream)
        }
        Some(FaultAction::SlowDownload { bytes_per_second }) => {
            statement.served(total as u64);
            let rate = bytes_per_second.max(1);
            // Ten pieces a second.
            let piece = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
            let stream = futures::stream::unfold(0usize, move |offset| {
                let data = data.clone();
                async move {
                    if offset >= data.len() {
                        return None;
                    }
                    if offset > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let end = (offset + piece).min(data.len());
                    Some((Ok::<_, std::io::Error>(data.slice(offset..end)), end))
                }
            });
            Body::from_stream(stream)
        }
        _ => {
            statement.served(total as u64);
            Body::from(data)
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, total)
        .body(body)
        .unwrap_or_else(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                e.to_string(),
            )
            .into_response()
        })
}

// ---------------------------------------------------------------------------------------------
// Introspection

/// `GET /_emulator/statements`.
pub(crate) async fn list_statements(State(shared): State<Arc<Shared>>) -> Response {
    json_response(&shared.records())
}

/// `GET /_emulator/requests`.
pub(crate) async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    let requests: Vec<RequestRecord> = shared.requests.lock().iter().cloned().collect();
    json_response(&requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeouts() {
        assert_eq!(parse_wait_timeout(None).expect("default"), 10);
        assert_eq!(parse_wait_timeout(Some("0s".into())).expect("0s"), 0);
        assert_eq!(parse_wait_timeout(Some("50s".into())).expect("50s"), 50);
        for bad in ["4s", "51s", "10", "s", "-5s", "ten"] {
            assert!(parse_wait_timeout(Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn int64_as_number_or_string() {
        let obj = parse_object(br#"{"a": 5, "b": "7", "c": "x", "d": 1.5}"#).expect("object");
        assert_eq!(opt_i64(&obj, "a").expect("number"), Some(5));
        assert_eq!(opt_i64(&obj, "b").expect("string"), Some(7));
        assert!(opt_i64(&obj, "c").is_err());
        assert!(opt_i64(&obj, "d").is_err());
        assert_eq!(opt_i64(&obj, "missing").expect("absent"), None);
    }

    #[test]
    fn classifies_endpoints() {
        let id = "01ef9de2-db21-16af-b4cb-9ccf302d746b";
        assert_eq!(
            classify(&Method::POST, "/api/2.0/sql/statements/"),
            Some((Endpoint::ExecuteStatement, None))
        );
        assert_eq!(
            classify(
                &Method::GET,
                &format!("/api/2.0/sql/statements/{id}/result/chunks/3")
            ),
            Some((Endpoint::GetChunk, Some(3)))
        );
        assert_eq!(
            classify(&Method::GET, &format!("/_emulator/results/{id}/2")),
            Some((Endpoint::Download, Some(2)))
        );
        assert_eq!(classify(&Method::GET, "/_emulator/statements"), None);
    }

    #[test]
    fn parameters_parse() {
        let obj = parse_object(
            br#"{"parameters":[{"name":"a","value":"1","type":"INT"},{"ordinal":2,"value":null},{"name":"n","value":5}]}"#,
        )
        .expect("object");
        let params = parse_parameters(&obj).expect("valid");
        assert_eq!(params.len(), 3);
        assert_eq!(params[0].type_text.as_deref(), Some("INT"));
        assert_eq!(params[1].ordinal, Some(2));
        assert_eq!(params[1].value, None);
        assert_eq!(params[2].value.as_deref(), Some("5"));
        let bad = parse_object(br#"{"parameters":[{"name":"a","value":[1]}]}"#).expect("object");
        assert!(parse_parameters(&bad).is_err());
    }
}
