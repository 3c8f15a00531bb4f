//! The federated engine behind `query`, `serve` and `demo`: Databricks catalogs (through the
//! executor) and local tables in one DataFusion `SessionContext`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use dbfed_datafusion::{DatabricksSource, federated_session_state};
use dbfed_executor::Executor;

use crate::config::{TableFormat, TableSource};
use crate::memory::MemoryBudget;

/// A federated context: the warehouse's catalogs (discovered through `executor`) and `tables`.
///
/// With a `memory` budget, the context's queries reserve memory from its shared pool (and spill
/// to its disk manager); without one, they are unbounded (DataFusion's default).
pub async fn federated_context(
    executor: &Executor,
    compute_context: &str,
    tables: &BTreeMap<String, TableSource>,
    memory: Option<&MemoryBudget>,
) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true);
    if let Some(budget) = memory {
        config = budget.session_config(config);
    }
    let mut state = federated_session_state(config);
    if let Some(budget) = memory {
        state = SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(budget.runtime())
            .build();
    }
    let ctx = SessionContext::new_with_state(state);
    let source = DatabricksSource::builder(executor.clone())
        .compute_context(compute_context)
        .build()
        .context("invalid Databricks source")?;
    source
        .register(&ctx)
        .await
        .context("cannot list the warehouse's catalogs")?;
    for (name, table) in tables {
        register_local_table(&ctx, name, table).await?;
    }
    Ok(ctx)
}

/// Registers a Parquet or CSV file as table `name`; a missing file is an error naming it.
pub async fn register_local_table(
    ctx: &SessionContext,
    name: &str,
    source: &TableSource,
) -> Result<()> {
    let path = &source.path;
    if !path.is_file() {
        match &source.declared_at {
            Some(declared_at) => bail!(
                "local table {name} ({declared_at}): {} does not exist",
                path.display()
            ),
            None => bail!("local table {name}: {} does not exist", path.display()),
        }
    }
    let location = path
        .to_str()
        .with_context(|| format!("local table {name}: {} is not valid UTF-8", path.display()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let registered = match source.format {
        TableFormat::Parquet => {
            ctx.register_parquet(
                name,
                location,
                ParquetReadOptions::default().file_extension(&extension),
            )
            .await
        }
        TableFormat::Csv => {
            ctx.register_csv(
                name,
                location,
                CsvReadOptions::new()
                    .has_header(true)
                    .file_extension(&extension),
            )
            .await
        }
    };
    registered.with_context(|| format!("cannot read local table {name} from {}", path.display()))
}
