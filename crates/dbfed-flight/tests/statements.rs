//! CommandStatementQuery: GetFlightInfo → DoGet, streamed in batches.

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use tonic::Code;

use crate::fixture::{
    self, BATCH_ROWS, BATCHES, client, code, fetch, i64_column, query, rows, start,
};

#[tokio::test]
async fn multi_batch_query_streams_every_row() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let info = c
        .execute("SELECT id, name FROM numbers ORDER BY id".into(), None)
        .await
        .expect("get flight info");
    let schema = info.clone().try_decode_schema().expect("schema");
    assert_eq!(schema.field(0).name(), "id");
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(info.endpoint.len(), 1);
    let batches = fetch(&mut c, &info).await.expect("do get");
    assert!(
        batches.len() > 1,
        "expected several batches, got {}",
        batches.len()
    );
    assert_eq!(rows(&batches), (BATCH_ROWS * BATCHES) as usize);
    let ids = i64_column(&batches, 0);
    assert_eq!(ids, (0..BATCH_ROWS * BATCHES).collect::<Vec<_>>());
    let last = batches.last().expect("a batch");
    let names = last
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8 names");
    assert_eq!(
        names.value(names.len() - 1),
        format!("n{}", BATCH_ROWS * BATCHES - 1)
    );
    // The ticket can be redeemed again (stateless): same rows.
    let again = fetch(&mut c, &info).await.expect("second do get");
    assert_eq!(rows(&again), (BATCH_ROWS * BATCHES) as usize);
}

#[tokio::test]
async fn aggregates_and_filters_return_exact_values() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let batches = query(
        &mut c,
        "SELECT grp, count(*) AS n, sum(id) AS s FROM numbers WHERE id < 700 GROUP BY grp ORDER BY grp",
    )
    .await
    .expect("query");
    assert_eq!(rows(&batches), 7);
    let counts = i64_column(&batches, 1);
    assert_eq!(counts, vec![100; 7]);
    let sums = i64_column(&batches, 2);
    // grp g holds g, g+7, ..., g+693: 100 values summing to 100*g + 7*(0+..+99).
    let expected: Vec<i64> = (0..7).map(|g| 100 * g + 7 * 4950).collect();
    assert_eq!(sums, expected);
}

#[tokio::test]
async fn errors_map_to_grpc_codes() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let err = c
        .execute("SELEC 1".into(), None)
        .await
        .expect_err("syntax error");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    let err = c
        .execute("SELECT * FROM no_such_table".into(), None)
        .await
        .expect_err("unknown table");
    assert_eq!(code(&err), Code::NotFound, "{err}");
    assert!(fixture::message(&err).contains("no_such_table"), "{err}");
    let err = c
        .execute("SELECT no_such_column FROM numbers".into(), None)
        .await
        .expect_err("unknown column");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn writes_are_refused_by_default_and_allowed_when_enabled() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    for sql in [
        "CREATE TABLE t2 AS SELECT 1 AS x",
        "INSERT INTO numbers VALUES (1, 'x', 1)",
        "DROP TABLE numbers",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = c.execute(sql.into(), None).await.expect_err(sql);
        assert_eq!(code(&err), Code::PermissionDenied, "{sql}: {err}");
    }
    let err = c
        .execute_update("CREATE TABLE t2 AS SELECT 1 AS x".into(), None)
        .await
        .expect_err("update refused");
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    // The table is still there and unchanged.
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("query");
    assert_eq!(i64_column(&batches, 0), vec![BATCH_ROWS * BATCHES]);

    let writable = start(fixture::builder().allow_writes(true)).await;
    let mut w = client(&writable).await;
    let created = w
        .execute_update("CREATE TABLE t2 (x BIGINT)".into(), None)
        .await
        .expect("create");
    assert_eq!(created, 0);
    let inserted = w
        .execute_update("INSERT INTO t2 VALUES (1), (2), (3)".into(), None)
        .await
        .expect("insert");
    assert_eq!(inserted, 3);
    let batches = query(&mut w, "SELECT sum(x) FROM t2").await.expect("query");
    assert_eq!(i64_column(&batches, 0), vec![6]);
}

#[tokio::test]
async fn cancel_flight_info_stops_a_query() {
    use arrow_flight::{CancelFlightInfoRequest, CancelStatus, FlightClient};
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let info = c
        .execute("SELECT * FROM numbers".into(), None)
        .await
        .expect("info");
    // A plain Flight client on the same channel sends the CancelFlightInfo action.
    let mut flight = FlightClient::new_from_inner(c.inner().clone());
    let result = flight
        .cancel_flight_info(CancelFlightInfoRequest::new(info.clone()))
        .await
        .expect("cancel");
    assert_eq!(result.status, CancelStatus::Cancelled as i32);
    let err = fetch(&mut c, &info).await.expect_err("canceled query");
    assert_eq!(code(&err), Code::Cancelled, "{err}");
    // Another query is unaffected.
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("query");
    assert_eq!(i64_column(&batches, 0), vec![BATCH_ROWS * BATCHES]);
}

