//! Client configuration: workspace host, warehouse, credentials, default catalog and schema.
//!
//! A [`ClientConfig`] is assembled by a [`ClientConfigBuilder`] from up to three sources, with the
//! precedence the Databricks SDKs use:
//!
//! 1. values set explicitly on the builder,
//! 2. the environment (`DATABRICKS_HOST`, `DATABRICKS_TOKEN`, ...; see [`ClientConfigBuilder`]),
//! 3. a profile of the config file (`~/.databrickscfg`).
//!
//! [`ClientConfig::builder`] starts from explicit values only: nothing is read from the process
//! environment or the home directory unless asked for with [`ClientConfigBuilder::from_process_env`]
//! (or [`ClientConfig::from_env`]), [`ClientConfigBuilder::from_env_vars`],
//! [`ClientConfigBuilder::profile`] or [`ClientConfigBuilder::config_file`].
//!
//! ```
//! use dbfed_databricks::config::ClientConfig;
//!
//! let config = ClientConfig::builder()
//!     .host("adb-1234.5.azuredatabricks.net")
//!     .http_path("/sql/1.0/warehouses/8cfbc99c31463743")
//!     .token("dapi-example")
//!     .catalog("samples")
//!     .schema("tpch")
//!     .build()?;
//! assert_eq!(config.host().as_str(), "https://adb-1234.5.azuredatabricks.net/");
//! assert_eq!(config.warehouse_id(), "8cfbc99c31463743");
//! assert!(!format!("{config:?}").contains("dapi-example"));
//! # Ok::<(), dbfed_databricks::config::ConfigError>(())
//! ```

mod error;
mod ini;
mod resolve;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use self::error::{ConfigError, ConfigSource};
use self::resolve::{Key, Resolver, parse_host, user_agent};
use crate::SecretString;
use crate::auth::{
    AuthError, AuthProvider, AzureServicePrincipal, DEFAULT_AZURE_LOGIN_URL, OAuthM2M, StaticToken,
};

/// The profile used when neither the builder nor `DATABRICKS_CONFIG_PROFILE` names one.
pub const DEFAULT_PROFILE: &str = "DEFAULT";

/// The config file name, looked up in the home directory.
pub const CONFIG_FILE_NAME: &str = ".databrickscfg";

/// The credentials a user brings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// A personal access token or a pre-obtained Azure AD token.
    Token(SecretString),
    /// Databricks OAuth machine-to-machine: a service principal's OAuth client id and secret,
    /// exchanged for short-lived tokens at the workspace's token endpoint.
    OAuthM2M {
        /// The OAuth client id (the service principal's application id).
        client_id: String,
        /// The OAuth client secret.
        client_secret: SecretString,
    },
    /// An Azure Entra ID (AAD) service principal, exchanged for Azure AD tokens at
    /// `{azure_login_url}/{tenant_id}/oauth2/v2.0/token`.
    AzureServicePrincipal {
        /// The Entra ID tenant (directory) id.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: SecretString,
    },
}

impl Credentials {
    /// A personal access token (or a pre-obtained Azure AD token).
    pub fn token(token: impl Into<SecretString>) -> Self {
        Self::Token(token.into())
    }

    /// Databricks OAuth M2M credentials.
    pub fn oauth_m2m(client_id: impl Into<String>, client_secret: impl Into<SecretString>) -> Self {
        Self::OAuthM2M {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// Azure service principal credentials.
    pub fn azure_service_principal(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        Self::AzureServicePrincipal {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// The authentication method these credentials use.
    pub fn auth_type(&self) -> AuthType {
        match self {
            Self::Token(_) => AuthType::Pat,
            Self::OAuthM2M { .. } => AuthType::OAuthM2M,
            Self::AzureServicePrincipal { .. } => AuthType::AzureClientSecret,
        }
    }
}

/// An authentication method, as named by `DATABRICKS_AUTH_TYPE` / `auth_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthType {
    /// `pat`: a personal access token (or any pre-obtained bearer token).
    Pat,
    /// `oauth-m2m`: Databricks OAuth client credentials.
    OAuthM2M,
    /// `azure-client-secret`: an Azure Entra ID service principal with a client secret.
    AzureClientSecret,
}

impl AuthType {
    /// The name used in `DATABRICKS_AUTH_TYPE` and `auth_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pat => "pat",
            Self::OAuthM2M => "oauth-m2m",
            Self::AzureClientSecret => "azure-client-secret",
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`AuthType`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown auth type {0:?}: expected pat, oauth-m2m or azure-client-secret")]
pub struct UnknownAuthType(pub String);

impl FromStr for AuthType {
    type Err = UnknownAuthType;

    /// Parses `pat`, `oauth-m2m` or `azure-client-secret` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pat" => Ok(Self::Pat),
            "oauth-m2m" => Ok(Self::OAuthM2M),
            "azure-client-secret" => Ok(Self::AzureClientSecret),
            _ => Err(UnknownAuthType(s.to_owned())),
        }
    }
}

/// Where and as whom to connect: workspace host, warehouse, credentials, default catalog/schema.
///
/// `Debug` never shows secrets (they print as `[REDACTED]`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    host: url::Url,
    warehouse_id: String,
    credentials: Credentials,
    catalog: Option<String>,
    schema: Option<String>,
    session_confs: BTreeMap<String, String>,
    query_tags: Vec<(String, Option<String>)>,
    user_agent: String,
    azure_login_url: url::Url,
}

impl ClientConfig {
    /// A builder that starts empty (explicit values only; see the [module docs](self)).
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }

