//! Databricks-shaped errors: `[ERROR_CLASS] text. SQLSTATE: XXXXX` plus the `status.error.error_code`.

use arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

use super::SqlError;

/// `status.error.error_code` of analysis, syntax and data errors.
pub(crate) const BAD_REQUEST: &str = "BAD_REQUEST";
/// `status.error.error_code` of a denied read.
pub(crate) const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
/// `status.error.error_code` of an engine failure.
pub(crate) const INTERNAL_ERROR: &str = "INTERNAL_ERROR";

impl SqlError {
    /// Builds `[class] text. SQLSTATE: state` with the given `error_code`.
    pub fn new(error_code: &str, class: &str, text: &str, sql_state: &str) -> SqlError {
        let text = text.trim_end();
        let sep = if text.ends_with('.') { " " } else { ". " };
        SqlError {
            error_code: error_code.to_string(),
            message: format!("[{class}] {text}{sep}SQLSTATE: {sql_state}"),
            sql_state: sql_state.to_string(),
        }
    }

    /// The bracketed error class of the message (`PARSE_SYNTAX_ERROR`, `TABLE_OR_VIEW_NOT_FOUND`, ...).
    pub fn error_class(&self) -> Option<&str> {
        let start = self.message.find('[')?;
        let end = self.message[start..].find(']')?;
        Some(&self.message[start + 1..start + end])
    }

    /// `[TABLE_OR_VIEW_NOT_FOUND]` for a name as the user wrote it (parts unquoted).
    pub(crate) fn table_not_found(parts: &[String]) -> SqlError {
        SqlError::new(
            BAD_REQUEST,
            "TABLE_OR_VIEW_NOT_FOUND",
            &format!(
                "The table or view {} cannot be found. Verify the spelling and correctness of the \
                 schema and catalog.\nIf you did not qualify the name with a schema, verify the \
                 current_schema() output, or qualify the name with the correct schema and catalog.",
                quote_name(parts)
            ),
            "42P01",
        )
    }

    /// `[INSUFFICIENT_PERMISSIONS]` for reading a table outside the caller's grants.
    pub(crate) fn insufficient_permissions(
        object_kind: &str,
        privilege: &str,
        name: &str,
    ) -> SqlError {
        SqlError::new(
            PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
            &format!(
                "Insufficient privileges:\nUser does not have {privilege} on {object_kind} '{name}'."
            ),
            "42501",
        )
    }

    /// `[NO_SUCH_CATALOG_EXCEPTION]`.
    pub(crate) fn catalog_not_found(catalog: &str) -> SqlError {
        SqlError::new(
            BAD_REQUEST,
            "NO_SUCH_CATALOG_EXCEPTION",
            &format!(
                "Catalog '{catalog}' was not found. Please verify the catalog name and then retry \
                 the query or command again."
            ),
            "42704",
        )
    }

    /// `[SCHEMA_NOT_FOUND]`.
    pub(crate) fn schema_not_found(catalog: &str, schema: &str) -> SqlError {
        SqlError::new(
            BAD_REQUEST,
            "SCHEMA_NOT_FOUND",
            &format!(
                "The schema {} cannot be found. Verify the spelling and correctness of the schema \
                 and catalog.",
                quote_name(&[catalog.to_string(), schema.to_string()])
            ),
            "42704",
        )
    }

    /// `[UNSUPPORTED_FEATURE]` for statements the emulator does not run.
    pub(crate) fn unsupported(what: &str) -> SqlError {
        SqlError::new(
            BAD_REQUEST,
            "UNSUPPORTED_FEATURE",
            &format!("The feature is not supported: {what}"),
            "0A000",
        )
    }

    /// `[PARSE_SYNTAX_ERROR]` shaped like the recorded warehouse answer (leading newline,
    /// position, the SQL and a caret line).
    pub(crate) fn syntax(near: &str, line: u64, column: u64, sql: &str) -> SqlError {
        let near = if near.is_empty() {
            "end of input".to_string()
        } else {
            format!("'{near}'")
        };
        let pos = column.saturating_sub(1);
        let caret_indent = " ".repeat(usize::try_from(pos).unwrap_or(0).min(sql.len()));
        SqlError {
            error_code: BAD_REQUEST.to_string(),
            message: format!(
                "\n[PARSE_SYNTAX_ERROR] Syntax error at or near {near}. SQLSTATE: 42601 (line {line}, pos {pos})\n\n== SQL ==\n{sql}\n{caret_indent}^^^\n"
            ),
            sql_state: "42601".to_string(),
        }
    }

