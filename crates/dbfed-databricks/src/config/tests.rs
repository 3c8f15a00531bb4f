use super::*;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::resolve::expand_tilde;

/// A temporary home directory with an optional `.databrickscfg`.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(cfg: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(text) = cfg {
            let mut f =
                std::fs::File::create(dir.path().join(CONFIG_FILE_NAME)).expect("create cfg");
            f.write_all(text.as_bytes()).expect("write cfg");
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE_NAME)
    }

    /// A builder reading `vars` (plus `HOME` pointing here).
    fn env(&self, vars: &[(&str, &str)]) -> ClientConfigBuilder {
        let home = self.path().to_str().expect("utf-8 temp path").to_owned();
        ClientConfigBuilder::from_env_vars(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain([("HOME".to_owned(), home)]),
        )
    }
}

fn minimal() -> ClientConfigBuilder {
    ClientConfig::builder()
        .host("example.cloud.databricks.com")
        .warehouse_id("abc123")
        .token("dapi-secret-token")
}

fn err(builder: ClientConfigBuilder) -> String {
    builder
        .build()
        .expect_err("configuration must be rejected")
        .to_string()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not contain {part:?}");
    }
}

fn token_of(config: &ClientConfig) -> &str {
    match config.credentials() {
        Credentials::Token(t) => t.expose(),
        other => panic!("expected a token, got {other:?}"),
    }
}

