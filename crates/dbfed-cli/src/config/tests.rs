use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigFileError> {
    Config::parse(text, Path::new("/etc/dbfed/dbfed.toml"), &env(vars))
}

fn parse_ok(text: &str, vars: &[(&str, &str)]) -> Config {
    parse(text, vars).expect("valid configuration")
}

fn err(text: &str, vars: &[(&str, &str)]) -> String {
    parse(text, vars)
        .expect_err("invalid configuration")
        .to_string()
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = parse_ok("", &[]);
    assert!(config.emulator.is_none());
    assert!(config.tables.is_empty());
    assert!(config.executor.threads.is_none());
    assert!(!config.server.allow_writes);
    assert_eq!(config.server.memory_limit, None);
}

#[test]
fn every_section_parses() {
    let config = parse_ok(
        r#"
[databricks]
host = "adb-1.2.azuredatabricks.net"
http_path = "/sql/1.0/warehouses/abc"
token = "dapi-secret-value"
catalog = "samples"
schema = "tpch"
statement_timeout = "10m"
download_threads = 8

[executor]
threads = 4
queue_depth = 100
queue_timeout = "1m 30s"
pool_size = 4
max_overflow = 0
pool_recycle = 3600
pre_ping = true
mode = "submit-and-poll"

[server]
listen = "0.0.0.0:0"
allow_writes = true
ticket_secret = "0123456789abcdef0123456789abcdef"
memory_limit = "1.5GiB"
[server.tls]
cert = "certs/server.pem"
key = "/abs/server.key"
[server.auth]
users = { alice = "pw-a" }
tokens = ["t1", "t2"]

[tables]
targets = "data/targets.parquet"
people = "/data/people.csv"
"#,
        &[],
    );
    assert_eq!(
        config.databricks.host.as_deref(),
        Some("adb-1.2.azuredatabricks.net")
    );
    assert_eq!(
        config.databricks.statement_timeout,
        Some(Duration::from_secs(600))
    );
    assert_eq!(config.databricks.download_threads, Some(8));
    assert_eq!(config.executor.threads, Some(4));
    assert_eq!(config.executor.queue_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        config.executor.pool_recycle,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.executor.mode, Some(Mode::SubmitAndPoll));
    assert_eq!(
        config.server.listen,
        Some("0.0.0.0:0".parse().expect("addr"))
    );
    assert!(config.server.allow_writes);
    assert_eq!(
        config.server.memory_limit,
        Some(crate::memory::ByteSize(3 << 29))
    );
    let tls = config.server.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, PathBuf::from("/etc/dbfed/certs/server.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/server.key"));
    assert_eq!(config.server.auth.users["alice"].expose(), "pw-a");
    assert_eq!(config.server.auth.tokens.len(), 2);
    let targets = &config.tables["targets"];
    assert_eq!(
        (&targets.path, targets.format),
        (
            &PathBuf::from("/etc/dbfed/data/targets.parquet"),
            TableFormat::Parquet
        )
    );
    let declared = targets
        .declared_at
        .as_deref()
        .expect("declared in the file");
    assert!(
        declared.starts_with("`tables.targets` at /etc/dbfed/dbfed.toml:"),
        "{declared}"
    );
    assert_eq!(config.tables["people"].format, TableFormat::Csv);
}

