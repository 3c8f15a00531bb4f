//! Integration tests of the emulator: one test binary, one module per area. Contract tests speak
//! plain HTTP with reqwest and `serde_json::Value` (never the project's client).

mod auth;
mod common;
mod contract;
mod faults;
mod hardening;
mod python;
mod results;
mod tls;
