//! Federation with datafusion-federation: the largest subplan whose tables all live on one
//! warehouse (and identity) and that Databricks can evaluate runs there as one statement.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Statistics, TableReference, stats::Precision};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{
    Expr, Extension, JoinType, LogicalPlan, Projection, SubqueryAlias, TableScan,
};
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{
    RemoteTableRef, SQLExecutor, SQLFederationPlanner, SQLFederationProvider, SQLTableSource,
};
use datafusion_federation::{FederatedPlanNode, FederatedTableProviderAdaptor, get_table_source};
use dbfed_executor::Executor;
use futures::TryStreamExt;

use crate::dialect::{DatabricksDialect, prepare_plan};
use crate::params::parameterize;
use crate::pushdown::expr_is_remote_safe;
use crate::runtime_filter::runtime_filter_sql;
use crate::source::{Inner, RemoteName};
use crate::table::{DatabricksTable, REMOTE_ROWS_ESTIMATE, check_and_cast, remote_error};

pub(crate) mod reorder;
mod replan;

/// Alias of the derived table a federated statement is wrapped in to add runtime filters.
const RUNTIME_FILTER_ALIAS: &str = "__dbfed";

/// The `SQLExecutor` of a Databricks source: runs federated subplans through the executor.
pub struct DatabricksSqlExecutor {
    executor: Executor,
    identity: String,
    compute_context: String,
    runtime_filters: bool,
    runtime_filter_max_values: usize,
}

impl fmt::Debug for DatabricksSqlExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksSqlExecutor")
            .field("identity", &self.identity)
            .field("compute_context", &self.compute_context)
            .field("runtime_filters", &self.runtime_filters)
            .finish_non_exhaustive()
    }
}

impl DatabricksSqlExecutor {
    pub(crate) fn new(
        executor: Executor,
        identity: String,
        compute_context: String,
        runtime_filters: bool,
        runtime_filter_max_values: usize,
    ) -> Self {
        Self {
            executor,
            identity,
            compute_context,
            runtime_filters,
            runtime_filter_max_values,
        }
    }
}

/// Whether every field name of `schema` is distinct (the condition for referring to them from
/// an outer `WHERE`).
fn unique_names(schema: &SchemaRef) -> bool {
    let mut seen = std::collections::HashSet::new();
    schema
        .fields()
        .iter()
        .all(|f| seen.insert(f.name().to_ascii_lowercase()))
}

/// The statement for `query` with the runtime filter `predicate` applied, if any.
pub(crate) fn with_runtime_filter(query: &str, predicate: Option<&str>) -> String {
    match predicate {
        Some(p) => format!("SELECT * FROM ({query}) AS {RUNTIME_FILTER_ALIAS} WHERE {p}"),
        None => query.to_owned(),
    }
}

