//! Criterion micro-benchmarks of turning a DataFusion plan into the statement sent to Databricks,
//! the per-query CPU cost of pushdown.
//!
//! TPC-H queries (`benchmarks/queries/tpch`) are planned and optimized by a
//! [`federated_session_context`] over empty tables with the TPC-H schema (the types the
//! emulator's `samples.tpch` reports), then:
//!
//! - `plan_to_sql/qNN`: [`plan_to_sql`], the Databricks-dialect unparsing of the whole plan
//!   (what federation sends when every table lives in one warehouse);
//! - `parameterize/qNN`: [`parameterize`] of that SQL, which moves its literals into statement
//!   parameters before it is sent.
//!
//! Run with `cargo bench -p dbfed-benchmarks --bench unparse` (all micro-benchmarks:
//! `cargo bench -p dbfed-benchmarks`; a short run: append `-- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use datafusion::catalog::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_datafusion::dialect::plan_to_sql;
use dbfed_datafusion::federated_session_context;
use dbfed_datafusion::params::parameterize;
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// The queries measured: a single-table aggregate (Q1), a 3-way join with a top-N (Q3), a 6-way
/// join (Q5) and a 4-way join with a wide projection (Q10).
const QUERIES: [usize; 4] = [1, 3, 5, 10];

/// A TPC-H schema with the emulator's types: strings `Utf8`, money `DECIMAL(18, s)`.
fn warehouse_schema(source: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        source
            .fields()
            .iter()
            .map(|f| {
                let data_type = match f.data_type() {
                    DataType::Utf8View => DataType::Utf8,
                    DataType::Decimal128(_, scale) => DataType::Decimal128(18, *scale),
                    other => other.clone(),
                };
                Field::new(f.name(), data_type, f.is_nullable())
            })
            .collect::<Vec<_>>(),
    ))
}

/// A federated session with the eight TPC-H tables registered, empty.
fn tpch_context() -> SessionContext {
    let ctx = federated_session_context(SessionConfig::new().with_target_partitions(2));
    let tables = [
        ("customer", CustomerArrow::schema_ref()),
        ("lineitem", LineItemArrow::schema_ref()),
        ("nation", NationArrow::schema_ref()),
        ("orders", OrderArrow::schema_ref()),
        ("part", PartArrow::schema_ref()),
        ("partsupp", PartSuppArrow::schema_ref()),
        ("region", RegionArrow::schema_ref()),
        ("supplier", SupplierArrow::schema_ref()),
    ];
    for (name, schema) in tables {
        let table =
            MemTable::try_new(warehouse_schema(&schema), vec![vec![]]).expect("empty table");
        ctx.register_table(name, Arc::new(table))
            .expect("table registers");
    }
    ctx
}

/// The text of TPC-H query `n`.
fn query(n: usize) -> String {
    let path = format!("{}/queries/tpch/q{n:02}.sql", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The optimized logical plan of each query in [`QUERIES`].
fn plans() -> Vec<(usize, LogicalPlan)> {
    let ctx = tpch_context();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("planning runtime");
    QUERIES
        .iter()
        .map(|&n| {
            let plan = runtime
                .block_on(async { ctx.sql(&query(n)).await?.into_optimized_plan() })
                .unwrap_or_else(|e| panic!("planning q{n}: {e}"));
            (n, plan)
        })
        .collect()
}

fn unparse(c: &mut Criterion) {
    let plans = plans();
    let mut group = c.benchmark_group("unparse");
    for (n, plan) in &plans {
        let sql = plan_to_sql(plan).unwrap_or_else(|e| panic!("unparsing q{n}: {e}"));
        // The statement really is the query: every base table appears in it.
        for table in plan_tables(plan) {
            assert!(
                sql.contains(&format!("`{table}`")),
                "q{n} reads {table}: {sql}"
            );
        }
        let statement = parameterize(&sql).unwrap_or_else(|e| panic!("parameterizing q{n}: {e}"));
        assert!(
            !statement.params.is_empty(),
            "q{n} has literals to move into parameters: {sql}"
        );
        let id = format!("q{n:02}");
        group.bench_with_input(BenchmarkId::new("plan_to_sql", &id), plan, |b, plan| {
            b.iter(|| plan_to_sql(black_box(plan)).expect("unparses"))
        });
        group.bench_with_input(BenchmarkId::new("parameterize", &id), &sql, |b, sql| {
            b.iter(|| parameterize(black_box(sql)).expect("parameterizes"))
        });
    }
    group.finish();
}

/// The names of the tables `plan` scans.
fn plan_tables(plan: &LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

criterion_group!(benches, unparse);
criterion_main!(benches);
