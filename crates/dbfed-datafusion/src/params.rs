//! Moving literal values out of generated SQL into statement parameters.
//!
//! [`parameterize`] parses a statement the way Databricks does (backtick identifiers, backslash
//! escapes in string literals), replaces its literal values with named markers `:__p0`,
//! `:__p1`, … and returns the values as typed [`Param`]s. A value taken from a user query
//! therefore never reaches the SQL text: injection through literals is impossible, whatever the
//! value contains.
//!
//! Literals stay in the text where Databricks requires a constant or the value is a piece of
//! syntax rather than data: `LIMIT`/`OFFSET` counts, `GROUP BY`/`ORDER BY` ordinals, interval
//! quantities, window frame offsets, units and formats of date/time functions (`date_trunc`'s
//! unit, …), scales of `round`, `LIKE … ESCAPE` characters, `TRUE`/`FALSE`/`NULL` and hex
//! literals. String literals left in the text are written with Databricks' escaping.

use std::any::TypeId;
use std::ops::ControlFlow;

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{
    self, Expr, GroupByExpr, Ident, LimitClause, OrderByKind, Query, Select, TimezoneInfo, Value,
    VisitMut, VisitorMut, WindowFrameBound, WindowType,
};
use datafusion::sql::sqlparser::dialect::{
    DatabricksDialect as ParserDatabricks, Dialect as ParserDialect,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;
use dbfed_databricks::{Param, ParamValue};

use crate::dialect::{self, string_literal};

/// Prefix of the generated parameter names (`:__p0`, `:__p1`, …).
pub const PARAM_PREFIX: &str = "__p";

/// SQL text whose literal values travel as named statement parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterizedSql {
    /// The statement text, with `:name` markers where literals were.
    pub sql: String,
    /// The values of the markers.
    pub params: Vec<Param>,
}

/// Replaces the literal values of `sql` with named parameters.
///
/// `sql` must be one statement in Databricks SQL (as produced by [`crate::dialect`]). String
/// literals become `STRING` parameters, `DATE '…'`/`TIMESTAMP '…'`/`TIMESTAMP_NTZ '…'` keep
/// their type, integer literals become `INT`/`BIGINT` (`DECIMAL(p,0)` beyond 64 bits), decimal
/// literals `DECIMAL(p,s)` and literals with an exponent `DOUBLE`, exactly the types Databricks
/// gives the literals themselves. Each marker is written `CAST(:__pN AS <type>)`: a no-op for
/// Databricks, and a type for engines that plan before binding. The statement also gets [`dialect::rewrite_statement`]'s
/// fixes. Errors: the text does not parse, or holds no or several statements.
pub fn parameterize(sql: &str) -> Result<ParameterizedSql> {
    let mut statements = Parser::parse_sql(&SparkSqlDialect, sql)
        .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
    let mut statement = match (statements.pop(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => {
            return Err(DataFusionError::Plan(
                "cannot parameterize an empty statement".to_owned(),
            ));
        }
        (Some(_), false) => {
            return Err(DataFusionError::Plan(format!(
                "cannot parameterize {} statements at once: send one statement per request",
                statements.len() + 1
            )));
        }
    };
    dialect::rewrite_statement_types(&mut statement);
    let _ = statement.visit(&mut Protector);
    let mut extractor = Extractor { params: Vec::new() };
    let _ = statement.visit(&mut extractor);
    dialect::rewrite_statement(&mut statement);
    Ok(ParameterizedSql {
        sql: statement.to_string(),
        params: extractor.params,
    })
}

/// sqlparser's Databricks dialect with Databricks' reading of string literals: a backslash
/// escapes the next character (`'it\'s'`, `'C:\\dir'`).
///
/// sqlparser's `DatabricksDialect` reads them ANSI-style (no escapes), which would give values
/// different from what the warehouse sees. This dialect reports itself as `DatabricksDialect` to
/// the parser so every other Databricks-specific rule still applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct SparkSqlDialect;

impl ParserDialect for SparkSqlDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<ParserDatabricks>()
    }
    fn supports_string_literal_backslash_escape(&self) -> bool {
        true
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ParserDatabricks.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        ParserDatabricks.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        ParserDatabricks.is_identifier_part(ch)
    }
    fn supports_numeric_prefix(&self) -> bool {
        ParserDatabricks.supports_numeric_prefix()
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        ParserDatabricks.supports_filter_during_aggregation()
    }
    fn supports_group_by_expr(&self) -> bool {
        ParserDatabricks.supports_group_by_expr()
    }
    fn supports_table_versioning(&self) -> bool {
        ParserDatabricks.supports_table_versioning()
    }
    fn supports_lambda_functions(&self) -> bool {
        ParserDatabricks.supports_lambda_functions()
    }
    fn supports_select_wildcard_except(&self) -> bool {
        ParserDatabricks.supports_select_wildcard_except()
    }
    fn require_interval_qualifier(&self) -> bool {
        ParserDatabricks.require_interval_qualifier()
    }
    fn supports_struct_literal(&self) -> bool {
        ParserDatabricks.supports_struct_literal()
    }
    fn supports_nested_comments(&self) -> bool {
        ParserDatabricks.supports_nested_comments()
    }
    fn supports_group_by_with_modifier(&self) -> bool {
        ParserDatabricks.supports_group_by_with_modifier()
    }
    fn supports_values_as_table_factor(&self) -> bool {
        ParserDatabricks.supports_values_as_table_factor()
    }
    fn supports_optimize_table(&self) -> bool {
        ParserDatabricks.supports_optimize_table()
    }
    fn supports_bang_not_operator(&self) -> bool {
        ParserDatabricks.supports_bang_not_operator()
    }
    fn supports_cte_without_as(&self) -> bool {
        ParserDatabricks.supports_cte_without_as()
    }
    fn supports_select_item_multi_column_alias(&self) -> bool {
        ParserDatabricks.supports_select_item_multi_column_alias()
    }
}

