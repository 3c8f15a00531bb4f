//! [`ResultStream`]: a statement result as an Arrow `RecordBatchReader`.
//!
//! `EXTERNAL_LINKS` results are downloaded by a small pool of threads, in parallel, and handed
//! to the consumer strictly in chunk order. A byte budget bounds what is prefetched: a worker
//! reserves a chunk's (manifest, uncompressed) size before downloading it and the reservation
//! is released when the consumer takes the chunk, so a slow consumer stops the downloads and
//! memory stays flat however large the result. `INLINE` results are paged by the consumer
//! itself through every chunk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatchReader;
use base64::Engine;
use parking_lot::{Condvar, Mutex};
use reqwest::Method;

use crate::api::{Api, Call, release_off_async, sleep_unless, snippet};
use crate::decode::decode_chunk;
use crate::error::{Error, Result, redact_url};
use crate::json::rows_to_batch;
use crate::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use crate::types::ResultSchema;
use crate::wire::{Compression, ExternalLink, Format, ResultData};

/// Assumed size of a chunk whose manifest entry has no `byte_count`.
const DEFAULT_CHUNK_COST: u64 = 16 << 20;
/// How often the link of a chunk may be refreshed (expired or 403) before giving up. A link
/// that is still refused after this many fresh ones is a clear error; fewer would turn a run of
/// unlucky expiries (each refresh is independent) into a failed query.
const MAX_LINK_REFRESHES: u32 = 8;
/// Size of the reads of a download body (cancellation is checked between them).
const READ_SLICE: usize = 256 << 10;

/// State shared by a stream, its cancel handles and its download threads.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub api: Arc<Api>,
    pub statement_id: String,
    pub cancelled: AtomicBool,
    remote_cancel_sent: AtomicBool,
}

impl StreamShared {
    pub fn new(api: Arc<Api>, statement_id: String) -> Arc<Self> {
        Arc::new(Self {
            api,
            statement_id,
            cancelled: AtomicBool::new(false),
            remote_cancel_sent: AtomicBool::new(false),
        })
    }

    /// Releases the statement on the warehouse, once: a single attempt bounded by the client's
    /// close timeout (it runs in `Drop`), errors only logged.
    ///
    /// A result stream only exists for a statement that finished with a result, where a cancel
    /// is a no-op: closing it (`DELETE`) is what frees the warehouse's result, and it also
    /// cancels the statement should it still run.
    ///
    /// From inside an async runtime the call runs on a short-lived thread of its own.
    fn cancel_remote(self: &Arc<Self>) {
        if self.remote_cancel_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        release_off_async("dbfed-close", move || this.close_statement());
    }

    fn close_statement(&self) {
        let policy = RetryPolicy::none();
        let mut call = Call::new(
            Method::DELETE,
            format!("/api/2.0/sql/statements/{}", self.statement_id),
        );
        call.retry = Some(&policy);
        call.timeout = Some(self.api.close_timeout);
        match self.api.send(call) {
            Ok(_) => tracing::debug!(statement_id = %self.statement_id, "statement closed"),
            Err(e) => {
                tracing::warn!(statement_id = %self.statement_id, error = %e, "closing the statement failed")
            }
        }
    }
}

/// Cancels a [`ResultStream`] from any thread: stops its downloads, releases (closes) the statement on
/// the warehouse, and makes the stream yield [`Error::Canceled`].
#[derive(Debug, Clone)]
pub struct CancelHandle {
    shared: Arc<StreamShared>,
    wake: Option<Arc<DownloadShared>>,
}

impl CancelHandle {
    /// Cancels the stream and its statement. Idempotent. The release call (`DELETE`) is made
    /// once, bounded by [`crate::ClientBuilder::close_timeout`]: on the calling thread, or on a
    /// short-lived thread of its own when called from inside an async runtime.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::Release);
        if let Some(d) = &self.wake {
            d.wake_all();
        }
        self.shared.cancel_remote();
    }

    /// Whether [`CancelHandle::cancel`] was called (or the stream was dropped early).
    pub fn is_canceled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }
}

