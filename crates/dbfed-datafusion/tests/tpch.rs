//! The 22 TPC-H queries (benchmarks/queries/tpch) at scale factor 0.01, run every way a user can
//! place the tables, with identical results required:
//!
//! 1. all local (the reference): MemTables generated exactly like the emulator's `samples.tpch`;
//! 2. all remote through federation (tables registered under their plain names);
//! 3. mixed: `customer`, `nation`, `region` local, the rest remote;
//! 4. the local optimized plan unparsed with the Databricks dialect, parameterized and run on
//!    the emulator as one statement (the dialect on whole TPC-H plans).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Decimal128Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::util::display::array_value_to_string;
use datafusion::catalog::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, RetryPolicy};
use dbfed_datafusion::dialect::plan_to_sql;
use dbfed_datafusion::params::parameterize;
use dbfed_datafusion::{DatabricksSource, PushdownMode, federated_session_state};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::support::{TOKEN, Warehouse, data_statements, emulator, executor};

/// The scale factor of the emulator's `samples.tpch` (its default).
const SCALE: f64 = 0.01;

/// The eight TPC-H tables.
const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// Tables kept local in the mixed placement.
const LOCAL_IN_MIXED: [&str; 3] = ["customer", "nation", "region"];

/// Most statements one query may send when every table is remote. Queries that federation
/// pushes whole send one; a few are split (see `all_remote`'s report).
const MAX_STATEMENTS_ALL_REMOTE: usize = 8;

/// The text of query `n` (1..=22).
fn query(n: usize) -> String {
    let path = format!(
        "{}/../../benchmarks/queries/tpch/q{n:02}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One generated table with the emulator's types (money as `DECIMAL(18,2)`).
fn generate(table: &str) -> Arc<MemTable> {
    fn collect(
        schema: SchemaRef,
        batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
    ) -> (SchemaRef, Vec<RecordBatch>) {
        (
            schema,
            batches.collect::<Result<_, _>>().expect("generates"),
        )
    }
    let (schema, batches) = match table {
        "customer" => collect(
            CustomerArrow::schema_ref(),
            CustomerArrow::new(CustomerGenerator::new(SCALE, 1, 1)),
        ),
        "lineitem" => collect(
            LineItemArrow::schema_ref(),
            LineItemArrow::new(LineItemGenerator::new(SCALE, 1, 1)),
        ),
        "nation" => collect(
            NationArrow::schema_ref(),
            NationArrow::new(NationGenerator::new(SCALE, 1, 1)),
        ),
        "orders" => collect(
            OrderArrow::schema_ref(),
            OrderArrow::new(OrderGenerator::new(SCALE, 1, 1)),
        ),
        "part" => collect(
            PartArrow::schema_ref(),
            PartArrow::new(PartGenerator::new(SCALE, 1, 1)),
        ),
        "partsupp" => collect(
            PartSuppArrow::schema_ref(),
            PartSuppArrow::new(PartSuppGenerator::new(SCALE, 1, 1)),
        ),
        "region" => collect(
            RegionArrow::schema_ref(),
            RegionArrow::new(RegionGenerator::new(SCALE, 1, 1)),
        ),
        "supplier" => collect(
            SupplierArrow::schema_ref(),
            SupplierArrow::new(SupplierGenerator::new(SCALE, 1, 1)),
        ),
        other => panic!("unknown table {other}"),
    };
    let schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Decimal128(_, s) => f
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Decimal128(18, *s)),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let batches = batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Decimal128(_, s) => Arc::new(
                        c.as_any()
                            .downcast_ref::<Decimal128Array>()
                            .expect("decimals")
                            .clone()
                            .with_precision_and_scale(18, *s)
                            .expect("fits"),
                    ) as ArrayRef,
                    _ => Arc::clone(c),
                })
                .collect();
            RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch")
        })
        .collect();
    Arc::new(MemTable::try_new(schema, vec![batches]).expect("mem table"))
}

