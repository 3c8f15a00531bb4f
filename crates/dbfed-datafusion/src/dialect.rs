//! The Databricks SQL dialect of DataFusion's unparser.
//!
//! [`DatabricksDialect`] turns DataFusion logical plans and expressions into SQL that a Databricks
//! SQL Warehouse runs with the same results DataFusion would compute:
//!
//! - identifiers always in backticks, inner backticks doubled ([`quote_identifier`]);
//! - Spark type names in casts: `STRING`, `TINYINT`/`SMALLINT`/`INT`/`BIGINT`, `FLOAT`/`DOUBLE`,
//!   `BOOLEAN`, `DATE`, `TIMESTAMP` (Arrow timestamps with a zone) / `TIMESTAMP_NTZ` (without),
//!   `DECIMAL(p,s)`;
//! - intervals as single-unit literals (`INTERVAL 3 DAY`, `INTERVAL 14 MONTH`), dates as
//!   `DATE '1995-03-15'`, timestamps as `TIMESTAMP '…'` / `TIMESTAMP_NTZ '…'`;
//! - string literals with Spark's backslash escaping (a `'` or `\` inside a value can never end
//!   the literal early);
//! - DataFusion functions whose name, argument order or semantics differ in Databricks rewritten
//!   (see [`DatabricksDialect::scalar_function_to_sql_overrides`]); functions whose DataFusion
//!   semantics Databricks cannot reproduce are refused with `NotImplemented`, so a caller
//!   deciding what to push down keeps them local instead of getting different results.
//!
//! Some Spark spellings cannot be chosen through the unparser's hooks (`BOOLEAN` instead of
//! `BOOL`, unsigned integer casts, typed date/time literals). [`rewrite_statement`] fixes them on
//! the unparsed AST; [`plan_to_sql`] and [`crate::params::parameterize`] apply it, and a
//! datafusion-federation `SQLExecutor` can install it through [`databricks_ast_analyzer`].

use std::ops::ControlFlow;

use datafusion::common::{ScalarValue, not_impl_err};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, DateTimeField, Ident, ObjectName, TimezoneInfo, TrimWhereField, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::tokenizer::Span;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{
    CharacterLengthStyle, DateFieldExtractStyle, Dialect, IntervalStyle,
};

/// The Databricks SQL dialect for DataFusion's [`Unparser`].
///
/// ```
/// use datafusion::prelude::{col, lit};
/// use datafusion::sql::unparser::Unparser;
/// use dbfed_datafusion::DatabricksDialect;
///
/// let expr = col("name").eq(lit("it's"));
/// let sql = Unparser::new(&DatabricksDialect).expr_to_sql(&expr).expect("unparses");
/// assert_eq!(sql.to_string(), r"(`name` = 'it\'s')");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DatabricksDialect;

impl Dialect for DatabricksDialect {
    fn identifier_quote_style(&self, _identifier: &str) -> Option<char> {
        Some('`')
    }

    fn supports_nulls_first_in_sort(&self) -> bool {
        true
    }

    fn interval_style(&self) -> IntervalStyle {
        // `INTERVAL 3 DAY`, `INTERVAL 1 MONTH`: one unit per literal, which Databricks accepts.
        IntervalStyle::MySQL
    }

    fn float64_ast_dtype(&self) -> ast::DataType {
        ast::DataType::Double(ast::ExactNumberInfo::None)
    }

    fn utf8_cast_dtype(&self) -> ast::DataType {
        ast::DataType::String(None)
    }

    fn large_utf8_cast_dtype(&self) -> ast::DataType {
        ast::DataType::String(None)
    }

    fn date_field_extract_style(&self) -> DateFieldExtractStyle {
        DateFieldExtractStyle::Extract
    }

    fn character_length_style(&self) -> CharacterLengthStyle {
        CharacterLengthStyle::CharacterLength
    }

    fn int64_cast_dtype(&self) -> ast::DataType {
        ast::DataType::BigInt(None)
    }

