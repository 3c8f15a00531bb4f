//! Typed errors of the executor.

use std::time::Duration;

/// The error a [`Driver`](crate::Driver) or [`Connection`](crate::Connection) returns: the
/// driver's own error, boxed, plus whether the connection it happened on is unusable.
///
/// The original error stays reachable through [`DriverError::downcast_ref`] (for the Databricks
/// driver: [`dbfed_databricks::Error`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct DriverError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
    broken: bool,
}

impl DriverError {
    /// An error after which the connection can still be used (a SQL error, a cancellation).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            source: source.into(),
            broken: false,
        }
    }

    /// An error after which the connection must be discarded (transport failure, lost session).
    pub fn broken(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            source: source.into(),
            broken: true,
        }
    }

    /// Whether the connection this error happened on must not be used again.
    pub fn is_connection_broken(&self) -> bool {
        self.broken
    }

    /// The driver's error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }
}

/// Invalid [`ExecutorBuilder`](crate::ExecutorBuilder) settings, rejected at build time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid executor configuration: {0}")]
pub struct ConfigError(pub(crate) String);

/// Everything a query run through the [`Executor`](crate::Executor) can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The admission queue was full: the query was rejected at once (maps to
    /// `RESOURCE_EXHAUSTED`).
    #[error("executor overloaded: the admission queue is full ({queue_depth} queries waiting)")]
    Overloaded {
        /// The configured queue depth.
        queue_depth: usize,
    },

    /// The query waited in the admission queue longer than `queue_timeout`.
    #[error("query waited {waited:?} in the admission queue (queue_timeout {timeout:?})")]
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
        /// The configured `queue_timeout`.
        timeout: Duration,
    },

    /// No session became free within `pool_timeout`.
    #[error(
        "no session available within {timeout:?} (pool_size {pool_size}, max_overflow {max_overflow}, all in use)"
    )]
    PoolTimeout {
        /// The configured `pool_timeout`.
        timeout: Duration,
        /// The configured `pool_size`.
        pool_size: usize,
        /// The configured `max_overflow`.
        max_overflow: usize,
    },

    /// The driver failed: connecting, running the statement or reading its result.
    #[error("driver error: {0}")]
    Driver(#[from] DriverError),

    /// The driver panicked while running the query; the connection was discarded.
    #[error("the driver panicked while running the query: {message}")]
    WorkerPanic {
        /// The panic payload, when it was a string.
        message: String,
    },

    /// The query was canceled.
    #[error("the query was canceled")]
    Canceled,

    /// The executor is shutting down (or was shut down) and no longer runs queries.
    #[error("the executor is shut down")]
    Shutdown,

    /// The worker stopped sending results without reporting the end of the stream.
    #[error("the worker stopped before the end of the result")]
    Incomplete,
}

impl ExecutorError {
    /// Whether the executor refused the query for lack of capacity (`Overloaded`,
    /// `QueueTimeout`, `PoolTimeout`): retrying later may succeed.
    pub fn is_resource_exhausted(&self) -> bool {
        matches!(
            self,
            ExecutorError::Overloaded { .. }
                | ExecutorError::QueueTimeout { .. }
                | ExecutorError::PoolTimeout { .. }
        )
    }

    /// Whether a deadline of the executor fired (`QueueTimeout`, `PoolTimeout`).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ExecutorError::QueueTimeout { .. } | ExecutorError::PoolTimeout { .. }
        )
    }

    /// The driver's error, if it is an `E` (e.g. [`dbfed_databricks::Error`]).
    pub fn driver_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            ExecutorError::Driver(d) => d.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// The executor's result type.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

impl From<ExecutorError> for arrow::error::ArrowError {
    fn from(e: ExecutorError) -> Self {
        arrow::error::ArrowError::ExternalError(Box::new(e))
    }
}
