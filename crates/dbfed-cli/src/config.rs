//! `dbfed.toml`: one configuration file for every command.
//!
//! The file has five optional sections: `[databricks]` (the workspace, warehouse and credentials),
//! `emulator = true` or `[emulator]` (use the built-in warehouse emulator instead), `[executor]`
//! (the bounded blocking-thread executor), `[server]` (`dbfed serve`) and `[tables]` (local
//! files, `name = "path.parquet"`). `dbfed.example.toml` at the repository root documents every
//! key.
//!
//! Rules:
//! - `${NAME}` in any string value is replaced by environment variable `NAME` (`${NAME:-default}`
//!   falls back to `default` when it is unset or empty; `$${` is a literal `${`). A variable that
//!   is not set is an error naming the key and the variable, so no secret needs to live in the file.
//! - Unknown keys and bad values are errors naming the key, the file, and the line and column.
//! - Databricks settings are taken, per setting, from the first of: command-line flags, the
//!   Databricks environment variables (`DATABRICKS_HOST`, ...), this file, a `~/.databrickscfg`
//!   profile. Credentials move as a unit: a complete set in the environment (a token, an OAuth
//!   client id and secret, or an Azure tenant, client id and secret) replaces the file's.
//! - Relative paths (tables, TLS files, `data_dir`) are relative to the file's directory.
//! - Secrets (tokens, client secrets, passwords, the ticket secret) never appear in `Debug`
//!   output or error messages.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dbfed_databricks::SecretString;
use dbfed_databricks::config::{AuthType, ClientConfigBuilder, ConfigError, Credentials};
use dbfed_executor::{ExecutionMode, ExecutorBuilder};
use serde::Deserialize;
use serde::de;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::memory::ByteSize;

/// The file read when `--config` is not given (in the current directory), if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "dbfed.toml";

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV_VAR: &str = "DBFED_CONFIG";

/// Default address of `dbfed serve`.
pub const DEFAULT_SERVER_LISTEN: &str = "127.0.0.1:50051";

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// A configuration that cannot be used. Every variant names the file (and, where there is one,
/// the key with its line and column); none contains a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{location}: invalid TOML: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown or its value is invalid.
    #[error("{location}: `{key}`: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// The dotted key, e.g. `executor.threads` (the section when the key itself is unknown).
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A `${NAME}` reference names an environment variable that is not set.
    #[error(
        "{location}: `{key}` refers to environment variable {variable}, which is not set \
         (set it, or write `${{{variable}:-default}}`)"
    )]
    MissingEnvVar {
        /// Where.
        location: Location,
        /// The dotted key.
        key: String,
        /// The variable.
        variable: String,
    },
    /// A `--set KEY=VALUE` flag is malformed, or the value it sets is invalid. `flag` shows
    /// `KEY=VALUE` (the value redacted for secret keys).
    #[error("--set {flag}: {message}")]
    Override {
        /// The flag's `KEY=VALUE`.
        flag: String,
        /// What is wrong: the key and the problem.
        message: String,
    },
    /// The Databricks settings, merged from flags, environment, file and profile, are invalid.
    #[error("{source}{}", origin_note(.origin))]
    Databricks {
        /// The client configuration error.
        #[source]
        source: Box<ConfigError>,
        /// Where the offending value was set, when it came from the file or a flag.
        origin: Option<String>,
    },
}

fn origin_note(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" (set by {o})"))
        .unwrap_or_default()
}

