//! Result encoding: Databricks-style text values (`JSON_ARRAY`, `CSV`), Arrow IPC streams,
//! LZ4 frames, and manifest column descriptions derived from Arrow types.

use std::fmt::Write as _;
use std::io::Write as _;
use std::str::FromStr;

use arrow::array::timezone::Tz;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Field, Float16Type,
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, IntervalUnit,
    IntervalYearMonthType, Schema, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Offset};
use serde_json::value::RawValue;

use crate::engine::ColumnDescription;
use crate::state::{ChunkBody, Compression, Disposition, Format};

/// Why a chunk could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// How a statement wants its chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodeOptions {
    pub format: Format,
    pub disposition: Disposition,
    pub compression: Compression,
    pub lz4_frame_per_message: bool,
}

/// An encoded chunk.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Uncompressed size.
    pub byte_count: u64,
    pub body: ChunkBody,
}

/// Encodes `batches` as one chunk.
pub(crate) fn encode_chunk(
    schema: &Schema,
    batches: &[RecordBatch],
    options: EncodeOptions,
) -> Result<Encoded, EncodeError> {
    let raw: Vec<u8> = match options.format {
        Format::JsonArray => {
            let text = json_rows(batches)?;
            if options.disposition == Disposition::Inline {
                let byte_count = text.len() as u64;
                return Ok(Encoded {
                    byte_count,
                    body: ChunkBody::Inline(RawValue::from_string(text)?),
                });
            }
            text.into_bytes()
        }
        Format::Csv => csv_rows(schema, batches)?.into_bytes(),
        Format::ArrowStream => arrow_stream(schema, batches)?,
    };
    let byte_count = raw.len() as u64;
    let body = match options.compression {
        Compression::None => raw,
        Compression::Lz4Frame if options.format == Format::ArrowStream => {
            if options.lz4_frame_per_message {
                lz4_per_message(&raw)?
            } else {
                lz4_frame(&raw)?
            }
        }
        Compression::Lz4Frame => lz4_frame(&raw)?,
    };
    Ok(Encoded {
        byte_count,
        body: ChunkBody::File(Bytes::from(body)),
    })
}

/// A complete Arrow IPC stream: schema, batches, end-of-stream marker.
pub(crate) fn arrow_stream(
    schema: &Schema,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    writer.into_inner()
}

/// One LZ4 frame holding `data`.
pub(crate) fn lz4_frame(data: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2 + 64));
    encoder.write_all(data)?;
    encoder.finish().map_err(std::io::Error::other)
}

/// One LZ4 frame per IPC message, concatenated (what 2025-era warehouses send). Falls back to a
/// single frame if the stream cannot be split.
pub(crate) fn lz4_per_message(stream: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let Some(messages) = split_ipc_messages(stream) else {
        return lz4_frame(stream);
    };
    let mut out = Vec::with_capacity(stream.len() / 2 + 64 * messages.len());
    for (start, end) in messages {
        out.extend_from_slice(&lz4_frame(&stream[start..end])?);
    }
    Ok(out)
}

/// Byte ranges of the messages of an IPC stream (the end-of-stream marker is the last one).
fn split_ipc_messages(stream: &[u8]) -> Option<Vec<(usize, usize)>> {
    let read_u32 = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = stream.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    };
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let start = pos;
        let mut len = read_u32(pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = read_u32(pos)?;
            pos += 4;
        }
        if len == 0 {
            ranges.push((start, pos));
            continue;
        }
        let meta_end = pos.checked_add(len as usize)?;
        let meta = stream.get(pos..meta_end)?;
        let message = arrow::ipc::root_as_message(meta).ok()?;
        let body = usize::try_from(message.bodyLength()).ok()?;
        pos = meta_end.checked_add(body)?;
        if pos > stream.len() {
            return None;
        }
        ranges.push((start, pos));
    }
    Some(ranges)
}

/// `[[...],[...]]`: every value as a string or null, formatted like Databricks.
pub(crate) fn json_rows(batches: &[RecordBatch]) -> Result<String, EncodeError> {
    let mut out = String::from("[");
    let mut first_row = true;
    let mut cell = String::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| CellFormatter::new(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if !first_row {
                out.push(',');
            }
            first_row = false;
            out.push('[');
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                cell.clear();
                if f.write(&mut cell, row)? {
                    push_json_string(&mut out, &cell);
                } else {
                    out.push_str("null");
                }
            }
            out.push(']');
        }
    }
    out.push(']');
    Ok(out)
}

