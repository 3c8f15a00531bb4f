//! The federation's safety net: a subplan is sent to Databricks only if the SQL written for it,
//! planned again by DataFusion, has the subplan's output schema.
//!
//! DataFusion's unparser works on optimized plans it was not always written for: it can
//! produce SQL that refers to columns that do not exist, that returns columns in another
//! order, or that names them differently. Planning the generated SQL against the remote
//! tables' schemas catches those mistakes before a statement is sent; the federation rule
//! then pushes smaller subplans instead.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Fields};
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::registry::FunctionRegistry;
use datafusion::logical_expr::{
    AggregateUDF, Expr, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::optimizer::OptimizerConfig;
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::unparser::Unparser;

use crate::dialect::{DatabricksDialect, rewrite_statement};
use crate::params::SparkSqlDialect;

/// A session with DataFusion's default functions, for optimizer configurations without a
/// function registry.
static DEFAULT_STATE: LazyLock<SessionState> =
    LazyLock::new(|| SessionStateBuilder::new().with_default_features().build());

/// Checks that the SQL of a remote plan means what the plan means (see the module docs).
pub(crate) struct Checker<'a> {
    registry: &'a dyn FunctionRegistry,
    planners: Vec<Arc<dyn ExprPlanner>>,
    options: Arc<ConfigOptions>,
}

impl<'a> Checker<'a> {
    /// A checker with the functions and options of the optimizer's session.
    pub(crate) fn new(config: &'a dyn OptimizerConfig) -> Self {
        let registry: &'a dyn FunctionRegistry = match config.function_registry() {
            Some(registry) => registry,
            None => &*DEFAULT_STATE,
        };
        Self {
            planners: registry.expr_planners(),
            registry,
            options: config.options(),
        }
    }

    /// The SQL written for `plan`, planned again: an error unless it parses, plans and
    /// returns `plan`'s columns (count, names in order, compatible types).
    pub(crate) fn check(&self, plan: &LogicalPlan) -> Result<()> {
        let mut statement = Unparser::new(&DatabricksDialect).plan_to_sql(plan)?;
        rewrite_statement(&mut statement);
        let sql = statement.to_string();
        let mut parsed = Parser::parse_sql(&SparkSqlDialect, &sql)
            .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
        let statement = match (parsed.pop(), parsed.is_empty()) {
            (Some(statement), true) => statement,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "the SQL written for a subplan is not one statement: {sql}"
                )));
            }
        };
        let provider = RemoteTables {
            tables: scanned_tables(plan)?,
            checker: self,
        };
        let options = ParserOptions::from(&self.options.sql_parser);
        let replanned = SqlToRel::new_with_options(&provider, options)
            .sql_statement_to_plan(statement)
            .map_err(|e| {
                DataFusionError::Plan(format!("the SQL written does not plan: {e}; sql: {sql}"))
            })?;
        same_columns(
            plan.schema().fields(),
            replanned.schema().fields(),
            &named_columns(&replanned),
        )
        .map_err(|why| {
            DataFusionError::Plan(format!(
                "the SQL written returns other columns than the plan ({why}); sql: {sql}"
            ))
        })
    }
}

/// The tables `plan` scans, by name, with their sources.
fn scanned_tables(plan: &LogicalPlan) -> Result<HashMap<TableReference, Arc<dyn TableSource>>> {
    let mut tables = HashMap::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.clone(), Arc::clone(&scan.source));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(tables)
}

/// For each output column of a planned statement, whether SQL itself names it (a column or an
/// alias): other expressions are named by each engine its own way, and results are matched by
/// position.
fn named_columns(plan: &LogicalPlan) -> Vec<bool> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(projection) => {
                return projection
                    .expr
                    .iter()
                    .map(|e| matches!(e, Expr::Column(_) | Expr::Alias(_)))
                    .collect();
            }
            LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Distinct(_) => match node.inputs().first() {
                Some(input) => node = input,
                None => break,
            },
            _ => break,
        }
    }
    vec![true; plan.schema().fields().len()]
}

