//! Where commands send their SQL: a configured Databricks workspace, or the embedded emulator.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ClientBuilder};
use dbfed_emulator::{BackgroundEmulator, Emulator};

use crate::config::{Config, DatabricksFlags, EmulatorSection, Override, process_env};

/// Flags shared by `query`, `check` and `serve`: the configuration file and the workspace.
#[derive(Debug, Clone, Default, Args)]
pub struct WorkspaceArgs {
    /// Configuration file (default: $DBFED_CONFIG, else ./dbfed.toml if it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Use an embedded warehouse emulator with `samples.tpch` instead of a workspace.
    #[arg(long)]
    pub emulator: bool,
    /// Override one configuration key: `KEY=VALUE`, e.g. `executor.threads=8`,
    /// `server.allow_writes=true`, `emulator.history=50` (repeatable; applied in order over the
    /// file, checked like it; the value is TOML, else a string).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
    #[command(flatten)]
    pub databricks: DatabricksFlags,
}

/// A resolved target: the client configuration, and the embedded emulator serving it (kept
/// alive for as long as this value lives).
#[derive(Debug)]
pub struct Target {
    /// The loaded configuration file (or defaults).
    pub config: Config,
    /// The client configuration.
    pub client_config: ClientConfig,
    /// The embedded emulator, when the target is one.
    pub emulator: Option<BackgroundEmulator>,
}

impl Target {
    /// Loads the configuration and resolves the target (starting the emulator if asked for).
    pub fn resolve(args: &WorkspaceArgs) -> Result<Self> {
        let env = process_env();
        let overrides = args
            .set
            .iter()
            .map(|spec| Override::parse(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config::discover_with(args.config.as_deref(), &env, &overrides)?;
        let emulator_section = if args.emulator {
            Some(config.emulator.clone().unwrap_or_default())
        } else {
            config.emulator.clone()
        };
        if let Some(section) = emulator_section {
            let chosen_by = if args.emulator {
                "--emulator".to_owned()
            } else {
                match config.path() {
                    Some(path) => format!("`emulator` in {}", path.display()),
                    None => "`emulator`".to_owned(),
                }
            };
            reject_workspace_flags(&args.databricks, &chosen_by)?;
            let (emulator, builder) = start_emulator(&section)?;
            let mut builder = builder;
            if let Some(catalog) = &args.databricks.catalog {
                builder = builder.catalog(catalog);
            }
            if let Some(schema) = &args.databricks.schema {
                builder = builder.schema(schema);
            }
            let client_config = builder.build().context("invalid configuration")?;
            return Ok(Self {
                config,
                client_config,
                emulator: Some(emulator),
            });
        }
        config.check_credentials()?;
        let client_config = config.client_config(&env, &args.databricks)?;
        Ok(Self {
            config,
            client_config,
            emulator: None,
        })
    }

    /// A client builder with the file's client knobs applied.
    pub fn client_builder(&self) -> ClientBuilder {
        let d = &self.config.databricks;
        let mut builder = Client::builder(self.client_config.clone());
        if let Some(threads) = d.download_threads {
            builder = builder.download_threads(threads);
        }
        if let Some(bytes) = d.prefetch_bytes {
            builder = builder.prefetch_bytes(bytes);
        }
        if d.statement_timeout.is_some() {
            builder = builder.statement_timeout(d.statement_timeout);
        }
        builder
    }
}

/// With the embedded emulator as the warehouse, flags naming another workspace would be
/// ignored: refuse them instead, naming both sides.
fn reject_workspace_flags(flags: &DatabricksFlags, chosen_by: &str) -> Result<()> {
    let given: Vec<&str> = [
        ("--host", flags.host.is_some()),
        ("--warehouse", flags.warehouse.is_some()),
        ("--profile", flags.profile.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} cannot be used with {chosen_by}: the embedded emulator is the warehouse \
         (drop {}, or drop {chosen_by} to query a workspace)",
        given.join(", "),
        if given.len() == 1 { "it" } else { "them" }
    )
}

/// Starts the embedded emulator described by `section`, accepting [`crate::demo::DEMO_TOKEN`].
pub fn start_emulator(
    section: &EmulatorSection,
) -> Result<(
    BackgroundEmulator,
    dbfed_databricks::config::ClientConfigBuilder,
)> {
    let mut builder = Emulator::builder()
        .tpch_scale(section.tpch_scale)
        .statement_latency(section.statement_latency)
        .max_statement_history(section.history)
        .result_ttl(section.result_ttl);
    if let Some(rows) = section.chunk_rows {
        builder = builder.chunk_rows(rows);
    }
    if let Some(dir) = &section.data_dir {
        builder = builder.data_dir(dir);
    }
    crate::demo::embedded_emulator(builder, &section.listen.to_string())
}
