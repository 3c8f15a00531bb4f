//! The emulator's SQL engine: DataFusion with the Databricks dialect, a built-in
//! `samples.tpch`, tables loaded from a data directory, Unity Catalog metadata and
//! Databricks-shaped results and errors.
//!
//! Defaults: a request without `catalog`/`schema` runs in `samples.tpch` (so `SELECT * FROM nation`
//! works); a request naming only a catalog runs in its `default` schema, like `USE CATALOG`.
//! Unquoted identifiers are case-insensitive; catalog, schema and table names are
//! case-insensitive even when quoted. `TIMESTAMP` is the session-zoned timestamp
//! (`session_confs["TIMEZONE"]`, default `UTC`), `TIMESTAMP_NTZ` the zone-less one, decimal
//! literals are DECIMAL and NULLs sort first, as in Databricks. The engine is read-only.

mod catalog;
mod commands;
mod error;
mod sql;
#[cfg(test)]
mod tests;
mod tpch;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::common::config::Dialect;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::{
    FunctionRegistry, SendableRecordBatchStream, SessionState, SessionStateBuilder,
};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;
use futures::StreamExt;

use catalog::{Access, INFORMATION_SCHEMA, Lookup, Registry, RequestCatalogs, SYSTEM, TableEntry};
use commands::Command;
use error::into_datafusion;

/// Default TPC-H scale factor of `samples.tpch`.
pub const DEFAULT_TPCH_SCALE: f64 = 0.01;
/// Catalog of a request that names none.
pub const DEFAULT_CATALOG: &str = "samples";
/// Schema of a request that names neither catalog nor schema.
pub const DEFAULT_SCHEMA: &str = "tpch";
/// Session time zone when `session_confs` sets none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// The SQL engine behind the emulator. Cheap to clone (an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    /// Session state with functions and options; cloned per request.
    base: SessionState,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineInner").finish_non_exhaustive()
    }
}

/// Engine configuration.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// TPC-H scale factor of `samples.tpch`; `0.0` (the `Default`) means [`DEFAULT_TPCH_SCALE`].
    pub tpch_scale: f64,
    /// Directory of extra tables: `DIR/<catalog>/<schema>/<table>.{parquet,csv}` or a folder of
    /// parquet files. `None` (the default) loads nothing.
    pub data_dir: Option<PathBuf>,
}

/// One statement to run.
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    /// SQL text.
    pub statement: String,
    /// Default catalog (like `USE CATALOG`).
    pub catalog: Option<String>,
    /// Default schema (like `USE SCHEMA`).
    pub schema: Option<String>,
    /// Values for `:name` and `?` markers.
    pub parameters: Vec<QueryParameter>,
    /// Session configuration (e.g. `TIMEZONE`).
    pub session_confs: BTreeMap<String, String>,
    /// What the caller may read; `None` means everything.
    pub grants: Option<Grants>,
}

/// A statement parameter as sent on the wire.
#[derive(Clone, Debug)]
pub struct QueryParameter {
    /// Name of a `:name` marker.
    pub name: Option<String>,
    /// 1-based position of a `?` marker.
    pub ordinal: Option<usize>,
    /// Value as text; `None` is SQL NULL.
    pub value: Option<String>,
    /// Databricks type text (`INT`, `DECIMAL(10,2)`, ...); `None` means STRING.
    pub type_text: Option<String>,
}

/// The set of catalogs and schemas a token may read.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    entries: BTreeSet<(String, Option<String>)>,
}

