//! End-to-end tests of the engine at SF 0.01.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, IntervalUnit, TimeUnit};
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::*;

static ENGINE: OnceCell<Engine> = OnceCell::const_new();

async fn engine() -> Engine {
    ENGINE
        .get_or_init(|| async {
            Engine::new(EngineConfig::default())
                .await
                .expect("engine starts")
        })
        .await
        .clone()
}

fn request(sql: &str) -> QueryRequest {
    QueryRequest {
        statement: sql.to_string(),
        ..Default::default()
    }
}

async fn run(engine: &Engine, req: QueryRequest) -> (QueryOutput, Vec<RecordBatch>) {
    let mut out = engine.execute(req).await.expect("statement succeeds");
    let mut batches = Vec::new();
    while let Some(b) = out.stream.next().await {
        let b = b.expect("batch");
        assert_eq!(b.schema(), out.schema, "batches carry the promised schema");
        batches.push(b);
    }
    (out, batches)
}

async fn query(sql: &str) -> (QueryOutput, Vec<RecordBatch>) {
    run(&engine().await, request(sql)).await
}

async fn fail(req: QueryRequest) -> SqlError {
    let engine = engine().await;
    match engine.execute(req).await {
        Err(e) => e,
        Ok(mut out) => {
            while let Some(b) = out.stream.next().await {
                if let Err(e) = b {
                    return SqlError::from(e);
                }
            }
            panic!("statement unexpectedly succeeded")
        }
    }
}

fn strings(batches: &[RecordBatch], col: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(col), &DataType::Utf8).expect("to text");
        let c = c.as_string::<i32>();
        for i in 0..c.len() {
            out.push(c.is_valid(i).then(|| c.value(i).to_string()));
        }
    }
    out
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn tpch_row_counts_at_sf_001() {
    for (table, rows) in [
        ("nation", 25),
        ("region", 5),
        ("customer", 1500),
        ("orders", 15000),
        ("supplier", 100),
        ("part", 2000),
        ("partsupp", 8000),
    ] {
        let (out, batches) = query(&format!("SELECT count(*) FROM samples.tpch.{table}")).await;
        assert_eq!(out.columns[0].type_text, "BIGINT");
        assert_eq!(count(&batches), rows, "{table}");
    }
    let (_, batches) = query("SELECT count(*) FROM lineitem").await;
    assert!(
        count(&batches) > 59_000,
        "lineitem has ~60k rows at SF 0.01"
    );
}

#[tokio::test]
async fn lineitem_manifest_matches_databricks() {
    let (out, batches) = query("SELECT * FROM samples.tpch.lineitem LIMIT 3").await;
    let cols: Vec<(&str, &str, &str)> = out
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str(), c.type_text.as_str()))
        .collect();
    assert_eq!(cols[0], ("l_orderkey", "LONG", "BIGINT"));
    assert_eq!(cols[3], ("l_linenumber", "INT", "INT"));
    assert_eq!(cols[4], ("l_quantity", "DECIMAL", "DECIMAL(18,2)"));
    assert_eq!(out.columns[4].type_precision, Some(18));
    assert_eq!(out.columns[4].type_scale, Some(2));
    assert_eq!(cols[8], ("l_returnflag", "STRING", "STRING"));
    assert_eq!(cols[10], ("l_shipdate", "DATE", "DATE"));
    assert_eq!(out.schema.field(8).data_type(), &DataType::Utf8);
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
}