/// Functions whose first argument is a unit, field name or format that must stay a constant.
const CONSTANT_FIRST_ARG: &[&str] = &[
    "date_trunc",
    "datetrunc",
    "date_part",
    "datepart",
    "timestampadd",
    "timestampdiff",
    "date_add",
    "dateadd",
    "date_diff",
    "datediff",
];

/// Functions whose arguments after the first must stay constants (scales, formats, units).
const CONSTANT_LATER_ARGS: &[&str] = &[
    "round",
    "bround",
    "trunc",
    "to_date",
    "to_timestamp",
    "to_timestamp_ntz",
    "to_timestamp_ltz",
    "date_format",
    "from_unixtime",
    "unix_timestamp",
    "to_unix_timestamp",
    "format_number",
    "percentile",
    "percentile_approx",
    "approx_percentile",
];

/// First pass: turns the literals that must stay in the text into verbatim nodes the second
/// pass does not touch.
struct Protector;

/// `expr` as a verbatim node if it is a literal (strings with Databricks escaping).
fn protect(expr: &mut Expr) {
    let replacement = match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => string_literal(s),
            Value::Number(n, long) => verbatim(if *long { format!("{n}L") } else { n.clone() }),
            _ => return,
        },
        Expr::UnaryOp { expr: inner, .. } => return protect(inner),
        Expr::Nested(inner) => return protect(inner),
        _ => return,
    };
    *expr = replacement;
}

fn verbatim(text: String) -> Expr {
    Expr::Identifier(Ident {
        value: text,
        quote_style: None,
        span: Span::empty(),
    })
}

fn protect_frame(bound: &mut WindowFrameBound) {
    match bound {
        WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) => protect(e),
        _ => {}
    }
}

fn protect_window(spec: &mut ast::WindowSpec) {
    if let Some(frame) = &mut spec.window_frame {
        protect_frame(&mut frame.start_bound);
        if let Some(end) = &mut frame.end_bound {
            protect_frame(end);
        }
    }
}

