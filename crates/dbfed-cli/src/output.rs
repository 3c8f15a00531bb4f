//! Writing result streams to the terminal or to files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use clap::ValueEnum;

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
}

/// What was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteSummary {
    /// Rows written.
    pub rows: usize,
    /// Record batches read.
    pub batches: usize,
}

/// Streams every batch of `reader` to `out` in `format`. Table output buffers the whole result
/// (it needs column widths); every other format streams batch by batch.
pub fn write_results(
    reader: impl RecordBatchReader,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<WriteSummary> {
    let schema = reader.schema();
    let mut summary = WriteSummary::default();
    let mut count = |batch: &RecordBatch| {
        summary.rows += batch.num_rows();
        summary.batches += 1;
    };
    match format {
        OutputFormat::Table => {
            let mut batches = Vec::new();
            for batch in reader {
                let batch = batch.context("reading the result")?;
                count(&batch);
                batches.push(batch);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            let table = arrow::util::pretty::pretty_format_batches(&batches)
                .context("formatting the result")?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in reader {
                let batch = batch.context("reading the result")?;
                count(&batch);
                writer.write(&batch).context("writing CSV")?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in reader {
                let batch = batch.context("reading the result")?;
                count(&batch);
                writer.write(&batch).context("writing JSON")?;
            }
            writer.finish().context("writing JSON")?;
        }
        OutputFormat::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut *out, &schema)
                .context("writing Arrow IPC")?;
            for batch in reader {
                let batch = batch.context("reading the result")?;
                count(&batch);
                writer.write(&batch).context("writing Arrow IPC")?;
            }
            writer.finish().context("writing Arrow IPC")?;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Opens `path` for writing (buffered), or stdout when `None`.
pub fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}
