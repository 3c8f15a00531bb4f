//! Runtime join filters: DataFusion's dynamic filters as SQL predicates.
//!
//! When a hash join's build side is complete, DataFusion fills the
//! `DynamicFilterPhysicalExpr` it pushed into the probe-side scan with what it saw: per join key
//! `key >= min AND key <= max`, and for small build sides `key IN (v1, v2, …)` (or a hash-table
//! lookup for large ones), possibly routed per hash partition through a `CASE`. A Databricks scan
//! that receives such a filter adds [`runtime_filter_sql`]'s predicate to its statement, so only
//! rows that can match leave the warehouse.
//!
//! The translation is conservative: the SQL predicate is always *implied* by the filter (it may
//! keep more rows, never fewer). Unsupported parts are dropped only where that keeps the
//! predicate implied: a conjunct of an `AND` may go, but an `OR` with an unsupported side is
//! dropped as a whole, a `NOT` needs an exact operand, and a hash-routing `CASE` becomes the `OR`
//! of its branches.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, Operator, binary_expr};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column as PhysicalColumn, InListExpr, IsNotNullExpr,
    IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::PhysicalExpr;

use crate::dialect::expr_to_sql;

/// Default largest IN list sent to the warehouse; longer lists become their min/max bounds.
///
/// 100 000 integer keys add about 700 KB to a statement (Databricks accepts 16 MiB), and let a
/// local table of up to 100 000 rows (TPC-H SF 1's 30 000 customers of one segment) narrow a
/// remote join to the rows that match.
pub const DEFAULT_MAX_IN_LIST: usize = 100_000;

/// A SQL predicate over `schema`'s columns equivalent to (or implied by) the current value of
/// `filters`, or `None` when none of them can be expressed.
///
/// `schema` is the schema the filters' column indices refer to (the scan's output); columns are
/// written by name in backticks, literals as Databricks literals (pass the statement through
/// [`crate::params::parameterize`] to move them into parameters). IN lists longer than
/// `max_in_list` are replaced by the bounds of their values. A filter that is still the
/// placeholder `true` contributes nothing.
pub fn runtime_filter_sql(
    filters: &[Arc<dyn PhysicalExpr>],
    schema: &Schema,
    max_in_list: usize,
) -> Option<String> {
    let translator = Translator {
        schema,
        max_in_list,
    };
    let conjuncts: Vec<Expr> = filters
        .iter()
        .filter_map(|f| snapshot_physical_expr(Arc::clone(f)).ok())
        .filter_map(|f| translator.translate(&f))
        .filter(|t| !t.is_true())
        .map(|t| t.expr)
        .collect();
    let predicate = conjuncts.into_iter().reduce(Expr::and)?;
    expr_to_sql(&predicate).ok()
}

/// A translated predicate and whether it is equivalent to its source (`exact`) or only implied
/// by it.
#[derive(Debug, Clone)]
struct Translated {
    expr: Expr,
    exact: bool,
}

impl Translated {
    fn exact(expr: Expr) -> Self {
        Self { expr, exact: true }
    }

    fn is_true(&self) -> bool {
        matches!(
            self.expr,
            Expr::Literal(ScalarValue::Boolean(Some(true)), _)
        )
    }

    fn is_false(&self) -> bool {
        self.exact
            && matches!(
                self.expr,
                Expr::Literal(ScalarValue::Boolean(Some(false)), _)
            )
    }
}

struct Translator<'a> {
    schema: &'a Schema,
    max_in_list: usize,
}

