//! Shared server state: statements, sessions, results.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};

use crate::auth::IssuedToken;
use crate::config::EmulatorBuilder;
use crate::engine::{ColumnDescription, Engine, Grants, SqlError};
use crate::faults::Faults;
use crate::records::{ParameterRecord, RequestRecord, StatementRecord, StatementState};

/// How many request records are kept.
const MAX_REQUEST_RECORDS: usize = 10_000;

/// `disposition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    Inline,
    ExternalLinks,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Inline => "INLINE",
            Disposition::ExternalLinks => "EXTERNAL_LINKS",
        }
    }
}

/// `format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    JsonArray,
    ArrowStream,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::JsonArray => "JSON_ARRAY",
            Format::ArrowStream => "ARROW_STREAM",
            Format::Csv => "CSV",
        }
    }
}

/// `result_compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Lz4Frame,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "NONE",
            Compression::Lz4Frame => "LZ4_FRAME",
        }
    }
}

/// What was asked, fixed at execute time.
#[derive(Debug, Clone)]
pub(crate) struct StatementSpec {
    pub sql: String,
    pub parameters: Vec<ParameterRecord>,
    pub warehouse_id: String,
    pub session_id: Option<String>,
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub session_confs: BTreeMap<String, String>,
    pub disposition: Disposition,
    pub format: Format,
    pub compression: Compression,
    pub row_limit: Option<u64>,
    pub byte_limit: Option<u64>,
    pub identity: String,
    pub grants: Option<Grants>,
}

/// One encoded result chunk.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub row_offset: u64,
    pub row_count: u64,
    /// Uncompressed size in the chosen format.
    pub byte_count: u64,
    pub body: ChunkBody,
}

/// A chunk's payload: rows for `data_array`, or the bytes of a downloadable file.
#[derive(Debug)]
pub(crate) enum ChunkBody {
    Inline(Box<RawValue>),
    File(Bytes),
}

/// The result of a SUCCEEDED statement.
#[derive(Debug)]
pub(crate) struct ResultSet {
    pub columns: Vec<ColumnDescription>,
    pub chunks: Vec<Chunk>,
    pub total_rows: u64,
    pub total_bytes: u64,
    pub truncated: bool,
    /// Counts the result's memory in [`Shared::result_bytes`] while it is alive.
    pub charge: Option<MemoryCharge>,
}

impl ResultSet {
    /// Bytes the encoded chunks occupy in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| match &c.body {
                ChunkBody::Inline(rows) => rows.get().len() as u64,
                ChunkBody::File(bytes) => bytes.len() as u64,
            })
            .sum()
    }
}

/// Bytes added to a counter, given back on drop.
#[derive(Debug)]
pub(crate) struct MemoryCharge {
    counter: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The mutable part of a statement, published through a `watch` channel.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub state: StatementState,
    pub error: Option<SqlError>,
    pub result: Option<Arc<ResultSet>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub finished_instant: Option<Instant>,
    pub engine_active: bool,
    pub rows: u64,
    pub chunks: usize,
    pub truncated: bool,
}

impl Status {
    /// Moves to a terminal state unless already terminal; returns whether it changed.
    pub fn finish(&mut self, state: StatementState) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        self.state = state;
        self.finished_at = Some(Utc::now());
        self.finished_instant = Some(Instant::now());
        true
    }
}

/// One statement.
#[derive(Debug)]
pub(crate) struct Statement {
    pub id: String,
    pub spec: StatementSpec,
    pub status: watch::Sender<Status>,
    pub cancel: watch::Sender<bool>,
    pub bytes_served: AtomicU64,
    pub chunks_served: AtomicU64,
}

impl Statement {
    pub fn new(id: String, spec: StatementSpec) -> Self {
        let status = Status {
            state: StatementState::Pending,
            error: None,
            result: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            finished_instant: None,
            engine_active: false,
            rows: 0,
            chunks: 0,
            truncated: false,
        };
        Self {
            id,
            spec,
            status: watch::Sender::new(status),
            cancel: watch::Sender::new(false),
            bytes_served: AtomicU64::new(0),
            chunks_served: AtomicU64::new(0),
        }
    }