/// Options of result streams, from the client builder.
#[derive(Debug, Clone)]
pub(crate) struct StreamOptions {
    pub download_threads: usize,
    pub prefetch_bytes: u64,
    pub link_refresh_margin: Duration,
    /// The largest chunk accepted, downloaded and decompressed.
    pub max_chunk_bytes: u64,
    /// The longest one download may take, body included.
    pub download_timeout: Duration,
    pub download_http: reqwest::blocking::Client,
}

/// Everything a stream needs from a succeeded statement response.
pub(crate) struct StreamInput {
    pub schema: ResultSchema,
    pub format: Option<Format>,
    pub compression: Option<Compression>,
    pub total_chunk_count: usize,
    /// Per chunk: (row_count, byte_count) from the manifest.
    pub chunks: Vec<(Option<u64>, Option<u64>)>,
    pub total_row_count: Option<u64>,
    pub truncated: bool,
    pub result: Option<ResultData>,
}

/// A statement's result as Arrow record batches, in order.
///
/// Iterate it (`Item = Result<RecordBatch, ArrowError>`, as every
/// [`RecordBatchReader`]) or call [`ResultStream::next_batch`] for the typed [`Error`]. A
/// failure inside an `ArrowError` is an `ArrowError::ExternalError` wrapping the [`Error`].
///
/// Dropping the stream before its end closes the statement on the warehouse (freeing its
/// result) with a single `DELETE` bounded by [`crate::ClientBuilder::close_timeout`] (made on a
/// short-lived thread of its own when the drop happens inside an async runtime), and stops
/// the download threads (they finish their current read and exit; the drop does not wait for
/// them). A stream read to its end sends nothing on drop.
///
/// Memory: download threads hold at most [`crate::ClientBuilder::prefetch_bytes`] of decoded
/// chunks ahead of the consumer (one chunk always, however large), each chunk counted at the
/// larger of its manifest size and its real decoded size.
pub struct ResultStream {
    shared: Arc<StreamShared>,
    schema: ResultSchema,
    source: Source,
    pending: VecDeque<RecordBatch>,
    done: bool,
    completed: bool,
    rows_seen: u64,
    total_row_count: Option<u64>,
    truncated: bool,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream")
            .field("statement_id", &self.shared.statement_id)
            .field("columns", &self.schema.columns().len())
            .field("rows_seen", &self.rows_seen)
            .field("total_row_count", &self.total_row_count)
            .field("done", &self.done)
            .finish()
    }
}

enum Source {
    Empty,
    Inline(Box<InlinePager>),
    Links(Downloader),
}