    fn int8_cast_dtype(&self) -> ast::DataType {
        ast::DataType::TinyInt(None)
    }

    fn int32_cast_dtype(&self) -> ast::DataType {
        ast::DataType::Int(None)
    }

    fn timestamp_cast_dtype(
        &self,
        _time_unit: &arrow::datatypes::TimeUnit,
        tz: &Option<std::sync::Arc<str>>,
    ) -> ast::DataType {
        match tz {
            Some(_) => ast::DataType::Timestamp(None, TimezoneInfo::None),
            None => ast::DataType::TimestampNtz(None),
        }
    }

    fn date32_cast_dtype(&self) -> ast::DataType {
        ast::DataType::Date
    }

    fn supports_column_alias_in_table_alias(&self) -> bool {
        true
    }

    fn requires_derived_table_alias(&self) -> bool {
        false
    }

    fn division_operator(&self) -> BinaryOperator {
        BinaryOperator::Divide
    }

    fn supports_qualify(&self) -> bool {
        true
    }

    fn string_literal_to_sql(&self, s: &str) -> Option<ast::Expr> {
        Some(string_literal(s))
    }

    fn scalar_function_to_sql_overrides(
        &self,
        unparser: &Unparser,
        func_name: &str,
        args: &[Expr],
    ) -> Result<Option<ast::Expr>> {
        let sql = |e: &Expr| unparser.expr_to_sql(e);
        match (func_name, args) {
            ("date_part" | "datepart", [part, source]) => date_part(unparser, part, source),
            ("strpos" | "instr", [string, substring]) => {
                Ok(Some(function("instr", vec![sql(string)?, sql(substring)?])))
            }
            ("substr" | "substring", [string, start]) => {
                let start_sql = if is_positive_integer(start) {
                    sql(start)?
                } else {
                    function("greatest", vec![sql(start)?, number(1)])
                };
                Ok(Some(function("substr", vec![sql(string)?, start_sql])))
            }
            ("substr" | "substring", [string, start, length]) => {
                if is_positive_integer(start) {
                    return Ok(Some(function(
                        "substr",
                        vec![sql(string)?, sql(start)?, sql(length)?],
                    )));
                }
                // DataFusion (SQL standard): characters [start, start + length) clipped at 1.
                // Spark counts a negative start from the end, so clip explicitly:
                // substr(s, greatest(start, 1), greatest(length + least(start - 1, 0), 0)).
                let start_sql = sql(start)?;
                let clipped_start = function("greatest", vec![start_sql.clone(), number(1)]);
                let shift = function(
                    "least",
                    vec![
                        binary(start_sql, BinaryOperator::Minus, number(1)),
                        number(0),
                    ],
                );
                let clipped_length = function(
                    "greatest",
                    vec![
                        nested(binary(sql(length)?, BinaryOperator::Plus, shift)),
                        number(0),
                    ],
                );
                Ok(Some(function(
                    "substr",
                    vec![sql(string)?, clipped_start, clipped_length],
                )))
            }
            ("btrim" | "trim", [string]) => Ok(Some(trim(None, None, sql(string)?))),
            ("btrim" | "trim", [string, chars]) => Ok(Some(trim(
                Some(TrimWhereField::Both),
                Some(sql(chars)?),
                sql(string)?,
            ))),
            ("ltrim", [string, chars]) => Ok(Some(trim(
                Some(TrimWhereField::Leading),
                Some(sql(chars)?),
                sql(string)?,
            ))),
            ("rtrim", [string, chars]) => Ok(Some(trim(
                Some(TrimWhereField::Trailing),
                Some(sql(chars)?),
                sql(string)?,
            ))),
            ("to_timestamp", [value]) => Ok(Some(ast::Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(sql(value)?),
                data_type: ast::DataType::TimestampNtz(None),
                array: false,
                format: None,
            })),
            ("to_timestamp" | "to_date", [_, _, ..]) => not_impl_err!(
                "{func_name} with format strings has no Databricks equivalent \
                 (chrono and Java datetime patterns differ)"
            ),
            ("regexp_like", [string, pattern]) => Ok(Some(function(
                "regexp_like",
                vec![sql(string)?, sql(pattern)?],
            ))),
            ("regexp_like", [string, pattern, flags]) => {
                let pattern = with_regex_flags(unparser, pattern, flags, "")?;
                Ok(Some(function("regexp_like", vec![sql(string)?, pattern])))
            }
            ("regexp_replace", [string, pattern, replacement, flags]) => {
                check_replacement(replacement)?;
                let pattern = with_regex_flags(unparser, pattern, flags, "g")?;
                Ok(Some(function(
                    "regexp_replace",
                    vec![sql(string)?, pattern, sql(replacement)?],
                )))
            }
            ("regexp_replace", _) => not_impl_err!(
                "regexp_replace without the 'g' flag replaces only the first match in DataFusion \
                 but every match in Databricks"
            ),
            ("starts_with", [string, prefix]) => Ok(Some(nested(binary(
                function(
                    "left",
                    vec![sql(string)?, function("char_length", vec![sql(prefix)?])],
                ),
                BinaryOperator::Eq,
                sql(prefix)?,
            )))),
            ("ends_with", [string, suffix]) => Ok(Some(nested(binary(
                function(
                    "right",
                    vec![sql(string)?, function("char_length", vec![sql(suffix)?])],
                ),
                BinaryOperator::Eq,
                sql(suffix)?,
            )))),
            ("nvl" | "ifnull", [a, b]) => Ok(Some(function("coalesce", vec![sql(a)?, sql(b)?]))),
            ("make_array" | "make_list", _) => Ok(Some(function("array", all(unparser, args)?))),
            ("array_has", [array, element]) => Ok(Some(function(
                "array_contains",
                vec![sql(array)?, sql(element)?],
            ))),
            // DataFusion's one-argument log is base 10; Spark's is the natural logarithm.
            ("log", [value]) => Ok(Some(function("log10", vec![sql(value)?]))),
            // DataFusion's concat skips NULLs; Spark's concat returns NULL if any argument is.
            ("concat", _) => {
                let mut sql_args = vec![string_literal("")];
                sql_args.extend(all(unparser, args)?);
                Ok(Some(function("concat_ws", sql_args)))
            }
            ("random", []) => Ok(Some(function("rand", vec![]))),
            ("now", []) => Ok(Some(function("current_timestamp", vec![]))),
            ("to_char" | "date_format" | "from_unixtime" | "date_bin", _) => {
                not_impl_err!("{func_name} has no Databricks equivalent with the same semantics")
            }
            _ => Ok(None),
        }
    }
}