impl Grants {
    /// No access at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants parsed from `"catalog"` / `"catalog.schema"` entries (case-insensitive).
    pub fn parse<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut grants = Self::new();
        for e in entries {
            let e = e.as_ref().trim();
            match e.split_once('.') {
                Some((c, s)) => grants = grants.with_schema(c, s),
                None if !e.is_empty() => grants = grants.with_catalog(e),
                None => {}
            }
        }
        grants
    }

    /// Adds read access to a whole catalog.
    pub fn with_catalog(mut self, catalog: &str) -> Self {
        self.entries.insert((catalog.to_ascii_lowercase(), None));
        self
    }

    /// Adds read access to one schema.
    pub fn with_schema(mut self, catalog: &str, schema: &str) -> Self {
        self.entries.insert((
            catalog.to_ascii_lowercase(),
            Some(schema.to_ascii_lowercase()),
        ));
        self
    }

    /// Whether anything in `catalog` may be read (the catalog is visible).
    pub fn allows_catalog(&self, catalog: &str) -> bool {
        let catalog = catalog.to_ascii_lowercase();
        self.entries.iter().any(|(c, _)| *c == catalog)
    }

    /// Whether `catalog.schema` may be read.
    pub fn allows_schema(&self, catalog: &str, schema: &str) -> bool {
        let catalog = catalog.to_ascii_lowercase();
        let schema = schema.to_ascii_lowercase();
        self.entries
            .iter()
            .any(|(c, s)| *c == catalog && s.as_ref().is_none_or(|s| *s == schema))
    }
}

/// A successful statement: manifest columns plus the Arrow stream. Dropping `stream` stops the query.
pub struct QueryOutput {
    /// Manifest columns as Databricks reports them.
    pub columns: Vec<ColumnDescription>,
    /// Arrow schema of the batches in `stream`, as a warehouse ships them in ARROW_STREAM.
    pub schema: SchemaRef,
    /// The result batches, already cast to `schema`.
    pub stream: SendableRecordBatchStream,
}

impl std::fmt::Debug for QueryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryOutput")
            .field("columns", &self.columns)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// One manifest column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDescription {
    /// Column name.
    pub name: String,
    /// `LONG`, `INT`, `STRING`, `DECIMAL`, `TIMESTAMP`, ...
    pub type_name: String,
    /// `BIGINT`, `DECIMAL(15,2)`, `TIMESTAMP_NTZ`, `ARRAY<INT>`, `INTERVAL DAY TO SECOND`, ...
    pub type_text: String,
    /// Precision of a DECIMAL.
    pub type_precision: Option<i32>,
    /// Scale of a DECIMAL.
    pub type_scale: Option<i32>,
    /// `DAY TO SECOND`, `YEAR TO MONTH`, ... for an INTERVAL.
    pub type_interval_type: Option<String>,
}

/// A failed statement, shaped like Databricks' `status.error`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// `BAD_REQUEST`, `NOT_FOUND`, `PERMISSION_DENIED`, `INTERNAL_ERROR`, ...
    pub error_code: String,
    /// `[ERROR_CLASS] text. SQLSTATE: XXXXX`.
    pub message: String,
    /// The five-character SQLSTATE.
    pub sql_state: String,
}

