//! `dbfed`: query Databricks SQL Warehouses from the Arrow world.

mod check;
mod config;
mod demo;
mod emulator;
mod engine;
mod faults;
mod memory;
mod output;
mod query;
mod serve;
mod signals;
mod workspace;

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
    /// Serve Databricks catalogs and local tables as an Arrow Flight SQL endpoint.
    Serve(serve::ServeArgs),
    /// Check a configuration against its workspace: DNS, TLS, token, warehouse, catalogs.
    Check(check::CheckArgs),
}

/// Exit code of a failed command.
const EXIT_FAILURE: u8 = 1;

/// Stack size of the async runtime's worker threads: DataFusion's planner and SQL unparser
/// recurse deeply on large queries (TPC-H overflows the default 2 MiB in debug builds).
const RUNTIME_STACK_BYTES: usize = 16 << 20;

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let outcome: Result<std::process::ExitCode> = match cli.command {
        Command::Demo(args) => demo::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Emulator(args) => emulator::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Query(args) => query::run(args),
        Command::Serve(args) => serve::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Check(args) => check::run(args).map(|outcome| match outcome {
            check::Outcome::Healthy => std::process::ExitCode::SUCCESS,
            check::Outcome::Failed => std::process::ExitCode::from(EXIT_FAILURE),
        }),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_message(&error));
            std::process::ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The error and its causes, `: `-separated, each said once: a cause whose text the message
/// already holds (many errors repeat their source in their own text) is skipped.
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || message.contains(text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(text);
    }
    message
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("driver error: {source}")]
    struct Wrapping {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::other("403 Invalid access token.");
        let error = anyhow::Error::new(Wrapping { source: inner }).context("cannot run the query");
        assert_eq!(
            error_message(&error),
            "cannot run the query: driver error: 403 Invalid access token."
        );
        let plain = anyhow::anyhow!("reading the result").context("writing CSV");
        assert_eq!(error_message(&plain), "writing CSV: reading the result");
    }
}