    /// Turns an engine error into the Databricks error a warehouse would report; `sql` is the
    /// statement text (for syntax errors).
    pub(crate) fn from_datafusion(error: &DataFusionError, sql: &str) -> SqlError {
        classify(error, sql)
    }
}

impl From<DataFusionError> for SqlError {
    /// Classifies an engine error; an error that already is a [`SqlError`] (as produced by the
    /// streams of [`super::QueryOutput`]) is returned unchanged.
    fn from(error: DataFusionError) -> Self {
        classify(&error, "")
    }
}

/// Wraps a [`SqlError`] so that it travels through a DataFusion stream unchanged.
pub(crate) fn into_datafusion(error: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// `` `a`.`b`.`c` `` with inner backticks doubled.
pub(crate) fn quote_name(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| format!("`{}`", p.replace('`', "``")))
        .collect::<Vec<_>>()
        .join(".")
}

fn classify(error: &DataFusionError, sql: &str) -> SqlError {
    match error {
        DataFusionError::External(inner) => {
            if let Some(sql_error) = inner.downcast_ref::<SqlError>() {
                return sql_error.clone();
            }
            if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
                return classify_arrow(arrow);
            }
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                return classify(df, sql);
            }
            internal(&inner.to_string())
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner, sql)
        }
        DataFusionError::Shared(inner) => classify(inner, sql),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => classify(first, sql),
            None => internal("unknown error"),
        },
        DataFusionError::ArrowError(arrow, _) => classify_arrow(arrow),
        DataFusionError::SQL(parser, _) => classify_parser(parser, sql),
        DataFusionError::SchemaError(schema, _) => classify_schema(schema),
        DataFusionError::NotImplemented(msg) => SqlError::unsupported(msg),
        DataFusionError::Plan(msg) => classify_plan(msg),
        DataFusionError::ResourcesExhausted(msg) => {
            SqlError::new("RESOURCE_EXHAUSTED", "INSUFFICIENT_RESOURCES", msg, "53000")
        }
        DataFusionError::ExecutionJoin(e) => internal(&e.to_string()),
        DataFusionError::Execution(msg) => classify_execution(msg),
        other => internal(&other.message()),
    }
}

fn internal(msg: &str) -> SqlError {
    SqlError::new(INTERNAL_ERROR, "INTERNAL_ERROR", msg, "XX000")
}

fn classify_arrow(error: &ArrowError) -> SqlError {
    match error {
        ArrowError::DivideByZero => divide_by_zero(),
        ArrowError::ArithmeticOverflow(msg) => SqlError::new(
            BAD_REQUEST,
            "ARITHMETIC_OVERFLOW",
            &format!("{msg}. Use 'try_' functions to tolerate overflow and return NULL instead"),
            "22003",
        ),
        ArrowError::CastError(msg) | ArrowError::ParseError(msg) => SqlError::new(
            BAD_REQUEST,
            "CAST_INVALID_INPUT",
            &format!("{msg}. Use `try_cast` to tolerate malformed input and return NULL instead"),
            "22018",
        ),
        ArrowError::ExternalError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                classify(df, "")
            } else {
                internal(&inner.to_string())
            }
        }
        other => internal(&other.to_string()),
    }
}

fn divide_by_zero() -> SqlError {
    SqlError::new(
        BAD_REQUEST,
        "DIVIDE_BY_ZERO",
        "Division by zero. Use `try_divide` to tolerate divisor being 0 and return NULL instead. \
         If necessary set \"ansi_mode\" to \"false\" to bypass this error.",
        "22012",
    )
}

fn classify_execution(msg: &str) -> SqlError {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        divide_by_zero()
    } else if lower.contains("overflow") {
        SqlError::new(BAD_REQUEST, "ARITHMETIC_OVERFLOW", msg, "22003")
    } else if lower.contains("cannot cast") || lower.contains("cast error") {
        SqlError::new(BAD_REQUEST, "CAST_INVALID_INPUT", msg, "22018")
    } else {
        internal(msg)
    }
}