/// A secret from the file: `Debug` prints `[REDACTED]`.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret(SecretString);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    /// As the client crate's secret type.
    pub fn secret_string(&self) -> SecretString {
        self.0.clone()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(SecretString::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `[databricks]`: the workspace, the warehouse and the credentials. Keys are named as in
/// `~/.databrickscfg`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabricksSection {
    /// Workspace URL (`https://` is assumed).
    pub host: Option<String>,
    /// `/sql/1.0/warehouses/<id>`.
    pub http_path: Option<String>,
    /// The warehouse id (alternative to `http_path`).
    pub warehouse_id: Option<String>,
    /// `pat`, `oauth-m2m` or `azure-client-secret`: which credentials to use when several are set.
    #[serde(default, deserialize_with = "auth_type")]
    pub auth_type: Option<AuthType>,
    /// Personal access token (or a pre-obtained Azure AD token).
    pub token: Option<Secret>,
    /// OAuth M2M client id.
    pub client_id: Option<String>,
    /// OAuth M2M client secret.
    pub client_secret: Option<Secret>,
    /// Azure Entra ID tenant.
    pub azure_tenant_id: Option<String>,
    /// Azure service principal application id.
    pub azure_client_id: Option<String>,
    /// Azure service principal secret.
    pub azure_client_secret: Option<Secret>,
    /// Entra ID authority (default `https://login.microsoftonline.com`).
    pub azure_login_url: Option<String>,
    /// Default catalog.
    pub catalog: Option<String>,
    /// Default schema.
    pub schema: Option<String>,
    /// `~/.databrickscfg` profile for settings set nowhere else.
    pub profile: Option<String>,
    /// The Databricks config file (default `~/.databrickscfg`).
    pub config_file: Option<PathBuf>,
    /// Client-side limit on one statement's run time (default: none).
    #[serde(default, deserialize_with = "opt_duration")]
    pub statement_timeout: Option<Duration>,
    /// Parallel chunk downloads per result (client default 4).
    #[serde(default, deserialize_with = "opt_positive")]
    pub download_threads: Option<usize>,
    /// Bytes of result chunks downloaded ahead (client default 256 MiB).
    #[serde(default, deserialize_with = "opt_positive_u64")]
    pub prefetch_bytes: Option<u64>,
}

impl DatabricksSection {
    /// Whether any key is set.
    fn is_empty(&self) -> bool {
        self.host.is_none()
            && self.http_path.is_none()
            && self.warehouse_id.is_none()
            && self.token.is_none()
            && self.client_id.is_none()
            && self.azure_client_id.is_none()
            && self.profile.is_none()
    }
}

/// `[emulator]`: the built-in warehouse emulator with `samples.tpch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorSection {
    /// TPC-H scale factor (default 0.01).
    #[serde(default = "default_tpch_scale", deserialize_with = "positive_f64")]
    pub tpch_scale: f64,
    /// Address of the emulator's HTTP endpoint (default `127.0.0.1:0`, a free port).
    #[serde(default = "default_emulator_listen", deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Extra time every statement spends running (default 0).
    #[serde(default, deserialize_with = "duration")]
    pub statement_latency: Duration,
    /// Rows per result chunk (default 100 000).
    #[serde(default, deserialize_with = "opt_positive")]
    pub chunk_rows: Option<usize>,
    /// Serve `DIR/<catalog>/<schema>/<table>.{parquet,csv}` as well.
    pub data_dir: Option<PathBuf>,
    /// Statements the emulator remembers (default 1000): older finished ones are forgotten
    /// with their results.
    #[serde(default = "default_emulator_history", deserialize_with = "positive")]
    pub history: usize,
    /// How long a finished statement's result stays fetchable (default 1 hour, like
    /// Databricks).
    #[serde(default = "default_result_ttl", deserialize_with = "duration")]
    pub result_ttl: Duration,
}

impl Default for EmulatorSection {
    fn default() -> Self {
        Self {
            tpch_scale: default_tpch_scale(),
            listen: default_emulator_listen(),
            statement_latency: Duration::ZERO,
            chunk_rows: None,
            data_dir: None,
            history: default_emulator_history(),
            result_ttl: default_result_ttl(),
        }
    }
}

/// Default of `emulator.history`.
pub const DEFAULT_EMULATOR_HISTORY: usize = 1000;

fn default_emulator_history() -> usize {
    DEFAULT_EMULATOR_HISTORY
}

/// Default of `emulator.result_ttl`.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(3600);

fn default_result_ttl() -> Duration {
    DEFAULT_RESULT_TTL
}

fn default_tpch_scale() -> f64 {
    0.01
}

fn default_emulator_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `emulator = true | false` or an `[emulator]` table.
#[derive(Debug, Clone)]
struct EmulatorSetting(Option<EmulatorSection>);

