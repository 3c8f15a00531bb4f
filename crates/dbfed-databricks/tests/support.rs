//! Shared test harness: an axum server on 127.0.0.1:0 in a background runtime thread.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, ClientBuilder, RetryPolicy};

/// The token the test clients send; tests assert it never reaches link downloads.
pub const TOKEN: &str = "dapi-test-token-0123456789";

/// A loopback HTTP server; it stops (and its thread is joined) when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `app` on an ephemeral loopback port.
    pub fn start(app: axum::Router) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("test runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind loopback");
                    addr_tx
                        .send(listener.local_addr().expect("local addr"))
                        .expect("report address");
                    // Dropping the serve future on shutdown drops every connection task with
                    // the runtime: no waiting for keep-alive connections.
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("serve"),
                        _ = shutdown_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn server thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server address");
        Self {
            addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client config pointing at `server`.
pub fn config(server: &TestServer, warehouse_id: &str) -> ClientConfig {
    ClientConfig::builder()
        .host(server.base_url())
        .warehouse_id(warehouse_id)
        .token(TOKEN)
        .build()
        .expect("test config")
}

/// A client builder with fast retries and polls, suitable for tests.
pub fn client_builder(server: &TestServer, warehouse_id: &str) -> ClientBuilder {
    Client::builder(config(server, warehouse_id))
        .retry_policy(fast_retries())
        .poll_interval(Duration::from_millis(1), Duration::from_millis(10))
        .request_timeout(Duration::from_secs(30))
        .download_timeout(Duration::from_secs(30))
}

/// Retries with ~10 ms delays and `Retry-After` clamped to 50 ms.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(5)
        .base_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(40))
        .retry_after_bounds(Duration::from_millis(1), Duration::from_millis(50))
        .max_elapsed(Duration::from_secs(30))
}
