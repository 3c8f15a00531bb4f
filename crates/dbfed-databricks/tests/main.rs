//! Integration tests of the Databricks client: one test binary, one module per area.

mod auth;
mod faults;
mod fuzz;
mod replay;
mod support;
mod transport;