impl VisitorMut for Protector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        match &mut query.limit_clause {
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if let Some(limit) = limit {
                    protect(limit);
                }
                if let Some(offset) = offset {
                    protect(&mut offset.value);
                }
                limit_by.iter_mut().for_each(protect);
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                protect(offset);
                protect(limit);
            }
            None => {}
        }
        if let Some(fetch) = &mut query.fetch
            && let Some(quantity) = &mut fetch.quantity
        {
            protect(quantity);
        }
        if let Some(order_by) = &mut query.order_by
            && let OrderByKind::Expressions(exprs) = &mut order_by.kind
        {
            for e in exprs {
                protect_ordinal(&mut e.expr);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
            exprs.iter_mut().for_each(protect_ordinal);
        }
        for window in &mut select.named_window {
            if let ast::NamedWindowExpr::WindowSpec(spec) = &mut window.1 {
                protect_window(spec);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Interval(interval) => protect(&mut interval.value),
            Expr::Function(function) => {
                if let Some(WindowType::WindowSpec(spec)) = &mut function.over {
                    protect_window(spec);
                }
                let name = function
                    .name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.to_ascii_lowercase())
                    .unwrap_or_default();
                let first = CONSTANT_FIRST_ARG.contains(&name.as_str());
                let later = CONSTANT_LATER_ARGS.contains(&name.as_str());
                if (first || later)
                    && let ast::FunctionArguments::List(list) = &mut function.args
                {
                    for (i, arg) in list.args.iter_mut().enumerate() {
                        let constant = (first && i == 0) || (later && i > 0);
                        if constant
                            && let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg
                        {
                            protect(e);
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// `GROUP BY 1` / `ORDER BY 2`: a bare integer is a column position, not a value.
fn protect_ordinal(expr: &mut Expr) {
    if let Expr::Value(v) = expr
        && matches!(v.value, Value::Number(..))
    {
        protect(expr);
    }
}

/// Second pass: replaces the remaining literals with markers.
struct Extractor {
    params: Vec<Param>,
}

impl Extractor {
    /// `CAST(:__pN AS type)`: the cast changes nothing for Databricks (the parameter already
    /// has the type) but gives the marker a type wherever the context cannot infer one
    /// (`CASE … THEN :p`, `sum(:p)`), for engines that plan before binding.
    fn marker(&mut self, value: ParamValue) -> Expr {
        let name = format!("{PARAM_PREFIX}{}", self.params.len());
        let marker = Expr::value(Value::Placeholder(format!(":{name}")));
        let param = Param::new(name, value);
        let type_name = param.type_name().unwrap_or("STRING").to_owned();
        self.params.push(param);
        Expr::Cast {
            kind: ast::CastKind::Cast,
            expr: Box::new(marker),
            data_type: ast::DataType::Custom(
                ast::ObjectName::from(vec![Ident::new(type_name)]),
                vec![],
            ),
            array: false,
            format: None,
        }
    }
}

impl VisitorMut for Extractor {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let value = match expr {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s)
                | Value::DoubleQuotedString(s)
                | Value::TripleSingleQuotedString(s)
                | Value::TripleDoubleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::NationalStringLiteral(s)
                | Value::UnicodeStringLiteral(s)
                | Value::SingleQuotedRawStringLiteral(s)
                | Value::DoubleQuotedRawStringLiteral(s) => ParamValue::from(s.as_str()),
                Value::Number(n, long) => match number_type(n, *long) {
                    Some(type_name) => ParamValue::typed(n.clone(), type_name),
                    None => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            },
            Expr::TypedString(typed) => {
                let Some(type_name) = typed_literal_type(&typed.data_type) else {
                    return ControlFlow::Continue(());
                };
                let text = match &typed.value.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    _ => return ControlFlow::Continue(()),
                };
                ParamValue::typed(text, type_name)
            }
            _ => return ControlFlow::Continue(()),
        };
        *expr = self.marker(value);
        ControlFlow::Continue(())
    }
}

/// The parameter type of a typed literal that may become a parameter.
fn typed_literal_type(data_type: &ast::DataType) -> Option<&'static str> {
    match data_type {
        ast::DataType::Date => Some("DATE"),
        ast::DataType::TimestampNtz(None) => Some("TIMESTAMP_NTZ"),
        ast::DataType::Timestamp(None, TimezoneInfo::None) => Some("TIMESTAMP"),
        _ => None,
    }
}

/// The Databricks type of a numeric literal's text: `INT`, `BIGINT`, `DECIMAL(p,s)` or `DOUBLE`
/// (like the literal itself); `None` for text Databricks would not read as a number.
pub fn number_type(text: &str, long: bool) -> Option<String> {
    let digits = text.trim_start_matches(['-', '+']);
    if digits.is_empty() {
        return None;
    }
    if digits.contains(['e', 'E']) {
        return text.parse::<f64>().ok().map(|_| "DOUBLE".to_owned());
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '.') || digits.matches('.').count() > 1 {
        return None;
    }
    match digits.split_once('.') {
        None => {
            if !long && text.parse::<i32>().is_ok() {
                Some("INT".to_owned())
            } else if text.parse::<i64>().is_ok() {
                Some("BIGINT".to_owned())
            } else {
                let precision = digits.trim_start_matches('0').len().max(1);
                (precision <= 38 && !long).then(|| format!("DECIMAL({precision},0)"))
            }
        }
        Some((int, frac)) => {
            let int_digits = int.trim_start_matches('0').len();
            let scale = frac.len();
            let precision = (int_digits + scale).max(1).max(scale);
            (precision <= 38).then(|| format!("DECIMAL({precision},{scale})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &ParameterizedSql) -> Vec<(Option<&str>, Option<&str>, Option<&str>)> {
        p.params
            .iter()
            .map(|p| (p.name(), p.value(), p.type_name()))
            .collect()
    }

    #[test]
    fn strings_dates_and_numbers_become_typed_parameters() {
        let p = parameterize(
            "SELECT `a` FROM `t` WHERE `b` = 'x' AND `d` >= DATE '1995-03-15' \
             AND `n` < 24 AND `m` BETWEEN 0.05 AND 0.07 AND `x` > 3000000000 AND `f` < 1e3",
        )
        .expect("parameterizes");
        assert_eq!(
            p.sql,
            "SELECT `a` FROM `t` WHERE `b` = CAST(:__p0 AS STRING) AND `d` >= CAST(:__p1 AS DATE) \
             AND `n` < CAST(:__p2 AS INT) AND `m` BETWEEN CAST(:__p3 AS DECIMAL(2,2)) \
             AND CAST(:__p4 AS DECIMAL(2,2)) AND `x` > CAST(:__p5 AS BIGINT) \
             AND `f` < CAST(:__p6 AS DOUBLE)"
        );
        assert_eq!(
            params(&p),
            vec![
                (Some("__p0"), Some("x"), Some("STRING")),
                (Some("__p1"), Some("1995-03-15"), Some("DATE")),
                (Some("__p2"), Some("24"), Some("INT")),
                (Some("__p3"), Some("0.05"), Some("DECIMAL(2,2)")),
                (Some("__p4"), Some("0.07"), Some("DECIMAL(2,2)")),
                (Some("__p5"), Some("3000000000"), Some("BIGINT")),
                (Some("__p6"), Some("1e3"), Some("DOUBLE")),
            ]
        );
    }

    #[test]
    fn hostile_strings_never_reach_the_text() {
        let hostile = [
            "x'; DROP TABLE t; --",
            "back\\slash",
            "line\nbreak",
            "ünï😀",
        ];
        for value in hostile {
            let sql = format!(
                "SELECT * FROM `t` WHERE `s` = {}",
                dialect::quote_string(value)
            );
            let p = parameterize(&sql).expect("parameterizes");
            assert_eq!(
                p.sql, "SELECT * FROM `t` WHERE `s` = CAST(:__p0 AS STRING)",
                "{value:?}"
            );
            assert_eq!(
                params(&p),
                vec![(Some("__p0"), Some(value), Some("STRING"))]
            );
        }
    }

    #[test]
    fn syntax_constants_stay_in_the_text() {
        let p = parameterize(
            "SELECT date_trunc('MONTH', `d`), round(`x`, 2), `d` + INTERVAL 3 DAY, \
             sum(`x`) OVER (ORDER BY `d` ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
             FROM `t` WHERE `s` LIKE 'a!%%' ESCAPE '!' GROUP BY 1 ORDER BY 2 LIMIT 10 OFFSET 5",
        )
        .expect("parameterizes");
        assert_eq!(
            p.sql,
            "SELECT date_trunc('MONTH', `d`), round(`x`, 2), `d` + INTERVAL 3 DAY, \
             sum(`x`) OVER (ORDER BY `d` ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
             FROM `t` WHERE `s` LIKE CAST(:__p0 AS STRING) ESCAPE '!' GROUP BY 1 ORDER BY 2 \
             LIMIT 10 OFFSET 5"
        );
        assert_eq!(
            params(&p),
            vec![(Some("__p0"), Some("a!%%"), Some("STRING"))]
        );
    }

    #[test]
    fn casts_of_strings_to_dates_become_date_parameters() {
        let p = parameterize("SELECT CAST('2020-01-02' AS DATE), CAST(`a` AS BOOL) FROM `t`")
            .expect("parameterizes");
        assert_eq!(
            p.sql,
            "SELECT CAST(:__p0 AS DATE), CAST(`a` AS BOOLEAN) FROM `t`"
        );
        assert_eq!(
            params(&p),
            vec![(Some("__p0"), Some("2020-01-02"), Some("DATE"))]
        );
    }

    #[test]
    fn several_statements_are_refused() {
        let e = parameterize("SELECT 1; SELECT 2").expect_err("two statements");
        assert!(e.to_string().contains("2 statements"), "{e}");
        assert!(parameterize("SELEC 1").is_err());
    }

    #[test]
    fn number_types_follow_databricks_literals() {
        assert_eq!(number_type("1", false).as_deref(), Some("INT"));
        assert_eq!(number_type("1", true).as_deref(), Some("BIGINT"));
        assert_eq!(
            number_type("123.40", false).as_deref(),
            Some("DECIMAL(5,2)")
        );
        assert_eq!(number_type("0.5", false).as_deref(), Some("DECIMAL(1,1)"));
        assert_eq!(
            number_type("12345678901234567890", false).as_deref(),
            Some("DECIMAL(20,0)")
        );
        assert_eq!(number_type("1.5E-3", false).as_deref(), Some("DOUBLE"));
        assert_eq!(number_type("abc", false), None);
    }
}
