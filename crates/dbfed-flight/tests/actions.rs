//! Flight actions: `ListActions` advertises only what the server answers; the deprecated
//! `CancelQuery` cancels like `CancelFlightInfo`; `CloseSession` drops a pass-through identity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionCancelQueryRequest, ActionCancelQueryResult, Any,
    ProstMessageExt,
};
use arrow_flight::{Action, FlightClient};
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use dbfed_flight::{Auth, FlightSqlError, FlightSqlServer, PassThroughSessions};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;

use crate::fixture::{self, client, code, fetch, i64_column, query, start};

#[tokio::test]
async fn list_actions_advertises_only_answered_actions() {
    let server = start(fixture::builder()).await;
    let c = client(&server).await;
    let mut flight = FlightClient::new_from_inner(c.inner().clone());
    let mut types: Vec<String> = flight
        .list_actions()
        .await
        .expect("list actions")
        .map_ok(|a| a.r#type)
        .try_collect()
        .await
        .expect("actions");
    types.sort();
    assert_eq!(
        types,
        vec![
            "CancelFlightInfo",
            "CancelQuery",
            "ClosePreparedStatement",
            "CloseSession",
            "CreatePreparedStatement",
        ]
    );
    // What is not advertised is indeed not answered.
    let err = match flight
        .do_action(Action::new(
            "BeginTransaction",
            ActionBeginTransactionRequest::default()
                .as_any()
                .encode_to_vec(),
        ))
        .await
    {
        Err(err) => err,
        Ok(_) => panic!("BeginTransaction answered"),
    };
    assert_eq!(code(&err), Code::Unimplemented, "{err}");
}

#[tokio::test]
async fn cancel_query_cancels_like_cancel_flight_info() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let info = c
        .execute("SELECT * FROM numbers".into(), None)
        .await
        .expect("info");
    let mut flight = FlightClient::new_from_inner(c.inner().clone());
    let request = ActionCancelQueryRequest {
        info: info.encode_to_vec().into(),
    };
    let results: Vec<Bytes> = flight
        .do_action(Action::new("CancelQuery", request.as_any().encode_to_vec()))
        .await
        .expect("cancel query")
        .try_collect()
        .await
        .expect("results");
    assert_eq!(results.len(), 1);
    let result: ActionCancelQueryResult = Any::decode(results[0].as_ref())
        .expect("an Any")
        .unpack()
        .expect("decodes")
        .expect("an ActionCancelQueryResult");
    assert_eq!(result.result, 1, "CANCEL_RESULT_CANCELLED");
    let err = fetch(&mut c, &info).await.expect_err("canceled query");
    assert_eq!(code(&err), Code::Cancelled, "{err}");
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("another query");
    assert_eq!(i64_column(&batches, 0), vec![10_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_drops_the_pass_through_identity() {
    const TOKEN: &str = "dapi-close-session-000000000";
    let built = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&built);
    let sessions = Arc::new(
        PassThroughSessions::builder(move |_token| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<SessionContext, FlightSqlError>(fixture::numbers_ctx()) }
        })
        .build(),
    );
    let server =
        start(FlightSqlServer::builder(Arc::clone(&sessions) as _).auth(Auth::PassThrough)).await;
    let mut c = client(&server).await;
    c.set_token(TOKEN.into());
    let count = "SELECT count(*) FROM numbers";
    let batches = query(&mut c, count).await.expect("first query");
    assert_eq!(i64_column(&batches, 0), vec![10_000]);
    assert_eq!(sessions.cached_identities(), 1);
    assert_eq!(built.load(Ordering::SeqCst), 1);

    let mut flight = FlightClient::new_from_inner(c.inner().clone());
    flight
        .add_header("authorization", &format!("Bearer {TOKEN}"))
        .expect("header");
    let results: Vec<Bytes> = flight
        .do_action(Action::new("CloseSession", Bytes::new()))
        .await
        .expect("close session")
        .try_collect()
        .await
        .expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(
        sessions.cached_identities(),
        0,
        "CloseSession kept the identity"
    );

    // The next query builds a fresh context.
    let batches = query(&mut c, count).await.expect("after close");
    assert_eq!(i64_column(&batches, 0), vec![10_000]);
    assert_eq!(built.load(Ordering::SeqCst), 2);
    assert_eq!(sessions.cached_identities(), 1);
}
