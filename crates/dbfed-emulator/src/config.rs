//! The emulator's builder and its (documented) defaults.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (token, client secret): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the server's TLS certificate comes from.
#[derive(Clone, Debug, Default)]
pub(crate) enum TlsSource {
    /// Plain HTTP.
    #[default]
    None,
    /// A fresh self-signed certificate for `localhost` and `127.0.0.1` (generated with rcgen).
    SelfSigned,
    /// PEM files.
    Files { cert: PathBuf, key: PathBuf },
}

/// Configures and starts an emulator. Obtain one with [`crate::Emulator::builder`].
///
/// Every setting has a default, listed on its method. The builder is consumed by
/// [`EmulatorBuilder::start`] (async, on the caller's runtime) or [`EmulatorBuilder::spawn`]
/// (on a dedicated runtime thread).
#[derive(Clone)]
pub struct EmulatorBuilder {
    pub(crate) tpch_scale: f64,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) tokens: Vec<Secret>,
    pub(crate) oauth_clients: HashMap<String, Secret>,
    pub(crate) token_lifetime: Duration,
    pub(crate) azure_tenant: Option<String>,
    pub(crate) grants: Vec<(Secret, Vec<String>)>,
    pub(crate) warehouse_denied: Vec<Secret>,
    pub(crate) warehouse_id: Option<String>,
    pub(crate) statement_latency: Duration,
    pub(crate) chunk_latency: Duration,
    pub(crate) max_concurrent_statements: usize,
    pub(crate) max_queued_statements: usize,
    pub(crate) chunk_rows: usize,
    pub(crate) chunk_bytes: usize,
    pub(crate) link_ttl: Duration,
    pub(crate) link_http_headers: bool,
    pub(crate) lz4_frame_per_message: bool,
    pub(crate) result_ttl: Duration,
    pub(crate) max_statement_history: usize,
    pub(crate) max_result_bytes: u64,
    pub(crate) retry_after: u32,
    pub(crate) tls: TlsSource,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            tpch_scale: 0.01,
            data_dir: None,
            tokens: Vec::new(),
            oauth_clients: HashMap::new(),
            token_lifetime: Duration::from_secs(3600),
            azure_tenant: None,
            grants: Vec::new(),
            warehouse_denied: Vec::new(),
            warehouse_id: None,
            statement_latency: Duration::ZERO,
            chunk_latency: Duration::ZERO,
            max_concurrent_statements: 10,
            max_queued_statements: 1000,
            chunk_rows: 100_000,
            chunk_bytes: 16 * 1024 * 1024,
            link_ttl: Duration::from_secs(15 * 60),
            link_http_headers: false,
            lz4_frame_per_message: true,
            result_ttl: Duration::from_secs(3600),
            max_statement_history: 10_000,
            max_result_bytes: 4 * 1024 * 1024 * 1024,
            retry_after: 1,
            tls: TlsSource::None,
        }
    }
}

impl fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorBuilder")
            .field("tpch_scale", &self.tpch_scale)
            .field("data_dir", &self.data_dir)
            .field("tokens", &self.tokens.len())
            .field(
                "oauth_clients",
                &self.oauth_clients.keys().collect::<Vec<_>>(),
            )
            .field("token_lifetime", &self.token_lifetime)
            .field("azure_tenant", &self.azure_tenant)
            .field("grants", &self.grants.len())
            .field("warehouse_denied", &self.warehouse_denied.len())
            .field("warehouse_id", &self.warehouse_id)
            .field("statement_latency", &self.statement_latency)
            .field("chunk_latency", &self.chunk_latency)
            .field("max_concurrent_statements", &self.max_concurrent_statements)
            .field("max_queued_statements", &self.max_queued_statements)
            .field("chunk_rows", &self.chunk_rows)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("link_ttl", &self.link_ttl)
            .field("link_http_headers", &self.link_http_headers)
            .field("lz4_frame_per_message", &self.lz4_frame_per_message)
            .field("result_ttl", &self.result_ttl)
            .field("max_statement_history", &self.max_statement_history)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("tls", &self.tls)
            .finish()
    }
}

impl EmulatorBuilder {
    /// TPC-H scale factor of the built-in `samples.tpch` (default `0.01`, about 60 000 lineitems).
    pub fn tpch_scale(mut self, scale: f64) -> Self {
        self.tpch_scale = scale;
        self
    }

