//! `dbfed check`: validate a configuration against its workspace without running user SQL.
//!
//! One line per step on stdout, `ok` or `FAIL` with a diagnosis; the first failure ends the
//! check (later steps depend on it) and the exit code is 1.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use dbfed_databricks::config::{ClientConfig, Credentials};
use dbfed_databricks::{Client, Error, ResultFormat};

use crate::workspace::{Target, WorkspaceArgs};

/// Flags of `dbfed check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    /// How long each network step may take (DNS, connect, TLS, token, `SELECT 1`). A stopped
    /// warehouse may need minutes to start.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The outcome of `dbfed check`: whether every step passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step passed.
    Healthy,
    /// A step failed (and was reported).
    Failed,
}

struct Report<'a> {
    out: &'a mut dyn Write,
}

impl Report<'_> {
    fn ok(&mut self, step: &str, detail: impl AsRef<str>) {
        let _ = writeln!(self.out, "ok    {step:<10} {}", detail.as_ref());
        let _ = self.out.flush();
    }
    fn fail(&mut self, step: &str, detail: impl AsRef<str>) -> Outcome {
        let _ = writeln!(self.out, "FAIL  {step:<10} {}", detail.as_ref());
        let _ = self.out.flush();
        Outcome::Failed
    }
}

/// Runs `dbfed check`, writing its report to stdout.
pub fn run(args: CheckArgs) -> Result<Outcome> {
    let mut stdout = std::io::stdout().lock();
    Ok(check(&args, &mut stdout))
}

fn check(args: &CheckArgs, out: &mut dyn Write) -> Outcome {
    let mut report = Report { out };
    let target = match Target::resolve(&args.workspace) {
        Ok(target) => target,
        Err(error) => return report.fail("config", format!("{error:#}")),
    };
    let config = &target.client_config;
    let source = match target.config.path() {
        Some(path) => format!("{} + environment", path.display()),
        None if target.emulator.is_some() => "embedded emulator".to_owned(),
        None => "environment and ~/.databrickscfg".to_owned(),
    };
    report.ok(
        "config",
        format!(
            "{} warehouse {} as {} ({source})",
            config.host(),
            config.warehouse_id(),
            describe_credentials(config.credentials()),
        ),
    );

    // DNS.
    let host = config.host().host_str().unwrap_or_default().to_owned();
    let port = config.host().port_or_known_default().unwrap_or(443);
    let addrs = match resolve(&host, port, args.timeout) {
        Ok(addrs) if !addrs.is_empty() => addrs,
        Ok(_) => {
            return report.fail(
                "dns",
                format!("{host} has no addresses: check the workspace URL"),
            );
        }
        Err(message) => {
            return report.fail(
                "dns",
                format!(
                    "cannot resolve {host}: {message} (check the workspace URL and your DNS/VPN)"
                ),
            );
        }
    };
    let shown: Vec<String> = addrs.iter().take(3).map(|a| a.ip().to_string()).collect();
    report.ok("dns", format!("{host} resolves to {}", shown.join(", ")));

    // TCP.
    match connect(&addrs, args.timeout) {
        Ok(addr) => report.ok("connect", format!("{addr} accepts connections")),
        Err(message) => return report.fail("connect", message),
    }

    // TLS / HTTP.
    let https = config.host().scheme() == "https";
    let step = if https { "tls" } else { "http" };
    let http = match reqwest::blocking::Client::builder()
        .connect_timeout(args.timeout)
        .timeout(args.timeout)
        .user_agent(config.user_agent())
        .build()
    {
        Ok(http) => http,
        Err(error) => return report.fail(step, format!("cannot create an HTTP client: {error}")),
    };
    match http.get(config.host().clone()).send() {
        Ok(response) => report.ok(
            step,
            if https {
                format!(
                    "TLS handshake with {host} succeeded, certificate trusted (HTTP {})",
                    response.status().as_u16()
                )
            } else {
                format!(
                    "{} answers over plain HTTP (HTTP {})",
                    config.host(),
                    response.status().as_u16()
                )
            },
        ),
        Err(error) => return report.fail(step, diagnose_transport(&error, https)),
    }

    // Token.
    let started = Instant::now();
    let token = config
        .auth_provider(&http)
        .map_err(|e| e.to_string())
        .and_then(|provider| provider.authorization().map_err(|e| auth_diagnosis(&e)));
    match (token, config.credentials()) {
        (Ok(_), Credentials::Token(_)) => report.ok(
            "auth",
            "personal access token configured (the workspace checks it in the next step)",
        ),
        (Ok(_), credentials) => report.ok(
            "auth",
            format!(
                "obtained a token for {} in {:.0?}",
                describe_credentials(credentials),
                started.elapsed()
            ),
        ),
        (Err(message), _) => return report.fail("auth", message),
    }

    // The warehouse.
    // The probe runs without the default catalog/schema: a missing catalog is reported by its
    // own step instead of failing `SELECT 1`.
    let probe_config = match ClientConfig::builder()
        .host(config.host().as_str())
        .warehouse_id(config.warehouse_id())
        .credentials(config.credentials().clone())
        .azure_login_url(config.azure_login_url().as_str())
        .build()
    {
        Ok(probe) => probe,
        Err(error) => return report.fail("warehouse", format!("invalid configuration: {error}")),
    };
    let client = match Client::builder(probe_config)
        .result_format(ResultFormat::JsonInline)
        .statement_timeout(Some(args.timeout))
        .connect_timeout(args.timeout)
        .request_timeout(args.timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            return report.fail("warehouse", format!("cannot create the client: {error}"));
        }
    };
    let started = Instant::now();
    match first_column(&client, "SELECT 1 AS one") {
        Ok(values) if values == ["1"] => report.ok(
            "warehouse",
            format!(
                "{} answered SELECT 1 in {:.0?}",
                config.warehouse_id(),
                started.elapsed()
            ),
        ),
        Ok(values) => {
            return report.fail(
                "warehouse",
                format!("SELECT 1 returned {values:?} instead of [\"1\"]"),
            );
        }
        Err(error) => return report.fail("warehouse", diagnose(&error, config)),
    }

    // Catalogs.
    let catalogs = match first_column(&client, "SHOW CATALOGS") {
        Ok(catalogs) => catalogs,
        Err(error) => return report.fail("catalogs", diagnose(&error, config)),
    };
    if catalogs.is_empty() {
        return report.fail(
            "catalogs",
            "no catalog is visible to this identity (it needs USE CATALOG on at least one)",
        );
    }
    report.ok("catalogs", list("", &catalogs));

    if let Some(catalog) = config.catalog() {
        let visible: BTreeSet<String> = catalogs.iter().map(|c| c.to_ascii_lowercase()).collect();
        if !visible.contains(&catalog.to_ascii_lowercase()) {
            return report.fail(
                "catalog",
                format!(
                    "catalog `{catalog}` is not visible to this identity: missing USE CATALOG \
                     grant, or a typo ({})",
                    list("visible: ", &catalogs)
                ),
            );
        }
        if let Some(schema) = config.schema() {
            let sql = format!("SHOW SCHEMAS IN {}", quote(catalog));
            let schemas = match first_column(&client, &sql) {
                Ok(schemas) => schemas,
                Err(error) => return report.fail("catalog", diagnose(&error, config)),
            };
            if !schemas.iter().any(|s| s.eq_ignore_ascii_case(schema)) {
                return report.fail(
                    "catalog",
                    format!(
                        "schema `{catalog}.{schema}` is not visible to this identity: missing \
                         USE SCHEMA grant, or a typo ({})",
                        list("visible: ", &schemas)
                    ),
                );
            }
            report.ok("catalog", format!("{catalog}.{schema} is visible"));
        } else {
            report.ok("catalog", format!("{catalog} is visible"));
        }
    }
    Outcome::Healthy
}