#[test]
fn builder_minimal_and_defaults() {
    let config = minimal().build().expect("valid");
    assert_eq!(
        config.host().as_str(),
        "https://example.cloud.databricks.com/"
    );
    assert_eq!(config.warehouse_id(), "abc123");
    assert_eq!(token_of(&config), "dapi-secret-token");
    assert_eq!(config.auth_type(), AuthType::Pat);
    assert_eq!(config.catalog(), None);
    assert_eq!(config.schema(), None);
    assert!(config.session_confs().is_empty());
    assert!(config.query_tags().is_empty());
    assert_eq!(
        config.user_agent(),
        format!("dbfed/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        config.azure_login_url().as_str(),
        "https://login.microsoftonline.com/"
    );
}

#[test]
fn builder_all_setters() {
    let config = ClientConfig::builder()
        .host("https://adb-1.2.azuredatabricks.net/")
        .http_path("/sql/1.0/warehouses/8cfbc99c31463743")
        .credentials(Credentials::oauth_m2m("app-id", "m2m-secret"))
        .catalog("samples")
        .schema("tpch")
        .session_conf("ansi_mode", "false")
        .session_conf("TIMEZONE", "UTC")
        .session_conf("ansi_mode", "true")
        .query_tag("team", "data")
        .query_tag_key("adhoc")
        .user_agent("myapp/1.2")
        .azure_login_url("https://login.microsoftonline.us")
        .build()
        .expect("valid");
    assert_eq!(
        config.host().as_str(),
        "https://adb-1.2.azuredatabricks.net/"
    );
    assert_eq!(config.warehouse_id(), "8cfbc99c31463743");
    assert_eq!(config.auth_type(), AuthType::OAuthM2M);
    assert_eq!(config.catalog(), Some("samples"));
    assert_eq!(config.schema(), Some("tpch"));
    assert_eq!(
        config.session_confs().iter().collect::<Vec<_>>(),
        [
            (&"TIMEZONE".to_owned(), &"UTC".to_owned()),
            (&"ansi_mode".to_owned(), &"true".to_owned())
        ]
    );
    assert_eq!(
        config.query_tags(),
        [
            ("team".to_owned(), Some("data".to_owned())),
            ("adhoc".to_owned(), None)
        ]
    );
    assert_eq!(
        config.user_agent(),
        format!("dbfed/{} myapp/1.2", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        config.azure_login_url().as_str(),
        "https://login.microsoftonline.us/"
    );
}

#[test]
fn host_normalisation() {
    let host = |h: &str| minimal().host(h).build().map(|c| c.host().to_string());
    assert_eq!(host("h.example.com").expect("ok"), "https://h.example.com/");
    assert_eq!(
        host("  h.example.com/  ").expect("ok"),
        "https://h.example.com/"
    );
    assert_eq!(
        host("https://h.example.com").expect("ok"),
        "https://h.example.com/"
    );
    assert_eq!(
        host("HTTPS://H.Example.com/").expect("ok"),
        "https://h.example.com/"
    );
    assert_eq!(
        host("http://127.0.0.1:8080").expect("ok"),
        "http://127.0.0.1:8080/"
    );
    assert_eq!(
        host("h.example.com:8443").expect("ok"),
        "https://h.example.com:8443/"
    );
}

#[test]
fn invalid_hosts_name_field_source_and_reason() {
    for (value, reason) in [
        ("", "must not be empty"),
        (
            "https://h.example.com/sql/1.0/warehouses/x",
            "must not have a path",
        ),
        ("https://h.example.com/?o=123", "must not have a query"),
        ("https://h.example.com/#frag", "must not have a fragment"),
        ("ftp://h.example.com", "scheme \"ftp\" is not supported"),
        ("https://exa mple.com", "not a valid URL"),
        ("https://:443", "not a valid URL"),
    ] {
        let message = err(minimal().host(value));
        assert_contains(&message, &["invalid host", "(from builder)", reason]);
    }
    // User info is never echoed (it may hold a password).
    let message = err(minimal().host("https://user:hunter2@h.example.com"));
    assert_contains(&message, &["invalid host", "user name or password"]);
    assert!(!message.contains("hunter2"), "{message}");

    let home = Home::new(None);
    let message = err(home.env(&[
        ("DATABRICKS_HOST", "https://h/path"),
        ("DATABRICKS_WAREHOUSE_ID", "w"),
        ("DATABRICKS_TOKEN", "t"),
    ]));
    assert_contains(
        &message,
        &[
            "invalid host",
            "environment variable DATABRICKS_HOST",
            "path",
        ],
    );
}

#[test]
fn http_path_parsing() {
    let id = |p: &str| {
        ClientConfig::builder()
            .host("h")
            .token("t")
            .http_path(p)
            .build()
            .map(|c| c.warehouse_id().to_owned())
    };
    assert_eq!(
        id("/sql/1.0/warehouses/8cfbc99c31463743").expect("ok"),
        "8cfbc99c31463743"
    );
    assert_eq!(id("sql/1.0/warehouses/abc/").expect("ok"), "abc");
    assert_eq!(id("/sql/1.0/endpoints/abc").expect("ok"), "abc");
    assert_eq!(
        id("/sql/protocolv1/o/3989642981527262/0123-456789-abcdefgh").expect("ok"),
        "0123-456789-abcdefgh"
    );
    for bad in [
        "/sql/1.0/warehouses/",
        "/sql/1.0/warehouses",
        "/sql/2.0/warehouses/abc",
        "/api/2.0/sql/statements",
        "/sql/1.0/warehouses/abc/extra",
        "/sql/protocolv1/o//abc",
        "/sql/1.0/warehouses/ab c",
        "",
    ] {
        let message = id(bad).expect_err(bad).to_string();
        assert_contains(
            &message,
            &[
                "invalid http_path",
                "(from builder)",
                "/sql/1.0/warehouses/<warehouse id>",
            ],
        );
    }
    let message = err(minimal().warehouse_id("a/b"));
    assert_contains(
        &message,
        &["invalid warehouse_id \"a/b\"", "(from builder)"],
    );
}

#[test]
fn warehouse_id_and_http_path_must_agree_within_a_source() {
    let config = minimal()
        .warehouse_id("abc")
        .http_path("/sql/1.0/warehouses/abc")
        .build()
        .expect("agreeing values");
    assert_eq!(config.warehouse_id(), "abc");
    let message = err(minimal()
        .warehouse_id("abc")
        .http_path("/sql/1.0/warehouses/def"));
    assert_contains(
        &message,
        &[
            "conflicting warehouse",
            "\"abc\"",
            "\"def\"",
            "from builder",
        ],
    );
    // Across sources, precedence decides: the builder's http_path beats the environment's id.
    let home = Home::new(None);
    let config = home
        .env(&[("DATABRICKS_WAREHOUSE_ID", "fromenv")])
        .host("h")
        .token("t")
        .http_path("/sql/1.0/warehouses/frombuilder")
        .build()
        .expect("valid");
    assert_eq!(config.warehouse_id(), "frombuilder");
}

#[test]
fn missing_values_say_where_to_set_them() {
    // Builder only: point at the builder methods.
    let message = err(ClientConfig::builder().warehouse_id("w").token("t"));
    assert_eq!(message, "missing host: call ClientConfigBuilder::host()");
    let message = err(ClientConfig::builder().host("h").token("t"));
    assert_eq!(
        message,
        "missing warehouse: call ClientConfigBuilder::warehouse_id() or ::http_path()"
    );
    let message = err(ClientConfig::builder().host("h").warehouse_id("w"));
    assert_contains(&message, &["missing credentials", "token()"]);

    // With an environment and a home directory: name the variables and the profile.
    let home = Home::new(None);
    let cfg = home.cfg();
    let message = err(home.env(&[("DATABRICKS_TOKEN", "t"), ("DATABRICKS_HOST", "h")]));
    assert_eq!(
        message,
        format!(
            "missing warehouse: set DATABRICKS_WAREHOUSE_ID or DATABRICKS_HTTP_PATH, or \
             warehouse_id/http_path in profile [DEFAULT] of {}",
            cfg.display()
        )
    );
    let message = err(home.env(&[("DATABRICKS_WAREHOUSE_ID", "w"), ("DATABRICKS_HOST", "h")]));
    assert_contains(
        &message,
        &[
            "missing credentials",
            "DATABRICKS_TOKEN",
            "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET",
            "ARM_TENANT_ID, ARM_CLIENT_ID and ARM_CLIENT_SECRET",
            "or set token, client_id/client_secret or azure_tenant_id/azure_client_id/azure_client_secret in profile [DEFAULT]",
            &cfg.display().to_string(),
        ],
    );
    let message = err(home.env(&[("DATABRICKS_WAREHOUSE_ID", "w"), ("DATABRICKS_TOKEN", "t")]));
    assert_contains(
        &message,
        &["missing host: set DATABRICKS_HOST, or host in profile [DEFAULT] of"],
    );
}

#[test]
fn half_configured_credentials_name_the_missing_field() {
    let home = Home::new(None);
    let base = [("DATABRICKS_HOST", "h"), ("DATABRICKS_WAREHOUSE_ID", "w")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut vars = base.to_vec();
        vars.extend_from_slice(extra);
        err(home.env(&vars))
    };
    let message = with(&[("DATABRICKS_CLIENT_ID", "app")]);
    assert_contains(
        &message,
        &[
            "missing client_secret",
            "client_id (from environment variable DATABRICKS_CLIENT_ID) is set",
            "OAuth M2M",
            "set DATABRICKS_CLIENT_SECRET",
        ],
    );
    let message = with(&[("ARM_TENANT_ID", "tenant"), ("ARM_CLIENT_ID", "app")]);
    assert_contains(
        &message,
        &[
            "missing azure_client_secret",
            "azure_tenant_id (from environment variable ARM_TENANT_ID)",
            "Azure service principal",
            "set ARM_CLIENT_SECRET",
        ],
    );
    // An explicit auth type that lacks its fields.
    let message = with(&[
        ("DATABRICKS_AUTH_TYPE", "oauth-m2m"),
        ("DATABRICKS_TOKEN", "t"),
    ]);
    assert_contains(
        &message,
        &[
            "missing client_id",
            "auth type oauth-m2m needs it",
            "DATABRICKS_CLIENT_ID",
        ],
    );
    let message = with(&[("DATABRICKS_AUTH_TYPE", "kerberos")]);
    assert_contains(
        &message,
        &[
            "invalid auth_type \"kerberos\"",
            "environment variable DATABRICKS_AUTH_TYPE",
            "pat, oauth-m2m or azure-client-secret",
        ],
    );
}

#[test]
fn auth_type_selection() {
    let home = Home::new(None);
    let base = [("DATABRICKS_HOST", "h"), ("DATABRICKS_WAREHOUSE_ID", "w")];
    let build = |extra: &[(&'static str, &'static str)]| {
        let mut vars = base.to_vec();
        vars.extend_from_slice(extra);
        home.env(&vars).build()
    };
    let config = build(&[("DATABRICKS_TOKEN", "t")]).expect("pat");
    assert_eq!(config.auth_type(), AuthType::Pat);

    let config = build(&[
        ("DATABRICKS_CLIENT_ID", "app"),
        ("DATABRICKS_CLIENT_SECRET", "sec"),
    ])
    .expect("m2m");
    match config.credentials() {
        Credentials::OAuthM2M {
            client_id,
            client_secret,
        } => {
            assert_eq!(client_id, "app");
            assert_eq!(client_secret.expose(), "sec");
        }
        other => panic!("expected M2M, got {other:?}"),
    }

    for tenant_var in ["ARM_TENANT_ID", "DATABRICKS_AZURE_TENANT_ID"] {
        let config = build(&[
            (tenant_var, "my-tenant"),
            ("ARM_CLIENT_ID", "azapp"),
            ("ARM_CLIENT_SECRET", "azsec"),
        ])
        .expect("azure");
        match config.credentials() {
            Credentials::AzureServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => {
                assert_eq!(tenant_id, "my-tenant");
                assert_eq!(client_id, "azapp");
                assert_eq!(client_secret.expose(), "azsec");
            }
            other => panic!("expected Azure SP, got {other:?}"),
        }
    }

    // Two complete sets: an error naming both, with their sources...
    let message = build(&[
        ("DATABRICKS_TOKEN", "dapi-conflict-token"),
        ("DATABRICKS_CLIENT_ID", "app"),
        ("DATABRICKS_CLIENT_SECRET", "conflict-secret"),
    ])
    .expect_err("conflict")
    .to_string();
    assert_contains(
        &message,
        &[
            "conflicting credentials",
            "a token (from environment variable DATABRICKS_TOKEN)",
            "OAuth M2M client_id/client_secret (from environment variable DATABRICKS_CLIENT_ID",
            "auth_type",
        ],
    );
    assert!(!message.contains("dapi-conflict-token") && !message.contains("conflict-secret"));

    // ... which auth_type resolves.
    let both = [
        ("DATABRICKS_TOKEN", "t"),
        ("DATABRICKS_CLIENT_ID", "app"),
        ("DATABRICKS_CLIENT_SECRET", "sec"),
        ("ARM_TENANT_ID", "ten"),
    ];
    let mut vars = both.to_vec();
    vars.push(("DATABRICKS_AUTH_TYPE", "OAuth-M2M"));
    assert_eq!(build(&vars).expect("m2m").auth_type(), AuthType::OAuthM2M);
    let mut vars = both.to_vec();
    vars.push(("DATABRICKS_AUTH_TYPE", "pat"));
    assert_eq!(build(&vars).expect("pat").auth_type(), AuthType::Pat);
    // azure-client-secret lets client_id/client_secret stand in for the azure_* ones.
    let mut vars = both.to_vec();
    vars.push(("DATABRICKS_AUTH_TYPE", "azure-client-secret"));
    let config = build(&vars).expect("azure");
    assert!(matches!(
        config.credentials(),
        Credentials::AzureServicePrincipal { tenant_id, client_id, .. }
            if tenant_id == "ten" && client_id == "app"
    ));
    // The builder's auth_type also chooses.
    let config = home
        .env(&[base.as_slice(), both.as_slice()].concat())
        .auth_type(AuthType::Pat)
        .build()
        .expect("builder auth type");
    assert_eq!(config.auth_type(), AuthType::Pat);
}

#[test]
fn builder_credentials_win_over_environment_and_file() {
    let home = Home::new(Some("[DEFAULT]\nclient_id = a\nclient_secret = b\n"));
    let config = home
        .env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_WAREHOUSE_ID", "w"),
            ("DATABRICKS_TOKEN", "env-token"),
        ])
        .token("builder-token")
        .build()
        .expect("builder credentials are used as they are");
    assert_eq!(token_of(&config), "builder-token");

    let message = err(minimal().auth_type(AuthType::OAuthM2M));
    assert_contains(&message, &["conflicting auth_type", "oauth-m2m", "pat"]);

    let message = err(minimal().token(""));
    assert_contains(
        &message,
        &["invalid token", "(from builder)", "must not be empty"],
    );
    let message = err(minimal().credentials(Credentials::azure_service_principal(
        "bad/tenant",
        "app",
        "sec",
    )));
    assert_contains(
        &message,
        &["invalid azure_tenant_id \"bad/tenant\"", "(from builder)"],
    );
}

