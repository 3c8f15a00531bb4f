//! `dbfed serve --memory-limit`: a query whose hash table outgrows the server's memory pool
//! fails with RESOURCE_EXHAUSTED naming the limit, a sort spills to disk instead of failing, and
//! the server keeps serving.

use std::io::Write;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;

use crate::support::{Listening, dbfed, flight_channel, flight_query, spawn_listening};

/// Rows of the generated table: its hash table is several times 2 MiB.
const ROWS: i64 = 200_000;

/// Writes `big.csv` (`k` = 0..ROWS, `v` = `"value-<k>"`) into `dir`.
fn write_big_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("big.csv");
    let file = std::fs::File::create(&path).expect("csv created");
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "k,v").expect("header");
    for k in 0..ROWS {
        writeln!(out, "{k},value-{k}").expect("row");
    }
    out.flush().expect("flushed");
    path
}

fn serve(home: &std::path::Path, args: &[&str]) -> Listening {
    spawn_listening(
        dbfed(home)
            .args(["serve", "--emulator", "--listen", "127.0.0.1:0"])
            .args(args),
    )
}

/// Every value of column `index`, as Int64.
fn int64s(batches: &[RecordBatch], index: usize) -> Vec<i64> {
    let mut values = Vec::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column(index), &DataType::Int64).expect("int64");
        let column = column.as_primitive::<Int64Type>();
        assert_eq!(column.null_count(), 0);
        values.extend(column.values().iter().copied());
    }
    values
}

#[test]
fn a_query_over_the_memory_limit_is_refused_and_the_server_keeps_serving() {
    let home = tempfile::tempdir().expect("temp home");
    let csv = write_big_csv(home.path());
    let table = format!("big={}", csv.display());
    let server = serve(home.path(), &["--memory-limit", "2MiB", "--table", &table]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = FlightSqlServiceClient::new(flight_channel(&server.url).await);
        let guard = Duration::from_secs(240);

        // The build side of this hash join holds all 200 000 rows: it cannot spill.
        let refused = tokio::time::timeout(
            guard,
            flight_query(
                &mut client,
                "SELECT count(*) FROM big a JOIN big b ON a.k = b.k",
            ),
        )
        .await
        .expect("hang guard")
        .expect_err("the join does not fit in 2 MiB");
        let FlightError::Tonic(status) = &refused else {
            panic!("expected a gRPC status, got {refused:?}");
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
        assert!(
            status.message().contains("memory_limit of 2 MiB"),
            "the limit is named: {status}"
        );
        println!("refused: {}", status.message());

        // The server still answers, over the same table.
        let small = tokio::time::timeout(
            guard,
            flight_query(&mut client, "SELECT count(*), sum(k) FROM big"),
        )
        .await
        .expect("hang guard")
        .expect("a small query after the refusal");
        assert_eq!(int64s(&small, 0), vec![ROWS]);
        assert_eq!(int64s(&small, 1), vec![ROWS * (ROWS - 1) / 2]);

        // A sort of the whole table spills to disk rather than failing: every row, in order.
        let sorted = tokio::time::timeout(
            guard,
            flight_query(&mut client, "SELECT k FROM big ORDER BY k DESC"),
        )
        .await
        .expect("hang guard")
        .expect("the sort spills");
        let keys = int64s(&sorted, 0);
        let expected: Vec<i64> = (0..ROWS).rev().collect();
        assert!(
            keys == expected,
            "{} rows, not 0..{ROWS} descending",
            keys.len()
        );
        // ... and it did spill: the sort's metrics say so.
        let analyzed = tokio::time::timeout(
            guard,
            flight_query(
                &mut client,
                "EXPLAIN ANALYZE SELECT k FROM big ORDER BY k DESC",
            ),
        )
        .await
        .expect("hang guard")
        .expect("explain analyze");
        let mut plan = String::new();
        for batch in &analyzed {
            let column = batch.column(batch.num_columns() - 1).as_string::<i32>();
            for i in 0..column.len() {
                plan.push_str(column.value(i));
                plan.push('\n');
            }
        }
        println!("{plan}");
        let spills: u64 = plan
            .lines()
            .filter(|line| line.contains("SortExec"))
            .filter_map(|line| line.split("spill_count=").nth(1))
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum();
        assert!(spills > 0, "the sort did not spill:\n{plan}");
    });
}
