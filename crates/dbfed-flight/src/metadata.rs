//! Metadata answers: SqlInfo, XDBC type info, catalogs, schemas, tables and table types.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use crate::error::FlightSqlError;

/// The table types this server reports.
pub(crate) const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The server's `GetSqlInfo` answers. `read_only` follows `allow_writes`.
pub(crate) fn sql_info(read_only: bool) -> Result<SqlInfoData, FlightSqlError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "dbfed");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, read_only);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, !read_only);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "`");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, false);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, true);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    Ok(b.build()?)
}

#[allow(clippy::too_many_arguments)] // one row of a static table, read positionally
fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    literal: Option<(&str, &str)>,
    case_sensitive: bool,
    searchable: Searchable,
    scale: Option<(i32, i32)>,
    radix: Option<i32>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: literal.map(|(p, _)| p.to_owned()),
        literal_suffix: literal.map(|(_, s)| s.to_owned()),
        create_params: if name == "DECIMAL" {
            Some(vec!["precision".into(), "scale".into()])
        } else {
            None
        },
        nullable: Nullable::NullabilityNullable,
        case_sensitive,
        searchable,
        unsigned_attribute: radix.map(|_| false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: scale.map(|(min, _)| min),
        maximum_scale: scale.map(|(_, max)| max),
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: radix,
        interval_precision: None,
    }
}

/// A numeric type: `precision` digits in base `radix`, no literal quoting, basic search.
fn number(name: &str, data_type: XdbcDataType, precision: i32, radix: i32) -> XdbcTypeInfo {
    xdbc(
        name,
        data_type,
        Some(precision),
        None,
        false,
        Searchable::Basic,
        None,
        Some(radix),
    )
}

/// The SQL types of the Databricks dialect, as XDBC type info.
pub(crate) static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    let basic = Searchable::Basic;
    let full = Searchable::Full;
    for info in [
        xdbc(
            "BOOLEAN",
            X::XdbcBit,
            Some(1),
            None,
            false,
            basic,
            None,
            None,
        ),
        number("TINYINT", X::XdbcTinyint, 3, 10),
        number("SMALLINT", X::XdbcSmallint, 5, 10),
        number("INT", X::XdbcInteger, 10, 10),
        number("BIGINT", X::XdbcBigint, 19, 10),
        number("FLOAT", X::XdbcFloat, 7, 2),
        number("DOUBLE", X::XdbcDouble, 15, 2),
        xdbc(
            "DECIMAL",
            X::XdbcDecimal,
            Some(38),
            None,
            false,
            basic,
            Some((0, 38)),
            Some(10),
        ),
        xdbc(
            "STRING",
            X::XdbcVarchar,
            None,
            Some(("'", "'")),
            true,
            full,
            None,
            None,
        ),
        xdbc(
            "BINARY",
            X::XdbcVarbinary,
            None,
            Some(("X'", "'")),
            false,
            basic,
            None,
            None,
        ),
        xdbc(
            "DATE",
            X::XdbcDate,
            Some(10),
            Some(("DATE '", "'")),
            false,
            basic,
            None,
            None,
        ),
        xdbc(
            "TIMESTAMP",
            X::XdbcTimestamp,
            Some(29),
            Some(("TIMESTAMP '", "'")),
            false,
            basic,
            None,
            None,
        ),
    ] {
        b.append(info);
    }
    b.build().map_err(|e| e.to_string())
});

/// The catalogs of `ctx`, sorted.
pub(crate) fn catalogs(ctx: &SessionContext) -> Result<RecordBatch, FlightSqlError> {
    let mut names = ctx.catalog_names();
    names.sort();
    let mut b = GetCatalogsBuilder::new();
    for name in names {
        b.append(name);
    }
    Ok(b.build()?)
}

fn catalog_names(ctx: &SessionContext, filter: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .catalog_names()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| f == c))
        .collect();
    names.sort();
    names
}

