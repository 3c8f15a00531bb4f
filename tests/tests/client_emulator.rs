//! The Databricks client against the emulator, over real HTTP on loopback: large multi-chunk
//! results, every result format, parameters, cancel, statement timeouts, retries under injected
//! faults, expired links, failures and auth.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Int64Type};
use dbfed_databricks::config::Credentials;
use dbfed_databricks::{Client, Param, ResultFormat, ResultStream, StatementRequest};
use dbfed_emulator::{Emulator, Endpoint, FaultAction, FaultRule, StatementState};

use crate::support::{TOKEN, client, client_builder, client_with, record, start, wait_for_record};

/// Reads every batch, failing the test on any error.
fn collect(stream: ResultStream) -> Vec<RecordBatch> {
    stream
        .map(|batch| batch.expect("every batch decodes"))
        .collect()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    let schema = batches.first().expect("at least one batch").schema();
    concat_batches(&schema, batches).expect("batches share the schema")
}

fn single_i64(client: &Client, sql: &str) -> i64 {
    let batches = collect(client.execute(sql, &[]).expect("statement runs"));
    let batch = concat(&batches);
    assert_eq!(batch.num_rows(), 1, "{sql} returns one row");
    let column = arrow::compute::cast(batch.column(0), &DataType::Int64).expect("castable");
    column.as_primitive::<Int64Type>().value(0)
}

#[test]
fn large_multi_chunk_result_arrives_complete_and_in_order() {
    let emulator = start(Emulator::builder().chunk_rows(2_000));
    // Small prefetch budget and several threads: chunks finish out of order and the budget binds.
    let client = client_builder(&emulator)
        .download_threads(4)
        .prefetch_bytes(64 * 1024)
        .build()
        .expect("client builds");

    let expected_rows = single_i64(&client, "SELECT COUNT(*) FROM samples.tpch.lineitem");
    let expected_sum = single_i64(
        &client,
        "SELECT SUM(l_orderkey * 10 + l_linenumber) FROM samples.tpch.lineitem",
    );

    let stream = client
        .execute(
            "SELECT l_orderkey, l_linenumber FROM samples.tpch.lineitem \
             ORDER BY l_orderkey, l_linenumber",
            &[],
        )
        .expect("statement runs");
    let statement_id = stream.statement_id().to_owned();
    assert_eq!(stream.total_row_count(), Some(expected_rows as u64));
    let mut previous = i64::MIN;
    let (mut rows, mut sum) = (0_i64, 0_i64);
    for batch in stream {
        let batch = batch.expect("every chunk decodes");
        let keys = batch.column(0).as_primitive::<Int64Type>();
        let lines = arrow::compute::cast(batch.column(1), &DataType::Int64).expect("int");
        let lines = lines.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let key = keys.value(i) * 10 + lines.value(i);
            assert!(
                key > previous,
                "rows arrive in chunk order ({key} after {previous})"
            );
            previous = key;
            sum += key;
        }
        rows += batch.num_rows() as i64;
    }
    assert_eq!(rows, expected_rows, "no row lost or duplicated");
    assert_eq!(sum, expected_sum, "checksum of every row");
    let record = record(&emulator, &statement_id);
    assert!(
        record.chunks >= 20,
        "the result really was multi-chunk: {}",
        record.chunks
    );
    assert_eq!(record.format, "ARROW_STREAM");
    assert_eq!(record.result_compression, "LZ4_FRAME");
    let downloads = emulator
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/api/") && !r.path.starts_with("/oidc"))
        .collect::<Vec<_>>();
    assert!(
        !downloads.is_empty(),
        "chunks were downloaded from external links"
    );
    assert!(
        downloads.iter().all(|r| r.auth_scheme.is_none()),
        "the workspace token never goes to link hosts"
    );
}

