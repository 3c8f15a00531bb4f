//! A Databricks SQL Warehouse client over the Statement Execution REST API, with Arrow results.
//!
//! The API is synchronous by design: a blocking executor runs it on dedicated threads.
//!
//! ```no_run
//! use dbfed_databricks::{Client, Param, config::ClientConfig};
//!
//! let config = ClientConfig::builder()
//!     .host("adb-1234.5.azuredatabricks.net")
//!     .warehouse_id("8cfbc99c31463743")
//!     .token("dapi-example")
//!     .build()?;
//! let client = Client::builder(config).download_threads(4).build()?;
//! let stream = client.execute("SELECT * FROM samples.tpch.nation WHERE n_regionkey = :r", &[Param::new("r", 1)])?;
//! println!("{:?}", stream.result_schema().columns());
//! for batch in stream {
//!     let batch = batch?;
//!     println!("{} rows", batch.num_rows());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Lower-level steps for submit-and-poll executors: [`Client::submit`], [`Client::poll`],
//! [`Client::wait`], [`Client::cancel`], [`Client::close`], [`Client::result_stream`].

mod api;
pub mod auth;
mod client;
pub mod config;
pub mod decode;
mod error;
mod json;
pub mod retry;
mod secret;
mod stream;
pub mod types;
mod wire;

pub use client::{
    Client, ClientBuilder, Param, ParamValue, ResultFormat, Session, StatementRequest,
    StatementResponse,
};
pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use secret::SecretString;
pub use stream::{CancelHandle, ResultStream};
pub use types::{ColumnInfo, ResultSchema};
pub use wire::StatementState;

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn public_types_cross_threads() {
        send_sync::<Client>();
        send_sync::<CancelHandle>();
        send_sync::<Error>();
        send_sync::<Session>();
        send_sync::<StatementResponse>();
        send::<ResultStream>();
    }
}
