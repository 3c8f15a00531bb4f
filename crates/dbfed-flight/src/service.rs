//! The `FlightSqlService` implementation.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PollInfo, SchemaAsIpc, SchemaResult, Ticket,
};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{MemTable, source_as_provider};
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Principal};
use crate::error::FlightSqlError;
use crate::metadata::{self, TABLE_TYPES, flight_schema};
use crate::params::{self, RewrittenSql};
use crate::session::SessionProvider;
use crate::ticket::{
    CloseSessionRequest, CloseSessionResult, Kind, Payload, Signer, TicketError, now_ms,
};

/// Action type of Flight's `CancelFlightInfo`.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// Action type of Flight's `CloseSession`.
const CLOSE_SESSION: &str = "CloseSession";
/// Most cancellations of not-yet-started queries remembered at once.
const MAX_PENDING_CANCELS: usize = 10_000;
/// Most parameter bytes accepted in one DoPut.
const MAX_PARAMETER_BYTES: usize = 16 * 1024 * 1024;

/// Settings of the service, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    pub ticket_ttl: Duration,
    pub handle_ttl: Duration,
    pub allow_writes: bool,
    pub max_streams: usize,
}

/// Set when a running query is canceled; wakes its stream.
#[derive(Debug, Default)]
struct CancelFlag {
    canceled: AtomicBool,
    waker: AtomicWaker,
}

