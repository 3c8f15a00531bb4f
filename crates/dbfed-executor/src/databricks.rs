//! The [`Driver`] for Databricks SQL Warehouses, over [`dbfed_databricks::Client`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dbfed_databricks::{Client, Error, Param, Session, StatementRequest, StatementState};

use crate::driver::{
    Backoff, CancelToken, Connection, Driver, Execution, PendingStatement, Submitted,
};
use crate::error::DriverError;

/// Opens Databricks SQL sessions with a catalog, schema and session confs.
///
/// Statements are submitted with `wait_timeout = 0s` and polled (every `poll_interval.0`,
/// growing by half up to `poll_interval.1`), so a cancellation reaches the warehouse within one
/// poll interval.
#[derive(Debug, Clone)]
pub struct DatabricksDriver {
    client: Client,
    catalog: Option<String>,
    schema: Option<String>,
    session_confs: BTreeMap<String, String>,
    poll_interval: (Duration, Duration),
    statement_timeout: Option<Duration>,
}

impl DatabricksDriver {
    /// A driver whose sessions use the client config's catalog, schema and session confs.
    /// Poll interval (thread-per-query mode): 1 ms growing by a quarter each poll to 500 ms, and
    /// restarting from 1 ms when the statement leaves the warehouse's queue.
    pub fn new(client: Client) -> Self {
        let config = client.config();
        Self {
            catalog: config.catalog().map(str::to_owned),
            schema: config.schema().map(str::to_owned),
            session_confs: config.session_confs().clone(),
            poll_interval: (Duration::from_millis(1), Duration::from_millis(500)),
            statement_timeout: None,
            client,
        }
    }

    /// Sets the sessions' default catalog.
    pub fn catalog(mut self, catalog: impl Into<String>) -> Self {
        self.catalog = Some(catalog.into());
        self
    }

    /// Sets the sessions' default schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Adds a session conf (e.g. `ansi_mode`, `timezone`).
    pub fn session_conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.session_confs.insert(key.into(), value.into());
        self
    }

    /// Sets the statement poll interval of thread-per-query mode: first wait `min`, growing by
    /// a quarter up to `max` and restarting when the statement starts executing (default 1 ms
    /// to 500 ms). Submit-and-poll mode uses `ExecutorBuilder::poll_interval`.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_interval = (min.max(Duration::from_millis(1)), max.max(min));
        self
    }

    /// Cancels statements still running after `timeout` and fails them with
    /// [`dbfed_databricks::Error::Timeout`]. Default: none.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Driver for DatabricksDriver {
    fn retries(&self) -> u64 {
        self.client.retries()
    }

    fn bytes_received(&self) -> u64 {
        self.client.bytes_received()
    }

    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        let session = self
            .client
            .create_session(
                self.catalog.as_deref(),
                self.schema.as_deref(),
                &self.session_confs,
            )
            .map_err(DriverError::broken)?;
        Ok(Box::new(DatabricksConnection {
            client: self.client.clone(),
            session,
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
            session_confs: self.session_confs.clone(),
            poll_interval: self.poll_interval,
            statement_timeout: self.statement_timeout,
        }))
    }
}

/// One Databricks SQL session; see [`DatabricksDriver`].
#[derive(Debug)]
pub struct DatabricksConnection {
    client: Client,
    session: Session,
    /// What a replacement session is opened with.
    catalog: Option<String>,
    schema: Option<String>,
    session_confs: BTreeMap<String, String>,
    poll_interval: (Duration, Duration),
    statement_timeout: Option<Duration>,
}

impl DatabricksConnection {
    /// The session id.
    pub fn session_id(&self) -> &str {
        self.session.id()
    }

    /// Submits `sql` in this connection's session with `wait_timeout = 0s`.
    ///
    /// A warehouse that no longer knows the session (it expired while pooled, or the warehouse
    /// restarted) answers 404 before the statement exists: with `reopen`, the connection then
    /// opens a new session and submits once more, so a stale pooled session costs no query.
    /// (`ping` does not reopen: it reports the session broken, and the pool replaces it.)
    fn submit_in_session(
        &mut self,
        sql: &str,
        params: &[Param],
        reopen: bool,
    ) -> Result<dbfed_databricks::StatementResponse, Error> {
        let request = |session: &Session| {
            StatementRequest::new(sql)
                .parameters(params.iter().cloned())
                .session(session)
                .wait_timeout(Duration::ZERO)
        };
        match self.client.submit(&request(&self.session)) {
            Err(e) if reopen && e.http_status() == Some(404) => {
                tracing::info!(
                    session_id = %self.session.id(),
                    error = %e,
                    "the warehouse no longer knows this session: opening a new one"
                );
                self.session = self.client.create_session(
                    self.catalog.as_deref(),
                    self.schema.as_deref(),
                    &self.session_confs,
                )?;
                self.client.submit(&request(&self.session))
            }
            other => other,
        }
    }