#[test]
fn secrets_are_redacted_from_debug() {
    let config = parse_ok(
        r#"
[databricks]
host = "h"
token = "dapi-very-secret"
client_secret = "oauth-very-secret"
[server]
ticket_secret = "ticket-very-secret-ticket-very-secret"
[server.auth]
users = { bob = "password-very-secret" }
tokens = ["bearer-very-secret"]
"#,
        &[],
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("very-secret"), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");
}

#[test]
fn env_references_expand_in_any_string() {
    let config = parse_ok(
        r#"
[databricks]
host = "https://${WS}.cloud.databricks.com"
token = "${TOKEN}"
catalog = "${CATALOG:-main}"
schema = "${EMPTY:-fallback}"
warehouse_id = "cost$$ly-$${literal}"
[server.auth]
tokens = ["${T1}"]
"#,
        &[
            ("WS", "dbc-1"),
            ("TOKEN", "dapi-x"),
            ("T1", "tok"),
            ("EMPTY", ""),
        ],
    );
    assert_eq!(
        config.databricks.host.as_deref(),
        Some("https://dbc-1.cloud.databricks.com")
    );
    assert_eq!(
        config.databricks.token.as_ref().map(Secret::expose),
        Some("dapi-x")
    );
    assert_eq!(config.databricks.catalog.as_deref(), Some("main"));
    assert_eq!(config.databricks.schema.as_deref(), Some("fallback"));
    assert_eq!(
        config.databricks.warehouse_id.as_deref(),
        Some("cost$$ly-${literal}")
    );
    assert_eq!(config.server.auth.tokens[0].expose(), "tok");
}

#[test]
fn a_missing_env_variable_names_the_key_the_variable_and_the_file() {
    let message = err(
        "[databricks]\nhost = \"h\"\ntoken = \"${DBX_TOKEN}\"\n",
        &[],
    );
    assert!(message.contains("/etc/dbfed/dbfed.toml:3:9"), "{message}");
    assert!(message.contains("`databricks.token`"), "{message}");
    assert!(message.contains("DBX_TOKEN"), "{message}");

    let message = err("[server.auth]\ntokens = [\"a\", \"${NOPE}\"]\n", &[]);
    assert!(message.contains("server.auth.tokens[1]"), "{message}");
    assert!(message.contains(":2:16"), "{message}");
}

#[test]
fn malformed_env_references_are_errors() {
    assert_eq!(
        expand_env("${UNTERMINATED", &env(&[])),
        Err(ExpandError::Malformed(
            "unterminated `${` in \"${UNTERMINATED\": write ${NAME}, or $${ for a literal `${`"
                .to_owned()
        ))
    );
    assert!(matches!(
        expand_env("${1BAD}", &env(&[])),
        Err(ExpandError::Malformed(_))
    ));
    assert_eq!(expand_env("a$b$", &env(&[])), Ok("a$b$".to_owned()));
    let message = err("[databricks]\nhost = \"${}\"\n", &[]);
    assert!(message.contains("databricks.host"), "{message}");
}

#[test]
fn unknown_keys_name_the_key_and_the_location() {
    let message = err("[databricks]\nhost = \"h\"\ntokn = \"x\"\n", &[]);
    assert!(message.contains("/etc/dbfed/dbfed.toml:3:1"), "{message}");
    assert!(message.contains("tokn"), "{message}");
    assert!(message.contains("unknown field"), "{message}");

    let message = err("[executr]\nthreads = 1\n", &[]);
    assert!(message.contains("executr"), "{message}");
    assert!(message.contains(":1:"), "{message}");

    let message = err("[emulator]\ntpch_scal = 1\n", &[]);
    assert!(message.contains("tpch_scal"), "{message}");
    assert!(message.contains(":2:1"), "{message}");

    let message = err("[server.tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n", &[]);
    assert!(
        message.contains("`ca`") || message.contains("ca"),
        "{message}"
    );
    assert!(message.contains(":4:1"), "{message}");
}

#[test]
fn bad_values_name_the_key_and_the_location() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[executor]\nthreads = 0\n",
            "executor.threads",
            "at least 1",
        ),
        (
            "[executor]\nthreads = \"four\"\n",
            "executor.threads",
            "invalid type",
        ),
        (
            "[executor]\nqueue_timeout = \"soon\"\n",
            "executor.queue_timeout",
            "invalid duration",
        ),
        (
            "[executor]\nqueue_timeout = -3\n",
            "executor.queue_timeout",
            "negative",
        ),
        (
            "[executor]\nmode = \"fast\"\n",
            "executor.mode",
            "submit-and-poll",
        ),
        (
            "[databricks]\nauth_type = \"basic\"\n",
            "databricks.auth_type",
            "unknown auth type",
        ),
        (
            "[server]\nlisten = \"localhost\"\n",
            "server.listen",
            "IP:PORT",
        ),
        (
            "[server]\nticket_secret = \"short\"\n",
            "server.ticket_secret",
            "at least 32 bytes",
        ),
        (
            "[server]\nmemory_limit = \"2G\"\n",
            "server.memory_limit",
            "unknown unit",
        ),
        (
            "[server]\nmemory_limit = 4096\n",
            "server.memory_limit",
            "at least 1 MiB",
        ),
        (
            "[server]\nmemory_limit = -1\n",
            "server.memory_limit",
            "negative",
        ),
        (
            "emulator = 3\n",
            "emulator",
            "true, false or an [emulator] table",
        ),
        (
            "[emulator]\ntpch_scale = -1.0\n",
            "emulator.tpch_scale",
            "positive",
        ),
        (
            "[tables]\nt = \"data.json\"\n",
            "tables.t",
            ".parquet or .csv",
        ),
        (
            "[tables]\n\"bad name\" = \"x.csv\"\n",
            "tables.bad name",
            "table name",
        ),
    ];
    for (text, key, needle) in cases {
        let message = err(text, &[]);
        assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
        assert!(
            message.contains("/etc/dbfed/dbfed.toml:"),
            "{text}: {message}"
        );
        assert!(
            message.contains(":2:") || message.contains(":1:"),
            "{message}"
        );
    }
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let message = err("[databricks]\nhost = \n", &[]);
    assert!(message.contains("/etc/dbfed/dbfed.toml:2:"), "{message}");
    assert!(message.contains("invalid TOML"), "{message}");
}