/// CSV with a header line; NULL is an empty field.
pub(crate) fn csv_rows(schema: &Schema, batches: &[RecordBatch]) -> Result<String, EncodeError> {
    let mut out = String::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_csv_field(&mut out, field.name());
    }
    out.push('\n');
    let mut cell = String::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| CellFormatter::new(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                cell.clear();
                if f.write(&mut cell, row)? {
                    push_csv_field(&mut out, &cell);
                }
            }
            out.push('\n');
        }
    }
    Ok(out)
}

fn push_csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends `value` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats the values of one column as Databricks renders them in `JSON_ARRAY` / `CSV`.
pub(crate) struct CellFormatter<'a> {
    array: &'a dyn Array,
    tz: Option<Tz>,
}

impl<'a> CellFormatter<'a> {
    pub fn new(array: &'a dyn Array) -> Result<Self, ArrowError> {
        let tz = match array.data_type() {
            DataType::Timestamp(_, Some(tz)) => Some(Tz::from_str(tz)?),
            _ => None,
        };
        Ok(Self { array, tz })
    }

    /// Writes the text of `row` into `out`; returns `false` for NULL.
    pub fn write(&self, out: &mut String, row: usize) -> Result<bool, ArrowError> {
        let array = self.array;
        if array.is_null(row) || *array.data_type() == DataType::Null {
            return Ok(false);
        }
        match array.data_type() {
            DataType::Boolean => {
                out.push_str(if array.as_boolean().value(row) {
                    "true"
                } else {
                    "false"
                });
            }
            DataType::Int8 => write_display(out, array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => write_display(out, array.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => write_display(out, array.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => write_display(out, array.as_primitive::<Int64Type>().value(row)),
            DataType::UInt8 => write_display(out, array.as_primitive::<UInt8Type>().value(row)),
            DataType::UInt16 => write_display(out, array.as_primitive::<UInt16Type>().value(row)),
            DataType::UInt32 => write_display(out, array.as_primitive::<UInt32Type>().value(row)),
            DataType::UInt64 => write_display(out, array.as_primitive::<UInt64Type>().value(row)),
            DataType::Float16 => out.push_str(&java_double(f64::from(
                array.as_primitive::<Float16Type>().value(row).to_f32(),
            ))),
            DataType::Float32 => {
                out.push_str(&java_float(array.as_primitive::<Float32Type>().value(row)))
            }
            DataType::Float64 => {
                out.push_str(&java_double(array.as_primitive::<Float64Type>().value(row)))
            }
            DataType::Decimal128(_, _) => {
                out.push_str(&array.as_primitive::<Decimal128Type>().value_as_string(row))
            }
            DataType::Decimal256(_, _) => {
                out.push_str(&array.as_primitive::<Decimal256Type>().value_as_string(row))
            }
            DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
            DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
            DataType::Binary => out.push_str(&b64(array.as_binary::<i32>().value(row))),
            DataType::LargeBinary => out.push_str(&b64(array.as_binary::<i64>().value(row))),
            DataType::BinaryView => out.push_str(&b64(array.as_binary_view().value(row))),
            DataType::FixedSizeBinary(_) => {
                out.push_str(&b64(array.as_fixed_size_binary().value(row)))
            }
            DataType::Date32 => {
                let v = array.as_primitive::<Date32Type>().value(row);
                match arrow::temporal_conversions::date32_to_datetime(v) {
                    Some(d) => write_display(out, d.format("%Y-%m-%d")),
                    None => write_display(out, v),
                }
            }
            DataType::Date64 => {
                let v = array.as_primitive::<Date64Type>().value(row);
                match arrow::temporal_conversions::date64_to_datetime(v) {
                    Some(d) => write_display(out, d.format("%Y-%m-%d")),
                    None => write_display(out, v),
                }
            }
            DataType::Timestamp(unit, _) => {
                let raw = timestamp_value(array, *unit, row);
                let (secs, nanos) = split_nanos(raw, *unit);
                match DateTime::from_timestamp(secs, nanos) {
                    Some(utc) => match &self.tz {
                        Some(tz) => {
                            let local = utc.with_timezone(tz);
                            write_timestamp(out, &local.naive_local(), nanos);
                            let offset = local.offset().fix().local_minus_utc();
                            if offset == 0 {
                                out.push('Z');
                            } else {
                                write_display(out, local.format("%:z"));
                            }
                        }
                        None => write_timestamp(out, &utc.naive_utc(), nanos),
                    },
                    None => write_display(out, raw),
                }
            }
            DataType::Interval(IntervalUnit::YearMonth) => {
                let months = array.as_primitive::<IntervalYearMonthType>().value(row);
                let sign = if months < 0 { "-" } else { "" };
                let m = months.unsigned_abs();
                let _ = write!(out, "{sign}{}-{}", m / 12, m % 12);
            }
            DataType::Duration(unit) => {
                let nanos: i128 = match unit {
                    TimeUnit::Second => {
                        i128::from(array.as_primitive::<DurationSecondType>().value(row))
                            * 1_000_000_000
                    }
                    TimeUnit::Millisecond => {
                        i128::from(array.as_primitive::<DurationMillisecondType>().value(row))
                            * 1_000_000
                    }
                    TimeUnit::Microsecond => {
                        i128::from(array.as_primitive::<DurationMicrosecondType>().value(row))
                            * 1_000
                    }
                    TimeUnit::Nanosecond => {
                        i128::from(array.as_primitive::<DurationNanosecondType>().value(row))
                    }
                };
                let sign = if nanos < 0 { "-" } else { "" };
                let n = nanos.unsigned_abs();
                let secs = n / 1_000_000_000;
                let _ = write!(
                    out,
                    "{sign}{} {:02}:{:02}:{:02}.{:09}",
                    secs / 86_400,
                    (secs / 3600) % 24,
                    (secs / 60) % 60,
                    secs % 60,
                    n % 1_000_000_000
                );
            }
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::Struct(_)
            | DataType::Map(_, _) => write_json(out, array, row)?,
            _ => {
                let formatter = ArrayFormatter::try_new(array, &FormatOptions::default())?;
                let _ = write!(out, "{}", formatter.value(row));
            }
        }
        Ok(true)
    }
}

fn write_display(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "{v}");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn timestamp_value(array: &dyn Array, unit: TimeUnit, row: usize) -> i64 {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

/// (seconds, sub-second nanoseconds) of a timestamp value.
fn split_nanos(v: i64, unit: TimeUnit) -> (i64, u32) {
    let per_sec: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let secs = v.div_euclid(per_sec);
    let frac = v.rem_euclid(per_sec);
    let nanos = frac * (1_000_000_000 / per_sec);
    (secs, u32::try_from(nanos).unwrap_or(0))
}

/// `2021-01-01T10:00:00.000` (milliseconds; microseconds when present).
fn write_timestamp(out: &mut String, t: &chrono::NaiveDateTime, nanos: u32) {
    if nanos.is_multiple_of(1_000_000) {
        write_display(out, t.format("%Y-%m-%dT%H:%M:%S%.3f"));
    } else {
        write_display(out, t.format("%Y-%m-%dT%H:%M:%S%.6f"));
    }
}

/// Java's `Double.toString` (what Spark prints): `1.0`, `0.001`, `1.0E7`, `1.5E-5`, `NaN`.
pub(crate) fn java_double(v: f64) -> String {
    java_style(
        v.is_nan(),
        v.is_infinite(),
        v,
        format!("{v}"),
        format!("{v:e}"),
    )
}

/// Java's `Float.toString`.
pub(crate) fn java_float(v: f32) -> String {
    java_style(
        v.is_nan(),
        v.is_infinite(),
        f64::from(v),
        format!("{v}"),
        format!("{v:e}"),
    )
}

fn java_style(nan: bool, inf: bool, v: f64, plain: String, sci: String) -> String {
    if nan {
        return "NaN".into();
    }
    if inf {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if abs == 0.0 || (1e-3..1e7).contains(&abs) {
        if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        }
    } else {
        match sci.split_once('e') {
            Some((mantissa, exp)) if mantissa.contains('.') => format!("{mantissa}E{exp}"),
            Some((mantissa, exp)) => format!("{mantissa}.0E{exp}"),
            None => sci,
        }
    }
}

/// Nested values as JSON text: numbers and booleans bare, everything else as strings.
fn write_json(out: &mut String, array: &dyn Array, row: usize) -> Result<(), ArrowError> {
    if array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::List(_) => write_json_list(out, &array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => write_json_list(out, &array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(_, _) => {
            write_json_list(out, &array.as_fixed_size_list().value(row))?
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, field.name());
                out.push(':');
                write_json(out, s.column(i).as_ref(), row)?;
            }
            out.push('}');
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let key_fmt = CellFormatter::new(keys.as_ref())?;
            let mut key = String::new();
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                key.clear();
                key_fmt.write(&mut key, i)?;
                push_json_string(out, &key);
                out.push(':');
                write_json(out, values.as_ref(), i)?;
            }
            out.push('}');
        }
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => {
            CellFormatter::new(array)?.write(out, row)?;
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let mut text = String::new();
            CellFormatter::new(array)?.write(&mut text, row)?;
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&text);
            } else {
                push_json_string(out, &text);
            }
        }
        _ => {
            let mut text = String::new();
            CellFormatter::new(array)?.write(&mut text, row)?;
            push_json_string(out, &text);
        }
    }
    Ok(())
}

