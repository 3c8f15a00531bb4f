//! A Databricks workspace as a source of DataFusion catalogs: settings, discovery, metadata cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use datafusion_federation::sql::SQLFederationProvider;
use dbfed_databricks::Param;
use dbfed_executor::Executor;
use futures::TryStreamExt;
use parking_lot::Mutex;

use crate::catalog::DatabricksCatalog;
use crate::dialect::quote_identifier;
use crate::error::{BoxError, Error, Result};
use crate::federation;
use crate::table::DatabricksTable;

/// How much of a query is sent to Databricks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PushdownMode {
    /// Federation: the largest subplan whose tables all live on this warehouse (and identity)
    /// runs there as one statement, plus runtime join filters. Needs a session built with
    /// [`federated_session_state`](crate::federated_session_state); in any other session it
    /// behaves like [`PushdownMode::FilterProjection`]. The default.
    #[default]
    Full,
    /// Every table is scanned on its own: projection, filters and limit are pushed into the
    /// scan's statement; joins and aggregates run in DataFusion.
    FilterProjection,
    /// `SELECT` every column, no filter, no limit: everything else runs in DataFusion (the
    /// baseline for benchmarks).
    None,
}

/// Name of the schema every catalog has for metadata; not exposed as a remote schema.
const INFORMATION_SCHEMA: &str = "information_schema";

/// A remote table: catalog, schema and table as Databricks names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RemoteName {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl RemoteName {
    /// `catalog`.`schema`.`table`, every part quoted.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}.{}",
            quote_identifier(&self.catalog),
            quote_identifier(&self.schema),
            quote_identifier(&self.table)
        )
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

#[derive(Debug, Default)]
struct CatalogMeta {
    /// Schema name → table names.
    schemas: BTreeMap<String, BTreeSet<String>>,
    loaded_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Metadata {
    /// Remote catalog name → its schemas and tables.
    catalogs: BTreeMap<String, CatalogMeta>,
    /// Column schemas of the tables looked up so far.
    columns: HashMap<RemoteName, (SchemaRef, Instant)>,
}

/// The shared state of a [`DatabricksSource`] and of every provider it made.
pub(crate) struct Inner {
    pub executor: Executor,
    pub identity: String,
    pub compute_context: String,
    include: Option<Vec<String>>,
    aliases: BTreeMap<String, String>,
    cache_ttl: Duration,
    pub pushdown: PushdownMode,
    pub runtime_filters: bool,
    pub runtime_filter_max_values: usize,
    pub federation: Arc<SQLFederationProvider>,
    metadata: Mutex<Metadata>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksSource")
            .field("identity", &self.identity)
            .field("compute_context", &self.compute_context)
            .field("catalogs", &self.include)
            .field("aliases", &self.aliases)
            .field("cache_ttl", &self.cache_ttl)
            .field("pushdown", &self.pushdown)
            .field("runtime_filters", &self.runtime_filters)
            .field("runtime_filter_max_values", &self.runtime_filter_max_values)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

/// A Databricks workspace (one warehouse, one identity) whose Unity Catalog catalogs appear in a
/// DataFusion [`SessionContext`].
///
/// Cheap to clone. Every remote statement (discovery and queries) goes through the
/// [`Executor`] given to [`DatabricksSource::builder`], on behalf of the configured identity.
///
/// ```no_run
/// # async fn demo(executor: dbfed_executor::Executor) -> Result<(), Box<dyn std::error::Error>> {
/// use dbfed_datafusion::{DatabricksSource, federated_session_context};
/// use datafusion::prelude::SessionConfig;
///
/// let source = DatabricksSource::builder(executor)
///     .catalogs(["samples"])
///     .build()?;
/// let ctx = federated_session_context(SessionConfig::new());
/// source.register(&ctx).await?;
/// let df = ctx.sql("SELECT n_name FROM samples.tpch.nation WHERE n_regionkey = 1").await?;
/// df.show().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DatabricksSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for DatabricksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Builds a [`DatabricksSource`]; every setting has a documented default.
#[must_use]
pub struct DatabricksSourceBuilder {
    executor: Executor,
    identity: String,
    compute_context: Option<String>,
    catalogs: Option<Vec<String>>,
    aliases: Vec<(String, String)>,
    cache_ttl: Duration,
    pushdown: PushdownMode,
    runtime_filters: bool,
    runtime_filter_max_values: usize,
}

impl fmt::Debug for DatabricksSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksSourceBuilder")
            .field("identity", &self.identity)
            .field("compute_context", &self.compute_context)
            .field("catalogs", &self.catalogs)
            .field("aliases", &self.aliases)
            .field("cache_ttl", &self.cache_ttl)
            .field("pushdown", &self.pushdown)
            .field("runtime_filters", &self.runtime_filters)
            .field("runtime_filter_max_values", &self.runtime_filter_max_values)
            .finish_non_exhaustive()
    }
}

