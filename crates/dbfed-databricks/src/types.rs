//! Databricks SQL types and their Arrow counterparts.
//!
//! The manifest of a statement is the source of truth for SQL types (the Arrow fields of a
//! result chunk carry no Databricks metadata). [`arrow_type`] maps one manifest column to the
//! Arrow [`DataType`] this crate promises for it; [`parse_type_text`] parses a `type_text` such as
//! ``ARRAY<STRUCT<a: INT, `b c`: MAP<STRING, DECIMAL(10,2)>>>``.
//!
//! | Databricks | Arrow |
//! |---|---|
//! | `TINYINT`/`BYTE`, `SMALLINT`/`SHORT`, `INT`, `BIGINT`/`LONG` | `Int8`, `Int16`, `Int32`, `Int64` |
//! | `FLOAT`/`REAL`, `DOUBLE` | `Float32`, `Float64` |
//! | `DECIMAL(p,s)` (default `(10,0)`) | `Decimal128(p, s)` |
//! | `BOOLEAN` | `Boolean` |
//! | `STRING`, `CHAR(n)`, `VARCHAR(n)`, `VARIANT` (JSON text) | `Utf8` |
//! | `BINARY` | `Binary` |
//! | `DATE` | `Date32` |
//! | `TIMESTAMP` / `TIMESTAMP_LTZ` | `Timestamp(Microsecond, Some(tz))` (tz: session time zone, default `UTC`) |
//! | `TIMESTAMP_NTZ` | `Timestamp(Microsecond, None)` |
//! | `INTERVAL YEAR`, `MONTH`, `YEAR TO MONTH` | `Interval(YearMonth)` |
//! | `INTERVAL DAY`..`SECOND` (any range) | `Duration(Microsecond)` |
//! | `VOID` / `NULL` | `Null` |
//! | `ARRAY<t>` | `List(item: t)` |
//! | `MAP<k, v>` | `Map(entries: Struct<key: k not null, value: v>)` |
//! | `STRUCT<a: t, ...>` | `Struct(a: t, ...)` |

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// The time zone given to `TIMESTAMP` columns when none is configured.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// One result column as the manifest describes it, with the Databricks type information kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// 0-based position.
    pub position: usize,
    /// `type_name`: `INT`, `DECIMAL`, `ARRAY`, `INTERVAL`, ... (kept verbatim, even if unknown).
    pub type_name: String,
    /// `type_text`: the full SQL type, e.g. `DECIMAL(10,2)`, `ARRAY<STRING>`.
    pub type_text: String,
    /// `type_precision` of decimals.
    pub type_precision: Option<u8>,
    /// `type_scale` of decimals.
    pub type_scale: Option<i8>,
    /// `type_interval_type`: `YEAR TO MONTH`, `DAY TO SECOND`, ...
    pub type_interval_type: Option<String>,
}

impl ColumnInfo {
    /// A column described only by its SQL type text (`type_name` is derived from it).
    pub fn new(name: impl Into<String>, position: usize, type_text: impl Into<String>) -> Self {
        let type_text = type_text.into();
        let type_name = type_text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        Self {
            name: name.into(),
            position,
            type_name,
            type_text,
            type_precision: None,
            type_scale: None,
            type_interval_type: None,
        }
    }
}

/// The schema of a statement result: the manifest columns and the Arrow schema promised for
/// every batch of the result.
#[derive(Debug, Clone)]
pub struct ResultSchema {
    columns: Vec<ColumnInfo>,
    arrow: SchemaRef,
}

impl ResultSchema {
    /// Builds the Arrow schema for `columns`, giving `TIMESTAMP` columns the time zone `tz`.
    pub fn try_new(columns: Vec<ColumnInfo>, tz: &str) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, arrow_type_with_tz(c, tz)?, true)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            columns,
            arrow: Arc::new(Schema::new(fields)),
        })
    }

    /// An empty schema (statements without a result set).
    pub fn empty() -> Self {
        Self {
            columns: Vec::new(),
            arrow: Arc::new(Schema::empty()),
        }
    }

    /// The manifest columns, in order.
    pub fn columns(&self) -> &[ColumnInfo] {
        &self.columns
    }

    /// The Arrow schema of every batch of the result.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }
}

