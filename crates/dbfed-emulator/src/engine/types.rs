//! Databricks SQL types of Arrow data: manifest `type_name`/`type_text`, `DESCRIBE`/
//! `information_schema` spellings, and the Arrow type a warehouse ships in ARROW_STREAM.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DurationMicrosecondArray, IntervalMonthDayNanoArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::ColumnDescription;

/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The Databricks view of one Arrow type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SqlType {
    /// Manifest `type_name` (`LONG`, `DECIMAL`, `ARRAY`, ...).
    pub type_name: &'static str,
    /// Manifest `type_text` (`BIGINT`, `DECIMAL(18,2)`, `MAP<STRING, INT>`, ...).
    pub type_text: String,
    /// Spark "simple string" as `DESCRIBE` and `full_data_type` show it (`bigint`, `struct<a:int>`).
    pub simple: String,
    /// DECIMAL precision.
    pub precision: Option<i32>,
    /// DECIMAL scale.
    pub scale: Option<i32>,
    /// INTERVAL qualifier (`DAY TO SECOND`, `YEAR TO MONTH`).
    pub interval_type: Option<&'static str>,
    /// The Arrow type a warehouse ships for this SQL type.
    pub wire: DataType,
}

impl SqlType {
    fn simple(type_name: &'static str, text: &str, wire: DataType) -> Self {
        SqlType {
            type_name,
            type_text: text.to_string(),
            simple: text.to_ascii_lowercase(),
            precision: None,
            scale: None,
            interval_type: None,
            wire,
        }
    }

    fn decimal(precision: u8, scale: i8) -> Self {
        let text = format!("DECIMAL({precision},{scale})");
        SqlType {
            type_name: "DECIMAL",
            simple: text.to_ascii_lowercase(),
            type_text: text,
            precision: Some(i32::from(precision)),
            scale: Some(i32::from(scale)),
            interval_type: None,
            wire: DataType::Decimal128(precision, scale),
        }
    }

    fn interval(qualifier: &'static str, wire: DataType) -> Self {
        let text = format!("INTERVAL {qualifier}");
        SqlType {
            type_name: "INTERVAL",
            simple: text.to_ascii_lowercase(),
            type_text: text,
            precision: None,
            scale: None,
            interval_type: Some(qualifier),
            wire,
        }
    }

    /// The manifest column of a result column with this type.
    pub fn column(&self, name: &str) -> ColumnDescription {
        ColumnDescription {
            name: name.to_string(),
            type_name: self.type_name.to_string(),
            type_text: self.type_text.clone(),
            type_precision: self.precision,
            type_scale: self.scale,
            type_interval_type: self.interval_type.map(str::to_string),
        }
    }

    /// `numeric_precision`, `numeric_precision_radix`, `numeric_scale` of `information_schema.columns`.
    pub fn numeric_info(&self) -> (Option<i32>, Option<i32>, Option<i32>) {
        match self.type_name {
            "BYTE" => (Some(3), Some(10), Some(0)),
            "SHORT" => (Some(5), Some(10), Some(0)),
            "INT" => (Some(10), Some(10), Some(0)),
            "LONG" => (Some(19), Some(10), Some(0)),
            "FLOAT" => (Some(24), Some(2), None),
            "DOUBLE" => (Some(53), Some(2), None),
            "DECIMAL" => (self.precision, Some(10), self.scale),
            _ => (None, None, None),
        }
    }
}