#[test]
fn the_emulator_is_a_bool_or_a_table() {
    assert!(parse_ok("emulator = true", &[]).emulator.is_some());
    assert!(parse_ok("emulator = false", &[]).emulator.is_none());
    let config = parse_ok(
        "[emulator]\ntpch_scale = 0.1\nstatement_latency = \"250ms\"\ndata_dir = \"data\"\n",
        &[],
    );
    let emulator = config.emulator.expect("emulator");
    assert_eq!(emulator.tpch_scale, 0.1);
    assert_eq!(emulator.statement_latency, Duration::from_millis(250));
    assert_eq!(emulator.data_dir, Some(PathBuf::from("/etc/dbfed/data")));
    assert_eq!(emulator.listen.port(), 0);

    let message = err("emulator = true\n[databricks]\nhost = \"h\"\n", &[]);
    assert!(message.contains("`emulator`"), "{message}");
    assert!(message.contains("both configured"), "{message}");
}

fn resolved(
    text: &str,
    vars: &[(&str, &str)],
    flags: &DatabricksFlags,
) -> Result<dbfed_databricks::config::ClientConfig, ConfigFileError> {
    let mut vars = vars.to_vec();
    vars.push(("HOME", "/nonexistent-home-for-tests"));
    let environment = env(&vars);
    parse_ok(text, &vars).client_config(&environment, flags)
}

const FILE: &str = r#"
[databricks]
host = "file-host.example.com"
warehouse_id = "filewh"
token = "file-token"
catalog = "filecat"
"#;

#[test]
fn the_file_configures_the_client() {
    let config = resolved(FILE, &[], &DatabricksFlags::default()).expect("valid");
    assert_eq!(config.host().as_str(), "https://file-host.example.com/");
    assert_eq!(config.warehouse_id(), "filewh");
    assert_eq!(config.catalog(), Some("filecat"));
    assert!(matches!(config.credentials(), Credentials::Token(t) if t.expose() == "file-token"));
}

#[test]
fn environment_variables_win_over_the_file_and_flags_win_over_both() {
    let vars = [
        ("DATABRICKS_HOST", "env-host.example.com"),
        ("DATABRICKS_HTTP_PATH", "/sql/1.0/warehouses/envwh"),
        ("DATABRICKS_TOKEN", "env-token"),
    ];
    let config = resolved(FILE, &vars, &DatabricksFlags::default()).expect("valid");
    assert_eq!(config.host().as_str(), "https://env-host.example.com/");
    assert_eq!(config.warehouse_id(), "envwh");
    assert_eq!(
        config.catalog(),
        Some("filecat"),
        "the file fills what env leaves"
    );
    assert!(matches!(config.credentials(), Credentials::Token(t) if t.expose() == "env-token"));

    let flags = DatabricksFlags {
        host: Some("flag-host.example.com".into()),
        warehouse: Some("/sql/1.0/warehouses/flagwh".into()),
        catalog: Some("flagcat".into()),
        schema: Some("flagschema".into()),
        profile: None,
    };
    let config = resolved(FILE, &vars, &flags).expect("valid");
    assert_eq!(config.host().as_str(), "https://flag-host.example.com/");
    assert_eq!(config.warehouse_id(), "flagwh");
    assert_eq!(config.catalog(), Some("flagcat"));
    assert_eq!(config.schema(), Some("flagschema"));
}

