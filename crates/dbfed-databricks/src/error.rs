//! The one error type of this crate.
//!
//! Every failure is an [`Error`]; callers branch on the predicates ([`Error::is_retryable`],
//! [`Error::is_auth`], [`Error::is_timeout`], [`Error::is_canceled`]) and read Databricks' own
//! diagnosis through [`Error::error_code`], [`Error::sql_state`] and [`Error::http_status`].
//! Messages never contain tokens, and URLs of presigned result links are shown without their
//! query string (which carries the signature).

use std::time::Duration;

use crate::auth::AuthError;
use crate::config::ConfigError;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Databricks `error_code`s that describe a transient condition of the warehouse.
const TRANSIENT_ERROR_CODES: &[&str] = &[
    "TEMPORARILY_UNAVAILABLE",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
    "SERVICE_UNDER_MAINTENANCE",
    "RESOURCE_EXHAUSTED",
];

/// Everything that can go wrong talking to a Databricks SQL Warehouse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is invalid or incomplete.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),

    /// No token could be obtained.
    #[error("authentication error: {0}")]
    Auth(#[from] AuthError),

    /// The workspace answered a request with a non-success HTTP status.
    #[error("{request} failed with HTTP {status}{}: {message}", fmt_code(.error_code))]
    Http {
        /// What was requested, e.g. `POST /api/2.0/sql/statements` (never a query string).
        request: String,
        /// The HTTP status code.
        status: u16,
        /// Databricks' `error_code` (`RESOURCE_EXHAUSTED`, `403`, ...), when the body had one.
        error_code: Option<String>,
        /// Databricks' `message`, or the start of a non-JSON body.
        message: String,
    },

    /// The statement ran and failed on the warehouse (`status.state = FAILED`).
    #[error("statement {statement_id} failed{}{}: {message}", fmt_code(.error_code), fmt_sql_state(.sql_state))]
    StatementFailed {
        /// The statement id.
        statement_id: String,
        /// Databricks' `error_code` (`BAD_REQUEST`, ...).
        error_code: Option<String>,
        /// The error message (may span lines; contains the SQL excerpt, never secrets).
        message: String,
        /// The SQLSTATE (`42601` for a syntax error, ...), from `sql_state` or the message.
        sql_state: Option<String>,
    },

    /// The statement was canceled (by this client, another client or the warehouse).
    #[error("statement {statement_id} was canceled")]
    Canceled {
        /// The statement id (empty when canceled before the warehouse assigned one).
        statement_id: String,
    },

    /// A client-side deadline fired (statement timeout, wait deadline, retry budget).
    #[error("timed out after {elapsed:?} while {operation}")]
    Timeout {
        /// What was being waited for.
        operation: String,
        /// How long it ran.
        elapsed: Duration,
        /// The statement concerned, if any (it was canceled on the warehouse).
        statement_id: Option<String>,
    },

    /// The HTTP request could not be completed (connection refused, reset, TLS, I/O timeout).
    #[error("transport error during {request}: {source}")]
    Transport {
        /// What was requested (method and path, or a link URL without its query string).
        request: String,
        /// The underlying error, stripped of its URL.
        #[source]
        source: reqwest::Error,
    },

    /// The warehouse answered something this client does not understand: malformed JSON,
    /// a missing field, an unexpected format.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A result chunk could not be decoded: truncated or corrupt LZ4 / Arrow IPC, a value that
    /// does not fit its declared type.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// Which part of the result (`chunk 3 of statement ...`, `column ts`, ...).
        what: String,
        /// What was wrong.
        message: String,
    },

    /// A chunk held a different number of rows than the manifest promised.
    #[error(
        "{} of statement {statement_id} has {actual} rows but the manifest promised {expected}",
        .chunk_index.map(|i| format!("chunk {i}")).unwrap_or_else(|| "the result".to_owned())
    )]
    ResultMismatch {
        /// The statement id.
        statement_id: String,
        /// The chunk index, or `None` for the whole result.
        chunk_index: Option<usize>,
        /// Rows promised by the manifest.
        expected: u64,
        /// Rows actually decoded.
        actual: u64,
    },

    /// The result uses a feature or type this client does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

fn fmt_code(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default()
}