/// `name` as a Databricks identifier: backticks, inner backticks doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `value` as a Databricks string literal: single quotes, with `\` and `'` escaped by a
/// backslash (Databricks reads backslash escapes in string literals, so doubling a quote as in
/// ANSI SQL would be misread).
pub fn quote_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A string literal as an AST node that prints as [`quote_string`].
///
/// sqlparser's own string literals print with ANSI quote doubling, which Databricks would read
/// differently; an unquoted identifier prints its text verbatim, so it carries the escaped text.
pub(crate) fn string_literal(value: &str) -> ast::Expr {
    ast::Expr::Identifier(Ident {
        value: quote_string(value),
        quote_style: None,
        span: Span::empty(),
    })
}

/// The value of an AST node made by [`string_literal`], if `expr` is one.
pub(crate) fn as_string_literal(expr: &ast::Expr) -> Option<String> {
    let ast::Expr::Identifier(ident) = expr else {
        return None;
    };
    if ident.quote_style.is_some() {
        return None;
    }
    let inner = ident.value.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Fixes what the unparser's hooks cannot express in Databricks SQL, in place:
///
/// - `BOOL` → `BOOLEAN`; unsigned integers → the next wider signed type (`DECIMAL(20,0)` for
///   64 bits); `DATETIME` → `TIMESTAMP_NTZ`; `VARCHAR`/`TEXT`/`CHAR` without length → `STRING`;
/// - `CAST('…' AS DATE | TIMESTAMP | TIMESTAMP_NTZ)` → the typed literal `DATE '…'`, …;
/// - remaining ANSI string literals (from any source) → Databricks-escaped literals.
pub fn rewrite_statement(statement: &mut ast::Statement) {
    let _ = statement.visit(&mut DatabricksRewriter {
        escape_strings: true,
    });
}

/// [`rewrite_statement`] without the string escaping (string literals stay sqlparser values, so
/// [`crate::params::parameterize`] can still move them into parameters).
pub(crate) fn rewrite_statement_types(statement: &mut ast::Statement) {
    let _ = statement.visit(&mut DatabricksRewriter {
        escape_strings: false,
    });
}

/// [`rewrite_statement`] as a datafusion-federation AST analyzer
/// (`SQLExecutor::ast_analyzer`), with the signature `FnMut(Statement) -> Result<Statement>`.
pub fn databricks_ast_analyzer() -> Box<dyn FnMut(ast::Statement) -> Result<ast::Statement>> {
    Box::new(|mut statement| {
        rewrite_statement(&mut statement);
        Ok(statement)
    })
}

/// Unparses `plan` to Databricks SQL: [`prepare_plan`], [`DatabricksDialect`] and
/// [`rewrite_statement`].
///
/// Literals are still in the text; pass the result through [`crate::params::parameterize`]
/// before sending it.
pub fn plan_to_sql(plan: &LogicalPlan) -> Result<String> {
    let plan = prepare_plan(plan.clone())?;
    let mut statement = Unparser::new(&DatabricksDialect).plan_to_sql(&plan)?;
    rewrite_statement(&mut statement);
    Ok(statement.to_string())
}

/// Rewrites `plan` (keeping its schema exactly) so that DataFusion's unparser produces SQL
/// whose column names and order Databricks resolves like DataFusion:
///
/// - expressions of a derived table (the input of a `SubqueryAlias`) are aliased with their
///   DataFusion names (`sum(t.x)`), so the outer query that refers to them by those names finds
///   them (Spark names an unaliased expression differently). Such a name can contain a literal
///   of the expression (`Float64(0.2) * avg(…)`); it is a backtick-quoted identifier, never
///   SQL;
/// - an `Aggregate` (or `Window`) not directly under a `Projection` gets one, so its columns
///   come out in schema order (group keys first) and carry their names;
/// - an alias of an alias (`__correlated_sq_1` over `l2`) keeps only the outer one, which is
///   the one the rest of the plan refers to.
///
/// Suitable as a datafusion-federation `SQLTable::logical_optimizer`.
pub fn prepare_plan(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let plan = plan
        .transform_up(|node| {
            let node = match node {
                LogicalPlan::SubqueryAlias(alias)
                    if matches!(alias.input.as_ref(), LogicalPlan::SubqueryAlias(_)) =>
                {
                    let LogicalPlan::SubqueryAlias(inner) = alias.input.as_ref() else {
                        return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
                    };
                    LogicalPlan::SubqueryAlias(datafusion::logical_expr::SubqueryAlias::try_new(
                        std::sync::Arc::clone(&inner.input),
                        alias.alias.clone(),
                    )?)
                }
                // A filtered scan under an alias (`nation n1` with `n1.n_name = …`): the
                // unparser would write the filter with the table's own qualifier outside the
                // alias; as a derived table it keeps it inside.
                LogicalPlan::SubqueryAlias(alias)
                    if matches!(alias.input.as_ref(), LogicalPlan::Filter(_)) =>
                {
                    let input = project_all(std::sync::Arc::unwrap_or_clone(alias.input))?;
                    LogicalPlan::SubqueryAlias(datafusion::logical_expr::SubqueryAlias::try_new(
                        std::sync::Arc::new(input),
                        alias.alias,
                    )?)
                }
                // The unparser writes a semi/anti join as `WHERE [NOT] EXISTS` and loses a
                // filter of the preserved side; as a derived table the filter stays inside.
                LogicalPlan::Join(mut join)
                    if matches!(
                        join.join_type,
                        JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
                    ) && matches!(join.left.as_ref(), LogicalPlan::Filter(_)) =>
                {
                    join.left = std::sync::Arc::new(project_all(std::sync::Arc::unwrap_or_clone(
                        join.left,
                    ))?);
                    LogicalPlan::Join(join)
                }
                LogicalPlan::Join(mut join)
                    if matches!(
                        join.join_type,
                        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
                    ) && matches!(join.right.as_ref(), LogicalPlan::Filter(_)) =>
                {
                    join.right = std::sync::Arc::new(project_all(
                        std::sync::Arc::unwrap_or_clone(join.right),
                    )?);
                    LogicalPlan::Join(join)
                }
                // A derived table's columns are referred to by their DataFusion names.
                LogicalPlan::SubqueryAlias(alias) => match alias.input.as_ref() {
                    LogicalPlan::Projection(_)
                    | LogicalPlan::Aggregate(_)
                    | LogicalPlan::Window(_) => {
                        let input = match std::sync::Arc::unwrap_or_clone(alias.input) {
                            LogicalPlan::Projection(projection) => name_projection(projection)?,
                            other => project_all(other)?,
                        };
                        LogicalPlan::SubqueryAlias(
                            datafusion::logical_expr::SubqueryAlias::try_new(
                                std::sync::Arc::new(input),
                                alias.alias,
                            )?,
                        )
                    }
                    _ => LogicalPlan::SubqueryAlias(alias),
                },
                other => other,
            };
            if matches!(node, LogicalPlan::Projection(_)) {
                return Ok(Transformed::yes(node));
            }
            let node = node.map_children(|child| {
                if matches!(child, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)) {
                    Ok(Transformed::yes(project_all(child)?))
                } else {
                    Ok(Transformed::no(child))
                }
            })?;
            Ok(Transformed::yes(node.data))
        })?
        .data;
    if matches!(plan, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)) {
        project_all(plan)
    } else {
        Ok(plan)
    }
}