#[test]
fn the_file_wins_over_a_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("databrickscfg");
    std::fs::write(
        &cfg,
        "[team]\nhost = profile-host.example.com\ntoken = profile-token\nwarehouse_id = profwh\nschema = profschema\n",
    )
    .expect("write");
    let text = format!(
        "[databricks]\nprofile = \"team\"\nconfig_file = \"{}\"\nhost = \"file-host.example.com\"\n",
        cfg.display()
    );
    let config = resolved(&text, &[], &DatabricksFlags::default()).expect("valid");
    assert_eq!(config.host().as_str(), "https://file-host.example.com/");
    assert_eq!(config.warehouse_id(), "profwh");
    assert_eq!(config.schema(), Some("profschema"));
    assert!(matches!(config.credentials(), Credentials::Token(t) if t.expose() == "profile-token"));

    // A profile named in the file that does not exist: the error says who named it.
    let text = format!(
        "[databricks]\nprofile = \"nope\"\nconfig_file = \"{}\"\n",
        cfg.display()
    );
    let message = resolved(&text, &[], &DatabricksFlags::default())
        .expect_err("no such profile")
        .to_string();
    assert!(message.contains("nope"), "{message}");
    assert!(message.contains("databricks.profile"), "{message}");
    assert!(message.contains("dbfed.toml:2:"), "{message}");
}

#[test]
fn a_complete_credential_set_in_the_environment_replaces_the_files() {
    let text = "[databricks]\nhost = \"h.example.com\"\nwarehouse_id = \"w\"\nclient_id = \"file-id\"\nclient_secret = \"file-secret\"\n";
    let config = resolved(
        text,
        &[("DATABRICKS_TOKEN", "env-token")],
        &DatabricksFlags::default(),
    )
    .expect("valid");
    assert!(matches!(config.credentials(), Credentials::Token(_)));
    // An incomplete set in the environment does not.
    let config =
        resolved(text, &[("ARM_TENANT_ID", "t")], &DatabricksFlags::default()).expect("valid");
    assert!(
        matches!(config.credentials(), Credentials::OAuthM2M { client_id, .. } if client_id == "file-id")
    );
}

#[test]
fn file_credentials_of_every_kind() {
    let base = "[databricks]\nhost = \"h.example.com\"\nwarehouse_id = \"w\"\n";
    let azure = format!(
        "{base}azure_tenant_id = \"tenant\"\nazure_client_id = \"app\"\nazure_client_secret = \"s\"\n"
    );
    let config = resolved(&azure, &[], &DatabricksFlags::default()).expect("valid");
    assert!(matches!(
        config.credentials(),
        Credentials::AzureServicePrincipal { tenant_id, client_id, .. } if tenant_id == "tenant" && client_id == "app"
    ));
    let both = format!(
        "{base}token = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_type = \"oauth-m2m\"\n"
    );
    let config = resolved(&both, &[], &DatabricksFlags::default()).expect("valid");
    assert!(matches!(config.credentials(), Credentials::OAuthM2M { .. }));

    let ambiguous = format!("{base}token = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n");
    let message = parse_ok(&ambiguous, &[])
        .check_credentials()
        .expect_err("ambiguous")
        .to_string();
    assert!(message.contains("auth_type"), "{message}");
    assert!(message.contains("dbfed.toml:4:"), "{message}");

    let incomplete = format!("{base}client_id = \"c\"\n");
    let message = parse_ok(&incomplete, &[])
        .check_credentials()
        .expect_err("incomplete")
        .to_string();
    assert!(message.contains("databricks.client_id"), "{message}");
    assert!(message.contains("client_secret"), "{message}");
}

#[test]
fn invalid_databricks_values_name_their_origin() {
    let text = "[databricks]\nhost = \"https://h.example.com/some/path\"\nwarehouse_id = \"w\"\ntoken = \"t\"\n";
    let message = resolved(text, &[], &DatabricksFlags::default())
        .expect_err("host with a path")
        .to_string();
    assert!(message.contains("databricks.host"), "{message}");
    assert!(message.contains("dbfed.toml:2:8"), "{message}");
    assert!(!message.contains("\"t\""), "{message}");

    let flags = DatabricksFlags {
        host: Some("https://h.example.com/x".into()),
        ..DatabricksFlags::default()
    };
    let message = resolved(text, &[], &flags)
        .expect_err("bad flag")
        .to_string();
    assert!(message.contains("--host"), "{message}");
}

