//! Writing results to the terminal or to files, batch by batch.
//!
//! Files are written to a temporary file beside the target and renamed over it only when the
//! result is complete: after an error or Ctrl-C no half-written file (say, Parquet without its
//! footer) is left behind, and an existing file is replaced whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use clap::ValueEnum;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// Rows the `table` format shows by default; the rest are counted, not kept.
pub const DEFAULT_MAX_TABLE_ROWS: usize = 1000;

/// Output formats of `dbfed query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table (the first `--max-rows` rows).
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
    /// Rows of the result (for `table`, including the rows counted but not shown).
    pub rows: usize,
    /// Record batches of the result.
    pub batches: usize,
}

/// The output sink: `Send` so that Parquet's writer accepts it.
pub type Output = Box<dyn Write + Send>;

/// The rows a `table` keeps (at most `max_rows`) and those it only counts.
struct TableSink {
    kept: Vec<RecordBatch>,
    kept_rows: usize,
    /// `None`: no limit.
    max_rows: Option<usize>,
    more_rows: usize,
    out: Output,
}

enum Sink {
    Table(TableSink),
    Csv(arrow::csv::Writer<Output>),
    Json(arrow::json::LineDelimitedWriter<Output>),
    Arrow(arrow::ipc::writer::StreamWriter<Output>),
    Parquet(ArrowWriter<Output>),
}