#[test]
fn every_result_format_returns_the_same_values() {
    let emulator = start(Emulator::builder().chunk_rows(1_000));
    let client = client(&emulator);
    let sql = "SELECT o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate, \
               o_orderpriority, o_shippriority, o_comment \
               FROM samples.tpch.orders WHERE o_orderkey < 20000 ORDER BY o_orderkey";
    let mut results = Vec::new();
    for format in [
        ResultFormat::ArrowLz4,
        ResultFormat::Arrow,
        ResultFormat::JsonInline,
    ] {
        let request = StatementRequest::new(sql).result_format(format);
        let stream = client.execute_request(&request).expect("statement runs");
        let id = stream.statement_id().to_owned();
        let batch = concat(&collect(stream));
        let record = record(&emulator, &id);
        assert!(
            record.chunks > 1,
            "{format:?} was paged over several chunks"
        );
        results.push((format, batch));
    }
    let (_, reference) = &results[0];
    assert!(reference.num_rows() > 1_000);
    assert_eq!(
        reference.schema().field(3).data_type(),
        &DataType::Decimal128(18, 2),
        "DECIMAL keeps precision and scale"
    );
    assert_eq!(reference.schema().field(4).data_type(), &DataType::Date32);
    for (format, batch) in &results[1..] {
        assert_eq!(batch.schema(), reference.schema(), "{format:?} schema");
        assert_eq!(batch, reference, "{format:?} values equal ArrowLz4's");
    }
}

#[test]
fn parameters_are_typed_and_never_spliced() {
    let emulator = start(Emulator::builder());
    let client = client(&emulator);
    let stream = client
        .execute(
            "SELECT n_name FROM samples.tpch.nation \
             WHERE n_regionkey = :region AND n_name >= :from ORDER BY n_name",
            &[
                Param::new("region", 2_i64),
                Param::new("from", "I".to_owned()),
            ],
        )
        .expect("statement runs");
    let id = stream.statement_id().to_owned();
    let batch = concat(&collect(stream));
    let names: Vec<&str> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(names, ["INDIA", "INDONESIA", "JAPAN", "VIETNAM"]);
    let record = record(&emulator, &id);
    assert_eq!(record.parameters.len(), 2);
    assert!(
        record.sql.contains(":region"),
        "the value did not replace the marker in the SQL text"
    );

    // An injection attempt through a value is just a string that matches nothing.
    let stream = client
        .execute(
            "SELECT COUNT(*) AS n FROM samples.tpch.nation WHERE n_name = :name",
            &[Param::new("name", "x' OR '1'='1".to_owned())],
        )
        .expect("statement runs");
    let batch = concat(&collect(stream));
    let n = arrow::compute::cast(batch.column(0), &DataType::Int64).expect("int");
    assert_eq!(n.as_primitive::<Int64Type>().value(0), 0);

    // NULL parameters carry a type and no value.
    let stream = client
        .execute(
            "SELECT :missing IS NULL AS is_null",
            &[Param::null("missing", "INT")],
        )
        .expect("statement runs");
    let batch = concat(&collect(stream));
    assert!(batch.column(0).as_boolean().value(0));
}

#[test]
fn cancel_stops_a_running_statement_on_the_warehouse() {
    let emulator = start(Emulator::builder().statement_latency(Duration::from_secs(30)));
    let client = client(&emulator);
    let submitted = client
        .submit(&StatementRequest::new("SELECT 1").wait_timeout(Duration::ZERO))
        .expect("submitted");
    let id = submitted.id().to_owned();
    assert!(
        !submitted.is_terminal(),
        "still running after wait_timeout=0s"
    );
    client.cancel(&id).expect("cancel accepted");
    let error = client
        .wait(&id, None)
        .expect_err("a canceled statement has no result");
    assert!(error.is_canceled(), "{error}");
    let record = wait_for_record(&emulator, &id, |r| r.state == StatementState::Canceled);
    assert_eq!(record.state, StatementState::Canceled);
}

#[test]
fn statement_timeout_cancels_on_the_warehouse() {
    let emulator = start(Emulator::builder().statement_latency(Duration::from_secs(30)));
    let client = client_builder(&emulator)
        .statement_timeout(Some(Duration::from_millis(300)))
        .build()
        .expect("client builds");
    let error = client
        .execute("SELECT 42", &[])
        .expect_err("the statement outlives its timeout");
    assert!(error.is_timeout(), "{error}");
    let id = emulator
        .statements()
        .last()
        .expect("one statement")
        .id
        .clone();
    let record = wait_for_record(&emulator, &id, |r| r.state == StatementState::Canceled);
    assert_eq!(
        record.state,
        StatementState::Canceled,
        "no orphaned warehouse statement"
    );
}

