//! A bounded blocking-thread executor for synchronous SQL drivers, with a session pool and an
//! async bridge.
//!
//! Databricks drivers are synchronous. The [`Executor`] runs them on a fixed set of dedicated,
//! named OS threads (`dbfed-worker-N`), never on the async runtime or tokio's shared blocking
//! pool, so thread count stays bounded under any load:
//!
//! - an **admission queue** (FIFO, `queue_depth`): a full queue fails at once with
//!   [`ExecutorError::Overloaded`]; a wait longer than `queue_timeout` fails with
//!   [`ExecutorError::QueueTimeout`]; identities ([`Executor::query_as`]) take turns and have
//!   their own bound, so one user cannot starve the others;
//! - a **session pool** with SQLAlchemy's semantics (`pool_size`, `max_overflow`,
//!   `pool_timeout` → [`ExecutorError::PoolTimeout`], `pool_recycle`, `pre_ping`); broken
//!   sessions are discarded;
//! - an **async bridge**: [`Executor::query`] resolves to a [`QueryStream`] of record batches
//!   delivered through a bounded channel (`stream_buffer`), so a slow consumer blocks the worker
//!   instead of growing memory; errors and driver panics are the stream's last item;
//! - **cancel on drop**: dropping the future or the stream removes a queued query from the
//!   queue, or cancels the running statement on the warehouse; its thread and session return;
//! - **metrics** ([`Executor::metrics`]) and a `dbfed_query` tracing span per query.
//!
//! Two [`ExecutionMode`]s: thread-per-query (a worker is held for the whole statement) and
//! submit-and-poll (statements are submitted with `wait_timeout = 0s`, one poller thread tracks
//! them all, workers are held only to submit and to read results).
//!
//! ```no_run
//! use dbfed_databricks::{Client, Param, config::ClientConfig};
//! use dbfed_executor::{DatabricksDriver, Executor};
//! use futures::TryStreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::builder()
//!     .host("adb-1234.5.azuredatabricks.net")
//!     .warehouse_id("8cfbc99c31463743")
//!     .token("dapi-example")
//!     .build()?;
//! let client = Client::new(config)?;
//! let executor = Executor::builder(DatabricksDriver::new(client))
//!     .threads(16)
//!     .pool_size(16)
//!     .build()?;
//! let stream = executor
//!     .query("SELECT * FROM samples.tpch.nation WHERE n_regionkey = :r", &[Param::new("r", 1)])
//!     .await?;
//! let batches: Vec<_> = stream.try_collect().await?;
//! # Ok(()) }
//! ```

mod databricks;
mod driver;
mod error;
mod executor;
mod metrics;
mod pool;
mod queue;
mod stream;

pub use databricks::{DatabricksConnection, DatabricksDriver, DatabricksPending};
pub use dbfed_databricks::Param;
pub use driver::{CancelToken, Connection, Driver, Execution, PendingStatement, Submitted};
pub use error::{ConfigError, DriverError, ExecutorError, Result};
pub use executor::{ExecutionMode, Executor, ExecutorBuilder};
pub use metrics::{HistogramSnapshot, MetricsSnapshot};
pub use stream::{QueryStream, SendableStream};
