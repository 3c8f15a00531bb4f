//! `dbfed check` against the emulator: success and each kind of failure.

use crate::support::{dbfed, run, start_emulator, stderr, stdout, write_config};

/// Runs `dbfed check --config` with `text` as the configuration; returns (success, stdout).
fn check(home: &std::path::Path, text: &str) -> (bool, String) {
    let config = write_config(home, text);
    let output = run(dbfed(home).args(["check", "--timeout", "20s", "--config", &config]));
    let out = stdout(&output);
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "exit code 0 or 1, got {code:?}\n{out}\n{}",
        stderr(&output)
    );
    (output.status.success(), out)
}

fn line<'a>(out: &'a str, step: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(step))
        .unwrap_or_else(|| panic!("a `{step}` line in:\n{out}"))
}

#[test]
fn a_healthy_configuration_passes_every_step() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--warehouse-id", "wh1"]);
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"wh1\"\ntoken = \"${{CHECK_TOKEN:-dapi-cli-test}}\"\ncatalog = \"samples\"\nschema = \"tpch\"\n",
            emulator.url
        ),
    );
    assert!(ok, "{out}");
    for step in [
        "config",
        "dns",
        "connect",
        "http",
        "auth",
        "warehouse",
        "catalogs",
        "catalog",
    ] {
        assert!(line(&out, step).starts_with("ok "), "{step}: {out}");
    }
    assert!(line(&out, "catalogs").contains("samples"), "{out}");
    assert!(
        line(&out, "catalog").contains("samples.tpch is visible"),
        "{out}"
    );
    assert!(
        !out.contains("dapi-cli-test"),
        "the token is never printed: {out}"
    );
}

#[test]
fn a_wrong_token_is_a_403_invalid_token() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &[]);
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-wrong-token\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "warehouse");
    assert!(failed.starts_with("FAIL"), "{out}");
    assert!(
        failed.contains("HTTP 403") && failed.contains("invalid or expired"),
        "{out}"
    );
    assert!(!out.contains("dapi-wrong-token"), "{out}");
    assert!(!out.contains("catalogs"), "later steps are not run: {out}");
}

#[test]
fn a_wrong_oauth_secret_is_a_401_at_the_token_endpoint() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--oauth-client", "sp-1:right-secret"]);
    let base = format!(
        "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\nclient_id = \"sp-1\"\n",
        emulator.url
    );
    let (ok, out) = check(
        home.path(),
        &format!("{base}client_secret = \"wrong-secret\"\n"),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "auth");
    assert!(
        failed.starts_with("FAIL") && failed.contains("401"),
        "{out}"
    );
    assert!(!out.contains("wrong-secret"), "{out}");

    let (ok, out) = check(
        home.path(),
        &format!("{base}client_secret = \"right-secret\"\n"),
    );
    assert!(ok, "{out}");
    assert!(
        line(&out, "auth").contains("OAuth M2M client sp-1"),
        "{out}"
    );
}

#[test]
fn a_catalog_without_a_grant_is_reported() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(
        home.path(),
        &["--token", "dapi-limited", "--grant", "dapi-limited=other"],
    );
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-limited\"\ncatalog = \"samples\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "catalog");
    assert!(
        failed.starts_with("FAIL")
            && failed.contains("`samples` is not visible")
            && failed.contains("USE CATALOG"),
        "{out}"
    );
}

#[test]
fn an_unknown_warehouse_is_reported() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--warehouse-id", "the-real-one"]);
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nhttp_path = \"/sql/1.0/warehouses/typo\"\ntoken = \"dapi-cli-test\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "warehouse");
    assert!(
        failed.starts_with("FAIL") && failed.contains("unknown warehouse typo"),
        "{out}"
    );
}

#[test]
fn an_unresolvable_host_is_a_dns_failure() {
    let home = tempfile::tempdir().expect("temp home");
    // `.invalid` never resolves (RFC 6761).
    let (ok, out) = check(
        home.path(),
        "[databricks]\nhost = \"https://dbfed-check.invalid\"\nwarehouse_id = \"w\"\ntoken = \"t\"\n",
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "dns");
    assert!(
        failed.starts_with("FAIL") && failed.contains("cannot resolve dbfed-check.invalid"),
        "{out}"
    );
}

#[test]
fn a_closed_port_is_connection_refused() {
    let home = tempfile::tempdir().expect("temp home");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"http://127.0.0.1:{port}\"\nwarehouse_id = \"w\"\ntoken = \"t\"\n"
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "connect");
    assert!(
        failed.starts_with("FAIL") && failed.contains("connection refused"),
        "{out}"
    );
}