impl CancelFlag {
    fn cancel(&self) {
        self.canceled.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

#[derive(Default)]
struct Registry {
    /// query id → (flag, number of DoGet streams running it).
    running: HashMap<Vec<u8>, (Arc<CancelFlag>, usize)>,
    /// query id → expiry (ms) of canceled queries.
    canceled: HashMap<Vec<u8>, i64>,
}

struct Inner {
    sessions: Arc<dyn SessionProvider>,
    auth: Authenticator,
    signer: Signer,
    config: ServiceConfig,
    sql_info: SqlInfoData,
    streams: Arc<Semaphore>,
    registry: Mutex<Registry>,
}

/// dbfed's Flight SQL service (cheap to clone).
#[derive(Clone)]
pub(crate) struct FlightSqlServiceImpl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlightSqlServiceImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServiceImpl")
            .field("config", &self.inner.config)
            .finish()
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl FlightSqlServiceImpl {
    pub(crate) fn new(
        sessions: Arc<dyn SessionProvider>,
        auth: Authenticator,
        signer: Signer,
        config: ServiceConfig,
    ) -> Result<Self, FlightSqlError> {
        let sql_info = metadata::sql_info(!config.allow_writes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                sessions,
                auth,
                signer,
                streams: Arc::new(Semaphore::new(config.max_streams)),
                config,
                sql_info,
                registry: Mutex::new(Registry::default()),
            }),
        })
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Ok(self.inner.auth.authenticate(request.metadata())?)
    }

    async fn session(&self, principal: &Principal) -> Result<SessionContext, Status> {
        Ok(self.inner.sessions.session(principal).await?)
    }

    fn payload_for(
        &self,
        principal: &Principal,
        sql: RewrittenSql,
        parameters: Vec<u8>,
    ) -> Payload {
        Payload {
            sql: sql.sql,
            parameter_names: sql.names,
            parameters,
            principal: principal.name.clone(),
            token_hash: self.inner.auth.token_hash(principal),
            query_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// Verifies a signed payload and that it belongs to `principal`.
    fn verify(
        &self,
        bytes: &[u8],
        kind: Kind,
        principal: &Principal,
    ) -> Result<Payload, FlightSqlError> {
        let payload = self.inner.signer.verify(bytes, kind)?;
        if payload.principal != principal.name
            || payload.token_hash != self.inner.auth.token_hash(principal)
        {
            return Err(TicketError::OtherPrincipal {
                what: match kind {
                    Kind::PreparedStatement => "prepared statement handle",
                    _ => "ticket",
                },
            }
            .into());
        }
        Ok(payload)
    }

    /// Plans `sql` in `ctx`, refusing writes unless allowed, and binds `parameters`.
    async fn plan(
        &self,
        ctx: &SessionContext,
        sql: &str,
        names: &[String],
        parameters: Option<&RecordBatch>,
        bind: bool,
    ) -> Result<LogicalPlan, FlightSqlError> {
        let plan = ctx.state().create_logical_plan(sql).await?;
        self.check_writes(&plan)?;
        if bind {
            params::bind(plan, names, parameters)
        } else {
            Ok(plan)
        }
    }

    /// Refuses any node of `plan` (an `EXPLAIN ANALYZE` runs its input) that writes or changes
    /// the session, per [`Self::write_refusal`].
    fn check_writes(&self, plan: &LogicalPlan) -> Result<(), FlightSqlError> {
        let mut refusal = None;
        plan.apply_with_subqueries(|node| {
            refusal = self.write_refusal(node);
            Ok(if refusal.is_some() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        refusal.map_or(Ok(()), Err)
    }

    /// Why `node` may not run here, if it may not.
    ///
    /// Read-only (the default): every DML, DDL, COPY and session statement. With
    /// `allow_writes`, DML into in-memory tables and DDL of the session's own catalog
    /// (`CREATE TABLE`, `CREATE VIEW`, `DROP`, ...) run in the server's local DataFusion
    /// context, never on the warehouse; whatever would touch the server's file system
    /// (`CREATE EXTERNAL TABLE`, `COPY ... TO`, DML into a file-backed table) and DML into any
    /// other table (Databricks ones included) are still refused.
    fn write_refusal(&self, node: &LogicalPlan) -> Option<FlightSqlError> {
        let kind = match node {
            LogicalPlan::Dml(_) => "DML (INSERT/UPDATE/DELETE)",
            LogicalPlan::Ddl(_) => "DDL (CREATE/DROP)",
            LogicalPlan::Copy(_) => "COPY",
            LogicalPlan::Statement(_) => "session statements (SET, PREPARE, transactions)",
            _ => return None,
        };
        if !self.inner.config.allow_writes {
            return Some(FlightSqlError::PermissionDenied(format!(
                "{kind} is not allowed: this endpoint is read-only"
            )));
        }
        let refused = match node {
            LogicalPlan::Statement(_) => {
                format!("{kind} are not allowed through Flight SQL")
            }
            LogicalPlan::Copy(_) => {
                "COPY ... TO is not allowed: it would write files on the server".to_owned()
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => {
                "CREATE EXTERNAL TABLE is not allowed: it would read files on the server".to_owned()
            }
            LogicalPlan::Dml(dml) if !is_memory_table(dml) => format!(
                "{} on `{}` is not allowed: writes may only target in-memory tables created \
                 through this endpoint (CREATE TABLE), never file-backed or warehouse tables",
                dml.op.name().to_uppercase(),
                dml.table_name
            ),
            _ => return None,
        };
        Some(FlightSqlError::PermissionDenied(refused))
    }

    fn statement_info(
        &self,
        schema: &Schema,
        payload: Payload,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, FlightSqlError> {
        let ticket =
            self.inner
                .signer
                .issue(payload, Kind::StatementTicket, self.inner.config.ticket_ttl);
        let ticket = TicketStatementQuery {
            statement_handle: ticket.into(),
        }
        .as_any()
        .encode_to_vec();
        Ok(FlightInfo::new()
            .try_with_schema(schema)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_ordered(true))
    }

    /// Runs a verified statement payload and streams its batches as Flight data.
    async fn stream_payload(
        &self,
        principal: &Principal,
        payload: Payload,
    ) -> Result<Stream_<arrow_flight::FlightData>, FlightSqlError> {
        if self.is_canceled(&payload.query_id) {
            return Err(FlightSqlError::Executor(
                dbfed_executor::ExecutorError::Canceled,
            ));
        }
        let permit = Arc::clone(&self.inner.streams)
            .try_acquire_owned()
            .map_err(|_| {
                FlightSqlError::ResourceExhausted(format!(
                    "too many result streams open ({} max); retry later",
                    self.inner.config.max_streams
                ))
            })?;
        let ctx = self.inner.sessions.session(principal).await?;
        let parameters = params::decode_batch(&payload.parameters)?;
        let plan = self
            .plan(
                &ctx,
                &payload.sql,
                &payload.parameter_names,
                parameters.as_ref(),
                true,
            )
            .await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let physical = df.create_physical_plan().await?;
        let schema: SchemaRef = Arc::new(flight_schema(&physical.schema()));
        let batches = execute_stream(physical, ctx.task_ctx())?;
        let flag = self.register(&payload.query_id);
        let guard = RunningGuard {
            service: self.clone(),
            query_id: payload.query_id,
        };
        let target = Arc::clone(&schema);
        let batches = batches.map(move |batch| {
            let batch = batch.map_err(FlightSqlError::from)?;
            conform(batch, &target).map_err(FlightSqlError::from)
        });
        let batches = Cancelable {
            inner: Some(Box::pin(batches)),
            flag,
            _guard: guard,
            _permit: permit,
            _ctx: ctx,
        }
        .map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Box::pin(encoded))
    }

    fn register(&self, query_id: &[u8]) -> Arc<CancelFlag> {
        let mut registry = self.inner.registry.lock();
        let entry = registry
            .running
            .entry(query_id.to_vec())
            .or_insert_with(|| (Arc::new(CancelFlag::default()), 0));
        entry.1 += 1;
        Arc::clone(&entry.0)
    }

    fn unregister(&self, query_id: &[u8]) {
        let mut registry = self.inner.registry.lock();
        if let Some(entry) = registry.running.get_mut(query_id) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                registry.running.remove(query_id);
            }
        }
    }

    fn is_canceled(&self, query_id: &[u8]) -> bool {
        let registry = self.inner.registry.lock();
        registry
            .canceled
            .get(query_id)
            .is_some_and(|expiry| *expiry > now_ms())
    }

    /// Cancels the query of a statement ticket: stops its running streams and refuses later
    /// DoGets of it.
    fn cancel(&self, payload: &Payload) -> CancelStatus {
        let now = now_ms();
        let mut registry = self.inner.registry.lock();
        if let Some((flag, _)) = registry.running.get(&payload.query_id) {
            flag.cancel();
        }
        registry.canceled.retain(|_, expiry| *expiry > now);
        if registry.canceled.len() >= MAX_PENDING_CANCELS {
            return CancelStatus::NotCancellable;
        }
        registry
            .canceled
            .insert(payload.query_id.clone(), payload.expires_at_ms);
        CancelStatus::Cancelled
    }

    async fn cancel_flight_info(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<CancelFlightInfoResult, FlightSqlError> {
        let request = CancelFlightInfoRequest::decode(body).map_err(|e| {
            FlightSqlError::InvalidArgument(format!("bad CancelFlightInfoRequest: {e}"))
        })?;
        let info = request.info.ok_or_else(|| {
            FlightSqlError::InvalidArgument("CancelFlightInfoRequest without FlightInfo".into())
        })?;
        Ok(CancelFlightInfoResult::new(
            self.cancel_info(principal, &info)?,
        ))
    }

    /// Cancels the statement queries of `info`'s endpoints (the caller's own only).
    fn cancel_info(
        &self,
        principal: &Principal,
        info: &FlightInfo,
    ) -> Result<CancelStatus, FlightSqlError> {
        let mut status = CancelStatus::NotCancellable;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let Ok(any) = Any::decode(ticket.ticket.as_ref()) else {
                continue;
            };
            let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            let payload = self.verify(
                &statement.statement_handle,
                Kind::StatementTicket,
                principal,
            )?;
            status = self.cancel(&payload);
        }
        Ok(status)
    }

    async fn read_parameters(
        &self,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<RecordBatch, FlightSqlError> {
        let stream = request
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(stream);
        let mut rows: Vec<RecordBatch> = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| {
                FlightSqlError::InvalidArgument(format!("cannot read parameter batch: {e}"))
            })?;
            bytes += batch.get_array_memory_size();
            if bytes > MAX_PARAMETER_BYTES {
                return Err(FlightSqlError::InvalidArgument(format!(
                    "parameter batches exceed {MAX_PARAMETER_BYTES} bytes"
                )));
            }
            if batch.num_rows() > 0 {
                rows.push(batch);
            }
        }
        match rows.len() {
            0 => Err(FlightSqlError::InvalidArgument(
                "DoPut carried no parameter rows".into(),
            )),
            1 => Ok(rows.remove(0)),
            _ => {
                let schema = rows[0].schema();
                Ok(arrow::compute::concat_batches(&schema, &rows)?)
            }
        }
    }

    /// Executes a DML/DDL statement to completion and returns the affected row count.
    async fn execute_update(
        &self,
        principal: &Principal,
        sql: &str,
        names: &[String],
        parameters: Option<&RecordBatch>,
    ) -> Result<i64, FlightSqlError> {
        if !self.inner.config.allow_writes {
            return Err(FlightSqlError::PermissionDenied(
                "updates are not allowed: this endpoint is read-only".into(),
            ));
        }
        let ctx = self.inner.sessions.session(principal).await?;
        let plan = self.plan(&ctx, sql, names, parameters, true).await?;
        let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
        let mut count: i64 = 0;
        for batch in &batches {
            if let Some(column) = batch.column_by_name("count")
                && let Some(values) = column.as_any().downcast_ref::<UInt64Array>()
            {
                for v in values.iter().flatten() {
                    count = count.saturating_add(i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
        }
        Ok(count)
    }
}

/// Whether the target of `dml` is an in-memory table (`CREATE TABLE`), not one backed by files
/// or a remote source.
fn is_memory_table(dml: &DmlStatement) -> bool {
    source_as_provider(&dml.target).is_ok_and(|provider| provider.is::<MemTable>())
}

/// Removes a query from the running registry when its stream ends or is dropped.
struct RunningGuard {
    service: FlightSqlServiceImpl,
    query_id: Vec<u8>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.service.unregister(&self.query_id);
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightSqlError>> + Send>>;

/// A batch stream that ends with `CANCELLED` when its flag is set, dropping (and so
/// canceling) the query underneath.
struct Cancelable {
    inner: Option<BatchStream>,
    flag: Arc<CancelFlag>,
    _guard: RunningGuard,
    _permit: OwnedSemaphorePermit,
    /// The context the query runs in, kept for the stream's lifetime: a stream outlives the
    /// provider's cached copy (a pass-through identity evicted mid-stream), and the context owns
    /// what executes the query (dropping its last copy shuts the Databricks executor down).
    _ctx: SessionContext,
}

impl Stream for Cancelable {
    type Item = Result<RecordBatch, FlightSqlError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.flag.waker.register(cx.waker());
        if self.flag.canceled.load(Ordering::SeqCst) {
            return match self.inner.take() {
                Some(inner) => {
                    drop(inner);
                    Poll::Ready(Some(Err(FlightSqlError::Executor(
                        dbfed_executor::ExecutorError::Canceled,
                    ))))
                }
                None => Poll::Ready(None),
            };
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Casts `batch` to `schema` where types differ (view types → classic ones).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(ArrowError::SchemaError(format!(
            "result batch has {} columns, the schema {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, FlightSqlError> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    let IpcMessage(bytes) = message;
    Ok(bytes)
}

fn one_batch_stream(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightSqlError>,
) -> Stream_<arrow_flight::FlightData> {
    let batch = batch.map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from),
    )
}

fn metadata_info<M: ProstMessageExt>(
    command: &M,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServiceImpl {
    type FlightService = FlightSqlServiceImpl;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream_<HandshakeResponse>>, Status> {
        let payload_basic = if request.metadata().get("authorization").is_none() {
            let mut stream = request.into_inner();
            match stream.message().await? {
                Some(message) => arrow_flight::BasicAuth::decode(message.payload.as_ref())
                    .ok()
                    .map(|b| (b.username, b.password)),
                None => None,
            }
        } else {
            let (metadata, _, _) = request.into_parts();
            return self.finish_handshake(&metadata, None);
        };
        self.finish_handshake(&tonic::metadata::MetadataMap::new(), payload_basic)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request)?;
        let ctx = self.session(&principal).await?;
        let plan = self.plan(&ctx, &query.query, &[], None, false).await?;
        let schema = flight_schema(plan.schema().as_arrow());
        let sql = RewrittenSql {
            sql: query.query,
            names: Vec::new(),
        };
        let payload = self.payload_for(&principal, sql, Vec::new());
        Ok(Response::new(self.statement_info(
            &schema,
            payload,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request)?;
        let handle = self.verify(
            &cmd.prepared_statement_handle,
            Kind::PreparedStatement,
            &principal,
        )?;
        let ctx = self.session(&principal).await?;
        let parameters = params::decode_batch(&handle.parameters)?;
        let plan = self
            .plan(
                &ctx,
                &handle.sql,
                &handle.parameter_names,
                parameters.as_ref(),
                true,
            )
            .await?;
        let schema = flight_schema(plan.schema().as_arrow());
        let sql = RewrittenSql {
            sql: handle.sql,
            names: handle.parameter_names,
        };
        let payload = self.payload_for(&principal, sql, handle.parameters);
        Ok(Response::new(self.statement_info(
            &schema,
            payload,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let schema = self.inner.sql_info.schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        metadata_info(&query, &primary_keys_schema(), request.into_inner())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request)?;
        let data = xdbc_types()?;
        let schema = query.into_builder(data).schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request)?;
        let payload = self.verify(&ticket.statement_handle, Kind::StatementTicket, &principal)?;
        Ok(Response::new(
            self.stream_payload(&principal, payload).await?,
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request)?;
        let mut payload = self.verify(
            &query.prepared_statement_handle,
            Kind::PreparedStatement,
            &principal,
        )?;
        payload.query_id = uuid::Uuid::new_v4().as_bytes().to_vec();
        Ok(Response::new(
            self.stream_payload(&principal, payload).await?,
        ))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request)?;
        let ctx = self.session(&principal).await?;
        let schema = query.into_builder().schema();
        Ok(Response::new(one_batch_stream(
            schema,
            metadata::catalogs(&ctx),
        )))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request)?;
        let ctx = self.session(&principal).await?;
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(one_batch_stream(
            schema,
            metadata::db_schemas(&ctx, query),
        )))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request)?;
        let ctx = self.session(&principal).await?;
        let schema = query.clone().into_builder().schema();
        let batch = metadata::tables(&ctx, query).await;
        Ok(Response::new(one_batch_stream(schema, batch)))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request)?;
        let mut builder = query.into_builder();
        for t in TABLE_TYPES {
            builder.append(t);
        }
        let schema = builder.schema();
        Ok(Response::new(one_batch_stream(
            schema,
            builder.build().map_err(FlightSqlError::from),
        )))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request)?;
        let builder = query.into_builder(&self.inner.sql_info);
        let schema = builder.schema();
        Ok(Response::new(one_batch_stream(
            schema,
            builder.build().map_err(FlightSqlError::from),
        )))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request)?;
        let schema = primary_keys_schema();
        // Databricks primary keys are informational only: report none.
        let batch = RecordBatch::new_empty(Arc::clone(&schema));
        Ok(Response::new(one_batch_stream(schema, Ok(batch))))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request)?;
        let builder = query.into_builder(xdbc_types()?);
        let schema = builder.schema();
        Ok(Response::new(one_batch_stream(
            schema,
            builder.build().map_err(FlightSqlError::from),
        )))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.principal(&request)?;
        Ok(self
            .execute_update(&principal, &command.query, &[], None)
            .await?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.principal(&request)?;
        let mut handle = self.verify(
            &query.prepared_statement_handle,
            Kind::PreparedStatement,
            &principal,
        )?;
        let batch = self.read_parameters(request).await?;
        // Validate now, so a bad binding fails at DoPut rather than at DoGet.
        let ctx = self.session(&principal).await?;
        self.plan(
            &ctx,
            &handle.sql,
            &handle.parameter_names,
            Some(&batch),
            true,
        )
        .await?;
        handle.parameters = params::encode_batch(&batch)?;
        let bytes = self.inner.signer.issue(
            handle,
            Kind::PreparedStatement,
            self.inner.config.handle_ttl,
        );
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bytes.into()),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.principal(&request)?;
        if !self.inner.config.allow_writes {
            return Err(FlightSqlError::PermissionDenied(
                "updates are not allowed: this endpoint is read-only".into(),
            )
            .into());
        }
        let handle = self.verify(
            &query.prepared_statement_handle,
            Kind::PreparedStatement,
            &principal,
        )?;
        let parameters = if handle.parameter_names.is_empty() {
            None
        } else {
            Some(self.read_parameters(request).await?)
        };
        Ok(self
            .execute_update(
                &principal,
                &handle.sql,
                &handle.parameter_names,
                parameters.as_ref(),
            )
            .await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(&request)?;
        if query.transaction_id.is_some() {
            return Err(
                FlightSqlError::Unimplemented("transactions are not supported".into()).into(),
            );
        }
        let rewritten = params::rewrite_markers(&query.query)?;
        let ctx = self.session(&principal).await?;
        let plan = self
            .plan(&ctx, &rewritten.sql, &rewritten.names, None, false)
            .await?;
        let dataset_schema = flight_schema(plan.schema().as_arrow());
        let parameter_schema = params::parameter_schema(&plan, &rewritten.names)?;
        let payload = self.payload_for(&principal, rewritten, Vec::new());
        let handle = self.inner.signer.issue(
            payload,
            Kind::PreparedStatement,
            self.inner.config.handle_ttl,
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to release.
        self.principal(&request)?;
        Ok(())
    }

    /// The deprecated Flight SQL `CancelQuery` action: same as `CancelFlightInfo`.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let principal = self.principal(&request)?;
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad FlightInfo in CancelQuery: {e}")))?;
        // `CancelResult` (not re-exported by arrow-flight) numbers its values as `CancelStatus`:
        // unspecified 0, cancelled 1, cancelling 2, not cancellable 3.
        let result = match self.cancel_info(&principal, &info)? {
            CancelStatus::Unspecified => 0,
            CancelStatus::Cancelled => 1,
            CancelStatus::Cancelling => 2,
            CancelStatus::NotCancellable => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = self.principal(&request)?;
        let action = request.into_inner();
        let body = match action.r#type.as_str() {
            CANCEL_FLIGHT_INFO => self
                .cancel_flight_info(&principal, &action.body)
                .await?
                .encode_to_vec(),
            CLOSE_SESSION => {
                CloseSessionRequest::decode(action.body.as_ref()).map_err(|e| {
                    Status::invalid_argument(format!("bad CloseSessionRequest: {e}"))
                })?;
                self.inner.sessions.close(&principal).await;
                CloseSessionResult { status: 1 }.encode_to_vec()
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "action {other:?} is not supported"
                )));
            }
        };
        let result = arrow_flight::Result::new(body);
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: CANCEL_FLIGHT_INFO.into(),
                description: "Cancels a query started by GetFlightInfo.\nRequest: CancelFlightInfoRequest\nResponse: CancelFlightInfoResult".into(),
            }),
            Ok(ActionType {
                r#type: CLOSE_SESSION.into(),
                description: "Releases the caller's cached session.\nRequest: CloseSessionRequest\nResponse: CloseSessionResult".into(),
            }),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightSqlServiceImpl {
    fn finish_handshake(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        payload_basic: Option<(String, String)>,
    ) -> Result<Response<Stream_<HandshakeResponse>>, Status> {
        let (_principal, token) = self.inner.auth.handshake(metadata, payload_basic)?;
        let token = token.unwrap_or_default();
        let output = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        })]);
        let mut response: Response<Stream_<HandshakeResponse>> = Response::new(Box::pin(output));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("bearer token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }
}