/// A federated session with `local` tables generated here and the others from `warehouse`.
async fn session(warehouse: Option<&Warehouse>, local: &[&str]) -> SessionContext {
    // A memory limit turns a runaway plan into an error instead of exhausting the machine.
    let state = federated_session_state(SessionConfig::new().with_target_partitions(2));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(1 << 30, 1.0)
        .build_arc()
        .expect("runtime env");
    let state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .build();
    let ctx = SessionContext::new_with_state(state);
    let source = warehouse.map(|w| {
        DatabricksSource::builder(executor(w))
            .catalogs(["samples"])
            .pushdown(PushdownMode::Full)
            .build()
            .expect("source builds")
    });
    for table in TABLES {
        if local.contains(&table) {
            ctx.register_table(table, generate(table))
                .expect("local table");
        } else {
            let source = source.as_ref().expect("a warehouse for remote tables");
            let provider = source
                .table_provider("samples", "tpch", table)
                .await
                .expect("remote table");
            ctx.register_table(table, provider).expect("remote table");
        }
    }
    ctx
}

/// Rows as text, columns cast to `types` when given, sorted (so queries without a total
/// ORDER BY compare as multisets).
fn sorted_rows(
    batches: &[RecordBatch],
    types: Option<&[DataType]>,
) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    for batch in batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| match types.and_then(|t| t.get(i)) {
                Some(t) if t != c.data_type() => cast(c, t)
                    .map_err(|e| format!("column {i}: cast {} to {t}: {e}", c.data_type())),
                _ => Ok(Arc::clone(c)),
            })
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        if c.is_null(row) {
                            "NULL".to_owned()
                        } else {
                            array_value_to_string(c, row).expect("formats")
                        }
                    })
                    .collect(),
            );
        }
    }
    out.sort();
    Ok(out)
}

/// Equal rows; floating-point text equal within a relative 1e-9.
fn same_rows(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| {
                    u == v
                        || match (u.parse::<f64>(), v.parse::<f64>()) {
                            (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()),
                            _ => false,
                        }
                })
        })
}

/// The reference results (all local), with the output types.
async fn reference() -> Vec<(Vec<Vec<String>>, Vec<DataType>)> {
    let ctx = session(None, &TABLES).await;
    let mut out = Vec::new();
    for n in 1..=22 {
        let sql = query(n);
        let df = ctx.sql(&sql).await.unwrap_or_else(|e| panic!("q{n}: {e}"));
        let types = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect::<Vec<_>>();
        let batches = df.collect().await.unwrap_or_else(|e| panic!("q{n}: {e}"));
        out.push((sorted_rows(&batches, None).expect("local rows"), types));
    }
    // A sanity check that the reference is not trivially empty.
    let non_empty = out.iter().filter(|(rows, _)| !rows.is_empty()).count();
    assert!(
        non_empty >= 20,
        "only {non_empty} queries return rows at SF {SCALE}"
    );
    out
}

/// Runs the 22 queries in `ctx` and compares them with `expected`; returns per query the
/// statements the warehouse received, and the failures.
async fn run_all(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    expected: &[(Vec<Vec<String>>, Vec<DataType>)],
) -> (Vec<usize>, Vec<String>) {
    let mut statements = Vec::new();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let (want, types) = &expected[n - 1];
        let before = warehouse.statements().len();
        eprintln!("q{n}: running");
        let result = tokio::time::timeout(Duration::from_secs(300), async {
            ctx.sql(&query(n)).await?.collect().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(datafusion::error::DataFusionError::Execution(
                "did not finish within the 300 s hang guard".to_owned(),
            ))
        });
        let sent = data_statements(warehouse, before);
        statements.push(sent.len());
        match result {
            Ok(batches) => {
                let got = match sorted_rows(&batches, Some(types)) {
                    Ok(got) => got,
                    Err(e) => {
                        failures.push(format!("q{n}: {e}"));
                        continue;
                    }
                };
                if !same_rows(want, &got) {
                    failures.push(format!(
                        "q{n}: different rows\n  want {} rows: {:?}\n  got {} rows: {:?}\n  sent: {:?}",
                        want.len(),
                        want.iter().take(3).collect::<Vec<_>>(),
                        got.len(),
                        got.iter().take(3).collect::<Vec<_>>(),
                        sent.iter().map(|s| &s.sql).collect::<Vec<_>>()
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "q{n}: {e}\n  sent: {:?}",
                sent.iter()
                    .map(|s| (&s.sql, &s.error_message))
                    .collect::<Vec<_>>()
            )),
        }
    }
    (statements, failures)
}

/// Runs `test` on a two-worker runtime from a thread with a large stack: planning and
/// unparsing the bigger TPC-H plans recurses deeper than a test thread's 2 MiB in debug builds.
fn on_big_stack<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name("tpch".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(16 << 20)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(test());
        })
        .expect("test thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

#[test]
fn all_remote_matches_all_local() {
    on_big_stack(all_remote);
}

#[test]
fn mixed_placement_matches_all_local() {
    on_big_stack(mixed);
}

#[test]
fn unparsed_plans_run_on_the_emulator() {
    on_big_stack(unparsed);
}

async fn all_remote() {
    let expected = reference().await;
    let warehouse = emulator();
    let ctx = session(Some(&warehouse), &[]).await;
    let (statements, failures) = run_all(&ctx, &warehouse, &expected).await;
    let split: Vec<String> = statements
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 1)
        .map(|(i, n)| format!("q{}: {n} statements", i + 1))
        .collect();
    eprintln!("all remote: statements per query {statements:?}; not pushed as one: {split:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (i, n) in statements.iter().enumerate() {
        assert!(
            (1..=MAX_STATEMENTS_ALL_REMOTE).contains(n),
            "q{} sent {n} statements",
            i + 1
        );
    }
    // The single-table and simple join queries are pushed whole.
    for q in [1, 3, 5, 6, 10, 12, 14, 19] {
        assert_eq!(
            statements[q - 1],
            1,
            "q{q} should be one statement: {statements:?}"
        );
    }
}

