//! Runs a statement on the engine: queue slot, latency, the query stream cut into encoded chunks,
//! cancellation (dropping the stream stops the DataFusion query).

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::watch;

use crate::engine::{QueryParameter, QueryRequest, SqlError};
use crate::faults::FaultAction;
use crate::format::{self, EncodeOptions};
use crate::records::StatementState;
use crate::state::{AdmissionGuard, Chunk, ResultSet, Shared, Statement, Status};

/// Resolves when `rx` reads `true`; never resolves if the sender is gone.
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An injected mid-way failure.
#[derive(Debug, Clone)]
pub(crate) struct FailAfter {
    pub chunks: usize,
    pub error: SqlError,
}

impl FailAfter {
    pub fn from_action(action: FaultAction) -> Option<Self> {
        match action {
            FaultAction::FailAfterChunks {
                chunks,
                error_code,
                message,
                sql_state,
            } => Some(Self {
                chunks,
                error: SqlError {
                    error_code,
                    message,
                    sql_state,
                },
            }),
            _ => None,
        }
    }
}

fn internal(message: impl Into<String>) -> SqlError {
    SqlError {
        error_code: "INTERNAL_ERROR".into(),
        message: message.into(),
        sql_state: "XX000".into(),
    }
}

/// How the run ended.
enum Outcome {
    Succeeded(ResultSet),
    Failed(SqlError),
    Canceled,
}

/// Runs `statement` to a terminal state. Spawned once per statement.
pub(crate) async fn run_statement(
    shared: Arc<Shared>,
    statement: Arc<Statement>,
    admission: AdmissionGuard,
    fail_after: Option<FailAfter>,
) {
    let mut cancel = statement.cancel.subscribe();
    // Queries run on the emulator's query runtime, so CPU-heavy plans never starve the HTTP
    // threads (polls and cancels must always get through).
    // The guard aborts the query task if this future is dropped (its runtime shut down): a
    // detached query task would keep running, hold its queue slot and keep `Shared` (and with it
    // the query runtime and every table) alive forever.
    let mut task = AbortOnDrop(shared.query_runtime.spawn({
        let shared = shared.clone();
        let statement = statement.clone();
        async move { execute(&shared, &statement, fail_after).await }
    }));
    let outcome = tokio::select! {
        biased;
        _ = cancelled(&mut cancel) => {
            // Dropping the query future drops the DataFusion stream: the query stops.
            task.0.abort();
            let _ = (&mut task.0).await;
            Outcome::Canceled
        }
        outcome = &mut task.0 => match outcome {
            Ok(outcome) => outcome,
            Err(e) if e.is_cancelled() => Outcome::Canceled,
            Err(e) => Outcome::Failed(internal(format!("the statement task failed: {e}"))),
        },
    };
    drop(admission);
    let outcome = match outcome {
        Outcome::Succeeded(mut result) => {
            result.charge = Some(shared.charge_result(result.memory_bytes()));
            Outcome::Succeeded(result)
        }
        other => other,
    };
    statement.status.send_modify(|s| apply_outcome(s, outcome));
    shared.enforce_result_budget(&statement.id);
}

/// Records how the run ended, unless the statement already reached a terminal state (canceled
/// or closed while the query finished): terminal states stick.
fn apply_outcome(s: &mut Status, outcome: Outcome) {
    s.engine_active = false;
    match outcome {
        Outcome::Succeeded(result) => {
            // A statement canceled or closed meanwhile keeps its terminal state, and its
            // record does not claim rows it never delivered.
            if s.finish(StatementState::Succeeded) {
                s.rows = result.total_rows;
                s.chunks = result.chunks.len();
                s.truncated = result.truncated;
                s.result = Some(Arc::new(result));
            }
        }
        Outcome::Failed(error) => {
            if s.finish(StatementState::Failed) {
                s.error = Some(error);
            }
        }
        Outcome::Canceled => {
            s.finish(StatementState::Canceled);
        }
    }
}

