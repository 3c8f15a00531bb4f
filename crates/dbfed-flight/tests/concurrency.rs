//! Many concurrent streams; a slow client does not stall the others; disconnects release.

use std::time::Duration;

use futures::StreamExt;
use tonic::Code;

use crate::fixture::{self, BATCH_ROWS, BATCHES, client, code, fetch, rows, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams() {
    let server = start(fixture::builder()).await;
    // A few connections, many streams each.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&server).await);
    }
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let info = c
                    .execute(format!("SELECT id FROM numbers WHERE id % 200 = {i}"), None)
                    .await?;
                let batches = fetch(&mut c, &info).await?;
                Ok::<_, arrow_flight::error::FlightError>((
                    i,
                    crate::fixture::i64_column(&batches, 0),
                ))
            })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("hang guard");
    for result in results {
        let (i, ids) = result.expect("task").expect("query");
        assert_eq!(ids.len(), 50, "stream {i}");
        assert!(ids.iter().all(|id| id % 200 == i as i64), "stream {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_stall_others() {
    let server = start(fixture::builder()).await;
    // The slow client opens a big stream on its own connection and reads one batch only.
    let mut slow = client(&server).await;
    let info = slow
        .execute(
            "SELECT a.id, a.name FROM numbers a CROSS JOIN (SELECT id FROM numbers LIMIT 20) b"
                .into(),
            None,
        )
        .await
        .expect("info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = slow.do_get(ticket).await.expect("do get");
    let first = stream.next().await.expect("a batch").expect("ok");
    assert!(first.num_rows() > 0);

    // Others complete while the slow stream sits unread.
    let mut fast = client(&server).await;
    for _ in 0..5 {
        let batches = tokio::time::timeout(
            Duration::from_secs(120),
            fixture::query(&mut fast, "SELECT * FROM numbers"),
        )
        .await
        .expect("hang guard")
        .expect("query");
        assert_eq!(rows(&batches), (BATCH_ROWS * BATCHES) as usize);
    }
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_bound_refuses_with_resource_exhausted_and_releases_on_drop() {
    let server = start(fixture::builder().max_streams(1)).await;
    let mut holder = client(&server).await;
    let info = holder
        .execute(
            "SELECT a.id FROM numbers a CROSS JOIN (SELECT id FROM numbers LIMIT 50) b".into(),
            None,
        )
        .await
        .expect("info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = holder.do_get(ticket).await.expect("do get");
    stream.next().await.expect("batch").expect("ok");

    let mut other = client(&server).await;
    let err = fixture::query(&mut other, "SELECT 1")
        .await
        .expect_err("over the bound");
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");

    // Dropping the stream (a client disconnect) frees the slot.
    drop(stream);
    drop(holder);
    let mut ok = false;
    for _ in 0..100 {
        if fixture::query(&mut other, "SELECT 1").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the slot was not released after the client dropped its stream"
    );
}