    /// The configuration from the process environment and `~/.databrickscfg` (the profile named
    /// by `DATABRICKS_CONFIG_PROFILE`, or `[DEFAULT]`).
    ///
    /// Shorthand for `ClientConfigBuilder::from_process_env().build()`.
    pub fn from_env() -> Result<Self, ConfigError> {
        ClientConfigBuilder::from_process_env().build()
    }

    /// The workspace base URL (`https://` is assumed when the host was given without a scheme).
    /// Always ends with `/` and has no path, query or fragment.
    pub fn host(&self) -> &url::Url {
        &self.host
    }
    /// The SQL Warehouse id (last segment of the `http_path`).
    pub fn warehouse_id(&self) -> &str {
        &self.warehouse_id
    }
    /// The credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
    /// The authentication method of [`ClientConfig::credentials`].
    pub fn auth_type(&self) -> AuthType {
        self.credentials.auth_type()
    }
    /// Default catalog for statements.
    pub fn catalog(&self) -> Option<&str> {
        self.catalog.as_deref()
    }
    /// Default schema for statements.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
    /// Session configuration (`session_confs` of a session).
    pub fn session_confs(&self) -> &BTreeMap<String, String> {
        &self.session_confs
    }
    /// Query tags sent with every statement.
    pub fn query_tags(&self) -> &[(String, Option<String>)] {
        &self.query_tags
    }
    /// The `User-Agent` header value: `dbfed/<version>`, followed by the user's product token if
    /// one was set with [`ClientConfigBuilder::user_agent`].
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }
    /// The Azure Entra ID authority used by [`Credentials::AzureServicePrincipal`]
    /// (default `https://login.microsoftonline.com/`).
    pub fn azure_login_url(&self) -> &url::Url {
        &self.azure_login_url
    }
    /// Builds the auth provider for these credentials; `http` is used for token endpoints.
    ///
    /// No network traffic happens here: OAuth providers obtain their first token on first use.
    pub fn auth_provider(
        &self,
        http: &reqwest::blocking::Client,
    ) -> Result<Arc<dyn AuthProvider>, AuthError> {
        match &self.credentials {
            Credentials::Token(token) => Ok(Arc::new(StaticToken::new(token))),
            Credentials::OAuthM2M {
                client_id,
                client_secret,
            } => Ok(Arc::new(OAuthM2M::new(
                http.clone(),
                &self.host,
                client_id.clone(),
                client_secret.clone(),
            ))),
            Credentials::AzureServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => Ok(Arc::new(AzureServicePrincipal::new(
                http.clone(),
                &self.azure_login_url,
                tenant_id,
                client_id.clone(),
                client_secret.clone(),
            )?)),
        }
    }
}