/// Maps an Arrow type produced by the engine to its Databricks SQL type, given the session time zone.
pub(crate) fn sql_type(data_type: &DataType, time_zone: &str) -> SqlType {
    use DataType as D;
    match data_type {
        D::Null => SqlType::simple("NULL", "VOID", D::Null),
        D::Boolean => SqlType::simple("BOOLEAN", "BOOLEAN", D::Boolean),
        D::Int8 => SqlType::simple("BYTE", "TINYINT", D::Int8),
        D::Int16 | D::UInt8 => SqlType::simple("SHORT", "SMALLINT", D::Int16),
        D::Int32 | D::UInt16 => SqlType::simple("INT", "INT", D::Int32),
        D::Int64 | D::UInt32 => SqlType::simple("LONG", "BIGINT", D::Int64),
        D::UInt64 => SqlType::decimal(20, 0),
        D::Float16 | D::Float32 => SqlType::simple("FLOAT", "FLOAT", D::Float32),
        D::Float64 => SqlType::simple("DOUBLE", "DOUBLE", D::Float64),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) => {
            SqlType::decimal((*p).clamp(1, 38), (*s).clamp(0, 38))
        }
        D::Decimal256(p, s) => {
            let p = (*p).clamp(1, 38);
            SqlType::decimal(p, (*s).clamp(0, p as i8))
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => SqlType::simple("STRING", "STRING", D::Utf8),
        // Databricks has no TIME type: ship the text.
        D::Time32(_) | D::Time64(_) => SqlType::simple("STRING", "STRING", D::Utf8),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            SqlType::simple("BINARY", "BINARY", D::Binary)
        }
        D::Date32 | D::Date64 => SqlType::simple("DATE", "DATE", D::Date32),
        D::Timestamp(_, Some(_)) => SqlType::simple(
            "TIMESTAMP",
            "TIMESTAMP",
            D::Timestamp(TimeUnit::Microsecond, Some(time_zone.into())),
        ),
        D::Timestamp(_, None) => SqlType::simple(
            "TIMESTAMP_NTZ",
            "TIMESTAMP_NTZ",
            D::Timestamp(TimeUnit::Microsecond, None),
        ),
        D::Interval(IntervalUnit::YearMonth) => {
            SqlType::interval("YEAR TO MONTH", D::Interval(IntervalUnit::YearMonth))
        }
        D::Interval(_) | D::Duration(_) => {
            SqlType::interval("DAY TO SECOND", D::Duration(TimeUnit::Microsecond))
        }
        D::List(f)
        | D::LargeList(f)
        | D::ListView(f)
        | D::LargeListView(f)
        | D::FixedSizeList(f, _) => {
            let inner = sql_type(f.data_type(), time_zone);
            SqlType {
                type_name: "ARRAY",
                type_text: format!("ARRAY<{}>", inner.type_text),
                simple: format!("array<{}>", inner.simple),
                precision: None,
                scale: None,
                interval_type: None,
                wire: D::List(Arc::new(Field::new("element", inner.wire, true))),
            }
        }
        D::Map(entries, sorted) => {
            let (key, value) = match entries.data_type() {
                D::Struct(kv) if kv.len() == 2 => (
                    sql_type(kv[0].data_type(), time_zone),
                    sql_type(kv[1].data_type(), time_zone),
                ),
                _ => (sql_type(&D::Utf8, time_zone), sql_type(&D::Utf8, time_zone)),
            };
            let wire_entries = Field::new(
                "entries",
                D::Struct(Fields::from(vec![
                    Field::new("key", key.wire.clone(), false),
                    Field::new("value", value.wire.clone(), true),
                ])),
                false,
            );
            SqlType {
                type_name: "MAP",
                type_text: format!("MAP<{}, {}>", key.type_text, value.type_text),
                simple: format!("map<{},{}>", key.simple, value.simple),
                precision: None,
                scale: None,
                interval_type: None,
                wire: D::Map(Arc::new(wire_entries), *sorted),
            }
        }
        D::Struct(fields) => {
            let members: Vec<(String, SqlType)> = fields
                .iter()
                .map(|f| (f.name().clone(), sql_type(f.data_type(), time_zone)))
                .collect();
            let text = members
                .iter()
                .map(|(n, t)| format!("{n}: {}", t.type_text))
                .collect::<Vec<_>>()
                .join(", ");
            let simple = members
                .iter()
                .map(|(n, t)| format!("{n}:{}", t.simple))
                .collect::<Vec<_>>()
                .join(",");
            let wire = D::Struct(Fields::from(
                members
                    .into_iter()
                    .map(|(n, t)| Field::new(n, t.wire, true))
                    .collect::<Vec<_>>(),
            ));
            SqlType {
                type_name: "STRUCT",
                type_text: format!("STRUCT<{text}>"),
                simple: format!("struct<{simple}>"),
                precision: None,
                scale: None,
                interval_type: None,
                wire,
            }
        }
        D::Dictionary(_, value) => sql_type(value, time_zone),
        D::RunEndEncoded(_, values) => sql_type(values.data_type(), time_zone),
        D::Union(_, _) => SqlType::simple("STRING", "STRING", D::Utf8),
    }
}

/// The output contract of one result: manifest columns, the wire schema and per-column overrides.
#[derive(Clone, Debug)]
pub(crate) struct OutputShape {
    pub columns: Vec<ColumnDescription>,
    pub schema: SchemaRef,
}

/// Builds the manifest columns and wire schema for a result whose engine schema is `schema`,
/// renaming the columns to `names` and overriding SQL types where `overrides` says so.
pub(crate) fn output_shape(
    schema: &Schema,
    names: &[String],
    overrides: &[Option<SqlType>],
    time_zone: &str,
) -> OutputShape {
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut fields = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| field.name().clone());
        let t = overrides
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| sql_type(field.data_type(), time_zone));
        columns.push(t.column(&name));
        fields.push(Field::new(name, t.wire, true));
    }
    OutputShape {
        columns,
        schema: Arc::new(Schema::new(fields)),
    }
}