#[test]
fn dropping_a_stream_early_releases_the_statement() {
    let emulator = start(Emulator::builder().chunk_rows(1_000));
    let client = client(&emulator);
    let mut stream = client
        .execute("SELECT * FROM samples.tpch.lineitem", &[])
        .expect("statement runs");
    let id = stream.statement_id().to_owned();
    let first = stream
        .next_batch()
        .expect("first batch")
        .expect("not empty");
    assert!(first.num_rows() > 0);
    drop(stream);
    let record = wait_for_record(&emulator, &id, |r| {
        matches!(r.state, StatementState::Canceled | StatementState::Closed)
    });
    assert!(
        matches!(
            record.state,
            StatementState::Canceled | StatementState::Closed
        ),
        "dropped stream left the statement {:?}",
        record.state
    );
    assert!(
        record.chunks_served < record.chunks as u64,
        "dropping stopped the downloads ({} of {} chunks served)",
        record.chunks_served,
        record.chunks
    );
}

#[test]
fn transient_faults_are_retried_without_losing_rows() {
    let emulator = start(Emulator::builder().chunk_rows(3_000));
    let client = client(&emulator);
    let expected = single_i64(&client, "SELECT COUNT(*) FROM samples.tpch.orders");

    let faults = emulator.faults();
    let execute_429 =
        faults.inject(FaultRule::status(Endpoint::ExecuteStatement, 429, None).times(2));
    let chunk_503 = faults.inject(FaultRule::status(Endpoint::GetChunk, 503, Some(1)).times(2));
    let reset = faults.inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 100 },
        )
        .times(2),
    );
    let expired =
        faults.inject(FaultRule::new(Endpoint::GetChunk, FaultAction::ExpiredLinks).times(1));

    let batches = collect(
        client
            .execute("SELECT o_orderkey FROM samples.tpch.orders", &[])
            .expect("statement runs despite faults"),
    );
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows as i64, expected, "no row lost or duplicated");
    let sum: i64 = batches
        .iter()
        .map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    assert_eq!(
        sum,
        single_i64(&client, "SELECT SUM(o_orderkey) FROM samples.tpch.orders")
    );
    assert_eq!(faults.fired(execute_429), 2, "execute retried 429");
    assert_eq!(faults.fired(chunk_503), 2, "chunk fetch retried 503");
    assert_eq!(faults.fired(reset), 2, "downloads retried after a reset");
    assert_eq!(faults.fired(expired), 1, "expired link refreshed");
}

#[test]
fn execute_is_not_retried_on_503_without_retry_after() {
    let emulator = start(Emulator::builder());
    let client = client(&emulator);
    let rule = emulator
        .faults()
        .inject(FaultRule::status(Endpoint::ExecuteStatement, 503, None).times(5));
    let error = client
        .execute("SELECT 1", &[])
        .expect_err("execute is not idempotent");
    assert_eq!(error.http_status(), Some(503), "{error}");
    assert_eq!(emulator.faults().fired(rule), 1, "exactly one attempt");
    assert!(emulator.statements().is_empty(), "nothing ran");
}

#[test]
fn expired_links_from_the_first_response_are_refreshed() {
    let emulator = start(Emulator::builder().chunk_rows(5_000));
    let client = client(&emulator);
    let rule = emulator
        .faults()
        .inject(FaultRule::new(Endpoint::ExecuteStatement, FaultAction::ExpiredLinks).times(1));
    let rows: usize = collect(
        client
            .execute("SELECT * FROM samples.tpch.customer", &[])
            .expect("statement runs"),
    )
    .iter()
    .map(RecordBatch::num_rows)
    .sum();
    assert_eq!(emulator.faults().fired(rule), 1);
    assert_eq!(
        rows as i64,
        single_i64(&client, "SELECT COUNT(*) FROM samples.tpch.customer")
    );
}

#[test]
fn a_statement_failing_mid_result_is_an_error_not_a_short_result() {
    let emulator = start(Emulator::builder().chunk_rows(1_000));
    let client = client(&emulator);
    emulator.faults().inject(
        FaultRule::new(
            Endpoint::ExecuteStatement,
            FaultAction::FailAfterChunks {
                chunks: 3,
                error_code: "INTERNAL_ERROR".to_owned(),
                message: "[INTERNAL_ERROR] worker lost. SQLSTATE: XX000".to_owned(),
                sql_state: "XX000".to_owned(),
            },
        )
        .times(1),
    );
    let outcome = client
        .execute("SELECT * FROM samples.tpch.orders", &[])
        .and_then(|mut stream| {
            let mut rows = 0;
            while let Some(batch) = stream.next_batch()? {
                rows += batch.num_rows();
            }
            Ok(rows)
        });
    let error = outcome.expect_err("a failed statement never looks like a complete result");
    assert_eq!(error.sql_state(), Some("XX000"), "{error}");
}

