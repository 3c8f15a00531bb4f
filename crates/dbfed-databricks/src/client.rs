//! The statement client: execute, submit/poll/wait, cancel, close, sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api::{Api, Call};
use crate::config::{ClientConfig, Credentials};
use crate::error::{Error, Result, sql_state_from_message};
use crate::retry::RetryPolicy;
use crate::stream::{ResultStream, StreamInput, StreamOptions, StreamShared};
use crate::types::{ColumnInfo, DEFAULT_TIME_ZONE, ResultSchema};
use crate::wire::{self, Format, StatementState};

/// How results travel from the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResultFormat {
    /// `EXTERNAL_LINKS` + `ARROW_STREAM` + `LZ4_FRAME` (default): chunk files downloaded in
    /// parallel from cloud storage, LZ4-compressed Arrow IPC. Up to 100 GiB.
    #[default]
    ArrowLz4,
    /// `EXTERNAL_LINKS` + `ARROW_STREAM`, uncompressed.
    Arrow,
    /// `INLINE` + `JSON_ARRAY`: rows of strings in the API answers, converted to Arrow with the
    /// manifest types. Up to 25 MiB; no access to cloud storage needed.
    JsonInline,
}

impl ResultFormat {
    fn wire(self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            ResultFormat::ArrowLz4 => ("EXTERNAL_LINKS", "ARROW_STREAM", Some("LZ4_FRAME")),
            ResultFormat::Arrow => ("EXTERNAL_LINKS", "ARROW_STREAM", None),
            ResultFormat::JsonInline => ("INLINE", "JSON_ARRAY", None),
        }
    }
}

/// A statement parameter: a named (`:name`) or positional (`?`) marker with a typed value.
///
/// The value always travels as a string with a SQL type (`{name, value, type}`); a NULL has no
/// value. Values are never spliced into the SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    name: Option<String>,
    value: Option<String>,
    type_name: Option<String>,
}

impl Param {
    /// A named parameter for the marker `:name`.
    pub fn new(name: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        let v = value.into();
        Self {
            name: Some(name.into()),
            value: v.value,
            type_name: v.type_name,
        }
    }

    /// A positional parameter for the next `?` marker (ordinals follow list order, from 1).
    pub fn positional(value: impl Into<ParamValue>) -> Self {
        let v = value.into();
        Self {
            name: None,
            value: v.value,
            type_name: v.type_name,
        }
    }

    /// A typed NULL for the marker `:name`.
    pub fn null(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            value: None,
            type_name: Some(type_name.into()),
        }
    }

    /// Overrides the SQL type (`DECIMAL(10,2)`, `TIMESTAMP_NTZ`, ...); the server casts the
    /// string value to it.
    pub fn with_type(mut self, type_name: impl Into<String>) -> Self {
        self.type_name = Some(type_name.into());
        self
    }

    /// The marker name, `None` for positional parameters.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The value as sent, `None` for NULL.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The SQL type as sent (`None` means `STRING`).
    pub fn type_name(&self) -> Option<&str> {
        self.type_name.as_deref()
    }
}

/// A parameter value rendered for the wire: its string form and SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamValue {
    value: Option<String>,
    type_name: Option<String>,
}

impl ParamValue {
    /// A value given as text with an explicit SQL type (`("12.50", "DECIMAL(10,2)")`).
    pub fn typed(value: impl Into<String>, type_name: impl Into<String>) -> Self {
        Self {
            value: Some(value.into()),
            type_name: Some(type_name.into()),
        }
    }
}

macro_rules! param_from {
    ($($t:ty => $sql:literal),* $(,)?) => {$(
        impl From<$t> for ParamValue {
            fn from(v: $t) -> Self {
                Self { value: Some(v.to_string()), type_name: Some($sql.to_owned()) }
            }
        }
    )*};
}

param_from!(
    i8 => "TINYINT", i16 => "SMALLINT", i32 => "INT", i64 => "BIGINT",
    u8 => "SMALLINT", u16 => "INT", u32 => "BIGINT", u64 => "DECIMAL(20,0)",
    bool => "BOOLEAN", String => "STRING", &str => "STRING", &String => "STRING",
    chrono::NaiveDate => "DATE",
);

impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        let value = if v.is_nan() {
            "NaN".to_owned()
        } else if v.is_infinite() {
            if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
        } else {
            format!("{v:?}")
        };
        Self {
            value: Some(value),
            type_name: Some("DOUBLE".to_owned()),
        }
    }
}

impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        let mut p = ParamValue::from(f64::from(v));
        if v.is_finite() {
            p.value = Some(format!("{v:?}"));
        }
        p.type_name = Some("FLOAT".to_owned());
        p
    }
}

impl From<chrono::NaiveDateTime> for ParamValue {
    fn from(v: chrono::NaiveDateTime) -> Self {
        Self {
            value: Some(v.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            type_name: Some("TIMESTAMP_NTZ".to_owned()),
        }
    }
}

impl From<chrono::DateTime<chrono::Utc>> for ParamValue {
    fn from(v: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            value: Some(v.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            type_name: Some("TIMESTAMP".to_owned()),
        }
    }
}

impl<T: Into<ParamValue>> From<Option<T>> for ParamValue {
    /// `None` is a NULL; its type is `STRING` unless set with [`Param::with_type`].
    fn from(v: Option<T>) -> Self {
        match v {
            Some(v) => v.into(),
            None => Self {
                value: None,
                type_name: None,
            },
        }
    }
}

/// One statement to run, with its options. Unset options take the client's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRequest {
    statement: String,
    parameters: Vec<Param>,
    catalog: Option<String>,
    schema: Option<String>,
    session_id: Option<String>,
    wait_timeout: Option<Duration>,
    cancel_on_wait_timeout: bool,
    row_limit: Option<u64>,
    byte_limit: Option<u64>,
    result_format: Option<ResultFormat>,
}

