//! The Unity-Catalog-like namespace: catalogs → schemas → tables, loaded once, viewed per request
//! through the caller's grants (case-insensitive names, `information_schema` in every catalog,
//! `system.information_schema` across catalogs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemTable, SchemaProvider, TableProvider,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use super::types::sql_type;
use super::{EngineError, Grants};

/// Name of the per-catalog metadata schema.
pub(crate) const INFORMATION_SCHEMA: &str = "information_schema";
/// Name of the catalog whose `information_schema` spans all catalogs.
pub(crate) const SYSTEM: &str = "system";

/// One table.
#[derive(Clone)]
pub(crate) struct TableEntry {
    /// Name as listed.
    pub name: String,
    /// The data.
    pub provider: Arc<dyn TableProvider>,
    /// `MANAGED`, `EXTERNAL` or `VIEW`.
    pub table_type: &'static str,
    /// `DELTA`, `PARQUET`, `CSV`.
    pub format: &'static str,
    /// Table comment.
    pub comment: Option<String>,
    /// The file or folder a `data_dir` table reads; once it is gone the table is gone too
    /// (like a dropped table), rather than reading as empty.
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for TableEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableEntry")
            .field("name", &self.name)
            .field("table_type", &self.table_type)
            .finish_non_exhaustive()
    }
}

/// One schema.
#[derive(Clone, Debug, Default)]
pub(crate) struct SchemaEntry {
    pub name: String,
    pub tables: BTreeMap<String, TableEntry>,
}

/// One catalog.
#[derive(Clone, Debug, Default)]
pub(crate) struct CatalogEntry {
    pub name: String,
    pub comment: Option<String>,
    pub schemas: BTreeMap<String, SchemaEntry>,
}

/// Everything the engine serves; keys are lower-case names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    pub catalogs: BTreeMap<String, CatalogEntry>,
}

impl Registry {
    /// Adds a table, refusing duplicates.
    pub fn add_table(
        &mut self,
        catalog: &str,
        schema: &str,
        table: TableEntry,
    ) -> Result<(), String> {
        let c = self
            .catalogs
            .entry(catalog.to_ascii_lowercase())
            .or_insert_with(|| CatalogEntry {
                name: catalog.to_ascii_lowercase(),
                ..Default::default()
            });
        let s = c
            .schemas
            .entry(schema.to_ascii_lowercase())
            .or_insert_with(|| SchemaEntry {
                name: schema.to_ascii_lowercase(),
                ..Default::default()
            });
        let key = table.name.to_ascii_lowercase();
        if s.tables.contains_key(&key) {
            return Err(format!("table {catalog}.{schema}.{key} is defined twice"));
        }
        s.tables.insert(key, table);
        Ok(())
    }

