//! `dbfed serve`: the federated engine as an Arrow Flight SQL endpoint.
//!
//! The first line on stdout is `listening on grpc://HOST:PORT` (`grpc+tls://` with TLS).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use dbfed_databricks::Client;
use dbfed_databricks::config::ClientConfig;
use dbfed_executor::{DatabricksDriver, Executor};
use dbfed_flight::{
    Auth, Credentials, FlightServerHandle, FlightSqlError, FlightSqlServer, PassThroughSessions,
    SessionProvider, StaticSessions, TlsConfig,
};

use crate::config::{
    Config, DEFAULT_SERVER_LISTEN, ServerSection, TableSource, TlsSection, parse_table_flag,
};
use crate::memory::{ByteSize, MemoryBudget};
use crate::workspace::{Target, WorkspaceArgs};

/// Flags of `dbfed serve` (they win over `[server]` and `[tables]`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `server.listen`, else 127.0.0.1:50051; port 0 picks a
    /// free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A local table: `name=path.parquet` or `name=path.csv` (repeatable; adds to `[tables]`).
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key; replaces
    /// `server.tls.cert`).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (replaces `server.tls.key`).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it signed (mutual TLS; needs TLS from
    /// --tls-cert or `[server.tls]`; replaces `server.tls.client_ca`).
    #[arg(long, value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow INSERT/UPDATE/DELETE/CREATE on the server's in-memory tables (sets
    /// `server.allow_writes`; they never reach the warehouse or the table files).
    #[arg(long)]
    pub allow_writes: bool,
    /// Use each client's bearer token as its own Databricks token, so that the workspace's
    /// grants decide what each user sees (sets `server.auth.pass_through`).
    #[arg(long)]
    pub pass_through: bool,
    /// Memory all running queries together may use for sorts, joins and aggregations, e.g.
    /// `4GiB` or `512MiB` (replaces `server.memory_limit`; default: 25% of physical memory, at
    /// most 8 GiB). Sorts and aggregations spill to disk past it; other queries fail with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "SIZE", value_parser = crate::memory::parse_memory_limit)]
    pub memory_limit: Option<ByteSize>,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
}

impl ServeArgs {
    /// Applies the `[server]` flags over the file's section.
    pub fn apply_to(&self, server: &mut ServerSection) -> Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let client_ca = server.tls.take().and_then(|tls| tls.client_ca);
            server.tls = Some(TlsSection {
                cert: cert.clone(),
                key: key.clone(),
                client_ca,
            });
        }
        if let Some(ca) = &self.tls_client_ca {
            match &mut server.tls {
                Some(tls) => tls.client_ca = Some(ca.clone()),
                None => bail!(
                    "--tls-client-ca needs TLS: add --tls-cert and --tls-key, or a [server.tls] \
                     section"
                ),
            }
        }
        if self.allow_writes {
            server.allow_writes = true;
        }
        if self.pass_through {
            server.auth.pass_through = true;
        }
        if let Some(limit) = self.memory_limit {
            server.memory_limit = Some(limit);
        }
        Ok(())
    }
}