#[tokio::test]
async fn manifest_types_for_every_type() {
    let (out, batches) = query(
        "SELECT CAST(1 AS TINYINT) a, CAST(1 AS SMALLINT) b, CAST(1 AS INT) c, CAST(1 AS BIGINT) d, \
         CAST(1.5 AS FLOAT) e, CAST(1.5 AS DOUBLE) f, CAST('1.25' AS DECIMAL(10,2)) g, 'x' h, true i, \
         DATE '2024-01-02' j, TIMESTAMP '2024-01-01 10:00:00' k, TIMESTAMP_NTZ '2024-01-01 00:00:00' l, \
         CAST(NULL AS VOID) m, INTERVAL '1' DAY n, array(CAST(1 AS INT), CAST(2 AS INT)) o, X'0102' p, 1.5 q",
    )
    .await;
    let got: Vec<(String, String)> = out
        .columns
        .iter()
        .map(|c| (c.type_name.clone(), c.type_text.clone()))
        .collect();
    let want = [
        ("BYTE", "TINYINT"),
        ("SHORT", "SMALLINT"),
        ("INT", "INT"),
        ("LONG", "BIGINT"),
        ("FLOAT", "FLOAT"),
        ("DOUBLE", "DOUBLE"),
        ("DECIMAL", "DECIMAL(10,2)"),
        ("STRING", "STRING"),
        ("BOOLEAN", "BOOLEAN"),
        ("DATE", "DATE"),
        ("TIMESTAMP", "TIMESTAMP"),
        ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
        ("NULL", "VOID"),
        ("INTERVAL", "INTERVAL DAY TO SECOND"),
        ("ARRAY", "ARRAY<INT>"),
        ("BINARY", "BINARY"),
        ("DECIMAL", "DECIMAL(2,1)"),
    ];
    for (i, (name, text)) in want.iter().enumerate() {
        assert_eq!(
            (got[i].0.as_str(), got[i].1.as_str()),
            (*name, *text),
            "column {i}"
        );
    }
    assert_eq!(
        out.columns[13].type_interval_type.as_deref(),
        Some("DAY TO SECOND")
    );
    let s = &out.schema;
    assert_eq!(
        s.field(10).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        s.field(11).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(s.field(12).data_type(), &DataType::Null);
    assert_eq!(
        s.field(13).data_type(),
        &DataType::Duration(TimeUnit::Microsecond)
    );
    let row = strings(&batches, 6);
    assert_eq!(row, vec![Some("1.25".to_string())]);
    let ts = batches[0]
        .column(10)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(0);
    assert_eq!(ts, 1_704_103_200_000_000, "10:00 UTC");
    let day = batches[0]
        .column(13)
        .as_primitive::<arrow::datatypes::DurationMicrosecondType>()
        .value(0);
    assert_eq!(day, 86_400_000_000);
    assert!(!DataType::Interval(IntervalUnit::YearMonth).is_nested());
}

#[tokio::test]
async fn session_time_zone_shapes_timestamps() {
    let mut req = request("SELECT TIMESTAMP '2024-01-01 10:00:00' ts");
    req.session_confs =
        BTreeMap::from([("TIMEZONE".to_string(), "America/Los_Angeles".to_string())]);
    let (out, batches) = run(&engine().await, req).await;
    assert_eq!(
        out.schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("America/Los_Angeles".into()))
    );
    let ts = batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(0);
    assert_eq!(
        ts, 1_704_132_000_000_000,
        "10:00 in Los Angeles is 18:00 UTC"
    );
}

#[tokio::test]
async fn duplicate_expression_names_are_allowed() {
    let (out, batches) =
        query("SELECT CAST(n_nationkey AS BIGINT), CAST(n_nationkey AS DECIMAL(10,2)), NULL, 1, 1 FROM nation WHERE n_nationkey = 3").await;
    let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "CAST(n_nationkey AS BIGINT)",
            "CAST(n_nationkey AS DECIMAL(10,2))",
            "NULL",
            "1",
            "1"
        ]
    );
    assert_eq!(out.columns[1].type_text, "DECIMAL(10,2)");
    assert_eq!(strings(&batches, 1), vec![Some("3.00".to_string())]);
}

#[tokio::test]
async fn nulls_sort_first_like_spark() {
    let (out, batches) = query("SELECT NULL UNION (SELECT 1) ORDER BY 1").await;
    assert_eq!(out.columns[0].name, "NULL");
    assert_eq!(
        out.columns[0].type_name,
        out.columns[0].type_text.replace("BIGINT", "LONG")
    );
    assert_eq!(strings(&batches, 0), vec![None, Some("1".to_string())]);
}

#[tokio::test]
async fn identifiers_are_case_insensitive() {
    let (_, batches) =
        query("SELECT count(*) FROM `SAMPLES`.`TPCH`.`Nation` WHERE N_REGIONKEY = 1").await;
    assert_eq!(count(&batches), 5);
}

#[tokio::test]
async fn spark_functions_are_available() {
    let (_, batches) = query("SELECT array_contains(array(1, 2, 3), 2) AS x").await;
    assert_eq!(strings(&batches, 0), vec![Some("true".to_string())]);
}