/// Assembles a [`ClientConfig`]; every setter consumes and returns the builder.
///
/// # Sources
///
/// Explicit setters win over the environment, which wins over the config file profile.
/// Environment variables (read only after [`ClientConfigBuilder::from_process_env`] or
/// [`ClientConfigBuilder::from_env_vars`]; empty values count as unset):
///
/// | variable | config file key | meaning |
/// |---|---|---|
/// | `DATABRICKS_HOST` | `host` | workspace URL |
/// | `DATABRICKS_TOKEN` | `token` | personal access token |
/// | `DATABRICKS_CLIENT_ID`, `DATABRICKS_CLIENT_SECRET` | `client_id`, `client_secret` | OAuth M2M |
/// | `DATABRICKS_AZURE_TENANT_ID` or `ARM_TENANT_ID` | `azure_tenant_id` | Azure service principal |
/// | `ARM_CLIENT_ID`, `ARM_CLIENT_SECRET` | `azure_client_id`, `azure_client_secret` | Azure service principal |
/// | `DATABRICKS_AZURE_LOGIN_APP_URL` | `azure_login_app_url` | Entra ID authority (default `https://login.microsoftonline.com`) |
/// | `DATABRICKS_WAREHOUSE_ID` / `DATABRICKS_HTTP_PATH` | `warehouse_id` / `http_path` | the SQL warehouse |
/// | `DATABRICKS_AUTH_TYPE` | `auth_type` | `pat`, `oauth-m2m` or `azure-client-secret` |
/// | `DATABRICKS_CATALOG`, `DATABRICKS_SCHEMA` | `catalog`, `schema` | defaults for statements |
/// | `DATABRICKS_CONFIG_PROFILE` | | profile name (default `DEFAULT`) |
/// | `DATABRICKS_CONFIG_FILE` | | config file (default `$HOME/.databrickscfg`) |
///
/// # Choosing credentials
///
/// Credentials set on the builder ([`token`](Self::token), [`credentials`](Self::credentials))
/// are used as they are. Otherwise each credential field is looked up with the precedence above
/// and then, unless `auth_type` names the method: a token means PAT; `client_id` and
/// `client_secret` mean OAuth M2M; `azure_tenant_id`, `azure_client_id` and `azure_client_secret`
/// mean an Azure service principal (with `auth_type = azure-client-secret`, `client_id` and
/// `client_secret` stand in for missing `azure_*` ones). Two complete sets without `auth_type`
/// are an error naming both.
#[derive(Default, Clone)]
pub struct ClientConfigBuilder {
    explicit: BTreeMap<Key, String>,
    credentials: Option<Credentials>,
    auth_type: Option<AuthType>,
    session_confs: BTreeMap<String, String>,
    query_tags: Vec<(String, Option<String>)>,
    user_agent: Option<String>,
    env: Option<BTreeMap<String, String>>,
    home_dir: Option<PathBuf>,
    profile: Option<String>,
    config_file: Option<PathBuf>,
}

impl fmt::Debug for ClientConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets (DATABRICKS_TOKEN): show variable names only.
        let env_names: Option<Vec<&str>> = self
            .env
            .as_ref()
            .map(|env| env.keys().map(String::as_str).collect());
        f.debug_struct("ClientConfigBuilder")
            .field("explicit", &self.explicit)
            .field("credentials", &self.credentials)
            .field("auth_type", &self.auth_type)
            .field("session_confs", &self.session_confs)
            .field("query_tags", &self.query_tags)
            .field("user_agent", &self.user_agent)
            .field("env_var_names", &env_names)
            .field("home_dir", &self.home_dir)
            .field("profile", &self.profile)
            .field("config_file", &self.config_file)
            .finish()
    }
}