    /// Current status (a clone; the lock is released at once).
    pub fn snapshot(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Asks the execution task to stop.
    pub fn request_cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
        self.chunks_served.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self) -> StatementRecord {
        let s = self.snapshot();
        StatementRecord {
            id: self.id.clone(),
            sql: self.spec.sql.clone(),
            parameters: self.spec.parameters.clone(),
            request_bytes: self.spec.sql.len() as u64
                + self
                    .spec
                    .parameters
                    .iter()
                    .map(ParameterRecord::text_bytes)
                    .sum::<u64>(),
            state: s.state,
            warehouse_id: self.spec.warehouse_id.clone(),
            session_id: self.spec.session_id.clone(),
            catalog: self.spec.catalog.clone(),
            schema: self.spec.schema.clone(),
            disposition: self.spec.disposition.as_str().into(),
            format: self.spec.format.as_str().into(),
            result_compression: self.spec.compression.as_str().into(),
            identity: self.spec.identity.clone(),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            engine_active: s.engine_active,
            rows: s.rows,
            chunks: s.chunks,
            truncated: s.truncated,
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            chunks_served: self.chunks_served.load(Ordering::Relaxed),
            error_code: s.error.as_ref().map(|e| e.error_code.clone()),
            error_message: s.error.as_ref().map(|e| e.message.clone()),
            sql_state: s.error.as_ref().map(|e| e.sql_state.clone()),
        }
    }
}

/// A driver session (`POST /api/2.0/sql/sessions`).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub warehouse_id: String,
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub session_confs: BTreeMap<String, String>,
}

