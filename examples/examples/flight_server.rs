//! An Arrow Flight SQL server over a federated DataFusion context: any Flight SQL client (ADBC,
//! pyarrow, the Flight SQL JDBC driver, DBeaver...) queries the Databricks catalogs and a local
//! Parquet file together.
//!
//! ```sh
//! cargo run -p dbfed-examples --example flight_server              # until stdin closes (Ctrl-D) or Ctrl-C
//! cargo run -p dbfed-examples --example flight_server -- --seconds 60 --listen 127.0.0.1:50051
//! ```
//!
//! The first line on stdout is `listening on grpc://HOST:PORT`; hand that URI to a client, e.g.
//! `examples/python/adbc_client.py` or `examples/python/pyarrow_flight.py`. Tables: the
//! warehouse's `samples` catalog (`samples.tpch.*`) and `sales_targets` (nation,
//! region_manager, target), a Parquet file this example writes.
//!
//! It runs on the embedded emulator. Against a real workspace, replace the emulator block by one
//! line (see `warehouse_config`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionConfig;
use dbfed_databricks::Client;
use dbfed_databricks::config::ClientConfig;
use dbfed_datafusion::{DatabricksSource, federated_session_context, register_local_table};
use dbfed_emulator::{BackgroundEmulator, Emulator};
use dbfed_executor::{DatabricksDriver, Executor};
use dbfed_flight::{Auth, FlightSqlServer, StaticSessions};

const TOKEN: &str = "dapi-example";

/// Command line: `--listen ADDR` (default `127.0.0.1:0`), `--seconds N` (default: no bound).
#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    seconds: Option<u64>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v.parse().with_context(|| {
                    format!("--listen {v:?} is not an address like 127.0.0.1:0")
                })?;
            }
            "--seconds" => {
                let v = value("--seconds")?;
                args.seconds = Some(
                    v.parse()
                        .with_context(|| format!("--seconds {v:?} is not a whole number"))?,
                );
            }
            other => bail!("unknown argument {other:?} (expected --listen ADDR or --seconds N)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // The synchronous client (and the executor that runs it for async code) is built outside
    // the async runtime.
    let (config, _emulator) = warehouse_config()?;
    let executor = Executor::builder(DatabricksDriver::new(Client::new(config)?))
        .threads(4)
        .build()?;
    let dir = tempfile::tempdir()?;
    let targets = dir.path().join("sales_targets.parquet");
    write_sales_targets(&targets)?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // One federated context serves every caller (service-account mode). For one context
        // per caller with the caller's own Databricks token, use `PassThroughSessions` with
        // `Auth::PassThrough`.
        let ctx = federated_session_context(SessionConfig::new().with_information_schema(true));
        DatabricksSource::builder(executor.clone())
            .catalogs(["samples"])
            .build()?
            .register(&ctx)
            .await?;
        register_local_table(&ctx, "sales_targets", &targets).await?;

        let server = FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx)))
            // Local use: no authentication. `Auth::Basic(Credentials::new().user(..))` for
            // user names and passwords; `.tls(..)` for grpc+tls.
            .auth(Auth::None)
            .serve(args.listen)
            .await?;
        println!("listening on {}", server.url());
        std::io::stdout().flush()?;

        stop_signal(args.seconds).await;
        server.shutdown().await;
        println!("stopped");
        anyhow::Ok(())
    })?;
    // Dropped outside the runtime: the synchronous client may not be dropped on it.
    drop(runtime);
    drop(executor);
    Ok(())
}

/// Resolves when stdin closes, on Ctrl-C, or after `seconds`, whichever comes first.
async fn stop_signal(seconds: Option<u64>) {
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    // Reading stdin blocks: a plain thread does it (and dies with the process).
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let deadline = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        () = deadline => {}
    }
}

/// The warehouse to query: the embedded emulator, kept alive as long as the client uses it.
fn warehouse_config() -> Result<(ClientConfig, Option<BackgroundEmulator>)> {
    // A real workspace instead (DATABRICKS_HOST, DATABRICKS_HTTP_PATH, DATABRICKS_TOKEN or a
    // ~/.databrickscfg profile):
    //     return Ok((ClientConfig::from_env()?, None));
    let emulator = Emulator::builder()
        .tpch_scale(0.01)
        .token(TOKEN)
        .spawn("127.0.0.1:0")?;
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id("example")
        .token(TOKEN)
        .build()?;
    Ok((config, Some(emulator)))
}

/// A small local dataset: this year's revenue target and manager of five nations.
fn write_sales_targets(path: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("nation", DataType::Utf8, false),
        Field::new("region_manager", DataType::Utf8, false),
        Field::new("target", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                "FRANCE", "GERMANY", "JAPAN", "BRAZIL", "KENYA",
            ])),
            Arc::new(StringArray::from(vec![
                "Camille", "Jonas", "Haruto", "Beatriz", "Amani",
            ])),
            Arc::new(Float64Array::from(vec![
                12_000_000.0,
                11_000_000.0,
                9_500_000.0,
                10_500_000.0,
                8_000_000.0,
            ])),
        ],
    )?;
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}
