//! The server: router, start/shutdown, handles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api;
use crate::auth;
use crate::config::EmulatorBuilder;
use crate::engine::{Engine, EngineConfig};
use crate::error::EmulatorError;
use crate::faults::Faults;
use crate::records::{RequestRecord, StatementRecord};
use crate::state::{QueryRuntime, Shared};
use crate::tls::{self, TlsListener};

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/2.0/sql/statements", post(api::execute_statement))
        .route("/api/2.0/sql/statements/", post(api::execute_statement))
        .route(
            "/api/2.0/sql/statements/{id}",
            get(api::get_statement).delete(api::close_statement),
        )
        .route(
            "/api/2.0/sql/statements/{id}/cancel",
            post(api::cancel_statement),
        )
        .route(
            "/api/2.0/sql/statements/{id}/result/chunks/{chunk}",
            get(api::get_chunk),
        )
        .route("/api/2.0/sql/sessions", post(api::create_session))
        .route("/api/2.0/sql/sessions/", post(api::create_session))
        .route("/api/2.0/sql/sessions/{id}", delete(api::delete_session))
        .route("/api/{*rest}", axum::routing::any(api::api_not_found))
        .route_layer(from_fn_with_state(shared.clone(), api::require_auth));
    Router::new()
        .merge(api)
        .route(
            "/oidc/.well-known/oauth-authorization-server",
            get(auth::oidc_discovery),
        )
        .route("/oidc/v1/token", post(auth::oidc_token))
        .route("/{tenant}/oauth2/v2.0/token", post(auth::azure_token))
        .route("/{tenant}/oauth2/token", post(auth::azure_token_v1))
        .route("/aad/auth", get(auth::aad_auth))
        .route(
            "/.well-known/databricks-config",
            get(auth::databricks_config),
        )
        .route("/_emulator/statements", get(api::list_statements))
        .route("/_emulator/requests", get(api::list_requests))
        .route("/_emulator/results/{id}/{chunk}", get(api::download))
        .layer(from_fn_with_state(shared.clone(), api::inject_faults))
        .layer(from_fn_with_state(shared.clone(), api::record_requests))
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .with_state(shared)
}

impl EmulatorBuilder {
    /// Starts the server on `addr` (e.g. `"127.0.0.1:0"`) on the current tokio runtime.
    ///
    /// Generates `samples.tpch` and loads the data directory first, so the call can take a moment
    /// at large scale factors.
    pub async fn start(self, addr: &str) -> Result<EmulatorHandle, EmulatorError> {
        let tls = tls::load(&self.tls)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let engine = Engine::new(EngineConfig {
            tpch_scale: self.tpch_scale,
            data_dir: self.data_dir.clone(),
        })
        .await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let query_runtime = QueryRuntime::new().map_err(EmulatorError::Runtime)?;
        let shared = Arc::new(Shared::new(self, engine, scheme, local_addr, query_runtime));
        let app = router(shared.clone());
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let signal = async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        let (task, cert_pem) = match tls {
            Some(material) => {
                let listener = TlsListener::new(listener, material.config).map_err(|source| {
                    EmulatorError::Bind {
                        addr: addr.to_owned(),
                        source,
                    }
                })?;
                let task = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                    {
                        tracing::warn!("emulator server stopped: {e}");
                    }
                });
                (task, Some(material.cert_pem))
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let task = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                    {
                        tracing::warn!("emulator server stopped: {e}");
                    }
                });
                (task, None)
            }
        };
        let url = format!("{scheme}://{local_addr}");
        tracing::info!("emulator listening on {url}");
        Ok(EmulatorHandle {
            shared,
            url,
            local_addr,
            cert_pem,
            shutdown_tx,
            task: Some(task),
        })
    }

    /// Starts the server on its own runtime thread, for synchronous callers (tests, benchmarks).
    /// Dropping the returned [`BackgroundEmulator`] stops it.
    pub fn spawn(self, addr: &str) -> Result<BackgroundEmulator, EmulatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dbfed-emulator")
            .enable_all()
            .build()
            .map_err(EmulatorError::Runtime)?;
        let addr = addr.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dbfed-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match self.start(&addr).await {
                        Ok(handle) => {
                            let view = HandleView {
                                shared: handle.shared.clone(),
                                url: handle.url.clone(),
                                local_addr: handle.local_addr,
                                cert_pem: handle.cert_pem.clone(),
                            };
                            if ready_tx.send(Ok(view)).is_ok() {
                                let _ = stop_rx.await;
                            }
                            handle.shutdown().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(EmulatorError::Runtime)?;
        match ready_rx.recv() {
            Ok(Ok(view)) => Ok(BackgroundEmulator {
                view,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(EmulatorError::ThreadExited)
            }
        }
    }
}

/// A running emulator. Dropping it stops the server (without waiting); [`EmulatorHandle::shutdown`]
/// stops it and waits.
#[derive(Debug)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    url: String,
    local_addr: SocketAddr,
    cert_pem: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// Base URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every statement so far, oldest first (also `GET /_emulator/statements`).
    pub fn statements(&self) -> Vec<StatementRecord> {
        self.shared.records()
    }

    /// The newest requests answered (at most 10 000; also `GET /_emulator/requests`).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().iter().cloned().collect()
    }

    /// Runtime fault injection.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// PEM of the server certificate when serving HTTPS (to trust it in clients).
    pub fn tls_certificate_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Stops accepting requests, cancels running statements and waits (at most 5 s) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.cancel_all();
        self.shutdown_tx.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shared.cancel_all();
        self.shutdown_tx.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug)]