#[test]
fn table_flags() {
    let (name, source) = parse_table_flag("targets=dir/t.PARQUET").expect("valid");
    assert_eq!(name, "targets");
    assert_eq!(source.format, TableFormat::Parquet);
    assert!(
        parse_table_flag("t")
            .expect_err("no =")
            .contains("name=path")
    );
    assert!(
        parse_table_flag("1t=x.csv")
            .expect_err("bad name")
            .contains("table name")
    );
    assert!(
        parse_table_flag("t=x.txt")
            .expect_err("bad ext")
            .contains(".parquet or .csv")
    );
}

#[test]
fn discover_prefers_the_flag_then_the_env_var() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "[executor]\nthreads = 1\n").expect("write");
    std::fs::write(&b, "[executor]\nthreads = 2\n").expect("write");
    let vars = env(&[(CONFIG_ENV_VAR, b.to_str().expect("utf-8"))]);
    let config = Config::discover(Some(&a), &vars).expect("a");
    assert_eq!(config.executor.threads, Some(1));
    assert_eq!(config.path(), Some(a.as_path()));
    let config = Config::discover(None, &vars).expect("b");
    assert_eq!(config.executor.threads, Some(2));
    let missing = dir.path().join("missing.toml");
    let message = Config::discover(Some(&missing), &vars)
        .expect_err("missing")
        .to_string();
    assert!(message.contains("missing.toml"), "{message}");
}

#[test]
fn the_example_configuration_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dbfed.example.toml");
    let vars = env(&[
        ("DATABRICKS_TOKEN", "dapi-example"),
        ("DBFED_TICKET_SECRET", "0123456789abcdef0123456789abcdef"),
        ("DBFED_ALICE_PASSWORD", "alice-pw"),
        ("DBFED_SERVICE_TOKEN", "svc"),
    ]);
    let config = Config::load(&path, &vars).expect("the example parses");
    config
        .check_credentials()
        .expect("the example's credentials are consistent");
    assert!(config.databricks.host.is_some());
    assert!(config.executor.threads.is_some());
    assert!(config.server.listen.is_some());
    assert!(!config.tables.is_empty());
}

/// Hostile configuration files: whatever text arrives, parsing returns a configuration or a
/// typed error that names the file (and the key, for a bad key or value) — never a panic, and
/// never the secret values the file holds.
mod properties {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "dapi-hostile-config-secret-0123";
    const PATH: &str = "/etc/dbfed/dbfed.toml";