impl<'de> Deserialize<'de> for EmulatorSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = EmulatorSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or an [emulator] table")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(EmulatorSetting(v.then(EmulatorSection::default)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let section =
                    EmulatorSection::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(EmulatorSetting(Some(section)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[executor]`: the bounded blocking-thread executor. Unset keys keep the executor's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSection {
    /// Worker threads.
    #[serde(default, deserialize_with = "opt_positive")]
    pub threads: Option<usize>,
    /// Admitted but not yet running queries.
    #[serde(default, deserialize_with = "opt_positive")]
    pub queue_depth: Option<usize>,
    /// Per-identity admission bound.
    #[serde(default, deserialize_with = "opt_positive")]
    pub queue_depth_per_identity: Option<usize>,
    /// Longest wait in the queue.
    #[serde(default, deserialize_with = "opt_duration")]
    pub queue_timeout: Option<Duration>,
    /// Warehouse sessions kept.
    #[serde(default, deserialize_with = "opt_positive")]
    pub pool_size: Option<usize>,
    /// Extra sessions allowed under load.
    pub max_overflow: Option<usize>,
    /// Longest wait for a session.
    #[serde(default, deserialize_with = "opt_duration")]
    pub pool_timeout: Option<Duration>,
    /// Replace sessions older than this.
    #[serde(default, deserialize_with = "opt_duration")]
    pub pool_recycle: Option<Duration>,
    /// `SELECT 1` on a session before handing it out.
    pub pre_ping: Option<bool>,
    /// Batches in flight per stream.
    #[serde(default, deserialize_with = "opt_positive")]
    pub stream_buffer: Option<usize>,
    /// Results that may wait for slow consumers without a worker (0: never).
    pub max_parked: Option<usize>,
    /// `thread-per-query` or `submit-and-poll`.
    pub mode: Option<Mode>,
}

/// The executor's execution mode, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A worker holds the whole statement.
    ThreadPerQuery,
    /// Submit with `wait_timeout = 0s`, one poller thread tracks every statement.
    SubmitAndPoll,
}

impl From<Mode> for ExecutionMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::ThreadPerQuery => ExecutionMode::ThreadPerQuery,
            Mode::SubmitAndPoll => ExecutionMode::SubmitAndPoll,
        }
    }
}

impl ExecutorSection {
    /// Applies every key that is set to `builder`.
    pub fn apply(&self, mut builder: ExecutorBuilder) -> ExecutorBuilder {
        if let Some(v) = self.threads {
            builder = builder.threads(v);
        }
        if let Some(v) = self.queue_depth {
            builder = builder.queue_depth(v);
        }
        if let Some(v) = self.queue_depth_per_identity {
            builder = builder.queue_depth_per_identity(v);
        }
        if let Some(v) = self.queue_timeout {
            builder = builder.queue_timeout(v);
        }
        if let Some(v) = self.pool_size {
            builder = builder.pool_size(v);
        }
        if let Some(v) = self.max_overflow {
            builder = builder.max_overflow(v);
        }
        if let Some(v) = self.pool_timeout {
            builder = builder.pool_timeout(v);
        }
        if self.pool_recycle.is_some() {
            builder = builder.pool_recycle(self.pool_recycle);
        }
        if let Some(v) = self.pre_ping {
            builder = builder.pre_ping(v);
        }
        if let Some(v) = self.stream_buffer {
            builder = builder.stream_buffer(v);
        }
        if let Some(v) = self.max_parked {
            builder = builder.max_parked(v);
        }
        if let Some(v) = self.mode {
            builder = builder.mode(v.into());
        }
        builder
    }
}

/// `[server]`: the Flight SQL endpoint of `dbfed serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on (default `127.0.0.1:50051`; port 0 picks a free port).
    #[serde(default, deserialize_with = "opt_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// TLS certificate and key (and optional client CA for mutual TLS).
    pub tls: Option<TlsSection>,
    /// Who may connect.
    #[serde(default)]
    pub auth: AuthSection,
    /// Key that signs Flight tickets (default: random per process; set it when several replicas
    /// serve behind one load balancer). At least 32 bytes.
    #[serde(default, deserialize_with = "opt_ticket_secret")]
    pub ticket_secret: Option<Secret>,
    /// Allow INSERT/UPDATE/DELETE/CREATE on the server's local in-memory tables only; such
    /// statements never reach the warehouse or the server's files (default false: a read-only
    /// endpoint).
    #[serde(default)]
    pub allow_writes: bool,
    /// Memory that all running queries together may hold for sorts, joins and aggregations:
    /// bytes, or a size such as `"4GiB"` (default: 25 % of physical memory, at most 8 GiB; see
    /// [`crate::memory::default_memory_limit`]). Sorts and aggregations spill to disk past it;
    /// queries that cannot spill fail with `RESOURCE_EXHAUSTED`.
    #[serde(default, deserialize_with = "opt_memory_limit")]
    pub memory_limit: Option<ByteSize>,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle: clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// `[server.auth]`. With no users, no tokens and no pass-through, the endpoint is open.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `user = "password"` pairs for the Basic handshake (use `${ENV}` for the passwords).
    #[serde(default)]
    pub users: BTreeMap<String, Secret>,
    /// Bearer tokens accepted on every call.
    #[serde(default)]
    pub tokens: Vec<Secret>,
    /// Use each client's bearer token as its own Databricks token (Unity Catalog grants decide
    /// what each user sees).
    #[serde(default)]
    pub pass_through: bool,
}

/// A local table file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSource {
    /// The file (absolute, or relative to the current directory for command-line tables).
    pub path: PathBuf,
    /// Its format.
    pub format: TableFormat,
    /// Where it was declared, for error messages: `tables.NAME` with the file, line and
    /// column; `None` for `--table` flags.
    pub declared_at: Option<String>,
}

/// Formats of local tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Apache Parquet (`.parquet`, `.parq`).
    Parquet,
    /// CSV with a header row (`.csv`).
    Csv,
}

impl TableSource {
    /// A table file, its format chosen by its extension.
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("parquet" | "parq") => TableFormat::Parquet,
            Some("csv") => TableFormat::Csv,
            _ => {
                return Err(format!(
                    "cannot tell the format of {}: expected a .parquet or .csv file",
                    path.display()
                ));
            }
        };
        Ok(Self {
            path,
            format,
            declared_at: None,
        })
    }
}