/// A projection of every column of `plan`; columns SQL would name differently get their
/// DataFusion names as aliases (the plan refers to them by those names).
fn project_all(plan: LogicalPlan) -> Result<LogicalPlan> {
    let exprs = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(datafusion::common::Column::new(
                qualifier.cloned(),
                field.name(),
            ));
            name_expression(column, field.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(exprs, std::sync::Arc::new(plan))?,
    ))
}

/// `projection` with its expressions aliased by their DataFusion names.
fn name_projection(projection: datafusion::logical_expr::Projection) -> Result<LogicalPlan> {
    let schema = std::sync::Arc::clone(&projection.schema);
    let exprs = projection
        .expr
        .into_iter()
        .enumerate()
        .map(|(i, e)| name_expression(e, schema.field(i).name()))
        .collect();
    Ok(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(exprs, projection.input)?,
    ))
}

/// `expr` aliased as `name` unless it already is an alias or a column SQL names alike.
fn name_expression(expr: Expr, name: &str) -> Expr {
    match &expr {
        Expr::Alias(_) => expr,
        Expr::Column(column) if column.relation.is_some() || is_plain_identifier(name) => expr,
        _ => expr.alias(name),
    }
}

fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Unparses `expr` (e.g. a filter) to a Databricks SQL expression, or an error when the dialect
/// cannot express it with DataFusion's semantics.
pub fn expr_to_sql(expr: &Expr) -> Result<String> {
    let mut sql = Unparser::new(&DatabricksDialect).expr_to_sql(expr)?;
    let _ = sql.visit(&mut DatabricksRewriter {
        escape_strings: true,
    });
    Ok(sql.to_string())
}

