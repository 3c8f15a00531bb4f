//! Tests of the `dbfed` command, run as a user would: as a process, reading its output.

mod check;
mod commands;
mod config;
mod memory;
mod query;
mod serve;
mod serve_flags;
mod support;
