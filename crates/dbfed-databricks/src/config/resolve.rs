//! Looking values up across the builder, the environment and the config file, and validating
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::ini::IniFile;
use super::{
    AuthType, CONFIG_FILE_NAME, ClientConfigBuilder, ConfigError, ConfigSource, Credentials,
    DEFAULT_PROFILE,
};
use crate::SecretString;

/// The settings that can come from the environment or a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Host,
    Token,
    ClientId,
    ClientSecret,
    AzureTenantId,
    AzureClientId,
    AzureClientSecret,
    WarehouseId,
    HttpPath,
    AuthType,
    Catalog,
    Schema,
    AzureLoginUrl,
}

impl Key {
    /// The key in a config file profile.
    fn file_key(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Token => "token",
            Self::ClientId => "client_id",
            Self::ClientSecret => "client_secret",
            Self::AzureTenantId => "azure_tenant_id",
            Self::AzureClientId => "azure_client_id",
            Self::AzureClientSecret => "azure_client_secret",
            Self::WarehouseId => "warehouse_id",
            Self::HttpPath => "http_path",
            Self::AuthType => "auth_type",
            Self::Catalog => "catalog",
            Self::Schema => "schema",
            Self::AzureLoginUrl => "azure_login_app_url",
        }
    }

    /// The environment variables, highest precedence first.
    fn env_vars(self) -> &'static [&'static str] {
        match self {
            Self::Host => &["DATABRICKS_HOST"],
            Self::Token => &["DATABRICKS_TOKEN"],
            Self::ClientId => &["DATABRICKS_CLIENT_ID"],
            Self::ClientSecret => &["DATABRICKS_CLIENT_SECRET"],
            Self::AzureTenantId => &["DATABRICKS_AZURE_TENANT_ID", "ARM_TENANT_ID"],
            Self::AzureClientId => &["ARM_CLIENT_ID"],
            Self::AzureClientSecret => &["ARM_CLIENT_SECRET"],
            Self::WarehouseId => &["DATABRICKS_WAREHOUSE_ID"],
            Self::HttpPath => &["DATABRICKS_HTTP_PATH"],
            Self::AuthType => &["DATABRICKS_AUTH_TYPE"],
            Self::Catalog => &["DATABRICKS_CATALOG"],
            Self::Schema => &["DATABRICKS_SCHEMA"],
            Self::AzureLoginUrl => &["DATABRICKS_AZURE_LOGIN_APP_URL"],
        }
    }

    /// The builder method that sets it.
    fn builder_method(self) -> &'static str {
        match self {
            Self::Host => "host()",
            Self::Token => "token()",
            Self::ClientId | Self::ClientSecret => "credentials(Credentials::oauth_m2m(..))",
            Self::AzureTenantId | Self::AzureClientId | Self::AzureClientSecret => {
                "credentials(Credentials::azure_service_principal(..))"
            }
            Self::WarehouseId => "warehouse_id()",
            Self::HttpPath => "http_path()",
            Self::AuthType => "auth_type()",
            Self::Catalog => "catalog()",
            Self::Schema => "schema()",
            Self::AzureLoginUrl => "azure_login_url()",
        }
    }
}

/// A value and where it came from. `rank` orders sources: 0 builder, 1 environment, 2 file.
#[derive(Clone)]
pub(super) struct Found {
    pub(super) value: String,
    pub(super) origin: ConfigSource,
    pub(super) rank: u8,
}