/// The Arrow type of a manifest column (`TIMESTAMP` gets the time zone `UTC`).
pub fn arrow_type(column: &ColumnInfo) -> Result<DataType> {
    arrow_type_with_tz(column, DEFAULT_TIME_ZONE)
}

/// The Arrow type of a manifest column; `TIMESTAMP` columns get the time zone `tz`.
///
/// `type_name`, `type_precision`, `type_scale` and `type_interval_type` are used when present;
/// complex types (`ARRAY`, `MAP`, `STRUCT`) and anything else are parsed from `type_text`.
pub fn arrow_type_with_tz(column: &ColumnInfo, tz: &str) -> Result<DataType> {
    let name = column.type_name.to_ascii_uppercase();
    match name.as_str() {
        "DECIMAL" => {
            if let (Some(p), Some(s)) = (column.type_precision, column.type_scale) {
                return decimal(p as u64, s as i64);
            }
        }
        "INTERVAL" => {
            if let Some(qualifier) = &column.type_interval_type {
                return interval_type(qualifier);
            }
        }
        _ => {}
    }
    if column.type_text.trim().is_empty() {
        // Some servers omit type_text for simple types: the name is enough.
        return parse_type_text_with_tz(&name, tz);
    }
    parse_type_text_with_tz(&column.type_text, tz)
}

/// Parses a Databricks SQL type text into an Arrow type (`TIMESTAMP` gets `UTC`).
pub fn parse_type_text(text: &str) -> Result<DataType> {
    parse_type_text_with_tz(text, DEFAULT_TIME_ZONE)
}

/// Parses a Databricks SQL type text into an Arrow type; `TIMESTAMP` gets the time zone `tz`.
pub fn parse_type_text_with_tz(text: &str, tz: &str) -> Result<DataType> {
    let mut parser = TypeParser {
        text,
        pos: 0,
        tz: Arc::from(tz),
        depth: 0,
    };
    let ty = parser.parse_type()?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("unexpected text after the type"));
    }
    Ok(ty)
}

fn decimal(precision: u64, scale: i64) -> Result<DataType> {
    if precision == 0 || precision > 38 || scale < 0 || scale > precision as i64 {
        return Err(Error::Unsupported(format!(
            "DECIMAL({precision},{scale}) is outside DECIMAL(1..=38, 0..=precision)"
        )));
    }
    Ok(DataType::Decimal128(precision as u8, scale as i8))
}

/// Maps an interval qualifier (`YEAR`, `DAY TO SECOND`, ...) to its Arrow type.
pub(crate) fn interval_type(qualifier: &str) -> Result<DataType> {
    let start = qualifier.split_whitespace().next().unwrap_or_default();
    match start.to_ascii_uppercase().as_str() {
        "YEAR" | "MONTH" => Ok(DataType::Interval(IntervalUnit::YearMonth)),
        "DAY" | "HOUR" | "MINUTE" | "SECOND" => Ok(DataType::Duration(TimeUnit::Microsecond)),
        _ => Err(Error::Unsupported(format!(
            "interval qualifier {qualifier:?}"
        ))),
    }
}

/// How deeply ARRAY/MAP/STRUCT may nest in a type text (the parser recurses per level, and
/// the text comes from the network: without a bound, deep nesting overflows the stack).
const MAX_TYPE_DEPTH: usize = 64;

struct TypeParser<'a> {
    text: &'a str,
    pos: usize,
    tz: Arc<str>,
    /// Nesting level of the type being parsed.
    depth: usize,
}

