//! The engine stages of `large-result`: DataFusion over a `DatabricksSource`, the Flight SQL
//! server's DoGet read by a Flight SQL client on loopback, and the Flight transport ceiling (a
//! plain in-memory Flight server streaming batches already in memory).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
#[cfg(feature = "flight")]
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::Client;
use dbfed_datafusion::{DatabricksSource, federated_session_context};
use dbfed_executor::{DatabricksDriver, Executor};
#[cfg(feature = "flight")]
use dbfed_flight::{FlightSqlServer, StaticSessions};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use crate::sys::unix_now;

/// What a stage read: rows, and when its first batch arrived (Unix seconds).
#[derive(Debug, Default)]
pub struct Read {
    /// Rows read.
    pub rows: u64,
    /// When the first batch arrived.
    pub first_batch_unix: Option<f64>,
}

impl Read {
    fn batch(&mut self, batch: &RecordBatch) {
        self.first_batch_unix.get_or_insert_with(unix_now);
        self.rows += batch.num_rows() as u64;
    }
}

/// A federated session over `client`'s warehouse, `samples` registered (discovery done).
pub async fn session(client: Client) -> Result<SessionContext> {
    let executor = Executor::builder(DatabricksDriver::new(client))
        .threads(2)
        .pool_size(2)
        .build()?;
    let source = DatabricksSource::builder(executor)
        .catalogs(["samples"])
        .build()?;
    let ctx = federated_session_context(SessionConfig::new());
    source.register(&ctx).await?;
    Ok(ctx)
}

/// Runs `sql` in `ctx` and drains its stream; `started` is called right before planning.
pub async fn datafusion(ctx: &SessionContext, sql: &str, started: impl FnOnce()) -> Result<Read> {
    started();
    let mut stream = ctx.sql(sql).await?.execute_stream().await?;
    let mut read = Read::default();
    while let Some(batch) = stream.next().await {
        read.batch(&batch?);
    }
    Ok(read)
}

/// Serves `ctx` with `dbfed-flight` on loopback and reads `sql` with a Flight SQL client
/// (`GetFlightInfo`, then `DoGet` of every endpoint); `started` is called right before the
/// client's first call.
#[cfg(feature = "flight")]
pub async fn flight(ctx: SessionContext, sql: &str, started: impl FnOnce()) -> Result<Read> {
    let server = FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx)))
        .serve("127.0.0.1:0".parse()?)
        .await?;
    let channel = Endpoint::from_shared(server.url())?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);
    started();
    let info = client.execute(sql.to_owned(), None).await?;
    let mut read = Read::default();
    for endpoint in info.endpoint {
        let ticket =
            anyhow::Context::context(endpoint.ticket, "a Flight endpoint without a ticket")?;
        let mut stream = client.do_get(ticket).await?;
        while let Some(batch) = stream.next().await {
            read.batch(&batch?);
        }
    }
    server.shutdown().await;
    Ok(read)
}

/// Without the `flight` feature there is no Flight SQL server to measure.
#[cfg(not(feature = "flight"))]
pub async fn flight(_: SessionContext, _: &str, _: impl FnOnce()) -> Result<Read> {
    bail!("dbfed-bench was built without the `flight` feature")
}

/// The Flight transport ceiling: `batches` (already in memory) streamed by a minimal in-memory
/// Flight server to a `FlightClient` on loopback. Returns what was read and the seconds it took.
pub async fn flight_ceiling(batches: Vec<RecordBatch>) -> Result<(Read, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = FlightServiceServer::new(MemoryFlight {
        batches: Arc::new(batches),
    })
    .max_encoding_message_size(usize::MAX);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = FlightClient::new(channel);
    let started = Instant::now();
    let mut stream = client.do_get(Ticket::new("all")).await?;
    let mut read = Read::default();
    while let Some(batch) = stream.next().await {
        read.batch(&batch?);
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await??;
    Ok((read, secs))
}

/// Reads `sql` through `client` into memory (for the Flight ceiling).
pub fn collect(client: &Client, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for batch in client.execute(sql, &[])? {
        batches.push(batch?);
    }
    if batches.is_empty() {
        bail!("the statement returned no batches");
    }
    Ok(batches)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A Flight server that answers every `DoGet` with the same batches; nothing else.
#[derive(Debug)]
struct MemoryFlight {
    batches: Arc<Vec<RecordBatch>>,
}

#[tonic::async_trait]
impl FlightService for MemoryFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let batches = self.batches.clone();
        let input = futures::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())));
        let stream = FlightDataEncoderBuilder::new()
            .build(input)
            .map_err(|e: FlightError| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn the_flight_ceiling_streams_every_row() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batches: Vec<_> = (0..3)
            .map(|i| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(
                        i * 1000..(i + 1) * 1000,
                    ))],
                )
                .expect("batch")
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (read, secs) = runtime
            .block_on(flight_ceiling(batches))
            .expect("the in-memory Flight server answers");
        assert_eq!(read.rows, 3000);
        assert!(read.first_batch_unix.is_some() && secs >= 0.0);
    }
}