/// Flight SQL actions this server answers; `ListActions` advertises only these.
const SUPPORTED_ACTIONS: [&str; 5] = [
    "CreatePreparedStatement",
    "ClosePreparedStatement",
    "CancelQuery",
    CANCEL_FLIGHT_INFO,
    CLOSE_SESSION,
];

/// The gRPC face of [`FlightSqlServiceImpl`]: arrow-flight's generic Flight SQL dispatch, except
/// that `ListActions` leaves out the actions it would answer `UNIMPLEMENTED` (transactions,
/// savepoints, Substrait plans).
#[derive(Debug, Clone)]
pub(crate) struct ActionFilter(pub(crate) FlightSqlServiceImpl);

type Svc = FlightSqlServiceImpl;

#[tonic::async_trait]
impl FlightService for ActionFilter {
    type HandshakeStream = <Svc as FlightService>::HandshakeStream;
    type ListFlightsStream = <Svc as FlightService>::ListFlightsStream;
    type DoGetStream = <Svc as FlightService>::DoGetStream;
    type DoPutStream = <Svc as FlightService>::DoPutStream;
    type DoExchangeStream = <Svc as FlightService>::DoExchangeStream;
    type DoActionStream = <Svc as FlightService>::DoActionStream;
    type ListActionsStream = <Svc as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.0, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.0, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(&self.0, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        FlightService::get_schema(&self.0, request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(&self.0, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.0, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = FlightService::list_actions(&self.0, request).await?;
        let supported = actions.into_inner().try_filter(|action| {
            futures::future::ready(SUPPORTED_ACTIONS.contains(&action.r#type.as_str()))
        });
        Ok(Response::new(Box::pin(supported)))
    }
}

fn xdbc_types() -> Result<&'static arrow_flight::sql::metadata::XdbcTypeInfoData, Status> {
    metadata::XDBC_TYPES
        .as_ref()
        .map_err(|e| Status::internal(format!("XDBC type info: {e}")))
}

/// The schema of a `GetPrimaryKeys` answer (Flight SQL spec).
fn primary_keys_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field};
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}
