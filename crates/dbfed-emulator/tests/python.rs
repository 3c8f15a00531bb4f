//! The official Python clients against the emulator (needs `DBFED_TEST_PYTHON`).

use std::path::PathBuf;
use std::process::Command;

use dbfed_emulator::Emulator;

/// The venv python, or `None` (skip) when unset outside CI.
fn python() -> Option<String> {
    match std::env::var("DBFED_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "DBFED_TEST_PYTHON must be set in CI (the venv of requirements-test.txt)"
            );
            println!("skipped: DBFED_TEST_PYTHON not set");
            None
        }
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run(python: &str, name: &str, env: &[(&str, String)]) {
    let output = Command::new(python)
        .arg(script(name))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{name}:\n{stdout}");
}

#[test]
fn databricks_sdk_statement_execution() {
    let Some(python) = python() else { return };
    let bg = Emulator::builder()
        .token("dapi-sdk")
        .chunk_rows(10)
        .spawn("127.0.0.1:0")
        .expect("emulator");
    run(
        &python,
        "sdk_statement_execution.py",
        &[
            ("DBFED_HOST", bg.url().to_owned()),
            ("DBFED_TOKEN", "dapi-sdk".to_owned()),
            ("DBFED_WAREHOUSE", "abc123".to_owned()),
        ],
    );
    let statements = bg.statements();
    assert!(statements.len() >= 3, "{statements:?}");
    assert!(
        bg.requests()
            .iter()
            .filter(|r| r.path.starts_with("/_emulator/results/"))
            .all(|r| r.auth_scheme.is_none()),
        "downloads never carry the workspace token"
    );
}

#[test]
fn databricks_sql_connector_sea_over_tls() {
    let Some(python) = python() else { return };
    let bg = Emulator::builder()
        .token("dapi-connector")
        .tls_self_signed()
        .chunk_rows(300)
        .spawn("127.0.0.1:0")
        .expect("emulator");
    run(
        &python,
        "sql_connector_sea.py",
        &[
            ("DBFED_PORT", bg.local_addr().port().to_string()),
            ("DBFED_TOKEN", "dapi-connector".to_owned()),
            ("DBFED_WAREHOUSE", "abc123".to_owned()),
            (
                "DBFED_STATEMENTS_URL",
                format!("{}/_emulator/statements", bg.url()),
            ),
        ],
    );
    let statements = bg.statements();
    let arrow = statements
        .iter()
        .find(|s| s.sql.starts_with("SELECT * FROM (VALUES"))
        .expect("the arrow statement");
    assert_eq!(arrow.disposition, "EXTERNAL_LINKS");
    assert_eq!(arrow.format, "ARROW_STREAM");
    assert!(
        arrow.session_id.is_some(),
        "the connector runs inside a session"
    );
    assert!(arrow.chunks > 1);
    assert!(bg.requests().iter().any(|r| {
        r.user_agent
            .as_deref()
            .is_some_and(|u| u.contains("PyDatabricksSqlConnector"))
    }));
}