/// Engine start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// TPC-H generation failed.
    #[error("generating samples.tpch failed: {0}")]
    Tpch(String),
    /// A path in the data directory could not be read.
    #[error("cannot load {path}: {message}")]
    DataDir {
        /// The offending path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Engine {
    /// Builds an engine: generates `samples.tpch` at `config.tpch_scale` and loads `data_dir`.
    pub async fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let scale = if config.tpch_scale == 0.0 {
            DEFAULT_TPCH_SCALE
        } else {
            config.tpch_scale
        };
        if !scale.is_finite() || scale < 0.0 {
            return Err(EngineError::Tpch(format!("invalid scale factor {scale}")));
        }
        let parts = std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(2)
            .clamp(1, 16);
        let generated = tokio::task::spawn_blocking(move || {
            tpch::TABLES
                .iter()
                .map(|t| tpch::generate(t, scale, parts).map(|m| (*t, m)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| EngineError::Tpch(format!("generator task failed: {e}")))??;
        let mut registry = Registry::default();
        for (name, table) in generated {
            registry
                .add_table(
                    "samples",
                    "tpch",
                    TableEntry {
                        name: name.to_string(),
                        provider: Arc::new(table),
                        table_type: "MANAGED",
                        format: "DELTA",
                        comment: None,
                        source: None,
                    },
                )
                .map_err(EngineError::Tpch)?;
        }
        if let Some(dir) = &config.data_dir {
            registry.load_data_dir(dir).await?;
        }
        let base =
            base_state(parts).map_err(|e| EngineError::Tpch(format!("session setup: {e}")))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                base,
                registry: Arc::new(registry),
            }),
        })
    }

    /// Runs one statement. Errors are shaped like a warehouse's `status.error`; errors that
    /// happen while the stream runs arrive as `DataFusionError::External(SqlError)` (convert
    /// with `SqlError::from`).
    pub async fn execute(&self, request: QueryRequest) -> Result<QueryOutput, SqlError> {
        let sql = request
            .statement
            .trim()
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        if sql.is_empty() {
            return Err(SqlError::syntax("", 1, 1, sql));
        }
        let time_zone = session_time_zone(&request.session_confs)?;
        let (catalog, schema) = self.default_namespace(&request)?;
        let access = Arc::new(Access {
            registry: Arc::clone(&self.inner.registry),
            grants: request.grants.clone(),
            time_zone: time_zone.clone(),
        });
        if let Some(command) = commands::recognise(sql, &access, &catalog, &schema)? {
            return match command {
                Command::Rows(batch) => Ok(batch_output(batch, &time_zone)),
                Command::NoResult => Ok(batch_output(
                    arrow::record_batch::RecordBatch::new_empty(Arc::new(Schema::empty())),
                    &time_zone,
                )),
                Command::DescribeQuery(query) => {
                    let state = self.request_state(&access, &catalog, &schema, &time_zone);
                    let planned =
                        plan(&state, &query, &request.parameters, &access, &time_zone).await?;
                    let arrow_schema = planned.output_schema();
                    let mut names = Vec::new();
                    let mut types = Vec::new();
                    for field in arrow_schema.fields() {
                        names.push(Some(field.name().clone()));
                        types.push(Some(types::sql_type(field.data_type(), &time_zone).simple));
                    }
                    let n = names.len();
                    Ok(batch_output(
                        commands::describe_batch(names, types, vec![None; n]),
                        &time_zone,
                    ))
                }
            };
        }
        let state = self.request_state(&access, &catalog, &schema, &time_zone);
        let planned = plan(&state, sql, &request.parameters, &access, &time_zone).await?;
        let names: Vec<String> = planned
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let task_ctx = Arc::new(TaskContext::from(&state));
        let df = DataFrame::new(state, planned.plan);
        let physical = df
            .create_physical_plan()
            .await
            .map_err(|e| SqlError::from_datafusion(&e, sql))?;
        // The physical schema is what the batches really carry (it can be more precise than
        // the logical one, e.g. NULL UNION 1).
        let shape = types::output_shape(&physical.schema(), &names, &[], &time_zone);
        let stream =
            execute_stream(physical, task_ctx).map_err(|e| SqlError::from_datafusion(&e, sql))?;
        Ok(wrap_stream(stream, shape))
    }

    /// The request's catalog and schema, validated when given explicitly.
    fn default_namespace(&self, request: &QueryRequest) -> Result<(String, String), SqlError> {
        let catalog = request
            .catalog
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_ascii_lowercase);
        let schema = request
            .schema
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase);
        let registry = &self.inner.registry;
        let visible_catalog = |c: &str| {
            c == SYSTEM
                || (registry.catalogs.contains_key(c)
                    && request.grants.as_ref().is_none_or(|g| g.allows_catalog(c)))
        };
        if let Some(c) = &catalog
            && !visible_catalog(c)
        {
            return Err(SqlError::catalog_not_found(c));
        }
        let resolved_catalog = catalog
            .clone()
            .unwrap_or_else(|| DEFAULT_CATALOG.to_string());
        let resolved_schema = match (&catalog, schema) {
            (_, Some(s)) => {
                let exists = s == INFORMATION_SCHEMA
                    || registry
                        .catalogs
                        .get(&resolved_catalog)
                        .is_some_and(|c| c.schemas.contains_key(&s))
                        && request
                            .grants
                            .as_ref()
                            .is_none_or(|g| g.allows_schema(&resolved_catalog, &s));
                if !exists {
                    return Err(SqlError::schema_not_found(&resolved_catalog, &s));
                }
                s
            }
            (Some(_), None) => "default".to_string(),
            (None, None) => DEFAULT_SCHEMA.to_string(),
        };
        Ok((resolved_catalog, resolved_schema))
    }

    fn request_state(
        &self,
        access: &Arc<Access>,
        catalog: &str,
        schema: &str,
        time_zone: &str,
    ) -> SessionState {
        let mut config = self.inner.base.config().clone();
        {
            let options = config.options_mut();
            options.catalog.default_catalog = catalog.to_string();
            options.catalog.default_schema = schema.to_string();
            options.execution.time_zone = Some(time_zone.to_string());
        }
        SessionStateBuilder::new_from_existing(self.inner.base.clone())
            .with_config(config)
            .with_catalog_list(Arc::new(RequestCatalogs {
                access: Arc::clone(access),
            }))
            .build()
    }
}

