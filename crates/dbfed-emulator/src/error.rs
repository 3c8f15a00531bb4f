//! Start-up errors (public) and HTTP error responses (internal).

use std::path::PathBuf;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The SQL engine failed to start (TPC-H generation, data directory).
    #[error("the SQL engine failed to start: {0}")]
    Engine(#[from] EngineError),
    /// A TLS certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// The runtime of a [`crate::BackgroundEmulator`] could not be created.
    #[error("cannot create the emulator's runtime: {0}")]
    Runtime(std::io::Error),
    /// The thread of a [`crate::BackgroundEmulator`] stopped before the server was ready.
    #[error("the emulator thread stopped before the server was ready")]
    ThreadExited,
}

/// A request failure answered with a non-2xx status and a Databricks-style JSON body
/// `{"error_code", "message"}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub error_code: serde_json::Value,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, error_code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code: serde_json::Value::String(error_code.to_owned()),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 400 `INVALID_PARAMETER_VALUE`: the documented answer to bad request fields.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    /// 400 `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 401 as recorded from a real workspace when no (or a non-Bearer) credential is sent.
    pub fn unauthenticated() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error_code: serde_json::Value::from(401),
            message: "Credential was not sent or was of an unsupported type for this API.".into(),
            headers: vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"DatabricksRealm\""),
            )],
        }
    }

    /// 403 as recorded from a real workspace for an unknown or expired token.
    pub fn invalid_token() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error_code: serde_json::Value::from(403),
            message: "Invalid access token.".into(),
            headers: Vec::new(),
        }
    }

    /// 403 `PERMISSION_DENIED`: authenticated, but not allowed (e.g. no CAN USE on the
    /// warehouse).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    /// 429 with `Retry-After` (seconds).
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u32) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", message);
        e.headers
            .push((header::RETRY_AFTER, HeaderValue::from(retry_after_secs)));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.error_code, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// An object-store-style XML error (what presigned cloud-storage URLs answer), used by the
/// external-link download path.
pub(crate) fn object_store_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        )],
        body,
    )
        .into_response()
}
