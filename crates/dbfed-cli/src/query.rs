//! `dbfed query`: run one statement and print or save its result.
//!
//! Without local tables, the statement goes to the warehouse as it is, through the executor
//! (dedicated worker threads; dropping the stream cancels the statement), so any Databricks SQL
//! works. With local tables (`--table`, `[tables]`) or `--explain`, it runs in a federated
//! DataFusion `SessionContext`: the warehouse's catalogs next to the local tables, the largest
//! Databricks-only parts pushed down as SQL.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use clap::{Args, ValueEnum};
use dbfed_databricks::{Param, ResultFormat};
use dbfed_executor::{DatabricksDriver, Executor};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::config::{TableSource, parse_table_flag};
use crate::output::{OutputFormat, ResultWriter, open_output};
use crate::signals::Stop;
use crate::workspace::{Target, WorkspaceArgs};

/// How the statement ended: it ran to the end (or failed), or a signal stopped it.
enum Finished<T> {
    Done(Result<T>),
    Stopped(Stop),
}

/// Flags of `dbfed query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL statement (or use --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub sql: Option<String>,
    /// Read the SQL statement from this file.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// A parameter for a `:name` marker: `name=value` (STRING) or `name:TYPE=value`
    /// (e.g. `region=ASIA`, `day:DATE=1995-01-01`). Repeatable. Not with local tables or
    /// --explain.
    #[arg(short, long = "param")]
    pub params: Vec<String>,
    /// A local table: `name=path.parquet` or `name=path.csv` (repeatable; adds to `[tables]`).
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout (it appears only once complete).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Rows the `table` format shows; the rest are counted, not kept (0: show every row, which
    /// holds the whole result in memory). Other formats write every row.
    #[arg(long, value_name = "N", default_value_t = crate::output::DEFAULT_MAX_TABLE_ROWS)]
    pub max_rows: usize,
    /// Fetch results as INLINE JSON_ARRAY instead of LZ4 Arrow external links.
    #[arg(long)]
    pub inline: bool,
    /// Print the query plan (with the SQL sent to the warehouse) instead of running it.
    #[arg(long)]
    pub explain: bool,
    /// Progress line on stderr (state, rows, bytes, elapsed): `auto` shows it when stderr is a
    /// terminal.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
}

