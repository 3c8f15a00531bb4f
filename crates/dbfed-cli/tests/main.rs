//! Tests of the `dbfed` command, run as a user would: as a process, reading its output.

mod commands;