impl ResultStream {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        input: StreamInput,
        options: &StreamOptions,
    ) -> Result<Self> {
        let total_row_count = input.total_row_count;
        let truncated = input.truncated;
        let schema = input.schema.clone();
        let has_links = input
            .result
            .as_ref()
            .is_some_and(|r| r.external_links.as_ref().is_some_and(|l| !l.is_empty()));
        let has_inline = input
            .result
            .as_ref()
            .is_some_and(|r| r.data_array.is_some() || r.attachment.is_some());
        let source = if input.total_chunk_count == 0 && !has_inline && !has_links {
            Source::Empty
        } else if has_inline {
            Source::Inline(Box::new(InlinePager::new(
                shared.clone(),
                input,
                options.max_chunk_bytes,
            )))
        } else {
            match input.format {
                Some(Format::ArrowStream) | None => {}
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "external links in format {other} (only ARROW_STREAM is supported)"
                    )));
                }
            }
            Source::Links(Downloader::start(shared.clone(), input, options)?)
        };
        tracing::debug!(statement_id = %shared.statement_id, total_row_count, "result stream opened");
        Ok(Self {
            shared,
            schema,
            source,
            pending: VecDeque::new(),
            done: false,
            completed: false,
            rows_seen: 0,
            total_row_count,
            truncated,
        })
    }

    /// The statement id.
    pub fn statement_id(&self) -> &str {
        &self.shared.statement_id
    }

    /// The result schema with the Databricks column types.
    pub fn result_schema(&self) -> &ResultSchema {
        &self.schema
    }

    /// Rows the manifest announces for the whole result.
    pub fn total_row_count(&self) -> Option<u64> {
        self.total_row_count
    }

    /// Whether `row_limit`/`byte_limit` cut the result (`manifest.truncated`).
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// A handle to cancel this stream from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            shared: self.shared.clone(),
            wake: match &self.source {
                Source::Links(d) => Some(d.shared.clone()),
                _ => None,
            },
        }
    }

    /// The next batch, `Ok(None)` at the end. After an error the stream is finished.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(Some(batch));
            }
            if self.done {
                return Ok(None);
            }
            if self.shared.cancelled.load(Ordering::Acquire) {
                self.done = true;
                return Err(Error::Canceled {
                    statement_id: self.shared.statement_id.clone(),
                });
            }
            let next = match &mut self.source {
                Source::Empty => Ok(None),
                Source::Inline(p) => p.next_chunk(),
                Source::Links(d) => d.next_chunk(),
            };
            match next {
                Ok(Some(batches)) => {
                    for b in batches {
                        self.rows_seen += b.num_rows() as u64;
                        if b.num_rows() > 0 {
                            self.pending.push_back(b);
                        }
                    }
                }
                Ok(None) => {
                    self.done = true;
                    if let Some(expected) = self.total_row_count
                        && expected != self.rows_seen
                    {
                        return Err(Error::ResultMismatch {
                            statement_id: self.shared.statement_id.clone(),
                            chunk_index: None,
                            expected,
                            actual: self.rows_seen,
                        });
                    }
                    self.completed = true;
                    tracing::debug!(statement_id = %self.shared.statement_id, rows = self.rows_seen, "result stream complete");
                    if let Source::Links(d) = &mut self.source {
                        d.join();
                    }
                    return Ok(None);
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }
}

impl Iterator for ResultStream {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().map_err(ArrowError::from).transpose()
    }
}

impl RecordBatchReader for ResultStream {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema().clone()
    }
}

impl Drop for ResultStream {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        self.shared.cancelled.store(true, Ordering::Release);
        if let Source::Links(d) = &self.source {
            d.shared.wake_all();
        }
        if !matches!(self.source, Source::Empty) {
            tracing::debug!(statement_id = %self.shared.statement_id, "result stream dropped early: canceling");
            self.shared.cancel_remote();
        }
    }
}

fn chunk_what(statement_id: &str, index: usize) -> String {
    format!("chunk {index} of statement {statement_id}")
}