/// Parses a `--table name=path` flag.
pub fn parse_table_flag(spec: &str) -> Result<(String, TableSource), String> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("--table `{spec}` must look like name=path.parquet"))?;
    check_table_name(name).map_err(|e| format!("--table `{spec}`: {e}"))?;
    let source = TableSource::from_path(path).map_err(|e| format!("--table `{spec}`: {e}"))?;
    Ok((name.to_owned(), source))
}

fn check_table_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "table name `{name}` must start with a letter or `_` and hold only letters, digits and `_`"
        ))
    }
}

/// What the file says (all of it optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    #[serde(default)]
    databricks: DatabricksSection,
    #[serde(default)]
    emulator: Option<EmulatorSetting>,
    #[serde(default)]
    executor: ExecutorSection,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tables: BTreeMap<String, Spanned<String>>,
}

/// A loaded configuration: the file's contents (with `${ENV}` expanded and relative paths
/// resolved), or the defaults when there is no file.
#[derive(Debug, Default)]
pub struct Config {
    path: Option<PathBuf>,
    /// `[databricks]`.
    pub databricks: DatabricksSection,
    /// `emulator = true` / `[emulator]`: use the built-in emulator instead of `[databricks]`.
    pub emulator: Option<EmulatorSection>,
    /// `[executor]`.
    pub executor: ExecutorSection,
    /// `[server]`.
    pub server: ServerSection,
    /// `[tables]`, in name order.
    pub tables: BTreeMap<String, TableSource>,
    /// Where each `databricks.*` key was written, for error messages.
    locations: BTreeMap<String, Location>,
    /// The `--set` flags applied, in order.
    overrides: Vec<Override>,
}