#[test]
fn an_untrusted_self_signed_certificate_is_a_tls_failure() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--tls-self-signed"]);
    assert!(emulator.url.starts_with("https://"), "{}", emulator.url);
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-cli-test\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "tls");
    assert!(
        failed.starts_with("FAIL") && failed.contains("certificate is not trusted"),
        "{out}"
    );
}

#[test]
fn an_invalid_configuration_fails_the_first_step() {
    let home = tempfile::tempdir().expect("temp home");
    let (ok, out) = check(home.path(), "[databricks]\nhost = \"h.example.com\"\n");
    assert!(!ok, "{out}");
    let failed = line(&out, "config");
    assert!(
        failed.starts_with("FAIL") && failed.contains("warehouse"),
        "{out}"
    );
}

#[test]
fn a_token_without_can_use_on_the_warehouse_is_a_403_permission_denied() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(
        home.path(),
        &[
            "--token",
            "dapi-no-can-use",
            "--deny-warehouse",
            "dapi-no-can-use",
        ],
    );
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"wh7\"\ntoken = \"dapi-no-can-use\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    let failed = line(&out, "warehouse");
    assert!(
        failed.starts_with("FAIL")
            && failed.contains("HTTP 403 permission denied")
            && failed.contains("may not use warehouse wh7")
            && failed.contains("CAN USE")
            && failed.contains("You do not have permission to use the SQL warehouse"),
        "{out}"
    );
    assert!(
        !failed.contains("invalid or expired"),
        "not mistaken for a bad token: {out}"
    );
    assert!(!out.contains("dapi-no-can-use"), "{out}");
    // The same workspace with an allowed token passes.
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"wh7\"\ntoken = \"dapi-cli-test\"\n",
            emulator.url
        ),
    );
    assert!(ok, "{out}");
}

#[test]
fn a_schema_without_a_grant_is_reported() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(
        home.path(),
        &[
            "--token",
            "dapi-limited",
            "--grant",
            "dapi-limited=samples.other",
        ],
    );
    let (ok, out) = check(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-limited\"\ncatalog = \"samples\"\nschema = \"tpch\"\n",
            emulator.url
        ),
    );
    assert!(!ok, "{out}");
    assert!(
        line(&out, "catalogs").starts_with("ok") && line(&out, "catalogs").contains("samples"),
        "the catalog is visible: {out}"
    );
    let failed = line(&out, "catalog");
    assert!(
        failed.starts_with("FAIL")
            && failed.contains("schema `samples.tpch` is not visible")
            && failed.contains("USE SCHEMA"),
        "{out}"
    );
}

#[test]
fn a_statement_slower_than_the_timeout_is_diagnosed_as_a_timeout() {
    let home = tempfile::tempdir().expect("temp home");
    // The warehouse answers after 10 minutes; the check gives each step 2 seconds.
    let emulator = start_emulator(home.path(), &["--statement-latency-ms", "600000"]);
    let config = write_config(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-cli-test\"\n",
            emulator.url
        ),
    );
    let output = run(dbfed(home.path()).args(["check", "--timeout", "2s", "--config", &config]));
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}\n{}", stderr(&output));
    assert!(line(&out, "auth").starts_with("ok"), "{out}");
    let failed = line(&out, "warehouse");
    assert!(
        failed.starts_with("FAIL")
            && failed.contains("no result within the timeout")
            && failed.contains("--timeout"),
        "{out}"
    );
}

#[test]
fn set_flags_override_the_file() {
    let home = tempfile::tempdir().expect("temp home");
    let emulator = start_emulator(home.path(), &["--warehouse-id", "the-real-one"]);
    let config = write_config(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"typo\"\ntoken = \"dapi-cli-test\"\n",
            emulator.url
        ),
    );
    let output = run(dbfed(home.path())
        // `--set` wins over the environment too, like the other flags.
        .env("DATABRICKS_WAREHOUSE_ID", "env-typo")
        .args([
            "check",
            "--timeout",
            "20s",
            "--config",
            &config,
            "--set",
            "databricks.warehouse_id=the-real-one",
            "--set",
            "databricks.catalog=samples",
        ]));
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(
        line(&out, "config").contains("warehouse the-real-one"),
        "{out}"
    );
    assert!(
        line(&out, "catalog").contains("samples is visible"),
        "{out}"
    );
}
