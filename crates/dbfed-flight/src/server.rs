//! The server builder and the handle of a running server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::{Auth, Authenticator};
use crate::error::FlightSqlError;
use crate::service::{ActionFilter, FlightSqlServiceImpl, ServiceConfig};
use crate::session::SessionProvider;
use crate::ticket::Signer;

/// TLS material, PEM-encoded.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key (never printed).
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[REDACTED]")
            .field(
                "client_ca_pem",
                &self.client_ca_pem.as_ref().map(|c| c.len()),
            )
            .finish()
    }
}

/// The entry point: `FlightSqlServer::builder(sessions)`.
#[derive(Debug, Clone, Copy)]
pub struct FlightSqlServer;

impl FlightSqlServer {
    /// A builder serving queries from the contexts `sessions` provides.
    pub fn builder(sessions: Arc<dyn SessionProvider>) -> FlightSqlServerBuilder {
        FlightSqlServerBuilder {
            sessions,
            auth: Auth::None,
            tls: None,
            ticket_secret: None,
            ticket_ttl: Duration::from_secs(3600),
            handle_ttl: Duration::from_secs(24 * 3600),
            token_ttl: Duration::from_secs(12 * 3600),
            allow_writes: false,
            max_streams: 1024,
            max_concurrent_streams_per_connection: 256,
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Configures and starts a Flight SQL server. Every setting has a documented default.
pub struct FlightSqlServerBuilder {
    sessions: Arc<dyn SessionProvider>,
    auth: Auth,
    tls: Option<TlsConfig>,
    ticket_secret: Option<Vec<u8>>,
    ticket_ttl: Duration,
    handle_ttl: Duration,
    token_ttl: Duration,
    allow_writes: bool,
    max_streams: usize,
    max_concurrent_streams_per_connection: u32,
    max_message_bytes: usize,
}

impl fmt::Debug for FlightSqlServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightSqlServerBuilder")
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field(
                "ticket_secret",
                &self.ticket_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("ticket_ttl", &self.ticket_ttl)
            .field("handle_ttl", &self.handle_ttl)
            .field("token_ttl", &self.token_ttl)
            .field("allow_writes", &self.allow_writes)
            .field("max_streams", &self.max_streams)
            .finish()
    }
}

impl FlightSqlServerBuilder {
    /// How callers authenticate (default [`Auth::None`]).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Serve TLS (`grpc+tls://`), optionally requiring client certificates (default: plain
    /// gRPC).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The secret that signs tickets, prepared statement handles and bearer tokens (default:
    /// 32 random bytes per process). Replicas behind one load balancer must share it.
    pub fn ticket_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.ticket_secret = Some(secret.into());
        self
    }

    /// How long a DoGet ticket stays valid after GetFlightInfo (default 1 hour).
    pub fn ticket_ttl(mut self, ttl: Duration) -> Self {
        self.ticket_ttl = ttl;
        self
    }

    /// How long a prepared statement handle stays valid (default 24 hours).
    pub fn handle_ttl(mut self, ttl: Duration) -> Self {
        self.handle_ttl = ttl;
        self
    }

    /// How long a bearer token from the Basic handshake stays valid (default 12 hours).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Allow writes to the server's own in-memory tables (default `false`: every DML, DDL and
    /// COPY fails with `PERMISSION_DENIED`).
    ///
    /// Writes never reach the warehouse: they run in the server's local DataFusion context.
    /// Enabled, `CREATE TABLE`/`CREATE VIEW`/`DROP` change the session's in-memory catalog and
    /// `INSERT`/`UPDATE`/`DELETE` may target in-memory tables only; `CREATE EXTERNAL TABLE`,
    /// `COPY ... TO`, DML into file-backed or Databricks tables, and session statements (`SET`,
    /// transactions) stay refused with `PERMISSION_DENIED` naming the statement.
    pub fn allow_writes(mut self, allow: bool) -> Self {
        self.allow_writes = allow;
        self
    }

    /// Most result streams (DoGet of queries) open at once across all clients (default 1024,
    /// at least 1); more fail with `RESOURCE_EXHAUSTED`.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n.max(1);
        self
    }

    /// HTTP/2 streams one connection may open at once (default 256).
    pub fn max_concurrent_streams_per_connection(mut self, n: u32) -> Self {
        self.max_concurrent_streams_per_connection = n.max(1);
        self
    }

    /// Largest gRPC message accepted (default 64 MiB).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves on the current tokio runtime until the
    /// handle is shut down or dropped.
    pub async fn serve(self, addr: SocketAddr) -> Result<FlightServerHandle, FlightSqlError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| FlightSqlError::Io {
                addr: addr.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| FlightSqlError::Io {
            addr: addr.to_string(),
            source,
        })?;
        let secret = match self.ticket_secret {
            Some(secret) if secret.len() < 16 => {
                return Err(FlightSqlError::Config(
                    "ticket_secret must be at least 16 bytes".into(),
                ));
            }
            Some(secret) => secret,
            None => {
                let mut secret = vec![0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                secret
            }
        };
        let signer = Signer::new(secret);
        let authenticator = Authenticator::new(self.auth, signer.clone(), self.token_ttl);
        let service = FlightSqlServiceImpl::new(
            self.sessions,
            authenticator,
            signer,
            ServiceConfig {
                ticket_ttl: self.ticket_ttl,
                handle_ttl: self.handle_ttl,
                allow_writes: self.allow_writes,
                max_streams: self.max_streams,
            },
        )?;
        let mut server = Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams_per_connection)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        let tls = self.tls.is_some();
        if let Some(config) = self.tls {
            let mut tls_config = ServerTlsConfig::new()
                .identity(Identity::from_pem(&config.cert_pem, &config.key_pem));
            if let Some(ca) = &config.client_ca_pem {
                tls_config = tls_config.client_ca_root(Certificate::from_pem(ca));
            }
            server = server.tls_config(tls_config)?;
        }
        let svc = FlightServiceServer::new(ActionFilter(service))
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = server.add_service(svc);
        let task = tokio::spawn(async move {
            let result = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "Flight SQL server stopped with an error");
            }
            result.map_err(FlightSqlError::from)
        });
        tracing::info!(%local_addr, tls, "Flight SQL server listening");
        Ok(FlightServerHandle {
            local_addr,
            tls,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running server. Dropping it stops the server.
pub struct FlightServerHandle {
    local_addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), FlightSqlError>>>,
}

impl fmt::Debug for FlightServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightServerHandle")
            .field("url", &self.url())
            .finish()
    }
}

impl FlightServerHandle {
    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `grpc://host:port`, or `grpc+tls://host:port` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting connections, lets running calls finish for up to 5 seconds, then
    /// stops the rest.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for FlightServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