#[test]
fn precedence_builder_over_env_over_file() {
    let home = Home::new(Some(
        "[DEFAULT]\n\
         host = file.example.com\n\
         token = file-token\n\
         warehouse_id = filewh\n\
         catalog = filecat\n\
         schema = fileschema\n",
    ));
    let env = [
        ("DATABRICKS_HOST", "env.example.com"),
        ("DATABRICKS_CATALOG", "envcat"),
        ("DATABRICKS_TOKEN", "env-token"),
    ];
    let config = home.env(&env).build().expect("valid");
    assert_eq!(config.host().as_str(), "https://env.example.com/");
    assert_eq!(config.catalog(), Some("envcat"));
    assert_eq!(config.schema(), Some("fileschema"));
    assert_eq!(config.warehouse_id(), "filewh");
    assert_eq!(token_of(&config), "env-token");

    let config = home
        .env(&env)
        .host("builder.example.com")
        .catalog("buildercat")
        .build()
        .expect("valid");
    assert_eq!(config.host().as_str(), "https://builder.example.com/");
    assert_eq!(config.catalog(), Some("buildercat"));

    // Empty environment values count as unset.
    let config = home
        .env(&[("DATABRICKS_HOST", ""), ("DATABRICKS_CATALOG", "  ")])
        .build()
        .expect("valid");
    assert_eq!(config.host().as_str(), "https://file.example.com/");
    assert_eq!(config.catalog(), Some("filecat"));
    assert_eq!(token_of(&config), "file-token");
}