impl Config {
    /// The file this configuration came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Loads the configuration: `explicit` (`--config`, must exist), else the file named by
    /// `DBFED_CONFIG` in `env` (must exist), else `./dbfed.toml` if it exists, else defaults.
    #[cfg(test)]
    pub fn discover(
        explicit: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigFileError> {
        Self::discover_with(explicit, env, &[])
    }

    /// [`Config::discover`], then `overrides` (`--set` flags) applied over the file (or over
    /// the defaults when there is no file).
    pub fn discover_with(
        explicit: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &[Override],
    ) -> Result<Self, ConfigFileError> {
        let path = match (explicit, env.get(CONFIG_ENV_VAR).filter(|v| !v.is_empty())) {
            (Some(path), _) => path.to_path_buf(),
            (None, Some(path)) => PathBuf::from(path),
            (None, None) => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.is_file() {
                    if overrides.is_empty() {
                        return Ok(Self::default());
                    }
                    return Self::from_text("", None, env, overrides);
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_text(&text, Some(&path), env, overrides)
    }

    /// Reads and validates `path`, expanding `${NAME}` from `env`.
    #[cfg(test)]
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parses `text` as if read from `path` (used for locations and relative paths).
    #[cfg(test)]
    pub fn parse(
        text: &str,
        path: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigFileError> {
        Self::from_text(text, Some(path), env, &[])
    }

    /// Parses `text` as if read from `path` (`None`: no file), then applies `overrides`.
    #[cfg(test)]
    pub fn parse_with(
        text: &str,
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &[Override],
    ) -> Result<Self, ConfigFileError> {
        Self::from_text(text, path, env, overrides)
    }

    fn from_text<'i>(
        text: &'i str,
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &'i [Override],
    ) -> Result<Self, ConfigFileError> {
        let shown_path = path.map_or_else(
            || PathBuf::from("(no configuration file)"),
            Path::to_path_buf,
        );
        let locate = |offset: usize| location(text, &shown_path, offset);
        let mut root = DeTable::parse(text).map_err(|e| ConfigFileError::Syntax {
            location: locate(e.span().map_or(0, |s| s.start)),
            message: e.message().to_owned(),
        })?;
        let mut key_path = Vec::new();
        expand_table(root.get_mut(), &mut key_path, env, &locate)?;

        // Override `i` is given the span `first_override + i`, past the end of the text: an
        // error whose span starts there is about that override.
        let first_override = text.len() + 1;
        let which_override = |offset: usize| {
            offset
                .checked_sub(first_override)
                .and_then(|i| overrides.get(i).map(|o| (i, o)))
        };
        let invalid = |offset: usize, key: String, message: String| match which_override(offset) {
            Some((_, over)) => ConfigFileError::Override {
                flag: over.shown(),
                message: over.redact(&format!("`{key}`: {message}")),
            },
            None => ConfigFileError::Invalid {
                location: locate(offset),
                key,
                message,
            },
        };
        // Each override is tried as its TOML value, then (if the key refuses it) as a string:
        // at most one retry per override.
        let mut as_string = vec![false; overrides.len()];
        let mut typed_errors: Vec<Option<ConfigFileError>> =
            overrides.iter().map(|_| None).collect();
        let (contents, index) = loop {
            let mut document = root.clone();
            for (i, over) in overrides.iter().enumerate() {
                let span = first_override + i..first_override + i + 1;
                overrides::apply(document.get_mut(), over, span, as_string[i])?;
            }
            let index = document.get_ref().clone();
            match FileContents::deserialize(toml::de::Deserializer::from(document)) {
                Ok(contents) => break (contents, index),
                Err(e) => {
                    let offset = e.span().map_or(0, |s| s.start);
                    let key = key_at(&index, offset).unwrap_or_else(|| "(top level)".to_owned());
                    let error = invalid(offset, key, e.message().to_owned());
                    match which_override(offset) {
                        Some((i, over)) if !as_string[i] && over.is_typed() => {
                            as_string[i] = true;
                            typed_errors[i] = Some(error);
                        }
                        Some((i, _)) => return Err(typed_errors[i].take().unwrap_or(error)),
                        None => return Err(error),
                    }
                }
            }
        };

        let overridden = |key: &str| overrides.iter().any(|o| o.covers(key));
        let base = path
            .and_then(Path::parent)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let resolve = |key: &str, p: &Path| {
            if p.is_absolute() || overridden(key) {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut tables = BTreeMap::new();
        for (name, value) in contents.tables {
            let key = format!("tables.{name}");
            let fail = |message: String| invalid(value.span().start, key.clone(), message);
            check_table_name(&name).map_err(fail)?;
            let mut source =
                TableSource::from_path(resolve(&key, Path::new(value.get_ref()))).map_err(fail)?;
            source.declared_at = Some(match which_override(value.span().start) {
                Some((_, over)) => format!("`--set {}`", over.shown()),
                None => format!("`{key}` at {}", locate(value.span().start)),
            });
            tables.insert(name, source);
        }
        let mut server = contents.server;
        if let Some(tls) = &mut server.tls {
            tls.cert = resolve("server.tls.cert", &tls.cert);
            tls.key = resolve("server.tls.key", &tls.key);
            tls.client_ca = tls
                .client_ca
                .as_deref()
                .map(|p| resolve("server.tls.client_ca", p));
        }
        let mut emulator = contents.emulator.and_then(|e| e.0);
        if let Some(emulator) = &mut emulator {
            emulator.data_dir = emulator
                .data_dir
                .as_deref()
                .map(|p| resolve("emulator.data_dir", p));
        }
        let mut databricks = contents.databricks;
        databricks.config_file = databricks
            .config_file
            .as_deref()
            .map(|p| resolve("databricks.config_file", p));
        if emulator.is_some() && !databricks.is_empty() {
            let offset = index.get("emulator").map_or(0, |value| value.span().start);
            return Err(invalid(
                offset,
                "emulator".to_owned(),
                "the emulator and a [databricks] workspace are both configured; \
                 keep one of them"
                    .to_owned(),
            ));
        }
        let mut locations = BTreeMap::new();
        if let Some(DeValue::Table(section)) = index.get("databricks").map(Spanned::get_ref) {
            for (key, value) in section {
                if which_override(value.span().start).is_none() {
                    locations.insert(key.get_ref().to_string(), locate(value.span().start));
                }
            }
        }
        Ok(Self {
            path: path.map(Path::to_path_buf),
            databricks,
            emulator,
            executor: contents.executor,
            server,
            tables,
            locations,
            overrides: overrides.to_vec(),
        })
    }

    /// Whether a `--set` flag set `databricks.<key>` (it then wins over the environment).
    fn set_by_flag(&self, key: &str) -> Option<&Override> {
        let key = format!("databricks.{key}");
        self.overrides.iter().rev().find(|o| o.covers(&key))
    }

    fn where_set(&self, key: &str) -> String {
        if let Some(over) = self.set_by_flag(key) {
            return format!("`--set {}`", over.shown());
        }
        match self.locations.get(key) {
            Some(location) => format!("`databricks.{key}` at {location}"),
            None => format!("`databricks.{key}`"),
        }
    }

    /// The Databricks client configuration: `flags` over the Databricks variables of `env` over
    /// the file's `[databricks]` over a `~/.databrickscfg` profile (see the module docs).
    pub fn client_config(
        &self,
        env: &BTreeMap<String, String>,
        flags: &DatabricksFlags,
    ) -> Result<dbfed_databricks::config::ClientConfig, ConfigFileError> {
        let (builder, origins) = self.client_config_builder(env, flags);
        builder.build().map_err(|source| {
            let field = match &source {
                ConfigError::Invalid { field, .. }
                | ConfigError::Conflict { field, .. }
                | ConfigError::Missing { field, .. } => Some(*field),
                _ => None,
            };
            let origin = field.and_then(|f| origins.get(f).cloned()).or_else(|| {
                matches!(
                    source,
                    ConfigError::ProfileNotFound { .. } | ConfigError::ConfigFileNotFound { .. }
                )
                .then(|| origins.get("profile").cloned())
                .flatten()
            });
            ConfigFileError::Databricks {
                source: Box::new(source),
                origin,
            }
        })
    }

    /// The builder behind [`Config::client_config`], and where each explicitly set field came
    /// from (field name as used by [`ConfigError`] → description).
    fn client_config_builder(
        &self,
        env: &BTreeMap<String, String>,
        flags: &DatabricksFlags,
    ) -> (ClientConfigBuilder, BTreeMap<&'static str, String>) {
        let set = |name: &str| env.get(name).is_some_and(|v| !v.trim().is_empty());
        let mut origins = BTreeMap::new();
        let mut builder = ClientConfigBuilder::from_env_vars(env.clone());
        let d = &self.databricks;

        // File values, where the environment does not set them.
        let file_fields: [(&'static str, &Option<String>, &[&str]); 5] = [
            ("host", &d.host, &["DATABRICKS_HOST"]),
            (
                "warehouse_id",
                &d.warehouse_id,
                &["DATABRICKS_WAREHOUSE_ID", "DATABRICKS_HTTP_PATH"],
            ),
            (
                "http_path",
                &d.http_path,
                &["DATABRICKS_WAREHOUSE_ID", "DATABRICKS_HTTP_PATH"],
            ),
            ("catalog", &d.catalog, &["DATABRICKS_CATALOG"]),
            ("schema", &d.schema, &["DATABRICKS_SCHEMA"]),
        ];
        for (field, value, vars) in file_fields {
            let Some(value) = value else { continue };
            if vars.iter().any(|v| set(v)) && self.set_by_flag(field).is_none() {
                continue;
            }
            builder = match field {
                "host" => builder.host(value),
                "warehouse_id" => builder.warehouse_id(value),
                "http_path" => builder.http_path(value),
                "catalog" => builder.catalog(value),
                _ => builder.schema(value),
            };
            origins.insert(field, self.where_set(field));
            if field == "warehouse_id" || field == "http_path" {
                origins.insert("warehouse", self.where_set(field));
            }
        }
        if let Some(url) = &d.azure_login_url
            && (!set("DATABRICKS_AZURE_LOGIN_APP_URL")
                || self.set_by_flag("azure_login_url").is_some())
        {
            builder = builder.azure_login_url(url);
            origins.insert("azure_login_url", self.where_set("azure_login_url"));
        }
        if let Some(profile) = &d.profile
            && (!set("DATABRICKS_CONFIG_PROFILE") || self.set_by_flag("profile").is_some())
        {
            builder = builder.profile(profile);
            origins.insert("profile", self.where_set("profile"));
        }
        if let Some(file) = &d.config_file
            && (!set("DATABRICKS_CONFIG_FILE") || self.set_by_flag("config_file").is_some())
        {
            builder = builder.config_file(file);
        }
        let env_has_credentials = set("DATABRICKS_TOKEN")
            || (set("DATABRICKS_CLIENT_ID") && set("DATABRICKS_CLIENT_SECRET"))
            || ((set("DATABRICKS_AZURE_TENANT_ID") || set("ARM_TENANT_ID"))
                && set("ARM_CLIENT_ID")
                && set("ARM_CLIENT_SECRET"));
        let credentials_set_by_flag = [
            "auth_type",
            "token",
            "client_id",
            "client_secret",
            "azure_tenant_id",
            "azure_client_id",
            "azure_client_secret",
        ]
        .iter()
        .any(|key| self.set_by_flag(key).is_some());
        if !env_has_credentials || credentials_set_by_flag {
            if let Some(credentials) = self.file_credentials() {
                builder = builder.credentials(credentials);
            } else if let Some(auth_type) = d.auth_type
                && !set("DATABRICKS_AUTH_TYPE")
            {
                builder = builder.auth_type(auth_type);
            }
        }

        // Flags win over everything.
        if let Some(profile) = &flags.profile {
            builder = builder.profile(profile);
            origins.insert("profile", "--profile".to_owned());
        }
        if let Some(host) = &flags.host {
            builder = builder.host(host);
            origins.insert("host", "--host".to_owned());
        }
        if let Some(warehouse) = &flags.warehouse {
            builder = if warehouse.contains('/') {
                builder.http_path(warehouse)
            } else {
                builder.warehouse_id(warehouse)
            };
            origins.insert("warehouse", "--warehouse".to_owned());
            origins.insert("warehouse_id", "--warehouse".to_owned());
            origins.insert("http_path", "--warehouse".to_owned());
        }
        if let Some(catalog) = &flags.catalog {
            builder = builder.catalog(catalog);
            origins.insert("catalog", "--catalog".to_owned());
        }
        if let Some(schema) = &flags.schema {
            builder = builder.schema(schema);
            origins.insert("schema", "--schema".to_owned());
        }
        (builder, origins)
    }

    /// The credentials the file's `[databricks]` section names, if it names a complete set:
    /// the one `auth_type` picks, else the only complete one. Incomplete or ambiguous sets are
    /// left to the client configuration (which reports them), so `None`.
    fn file_credentials(&self) -> Option<Credentials> {
        let d = &self.databricks;
        let token = d
            .token
            .as_ref()
            .map(|t| Credentials::token(t.secret_string()));
        let m2m = match (&d.client_id, &d.client_secret) {
            (Some(id), Some(secret)) => Some(Credentials::oauth_m2m(id, secret.secret_string())),
            _ => None,
        };
        let azure =
            match (
                &d.azure_tenant_id,
                d.azure_client_id.as_ref().or(d.client_id.as_ref()),
                d.azure_client_secret.as_ref().or(d.client_secret.as_ref()),
            ) {
                (Some(tenant), Some(id), Some(secret)) => Some(
                    Credentials::azure_service_principal(tenant, id, secret.secret_string()),
                ),
                _ => None,
            };
        match d.auth_type {
            Some(AuthType::Pat) => token,
            Some(AuthType::OAuthM2M) => m2m,
            Some(AuthType::AzureClientSecret) => azure,
            Some(_) => None,
            // Without auth_type: a tenant makes client_id/secret an Azure principal.
            None => match (token, azure, m2m) {
                (Some(t), None, None) => Some(t),
                (None, Some(a), _) => Some(a),
                (None, None, Some(m)) => Some(m),
                _ => None,
            },
        }
    }

    /// Checks that the file's credentials are complete and unambiguous; an error names the keys.
    pub fn check_credentials(&self) -> Result<(), ConfigFileError> {
        let d = &self.databricks;
        let mut named = Vec::new();
        if d.token.is_some() {
            named.push("token");
        }
        if d.client_id.is_some() || d.client_secret.is_some() {
            named.push("client_id/client_secret");
        }
        if d.azure_tenant_id.is_some()
            || d.azure_client_id.is_some()
            || d.azure_client_secret.is_some()
        {
            named.push("azure_*");
        }
        if named.is_empty() || self.file_credentials().is_some() {
            return Ok(());
        }
        let key = if d.auth_type.is_some() {
            "auth_type"
        } else {
            named[0]
        };
        let location = self
            .locations
            .get(key.split('/').next().unwrap_or(key))
            .or_else(|| self.locations.values().next())
            .cloned()
            .unwrap_or_else(|| Location {
                path: self.path.clone().unwrap_or_default(),
                line: 1,
                column: 1,
            });
        let message = match d.auth_type {
            Some(kind) => format!(
                "auth_type = \"{kind}\" but its credentials are incomplete (pat needs token; \
                 oauth-m2m needs client_id and client_secret; azure-client-secret needs \
                 azure_tenant_id, azure_client_id and azure_client_secret)"
            ),
            None if named.len() > 1 => format!(
                "several kinds of credentials are set ({}); set auth_type to pick one",
                named.join(", ")
            ),
            None => format!(
                "incomplete credentials: {} (oauth-m2m needs client_id and client_secret; \
                 azure-client-secret needs azure_tenant_id, azure_client_id and \
                 azure_client_secret)",
                named[0]
            ),
        };
        if let Some(over) = self.set_by_flag(key.split('/').next().unwrap_or(key)) {
            return Err(ConfigFileError::Override {
                flag: over.shown(),
                message: format!("`databricks.{key}`: {message}"),
            });
        }
        Err(ConfigFileError::Invalid {
            location,
            key: format!("databricks.{key}"),
            message,
        })
    }
}

/// Databricks settings given as command-line flags (they win over everything else).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabricksFlags {
    /// `~/.databrickscfg` profile (default: DATABRICKS_CONFIG_PROFILE, `databricks.profile`, DEFAULT).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Workspace URL (default: DATABRICKS_HOST, `databricks.host`, the profile).
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// SQL warehouse id or HTTP path `/sql/1.0/warehouses/<id>`.
    #[arg(long, global = true)]
    pub warehouse: Option<String>,
    /// Default catalog for statements.
    #[arg(long, global = true)]
    pub catalog: Option<String>,
    /// Default schema for statements.
    #[arg(long, global = true)]
    pub schema: Option<String>,
}

/// The process environment as a map (variables that are not UTF-8 are skipped).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// 1-based line and column of byte `offset` in `text`.
fn location(text: &str, path: &Path, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Location {
        path: path.to_path_buf(),
        line,
        column,
    }
}

/// The dotted key whose key or value covers byte `offset` (the deepest one). Table spans do not
/// always cover their body (a `[section]` header spans the header only), so every table is
/// searched.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    fn covers(span: std::ops::Range<usize>, offset: usize) -> bool {
        span.start <= offset && offset < span.end.max(span.start + 1)
    }
    fn nested(value: &DeValue<'_>, offset: usize) -> Option<String> {
        match value {
            DeValue::Table(inner) => key_at(inner, offset).map(|k| format!(".{k}")),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                match nested(item.get_ref(), offset) {
                    Some(k) => Some(format!("[{i}]{k}")),
                    None => covers(item.span(), offset).then(|| format!("[{i}]")),
                }
            }),
            _ => None,
        }
    }
    for (key, value) in table {
        if let Some(inner) = nested(value.get_ref(), offset) {
            return Some(format!("{}{inner}", key.get_ref()));
        }
    }
    table
        .iter()
        .find(|(key, value)| covers(key.span(), offset) || covers(value.span(), offset))
        .map(|(key, _)| key.get_ref().to_string())
}

fn expand_table<'i>(
    table: &mut DeTable<'i>,
    key_path: &mut Vec<String>,
    env: &BTreeMap<String, String>,
    locate: &dyn Fn(usize) -> Location,
) -> Result<(), ConfigFileError> {
    for (key, value) in table.iter_mut() {
        key_path.push(key.get_ref().to_string());
        expand_value(value, key_path, env, locate)?;
        key_path.pop();
    }
    Ok(())
}