/// `a, b, c (+N more)`.
fn list(prefix: &str, items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = format!(
        "{prefix}{}",
        items
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if items.is_empty() {
        text.push_str("none");
    }
    if items.len() > SHOWN {
        text.push_str(&format!(" (+{} more)", items.len() - SHOWN));
    }
    text
}

fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

fn describe_credentials(credentials: &Credentials) -> String {
    match credentials {
        Credentials::Token(_) => "personal access token".to_owned(),
        Credentials::OAuthM2M { client_id, .. } => format!("OAuth M2M client {client_id}"),
        Credentials::AzureServicePrincipal {
            tenant_id,
            client_id,
            ..
        } => format!("Azure service principal {client_id} (tenant {tenant_id})"),
        _ => "configured credentials".to_owned(),
    }
}

/// Resolves `host:port` on a helper thread, giving up after `timeout`.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (host.to_owned(), port);
    std::thread::Builder::new()
        .name("dbfed-check-dns".to_owned())
        .spawn(move || {
            let result = target
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
    rx.recv_timeout(timeout)
        .map_err(|_| format!("no answer from DNS within {timeout:?}"))?
}

/// Connects to the first address that accepts; the error explains every refusal.
fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<SocketAddr, String> {
    let mut failures = Vec::new();
    for addr in addrs.iter().take(4) {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(*addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                failures.push(format!("{addr}: connection refused (nothing listens on that port)"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => failures.push(format!(
                "{addr}: no answer within {timeout:?} (a firewall, proxy or VPN may drop the traffic)"
            )),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// The error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn diagnose_transport(error: &reqwest::Error, https: bool) -> String {
    // The URL is the workspace root: it holds no secret.
    let error_text = chain(error);
    let lower = error_text.to_ascii_lowercase();
    if error.is_timeout() {
        return format!("no answer in time: {error_text}");
    }
    if https && (lower.contains("certificate") || lower.contains("unknownissuer")) {
        return format!(
            "the server's TLS certificate is not trusted ({error_text}); if the workspace uses a \
             private CA, add it to the system trust store"
        );
    }
    if https && (lower.contains("tls") || lower.contains("handshake") || lower.contains("ssl")) {
        return format!("TLS handshake failed: {error_text} (is the port serving HTTPS?)");
    }
    format!("request failed: {error_text}")
}

fn auth_diagnosis(error: &dbfed_databricks::auth::AuthError) -> String {
    if error.is_rejected() {
        format!(
            "the token endpoint rejected the credentials (HTTP 401: wrong client id or secret, \
             or the service principal has no OAuth secret): {error}"
        )
    } else if error.is_timeout() {
        format!("the token endpoint did not answer in time: {error}")
    } else {
        format!("cannot obtain a token: {}", chain(error))
    }
}

/// A diagnosis of a failed statement: what the user should look at.
fn diagnose(error: &Error, config: &ClientConfig) -> String {
    let warehouse = config.warehouse_id();
    match error {
        Error::Http {
            status: 401,
            message,
            ..
        } => format!(
            "HTTP 401 unauthenticated: the workspace did not accept the credentials ({message})"
        ),
        Error::Http {
            status: 403,
            message,
            ..
        } if message.to_ascii_lowercase().contains("token") => format!(
            "HTTP 403: the token is invalid or expired ({message}); create a new one or check \
             that it belongs to this workspace"
        ),
        Error::Http {
            status: 403,
            message,
            ..
        } => format!(
            "HTTP 403 permission denied: this identity may not use warehouse {warehouse} \
             (it needs CAN USE) ({message})"
        ),
        Error::Http {
            status: 404,
            message,
            ..
        } => format!(
            "HTTP 404: unknown warehouse {warehouse}: check http_path / warehouse_id \
             (SQL Warehouses > Connection details) ({message})"
        ),
        Error::Http {
            status: 400,
            error_code: Some(code),
            message,
            ..
        } if code.starts_with("INVALID_PARAMETER")
            && message.to_ascii_lowercase().contains("warehouse") =>
        {
            format!("unknown or invalid warehouse {warehouse}: {message}")
        }
        e if e.is_timeout() => format!(
            "no result within the timeout: {e} (a stopped warehouse can take minutes to \
             start; retry with a longer --timeout)"
        ),
        e if e.is_auth() => format!("permission problem: {e}"),
        Error::Auth(e) => auth_diagnosis(e),
        Error::Transport { .. } => format!("cannot reach the workspace: {}", chain(error)),
        e => e.to_string(),
    }
}

/// Runs `sql` and returns its first column as strings.
fn first_column(client: &Client, sql: &str) -> Result<Vec<String>, Error> {
    use arrow::array::Array;
    use arrow::util::display::ArrayFormatter;
    let mut values = Vec::new();
    for batch in client.execute(sql, &[])? {
        let batch = batch.map_err(|e| match e {
            arrow::error::ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
                Ok(error) => *error,
                Err(other) => Error::Decode {
                    what: format!("the result of {sql}"),
                    message: other.to_string(),
                },
            },
            other => Error::Decode {
                what: format!("the result of {sql}"),
                message: other.to_string(),
            },
        })?;
        if batch.num_columns() == 0 {
            continue;
        }
        let column = batch.column(0);
        let formatter = ArrayFormatter::try_new(column.as_ref(), &Default::default())
            .map_err(|e| Error::Unsupported(format!("cannot display the result of {sql}: {e}")))?;
        for row in 0..column.len() {
            values.push(formatter.value(row).to_string());
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_shortened() {
        let items: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
        assert_eq!(list("", &items[..2]), "c0, c1");
        assert!(list("", &items).ends_with("c9 (+2 more)"));
        assert_eq!(list("visible: ", &[]), "visible: none");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("a`b"), "`a``b`");
    }

    #[test]
    fn statement_errors_get_a_diagnosis() {
        let config = ClientConfig::builder()
            .host("h.example.com")
            .warehouse_id("wh1")
            .token("t")
            .build()
            .expect("config");
        let http = |status, code: Option<&str>, message: &str| Error::Http {
            request: "POST /api/2.0/sql/statements".into(),
            status,
            error_code: code.map(str::to_owned),
            message: message.into(),
        };
        assert!(diagnose(&http(401, None, "no credential"), &config).contains("HTTP 401"));
        let invalid = diagnose(&http(403, None, "Invalid access token."), &config);
        assert!(invalid.contains("invalid or expired"), "{invalid}");
        let denied = diagnose(&http(403, Some("PERMISSION_DENIED"), "denied"), &config);
        assert!(
            denied.contains("CAN USE") && denied.contains("wh1"),
            "{denied}"
        );
        let missing = diagnose(&http(404, Some("RESOURCE_DOES_NOT_EXIST"), "x"), &config);
        assert!(missing.contains("unknown warehouse wh1"), "{missing}");
        let bad = diagnose(
            &http(
                400,
                Some("INVALID_PARAMETER_VALUE"),
                "Warehouse id is malformed",
            ),
            &config,
        );
        assert!(bad.contains("invalid warehouse wh1"), "{bad}");
    }
}
