//! Rewrites of the parsed statement that close the gaps between DataFusion and Databricks SQL:
//! Databricks type names, Spark-style result column names (and duplicates), parameter markers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    self, Expr, Ident, Query, SelectItem, SetExpr, TimezoneInfo, Value, VisitMut, VisitorMut,
};

use super::error::BAD_REQUEST;
use super::{QueryParameter, SqlError};

/// Prefix of the aliases given to duplicate result columns; renamed back in the output.
pub(crate) const HIDDEN_ALIAS: &str = "__dbfed_col_";

/// Rewrites Databricks type names DataFusion does not know (in place).
///
/// `TIMESTAMP` is the session-zoned timestamp (µs), `TIMESTAMP_NTZ` the zone-less one, `VOID`
/// is NULL, `BYTE`/`SHORT`/`LONG` are the integer widths.
pub(crate) fn rewrite_types(statement: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(statement, |expr| {
        match expr {
            Expr::Cast {
                data_type,
                expr: inner,
                ..
            } => {
                if is_void(data_type) {
                    let _ = inner;
                    *expr = Expr::Value(Value::Null.into());
                } else {
                    rewrite_type(data_type);
                }
            }
            Expr::TypedString(typed) => rewrite_type(&mut typed.data_type),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_void(data_type: &ast::DataType) -> bool {
    matches!(data_type, ast::DataType::Custom(name, args)
        if args.is_empty() && name.to_string().eq_ignore_ascii_case("void"))
}

fn rewrite_type(data_type: &mut ast::DataType) {
    use ast::DataType as T;
    match data_type {
        T::Timestamp(_, TimezoneInfo::None) | T::Timestamp(_, TimezoneInfo::Tz) => {
            *data_type = T::Timestamp(Some(6), TimezoneInfo::WithTimeZone);
        }
        T::Timestamp(_, tz) => *data_type = T::Timestamp(Some(6), *tz),
        T::TimestampNtz(_) => *data_type = T::Timestamp(Some(6), TimezoneInfo::None),
        T::Custom(name, args) if args.is_empty() => {
            match name.to_string().to_ascii_uppercase().as_str() {
                "BYTE" => *data_type = T::TinyInt(None),
                "SHORT" => *data_type = T::SmallInt(None),
                "LONG" => *data_type = T::BigInt(None),
                _ => {}
            }
        }
        T::Array(ast::ArrayElemTypeDef::AngleBracket(inner))
        | T::Array(ast::ArrayElemTypeDef::SquareBracket(inner, _))
        | T::Array(ast::ArrayElemTypeDef::Parenthesis(inner)) => rewrite_type(inner),
        _ => {}
    }
}

/// Names the result columns like Databricks: an unaliased expression is named by its SQL text,
/// and duplicate names are allowed. Returns the hidden aliases to rename back
/// (`alias → wanted name`).
pub(crate) fn name_projections(statement: &mut ast::Statement) -> BTreeMap<String, String> {
    let mut renames = BTreeMap::new();
    if let ast::Statement::Query(query) = statement {
        if let Some(select) = leftmost_select(&mut query.body) {
            name_items(&mut select.projection, Some(&mut renames));
        }
        let mut nested = NestedNamer { depth: 0 };
        let _ = query.visit(&mut nested);
    }
    renames
}

fn leftmost_select(body: &mut SetExpr) -> Option<&mut ast::Select> {
    match body {
        SetExpr::Select(select) => Some(select),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        SetExpr::Query(q) => leftmost_select(&mut q.body),
        _ => None,
    }
}

/// Names unaliased expressions of nested queries by their SQL text when that is unambiguous.
struct NestedNamer {
    depth: usize,
}

impl VisitorMut for NestedNamer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > 1
            && let Some(select) = leftmost_select(&mut query.body)
        {
            name_items(&mut select.projection, None);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

fn ident_key(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// Spark's name for an unaliased expression.
fn display_name(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Nested(inner) => format!("({})", display_name(inner)),
        other => other.to_string(),
    }
}

fn name_items(items: &mut [SelectItem], mut renames: Option<&mut BTreeMap<String, String>>) {
    let mut taken: HashSet<String> = HashSet::new();
    for (i, item) in items.iter_mut().enumerate() {
        let hidden = format!("{HIDDEN_ALIAS}{i}");
        match item {
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => {
                let key = ident_key(id);
                if !taken.insert(key)
                    && let Some(r) = renames.as_deref_mut()
                {
                    r.insert(hidden.clone(), id.value.clone());
                    let expr = Expr::Identifier(id.clone());
                    *item = SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::with_quote('"', hidden),
                    };
                }
            }
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => {
                let Some(last) = ids.last().cloned() else {
                    continue;
                };
                if !taken.insert(ident_key(&last))
                    && let Some(r) = renames.as_deref_mut()
                {
                    r.insert(hidden.clone(), last.value.clone());
                    let expr = Expr::CompoundIdentifier(ids.clone());
                    *item = SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::with_quote('"', hidden),
                    };
                }
            }
            SelectItem::UnnamedExpr(expr) => {
                let name = display_name(expr);
                let alias = if taken.insert(name.clone()) {
                    name
                } else if let Some(r) = renames.as_deref_mut() {
                    r.insert(hidden.clone(), name);
                    hidden
                } else {
                    continue;
                };
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: Ident::with_quote('"', alias),
                };
            }
            SelectItem::ExprWithAlias { alias, .. } => {
                if !taken.insert(ident_key(alias))
                    && let Some(r) = renames.as_deref_mut()
                {
                    r.insert(hidden.clone(), alias.value.clone());
                    *alias = Ident::with_quote('"', hidden);
                }
            }
            _ => {}
        }
    }
}

/// Parameter markers of a statement, rewritten to DataFusion's positional `$n` form.
#[derive(Debug, Default)]
pub(crate) struct Markers {
    /// Names of `:name` markers in order of first appearance.
    pub named: Vec<String>,
    /// Number of `?` markers.
    pub positional: usize,
}

/// Finds `:name` and `?` markers and renumbers them `$1..$n` (named markers share a number per
/// name; `?` markers are numbered after them in order of appearance).
pub(crate) fn rewrite_markers(statement: &mut ast::Statement) -> Markers {
    // First pass: collect names so that `?` numbers come after them.
    let mut markers = Markers::default();
    let _ = ast::visit_expressions_mut(statement, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &v.value
        {
            if p == "?" {
                markers.positional += 1;
            } else if let Some(name) = p.strip_prefix(':').or_else(|| p.strip_prefix('@'))
                && !markers.named.iter().any(|n| n == name)
            {
                markers.named.push(name.to_string());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let names: HashMap<String, usize> = markers
        .named
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i + 1))
        .collect();
    let mut next_positional = markers.named.len();
    let _ = ast::visit_expressions_mut(statement, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
        {
            if p == "?" {
                next_positional += 1;
                *p = format!("${next_positional}");
            } else if let Some(n) = p
                .strip_prefix(':')
                .or_else(|| p.strip_prefix('@'))
                .and_then(|name| names.get(name))
            {
                *p = format!("${n}");
            }
        }
        ControlFlow::<()>::Continue(())
    });
    markers
}

/// The values for `$1..$n` after [`rewrite_markers`], each cast from its text to its type.
pub(crate) fn bind(
    markers: &Markers,
    parameters: &[QueryParameter],
    time_zone: &str,
) -> Result<Vec<ScalarValue>, SqlError> {
    if !markers.named.is_empty() && markers.positional > 0 {
        return Err(SqlError::new(
            BAD_REQUEST,
            "INVALID_QUERY_MIXED_QUERY_PARAMETERS",
            "Parameterized query must either use positional, or named parameters, but not both.",
            "42613",
        ));
    }
    let mut values = Vec::with_capacity(markers.named.len() + markers.positional);
    for name in &markers.named {
        let param = parameters
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .or_else(|| {
                parameters.iter().find(|p| {
                    p.name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            })
            .ok_or_else(|| unbound(name))?;
        values.push(param_value(param, time_zone)?);
    }
    let unnamed: Vec<&QueryParameter> = parameters.iter().filter(|p| p.name.is_none()).collect();
    for ordinal in 1..=markers.positional {
        let param = unnamed
            .iter()
            .find(|p| p.ordinal == Some(ordinal))
            .or_else(|| {
                // Parameters without ordinals bind in the order they were sent.
                if unnamed.iter().all(|p| p.ordinal.is_none()) {
                    unnamed.get(ordinal - 1)
                } else {
                    None
                }
            })
            .ok_or_else(|| unbound(&format!("_{ordinal}")))?;
        values.push(param_value(param, time_zone)?);
    }
    Ok(values)
}

fn unbound(name: &str) -> SqlError {
    SqlError::new(
        BAD_REQUEST,
        "UNBOUND_SQL_PARAMETER",
        &format!(
            "Found the unbound parameter: {name}. Please, fix `args` and provide a mapping of the \
             parameter to either a SQL literal or collection constructor functions such as `map()`, \
             `array()`, `struct()`."
        ),
        "42P02",
    )
}

/// Casts a parameter's text to its declared type (missing type: STRING; missing value: NULL).
pub(crate) fn param_value(
    param: &QueryParameter,
    time_zone: &str,
) -> Result<ScalarValue, SqlError> {
    let type_text = param.type_text.as_deref().unwrap_or("STRING");
    let data_type = parse_type(type_text, time_zone).ok_or_else(|| {
        SqlError::new(
            BAD_REQUEST,
            "UNSUPPORTED_DATATYPE",
            &format!("Unsupported data type \"{type_text}\"."),
            "0A000",
        )
    })?;
    let Some(text) = &param.value else {
        return ScalarValue::try_from(&data_type).map_err(SqlError::from);
    };
    if data_type == DataType::Utf8 {
        return Ok(ScalarValue::Utf8(Some(text.clone())));
    }
    let text_value = if data_type == DataType::Boolean {
        text.trim().to_ascii_lowercase()
    } else {
        text.trim().to_string()
    };
    ScalarValue::Utf8(Some(text_value))
        .cast_to(&data_type)
        .map_err(|_| {
            SqlError::new(
                BAD_REQUEST,
                "CAST_INVALID_INPUT",
                &format!(
                    "The value '{text}' of the type \"STRING\" cannot be cast to \"{}\" because it is malformed. Correct the value as per the syntax, or change its target type.",
                    type_text.to_ascii_uppercase()
                ),
                "22018",
            )
        })
}

/// Parses a Databricks scalar type name into the engine's Arrow type.
pub(crate) fn parse_type(type_text: &str, time_zone: &str) -> Option<DataType> {
    let t = type_text.trim().to_ascii_uppercase();
    let (base, args) = match t.split_once('(') {
        Some((base, rest)) => (
            base.trim().to_string(),
            Some(rest.trim_end_matches(')').to_string()),
        ),
        None => (t.clone(), None),
    };
    Some(match base.as_str() {
        "STRING" | "VARCHAR" | "CHAR" => DataType::Utf8,
        "TINYINT" | "BYTE" => DataType::Int8,
        "SMALLINT" | "SHORT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" | "LONG" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "BOOLEAN" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP_LTZ" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(time_zone.into()))
        }
        "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "BINARY" => DataType::Binary,
        "VOID" | "NULL" => DataType::Null,
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (p, s) = match args {
                None => (10, 0),
                Some(a) => {
                    let mut it = a.split(',').map(|x| x.trim().parse::<i64>());
                    let p = it.next()?.ok()?;
                    let s = match it.next() {
                        Some(s) => s.ok()?,
                        None => 0,
                    };
                    (p, s)
                }
            };
            if !(1..=38).contains(&p) || !(0..=p).contains(&s) {
                return None;
            }
            DataType::Decimal128(u8::try_from(p).ok()?, i8::try_from(s).ok()?)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::DatabricksDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> ast::Statement {
        Parser::parse_sql(&DatabricksDialect {}, sql)
            .expect("parses")
            .pop()
            .expect("one statement")
    }

    #[test]
    fn duplicate_names_get_hidden_aliases() {
        let mut s = parse("SELECT CAST(a AS BIGINT), CAST(a AS BIGINT), a, a AS x, b AS x FROM t");
        let renames = name_projections(&mut s);
        assert_eq!(
            renames.get("__dbfed_col_1").map(String::as_str),
            Some("CAST(a AS BIGINT)")
        );
        assert_eq!(renames.get("__dbfed_col_4").map(String::as_str), Some("x"));
        assert_eq!(renames.len(), 2);
    }

    #[test]
    fn markers_are_renumbered() {
        let mut s = parse("SELECT * FROM t WHERE a = :x AND b = :y AND c = :x");
        let m = rewrite_markers(&mut s);
        assert_eq!(m.named, vec!["x".to_string(), "y".to_string()]);
        assert!(s.to_string().contains("c = $1"), "{s}");
        let mut s = parse("SELECT ? + ?");
        let m = rewrite_markers(&mut s);
        assert_eq!(m.positional, 2);
        assert!(s.to_string().contains("$1 + $2"), "{s}");
    }

    #[test]
    fn parameter_types() {
        let p = |v: Option<&str>, t: Option<&str>| QueryParameter {
            name: Some("p".into()),
            ordinal: None,
            value: v.map(str::to_string),
            type_text: t.map(str::to_string),
        };
        assert_eq!(
            param_value(&p(Some("12.50"), Some("DECIMAL(10,2)")), "UTC").expect("decimal"),
            ScalarValue::Decimal128(Some(1250), 10, 2)
        );
        assert_eq!(
            param_value(&p(None, Some("INT")), "UTC").expect("null"),
            ScalarValue::Int32(None)
        );
        assert_eq!(
            param_value(&p(Some("x"), None), "UTC").expect("string"),
            ScalarValue::Utf8(Some("x".into()))
        );
        let bad = param_value(&p(Some("abc"), Some("INT")), "UTC").expect_err("malformed");
        assert_eq!(bad.sql_state, "22018");
    }
}