impl ClientConfigBuilder {
    /// A builder that reads the process environment (and, through it, `$HOME/.databrickscfg`).
    /// Variables whose name or value is not valid UTF-8 are ignored.
    pub fn from_process_env() -> Self {
        Self::from_env_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// A builder that reads `vars` as its environment, instead of the process's: for tests and
    /// embedding. The default config file is `$HOME/.databrickscfg` with `HOME` (or
    /// `USERPROFILE`) taken from `vars`, unless [`home_dir`](Self::home_dir) overrides it.
    pub fn from_env_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            env: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            ..Self::default()
        }
    }

    fn set(mut self, key: Key, value: impl Into<String>) -> Self {
        self.explicit.insert(key, value.into());
        self
    }

    /// The workspace URL, e.g. `adb-123.4.azuredatabricks.net` or `https://dbc-1.cloud.databricks.com`.
    /// `https://` is assumed without a scheme; `http://` is kept (for loopback tests). It must not
    /// have a path, query or fragment.
    pub fn host(self, host: impl Into<String>) -> Self {
        self.set(Key::Host, host)
    }

    /// The SQL warehouse id. Alternatively use [`http_path`](Self::http_path).
    pub fn warehouse_id(self, warehouse_id: impl Into<String>) -> Self {
        self.set(Key::WarehouseId, warehouse_id)
    }

    /// The warehouse's HTTP path, `/sql/1.0/warehouses/<id>` (also `/sql/1.0/endpoints/<id>` and
    /// `/sql/protocolv1/o/<org>/<id>`); the id is its last segment.
    pub fn http_path(self, http_path: impl Into<String>) -> Self {
        self.set(Key::HttpPath, http_path)
    }

    /// Authenticates with a personal access token (or a pre-obtained Azure AD token).
    /// Replaces credentials set earlier.
    pub fn token(self, token: impl Into<SecretString>) -> Self {
        self.credentials(Credentials::Token(token.into()))
    }

    /// Authenticates with `credentials`. Replaces credentials set earlier; credentials set on the
    /// builder take precedence over any found in the environment or config file.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Chooses the authentication method when the environment / config file hold several.
    pub fn auth_type(mut self, auth_type: AuthType) -> Self {
        self.auth_type = Some(auth_type);
        self
    }

    /// The default catalog for statements (none by default: the warehouse's default).
    pub fn catalog(self, catalog: impl Into<String>) -> Self {
        self.set(Key::Catalog, catalog)
    }

    /// The default schema for statements (none by default: the warehouse's default).
    pub fn schema(self, schema: impl Into<String>) -> Self {
        self.set(Key::Schema, schema)
    }

    /// Adds a session configuration parameter (e.g. `ansi_mode`, `TIMEZONE`); later values for the
    /// same key replace earlier ones.
    pub fn session_conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.session_confs.insert(key.into(), value.into());
        self
    }

    /// Adds a query tag `key:value` sent with every statement.
    pub fn query_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query_tags.push((key.into(), Some(value.into())));
        self
    }

    /// Adds a query tag without a value.
    pub fn query_tag_key(mut self, key: impl Into<String>) -> Self {
        self.query_tags.push((key.into(), None));
        self
    }

    /// A product token such as `myapp/1.2`, appended to the default `User-Agent`
    /// (`dbfed/<version>`).
    pub fn user_agent(mut self, product: impl Into<String>) -> Self {
        self.user_agent = Some(product.into());
        self
    }

    /// The Azure Entra ID authority for [`Credentials::AzureServicePrincipal`]
    /// (default `https://login.microsoftonline.com`; e.g. `https://login.microsoftonline.us`).
    pub fn azure_login_url(self, url: impl Into<String>) -> Self {
        self.set(Key::AzureLoginUrl, url)
    }

    /// Reads profile `name` of the config file (instead of `DATABRICKS_CONFIG_PROFILE` or
    /// `DEFAULT`). A profile that the file does not have is an error.
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }

    /// Reads this config file (instead of `DATABRICKS_CONFIG_FILE` or `~/.databrickscfg`).
    /// A file that does not exist is an error.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// The home directory in which `.databrickscfg` is looked up (default: `HOME`, or
    /// `USERPROFILE`, of the environment source).
    pub fn home_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.home_dir = Some(path.into());
        self
    }

    /// Validates and assembles the configuration, reading the environment and config file if
    /// this builder was set up to.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let file = self.load_profile()?;
        let resolver = Resolver {
            builder: &self,
            file,
        };

        let host = match resolver.lookup(Key::Host) {
            Some(found) => parse_host(&found.value, &found.origin, "host")?,
            None => {
                return Err(ConfigError::Missing {
                    field: "host",
                    hint: resolver.hint(&[Key::Host]),
                });
            }
        };
        let warehouse_id = resolver.warehouse_id()?;
        let credentials = resolver.credentials(self.credentials.clone(), self.auth_type)?;
        let catalog = resolver.identifier(Key::Catalog)?;
        let schema = resolver.identifier(Key::Schema)?;
        let azure_login_url = match resolver.lookup(Key::AzureLoginUrl) {
            Some(found) => parse_host(&found.value, &found.origin, "azure_login_url")?,
            None => parse_host(
                DEFAULT_AZURE_LOGIN_URL,
                &ConfigSource::Default,
                "azure_login_url",
            )?,
        };
        let user_agent = user_agent(self.user_agent.as_deref())?;

        Ok(ClientConfig {
            host,
            warehouse_id,
            credentials,
            catalog,
            schema,
            session_confs: self.session_confs,
            query_tags: self.query_tags,
            user_agent,
            azure_login_url,
        })
    }
}

#[cfg(test)]
mod tests;