/// Runs `dbfed serve` until Ctrl-C or SIGTERM; both stop it cleanly (exit code 0): the
/// server stops, and statements still running on the warehouse are canceled.
pub fn run(args: ServeArgs) -> Result<()> {
    let mut target = Target::resolve(&args.workspace)?;
    args.apply_to(&mut target.config.server)?;
    let mut tables = target.config.tables.clone();
    for spec in &args.tables {
        let (name, source) = parse_table_flag(spec).map_err(anyhow::Error::msg)?;
        tables.insert(name, source);
    }
    let listen = match (args.listen, target.config.server.listen) {
        (Some(addr), _) | (None, Some(addr)) => addr,
        (None, None) => DEFAULT_SERVER_LISTEN
            .parse()
            .context("the default listen address")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dbfed-serve")
        // Planning and unparsing deep SQL plans (e.g. TPC-H) recurses deeply.
        .thread_stack_size(crate::RUNTIME_STACK_BYTES)
        .build()
        .context("cannot start the async runtime")?;
    // The blocking HTTP client must be built (and dropped) outside the async runtime.
    let executor = if target.config.server.auth.pass_through {
        None
    } else {
        Some(executor_for(
            &target.config,
            target.client_builder().build()?,
        )?)
    };
    runtime.block_on(async {
        let server = start(&target, &tables, listen, executor).await?;
        // Installed before the address is printed: a SIGTERM sent right after is not lost.
        let mut signals = crate::signals::StopSignals::install()?;
        println!("listening on {}", server.handle.url());
        std::io::stdout().flush().ok();
        let stop = signals.recv().await?;
        eprintln!("shutting down ({})", stop_name(stop));
        server.handle.shutdown().await;
        if let Some(executor) = server.executor {
            // Cancels what still runs on the warehouse and joins the workers.
            let _ = tokio::task::spawn_blocking(move || executor.shutdown()).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop(target);
    Ok(())
}

/// How the shutdown line names a stop signal.
pub fn stop_name(stop: crate::signals::Stop) -> &'static str {
    match stop {
        crate::signals::Stop::Interrupt => "Ctrl-C",
        crate::signals::Stop::Terminate => "SIGTERM",
    }
}

/// A running Flight SQL server and the executor behind it.
#[derive(Debug)]
pub struct RunningServer {
    /// The server (stops on drop).
    pub handle: FlightServerHandle,
    /// The executor of the service identity (absent in pass-through mode).
    pub executor: Option<Executor>,
}

/// Starts the Flight SQL server described by `target`'s `[server]` section on `listen`:
/// one shared context over `executor`, or (with `pass_through`, `executor` `None`) one context
/// per caller token. Every context draws on one pool of `server.memory_limit` bytes.
pub async fn start(
    target: &Target,
    tables: &BTreeMap<String, TableSource>,
    listen: SocketAddr,
    executor: Option<Executor>,
) -> Result<RunningServer> {
    let config = &target.config;
    let server = &config.server;
    let memory = memory_budget(server)?;
    let (sessions, executor): (Arc<dyn SessionProvider>, Option<Executor>) = match executor {
        None => (
            Arc::new(pass_through_sessions(target, tables.clone(), memory)),
            None,
        ),
        Some(executor) => {
            let ctx = crate::engine::federated_context(
                &executor,
                &compute_context(&target.client_config),
                tables,
                Some(&memory),
            )
            .await?;
            (Arc::new(StaticSessions::new(ctx)), Some(executor))
        }
    };
    let mut builder = FlightSqlServer::builder(sessions)
        .auth(auth(config))
        .allow_writes(server.allow_writes);
    if let Some(secret) = &server.ticket_secret {
        builder = builder.ticket_secret(secret.expose().as_bytes().to_vec());
    }
    if let Some(tls) = &server.tls {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
        };
        builder = builder.tls(TlsConfig {
            cert_pem: read(&tls.cert, "certificate")?,
            key_pem: read(&tls.key, "key")?,
            client_ca_pem: tls
                .client_ca
                .as_deref()
                .map(|p| read(p, "client CA"))
                .transpose()?,
        });
    }
    let handle = builder
        .serve(listen)
        .await
        .with_context(|| format!("cannot serve Flight SQL on {listen}"))?;
    Ok(RunningServer { handle, executor })
}

/// The server's memory budget: `server.memory_limit`, else the default.
fn memory_budget(server: &ServerSection) -> Result<MemoryBudget> {
    let (limit, reason) = match server.memory_limit {
        Some(limit) => (limit, "configured".to_owned()),
        None => {
            let default = crate::memory::default_memory_limit();
            (default.limit, default.reason)
        }
    };
    tracing::info!(%limit, reason, "query memory limit");
    MemoryBudget::new(limit)
}

/// The federation key of a workspace identity: host + warehouse.
pub fn compute_context(config: &ClientConfig) -> String {
    format!("{}#{}", config.host(), config.warehouse_id())
}

/// An executor with the file's `[executor]` settings.
pub fn executor_for(config: &Config, client: Client) -> Result<Executor> {
    config
        .executor
        .apply(Executor::builder(DatabricksDriver::new(client)))
        .build()
        .context("invalid [executor] configuration")
}

/// `[server.auth]` as the Flight server's [`Auth`].
fn auth(config: &Config) -> Auth {
    let auth = &config.server.auth;
    if auth.pass_through {
        return Auth::PassThrough;
    }
    if auth.users.is_empty() && auth.tokens.is_empty() {
        return Auth::None;
    }
    let mut credentials = Credentials::new();
    for (user, password) in &auth.users {
        credentials = credentials.user(user, password.expose());
    }
    for (i, token) in auth.tokens.iter().enumerate() {
        credentials = credentials.token(token.expose(), format!("token-{i}"));
    }
    Auth::Basic(credentials)
}

/// One context per caller token: the caller's token replaces the configured credentials.
fn pass_through_sessions(
    target: &Target,
    tables: BTreeMap<String, TableSource>,
    memory: MemoryBudget,
) -> PassThroughSessions {
    let template = target.client_config.clone();
    let file = Arc::new(ConfigParts {
        executor: target.config.executor.clone(),
        tables,
        memory,
    });
    PassThroughSessions::builder(move |token| {
        let template = template.clone();
        let file = file.clone();
        async move {
            let build = async {
                let mut builder = ClientConfig::builder()
                    .host(template.host().as_str())
                    .warehouse_id(template.warehouse_id())
                    .token(token);
                if let Some(catalog) = template.catalog() {
                    builder = builder.catalog(catalog);
                }
                if let Some(schema) = template.schema() {
                    builder = builder.schema(schema);
                }
                let config = builder.build()?;
                let executor_config = file.executor.clone();
                // The blocking HTTP client is built off the async runtime.
                let executor = tokio::task::spawn_blocking(move || -> Result<Executor> {
                    let client = Client::new(config)?;
                    Ok(executor_config
                        .apply(Executor::builder(DatabricksDriver::new(client)))
                        .build()?)
                })
                .await
                .context("the client builder panicked")??;
                // Each identity is its own compute context: no statement mixes identities.
                let identity = format!("{}#{}", compute_context(&template), uuid_like());
                crate::engine::federated_context(
                    &executor,
                    &identity,
                    &file.tables,
                    Some(&file.memory),
                )
                .await
            };
            build.await.map_err(|e: anyhow::Error| {
                let auth = e.chain().any(|cause| {
                    cause
                        .downcast_ref::<dbfed_databricks::Error>()
                        .is_some_and(dbfed_databricks::Error::is_auth)
                });
                if auth {
                    FlightSqlError::Unauthenticated(format!("{e:#}"))
                } else {
                    FlightSqlError::Internal(format!("{e:#}"))
                }
            })
        }
    })
    .build()
}

/// What a pass-through factory needs from the file.
#[derive(Debug)]
struct ConfigParts {
    executor: crate::config::ExecutorSection,
    tables: BTreeMap<String, TableSource>,
    /// Shared by every caller's context: the limit is server-wide.
    memory: MemoryBudget,
}

/// A process-unique suffix.
fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .expect("valid flags")
            .serve
    }

    #[test]
    fn flags_replace_the_server_section() {
        let mut server = ServerSection {
            tls: Some(TlsSection {
                cert: "file.pem".into(),
                key: "file.key".into(),
                client_ca: Some("file-ca.pem".into()),
            }),
            ..ServerSection::default()
        };
        args(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--allow-writes",
        ])
        .apply_to(&mut server)
        .expect("applies");
        let tls = server.tls.as_ref().expect("tls");
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.key, PathBuf::from("k.pem"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("file-ca.pem")));
        assert!(server.allow_writes);
        assert!(!server.auth.pass_through);
        assert_eq!(server.memory_limit, None);

        args(&[
            "--tls-client-ca",
            "ca.pem",
            "--pass-through",
            "--memory-limit",
            "512MiB",
        ])
        .apply_to(&mut server)
        .expect("applies");
        let tls = server.tls.as_ref().expect("tls");
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert!(server.auth.pass_through);
        assert_eq!(server.memory_limit, Some(ByteSize(512 << 20)));
    }

    #[test]
    fn a_bad_memory_limit_flag_is_refused() {
        let small = Cli::try_parse_from(["serve", "--memory-limit", "1024"]).expect_err("1 KiB");
        assert!(small.to_string().contains("at least 1 MiB"), "{small}");
        let unit = Cli::try_parse_from(["serve", "--memory-limit", "2G"]).expect_err("unit");
        assert!(unit.to_string().contains("unknown unit"), "{unit}");
    }

    #[test]
    fn a_client_ca_without_tls_is_refused() {
        let mut server = ServerSection::default();
        let error = args(&["--tls-client-ca", "ca.pem"])
            .apply_to(&mut server)
            .expect_err("no TLS");
        assert!(error.to_string().contains("--tls-cert"), "{error}");
        assert!(
            Cli::try_parse_from(["serve", "--tls-cert", "c.pem"]).is_err(),
            "--tls-cert needs --tls-key"
        );
    }
}