fn expand_value<'i>(
    value: &mut Spanned<DeValue<'i>>,
    key_path: &mut Vec<String>,
    env: &BTreeMap<String, String>,
    locate: &dyn Fn(usize) -> Location,
) -> Result<(), ConfigFileError> {
    let start = value.span().start;
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            let expanded = expand_env(s, env).map_err(|e| match e {
                ExpandError::Missing(variable) => ConfigFileError::MissingEnvVar {
                    location: locate(start),
                    key: key_path.join("."),
                    variable,
                },
                ExpandError::Malformed(message) => ConfigFileError::Invalid {
                    location: locate(start),
                    key: key_path.join("."),
                    message,
                },
            })?;
            *s = expanded.into();
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Some(last) = key_path.last_mut() {
                    last.push_str(&format!("[{i}]"));
                }
                let result = expand_value(item, key_path, env, locate);
                if let Some(last) = key_path.last_mut()
                    && let Some(at) = last.rfind('[')
                {
                    last.truncate(at);
                }
                result?;
            }
        }
        DeValue::Table(inner) => expand_table(inner, key_path, env, locate)?,
        _ => {}
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum ExpandError {
    Missing(String),
    Malformed(String),
}

/// Replaces `${NAME}` / `${NAME:-default}` with values from `env`; `$${` is a literal `${`.
fn expand_env(input: &str, env: &BTreeMap<String, String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                ExpandError::Malformed(format!(
                    "unterminated `${{` in {input:?}: write ${{NAME}}, or $${{ for a literal `${{`"
                ))
            })?;
            let reference = &after[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ExpandError::Malformed(format!(
                    "`${{{reference}}}` is not a valid environment variable reference \
                     (letters, digits and `_`, not starting with a digit)"
                )));
            }
            match (env.get(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Missing(name.to_owned())),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---- value deserializers: validation happens here so that errors carry the value's span ----

/// A duration: `"30s"`, `"1m 30s"`, `"250ms"` (humantime), or an integer number of seconds.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"500ms\", \"2m\" or a number of seconds")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {v:?} ({e}): expected e.g. \"30s\", \"500ms\", \"2m\""
                ))
            })
        }
    }
    d.deserialize_any(Visitor)
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(de::Error::custom("must be at least 1, got 0"));
    }
    usize::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large")))
}

