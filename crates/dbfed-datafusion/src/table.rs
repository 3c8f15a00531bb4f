//! A remote table as a DataFusion `TableProvider`, and its scan (`DatabricksScanExec`).

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Statistics, stats::Precision};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    StatisticsArgs, apply_expression_roots,
};
use datafusion::sql::unparser::Unparser;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::dialect::{DatabricksDialect, quote_identifier};
use crate::error::Error;
use crate::federation::with_runtime_filter;
use crate::params::parameterize;
use crate::pushdown::expr_is_remote_safe;
use crate::runtime_filter::runtime_filter_sql;
use crate::source::{Inner, PushdownMode, RemoteName};

/// Row count the planner assumes for a remote scan without a limit: large, so that a local
/// table of known size becomes the build side of a hash join (and the remote side streams).
pub(crate) const REMOTE_ROWS_ESTIMATE: usize = 1_000_000_000;

/// One Databricks table. Filters the dialect can express are pushed into the scan's statement
/// (`Exact`); projection and limit too. Obtain one from
/// [`DatabricksSource::table_provider`](crate::DatabricksSource::table_provider) or a registered
/// catalog.
pub struct DatabricksTable {
    inner: Arc<Inner>,
    name: RemoteName,
    schema: SchemaRef,
}

impl fmt::Debug for DatabricksTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksTable")
            .field("table", &self.name.to_string())
            .field("columns", &self.schema.fields().len())
            .field("pushdown", &self.inner.pushdown)
            .finish_non_exhaustive()
    }
}

impl DatabricksTable {
    pub(crate) fn new(inner: Arc<Inner>, name: RemoteName, schema: SchemaRef) -> Self {
        Self {
            inner,
            name,
            schema,
        }
    }

    /// The remote name, `catalog.schema.table` (unquoted).
    pub fn remote_name(&self) -> String {
        self.name.to_string()
    }

    /// The SQL of `filter` for a `WHERE` clause of this table, when Databricks can evaluate it.
    fn filter_sql(&self, filter: &Expr) -> Option<String> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone()).ok()?;
        let unqualified = unqualify(filter.clone()).ok()?;
        if !expr_is_remote_safe(&unqualified, &df_schema) {
            return None;
        }
        let sql = Unparser::new(&DatabricksDialect)
            .expr_to_sql(&unqualified)
            .ok()?;
        Some(sql.to_string())
    }
}

/// `expr` with every column reference stripped of its table qualifier.
fn unqualify(expr: Expr) -> Result<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
            c.name,
        )))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for DatabricksTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.inner.pushdown != PushdownMode::None && self.filter_sql(f).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let output = Arc::new(self.schema.project(&indices)?);
        let scan = if self.inner.pushdown == PushdownMode::None {
            ScanSpec {
                table: self.name.clone(),
                remote_schema: Arc::clone(&self.schema),
                conditions: Vec::new(),
                sql_limit: None,
                local_projection: Some(indices),
                local_limit: limit,
            }
        } else {
            let mut conditions = Vec::with_capacity(filters.len());
            for f in filters {
                let sql = self.filter_sql(f).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "filter {f} cannot be sent to Databricks table {}",
                        self.name
                    ))
                })?;
                conditions.push(sql);
            }
            ScanSpec {
                table: self.name.clone(),
                remote_schema: Arc::clone(&output),
                conditions,
                sql_limit: limit,
                local_projection: None,
                local_limit: None,
            }
        };
        Ok(Arc::new(DatabricksScanExec::new(
            Arc::clone(&self.inner),
            scan,
            output,
        )))
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Inexact(REMOTE_ROWS_ESTIMATE);
        Some(stats)
    }
}

/// What a scan sends and how it shapes the result.
#[derive(Debug, Clone)]
struct ScanSpec {
    table: RemoteName,
    /// The columns the statement selects, in order (empty: the statement selects a constant).
    remote_schema: SchemaRef,
    /// `WHERE` conditions, ANDed.
    conditions: Vec<String>,
    sql_limit: Option<usize>,
    /// Columns of the result to keep (mode `None`: the statement selects all of them).
    local_projection: Option<Vec<usize>>,
    /// Rows to keep at most (mode `None`).
    local_limit: Option<usize>,
}

