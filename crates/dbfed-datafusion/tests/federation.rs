//! Federation shapes that once went wrong: tables under local names, aggregates at the root of
//! a pushed plan (TPC-H q11), projections over limits, sorts over joins. Every query is checked
//! against the same query computed locally from whole tables.

use datafusion::prelude::SessionContext;
use dbfed_datafusion::{DatabricksSource, PushdownMode};

use crate::support::*;

/// A federated session with the `samples.tpch` tables `tables` registered under their plain
/// names (`lineitem`), read with `mode`.
async fn local_names(emulator: &Warehouse, mode: PushdownMode, tables: &[&str]) -> SessionContext {
    let source = DatabricksSource::builder(executor(emulator))
        .catalogs(["samples"])
        .pushdown(mode)
        .build()
        .expect("source builds");
    let ctx = session();
    for table in tables {
        let provider = source
            .table_provider("samples", "tpch", table)
            .await
            .expect("the table exists");
        ctx.register_table(*table, provider).expect("registers");
    }
    ctx
}

/// Runs `sql` federated (checking how many statements reach the warehouse) and from whole
/// tables, and requires the same rows.
async fn same_as_local(emulator: &Warehouse, tables: &[&str], sql: &str, statements: usize) {
    let baseline = local_names(emulator, PushdownMode::None, tables).await;
    let expected = rows(&baseline, sql).await;
    assert!(count(&expected) > 0, "a query that returns rows: {sql}");

    let ctx = local_names(emulator, PushdownMode::Full, tables).await;
    let before = emulator.statements().len();
    let got = rows(&ctx, sql).await;
    let sent = data_statements(emulator, before);
    assert_eq!(
        sorted_lines(&got),
        sorted_lines(&expected),
        "{sql}\nsent: {sent:?}"
    );
    assert_eq!(sent.len(), statements, "{sql}\nsent: {sent:?}");
    for statement in &sent {
        assert!(
            statement.sql.contains("`samples`.`tpch`."),
            "remote names in the statement: {}",
            statement.sql
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_tables_under_local_names_are_pushed_whole() {
    let emulator = emulator();
    // TPC-H q1's shape: derived aggregate names (`sum(lineitem.l_extendedprice * …)`).
    same_as_local(
        &emulator,
        &["lineitem"],
        "SELECT l_returnflag, sum(l_extendedprice * (1 - l_discount)) AS revenue, \
         avg(l_quantity) FROM lineitem WHERE l_shipdate <= DATE '1998-09-01' \
         GROUP BY l_returnflag ORDER BY l_returnflag",
        1,
    )
    .await;
    // A join under local names, one of them aliased.
    same_as_local(
        &emulator,
        &["nation", "region"],
        "SELECT r_name, count(*) AS nations, max(n.n_name) FROM nation n \
         JOIN region ON n.n_regionkey = r_regionkey WHERE n.n_nationkey > 3 GROUP BY r_name",
        1,
    )
    .await;
}

/// TPC-H q11 returned no rows: its `HAVING … > (subquery)` stays local, so the aggregate below
/// it is the root of a pushed plan, whose SQL listed the sum before the group key; the
/// positional cast turned sums into keys. The aggregate must come back in schema order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_at_the_root_of_a_pushed_plan_keeps_its_column_order() {
    let emulator = emulator();
    same_as_local(
        &emulator,
        &["partsupp"],
        "SELECT ps_partkey, sum(ps_supplycost * ps_availqty) AS value FROM partsupp \
         GROUP BY ps_partkey HAVING sum(ps_supplycost * ps_availqty) > \
         (SELECT sum(ps_supplycost * ps_availqty) * 0.001 FROM partsupp) \
         ORDER BY value DESC",
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_over_a_limit_is_pushed_whole() {
    let emulator = emulator();
    same_as_local(
        &emulator,
        &["nation"],
        "SELECT upper(n_name) AS name, n_nationkey + 1 AS next FROM \
         (SELECT n_name, n_nationkey FROM nation ORDER BY n_name LIMIT 4) AS first_four",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_over_a_join_is_pushed_whole() {
    let emulator = emulator();
    same_as_local(
        &emulator,
        &["nation", "region"],
        "SELECT * FROM nation JOIN region ON n_regionkey = r_regionkey \
         ORDER BY n_nationkey DESC",
        1,
    )
    .await;
}
