//! Identity pass-through against the emulator with per-token grants: each caller's bearer
//! token is its Databricks token, and Unity Catalog grants decide what it sees.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use dbfed_databricks::RetryPolicy;
use dbfed_databricks::config::ClientConfig;
use dbfed_emulator::{BackgroundEmulator, Emulator, EmulatorBuilder, token_identity};
use dbfed_flight::{Auth, DatabricksSessionTemplate, FlightSqlServer, PassThroughSessions};
use tonic::Code;

use crate::fixture::{client, code, fetch, i64_column, query, start};

const TOKEN_A: &str = "dapi-user-a-0000000000000000";
const TOKEN_B: &str = "dapi-user-b-0000000000000000";

pub use dbfed_tests::Warehouse;

/// Starts `builder` on a free loopback port.
pub fn warehouse(builder: EmulatorBuilder) -> Warehouse {
    Warehouse::spawn(builder)
}

/// A template for `emulator` with fast retries and small executors.
pub fn template(emulator: &BackgroundEmulator) -> DatabricksSessionTemplate {
    DatabricksSessionTemplate::new(
        ClientConfig::builder()
            .host(emulator.url())
            .warehouse_id("fl0123456789abcd"),
    )
    .client(|b| {
        b.retry_policy(
            RetryPolicy::default()
                .base_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(100))
                .max_elapsed(Duration::from_secs(10)),
        )
    })
    .executor(|b| {
        b.threads(2)
            .pool_size(2)
            .queue_timeout(Duration::from_secs(60))
    })
}

fn write_private_table(dir: &std::path::Path) {
    let path = dir.join("private").join("sales");
    std::fs::create_dir_all(&path).expect("mkdir");
    let batch =
        RecordBatch::try_from_iter([("amount", Arc::new(Int64Array::from(vec![5, 7, 30])) as _)])
            .expect("batch");
    let file = std::fs::File::create(path.join("orders.parquet")).expect("create");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_sees_only_its_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_private_table(dir.path());
    let emulator = warehouse(
        Emulator::builder()
            .tpch_scale(0.01)
            .data_dir(dir.path())
            .token(TOKEN_A)
            .token(TOKEN_B)
            .grant(TOKEN_A, ["samples"])
            .grant(TOKEN_B, ["private"]),
    );
    let sessions = Arc::new(
        PassThroughSessions::databricks(template(&emulator))
            .max_identities(4)
            .build(),
    );
    let server =
        start(FlightSqlServer::builder(Arc::clone(&sessions) as _).auth(Auth::PassThrough)).await;

    let mut a = client(&server).await;
    a.set_token(TOKEN_A.into());
    let mut b = client(&server).await;
    b.set_token(TOKEN_B.into());

    // A reads samples; B reads private.
    let batches = query(&mut a, "SELECT count(*) FROM samples.tpch.nation")
        .await
        .expect("a: nation");
    assert_eq!(i64_column(&batches, 0), vec![25]);
    let batches = query(&mut b, "SELECT sum(amount) FROM private.sales.orders")
        .await
        .expect("b: orders");
    assert_eq!(i64_column(&batches, 0), vec![42]);

    // Neither sees the other's catalog.
    let err = query(&mut a, "SELECT * FROM private.sales.orders")
        .await
        .expect_err("a: private");
    assert!(
        matches!(code(&err), Code::NotFound | Code::PermissionDenied),
        "{err}"
    );
    let err = query(&mut b, "SELECT * FROM samples.tpch.nation")
        .await
        .expect_err("b: samples");
    assert!(
        matches!(code(&err), Code::NotFound | Code::PermissionDenied),
        "{err}"
    );

    let catalogs = |batches: Vec<RecordBatch>| {
        arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string()
    };
    let info = a.get_catalogs().await.expect("catalogs");
    let seen = catalogs(fetch(&mut a, &info).await.expect("fetch"));
    assert!(
        seen.contains("samples") && !seen.contains("private"),
        "{seen}"
    );
    let info = b.get_catalogs().await.expect("catalogs");
    let seen = catalogs(fetch(&mut b, &info).await.expect("fetch"));
    assert!(
        seen.contains("private") && !seen.contains("samples"),
        "{seen}"
    );
    assert_eq!(sessions.cached_identities(), 2);

    // A's ticket does not serve B.
    let info = a
        .execute("SELECT count(*) FROM samples.tpch.region".into(), None)
        .await
        .expect("info");
    let err = fetch(&mut b, &info).await.expect_err("b with a's ticket");
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    let batches = fetch(&mut a, &info).await.expect("a with its ticket");
    assert_eq!(i64_column(&batches, 0), vec![5]);

    // What the warehouse received ran under each caller's own identity.
    let statements = emulator.statements();
    let (id_a, id_b) = (token_identity(TOKEN_A), token_identity(TOKEN_B));
    let ran = |table: &str, identity: &str| {
        statements
            .iter()
            .any(|s| s.sql.contains(table) && s.identity == identity)
    };
    assert!(ran("nation", &id_a), "no nation statement as A");
    assert!(ran("orders", &id_b), "no orders statement as B");
    for s in statements
        .iter()
        .filter(|s| s.sql.contains("`nation`") || s.sql.contains(" nation"))
    {
        assert_ne!(s.identity, id_b, "B's identity ran {}", s.sql);
    }

    // An unknown token is refused, and no bearer at all is unauthenticated.
    let mut stranger = client(&server).await;
    stranger.set_token("dapi-not-configured".into());
    let err = query(&mut stranger, "SELECT 1")
        .await
        .expect_err("stranger");
    assert!(
        matches!(code(&err), Code::Unauthenticated | Code::PermissionDenied),
        "{err}"
    );
    let mut nobody = client(&server).await;
    let err = query(&mut nobody, "SELECT 1").await.expect_err("nobody");
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
}