impl StatementRequest {
    /// A request for `statement` (SQL text with `:name` or `?` markers).
    pub fn new(statement: impl Into<String>) -> Self {
        Self {
            statement: statement.into(),
            parameters: Vec::new(),
            catalog: None,
            schema: None,
            session_id: None,
            wait_timeout: None,
            cancel_on_wait_timeout: false,
            row_limit: None,
            byte_limit: None,
            result_format: None,
        }
    }

    /// The parameters (named and/or positional).
    pub fn parameters(mut self, parameters: impl IntoIterator<Item = Param>) -> Self {
        self.parameters = parameters.into_iter().collect();
        self
    }

    /// Catalog for this statement (default: the config's catalog, unless a session is used).
    pub fn catalog(mut self, catalog: impl Into<String>) -> Self {
        self.catalog = Some(catalog.into());
        self
    }

    /// Schema for this statement (default: the config's schema, unless a session is used).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Runs the statement inside `session` (its catalog, schema and confs apply).
    pub fn session(mut self, session: &Session) -> Self {
        self.session_id = Some(session.id.clone());
        self
    }

    /// Runs the statement inside the session with this id.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// How long the execute call itself waits for completion: `Duration::ZERO` returns at once
    /// (submit-and-poll), otherwise 5 s..=50 s (rounded down to whole seconds; values under 5 s
    /// become 0). Default: the client's [`ClientBuilder::wait_timeout`].
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// Asks the warehouse to cancel the statement if it did not finish within `wait_timeout`
    /// (`on_wait_timeout = CANCEL`); default `CONTINUE`.
    pub fn cancel_on_wait_timeout(mut self, cancel: bool) -> Self {
        self.cancel_on_wait_timeout = cancel;
        self
    }

    /// Stops the result after this many rows (`manifest.truncated` tells if it cut).
    pub fn row_limit(mut self, rows: u64) -> Self {
        self.row_limit = Some(rows);
        self
    }

    /// Stops the result after about this many bytes.
    pub fn byte_limit(mut self, bytes: u64) -> Self {
        self.byte_limit = Some(bytes);
        self
    }

    /// The result format for this statement (default: the client's).
    pub fn result_format(mut self, format: ResultFormat) -> Self {
        self.result_format = Some(format);
        self
    }

    /// The SQL text.
    pub fn statement(&self) -> &str {
        &self.statement
    }
}

/// Renders a wait timeout as the API wants it: `0s` or `5s`..=`50s`.
fn wire_wait_timeout(timeout: Duration) -> String {
    let secs = timeout.as_secs();
    let secs = if secs < 5 { 0 } else { secs.min(50) };
    format!("{secs}s")
}

/// A statement's state as last seen: the answer of submit, poll or wait.
#[derive(Debug, Clone)]
pub struct StatementResponse {
    id: String,
    state: StatementState,
    inner: wire::StatementResponse,
}

