//! Configuration errors as the user sees them: the key, the file, the line.

use crate::support::{dbfed, run, stderr, write_config};

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
