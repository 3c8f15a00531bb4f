//! Federation shapes that once went wrong: tables under local names, aggregates at the root of
//! a pushed plan (TPC-H q11), projections over limits, sorts over joins; and mixed placements
//! whose remote tables are not adjacent in the query text. Every query is checked against the
//! same query computed locally from whole tables.

use std::sync::Arc;

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

/// `samples.tpch.<table>`'s rows registered in `ctxs` as the local (in-memory) table `table`.
async fn copy_local(emulator: &Warehouse, table: &str, ctxs: &[&SessionContext]) {
    let reader = local_names(emulator, PushdownMode::None, &[table]).await;
    let batches = rows(&reader, &format!("SELECT * FROM {table}")).await;
    let schema = batches.first().expect("rows").schema();
    for ctx in ctxs {
        let mem =
            datafusion::catalog::MemTable::try_new(Arc::clone(&schema), vec![batches.clone()])
                .expect("mem table");
        ctx.register_table(table, Arc::new(mem)).expect("registers");
    }
}

/// The column names of the outermost `SELECT` list of a federated statement (inside the
/// runtime-filter wrapper `SELECT * FROM (…) AS __dbfed WHERE …`).
fn select_list(sql: &str) -> Vec<String> {
    let inner = sql.strip_prefix("SELECT * FROM (").unwrap_or(sql);
    let list = inner
        .strip_prefix("SELECT ")
        .and_then(|rest| rest.split_once(" FROM "))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("a SELECT list in {sql}"));
    list.split(", ")
        .map(|c| {
            c.rsplit('.')
                .next()
                .unwrap_or(c)
                .trim_matches('`')
                .to_owned()
        })
        .collect()
}

/// The one number `sql` returns.
async fn scalar(ctx: &SessionContext, sql: &str) -> i64 {
    let batches = rows(ctx, sql).await;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or_else(|| panic!("one integer from {sql}"))
}

/// Runs `query` with `local` tables in memory and the others remote, federated, and against
/// the same tables all read whole; requires the same rows, `statements` statements, and
/// returns what was sent.
async fn mixed(
    emulator: &Warehouse,
    local: &[&str],
    remote: &[&str],
    query: &str,
    statements: usize,
) -> (SessionContext, Vec<dbfed_emulator::StatementRecord>) {
    let baseline = local_names(emulator, PushdownMode::None, remote).await;
    let ctx = local_names(emulator, PushdownMode::Full, remote).await;
    for table in local {
        copy_local(emulator, table, &[&baseline, &ctx]).await;
    }
    let expected = rows(&baseline, query).await;
    assert!(count(&expected) > 0, "a query that returns rows: {query}");
    let (got, sent) = rows_and_sent(&ctx, emulator, query).await;
    assert_eq!(
        sorted_lines(&got),
        sorted_lines(&expected),
        "{query}\nsent: {sent:?}"
    );
    assert_eq!(sent.len(), statements, "{query}\nsent: {sent:?}");
    (baseline, sent)
}

/// TPC-H q3's shape: the local `customer` sits between the remote `orders` and `lineitem` in
/// the query text. Their join still runs on the warehouse as one statement, and the keys of
/// the BUILDING customers (more than DataFusion's default IN-list limit of 150) narrow it to
/// exactly the rows the query needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tables_split_by_a_local_one_are_joined_on_the_warehouse() {
    let emulator = emulator();
    let query = "SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, \
                 o_orderdate, o_shippriority FROM customer, orders, lineitem \
                 WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey \
                 AND l_orderkey = o_orderkey AND o_orderdate < DATE '1995-03-15' \
                 AND l_shipdate > DATE '1995-03-15' \
                 GROUP BY l_orderkey, o_orderdate, o_shippriority";
    let (baseline, sent) = mixed(&emulator, &["customer"], &["orders", "lineitem"], query, 1).await;
    let sql = &sent[0].sql;
    assert!(
        sql.contains("`orders`") && sql.contains("`lineitem`"),
        "{sql}"
    );
    let building = scalar(
        &baseline,
        "SELECT count(*) FROM customer WHERE c_mktsegment = 'BUILDING'",
    )
    .await;
    assert!(building > 150, "{building} BUILDING customers");
    assert!(sql.contains("`o_custkey` IN ("), "{sql}");
    // `o_orderkey = l_orderkey` on the warehouse: one of the two comes back, not both.
    let columns = select_list(sql);
    assert_eq!(columns.len(), 6, "{sql}");
    assert!(
        columns.contains(&"o_orderkey".to_owned()) != columns.contains(&"l_orderkey".to_owned()),
        "{sql}"
    );
    let needed = scalar(
        &baseline,
        "SELECT count(*) FROM customer, orders, lineitem WHERE c_mktsegment = 'BUILDING' \
         AND c_custkey = o_custkey AND l_orderkey = o_orderkey \
         AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'",
    )
    .await;
    assert_eq!(sent[0].rows as i64, needed, "{sql}");
}

/// TPC-H q5's shape: `customer`, `nation`, `region` local, `orders`, `lineitem`, `supplier`
/// remote. The local tables are joined first (so only ASIA's customers remain), the remote
/// three are one statement, and the two-column join key (`c_custkey, c_nationkey`) becomes one
/// IN list per column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filters_reach_a_remote_join_through_a_two_column_key() {
    let emulator = emulator();
    let query = "SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue \
                 FROM customer, orders, lineitem, supplier, nation, region \
                 WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey \
                 AND l_suppkey = s_suppkey AND c_nationkey = s_nationkey \
                 AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey \
                 AND r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01' \
                 AND o_orderdate < DATE '1995-01-01' GROUP BY n_name";
    let (baseline, sent) = mixed(
        &emulator,
        &["customer", "nation", "region"],
        &["orders", "lineitem", "supplier"],
        query,
        1,
    )
    .await;
    let sql = &sent[0].sql;
    assert!(
        sql.contains("`o_custkey` IN (") && sql.contains("`s_nationkey` IN ("),
        "{sql}"
    );
    // Only what the local side needs: no key of the joins made on the warehouse.
    let mut columns = select_list(sql);
    columns.sort();
    assert_eq!(
        columns,
        ["l_discount", "l_extendedprice", "o_custkey", "s_nationkey"],
        "{sql}"
    );
    let needed = scalar(
        &baseline,
        "SELECT count(*) FROM orders, lineitem, supplier \
         WHERE l_orderkey = o_orderkey AND l_suppkey = s_suppkey \
         AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01' \
         AND o_custkey IN (SELECT c_custkey FROM customer, nation, region \
             WHERE c_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'ASIA') \
         AND s_nationkey IN (SELECT n_nationkey FROM nation, region \
             WHERE n_regionkey = r_regionkey AND r_name = 'ASIA')",
    )
    .await;
    assert_eq!(sent[0].rows as i64, needed, "{sql}");
}
