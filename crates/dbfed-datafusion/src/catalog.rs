//! DataFusion `CatalogProvider` / `SchemaProvider` over the discovered Unity Catalog metadata.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use dbfed_executor::ExecutorError;

use crate::error::Error;
use crate::source::{Inner, RemoteName};

/// One remote catalog. Schema and table lists come from the source's cache (filled by
/// `register`/`refresh`); columns are read when a table is first looked up.
#[derive(Debug)]
pub(crate) struct DatabricksCatalog {
    inner: Arc<Inner>,
    catalog: String,
}

impl DatabricksCatalog {
    pub fn new(inner: Arc<Inner>, catalog: String) -> Self {
        Self { inner, catalog }
    }
}

impl CatalogProvider for DatabricksCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names(&self.catalog)
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let schema = self.inner.resolve_schema(&self.catalog, name)?;
        Some(Arc::new(DatabricksSchema {
            inner: Arc::clone(&self.inner),
            catalog: self.catalog.clone(),
            schema,
        }))
    }
}

/// One remote schema.
#[derive(Debug)]
pub(crate) struct DatabricksSchema {
    inner: Arc<Inner>,
    catalog: String,
    schema: String,
}

#[async_trait]
impl SchemaProvider for DatabricksSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names(&self.catalog, &self.schema)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let mut resolved = self.inner.resolve_table(&self.catalog, &self.schema, name);
        if resolved.is_none() && self.inner.listing_stale(&self.catalog) {
            // The list may predate the table: read it again (bounded by the TTL).
            self.inner.reload_catalog(&self.catalog).await?;
            resolved = self.inner.resolve_table(&self.catalog, &self.schema, name);
        }
        let Some(table) = resolved else {
            return Ok(None);
        };
        let remote = RemoteName {
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
            table,
        };
        match self.inner.table_schema(&remote).await {
            Ok(Some(schema)) => Ok(Some(self.inner.provider(remote, schema))),
            Ok(None) => Ok(None),
            Err(e) if is_transient(&e) => Err(e.into()),
            Err(e) => {
                // One unreadable table must not break listings that visit every table
                // (`information_schema.columns`): it shows no columns, and reading it fails
                // with the reason.
                tracing::warn!(table = %remote, error = %e, "a listed table cannot be read");
                Ok(Some(Arc::new(UnreadableTable {
                    schema: Arc::new(Schema::empty()),
                    table: remote.to_string(),
                    reason: e.to_string(),
                })))
            }
        }
    }

    /// Listed tables are base tables; answering without reading their columns keeps
    /// `information_schema.tables` working when one table is unreadable.
    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        Ok(self
            .inner
            .resolve_table(&self.catalog, &self.schema, name)
            .map(|_| TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner
            .resolve_table(&self.catalog, &self.schema, name)
            .is_some()
    }
}

/// Whether `error` says the warehouse is busy (the executor's queue or session pool), not that
/// the table is unreadable: such errors reach the caller.
fn is_transient(error: &Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(executor) = e.downcast_ref::<ExecutorError>()
            && (executor.is_resource_exhausted() || executor.is_timeout())
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// A listed table whose columns could not be read: no columns, and scanning it fails with
/// [`Error::Unreadable`].
#[derive(Debug)]
struct UnreadableTable {
    schema: SchemaRef,
    table: String,
    reason: String,
}

#[async_trait]
impl TableProvider for UnreadableTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::External(Box::new(Error::Unreadable {
            table: self.table.clone(),
            reason: self.reason.clone(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_warehouses_are_transient_unreadable_tables_are_not() {
        let busy = Error::Discovery {
            catalog: "c".into(),
            schema: Some("s".into()),
            table: Some("t".into()),
            source: Box::new(ExecutorError::Overloaded { queue_depth: 3 }),
        };
        assert!(is_transient(&busy));
        let denied = Error::Discovery {
            catalog: "c".into(),
            schema: Some("s".into()),
            table: Some("t".into()),
            source: "[PERMISSION_DENIED] no".into(),
        };
        assert!(!is_transient(&denied));
    }
}