impl DatabricksSourceBuilder {
    /// The executor identity (fairness key) every statement runs as. Default `""`.
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// The federation key: tables of sources with the same compute context may be joined in one
    /// remote statement, so it must identify host + warehouse + identity. Default: a string
    /// unique to this source (no cross-source federation).
    pub fn compute_context(mut self, context: impl Into<String>) -> Self {
        self.compute_context = Some(context.into());
        self
    }

    /// Only these remote catalogs are registered. Default: every catalog the identity sees.
    pub fn catalogs(mut self, catalogs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.catalogs = Some(catalogs.into_iter().map(Into::into).collect());
        self
    }

    /// Registers remote catalog `remote` under the local name `local` (e.g. `"samples"` as
    /// `"databricks_samples"`). Remote statements still use the real name. Default: no alias.
    pub fn alias_catalog(mut self, remote: impl Into<String>, local: impl Into<String>) -> Self {
        self.aliases.push((remote.into(), local.into()));
        self
    }

    /// How long discovered metadata (table lists, column types) is reused before it is read
    /// again. Default 5 minutes.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How much of a query is sent to Databricks. Default [`PushdownMode::Full`].
    pub fn pushdown(mut self, mode: PushdownMode) -> Self {
        self.pushdown = mode;
        self
    }

    /// Adds the join keys seen at runtime (DataFusion's dynamic filters) to remote statements.
    /// Default `true`.
    pub fn runtime_filters(mut self, enabled: bool) -> Self {
        self.runtime_filters = enabled;
        self
    }

    /// Most distinct values of a runtime filter sent as an `IN` list; above it only a
    /// `BETWEEN min AND max` range is sent. Default
    /// [`DEFAULT_MAX_IN_LIST`](crate::runtime_filter::DEFAULT_MAX_IN_LIST) (100 000).
    ///
    /// [`DatabricksSource::register`] raises the session's matching DataFusion limits
    /// (`datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values` and `…_max_size`)
    /// to this value when runtime filters are on; with [`DatabricksSource::table_provider`],
    /// use a [`crate::federated_session_state`] or set them yourself.
    pub fn runtime_filter_max_values(mut self, values: usize) -> Self {
        self.runtime_filter_max_values = values;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<DatabricksSource> {
        let mut aliases = BTreeMap::new();
        let mut locals = BTreeSet::new();
        for (remote, local) in self.aliases {
            if remote.is_empty() || local.is_empty() {
                return Err(Error::Config(
                    "catalog aliases must not be empty strings".into(),
                ));
            }
            if !locals.insert(local.to_ascii_lowercase()) {
                return Err(Error::Config(format!(
                    "two catalogs are aliased to {local:?}"
                )));
            }
            if aliases.insert(remote.clone(), local).is_some() {
                return Err(Error::Config(format!(
                    "catalog {remote:?} is aliased twice"
                )));
            }
        }
        if let Some(catalogs) = &self.catalogs
            && catalogs.iter().any(String::is_empty)
        {
            return Err(Error::Config("an included catalog name is empty".into()));
        }
        let compute_context = self.compute_context.unwrap_or_else(unique_context);
        let executor_ref = Arc::new(federation::DatabricksSqlExecutor::new(
            self.executor.clone(),
            self.identity.clone(),
            compute_context.clone(),
            self.runtime_filters,
            self.runtime_filter_max_values,
        ));
        Ok(DatabricksSource {
            inner: Arc::new(Inner {
                executor: self.executor,
                identity: self.identity,
                compute_context,
                include: self.catalogs,
                aliases,
                cache_ttl: self.cache_ttl,
                pushdown: self.pushdown,
                runtime_filters: self.runtime_filters,
                runtime_filter_max_values: self.runtime_filter_max_values,
                federation: federation::federation_provider(executor_ref),
                metadata: Mutex::new(Metadata::default()),
            }),
        })
    }
}

/// A compute context no other source in this process has.
fn unique_context() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("dbfed-source-{}-{n}-{nanos}", std::process::id())
}

