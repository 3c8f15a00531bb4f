//! Unknown names, tables dropped under a plan, injection attempts, expressions Databricks
//! cannot evaluate.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dbfed_datafusion::{DatabricksSource, PushdownMode};
use dbfed_emulator::Emulator;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_columns_are_plan_errors_naming_them() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let err = run(&ctx, "SELECT * FROM samples.tpch.nope")
        .await
        .expect_err("no table");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = run(&ctx, "SELECT n_nope FROM samples.tpch.nation")
        .await
        .expect_err("no column");
    assert!(err.to_string().contains("n_nope"), "{err}");
    let err = run(&ctx, "SELECT * FROM samples.nope.nation")
        .await
        .expect_err("no schema");
    assert!(err.to_string().contains("nope"), "{err}");
}

/// Planned against a warehouse that has the table; executed after it is gone (the driver
/// switches to a second emulator without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_after_planning_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .expect("batch");
    write_parquet(&dir.path().join("extra/s/gone.parquet"), &batch);
    write_parquet(&empty.path().join("extra/s/other.parquet"), &batch);
    let with_table = start(Emulator::builder().data_dir(dir.path()));
    let without = start(Emulator::builder().data_dir(empty.path()));
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let (driver, switched) =
            SwitchDriver::new(driver(&with_table), Some(driver(&without)), vec![]);
        let source = DatabricksSource::builder(executor_with(driver))
            .catalogs(["extra"])
            .pushdown(mode)
            .build()
            .expect("source");
        let ctx = session();
        source.register(&ctx).await.expect("registers");
        let df = ctx
            .sql("SELECT id FROM extra.s.gone WHERE id > 0")
            .await
            .expect("plans");
        switched.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = df.collect().await.expect_err("the table is gone");
        let message = err.to_string();
        assert!(message.contains("gone"), "{mode:?}: {message}");
        assert!(message.contains("NOT_FOUND"), "{mode:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_cannot_inject_sql() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let before = emulator.statements().len();
    let err = run(&ctx, "SELECT * FROM samples.tpch.\"nation; DROP TABLE x\"")
        .await
        .expect_err("no such table");
    assert!(err.to_string().contains("nation; DROP TABLE x"), "{err}");
    let err = run(&ctx, "SELECT * FROM samples.tpch.\"nation` WHERE 1=1 --\"")
        .await
        .expect_err("no such table");
    assert!(err.to_string().contains("nation`"), "{err}");
    for record in emulator.statements().into_iter().skip(before) {
        assert!(!record.sql.contains("DROP"), "{}", record.sql);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_remote_identifiers_are_quoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("we`ird col", DataType::Int64, true),
            Field::new("a.b", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
        ],
    )
    .expect("batch");
    write_parquet(
        &dir.path().join("extra/my schema/odd` name.parquet"),
        &batch,
    );
    let emulator = start(Emulator::builder().data_dir(dir.path()));
    for mode in [
        PushdownMode::Full,
        PushdownMode::FilterProjection,
        PushdownMode::None,
    ] {
        let source = DatabricksSource::builder(executor(&emulator))
            .catalogs(["extra"])
            .pushdown(mode)
            .build()
            .expect("source");
        let ctx = session();
        source.register(&ctx).await.expect("registers");
        let batches = rows(
            &ctx,
            "SELECT \"a.b\" FROM extra.\"my schema\".\"odd` name\" WHERE \"we`ird col\" >= 2",
        )
        .await;
        assert_eq!(sorted_lines(&batches), ["| y   |", "| z   |"], "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_cannot_inject_sql() {
    let emulator = emulator();
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples(&emulator, mode).await;
        let (batches, sent) = rows_and_sent(
            &ctx,
            &emulator,
            "SELECT n_name FROM samples.tpch.nation WHERE n_name = 'x''; DROP TABLE y; --'",
        )
        .await;
        assert_eq!(count(&batches), 0, "{mode:?}");
        for record in sent {
            assert!(record.error_message.is_none(), "{:?}", record.error_message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_databricks_cannot_evaluate_run_locally() {
    let emulator = emulator();
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples(&emulator, mode).await;
        let before = emulator.statements().len();
        // to_hex has no known Databricks twin; `/` on integers truncates here, not there.
        let batches = rows(
            &ctx,
            "SELECT n_name FROM samples.tpch.nation \
             WHERE to_hex(n_nationkey) = '7' OR n_nationkey / 2 = 12",
        )
        .await;
        // GERMANY, plus nation 24 (UNITED STATES) whose key / 2 = 12 in integer division.
        assert_eq!(
            sorted_lines(&batches),
            ["| GERMANY       |", "| UNITED STATES |"],
            "{mode:?}"
        );
        for record in data_statements(&emulator, before) {
            let sql = record.sql.to_ascii_lowercase();
            assert!(
                !sql.contains("to_hex") && !sql.contains('/'),
                "{}",
                record.sql
            );
        }
    }
}
