//! End-to-end tests across dbfed's crates: one test binary, one module per area.

mod client_emulator;
mod executor_emulator;
mod support;