fn check_rows(
    statement_id: &str,
    index: usize,
    expected: Option<u64>,
    batches: &[RecordBatch],
) -> Result<()> {
    let actual: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    match expected {
        Some(expected) if expected != actual => Err(Error::ResultMismatch {
            statement_id: statement_id.to_owned(),
            chunk_index: Some(index),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

fn to_index(v: Option<i64>) -> Option<usize> {
    v.and_then(|i| usize::try_from(i).ok())
}

fn to_count(v: Option<i64>) -> Option<u64> {
    v.and_then(|i| u64::try_from(i).ok())
}

fn chunk_path(statement_id: &str, index: usize) -> String {
    format!("/api/2.0/sql/statements/{statement_id}/result/chunks/{index}")
}

/// Decodes an Arrow IPC chunk body (LZ4-compressed or not); also returns the size of the
/// uncompressed IPC stream, a measure of the memory the batches hold.
fn decode_arrow_chunk(
    bytes: Vec<u8>,
    compression: &Option<Compression>,
    target: &SchemaRef,
    max_bytes: u64,
    what: &str,
) -> Result<(Vec<RecordBatch>, u64)> {
    if bytes.is_empty() {
        // An empty file holds no rows; the row-count check decides whether that is right.
        return Ok((Vec::new(), 0));
    }
    let lz4 = match compression {
        Some(Compression::Lz4Frame) => true,
        None | Some(Compression::None) => false,
        Some(Compression::Unknown(c)) => {
            return Err(Error::Unsupported(format!("result compression {c}")));
        }
    };
    decode_chunk(&bytes, lz4, max_bytes, target, what)
}

// ---------------------------------------------------------------------------------------------
// INLINE results: paged by the consumer.

struct InlinePager {
    shared: Arc<StreamShared>,
    schema: ResultSchema,
    compression: Option<Compression>,
    chunk_rows: Vec<Option<u64>>,
    total_chunk_count: usize,
    current: Option<ResultData>,
    /// Index of the chunk in `current` (or to fetch next).
    next_index: usize,
    finished: bool,
    max_chunk_bytes: u64,
}

impl InlinePager {
    fn new(shared: Arc<StreamShared>, input: StreamInput, max_chunk_bytes: u64) -> Self {
        Self {
            shared,
            schema: input.schema,
            compression: input.compression,
            chunk_rows: input.chunks.iter().map(|c| c.0).collect(),
            total_chunk_count: input.total_chunk_count,
            current: input.result,
            next_index: 0,
            finished: false,
            max_chunk_bytes,
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        if self.finished {
            return Ok(None);
        }
        let data = match self.current.take() {
            Some(d) => d,
            None => {
                if self.next_index >= self.total_chunk_count {
                    self.finished = true;
                    return Ok(None);
                }
                self.fetch(chunk_path(&self.shared.statement_id, self.next_index))?
            }
        };
        let index = to_index(data.chunk_index).unwrap_or(self.next_index);
        if index != self.next_index {
            return Err(Error::protocol(format!(
                "expected chunk {} of statement {} but received chunk {index}",
                self.next_index, self.shared.statement_id
            )));
        }
        let what = chunk_what(&self.shared.statement_id, index);
        let batches = if let Some(rows) = &data.data_array {
            vec![rows_to_batch(rows, &self.schema, &what)?]
        } else if let Some(attachment) = &data.attachment {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(attachment.trim())
                .map_err(|e| Error::decode(&what, format!("attachment is not base64: {e}")))?;
            decode_arrow_chunk(
                bytes,
                &self.compression,
                self.schema.arrow_schema(),
                self.max_chunk_bytes,
                &what,
            )?
            .0
        } else if to_count(data.row_count).unwrap_or(0) == 0 {
            Vec::new()
        } else {
            return Err(Error::protocol(format!(
                "{what} has neither data_array nor attachment"
            )));
        };
        let expected = self
            .chunk_rows
            .get(index)
            .copied()
            .flatten()
            .or(to_count(data.row_count));
        check_rows(&self.shared.statement_id, index, expected, &batches)?;
        tracing::debug!(statement_id = %self.shared.statement_id, chunk = index, "inline chunk decoded");
        self.next_index = index + 1;
        // Follow the server's pointer; fall back on the manifest's chunk count.
        if let Some(link) = &data.next_chunk_internal_link {
            // Bounded by the manifest: a chain longer than total_chunk_count is an error.
            if self.next_index >= self.total_chunk_count {
                return Err(Error::protocol(format!(
                    "{what} links to a next chunk but the manifest has only {} chunks",
                    self.total_chunk_count
                )));
            }
            let next = self.fetch(link.clone())?;
            self.current = Some(next);
        } else if let Some(next) = to_index(data.next_chunk_index) {
            if next != self.next_index || next >= self.total_chunk_count {
                return Err(Error::protocol(format!(
                    "{what} points to chunk {next}, expected {}",
                    self.next_index
                )));
            }
            let next = self.fetch(chunk_path(&self.shared.statement_id, next))?;
            self.current = Some(next);
        } else if self.next_index >= self.total_chunk_count {
            self.finished = true;
        }
        Ok(Some(batches))
    }

    fn fetch(&self, path: String) -> Result<ResultData> {
        if !path.starts_with('/') {
            return Err(Error::protocol(format!(
                "next_chunk_internal_link {:?} is not a path",
                snippet(&path)
            )));
        }
        let mut call = Call::new(Method::GET, path);
        call.cancel = Some(&self.shared.cancelled);
        self.shared.api.json(call)
    }
}

// ---------------------------------------------------------------------------------------------
// EXTERNAL_LINKS results: parallel, ordered, memory-bounded download.

#[derive(Debug)]
pub(crate) struct DownloadShared {
    state: Mutex<DownloadState>,
    changed: Condvar,
}

impl DownloadShared {
    fn wake_all(&self) {
        // Taking the lock orders the wake-up after a waiter's check of the cancel flag.
        let _guard = self.state.lock();
        self.changed.notify_all();
    }
}

#[derive(Debug, Default)]
struct DownloadState {
    next_dispatch: usize,
    next_consume: usize,
    /// Bytes reserved by dispatched chunks not yet taken by the consumer.
    reserved: u64,
    /// What each dispatched chunk holds of `reserved` (its manifest size until it is decoded,
    /// then the larger of that and its real decoded size).
    charged: HashMap<usize, u64>,
    ready: BTreeMap<usize, Result<Vec<RecordBatch>>>,
    failed: bool,
    live_workers: usize,
}

struct DownloadJob {
    shared: Arc<StreamShared>,
    dl: Arc<DownloadShared>,
    target: SchemaRef,
    compression: Option<Compression>,
    chunk_rows: Vec<Option<u64>>,
    chunk_cost: Vec<u64>,
    total: usize,
    budget: u64,
    links: Mutex<HashMap<usize, ExternalLink>>,
    http: reqwest::blocking::Client,
    refresh_margin: Duration,
    max_bytes: u64,
    timeout: Duration,
}

struct Downloader {
    job: Arc<DownloadJob>,
    shared: Arc<DownloadShared>,
    workers: Vec<JoinHandle<()>>,
}

impl Downloader {
    fn start(
        shared: Arc<StreamShared>,
        input: StreamInput,
        options: &StreamOptions,
    ) -> Result<Self> {
        let total = input.total_chunk_count;
        let mut chunk_rows = vec![None; total];
        let mut chunk_cost = vec![DEFAULT_CHUNK_COST; total];
        for (i, (rows, bytes)) in input.chunks.iter().enumerate().take(total) {
            chunk_rows[i] = *rows;
            if let Some(b) = bytes {
                chunk_cost[i] = (*b).max(1);
            }
        }
        let mut links = HashMap::new();
        for link in input
            .result
            .and_then(|r| r.external_links)
            .unwrap_or_default()
        {
            if let Some(i) = to_index(link.chunk_index) {
                if chunk_rows.get(i).is_some_and(Option::is_none) {
                    chunk_rows[i] = to_count(link.row_count);
                }
                links.insert(i, link);
            }
        }
        let dl = Arc::new(DownloadShared {
            state: Mutex::new(DownloadState::default()),
            changed: Condvar::new(),
        });
        let job = Arc::new(DownloadJob {
            shared,
            dl: dl.clone(),
            target: input.schema.arrow_schema().clone(),
            compression: input.compression,
            chunk_rows,
            chunk_cost,
            total,
            budget: options.prefetch_bytes.max(1),
            links: Mutex::new(links),
            http: options.download_http.clone(),
            refresh_margin: options.link_refresh_margin,
            max_bytes: options.max_chunk_bytes,
            timeout: options.download_timeout,
        });
        let threads = options.download_threads.clamp(1, total.max(1));
        let mut workers = Vec::with_capacity(threads);
        dl.state.lock().live_workers = threads;
        for n in 0..threads {
            let job = job.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dbfed-download-{n}"))
                .spawn(move || worker(job));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    let mut st = dl.state.lock();
                    st.live_workers -= threads - n;
                    drop(st);
                    if workers.is_empty() {
                        return Err(Error::protocol(format!(
                            "cannot start download threads: {e}"
                        )));
                    }
                    break;
                }
            }
        }
        Ok(Self {
            job,
            shared: dl,
            workers,
        })
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let mut st = self.shared.state.lock();
        loop {
            if st.next_consume >= self.job.total {
                return Ok(None);
            }
            let index = st.next_consume;
            if let Some(result) = st.ready.remove(&index) {
                st.next_consume += 1;
                let charge = st
                    .charged
                    .remove(&index)
                    .unwrap_or_else(|| self.job.cost(index));
                st.reserved = st.reserved.saturating_sub(charge);
                self.shared.changed.notify_all();
                if result.is_err() {
                    st.failed = true;
                }
                return result.map(Some);
            }
            if self.job.shared.cancelled.load(Ordering::Acquire) {
                return Err(Error::Canceled {
                    statement_id: self.job.shared.statement_id.clone(),
                });
            }
            if st.live_workers == 0 {
                return Err(Error::protocol(format!(
                    "download threads stopped before delivering chunk {index}"
                )));
            }
            // The timeout is only a safety net; workers notify on every change.
            self.shared
                .changed
                .wait_for(&mut st, Duration::from_millis(500));
        }
    }

    fn join(&mut self) {
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl DownloadJob {
    fn cost(&self, index: usize) -> u64 {
        self.chunk_cost
            .get(index)
            .copied()
            .unwrap_or(DEFAULT_CHUNK_COST)
    }

    fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// A usable link for `index`: cached and not about to expire, or fresh from the chunk
    /// endpoint (used as given, whatever its expiration says).
    fn link(&self, index: usize, force_refresh: bool) -> Result<ExternalLink> {
        if !force_refresh
            && let Some(link) = self.links.lock().get(&index)
            && !self.expiring(link)
        {
            return Ok(link.clone());
        }
        tracing::debug!(statement_id = %self.shared.statement_id, chunk = index, "fetching chunk link");
        let mut call = Call::new(Method::GET, chunk_path(&self.shared.statement_id, index));
        call.cancel = Some(&self.shared.cancelled);
        let data: ResultData = self.shared.api.json(call)?;
        let mut found = None;
        let mut cache = self.links.lock();
        for link in data.external_links.unwrap_or_default() {
            if let Some(i) = to_index(link.chunk_index) {
                if i == index {
                    found = Some(link.clone());
                }
                cache.insert(i, link);
            }
        }
        found.ok_or_else(|| {
            Error::protocol(format!(
                "the chunk endpoint returned no external link for chunk {index} of statement {}",
                self.shared.statement_id
            ))
        })
    }

    fn expiring(&self, link: &ExternalLink) -> bool {
        let Some(exp) = link.expiration.as_deref() else {
            return false;
        };
        match chrono::DateTime::parse_from_rfc3339(exp) {
            Ok(t) => {
                let margin = chrono::Duration::from_std(self.refresh_margin)
                    .unwrap_or(chrono::Duration::seconds(45));
                t.with_timezone(&chrono::Utc) <= chrono::Utc::now() + margin
            }
            Err(_) => false,
        }
    }

    /// Downloads, decodes and validates one chunk; also returns its decoded size.
    fn fetch_chunk(&self, index: usize) -> Result<(Vec<RecordBatch>, u64)> {
        let what = chunk_what(&self.shared.statement_id, index);
        let mut refreshes = 0;
        let (bytes, link_rows) = loop {
            let link = self.link(index, refreshes > 0)?;
            match self.download(&link, &what)? {
                Downloaded::Bytes(b) => break (b, to_count(link.row_count)),
                Downloaded::Forbidden(err) => {
                    refreshes += 1;
                    if refreshes > MAX_LINK_REFRESHES {
                        return Err(err);
                    }
                    tracing::info!(statement_id = %self.shared.statement_id, chunk = index, "link refused: refreshing it");
                }
            }
        };
        let downloaded = bytes.len();
        let (batches, decoded) = decode_arrow_chunk(
            bytes,
            &self.compression,
            &self.target,
            self.max_bytes,
            &what,
        )?;
        // The manifest's count, else the count of the link the file came from.
        let expected = self.chunk_rows.get(index).copied().flatten().or(link_rows);
        check_rows(&self.shared.statement_id, index, expected, &batches)?;
        tracing::debug!(statement_id = %self.shared.statement_id, chunk = index, bytes = downloaded, decoded, "chunk downloaded");
        Ok((batches, decoded))
    }

    /// GETs a presigned link: its own headers only, never the workspace credentials.
    fn download(&self, link: &ExternalLink, what: &str) -> Result<Downloaded> {
        let raw = link
            .external_link
            .as_deref()
            .ok_or_else(|| Error::protocol(format!("{what}: external link without a URL")))?;
        let url = url::Url::parse(raw).map_err(|e| {
            Error::protocol(format!(
                "{what}: invalid external link {}: {e}",
                redact_url(raw)
            ))
        })?;
        let request = format!("GET {}", redact_url(raw));
        let policy = &self.shared.api.retry;
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.is_cancelled() {
                return Err(Error::Canceled {
                    statement_id: self.shared.statement_id.clone(),
                });
            }
            let mut req = self.http.get(url.clone());
            for (k, v) in &link.http_headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let mut retry_after = None;
            let failure = match req.send() {
                Err(e) => {
                    let retryable = e.is_connect() || e.is_timeout() || e.is_request();
                    let err = Error::transport(&request, e);
                    if !retryable {
                        return Err(err);
                    }
                    err
                }
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    // Storage throttling (S3 SlowDown, Azure ServerBusy) says when to come back.
                    retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    if (200..300).contains(&status) {
                        match self.read_body(&mut resp) {
                            Ok(Body::Complete(b)) => return Ok(Downloaded::Bytes(b)),
                            Ok(Body::Canceled) => {
                                return Err(Error::Canceled {
                                    statement_id: self.shared.statement_id.clone(),
                                });
                            }
                            // Not retried: the same link would send the same body.
                            Ok(Body::TooLarge) => {
                                return Err(Error::decode(
                                    what,
                                    format!(
                                        "the download is larger than the limit of {} bytes \
                                         (ClientBuilder::max_chunk_bytes)",
                                        self.max_bytes
                                    ),
                                ));
                            }
                            // The connection broke mid-body: a GET is safe to repeat.
                            Err(e) => Error::decode(
                                &request,
                                format!(
                                    "the connection failed while reading the body: {}",
                                    scrub_link_secrets(&e.to_string(), &url, &link.http_headers)
                                ),
                            ),
                        }
                    } else {
                        let body = resp.text().unwrap_or_default();
                        // Storage services echo the request in their errors (S3's
                        // SignatureDoesNotMatch carries the canonical query string).
                        let body = scrub_link_secrets(&body, &url, &link.http_headers);
                        let err = crate::api::http_error(&request, status, &body);
                        if status == 403 {
                            return Ok(Downloaded::Forbidden(err));
                        }
                        if !is_retryable_status(status, true, false) {
                            return Err(err);
                        }
                        err
                    }
                }
            };
            let delay = policy.delay(attempt, retry_after);
            if attempt >= policy.attempts() || started.elapsed() + delay > policy.elapsed_budget() {
                return Err(failure);
            }
            tracing::info!(request = %request, attempt, error = %failure, "retrying download");
            if !sleep_unless(delay, Some(&self.shared.cancelled)) {
                return Err(failure);
            }
        }
    }

    /// Reads a body in slices, stopping early when the stream is canceled or the body grows
    /// past the chunk limit (declared or actual size).
    ///
    /// The blocking HTTP client's timeout bounds each read, not the whole body: a server
    /// trickling a byte at a time would hold the download forever. The body must arrive
    /// within the download timeout (checked between reads, so a stall is detected after at
    /// most twice the timeout); a late body is an I/O timeout, retried like a reset.
    fn read_body(&self, resp: &mut reqwest::blocking::Response) -> std::io::Result<Body> {
        let started = std::time::Instant::now();
        if resp.content_length().is_some_and(|l| l > self.max_bytes) {
            return Ok(Body::TooLarge);
        }
        let mut out = Vec::with_capacity(
            resp.content_length()
                .map(|l| l.min(256 << 20) as usize)
                .unwrap_or(READ_SLICE),
        );
        let mut buf = vec![0u8; READ_SLICE];
        loop {
            if self.is_cancelled() {
                return Ok(Body::Canceled);
            }
            let n = match resp.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(Body::Complete(out));
            }
            if started.elapsed() > self.timeout {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the body did not arrive within the download timeout of {:?}",
                        self.timeout
                    ),
                ));
            }
            if (out.len() + n) as u64 > self.max_bytes {
                return Ok(Body::TooLarge);
            }
            self.shared
                .api
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Removes from `text` every value of the link's query string and headers (signatures,
/// credentials, SSE-C keys) that is long enough to be a secret.
fn scrub_link_secrets(
    text: &str,
    url: &url::Url,
    headers: &std::collections::BTreeMap<String, String>,
) -> String {
    const MIN_SECRET_LEN: usize = 8;
    let raw_query = url.query().unwrap_or_default();
    let mut secrets: Vec<String> = raw_query
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_owned()))
        .chain(url.query_pairs().map(|(_, v)| v.into_owned()))
        .chain(headers.values().cloned())
        .chain(std::iter::once(raw_query.to_owned()))
        .filter(|v| v.len() >= MIN_SECRET_LEN)
        .collect();
    // Longest first, so a value containing another is removed whole.
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for secret in &secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[REDACTED]");
        }
    }
    out
}

