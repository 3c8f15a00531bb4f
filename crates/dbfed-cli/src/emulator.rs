//! `dbfed emulator`: a local Databricks SQL Warehouse.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use dbfed_emulator::{Emulator, EmulatorBuilder};

/// Flags of `dbfed emulator` (also used by `demo` and `query --emulator`).
#[derive(Debug, Clone, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// TPC-H scale factor of the built-in `samples.tpch`.
    #[arg(long, default_value_t = 0.01)]
    pub tpch_scale: f64,
    /// Serve `DIR/<catalog>/<schema>/<table>.{parquet,csv}` (or a folder of parquet files) as tables.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Accept this bearer token (repeatable). Without any, every non-empty token is accepted.
    #[arg(long = "token")]
    pub tokens: Vec<String>,
    /// An OAuth M2M client as `CLIENT_ID:SECRET` (repeatable).
    #[arg(long = "oauth-client")]
    pub oauth_clients: Vec<String>,
    /// Lifetime of issued OAuth tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Serve an Azure-AD-style token endpoint for this tenant id.
    #[arg(long)]
    pub azure_tenant: Option<String>,
    /// Restrict what a token (or an OAuth client id) may read:
    /// `TOKEN=CATALOG[.SCHEMA][,...]` (repeatable; default: everything for every token).
    #[arg(long = "grant", value_name = "TOKEN=ENTRIES")]
    pub grants: Vec<String>,
    /// Only this warehouse id is accepted (default: any).
    #[arg(long)]
    pub warehouse_id: Option<String>,
    /// Lifetime of external links, in seconds.
    #[arg(long, default_value_t = 900)]
    pub link_ttl: u64,
    /// Added latency per statement, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub statement_latency_ms: u64,
    /// Added latency per chunk download, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_latency_ms: u64,
    /// Statements running at once; the rest queue as PENDING.
    #[arg(long, default_value_t = 10)]
    pub max_concurrent_statements: usize,
    /// Queued statements beyond which execute answers 429 with Retry-After.
    #[arg(long, default_value_t = 1000)]
    pub max_queued_statements: usize,
    /// Rows per result chunk.
    #[arg(long, default_value_t = 100_000)]
    pub chunk_rows: usize,
    /// Largest chunk, in bytes of Arrow data (a chunk ends at whichever limit comes first).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub chunk_bytes: usize,
    /// Statements remembered (with their results) for polls and `GET /_emulator/statements`;
    /// older finished ones are forgotten.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub history: usize,
    /// How long a finished statement's result stays fetchable (`90s`, `10m`, `1h`, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_flag)]
    pub result_ttl: Duration,
    /// Deny this token (or OAuth client id) the use of the warehouse: it authenticates, but
    /// statements answer 403 PERMISSION_DENIED, as without CAN USE (repeatable).
    #[arg(long = "deny-warehouse", value_name = "TOKEN")]
    pub deny_warehouse: Vec<String>,
    #[arg(long = "fault", help = crate::faults::FAULT_HELP)]
    pub faults: Vec<String>,
    /// Serve HTTPS with a fresh self-signed certificate.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// Serve HTTPS with this PEM certificate (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl EmulatorArgs {
    /// The emulator builder these flags describe.
    pub fn builder(&self) -> Result<EmulatorBuilder> {
        if !self.tpch_scale.is_finite() || self.tpch_scale <= 0.0 {
            bail!(
                "--tpch-scale must be a positive number, got {}",
                self.tpch_scale
            );
        }
        let mut builder = Emulator::builder()
            .tpch_scale(self.tpch_scale)
            .token_lifetime(Duration::from_secs(self.token_lifetime_secs))
            .link_ttl(Duration::from_secs(self.link_ttl))
            .statement_latency(Duration::from_millis(self.statement_latency_ms))
            .chunk_latency(Duration::from_millis(self.chunk_latency_ms))
            .max_concurrent_statements(self.max_concurrent_statements)
            .max_queued_statements(self.max_queued_statements)
            .chunk_rows(self.chunk_rows)
            .chunk_bytes(self.chunk_bytes)
            .max_statement_history(self.history)
            .result_ttl(self.result_ttl);
        for token in &self.deny_warehouse {
            builder = builder.deny_warehouse(token);
        }
        if let Some(dir) = &self.data_dir {
            builder = builder.data_dir(dir);
        }
        for token in &self.tokens {
            builder = builder.token(token);
        }
        for client in &self.oauth_clients {
            let (id, secret) = client
                .split_once(':')
                .context("--oauth-client must be CLIENT_ID:SECRET")?;
            builder = builder.oauth_client(id, secret);
        }
        for grant in &self.grants {
            let (who, entries) = grant
                .split_once('=')
                .context("--grant must be TOKEN=CATALOG[.SCHEMA][,...]")?;
            let entries: Vec<&str> = entries
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            builder = builder.grant(who, entries);
        }
        if let Some(tenant) = &self.azure_tenant {
            builder = builder.azure_tenant(tenant);
        }
        if let Some(id) = &self.warehouse_id {
            builder = builder.warehouse_id(id);
        }
        if self.tls_self_signed {
            builder = builder.tls_self_signed();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            builder = builder.tls_files(cert, key);
        }
        Ok(builder)
    }
}

/// Default of `dbfed emulator --history` (the emulator's own default).
pub const DEFAULT_HISTORY: usize = 10_000;

/// A duration flag: `90s`, `10m`, `1h 30m` (humantime), or a number of seconds.
pub fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{e}: expected a duration such as `90s`, `10m`, `1h` or a number of seconds")
    })
}

/// Runs the emulator until Ctrl-C or SIGTERM. The first line on stdout is `listening on <url>`.
pub fn run(args: EmulatorArgs) -> Result<()> {
    let builder = args.builder()?;
    let faults = args
        .faults
        .iter()
        .map(|spec| crate::faults::parse_fault(spec))
        .collect::<Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dbfed-emulator")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = builder
            .start(&args.listen)
            .await
            .with_context(|| format!("cannot start the emulator on {}", args.listen))?;
        for fault in faults {
            handle.faults().inject(fault);
        }
        let mut signals = crate::signals::StopSignals::install()?;
        println!("listening on {}", handle.url());
        std::io::stdout().flush().ok();
        let stop = signals.recv().await?;
        eprintln!("shutting down ({})", crate::serve::stop_name(stop));
        handle.shutdown().await;
        Ok(())
    })
}