impl ClientConfigBuilder {
    pub(super) fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .as_ref()?
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Finds, reads and parses the config file and selects the profile. `Ok(None)` when no file
    /// is to be read or the default file / default profile does not exist.
    pub(super) fn load_profile(&self) -> Result<Option<LoadedProfile>, ConfigError> {
        let (profile, profile_origin) =
            match (&self.profile, self.env_var("DATABRICKS_CONFIG_PROFILE")) {
                (Some(p), _) => (p.trim().to_owned(), Some(ConfigSource::Builder)),
                (None, Some(p)) => (
                    p.trim().to_owned(),
                    Some(ConfigSource::Environment(
                        "DATABRICKS_CONFIG_PROFILE".to_owned(),
                    )),
                ),
                (None, None) => (DEFAULT_PROFILE.to_owned(), None),
            };
        let home = self.home_dir.clone().or_else(|| {
            self.env_var("HOME")
                .or_else(|| self.env_var("USERPROFILE"))
                .map(PathBuf::from)
        });
        let (path, file_origin) = match (&self.config_file, self.env_var("DATABRICKS_CONFIG_FILE"))
        {
            (Some(path), _) => (path.clone(), Some(ConfigSource::Builder)),
            (None, Some(path)) => (
                expand_tilde(path, home.as_deref()),
                Some(ConfigSource::Environment(
                    "DATABRICKS_CONFIG_FILE".to_owned(),
                )),
            ),
            (None, None) => {
                // Only builders that read an environment, or that name a profile, use the default file.
                if self.env.is_none() && profile_origin.is_none() {
                    return Ok(None);
                }
                match &home {
                    Some(home) => (home.join(CONFIG_FILE_NAME), None),
                    None if profile_origin.is_some() => {
                        (PathBuf::from("~").join(CONFIG_FILE_NAME), None)
                    }
                    None => return Ok(None),
                }
            }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(origin) = file_origin {
                    return Err(ConfigError::ConfigFileNotFound { path, origin });
                }
                if let Some(origin) = profile_origin {
                    return Err(ConfigError::ProfileNotFound {
                        profile,
                        path,
                        origin,
                        available: "the file does not exist".to_owned(),
                    });
                }
                return Ok(Some(LoadedProfile::absent(path, profile)));
            }
            Err(error) => return Err(ConfigError::ConfigFileRead { path, error }),
        };
        let ini = IniFile::parse(&text).map_err(|e| ConfigError::ConfigFileSyntax {
            path: path.clone(),
            line: e.line,
            message: e.message,
        })?;
        match ini.section(&profile) {
            Some(values) => Ok(Some(LoadedProfile {
                path,
                profile,
                values: Some(values.clone()),
            })),
            None => match profile_origin {
                Some(origin) => {
                    let names: Vec<String> =
                        ini.section_names().map(|n| format!("[{n}]")).collect();
                    let available = if names.is_empty() {
                        "the file has no profiles".to_owned()
                    } else {
                        format!("available profiles: {}", names.join(", "))
                    };
                    Err(ConfigError::ProfileNotFound {
                        profile,
                        path,
                        origin,
                        available,
                    })
                }
                None => Ok(Some(LoadedProfile::absent(path, profile))),
            },
        }
    }
}

/// The selected profile of the config file (or where it would have been).
pub(super) struct LoadedProfile {
    path: PathBuf,
    profile: String,
    /// `None` when the default file or default profile does not exist.
    values: Option<BTreeMap<String, String>>,
}

impl LoadedProfile {
    fn absent(path: PathBuf, profile: String) -> Self {
        Self {
            path,
            profile,
            values: None,
        }
    }