fn fmt_sql_state(state: &Option<String>) -> String {
    state
        .as_ref()
        .map(|s| format!(" (SQLSTATE {s})"))
        .unwrap_or_default()
}

impl Error {
    /// Whether repeating the same operation later may succeed: throttling (429), a temporarily
    /// unavailable service (503/504 and transient `error_code`s), 5xx, connection failures and
    /// I/O timeouts. Client-side deadlines, cancellations, auth and SQL errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http {
                status, error_code, ..
            } => {
                matches!(*status, 429 | 500 | 502 | 503 | 504)
                    || error_code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_ERROR_CODES.contains(&c))
            }
            Error::StatementFailed { error_code, .. } => error_code
                .as_deref()
                .is_some_and(|c| TRANSIENT_ERROR_CODES.contains(&c)),
            Error::Transport { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_request()
            }
            Error::Auth(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Whether the failure is about credentials or permissions (auth provider failures, HTTP
    /// 401 and 403).
    pub fn is_auth(&self) -> bool {
        match self {
            Error::Auth(_) => true,
            Error::Http { status, .. } => matches!(*status, 401 | 403),
            Error::StatementFailed { error_code, .. } => {
                matches!(
                    error_code.as_deref(),
                    Some("UNAUTHENTICATED" | "PERMISSION_DENIED")
                )
            }
            _ => false,
        }
    }

    /// Whether a deadline fired: a client-side timeout, an HTTP I/O timeout, or the warehouse's
    /// own `DEADLINE_EXCEEDED` / HTTP 504.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Auth(e) => e.is_timeout(),
            Error::Transport { source, .. } => source.is_timeout(),
            Error::Http {
                status, error_code, ..
            } => *status == 504 || error_code.as_deref() == Some("DEADLINE_EXCEEDED"),
            Error::StatementFailed { error_code, .. } => {
                error_code.as_deref() == Some("DEADLINE_EXCEEDED")
            }
            _ => false,
        }
    }

    /// Whether the statement was canceled.
    pub fn is_canceled(&self) -> bool {
        matches!(self, Error::Canceled { .. })
    }

    /// The SQLSTATE of a failed statement (`42601`, `42P01`, ...).
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            Error::StatementFailed { sql_state, .. } => sql_state.as_deref(),
            _ => None,
        }
    }

    /// Databricks' `error_code` (`BAD_REQUEST`, `RESOURCE_EXHAUSTED`, `403`, ...).
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Error::Http { error_code, .. } | Error::StatementFailed { error_code, .. } => {
                error_code.as_deref()
            }
            _ => None,
        }
    }

    /// The HTTP status of a rejected request.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            Error::Transport { source, .. } => source.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// The statement this error is about, when known.
    pub fn statement_id(&self) -> Option<&str> {
        match self {
            Error::StatementFailed { statement_id, .. }
            | Error::Canceled { statement_id }
            | Error::ResultMismatch { statement_id, .. } => Some(statement_id),
            Error::Timeout { statement_id, .. } => statement_id.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol(message.into())
    }

    pub(crate) fn decode(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Decode {
            what: what.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn transport(request: impl Into<String>, source: reqwest::Error) -> Self {
        Error::Transport {
            request: request.into(),
            source: source.without_url(),
        }
    }
}

/// Converts to an Arrow error for [`arrow::record_batch::RecordBatchReader`] consumers; the
/// typed [`Error`] stays reachable by downcasting the `ExternalError`.
impl From<Error> for arrow::error::ArrowError {
    fn from(value: Error) -> Self {
        arrow::error::ArrowError::ExternalError(Box::new(value))
    }
}

/// Extracts a SQLSTATE from a Databricks message (`... SQLSTATE: 42601 ...`).
pub(crate) fn sql_state_from_message(message: &str) -> Option<String> {
    let idx = message.find("SQLSTATE")?;
    let rest = message[idx + "SQLSTATE".len()..].trim_start_matches([':', ' ', '=']);
    let state: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (state.len() == 5).then_some(state)
}

/// A URL fit for error messages and logs: scheme, host, port and path, never the query string
/// or fragment (presigned links carry their signature there) nor user info.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// Strips the query string of every `http(s)://` URL inside free text (error bodies, malformed
/// JSON shown in errors), where presigned result links carry their signature.
pub(crate) fn redact_urls_in(text: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `text`.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = find_url_start(&lower[pos..]) {
        let start = pos + found;
        out.push_str(&text[pos..start]);
        let rest = &text[start..];
        let len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(rest.len());
        let url = &rest[..len];
        match url.find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[REDACTED]");
            }
            None => out.push_str(url),
        }
        pos = start + len;
    }
    out.push_str(&text[pos..]);
    out
}

