//! End-to-end tests across dbfed's crates: one test binary, one module per area.

mod cancel;
mod chaos;
mod client_emulator;
mod executor_emulator;
mod secrets;
mod soak;
mod support;
