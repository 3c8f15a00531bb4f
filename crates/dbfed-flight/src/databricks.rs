//! Per-caller Databricks contexts for identity pass-through.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::config::ClientConfigBuilder;
use dbfed_databricks::{Client, ClientBuilder, SecretString};
use dbfed_datafusion::{DatabricksSource, DatabricksSourceBuilder, federated_session_context};
use dbfed_executor::{DatabricksDriver, Executor, ExecutorBuilder};
use sha2::{Digest, Sha256};

use crate::error::FlightSqlError;
use crate::session::{PassThroughSessions, PassThroughSessionsBuilder};

type Configure<T> = Arc<dyn Fn(T) -> T + Send + Sync>;

/// How [`PassThroughSessions::databricks`] builds one caller's context: a client from
/// `client_config` with the caller's token → `DatabricksDriver` → `Executor` →
/// `DatabricksSource` registered in a `federated_session_context`, plus local tables.
#[derive(Clone)]
pub struct DatabricksSessionTemplate {
    client_config: ClientConfigBuilder,
    client: Configure<ClientBuilder>,
    executor: Configure<ExecutorBuilder>,
    source: Configure<DatabricksSourceBuilder>,
    session_config: SessionConfig,
    local_tables: Vec<(String, PathBuf)>,
}

impl fmt::Debug for DatabricksSessionTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksSessionTemplate")
            .field("local_tables", &self.local_tables)
            .finish_non_exhaustive()
    }
}

impl DatabricksSessionTemplate {
    /// A template from a client configuration (host, warehouse, ...); its credentials are
    /// replaced by each caller's token. Defaults: default client, an executor with 4 threads
    /// and a pool of 4 sessions per identity, a source with every catalog, a session config
    /// with `information_schema`, no local tables.
    pub fn new(client_config: ClientConfigBuilder) -> Self {
        Self {
            client_config,
            client: Arc::new(|b| b),
            executor: Arc::new(|b| b.threads(4).pool_size(4)),
            source: Arc::new(|b| b),
            session_config: SessionConfig::new().with_information_schema(true),
            local_tables: Vec::new(),
        }
    }

    /// Adjusts each caller's client (retries, download threads...).
    pub fn client(
        mut self,
        f: impl Fn(ClientBuilder) -> ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.client = Arc::new(f);
        self
    }

    /// Adjusts each caller's executor (threads, pool, queue bounds). Keep it small: there is
    /// one per cached identity.
    pub fn executor(
        mut self,
        f: impl Fn(ExecutorBuilder) -> ExecutorBuilder + Send + Sync + 'static,
    ) -> Self {
        self.executor = Arc::new(f);
        self
    }

    /// Adjusts each caller's source (catalog list, pushdown mode, cache TTL).
    pub fn source(
        mut self,
        f: impl Fn(DatabricksSourceBuilder) -> DatabricksSourceBuilder + Send + Sync + 'static,
    ) -> Self {
        self.source = Arc::new(f);
        self
    }

    /// The DataFusion session configuration of every context.
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.session_config = config;
        self
    }

    /// Registers a local Parquet/CSV table in every context (repeatable).
    pub fn local_table(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.local_tables.push((name.into(), path.into()));
        self
    }

    async fn build(self, token: SecretString) -> Result<SessionContext, FlightSqlError> {
        let identity = {
            let digest = Sha256::digest(token.expose().as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("token-{hex}")
        };
        let config = self
            .client_config
            .clone()
            .token(token)
            .build()
            .map_err(|e| FlightSqlError::Config(e.to_string()))?;
        let client_setup = Arc::clone(&self.client);
        let executor_setup = Arc::clone(&self.executor);
        // Client and executor construction start threads: keep them off the async workers.
        let executor = tokio::task::spawn_blocking(move || -> Result<Executor, FlightSqlError> {
            let client: Client = client_setup(Client::builder(config)).build()?;
            executor_setup(Executor::builder(DatabricksDriver::new(client)))
                .build()
                .map_err(|e| FlightSqlError::Config(e.to_string()))
        })
        .await
        .map_err(|e| FlightSqlError::Internal(format!("building the executor: {e}")))??;
        let source =
            (self.source)(DatabricksSource::builder(executor).identity(identity)).build()?;
        let ctx = federated_session_context(self.session_config.clone());
        source.register(&ctx).await?;
        for (name, path) in &self.local_tables {
            dbfed_datafusion::register_local_table(&ctx, name, path).await?;
        }
        Ok(ctx)
    }
}

impl PassThroughSessions {
    /// Pass-through over a Databricks workspace: each caller's token builds (and caches) its
    /// own context from `template`.
    pub fn databricks(template: DatabricksSessionTemplate) -> PassThroughSessionsBuilder {
        PassThroughSessions::builder(move |token| template.clone().build(token))
    }
}