    fn origin(&self) -> ConfigSource {
        ConfigSource::ConfigFile {
            path: self.path.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// Looks values up across the three sources.
pub(super) struct Resolver<'a> {
    pub(super) builder: &'a ClientConfigBuilder,
    pub(super) file: Option<LoadedProfile>,
}

impl Resolver<'_> {
    pub(super) fn lookup(&self, key: Key) -> Option<Found> {
        if let Some(value) = self.builder.explicit.get(&key) {
            return Some(Found {
                value: value.clone(),
                origin: ConfigSource::Builder,
                rank: 0,
            });
        }
        for name in key.env_vars() {
            if let Some(value) = self.builder.env_var(name) {
                return Some(Found {
                    value: value.trim().to_owned(),
                    origin: ConfigSource::Environment((*name).to_owned()),
                    rank: 1,
                });
            }
        }
        let file = self.file.as_ref()?;
        let value = file.values.as_ref()?.get(key.file_key())?;
        if value.is_empty() {
            return None;
        }
        Some(Found {
            value: value.clone(),
            origin: file.origin(),
            rank: 2,
        })
    }

    /// Where the user can set any of `keys`, for "missing" errors.
    pub(super) fn hint(&self, keys: &[Key]) -> String {
        let mut parts = Vec::new();
        if self.builder.env.is_some() {
            let vars: Vec<&str> = keys
                .iter()
                .flat_map(|k| k.env_vars().iter().copied())
                .collect();
            parts.push(format!("set {}", vars.join(" or ")));
        }
        if let Some(file) = &self.file {
            let file_keys: Vec<&str> = keys.iter().map(|k| k.file_key()).collect();
            let text = format!(
                "{} in profile [{}] of {}",
                file_keys.join("/"),
                file.profile,
                file.path.display()
            );
            parts.push(if parts.is_empty() {
                format!("set {text}")
            } else {
                text
            });
        }
        if parts.is_empty() {
            let mut methods: Vec<&str> = keys.iter().map(|k| k.builder_method()).collect();
            methods.dedup();
            format!("call ClientConfigBuilder::{}", methods.join(" or ::"))
        } else {
            parts.join(", or ")
        }
    }

    pub(super) fn warehouse_id(&self) -> Result<String, ConfigError> {
        let id = self.lookup(Key::WarehouseId);
        let path = self.lookup(Key::HttpPath);
        let from_path = |found: &Found| parse_http_path(&found.value, &found.origin);
        let from_id = |found: &Found| {
            validate_warehouse_id(&found.value).map_err(|reason| ConfigError::Invalid {
                field: "warehouse_id",
                value: found.value.clone(),
                origin: found.origin.clone(),
                reason,
            })
        };
        match (id, path) {
            (None, None) => Err(ConfigError::Missing {
                field: "warehouse",
                hint: self.hint(&[Key::WarehouseId, Key::HttpPath]),
            }),
            (Some(id), None) => from_id(&id),
            (None, Some(path)) => from_path(&path),
            (Some(id), Some(path)) if id.rank < path.rank => from_id(&id),
            (Some(id), Some(path)) if path.rank < id.rank => from_path(&path),
            (Some(id), Some(path)) => {
                let a = from_id(&id)?;
                let b = from_path(&path)?;
                if a == b {
                    Ok(a)
                } else {
                    Err(ConfigError::Conflict {
                        field: "warehouse",
                        first: format!("warehouse_id is {a:?} (from {})", id.origin),
                        second: format!(
                            "http_path {:?} names warehouse {b:?} (from {})",
                            path.value, path.origin
                        ),
                    })
                }
            }
        }
    }

    pub(super) fn identifier(&self, key: Key) -> Result<Option<String>, ConfigError> {
        let Some(found) = self.lookup(key) else {
            return Ok(None);
        };
        let value = found.value.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(ConfigError::Invalid {
                field: key.file_key(),
                value: found.value.clone(),
                origin: found.origin,
                reason: "must be a non-empty name without control characters".to_owned(),
            });
        }
        Ok(Some(value.to_owned()))
    }

