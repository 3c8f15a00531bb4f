//! Prepared statement parameters: `?` and `:name` markers become DataFusion placeholders
//! (`$1`, `$name`), and a bound Arrow batch becomes DataFusion parameter values.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;

use crate::error::FlightSqlError;

/// SQL with its parameter markers rewritten for DataFusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RewrittenSql {
    /// The SQL, with `$1`.. or `$name` placeholders.
    pub sql: String,
    /// Marker names in order of first appearance: `1`, `2`, ... for `?` and `$n`, the name
    /// for `:name` and `$name`.
    pub names: Vec<String>,
}

/// Most parameters of one statement, and the highest `$N` position accepted.
pub(crate) const MAX_PARAMETERS: usize = 65_535;

/// Longest marker text quoted back in an error message.
const MAX_QUOTED_MARKER: usize = 24;

/// Rewrites `?` to `$1`, `$2`, ... and `:name` to `$name`, leaving string literals, quoted
/// identifiers, comments and `::` casts alone. Mixing `?` with named markers is an error.
///
/// A statement holds at most [`MAX_PARAMETERS`] markers, and a `$N` position may be at most
/// that many and no more than the SQL has characters (it lists every position up to `N`):
/// a larger one is `INVALID_ARGUMENT` naming the marker, refused before anything is allocated
/// for it.
pub(crate) fn rewrite_markers(sql: &str) -> Result<RewrittenSql, FlightSqlError> {
    let chars: Vec<char> = sql.chars().collect();
    // `$N` lists positions 1..=N: never more than the text could hold markers for.
    let max_position = MAX_PARAMETERS.min(chars.len());
    let mut out = String::with_capacity(sql.len() + 8);
    let mut names: Vec<String> = Vec::new();
    // Dedup in O(1) per marker: a `contains` scan is quadratic in the number of markers.
    let mut seen: HashSet<String> = HashSet::new();
    let mut positional = 0usize;
    let mut named = false;
    let mut i = 0;
    let mut push_name = |names: &mut Vec<String>, name: String| {
        if seen.insert(name.clone()) {
            names.push(name);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                // Quoted: copy up to the closing quote (a doubled quote or a backslash escape
                // stays inside).
                out.push(c);
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    out.push(d);
                    i += 1;
                    if d == '\\' && c != '`' && i < chars.len() {
                        out.push(chars[i]);
                        i += 1;
                    } else if d == c {
                        if i < chars.len() && chars[i] == c {
                            out.push(c);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                out.push_str("/*");
                i += 2;
                while i < chars.len() {
                    if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        out.push_str("*/");
                        i += 2;
                        break;
                    }
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '?' => {
                if positional >= MAX_PARAMETERS {
                    return Err(FlightSqlError::InvalidArgument(format!(
                        "parameter marker `?` number {}: a statement holds at most \
                         {MAX_PARAMETERS} parameters",
                        positional.saturating_add(1)
                    )));
                }
                positional += 1;
                let name = positional.to_string();
                out.push('$');
                out.push_str(&name);
                push_name(&mut names, name);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphabetic() || *n == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push('$');
                out.push_str(&name);
                named = true;
                push_name(&mut names, name);
                if names.len() > MAX_PARAMETERS {
                    return Err(too_many_named());
                }
                i = end;
            }
            '$' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphanumeric() || *n == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                if name.chars().all(|c| c.is_ascii_digit()) {
                    let position = name
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=max_position).contains(n))
                        .ok_or_else(|| invalid_position(&name, max_position))?;
                    positional = positional.max(position);
                } else {
                    named = true;
                }
                out.push('$');
                out.push_str(&name);
                push_name(&mut names, name);
                if names.len() > MAX_PARAMETERS {
                    return Err(too_many_named());
                }
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if named && positional > 0 {
        return Err(FlightSqlError::InvalidArgument(
            "the statement mixes positional (`?`) and named (`:name`) parameters".into(),
        ));
    }
    if positional > 0 {
        // `$3` without `$2`: still list every position up to the highest.
        names = (1..=positional).map(|n| n.to_string()).collect();
    }
    Ok(RewrittenSql { sql: out, names })
}

/// The error of a `$N` marker whose position is 0, unparsable or above `max`.
fn invalid_position(digits: &str, max: usize) -> FlightSqlError {
    let quoted: String = digits.chars().take(MAX_QUOTED_MARKER).collect();
    let ellipsis = if digits.len() > MAX_QUOTED_MARKER {
        "…"
    } else {
        ""
    };
    FlightSqlError::InvalidArgument(format!(
        "parameter marker `${quoted}{ellipsis}` is out of range: positions run from $1 to \
         ${max} in this statement (at most {MAX_PARAMETERS})"
    ))
}

fn too_many_named() -> FlightSqlError {
    FlightSqlError::InvalidArgument(format!(
        "the statement has more than {MAX_PARAMETERS} distinct named parameters"
    ))
}

/// The parameter schema of a plan, in marker order: one nullable field per marker, typed as
/// DataFusion inferred it (`Null` when it could not).
pub(crate) fn parameter_schema(
    plan: &LogicalPlan,
    names: &[String],
) -> Result<SchemaRef, FlightSqlError> {
    let types = plan.get_parameter_types()?;
    let fields: Vec<Field> = names
        .iter()
        .map(|name| {
            let data_type = types
                .get(&format!("${name}"))
                .cloned()
                .flatten()
                .unwrap_or(DataType::Null);
            Field::new(name.clone(), data_type, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Binds the single-row `batch` to the plan's placeholders.
pub(crate) fn bind(
    plan: LogicalPlan,
    names: &[String],
    batch: Option<&RecordBatch>,
) -> Result<LogicalPlan, FlightSqlError> {
    if names.is_empty() {
        return match batch {
            Some(b) if b.num_columns() > 0 => Err(FlightSqlError::InvalidArgument(format!(
                "the statement has no parameters but {} were bound",
                b.num_columns()
            ))),
            _ => Ok(plan),
        };
    }
    let Some(batch) = batch else {
        return Err(FlightSqlError::InvalidArgument(format!(
            "the statement has {} parameter(s) ({}) but none were bound",
            names.len(),
            names.join(", ")
        )));
    };
    if batch.num_rows() != 1 {
        return Err(FlightSqlError::InvalidArgument(format!(
            "bind exactly one row of parameters to a query (got {} rows)",
            batch.num_rows()
        )));
    }
    let types = plan.get_parameter_types()?;
    let schema = batch.schema();
    let by_name = names.iter().all(|n| schema.column_with_name(n).is_some());
    if !by_name && batch.num_columns() != names.len() {
        return Err(FlightSqlError::InvalidArgument(format!(
            "the statement has {} parameter(s) ({}) but {} value(s) were bound",
            names.len(),
            names.join(", "),
            batch.num_columns()
        )));
    }
    let mut values = Vec::with_capacity(names.len());
    for (position, name) in names.iter().enumerate() {
        let index = if by_name {
            schema.index_of(name).unwrap_or(position)
        } else {
            position
        };
        let column = batch.column(index);
        let mut value = ScalarValue::try_from_array(column, 0)?;
        if let Some(Some(target)) = types.get(&format!("${name}"))
            && value.data_type() != *target
        {
            value = value.cast_to(target).map_err(|e| {
                FlightSqlError::InvalidArgument(format!(
                    "parameter {name}: cannot use a {} value as {target}: {e}",
                    column.data_type()
                ))
            })?;
        }
        values.push((name.clone(), value));
    }
    let param_values = if names[0].parse::<usize>().is_ok() {
        ParamValues::from(values.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
    } else {
        let map: HashMap<String, ScalarValue> = values.into_iter().collect();
        ParamValues::Map(map.into_iter().map(|(k, v)| (k, v.into())).collect())
    };
    Ok(plan.with_param_values(param_values)?)
}

/// Arrow IPC stream bytes of `batch`.
pub(crate) fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, FlightSqlError> {
    let mut buffer = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(buffer)
}

/// The one batch of an IPC stream written by [`encode_batch`] (`None` for empty bytes).
pub(crate) fn decode_batch(bytes: &[u8]) -> Result<Option<RecordBatch>, FlightSqlError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    match reader.next() {
        Some(batch) => Ok(Some(batch?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::prelude::SessionContext;

    #[test]
    fn rewrites_markers_outside_literals_and_comments() {
        let r = rewrite_markers(
            "SELECT '?', \"a?\", `:x`, x::int -- what?\n FROM t WHERE a = ? /* ? */ AND b = ?",
        )
        .expect("valid");
        assert_eq!(
            r.sql,
            "SELECT '?', \"a?\", `:x`, x::int -- what?\n FROM t WHERE a = $1 /* ? */ AND b = $2"
        );
        assert_eq!(r.names, vec!["1", "2"]);

        let r = rewrite_markers(
            "SELECT * FROM t WHERE a = :lo OR b = :hi OR c = :lo AND d = 'it''s :no'",
        )
        .expect("valid");
        assert_eq!(
            r.sql,
            "SELECT * FROM t WHERE a = $lo OR b = $hi OR c = $lo AND d = 'it''s :no'"
        );
        assert_eq!(r.names, vec!["lo", "hi"]);

        assert!(rewrite_markers("SELECT ? , :a").is_err());
        assert_eq!(
            rewrite_markers("SELECT 1").expect("valid").names,
            Vec::<String>::new()
        );
    }

    #[test]
    fn huge_or_zero_positions_are_refused_without_allocating() {
        for sql in [
            "SELECT $3000000000",
            "SELECT $18446744073709551616000",
            "SELECT $65536",
            "SELECT $0",
            // Within the global cap but beyond what this text could hold.
            "SELECT $100",
        ] {
            let err = rewrite_markers(sql).expect_err(sql);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{sql}");
            let marker = sql.trim_start_matches("SELECT ");
            let shown: String = marker.chars().take(MAX_QUOTED_MARKER + 1).collect();
            assert!(err.to_string().contains(&shown), "{sql}: {err}");
        }
        // The highest position a long enough text may use is accepted.
        let padding = " ".repeat(MAX_PARAMETERS);
        let r = rewrite_markers(&format!("SELECT $65535{padding}")).expect("at the cap");
        assert_eq!(r.names.len(), MAX_PARAMETERS);
        assert_eq!(r.names.last().map(String::as_str), Some("65535"));
        let r = rewrite_markers("SELECT $3 + $1").expect("gap");
        assert_eq!(r.names, vec!["1", "2", "3"]);
    }

    #[test]
    fn too_many_question_marks_are_refused() {
        let sql = format!("SELECT {}", vec!["?"; MAX_PARAMETERS + 1].join(","));
        let err = rewrite_markers(&sql).expect_err("one too many");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("65536"), "{err}");
        let sql = format!("SELECT {}", vec!["?"; MAX_PARAMETERS].join(","));
        assert_eq!(
            rewrite_markers(&sql).expect("at the cap").names.len(),
            MAX_PARAMETERS
        );
    }

    async fn plan(sql: &str) -> (LogicalPlan, Vec<String>) {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t(id BIGINT, name VARCHAR) AS VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await
            .expect("create")
            .collect()
            .await
            .expect("run");
        let r = rewrite_markers(sql).expect("rewrite");
        let plan = ctx.state().create_logical_plan(&r.sql).await.expect("plan");
        (plan, r.names)
    }

    #[tokio::test]
    async fn binds_positional_and_named_values_with_inferred_types() {
        let (p, names) = plan("SELECT name FROM t WHERE id = ?").await;
        let schema = parameter_schema(&p, &names).expect("schema");
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        // An Int32 value is cast to the inferred Int64.
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int32Array::from(vec![2])) as _,
        )])
        .expect("batch");
        let bound = bind(p, &names, Some(&batch)).expect("bind");
        let text = bound.display_indent().to_string();
        assert!(text.contains("t.id = Int64(2)"), "{text}");

        let (p, names) = plan("SELECT name FROM t WHERE id > :lo AND name <> :skip").await;
        let batch = RecordBatch::try_from_iter([
            ("skip", Arc::new(StringArray::from(vec!["c"])) as _),
            ("lo", Arc::new(Int64Array::from(vec![1])) as _),
        ])
        .expect("batch");
        let bound = bind(p, &names, Some(&batch)).expect("bind by name");
        assert!(bound.get_parameter_types().expect("types").is_empty());
        let text = bound.display_indent().to_string();
        assert!(
            text.contains("Int64(1)") && text.contains("(\"c\")"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn refuses_missing_and_multi_row_bindings() {
        let (p, names) = plan("SELECT name FROM t WHERE id = ?").await;
        assert_eq!(
            bind(p.clone(), &names, None).expect_err("unbound").code(),
            tonic::Code::InvalidArgument
        );
        let two = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)])
            .expect("batch");
        assert!(bind(p, &names, Some(&two)).is_err());
    }

    #[test]
    fn ipc_round_trip() {
        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![7])) as _)])
            .expect("batch");
        let bytes = encode_batch(&batch).expect("encode");
        assert_eq!(decode_batch(&bytes).expect("decode"), Some(batch));
        assert_eq!(decode_batch(&[]).expect("empty"), None);
        assert!(decode_batch(b"junk").is_err());
    }
}