async fn execute(shared: &Shared, statement: &Statement, fail_after: Option<FailAfter>) -> Outcome {
    // A slot among the concurrently running statements; PENDING until then.
    let Ok(_permit) = shared.permits.clone().acquire_owned().await else {
        return Outcome::Failed(internal("the warehouse is shutting down"));
    };
    statement.status.send_if_modified(|s| {
        if s.state == StatementState::Pending {
            s.state = StatementState::Running;
            s.started_at = Some(Utc::now());
            true
        } else {
            false
        }
    });
    if !shared.config.statement_latency.is_zero() {
        tokio::time::sleep(shared.config.statement_latency).await;
    }
    let spec = &statement.spec;
    let request = QueryRequest {
        statement: spec.sql.clone(),
        catalog: spec.catalog.clone(),
        schema: spec.schema.clone(),
        parameters: spec
            .parameters
            .iter()
            .map(|p| QueryParameter {
                name: p.name.clone(),
                ordinal: p.ordinal,
                value: p.value.clone(),
                type_text: p.type_text.clone(),
            })
            .collect(),
        session_confs: spec.session_confs.clone(),
        grants: spec.grants.clone(),
    };
    statement.status.send_modify(|s| s.engine_active = true);
    let output = match shared.engine.execute(request).await {
        Ok(output) => output,
        Err(e) => return Outcome::Failed(e),
    };
    let columns = if output.columns.is_empty() && !output.schema.fields().is_empty() {
        format::describe_schema(&output.schema)
    } else {
        output.columns
    };
    let mut chunker = Chunker {
        schema: output.schema.clone(),
        options: EncodeOptions {
            format: spec.format,
            disposition: spec.disposition,
            compression: spec.compression,
            lz4_frame_per_message: shared.config.lz4_frame_per_message,
        },
        chunk_rows: shared.config.chunk_rows,
        chunk_bytes: shared.config.chunk_bytes,
        pending: Vec::new(),
        pending_rows: 0,
        pending_bytes: 0,
        encoding: VecDeque::new(),
        max_encoding: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cut: 0,
        chunks: Vec::new(),
        rows: 0,
        fail_after,
    };
    let mut stream = output.stream;
    let mut limit_rows = spec.row_limit;
    let mut limit_bytes = spec.byte_limit;
    let mut truncated = false;
    while let Some(next) = stream.next().await {
        let batch = match next {
            Ok(batch) => batch,
            Err(e) => return Outcome::Failed(internal(e.to_string())),
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let mut take = batch.num_rows();
        let per_row = row_bytes(&batch);
        if let Some(rows) = limit_rows {
            take = take.min(usize::try_from(rows).unwrap_or(usize::MAX));
        }
        if let Some(bytes) = limit_bytes {
            let fit = usize::try_from(bytes / per_row as u64).unwrap_or(usize::MAX);
            take = take.min(fit);
        }
        if take < batch.num_rows() {
            truncated = true;
        }
        if take > 0 {
            if let Err(e) = chunker.push(batch.slice(0, take)).await {
                return Outcome::Failed(e);
            }
            if let Some(rows) = limit_rows.as_mut() {
                *rows -= take as u64;
            }
            if let Some(bytes) = limit_bytes.as_mut() {
                *bytes = bytes.saturating_sub((take * per_row) as u64);
            }
        }
        if truncated {
            break;
        }
        if limit_rows == Some(0) {
            // The limit is reached exactly: truncated only if more rows exist.
            while let Some(next) = stream.next().await {
                match next {
                    Ok(b) if b.num_rows() == 0 => continue,
                    Ok(_) => {
                        truncated = true;
                        break;
                    }
                    Err(e) => return Outcome::Failed(internal(e.to_string())),
                }
            }
            break;
        }
    }
    // Stop the query as soon as the rows are in.
    drop(stream);
    statement.status.send_modify(|s| s.engine_active = false);
    if let Err(e) = chunker.finish().await {
        return Outcome::Failed(e);
    }
    if let Some(fail) = &chunker.fail_after {
        // Fewer chunks than the fault asked for: the statement fails at its end.
        return Outcome::Failed(fail.error.clone());
    }
    let total_bytes = chunker.chunks.iter().map(|c| c.byte_count).sum();
    Outcome::Succeeded(ResultSet {
        columns,
        total_rows: chunker.rows,
        chunks: chunker.chunks,
        total_bytes,
        truncated,
        charge: None,
    })
}

/// Approximate uncompressed bytes per row of a batch (at least 1).
fn row_bytes(batch: &RecordBatch) -> usize {
    let rows = batch.num_rows().max(1);
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    (bytes / rows).max(1)
}

/// A chunk being encoded on a blocking thread: its first row, its row count, the task.
type Encoding = (
    u64,
    u64,
    tokio::task::JoinHandle<Result<format::Encoded, format::EncodeError>>,
);

/// Cuts batches into chunks of at most `chunk_rows` rows / about `chunk_bytes` bytes and encodes
/// them off the async threads, up to `max_encoding` chunks at once (a warehouse compresses its
/// result files in parallel), while the query goes on producing rows.
struct Chunker {
    schema: SchemaRef,
    options: EncodeOptions,
    chunk_rows: usize,
    chunk_bytes: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Chunks being encoded, in order.
    encoding: VecDeque<Encoding>,
    max_encoding: usize,
    /// Chunks cut so far (encoded or not).
    cut: usize,
    /// Encoded chunks, in order.
    chunks: Vec<Chunk>,
    rows: u64,
    fail_after: Option<FailAfter>,
}

impl Chunker {
    async fn push(&mut self, batch: RecordBatch) -> Result<(), SqlError> {
        let per_row = row_bytes(&batch);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room_rows = self.chunk_rows - self.pending_rows;
            let room_bytes = self.chunk_bytes.saturating_sub(self.pending_bytes) / per_row;
            let room = if self.pending_rows == 0 {
                room_rows.min(room_bytes.max(1))
            } else {
                room_rows.min(room_bytes)
            };
            if room == 0 {
                self.flush().await?;
                continue;
            }
            let take = room.min(batch.num_rows() - offset);
            self.pending.push(batch.slice(offset, take));
            self.pending_rows += take;
            self.pending_bytes += take * per_row;
            offset += take;
            if self.pending_rows >= self.chunk_rows || self.pending_bytes >= self.chunk_bytes {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Cuts the pending rows into a chunk and starts encoding it.
    async fn flush(&mut self) -> Result<(), SqlError> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        if let Some(fail) = &self.fail_after
            && self.cut >= fail.chunks
        {
            return Err(fail.error.clone());
        }
        let batches = std::mem::take(&mut self.pending);
        let rows = self.pending_rows as u64;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let schema = self.schema.clone();
        let options = self.options;
        let task =
            tokio::task::spawn_blocking(move || format::encode_chunk(&schema, &batches, options));
        self.encoding.push_back((self.rows, rows, task));
        self.rows += rows;
        self.cut += 1;
        while self.encoding.len() > self.max_encoding {
            self.collect_one().await?;
        }
        Ok(())
    }

    /// Waits for the oldest chunk being encoded.
    async fn collect_one(&mut self) -> Result<(), SqlError> {
        let Some((row_offset, row_count, task)) = self.encoding.pop_front() else {
            return Ok(());
        };
        let encoded = task
            .await
            .map_err(|e| internal(format!("encoding a result chunk panicked: {e}")))?
            .map_err(|e| internal(format!("encoding a result chunk failed: {e}")))?;
        self.chunks.push(Chunk {
            row_offset,
            row_count,
            byte_count: encoded.byte_count,
            body: encoded.body,
        });
        Ok(())
    }

    /// Cuts the last chunk and waits until every chunk is encoded.
    async fn finish(&mut self) -> Result<(), SqlError> {
        self.flush().await?;
        while !self.encoding.is_empty() {
            self.collect_one().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rows: u64) -> ResultSet {
        ResultSet {
            columns: Vec::new(),
            chunks: Vec::new(),
            total_rows: rows,
            total_bytes: 0,
            truncated: false,
            charge: None,
        }
    }

    fn statement() -> Statement {
        Statement::new(
            "s".into(),
            crate::state::StatementSpec {
                sql: "SELECT 1".into(),
                parameters: Vec::new(),
                warehouse_id: "w".into(),
                session_id: None,
                catalog: None,
                schema: None,
                session_confs: Default::default(),
                disposition: crate::state::Disposition::Inline,
                format: crate::state::Format::JsonArray,
                compression: crate::state::Compression::None,
                row_limit: None,
                byte_limit: None,
                identity: "pat:x".into(),
                grants: None,
            },
        )
    }

    #[test]
    fn a_result_arriving_after_cancel_is_discarded() {
        for terminal in [StatementState::Canceled, StatementState::Closed] {
            let mut status = statement().snapshot();
            status.engine_active = true;
            assert!(status.finish(terminal));
            apply_outcome(&mut status, Outcome::Succeeded(result(42)));
            assert_eq!(status.state, terminal);
            assert!(status.result.is_none());
            assert_eq!(status.rows, 0, "a {terminal:?} statement claims no rows");
            assert!(!status.engine_active);
        }
        let mut status = statement().snapshot();
        apply_outcome(&mut status, Outcome::Succeeded(result(42)));
        assert_eq!(status.state, StatementState::Succeeded);
        assert_eq!(status.rows, 42);
        assert!(status.result.is_some());
    }
}
