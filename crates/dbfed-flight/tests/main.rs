//! End-to-end tests of the Flight SQL server: a Rust `FlightSqlServiceClient` over a tonic
//! channel to a server on 127.0.0.1.

mod actions;
mod chaos;
mod concurrency;
mod disconnect;
mod fixture;
mod hostile;
mod metadata;
mod passthrough;
mod prepared;
mod python;
mod restart;
mod secrets;
mod security;
mod soak;
mod sqlstate;
mod statements;
mod tls;