fn classify_parser(error: &ParserError, sql: &str) -> SqlError {
    let msg = match error {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.as_str(),
        ParserError::RecursionLimitExceeded => "statement nests too deeply",
    };
    // sqlparser: "Expected: <what>, found: <token> at Line: 1, Column: 1"
    let near = msg
        .split_once("found: ")
        .map(|(_, rest)| rest.split(" at Line:").next().unwrap_or(rest).trim())
        .unwrap_or("");
    let near = if near == "EOF" { "" } else { near };
    let (line, column) = position(msg).unwrap_or((1, 1));
    SqlError::syntax(near, line, column, sql)
}

fn position(msg: &str) -> Option<(u64, u64)> {
    let (_, rest) = msg.rsplit_once("Line: ")?;
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

fn classify_schema(error: &SchemaError) -> SqlError {
    match error {
        SchemaError::FieldNotFound {
            field,
            valid_fields,
        } => {
            let suggestions = valid_fields
                .iter()
                .take(5)
                .map(|c| format!("`{}`", c.name))
                .collect::<Vec<_>>()
                .join(", ");
            if suggestions.is_empty() {
                SqlError::new(
                    BAD_REQUEST,
                    "UNRESOLVED_COLUMN.WITHOUT_SUGGESTION",
                    &format!(
                        "A column, variable, or function parameter with name `{}` cannot be resolved.",
                        field.name
                    ),
                    "42703",
                )
            } else {
                SqlError::new(
                    BAD_REQUEST,
                    "UNRESOLVED_COLUMN.WITH_SUGGESTION",
                    &format!(
                        "A column, variable, or function parameter with name `{}` cannot be \
                         resolved. Did you mean one of the following? [{suggestions}].",
                        field.name
                    ),
                    "42703",
                )
            }
        }
        SchemaError::AmbiguousReference { field } => SqlError::new(
            BAD_REQUEST,
            "AMBIGUOUS_REFERENCE",
            &format!("Reference `{}` is ambiguous.", field.name),
            "42704",
        ),
        SchemaError::DuplicateQualifiedField { .. }
        | SchemaError::DuplicateUnqualifiedField { .. } => SqlError::new(
            BAD_REQUEST,
            "COLUMN_ALREADY_EXISTS",
            &error.to_string(),
            "42711",
        ),
    }
}

fn classify_plan(msg: &str) -> SqlError {
    let lower = msg.to_ascii_lowercase();
    if lower.starts_with("table '") && lower.contains("' not found") {
        let name = msg
            .trim_start_matches("table '")
            .split("' not found")
            .next()
            .unwrap_or_default();
        let parts: Vec<String> = name.split('.').map(str::to_string).collect();
        return SqlError::table_not_found(&parts);
    }
    if lower.starts_with("invalid function") {
        let name = msg.split('\'').nth(1).unwrap_or("?");
        return SqlError::new(
            BAD_REQUEST,
            "UNRESOLVED_ROUTINE",
            &format!(
                "Cannot resolve routine `{name}` on search path [`system`.`builtin`, `system`.`session`]."
            ),
            "42883",
        );
    }
    if lower.contains("divide by zero") {
        return divide_by_zero();
    }
    SqlError::new(BAD_REQUEST, "INVALID_QUERY", msg, "42000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shape_and_class() {
        let e = SqlError::new(BAD_REQUEST, "X_Y", "Something failed", "42000");
        assert_eq!(e.message, "[X_Y] Something failed. SQLSTATE: 42000");
        assert_eq!(e.error_class(), Some("X_Y"));
        let e = SqlError::syntax("INSER", 1, 1, "INSER INTO t");
        assert_eq!(
            e.message,
            "\n[PARSE_SYNTAX_ERROR] Syntax error at or near 'INSER'. SQLSTATE: 42601 (line 1, pos 0)\n\n== SQL ==\nINSER INTO t\n^^^\n"
        );
    }

    #[test]
    fn wrapped_errors_survive_the_round_trip() {
        let original = SqlError::unsupported("INSERT");
        let back = SqlError::from(into_datafusion(original.clone()));
        assert_eq!(back.message, original.message);
        let ctx = DataFusionError::Context(
            "while running".into(),
            Box::new(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None,
            )),
        );
        assert_eq!(SqlError::from(ctx).sql_state, "22012");
    }
}
