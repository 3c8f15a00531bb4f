//! The emulator restarted under load: three Flight clients read a multi-chunk federated result
//! (`samples.tpch.orders`, 15 000 rows × 9 columns in 30 chunks, 30 ms per chunk) while the
//! warehouse goes away and comes back on the same address with no memory of the statements.
//! Every open read ends with a gRPC error after fewer rows — never a short result presented as
//! complete — and the next query after the restart returns exactly the fault-free result.
//!
//! Prints a `flight restart:` line with its figures.

use std::time::Duration;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use dbfed_emulator::Emulator;
use dbfed_flight::Auth;
use dbfed_tests::Fingerprint;
use futures::StreamExt;

use crate::fixture::{client, query};
use crate::soak::{Bounds, Stack, assert_idle, stack};

const SQL: &str = "SELECT * FROM samples.tpch.orders";
const CLIENTS: usize = 3;

fn emulator() -> dbfed_emulator::EmulatorBuilder {
    Emulator::builder().chunk_latency(Duration::from_millis(30))
}

/// Stops the stack's emulator off the async workers (its shutdown joins a thread).
async fn stop(mut stack: Stack) -> Stack {
    tokio::task::spawn_blocking(move || {
        stack.stop_emulator();
        stack
    })
    .await
    .expect("stopping the emulator does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_restarted_mid_result_is_an_error_then_queries_succeed() {
    let mut stack = stack(
        emulator(),
        "127.0.0.1:0",
        Bounds {
            threads: CLIENTS,
            queue_depth: 16,
        },
        Auth::None,
        // Retries give up within ~2 s, so the reads fail while the warehouse is away or has
        // forgotten the statements (their links answer 404).
        |b| b.download_timeout(Duration::from_secs(2)),
    )
    .await;
    let addr = stack.emulator().local_addr().to_string();
    let mut c = client(&stack.server).await;
    let baseline = Fingerprint::of(&query(&mut c, SQL).await.expect("baseline"));
    assert_eq!(baseline.rows, 15_000);

    // Three reads open, two batches each read.
    let mut streams = Vec::new();
    let mut read = Vec::new();
    for _ in 0..CLIENTS {
        let mut c: FlightSqlServiceClient<_> = client(&stack.server).await;
        let info = c.execute(SQL.to_owned(), None).await.expect("info");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut stream = c.do_get(ticket).await.expect("do get");
        let mut batches = Vec::new();
        for _ in 0..2 {
            let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("hang guard")
                .expect("a batch")
                .expect("a batch");
            batches.push(batch);
        }
        streams.push((c, stream));
        read.push(batches);
    }

    // The warehouse goes away and comes back on the same address, empty-handed.
    stack = stop(stack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            emulator()
                .tpch_scale(0.01)
                .chunk_rows(500)
                .token(crate::soak::TOKEN)
                .spawn(&addr)
        })
        .await
        .expect("spawn")
    };
    match restarted {
        Ok(e) => stack.put_emulator(e),
        Err(e) => panic!("the emulator restarts on {addr}: {e}"),
    }

    // Every open read ends with an error after fewer rows (bounded by the 30 chunks).
    let mut outcomes: Vec<Result<Fingerprint, (FlightError, u64)>> = Vec::new();
    for ((_c, mut stream), mut batches) in streams.into_iter().zip(read) {
        let mut end = None;
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("hang guard: a read across the restart still ends")
            {
                Some(Ok(b)) => batches.push(b),
                Some(Err(e)) => {
                    end = Some(e);
                    break;
                }
                None => break,
            }
        }
        let fp = Fingerprint::of(&batches);
        outcomes.push(match end {
            Some(e) => Err((e, fp.rows)),
            None => Ok(fp),
        });
    }
    let mut failed = 0;
    for outcome in &outcomes {
        match outcome {
            // A read the restart did not touch (everything already downloaded) is exact.
            Ok(fp) => assert_eq!(fp, &baseline, "a clean end with other data"),
            Err((e, rows)) => {
                assert!(*rows < baseline.rows, "error after every row: {e}");
                assert!(
                    matches!(e, FlightError::Tonic(_)),
                    "not a gRPC status: {e:?}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        failed >= 1,
        "the restart cut at least one read: {outcomes:?}"
    );

    // The next queries after the restart succeed, exactly: sessions pooled before the restart no
    // longer exist on the new warehouse, and the driver replaces them before the statement starts.
    let mut c = client(&stack.server).await;
    for _ in 0..(CLIENTS + 2) {
        let after = query(&mut c, SQL)
            .await
            .expect("a query after the restart succeeds (stale sessions are replaced)");
        assert_eq!(Fingerprint::of(&after), baseline);
    }
    let exact = CLIENTS + 2;
    assert_idle("after the restart", &stack).await;
    eprintln!(
        "flight restart: {CLIENTS} reads open across the restart: {failed} gRPC errors ({}), {} \
         exact; then {exact} queries exact ({} rows each)",
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .map(|(e, rows)| format!(
                "{} after {rows} rows",
                match e {
                    FlightError::Tonic(s) => format!("{:?}", s.code()),
                    other => other.to_string(),
                }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        outcomes.len() - failed,
        baseline.rows
    );
}
