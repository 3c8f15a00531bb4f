//! Which DataFusion expressions may be evaluated by Databricks instead: the conservative rules
//! shared by the table scan (filters) and the federation (whole subplans).

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, ExprSchemable, Operator, Volatility};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;

use crate::dialect::DatabricksDialect;

/// Scalar functions (DataFusion names) that Databricks has under the same name with the same
/// semantics. Anything else is evaluated locally unless the dialect rewrites it.
///
/// Left out on purpose (unless the dialect rewrites them): `concat` (DataFusion skips NULLs,
/// Databricks returns NULL), `log` (base 10 in DataFusion, natural in Spark), `trunc` (a date
/// function in Databricks), `sha256` (binary vs hex), regular expressions (Rust vs Java
/// syntax), `to_date`/`to_char` (chrono vs Java patterns).
const SCALAR_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "asin",
    "atan",
    "atan2",
    "ascii",
    "bit_length",
    "btrim",
    "cbrt",
    "ceil",
    "character_length",
    "chr",
    "coalesce",
    "concat_ws",
    "cos",
    "cosh",
    "current_date",
    "date_part",
    "date_trunc",
    "degrees",
    "exp",
    "floor",
    "greatest",
    "initcap",
    "isnan",
    "least",
    "left",
    "ln",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "md5",
    "nullif",
    "nvl",
    "nvl2",
    "octet_length",
    "pi",
    "power",
    "radians",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "rpad",
    "rtrim",
    "signum",
    "sin",
    "sinh",
    "split_part",
    "sqrt",
    "substr",
    "tan",
    "tanh",
    "translate",
    "trim",
    "upper",
];

/// Aggregate functions Databricks has with the same name and meaning.
const AGGREGATE_FUNCTIONS: &[&str] = &[
    "avg",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "max",
    "min",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "sum",
    "var_pop",
    "var_samp",
];

/// Window functions Databricks has with the same name and meaning.
const WINDOW_FUNCTIONS: &[&str] = &[
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
];

/// Whether Databricks computes `expr` (over columns of `schema`) exactly as DataFusion would.
///
/// Conservative: unknown functions, volatile functions, subqueries, placeholders, regular
/// expressions and integer division (`/` truncates in DataFusion, not in Databricks) are not.
pub(crate) fn expr_is_remote_safe(expr: &Expr, schema: &DFSchema) -> bool {
    let mut safe = true;
    let visited = expr.apply(|e| {
        if !node_is_remote_safe(e, schema) {
            safe = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    safe && visited.is_ok()
}

fn node_is_remote_safe(e: &Expr, schema: &DFSchema) -> bool {
    match e {
        Expr::Alias(_)
        | Expr::Column(_)
        | Expr::Literal(..)
        | Expr::Like(_)
        | Expr::Not(_)
        | Expr::IsNotNull(_)
        | Expr::IsNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsNotUnknown(_)
        | Expr::Negative(_)
        | Expr::Between(_)
        | Expr::Case(_)
        | Expr::Cast(_)
        | Expr::TryCast(_)
        | Expr::InList(_)
        | Expr::GroupingSet(_) => true,
        Expr::BinaryExpr(b) => match b.op {
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::Plus
            | Operator::Minus
            | Operator::Multiply
            | Operator::Modulo
            | Operator::And
            | Operator::Or
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
            | Operator::StringConcat => true,
            Operator::Divide => {
                let integer = |x: &Expr| x.get_type(schema).map(|t| t.is_integer());
                matches!((integer(&b.left), integer(&b.right)), (Ok(l), Ok(r)) if !(l && r))
            }
            _ => false,
        },
        Expr::ScalarFunction(f) => {
            if f.func.signature().volatility == Volatility::Volatile {
                return false;
            }
            let name = f.func.name();
            SCALAR_FUNCTIONS.contains(&name) || dialect_rewrites(name, &f.args)
        }
        Expr::AggregateFunction(a) => AGGREGATE_FUNCTIONS.contains(&a.func.name()),
        Expr::WindowFunction(w) => {
            let name = w.fun.name();
            WINDOW_FUNCTIONS.contains(&name) || AGGREGATE_FUNCTIONS.contains(&name)
        }
        _ => false,
    }
}

/// Whether the Databricks dialect has its own spelling of function `name`.
fn dialect_rewrites(name: &str, args: &[Expr]) -> bool {
    let dialect = DatabricksDialect;
    let unparser = Unparser::new(&dialect);
    matches!(
        dialect.scalar_function_to_sql_overrides(&unparser, name, args),
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions::expr_fn::{lower, random, to_hex};
    use datafusion::prelude::{col, lit};

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
        .expect("schema")
    }

    #[test]
    fn plain_predicates_are_safe() {
        let s = schema();
        assert!(expr_is_remote_safe(&col("i").gt(lit(3)), &s));
        assert!(expr_is_remote_safe(&lower(col("s")).like(lit("a%")), &s));
        assert!(expr_is_remote_safe(
            &col("i").in_list(vec![lit(1), lit(2)], false),
            &s
        ));
        assert!(expr_is_remote_safe(&(col("f") / lit(2.0)).lt(lit(1.0)), &s));
    }

    #[test]
    fn semantic_traps_run_locally() {
        let s = schema();
        assert!(!expr_is_remote_safe(
            &(col("i") / lit(2_i64)).eq(lit(1_i64)),
            &s
        ));
        assert!(!expr_is_remote_safe(&random().lt(lit(0.5)), &s));
        assert!(!expr_is_remote_safe(&to_hex(col("i")).eq(lit("a")), &s));
    }
}
