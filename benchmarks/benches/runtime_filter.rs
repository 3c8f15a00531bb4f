//! Criterion micro-benchmarks of runtime join filters: translating the dynamic filter a hash join
//! hands to a Databricks scan into the SQL predicate added to its statement.
//!
//! The filter is the one DataFusion fills once a join's build side is complete: the key's bounds
//! and an IN list of its 30 000 distinct values (the customers of one market segment at TPC-H
//! SF 1), inside a `DynamicFilterPhysicalExpr`:
//!
//! - `in_list/30000`: [`runtime_filter_sql`] with the default limit, an IN list of every key;
//! - `bounds/30000`: the same filter over a limit of 1 000 values, reduced to the key's bounds.
//!
//! Throughput is in keys. Run with `cargo bench -p dbfed-benchmarks --bench runtime_filter` (all
//! micro-benchmarks: `cargo bench -p dbfed-benchmarks`; a short run: append
//! `-- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, DynamicFilterPhysicalExpr, InListExpr, col, lit,
};
use datafusion::physical_plan::PhysicalExpr;
use dbfed_datafusion::runtime_filter::{DEFAULT_MAX_IN_LIST, runtime_filter_sql};

/// Distinct join keys on the build side.
const KEYS: usize = 30_000;

/// The IN list limit of the `bounds` case (below [`KEYS`]).
const SMALL_LIMIT: usize = 1_000;

/// The probe-side scan's schema (`orders`' customer key and a payload column).
fn schema() -> Schema {
    Schema::new(vec![
        Field::new("o_custkey", DataType::Int64, false),
        Field::new("o_comment", DataType::Utf8, true),
    ])
}

/// `o_custkey >= min AND o_custkey <= max AND o_custkey IN (…)` over [`KEYS`] keys spread over
/// SF 1's 150 000 customers, as a completed dynamic filter.
fn filled_filter(schema: &Schema) -> Arc<dyn PhysicalExpr> {
    let key = col("o_custkey", schema).expect("key column");
    let keys: Vec<i64> = (0..KEYS as i64).map(|i| 1 + i * 5).collect();
    let (min, max) = (keys[0], keys[KEYS - 1]);
    let bin = |l: Arc<dyn PhysicalExpr>, op, r: Arc<dyn PhysicalExpr>| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    };
    let bounds = bin(
        bin(Arc::clone(&key), Operator::GtEq, lit(min)),
        Operator::And,
        bin(Arc::clone(&key), Operator::LtEq, lit(max)),
    );
    let membership: Arc<dyn PhysicalExpr> = Arc::new(
        InListExpr::try_new_from_array(
            Arc::clone(&key),
            Arc::new(Int64Array::from(keys)),
            false,
            schema,
        )
        .expect("IN list"),
    );
    let filter = DynamicFilterPhysicalExpr::new(vec![Arc::clone(&key)], lit(true));
    filter
        .update(bin(bounds, Operator::And, membership))
        .expect("filter updates");
    Arc::new(filter)
}

fn runtime_filter(c: &mut Criterion) {
    let schema = schema();
    let filters = [filled_filter(&schema)];

    let full = runtime_filter_sql(&filters, &schema, DEFAULT_MAX_IN_LIST).expect("a predicate");
    assert_eq!(
        full.matches(", ").count(),
        KEYS - 1,
        "every key is in the IN list"
    );
    let reduced = runtime_filter_sql(&filters, &schema, SMALL_LIMIT).expect("a predicate");
    assert!(
        !reduced.contains(" IN ") && reduced.contains(&format!("{}", 1 + (KEYS as i64 - 1) * 5)),
        "a long list becomes the bounds: {reduced}"
    );
    eprintln!(
        "runtime_filter: {KEYS} keys -> {} bytes of SQL (bounds only: {} bytes)",
        full.len(),
        reduced.len()
    );

    let mut group = c.benchmark_group("runtime_filter");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_with_input(BenchmarkId::new("in_list", KEYS), &filters, |b, filters| {
        b.iter(|| runtime_filter_sql(black_box(filters), &schema, DEFAULT_MAX_IN_LIST))
    });
    group.bench_with_input(BenchmarkId::new("bounds", KEYS), &filters, |b, filters| {
        b.iter(|| runtime_filter_sql(black_box(filters), &schema, SMALL_LIMIT))
    });
    group.finish();
}

criterion_group!(benches, runtime_filter);
criterion_main!(benches);