    /// Lines that look like this file's TOML: real sections and keys with values of every
    /// kind (right and wrong), env references, broken syntax.
    fn line() -> impl Strategy<Value = String> {
        let section = prop::sample::select(vec![
            "[databricks]",
            "[executor]",
            "[server]",
            "[server.tls]",
            "[server.auth]",
            "[emulator]",
            "[tables]",
            "[unknown]",
            "[[databricks]]",
            "[databricks",
            "[]",
        ])
        .prop_map(str::to_owned);
        let key = prop::sample::select(vec![
            "host",
            "token",
            "warehouse_id",
            "http_path",
            "statement_timeout",
            "download_threads",
            "threads",
            "queue_depth",
            "queue_timeout",
            "pool_size",
            "mode",
            "listen",
            "allow_writes",
            "ticket_secret",
            "cert",
            "tokens",
            "tpch_scale",
            "emulator",
            "nation",
            "bogus",
            "a.b.c",
            "\"quoted key\"",
        ]);
        let value = prop_oneof![
            Just("\"x\"".to_owned()),
            Just("-1".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("1e309".to_owned()),
            Just("true".to_owned()),
            Just("\"1m 30s\"".to_owned()),
            Just("\"forever\"".to_owned()),
            Just("\"${UNSET}\"".to_owned()),
            Just("\"${BAD NAME}\"".to_owned()),
            Just("\"${UNTERMINATED\"".to_owned()),
            Just("\"submit-and-poll\"".to_owned()),
            Just("[1, \"two\", {}]".to_owned()),
            Just("{ a = 1 }".to_owned()),
            Just("\"/no/such/file.parquet\"".to_owned()),
            Just("\"unterminated".to_owned()),
            Just("1979-05-27T07:32:00Z".to_owned()),
            ".{0,12}",
        ];
        prop_oneof![
            3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => section,
            1 => ".{0,40}",
        ]
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        let env = env(&[("SET", "value")]);
        // No panic, whatever the outcome.
        if let Err(e) = Config::parse(text, Path::new(PATH), &env) {
            let message = e.to_string();
            prop_assert!(message.contains(PATH), "no file in {message:?}");
            prop_assert!(!message.contains(SECRET), "secret in {message:?}");
            prop_assert!(!format!("{e:?}").contains(SECRET), "secret in {e:?}");
            if let ConfigFileError::Invalid { key, location, .. }
            | ConfigFileError::MissingEnvVar { key, location, .. } = &e
            {
                prop_assert!(!key.is_empty(), "no key in {message:?}");
                prop_assert!(
                    location.line >= 1 && location.line <= text.lines().count().max(1) + 1
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            check(&text)?;
        }

        #[test]
        fn toml_like_files_fail_with_the_file_and_key(lines in prop::collection::vec(line(), 0..24)) {
            // The secret sits in a valid key; whatever surrounds it must not leak it.
            let mut text = format!("[databricks]\ntoken = \"{SECRET}\"\n");
            text.push_str(&lines.join("\n"));
            check(&text)?;
        }

        #[test]
        fn byte_mutations_of_the_example_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..6),
        ) {
            let mut chars: Vec<char> = EXAMPLE.chars().collect();
            for (at, c) in edits {
                let i = at.index(chars.len());
                chars[i] = c;
            }
            let text: String = chars.into_iter().collect();
            check(&text)?;
        }
    }

    /// A full configuration (every section), the seed of the mutation property.
    const EXAMPLE: &str = r#"
[databricks]
host = "adb-1.2.azuredatabricks.net"
http_path = "/sql/1.0/warehouses/abc"
token = "dapi-hostile-config-secret-0123"
statement_timeout = "10m"
download_threads = 8

[executor]
threads = 4
queue_depth = 100
queue_timeout = "1m 30s"
mode = "submit-and-poll"

[server]
listen = "127.0.0.1:0"
allow_writes = false
ticket_secret = "0123456789abcdef0123456789abcdef"

[server.auth]
tokens = ["${SET}", "${OTHER:-fallback}"]

[tables]
nation = "data/nation.parquet"
"#;
}

mod overrides {
    use super::*;