    /// Loads `DIR/<catalog>/<schema>/<table>.{parquet,csv}` and `DIR/<catalog>/<schema>/<table>/`
    /// (a folder of parquet files).
    pub async fn load_data_dir(&mut self, dir: &Path) -> Result<(), EngineError> {
        let ctx = SessionContext::new();
        for catalog_dir in sorted_entries(dir)? {
            if !catalog_dir.is_dir() {
                continue;
            }
            let catalog = file_name(&catalog_dir);
            if catalog.eq_ignore_ascii_case(SYSTEM) {
                return Err(EngineError::DataDir {
                    path: catalog_dir,
                    message: "`system` is reserved for metadata".into(),
                });
            }
            for schema_dir in sorted_entries(&catalog_dir)? {
                if !schema_dir.is_dir() {
                    continue;
                }
                let schema = file_name(&schema_dir);
                if schema.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
                    return Err(EngineError::DataDir {
                        path: schema_dir,
                        message: "`information_schema` is reserved for metadata".into(),
                    });
                }
                for table_path in sorted_entries(&schema_dir)? {
                    let Some(entry) = load_table(&ctx, &table_path).await? else {
                        continue;
                    };
                    self.add_table(&catalog, &schema, entry)
                        .map_err(|message| EngineError::DataDir {
                            path: table_path.clone(),
                            message,
                        })?;
                }
            }
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Directory entries, sorted, without hidden (`.x`) and metadata (`_x`) names.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let read = std::fs::read_dir(dir).map_err(|e| EngineError::DataDir {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| EngineError::DataDir {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

async fn load_table(ctx: &SessionContext, path: &Path) -> Result<Option<TableEntry>, EngineError> {
    let name = file_name(path);
    let err = |message: String| EngineError::DataDir {
        path: path.to_path_buf(),
        message,
    };
    let utf8 = path
        .to_str()
        .ok_or_else(|| err("the path is not valid UTF-8".into()))?;
    let (table, format) = if path.is_dir() {
        (name.clone(), "PARQUET")
    } else if let Some(stem) = name.strip_suffix(".parquet") {
        (stem.to_string(), "PARQUET")
    } else if let Some(stem) = name.strip_suffix(".csv") {
        (stem.to_string(), "CSV")
    } else {
        tracing::warn!(path = %path.display(), "ignoring a file that is neither .parquet nor .csv");
        return Ok(None);
    };
    // A scratch name: the provider is moved into the registry afterwards.
    let scratch = "dbfed_scratch";
    let registered = match format {
        "CSV" => {
            ctx.register_csv(scratch, utf8, CsvReadOptions::new().has_header(true))
                .await
        }
        _ => {
            ctx.register_parquet(scratch, utf8, ParquetReadOptions::default())
                .await
        }
    };
    registered.map_err(|e| err(e.to_string()))?;
    let provider = ctx
        .table_provider(scratch)
        .await
        .map_err(|e| err(e.to_string()))?;
    let _ = ctx.deregister_table(scratch);
    Ok(Some(TableEntry {
        name: table.to_ascii_lowercase(),
        provider,
        table_type: "EXTERNAL",
        format,
        comment: None,
        source: Some(path.to_path_buf()),
    }))
}

/// Result of looking a table up through grants.
pub(crate) enum Lookup<'a> {
    Found(&'a TableEntry),
    Denied,
    Missing,
}

/// The registry as one caller sees it.
#[derive(Debug)]
pub(crate) struct Access {
    pub registry: Arc<Registry>,
    pub grants: Option<Grants>,
    /// Session time zone, for type names of TIMESTAMP columns.
    pub time_zone: String,
}

impl Access {
    pub fn catalog_visible(&self, catalog: &str) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.allows_catalog(catalog))
    }

    pub fn schema_visible(&self, catalog: &str, schema: &str) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.allows_schema(catalog, schema))
    }

    /// Visible catalogs, sorted by name.
    pub fn catalogs(&self) -> Vec<&CatalogEntry> {
        self.registry
            .catalogs
            .values()
            .filter(|c| self.catalog_visible(&c.name))
            .collect()
    }

    /// Visible schemas of a visible catalog (`None` when the catalog is missing or hidden).
    pub fn schemas(&self, catalog: &str) -> Option<Vec<&SchemaEntry>> {
        let c = self.registry.catalogs.get(&catalog.to_ascii_lowercase())?;
        if !self.catalog_visible(&c.name) {
            return None;
        }
        Some(
            c.schemas
                .values()
                .filter(|s| self.schema_visible(&c.name, &s.name))
                .collect(),
        )
    }

    /// A visible schema.
    pub fn schema(&self, catalog: &str, schema: &str) -> Option<&SchemaEntry> {
        let c = self.registry.catalogs.get(&catalog.to_ascii_lowercase())?;
        let s = c.schemas.get(&schema.to_ascii_lowercase())?;
        self.schema_visible(&c.name, &s.name).then_some(s)
    }

    pub fn lookup(&self, catalog: &str, schema: &str, table: &str) -> Lookup<'_> {
        let found = self
            .registry
            .catalogs
            .get(&catalog.to_ascii_lowercase())
            .and_then(|c| c.schemas.get(&schema.to_ascii_lowercase()))
            .and_then(|s| s.tables.get(&table.to_ascii_lowercase()));
        match found {
            None => Lookup::Missing,
            Some(t) if t.source.as_ref().is_some_and(|p| !p.exists()) => Lookup::Missing,
            Some(_) if !self.schema_visible(catalog, schema) => Lookup::Denied,
            Some(t) => Lookup::Found(t),
        }
    }

    /// Whether `name` is one of the metadata tables.
    pub fn is_metadata_table(name: &str) -> bool {
        matches!(
            name.to_ascii_lowercase().as_str(),
            "catalogs" | "schemata" | "tables" | "columns"
        )
    }

