//! Writing results to the terminal or to files, batch by batch.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use clap::ValueEnum;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// Output formats of `dbfed query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table.
    Table,
    /// CSV with a header row.
    Csv,
    /// Newline-delimited JSON objects.
    Json,
    /// An Arrow IPC stream.
    Arrow,
    /// Apache Parquet (zstd-compressed).
    Parquet,
}

/// What was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteSummary {
    /// Rows written.
    pub rows: usize,
    /// Record batches written.
    pub batches: usize,
}

/// The output sink: `Send` so that Parquet's writer accepts it.
pub type Output = Box<dyn Write + Send>;

enum Sink {
    /// Table output buffers the whole result (it needs column widths).
    Table(Vec<RecordBatch>, Output),
    Csv(arrow::csv::Writer<Output>),
    Json(arrow::json::LineDelimitedWriter<Output>),
    Arrow(arrow::ipc::writer::StreamWriter<Output>),
    Parquet(ArrowWriter<Output>),
}

/// Writes record batches in one [`OutputFormat`]; every format but `table` streams.
pub struct ResultWriter {
    schema: SchemaRef,
    sink: Sink,
    summary: WriteSummary,
}

impl std::fmt::Debug for ResultWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultWriter")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl ResultWriter {
    /// A writer of `schema`-shaped batches to `out`.
    pub fn new(format: OutputFormat, schema: SchemaRef, out: Output) -> Result<Self> {
        let sink = match format {
            OutputFormat::Table => Sink::Table(Vec::new(), out),
            OutputFormat::Csv => Sink::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            OutputFormat::Json => Sink::Json(arrow::json::LineDelimitedWriter::new(out)),
            OutputFormat::Arrow => Sink::Arrow(
                arrow::ipc::writer::StreamWriter::try_new(out, &schema)
                    .context("writing Arrow IPC")?,
            ),
            OutputFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Sink::Parquet(
                    ArrowWriter::try_new(out, schema.clone(), Some(properties))
                        .context("writing Parquet")?,
                )
            }
        };
        Ok(Self {
            schema,
            sink,
            summary: WriteSummary::default(),
        })
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.summary.rows += batch.num_rows();
        self.summary.batches += 1;
        match &mut self.sink {
            Sink::Table(batches, _) => batches.push(batch),
            Sink::Csv(writer) => writer.write(&batch).context("writing CSV")?,
            Sink::Json(writer) => writer.write(&batch).context("writing JSON")?,
            Sink::Arrow(writer) => writer.write(&batch).context("writing Arrow IPC")?,
            Sink::Parquet(writer) => writer.write(&batch).context("writing Parquet")?,
        }
        Ok(())
    }

    /// Finishes the file (footers, the table) and flushes.
    pub fn finish(self) -> Result<WriteSummary> {
        match self.sink {
            Sink::Table(mut batches, mut out) => {
                if batches.is_empty() {
                    batches.push(RecordBatch::new_empty(self.schema));
                }
                let table = arrow::util::pretty::pretty_format_batches(&batches)
                    .context("formatting the result")?;
                writeln!(out, "{table}")?;
                out.flush()?;
            }
            Sink::Csv(writer) => writer.into_inner().flush()?,
            Sink::Json(mut writer) => {
                writer.finish().context("writing JSON")?;
                writer.into_inner().flush()?;
            }
            Sink::Arrow(mut writer) => {
                writer.finish().context("writing Arrow IPC")?;
                writer.into_inner().context("writing Arrow IPC")?.flush()?;
            }
            Sink::Parquet(writer) => {
                writer.into_inner().context("writing Parquet")?.flush()?;
            }
        }
        Ok(self.summary)
    }
}

/// Streams every batch of `reader` to `out` in `format`.
pub fn write_results(
    reader: impl RecordBatchReader,
    format: OutputFormat,
    out: Output,
) -> Result<WriteSummary> {
    let mut writer = ResultWriter::new(format, reader.schema(), out)?;
    for batch in reader {
        writer.write(batch.context("reading the result")?)?;
    }
    writer.finish()
}

/// Opens `path` for writing (buffered), or stdout when `None`.
pub fn open_output(path: Option<&Path>) -> Result<Output> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    })
}
