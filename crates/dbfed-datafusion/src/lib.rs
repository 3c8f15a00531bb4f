//! Databricks catalogs, SQL pushdown and federation for DataFusion.
//!
//! [`DatabricksSource`] registers the Unity Catalog catalogs of a warehouse in a
//! [`SessionContext`](datafusion::prelude::SessionContext): `samples.tpch.lineitem` is then a
//! table like any other. Every remote statement goes through a
//! [`dbfed_executor::Executor`] (bounded, cancel on drop).
//!
//! How much runs on Databricks is the source's [`PushdownMode`]:
//! - [`PushdownMode::Full`] (with a session from [`federated_session_context`]): the largest
//!   subplan whose tables all belong to one warehouse and identity, and whose expressions
//!   Databricks evaluates the same way, becomes one statement (datafusion-federation);
//!   joins with local data run in DataFusion, and the join keys seen at runtime narrow the
//!   remote statement (runtime filters);
//! - [`PushdownMode::FilterProjection`]: each table is scanned on its own with its projection,
//!   filters and limit;
//! - [`PushdownMode::None`]: whole tables, the baseline.
//!
//! `EXPLAIN` shows the SQL sent (`DatabricksScanExec: sql=...`, or the federated node's
//! `sql=...`). Literals travel as statement parameters, identifiers are quoted.

mod catalog;
pub mod dialect;
mod error;
mod federation;
pub mod local;
pub mod params;
mod pushdown;
pub mod runtime_filter;
mod session;
mod source;
mod table;

pub use dialect::DatabricksDialect;
pub use error::{Error, Result};
pub use federation::DatabricksSqlExecutor;
pub use local::register_local_table;
pub use session::{federated_session_context, federated_session_state};
pub use source::{DatabricksSource, DatabricksSourceBuilder, PushdownMode};
pub use table::{DatabricksScanExec, DatabricksTable};
