//! `INLINE` + `JSON_ARRAY` results to Arrow.
//!
//! Each value arrives as a string (or null) and is converted to the column's manifest type:
//! numbers, decimals, dates and timestamps (`2021-01-01T10:00:00.000-08:00`) through Arrow's
//! string casts, binary from base64, intervals from `Y-M` / `D HH:MM:SS.fff` forms, and nested
//! types (`ARRAY`, `MAP`, `STRUCT`), whose values are JSON text, through `arrow::json`.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, DurationMicrosecondArray, IntervalYearMonthArray, RecordBatch,
    RecordBatchOptions, StringArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options, concat};
use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use arrow::util::display::FormatOptions;
use base64::Engine;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::types::{ColumnInfo, ResultSchema};

/// Converts the `data_array` rows of one chunk to a batch of `schema`.
pub fn rows_to_batch(
    rows: &[Vec<Option<Value>>],
    schema: &ResultSchema,
    what: &str,
) -> Result<RecordBatch> {
    let arrow_schema = schema.arrow_schema();
    let width = arrow_schema.fields().len();
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(Error::decode(
            what,
            format!(
                "row {i} has {} values but the manifest declares {width} columns",
                row.len()
            ),
        ));
    }
    let columns = arrow_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, field)| {
            let values: Vec<Option<String>> = rows
                .iter()
                .map(|row| match &row[c] {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
                .collect();
            let column_info = schema.columns().get(c);
            convert_column(&values, field.data_type(), column_info)
                .map_err(|e| Error::decode(what, format!("column {:?}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(arrow_schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .map_err(|e| Error::decode(what, e))
}

/// Converts one column of string values; errors are plain messages (the caller adds context).
fn convert_column(
    values: &[Option<String>],
    ty: &DataType,
    column: Option<&ColumnInfo>,
) -> std::result::Result<ArrayRef, String> {
    match ty {
        DataType::Utf8 => Ok(Arc::new(StringArray::from_iter(values.iter()))),
        DataType::Null => Ok(new_null_array(ty, values.len())),
        DataType::Binary => {
            let mut b = BinaryBuilder::new();
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(s) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(s.trim())
                            .map_err(|e| format!("binary value is not base64: {e}"))?;
                        b.append_value(bytes);
                    }
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let start = interval_start(column);
            let parsed = values
                .iter()
                .map(|v| {
                    v.as_deref()
                        .map(|s| parse_year_month(s, &start))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Arc::new(IntervalYearMonthArray::from(parsed)))
        }
        DataType::Duration(TimeUnit::Microsecond) => {
            let start = interval_start(column);
            let parsed = values
                .iter()
                .map(|v| {
                    v.as_deref()
                        .map(|s| parse_day_time_micros(s, &start))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Arc::new(DurationMicrosecondArray::from(parsed)))
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) | DataType::Struct(_) => {
            nested_from_json(values, ty)
        }
        _ => {
            let strings = StringArray::from_iter(values.iter());
            let options = CastOptions {
                safe: false,
                format_options: FormatOptions::default(),
            };
            cast_with_options(&strings, ty, &options).map_err(|e| e.to_string())
        }
    }
}

fn interval_start(column: Option<&ColumnInfo>) -> String {
    column
        .and_then(|c| {
            c.type_interval_type.clone().or_else(|| {
                c.type_text
                    .trim()
                    .strip_prefix("INTERVAL")
                    .map(|q| q.trim().to_owned())
            })
        })
        .and_then(|q| q.split_whitespace().next().map(str::to_ascii_uppercase))
        .unwrap_or_default()
}

/// Strips `INTERVAL '...' QUALIFIER` decoration and the sign; returns (negative, body).
fn interval_body(s: &str) -> (bool, String) {
    let mut t = s.trim();
    // `get`: the value comes from the network and byte 8 may fall inside a character.
    if let Some(rest) = t
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("INTERVAL"))
        .and_then(|_| t.get(8..))
    {
        t = rest.trim();
    }
    let mut negative = false;
    if let Some(r) = t.strip_prefix('-') {
        negative = true;
        t = r.trim_start();
    } else if let Some(r) = t.strip_prefix('+') {
        t = r.trim_start();
    }
    if let Some(r) = t.strip_prefix('\'') {
        t = r.split('\'').next().unwrap_or_default();
    }
    let mut body = t.trim();
    if let Some(r) = body.strip_prefix('-') {
        negative = !negative;
        body = r;
    } else if let Some(r) = body.strip_prefix('+') {
        body = r;
    }
    (negative, body.to_owned())
}

/// `Y-M`, or a bare number of years or months depending on the qualifier's start field.
fn parse_year_month(s: &str, start: &str) -> std::result::Result<i32, String> {
    let bad = || format!("invalid year-month interval {s:?}");
    let (negative, body) = interval_body(s);
    let months: i64 = if let Some((y, m)) = body.split_once('-') {
        let y: i64 = y.trim().parse().map_err(|_| bad())?;
        let m: i64 = m.trim().parse().map_err(|_| bad())?;
        y.checked_mul(12)
            .and_then(|y| y.checked_add(m))
            .ok_or_else(bad)?
    } else {
        let n: i64 = body.trim().parse().map_err(|_| bad())?;
        if start == "YEAR" {
            n.checked_mul(12).ok_or_else(bad)?
        } else {
            n
        }
    };
    let months = if negative {
        months.checked_neg().ok_or_else(bad)?
    } else {
        months
    };
    i32::try_from(months).map_err(|_| bad())
}

/// `D HH:MM:SS.ffffff` or a suffix of it starting at the qualifier's start field
/// (`27:15:20.456` for `HOUR TO SECOND`, `45.789` for `SECOND`), in microseconds.
fn parse_day_time_micros(s: &str, start: &str) -> std::result::Result<i64, String> {
    let bad = || format!("invalid day-time interval {s:?}");
    let (negative, body) = interval_body(s);
    let parts: Vec<&str> = body.split([' ', ':']).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.len() > 4 {
        return Err(bad());
    }
    const UNITS: [i64; 4] = [86_400_000_000, 3_600_000_000, 60_000_000, 1_000_000];
    let mut first = match start {
        "DAY" => 0,
        "HOUR" => 1,
        "MINUTE" => 2,
        "SECOND" => 3,
        _ => 4 - parts.len(),
    };
    if body.contains(' ') {
        first = 0;
    }
    if first + parts.len() > 4 {
        first = 4 - parts.len();
    }
    let last = parts.len() - 1;
    let mut total: i64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let unit = UNITS[first + i];
        let (whole, frac) = match part.split_once('.') {
            Some((w, f)) if i == last && first + i == 3 => (w, f),
            Some(_) => return Err(bad()),
            None => (*part, ""),
        };
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
            return Err(bad());
        }
        let mut micros_frac: i64 = 0;
        for (k, d) in frac.chars().take(6).enumerate() {
            micros_frac += i64::from(d.to_digit(10).unwrap_or(0)) * 10i64.pow(5 - k as u32);
        }
        total = whole
            .checked_mul(unit)
            .and_then(|v| v.checked_add(micros_frac))
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if negative {
        total.checked_neg().ok_or_else(bad)
    } else {
        Ok(total)
    }
}

/// Nested values are JSON text: decode them with `arrow::json` as one-field records.
fn nested_from_json(
    values: &[Option<String>],
    ty: &DataType,
) -> std::result::Result<ArrayRef, String> {
    let mut lines = String::new();
    for v in values {
        lines.push_str("{\"v\":");
        match v {
            None => lines.push_str("null"),
            Some(s) => {
                // Validate first: a stray value must not bleed into the next record.
                let parsed: Value = serde_json::from_str(s)
                    .map_err(|e| format!("nested value is not JSON ({e}): {s:.60}"))?;
                lines.push_str(&parsed.to_string());
            }
        }
        lines.push_str("}\n");
    }
    let schema = Arc::new(Schema::new(vec![Field::new("v", ty.clone(), true)]));
    let reader = arrow::json::ReaderBuilder::new(schema)
        .with_batch_size(values.len().max(1))
        .build(Cursor::new(lines.into_bytes()))
        .map_err(|e| format!("unsupported nested type {ty}: {e}"))?;
    let mut arrays = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("cannot convert nested JSON to {ty}: {e}"))?;
        arrays.push(batch.column(0).clone());
    }
    match arrays.len() {
        0 => Ok(new_null_array(ty, 0)),
        1 => Ok(arrays.remove(0)),
        _ => {
            let refs: Vec<&dyn arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
            concat(&refs).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        Int64Array, ListArray, MapArray, StructArray, TimestampMicrosecondArray,
    };

    use super::*;

    fn schema(cols: &[(&str, &str)]) -> ResultSchema {
        ResultSchema::try_new(
            cols.iter()
                .enumerate()
                .map(|(i, (n, t))| ColumnInfo::new(*n, i, *t))
                .collect(),
            "UTC",
        )
        .expect("schema")
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<Value>> {
        values
            .iter()
            .map(|v| v.map(|s| Value::String(s.to_owned())))
            .collect()
    }

    #[test]
    fn hostile_interval_values_are_errors_not_panics() {
        // Byte 8 inside a multi-byte character; i64::MIN negated.
        for s in ["aéééé", "ééééé", "INTERVAL"] {
            assert!(parse_year_month(s, "YEAR").is_err(), "{s}");
            assert!(parse_day_time_micros(s, "DAY").is_err(), "{s}");
        }
        assert!(parse_year_month("-0--9223372036854775808", "YEAR").is_err());
        assert_eq!(
            parse_year_month("INTERVAL '-1-2' YEAR TO MONTH", "YEAR"),
            Ok(-14)
        );
        assert_eq!(
            parse_day_time_micros("-0 00:00:01.5", "DAY"),
            Ok(-1_500_000)
        );
    }

    #[test]
    fn scalars_convert() {
        let s = schema(&[
            ("i", "INT"),
            ("l", "BIGINT"),
            ("d", "DOUBLE"),
            ("b", "BOOLEAN"),
            ("dec", "DECIMAL(10,2)"),
            ("dt", "DATE"),
            ("s", "STRING"),
            ("n", "VOID"),
        ]);
        let rows = vec![
            row(&[
                Some("1"),
                Some("-9000000000"),
                Some("1.5"),
                Some("true"),
                Some("123.45"),
                Some("2024-02-29"),
                Some("こんにちは"),
                None,
            ]),
            row(&[
                None,
                None,
                None,
                Some("false"),
                Some("-0.01"),
                None,
                Some(""),
                None,
            ]),
        ];
        let b = rows_to_batch(&rows, &s, "chunk 0").expect("convert");
        assert_eq!(b.num_rows(), 2);
        let i = b
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("i32");
        assert_eq!(i.value(0), 1);
        assert!(i.is_null(1));
        let l = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(l.value(0), -9_000_000_000);
        let d = b
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f64");
        assert_eq!(d.value(0), 1.5);
        let bo = b
            .column(3)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("bool");
        assert!(bo.value(0) && !bo.value(1));
        let dec = b
            .column(4)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("dec");
        assert_eq!(dec.value(0), 12345);
        assert_eq!(dec.value(1), -1);
        let dt = b
            .column(5)
            .as_any()
            .downcast_ref::<Date32Array>()
            .expect("date");
        assert_eq!(dt.value(0), 19782);
        assert_eq!(b.column(6).as_string::<i32>().value(0), "こんにちは");
        assert_eq!(b.column(6).as_string::<i32>().value(1), "");
        assert_eq!(b.column(7).logical_null_count(), 2);
    }

    #[test]
    fn timestamps_with_offsets_are_instants() {
        let s = schema(&[("ts", "TIMESTAMP"), ("ntz", "TIMESTAMP_NTZ")]);
        let rows = vec![
            row(&[
                Some("2021-01-01T10:00:00.000-08:00"),
                Some("2021-01-01T10:00:00.000"),
            ]),
            row(&[Some("2021-06-15T12:34:56.789-07:00"), None]),
        ];
        let b = rows_to_batch(&rows, &s, "c").expect("ts");
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        // 2021-01-01T18:00:00Z
        assert_eq!(ts.value(0), 1_609_524_000_000_000);
        // 2021-06-15T19:34:56.789Z
        assert_eq!(ts.value(1), 1_623_785_696_789_000);
        let ntz = b
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ntz");
        assert_eq!(ntz.value(0), 1_609_495_200_000_000);
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_year_month("100-0", "YEAR"), Ok(1200));
        assert_eq!(parse_year_month("-1-6", "YEAR"), Ok(-18));
        assert_eq!(parse_year_month("100", "YEAR"), Ok(1200));
        assert_eq!(parse_year_month("1200", "MONTH"), Ok(1200));
        assert_eq!(
            parse_year_month("INTERVAL '100-0' YEAR TO MONTH", "YEAR"),
            Ok(1200)
        );
        assert!(parse_year_month("x-1", "YEAR").is_err());
        assert!(parse_year_month("999999999999-0", "YEAR").is_err());

        let s = 1_000_000i64;
        assert_eq!(
            parse_day_time_micros("3 04:30:20.123", "DAY"),
            Ok(3 * 86_400 * s + 4 * 3600 * s + 30 * 60 * s + 20_123_000)
        );
        assert_eq!(parse_day_time_micros("3", "DAY"), Ok(3 * 86_400 * s));
        assert_eq!(
            parse_day_time_micros("27:15:20.456", "HOUR"),
            Ok(27 * 3600 * s + 15 * 60 * s + 20_456_000)
        );
        assert_eq!(
            parse_day_time_micros("90:30.5", "MINUTE"),
            Ok(90 * 60 * s + 30_500_000)
        );
        assert_eq!(parse_day_time_micros("45.789", "SECOND"), Ok(45_789_000));
        assert_eq!(
            parse_day_time_micros("-0 00:00:01.000000001", "DAY"),
            Ok(-s)
        );
        assert_eq!(
            parse_day_time_micros("INTERVAL '-3 04' DAY TO HOUR", "DAY"),
            Ok(-(3 * 86_400 * s + 4 * 3600 * s))
        );
        for bad in ["", "a b", "1:2:3:4:5", "1.5 00:00:00", "1 2:3.x", "1.2.3"] {
            assert!(parse_day_time_micros(bad, "DAY").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interval_columns_convert() {
        let s = schema(&[
            ("ym", "INTERVAL YEAR TO MONTH"),
            ("dt", "INTERVAL DAY TO SECOND"),
        ]);
        let rows = vec![
            row(&[Some("1-2"), Some("1 00:00:01.5")]),
            row(&[None, None]),
        ];
        let b = rows_to_batch(&rows, &s, "c").expect("intervals");
        let ym = b
            .column(0)
            .as_any()
            .downcast_ref::<IntervalYearMonthArray>()
            .expect("ym");
        assert_eq!(ym.value(0), 14);
        assert!(ym.is_null(1));
        let dt = b
            .column(1)
            .as_any()
            .downcast_ref::<DurationMicrosecondArray>()
            .expect("dt");
        assert_eq!(dt.value(0), 86_401_500_000);
    }

    #[test]
    fn binary_is_base64() {
        let s = schema(&[("b", "BINARY")]);
        let b = rows_to_batch(&[row(&[Some("AQID")]), row(&[None])], &s, "c").expect("bin");
        assert_eq!(b.column(0).as_binary::<i32>().value(0), &[1, 2, 3]);
        let err = rows_to_batch(&[row(&[Some("!!")])], &s, "chunk 4").expect_err("bad b64");
        assert!(err.to_string().contains("chunk 4") && err.to_string().contains("\"b\""));
    }

    #[test]
    fn nested_values_are_json_text() {
        let s = schema(&[
            ("a", "ARRAY<INT>"),
            ("m", "MAP<STRING, BIGINT>"),
            ("st", "STRUCT<x: INT, y: STRING>"),
        ]);
        let rows = vec![
            row(&[
                Some("[1,2,null]"),
                Some(r#"{"k":7}"#),
                Some(r#"{"x":1,"y":"z"}"#),
            ]),
            row(&[None, None, None]),
        ];
        let b = rows_to_batch(&rows, &s, "c").expect("nested");
        let a = b
            .column(0)
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("list");
        assert_eq!(a.value(0).len(), 3);
        assert!(a.is_null(1));
        let m = b
            .column(1)
            .as_any()
            .downcast_ref::<MapArray>()
            .expect("map");
        assert_eq!(m.value(0).len(), 1);
        let st = b
            .column(2)
            .as_any()
            .downcast_ref::<StructArray>()
            .expect("struct");
        assert_eq!(st.column(1).as_string::<i32>().value(0), "z");
        assert!(st.is_null(1));

        let err = rows_to_batch(&[row(&[Some("[1,"), None, None])], &s, "c").expect_err("bad");
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn bad_values_and_shapes_are_errors() {
        let s = schema(&[("i", "INT")]);
        let err = rows_to_batch(&[row(&[Some("nope")])], &s, "chunk 1").expect_err("bad int");
        assert!(err.to_string().contains("chunk 1"), "{err}");
        let err = rows_to_batch(&[row(&[Some("1"), Some("2")])], &s, "c").expect_err("width");
        assert!(err.to_string().contains("2 values"), "{err}");
        let b = rows_to_batch(&[], &s, "c").expect("empty");
        assert_eq!(b.num_rows(), 0);
        let overflow = rows_to_batch(&[row(&[Some("99999999999")])], &s, "c");
        assert!(overflow.is_err());
    }
}
