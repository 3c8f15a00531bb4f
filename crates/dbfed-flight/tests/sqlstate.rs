//! A statement the warehouse refuses reaches the Flight client with a precise code and its
//! SQLSTATE in the `x-dbfed-sqlstate` metadata.

use arrow_flight::error::FlightError;
use dbfed_emulator::{Emulator, Endpoint, FaultAction, FaultRule};
use dbfed_flight::SQLSTATE_METADATA_KEY;
use tonic::Code;

use crate::disconnect::{assert_released, federated};
use crate::fixture::{client, i64_column, query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_syntax_error_is_invalid_argument_with_its_sqlstate() {
    let fed = federated(Emulator::builder(), 2, |b| b).await;
    let mut c = client(&fed.server).await;
    let sql = "SELECT count(*) FROM samples.tpch.nation";
    // Plan once, so the catalog lookups are cached before the fault is armed.
    let batches = query(&mut c, sql).await.expect("baseline");
    assert_eq!(i64_column(&batches, 0), vec![25]);

    let faults = fed.emulator.faults();
    let rule = faults.inject(
        FaultRule::new(
            Endpoint::ExecuteStatement,
            FaultAction::FailAfterChunks {
                chunks: 0,
                error_code: "BAD_REQUEST".to_owned(),
                message: "[PARSE_SYNTAX_ERROR] Syntax error at or near 'FROM'. SQLSTATE: 42601"
                    .to_owned(),
                sql_state: "42601".to_owned(),
            },
        )
        .sql_contains("nation"),
    );
    let err = query(&mut c, sql).await.expect_err("the warehouse refuses");
    let FlightError::Tonic(status) = &err else {
        panic!("expected a gRPC status, got {err:?}");
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("PARSE_SYNTAX_ERROR"),
        "{status:?}"
    );
    let state = status
        .metadata()
        .get(SQLSTATE_METADATA_KEY)
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(state.as_deref(), Some("42601"), "{status:?}");
    assert!(faults.fired(rule) >= 1);
    faults.clear();

    assert_released("after the syntax error", &fed, None).await;
    let batches = query(&mut c, sql).await.expect("after");
    assert_eq!(i64_column(&batches, 0), vec![25]);
}