/// When to show the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// When stderr is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Parses `name=value` / `name:TYPE=value` into a statement parameter.
pub fn parse_param(spec: &str) -> Result<Param> {
    let (key, value) = spec.split_once('=').with_context(|| {
        format!("parameter `{spec}` must look like name=value or name:TYPE=value")
    })?;
    let (name, type_name) = match key.split_once(':') {
        Some((name, type_name)) => (name, Some(type_name)),
        None => (key, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("parameter name `{name}` must be letters, digits and underscores");
    }
    let param = Param::new(name, value.to_owned());
    Ok(match type_name {
        Some(type_name) if !type_name.is_empty() => param.with_type(type_name),
        Some(_) => bail!("parameter `{spec}` has an empty type"),
        None => param,
    })
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    batches: AtomicU64,
}

/// Runs `dbfed query`; exit code 130 after Ctrl-C, 143 after SIGTERM (the statement is canceled
/// on the warehouse and no partial output file is left).
pub fn run(args: QueryArgs) -> Result<ExitCode> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        (None, None) => bail!("give a SQL statement or --file"),
    };
    let params = args
        .params
        .iter()
        .map(|spec| parse_param(spec))
        .collect::<Result<Vec<_>>>()?;
    let target = Target::resolve(&args.workspace)?;
    let mut tables: BTreeMap<String, TableSource> = target.config.tables.clone();
    for spec in &args.tables {
        let (name, source) = parse_table_flag(spec).map_err(anyhow::Error::msg)?;
        tables.insert(name, source);
    }

    let format = if args.inline {
        ResultFormat::JsonInline
    } else {
        ResultFormat::ArrowLz4
    };
    let client = target
        .client_builder()
        .result_format(format)
        .build()
        .context("cannot create the client")?;
    // One query: a couple of workers suffice unless the file says otherwise.
    let executor = target
        .config
        .executor
        .apply(Executor::builder(DatabricksDriver::new(client)).threads(2))
        .build()
        .context("invalid [executor] configuration")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dbfed-query")
        // Planning and unparsing deep SQL plans (e.g. TPC-H) recurses deeply.
        .thread_stack_size(crate::RUNTIME_STACK_BYTES)
        .build()
        .context("cannot start the async runtime")?;
    let show_progress = match args.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        let mut signals = crate::signals::StopSignals::install()?;
        let work = execute(
            &args,
            &sql,
            &params,
            &tables,
            &executor,
            &target.client_config,
            counters.clone(),
        );
        let progress = progress_line(show_progress, &executor, counters.clone(), started);
        tokio::select! {
            result = work => Ok(Finished::Done(result)),
            () = progress => Ok(Finished::Stopped(Stop::Interrupt)),
            signal = signals.recv() => signal.map(Finished::Stopped),
        }
    })?;
    if show_progress && std::io::stderr().is_terminal() {
        // Clear the progress line.
        eprint!("\r\x1b[2K");
    }
    // Cancels whatever still runs on the warehouse and joins the workers.
    let shutdown = std::thread::spawn(move || executor.shutdown());
    let _ = shutdown.join();
    drop(runtime);
    drop(target);
    match outcome {
        Finished::Done(Ok(summary)) => {
            if let Some(summary) = summary
                && (args.output.is_some() || args.format != OutputFormat::Table)
            {
                eprintln!(
                    "{} rows in {} batches ({:.1?})",
                    summary.rows,
                    summary.batches,
                    started.elapsed()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Finished::Done(Err(error)) => Err(error),
        Finished::Stopped(stop) => {
            eprintln!("canceled: the statement was canceled on the warehouse");
            Ok(ExitCode::from(stop.exit_code()))
        }
    }
}

/// Runs the statement and writes its result; `None` for `--explain`.
async fn execute(
    args: &QueryArgs,
    sql: &str,
    params: &[Param],
    tables: &BTreeMap<String, TableSource>,
    executor: &Executor,
    executor_target: &dbfed_databricks::config::ClientConfig,
    counters: Arc<Counters>,
) -> Result<Option<crate::output::WriteSummary>> {
    let (schema, stream): (SchemaRef, BatchStream) = if tables.is_empty() && !args.explain {
        let stream = executor.query(sql, params).await?;
        let schema = stream.schema();
        (schema, Box::pin(stream.map_err(anyhow::Error::from)))
    } else {
        if !params.is_empty() {
            bail!(
                "--param is not supported together with local tables or --explain yet: \
                 write the values into the statement"
            );
        }
        let compute_context = format!(
            "{}#{}",
            executor_target.host(),
            executor_target.warehouse_id()
        );
        let ctx =
            crate::engine::federated_context(executor, &compute_context, tables, None).await?;
        let df = ctx.sql(sql).await.context("planning the statement")?;
        if args.explain {
            let plan = df
                .explain(false, false)
                .context("explaining the statement")?
                .collect()
                .await
                .context("explaining the statement")?;
            let text =
                arrow::util::pretty::pretty_format_batches(&plan).context("formatting the plan")?;
            let (mut out, destination) = open_output(args.output.as_deref())?;
            writeln!(out, "{text}")?;
            out.flush()?;
            drop(out);
            destination.commit()?;
            return Ok(None);
        }
        let stream = df
            .execute_stream()
            .await
            .context("executing the statement")?;
        let schema = stream.schema();
        (schema, Box::pin(stream.map_err(anyhow::Error::from)))
    };
    // Dropped without a commit (an error, Ctrl-C), the destination removes its partial file.
    let (out, destination) = open_output(args.output.as_deref())?;
    let max_rows = (args.max_rows > 0).then_some(args.max_rows);
    let mut writer = ResultWriter::new(args.format, schema, out)?.max_table_rows(max_rows);
    let mut stream = stream;
    while let Some(batch) = stream.next().await {
        let batch = batch.context("reading the result")?;
        counters
            .rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        writer.write(batch)?;
    }
    let summary = writer.finish()?;
    destination.commit()?;
    Ok(Some(summary))
}

/// Redraws the progress line on stderr until dropped (never completes). On a terminal the
/// line is redrawn in place; elsewhere (`--progress always` into a file or pipe) it is printed
/// as a plain line once a second.
async fn progress_line(
    enabled: bool,
    executor: &Executor,
    counters: Arc<Counters>,
    started: Instant,
) {
    if !enabled {
        return std::future::pending().await;
    }
    let terminal = std::io::stderr().is_terminal();
    // Short queries finish before the first line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let period = if terminal { 250 } else { 1000 };
    let mut tick = tokio::time::interval(Duration::from_millis(period));
    loop {
        tick.tick().await;
        let metrics = executor.metrics();
        let line = progress_text(
            metrics.queued,
            counters.batches.load(Ordering::Relaxed),
            counters.rows.load(Ordering::Relaxed),
            metrics.bytes_received,
            started.elapsed(),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
}

/// One progress line: the query's state, rows delivered, bytes received from the warehouse
/// (as on the wire: API answers and result downloads), elapsed time.
fn progress_text(
    queued: usize,
    batches: u64,
    rows: u64,
    bytes_received: u64,
    elapsed: Duration,
) -> String {
    let state = if queued > 0 {
        // Waiting for one of the executor's workers.
        "QUEUED"
    } else if batches > 0 {
        "STREAMING"
    } else {
        // Submitted: the warehouse queues or runs it, or its first result chunk is on its way.
        "EXECUTING"
    };
    format!(
        "{state} {rows} rows, {} received, {:.1}s",
        crate::demo::human_bytes(bytes_received),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_the_state_rows_and_bytes_received() {
        let line = progress_text(1, 0, 0, 0, Duration::from_millis(1500));
        assert_eq!(line, "QUEUED 0 rows, 0.0 B received, 1.5s");
        let line = progress_text(0, 0, 0, 2048, Duration::from_secs(2));
        assert!(line.starts_with("EXECUTING 0 rows, "), "{line}");
        let line = progress_text(0, 3, 7, 5 << 20, Duration::from_secs(3));
        assert!(line.starts_with("STREAMING 7 rows, "), "{line}");
        assert!(line.contains("received"), "{line}");
    }

    #[test]
    fn parameters_parse_with_and_without_type() {
        let p = parse_param("region=ASIA").expect("valid");
        assert_eq!(p.name(), Some("region"));
        assert_eq!(p.value(), Some("ASIA"));
        let p = parse_param("day:DATE=1995-01-01").expect("valid");
        assert_eq!(p.type_name(), Some("DATE"));
        assert_eq!(p.value(), Some("1995-01-01"));
        let p = parse_param("expr=a=b").expect("value may contain =");
        assert_eq!(p.value(), Some("a=b"));
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = parse_param("novalue").expect_err("no =");
        assert!(err.to_string().contains("novalue"), "{err}");
        let err = parse_param("bad-name=1").expect_err("bad name");
        assert!(err.to_string().contains("bad-name"), "{err}");
        assert!(parse_param("x:=1").is_err());
    }
}
