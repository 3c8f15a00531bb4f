//! Local tables (Parquet, CSV) registered next to the Databricks catalogs.

use std::path::Path;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

/// The file formats [`register_local_table`] reads, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFormat {
    /// `.parquet` / `.parq` files, or a directory of them.
    Parquet,
    /// `.csv` files with a header row.
    Csv,
}

impl LocalFormat {
    /// The format of `path` by its extension (for a directory: of the files it holds).
    pub fn of(path: &Path) -> Result<Self> {
        let by_extension = |p: &Path| match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet" | "parq") => Some(Self::Parquet),
            Some("csv") => Some(Self::Csv),
            _ => None,
        };
        if let Some(format) = by_extension(path) {
            return Ok(format);
        }
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| {
                DataFusionError::Plan(format!("cannot read directory {}: {e}", path.display()))
            })?;
            for entry in entries.flatten() {
                if let Some(format) = by_extension(&entry.path()) {
                    return Ok(format);
                }
            }
        }
        Err(DataFusionError::Plan(format!(
            "cannot tell the format of {}: expected a .parquet or .csv file (or a directory of them)",
            path.display()
        )))
    }
}

/// Registers the Parquet or CSV file (or directory) at `path` as table `name` in `ctx`.
///
/// `name` may be qualified (`schema.table`, `catalog.schema.table`) like any DataFusion table
/// reference. The file must exist: a missing path is an error naming it.
pub async fn register_local_table(
    ctx: &SessionContext,
    name: &str,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(DataFusionError::Plan(format!(
            "local table {name}: {} does not exist",
            path.display()
        )));
    }
    let location = path.to_str().ok_or_else(|| {
        DataFusionError::Plan(format!(
            "local table {name}: path {} is not valid UTF-8",
            path.display()
        ))
    })?;
    match LocalFormat::of(path)? {
        LocalFormat::Parquet => {
            let options = ParquetReadOptions::default();
            let options = if path.is_dir() {
                options
            } else {
                options.file_extension(extension_of(path))
            };
            ctx.register_parquet(name, location, options).await
        }
        LocalFormat::Csv => {
            let options = CsvReadOptions::new().has_header(true);
            let options = if path.is_dir() {
                options
            } else {
                options.file_extension(extension_of(path))
            };
            ctx.register_csv(name, location, options).await
        }
    }
}

fn extension_of(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ],
        )
        .expect("valid batch")
    }

    #[tokio::test]
    async fn registers_parquet_and_csv_by_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer_ctx = SessionContext::new();
        let df = writer_ctx.read_batch(batch()).expect("read batch");
        let parquet = dir.path().join("t.parquet");
        let csv = dir.path().join("t.CSV");
        df.clone()
            .write_parquet(parquet.to_str().expect("utf8"), Default::default(), None)
            .await
            .expect("write parquet");
        df.write_csv(csv.to_str().expect("utf8"), Default::default(), None)
            .await
            .expect("write csv");

        let ctx = SessionContext::new();
        register_local_table(&ctx, "p", &parquet)
            .await
            .expect("parquet");
        register_local_table(&ctx, "c", &csv).await.expect("csv");
        for table in ["p", "c"] {
            let rows = ctx
                .sql(&format!("SELECT sum(id) AS s, max(name) AS m FROM {table}"))
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            let sums = rows[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64 sum");
            assert_eq!(sums.value(0), 6, "table {table}");
        }
    }

    #[tokio::test]
    async fn missing_and_unknown_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = SessionContext::new();
        let missing = dir.path().join("nope.parquet");
        let err = register_local_table(&ctx, "t", &missing)
            .await
            .expect_err("missing file");
        assert!(err.to_string().contains("nope.parquet"), "{err}");
        let odd = dir.path().join("data.xlsx");
        std::fs::write(&odd, b"x").expect("write");
        let err = register_local_table(&ctx, "t", &odd)
            .await
            .expect_err("unknown format");
        assert!(err.to_string().contains("data.xlsx"), "{err}");
    }
}