impl StatementResponse {
    fn from_wire(inner: wire::StatementResponse, request: &str) -> Result<Self> {
        let id = inner
            .statement_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::protocol(format!("{request}: response without statement_id")))?;
        validate_id(&id, "statement_id")?;
        let state = inner
            .status
            .as_ref()
            .and_then(|s| s.state.clone())
            .ok_or_else(|| Error::protocol(format!("{request}: response without status.state")))?;
        Ok(Self { id, state, inner })
    }

    /// The statement id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state.
    pub fn state(&self) -> &StatementState {
        &self.state
    }

    /// Whether the state is final (not PENDING/RUNNING).
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Whether a result can be read: SUCCEEDED, or CLOSED with a manifest.
    pub fn has_result(&self) -> bool {
        match self.state {
            StatementState::Succeeded => true,
            StatementState::Closed => self.inner.manifest.is_some(),
            _ => false,
        }
    }

    /// Rows in the result, once known.
    pub fn total_row_count(&self) -> Option<u64> {
        let m = self.inner.manifest.as_ref()?;
        m.total_row_count.and_then(|n| u64::try_from(n).ok())
    }

    /// Whether `row_limit`/`byte_limit` cut the result.
    pub fn is_truncated(&self) -> bool {
        self.inner
            .manifest
            .as_ref()
            .and_then(|m| m.truncated)
            .unwrap_or(false)
    }

    /// The failure of a FAILED statement, or [`Error::Canceled`] for a CANCELED one, or
    /// a protocol error for a statement CLOSED without result.
    pub fn error(&self) -> Option<Error> {
        match &self.state {
            StatementState::Failed => {
                let status = self.inner.status.as_ref();
                let err = status.and_then(|s| s.error.clone()).unwrap_or_default();
                let message = err
                    .message
                    .unwrap_or_else(|| "the statement failed without a message".to_owned());
                let sql_state = status
                    .and_then(|s| s.sql_state.clone())
                    .or(err.sql_state)
                    .or_else(|| sql_state_from_message(&message));
                Some(Error::StatementFailed {
                    statement_id: self.id.clone(),
                    error_code: err.error_code,
                    message: message.trim().to_owned(),
                    sql_state,
                })
            }
            StatementState::Canceled => Some(Error::Canceled {
                statement_id: self.id.clone(),
            }),
            StatementState::Closed if self.inner.manifest.is_none() => Some(Error::protocol(
                format!("statement {} was closed and has no result", self.id),
            )),
            StatementState::Unknown(s) => Some(Error::protocol(format!(
                "statement {} is in unknown state {s}",
                self.id
            ))),
            _ => None,
        }
    }

    /// `Ok(self)` unless [`StatementResponse::error`] has something to say.
    pub fn into_result(self) -> Result<Self> {
        match self.error() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// The result schema from the manifest (statements without a result set have none).
    pub fn result_schema(&self, time_zone: &str) -> Result<ResultSchema> {
        let Some(manifest) = &self.inner.manifest else {
            return Err(Error::protocol(format!(
                "statement {} has no manifest yet (state {})",
                self.id, self.state
            )));
        };
        let columns = manifest
            .schema
            .as_ref()
            .map(|s| s.columns.clone())
            .unwrap_or_default();
        let mut infos = Vec::with_capacity(columns.len());
        for (i, c) in columns.into_iter().enumerate() {
            let name = c.name.ok_or_else(|| {
                Error::protocol(format!(
                    "manifest column {i} of statement {} has no name",
                    self.id
                ))
            })?;
            let position = c
                .position
                .and_then(|p| usize::try_from(p).ok())
                .unwrap_or(i);
            infos.push(ColumnInfo {
                name,
                position,
                type_name: c.type_name.unwrap_or_default(),
                type_text: c.type_text.unwrap_or_default(),
                type_precision: c.type_precision.and_then(|p| u8::try_from(p).ok()),
                type_scale: c.type_scale.and_then(|s| i8::try_from(s).ok()),
                type_interval_type: c.type_interval_type,
            });
        }
        infos.sort_by_key(|c| c.position);
        if let Some(count) = manifest.schema.as_ref().and_then(|s| s.column_count)
            && count != infos.len() as i64
        {
            return Err(Error::protocol(format!(
                "manifest of statement {} declares {count} columns but lists {}",
                self.id,
                infos.len()
            )));
        }
        if infos
            .iter()
            .any(|c| c.type_name.is_empty() && c.type_text.is_empty())
        {
            return Err(Error::protocol(format!(
                "a manifest column of statement {} has neither type_name nor type_text",
                self.id
            )));
        }
        ResultSchema::try_new(infos, time_zone)
    }

    fn into_stream_input(self, time_zone: &str) -> Result<StreamInput> {
        let schema = self.result_schema(time_zone)?;
        let manifest = self
            .inner
            .manifest
            .clone()
            .ok_or_else(|| Error::protocol(format!("statement {} has no manifest", self.id)))?;
        let listed = manifest.chunks.len();
        let total = match manifest.total_chunk_count {
            Some(n) => usize::try_from(n)
                .map_err(|_| Error::protocol(format!("negative total_chunk_count {n}")))?,
            None => listed,
        };
        // Per-chunk bookkeeping is sized by this number from the network: bound it.
        if total > MAX_CHUNKS {
            return Err(Error::protocol(format!(
                "manifest of statement {} announces {total} chunks, more than the {MAX_CHUNKS} \
                 this client accepts",
                self.id
            )));
        }
        let mut chunks = vec![(None, None); total];
        for (i, c) in manifest.chunks.iter().enumerate() {
            let index = c
                .chunk_index
                .and_then(|x| usize::try_from(x).ok())
                .unwrap_or(i);
            if let Some(slot) = chunks.get_mut(index) {
                *slot = (
                    c.row_count.and_then(|n| u64::try_from(n).ok()),
                    c.byte_count.and_then(|n| u64::try_from(n).ok()),
                );
            } else {
                return Err(Error::protocol(format!(
                    "manifest lists chunk {index} but total_chunk_count is {total}"
                )));
            }
        }
        Ok(StreamInput {
            schema,
            format: manifest.format,
            compression: manifest.result_compression,
            total_chunk_count: total,
            chunks,
            total_row_count: manifest.total_row_count.and_then(|n| u64::try_from(n).ok()),
            truncated: manifest.truncated.unwrap_or(false),
            result: self.inner.result,
        })
    }
}

/// Follows up to 5 redirects that stay on the first URL's scheme, host and port; any other
/// redirect is not followed (its 3xx answer becomes the download's error).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The most chunks a result may announce (100 GiB in 100 KiB chunks; real chunks are MiBs).
const MAX_CHUNKS: usize = 1 << 20;

/// Ids go into URL paths: accept only what Databricks issues.
fn validate_id(id: &str, what: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(Error::protocol(format!("invalid {what} {id:?}")))
    }
}

/// A SQL session (`/api/2.0/sql/sessions`): catalog, schema and session confs shared by the
/// statements run in it. Closed (DELETE) on drop.
#[derive(Debug)]
pub struct Session {
    id: String,
    warehouse_id: String,
    api: Arc<Api>,
    closed: AtomicBool,
}

impl Session {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Closes the session on the warehouse.
    pub fn close(self) -> Result<()> {
        self.close_inner(None, None)
    }

    fn close_inner(&self, retry: Option<&RetryPolicy>, timeout: Option<Duration>) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        close_session(&self.api, &self.id, &self.warehouse_id, retry, timeout)
    }
}