/// Counts statements admitted (queued or running); released on drop.
#[derive(Debug)]
pub(crate) struct AdmissionGuard(Arc<AtomicUsize>);

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A dedicated runtime for query execution; shut down in the background when dropped (dropping
/// a runtime inside async code would panic otherwise).
#[derive(Debug)]
pub(crate) struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    pub fn new() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("dbfed-emulator-query")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
    }

    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(future),
            None => tokio::spawn(future),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking inside async code is not allowed: the workers stop on their own.
                rt.shutdown_background();
            } else {
                // Synchronous callers (a dropped `BackgroundEmulator`): join the workers, so no
                // query thread outlives the emulator.
                rt.shutdown_timeout(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub query_runtime: QueryRuntime,
    pub config: EmulatorBuilder,
    pub engine: Engine,
    pub scheme: &'static str,
    pub local_addr: SocketAddr,
    pub statements: RwLock<HashMap<String, Arc<Statement>>>,
    /// Statement ids in insertion order, for evicting the oldest finished ones (locked only
    /// while `statements` is write-locked).
    pub statement_order: Mutex<VecDeque<String>>,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub admitted: Arc<AtomicUsize>,
    /// Memory of the results alive (kept for polls or being downloaded).
    pub result_bytes: Arc<AtomicU64>,
    pub permits: Arc<Semaphore>,
    pub link_key: [u8; 32],
    pub issued_tokens: Mutex<HashMap<String, IssuedToken>>,
    pub grants: HashMap<String, Grants>,
    pub faults: Faults,
    pub requests: Mutex<VecDeque<RequestRecord>>,
    pub last_sweep: Mutex<Instant>,
}

impl Shared {
    pub fn new(
        config: EmulatorBuilder,
        engine: Engine,
        scheme: &'static str,
        local_addr: SocketAddr,
        query_runtime: QueryRuntime,
    ) -> Self {
        let grants = config
            .grants
            .iter()
            .map(|(who, entries)| (who.0.clone(), Grants::parse(entries)))
            .collect();
        let mut link_key = [0u8; 32];
        rand::fill(&mut link_key);
        let permits = Arc::new(Semaphore::new(config.max_concurrent_statements));
        Self {
            query_runtime,
            config,
            engine,
            scheme,
            local_addr,
            statements: RwLock::new(HashMap::new()),
            statement_order: Mutex::new(VecDeque::new()),
            sessions: Mutex::new(HashMap::new()),
            admitted: Arc::new(AtomicUsize::new(0)),
            result_bytes: Arc::new(AtomicU64::new(0)),
            permits,
            link_key,
            issued_tokens: Mutex::new(HashMap::new()),
            grants,
            faults: Faults::default(),
            requests: Mutex::new(VecDeque::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Admits one more statement unless running + queued would exceed the limits.
    pub fn admit(&self) -> Option<AdmissionGuard> {
        let limit = self
            .config
            .max_concurrent_statements
            .saturating_add(self.config.max_queued_statements);
        let mut current = self.admitted.load(Ordering::Acquire);
        loop {
            if current >= limit {
                return None;
            }
            match self.admitted.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(AdmissionGuard(self.admitted.clone())),
                Err(actual) => current = actual,
            }
        }
    }

    pub fn statement(&self, id: &str) -> Option<Arc<Statement>> {
        self.statements.read().get(id).cloned()
    }

    /// Adds a statement, then forgets the oldest finished statements (and their results) beyond
    /// [`EmulatorBuilder::max_statement_history`]. Unfinished statements are never forgotten;
    /// there are at most `max_concurrent_statements + max_queued_statements` of them.
    pub fn insert_statement(&self, statement: Arc<Statement>) {
        let mut statements = self.statements.write();
        let mut order = self.statement_order.lock();
        order.push_back(statement.id.clone());
        statements.insert(statement.id.clone(), statement);
        let cap = self.config.max_statement_history;
        // Each id is looked at most once per insertion, so this is bounded.
        let mut budget = order.len();
        while statements.len() > cap && budget > 0 {
            budget -= 1;
            let Some(id) = order.pop_front() else {
                break;
            };
            let running = statements
                .get(&id)
                .is_some_and(|s| !s.status.borrow().state.is_terminal());
            if running {
                order.push_back(id);
            } else {
                statements.remove(&id);
            }
        }
    }

    /// Every statement, oldest first.
    pub fn records(&self) -> Vec<StatementRecord> {
        let statements: Vec<Arc<Statement>> = self.statements.read().values().cloned().collect();
        let mut records: Vec<StatementRecord> = statements.iter().map(|s| s.record()).collect();
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        records
    }

    pub fn push_request(&self, record: RequestRecord) {
        let mut requests = self.requests.lock();
        if requests.len() >= MAX_REQUEST_RECORDS {
            requests.pop_front();
        }
        requests.push_back(record);
    }

    /// Drops results older than the result TTL (at most once a second).
    pub fn sweep_expired_results(&self) {
        {
            let mut last = self.last_sweep.lock();
            if last.elapsed().as_secs() < 1 {
                return;
            }
            *last = Instant::now();
        }
        let ttl = self.config.result_ttl;
        let statements: Vec<Arc<Statement>> = self.statements.read().values().cloned().collect();
        for statement in statements {
            statement.status.send_if_modified(|s| {
                let expired =
                    s.result.is_some() && s.finished_instant.is_some_and(|t| t.elapsed() >= ttl);
                if expired {
                    s.result = None;
                    s.state = StatementState::Closed;
                }
                expired
            });
        }
    }

    /// Charges `bytes` of result memory until the returned guard drops.
    pub fn charge_result(&self, bytes: u64) -> MemoryCharge {
        self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
        MemoryCharge {
            counter: self.result_bytes.clone(),
            bytes,
        }
    }

    /// While the results kept exceed [`EmulatorBuilder::max_result_bytes`], drops the results of
    /// the oldest statements (they read as CLOSED, as when `result_ttl` runs out), never those of
    /// `keep` (the statement that just finished).
    pub fn enforce_result_budget(&self, keep: &str) {
        let cap = self.config.max_result_bytes;
        let mut used = self.result_bytes.load(Ordering::Acquire);
        if used <= cap {
            return;
        }
        // Lock order as in `insert_statement`: statements, then order, then a status.
        let statements = self.statements.read();
        let order = self.statement_order.lock();
        for id in order.iter() {
            if used <= cap {
                break;
            }
            if id == keep {
                continue;
            }
            let Some(statement) = statements.get(id) else {
                continue;
            };
            let mut freed = 0;
            statement.status.send_if_modified(|s| match &s.result {
                Some(result) => {
                    freed = result.memory_bytes();
                    s.result = None;
                    s.state = StatementState::Closed;
                    true
                }
                None => false,
            });
            used = used.saturating_sub(freed);
        }
    }

    /// Cancels every unfinished statement (shutdown).
    pub fn cancel_all(&self) {
        let statements: Vec<Arc<Statement>> = self.statements.read().values().cloned().collect();
        for statement in statements {
            statement.request_cancel();
        }
    }
}