    /// Builds one `information_schema` table over `catalog` (or all catalogs when `None`).
    pub fn information_schema(&self, catalog: Option<&str>, table: &str) -> Option<MemTable> {
        let catalogs: Vec<&CatalogEntry> = self
            .catalogs()
            .into_iter()
            .filter(|c| catalog.is_none_or(|name| c.name.eq_ignore_ascii_case(name)))
            .collect();
        let batch = match table.to_ascii_lowercase().as_str() {
            "catalogs" => catalogs_batch(&catalogs),
            "schemata" => schemata_batch(self, &catalogs),
            "tables" => tables_batch(self, &catalogs),
            "columns" => columns_batch(self, &catalogs),
            _ => return None,
        };
        let batch = batch.ok()?;
        MemTable::try_new(batch.schema(), vec![vec![batch]]).ok()
    }
}

fn strings(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn string_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn catalogs_batch(catalogs: &[&CatalogEntry]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        string_field("catalog_name", false),
        string_field("catalog_owner", true),
        string_field("comment", true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            strings(catalogs.iter().map(|c| Some(c.name.clone())).collect()),
            strings(catalogs.iter().map(|_| Some("dbfed".to_string())).collect()),
            strings(catalogs.iter().map(|c| c.comment.clone()).collect()),
        ],
    )
}

fn schemata_batch(
    access: &Access,
    catalogs: &[&CatalogEntry],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for c in catalogs {
        rows.push((c.name.clone(), INFORMATION_SCHEMA.to_string()));
        for s in access.schemas(&c.name).unwrap_or_default() {
            rows.push((c.name.clone(), s.name.clone()));
        }
    }
    rows.sort();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        string_field("catalog_name", false),
        string_field("schema_name", false),
        string_field("schema_owner", true),
        string_field("comment", true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            strings(rows.iter().map(|r| Some(r.0.clone())).collect()),
            strings(rows.iter().map(|r| Some(r.1.clone())).collect()),
            strings(rows.iter().map(|_| Some("dbfed".to_string())).collect()),
            strings(rows.iter().map(|_| None).collect()),
        ],
    )
}

/// Visible (catalog, schema, table) triples, sorted.
fn visible_tables<'a>(
    access: &'a Access,
    catalogs: &[&'a CatalogEntry],
) -> Vec<(&'a str, &'a str, &'a TableEntry)> {
    let mut out = Vec::new();
    for c in catalogs {
        for s in access.schemas(&c.name).unwrap_or_default() {
            for t in s.tables.values() {
                out.push((c.name.as_str(), s.name.as_str(), t));
            }
        }
    }
    out
}

fn tables_batch(
    access: &Access,
    catalogs: &[&CatalogEntry],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let rows = visible_tables(access, catalogs);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        string_field("table_catalog", false),
        string_field("table_schema", false),
        string_field("table_name", false),
        string_field("table_type", false),
        string_field("is_insertable_into", false),
        string_field("table_owner", true),
        string_field("comment", true),
        string_field("data_source_format", true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            strings(rows.iter().map(|r| Some(r.0.to_string())).collect()),
            strings(rows.iter().map(|r| Some(r.1.to_string())).collect()),
            strings(rows.iter().map(|r| Some(r.2.name.clone())).collect()),
            strings(
                rows.iter()
                    .map(|r| Some(r.2.table_type.to_string()))
                    .collect(),
            ),
            strings(rows.iter().map(|_| Some("NO".to_string())).collect()),
            strings(rows.iter().map(|_| Some("dbfed".to_string())).collect()),
            strings(rows.iter().map(|r| r.2.comment.clone()).collect()),
            strings(rows.iter().map(|r| Some(r.2.format.to_string())).collect()),
        ],
    )
}