#[test]
fn file_values_report_their_profile_and_path() {
    let home = Home::new(Some(
        "[prod]\nhost = https://prod.example.com/x\nwarehouse_id = w\ntoken = t\n",
    ));
    let message = err(home.env(&[("DATABRICKS_CONFIG_PROFILE", "prod")]));
    assert_contains(
        &message,
        &[
            "invalid host",
            &format!("(from {} [profile prod])", home.cfg().display()),
        ],
    );
}

#[test]
fn profile_selection() {
    let home = Home::new(Some(
        "; profiles\n\
         [DEFAULT]\nhost = default.example.com\ntoken = t-default\nwarehouse_id = wdefault\n\n\
         [prod]\nhost = prod.example.com\nclient_id = app\nclient_secret = sec\n\
         http_path = /sql/1.0/warehouses/wprod\n",
    ));
    let config = home.env(&[]).build().expect("DEFAULT");
    assert_eq!(config.host().as_str(), "https://default.example.com/");
    assert_eq!(config.warehouse_id(), "wdefault");

    let config = home
        .env(&[("DATABRICKS_CONFIG_PROFILE", "prod")])
        .build()
        .expect("prod from env");
    assert_eq!(config.host().as_str(), "https://prod.example.com/");
    assert_eq!(config.warehouse_id(), "wprod");
    // DEFAULT's token is not inherited, so there is no conflict.
    assert_eq!(config.auth_type(), AuthType::OAuthM2M);

    // The builder's profile beats DATABRICKS_CONFIG_PROFILE.
    let config = home
        .env(&[("DATABRICKS_CONFIG_PROFILE", "prod")])
        .profile("DEFAULT")
        .build()
        .expect("builder profile");
    assert_eq!(config.warehouse_id(), "wdefault");

    // A profile that does not exist is an error naming who asked and what exists.
    let message = err(home.env(&[("DATABRICKS_CONFIG_PROFILE", "staging")]));
    assert_eq!(
        message,
        format!(
            "profile [staging] (named by environment variable DATABRICKS_CONFIG_PROFILE) not \
             found in {}: available profiles: [DEFAULT], [prod]",
            home.cfg().display()
        )
    );
    let message = err(home.env(&[]).profile("Prod"));
    assert_contains(&message, &["profile [Prod] (named by builder) not found"]);

    // Builder-only with a profile and home dir: no environment involved.
    let config = ClientConfig::builder()
        .home_dir(home.path())
        .profile("prod")
        .build()
        .expect("profile without environment");
    assert_eq!(config.warehouse_id(), "wprod");
}

