//! Authentication, signed tickets and their refusal.

use std::time::Duration;

use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightInfo, Ticket};
use dbfed_flight::{Auth, Credentials};
use prost::Message;
use tonic::Code;

use crate::fixture::{self, BATCH_ROWS, BATCHES, client, code, fetch, i64_column, query, start};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn credentials() -> Auth {
    Auth::Basic(
        Credentials::new()
            .user("alice", "alice-pw")
            .user("bob", "bob-pw")
            .token("static-service-token", "svc"),
    )
}

fn statement_handle(info: &FlightInfo) -> Vec<u8> {
    let ticket = info.endpoint[0].ticket.as_ref().expect("ticket");
    let any = Any::decode(ticket.ticket.as_ref()).expect("any");
    let statement: TicketStatementQuery = any.unpack().expect("unpack").expect("statement ticket");
    statement.statement_handle.to_vec()
}

fn ticket_with_handle(handle: Vec<u8>) -> Ticket {
    Ticket::new(
        TicketStatementQuery {
            statement_handle: handle.into(),
        }
        .as_any()
        .encode_to_vec(),
    )
}

async fn do_get_code(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    ticket: Ticket,
) -> (Code, String) {
    use futures::TryStreamExt;
    let result = match c.do_get(ticket).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = result.expect_err("refused");
    (code(&err), fixture::message(&err))
}

#[tokio::test]
async fn basic_handshake_and_bearer_tokens() {
    let server = start(fixture::builder().auth(credentials())).await;

    // No credentials.
    let mut anonymous = client(&server).await;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("no token");
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");

    // Wrong password, unknown user.
    let mut c = client(&server).await;
    // (The Rust client flattens handshake failures into an Arrow error carrying the status.)
    let err = c
        .handshake("alice", "wrong")
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(
        text.contains("unauthenticated: invalid user name or password"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "password echoed: {text}");
    let err = c.handshake("mallory", "x").await.expect_err("unknown user");
    assert!(err.to_string().contains("unauthenticated"), "{err}");
    assert!(c.token().is_none());

    // Bad bearer.
    c.set_token("not-a-token".into());
    let err = c
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("bad bearer");
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
    c.set_token("dbfed1.AAAAAAAA".into());
    let err = c
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("forged bearer");
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
    c.clear_token();

    // The handshake sets the token; queries then work.
    c.handshake("alice", "alice-pw").await.expect("handshake");
    let token = c.token().cloned().expect("token set by handshake");
    assert!(!token.contains("alice-pw"));
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("query");
    assert_eq!(i64_column(&batches, 0), vec![BATCH_ROWS * BATCHES]);

    // A static token.
    let mut s = client(&server).await;
    s.set_token("static-service-token".into());
    let batches = query(&mut s, "SELECT 41 + 1 AS x")
        .await
        .expect("static token");
    assert_eq!(i64_column(&batches, 0), vec![42]);
}

#[tokio::test]
async fn forged_tampered_expired_and_foreign_tickets_are_refused() {
    let server = start(fixture::builder().auth(credentials()).ticket_secret(SECRET)).await;
    let mut alice = client(&server).await;
    alice.handshake("alice", "alice-pw").await.expect("alice");
    let info = alice
        .execute("SELECT id FROM numbers WHERE id < 3".into(), None)
        .await
        .expect("info");
    let handle = statement_handle(&info);

    // Forged.
    let (code_, msg) = do_get_code(&mut alice, ticket_with_handle(b"forged".to_vec())).await;
    assert_eq!(code_, Code::Unauthenticated, "{msg}");

    // Tampered: flip a byte in the middle of the signed payload.
    let mut tampered = handle.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x20;
    let (code_, msg) = do_get_code(&mut alice, ticket_with_handle(tampered)).await;
    assert_eq!(code_, Code::Unauthenticated, "{msg}");

    // Someone else's ticket.
    let mut bob = client(&server).await;
    bob.handshake("bob", "bob-pw").await.expect("bob");
    let (code_, msg) = do_get_code(&mut bob, ticket_with_handle(handle.clone())).await;
    assert_eq!(code_, Code::PermissionDenied, "{msg}");

    // The genuine ticket still works for its owner.
    let batches = fetch(&mut alice, &info).await.expect("owner");
    assert_eq!(i64_column(&batches, 0), vec![0, 1, 2]);

    // A replica sharing the secret serves the same ticket; one with another secret refuses it.
    let replica = start(fixture::builder().auth(credentials()).ticket_secret(SECRET)).await;
    let mut on_replica = client(&replica).await;
    on_replica.set_token(alice.token().cloned().expect("token"));
    let batches = fetch(&mut on_replica, &info).await.expect("replica");
    assert_eq!(i64_column(&batches, 0), vec![0, 1, 2]);
    let stranger = start(
        fixture::builder()
            .auth(credentials())
            .ticket_secret(b"another-secret-of-32-bytes......".to_vec()),
    )
    .await;
    let mut on_stranger = client(&stranger).await;
    on_stranger
        .handshake("alice", "alice-pw")
        .await
        .expect("alice");
    let (code_, msg) = do_get_code(&mut on_stranger, ticket_with_handle(handle)).await;
    assert_eq!(code_, Code::Unauthenticated, "{msg}");

    // Expired.
    let expiring = start(fixture::builder().ticket_ttl(Duration::ZERO)).await;
    let mut c = client(&expiring).await;
    let info = c.execute("SELECT 1".into(), None).await.expect("info");
    let err = fetch(&mut c, &info).await.expect_err("expired");
    // Not an authentication failure: the client re-plans (a new GetFlightInfo) and retries.
    assert_eq!(code(&err), Code::FailedPrecondition, "{err}");
    assert!(fixture::message(&err).contains("expired"), "{err}");
    assert!(fixture::message(&err).contains("GetFlightInfo"), "{err}");
    let info = c.execute("SELECT 1".into(), None).await.expect("re-plan");
    assert_eq!(info.endpoint.len(), 1);
}

#[tokio::test]
async fn short_ticket_secrets_are_rejected() {
    let err = fixture::builder()
        .ticket_secret(b"short".to_vec())
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect_err("too short");
    assert!(err.to_string().contains("ticket_secret"), "{err}");
}