#[async_trait]
impl SQLExecutor for DatabricksSqlExecutor {
    fn name(&self) -> &str {
        "databricks"
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.compute_context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(DatabricksDialect)
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let executor = self.executor.clone();
        let identity = self.identity.clone();
        let query = query.to_owned();
        let filters = filters.to_vec();
        let use_filters = self.runtime_filters && !filters.is_empty() && unique_names(&schema);
        let max = self.runtime_filter_max_values;
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let predicate = if use_filters {
                runtime_filter_sql(&filters, &schema, max)
            } else {
                None
            };
            // The query's literals become parameters; the runtime filter's values (data, up
            // to 100 000 keys) stay typed literals in the text.
            let mut statement = parameterize(&query)?;
            statement.sql = with_runtime_filter(&statement.sql, predicate.as_deref());
            tracing::debug!(sql = %statement.sql, "federated Databricks statement");
            let remote = executor
                .query_stream(identity, statement.sql, statement.params)
                .map_err(|e| remote_error("(federated query)", e))
                .and_then(move |batch| {
                    let result = check_and_cast("(federated query)", &schema, &batch, false)
                        .and_then(|columns| {
                            if columns.is_empty() {
                                Ok(arrow::array::RecordBatch::try_new_with_options(
                                    Arc::clone(&schema),
                                    columns,
                                    &arrow::array::RecordBatchOptions::new()
                                        .with_row_count(Some(batch.num_rows())),
                                )?)
                            } else {
                                Ok(arrow::array::RecordBatch::try_new(
                                    Arc::clone(&schema),
                                    columns,
                                )?)
                            }
                        });
                    futures::future::ready(result)
                });
            Ok::<_, DataFusionError>(remote)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    async fn statistics(&self, plan: &LogicalPlan) -> Result<Statistics> {
        let mut stats = Statistics::new_unknown(plan.schema().as_arrow());
        let rows = match plan {
            LogicalPlan::Limit(limit) => match limit.get_fetch_type() {
                Ok(datafusion::logical_expr::logical_plan::FetchType::Literal(Some(n))) => {
                    n.min(REMOTE_ROWS_ESTIMATE)
                }
                _ => REMOTE_ROWS_ESTIMATE,
            },
            _ => REMOTE_ROWS_ESTIMATE,
        };
        stats.num_rows = Precision::Inexact(rows);
        Ok(stats)
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "list Databricks tables through DatabricksSource::register".into(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> Result<SchemaRef> {
        Err(DataFusionError::NotImplemented(format!(
            "look up {table_name} through DatabricksSource::table_provider"
        )))
    }
}

/// The federation provider of a source: datafusion-federation's SQL provider with our own
/// subplan rule (see [`DatabricksFederationRule`]).
pub(crate) fn federation_provider(
    executor: Arc<DatabricksSqlExecutor>,
) -> Arc<SQLFederationProvider> {
    let executor: Arc<dyn SQLExecutor> = executor;
    let rule = DatabricksFederationRule {
        planner: Arc::new(SQLFederationPlanner::new(Arc::clone(&executor))),
    };
    Arc::new(SQLFederationProvider {
        optimizer: Arc::new(Optimizer::with_rules(vec![Arc::new(rule)])),
        executor,
    })
}

/// `table` behind datafusion-federation's adaptor: federated by the federation rule, scanned
/// directly (filter/projection pushdown) in a session without it.
pub(crate) fn federated_provider(
    inner: &Arc<Inner>,
    name: RemoteName,
    table: Arc<DatabricksTable>,
) -> Arc<dyn datafusion::catalog::TableProvider> {
    let schema = datafusion::catalog::TableProvider::schema(table.as_ref());
    let reference = TableReference::full(name.catalog, name.schema, name.table);
    let source = SQLTableSource::new_with_schema(
        Arc::clone(&inner.federation),
        RemoteTableRef::from(reference),
        schema,
    );
    Arc::new(FederatedTableProviderAdaptor::new_with_provider(
        Arc::new(source),
        table,
    ))
}

/// Wraps the largest subplan it is given in a `Federated` node when Databricks can run all of
/// it correctly; otherwise keeps the top node local and tries its inputs, recursively.
///
/// datafusion-federation picks subplans by table ownership only; this rule also checks that
/// every expression is one Databricks evaluates the same way (see
/// [`crate::pushdown`]), that the unparser's placement of scan filters in outer joins (`ON`,
/// not `WHERE`) keeps the join's meaning, and (the safety net, [`replan`]) that the SQL
/// written for the subplan, planned again by DataFusion, returns the subplan's columns in
/// order. Scans are renamed to their remote names first ([`remote_plan`]).
#[derive(Debug)]
struct DatabricksFederationRule {
    planner: Arc<SQLFederationPlanner>,
}

impl OptimizerRule for DatabricksFederationRule {
    fn name(&self) -> &str {
        "federate_databricks"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if is_federated(&plan) {
            return Ok(Transformed::no(plan));
        }
        let checker = replan::Checker::new(config);
        self.federate(plan, &checker).map(Transformed::yes)
    }
}

fn is_federated(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Extension(Extension { node }) if node.name() == "Federated")
}

impl DatabricksFederationRule {
    fn federate(&self, plan: LogicalPlan, checker: &replan::Checker) -> Result<LogicalPlan> {
        if is_federated(&plan) {
            return Ok(plan);
        }
        if nodes_expressible(&plan) {
            match remote_plan(&plan).and_then(|remote| {
                checker.check(&remote)?;
                Ok(remote)
            }) {
                Ok(remote) => {
                    let node = FederatedPlanNode::new(remote, Arc::clone(&self.planner) as _);
                    return Ok(LogicalPlan::Extension(Extension {
                        node: Arc::new(node),
                    }));
                }
                Err(e) => tracing::debug!(
                    node = plan.display().to_string(),
                    reason = %e,
                    "subplan not pushed to Databricks as a whole; trying its inputs"
                ),
            }
        }
        if plan.inputs().is_empty() {
            // A leaf Databricks cannot run (e.g. a scan with an odd filter) is scanned
            // directly by the table provider behind the adaptor.
            return Ok(plan);
        }
        let inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
        let inputs = inputs
            .into_iter()
            .map(|i| self.federate(i, checker))
            .collect::<Result<Vec<_>>>()?;
        plan.with_new_exprs(plan.expressions(), inputs)
    }
}

/// The plan handed to Databricks for `plan`, with the same schema: scans renamed to their
/// remote names (under an alias with the local name, so every column reference and derived
/// name above stays valid), a projection over a join or filter root, and the dialect's
/// naming rules ([`crate::dialect::prepare_plan`]).
pub(crate) fn remote_plan(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let renamed = rename_scans(plan.clone())?;
    let prepared = prepare_plan(wrap_projection(renamed)?)?;
    if !prepared.schema().iter().eq(plan.schema().iter()) {
        return Err(DataFusionError::Internal(format!(
            "preparing a plan for Databricks changed its schema from {} to {}",
            plan.schema(),
            prepared.schema()
        )));
    }
    Ok(prepared)
}

/// The remote name of a scan of a Databricks table, if it differs from the scan's name.
fn remote_name(scan: &TableScan) -> Result<Option<TableReference>> {
    let Some(source) = get_table_source(&scan.source)? else {
        return Ok(None);
    };
    let Some(sql) = (source.as_ref() as &dyn std::any::Any).downcast_ref::<SQLTableSource>() else {
        return Ok(None);
    };
    let remote = sql.table_reference();
    Ok((remote != scan.table_name).then_some(remote))
}

/// `scan` under the name `remote`: its schema and its pushed filters requalified.
fn renamed_scan(mut scan: TableScan, remote: TableReference) -> Result<TableScan> {
    let old = scan.table_name.clone();
    scan.filters = scan
        .filters
        .into_iter()
        .map(|f| {
            f.transform(|e| match e {
                Expr::Column(c) if c.relation.as_ref() == Some(&old) => {
                    Ok(Transformed::yes(Expr::Column(
                        datafusion::common::Column::new(Some(remote.clone()), c.name),
                    )))
                }
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
        })
        .collect::<Result<_>>()?;
    scan.projected_schema = Arc::new(
        scan.projected_schema
            .as_ref()
            .clone()
            .replace_qualifier(remote.clone()),
    );
    scan.table_name = remote;
    Ok(scan)
}

/// Renames every Databricks scan of `plan` registered under a local name (`lineitem`) to its
/// remote name (`samples.tpch.lineitem`), keeping the local name as a `SubqueryAlias` above it.
///
/// datafusion-federation renames scans itself when it writes the SQL, but not the names
/// derived from them (`sum(lineitem.l_quantity)`), which then no longer resolve; with the
/// alias, nothing above the scan changes.
fn rename_scans(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_down(|node| match node {
        LogicalPlan::SubqueryAlias(alias)
            if matches!(alias.input.as_ref(), LogicalPlan::TableScan(_)) =>
        {
            let LogicalPlan::TableScan(scan) = alias.input.as_ref() else {
                return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
            };
            match remote_name(scan)? {
                Some(remote) => {
                    let scan = renamed_scan(scan.clone(), remote)?;
                    Ok(Transformed::yes(LogicalPlan::SubqueryAlias(
                        SubqueryAlias::try_new(
                            Arc::new(LogicalPlan::TableScan(scan)),
                            alias.alias.clone(),
                        )?,
                    )))
                }
                None => Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias))),
            }
        }
        LogicalPlan::TableScan(scan) => match remote_name(&scan)? {
            Some(remote) => {
                let local = scan.table_name.clone();
                let scan = renamed_scan(scan, remote)?;
                Ok(Transformed::yes(LogicalPlan::SubqueryAlias(
                    SubqueryAlias::try_new(Arc::new(LogicalPlan::TableScan(scan)), local)?,
                )))
            }
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        },
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// `plan` under a projection of all its columns when its root is a join or a filter (the
/// unparser would otherwise write `SELECT *`). Other roots are left alone: a projection
/// over a limit, sort or aggregate makes the unparser write a derived table whose columns it
/// still qualifies with the inner table names.
fn wrap_projection(plan: LogicalPlan) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::Join(_) | LogicalPlan::Filter(_) => {
            let exprs = plan
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect::<Vec<_>>();
            Ok(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(plan),
            )?))
        }
        _ => Ok(plan),
    }
}