#[test]
fn missing_files() {
    // A missing default file is fine (values may come from the environment).
    let home = Home::new(None);
    let config = home
        .env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_TOKEN", "t"),
            ("DATABRICKS_WAREHOUSE_ID", "w"),
        ])
        .build()
        .expect("no file needed");
    assert_eq!(config.warehouse_id(), "w");

    // A missing default profile in an existing file is fine too.
    let other = Home::new(Some("[prod]\nhost = p\n"));
    other
        .env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_TOKEN", "t"),
            ("DATABRICKS_WAREHOUSE_ID", "w"),
        ])
        .build()
        .expect("no DEFAULT section needed");

    // A named profile with no file is an error.
    let message = err(home.env(&[("DATABRICKS_CONFIG_PROFILE", "prod")]));
    assert_contains(
        &message,
        &[
            "profile [prod]",
            "DATABRICKS_CONFIG_PROFILE",
            "the file does not exist",
        ],
    );

    // An explicitly named file that does not exist is an error.
    let missing = home.path().join("nope.cfg");
    let message = err(home.env(&[(
        "DATABRICKS_CONFIG_FILE",
        missing.to_str().expect("utf-8 path"),
    )]));
    assert_eq!(
        message,
        format!(
            "config file {} (named by environment variable DATABRICKS_CONFIG_FILE) does not exist",
            missing.display()
        )
    );
    let message = err(minimal().config_file(&missing));
    assert_contains(&message, &["(named by builder) does not exist"]);
}

