//! Configuration errors as the user sees them: the key, the file, the line.

use crate::support::{dbfed, run, stderr, stdout, write_config};

fn query_with(home: &std::path::Path, text: &str) -> String {
    let config = write_config(home, text);
    let output = run(dbfed(home).args(["query", "--config", &config, "SELECT 1"]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    stderr(&output)
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let home = tempfile::tempdir().expect("temp home");
    let err = query_with(
        home.path(),
        "[databricks]\nhost = \"h\"\nwarehouse = \"w\"\n",
    );
    assert!(err.contains("dbfed.toml:3:1"), "{err}");
    assert!(err.contains("unknown field `warehouse`"), "{err}");
    assert!(
        err.contains("warehouse_id"),
        "lists the expected keys: {err}"
    );
}

#[test]
fn a_bad_value_names_the_key_and_the_file() {
    let home = tempfile::tempdir().expect("temp home");
    let err = query_with(home.path(), "emulator = true\n[executor]\nthreads = -2\n");
    assert!(err.contains("dbfed.toml:3:11"), "{err}");
    assert!(err.contains("`executor.threads`"), "{err}");
}

#[test]
fn a_missing_env_variable_names_the_key_and_the_variable() {
    let home = tempfile::tempdir().expect("temp home");
    let err = query_with(
        home.path(),
        "[databricks]\nhost = \"h\"\nwarehouse_id = \"w\"\ntoken = \"${DBFED_TEST_UNSET_TOKEN}\"\n",
    );
    assert!(err.contains("dbfed.toml:4:9"), "{err}");
    assert!(err.contains("`databricks.token`"), "{err}");
    assert!(err.contains("DBFED_TEST_UNSET_TOKEN"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let home = tempfile::tempdir().expect("temp home");
    let output = run(dbfed(home.path()).args(["query", "--config", "nope.toml", "SELECT 1"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("nope.toml"), "{}", stderr(&output));
}

#[test]
fn workspace_flags_are_refused_with_the_emulator() {
    let home = tempfile::tempdir().expect("temp home");
    for (flag, value) in [
        ("--host", "https://adb-1.azuredatabricks.net"),
        ("--warehouse", "abc123"),
        ("--profile", "dev"),
    ] {
        let output = run(dbfed(home.path()).args(["query", "--emulator", flag, value, "SELECT 1"]));
        assert_eq!(output.status.code(), Some(1), "{flag}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&format!("{flag} cannot be used with --emulator")),
            "{flag}: {err}"
        );
    }
    // The emulator chosen by the file: the message names the file.
    let config = write_config(home.path(), "emulator = true\n");
    let output = run(dbfed(home.path()).args([
        "query",
        "--config",
        &config,
        "--host",
        "https://h",
        "SELECT 1",
    ]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("--host cannot be used with `emulator` in"),
        "{err}"
    );
    assert!(err.contains("dbfed.toml"), "{err}");
    // --catalog and --schema still apply to the emulator.
    let output = run(dbfed(home.path()).args([
        "query",
        "--emulator",
        "--catalog",
        "samples",
        "--schema",
        "tpch",
        "--format",
        "csv",
        "SELECT COUNT(*) AS n FROM region",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "n\n5\n");
}

#[test]
fn a_missing_table_file_names_the_key_and_the_config_file() {
    let home = tempfile::tempdir().expect("temp home");
    let config = write_config(
        home.path(),
        "emulator = true\n[tables]\ntargets = \"gone/targets.parquet\"\n",
    );
    let output = run(dbfed(home.path()).args(["query", "--config", &config, "SELECT 1"]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("`tables.targets`"), "{err}");
    assert!(err.contains("dbfed.toml:3:11"), "{err}");
    assert!(err.contains("gone/targets.parquet"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_bad_set_flag_is_named() {
    let home = tempfile::tempdir().expect("temp home");
    let config = write_config(home.path(), "emulator = true\n[executor]\nthreads = 2\n");
    let failing = |sets: &[&str]| {
        let mut command = dbfed(home.path());
        command.args(["query", "--config", &config]);
        for set in sets {
            command.args(["--set", set]);
        }
        let output = run(command.arg("SELECT 1"));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stderr(&output)
    };
    let err = failing(&["executor.threads=abc"]);
    assert!(
        err.contains("--set executor.threads=abc: `executor.threads`:"),
        "{err}"
    );
    let err = failing(&["executor.thread=4"]);
    assert!(
        err.contains("--set executor.thread=4") && err.contains("unknown field `thread`"),
        "{err}"
    );
    let err = failing(&["executor.threads"]);
    assert!(
        err.contains("--set executor.threads: expected KEY=VALUE"),
        "{err}"
    );
    let err = failing(&["server.auth.tokens=dapi-flag-secret"]);
    assert!(err.contains("server.auth.tokens=[REDACTED]"), "{err}");
    assert!(!err.contains("dapi-flag-secret"), "{err}");

    // A valid override runs: the embedded emulator's history is set through `--set`.
    let output = run(dbfed(home.path()).args([
        "query",
        "--config",
        &config,
        "--set",
        "emulator.history=1",
        "--set",
        "executor.threads=1",
        "--format",
        "csv",
        "SELECT 41 + 1 AS answer",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "answer\n42");
}
