//! Shared fixture: an in-process server over a context with multi-batch tables.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use dbfed_flight::{FlightServerHandle, FlightSqlServer, FlightSqlServerBuilder, StaticSessions};
use futures::TryStreamExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Rows per batch and batches of the `numbers` table.
pub const BATCH_ROWS: i64 = 1000;
pub const BATCHES: i64 = 10;

/// A context with `numbers(id BIGINT, name VARCHAR, grp INT)`: 10 000 rows in 10 batches
/// (`grp = id % 7`, `name = "n<id>"`).
pub fn numbers_ctx() -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("grp", DataType::Int32, false),
    ]));
    let batches: Vec<RecordBatch> = (0..BATCHES)
        .map(|b| {
            let ids: Vec<i64> = (b * BATCH_ROWS..(b + 1) * BATCH_ROWS).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from(
                        ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int32Array::from(
                        ids.iter().map(|i| (i % 7) as i32).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("valid batch")
        })
        .collect();
    let table = MemTable::try_new(schema, vec![batches]).expect("mem table");
    let ctx = SessionContext::new();
    ctx.register_table("numbers", Arc::new(table))
        .expect("register");
    ctx
}

/// A builder over [`numbers_ctx`].
pub fn builder() -> FlightSqlServerBuilder {
    FlightSqlServer::builder(Arc::new(StaticSessions::new(numbers_ctx())))
}

/// Starts `builder` on 127.0.0.1:0.
pub async fn start(builder: FlightSqlServerBuilder) -> FlightServerHandle {
    builder
        .serve("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("server starts")
}

/// A plain-gRPC client of `handle`.
pub async fn client(handle: &FlightServerHandle) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", handle.local_addr()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("connect");
    FlightSqlServiceClient::new(channel)
}

/// Every batch of every endpoint of `info`.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> Result<Vec<RecordBatch>, FlightError> {
    let mut all = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint
            .ticket
            .clone()
            .ok_or_else(|| FlightError::ProtocolError("endpoint without ticket".into()))?;
        let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        all.extend(batches);
    }
    Ok(all)
}

/// Runs `sql` and returns its batches.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_owned(), None).await?;
    fetch(client, &info).await
}

/// The gRPC code of a client error.
pub fn code(err: &FlightError) -> Code {
    match err {
        FlightError::Tonic(status) => status.code(),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// The message of a client error.
pub fn message(err: &FlightError) -> String {
    match err {
        FlightError::Tonic(status) => status.message().to_owned(),
        other => other.to_string(),
    }
}

/// Total rows of `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// All values of Int64 column `index`.
pub fn i64_column(batches: &[RecordBatch], index: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(index)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64 column")
                .values()
                .to_vec()
        })
        .collect()
}