/// Whether `expr` can be evaluated by Databricks with DataFusion's semantics (it unparses).
///
/// Intended for `TableProvider::supports_filters_pushdown`.
pub fn can_push_down(expr: &Expr) -> bool {
    expr_to_sql(expr).is_ok()
}

struct DatabricksRewriter {
    escape_strings: bool,
}

impl VisitorMut for DatabricksRewriter {
    type Break = ();

    /// A derived table without alias over one table (`(SELECT t.a FROM t WHERE …)`, as the
    /// unparser writes a scan with filters) gets the table's name as alias: the enclosing query
    /// refers to its columns as `t.a`, which Databricks only resolves through an alias.
    fn pre_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<()> {
        let mut used: Vec<String> = Vec::new();
        let mut factors: Vec<&mut ast::TableFactor> = Vec::new();
        for from in &mut select.from {
            factors.push(&mut from.relation);
            for join in &mut from.joins {
                factors.push(&mut join.relation);
            }
        }
        for factor in &factors {
            if let Some(name) = factor_name(factor) {
                used.push(name);
            }
        }
        for factor in factors {
            if let ast::TableFactor::Derived {
                alias: alias @ None,
                subquery,
                ..
            } = factor
                && let Some(name) = single_table_name(subquery)
                && !used.contains(&name)
            {
                used.push(name.clone());
                *alias = Some(ast::TableAlias {
                    explicit: true,
                    name: Ident::with_quote('`', name),
                    columns: vec![],
                    at: None,
                });
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        match expr {
            ast::Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: inner,
                data_type,
                format: None,
                ..
            } => {
                rewrite_data_type(data_type);
                let typed = matches!(
                    data_type,
                    ast::DataType::Date
                        | ast::DataType::TimestampNtz(None)
                        | ast::DataType::Timestamp(None, TimezoneInfo::None)
                );
                if typed && let Some(text) = string_value(inner) {
                    let data_type = data_type.clone();
                    *expr = ast::Expr::TypedString(ast::TypedString {
                        data_type,
                        value: ast::Value::SingleQuotedString(text).with_empty_span(),
                        uses_odbc_syntax: false,
                    });
                }
            }
            ast::Expr::Cast { data_type, .. } => rewrite_data_type(data_type),
            ast::Expr::Value(v) if self.escape_strings => {
                if let ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) =
                    &v.value
                    && needs_escaping(s)
                {
                    *expr = string_literal(s);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The name a FROM item is referred to by (its alias, or a table's last name part).
fn factor_name(factor: &ast::TableFactor) -> Option<String> {
    match factor {
        ast::TableFactor::Table { alias: Some(a), .. }
        | ast::TableFactor::Derived { alias: Some(a), .. } => Some(a.name.value.clone()),
        ast::TableFactor::Table {
            name, alias: None, ..
        } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.clone()),
        _ => None,
    }
}

/// For `SELECT … FROM t [WHERE …]` (one table, no joins): the name `t` is referred to by.
fn single_table_name(query: &ast::Query) -> Option<String> {
    let ast::SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    match select.from.as_slice() {
        [only] if only.joins.is_empty() => match &only.relation {
            table @ ast::TableFactor::Table { .. } => factor_name(table),
            _ => None,
        },
        _ => None,
    }
}

/// Whether sqlparser's ANSI printing of `s` differs from Databricks' reading of it.
fn needs_escaping(s: &str) -> bool {
    s.contains(['\'', '\\', '"'])
}

fn string_value(expr: &ast::Expr) -> Option<String> {
    match expr {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        other => as_string_literal(other),
    }
}

fn rewrite_data_type(data_type: &mut ast::DataType) {
    use ast::DataType as T;
    let replacement = match data_type {
        T::Bool => T::Boolean,
        T::TinyIntUnsigned(_) | T::UTinyInt => T::SmallInt(None),
        T::SmallIntUnsigned(_) | T::USmallInt => T::Int(None),
        T::IntegerUnsigned(_) | T::IntUnsigned(_) | T::UInt32 => T::BigInt(None),
        T::BigIntUnsigned(_) | T::UBigInt | T::UInt64 => {
            T::Decimal(ast::ExactNumberInfo::PrecisionAndScale(20, 0))
        }
        T::Datetime(_) => T::TimestampNtz(None),
        T::Text | T::Varchar(None) | T::Char(None) => T::String(None),
        T::Integer(None) => T::Int(None),
        _ => return,
    };
    *data_type = replacement;
}

/// `date_part('year', x)` → `EXTRACT(YEAR FROM x)` with DataFusion's numbering.
fn date_part(unparser: &Unparser, part: &Expr, source: &Expr) -> Result<Option<ast::Expr>> {
    let Some(field) = literal_str(part) else {
        return Ok(None);
    };
    let source = unparser.expr_to_sql(source)?;
    let extract = |field: DateTimeField, source: ast::Expr| ast::Expr::Extract {
        field,
        syntax: ast::ExtractSyntax::From,
        expr: Box::new(source),
    };
    let sql = match field.to_ascii_lowercase().as_str() {
        "year" | "years" => extract(DateTimeField::Year, source),
        "quarter" => extract(DateTimeField::Quarter, source),
        "month" | "months" => extract(DateTimeField::Month, source),
        "week" | "weeks" => extract(DateTimeField::Week(None), source),
        "day" | "days" => extract(DateTimeField::Day, source),
        "doy" => extract(DateTimeField::Doy, source),
        // DataFusion: Sunday = 0; Spark's DOW: Sunday = 1.
        "dow" => nested(binary(
            extract(DateTimeField::Dow, source),
            BinaryOperator::Minus,
            number(1),
        )),
        "hour" | "hours" => extract(DateTimeField::Hour, source),
        "minute" | "minutes" => extract(DateTimeField::Minute, source),
        // DataFusion: whole seconds; Spark: DECIMAL(8,6) with the fraction.
        "second" | "seconds" => ast::Expr::Cast {
            kind: ast::CastKind::Cast,
            expr: Box::new(extract(DateTimeField::Second, source)),
            data_type: ast::DataType::Int(None),
            array: false,
            format: None,
        },
        other => {
            return not_impl_err!("date_part('{other}', …) has no Databricks equivalent");
        }
    };
    Ok(Some(sql))
}

/// `pattern` with DataFusion regex `flags` folded in as Java/Rust inline flags. `required` lists
/// flags the Databricks function always applies (they must be present).
fn with_regex_flags(
    unparser: &Unparser,
    pattern: &Expr,
    flags: &Expr,
    required: &str,
) -> Result<ast::Expr> {
    let Some(flags) = literal_str(flags) else {
        return not_impl_err!("regular expression flags must be a literal to push down");
    };
    if let Some(missing) = required.chars().find(|f| !flags.contains(*f)) {
        return not_impl_err!("regular expression without the '{missing}' flag");
    }
    let mut inline = String::new();
    for flag in flags.chars() {
        match flag {
            'i' | 's' | 'm' | 'x' => inline.push(flag),
            'g' if required.contains('g') => {}
            other => return not_impl_err!("regular expression flag '{other}'"),
        }
    }
    let pattern = unparser.expr_to_sql(pattern)?;
    if inline.is_empty() {
        return Ok(pattern);
    }
    Ok(function(
        "concat",
        vec![string_literal(&format!("(?{inline})")), pattern],
    ))
}

/// Refuses replacement strings whose group-reference syntax differs (`$1` vs `${1}`/`\1`).
fn check_replacement(replacement: &Expr) -> Result<()> {
    match literal_str(replacement) {
        Some(r) if !r.contains(['$', '\\']) => Ok(()),
        _ => not_impl_err!(
            "regexp_replace replacements must be literals without group references to push down"
        ),
    }
}

fn literal_str(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(v, _) => v.try_as_str().flatten(),
        _ => None,
    }
}

fn is_positive_integer(expr: &Expr) -> bool {
    let Expr::Literal(v, _) = expr else {
        return false;
    };
    match v {
        ScalarValue::Int8(Some(x)) => *x > 0,
        ScalarValue::Int16(Some(x)) => *x > 0,
        ScalarValue::Int32(Some(x)) => *x > 0,
        ScalarValue::Int64(Some(x)) => *x > 0,
        ScalarValue::UInt8(Some(x)) => *x > 0,
        ScalarValue::UInt16(Some(x)) => *x > 0,
        ScalarValue::UInt32(Some(x)) => *x > 0,
        ScalarValue::UInt64(Some(x)) => *x > 0,
        _ => false,
    }
}

fn all(unparser: &Unparser, args: &[Expr]) -> Result<Vec<ast::Expr>> {
    args.iter().map(|a| unparser.expr_to_sql(a)).collect()
}

fn function(name: &str, args: Vec<ast::Expr>) -> ast::Expr {
    ast::Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: ast::FunctionArguments::None,
        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn trim(where_: Option<TrimWhereField>, what: Option<ast::Expr>, expr: ast::Expr) -> ast::Expr {
    ast::Expr::Trim {
        expr: Box::new(expr),
        trim_where: where_,
        trim_what: what.map(Box::new),
        trim_characters: None,
    }
}

fn binary(left: ast::Expr, op: BinaryOperator, right: ast::Expr) -> ast::Expr {
    ast::Expr::BinaryOp {
        left: Box::new(left),
        op,
        right: Box::new(right),
    }
}

fn nested(expr: ast::Expr) -> ast::Expr {
    ast::Expr::Nested(Box::new(expr))
}

fn number(n: i64) -> ast::Expr {
    ast::Expr::value(ast::Value::Number(n.to_string(), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{cast, col, lit};

    fn unparse(expr: &Expr) -> String {
        expr_to_sql(expr).expect("unparses")
    }

    #[test]
    fn identifiers_are_backticked_with_inner_backticks_doubled() {
        assert_eq!(quote_identifier("a`b"), "`a``b`");
        assert_eq!(unparse(&col("we`ird")), "`we``ird`");
    }

    #[test]
    fn strings_use_backslash_escapes() {
        assert_eq!(quote_string(r"it's a \ test"), r"'it\'s a \\ test'");
        assert_eq!(
            unparse(&lit("x'; DROP TABLE t; --")),
            r"'x\'; DROP TABLE t; --'"
        );
        let round = as_string_literal(&string_literal("a\\'b\n")).expect("ours");
        assert_eq!(round, "a\\'b\n");
    }

    #[test]
    fn cast_types_are_spark_names() {
        use arrow::datatypes::{DataType, TimeUnit};
        let cases = [
            (DataType::Utf8, "STRING"),
            (DataType::LargeUtf8, "STRING"),
            (DataType::Utf8View, "STRING"),
            (DataType::Int8, "TINYINT"),
            (DataType::Int16, "SMALLINT"),
            (DataType::Int32, "INT"),
            (DataType::Int64, "BIGINT"),
            (DataType::UInt32, "BIGINT"),
            (DataType::UInt64, "DECIMAL(20,0)"),
            (DataType::Float32, "FLOAT"),
            (DataType::Float64, "DOUBLE"),
            (DataType::Boolean, "BOOLEAN"),
            (DataType::Date32, "DATE"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "TIMESTAMP",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "TIMESTAMP_NTZ",
            ),
            (DataType::Decimal128(15, 2), "DECIMAL(15,2)"),
        ];
        for (data_type, name) in cases {
            let sql = unparse(&cast(col("a"), data_type.clone()));
            assert_eq!(sql, format!("CAST(`a` AS {name})"), "{data_type}");
        }
    }

    #[test]
    fn dates_and_intervals() {
        let date = lit(ScalarValue::Date32(Some(9204)));
        assert_eq!(unparse(&date), "DATE '1995-03-15'");
        let days = lit(ScalarValue::new_interval_mdn(0, 3, 0));
        assert_eq!(unparse(&days), "INTERVAL 3 DAY");
        let months = lit(ScalarValue::new_interval_ym(1, 2));
        assert_eq!(unparse(&months), "INTERVAL 14 MONTH");
    }
}