fn find_url_start(lower: &str) -> Option<usize> {
    match (lower.find("https://"), lower.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_text_lose_their_query_string() {
        let text = r#"{"external_link":"https://b.s3.amazonaws.com/x?X-Amz-Signature=s3cr3t&a=b","n":"HTTP://h/p#frag"} see http://h/q"#;
        let out = redact_urls_in(text);
        assert!(!out.contains("s3cr3t") && !out.contains("frag"), "{out}");
        assert!(
            out.contains("https://b.s3.amazonaws.com/x?[REDACTED]"),
            "{out}"
        );
        assert!(out.ends_with("see http://h/q"), "{out}");
        assert_eq!(redact_urls_in("no links here"), "no links here");
        assert_eq!(
            redact_urls_in("ünïcödé https://h/ä?sïg=1 ü"),
            "ünïcödé https://h/ä?[REDACTED] ü"
        );
    }

    #[test]
    fn sql_state_is_parsed_from_messages() {
        let msg = "\n[PARSE_SYNTAX_ERROR] Syntax error at or near 'INSER'. SQLSTATE: 42601 (line 1, pos 0)";
        assert_eq!(sql_state_from_message(msg).as_deref(), Some("42601"));
        assert_eq!(
            sql_state_from_message("[TABLE_OR_VIEW_NOT_FOUND] x SQLSTATE: 42P01; line 1")
                .as_deref(),
            Some("42P01")
        );
        assert_eq!(sql_state_from_message("no state here"), None);
        assert_eq!(sql_state_from_message("SQLSTATE: 42"), None);
        assert_eq!(sql_state_from_message("SQLSTATE"), None);
    }

    #[test]
    fn urls_lose_their_query_string() {
        let url =
            "https://bucket.s3.amazonaws.com/a/b%3Ac?X-Amz-Signature=secret&X-Amz-Credential=k";
        let redacted = redact_url(url);
        assert_eq!(redacted, "https://bucket.s3.amazonaws.com/a/b%3Ac");
        assert!(!redact_url("https://user:pw@h/p?sig=1").contains("pw"));
        assert_eq!(redact_url("not a url?sig=secret"), "not a url");
    }

    #[test]
    fn predicates_classify_errors() {
        let throttled = Error::Http {
            request: "POST /api/2.0/sql/statements".into(),
            status: 429,
            error_code: Some("RESOURCE_EXHAUSTED".into()),
            message: "slow down".into(),
        };
        assert!(throttled.is_retryable());
        assert!(!throttled.is_auth());
        assert_eq!(throttled.http_status(), Some(429));
        assert_eq!(throttled.error_code(), Some("RESOURCE_EXHAUSTED"));

        let forbidden = Error::Http {
            request: "GET /x".into(),
            status: 403,
            error_code: Some("403".into()),
            message: "Invalid access token.".into(),
        };
        assert!(forbidden.is_auth());
        assert!(!forbidden.is_retryable());

        let failed = Error::StatementFailed {
            statement_id: "s".into(),
            error_code: Some("BAD_REQUEST".into()),
            message: "boom".into(),
            sql_state: Some("42601".into()),
        };
        assert_eq!(failed.sql_state(), Some("42601"));
        assert!(!failed.is_retryable());
        assert!(failed.to_string().contains("42601"));
        assert!(failed.to_string().contains("BAD_REQUEST"));

        let timeout = Error::Timeout {
            operation: "waiting".into(),
            elapsed: Duration::from_secs(1),
            statement_id: Some("s".into()),
        };
        assert!(timeout.is_timeout() && !timeout.is_retryable());
        assert!(
            Error::Canceled {
                statement_id: "s".into()
            }
            .is_canceled()
        );
    }
}