    fn run(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
        reopen: bool,
    ) -> Result<Execution, Error> {
        let started = Instant::now();
        let deadline = self.statement_timeout.map(|t| started + t);
        let mut response = self.submit_in_session(sql, params, reopen)?;
        let statement_id = response.id().to_owned();
        let span = tracing::debug_span!("statement", statement_id = %statement_id);
        let _enter = span.enter();
        // The worker waits for this statement alone: polling finely costs it nothing.
        let mut backoff = Backoff::new(self.poll_interval, 4);
        while !response.is_terminal() {
            if cancel.wait_timeout(backoff.interval()) {
                tracing::debug!("query canceled while the statement runs: canceling it");
                if let Err(e) = self.client.cancel(&statement_id) {
                    tracing::warn!(error = %e, "canceling the statement failed");
                }
                return Err(Error::Canceled { statement_id });
            }
            if let Some(e) = timed_out(&self.client, &statement_id, started, deadline) {
                return Err(e);
            }
            response = self.client.poll(&statement_id)?;
            backoff.polled(*response.state() == StatementState::Running);
        }
        open_result(&self.client, response, statement_id)
    }
}

/// Opens the result of a finished statement as an [`Execution`].
fn open_result(
    client: &Client,
    response: dbfed_databricks::StatementResponse,
    statement_id: String,
) -> Result<Execution, Error> {
    let response = response.into_result()?;
    let stream = client.result_stream(response)?;
    let handle = stream.cancel_handle();
    Ok(Execution::new(Box::new(stream))
        .with_canceller(move || handle.cancel())
        .with_statement_id(statement_id))
}

/// Past `deadline`: cancels the statement and returns the timeout error.
fn timed_out(
    client: &Client,
    statement_id: &str,
    started: Instant,
    deadline: Option<Instant>,
) -> Option<Error> {
    if deadline.is_none_or(|d| Instant::now() < d) {
        return None;
    }
    tracing::info!(statement_id, "statement timeout: canceling");
    if let Err(e) = client.cancel(statement_id) {
        tracing::warn!(statement_id, error = %e, "canceling the statement failed");
    }
    Some(Error::Timeout {
        operation: format!("running statement {statement_id}"),
        elapsed: started.elapsed(),
        statement_id: Some(statement_id.to_owned()),
    })
}

/// A statement submitted with `wait_timeout = 0s`, polled by the executor's poller.
#[derive(Debug)]
pub struct DatabricksPending {
    client: Client,
    statement_id: String,
    finished: Option<dbfed_databricks::StatementResponse>,
    /// The last poll saw the statement RUNNING.
    executing: bool,
    started: Instant,
    deadline: Option<Instant>,
}

impl PendingStatement for DatabricksPending {
    fn poll(&mut self) -> Result<bool, DriverError> {
        if let Some(e) = timed_out(
            &self.client,
            &self.statement_id,
            self.started,
            self.deadline,
        ) {
            return Err(classify(e));
        }
        let response = self.client.poll(&self.statement_id).map_err(classify)?;
        self.executing = *response.state() == StatementState::Running;
        if response.is_terminal() {
            self.finished = Some(response);
        }
        Ok(self.finished.is_some())
    }

    fn executing(&self) -> bool {
        self.executing
    }

    fn open(self: Box<Self>) -> Result<Execution, DriverError> {
        let response = match self.finished {
            Some(response) => response,
            None => self.client.poll(&self.statement_id).map_err(classify)?,
        };
        open_result(&self.client, response, self.statement_id).map_err(classify)
    }

    fn cancel(&mut self) {
        if let Err(e) = self.client.cancel(&self.statement_id) {
            tracing::warn!(statement_id = %self.statement_id, error = %e, "canceling the statement failed");
        }
    }

    fn statement_id(&self) -> Option<&str> {
        Some(&self.statement_id)
    }
}

/// Whether the session may be unusable after `e`: anything but a statement-level outcome.
fn classify(e: Error) -> DriverError {
    match e {
        Error::StatementFailed { .. }
        | Error::Canceled { .. }
        | Error::Timeout { .. }
        | Error::ResultMismatch { .. }
        | Error::Decode { .. }
        | Error::Unsupported(_) => DriverError::new(e),
        other => DriverError::broken(other),
    }
}

impl Connection for DatabricksConnection {
    fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        cancel: &CancelToken,
    ) -> Result<Execution, DriverError> {
        self.run(sql, params, cancel, true).map_err(classify)
    }

    fn submit(
        &mut self,
        sql: &str,
        params: &[Param],
        _cancel: &CancelToken,
    ) -> Result<Submitted, DriverError> {
        let started = Instant::now();
        let response = self
            .submit_in_session(sql, params, true)
            .map_err(classify)?;
        let statement_id = response.id().to_owned();
        if response.is_terminal() {
            return open_result(&self.client, response, statement_id)
                .map(Submitted::Ready)
                .map_err(classify);
        }
        Ok(Submitted::Pending(Box::new(DatabricksPending {
            client: self.client.clone(),
            statement_id,
            finished: None,
            executing: false,
            started,
            deadline: self.statement_timeout.map(|t| started + t),
        })))
    }

    fn ping(&mut self) -> Result<(), DriverError> {
        let token = CancelToken::new();
        let execution = self.run("SELECT 1", &[], &token, false).map_err(classify)?;
        let (reader, _, _) = execution.into_parts();
        for batch in reader {
            batch.map_err(DriverError::broken)?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<(), DriverError> {
        self.session.close().map_err(DriverError::broken)
    }
}