#[tokio::test]
async fn information_schema_columns_and_types() {
    let (out, batches) = query(
        "SELECT column_name, data_type, full_data_type, ordinal_position, is_nullable, numeric_precision, numeric_scale \
         FROM samples.information_schema.columns WHERE table_schema = 'tpch' AND table_name = 'orders' \
         ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(out.columns[3].type_text, "INT");
    let names = strings(&batches, 0);
    assert_eq!(names[0].as_deref(), Some("o_orderkey"));
    assert_eq!(names.len(), 9);
    let types = strings(&batches, 1);
    assert_eq!(types[0].as_deref(), Some("LONG"));
    assert_eq!(types[3].as_deref(), Some("DECIMAL"));
    assert_eq!(strings(&batches, 2)[3].as_deref(), Some("decimal(18,2)"));
    assert_eq!(strings(&batches, 3)[0].as_deref(), Some("0"));
    assert_eq!(strings(&batches, 4)[0].as_deref(), Some("NO"));
    assert_eq!(strings(&batches, 5)[3].as_deref(), Some("18"));
    assert_eq!(strings(&batches, 6)[3].as_deref(), Some("2"));

    let (_, batches) =
        query("SELECT table_name, table_type FROM system.information_schema.tables WHERE table_catalog = 'samples' ORDER BY 1").await;
    assert_eq!(strings(&batches, 0).len(), 8);
    assert_eq!(strings(&batches, 1)[0].as_deref(), Some("MANAGED"));
    let (_, batches) = query(
        "SELECT catalog_name, schema_name FROM samples.information_schema.schemata ORDER BY 2",
    )
    .await;
    assert_eq!(
        strings(&batches, 1),
        vec![
            Some("information_schema".to_string()),
            Some("tpch".to_string())
        ]
    );
}

#[tokio::test]
async fn show_and_describe() {
    let (out, batches) = query("SHOW CATALOGS").await;
    assert_eq!(out.columns[0].name, "catalog");
    assert_eq!(
        strings(&batches, 0),
        vec![Some("samples".to_string()), Some("system".to_string())]
    );

    let (out, batches) = query("SHOW SCHEMAS IN samples LIKE 'tp*'").await;
    assert_eq!(out.columns[0].name, "databaseName");
    assert_eq!(strings(&batches, 0), vec![Some("tpch".to_string())]);

    let (out, batches) = query("SHOW TABLES IN samples.tpch LIKE 'n*|r*'").await;
    let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["database", "tableName", "isTemporary"]);
    assert_eq!(out.columns[2].type_name, "BOOLEAN");
    assert_eq!(
        strings(&batches, 1),
        vec![Some("nation".to_string()), Some("region".to_string())]
    );
    assert_eq!(strings(&batches, 0)[0].as_deref(), Some("tpch"));

    let (out, batches) =
        query("SHOW TABLES IN CATALOG samples SCHEMA LIKE 'tpch' LIKE 'region'").await;
    assert_eq!(out.columns.len(), 7);
    assert_eq!(strings(&batches, 4), vec![Some("samples".to_string())]);

    let (out, batches) = query("DESCRIBE TABLE samples.tpch.region").await;
    let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["col_name", "data_type", "comment"]);
    assert_eq!(
        strings(&batches, 0),
        vec![
            Some("r_regionkey".into()),
            Some("r_name".into()),
            Some("r_comment".into())
        ]
    );
    assert_eq!(strings(&batches, 1)[0].as_deref(), Some("bigint"));

    let (_, batches) = query("DESCRIBE TABLE EXTENDED samples.tpch.region").await;
    assert!(strings(&batches, 0).contains(&Some("# Detailed Table Information".into())));

    let (_, batches) = query("DESCRIBE QUERY SELECT o_totalprice, o_orderdate FROM orders").await;
    assert_eq!(
        strings(&batches, 1),
        vec![Some("decimal(18,2)".into()), Some("date".into())]
    );
    let (out, _) = query("USE CATALOG samples").await;
    assert!(out.columns.is_empty());
}

fn param(
    name: Option<&str>,
    ordinal: Option<usize>,
    value: Option<&str>,
    ty: Option<&str>,
) -> QueryParameter {
    QueryParameter {
        name: name.map(str::to_string),
        ordinal,
        value: value.map(str::to_string),
        type_text: ty.map(str::to_string),
    }
}