    pub(super) fn credentials(
        &self,
        explicit: Option<Credentials>,
        builder_auth_type: Option<AuthType>,
    ) -> Result<Credentials, ConfigError> {
        if let Some(credentials) = explicit {
            if let Some(wanted) = builder_auth_type.filter(|t| *t != credentials.auth_type()) {
                return Err(ConfigError::Conflict {
                    field: "auth_type",
                    first: format!("auth_type is {wanted} (from builder)"),
                    second: format!(
                        "the builder's credentials are {} credentials",
                        credentials.auth_type()
                    ),
                });
            }
            return validate_credentials(credentials, &ConfigSource::Builder);
        }
        let auth_type =
            match builder_auth_type {
                Some(t) => Some(t),
                None => match self.lookup(Key::AuthType) {
                    Some(found) => Some(AuthType::from_str(&found.value).map_err(|e| {
                        ConfigError::Invalid {
                            field: "auth_type",
                            value: found.value.clone(),
                            origin: found.origin.clone(),
                            reason: format!("expected pat, oauth-m2m or azure-client-secret ({e})"),
                        }
                    })?),
                    None => None,
                },
            };
        let token = self.lookup(Key::Token);
        let client_id = self.lookup(Key::ClientId);
        let client_secret = self.lookup(Key::ClientSecret);
        let tenant = self.lookup(Key::AzureTenantId);
        let azure_id = self.lookup(Key::AzureClientId);
        let azure_secret = self.lookup(Key::AzureClientSecret);

        match auth_type {
            Some(AuthType::Pat) => {
                let token = self.require(token, Key::Token, "pat", &[])?;
                pat(token)
            }
            Some(AuthType::OAuthM2M) => {
                let id = self.require(client_id, Key::ClientId, "oauth-m2m", &[&client_secret])?;
                let secret = self.require(
                    client_secret,
                    Key::ClientSecret,
                    "oauth-m2m",
                    &[&Some(id.clone())],
                )?;
                m2m(id, secret)
            }
            Some(AuthType::AzureClientSecret) => {
                // With an explicit auth type, the generic client id/secret may stand in.
                let azure_id = azure_id.or(client_id);
                let azure_secret = azure_secret.or(client_secret);
                let present = [&azure_id, &azure_secret];
                let tenant =
                    self.require(tenant, Key::AzureTenantId, "azure-client-secret", &present)?;
                let id = self.require(
                    azure_id,
                    Key::AzureClientId,
                    "azure-client-secret",
                    &[&Some(tenant.clone())],
                )?;
                let secret = self.require(
                    azure_secret,
                    Key::AzureClientSecret,
                    "azure-client-secret",
                    &[&Some(tenant.clone())],
                )?;
                azure(tenant, id, secret)
            }
            None => {
                let mut complete: Vec<(String, Credentials)> = Vec::new();
                if let Some(token) = &token {
                    complete.push((
                        format!("a token (from {})", token.origin),
                        pat(token.clone())?,
                    ));
                }
                if let (Some(id), Some(secret)) = (&client_id, &client_secret) {
                    complete.push((
                        format!(
                            "OAuth M2M client_id/client_secret (from {} / {})",
                            id.origin, secret.origin
                        ),
                        m2m(id.clone(), secret.clone())?,
                    ));
                }
                if let (Some(t), Some(id), Some(secret)) = (&tenant, &azure_id, &azure_secret) {
                    complete.push((
                        format!(
                            "an Azure service principal azure_tenant_id/azure_client_id/azure_client_secret (from {} / {} / {})",
                            t.origin, id.origin, secret.origin
                        ),
                        azure(t.clone(), id.clone(), secret.clone())?,
                    ));
                }
                let mut complete = complete.into_iter();
                match (complete.next(), complete.next()) {
                    (Some((_, credentials)), None) => Ok(credentials),
                    (Some((first, _)), Some((second, _))) => {
                        Err(ConfigError::ConflictingCredentials { first, second })
                    }
                    (None, _) => Err(self.incomplete_credentials(
                        &client_id,
                        &client_secret,
                        &tenant,
                        &azure_id,
                        &azure_secret,
                    )),
                }
            }
        }
    }

    /// `found`, or a "missing" error that names what else was set (`present`) as context.
    fn require(
        &self,
        found: Option<Found>,
        key: Key,
        auth_type: &str,
        present: &[&Option<Found>],
    ) -> Result<Found, ConfigError> {
        if let Some(found) = found {
            return Ok(found);
        }
        let context: Vec<String> = present
            .iter()
            .filter_map(|f| f.as_ref())
            .map(|f| format!("{}", f.origin))
            .collect();
        let context = if context.is_empty() {
            String::new()
        } else {
            format!(
                " (other {auth_type} settings come from {})",
                context.join(", ")
            )
        };
        Err(ConfigError::Missing {
            field: key.file_key(),
            hint: format!(
                "auth type {auth_type} needs it{context}; {}",
                self.hint(&[key])
            ),
        })
    }

    /// Where credentials can be set, for "missing credentials".
    fn credentials_hint(&self) -> String {
        let mut parts = Vec::new();
        if self.builder.env.is_some() {
            parts.push(
                "set DATABRICKS_TOKEN (personal access token), or DATABRICKS_CLIENT_ID and \
                 DATABRICKS_CLIENT_SECRET (OAuth M2M), or ARM_TENANT_ID, ARM_CLIENT_ID and \
                 ARM_CLIENT_SECRET (Azure service principal)"
                    .to_owned(),
            );
        }
        if let Some(file) = &self.file {
            parts.push(format!(
                "{} token, client_id/client_secret or azure_tenant_id/azure_client_id/\
                 azure_client_secret in profile [{}] of {}",
                if parts.is_empty() { "set" } else { "or set" },
                file.profile,
                file.path.display()
            ));
        }
        if parts.is_empty() {
            "call ClientConfigBuilder::token() or ::credentials()".to_owned()
        } else {
            parts.join("; ")
        }
    }