/// Casts one engine batch to the wire schema (same column count and order).
pub(crate) fn cast_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    if batch.num_columns() != schema.fields().len() {
        return Err(ArrowError::SchemaError(format!(
            "result has {} columns but the manifest promises {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast_column(column, field.data_type(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

fn cast_column(
    column: &ArrayRef,
    to: &DataType,
    options: &CastOptions<'_>,
) -> Result<ArrayRef, ArrowError> {
    if column.data_type() == to {
        return Ok(Arc::clone(column));
    }
    match (column.data_type(), to) {
        (DataType::Interval(unit), DataType::Duration(TimeUnit::Microsecond))
            if *unit != IntervalUnit::YearMonth =>
        {
            let mdn = cast_with_options(
                column,
                &DataType::Interval(IntervalUnit::MonthDayNano),
                options,
            )?;
            interval_to_duration(&mdn)
        }
        _ => cast_with_options(column, to, options),
    }
}

/// Converts month-day-nano intervals to microsecond durations; months cannot be represented.
fn interval_to_duration(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let intervals = array
        .as_any()
        .downcast_ref::<IntervalMonthDayNanoArray>()
        .ok_or_else(|| ArrowError::CastError("expected a month-day-nano interval".into()))?;
    let mut out = Vec::with_capacity(intervals.len());
    for i in 0..intervals.len() {
        if intervals.is_null(i) {
            out.push(None);
            continue;
        }
        let v = intervals.value(i);
        if v.months != 0 {
            return Err(ArrowError::CastError(format!(
                "an interval of {} months cannot be shown as INTERVAL DAY TO SECOND",
                v.months
            )));
        }
        let micros = i64::from(v.days)
            .checked_mul(MICROS_PER_DAY)
            .and_then(|d| d.checked_add(v.nanoseconds / 1_000))
            .ok_or_else(|| {
                ArrowError::CastError("interval overflows INTERVAL DAY TO SECOND".into())
            })?;
        out.push(Some(micros));
    }
    Ok(Arc::new(DurationMicrosecondArray::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_types_match_recorded_manifests() {
        let cases: Vec<(DataType, &str, &str)> = vec![
            (DataType::Int64, "LONG", "BIGINT"),
            (DataType::Int32, "INT", "INT"),
            (DataType::Int16, "SHORT", "SMALLINT"),
            (DataType::Int8, "BYTE", "TINYINT"),
            (DataType::Float64, "DOUBLE", "DOUBLE"),
            (DataType::Float32, "FLOAT", "FLOAT"),
            (DataType::Utf8View, "STRING", "STRING"),
            (DataType::Boolean, "BOOLEAN", "BOOLEAN"),
            (DataType::Date32, "DATE", "DATE"),
            (DataType::Binary, "BINARY", "BINARY"),
            (DataType::Null, "NULL", "VOID"),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "TIMESTAMP_NTZ",
                "TIMESTAMP_NTZ",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                "TIMESTAMP",
                "TIMESTAMP",
            ),
            (DataType::Decimal128(18, 2), "DECIMAL", "DECIMAL(18,2)"),
            (
                DataType::Interval(IntervalUnit::MonthDayNano),
                "INTERVAL",
                "INTERVAL DAY TO SECOND",
            ),
            (
                DataType::Interval(IntervalUnit::YearMonth),
                "INTERVAL",
                "INTERVAL YEAR TO MONTH",
            ),
        ];
        for (dt, name, text) in cases {
            let t = sql_type(&dt, "UTC");
            assert_eq!((t.type_name, t.type_text.as_str()), (name, text), "{dt}");
        }
    }

    #[test]
    fn nested_types_are_spelled_like_databricks() {
        let strukt = DataType::Struct(Fields::from(vec![
            Field::new("street", DataType::Utf8, true),
            Field::new("zip", DataType::Int32, true),
        ]));
        let t = sql_type(&strukt, "UTC");
        assert_eq!(t.type_text, "STRUCT<street: STRING, zip: INT>");
        assert_eq!(t.simple, "struct<street:string,zip:int>");
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let t = sql_type(&list, "UTC");
        assert_eq!(t.type_text, "ARRAY<BIGINT>");
        assert_eq!(
            t.wire,
            DataType::List(Arc::new(Field::new("element", DataType::Int64, true)))
        );
    }

    #[test]
    fn intervals_become_durations_and_months_are_refused() {
        use arrow::datatypes::IntervalMonthDayNano;
        let ok: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            Some(IntervalMonthDayNano::new(0, 1, 2_000)),
            None,
        ]));
        let out = interval_to_duration(&ok).expect("days convert");
        let out = out
            .as_any()
            .downcast_ref::<DurationMicrosecondArray>()
            .expect("durations");
        assert_eq!(out.value(0), MICROS_PER_DAY + 2);
        assert!(out.is_null(1));
        let months: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![Some(
            IntervalMonthDayNano::new(1, 0, 0),
        )]));
        assert!(interval_to_duration(&months).is_err());
    }
}
