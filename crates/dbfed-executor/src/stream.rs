//! The async side of a query: a [`Stream`] of record batches fed by a worker thread.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::driver::CancelToken;
use crate::error::ExecutorError;
use crate::executor::{End, Msg, Shared};

/// Cancels its query when dropped before the query finished.
pub(crate) struct QueryGuard {
    shared: Arc<Shared>,
    id: u64,
    token: CancelToken,
    finished: bool,
}

impl QueryGuard {
    pub fn new(shared: Arc<Shared>, id: u64, token: CancelToken) -> Self {
        Self {
            shared,
            id,
            token,
            finished: false,
        }
    }

    /// The query reached its end: dropping the guard no longer cancels anything.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The consumer took a message: resumes the query's result if it parked for want of room.
    fn made_room(&self, parked: &AtomicBool) {
        self.shared.made_room(self.id, parked);
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.abandon(self.id, &self.token);
        }
    }
}

/// The batches of one query, as they arrive from its worker (see
/// [`Executor::query`](crate::Executor::query)).
///
/// A failure after the first batch (a download error, a worker panic) is the stream's last
/// item; a stream that ends with `None` delivered every row. Dropping the stream early
/// cancels the statement and returns its worker and session.
pub struct QueryStream {
    schema: SchemaRef,
    statement_id: Option<String>,
    rx: mpsc::Receiver<Msg>,
    end: oneshot::Receiver<End>,
    guard: QueryGuard,
    /// Set while the query's result waits (parked) for this consumer to take a batch.
    parked: Arc<AtomicBool>,
    done: bool,
    /// Keeps the executor running while its stream is read, even when the caller dropped every
    /// other handle (declared last: the guard cancels an unfinished query first).
    _executor: crate::Executor,
}

/// The stream type [`Executor::query`](crate::Executor::query) returns.
pub type SendableStream = QueryStream;

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("statement_id", &self.statement_id)
            .field("columns", &self.schema.fields().len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    pub(crate) fn new(
        schema: SchemaRef,
        statement_id: Option<String>,
        rx: mpsc::Receiver<Msg>,
        end: oneshot::Receiver<End>,
        guard: QueryGuard,
        parked: Arc<AtomicBool>,
        executor: crate::Executor,
    ) -> Self {
        Self {
            schema,
            statement_id,
            rx,
            end,
            guard,
            parked,
            done: false,
            _executor: executor,
        }
    }

    /// The result schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The server's statement id, when the driver reports one.
    pub fn statement_id(&self) -> Option<&str> {
        self.statement_id.as_deref()
    }

    fn finish(&mut self) {
        self.done = true;
        self.guard.finish();
        self.rx.close();
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // Dropped after the worker reported the end but before the consumer read it: the
        // query completed (or failed), there is nothing to cancel, and it is no cancellation.
        if !self.done && self.end.try_recv().is_ok() {
            self.guard.finish();
        }
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, ExecutorError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Batch(batch))) => {
                self.guard.made_room(&self.parked);
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(None) => {
                self.finish();
                match self.end.try_recv() {
                    Ok(Ok(())) => Poll::Ready(None),
                    Ok(Err(e)) => Poll::Ready(Some(Err(e))),
                    Err(_) => Poll::Ready(Some(Err(ExecutorError::Incomplete))),
                }
            }
            Poll::Ready(Some(Msg::Start { .. })) => {
                self.finish();
                Poll::Ready(Some(Err(ExecutorError::Incomplete)))
            }
        }
    }
}