#[test]
fn config_file_from_env_and_tilde_expansion() {
    let home = Home::new(None);
    std::fs::write(
        home.path().join("alt.cfg"),
        "[DEFAULT]\nhost = alt.example.com\ntoken = t\nwarehouse_id = w\n",
    )
    .expect("write alt.cfg");
    let config = home
        .env(&[("DATABRICKS_CONFIG_FILE", "~/alt.cfg")])
        .build()
        .expect("valid");
    assert_eq!(config.host().as_str(), "https://alt.example.com/");
    let config = ClientConfig::builder()
        .config_file(home.path().join("alt.cfg"))
        .build()
        .expect("builder config_file");
    assert_eq!(config.warehouse_id(), "w");
}

#[test]
fn syntax_errors_name_file_and_line() {
    let home = Home::new(Some("[DEFAULT]\nhost = h\nthis is not ini\n"));
    let message = err(home.env(&[]));
    assert_eq!(
        message,
        format!(
            "syntax error in config file {}, line 3: expected `[section]`, `key = value` or a comment",
            home.cfg().display()
        )
    );
}

#[test]
fn file_keys_are_case_insensitive_and_all_supported() {
    let home = Home::new(Some(
        "[sp]\n\
         HOST = h.example.com\n\
         Azure_Tenant_Id = tenant\n\
         azure_client_id = app\n\
         azure_client_secret = file-az-secret\n\
         azure_login_app_url = http://127.0.0.1:1\n\
         auth_type = azure-client-secret\n\
         http_path = /sql/1.0/warehouses/w1\n",
    ));
    let config = home.env(&[]).profile("sp").build().expect("valid");
    assert_eq!(config.auth_type(), AuthType::AzureClientSecret);
    assert_eq!(config.azure_login_url().as_str(), "http://127.0.0.1:1/");
    assert_eq!(config.warehouse_id(), "w1");
}