/// The schemas of `ctx` matching `query`.
pub(crate) fn db_schemas(
    ctx: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, FlightSqlError> {
    let catalogs = catalog_names(ctx, query.catalog.as_deref());
    let mut b = query.into_builder();
    append_schemas(ctx, &catalogs, &mut b);
    Ok(b.build()?)
}

fn append_schemas(ctx: &SessionContext, catalogs: &[String], b: &mut GetDbSchemasBuilder) {
    for catalog in catalogs {
        if let Some(provider) = ctx.catalog(catalog) {
            for schema in provider.schema_names() {
                b.append(catalog, schema);
            }
        }
    }
}

/// The tables of `ctx` matching `query`, with their Arrow schemas when asked.
pub(crate) async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
) -> Result<RecordBatch, FlightSqlError> {
    let catalogs = catalog_names(ctx, query.catalog.as_deref());
    let schema_pattern = query.db_schema_filter_pattern.clone();
    let table_pattern = query.table_name_filter_pattern.clone();
    let mut b: GetTablesBuilder = query.into_builder();
    for catalog in &catalogs {
        let Some(provider) = ctx.catalog(catalog) else {
            continue;
        };
        let mut schemas = provider.schema_names();
        schemas.sort();
        for schema_name in schemas {
            if let Some(p) = &schema_pattern
                && !like(&schema_name, p)
            {
                continue;
            }
            let Some(schema) = provider.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for table_name in names {
                if let Some(p) = &table_pattern
                    && !like(&table_name, p)
                {
                    continue;
                }
                let Some(table) = schema.table(&table_name).await? else {
                    continue;
                };
                b.append(
                    catalog,
                    &schema_name,
                    &table_name,
                    table_type_name(table.table_type()),
                    &flight_schema(&table.schema()),
                )?;
            }
        }
    }
    Ok(b.build()?)
}

/// SQL `LIKE` with `%` and `_` (case-sensitive, `\\` escapes the next character), for
/// pre-filtering before asking providers.
///
/// Greedy two-pointer wildcard matching: on a mismatch only the latest `%` is retried one
/// character further, so the cost is O(value × pattern) for any pattern (backtracking into
/// every `%` is exponential).
pub(crate) fn like(value: &str, pattern: &str) -> bool {
    #[derive(PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let value: Vec<char> = value.chars().collect();
    let (mut v, mut t) = (0, 0);
    // The latest `%` and the value position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match tokens.get(t) {
            Some(Token::One) => {
                v += 1;
                t += 1;
            }
            Some(Token::Char(c)) if *c == value[v] => {
                v += 1;
                t += 1;
            }
            Some(Token::Any) => {
                star = Some((t, v));
                t += 1;
            }
            _ => match star {
                Some((s, matched)) => {
                    // Let the `%` swallow one more character and retry after it.
                    star = Some((s, matched + 1));
                    v = matched + 1;
                    t = s + 1;
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Any)
}

/// The schema as sent over Flight: view types become their classic equivalents
/// (`Utf8View` → `Utf8`, `BinaryView` → `Binary`) and dictionaries their value type, which every
/// Flight SQL client (JDBC, ODBC, ADBC) reads.
pub(crate) fn flight_schema(schema: &Schema) -> Schema {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let dt = flight_type(f.data_type());
            if &dt == f.data_type() {
                Arc::clone(f)
            } else {
                Arc::new(f.as_ref().clone().with_data_type(dt))
            }
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

pub(crate) fn flight_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => flight_type(value),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("lineitem", "line%"));
        assert!(like("lineitem", "%item"));
        assert!(like("lineitem", "l_neitem"));
        assert!(!like("lineitem", "orders%"));
        assert!(like("a_b", "a\\_b"));
        assert!(!like("axb", "a\\_b"));
        assert!(like("", "%"));
        assert!(like("", "%%"));
        assert!(!like("", "_"));
        assert!(like("abc", "%b%"));
        assert!(like("abc", "a%%c"));
        assert!(!like("abc", "a%d"));
        assert!(like("mississippi", "%sip%"));
        assert!(like("mississippi", "m%ss%pi"));
        assert!(!like("mississippi", "m%ss%pix"));
        assert!(like("a%b", "a\\%b"));
        assert!(!like("axb", "a\\%b"));
        assert!(like("a\\", "a\\"));
    }

    #[test]
    fn sql_info_is_honest_about_writes() {
        let ro = sql_info(true).expect("build");
        let batch = ro
            .record_batch([SqlInfo::FlightSqlServerReadOnly as u32])
            .expect("batch");
        assert_eq!(batch.num_rows(), 1);
        assert!(XDBC_TYPES.as_ref().is_ok());
    }

    #[test]
    fn like_is_polynomial_on_pathological_patterns() {
        // Backtracking into each of the 40 `%` would take astronomically long here.
        let pattern = "%a".repeat(40);
        let mut name = "a".repeat(200);
        name.push('b');
        assert!(!like(&name, &pattern));
        assert!(like(&name, &format!("{pattern}%")));
        assert!(like(&name, &format!("{pattern}b")));
        assert!(!like(&"a".repeat(39), &pattern));
    }

    #[test]
    fn flight_schema_replaces_view_types() {
        let s = Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Utf8View, true),
            arrow::datatypes::Field::new(
                "b",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            arrow::datatypes::Field::new("c", DataType::Int64, false),
        ]);
        let f = flight_schema(&s);
        assert_eq!(f.field(0).data_type(), &DataType::Utf8);
        assert_eq!(f.field(1).data_type(), &DataType::Utf8);
        assert!(!f.field(1).is_nullable());
        assert_eq!(f.field(2).data_type(), &DataType::Int64);
    }
}