impl DatabricksSource {
    /// A builder whose statements run through `executor`.
    pub fn builder(executor: Executor) -> DatabricksSourceBuilder {
        DatabricksSourceBuilder {
            executor,
            identity: String::new(),
            compute_context: None,
            catalogs: None,
            aliases: Vec::new(),
            cache_ttl: Duration::from_secs(300),
            pushdown: PushdownMode::Full,
            runtime_filters: true,
            runtime_filter_max_values: crate::runtime_filter::DEFAULT_MAX_IN_LIST,
        }
    }

    /// Discovers the catalogs, their schemas and table names, and registers one
    /// `CatalogProvider` per (aliased) catalog in `ctx`. Column types are read lazily, when a
    /// query first names a table.
    pub async fn register(&self, ctx: &SessionContext) -> Result<()> {
        self.inner.load_all().await?;
        if self.inner.runtime_filters {
            crate::session::allow_runtime_in_lists(
                ctx.state_ref().write().config_mut().options_mut(),
                self.inner.runtime_filter_max_values,
            );
        }
        let catalogs: Vec<String> = self
            .inner
            .metadata
            .lock()
            .catalogs
            .keys()
            .cloned()
            .collect();
        for catalog in catalogs {
            let local = self.inner.local_name(&catalog);
            ctx.register_catalog(
                local,
                Arc::new(DatabricksCatalog::new(Arc::clone(&self.inner), catalog)),
            );
        }
        Ok(())
    }

    /// Drops the cached metadata and reads the catalogs, schemas and table names again; column
    /// types are read again on the next lookup. Catalogs that appeared since
    /// [`DatabricksSource::register`] need another `register` to show up in a context.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.metadata.lock().columns.clear();
        self.inner.load_all().await
    }

    /// One remote table as a `TableProvider`, to register under any local name. Fails with
    /// [`Error::TableNotFound`] when the warehouse does not know it.
    pub async fn table_provider(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Arc<dyn TableProvider>> {
        let name = RemoteName {
            catalog: catalog.to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
        };
        match self.inner.table_schema(&name).await? {
            Some(schema) => Ok(self.inner.provider(name, schema)),
            None => Err(Error::TableNotFound(name.to_string())),
        }
    }

    /// The compute context (federation key) of this source.
    pub fn compute_context(&self) -> &str {
        &self.inner.compute_context
    }
}

impl Inner {
    /// The local name of remote catalog `remote`.
    pub fn local_name(&self, remote: &str) -> String {
        self.aliases
            .get(remote)
            .cloned()
            .unwrap_or_else(|| remote.to_owned())
    }