async fn mixed() {
    let expected = reference().await;
    let warehouse = emulator();
    let ctx = session(Some(&warehouse), &LOCAL_IN_MIXED).await;
    let (statements, failures) = run_all(&ctx, &warehouse, &expected).await;
    eprintln!("mixed: statements per query {statements:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Queries touching only local tables send nothing; the others send something.
    for (i, n) in statements.iter().enumerate() {
        assert!(*n >= 1, "q{} reads remote tables but sent nothing", i + 1);
    }
}

async fn unparsed() {
    let expected = reference().await;
    let warehouse = emulator();
    let ctx = session(None, &TABLES).await;
    let url = warehouse.url().to_owned();
    let client = tokio::task::spawn_blocking(move || {
        let config = ClientConfig::builder()
            .host(url)
            .warehouse_id("df0123456789abcd")
            .token(TOKEN)
            .build()
            .expect("valid configuration");
        Client::builder(config)
            .retry_policy(RetryPolicy::default().max_elapsed(Duration::from_secs(20)))
            .build()
            .expect("client builds")
    })
    .await
    .expect("client thread");
    let client = Arc::new(client);
    let mut failures = Vec::new();
    for n in 1..=22 {
        let (want, types) = &expected[n - 1];
        let plan = ctx
            .sql(&query(n))
            .await
            .and_then(|df| df.into_optimized_plan())
            .unwrap_or_else(|e| panic!("q{n}: {e}"));
        let unparsed = match plan_to_sql(&plan) {
            Ok(sql) => sql,
            Err(e) => {
                failures.push(format!("q{n}: does not unparse: {e}"));
                continue;
            }
        };
        let statement = parameterize(&unparsed).expect("parameterizes");
        let client = Arc::clone(&client);
        let (sql, params) = (statement.sql.clone(), statement.params.clone());
        let result = tokio::task::spawn_blocking(move || {
            client
                .execute(&sql, &params)
                .map_err(|e| e.to_string())
                .and_then(|s| s.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string()))
        })
        .await
        .expect("query thread");
        match result {
            Ok(batches) => {
                let got = match sorted_rows(&batches, Some(types)) {
                    Ok(got) => got,
                    Err(e) => {
                        failures.push(format!("q{n}: {e}\n  sql: {}", statement.sql));
                        continue;
                    }
                };
                if !same_rows(want, &got) {
                    failures.push(format!(
                        "q{n}: different rows ({} vs {})\n  sql: {}",
                        want.len(),
                        got.len(),
                        statement.sql
                    ));
                }
            }
            Err(e) => failures.push(format!("q{n}: {e}\n  sql: {}", statement.sql)),
        }
    }
    let client = Arc::into_inner(client).expect("the only reference");
    tokio::task::spawn_blocking(move || drop(client))
        .await
        .expect("drop thread");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
