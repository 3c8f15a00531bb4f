//! End-to-end tests across dbfed crates.
