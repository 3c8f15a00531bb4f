//! Many concurrent streams; a slow client does not stall the others; disconnects release.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::error::FlightError;
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

use crate::fixture::{self, BATCH_ROWS, BATCHES, client, code, rows, start};

/// Resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes; `None` off
/// Linux.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// How much the process may grow while 200 streams are open: client and server share this
/// process (and other tests run beside it), so the bound is generous; an unbounded server
/// (e.g. buffering every result in full) would still cross it.
const RSS_GROWTH_BOUND: u64 = 512 << 20;

/// 200 streams open at once, each with more rows than HTTP/2 flow control lets through before
/// the client reads: every server-side stream is live at the same time, and memory stays
/// bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams() {
    const STREAMS: usize = 200;
    let server = start(fixture::builder()).await;
    // A few connections, many streams each.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&server).await);
    }
    let before = rss_bytes();
    // Every task opens its stream and reads one batch, then waits until all have.
    let all_open = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let all_open = Arc::clone(&all_open);
            tokio::spawn(async move {
                let opened = async {
                    let info = c
                        .execute(
                            format!("SELECT id, name FROM numbers WHERE id % 200 <> {i}"),
                            None,
                        )
                        .await?;
                    let ticket = info.endpoint[0]
                        .ticket
                        .clone()
                        .ok_or_else(|| FlightError::ProtocolError("no ticket".into()))?;
                    let mut stream = c.do_get(ticket).await?;
                    let first = stream
                        .next()
                        .await
                        .ok_or_else(|| FlightError::ProtocolError("no batch".into()))??;
                    Ok::<_, FlightError>((stream, first))
                }
                .await;
                // Reached even on error, so that the others are not kept waiting.
                all_open.wait().await;
                let (stream, first) = opened?;
                let mut batches = vec![first];
                batches.extend(stream.try_collect::<Vec<_>>().await?);
                Ok::<_, FlightError>((i, crate::fixture::i64_column(&batches, 0)))
            })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(300), async {
        all_open.wait().await;
        let during = rss_bytes();
        let results = futures::future::join_all(tasks).await;
        (during, results)
    })
    .await
    .expect("hang guard");
    let (during, results) = results;
    for result in results {
        let (i, mut ids) = result.expect("task").expect("query");
        ids.sort_unstable();
        let expected: Vec<i64> = (0..BATCH_ROWS * BATCHES)
            .filter(|id| id % 200 != i as i64)
            .collect();
        assert_eq!(ids, expected, "stream {i}");
    }
    match (before, during) {
        (Some(before), Some(during)) => {
            let growth = during.saturating_sub(before);
            println!(
                "RSS with {STREAMS} open streams: {} MiB before, {} MiB during (+{} MiB)",
                before >> 20,
                during >> 20,
                growth >> 20
            );
            assert!(
                growth < RSS_GROWTH_BOUND,
                "RSS grew by {} MiB with {STREAMS} open streams (bound {} MiB)",
                growth >> 20,
                RSS_GROWTH_BOUND >> 20
            );
        }
        _ => println!("RSS not measured: /proc/self/status is not readable here"),
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