    /// Serve every `DIR/<catalog>/<schema>/<table>.{parquet,csv}` as `catalog.schema.table`
    /// (default: none).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Accept this bearer token (repeatable). Default: no tokens configured, and then **any
    /// non-empty bearer token is accepted**; once one is configured, only configured tokens and
    /// tokens issued by the emulator's OAuth endpoints are.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(Secret(token.into()));
        self
    }

    /// Register an OAuth client (repeatable) for the M2M flow (`/oidc/v1/token`) and, with
    /// [`EmulatorBuilder::azure_tenant`], the Azure-AD-style endpoint. Default: none (token
    /// endpoints answer `invalid_client`).
    pub fn oauth_client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.oauth_clients
            .insert(client_id.into(), Secret(secret.into()));
        self
    }

    /// Lifetime of tokens issued by the OAuth endpoints (`expires_in`; default 1 hour). Expired
    /// tokens are refused with 403, so tests can see clients refresh.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Serve an Azure-AD-style token endpoint `POST /{tenant}/oauth2/v2.0/token` (and the v1
    /// `/{tenant}/oauth2/token`) for this tenant on the same server (default: off).
    pub fn azure_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.azure_tenant = Some(tenant.into());
        self
    }

    /// Restrict what a token (a static token, or the client id of an OAuth client) may read to
    /// these `catalog` / `catalog.schema` entries (default: everything for every token).
    pub fn grant<I, S>(mut self, token_or_client_id: impl Into<String>, entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grants.push((
            Secret(token_or_client_id.into()),
            entries.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Deny this token (a static token, or the client id of an OAuth client) the use of the
    /// warehouse, as a workspace does for an identity without CAN USE on it: it authenticates,
    /// but executing statements and opening sessions answer 403 `PERMISSION_DENIED` ("You do not
    /// have permission to use the SQL warehouse ..."). Default: no token is denied.
    pub fn deny_warehouse(mut self, token_or_client_id: impl Into<String>) -> Self {
        self.warehouse_denied
            .push(Secret(token_or_client_id.into()));
        self
    }

    /// Pin the warehouse id: requests naming another warehouse get 404 (default: any id is
    /// accepted).
    pub fn warehouse_id(mut self, id: impl Into<String>) -> Self {
        self.warehouse_id = Some(id.into());
        self
    }

    /// Extra time every statement spends RUNNING before its query starts (default: none).
    pub fn statement_latency(mut self, latency: Duration) -> Self {
        self.statement_latency = latency;
        self
    }

    /// Extra time before every external-link download answers (default: none).
    pub fn chunk_latency(mut self, latency: Duration) -> Self {
        self.chunk_latency = latency;
        self
    }

    /// Statements RUNNING at once (default 10, at least 1); more wait PENDING in the queue.
    pub fn max_concurrent_statements(mut self, n: usize) -> Self {
        self.max_concurrent_statements = n.max(1);
        self
    }

    /// Statements that may wait PENDING for a slot (default 1000); past that, execute answers
    /// 429 with `Retry-After`.
    pub fn max_queued_statements(mut self, n: usize) -> Self {
        self.max_queued_statements = n;
        self
    }

    /// Maximum rows per result chunk (default 100 000, at least 1).
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    /// Approximate maximum (uncompressed Arrow) bytes per result chunk (default 16 MiB; a chunk
    /// always holds at least one row).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Lifetime of external links (default 15 minutes, like presigned URLs).
    pub fn link_ttl(mut self, ttl: Duration) -> Self {
        self.link_ttl = ttl;
        self
    }

    /// Put an `x-emulator-link-header` in each link's `http_headers` and refuse (403) downloads
    /// that do not echo it (default: off, links carry no headers).
    pub fn link_http_headers(mut self, required: bool) -> Self {
        self.link_http_headers = required;
        self
    }

    /// With `LZ4_FRAME`, compress each Arrow IPC message as its own LZ4 frame, as 2025-era
    /// warehouses do (default `true`); `false` writes one frame per chunk.
    pub fn lz4_frame_per_message(mut self, per_message: bool) -> Self {
        self.lz4_frame_per_message = per_message;
        self
    }

    /// How long results stay fetchable after a statement finishes (default 1 hour, like
    /// Databricks); later the statement reads as CLOSED.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// How many statements the emulator remembers (default 10 000). Past that, the oldest
    /// finished statements are forgotten with their results: polls then answer 404, and they
    /// leave [`crate::EmulatorHandle::statements`]. Unfinished statements are always kept. This
    /// bounds the memory of long benchmark runs.
    pub fn max_statement_history(mut self, n: usize) -> Self {
        self.max_statement_history = n;
        self
    }

    /// Memory the kept results may use (encoded chunks; default 4 GiB). When a new result
    /// pushes the total past it, the results of the oldest statements are dropped early (they
    /// read as CLOSED, as after [`EmulatorBuilder::result_ttl`]); the newest result is always
    /// kept. Without this bound, repeated large results would stay in memory for `result_ttl`.
    pub fn max_result_bytes(mut self, bytes: u64) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// `Retry-After` seconds sent with the queue-full 429 (default 1).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = seconds;
        self
    }

    /// Serve HTTPS with a fresh self-signed certificate for `localhost` / `127.0.0.1` (its PEM is
    /// [`crate::EmulatorHandle::tls_certificate_pem`]). Default: plain HTTP.
    pub fn tls_self_signed(mut self) -> Self {
        self.tls = TlsSource::SelfSigned;
        self
    }

    /// Serve HTTPS with a PEM certificate chain and private key. Default: plain HTTP.
    pub fn tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = TlsSource::Files {
            cert: cert.into(),
            key: key.into(),
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let b = EmulatorBuilder::default()
            .token("dapi-very-secret")
            .oauth_client("client", "client-secret-value")
            .grant("dapi-very-secret", ["samples"]);
        let text = format!("{b:?}");
        assert!(!text.contains("dapi-very-secret"), "{text}");
        assert!(!text.contains("client-secret-value"), "{text}");
        assert!(text.contains("client"));
    }

    #[test]
    fn limits_are_clamped() {
        let b = EmulatorBuilder::default()
            .chunk_rows(0)
            .max_concurrent_statements(0);
        assert_eq!(b.chunk_rows, 1);
        assert_eq!(b.max_concurrent_statements, 1);
    }
}
