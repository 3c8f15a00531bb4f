//! Arrow Flight SQL server over dbfed's federated DataFusion engine.
//!
//! Any Flight SQL client (ADBC, the Flight SQL JDBC/ODBC drivers, pyarrow, the Rust
//! `FlightSqlServiceClient`) queries Databricks catalogs and local tables together through a
//! DataFusion [`SessionContext`](datafusion::prelude::SessionContext) chosen per caller by a
//! [`SessionProvider`].
//!
//! - Statements: `GetFlightInfo` plans the query (schema) and returns a signed, stateless ticket;
//!   `DoGet` re-plans from the ticket and streams batch by batch (never collected). Dropping the
//!   stream (client disconnect) drops the query, which cancels it on the warehouse.
//! - Prepared statements: the handle is a signed payload holding the SQL and bound parameters
//!   (`?` and `:name` markers); `DoPut` of a parameter batch returns the updated handle.
//! - Metadata: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas),
//!   `GetTableTypes`, `GetXdbcTypeInfo`, `GetPrimaryKeys` (empty); actions `CancelFlightInfo`,
//!   `CancelQuery` and `CloseSession` (`ListActions` lists only the actions answered).
//! - Security: [`Auth`] (Basic handshake issuing signed bearer tokens, static tokens, identity
//!   pass-through), TLS with optional mutual TLS, read-only by default (writes, when allowed, go
//!   to the server's in-memory tables only, never to the warehouse or the server's files).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dbfed_flight::FlightSqlError> {
//! use std::sync::Arc;
//! use datafusion::prelude::SessionContext;
//! use dbfed_flight::{Auth, Credentials, FlightSqlServer, StaticSessions};
//!
//! let ctx = SessionContext::new();
//! let handle = FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx)))
//!     .auth(Auth::Basic(Credentials::new().user("alice", "s3cret")))
//!     .serve("127.0.0.1:0".parse().expect("address"))
//!     .await?;
//! println!("listening on {}", handle.url());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Ticket and handle payloads are declared in `proto/dbfed_flight.proto`.

mod auth;
mod databricks;
mod error;
mod metadata;
mod params;
mod server;
mod service;
mod session;
mod ticket;

pub use auth::{Auth, Credentials, Principal};
pub use databricks::DatabricksSessionTemplate;
pub use error::{FlightSqlError, SQLSTATE_METADATA_KEY};
pub use server::{FlightServerHandle, FlightSqlServer, FlightSqlServerBuilder, TlsConfig};
pub use session::{
    PassThroughSessions, PassThroughSessionsBuilder, SessionProvider, StaticSessions,
};
pub use ticket::TicketError;