/// The shared session state: Databricks dialect and semantics, DataFusion and Spark functions.
fn base_state(target_partitions: usize) -> Result<SessionState, DataFusionError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions)
        .with_information_schema(false)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(DEFAULT_CATALOG, DEFAULT_SCHEMA);
    {
        let options = config.options_mut();
        options.sql_parser.dialect = Dialect::Databricks;
        options.sql_parser.parse_float_as_decimal = true;
        options.sql_parser.default_null_ordering = "nulls_min".to_string();
        options.execution.time_zone = Some(DEFAULT_TIME_ZONE.to_string());
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    // Spark functions fill the gaps; DataFusion's own keep their names where both exist.
    let mut known: HashSet<String> = state.scalar_functions().keys().cloned().collect();
    for udf in datafusion_spark::all_default_scalar_functions() {
        if !known.contains(udf.name()) && udf.aliases().iter().all(|a| !known.contains(a)) {
            known.insert(udf.name().to_string());
            state.register_udf(udf)?;
        }
    }
    let mut known: HashSet<String> = state.aggregate_functions().keys().cloned().collect();
    for udaf in datafusion_spark::all_default_aggregate_functions() {
        if !known.contains(udaf.name()) && udaf.aliases().iter().all(|a| !known.contains(a)) {
            known.insert(udaf.name().to_string());
            state.register_udaf(udaf)?;
        }
    }
    let mut known: HashSet<String> = state.window_functions().keys().cloned().collect();
    for udwf in datafusion_spark::all_default_window_functions() {
        if !known.contains(udwf.name()) && udwf.aliases().iter().all(|a| !known.contains(a)) {
            known.insert(udwf.name().to_string());
            state.register_udwf(udwf)?;
        }
    }
    Ok(state)
}

/// `session_confs["TIMEZONE"]` (any case, also `spark.sql.session.timeZone`), validated.
fn session_time_zone(confs: &BTreeMap<String, String>) -> Result<String, SqlError> {
    let tz = confs
        .iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case("timezone")
                || k.eq_ignore_ascii_case("spark.sql.session.timeZone")
        })
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string());
    if tz.parse::<arrow::array::timezone::Tz>().is_err() {
        return Err(SqlError::new(
            error::BAD_REQUEST,
            "INVALID_CONF_VALUE.TIME_ZONE",
            &format!(
                "The value '{tz}' in the config \"TIMEZONE\" is invalid. Cannot resolve the given timezone."
            ),
            "22022",
        ));
    }
    Ok(tz)
}

/// A planned statement and the renames of its hidden duplicate-name aliases.
struct Planned {
    plan: LogicalPlan,
    renames: BTreeMap<String, String>,
}