fn write_json_list(out: &mut String, values: &dyn Array) -> Result<(), ArrowError> {
    out.push('[');
    for i in 0..values.len() {
        if i > 0 {
            out.push(',');
        }
        write_json(out, values, i)?;
    }
    out.push(']');
    Ok(())
}

/// Manifest columns derived from Arrow types (used when the engine gives none).
pub(crate) fn describe_schema(schema: &Schema) -> Vec<ColumnDescription> {
    schema
        .fields()
        .iter()
        .map(|f| describe_field(f.as_ref()))
        .collect()
}

fn describe_field(field: &Field) -> ColumnDescription {
    let (type_name, type_text) = type_names(field.data_type());
    let (type_precision, type_scale) = match field.data_type() {
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (Some(i32::from(*p)), Some(i32::from(*s)))
        }
        _ => (None, None),
    };
    let type_interval_type = match field.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => Some("YEAR TO MONTH".to_owned()),
        DataType::Interval(_) | DataType::Duration(_) => Some("DAY TO SECOND".to_owned()),
        _ => None,
    };
    ColumnDescription {
        name: field.name().clone(),
        type_name,
        type_text,
        type_precision,
        type_scale,
        type_interval_type,
    }
}

/// (`type_name`, `type_text`) for an Arrow type.
fn type_names(dt: &DataType) -> (String, String) {
    let simple = |name: &str, text: &str| (name.to_owned(), text.to_owned());
    match dt {
        DataType::Null => simple("NULL", "VOID"),
        DataType::Boolean => simple("BOOLEAN", "BOOLEAN"),
        DataType::Int8 => simple("BYTE", "TINYINT"),
        DataType::Int16 | DataType::UInt8 => simple("SHORT", "SMALLINT"),
        DataType::Int32 | DataType::UInt16 => simple("INT", "INT"),
        DataType::Int64 | DataType::UInt32 => simple("LONG", "BIGINT"),
        DataType::UInt64 => simple("DECIMAL", "DECIMAL(20,0)"),
        DataType::Float16 | DataType::Float32 => simple("FLOAT", "FLOAT"),
        DataType::Float64 => simple("DOUBLE", "DOUBLE"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            ("DECIMAL".into(), format!("DECIMAL({p},{s})"))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => simple("STRING", "STRING"),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => simple("BINARY", "BINARY"),
        DataType::Date32 | DataType::Date64 => simple("DATE", "DATE"),
        DataType::Timestamp(_, Some(_)) => simple("TIMESTAMP", "TIMESTAMP"),
        DataType::Timestamp(_, None) => simple("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
        DataType::Interval(IntervalUnit::YearMonth) => simple("INTERVAL", "INTERVAL YEAR TO MONTH"),
        DataType::Interval(_) | DataType::Duration(_) => {
            simple("INTERVAL", "INTERVAL DAY TO SECOND")
        }
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f) => (
            "ARRAY".into(),
            format!("ARRAY<{}>", type_names(f.data_type()).1),
        ),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_names(f.data_type()).1))
                .collect();
            ("STRUCT".into(), format!("STRUCT<{}>", inner.join(", ")))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => (
                "MAP".into(),
                format!(
                    "MAP<{}, {}>",
                    type_names(kv[0].data_type()).1,
                    type_names(kv[1].data_type()).1
                ),
            ),
            _ => simple("MAP", "MAP"),
        },
        DataType::Dictionary(_, value) => type_names(value),
        other => ("STRING".into(), other.to_string().to_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, ListArray,
        StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Int32Type;

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("valid batch")
    }

    #[test]
    fn json_values_like_databricks() {
        let b = batch(vec![
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "d",
                Arc::new(Float64Array::from(vec![1.0, 1e20])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![12345, -5])
                        .with_precision_and_scale(10, 2)
                        .expect("valid decimal"),
                ) as ArrayRef,
            ),
            (
                "dt",
                Arc::new(Date32Array::from(vec![19723, 0])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_609_495_200_000_000,
                        1_623_760_496_789_000,
                    ])
                    .with_timezone("America/Los_Angeles"),
                ) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a\"b"), None])) as ArrayRef,
            ),
            (
                "l",
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                    Some(vec![Some(1), None]),
                    None,
                ])) as ArrayRef,
            ),
        ]);
        let text = json_rows(&[b]).expect("encodes");
        let rows: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(
            rows,
            serde_json::json!([
                [
                    "1",
                    "1.0",
                    "true",
                    "123.45",
                    "2024-01-01",
                    "2021-01-01T02:00:00.000-08:00",
                    "a\"b",
                    "[1,null]"
                ],
                [
                    null,
                    "1.0E20",
                    "false",
                    "-0.05",
                    "1970-01-01",
                    "2021-06-15T05:34:56.789-07:00",
                    null,
                    null
                ]
            ])
        );
    }

    #[test]
    fn utc_timestamps_end_in_z_and_ntz_has_no_offset() {
        let utc = TimestampMicrosecondArray::from(vec![1_609_495_200_000_000]).with_timezone("UTC");
        let ntz = TimestampMicrosecondArray::from(vec![1_609_495_200_000_001]);
        let mut out = String::new();
        CellFormatter::new(&utc)
            .expect("tz")
            .write(&mut out, 0)
            .expect("formats");
        assert_eq!(out, "2021-01-01T10:00:00.000Z");
        out.clear();
        CellFormatter::new(&ntz)
            .expect("no tz")
            .write(&mut out, 0)
            .expect("formats");
        assert_eq!(out, "2021-01-01T10:00:00.000001");
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(3.0), "3.0");
        assert_eq!(java_double(1.5e-5), "1.5E-5");
        assert_eq!(java_double(12345678.0), "1.2345678E7");
        assert_eq!(java_double(f64::NAN), "NaN");
        assert_eq!(java_double(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn csv_quotes_and_nulls() {
        let b = batch(vec![
            (
                "a",
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec![Some("x,y"), Some("plain")])) as ArrayRef,
            ),
        ]);
        let text = csv_rows(&b.schema(), &[b]).expect("encodes");
        assert_eq!(text, "a,b\n1,\"x,y\"\n,plain\n");
    }

    #[test]
    fn lz4_per_message_round_trips_through_concatenated_frames() {
        let b = batch(vec![(
            "a",
            Arc::new(Int32Array::from((0..1000).collect::<Vec<i32>>())) as ArrayRef,
        )]);
        let stream = arrow_stream(&b.schema(), &[b.clone(), b.clone()]).expect("ipc");
        let messages = split_ipc_messages(&stream).expect("splits");
        assert_eq!(messages.len(), 4, "schema, 2 batches, end-of-stream");
        let compressed = lz4_per_message(&stream).expect("compresses");
        // lz4_flex's FrameDecoder stops after one frame: decode frame after frame.
        let mut decoded = Vec::new();
        let mut input = compressed.as_slice();
        let mut frames = 0;
        while !input.is_empty() {
            std::io::Read::read_to_end(
                &mut lz4_flex::frame::FrameDecoder::new(&mut input),
                &mut decoded,
            )
            .expect("decodes");
            frames += 1;
        }
        assert_eq!(frames, 4, "one frame per message");
        assert_eq!(decoded, stream);
    }

    #[test]
    fn describes_types_like_databricks() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Decimal128(18, 2), true),
            Field::new("c", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        let cols = describe_schema(&schema);
        assert_eq!(
            (cols[0].type_name.as_str(), cols[0].type_text.as_str()),
            ("LONG", "BIGINT")
        );
        assert_eq!(cols[1].type_text, "DECIMAL(18,2)");
        assert_eq!(
            (cols[1].type_precision, cols[1].type_scale),
            (Some(18), Some(2))
        );
        assert_eq!(cols[2].type_name, "TIMESTAMP_NTZ");
    }
}
