//! Configuration errors and the origin of each configured value.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value was read from; every [`ConfigError`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Set on the [`ClientConfigBuilder`](super::ClientConfigBuilder).
    Builder,
    /// An environment variable (its name).
    Environment(String),
    /// A profile of a config file such as `~/.databrickscfg`.
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The profile (section) name.
        profile: String,
    },
    /// A built-in default.
    Default,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builder => f.write_str("builder"),
            Self::Environment(name) => write!(f, "environment variable {name}"),
            Self::ConfigFile { path, profile } => {
                write!(f, "{} [profile {profile}]", path.display())
            }
            Self::Default => f.write_str("default"),
        }
    }
}

/// A configuration that cannot be used. The message names the field and where it came from;
/// it never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required value is not set anywhere (`hint` says where it may be set).
    #[error("missing {field}: {hint}")]
    Missing {
        /// The missing field, e.g. `host`, `warehouse`, `client_secret`.
        field: &'static str,
        /// Where the value can be set.
        hint: String,
    },
    /// A value is malformed.
    #[error("invalid {field} {value:?} (from {origin}): {reason}")]
    Invalid {
        /// The field, e.g. `host`, `http_path`.
        field: &'static str,
        /// The offending value (never a secret; replaced by a placeholder for secret fields).
        value: String,
        /// Where it was read from.
        origin: ConfigSource,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// Two values that must agree do not (for example `warehouse_id` and `http_path`).
    #[error("conflicting {field}: {first} but {second}")]
    Conflict {
        /// The field, e.g. `warehouse`.
        field: &'static str,
        /// The first value and its origin.
        first: String,
        /// The second value and its origin.
        second: String,
    },
    /// More than one complete set of credentials and no `auth_type` to choose between them.
    #[error(
        "conflicting credentials: {first} and {second} are both configured; set auth_type \
         (DATABRICKS_AUTH_TYPE, `auth_type` in the profile, or ClientConfigBuilder::auth_type) \
         to pat, oauth-m2m or azure-client-secret, or remove one of them"
    )]
    ConflictingCredentials {
        /// The first credential set and where it came from.
        first: String,
        /// The second credential set and where it came from.
        second: String,
    },
    /// The named profile is not in the config file.
    #[error(
        "profile [{profile}] (named by {origin}) not found in {}: {available}",
        path.display()
    )]
    ProfileNotFound {
        /// The requested profile.
        profile: String,
        /// The config file that was searched.
        path: PathBuf,
        /// Who named the profile.
        origin: ConfigSource,
        /// The profiles the file does have (or why there are none).
        available: String,
    },
    /// An explicitly named config file does not exist.
    #[error("config file {} (named by {origin}) does not exist", path.display())]
    ConfigFileNotFound {
        /// The missing file.
        path: PathBuf,
        /// Who named it.
        origin: ConfigSource,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    ConfigFileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The config file is not valid INI.
    #[error("syntax error in config file {}, line {line}: {message}", path.display())]
    ConfigFileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}