#[tokio::test]
async fn unsupported_commands_are_unimplemented() {
    use arrow_flight::sql::CommandGetExportedKeys;
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let err = c
        .get_exported_keys(CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "numbers".into(),
        })
        .await
        .expect_err("unsupported");
    assert_eq!(code(&err), Code::Unimplemented, "{err}");
    let err = c
        .do_get(arrow_flight::Ticket::new(b"not a command".to_vec()))
        .await;
    let err = match err {
        Err(e) => e,
        Ok(stream) => {
            use futures::TryStreamExt;
            stream
                .try_collect::<Vec<_>>()
                .await
                .expect_err("bad ticket")
        }
    };
    assert_ne!(code(&err), Code::Ok);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    use std::time::Duration;
    use tonic::transport::Endpoint;
    let connect = |addr: std::net::SocketAddr| async move {
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    };
    let server = start(fixture::builder()).await;
    let addr = server.local_addr();
    assert_eq!(server.url(), format!("grpc://{addr}"));
    server.shutdown().await;
    assert!(
        connect(addr).await.is_err(),
        "still accepting after shutdown"
    );

    let server = start(fixture::builder()).await;
    let addr = server.local_addr();
    drop(server);
    let mut refused = false;
    for _ in 0..100 {
        if connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after drop");
}

/// With `allow_writes`, writes stay in the server's in-memory tables: nothing reads or writes the
/// server's files (`CREATE EXTERNAL TABLE`, `COPY ... TO`, DML into a file-backed table), not
/// even under `EXPLAIN ANALYZE`; read-only mode refuses `EXPLAIN ANALYZE` of a write too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_touch_server_files() {
    use std::sync::Arc;

    use arrow_flight::sql::SqlInfo;
    use datafusion::prelude::CsvReadOptions;
    use dbfed_flight::{FlightSqlServer, StaticSessions};

    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("files.csv");
    std::fs::write(&csv, "x\n1\n2\n").expect("write csv");
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "s\ntop-secret\n").expect("write secret");
    let ctx = fixture::numbers_ctx();
    ctx.register_csv(
        "files",
        csv.to_str().expect("utf-8 path"),
        CsvReadOptions::new(),
    )
    .await
    .expect("register csv");
    let server =
        start(FlightSqlServer::builder(Arc::new(StaticSessions::new(ctx))).allow_writes(true))
            .await;
    let mut c = client(&server).await;

    let copy_target = dir.path().join("out.csv");
    let create_external = format!(
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        secret.display()
    );
    let copy = format!(
        "COPY (SELECT id FROM numbers) TO '{}' STORED AS CSV",
        copy_target.display()
    );
    let explain_copy = format!("EXPLAIN ANALYZE {copy}");
    for (sql, kind) in [
        (create_external.as_str(), "CREATE EXTERNAL TABLE"),
        (copy.as_str(), "COPY"),
        (explain_copy.as_str(), "COPY"),
        ("INSERT INTO files VALUES (3)", "INSERT"),
        ("EXPLAIN ANALYZE INSERT INTO files VALUES (3)", "INSERT"),
        (
            "SET datafusion.execution.batch_size = 1",
            "session statements",
        ),
    ] {
        let err = c.execute_update(sql.to_owned(), None).await.expect_err(sql);
        assert_eq!(code(&err), Code::PermissionDenied, "{sql}: {err}");
        assert!(fixture::message(&err).contains(kind), "{sql}: {err}");
        let err = query(&mut c, sql).await.expect_err(sql);
        assert_eq!(code(&err), Code::PermissionDenied, "{sql}: {err}");
    }
    assert!(
        !copy_target.exists(),
        "COPY wrote {}",
        copy_target.display()
    );
    assert_eq!(
        std::fs::read_to_string(&csv).expect("read csv"),
        "x\n1\n2\n",
        "the file-backed table was written"
    );
    let err = query(&mut c, "SELECT * FROM leak")
        .await
        .expect_err("no table");
    assert_ne!(code(&err), Code::Ok);

    // In-memory tables still take writes, and SqlInfo says the endpoint is not read-only.
    c.execute_update("CREATE TABLE mem (x BIGINT)".into(), None)
        .await
        .expect("create");
    let inserted = c
        .execute_update("INSERT INTO mem SELECT x FROM files".into(), None)
        .await
        .expect("insert into memory");
    assert_eq!(inserted, 2);
    let batches = query(&mut c, "SELECT sum(x) FROM mem").await.expect("sum");
    assert_eq!(i64_column(&batches, 0), vec![3]);
    let info = c
        .get_sql_info(vec![SqlInfo::FlightSqlServerReadOnly])
        .await
        .expect("sql info");
    let batches = fetch(&mut c, &info).await.expect("fetch");
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert_eq!(rows(&batches), 1, "{text}");
    assert!(text.contains("false") && !text.contains("true"), "{text}");

    // Read-only: `EXPLAIN ANALYZE` does not smuggle a write past the check.
    let read_only = start(fixture::builder()).await;
    let mut r = client(&read_only).await;
    let err = query(&mut r, "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1")
        .await
        .expect_err("explain analyze of a write");
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
}