impl Translator<'_> {
    /// The predicate for `expr` (boolean), or `None` when nothing implied by it can be expressed.
    fn translate(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<Translated> {
        let expr = expr.as_ref();
        if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
            return self.binary(binary);
        }
        if let Some(list) = expr.downcast_ref::<InListExpr>() {
            return self.in_list(list);
        }
        if let Some(case) = expr.downcast_ref::<CaseExpr>() {
            return self.case(case);
        }
        if let Some(not) = expr.downcast_ref::<NotExpr>() {
            let inner = self.translate(not.arg())?;
            return inner
                .exact
                .then(|| Translated::exact(datafusion::logical_expr::not(inner.expr)));
        }
        if let Some(is_null) = expr.downcast_ref::<IsNullExpr>() {
            return Some(Translated::exact(self.value(is_null.arg())?.is_null()));
        }
        if let Some(is_not_null) = expr.downcast_ref::<IsNotNullExpr>() {
            return Some(Translated::exact(
                self.value(is_not_null.arg())?.is_not_null(),
            ));
        }
        if let Some(literal) = expr.downcast_ref::<Literal>() {
            return match literal.value() {
                ScalarValue::Boolean(Some(b)) => Some(Translated::exact(Expr::Literal(
                    ScalarValue::Boolean(Some(*b)),
                    None,
                ))),
                _ => None,
            };
        }
        if expr.downcast_ref::<PhysicalColumn>().is_some() {
            // A boolean column used as a predicate.
            return Some(Translated::exact(self.value_of(expr)?));
        }
        None
    }

    fn binary(&self, binary: &BinaryExpr) -> Option<Translated> {
        match binary.op() {
            Operator::And => {
                let left = self.translate(binary.left());
                let right = self.translate(binary.right());
                match (left, right) {
                    (Some(l), Some(r)) => {
                        if l.is_false() || r.is_false() {
                            return Some(Translated::exact(false_lit()));
                        }
                        let exact = l.exact && r.exact;
                        let expr = match (l.is_true(), r.is_true()) {
                            (true, _) => r.expr,
                            (_, true) => l.expr,
                            _ => l.expr.and(r.expr),
                        };
                        Some(Translated { expr, exact })
                    }
                    // Dropping a conjunct keeps the predicate implied.
                    (Some(one), None) | (None, Some(one)) => Some(Translated {
                        expr: one.expr,
                        exact: false,
                    }),
                    (None, None) => None,
                }
            }
            Operator::Or => {
                // Both sides are needed: dropping one would lose rows the other keeps.
                let l = self.translate(binary.left())?;
                let r = self.translate(binary.right())?;
                let exact = l.exact && r.exact;
                if l.is_true() || r.is_true() {
                    return Some(Translated {
                        expr: true_lit(),
                        exact,
                    });
                }
                let expr = match (l.is_false(), r.is_false()) {
                    (true, _) => r.expr,
                    (_, true) => l.expr,
                    _ => l.expr.or(r.expr),
                };
                Some(Translated { expr, exact })
            }
            op @ (Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom) => {
                let left = self.value(binary.left())?;
                let right = self.value(binary.right())?;
                Some(Translated::exact(binary_expr(left, *op, right)))
            }
            _ => None,
        }
    }

    fn in_list(&self, list: &InListExpr) -> Option<Translated> {
        if let Some(function) = list.expr().downcast_ref::<ScalarFunctionExpr>()
            && function.name() == "struct"
        {
            return self.struct_in_list(function, list);
        }
        let value = self.value(list.expr())?;
        let items = list
            .list()
            .iter()
            .map(|item| Some(item.downcast_ref::<Literal>()?.value().clone()))
            .collect::<Option<Vec<_>>>()?;
        self.membership(value, items, list.negated())
    }

    /// A multi-column join key, `struct(a, b) IN (struct(1, 2), …)`: one IN list per column
    /// (`a IN (1, …) AND b IN (2, …)`), implied by the pairs. A column that cannot be written
    /// is left out; a negated list implies nothing per column.
    fn struct_in_list(
        &self,
        function: &ScalarFunctionExpr,
        list: &InListExpr,
    ) -> Option<Translated> {
        if list.negated() {
            return None;
        }
        let tuples = list
            .list()
            .iter()
            .map(|item| match item.downcast_ref::<Literal>()?.value() {
                ScalarValue::Struct(tuple) => Some(Arc::clone(tuple)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let mut conjuncts = Vec::new();
        for (i, arg) in function.args().iter().enumerate() {
            let Some(value) = self.value(arg) else {
                continue;
            };
            let items = tuples
                .iter()
                .map(|tuple| {
                    let column = tuple.columns().get(i)?;
                    ScalarValue::try_from_array(column.as_ref(), 0).ok()
                })
                .collect::<Option<Vec<_>>>()?;
            let Some(member) = self.membership(value, items, false) else {
                continue;
            };
            if member.is_false() {
                return Some(member);
            }
            conjuncts.push(member.expr);
        }
        Some(Translated {
            expr: conjuncts.into_iter().reduce(Expr::and)?,
            exact: false,
        })
    }

    /// `value [NOT] IN (items)` with duplicates removed; above `max_in_list` distinct values,
    /// the bounds of the values (implied, not exact; nothing for `NOT IN`).
    fn membership(
        &self,
        value: Expr,
        items: Vec<ScalarValue>,
        negated: bool,
    ) -> Option<Translated> {
        let mut distinct = HashSet::new();
        let mut values = Vec::new();
        let mut min: Option<ScalarValue> = None;
        let mut max: Option<ScalarValue> = None;
        let mut has_null = false;
        for literal in items {
            if literal.is_null() {
                // `x IN (…, NULL)` is never true because of the NULL alone;
                // `x NOT IN (…, NULL)` is never true at all.
                has_null = true;
                continue;
            }
            if min
                .as_ref()
                .is_none_or(|m| literal.partial_cmp(m) == Some(std::cmp::Ordering::Less))
            {
                min = Some(literal.clone());
            }
            if max
                .as_ref()
                .is_none_or(|m| literal.partial_cmp(m) == Some(std::cmp::Ordering::Greater))
            {
                max = Some(literal.clone());
            }
            if values.len() <= self.max_in_list && distinct.insert(literal.clone()) {
                values.push(Expr::Literal(literal, None));
            }
        }
        if negated && has_null {
            return Some(Translated::exact(false_lit()));
        }
        if negated {
            // NOT IN: exact only with the whole list; otherwise nothing is implied.
            return (values.len() <= self.max_in_list)
                .then(|| Translated::exact(value.in_list(values, true)));
        }
        let (Some(min), Some(max)) = (min, max) else {
            // Nothing but NULLs: no row passes.
            return Some(Translated::exact(false_lit()));
        };
        if values.len() <= self.max_in_list {
            return Some(Translated::exact(value.in_list(values, false)));
        }
        // Any mismatch in comparability (e.g. NaN) makes the bounds unusable.
        let bounds = value
            .clone()
            .gt_eq(Expr::Literal(min, None))
            .and(value.lt_eq(Expr::Literal(max, None)));
        Some(Translated {
            expr: bounds,
            exact: false,
        })
    }

    /// `CASE [e] WHEN … THEN p1 … ELSE pn END` as a predicate: the rows it keeps satisfy one of
    /// the branch predicates, so their `OR` is implied (the routing condition is dropped).
    fn case(&self, case: &CaseExpr) -> Option<Translated> {
        let mut branches = Vec::new();
        for (_, then) in case.when_then_expr() {
            branches.push(self.translate(then)?);
        }
        // Without ELSE the value is NULL, which keeps no row.
        if let Some(otherwise) = case.else_expr() {
            branches.push(self.translate(otherwise)?);
        }
        let kept: Vec<Translated> = branches.into_iter().filter(|b| !b.is_false()).collect();
        if kept.iter().any(Translated::is_true) {
            return Some(Translated {
                expr: true_lit(),
                exact: false,
            });
        }
        let expr = kept
            .into_iter()
            .map(|b| b.expr)
            .reduce(Expr::or)
            .unwrap_or_else(false_lit);
        Some(Translated { expr, exact: false })
    }

    /// A scalar operand: a column of `schema`, a literal or a cast of one.
    fn value(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
        self.value_of(expr.as_ref())
    }

    fn value_of(&self, expr: &dyn PhysicalExpr) -> Option<Expr> {
        if let Some(column) = expr.downcast_ref::<PhysicalColumn>() {
            let field = self.schema.fields().get(column.index())?;
            if field.name() != column.name() {
                return None;
            }
            return Some(Expr::Column(Column::new_unqualified(field.name())));
        }
        if let Some(literal) = expr.downcast_ref::<Literal>() {
            return Some(Expr::Literal(literal.value().clone(), None));
        }
        if let Some(cast) = expr.downcast_ref::<CastExpr>() {
            let inner = self.value(cast.expr())?;
            return Some(Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(inner),
                cast.cast_type().clone(),
            )));
        }
        None
    }
}