/// Whether `actual` has the columns of `expected`: the same count, the same names in the same
/// order where `named` says SQL names the column, and types a cast reconciles without
/// changing the kind of value.
pub(crate) fn same_columns(
    expected: &Fields,
    actual: &Fields,
    named: &[bool],
) -> std::result::Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "{} columns instead of {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (want, got)) in expected.iter().zip(actual.iter()).enumerate() {
        if named.get(i).copied().unwrap_or(true) && want.name() != got.name() {
            return Err(format!(
                "column {i} is named {:?} instead of {:?}",
                got.name(),
                want.name()
            ));
        }
        if !compatible(want.data_type(), got.data_type()) {
            return Err(format!(
                "column {:?} is {} instead of {}",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
    }
    Ok(())
}

/// Whether values of type `b` stand for values of type `a` (after the cast every remote
/// result goes through).
fn compatible(a: &DataType, b: &DataType) -> bool {
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let binary = |t: &DataType| {
        matches!(
            t,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
    };
    a.equals_datatype(b)
        || a.is_null()
        || b.is_null()
        || (a.is_numeric() && b.is_numeric())
        || (string(a) && string(b))
        || (binary(a) && binary(b))
        || (a.is_temporal()
            && b.is_temporal()
            && std::mem::discriminant(a) == std::mem::discriminant(b))
        || match (a, b) {
            (DataType::Dictionary(_, v), other) | (other, DataType::Dictionary(_, v)) => {
                compatible(v, other)
            }
            _ => false,
        }
}

/// The context the generated SQL is planned in: the scanned tables under their remote names,
/// and the session's functions.
struct RemoteTables<'c, 'a> {
    tables: HashMap<TableReference, Arc<dyn TableSource>>,
    checker: &'c Checker<'a>,
}

/// DataFusion names of functions the dialect writes with their Databricks names.
fn datafusion_name(name: &str) -> &str {
    match name {
        "array" => "make_array",
        other => other,
    }
}

impl ContextProvider for RemoteTables<'_, '_> {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        self.tables
            .iter()
            .find(|(known, _)| known.resolved_eq(&name) && name.resolved_eq(known))
            .map(|(_, source)| Arc::clone(source))
            .ok_or_else(|| {
                DataFusionError::Plan(format!("table {name} is not part of the subplan"))
            })
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.checker.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.checker.registry.udf(datafusion_name(name)).ok()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.checker.registry.higher_order_function(name).ok()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.checker.registry.udaf(name).ok()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.checker.registry.udwf(name).ok()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.checker.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.checker.registry.udfs().into_iter().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.checker
            .registry
            .higher_order_function_names()
            .into_iter()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.checker.registry.udafs().into_iter().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.checker.registry.udwfs().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn fields(f: Vec<Field>) -> Fields {
        Fields::from(f)
    }

    #[test]
    fn columns_must_match_in_order() {
        let want = fields(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let named = [true, true];
        assert!(same_columns(&want, &want, &named).is_ok());
        let swapped = fields(vec![
            Field::new("b", DataType::Utf8, true),
            Field::new("a", DataType::Int64, true),
        ]);
        let err = same_columns(&want, &swapped, &named).expect_err("order differs");
        assert!(err.contains("column 0"), "{err}");
        let fewer = fields(vec![Field::new("a", DataType::Int64, true)]);
        assert!(same_columns(&want, &fewer, &named).is_err());
        let retyped = fields(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]);
        assert!(same_columns(&want, &retyped, &named).is_err());
        let renamed = fields(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("upper(b)", DataType::Utf8, true),
        ]);
        assert!(same_columns(&want, &renamed, &named).is_err());
        assert!(same_columns(&want, &renamed, &[true, false]).is_ok());
    }

    #[test]
    fn types_a_cast_reconciles_are_compatible() {
        assert!(compatible(&DataType::Decimal128(38, 2), &DataType::Float64));
        assert!(compatible(&DataType::Utf8, &DataType::Utf8View));
        assert!(compatible(&DataType::Null, &DataType::Date32));
        assert!(!compatible(&DataType::Utf8, &DataType::Int64));
        assert!(!compatible(&DataType::Date32, &DataType::Int32));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::functions_aggregate::expr_fn::sum;
    use datafusion::logical_expr::{LogicalPlanBuilder, logical_plan::builder::LogicalTableSource};
    use datafusion::optimizer::OptimizerContext;
    use datafusion::prelude::col;

    fn scan() -> LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Decimal128(18, 2), true),
        ]);
        LogicalPlanBuilder::scan(
            TableReference::full("samples", "tpch", "t"),
            Arc::new(LogicalTableSource::new(Arc::new(schema))),
            None,
        )
        .expect("scan")
    }

    /// TPC-H q11's wrong rows: an aggregate at the root of a pushed plan is written with its
    /// aggregates before its group keys, so positional results swapped columns. The check sees it.
    #[test]
    fn an_aggregate_root_written_out_of_order_is_refused() {
        let config = OptimizerContext::new();
        let checker = Checker::new(&config);
        let aggregate = scan()
            .aggregate(vec![col("k")], vec![sum(col("v"))])
            .expect("aggregate")
            .build()
            .expect("plan");
        let err = checker
            .check(&aggregate)
            .expect_err("group key comes out second");
        assert!(err.to_string().contains("other columns"), "{err}");
        let prepared = crate::dialect::prepare_plan(aggregate).expect("prepares");
        checker
            .check(&prepared)
            .expect("a projection keeps the schema order");
    }

    #[test]
    fn a_plain_projection_passes() {
        let config = OptimizerContext::new();
        let plan = scan()
            .project(vec![col("v"), col("k")])
            .expect("projection")
            .build()
            .expect("plan");
        Checker::new(&config).check(&plan).expect("same columns");
    }
}