/// Whether every node and expression of `plan` is one Databricks evaluates like DataFusion.
fn nodes_expressible(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let walked = plan.apply(|node| {
        if !node_expressible(node) {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok && walked.is_ok()
}

fn node_expressible(node: &LogicalPlan) -> bool {
    let schema = match node {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Aggregate(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::EmptyRelation(_)
        | LogicalPlan::Values(_) => input_schema(node),
        LogicalPlan::Join(join) => {
            if preserved_side_filtered(join.join_type, &join.left, &join.right) {
                return false;
            }
            input_schema(node)
        }
        LogicalPlan::TableScan(TableScan {
            table_name, source, ..
        }) => match DFSchema::try_from_qualified_schema(table_name.clone(), &source.schema()) {
            Ok(s) => s,
            Err(_) => return false,
        },
        _ => return false,
    };
    let mut ok = true;
    let _ = node.apply_expressions(|e| {
        if expr_is_remote_safe(e, &schema) {
            Ok(TreeNodeRecursion::Continue)
        } else {
            ok = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    ok
}

/// The schema a node's expressions are evaluated against: its inputs' columns.
fn input_schema(node: &LogicalPlan) -> DFSchema {
    let inputs = node.inputs();
    if inputs.is_empty() {
        return node.schema().as_ref().clone();
    }
    let mut schema = DFSchema::empty();
    for input in inputs {
        schema.merge(input.schema());
    }
    schema
}

/// Whether a non-inner join has scan filters the unparser would misplace: on a side an outer
/// join preserves (folded into `ON`, which changes the result), or on either side of a semi or
/// anti join.
fn preserved_side_filtered(join_type: JoinType, left: &LogicalPlan, right: &LogicalPlan) -> bool {
    let (left_kept, right_kept) = match join_type {
        JoinType::Left | JoinType::LeftMark => (true, false),
        JoinType::Right | JoinType::RightMark => (false, true),
        // Semi and anti joins become (NOT) EXISTS subqueries, and the unparser drops the scan
        // filters of the subquery side (TPC-H q16 returned no rows): keep both sides clean.
        JoinType::Full
        | JoinType::LeftSemi
        | JoinType::RightSemi
        | JoinType::LeftAnti
        | JoinType::RightAnti => (true, true),
        JoinType::Inner => (false, false),
    };
    (left_kept && has_scan_filters(left)) || (right_kept && has_scan_filters(right))
}

/// Whether the unparser would lift filters out of `plan` (a chain of aliases and filters over a
/// table scan) into the enclosing join.
fn has_scan_filters(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(a) => has_scan_filters(&a.input),
        LogicalPlan::Filter(_) => true,
        LogicalPlan::TableScan(scan) => !scan.filters.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_filters_wrap_the_statement() {
        assert_eq!(
            with_runtime_filter("SELECT a FROM t", Some("`a` IN (1)")),
            "SELECT * FROM (SELECT a FROM t) AS __dbfed WHERE `a` IN (1)"
        );
        assert_eq!(with_runtime_filter("SELECT 1", None), "SELECT 1");
    }

    #[test]
    fn duplicate_names_disable_runtime_filters() {
        use arrow::datatypes::{DataType, Field, Schema};
        let dup: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("A", DataType::Int64, true),
        ]));
        assert!(!unique_names(&dup));
        let ok: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        assert!(unique_names(&ok));
    }
}