fn columns_batch(
    access: &Access,
    catalogs: &[&CatalogEntry],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut cat = Vec::new();
    let mut sch = Vec::new();
    let mut tab = Vec::new();
    let mut col = Vec::new();
    let mut pos = Vec::new();
    let mut nullable = Vec::new();
    let mut full = Vec::new();
    let mut dtype = Vec::new();
    let mut precision = Vec::new();
    let mut radix = Vec::new();
    let mut scale = Vec::new();
    let mut interval = Vec::new();
    let mut comment: Vec<Option<String>> = Vec::new();
    for (c, s, t) in visible_tables(access, catalogs) {
        for (i, field) in t.provider.schema().fields().iter().enumerate() {
            let st = sql_type(field.data_type(), &access.time_zone);
            let (p, r, sc) = st.numeric_info();
            cat.push(Some(c.to_string()));
            sch.push(Some(s.to_string()));
            tab.push(Some(t.name.clone()));
            col.push(Some(field.name().clone()));
            pos.push(i32::try_from(i).unwrap_or(i32::MAX));
            nullable.push(Some(
                if field.is_nullable() { "YES" } else { "NO" }.to_string(),
            ));
            full.push(Some(st.simple.clone()));
            dtype.push(Some(st.type_name.to_string()));
            precision.push(p);
            radix.push(r);
            scale.push(sc);
            interval.push(st.interval_type.map(str::to_string));
            comment.push(None);
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        string_field("table_catalog", false),
        string_field("table_schema", false),
        string_field("table_name", false),
        string_field("column_name", false),
        Field::new("ordinal_position", DataType::Int32, false),
        string_field("is_nullable", false),
        string_field("full_data_type", false),
        string_field("data_type", false),
        Field::new("numeric_precision", DataType::Int32, true),
        Field::new("numeric_precision_radix", DataType::Int32, true),
        Field::new("numeric_scale", DataType::Int32, true),
        string_field("interval_type", true),
        string_field("comment", true),
        Field::new("is_identity", DataType::Boolean, true),
    ]));
    let n = cat.len();
    RecordBatch::try_new(
        schema,
        vec![
            strings(cat),
            strings(sch),
            strings(tab),
            strings(col),
            Arc::new(Int32Array::from(pos)),
            strings(nullable),
            strings(full),
            strings(dtype),
            Arc::new(Int32Array::from(precision)),
            Arc::new(Int32Array::from(radix)),
            Arc::new(Int32Array::from(scale)),
            strings(interval),
            strings(comment),
            Arc::new(BooleanArray::from(vec![Some(false); n])),
        ],
    )
}

/// The per-request catalog list DataFusion plans against.
#[derive(Debug)]
pub(crate) struct RequestCatalogs {
    pub access: Arc<Access>,
}

impl CatalogProviderList for RequestCatalogs {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // The namespace is read-only.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .access
            .catalogs()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        names.push(SYSTEM.to_string());
        names
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let lower = name.to_ascii_lowercase();
        if lower == SYSTEM {
            return Some(Arc::new(RequestCatalog {
                access: Arc::clone(&self.access),
                catalog: None,
            }));
        }
        let c = self.access.registry.catalogs.get(&lower)?;
        self.access.catalog_visible(&c.name).then(|| {
            Arc::new(RequestCatalog {
                access: Arc::clone(&self.access),
                catalog: Some(c.name.clone()),
            }) as Arc<dyn CatalogProvider>
        })
    }
}

/// A catalog as the caller sees it; `catalog: None` is `system`.
#[derive(Debug)]
struct RequestCatalog {
    access: Arc<Access>,
    catalog: Option<String>,
}

impl CatalogProvider for RequestCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![INFORMATION_SCHEMA.to_string()];
        if let Some(c) = &self.catalog {
            names.extend(
                self.access
                    .schemas(c)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.name.clone()),
            );
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
            return Some(Arc::new(InformationSchema {
                access: Arc::clone(&self.access),
                catalog: self.catalog.clone(),
            }));
        }
        let c = self.catalog.as_ref()?;
        let s = self.access.schema(c, name)?;
        Some(Arc::new(RequestSchema {
            access: Arc::clone(&self.access),
            catalog: c.clone(),
            schema: s.name.clone(),
        }))
    }
}

#[derive(Debug)]
struct RequestSchema {
    access: Arc<Access>,
    catalog: String,
    schema: String,
}

#[async_trait]
impl SchemaProvider for RequestSchema {
    fn table_names(&self) -> Vec<String> {
        self.access
            .schema(&self.catalog, &self.schema)
            .map(|s| s.tables.values().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(
            match self.access.lookup(&self.catalog, &self.schema, name) {
                Lookup::Found(t) => Some(Arc::clone(&t.provider)),
                Lookup::Denied | Lookup::Missing => None,
            },
        )
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(
            self.access.lookup(&self.catalog, &self.schema, name),
            Lookup::Found(_)
        )
    }
}

#[derive(Debug)]
struct InformationSchema {
    access: Arc<Access>,
    catalog: Option<String>,
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        ["catalogs", "columns", "schemata", "tables"]
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self
            .access
            .information_schema(self.catalog.as_deref(), name)
            .map(|t| Arc::new(t) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        Access::is_metadata_table(name)
    }
}