#[test]
fn debug_output_is_redacted() {
    let config = ClientConfig::builder()
        .host("h")
        .warehouse_id("w")
        .credentials(Credentials::oauth_m2m("app", "very-secret-value"))
        .build()
        .expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
    assert!(debug.contains("app"), "{debug}");
    assert!(!debug.contains("very-secret-value"), "{debug}");

    let config = minimal().build().expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("[REDACTED]") && !debug.contains("dapi-secret-token"));

    // The builder's Debug hides environment values and credentials.
    let builder = ClientConfigBuilder::from_env_vars([("DATABRICKS_TOKEN", "env-secret-token")])
        .token("builder-secret-token");
    let debug = format!("{builder:?}");
    assert!(debug.contains("DATABRICKS_TOKEN"), "{debug}");
    assert!(
        !debug.contains("env-secret-token") && !debug.contains("builder-secret-token"),
        "{debug}"
    );
}

#[test]
fn user_agent_validation() {
    let message = err(minimal().user_agent("bad\nagent"));
    assert_contains(
        &message,
        &["invalid user_agent", "(from builder)", "product token"],
    );
    let message = err(minimal().user_agent("  "));
    assert_contains(&message, &["invalid user_agent"]);
}

#[test]
fn auth_type_names_round_trip() {
    for t in [
        AuthType::Pat,
        AuthType::OAuthM2M,
        AuthType::AzureClientSecret,
    ] {
        assert_eq!(t.as_str().parse::<AuthType>(), Ok(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert_eq!(
        "basic".parse::<AuthType>(),
        Err(UnknownAuthType("basic".to_owned()))
    );
}

#[test]
fn tilde_expansion() {
    let home = Path::new("/home/u");
    assert_eq!(
        expand_tilde("~/x.cfg", Some(home)),
        PathBuf::from("/home/u/x.cfg")
    );
    assert_eq!(expand_tilde("~", Some(home)), PathBuf::from("/home/u"));
    assert_eq!(expand_tilde("~bob/x", Some(home)), PathBuf::from("~bob/x"));
    assert_eq!(expand_tilde("~/x", None), PathBuf::from("~/x"));
    assert_eq!(expand_tilde("/etc/x", Some(home)), PathBuf::from("/etc/x"));
}

#[test]
fn auth_provider_matches_credentials() {
    let http = reqwest::blocking::Client::new();
    let config = minimal().build().expect("valid");
    let provider = config.auth_provider(&http).expect("pat");
    assert!(provider.identity().starts_with("pat:"));
    assert_eq!(
        provider.authorization().expect("static").expose(),
        "Bearer dapi-secret-token"
    );
    let config = minimal()
        .credentials(Credentials::oauth_m2m("app", "s"))
        .build()
        .expect("valid");
    assert_eq!(
        config.auth_provider(&http).expect("m2m").identity(),
        "oauth-m2m:app"
    );
    let config = minimal()
        .credentials(Credentials::azure_service_principal("ten", "app", "s"))
        .build()
        .expect("valid");
    assert_eq!(
        config.auth_provider(&http).expect("azure").identity(),
        "azure-sp:ten/app"
    );
}