impl Planned {
    /// The engine's output schema with Databricks column names.
    fn output_schema(&self) -> Schema {
        let arrow = self.plan.schema().as_arrow();
        Schema::new(
            arrow
                .fields()
                .iter()
                .map(|f| match self.renames.get(f.name()) {
                    Some(name) => f.as_ref().clone().with_name(name.clone()),
                    None => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        )
    }
}

async fn plan(
    state: &SessionState,
    sql: &str,
    parameters: &[QueryParameter],
    access: &Access,
    time_zone: &str,
) -> Result<Planned, SqlError> {
    let mut statement = state
        .sql_to_statement(sql, &Dialect::Databricks)
        .map_err(|e| SqlError::from_datafusion(&e, sql))?;
    let (renames, markers) = match &mut statement {
        DFStatement::Statement(inner) => {
            match inner.as_ref() {
                ast::Statement::Query(_) | ast::Statement::Explain { .. } => {}
                _ => {
                    let verb = sql
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_uppercase();
                    return Err(SqlError::unsupported(&format!(
                        "{verb} statements (the dbfed emulator is read-only)"
                    )));
                }
            }
            sql::rewrite_types(inner);
            let renames = sql::name_projections(inner);
            let markers = sql::rewrite_markers(inner);
            (renames, markers)
        }
        DFStatement::Explain(_) => (BTreeMap::new(), sql::Markers::default()),
        _ => {
            return Err(SqlError::unsupported(
                "this statement (the dbfed emulator is read-only)",
            ));
        }
    };
    check_tables(state, &statement, access)?;
    let values = sql::bind(&markers, parameters, time_zone)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(|e| SqlError::from_datafusion(&e, sql))?;
    let plan = if values.is_empty() {
        plan
    } else {
        plan.with_param_values(values)
            .map_err(|e| SqlError::from_datafusion(&e, sql))?
    };
    Ok(Planned { plan, renames })
}

/// Refuses tables outside the grants (`INSUFFICIENT_PERMISSIONS`) and reports missing ones
/// (`TABLE_OR_VIEW_NOT_FOUND`) with the name as written.
fn check_tables(
    state: &SessionState,
    statement: &DFStatement,
    access: &Access,
) -> Result<(), SqlError> {
    let references = state
        .resolve_table_references(statement)
        .map_err(|e| SqlError::from_datafusion(&e, ""))?;
    let options = state.config().options();
    let (default_catalog, default_schema) = (
        options.catalog.default_catalog.as_str(),
        options.catalog.default_schema.as_str(),
    );
    for reference in references {
        let written = written_parts(&reference);
        let resolved = reference.resolve(default_catalog, default_schema);
        let (c, s, t) = (
            resolved.catalog.to_ascii_lowercase(),
            resolved.schema.to_ascii_lowercase(),
            resolved.table.to_ascii_lowercase(),
        );
        if s == INFORMATION_SCHEMA {
            let catalog_ok = c == SYSTEM
                || (access.registry.catalogs.contains_key(&c) && access.catalog_visible(&c));
            if catalog_ok && Access::is_metadata_table(&t) {
                continue;
            }
            return Err(SqlError::table_not_found(&written));
        }
        match access.lookup(&c, &s, &t) {
            Lookup::Found(_) => {}
            Lookup::Missing => return Err(SqlError::table_not_found(&written)),
            Lookup::Denied if !access.catalog_visible(&c) => {
                return Err(SqlError::insufficient_permissions(
                    "Catalog",
                    "USE CATALOG",
                    &c,
                ));
            }
            Lookup::Denied => {
                return Err(SqlError::insufficient_permissions(
                    "Table",
                    "SELECT",
                    &format!("{c}.{s}.{t}"),
                ));
            }
        }
    }
    Ok(())
}

fn written_parts(reference: &TableReference) -> Vec<String> {
    match reference {
        TableReference::Bare { table } => vec![table.to_string()],
        TableReference::Partial { schema, table } => vec![schema.to_string(), table.to_string()],
        TableReference::Full {
            catalog,
            schema,
            table,
        } => vec![catalog.to_string(), schema.to_string(), table.to_string()],
    }
}

/// A result computed in place (metadata commands).
fn batch_output(batch: arrow::record_batch::RecordBatch, time_zone: &str) -> QueryOutput {
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let shape = types::output_shape(&batch.schema(), &names, &[], time_zone);
    let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
        batch.schema(),
        futures::stream::iter(std::iter::once(Ok(batch))),
    ));
    wrap_stream(stream, shape)
}

/// Casts every batch to the wire schema and turns errors into [`SqlError`]s.
fn wrap_stream(stream: SendableRecordBatchStream, shape: types::OutputShape) -> QueryOutput {
    let schema = Arc::clone(&shape.schema);
    let target = Arc::clone(&shape.schema);
    let mapped = stream.map(move |item| match item {
        Ok(batch) => types::cast_batch(&batch, &target).map_err(|e| {
            into_datafusion(SqlError::from(DataFusionError::ArrowError(
                Box::new(e),
                None,
            )))
        }),
        Err(e) => Err(into_datafusion(SqlError::from(e))),
    });
    QueryOutput {
        columns: shape.columns,
        schema: Arc::clone(&schema),
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, mapped)),
    }
}