    /// The error when no complete credential set exists: names the half-configured set if any.
    fn incomplete_credentials(
        &self,
        client_id: &Option<Found>,
        client_secret: &Option<Found>,
        tenant: &Option<Found>,
        azure_id: &Option<Found>,
        azure_secret: &Option<Found>,
    ) -> ConfigError {
        let partial = |set: &[(&Option<Found>, Key)]| -> Option<(String, Key)> {
            let present: Vec<String> = set
                .iter()
                .filter_map(|(f, k)| {
                    f.as_ref()
                        .map(|f| format!("{} (from {})", k.file_key(), f.origin))
                })
                .collect();
            let missing = set.iter().find(|(f, _)| f.is_none()).map(|(_, k)| *k)?;
            (!present.is_empty()).then(|| (present.join(" and "), missing))
        };
        let azure_set = [
            (tenant, Key::AzureTenantId),
            (azure_id, Key::AzureClientId),
            (azure_secret, Key::AzureClientSecret),
        ];
        let m2m_set = [
            (client_id, Key::ClientId),
            (client_secret, Key::ClientSecret),
        ];
        let half = if tenant.is_some() || azure_id.is_some() || azure_secret.is_some() {
            partial(&azure_set).map(|p| (p, "an Azure service principal"))
        } else {
            partial(&m2m_set).map(|p| (p, "OAuth M2M"))
        };
        match half {
            Some(((present, missing), what)) => ConfigError::Missing {
                field: missing.file_key(),
                hint: format!(
                    "{present} is set, so {what} was meant; {}",
                    self.hint(&[missing])
                ),
            },
            None => ConfigError::Missing {
                field: "credentials",
                hint: self.credentials_hint(),
            },
        }
    }
}

fn non_empty_secret(found: &Found, field: &'static str) -> Result<SecretString, ConfigError> {
    if found.value.trim().is_empty() {
        return Err(ConfigError::Invalid {
            field,
            value: String::new(),
            origin: found.origin.clone(),
            reason: "must not be empty".to_owned(),
        });
    }
    Ok(SecretString::new(found.value.trim()))
}

fn pat(token: Found) -> Result<Credentials, ConfigError> {
    Ok(Credentials::Token(non_empty_secret(&token, "token")?))
}

fn m2m(id: Found, secret: Found) -> Result<Credentials, ConfigError> {
    let client_id = validate_plain(&id, "client_id")?;
    Ok(Credentials::OAuthM2M {
        client_id,
        client_secret: non_empty_secret(&secret, "client_secret")?,
    })
}

fn azure(tenant: Found, id: Found, secret: Found) -> Result<Credentials, ConfigError> {
    let tenant_id = validate_plain(&tenant, "azure_tenant_id")?;
    validate_tenant(&tenant_id).map_err(|reason| ConfigError::Invalid {
        field: "azure_tenant_id",
        value: tenant_id.clone(),
        origin: tenant.origin.clone(),
        reason,
    })?;
    Ok(Credentials::AzureServicePrincipal {
        tenant_id,
        client_id: validate_plain(&id, "azure_client_id")?,
        client_secret: non_empty_secret(&secret, "azure_client_secret")?,
    })
}

/// A non-secret single-line value.
fn validate_plain(found: &Found, field: &'static str) -> Result<String, ConfigError> {
    let value = found.value.trim();
    if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::Invalid {
            field,
            value: found.value.clone(),
            origin: found.origin.clone(),
            reason: "must be non-empty, without whitespace or control characters".to_owned(),
        });
    }
    Ok(value.to_owned())
}

fn validate_tenant(tenant: &str) -> Result<(), String> {
    if tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        Ok(())
    } else {
        Err("expected a tenant id (GUID) or domain name".to_owned())
    }
}

