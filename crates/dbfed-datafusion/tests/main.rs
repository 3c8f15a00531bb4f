//! End-to-end tests of the DataFusion integration against the emulator.

mod support;

mod bad_input;
mod catalog;
mod dialect;
mod explain;
mod federation;
mod pushdown;
mod tpch;