/// Writes record batches in one [`OutputFormat`]. Every format streams; `table` keeps the
/// first rows (it needs column widths) and counts the rest.
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
    /// A writer of `schema`-shaped batches to `out`; a `table` shows the first
    /// [`DEFAULT_MAX_TABLE_ROWS`] rows (see [`ResultWriter::max_table_rows`]).
    pub fn new(format: OutputFormat, schema: SchemaRef, out: Output) -> Result<Self> {
        let sink = match format {
            OutputFormat::Table => Sink::Table(TableSink {
                kept: Vec::new(),
                kept_rows: 0,
                max_rows: Some(DEFAULT_MAX_TABLE_ROWS),
                more_rows: 0,
                out,
            }),
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

    /// Rows a `table` shows (default [`DEFAULT_MAX_TABLE_ROWS`]; `None`: all of them, which
    /// keeps the whole result in memory). Other formats write every row.
    pub fn max_table_rows(mut self, max_rows: Option<usize>) -> Self {
        if let Sink::Table(table) = &mut self.sink {
            table.max_rows = max_rows;
        }
        self
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.summary.rows += batch.num_rows();
        self.summary.batches += 1;
        match &mut self.sink {
            Sink::Table(table) => table.push(batch),
            Sink::Csv(writer) => writer.write(&batch).context("writing CSV")?,
            Sink::Json(writer) => writer.write(&batch).context("writing JSON")?,
            Sink::Arrow(writer) => writer.write(&batch).context("writing Arrow IPC")?,
            Sink::Parquet(writer) => writer.write(&batch).context("writing Parquet")?,
        }
        Ok(())
    }

    /// Finishes the output (footers, the table) and flushes.
    pub fn finish(self) -> Result<WriteSummary> {
        match self.sink {
            Sink::Table(table) => table.finish(self.schema)?,
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

impl TableSink {
    fn push(&mut self, batch: RecordBatch) {
        let room = self
            .max_rows
            .map_or(usize::MAX, |max| max.saturating_sub(self.kept_rows));
        let keep = batch.num_rows().min(room);
        self.more_rows += batch.num_rows() - keep;
        if keep == 0 {
            return;
        }
        self.kept_rows += keep;
        // A copy of the kept rows: a slice would keep the whole batch's buffers alive.
        let batch = if keep < batch.num_rows() {
            let indices = arrow::array::UInt32Array::from_iter_values(0..keep as u32);
            arrow::compute::take_record_batch(&batch, &indices)
                .unwrap_or_else(|_| batch.slice(0, keep))
        } else {
            batch
        };
        self.kept.push(batch);
    }

    fn finish(mut self, schema: SchemaRef) -> Result<()> {
        if self.kept.is_empty() {
            self.kept.push(RecordBatch::new_empty(schema));
        }
        let table = arrow::util::pretty::pretty_format_batches(&self.kept)
            .context("formatting the result")?;
        writeln!(self.out, "{table}")?;
        if self.more_rows > 0 {
            writeln!(
                self.out,
                "… {} more {} (use --max-rows N, or --format csv|json|arrow|parquet --output FILE for all of them)",
                self.more_rows,
                if self.more_rows == 1 { "row" } else { "rows" }
            )?;
        }
        self.out.flush()?;
        Ok(())
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

/// Where a result goes: stdout, or a file that appears only once complete.
#[derive(Debug)]
pub struct Destination {
    pending: Option<PendingFile>,
}

impl Destination {
    /// Makes the output final: renames the temporary file over the target. Without this call
    /// (an error, Ctrl-C) dropping the destination removes the temporary file.
    pub fn commit(mut self) -> Result<()> {
        match self.pending.take() {
            Some(pending) => pending.commit(),
            None => Ok(()),
        }
    }
}

/// A temporary file beside its target, removed on drop unless committed.
#[derive(Debug)]
struct PendingFile {
    temporary: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingFile {
    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temporary, &self.target).with_context(|| {
            format!(
                "cannot move {} to {}",
                self.temporary.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Opens `path` for writing (buffered), or stdout when `None`.
///
/// A regular file is written as a temporary file in the same directory
/// (`.NAME.PID-N.partial`) that [`Destination::commit`] renames over `path` (over the file a
/// symbolic link points to); special files (`/dev/stdout`, a FIFO) are written in place.
pub fn open_output(path: Option<&Path>) -> Result<(Output, Destination)> {
    let Some(path) = path else {
        return Ok((
            Box::new(BufWriter::new(std::io::stdout())),
            Destination { pending: None },
        ));
    };
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    if special {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        return Ok((
            Box::new(BufWriter::new(file)),
            Destination { pending: None },
        ));
    }
    // A symbolic link stays a link: the file it points to is the one replaced.
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if is_link {
        std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve the link {}", path.display()))?
    } else {
        path.to_path_buf()
    };
    let temporary = temporary_path(&target)
        .with_context(|| format!("cannot write {}: it names no file", path.display()))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    let pending = PendingFile {
        temporary,
        target,
        committed: false,
    };
    Ok((
        Box::new(BufWriter::new(file)),
        Destination {
            pending: Some(pending),
        },
    ))
}

/// `DIR/.NAME.PID-N.partial` for `DIR/NAME`; `None` when `path` has no file name.
fn temporary_path(path: &Path) -> Option<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name()?.to_string_lossy();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Some(path.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id())))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};

    use super::*;

    /// An `Output` whose bytes the test can read after the writer is gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "n",
            Arc::new(Int64Array::from_iter_values(range)) as Arc<dyn Array>,
        )])
        .expect("batch")
    }

    #[test]
    fn a_table_shows_the_first_rows_and_counts_the_rest() {
        let out = Shared::default();
        let batch = numbers(0..4);
        let mut writer =
            ResultWriter::new(OutputFormat::Table, batch.schema(), Box::new(out.clone()))
                .expect("writer")
                .max_table_rows(Some(5));
        writer.write(batch).expect("write");
        writer.write(numbers(4..10)).expect("write");
        writer.write(numbers(10..13)).expect("write");
        let summary = writer.finish().expect("finish");
        assert_eq!(summary.rows, 13);
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        for shown in 0..5 {
            assert!(text.contains(&format!("| {shown} ")), "{text}");
        }
        assert!(!text.contains("| 5 "), "{text}");
        assert!(text.contains("… 8 more rows"), "{text}");
    }

    #[test]
    fn a_table_without_a_limit_shows_everything() {
        let out = Shared::default();
        let batch = numbers(0..3);
        let mut writer =
            ResultWriter::new(OutputFormat::Table, batch.schema(), Box::new(out.clone()))
                .expect("writer")
                .max_table_rows(None);
        writer.write(batch).expect("write");
        writer.finish().expect("finish");
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        assert!(
            text.contains("| 2 ") && !text.contains("more row"),
            "{text}"
        );
    }

    #[test]
    fn a_file_appears_only_when_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("out.csv");
        let (mut out, destination) = open_output(Some(&target)).expect("open");
        out.write_all(b"a\n1\n").expect("write");
        drop(out);
        assert!(!target.exists());
        destination.commit().expect("commit");
        assert_eq!(std::fs::read(&target).expect("read"), b"a\n1\n");

        let (mut out, destination) = open_output(Some(&target)).expect("open");
        out.write_all(b"half").expect("write");
        drop(out);
        drop(destination);
        assert_eq!(
            std::fs::read(&target).expect("read"),
            b"a\n1\n",
            "an abandoned write leaves the old file alone"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out.csv")]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_keeps_pointing_at_the_replaced_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::fs::write(&real, "old").expect("write");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let (mut out, destination) = open_output(Some(&link)).expect("open");
        out.write_all(b"new").expect("write");
        drop(out);
        destination.commit().expect("commit");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).expect("read"), b"new");
    }
}