impl ScanSpec {
    fn sql(&self, runtime_filter: Option<&str>) -> String {
        let select = if self.remote_schema.fields().is_empty() {
            "1".to_owned()
        } else {
            self.remote_schema
                .fields()
                .iter()
                .map(|f| quote_identifier(f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {select} FROM {}", self.table.quoted());
        let conditions: Vec<&str> = self
            .conditions
            .iter()
            .map(String::as_str)
            .chain(runtime_filter)
            .collect();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(
                &conditions
                    .iter()
                    .map(|c| format!("({c})"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            );
        }
        if let Some(limit) = self.sql_limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }
}

/// The scan of one Databricks table: one statement, sent when the stream is first polled.
///
/// `EXPLAIN` shows the statement (`DatabricksScanExec: sql=SELECT ...`); at execution, its
/// literals travel as statement parameters and the runtime join filters DataFusion pushed into
/// this node filter its result (`SELECT * FROM (…) AS __dbfed WHERE …`).
#[derive(Debug, Clone)]
pub struct DatabricksScanExec {
    inner: Arc<Inner>,
    spec: ScanSpec,
    schema: SchemaRef,
    dynamic_filters: Vec<Arc<dyn PhysicalExpr>>,
    props: Arc<PlanProperties>,
}

impl DatabricksScanExec {
    fn new(inner: Arc<Inner>, spec: ScanSpec, schema: SchemaRef) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            inner,
            spec,
            schema,
            dynamic_filters: Vec::new(),
            props,
        }
    }

    /// The statement this scan sends, without runtime filters.
    pub fn sql(&self) -> String {
        self.spec.sql(None)
    }

    /// The runtime (dynamic) filters pushed into this scan.
    pub fn runtime_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.dynamic_filters
    }
}

impl DisplayAs for DatabricksScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabricksScanExec: sql={}", self.sql())?;
        if !self.dynamic_filters.is_empty() {
            let filters: Vec<String> = self.dynamic_filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", runtime_filters=[{}]", filters.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DatabricksScanExec {
    fn name(&self) -> &str {
        "DatabricksScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(&self.dynamic_filters, f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DatabricksScanExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DatabricksScanExec has one partition, asked for {partition}"
            )));
        }
        let inner = Arc::clone(&self.inner);
        let spec = self.spec.clone();
        let schema = Arc::clone(&self.schema);
        let filters = self.dynamic_filters.clone();
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let runtime = if inner.runtime_filters && !filters.is_empty() {
                runtime_filter_sql(&filters, &schema, inner.runtime_filter_max_values)
            } else {
                None
            };
            // The query's literals become parameters; the runtime filter's values (data, up
            // to 100 000 keys) stay typed literals in the text.
            let mut statement = parameterize(&spec.sql(None))?;
            statement.sql = with_runtime_filter(&statement.sql, runtime.as_deref());
            tracing::debug!(table = %spec.table, sql = %statement.sql, "Databricks scan");
            let table = spec.table.to_string();
            let remote = inner
                .executor
                .query_stream(inner.identity.clone(), statement.sql, statement.params)
                .map_err(move |e| remote_error(&table, e))
                .and_then(move |batch| futures::future::ready(adapt(&spec, &schema, batch)));
            Ok::<_, DataFusionError>(remote)
        })
        .try_flatten();
        let stream = limit_rows(stream, self.spec.local_limit);
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        let rows = self
            .spec
            .sql_limit
            .or(self.spec.local_limit)
            .map_or(REMOTE_ROWS_ESTIMATE, |l| l.min(REMOTE_ROWS_ESTIMATE));
        stats.num_rows = Precision::Inexact(rows);
        Ok(Arc::new(stats))
    }

    /// Takes the dynamic filters pushed down at runtime (hash join build sides, TopK) to add
    /// them to the statement when it is sent. They are reported unsupported, so DataFusion
    /// keeps evaluating them: the remote side may see an older (weaker) value.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        if !self.inner.runtime_filters
            || phase != FilterPushdownPhase::Post
            || child_pushdown_result.parent_filters.is_empty()
        {
            return Ok(FilterPushdownPropagation::all_unsupported(
                child_pushdown_result,
            ));
        }
        let mut node = self.clone();
        node.dynamic_filters.extend(
            child_pushdown_result
                .parent_filters
                .iter()
                .map(|f| Arc::clone(&f.filter)),
        );
        Ok(
            FilterPushdownPropagation::all_unsupported(child_pushdown_result)
                .with_updated_node(Arc::new(node) as Arc<dyn ExecutionPlan>),
        )
    }
}

/// An executor error as a DataFusion error naming the remote table.
pub(crate) fn remote_error(table: &str, e: dbfed_executor::ExecutorError) -> DataFusionError {
    DataFusionError::Context(
        format!("query on Databricks table {table}"),
        Box::new(DataFusionError::External(Box::new(Error::Executor(e)))),
    )
}