impl<'a> TypeParser<'a> {
    fn error(&self, what: &str) -> Error {
        Error::decode(
            format!("type text {:?}", crate::api::snippet(self.text)),
            format!("{what} at offset {}", self.pos),
        )
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{c}'")))
        }
    }

    fn word(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        let start = self.pos;
        self.pos += len;
        Some(&self.text[start..start + len])
    }

    fn peek_word_is(&mut self, expected: &str) -> bool {
        let save = self.pos;
        let matched = self
            .word()
            .is_some_and(|w| w.eq_ignore_ascii_case(expected));
        self.pos = save;
        matched
    }

    fn number(&mut self) -> Result<u64> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = &rest[..len];
        let n = digits
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        self.pos += len;
        Ok(n)
    }

    /// `(n)` or `(p, s)` after a type name; returns the numbers found.
    fn type_args(&mut self) -> Result<Vec<u64>> {
        let mut args = Vec::new();
        if self.eat('(') {
            loop {
                args.push(self.number()?);
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(args)
    }

    fn field_name(&mut self) -> Result<String> {
        self.skip_ws();
        if self.rest().starts_with('`') {
            self.pos += 1;
            let mut name = String::new();
            loop {
                let mut chars = self.rest().chars();
                match chars.next() {
                    None => return Err(self.error("unterminated `quoted` name")),
                    Some('`') => {
                        self.pos += 1;
                        if self.rest().starts_with('`') {
                            name.push('`');
                            self.pos += 1;
                        } else {
                            return Ok(name);
                        }
                    }
                    Some(c) => {
                        name.push(c);
                        self.pos += c.len_utf8();
                    }
                }
            }
        }
        // Unquoted names: anything up to ':' (Databricks writes `a: INT`).
        let rest = self.rest();
        let len = rest
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a field name"));
        }
        let name = rest[..len].to_owned();
        self.pos += len;
        Ok(name)
    }

    /// Skips `NOT NULL` and `COMMENT '...'` after a struct field type.
    fn field_modifiers(&mut self) -> Result<bool> {
        let mut nullable = true;
        loop {
            if self.peek_word_is("NOT") {
                self.word();
                if !self.word().is_some_and(|w| w.eq_ignore_ascii_case("NULL")) {
                    return Err(self.error("expected NULL after NOT"));
                }
                nullable = false;
            } else if self.peek_word_is("COMMENT") {
                self.word();
                self.skip_ws();
                let quote = self
                    .rest()
                    .chars()
                    .next()
                    .filter(|c| *c == '\'' || *c == '"')
                    .ok_or_else(|| self.error("expected a quoted comment"))?;
                self.pos += 1;
                loop {
                    let mut chars = self.rest().chars();
                    match chars.next() {
                        None => return Err(self.error("unterminated comment")),
                        Some('\\') => {
                            self.pos += 1;
                            if let Some(c) = self.rest().chars().next() {
                                self.pos += c.len_utf8();
                            }
                        }
                        Some(c) => {
                            self.pos += c.len_utf8();
                            if c == quote {
                                break;
                            }
                        }
                    }
                }
            } else {
                return Ok(nullable);
            }
        }
    }

    fn parse_type(&mut self) -> Result<DataType> {
        if self.depth >= MAX_TYPE_DEPTH {
            return Err(self.error(&format!("types nested more than {MAX_TYPE_DEPTH} deep")));
        }
        self.depth += 1;
        let ty = self.parse_type_at_depth();
        self.depth -= 1;
        ty
    }

    fn parse_type_at_depth(&mut self) -> Result<DataType> {
        let start = self.pos;
        let Some(word) = self.word() else {
            return Err(self.error("expected a type name"));
        };
        let upper = word.to_ascii_uppercase();
        let ty = match upper.as_str() {
            "TINYINT" | "BYTE" => DataType::Int8,
            "SMALLINT" | "SHORT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" | "LONG" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => DataType::Float64,
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "STRING" | "VARIANT" => DataType::Utf8,
            "CHAR" | "VARCHAR" => {
                self.type_args()?;
                DataType::Utf8
            }
            "BINARY" => DataType::Binary,
            "DATE" => DataType::Date32,
            "TIMESTAMP" | "TIMESTAMP_LTZ" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(self.tz.clone()))
            }
            "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "VOID" | "NULL" => DataType::Null,
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let args = self.type_args()?;
                match args.as_slice() {
                    [] => decimal(10, 0)?,
                    [p] => decimal(*p, 0)?,
                    [p, s] => decimal(*p, *s as i64)?,
                    _ => return Err(self.error("DECIMAL takes at most two arguments")),
                }
            }
            "INTERVAL" => {
                let first = self
                    .word()
                    .ok_or_else(|| self.error("expected an interval field"))?
                    .to_ascii_uppercase();
                let mut qualifier = first;
                if self.peek_word_is("TO") {
                    self.word();
                    let last = self
                        .word()
                        .ok_or_else(|| self.error("expected an interval field after TO"))?;
                    qualifier = format!("{qualifier} TO {}", last.to_ascii_uppercase());
                }
                interval_type(&qualifier)?
            }
            "ARRAY" => {
                self.expect('<')?;
                let item = self.parse_type()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("item", item, true)))
            }
            "MAP" => {
                self.expect('<')?;
                let key = self.parse_type()?;
                self.expect(',')?;
                let value = self.parse_type()?;
                self.expect('>')?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", key, false),
                        Field::new("value", value, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "STRUCT" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                if !self.eat('>') {
                    loop {
                        let name = self.field_name()?;
                        self.expect(':')?;
                        let ty = self.parse_type()?;
                        let nullable = self.field_modifiers()?;
                        fields.push(Field::new(name, ty, nullable));
                        if self.eat('>') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                DataType::Struct(Fields::from(fields))
            }
            _ => {
                self.pos = start;
                return Err(Error::Unsupported(format!(
                    "Databricks type {:?} (in type text {:?})",
                    word, self.text
                )));
            }
        };
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_name: &str, type_text: &str) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            position: 0,
            type_name: type_name.into(),
            type_text: type_text.into(),
            type_precision: None,
            type_scale: None,
            type_interval_type: None,
        }
    }

    fn utc_ts() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    #[test]
    fn every_simple_type_maps() {
        let cases: Vec<(&str, &str, DataType)> = vec![
            ("BYTE", "TINYINT", DataType::Int8),
            ("SHORT", "SMALLINT", DataType::Int16),
            ("INT", "INT", DataType::Int32),
            ("LONG", "BIGINT", DataType::Int64),
            ("FLOAT", "FLOAT", DataType::Float32),
            ("DOUBLE", "DOUBLE", DataType::Float64),
            ("BOOLEAN", "BOOLEAN", DataType::Boolean),
            ("STRING", "STRING", DataType::Utf8),
            ("CHAR", "CHAR(3)", DataType::Utf8),
            ("STRING", "VARCHAR(255)", DataType::Utf8),
            ("BINARY", "BINARY", DataType::Binary),
            ("DATE", "DATE", DataType::Date32),
            ("TIMESTAMP", "TIMESTAMP", utc_ts()),
            (
                "TIMESTAMP_NTZ",
                "TIMESTAMP_NTZ",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            ("NULL", "VOID", DataType::Null),
            ("VARIANT", "VARIANT", DataType::Utf8),
            ("DECIMAL", "DECIMAL(18,2)", DataType::Decimal128(18, 2)),
            ("DECIMAL", "DECIMAL", DataType::Decimal128(10, 0)),
            ("DECIMAL", "DECIMAL(5)", DataType::Decimal128(5, 0)),
        ];
        for (name, text, expected) in cases {
            assert_eq!(
                arrow_type(&col(name, text)).expect(text),
                expected,
                "{name} / {text}"
            );
        }
    }

    #[test]
    fn decimal_uses_precision_and_scale_fields() {
        let mut c = col("DECIMAL", "DECIMAL(10,2)");
        c.type_precision = Some(38);
        c.type_scale = Some(6);
        assert_eq!(
            arrow_type(&c).expect("decimal"),
            DataType::Decimal128(38, 6)
        );
        assert!(parse_type_text("DECIMAL(39,0)").is_err());
        assert!(parse_type_text("DECIMAL(5,6)").is_err());
    }

    #[test]
    fn intervals_map_by_qualifier() {
        let ym = DataType::Interval(IntervalUnit::YearMonth);
        let dt = DataType::Duration(TimeUnit::Microsecond);
        for (q, expected) in [
            ("YEAR", &ym),
            ("MONTH", &ym),
            ("YEAR TO MONTH", &ym),
            ("DAY", &dt),
            ("DAY TO HOUR", &dt),
            ("DAY TO MINUTE", &dt),
            ("DAY TO SECOND", &dt),
            ("HOUR", &dt),
            ("HOUR TO MINUTE", &dt),
            ("HOUR TO SECOND", &dt),
            ("MINUTE TO SECOND", &dt),
            ("SECOND", &dt),
        ] {
            let mut c = col("INTERVAL", &format!("INTERVAL {q}"));
            assert_eq!(&arrow_type(&c).expect(q), expected, "{q}");
            c.type_interval_type = Some(q.to_owned());
            c.type_text = String::new();
            assert_eq!(&arrow_type(&c).expect(q), expected, "{q}");
        }
        assert!(parse_type_text("INTERVAL WEEK").is_err());
    }

    #[test]
    fn timestamp_takes_the_configured_zone() {
        assert_eq!(
            parse_type_text_with_tz("TIMESTAMP", "America/Los_Angeles").expect("ts"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("America/Los_Angeles".into()))
        );
    }

    #[test]
    fn nested_type_text_parses() {
        let ty = parse_type_text("ARRAY<STRUCT<a: INT, `b c`: MAP<STRING, DECIMAL(10,2)>>>")
            .expect("nested");
        let expected_map = DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Decimal128(10, 2), true),
                ])),
                false,
            )),
            false,
        );
        let expected = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Int32, true),
                Field::new("b c", expected_map, true),
            ])),
            true,
        )));
        assert_eq!(ty, expected);
    }

    #[test]
    fn struct_fields_with_modifiers_and_quotes() {
        let ty = parse_type_text(
            "struct<`we``ird`:bigint NOT NULL COMMENT 'it\\'s, <odd>', ts:timestamp_ntz, arr:array<array<string>>>",
        )
        .expect("struct with comment");
        let DataType::Struct(fields) = ty else {
            panic!("not a struct: {ty:?}")
        };
        assert_eq!(fields[0].name(), "we`ird");
        assert!(!fields[0].is_nullable());
        assert_eq!(fields[0].data_type(), &DataType::Int64);
        assert_eq!(
            fields[1].data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert!(matches!(fields[2].data_type(), DataType::List(_)));
        assert_eq!(
            parse_type_text("STRUCT<>").expect("empty"),
            DataType::Struct(Fields::empty())
        );
    }

    #[test]
    fn deeply_nested_type_text_is_an_error_not_a_stack_overflow() {
        let n = 200_000;
        let text = format!("{}INT{}", "ARRAY<".repeat(n), ">".repeat(n));
        let err = parse_type_text(&text).expect_err("too deep");
        let message = err.to_string();
        assert!(message.contains("nested more than 64"), "{message:.500}");
        assert!(
            err.to_string().len() < 1000,
            "the error does not echo 1 MB of type text"
        );
        let ok = format!(
            "{}INT{}",
            "ARRAY<".repeat(MAX_TYPE_DEPTH - 1),
            ">".repeat(MAX_TYPE_DEPTH - 1)
        );
        assert!(parse_type_text(&ok).is_ok());
        let text = format!("{}x:INT{}", "STRUCT<a:MAP<INT,".repeat(n), ">>".repeat(n));
        assert!(parse_type_text(&text).is_err());
    }

    #[test]
    fn malformed_type_text_is_an_error() {
        for bad in [
            "",
            "ARRAY<INT",
            "MAP<STRING>",
            "STRUCT<a INT>",
            "DECIMAL(10,",
            "INT INT",
            "STRUCT<`a: INT>",
            "ARRAY<>",
            "GEOGRAPHY",
            "DECIMAL(99999999999999999999999,1)",
        ] {
            assert!(parse_type_text(bad).is_err(), "{bad:?} should fail");
        }
        let err = parse_type_text("USER_DEFINED_TYPE").expect_err("unknown");
        assert!(err.to_string().contains("USER_DEFINED_TYPE"), "{err}");
    }

    #[test]
    fn column_info_new_derives_type_name() {
        let c = ColumnInfo::new("x", 3, "ARRAY<INT>");
        assert_eq!(c.type_name, "ARRAY");
        let schema = ResultSchema::try_new(vec![c], "UTC").expect("schema");
        assert_eq!(schema.arrow_schema().field(0).name(), "x");
        assert_eq!(schema.columns()[0].position, 3);
    }
}