/// The outcome of reading a download body.
enum Body {
    Complete(Vec<u8>),
    Canceled,
    TooLarge,
}

enum Downloaded {
    Bytes(Vec<u8>),
    /// 403: the link expired or was revoked; refresh it.
    Forbidden(Error),
}

/// Marks the worker gone (and its chunk failed if it panicked) however it exits.
struct WorkerGuard {
    dl: Arc<DownloadShared>,
    current: Option<usize>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let mut st = self.dl.state.lock();
        st.live_workers = st.live_workers.saturating_sub(1);
        if let Some(index) = self.current.take() {
            st.ready.entry(index).or_insert_with(|| {
                Err(Error::protocol(format!(
                    "the download thread of chunk {index} panicked"
                )))
            });
            st.failed = true;
        }
        self.dl.changed.notify_all();
    }
}

fn worker(job: Arc<DownloadJob>) {
    let mut guard = WorkerGuard {
        dl: job.dl.clone(),
        current: None,
    };
    loop {
        let index = {
            let mut st = job.dl.state.lock();
            loop {
                if job.is_cancelled() || st.failed || st.next_dispatch >= job.total {
                    return;
                }
                let cost = job.cost(st.next_dispatch);
                if st.reserved == 0 || st.reserved.saturating_add(cost) <= job.budget {
                    st.reserved = st.reserved.saturating_add(cost);
                    let index = st.next_dispatch;
                    st.charged.insert(index, cost);
                    st.next_dispatch += 1;
                    break index;
                }
                // Over budget: wait for the consumer to take a chunk.
                job.dl.changed.wait_for(&mut st, Duration::from_millis(500));
            }
        };
        guard.current = Some(index);
        let result = job.fetch_chunk(index);
        guard.current = None;
        let mut st = job.dl.state.lock();
        let result = match result {
            Ok((batches, decoded)) => {
                // The manifest's size is a promise: charge what the chunk really holds when
                // it is more, so a lying or missing byte_count cannot defeat the budget.
                let cost = job.cost(index);
                if decoded > cost {
                    st.reserved = st.reserved.saturating_add(decoded - cost);
                    st.charged.insert(index, decoded);
                }
                Ok(batches)
            }
            Err(e) => {
                st.failed = true;
                Err(e)
            }
        };
        if index >= st.next_consume {
            st.ready.insert(index, result);
        } else if let Some(charge) = st.charged.remove(&index) {
            st.reserved = st.reserved.saturating_sub(charge);
        }
        job.dl.changed.notify_all();
    }
}
