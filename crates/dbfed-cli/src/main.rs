//! `dbfed`: query Databricks SQL Warehouses from the Arrow world.

mod demo;
mod emulator;
mod faults;
mod output;
mod query;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Query Databricks SQL Warehouses from the Arrow world.
#[derive(Debug, Parser)]
#[command(name = "dbfed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the embedded warehouse emulator and run a showcase query against it.
    Demo(demo::DemoArgs),
    /// Run a local Databricks SQL Warehouse emulator (Statement Execution API over HTTP(S)).
    Emulator(emulator::EmulatorArgs),
    /// Run one SQL statement on a warehouse (or the embedded emulator) and print the result.
    Query(query::QueryArgs),
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let outcome: Result<()> = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Emulator(args) => emulator::run(args),
        Command::Query(args) => query::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings only).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
