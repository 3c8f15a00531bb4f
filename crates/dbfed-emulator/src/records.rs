//! Introspection records: what the emulator did, for tests and benchmarks
//! (`EmulatorHandle::statements`, `GET /_emulator/statements`).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The lifecycle state of a statement, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatementState {
    /// Queued, waiting for a free slot.
    Pending,
    /// Executing.
    Running,
    /// Finished; results fetchable.
    Succeeded,
    /// Failed; `status.error` says why.
    Failed,
    /// Canceled by the client (or by `on_wait_timeout: CANCEL`).
    Canceled,
    /// Closed by the client, or its results expired.
    Closed,
}

impl StatementState {
    /// The wire name (`PENDING`, `RUNNING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementState::Pending => "PENDING",
            StatementState::Running => "RUNNING",
            StatementState::Succeeded => "SUCCEEDED",
            StatementState::Failed => "FAILED",
            StatementState::Canceled => "CANCELED",
            StatementState::Closed => "CLOSED",
        }
    }

    /// Whether the state is final (SUCCEEDED, FAILED, CANCELED or CLOSED).
    pub fn is_terminal(self) -> bool {
        !matches!(self, StatementState::Pending | StatementState::Running)
    }
}

/// A statement parameter as received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParameterRecord {
    /// `name` of a `:name` marker.
    pub name: Option<String>,
    /// `ordinal` of a `?` marker (1-based).
    pub ordinal: Option<usize>,
    /// `value`; `None` is NULL.
    pub value: Option<String>,
    /// `type`; `None` means STRING.
    #[serde(rename = "type")]
    pub type_text: Option<String>,
}

impl ParameterRecord {
    /// Bytes of the parameter's name, value and type text.
    pub fn text_bytes(&self) -> u64 {
        [&self.name, &self.value, &self.type_text]
            .into_iter()
            .flatten()
            .map(|t| t.len() as u64)
            .sum()
    }
}

/// Everything the emulator knows about one statement.
#[derive(Clone, Debug, Serialize)]
pub struct StatementRecord {
    /// `statement_id`.
    pub id: String,
    /// SQL text.
    pub sql: String,
    /// Parameters as received.
    pub parameters: Vec<ParameterRecord>,
    /// What the client sent to describe the statement: the bytes of its SQL text plus the
    /// names, values and types of its parameters (the JSON framing is not counted).
    pub request_bytes: u64,
    /// Current state.
    pub state: StatementState,
    /// `warehouse_id` of the request.
    pub warehouse_id: String,
    /// Session the statement ran in, if any.
    pub session_id: Option<String>,
    /// Effective catalog.
    pub catalog: Option<String>,
    /// Effective schema.
    pub schema: Option<String>,
    /// `INLINE` or `EXTERNAL_LINKS`.
    pub disposition: String,
    /// `JSON_ARRAY`, `ARROW_STREAM` or `CSV`.
    pub format: String,
    /// `LZ4_FRAME` or `NONE`.
    pub result_compression: String,
    /// Who ran it: `pat:<sha256 prefix>` for a static token (see [`crate::token_identity`]),
    /// `oauth:<client id>` / `azure:<client id>` for issued tokens. Never the token itself.
    pub identity: String,
    /// When the request arrived.
    pub created_at: DateTime<Utc>,
    /// When it left the queue (RUNNING).
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether the engine query is still alive (its stream not dropped yet).
    pub engine_active: bool,
    /// Rows produced (after `row_limit` / `byte_limit`).
    pub rows: u64,
    /// Chunks produced.
    pub chunks: usize,
    /// Whether `row_limit`/`byte_limit` cut the result.
    pub truncated: bool,
    /// Result bytes served to clients (inline chunks and downloads).
    pub bytes_served: u64,
    /// Chunk responses and downloads served.
    pub chunks_served: u64,
    /// `error_code` of a FAILED statement.
    pub error_code: Option<String>,
    /// `message` of a FAILED statement.
    pub error_message: Option<String>,
    /// `sql_state` of a FAILED statement.
    pub sql_state: Option<String>,
}

/// One HTTP request the emulator answered (the newest 10 000 are kept).
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, without the query string (at most 1 KiB; longer ones are cut).
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// Scheme of the `Authorization` header (`Bearer`, `Basic`), never the credential.
    pub auth_scheme: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub at: DateTime<Utc>,
}
