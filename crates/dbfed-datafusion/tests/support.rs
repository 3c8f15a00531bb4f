//! Fixtures: an emulator on loopback, an executor over it, a registered source.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::{Client, Param, RetryPolicy};
use dbfed_datafusion::{
    DatabricksSource, DatabricksSourceBuilder, PushdownMode, federated_session_context,
};
use dbfed_emulator::{BackgroundEmulator, Emulator, EmulatorBuilder, StatementRecord};
use dbfed_executor::{
    CancelToken, Connection, DatabricksDriver, Driver, DriverError, Execution, Executor,
};
use dbfed_tests::{client_config, on_plain_thread};

/// The token every test emulator accepts.
pub const TOKEN: &str = "dapi-datafusion-test-token-0123";

pub use dbfed_tests::Warehouse;

/// Starts `builder` (with [`TOKEN`] accepted) on a free loopback port.
pub fn start(builder: EmulatorBuilder) -> Warehouse {
    Warehouse::spawn(builder.token(TOKEN))
}

/// An emulator with `samples.tpch` at scale 0.01.
pub fn emulator() -> Warehouse {
    start(Emulator::builder().tpch_scale(0.01))
}

/// The Databricks driver for `emulator`, with fast retries. The blocking HTTP client is built
/// on a plain thread: building (or dropping) it on a runtime thread panics.
pub fn driver(emulator: &BackgroundEmulator) -> DatabricksDriver {
    let config = client_config(emulator, "df0123456789abcd", TOKEN);
    on_plain_thread(move || {
        let client = Client::builder(config)
            .retry_policy(
                RetryPolicy::default()
                    .base_delay(Duration::from_millis(10))
                    .max_delay(Duration::from_millis(100))
                    .max_elapsed(Duration::from_secs(20)),
            )
            .build()
            .expect("client builds");
        DatabricksDriver::new(client)
    })
}

/// An executor over `driver`.
pub fn executor_with(driver: impl Driver) -> Executor {
    Executor::builder(driver)
        .threads(4)
        .queue_timeout(Duration::from_secs(60))
        .build()
        .expect("executor builds")
}

/// An executor over `emulator`.
pub fn executor(emulator: &BackgroundEmulator) -> Executor {
    executor_with(driver(emulator))
}

/// A session with information_schema, federation rule and planner.
pub fn session() -> SessionContext {
    federated_session_context(SessionConfig::new().with_information_schema(true))
}

/// `samples` of `emulator` registered in a fresh federated session with `mode`.
pub async fn samples(emulator: &BackgroundEmulator, mode: PushdownMode) -> SessionContext {
    samples_with(emulator, |b| b.pushdown(mode)).await
}

/// Like [`samples`], with more builder settings.
pub async fn samples_with(
    emulator: &BackgroundEmulator,
    configure: impl FnOnce(DatabricksSourceBuilder) -> DatabricksSourceBuilder,
) -> SessionContext {
    let source = configure(DatabricksSource::builder(executor(emulator)).catalogs(["samples"]))
        .build()
        .expect("source builds");
    let ctx = session();
    source.register(&ctx).await.expect("registers");
    ctx
}

/// Runs `sql` in `ctx`.
pub async fn run(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await
}

/// Runs `sql`, panicking with the error.
pub async fn rows(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    match run(ctx, sql).await {
        Ok(b) => b,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Total rows of `batches`.
pub fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The rows of `batches` as sorted text lines (for order-insensitive comparison).
pub fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).expect("formats").to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Runs `sql` (panicking with the error) and returns its rows and the data statements the
/// emulator received while it ran.
pub async fn rows_and_sent(
    ctx: &SessionContext,
    emulator: &BackgroundEmulator,
    sql: &str,
) -> (Vec<RecordBatch>, Vec<StatementRecord>) {
    let before = emulator.statements().len();
    let batches = rows(ctx, sql).await;
    (batches, data_statements(emulator, before))
}

/// The statements the emulator received after the first `skip`, metadata queries excluded.
pub fn data_statements(emulator: &BackgroundEmulator, skip: usize) -> Vec<StatementRecord> {
    emulator
        .statements()
        .into_iter()
        .skip(skip)
        .filter(|r| !is_metadata(&r.sql))
        .collect()
}

/// Whether `sql` is one of the source's discovery statements.
pub fn is_metadata(sql: &str) -> bool {
    sql.contains("information_schema") || sql.starts_with("DESCRIBE") || sql.starts_with("SHOW")
}

/// Writes `batch` as a Parquet file at `path` (creating its directory).
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

/// A driver that talks to `primary` until [`SwitchDriver::switch`], then to `secondary` (even
/// on pooled connections), and fails statements mentioning any of the `poisoned` strings in
/// their text or parameters: a warehouse whose metadata changes, or has one unreadable table.
pub struct SwitchDriver {
    primary: DatabricksDriver,
    secondary: Option<DatabricksDriver>,
    switched: Arc<AtomicBool>,
    poisoned: Arc<Vec<String>>,
}

impl SwitchDriver {
    pub fn new(
        primary: DatabricksDriver,
        secondary: Option<DatabricksDriver>,
        poisoned: Vec<String>,
    ) -> (Self, Arc<AtomicBool>) {
        let switched = Arc::new(AtomicBool::new(false));
        (
            Self {
                primary,
                secondary,
                switched: Arc::clone(&switched),
                poisoned: Arc::new(poisoned),
            },
            switched,
        )
    }
}

struct SwitchConnection {
    primary: Box<dyn Connection>,
    secondary: Option<Box<dyn Connection>>,
    switched: Arc<AtomicBool>,
    poisoned: Arc<Vec<String>>,
}

impl Driver for SwitchDriver {
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        Ok(Box::new(SwitchConnection {
            primary: self.primary.connect()?,
            secondary: self.secondary.as_ref().map(|d| d.connect()).transpose()?,
            switched: Arc::clone(&self.switched),
            poisoned: Arc::clone(&self.poisoned),
        }))
    }
}

impl Connection for SwitchConnection {
    fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Execution, DriverError> {
        let poisoned = self.poisoned.iter().any(|p| {
            sql.contains(p.as_str()) || params.iter().any(|x| x.value() == Some(p.as_str()))
        });
        if poisoned {
            return Err(DriverError::new(format!(
                "[PERMISSION_DENIED] poisoned: {sql}"
            )));
        }
        match (&mut self.secondary, self.switched.load(Ordering::SeqCst)) {
            (Some(secondary), true) => secondary.execute(sql, params, cancel),
            _ => self.primary.execute(sql, params, cancel),
        }
    }

    fn ping(&mut self) -> Result<(), DriverError> {
        self.primary.ping()
    }

    fn close(self: Box<Self>) -> Result<(), DriverError> {
        let this = *self;
        if let Some(s) = this.secondary {
            let _ = s.close();
        }
        this.primary.close()
    }
}