    /// Schema names of `catalog` (cached).
    pub fn schema_names(&self, catalog: &str) -> Vec<String> {
        self.metadata
            .lock()
            .catalogs
            .get(catalog)
            .map(|c| c.schemas.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The remote spelling of schema `name` of `catalog` (case-insensitive match).
    pub fn resolve_schema(&self, catalog: &str, name: &str) -> Option<String> {
        let metadata = self.metadata.lock();
        let c = metadata.catalogs.get(catalog)?;
        find_name(c.schemas.keys(), name)
    }

    /// Table names of `catalog.schema` (cached).
    pub fn table_names(&self, catalog: &str, schema: &str) -> Vec<String> {
        self.metadata
            .lock()
            .catalogs
            .get(catalog)
            .and_then(|c| c.schemas.get(schema))
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The remote spelling of table `name` in `catalog.schema`, if listed.
    pub fn resolve_table(&self, catalog: &str, schema: &str, name: &str) -> Option<String> {
        let metadata = self.metadata.lock();
        let tables = metadata.catalogs.get(catalog)?.schemas.get(schema)?;
        find_name(tables.iter(), name)
    }

    /// Whether the table list of `catalog` is older than the TTL.
    pub fn listing_stale(&self, catalog: &str) -> bool {
        self.metadata
            .lock()
            .catalogs
            .get(catalog)
            .and_then(|c| c.loaded_at)
            .is_none_or(|at| at.elapsed() >= self.cache_ttl)
    }

    /// The provider for `name` with column schema `schema`, shaped by the pushdown mode.
    pub fn provider(
        self: &Arc<Self>,
        name: RemoteName,
        schema: SchemaRef,
    ) -> Arc<dyn TableProvider> {
        let table = Arc::new(DatabricksTable::new(Arc::clone(self), name.clone(), schema));
        match self.pushdown {
            PushdownMode::Full => federation::federated_provider(self, name, table),
            PushdownMode::FilterProjection | PushdownMode::None => table,
        }
    }

    /// Runs a metadata statement and collects its batches.
    async fn collect(&self, sql: String, params: Vec<Param>) -> Result<Vec<RecordBatch>, BoxError> {
        let batches: Vec<RecordBatch> = self
            .executor
            .query_stream(self.identity.clone(), sql, params)
            .try_collect()
            .await?;
        Ok(batches)
    }

    /// Reads the catalog list (or takes the include-list) and every catalog's tables.
    async fn load_all(&self) -> Result<()> {
        let catalogs = match &self.include {
            Some(list) => list.clone(),
            None => self.discover_catalogs().await?,
        };
        let loads = catalogs.iter().map(|c| self.load_catalog(c));
        let results = futures::future::join_all(loads).await;
        for (catalog, result) in catalogs.iter().zip(results) {
            if let Err(e) = result {
                if self.include.is_some() {
                    return Err(e);
                }
                // A catalog found by discovery but unreadable (permissions, a broken share)
                // must not hide the others.
                tracing::warn!(catalog = %catalog, error = %e, "skipping an unreadable catalog");
            }
        }
        let mut metadata = self.metadata.lock();
        metadata
            .catalogs
            .retain(|name, _| catalogs.iter().any(|c| c == name));
        Ok(())
    }

    async fn discover_catalogs(&self) -> Result<Vec<String>> {
        let sql = "SELECT catalog_name FROM system.information_schema.catalogs".to_owned();
        let batches = match self.collect(sql, Vec::new()).await {
            Ok(b) => b,
            Err(first) => {
                tracing::debug!(error = %first, "information_schema.catalogs failed; trying SHOW CATALOGS");
                self.collect("SHOW CATALOGS".to_owned(), Vec::new())
                    .await
                    .map_err(|source| Error::Discovery {
                        catalog: "*".into(),
                        schema: None,
                        table: None,
                        source,
                    })?
            }
        };
        let mut names = BTreeSet::new();
        for batch in &batches {
            for name in string_column(batch, 0).map_err(|source| Error::Discovery {
                catalog: "*".into(),
                schema: None,
                table: None,
                source,
            })? {
                if let Some(name) = name
                    && !name.eq_ignore_ascii_case("system")
                {
                    names.insert(name);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Reads the schemas and table names of one catalog.
    async fn load_catalog(&self, catalog: &str) -> Result<()> {
        let err = |source: BoxError| Error::Discovery {
            catalog: catalog.to_owned(),
            schema: None,
            table: None,
            source,
        };
        let info = format!("{}.{INFORMATION_SCHEMA}", quote_identifier(catalog));
        let schemata = self.collect(
            format!("SELECT schema_name FROM {info}.schemata"),
            Vec::new(),
        );
        let tables = self.collect(
            format!("SELECT table_schema, table_name FROM {info}.tables"),
            Vec::new(),
        );
        let (schemata, tables) = futures::future::try_join(schemata, tables)
            .await
            .map_err(err)?;
        let mut schemas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for batch in &schemata {
            for name in string_column(batch, 0).map_err(err)?.into_iter().flatten() {
                if !name.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
                    schemas.entry(name).or_default();
                }
            }
        }
        for batch in &tables {
            let s = string_column(batch, 0).map_err(err)?;
            let t = string_column(batch, 1).map_err(err)?;
            for (s, t) in s.into_iter().zip(t) {
                if let (Some(s), Some(t)) = (s, t)
                    && !s.eq_ignore_ascii_case(INFORMATION_SCHEMA)
                {
                    schemas.entry(s).or_default().insert(t);
                }
            }
        }
        self.metadata.lock().catalogs.insert(
            catalog.to_owned(),
            CatalogMeta {
                schemas,
                loaded_at: Some(Instant::now()),
            },
        );
        Ok(())
    }

    /// Reloads the table list of `catalog` (used when a lookup misses a stale list).
    pub async fn reload_catalog(&self, catalog: &str) -> Result<()> {
        self.load_catalog(catalog).await
    }

    /// The Arrow schema of a remote table, cached with the TTL; `None` when it does not exist.
    pub async fn table_schema(&self, name: &RemoteName) -> Result<Option<SchemaRef>> {
        if let Some((schema, at)) = self.metadata.lock().columns.get(name)
            && at.elapsed() < self.cache_ttl
        {
            return Ok(Some(Arc::clone(schema)));
        }
        let schema = self.load_columns(name).await?;
        if let Some(schema) = &schema {
            self.metadata
                .lock()
                .columns
                .insert(name.clone(), (Arc::clone(schema), Instant::now()));
        }
        Ok(schema)
    }

    /// Reads the columns of one table from `information_schema.columns`, falling back to
    /// `DESCRIBE TABLE`.
    async fn load_columns(&self, name: &RemoteName) -> Result<Option<SchemaRef>> {
        let discovery = |source: BoxError| Error::Discovery {
            catalog: name.catalog.clone(),
            schema: Some(name.schema.clone()),
            table: Some(name.table.clone()),
            source,
        };
        let sql = format!(
            "SELECT column_name, full_data_type, data_type FROM {}.{INFORMATION_SCHEMA}.columns \
             WHERE table_schema = :schema AND table_name = :table ORDER BY ordinal_position",
            quote_identifier(&name.catalog)
        );
        let params = vec![
            Param::new("schema", name.schema.as_str()),
            Param::new("table", name.table.as_str()),
        ];
        let mut columns: Vec<(String, Vec<String>)> = Vec::new();
        let first_error = match self.collect(sql, params).await {
            Ok(batches) => {
                for batch in &batches {
                    let names = string_column(batch, 0).map_err(discovery)?;
                    let full = string_column(batch, 1).map_err(discovery)?;
                    let simple = string_column(batch, 2).map_err(discovery)?;
                    for ((n, f), s) in names.into_iter().zip(full).zip(simple) {
                        if let Some(n) = n {
                            columns.push((n, f.into_iter().chain(s).collect()));
                        }
                    }
                }
                None
            }
            Err(e) => Some(e),
        };
        if columns.is_empty() {
            match self.describe(name).await {
                Ok(Some(c)) => columns = c,
                Ok(None) => {
                    return match first_error {
                        Some(e) => Err(discovery(e)),
                        None => Ok(None),
                    };
                }
                Err(e) => return Err(discovery(first_error.unwrap_or(e))),
            }
        }
        let mut fields = Vec::with_capacity(columns.len());
        for (column, types) in &columns {
            match column_type(name, column, types) {
                Ok(t) => fields.push(Field::new(column, t, true)),
                Err(e @ Error::UnsupportedType { .. }) => {
                    // Metadata spellings can be ambiguous (Spark's simple strings do not quote
                    // struct field names): ask the warehouse for an empty result and take the
                    // client's reading of its manifest.
                    return match self.result_schema(name).await {
                        Ok(schema) if schema.fields().len() == columns.len() => Ok(Some(schema)),
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(Arc::new(Schema::new(fields))))
    }

    /// The schema of `SELECT * FROM name LIMIT 0` as the client maps its manifest.
    async fn result_schema(&self, name: &RemoteName) -> Result<SchemaRef> {
        let sql = format!("SELECT * FROM {} LIMIT 0", name.quoted());
        let stream = self.executor.query_as(&self.identity, &sql, &[]).await?;
        let schema = stream.schema();
        drop(stream);
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }

    /// `DESCRIBE TABLE`: column name and type rows until the first blank or `#` row; `None`
    /// when the warehouse says the table does not exist.
    async fn describe(
        &self,
        name: &RemoteName,
    ) -> Result<Option<Vec<(String, Vec<String>)>>, BoxError> {
        let batches = match self
            .collect(format!("DESCRIBE TABLE {}", name.quoted()), Vec::new())
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let message = e.to_string();
                if message.contains("NOT_FOUND") || message.contains("not found") {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let mut columns = Vec::new();
        'outer: for batch in &batches {
            let names = string_column(batch, 0)?;
            let types = string_column(batch, 1)?;
            for (n, t) in names.into_iter().zip(types) {
                match (n, t) {
                    (Some(n), Some(t)) if !n.trim().is_empty() && !n.starts_with('#') => {
                        columns.push((n, vec![t]));
                    }
                    _ => break 'outer,
                }
            }
        }
        Ok((!columns.is_empty()).then_some(columns))
    }
}

/// The Arrow type of a column from its type spellings (`full_data_type` first).
fn column_type(table: &RemoteName, column: &str, types: &[String]) -> Result<DataType> {
    let mut last = None;
    for text in types {
        match dbfed_databricks::types::parse_type_text(text) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some((text.clone(), e)),
        }
    }
    match last {
        Some((type_text, source)) => Err(Error::UnsupportedType {
            table: table.to_string(),
            column: column.to_owned(),
            type_text,
            source: Box::new(source),
        }),
        None => Err(Error::Discovery {
            catalog: table.catalog.clone(),
            schema: Some(table.schema.clone()),
            table: Some(table.table.clone()),
            source: format!("column {column} has no type").into(),
        }),
    }
}

/// The first name in `names` equal to `wanted`, exactly or else ignoring ASCII case.
fn find_name<'a>(names: impl Iterator<Item = &'a String> + Clone, wanted: &str) -> Option<String> {
    names
        .clone()
        .find(|n| *n == wanted)
        .or_else(|| names.into_iter().find(|n| n.eq_ignore_ascii_case(wanted)))
        .cloned()
}

/// Column `index` of `batch` as optional strings.
fn string_column(batch: &RecordBatch, index: usize) -> Result<Vec<Option<String>>, BoxError> {
    if index >= batch.num_columns() {
        return Err(format!(
            "the metadata result has {} columns, expected at least {}",
            batch.num_columns(),
            index + 1
        )
        .into());
    }
    let column = cast(batch.column(index), &DataType::Utf8)?;
    let strings = column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("a metadata column is not a string")?;
    Ok((0..strings.len())
        .map(|i| (!strings.is_null(i)).then(|| strings.value(i).to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_are_quoted_part_by_part() {
        let name = RemoteName {
            catalog: "my cat".into(),
            schema: "a.b".into(),
            table: "t`x".into(),
        };
        assert_eq!(name.quoted(), "`my cat`.`a.b`.`t``x`");
        assert_eq!(name.to_string(), "my cat.a.b.t`x");
    }

    #[test]
    fn names_match_exactly_first_then_ignoring_case() {
        let names = ["Nation".to_string(), "nation".to_string()];
        assert_eq!(find_name(names.iter(), "nation").as_deref(), Some("nation"));
        assert_eq!(find_name(names.iter(), "NATION").as_deref(), Some("Nation"));
        assert_eq!(find_name(names.iter(), "region"), None);
    }

    #[test]
    fn column_types_use_the_clients_parser_and_fall_back() {
        let t = RemoteName {
            catalog: "c".into(),
            schema: "s".into(),
            table: "t".into(),
        };
        let ty = column_type(&t, "a", &["struct<a:int,b:string>".into()]).expect("parses");
        assert_eq!(
            ty,
            dbfed_databricks::types::parse_type_text("STRUCT<a: INT, b: STRING>").expect("parses")
        );
        let ty = column_type(&t, "a", &["geography(4326)".into(), "DECIMAL(10,2)".into()])
            .expect("falls back");
        assert_eq!(ty, DataType::Decimal128(10, 2));
        let err = column_type(&t, "a", &["nonsense<".into()]).expect_err("unparseable");
        assert!(err.to_string().contains("column a"), "{err}");
    }

    #[test]
    fn aliases_must_not_collide() {
        let executor = test_executor();
        let err = DatabricksSource::builder(executor.clone())
            .alias_catalog("a", "x")
            .alias_catalog("b", "x")
            .build()
            .expect_err("collision");
        assert!(matches!(err, Error::Config(_)), "{err}");
        let source = DatabricksSource::builder(executor)
            .alias_catalog("samples", "databricks_samples")
            .build()
            .expect("valid");
        assert_eq!(source.inner.local_name("samples"), "databricks_samples");
        assert_eq!(source.inner.local_name("other"), "other");
        let a = format!("{source:?}");
        assert!(a.contains("databricks_samples"), "{a}");
    }

    #[test]
    fn default_compute_contexts_are_unique() {
        let executor = test_executor();
        let a = DatabricksSource::builder(executor.clone())
            .build()
            .expect("a");
        let b = DatabricksSource::builder(executor).build().expect("b");
        assert_ne!(a.compute_context(), b.compute_context());
    }

    /// An executor whose driver never connects (the tests here run no query).
    fn test_executor() -> Executor {
        struct NoDriver;
        impl dbfed_executor::Driver for NoDriver {
            fn connect(
                &self,
            ) -> Result<Box<dyn dbfed_executor::Connection>, dbfed_executor::DriverError>
            {
                Err(dbfed_executor::DriverError::new(
                    "no warehouse in unit tests",
                ))
            }
        }
        Executor::builder(NoDriver)
            .threads(1)
            .build()
            .expect("executor builds")
    }
}