/// `DELETE /api/2.0/sql/sessions/{id}?warehouse_id=...`.
fn close_session(
    api: &Api,
    id: &str,
    warehouse_id: &str,
    retry: Option<&RetryPolicy>,
    timeout: Option<Duration>,
) -> Result<()> {
    let mut call = Call::new(
        Method::DELETE,
        format!("/api/2.0/sql/sessions/{id}?warehouse_id={warehouse_id}"),
    );
    call.retry = retry;
    call.timeout = timeout;
    api.send(call).map(|_| ())
}

impl Drop for Session {
    /// A best-effort close: one attempt bounded by [`ClientBuilder::close_timeout`], on a
    /// short-lived thread of its own when dropped inside an async runtime.
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let api = Arc::clone(&self.api);
        let id = self.id.clone();
        let warehouse_id = self.warehouse_id.clone();
        crate::api::release_off_async("dbfed-close-session", move || {
            let once = RetryPolicy::none();
            let timeout = Some(api.close_timeout);
            if let Err(e) = close_session(&api, &id, &warehouse_id, Some(&once), timeout) {
                tracing::warn!(session_id = %id, error = %e, "closing the session failed");
            }
        });
    }
}

/// Builds a [`Client`]; every option has a documented default.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
    download_threads: usize,
    prefetch_bytes: u64,
    retry_policy: RetryPolicy,
    result_format: ResultFormat,
    statement_timeout: Option<Duration>,
    wait_timeout: Duration,
    poll_interval: (Duration, Duration),
    request_timeout: Duration,
    connect_timeout: Duration,
    download_timeout: Duration,
    close_timeout: Duration,
    link_refresh_margin: Duration,
    time_zone: String,
    max_chunk_bytes: u64,
}

impl ClientBuilder {
    /// Threads downloading result chunks in parallel, per stream (default 4; at least 1).
    pub fn download_threads(mut self, threads: usize) -> Self {
        self.download_threads = threads.max(1);
        self
    }

    /// Bytes of result chunks a stream may hold ahead of its consumer (default 256 MiB). A
    /// chunk counts its uncompressed size from the manifest while it downloads, then the larger
    /// of that and its real decoded size. One chunk is always allowed, even if larger.
    pub fn prefetch_bytes(mut self, bytes: u64) -> Self {
        self.prefetch_bytes = bytes.max(1);
        self
    }

    /// Retry policy of API calls and downloads (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Default result format (default [`ResultFormat::ArrowLz4`]).
    pub fn result_format(mut self, format: ResultFormat) -> Self {
        self.result_format = format;
        self
    }

    /// Client-side limit on a statement's execution in [`Client::execute`] (default none),
    /// counted from the submission and including retries of throttled (429/503) submissions
    /// and polls. When it fires the statement is canceled on the warehouse (that call retried
    /// within [`ClientBuilder::close_timeout`]) and [`Error::Timeout`] returned. It does not
    /// limit reading the result.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long the execute call waits on the server before returning a PENDING/RUNNING
    /// statement to poll (default 10 s; `0` or 5 s..=50 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Polling interval bounds: the first poll comes after `min`, then the interval grows by
    /// half each time up to `max` (default 50 ms .. 1 s).
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_interval = (min.min(max), max);
        self
    }

    /// Timeout of each API request, on top of the execute `wait_timeout` (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// TCP/TLS connect timeout (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of one chunk download, from the request to the last byte of the body (default
    /// 300 s). A body still arriving when it runs out is abandoned and the download retried.
    pub fn download_timeout(mut self, timeout: Duration) -> Self {
        self.download_timeout = timeout;
        self
    }

    /// Timeout of the single best-effort release call (`DELETE`) made when a
    /// [`ResultStream`] is dropped or canceled before its end, or a [`Session`] is dropped
    /// (default 5 s). It bounds how long such a drop can block.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// A link expiring within this margin is refreshed before use (default 45 s).
    pub fn link_refresh_margin(mut self, margin: Duration) -> Self {
        self.link_refresh_margin = margin;
        self
    }

    /// The largest result chunk accepted, both as downloaded and once LZ4-decompressed, and
    /// the largest API response body (default [`crate::decode::DEFAULT_MAX_CHUNK_BYTES`],
    /// 1 GiB; at least 1). Anything larger fails with [`Error::Decode`] (chunks) or
    /// [`Error::Protocol`] (API answers) instead of growing memory without bound.
    pub fn max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.max_chunk_bytes = bytes.max(1);
        self
    }

    /// The time zone of `TIMESTAMP` columns in the promised Arrow schema (default `UTC`).
    /// Instants are unaffected: only the zone attached to the values changes.
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        self.time_zone = tz.into();
        self
    }

    /// Builds the client: HTTP clients and the auth provider (no network traffic yet).
    pub fn build(self) -> Result<Client> {
        let user_agent = self.config.user_agent().to_owned();
        let http = reqwest::blocking::Client::builder()
            .user_agent(user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| Error::transport("building the HTTP client", e))?;
        // Downloads go to presigned cloud-storage URLs: a separate client without any
        // workspace credentials. Redirects are followed only within the link's own origin:
        // a link's `http_headers` (e.g. SSE-C encryption keys) must not travel to another host.
        let download_http = reqwest::blocking::Client::builder()
            .user_agent(user_agent)
            .redirect(same_origin_redirects())
            .connect_timeout(self.connect_timeout)
            .timeout(self.download_timeout)
            .build()
            .map_err(|e| Error::transport("building the download HTTP client", e))?;
        let auth = self.config.auth_provider(&http)?;
        let reauth_on_401 = !matches!(self.config.credentials(), Credentials::Token(_));
        let api = Arc::new(Api {
            base: self.config.host().clone(),
            http,
            auth,
            retry: self.retry_policy,
            request_timeout: self.request_timeout,
            reauth_on_401,
            close_timeout: self.close_timeout,
            max_body_bytes: self.max_chunk_bytes,
            retries: Default::default(),
            received: Default::default(),
        });
        Ok(Client {
            inner: Arc::new(ClientInner {
                api,
                config: self.config,
                stream_options: StreamOptions {
                    download_threads: self.download_threads,
                    prefetch_bytes: self.prefetch_bytes,
                    link_refresh_margin: self.link_refresh_margin,
                    max_chunk_bytes: self.max_chunk_bytes,
                    download_timeout: self.download_timeout,
                    download_http,
                },
                result_format: self.result_format,
                statement_timeout: self.statement_timeout,
                wait_timeout: self.wait_timeout,
                poll_interval: self.poll_interval,
                time_zone: self.time_zone,
            }),
        })
    }
}