fn true_lit() -> Expr {
    Expr::Literal(ScalarValue::Boolean(Some(true)), None)
}

fn false_lit() -> Expr {
    Expr::Literal(ScalarValue::Boolean(Some(false)), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::{
        DynamicFilterPhysicalExpr, col, in_list, is_null, lit,
    };

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("o_orderkey", DataType::Int64, false),
            Field::new("o_comment", DataType::Utf8, true),
        ])
    }

    fn key() -> Arc<dyn PhysicalExpr> {
        col("o_orderkey", &schema()).expect("column")
    }

    fn bin(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    }

    fn dynamic(initial: Arc<dyn PhysicalExpr>) -> Arc<DynamicFilterPhysicalExpr> {
        Arc::new(DynamicFilterPhysicalExpr::new(vec![key()], initial))
    }

    fn bounds(min: i64, max: i64) -> Arc<dyn PhysicalExpr> {
        bin(
            bin(key(), Operator::GtEq, lit(min)),
            Operator::And,
            bin(key(), Operator::LtEq, lit(max)),
        )
    }

    fn membership(values: &[i64]) -> Arc<dyn PhysicalExpr> {
        let array = Arc::new(Int64Array::from(values.to_vec()));
        Arc::new(InListExpr::try_new_from_array(key(), array, false, &schema()).expect("in list"))
    }

    #[test]
    fn placeholder_filter_adds_nothing() {
        let filter = dynamic(lit(true));
        let sql = runtime_filter_sql(&[filter as Arc<dyn PhysicalExpr>], &schema(), 10);
        assert_eq!(sql, None);
    }

    #[test]
    fn bounds_and_small_in_list_from_a_filled_dynamic_filter() {
        let filter = dynamic(lit(true));
        filter
            .update(bin(bounds(3, 7), Operator::And, membership(&[3, 5, 7])))
            .expect("update");
        let sql = runtime_filter_sql(&[filter as Arc<dyn PhysicalExpr>], &schema(), 10)
            .expect("a predicate");
        assert_eq!(
            sql,
            "(((`o_orderkey` >= 3) AND (`o_orderkey` <= 7)) AND `o_orderkey` IN (3, 5, 7))"
        );
    }

    #[test]
    fn long_in_lists_become_bounds() {
        let filter = dynamic(lit(true));
        filter.update(membership(&[9, 2, 40, 7])).expect("update");
        let sql = runtime_filter_sql(&[filter as Arc<dyn PhysicalExpr>], &schema(), 3)
            .expect("a predicate");
        assert_eq!(sql, "((`o_orderkey` >= 2) AND (`o_orderkey` <= 40))");
    }

    #[test]
    fn unsupported_conjunct_is_dropped_but_an_or_side_drops_the_or() {
        // A LIKE is not translated.
        let like: Arc<dyn PhysicalExpr> =
            Arc::new(datafusion::physical_expr::expressions::LikeExpr::new(
                false,
                false,
                col("o_comment", &schema()).expect("column"),
                lit("a%"),
            ));
        let and = bin(bounds(1, 2), Operator::And, Arc::clone(&like));
        let sql = runtime_filter_sql(&[and], &schema(), 10).expect("the bounds remain");
        assert_eq!(sql, "((`o_orderkey` >= 1) AND (`o_orderkey` <= 2))");

        let or = bin(bounds(1, 2), Operator::Or, like);
        assert_eq!(runtime_filter_sql(&[or], &schema(), 10), None);
    }

    #[test]
    fn not_needs_an_exact_operand() {
        let exact: Arc<dyn PhysicalExpr> = Arc::new(NotExpr::new(bounds(1, 2)));
        let sql = runtime_filter_sql(&[exact], &schema(), 10).expect("exact operand");
        assert_eq!(sql, "NOT ((`o_orderkey` >= 1) AND (`o_orderkey` <= 2))");
        // NOT of a min/max-reduced list would remove rows the join needs.
        let inexact: Arc<dyn PhysicalExpr> = Arc::new(NotExpr::new(membership(&[1, 2, 3, 4])));
        assert_eq!(runtime_filter_sql(&[inexact], &schema(), 2), None);
    }

    #[test]
    fn null_aware_and_hash_routed_filters() {
        let null_or_in = bin(
            is_null(key()).expect("is null"),
            Operator::Or,
            membership(&[1, 2]),
        );
        let sql = runtime_filter_sql(&[null_or_in], &schema(), 10).expect("predicate");
        assert_eq!(sql, "(`o_orderkey` IS NULL OR `o_orderkey` IN (1, 2))");

        // Partitioned joins route rows by hash: CASE <hash> WHEN 0 THEN p0 WHEN 1 THEN p1 ELSE false.
        let routing = lit(ScalarValue::UInt64(Some(0)));
        let case: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                Some(routing),
                vec![
                    (lit(ScalarValue::UInt64(Some(0))), bounds(1, 5)),
                    (lit(ScalarValue::UInt64(Some(1))), bounds(10, 20)),
                ],
                Some(lit(false)),
            )
            .expect("case"),
        );
        let sql = runtime_filter_sql(&[case], &schema(), 10).expect("predicate");
        assert_eq!(
            sql,
            "(((`o_orderkey` >= 1) AND (`o_orderkey` <= 5)) OR ((`o_orderkey` >= 10) AND (`o_orderkey` <= 20)))"
        );
    }

    #[test]
    fn in_list_with_nulls_and_string_literals() {
        let comment = col("o_comment", &schema()).expect("column");
        let list = in_list(
            comment,
            vec![lit("it's"), lit(ScalarValue::Utf8(None))],
            &false,
            &schema(),
        )
        .expect("in list");
        let sql = runtime_filter_sql(&[list], &schema(), 10).expect("predicate");
        assert_eq!(sql, r"`o_comment` IN ('it\'s')");
    }

    #[test]
    fn in_lists_drop_duplicates() {
        let sql =
            runtime_filter_sql(&[membership(&[5, 3, 5, 3, 5])], &schema(), 10).expect("predicate");
        assert_eq!(sql, "`o_orderkey` IN (5, 3)");
    }

    #[test]
    fn two_column_keys_become_one_in_list_per_column() {
        use arrow::array::{ArrayRef, StringArray, StructArray};
        use datafusion::functions::core::r#struct;
        use datafusion::physical_expr::ScalarFunctionExpr;

        let schema = schema();
        let keys = vec![key(), col("o_comment", &schema).expect("column")];
        let fields = vec![
            Arc::new(Field::new("c0", DataType::Int64, true)),
            Arc::new(Field::new("c1", DataType::Utf8, true)),
        ];
        let tuple: Arc<dyn PhysicalExpr> = Arc::new(ScalarFunctionExpr::new(
            "struct",
            r#struct(),
            keys,
            Arc::new(Field::new(
                "struct",
                DataType::Struct(fields.clone().into()),
                true,
            )),
            Arc::new(datafusion::config::ConfigOptions::default()),
        ));
        let pairs = StructArray::from(vec![
            (
                Arc::clone(&fields[0]),
                Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef,
            ),
            (
                Arc::clone(&fields[1]),
                Arc::new(StringArray::from(vec![Some("a"), Some("a"), None])) as ArrayRef,
            ),
        ]);
        let list: Arc<dyn PhysicalExpr> = Arc::new(
            InListExpr::try_new_from_array(tuple, Arc::new(pairs), false, &schema)
                .expect("in list"),
        );
        let sql = runtime_filter_sql(std::slice::from_ref(&list), &schema, 10).expect("predicate");
        assert_eq!(sql, "(`o_orderkey` IN (1, 2) AND `o_comment` IN ('a'))");
        // Over the limit, each column falls back to its bounds on its own.
        let sql = runtime_filter_sql(&[list], &schema, 1).expect("predicate");
        assert_eq!(
            sql,
            "(((`o_orderkey` >= 1) AND (`o_orderkey` <= 2)) AND `o_comment` IN ('a'))"
        );
    }

    #[test]
    fn columns_must_match_the_schema() {
        let other = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
        assert_eq!(runtime_filter_sql(&[bounds(1, 2)], &other, 10), None);
    }
}