#[test]
fn sql_errors_keep_code_message_and_sqlstate() {
    let emulator = start(Emulator::builder());
    let client = client(&emulator);
    let error = client.execute("SELEC 1", &[]).expect_err("syntax error");
    assert_eq!(error.sql_state(), Some("42601"), "{error}");
    assert!(!error.is_retryable());
    let error = client
        .execute("SELECT * FROM samples.tpch.no_such_table", &[])
        .expect_err("unknown table");
    assert_eq!(error.sql_state(), Some("42P01"), "{error}");
    assert!(error.to_string().contains("no_such_table"), "{error}");
}

#[test]
fn bad_tokens_are_auth_errors_without_the_token() {
    let emulator = start(Emulator::builder());
    let client = client_with(&emulator, Credentials::token("dapi-wrong-token-secret"));
    let error = client.execute("SELECT 1", &[]).expect_err("refused");
    assert!(error.is_auth(), "{error}");
    assert!(matches!(error.http_status(), Some(401 | 403)), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("dapi-wrong-token-secret"), "{shown}");
}

#[test]
fn oauth_m2m_against_the_emulator() {
    let emulator = start(Emulator::builder().oauth_client("e2e-client", "e2e-secret-value"));
    let client = client_with(
        &emulator,
        Credentials::oauth_m2m("e2e-client", "e2e-secret-value"),
    );
    for _ in 0..3 {
        collect(client.execute("SELECT 1", &[]).expect("statement runs"));
    }
    let statements = emulator.statements();
    assert_eq!(statements.len(), 3);
    assert!(
        statements.iter().all(|s| s.identity.contains("e2e-client")),
        "{:?}",
        statements.iter().map(|s| &s.identity).collect::<Vec<_>>()
    );
    let token_requests = emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/oidc/v1/token")
        .count();
    assert_eq!(token_requests, 1, "the token is cached across statements");
}

#[test]
fn sessions_carry_catalog_and_schema() {
    let emulator = start(Emulator::builder());
    let client = Arc::new(client(&emulator));
    let session = client
        .create_session(Some("samples"), Some("tpch"), &Default::default())
        .expect("session created");
    let stream = client
        .execute_request(&StatementRequest::new("SELECT COUNT(*) FROM region").session(&session))
        .expect("unqualified names resolve in the session's schema");
    let batch = concat(&collect(stream));
    let n = arrow::compute::cast(batch.column(0), &DataType::Int64).expect("int");
    assert_eq!(n.as_primitive::<Int64Type>().value(0), 5);
    session.close().expect("session closed");
    assert!(batch.column(0).null_count() == 0);
}

#[test]
fn row_limit_marks_the_result_truncated() {
    let emulator = start(Emulator::builder());
    let client = client(&emulator);
    let stream = client
        .execute_request(&StatementRequest::new("SELECT * FROM samples.tpch.nation").row_limit(7))
        .expect("statement runs");
    assert!(stream.is_truncated());
    let rows: usize = collect(stream).iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 7);
}

#[test]
fn the_token_is_only_sent_to_the_workspace() {
    let emulator = start(Emulator::builder());
    let client = client(&emulator);
    collect(
        client
            .execute("SELECT * FROM samples.tpch.part", &[])
            .expect("runs"),
    );
    let requests = emulator.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/api/") && r.auth_scheme.as_deref() == Some("Bearer"))
    );
    for r in requests.iter().filter(|r| !r.path.starts_with("/api/")) {
        assert_eq!(r.auth_scheme, None, "{} carried credentials", r.path);
    }
    let _ = TOKEN;
}

#[test]
fn azure_service_principal_against_the_emulator() {
    let emulator = start(
        Emulator::builder()
            .azure_tenant("e2e-tenant")
            .oauth_client("e2e-sp", "e2e-sp-secret"),
    );
    let client = client_with(
        &emulator,
        Credentials::azure_service_principal("e2e-tenant", "e2e-sp", "e2e-sp-secret"),
    );
    collect(client.execute("SELECT 1", &[]).expect("statement runs"));
    let statements = emulator.statements();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].identity, "azure:e2e-sp");

    // A wrong secret is an auth error that does not show the secret.
    let error = client_with(
        &emulator,
        Credentials::azure_service_principal("e2e-tenant", "e2e-sp", "wrong-sp-secret"),
    )
    .execute("SELECT 1", &[])
    .expect_err("refused");
    assert!(error.is_auth(), "{error}");
    assert!(!format!("{error} {error:?}").contains("wrong-sp-secret"));
}