#[derive(Debug)]
struct ClientInner {
    api: Arc<Api>,
    config: ClientConfig,
    stream_options: StreamOptions,
    result_format: ResultFormat,
    statement_timeout: Option<Duration>,
    wait_timeout: Duration,
    poll_interval: (Duration, Duration),
    time_zone: String,
}

/// A Databricks SQL Warehouse client. Cheap to clone; share it between threads.
///
/// All calls block: run them on dedicated threads, not on an async runtime's workers.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// A builder with the defaults listed on [`ClientBuilder`]'s methods.
    pub fn builder(config: ClientConfig) -> ClientBuilder {
        ClientBuilder {
            config,
            download_threads: 4,
            prefetch_bytes: 256 << 20,
            retry_policy: RetryPolicy::default(),
            result_format: ResultFormat::default(),
            statement_timeout: None,
            wait_timeout: Duration::from_secs(10),
            poll_interval: (Duration::from_millis(50), Duration::from_secs(1)),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            download_timeout: Duration::from_secs(300),
            close_timeout: Duration::from_secs(5),
            link_refresh_margin: Duration::from_secs(45),
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            max_chunk_bytes: crate::decode::DEFAULT_MAX_CHUNK_BYTES,
        }
    }

    /// A client with all defaults.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Workspace API calls this client (and its clones) retried after a transient failure
    /// (429, 503, connection errors, ...), since it was built.
    pub fn retries(&self) -> u64 {
        self.inner
            .api
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Response bytes this client (and its clones) received since it was built: API answers
    /// and result chunk downloads (as they arrive, compressed as on the wire).
    pub fn bytes_received(&self) -> u64 {
        self.inner
            .api
            .received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `sql` with `params` and returns its result stream once the statement succeeded.
    pub fn execute(&self, sql: &str, params: &[Param]) -> Result<ResultStream> {
        self.execute_request(&StatementRequest::new(sql).parameters(params.iter().cloned()))
    }

    /// Runs `request`: submit, wait (within the statement timeout, canceling the statement
    /// when it fires), and open the result stream.
    pub fn execute_request(&self, request: &StatementRequest) -> Result<ResultStream> {
        let started = Instant::now();
        let deadline = self.inner.statement_timeout.map(|t| started + t);
        let mut request = request.clone();
        if request.wait_timeout.is_none() {
            let mut wait = self.inner.wait_timeout;
            if let Some(limit) = self.inner.statement_timeout {
                wait = wait.min(limit);
            }
            request.wait_timeout = Some(wait);
        }
        let submitted = match self.submit_until(&request, deadline) {
            Ok(s) => s,
            // Throttled (429/503) until the statement timeout: report the timeout.
            Err(e) if deadline.is_some_and(|d| Instant::now() >= d) && e.is_retryable() => {
                tracing::debug!(error = %e, "statement timeout reached while submitting");
                return Err(Error::Timeout {
                    operation: "submitting the statement".to_owned(),
                    elapsed: started.elapsed(),
                    statement_id: None,
                });
            }
            Err(e) => return Err(e),
        };
        let span = tracing::debug_span!("statement", statement_id = %submitted.id());
        let _enter = span.enter();
        let finished = if submitted.is_terminal() {
            submitted
        } else {
            match self.wait(submitted.id(), deadline) {
                Err(e @ Error::Timeout { .. }) => {
                    tracing::info!("statement timeout: canceling");
                    // Retried within the close timeout only: the caller is already late.
                    let until = Instant::now() + self.inner.api.close_timeout;
                    if let Err(c) = self.cancel_until(submitted.id(), Some(until)) {
                        tracing::warn!(error = %c, "cancel after timeout failed");
                    }
                    return Err(e);
                }
                // Polling failed (retries exhausted, a rejected request, a malformed answer):
                // the caller gets no id to cancel with, so do not leave the statement running.
                Err(e)
                    if !e.is_canceled()
                        && !matches!(e, Error::StatementFailed { .. })
                        && e.http_status() != Some(404) =>
                {
                    tracing::info!(error = %e, "waiting failed: canceling the statement");
                    let until = Instant::now() + self.inner.api.close_timeout;
                    if let Err(c) = self.cancel_until(submitted.id(), Some(until)) {
                        tracing::warn!(error = %c, "cancel after a failed wait failed");
                    }
                    return Err(e);
                }
                other => other?,
            }
        };
        let finished = finished.into_result()?;
        let statement_id = finished.id().to_owned();
        self.result_stream(finished).inspect_err(|e| {
            // The caller never gets a stream to drop: free the warehouse's result here.
            tracing::debug!(error = %e, "the result cannot be read: closing the statement");
            self.release(&statement_id);
        })
    }

    /// Best-effort close of a statement: one attempt bounded by the close timeout, errors
    /// only logged.
    fn release(&self, statement_id: &str) {
        let once = RetryPolicy::none();
        let mut call = Call::new(
            Method::DELETE,
            format!("/api/2.0/sql/statements/{statement_id}"),
        );
        call.retry = Some(&once);
        call.timeout = Some(self.inner.api.close_timeout);
        if let Err(e) = self.inner.api.send(call) {
            tracing::warn!(statement_id, error = %e, "closing the statement failed");
        }
    }

    /// Submits a statement and returns at once with whatever state it reached within its
    /// `wait_timeout` (set `Duration::ZERO` for pure submit-and-poll).
    pub fn submit(&self, request: &StatementRequest) -> Result<StatementResponse> {
        self.submit_until(request, None)
    }

    /// [`Client::submit`] whose retries (429, 503 with `Retry-After`) end at `deadline`.
    fn submit_until(
        &self,
        request: &StatementRequest,
        deadline: Option<Instant>,
    ) -> Result<StatementResponse> {
        let config = &self.inner.config;
        let format = request.result_format.unwrap_or(self.inner.result_format);
        let (disposition, wire_format, compression) = format.wire();
        let wait = request.wait_timeout.unwrap_or(self.inner.wait_timeout);
        let in_session = request.session_id.is_some();
        let mut ordinal = 0;
        let parameters = request
            .parameters
            .iter()
            .map(|p| {
                let ordinal = if p.name.is_none() {
                    ordinal += 1;
                    Some(ordinal)
                } else {
                    None
                };
                wire::WireParameter {
                    name: p.name.as_deref(),
                    ordinal,
                    value: p.value.as_deref(),
                    type_name: p.type_name.as_deref(),
                }
            })
            .collect();
        let body = wire::ExecuteRequest {
            statement: &request.statement,
            warehouse_id: config.warehouse_id(),
            catalog: request.catalog.as_deref().or(if in_session {
                None
            } else {
                config.catalog()
            }),
            schema: request
                .schema
                .as_deref()
                .or(if in_session { None } else { config.schema() }),
            session_id: request.session_id.as_deref(),
            disposition,
            format: wire_format,
            result_compression: compression,
            wait_timeout: wire_wait_timeout(wait),
            on_wait_timeout: if request.cancel_on_wait_timeout {
                "CANCEL"
            } else {
                "CONTINUE"
            },
            row_limit: request.row_limit.and_then(|n| i64::try_from(n).ok()),
            byte_limit: request.byte_limit.and_then(|n| i64::try_from(n).ok()),
            parameters,
            query_tags: config
                .query_tags()
                .iter()
                .map(|(k, v)| wire::QueryTag {
                    key: k,
                    value: v.as_deref(),
                })
                .collect(),
        };
        let body = serde_json::to_value(&body)
            .map_err(|e| Error::protocol(format!("cannot encode the request: {e}")))?;
        let mut call = Call::new(Method::POST, "/api/2.0/sql/statements");
        call.body = Some(body);
        call.idempotent = false;
        call.extra_timeout = Duration::from_secs(wait.as_secs().min(50));
        call.deadline = deadline;
        let response: wire::StatementResponse = self.inner.api.json(call)?;
        let response = StatementResponse::from_wire(response, "POST /api/2.0/sql/statements")?;
        tracing::debug!(statement_id = %response.id(), state = %response.state(), "statement submitted");
        Ok(response)
    }

    /// Fetches the statement's current state (FAILED is a state here, not an error).
    pub fn poll(&self, statement_id: &str) -> Result<StatementResponse> {
        self.poll_until(statement_id, None)
    }

    /// [`Client::poll`] whose retries and request timeout end at `deadline`.
    fn poll_until(
        &self,
        statement_id: &str,
        deadline: Option<Instant>,
    ) -> Result<StatementResponse> {
        validate_id(statement_id, "statement id")?;
        let path = format!("/api/2.0/sql/statements/{statement_id}");
        let mut call = Call::new(Method::GET, path.clone());
        call.deadline = deadline;
        if let Some(deadline) = deadline {
            // A poll is safe to cut short: never block far past the caller's deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            call.timeout = Some(
                self.inner
                    .api
                    .request_timeout
                    .min(left.max(crate::api::MIN_ATTEMPT_BEFORE_DEADLINE)),
            );
        }
        let response: wire::StatementResponse = self.inner.api.json(call)?;
        let response = StatementResponse::from_wire(response, &format!("GET {path}"))?;
        if response.id() != statement_id {
            return Err(Error::protocol(format!(
                "polled statement {statement_id} but the answer is about {}",
                response.id()
            )));
        }
        Ok(response)
    }

    /// Polls until the statement reaches a final state, with growing intervals. Returns the
    /// response of a statement with a result; FAILED and CANCELED become errors; past
    /// `deadline`, [`Error::Timeout`] (the statement is left running: cancel it if needed).
    /// The deadline also bounds the retries of each poll.
    ///
    /// With `deadline = None` this returns only when the warehouse reports a final state:
    /// to stop waiting from another thread, [`Client::cancel`] the statement.
    pub fn wait(&self, statement_id: &str, deadline: Option<Instant>) -> Result<StatementResponse> {
        let started = Instant::now();
        let (min, max) = self.inner.poll_interval;
        let mut interval = min;
        let mut last_state: Option<StatementState> = None;
        let timeout = |started: Instant| Error::Timeout {
            operation: format!("waiting for statement {statement_id}"),
            elapsed: started.elapsed(),
            statement_id: Some(statement_id.to_owned()),
        };
        loop {
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(timeout(started));
                }
                std::thread::sleep(interval.min(d - now));
            } else {
                std::thread::sleep(interval);
            }
            let response = match self.poll_until(statement_id, deadline) {
                Ok(r) => r,
                // A poll whose retries were cut short by the deadline is the deadline firing.
                Err(e) if deadline.is_some_and(|d| Instant::now() >= d) && e.is_retryable() => {
                    tracing::debug!(statement_id, error = %e, "deadline reached while polling");
                    return Err(timeout(started));
                }
                Err(e) => return Err(e),
            };
            if last_state.as_ref() != Some(response.state()) {
                tracing::debug!(statement_id, state = %response.state(), "statement state");
                last_state = Some(response.state().clone());
            }
            if response.is_terminal() {
                return response.into_result();
            }
            interval = (interval + interval / 2)
                .min(max)
                .max(Duration::from_millis(1));
        }
    }

    /// Asks the warehouse to cancel the statement (a cancel can race with completion).
    pub fn cancel(&self, statement_id: &str) -> Result<()> {
        self.cancel_until(statement_id, None)
    }

    /// [`Client::cancel`] whose retries end at `deadline`.
    fn cancel_until(&self, statement_id: &str, deadline: Option<Instant>) -> Result<()> {
        validate_id(statement_id, "statement id")?;
        let mut call = Call::new(
            Method::POST,
            format!("/api/2.0/sql/statements/{statement_id}/cancel"),
        );
        call.body = Some(serde_json::json!({}));
        call.deadline = deadline;
        self.inner.api.send(call).map(|_| ())
    }

    /// Closes the statement, releasing its result on the warehouse.
    pub fn close(&self, statement_id: &str) -> Result<()> {
        validate_id(statement_id, "statement id")?;
        self.inner
            .api
            .send(Call::new(
                Method::DELETE,
                format!("/api/2.0/sql/statements/{statement_id}"),
            ))
            .map(|_| ())
    }

    /// Opens the result of a finished statement (SUCCEEDED, or CLOSED with a manifest).
    pub fn result_stream(&self, response: StatementResponse) -> Result<ResultStream> {
        if let Some(e) = response.error() {
            return Err(e);
        }
        if !response.has_result() {
            return Err(Error::protocol(format!(
                "statement {} is {}: wait for it to finish before reading its result",
                response.id(),
                response.state()
            )));
        }
        if let Some(Format::Csv) = response
            .inner
            .manifest
            .as_ref()
            .and_then(|m| m.format.clone())
        {
            return Err(Error::Unsupported("CSV results".to_owned()));
        }
        let shared = StreamShared::new(self.inner.api.clone(), response.id().to_owned());
        let input = response.into_stream_input(&self.inner.time_zone)?;
        ResultStream::new(shared, input, &self.inner.stream_options)
    }

    /// Creates a session with this catalog, schema and session confs.
    pub fn create_session(
        &self,
        catalog: Option<&str>,
        schema: Option<&str>,
        session_confs: &BTreeMap<String, String>,
    ) -> Result<Session> {
        let body = wire::CreateSessionRequest {
            warehouse_id: self.inner.config.warehouse_id(),
            catalog,
            schema,
            session_confs,
        };
        let body = serde_json::to_value(&body)
            .map_err(|e| Error::protocol(format!("cannot encode the request: {e}")))?;
        let mut call = Call::new(Method::POST, "/api/2.0/sql/sessions");
        call.body = Some(body);
        call.idempotent = false;
        let response: wire::CreateSessionResponse = self.inner.api.json(call)?;
        let id = response
            .session_id
            .ok_or_else(|| Error::protocol("POST /api/2.0/sql/sessions: no session_id"))?;
        validate_id(&id, "session_id")?;
        tracing::debug!(session_id = %id, "session created");
        Ok(Session {
            id,
            warehouse_id: self.inner.config.warehouse_id().to_owned(),
            api: self.inner.api.clone(),
            closed: AtomicBool::new(false),
        })
    }

    /// Creates a session with the config's catalog, schema and session confs.
    pub fn create_default_session(&self) -> Result<Session> {
        let config = &self.inner.config;
        self.create_session(config.catalog(), config.schema(), config.session_confs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeouts_fit_the_api() {
        assert_eq!(wire_wait_timeout(Duration::ZERO), "0s");
        assert_eq!(wire_wait_timeout(Duration::from_millis(4900)), "0s");
        assert_eq!(wire_wait_timeout(Duration::from_secs(5)), "5s");
        assert_eq!(wire_wait_timeout(Duration::from_secs(10)), "10s");
        assert_eq!(wire_wait_timeout(Duration::from_secs(3600)), "50s");
    }

    #[test]
    fn params_render_values_and_types() {
        let p = Param::new("id", 42);
        assert_eq!((p.value(), p.type_name()), (Some("42"), Some("INT")));
        let p = Param::new("x", 1.5f64);
        assert_eq!((p.value(), p.type_name()), (Some("1.5"), Some("DOUBLE")));
        let p = Param::new("x", f64::INFINITY);
        assert_eq!(p.value(), Some("Infinity"));
        let p = Param::new("s", "O'Brien");
        assert_eq!(
            (p.value(), p.type_name()),
            (Some("O'Brien"), Some("STRING"))
        );
        let p = Param::new("n", None::<i64>);
        assert_eq!((p.value(), p.type_name()), (None, None));
        let p = Param::null("n", "DATE");
        assert_eq!((p.value(), p.type_name()), (None, Some("DATE")));
        let p = Param::new("d", ParamValue::typed("12.50", "DECIMAL(10,2)"));
        assert_eq!(p.type_name(), Some("DECIMAL(10,2)"));
        let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
        assert_eq!(Param::new("d", date).value(), Some("2024-02-29"));
        let ts = date.and_hms_micro_opt(1, 2, 3, 4).expect("ts");
        let p = Param::new("t", ts);
        assert_eq!(
            (p.value(), p.type_name()),
            (Some("2024-02-29T01:02:03.000004"), Some("TIMESTAMP_NTZ"))
        );
        let p = Param::positional(true);
        assert_eq!((p.name(), p.value()), (None, Some("true")));
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("01ef9de2-db21-16af-b4cb-9ccf302d746b", "id").is_ok());
        assert!(validate_id("../../etc", "id").is_err());
        assert!(validate_id("a?b", "id").is_err());
        assert!(validate_id("", "id").is_err());
    }

    fn response(json: &str) -> StatementResponse {
        let wire: wire::StatementResponse = serde_json::from_str(json).expect("json");
        StatementResponse::from_wire(wire, "test").expect("response")
    }

    #[test]
    fn failed_statements_carry_sql_state() {
        let r = response(
            r#"{"statement_id":"s1","status":{"state":"FAILED","error":{"error_code":"BAD_REQUEST","message":"\n[PARSE_SYNTAX_ERROR] Syntax error at or near 'INSER'. SQLSTATE: 42601 (line 1, pos 0)\n"}}}"#,
        );
        let e = r.error().expect("failed");
        assert_eq!(e.sql_state(), Some("42601"));
        assert_eq!(e.error_code(), Some("BAD_REQUEST"));
        let r = response(
            r#"{"statement_id":"s1","status":{"state":"FAILED","sql_state":"42P01","error":{"message":"no table"}}}"#,
        );
        assert_eq!(r.error().expect("failed").sql_state(), Some("42P01"));
        let r = response(r#"{"statement_id":"s1","status":{"state":"CANCELED"}}"#);
        assert!(r.error().expect("canceled").is_canceled());
        let r = response(r#"{"statement_id":"s1","status":{"state":"CLOSED"},"manifest":{}}"#);
        assert!(r.error().is_none() && r.has_result());
        let r = response(r#"{"statement_id":"s1","status":{"state":"CLOSED"}}"#);
        assert!(r.error().is_some());
    }

    #[test]
    fn responses_without_id_or_state_are_protocol_errors() {
        for json in [
            r#"{"status":{"state":"SUCCEEDED"}}"#,
            r#"{"statement_id":"s"}"#,
            r#"{"statement_id":"../x","status":{"state":"SUCCEEDED"}}"#,
        ] {
            let wire: wire::StatementResponse = serde_json::from_str(json).expect("json");
            let err = StatementResponse::from_wire(wire, "test").expect_err(json);
            assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        }
    }

    #[test]
    fn absurd_chunk_counts_are_protocol_errors_not_allocations() {
        // Per-chunk bookkeeping is sized by total_chunk_count: a hostile or corrupt value must
        // be refused, not allocated (i64::MAX chunks overflowed the allocation: a panic).
        for count in ["9223372036854775807", "1048577"] {
            let r = response(&format!(
                r#"{{"statement_id":"s","status":{{"state":"SUCCEEDED"}},"manifest":{{"format":"ARROW_STREAM",
                    "schema":{{"column_count":1,"columns":[{{"name":"a","type_name":"INT","type_text":"INT","position":0}}]}},
                    "total_chunk_count":"{count}","total_row_count":1}}}}"#
            ));
            let err = r.into_stream_input("UTC").err().expect(count);
            assert!(matches!(err, Error::Protocol(_)), "{err:?}");
            assert!(err.to_string().contains(count), "{err}");
        }
        let r = response(
            r#"{"statement_id":"s","status":{"state":"SUCCEEDED"},"manifest":{"format":"ARROW_STREAM",
                "schema":{"column_count":0},"total_chunk_count":3,"total_row_count":0}}"#,
        );
        let input = r.into_stream_input("UTC").expect("a sane count");
        assert_eq!((input.total_chunk_count, input.chunks.len()), (3, 3));
    }

    #[test]
    fn manifest_schema_is_checked() {
        let r = response(
            r#"{"statement_id":"s","status":{"state":"SUCCEEDED"},"manifest":{"schema":{"column_count":2,"columns":[{"name":"a","type_name":"INT","type_text":"INT","position":0}]}}}"#,
        );
        assert!(r.result_schema("UTC").is_err());
        let r = response(
            r#"{"statement_id":"s","status":{"state":"SUCCEEDED"},"manifest":{"schema":{"column_count":"2","columns":[
                {"name":"b","type_name":"STRING","type_text":"STRING","position":"1"},
                {"name":"a","type_name":"DECIMAL","type_text":"DECIMAL(10,2)","type_precision":10,"type_scale":2,"position":0}]}}}"#,
        );
        let s = r.result_schema("UTC").expect("schema");
        assert_eq!(s.columns()[0].name, "a");
        assert_eq!(
            s.arrow_schema().field(0).data_type(),
            &arrow::datatypes::DataType::Decimal128(10, 2)
        );
    }
}