#[tokio::test]
async fn named_and_positional_parameters() {
    let mut req =
        request("SELECT n_name FROM nation WHERE n_nationkey = :key AND n_regionkey = :region");
    req.parameters = vec![
        param(Some("key"), None, Some("7"), Some("BIGINT")),
        param(Some("region"), None, Some("3"), Some("INT")),
    ];
    let (_, batches) = run(&engine().await, req).await;
    assert_eq!(strings(&batches, 0), vec![Some("GERMANY".to_string())]);

    let mut req =
        request("SELECT n_name FROM nation WHERE n_nationkey = ? OR n_nationkey = ? ORDER BY 1");
    req.parameters = vec![
        param(None, Some(2), Some("1"), Some("INT")),
        param(None, Some(1), Some("0"), Some("INT")),
    ];
    let (_, batches) = run(&engine().await, req).await;
    assert_eq!(
        strings(&batches, 0),
        vec![Some("ALGERIA".to_string()), Some("ARGENTINA".to_string())]
    );

    let mut req = request("SELECT :d AS d, :n AS n, :s AS s, :t AS t");
    req.parameters = vec![
        param(Some("d"), None, Some("123.45"), Some("DECIMAL(10,2)")),
        param(Some("n"), None, None, Some("INT")),
        param(Some("s"), None, Some("it's ; DROP"), None),
        param(Some("t"), None, Some("2024-01-01"), Some("DATE")),
    ];
    let (out, batches) = run(&engine().await, req).await;
    assert_eq!(out.columns[0].type_text, "DECIMAL(10,2)");
    assert_eq!(out.columns[1].type_text, "INT");
    assert_eq!(out.columns[2].type_text, "STRING");
    assert_eq!(out.columns[3].type_text, "DATE");
    assert_eq!(strings(&batches, 0), vec![Some("123.45".to_string())]);
    assert_eq!(strings(&batches, 1), vec![None]);
    assert_eq!(strings(&batches, 2), vec![Some("it's ; DROP".to_string())]);

    let mut req = request("SELECT * FROM nation WHERE n_name = :missing");
    req.parameters = vec![param(Some("other"), None, Some("x"), None)];
    let e = fail(req).await;
    assert!(
        e.message
            .starts_with("[UNBOUND_SQL_PARAMETER] Found the unbound parameter: missing."),
        "{}",
        e.message
    );
    assert_eq!(e.sql_state, "42P02");
}

#[tokio::test]
async fn databricks_error_shapes() {
    let e = fail(request("INSER INTO t VALUES (1)")).await;
    assert_eq!(e.error_code, "BAD_REQUEST");
    assert_eq!(e.sql_state, "42601");
    assert!(
        e.message
            .contains("[PARSE_SYNTAX_ERROR] Syntax error at or near 'INSER'. SQLSTATE: 42601"),
        "{}",
        e.message
    );

    let e = fail(request("SELECT * FROM samples.tpch.nope")).await;
    assert_eq!(e.error_class(), Some("TABLE_OR_VIEW_NOT_FOUND"));
    assert!(
        e.message.contains("`samples`.`tpch`.`nope`"),
        "{}",
        e.message
    );
    assert_eq!(e.sql_state, "42P01");

    let e = fail(request("SELECT n_nope FROM nation")).await;
    assert_eq!(e.error_class(), Some("UNRESOLVED_COLUMN.WITH_SUGGESTION"));
    assert_eq!(e.sql_state, "42703");

    let e = fail(request("SELECT n_nationkey / 0 FROM nation")).await;
    assert_eq!(e.error_class(), Some("DIVIDE_BY_ZERO"), "{}", e.message);
    assert_eq!(e.sql_state, "22012");

    let e = fail(request("CREATE TABLE x (a INT)")).await;
    assert_eq!(e.sql_state, "0A000");

    let mut req = request("SELECT 1");
    req.catalog = Some("nope".into());
    assert_eq!(
        fail(req).await.error_class(),
        Some("NO_SUCH_CATALOG_EXCEPTION")
    );
}