/// Checks one result batch against the columns the statement selected and casts it to the
/// schema the plan promised; a missing or incompatible column is a [`Error::SchemaDrift`].
fn adapt(spec: &ScanSpec, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    let expected = &spec.remote_schema;
    let table = spec.table.to_string();
    if expected.fields().is_empty() {
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            Vec::new(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?);
    }
    let columns = check_and_cast(&table, expected, &batch, true)?;
    let columns = match &spec.local_projection {
        Some(indices) => indices
            .iter()
            .map(|&i| {
                columns.get(i).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("projection index {i} out of range"))
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => columns,
    };
    if columns.is_empty() {
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            Vec::new(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The columns of `batch` cast to the types of `expected`, position by position; with
/// `check_names`, names must match too (ignoring ASCII case).
pub(crate) fn check_and_cast(
    table: &str,
    expected: &Schema,
    batch: &RecordBatch,
    check_names: bool,
) -> Result<Vec<arrow::array::ArrayRef>> {
    let describe = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let actual = batch.schema();
    if actual.fields().len() != expected.fields().len() {
        return Err(Error::SchemaDrift {
            table: table.to_owned(),
            expected: format!("columns ({})", describe(expected)),
            actual: format!("columns ({})", describe(&actual)),
        }
        .into());
    }
    let options = CastOptions {
        safe: false,
        format_options: Default::default(),
    };
    let mut out = Vec::with_capacity(batch.num_columns());
    for ((want, got), array) in expected
        .fields()
        .iter()
        .zip(actual.fields())
        .zip(batch.columns())
    {
        let drift = |detail: String| -> DataFusionError {
            Error::SchemaDrift {
                table: table.to_owned(),
                expected: format!("column {} {}", want.name(), want.data_type()),
                actual: detail,
            }
            .into()
        };
        if check_names && !want.name().eq_ignore_ascii_case(got.name()) {
            return Err(drift(format!("column {} {}", got.name(), got.data_type())));
        }
        if want.data_type() == array.data_type() {
            out.push(Arc::clone(array));
            continue;
        }
        if !can_cast_types(array.data_type(), want.data_type()) {
            return Err(drift(format!("column {} {}", got.name(), got.data_type())));
        }
        let cast = cast_with_options(array, want.data_type(), &options).map_err(|e| {
            drift(format!(
                "column {} {} whose values do not convert: {e}",
                got.name(),
                got.data_type()
            ))
        })?;
        out.push(cast);
    }
    Ok(out)
}

/// `stream` cut after `limit` rows (the rest of the remote result is canceled by the drop).
fn limit_rows(
    stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    limit: Option<usize>,
) -> futures::stream::BoxStream<'static, Result<RecordBatch>> {
    let Some(limit) = limit else {
        return stream.boxed();
    };
    futures::stream::unfold(
        (stream.boxed(), limit),
        |(mut stream, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            match stream.next().await? {
                Ok(batch) => {
                    let take = batch.num_rows().min(remaining);
                    Some((Ok(batch.slice(0, take)), (stream, remaining - take)))
                }
                Err(e) => Some((Err(e), (stream, 0))),
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn spec(fields: Vec<Field>) -> ScanSpec {
        ScanSpec {
            table: RemoteName {
                catalog: "c".into(),
                schema: "s".into(),
                table: "t".into(),
            },
            remote_schema: Arc::new(Schema::new(fields)),
            conditions: vec!["`a` > :p".into()],
            sql_limit: Some(5),
            local_projection: None,
            local_limit: None,
        }
    }

    #[test]
    fn scan_sql_quotes_and_combines() {
        let s = spec(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b`c", DataType::Utf8, true),
        ]);
        assert_eq!(
            s.sql(Some("`a` IN (1, 2)")),
            "SELECT `a`, `b``c` FROM `c`.`s`.`t` WHERE (`a` > :p) AND (`a` IN (1, 2)) LIMIT 5"
        );
        let empty = spec(vec![]);
        assert_eq!(
            empty.sql(None),
            "SELECT 1 FROM `c`.`s`.`t` WHERE (`a` > :p) LIMIT 5"
        );
    }

    #[test]
    fn batches_are_cast_and_drift_is_named() {
        let s = spec(vec![Field::new("a", DataType::Int64, true)]);
        let schema = Arc::clone(&s.remote_schema);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("A", DataType::Int32, true)])),
            vec![Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .expect("batch");
        let out = adapt(&s, &schema, batch).expect("castable");
        let values = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        assert_eq!(values.values(), &[1, 2]);

        let renamed = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("z", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .expect("batch");
        let err = adapt(&s, &schema, renamed).expect_err("drift");
        assert!(err.to_string().contains("c.s.t"), "{err}");
        assert!(err.to_string().contains("column a"), "{err}");

        let text = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .expect("batch");
        let err = adapt(&s, &schema, text).expect_err("not numbers");
        assert!(err.to_string().contains("column a"), "{err}");
    }
}
