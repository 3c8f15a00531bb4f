//! Typed errors of the DataFusion integration.

use datafusion::error::DataFusionError;
use dbfed_executor::ExecutorError;

/// A boxed error from a lower layer (the executor, the type parser, DataFusion).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything registering, discovering and querying Databricks tables can fail with.
///
/// Errors never carry secrets: SQL text and identifiers only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The executor refused or failed a remote query.
    #[error("remote query failed: {0}")]
    Executor(#[from] ExecutorError),

    /// DataFusion rejected a plan or an expression.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    /// Reading the metadata of a catalog, schema or table failed.
    #[error("cannot discover {}: {source}", describe(.catalog, .schema.as_deref(), .table.as_deref()))]
    Discovery {
        /// The remote catalog.
        catalog: String,
        /// The remote schema, when the failure concerns one.
        schema: Option<String>,
        /// The remote table, when the failure concerns one.
        table: Option<String>,
        /// What went wrong.
        #[source]
        source: BoxError,
    },

    /// A remote table no longer has the columns or types it had when it was planned.
    #[error(
        "the schema of table {table} changed on the warehouse: expected {expected}, found {actual}"
    )]
    SchemaDrift {
        /// The remote table (`catalog.schema.table`).
        table: String,
        /// What the plan promised (column name and type).
        expected: String,
        /// What the warehouse returned.
        actual: String,
    },

    /// A column type of a remote table has no Arrow counterpart.
    #[error("table {table}, column {column}: unsupported type {type_text:?}: {source}")]
    UnsupportedType {
        /// The remote table (`catalog.schema.table`).
        table: String,
        /// The column.
        column: String,
        /// The Databricks type text.
        type_text: String,
        /// The type parser's error.
        #[source]
        source: Box<dbfed_databricks::Error>,
    },

    /// The table does not exist on the warehouse (or is not visible to this identity).
    #[error("table {0} not found on the warehouse")]
    TableNotFound(String),

    /// The columns of a listed table could not be read (permissions, a type without an Arrow
    /// counterpart, a broken share); the table shows no columns and cannot be queried.
    #[error("table {table} is listed but cannot be read: {reason}")]
    Unreadable {
        /// The remote table (`catalog.schema.table`).
        table: String,
        /// Why its columns could not be read.
        reason: String,
    },

    /// Invalid [`DatabricksSourceBuilder`](crate::DatabricksSourceBuilder) settings.
    #[error("invalid Databricks source configuration: {0}")]
    Config(String),
}

fn describe(catalog: &str, schema: Option<&str>, table: Option<&str>) -> String {
    match (schema, table) {
        (Some(s), Some(t)) => format!("table {catalog}.{s}.{t}"),
        (Some(s), None) => format!("schema {catalog}.{s}"),
        (None, Some(t)) => format!("table {catalog}.?.{t}"),
        (None, None) => format!("catalog {catalog}"),
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            Error::TableNotFound(_) | Error::Config(_) => DataFusionError::Plan(e.to_string()),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_errors_name_the_object() {
        let e = Error::Discovery {
            catalog: "samples".into(),
            schema: Some("tpch".into()),
            table: Some("nation".into()),
            source: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot discover table samples.tpch.nation: boom"
        );
        let e = Error::Discovery {
            catalog: "samples".into(),
            schema: None,
            table: None,
            source: "boom".into(),
        };
        assert_eq!(e.to_string(), "cannot discover catalog samples: boom");
    }

    #[test]
    fn datafusion_errors_pass_through() {
        let e: DataFusionError = Error::DataFusion(DataFusionError::Plan("x".into())).into();
        assert!(matches!(e, DataFusionError::Plan(m) if m == "x"));
        let e: DataFusionError = Error::TableNotFound("a.b.c".into()).into();
        assert!(e.to_string().contains("a.b.c"), "{e}");
    }
}
