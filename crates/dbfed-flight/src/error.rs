//! The crate's error type and its one mapping to gRPC status codes.

use datafusion::error::DataFusionError;
use tonic::{Code, Status};

use crate::ticket::TicketError;

/// Name of the gRPC metadata entry that carries a failed statement's SQLSTATE.
pub const SQLSTATE_METADATA_KEY: &str = "x-dbfed-sqlstate";

/// Everything the Flight SQL server can fail with.
///
/// Converted to a [`tonic::Status`] at the gRPC boundary by the one `From` impl below; the
/// messages never contain tokens or passwords.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlightSqlError {
    /// No or invalid credentials (`UNAUTHENTICATED`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The caller is known but may not do this (`PERMISSION_DENIED`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A ticket, handle or token was refused.
    #[error(transparent)]
    Ticket(#[from] TicketError),

    /// The request is malformed: bad SQL, bad parameters (`INVALID_ARGUMENT`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A table, schema or catalog does not exist (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),

    /// The server does not implement this request (`UNIMPLEMENTED`).
    #[error("unimplemented: {0}")]
    Unimplemented(String),

    /// A server bound was reached; retry later (`RESOURCE_EXHAUSTED`).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),

    /// Planning or running the query failed in DataFusion.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),

    /// The executor refused or failed the query.
    #[error("{0}")]
    Executor(#[from] dbfed_executor::ExecutorError),

    /// The Databricks client failed.
    #[error("{0}")]
    Databricks(#[from] dbfed_databricks::Error),

    /// Registering or querying the Databricks catalogs failed.
    #[error("{0}")]
    Source(Box<dbfed_datafusion::Error>),

    /// Arrow encoding or decoding failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Building or decoding Flight messages failed.
    #[error("flight error: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),

    /// Invalid server configuration (TLS material, builder settings).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Binding or serving the listener failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The address concerned.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The gRPC transport failed (TLS setup, server error).
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl FlightSqlError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        classify(self).0
    }

    /// The SQLSTATE of a failed Databricks statement somewhere in this error, if any.
    pub fn sql_state(&self) -> Option<String> {
        classify(self).1
    }
}

impl From<dbfed_datafusion::Error> for FlightSqlError {
    fn from(err: dbfed_datafusion::Error) -> Self {
        FlightSqlError::Source(Box::new(err))
    }
}

impl From<FlightSqlError> for Status {
    fn from(err: FlightSqlError) -> Self {
        let (code, sql_state) = classify(&err);
        let mut status = Status::new(code, err.to_string());
        if let Some(state) = sql_state
            && let Ok(value) = state.parse()
        {
            status.metadata_mut().insert(SQLSTATE_METADATA_KEY, value);
        }
        status
    }
}

/// The code and SQLSTATE of an error, looking through DataFusion / Arrow wrappers.
fn classify(err: &FlightSqlError) -> (Code, Option<String>) {
    match err {
        FlightSqlError::Unauthenticated(_) => (Code::Unauthenticated, None),
        FlightSqlError::PermissionDenied(_) => (Code::PermissionDenied, None),
        FlightSqlError::Ticket(TicketError::OtherPrincipal { .. }) => {
            (Code::PermissionDenied, None)
        }
        // Stale, not forged: the client should plan the query again.
        FlightSqlError::Ticket(TicketError::Expired { .. } | TicketError::Version { .. }) => {
            (Code::FailedPrecondition, None)
        }
        FlightSqlError::Ticket(_) => (Code::Unauthenticated, None),
        FlightSqlError::InvalidArgument(_) => (Code::InvalidArgument, None),
        FlightSqlError::NotFound(_) => (Code::NotFound, None),
        FlightSqlError::Unimplemented(_) => (Code::Unimplemented, None),
        FlightSqlError::ResourceExhausted(_) => (Code::ResourceExhausted, None),
        FlightSqlError::Config(_) => (Code::InvalidArgument, None),
        FlightSqlError::Io { .. } | FlightSqlError::Transport(_) => (Code::Unavailable, None),
        FlightSqlError::Internal(_) => (Code::Internal, None),
        FlightSqlError::Executor(e) => classify_executor(e),
        FlightSqlError::Databricks(e) => classify_databricks(e),
        FlightSqlError::Arrow(e) => classify_chain(e).unwrap_or((arrow_code(e), None)),
        FlightSqlError::Flight(arrow_flight::error::FlightError::Tonic(status)) => {
            (status.code(), None)
        }
        FlightSqlError::Flight(arrow_flight::error::FlightError::Arrow(e)) => {
            classify_chain(e).unwrap_or((arrow_code(e), None))
        }
        FlightSqlError::Flight(_) => (Code::Internal, None),
        FlightSqlError::DataFusion(e) => classify_datafusion(e),
        FlightSqlError::Source(e) => match e.as_ref() {
            dbfed_datafusion::Error::DataFusion(inner) => classify_datafusion(inner),
            other => classify_chain(other).unwrap_or((Code::Internal, None)),
        },
    }
}

fn classify_executor(e: &dbfed_executor::ExecutorError) -> (Code, Option<String>) {
    use dbfed_executor::ExecutorError as E;
    if let Some(db) = e.driver_error::<dbfed_databricks::Error>() {
        return classify_databricks(db);
    }
    let code = match e {
        E::Overloaded { .. } | E::PoolTimeout { .. } => Code::ResourceExhausted,
        E::QueueTimeout { .. } => Code::DeadlineExceeded,
        E::Canceled => Code::Cancelled,
        E::Shutdown => Code::Unavailable,
        _ => Code::Internal,
    };
    (code, None)
}

fn classify_databricks(e: &dbfed_databricks::Error) -> (Code, Option<String>) {
    use dbfed_databricks::Error as E;
    let sql_state = e.sql_state().map(str::to_owned);
    let code = if e.is_canceled() {
        Code::Cancelled
    } else if e.is_timeout() {
        Code::DeadlineExceeded
    } else if e.is_auth() {
        match (e.http_status(), e.error_code()) {
            (Some(401), _) | (_, Some("UNAUTHENTICATED")) => Code::Unauthenticated,
            (_, _) if matches!(e, E::Auth(_)) => Code::Unauthenticated,
            _ => Code::PermissionDenied,
        }
    } else if e.http_status() == Some(429) || e.error_code() == Some("RESOURCE_EXHAUSTED") {
        Code::ResourceExhausted
    } else if e.is_retryable() {
        Code::Unavailable
    } else if let E::StatementFailed { message, .. } = e {
        let state = sql_state.as_deref().unwrap_or("");
        if state == "42P01"
            || message.contains("TABLE_OR_VIEW_NOT_FOUND")
            || message.contains("SCHEMA_NOT_FOUND")
            || message.contains("CATALOG_NOT_FOUND")
        {
            Code::NotFound
        } else if state.starts_with("42") || state.starts_with("22") || state.starts_with("0A") {
            Code::InvalidArgument
        } else {
            Code::Internal
        }
    } else {
        match e {
            E::Config(_) => Code::FailedPrecondition,
            E::Unsupported(_) => Code::Unimplemented,
            E::Http { status: 404, .. } => Code::NotFound,
            E::Http { status: 400, .. } => Code::InvalidArgument,
            _ => Code::Internal,
        }
    };
    (code, sql_state)
}

/// Looks for an executor or Databricks error, or an exhausted memory pool, in the `source()`
/// chain of `err`.
fn classify_chain(err: &(dyn std::error::Error + 'static)) -> Option<(Code, Option<String>)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        // A memory pool refusal, however deep in a stream's wrappers (Arrow external errors,
        // shared errors of repartitioned inputs, operator context).
        if let Some(DataFusionError::ResourcesExhausted(_)) = e.downcast_ref::<DataFusionError>() {
            return Some((Code::ResourceExhausted, None));
        }
        if let Some(x) = e.downcast_ref::<dbfed_executor::ExecutorError>() {
            return Some(classify_executor(x));
        }
        if let Some(x) = e.downcast_ref::<dbfed_databricks::Error>() {
            return Some(classify_databricks(x));
        }
        if let Some(x) = e.downcast_ref::<FlightSqlError>() {
            return Some(classify(x));
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        current = e.source();
    }
    None
}

fn arrow_code(e: &arrow::error::ArrowError) -> Code {
    use arrow::error::ArrowError as A;
    match e {
        A::DivideByZero
        | A::ArithmeticOverflow(_)
        | A::CastError(_)
        | A::ParseError(_)
        | A::InvalidArgumentError(_)
        | A::ComputeError(_) => Code::InvalidArgument,
        A::NotYetImplemented(_) => Code::Unimplemented,
        A::MemoryError(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

fn classify_datafusion(e: &DataFusionError) -> (Code, Option<String>) {
    if let Some(found) = classify_chain(e) {
        return found;
    }
    if let DataFusionError::ResourcesExhausted(_) = e.find_root() {
        return (Code::ResourceExhausted, None);
    }
    let code = match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            return classify_datafusion(inner);
        }
        DataFusionError::Shared(inner) => return classify_datafusion(inner),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => return classify_datafusion(first),
            None => Code::Internal,
        },
        DataFusionError::ArrowError(a, _) => arrow_code(a),
        DataFusionError::SQL(_, _) => Code::InvalidArgument,
        DataFusionError::SchemaError(_, _) => Code::InvalidArgument,
        DataFusionError::Plan(message) => {
            if is_not_found(message) {
                Code::NotFound
            } else {
                Code::InvalidArgument
            }
        }
        DataFusionError::NotImplemented(_) => Code::Unimplemented,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::Configuration(_) => Code::InvalidArgument,
        DataFusionError::ExecutionJoin(_) => Code::Internal,
        _ => Code::Internal,
    };
    (code, None)
}

fn is_not_found(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    (lower.contains("table") || lower.contains("schema") || lower.contains("catalog"))
        && (lower.contains("not found") || lower.contains("does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn code_of(e: impl Into<FlightSqlError>) -> Code {
        Status::from(e.into()).code()
    }

    #[test]
    fn maps_executor_bounds_and_deadlines() {
        use dbfed_executor::ExecutorError as E;
        assert_eq!(
            code_of(E::Overloaded { queue_depth: 3 }),
            Code::ResourceExhausted
        );
        assert_eq!(
            code_of(E::PoolTimeout {
                timeout: Duration::from_secs(1),
                pool_size: 1,
                max_overflow: 0
            }),
            Code::ResourceExhausted
        );
        assert_eq!(
            code_of(E::QueueTimeout {
                waited: Duration::from_secs(2),
                timeout: Duration::from_secs(1)
            }),
            Code::DeadlineExceeded
        );
        // Wrapped in DataFusion and Arrow, as it comes out of a record batch stream.
        let wrapped = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::ExternalError(Box::new(
                E::Overloaded { queue_depth: 1 },
            ))),
            None,
        );
        assert_eq!(code_of(wrapped), Code::ResourceExhausted);
        let external = DataFusionError::External(Box::new(E::Overloaded { queue_depth: 1 }));
        assert_eq!(
            code_of(DataFusionError::Context("scan".into(), Box::new(external))),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn keeps_databricks_message_and_sqlstate() {
        let err = dbfed_databricks::Error::StatementFailed {
            statement_id: "01ef".into(),
            error_code: Some("BAD_REQUEST".into()),
            message: "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'".into(),
            sql_state: Some("42601".into()),
        };
        let status = Status::from(FlightSqlError::from(err));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("PARSE_SYNTAX_ERROR"), "{status}");
        assert!(status.message().contains("42601"), "{status}");
        assert_eq!(
            status
                .metadata()
                .get(SQLSTATE_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("42601")
        );

        let missing = dbfed_databricks::Error::StatementFailed {
            statement_id: "01ef".into(),
            error_code: Some("BAD_REQUEST".into()),
            message: "[TABLE_OR_VIEW_NOT_FOUND] The table `x` cannot be found".into(),
            sql_state: Some("42P01".into()),
        };
        assert_eq!(code_of(missing), Code::NotFound);
        let denied = dbfed_databricks::Error::Http {
            request: "POST /api/2.0/sql/statements".into(),
            status: 403,
            error_code: Some("PERMISSION_DENIED".into()),
            message: "no".into(),
        };
        assert_eq!(code_of(denied), Code::PermissionDenied);
        let unauth = dbfed_databricks::Error::Http {
            request: "POST /api/2.0/sql/statements".into(),
            status: 401,
            error_code: None,
            message: "bad token".into(),
        };
        assert_eq!(code_of(unauth), Code::Unauthenticated);
        let throttled = dbfed_databricks::Error::Http {
            request: "POST /api/2.0/sql/statements".into(),
            status: 429,
            error_code: None,
            message: "slow down".into(),
        };
        assert_eq!(code_of(throttled), Code::ResourceExhausted);
        let timeout = dbfed_databricks::Error::Timeout {
            operation: "waiting".into(),
            elapsed: Duration::from_secs(1),
            statement_id: None,
        };
        assert_eq!(code_of(timeout), Code::DeadlineExceeded);
    }

    #[test]
    fn an_exhausted_memory_pool_is_resource_exhausted_however_wrapped() {
        use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryPool};
        use std::sync::Arc;

        // A real refusal from a 1 KiB pool, as an operator would get it.
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(1024));
        let reservation = MemoryConsumer::new("HashJoinInput[0]").register(&pool);
        let refused = reservation.try_grow(4096).expect_err("over the pool");
        assert!(
            matches!(refused, DataFusionError::ResourcesExhausted(_)),
            "{refused:?}"
        );
        let status = Status::from(FlightSqlError::from(refused));
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        // The message keeps what DataFusion says about the pool and its size.
        assert!(status.message().contains("HashJoinInput[0]"), "{status}");
        assert!(status.message().contains("pool_size"), "{status}");

        let exhausted = || DataFusionError::ResourcesExhausted("pool of 2 MiB is full".into());
        // As the operators and the record batch streams wrap it.
        let wrappings = [
            exhausted().context("Not enough memory to continue external sort"),
            DataFusionError::Shared(Arc::new(exhausted())),
            DataFusionError::ArrowError(
                Box::new(arrow::error::ArrowError::ExternalError(Box::new(
                    exhausted(),
                ))),
                None,
            ),
            DataFusionError::External(Box::new(exhausted())),
            DataFusionError::Collection(vec![exhausted()]),
        ];
        for wrapped in wrappings {
            let status = Status::from(FlightSqlError::from(wrapped));
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            assert!(
                status.message().contains("pool of 2 MiB is full"),
                "{status}"
            );
        }
        let arrow = arrow::error::ArrowError::ExternalError(Box::new(exhausted()));
        assert_eq!(code_of(arrow), Code::ResourceExhausted);
        let flight = arrow_flight::error::FlightError::Arrow(
            arrow::error::ArrowError::ExternalError(Box::new(exhausted())),
        );
        assert_eq!(code_of(flight), Code::ResourceExhausted);
    }

    #[test]
    fn maps_datafusion_planning_errors() {
        assert_eq!(
            code_of(DataFusionError::Plan(
                "table 'datafusion.public.nope' not found".into()
            )),
            Code::NotFound
        );
        assert_eq!(
            code_of(DataFusionError::Plan("bad things".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(DataFusionError::NotImplemented("x".into())),
            Code::Unimplemented
        );
        assert_eq!(
            code_of(FlightSqlError::Ticket(TicketError::OtherPrincipal {
                what: "ticket"
            })),
            Code::PermissionDenied
        );
        assert_eq!(
            code_of(FlightSqlError::Ticket(TicketError::Expired {
                what: "ticket"
            })),
            Code::FailedPrecondition
        );
        assert_eq!(
            code_of(FlightSqlError::Ticket(TicketError::Forged {
                what: "ticket"
            })),
            Code::Unauthenticated
        );
    }
}