fn opt_positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    positive(d).map(Some)
}

fn opt_positive_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1, got 0")),
        v => Ok(Some(v)),
    }
}

fn positive_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(de::Error::custom(format!(
            "must be a positive number, got {v}"
        )))
    }
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let v = String::deserialize(d)?;
    v.trim().parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid address {v:?}: expected IP:PORT, e.g. \"127.0.0.1:50051\" or \"0.0.0.0:0\""
        ))
    })
}

fn opt_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

fn opt_memory_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let size = ByteSize::deserialize(d)?;
    crate::memory::check_memory_limit(size)
        .map(Some)
        .map_err(de::Error::custom)
}

fn auth_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AuthType>, D::Error> {
    let v = String::deserialize(d)?;
    v.parse::<AuthType>().map(Some).map_err(de::Error::custom)
}

/// Shortest ticket secret accepted.
pub const MIN_TICKET_SECRET_BYTES: usize = 32;

fn opt_ticket_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let v = Secret::deserialize(d)?;
    if v.expose().len() < MIN_TICKET_SECRET_BYTES {
        return Err(de::Error::custom(format!(
            "the ticket secret must be at least {MIN_TICKET_SECRET_BYTES} bytes, got {} \
             (e.g. `openssl rand -hex 32`)",
            v.expose().len()
        )));
    }
    Ok(Some(v))
}

mod overrides;
pub use overrides::Override;

#[cfg(test)]
mod tests;
