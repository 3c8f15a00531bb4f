//! Hostile input through Flight: garbage, tampered and truncated tickets and prepared statement
//! handles are refused with a typed gRPC status (never a crash, never `INTERNAL`), and SQL
//! injection through identifiers (table and column names with backticks, quotes and semicolons)
//! and through prepared statement parameters neither changes the query nor returns wrong rows.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow_flight::Ticket;
use arrow_flight::sql::{
    Any, CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery,
};
use bytes::Bytes;
use datafusion::parquet::arrow::ArrowWriter;
use dbfed_emulator::Emulator;
use futures::StreamExt;
use prost::Message;
use tonic::Code;

use crate::disconnect::{assert_released, federated};
use crate::fixture::{self, client, code, fetch, i64_column, query, rows, start};

/// The codes a refused ticket may carry: never `INTERNAL`, `UNKNOWN` or `OK`.
fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unimplemented
    )
}

/// A tiny deterministic generator (xorshift): reproducible hostile bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

async fn do_get_code(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    ticket: Vec<u8>,
) -> Option<Code> {
    match c.do_get(Ticket::new(ticket)).await {
        Err(e) => Some(code(&e)),
        Ok(mut stream) => match stream.next().await {
            Some(Err(e)) => Some(code(&e)),
            // A stream that answers: only acceptable for the untouched ticket.
            _ => None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_truncated_and_random_tickets_are_refused() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    let info = c
        .execute("SELECT id FROM numbers WHERE id < 5".into(), None)
        .await
        .expect("info");
    let valid = info.endpoint[0]
        .ticket
        .clone()
        .expect("ticket")
        .ticket
        .to_vec();
    let any = Any::decode(valid.as_slice()).expect("an Any");
    let statement = any
        .unpack::<TicketStatementQuery>()
        .expect("decodes")
        .expect("a statement ticket");
    let handle = statement.statement_handle.to_vec();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tried = 0;
    // Every single-bit flip of the signed handle, re-wrapped in a well-formed Flight SQL ticket.
    for i in 0..handle.len() * 8 {
        let mut bad = handle.clone();
        bad[i / 8] ^= 1 << (i % 8);
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(bad),
        }
        .as_any()
        .encode_to_vec();
        let got = do_get_code(&mut c, ticket).await;
        assert!(got.is_some_and(refused), "bit {i} flipped: {got:?}");
        tried += 1;
    }
    // Flips anywhere in the outer ticket, truncations, random bytes, random `Any` payloads.
    for round in 0..300 {
        let ticket = match round % 4 {
            0 => {
                let mut bad = valid.clone();
                let at = rng.below(bad.len());
                bad[at] ^= 1 << rng.below(8);
                bad
            }
            1 => valid[..rng.below(valid.len())].to_vec(),
            2 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            _ => TicketStatementQuery {
                statement_handle: Bytes::from(
                    (0..rng.below(200))
                        .map(|_| rng.next() as u8)
                        .collect::<Vec<u8>>(),
                ),
            }
            .as_any()
            .encode_to_vec(),
        };
        if ticket == valid {
            continue;
        }
        let got = do_get_code(&mut c, ticket.clone()).await;
        // A flip inside the type URL's unused bytes could still decode to the same ticket; a
        // stream is only acceptable when the handle inside is byte-for-byte the valid one.
        if got.is_none() {
            let inner = Any::decode(ticket.as_slice())
                .ok()
                .and_then(|a| a.unpack::<TicketStatementQuery>().ok().flatten());
            assert_eq!(
                inner.map(|t| t.statement_handle.to_vec()),
                Some(handle.clone()),
                "round {round}: an altered ticket was served"
            );
        } else {
            assert!(got.is_some_and(refused), "round {round}: {got:?}");
        }
        tried += 1;
    }
    // Prepared statement handles: a statement ticket is not a prepared handle, random is not.
    for bad in [handle.clone(), b"garbage".to_vec(), Vec::new()] {
        let ticket = CommandPreparedStatementQuery {
            prepared_statement_handle: Bytes::from(bad),
        }
        .as_any()
        .encode_to_vec();
        let got = do_get_code(&mut c, ticket).await;
        assert!(got.is_some_and(refused), "prepared handle: {got:?}");
        tried += 1;
    }
    // The server is unharmed and the valid ticket still works.
    let batches = fetch(&mut c, &info).await.expect("the valid ticket");
    assert_eq!(i64_column(&batches, 0), vec![0, 1, 2, 3, 4]);
    eprintln!("hostile: {tried} forged tickets and handles refused over gRPC");
}

fn write_parquet(path: &std::path::Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_and_literals_cannot_inject_sql() {
    // A table whose name and columns carry backticks, quotes and semicolons.
    const TABLE: &str = "we`ird'; DROP TABLE x; --";
    const KEY: &str = "k`; SELECT 1 --";
    const NAME: &str = "n'a\"m;e";
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = RecordBatch::try_from_iter([
        (KEY, Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        (
            NAME,
            Arc::new(StringArray::from(vec!["a'b", "x` OR 1=1", "plain"])) as _,
        ),
    ])
    .expect("batch");
    write_parquet(
        &dir.path()
            .join("hostile")
            .join("s")
            .join(format!("{TABLE}.parquet")),
        &batch,
    );
    let fed = federated(Emulator::builder().data_dir(dir.path()), 2, |b| b).await;
    let mut c = client(&fed.server).await;

    // Identifiers: quoted for DataFusion with double quotes, sent to Databricks with backticks.
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let sql = format!(
        "SELECT {}, {} FROM hostile.s.{} ORDER BY 1",
        quoted(KEY),
        quoted(NAME),
        quoted(TABLE)
    );
    let batches = query(&mut c, &sql).await.expect("hostile identifiers");
    assert_eq!(i64_column(&batches, 0), vec![1, 2, 3]);
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let col = b
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8");
            col.iter()
                .map(|v| v.unwrap_or("NULL").to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, ["a'b", "x` OR 1=1", "plain"]);
    // The warehouse received each identifier as one backtick-quoted name.
    let sent: Vec<String> = fed
        .emulator
        .statements()
        .into_iter()
        .map(|s| s.sql)
        .filter(|s| s.contains("ird"))
        .collect();
    assert!(!sent.is_empty());
    for s in &sent {
        assert!(s.contains("`we``ird'; DROP TABLE x; --`"), "{s}");
    }

    // Literals through a filter pushed to the warehouse, and through prepared parameters.
    for (literal, expected) in [
        ("a'b", 1i64),
        ("x` OR 1=1", 1),
        ("' OR '1'='1", 0),
        ("\\'; --", 0),
    ] {
        let sql = format!(
            "SELECT count(*) FROM hostile.s.{} WHERE {} = '{}'",
            quoted(TABLE),
            quoted(NAME),
            literal.replace('\'', "''")
        );
        let batches = query(&mut c, &sql).await.expect("literal filter");
        assert_eq!(
            i64_column(&batches, 0),
            vec![expected],
            "literal {literal:?}"
        );

        let mut stmt = c
            .prepare(
                format!(
                    "SELECT {} FROM hostile.s.{} WHERE {} = ?",
                    quoted(KEY),
                    quoted(TABLE),
                    quoted(NAME)
                ),
                None,
            )
            .await
            .expect("prepare");
        stmt.set_parameters(
            RecordBatch::try_from_iter([("p", Arc::new(StringArray::from(vec![literal])) as _)])
                .expect("params"),
        )
        .expect("set");
        let info = stmt.execute().await.expect("execute");
        let batches = fetch(&mut c, &info).await.expect("fetch");
        assert_eq!(rows(&batches) as i64, expected, "parameter {literal:?}");
        stmt.close().await.expect("close");
    }
    // The table is still there: nothing was dropped or rewritten.
    let batches = query(
        &mut c,
        &format!("SELECT count(*) FROM hostile.s.{}", quoted(TABLE)),
    )
    .await
    .expect("still there");
    assert_eq!(i64_column(&batches, 0), vec![3]);
    assert_released("hostile identifiers", &fed, None).await;
    let sent = fed
        .emulator
        .statements()
        .iter()
        .filter(|s| s.sql.contains("ird"))
        .count();
    eprintln!(
        "hostile: {sent} statements with hostile identifiers and literals sent to the warehouse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_text_is_a_typed_error() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    for sql in [
        "SELECT 1; DROP TABLE numbers",
        "",
        ";;;",
        "SELECT * FROM numbers WHERE name = 'unterminated",
        "SELECT \"unterminated FROM numbers",
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE numbers",
    ] {
        let err = query(&mut c, sql).await.expect_err(sql);
        assert!(
            matches!(
                code(&err),
                Code::InvalidArgument | Code::PermissionDenied | Code::Unimplemented
            ),
            "{sql:?}: {err}"
        );
    }
    // Deeply nested expressions are refused or answered, not a stack overflow.
    let nested = format!("SELECT {}1{}", "(".repeat(2_000), ")".repeat(2_000));
    if let Err(err) = query(&mut c, &nested).await {
        assert_ne!(code(&err), Code::Unknown, "{err}");
    }
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("unharmed");
    assert_eq!(i64_column(&batches, 0), vec![10_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_parameter_markers_are_refused_before_planning() {
    let server = start(fixture::builder()).await;
    let mut c = client(&server).await;
    for (sql, marker) in [
        ("SELECT $3000000000", "$3000000000"),
        ("SELECT id FROM numbers WHERE id = $0", "$0"),
        ("SELECT id FROM numbers WHERE id = $99999", "$99999"),
    ] {
        let err = c.prepare(sql.to_owned(), None).await.expect_err(sql);
        assert_eq!(code(&err), Code::InvalidArgument, "{sql}: {err}");
        let text = fixture::message(&err);
        assert!(text.contains(marker), "{sql}: {text}");
    }
    let too_many = format!("SELECT {}", vec!["?"; 65_536].join(","));
    let err = c.prepare(too_many, None).await.expect_err("65 536 markers");
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    // The server is unharmed and a marker in range still prepares.
    let prepared = c
        .prepare("SELECT id FROM numbers WHERE id = $1".into(), None)
        .await
        .expect("in range");
    assert_eq!(
        prepared
            .parameter_schema()
            .expect("parameter schema")
            .fields()
            .len(),
        1
    );
    prepared.close().await.expect("close");
}