#[tokio::test]
async fn grants_hide_and_deny() {
    let engine = engine().await;
    let mut req = request("SELECT count(*) FROM samples.tpch.nation");
    req.grants = Some(Grants::parse(["other"]));
    let e = match engine.execute(req).await {
        Err(e) => e,
        Ok(_) => panic!("must be denied"),
    };
    assert_eq!(e.error_class(), Some("INSUFFICIENT_PERMISSIONS"));
    assert_eq!(e.sql_state, "42501");

    let mut req = request("SHOW CATALOGS");
    req.grants = Some(Grants::parse(["other"]));
    let (_, batches) = run(&engine, req).await;
    assert_eq!(strings(&batches, 0), vec![Some("system".to_string())]);

    let mut req = request("SELECT count(*) FROM system.information_schema.tables");
    req.grants = Some(Grants::parse(["other"]));
    let (_, batches) = run(&engine, req).await;
    assert_eq!(count(&batches), 0);

    let mut req = request("SELECT count(*) FROM samples.tpch.region");
    req.grants = Some(Grants::parse(["samples.tpch"]));
    let (_, batches) = run(&engine, req).await;
    assert_eq!(count(&batches), 5);
}

#[tokio::test]
async fn data_dir_tables_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema_dir = dir.path().join("main").join("sales");
    std::fs::create_dir_all(&schema_dir).expect("mkdir");
    std::fs::write(schema_dir.join("people.csv"), "id,name\n1,ann\n2,bob\n").expect("csv");
    let batch = RecordBatch::try_from_iter(vec![(
        "amount",
        Arc::new(arrow::array::Int64Array::from(vec![10, 20, 30])) as arrow::array::ArrayRef,
    )])
    .expect("batch");
    let file = std::fs::File::create(schema_dir.join("orders.parquet")).expect("file");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let engine = Engine::new(EngineConfig {
        tpch_scale: 0.001,
        data_dir: Some(dir.path().to_path_buf()),
    })
    .await
    .expect("engine starts");
    let (_, batches) = run(
        &engine,
        request("SELECT sum(amount) FROM main.sales.orders"),
    )
    .await;
    assert_eq!(count(&batches), 60);
    let mut req = request("SELECT name FROM people ORDER BY id");
    req.catalog = Some("main".into());
    req.schema = Some("sales".into());
    let (_, batches) = run(&engine, req).await;
    assert_eq!(
        strings(&batches, 0),
        vec![Some("ann".into()), Some("bob".into())]
    );
    let (_, batches) = run(&engine, request("SHOW TABLES IN main.sales")).await;
    assert_eq!(
        strings(&batches, 1),
        vec![Some("orders".into()), Some("people".into())]
    );
    let (_, batches) = run(
        &engine,
        request(
            "SELECT table_type FROM main.information_schema.tables WHERE table_name = 'orders'",
        ),
    )
    .await;
    assert_eq!(strings(&batches, 0), vec![Some("EXTERNAL".into())]);

    // A table whose file was deleted is gone (like a dropped table), never read as empty.
    std::fs::remove_file(schema_dir.join("orders.parquet")).expect("remove");
    let Err(gone) = engine
        .execute(request("SELECT sum(amount) FROM main.sales.orders"))
        .await
    else {
        panic!("a table whose file was deleted must not be found");
    };
    assert_eq!(
        gone.error_class(),
        Some("TABLE_OR_VIEW_NOT_FOUND"),
        "{}",
        gone.message
    );

    let missing = Engine::new(EngineConfig {
        tpch_scale: 0.001,
        data_dir: Some(dir.path().join("absent")),
    })
    .await
    .expect_err("a missing data dir fails");
    assert!(missing.to_string().contains("absent"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_query() {
    let engine = engine().await;
    let out = engine
        .execute(request(
            "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_linenumber = b.l_linenumber",
        ))
        .await
        .expect("plans");
    let mut stream = out.stream;
    let consumer = tokio::spawn(async move { stream.next().await.map(|r| r.is_ok()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Aborting the consumer drops the stream, which must stop the join.
    consumer.abort();
    let joined = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer stops");
    assert!(
        joined.is_err_and(|e| e.is_cancelled()),
        "the query was still running"
    );
    let (_, batches) = tokio::time::timeout(
        Duration::from_secs(60),
        query("SELECT count(*) FROM region"),
    )
    .await
    .expect("engine still answers after the drop");
    assert_eq!(count(&batches), 5);
}
