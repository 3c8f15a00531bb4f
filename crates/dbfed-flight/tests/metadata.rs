//! Metadata RPCs.

use arrow::array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use arrow_flight::IpcMessage;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};

use crate::fixture::{self, client, fetch, rows, start};

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(column)
                .expect("column")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8")
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_owned())
        })
        .collect()
}

#[tokio::test]
async fn catalogs_schemas_and_tables() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;

    let info = c.get_catalogs().await.expect("catalogs");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(strings(&batches, "catalog_name"), vec!["datafusion"]);

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: Some("pub%".into()),
        })
        .await
        .expect("schemas");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(strings(&batches, "db_schema_name"), vec!["public"]);

    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("num%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .expect("tables");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(strings(&batches, "table_name"), vec!["numbers"]);
    assert_eq!(strings(&batches, "table_type"), vec!["TABLE"]);
    let schemas = batches[0]
        .column_by_name("table_schema")
        .expect("table_schema")
        .as_any()
        .downcast_ref::<BinaryArray>()
        .expect("binary")
        .clone();
    let schema =
        Schema::try_from(IpcMessage(schemas.value(0).to_vec().into())).expect("ipc schema");
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["id", "name", "grp"]);

    // A table-type filter that matches nothing.
    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec!["VIEW".into()],
            include_schema: false,
        })
        .await
        .expect("tables");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(rows(&batches), 0);
}

#[tokio::test]
async fn table_types_sql_info_xdbc_and_primary_keys() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;

    let info = c.get_table_types().await.expect("table types");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(
        strings(&batches, "table_type"),
        vec!["LOCAL TEMPORARY", "TABLE", "VIEW"]
    );

    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .expect("sql info");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(rows(&batches), 3);
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert!(text.contains("dbfed"), "{text}");
    assert!(text.contains("`"), "{text}");
    assert!(text.contains("true"), "read-only must be true: {text}");

    let info = c
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("xdbc");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    let names = strings(&batches, "type_name");
    for t in [
        "BIGINT",
        "STRING",
        "DECIMAL",
        "TIMESTAMP",
        "DATE",
        "BOOLEAN",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }

    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "numbers".into(),
        })
        .await
        .expect("primary keys");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(rows(&batches), 0);
}
