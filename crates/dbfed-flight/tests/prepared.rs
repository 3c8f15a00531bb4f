//! Prepared statements: `?` and `:name` markers, DoPut of parameters, handles.

use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use tonic::Code;

use crate::fixture::{self, client, code, fetch, i64_column, rows, start};

#[tokio::test]
async fn positional_parameters_bind_and_rebind() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let mut stmt = c
        .prepare(
            "SELECT id, name FROM numbers WHERE id >= ? AND id < ? ORDER BY id".into(),
            None,
        )
        .await
        .expect("prepare");
    let params = stmt.parameter_schema().expect("parameter schema").clone();
    assert_eq!(params.fields().len(), 2);
    assert_eq!(params.field(0).name(), "1");
    assert_eq!(params.field(0).data_type(), &DataType::Int64);
    assert_eq!(
        stmt.dataset_schema().expect("dataset").field(1).name(),
        "name"
    );

    // Int32 values are cast to the inferred Int64.
    let bind = |lo: i32, hi: i32| {
        RecordBatch::try_from_iter([
            ("a", Arc::new(Int32Array::from(vec![lo])) as _),
            ("b", Arc::new(Int32Array::from(vec![hi])) as _),
        ])
        .expect("batch")
    };
    stmt.set_parameters(bind(10, 15)).expect("set");
    let info = stmt.execute().await.expect("execute");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(i64_column(&batches, 0), vec![10, 11, 12, 13, 14]);

    stmt.set_parameters(bind(9_998, 20_000)).expect("set");
    let info = stmt.execute().await.expect("execute again");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(i64_column(&batches, 0), vec![9_998, 9_999]);
    stmt.close().await.expect("close");
}

#[tokio::test]
async fn named_parameters_bind_by_name() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let mut stmt = c
        .prepare(
            "SELECT count(*) AS n FROM numbers WHERE grp = :g AND name <> :skip AND id < :lim"
                .into(),
            None,
        )
        .await
        .expect("prepare");
    let names: Vec<String> = stmt
        .parameter_schema()
        .expect("schema")
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["g", "skip", "lim"]);
    // Columns in another order than the markers: bound by name.
    let batch = RecordBatch::try_from_iter([
        ("lim", Arc::new(Int64Array::from(vec![70])) as _),
        ("skip", Arc::new(StringArray::from(vec!["n3"])) as _),
        ("g", Arc::new(Int32Array::from(vec![3])) as _),
    ])
    .expect("batch");
    stmt.set_parameters(batch).expect("set");
    let info = stmt.execute().await.expect("execute");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    // grp 3 below 70: 3, 10, ..., 66 = 10 rows, minus n3.
    assert_eq!(i64_column(&batches, 0), vec![9]);
}

#[tokio::test]
async fn bad_bindings_are_invalid_arguments() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let mut stmt = c
        .prepare("SELECT id FROM numbers WHERE id = ?".into(), None)
        .await
        .expect("prepare");
    // Unbound.
    let err = stmt.execute().await.expect_err("no parameters");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    // Two rows.
    let two = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)])
        .expect("batch");
    stmt.set_parameters(two).expect("set");
    let err = stmt.execute().await.expect_err("two rows");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    // A value that does not cast.
    let text = RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["abc"])) as _)])
        .expect("batch");
    stmt.set_parameters(text).expect("set");
    let err = stmt.execute().await.expect_err("uncastable");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn prepared_statement_without_parameters_runs() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let mut stmt = c
        .prepare("SELECT id FROM numbers WHERE grp = 0".into(), None)
        .await
        .expect("prepare");
    assert!(stmt.parameter_schema().expect("schema").fields().is_empty());
    let info = stmt.execute().await.expect("execute");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    assert_eq!(rows(&batches), 1429);
}

#[tokio::test]
async fn prepared_dml_is_refused_when_read_only() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let err = c
        .prepare("INSERT INTO numbers VALUES (?, 'x', 1)".into(), None)
        .await
        .expect_err("refused");
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
}
