//! A local Databricks SQL Warehouse speaking the Statement Execution REST contract, on DataFusion.
//!
//! The emulator is the fixture of dbfed's integration tests, the load target of its benchmarks and the
//! embedded warehouse of `dbfed demo`. It answers the endpoints of the Databricks SQL Statement
//! Execution API (`/api/2.0/sql/statements`, chunks, cancel, close, sessions), serves
//! `EXTERNAL_LINKS` results from its own signed, expiring download path, authenticates static tokens,
//! OAuth M2M and Azure-AD-style client credentials, and emulates warehouse behaviour (latency,
//! concurrency with a queue, chunking) and faults (429/503, connection resets, slow downloads, expired
//! links, statements failing mid-way).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dbfed_emulator::EmulatorError> {
//! use dbfed_emulator::Emulator;
//! let handle = Emulator::builder().tpch_scale(0.01).token("dapi-test").start("127.0.0.1:0").await?;
//! println!("listening on {}", handle.url());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Synchronous callers (tests, benchmarks) use [`EmulatorBuilder::spawn`], which runs the server on
//! its own runtime thread and stops it when the returned [`BackgroundEmulator`] drops.

pub mod engine;

mod api;
mod auth;
mod config;
mod error;
mod execution;
mod faults;
mod format;
mod links;
mod records;
mod server;
mod state;
mod tls;

pub use auth::token_identity;
pub use config::EmulatorBuilder;
pub use error::EmulatorError;
pub use faults::{Endpoint, FaultAction, FaultId, FaultRule, Faults};
pub use records::{ParameterRecord, RequestRecord, StatementRecord, StatementState};
pub use server::{BackgroundEmulator, EmulatorHandle};

/// Entry point: `Emulator::builder()` returns an [`EmulatorBuilder`].
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

impl Emulator {
    /// A builder with every default (see [`EmulatorBuilder`]).
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}