/// Checks credentials given to the builder.
fn validate_credentials(
    credentials: Credentials,
    origin: &ConfigSource,
) -> Result<Credentials, ConfigError> {
    let found = |value: &str| Found {
        value: value.to_owned(),
        origin: origin.clone(),
        rank: 0,
    };
    match &credentials {
        Credentials::Token(token) => {
            pat(found(token.expose()))?;
        }
        Credentials::OAuthM2M {
            client_id,
            client_secret,
        } => {
            m2m(found(client_id), found(client_secret.expose()))?;
        }
        Credentials::AzureServicePrincipal {
            tenant_id,
            client_id,
            client_secret,
        } => {
            azure(
                found(tenant_id),
                found(client_id),
                found(client_secret.expose()),
            )?;
        }
    }
    Ok(credentials)
}

/// Parses a workspace host (or an authority URL): adds `https://` when there is no scheme,
/// accepts `http`/`https` only, and rejects paths, queries, fragments and user info.
pub(super) fn parse_host(
    raw: &str,
    origin: &ConfigSource,
    field: &'static str,
) -> Result<url::Url, ConfigError> {
    let invalid = |value: &str, reason: String| ConfigError::Invalid {
        field,
        value: value.to_owned(),
        origin: origin.clone(),
        reason,
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid(raw, "must not be empty".to_owned()));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| {
        // Never echo something that may carry a password.
        let shown = if trimmed.contains('@') {
            "<redacted>"
        } else {
            trimmed
        };
        invalid(shown, format!("not a valid URL ({e})"))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "<redacted>",
            "must not contain a user name or password; use a token or OAuth credentials".to_owned(),
        ));
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(
            trimmed,
            format!(
                "scheme {:?} is not supported: use https:// (or http:// for local testing)",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(trimmed, "has no host name".to_owned()));
    }
    if url.path() != "/" {
        return Err(invalid(
            trimmed,
            format!(
                "must not have a path (found {:?}); give the warehouse with http_path or warehouse_id",
                url.path()
            ),
        ));
    }
    if url.query().is_some() {
        return Err(invalid(
            trimmed,
            "must not have a query (`?...`)".to_owned(),
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid(
            trimmed,
            "must not have a fragment (`#...`)".to_owned(),
        ));
    }
    Ok(url)
}

/// A warehouse id: non-empty ASCII letters, digits, `-` and `_` (ids are hex; cluster-style ids
/// contain dashes).
fn validate_warehouse_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(
            "expected only letters, digits, `-` and `_` (e.g. 8cfbc99c31463743)".to_owned(),
        );
    }
    Ok(id.to_owned())
}

/// Extracts the warehouse id from `/sql/1.0/warehouses/<id>`, `/sql/1.0/endpoints/<id>` or
/// `/sql/protocolv1/o/<org>/<id>`.
fn parse_http_path(raw: &str, origin: &ConfigSource) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: "http_path",
        value: raw.to_owned(),
        origin: origin.clone(),
        reason,
    };
    let expected =
        "expected /sql/1.0/warehouses/<warehouse id> (or /sql/protocolv1/o/<org id>/<id>)";
    let trimmed = raw.trim().trim_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    let id = match segments.as_slice() {
        ["sql", "1.0", "warehouses" | "endpoints", id] => *id,
        ["sql", "protocolv1", "o", org, id] if !org.is_empty() => *id,
        _ => return Err(invalid(expected.to_owned())),
    };
    validate_warehouse_id(id).map_err(|reason| {
        invalid(format!(
            "its last segment {id:?} is not a warehouse id ({reason}); {expected}"
        ))
    })
}

/// `dbfed/<version>`, plus the user's product token.
pub(super) fn user_agent(product: Option<&str>) -> Result<String, ConfigError> {
    let base = concat!("dbfed/", env!("CARGO_PKG_VERSION"));
    let Some(product) = product else {
        return Ok(base.to_owned());
    };
    let product = product.trim();
    if product.is_empty() || !product.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(ConfigError::Invalid {
            field: "user_agent",
            value: product.to_owned(),
            origin: ConfigSource::Builder,
            reason: "expected a product token such as `myapp/1.2` (printable ASCII)".to_owned(),
        });
    }
    Ok(format!("{base} {product}"))
}

/// Expands a leading `~` or `~/` with `home`.
pub(super) fn expand_tilde(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') || rest.starts_with('\\') => {
            home.join(&rest[1..])
        }
        _ => PathBuf::from(path),
    }
}