struct HandleView {
    shared: Arc<Shared>,
    url: String,
    local_addr: SocketAddr,
    cert_pem: Option<String>,
}

/// An emulator running on its own runtime thread (see [`EmulatorBuilder::spawn`]); stops when
/// dropped.
#[derive(Debug)]
pub struct BackgroundEmulator {
    view: HandleView,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundEmulator {
    /// Base URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.view.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.view.local_addr
    }

    /// Every statement so far, oldest first.
    pub fn statements(&self) -> Vec<StatementRecord> {
        self.view.shared.records()
    }

    /// The newest requests answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.view.shared.requests.lock().iter().cloned().collect()
    }

    /// Runtime fault injection.
    pub fn faults(&self) -> &Faults {
        &self.view.shared.faults
    }

    /// PEM of the server certificate when serving HTTPS.
    pub fn tls_certificate_pem(&self) -> Option<&str> {
        self.view.cert_pem.as_deref()
    }
}

impl Drop for BackgroundEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatementState;

    /// A runtime dropped while statements run or wait in the queue must release everything:
    /// the query tasks (on the emulator's own query runtime) are aborted, not detached, so they
    /// neither keep running nor keep the shared state (tables, query threads) alive.
    #[test]
    fn a_dropped_runtime_leaks_no_query_task() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (handle, weak) = runtime.block_on(async {
            let handle = crate::Emulator::builder()
                .tpch_scale(0.001)
                .max_concurrent_statements(1)
                .statement_latency(Duration::from_secs(600))
                .start("127.0.0.1:0")
                .await
                .expect("the emulator starts");
            let client = reqwest::Client::new();
            for sql in ["SELECT 1", "SELECT 2"] {
                let response = client
                    .post(format!("{}/api/2.0/sql/statements", handle.url()))
                    .bearer_auth("any")
                    .json(&serde_json::json!({
                        "statement": sql, "warehouse_id": "w", "wait_timeout": "0s"
                    }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 200);
            }
            // Hang guard only: the first statement holds the slot, the second is queued.
            for _ in 0..1200 {
                let states: Vec<StatementState> =
                    handle.statements().iter().map(|r| r.state).collect();
                if states == [StatementState::Running, StatementState::Pending] {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let weak = Arc::downgrade(&handle.shared);
            (handle, weak)
        });
        drop(runtime);
        drop(handle);
        // Hang guard only (the release is asynchronous on the query runtime).
        for _ in 0..400 {
            if weak.strong_count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the emulator's shared state is still alive ({} references): query tasks leaked",
            weak.strong_count()
        );
    }
}
