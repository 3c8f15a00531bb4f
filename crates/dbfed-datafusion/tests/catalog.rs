//! Discovery: catalogs, schemas, tables, aliases, include-lists, TTL and refresh, types.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use dbfed_datafusion::{DatabricksSource, Error, PushdownMode};
use dbfed_emulator::Emulator;
use futures::TryStreamExt;

use crate::support::*;

fn small_batch(values: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(values.to_vec()))],
    )
    .expect("batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_tables_are_listed_and_queryable() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let batches = rows(
        &ctx,
        "SELECT table_name FROM information_schema.tables \
         WHERE table_catalog = 'samples' AND table_schema = 'tpch' ORDER BY table_name",
    )
    .await;
    let lines = sorted_lines(&batches);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.trim_matches(|c| c == '|' || c == ' '))
        .collect();
    assert_eq!(
        names,
        [
            "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"
        ]
    );
    let shown = rows(&ctx, "SHOW TABLES").await;
    let text = sorted_lines(&shown).join("\n");
    assert!(
        text.contains("samples") && text.contains("lineitem"),
        "{text}"
    );
    // The remote information_schema is not shown as a schema of the catalog.
    let schemas = ctx.catalog("samples").expect("registered").schema_names();
    assert_eq!(schemas, ["tpch"]);
    let nation = rows(&ctx, "SELECT count(*) AS n FROM samples.tpch.nation").await;
    assert_eq!(sorted_lines(&nation), ["| 25 |"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_catalogs_keep_their_remote_name_in_sql() {
    let emulator = emulator();
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples_with(&emulator, |b| {
            b.pushdown(mode)
                .alias_catalog("samples", "databricks_samples")
        })
        .await;
        assert!(ctx.catalog("samples").is_none());
        let before = emulator.statements().len();
        let batches = rows(
            &ctx,
            "SELECT r_name FROM databricks_samples.tpch.region WHERE r_regionkey = 2",
        )
        .await;
        assert_eq!(sorted_lines(&batches), ["| ASIA   |"]);
        let sent = data_statements(&emulator, before);
        assert_eq!(sent.len(), 1, "{mode:?}: {sent:?}");
        assert!(sent[0].sql.contains("`samples`"), "{}", sent[0].sql);
        assert!(
            !sent[0].sql.contains("databricks_samples"),
            "{}",
            sent[0].sql
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_include_list_limits_the_catalogs() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(&dir.path().join("extra/s/t.parquet"), &small_batch(&[1, 2]));
    let emulator = start(Emulator::builder().data_dir(dir.path()));

    let all = DatabricksSource::builder(executor(&emulator))
        .build()
        .expect("source");
    let ctx = session();
    all.register(&ctx).await.expect("registers");
    let mut names = ctx.catalog_names();
    names.sort();
    assert!(
        names.contains(&"extra".to_owned()) && names.contains(&"samples".to_owned()),
        "{names:?}"
    );

    let only = DatabricksSource::builder(executor(&emulator))
        .catalogs(["extra"])
        .build()
        .expect("source");
    let ctx = session();
    only.register(&ctx).await.expect("registers");
    assert!(ctx.catalog("samples").is_none());
    let batches = rows(&ctx, "SELECT sum(id) AS s FROM extra.s.t").await;
    assert_eq!(sorted_lines(&batches), ["| 3 |"]);

    let missing = DatabricksSource::builder(executor(&emulator))
        .catalogs(["nope"])
        .build()
        .expect("source");
    let err = missing
        .register(&session())
        .await
        .expect_err("no such catalog");
    assert!(
        matches!(err, Error::Discovery { ref catalog, .. } if catalog == "nope"),
        "{err}"
    );
}

/// A source over two emulators: the second has one more table; the driver switches to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_ttl_pick_up_new_tables() {
    let before_dir = tempfile::tempdir().expect("tempdir");
    let after_dir = tempfile::tempdir().expect("tempdir");
    write_parquet(
        &before_dir.path().join("extra/s/t1.parquet"),
        &small_batch(&[1]),
    );
    write_parquet(
        &after_dir.path().join("extra/s/t1.parquet"),
        &small_batch(&[1]),
    );
    write_parquet(
        &after_dir.path().join("extra/s/t2.parquet"),
        &small_batch(&[5, 6]),
    );
    let before = start(Emulator::builder().data_dir(before_dir.path()));
    let after = start(Emulator::builder().data_dir(after_dir.path()));

    // Long TTL: only refresh() sees the new table.
    let (switch, switched) = SwitchDriver::new(driver(&before), Some(driver(&after)), vec![]);
    let source = DatabricksSource::builder(executor_with(switch))
        .catalogs(["extra"])
        .build()
        .expect("source");
    let ctx = session();
    source.register(&ctx).await.expect("registers");
    let schema = ctx
        .catalog("extra")
        .and_then(|c| c.schema("s"))
        .expect("schema");
    assert_eq!(schema.table_names(), ["t1"]);
    switched.store(true, Ordering::SeqCst);
    assert_eq!(schema.table_names(), ["t1"], "cached within the TTL");
    assert!(run(&ctx, "SELECT * FROM extra.s.t2").await.is_err());
    source.refresh().await.expect("refresh");
    assert_eq!(schema.table_names(), ["t1", "t2"]);
    let batches = rows(&ctx, "SELECT sum(id) AS s FROM extra.s.t2").await;
    assert_eq!(sorted_lines(&batches), ["| 11 |"]);

    // Zero TTL: a lookup of an unknown name reads the list again.
    let (switch, switched) = SwitchDriver::new(driver(&before), Some(driver(&after)), vec![]);
    let source = DatabricksSource::builder(executor_with(switch))
        .catalogs(["extra"])
        .cache_ttl(Duration::ZERO)
        .build()
        .expect("source");
    let ctx = session();
    source.register(&ctx).await.expect("registers");
    switched.store(true, Ordering::SeqCst);
    let batches = rows(&ctx, "SELECT sum(id) AS s FROM extra.s.t2").await;
    assert_eq!(sorted_lines(&batches), ["| 11 |"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_table_does_not_break_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(
        &dir.path().join("extra/s/good.parquet"),
        &small_batch(&[1, 2, 3]),
    );
    write_parquet(
        &dir.path().join("extra/s/broken.parquet"),
        &small_batch(&[4]),
    );
    let emulator = start(Emulator::builder().data_dir(dir.path()));
    let (driver, _) = SwitchDriver::new(driver(&emulator), None, vec!["broken".into()]);
    let source = DatabricksSource::builder(executor_with(driver))
        .catalogs(["extra"])
        .build()
        .expect("source");
    let ctx = session();
    source.register(&ctx).await.expect("registers");
    let schema = ctx
        .catalog("extra")
        .and_then(|c| c.schema("s"))
        .expect("schema");
    assert_eq!(schema.table_names(), ["broken", "good"]);
    let batches = rows(&ctx, "SELECT count(*) AS n FROM extra.s.good").await;
    assert_eq!(sorted_lines(&batches), ["| 3 |"]);
    let err = run(&ctx, "SELECT * FROM extra.s.broken")
        .await
        .expect_err("unreadable");
    let message = err.to_string();
    assert!(message.contains("extra.s.broken"), "{message}");
    // The listing in information_schema still works.
    let listed = rows(
        &ctx,
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'extra' AND table_schema = 's' ORDER BY 1",
    )
    .await;
    assert_eq!(count(&listed), 2);
    // So does the column listing, which reads every table: the good table's column is there,
    // the broken one has none.
    let columns = rows(
        &ctx,
        "SELECT table_name, column_name FROM information_schema.columns \
         WHERE table_catalog = 'extra' AND table_schema = 's' ORDER BY 1, 2",
    )
    .await;
    let lines = sorted_lines(&columns);
    assert!(
        lines.iter().any(|l| l.contains("good")) && !lines.iter().any(|l| l.contains("broken")),
        "{lines:?}"
    );
    // Reading the broken table still fails, with the reason.
    let err = run(&ctx, "SELECT count(*) FROM extra.s.broken")
        .await
        .expect_err("unreadable");
    let message = err.to_string();
    assert!(
        message.contains("extra.s.broken") && message.contains("poisoned"),
        "{message}"
    );
}

fn every_type_batch() -> RecordBatch {
    let list =
        ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), None]), None]);
    let strukt = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("x"), Some("y")])) as ArrayRef,
        ),
    ]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("i8", Arc::new(Int8Array::from(vec![Some(1), None]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(1), None]))),
        ("i32", Arc::new(Int32Array::from(vec![Some(1), None]))),
        ("i64", Arc::new(Int64Array::from(vec![Some(1), None]))),
        ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None]))),
        ("f64", Arc::new(Float64Array::from(vec![Some(1.5), None]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(1234), None])
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
        ),
        ("flag", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        ("text", Arc::new(StringArray::from(vec![Some("a"), None]))),
        (
            "bytes",
            Arc::new(BinaryArray::from(vec![Some(&b"ab"[..]), None])),
        ),
        ("day", Arc::new(Date32Array::from(vec![Some(19000), None]))),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None]).with_timezone("UTC")),
        ),
        (
            "ts_ntz",
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None])),
        ),
        ("list", Arc::new(list)),
        ("rec", Arc::new(strukt)),
    ];
    RecordBatch::try_from_iter(columns).expect("batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_maps_like_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(
        &dir.path().join("extra/s/types.parquet"),
        &every_type_batch(),
    );
    let emulator = start(Emulator::builder().data_dir(dir.path()));
    let executor = executor(&emulator);
    let source = DatabricksSource::builder(executor.clone())
        .catalogs(["extra"])
        .pushdown(PushdownMode::FilterProjection)
        .build()
        .expect("source");
    let provider = source
        .table_provider("extra", "s", "types")
        .await
        .expect("table");
    // What the client itself makes of the statement's manifest.
    let stream = executor
        .query("SELECT * FROM extra.s.types", &[])
        .await
        .expect("query");
    let client_schema = stream.schema();
    let _: Vec<RecordBatch> = stream.try_collect().await.expect("rows");
    let ours = provider.schema();
    assert_eq!(ours.fields().len(), client_schema.fields().len());
    for (a, b) in ours.fields().iter().zip(client_schema.fields()) {
        assert_eq!(a.name(), b.name());
        assert_eq!(a.data_type(), b.data_type(), "column {}", a.name());
    }
    // And the data comes back with those types.
    let ctx = session();
    ctx.register_table("types", provider).expect("register");
    let batches = rows(&ctx, "SELECT * FROM types").await;
    assert_eq!(count(&batches), 2);
    assert_eq!(batches[0].schema().fields().len(), ours.fields().len());
    let missing = source
        .table_provider("extra", "s", "nope")
        .await
        .expect_err("missing");
    assert!(
        matches!(missing, Error::TableNotFound(ref t) if t == "extra.s.nope"),
        "{missing}"
    );
}