    fn with(text: &str, sets: &[&str]) -> Result<Config, ConfigFileError> {
        let overrides = sets
            .iter()
            .map(|s| Override::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Config::parse_with(
            text,
            Some(Path::new("/etc/dbfed/dbfed.toml")),
            &env(&[]),
            &overrides,
        )
    }

    #[test]
    fn a_set_flag_replaces_or_adds_a_key() {
        let config = with(
            "[executor]\nthreads = 2\nqueue_depth = 7\n",
            &["executor.threads=8", "server.allow_writes=true"],
        )
        .expect("valid");
        assert_eq!(config.executor.threads, Some(8));
        assert_eq!(config.executor.queue_depth, Some(7), "other keys stay");
        assert!(config.server.allow_writes);
        // Later flags win; TOML values of every kind.
        let config = with(
            "",
            &[
                "executor.threads=3",
                "executor.threads=5",
                "executor.queue_timeout=90s",
                "server.auth.tokens=[\"a\", \"b\"]",
                "server.tls={ cert = \"c.pem\", key = \"k.pem\" }",
            ],
        )
        .expect("valid");
        assert_eq!(config.executor.threads, Some(5));
        assert_eq!(config.executor.queue_timeout, Some(Duration::from_secs(90)));
        assert_eq!(config.server.auth.tokens.len(), 2);
        let tls = config.server.tls.expect("tls");
        assert_eq!(
            tls.cert,
            PathBuf::from("c.pem"),
            "relative to the current directory"
        );
    }

    #[test]
    fn a_value_the_key_refuses_as_toml_is_retried_as_a_string() {
        let config = with(
            "",
            &[
                "databricks.warehouse_id=1234",
                "databricks.host=h.example.com",
            ],
        )
        .expect("valid");
        assert_eq!(config.databricks.warehouse_id.as_deref(), Some("1234"));
        assert_eq!(config.databricks.host.as_deref(), Some("h.example.com"));
        let config = with("", &["server.memory_limit=2GiB"]).expect("valid");
        assert_eq!(
            config.server.memory_limit,
            Some(crate::memory::ByteSize(2 << 30))
        );
    }

    #[test]
    fn the_emulator_section_takes_set_keys() {
        let config = with(
            "emulator = true\n",
            &["emulator.history=5", "emulator.result_ttl=2m"],
        )
        .expect("valid");
        let emulator = config.emulator.expect("the emulator");
        assert_eq!(emulator.history, 5);
        assert_eq!(emulator.result_ttl, Duration::from_secs(120));
        let defaults = with("emulator = true\n", &[]).expect("valid").emulator;
        let defaults = defaults.expect("the emulator");
        assert_eq!(defaults.history, DEFAULT_EMULATOR_HISTORY);
        assert_eq!(defaults.result_ttl, DEFAULT_RESULT_TTL);
    }

    #[test]
    fn bad_keys_and_values_name_the_flag() {
        let message =
            |text: &str, sets: &[&str]| with(text, sets).expect_err("invalid").to_string();
        let bad = message("[executor]\nthreads = 2\n", &["executor.threads=abc"]);
        assert!(
            bad.starts_with("--set executor.threads=abc: `executor.threads`:"),
            "{bad}"
        );
        let zero = message("", &["executor.threads=0"]);
        assert!(
            zero.starts_with("--set executor.threads=0: `executor.threads`: must be at least 1"),
            "the typed error is reported, not the retry's: {zero}"
        );
        let unknown = message("", &["executor.thread=4"]);
        assert!(
            unknown.starts_with("--set executor.thread=4:")
                && unknown.contains("unknown field `thread`"),
            "{unknown}"
        );
        let section = message("", &["nosuch.key=1"]);
        assert!(section.contains("unknown field `nosuch`"), "{section}");
        let not_table = message("[executor]\nthreads = 2\n", &["executor.threads.x=1"]);
        assert!(
            not_table.contains("`executor.threads` is an integer"),
            "{not_table}"
        );
        let table = message("", &["tables.t=data.txt"]);
        assert!(
            table.starts_with("--set tables.t=data.txt: `tables.t`:"),
            "{table}"
        );
        // A file error still names the file.
        let file = message("[executor]\nthreads = -1\n", &["executor.queue_depth=3"]);
        assert!(file.contains("dbfed.toml:2:11"), "{file}");
    }

    #[test]
    fn secret_values_set_by_flag_never_appear_in_errors() {
        let error = with("", &["server.auth.tokens=dapi-secret-xyz"])
            .expect_err("not a list")
            .to_string();
        assert!(error.contains("server.auth.tokens=[REDACTED]"), "{error}");
        assert!(!error.contains("dapi-secret-xyz"), "{error}");
        let error = with("", &["server.ticket_secret=short-secret-xyz"])
            .expect_err("too short")
            .to_string();
        assert!(!error.contains("short-secret-xyz"), "{error}");
    }

    #[test]
    fn set_databricks_keys_win_over_the_environment() {
        let overrides = vec![Override::parse("databricks.warehouse_id=from-flag").expect("valid")];
        let vars = env(&[
            ("DATABRICKS_HOST", "https://env.example.com"),
            ("DATABRICKS_WAREHOUSE_ID", "from-env"),
            ("DATABRICKS_TOKEN", "t"),
        ]);
        let config = Config::parse_with(
            "[databricks]\nwarehouse_id = \"from-file\"\n",
            Some(Path::new("/etc/dbfed/dbfed.toml")),
            &vars,
            &overrides,
        )
        .expect("valid");
        let client = config
            .client_config(&vars, &DatabricksFlags::default())
            .expect("client config");
        assert_eq!(client.warehouse_id(), "from-flag");
        assert_eq!(client.host().as_str(), "https://env.example.com/");
    }

    #[test]
    fn without_a_file_set_flags_apply_to_the_defaults() {
        let overrides = vec![Override::parse("executor.pool_size=3").expect("valid")];
        let config = Config::parse_with("", None, &env(&[]), &overrides).expect("valid");
        assert_eq!(config.executor.pool_size, Some(3));
        assert!(config.path().is_none());
    }
}
