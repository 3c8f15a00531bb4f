//! What reaches the warehouse: filters, projections, limits, joins, aggregates, parameters,
//! runtime join filters.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use dbfed_datafusion::PushdownMode;

use crate::support::*;

fn register_keys(ctx: &SessionContext, name: &str, column: &str, keys: &[i64]) {
    let schema = Arc::new(Schema::new(vec![Field::new(
        column,
        DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(keys.to_vec()))],
    )
    .expect("batch");
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("mem table");
    ctx.register_table(name, Arc::new(table)).expect("register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_projection_and_limit_are_one_statement() {
    let emulator = emulator();
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples(&emulator, mode).await;
        let (batches, sent) = rows_and_sent(
            &ctx,
            &emulator,
            "SELECT n_name FROM samples.tpch.nation WHERE n_regionkey = 1 LIMIT 3",
        )
        .await;
        assert_eq!(count(&batches), 3, "{mode:?}");
        assert_eq!(sent.len(), 1, "{mode:?}: {sent:?}");
        let sql = &sent[0].sql;
        assert!(
            sql.contains("WHERE") && sql.contains("LIMIT"),
            "{mode:?}: {sql}"
        );
        assert!(
            sql.contains("n_regionkey") && sql.contains("n_name"),
            "{sql}"
        );
        assert!(!sql.contains("n_comment"), "only the needed columns: {sql}");
        assert_eq!(sent[0].rows, 3, "{mode:?}: {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pushdown_whole_tables_are_read() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::None).await;
    let (batches, sent) = rows_and_sent(
        &ctx,
        &emulator,
        "SELECT n_name FROM samples.tpch.nation WHERE n_regionkey = 1 ORDER BY n_name LIMIT 3",
    )
    .await;
    assert_eq!(
        sorted_lines(&batches),
        ["| ARGENTINA |", "| BRAZIL    |", "| CANADA    |"]
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].sql.contains("WHERE"), "{}", sent[0].sql);
    assert!(sent[0].sql.contains("n_comment"), "{}", sent[0].sql);
    assert_eq!(sent[0].rows, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_of_two_remote_tables_is_one_statement() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let (batches, sent) = rows_and_sent(
        &ctx,
        &emulator,
        "SELECT n.n_name, r.r_name FROM samples.tpch.nation n \
         JOIN samples.tpch.region r ON n.n_regionkey = r.r_regionkey \
         WHERE r.r_name = 'ASIA' ORDER BY n.n_name",
    )
    .await;
    assert_eq!(count(&batches), 5);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sql = &sent[0].sql;
    assert!(
        sql.contains("`nation`") && sql.contains("`region`"),
        "{sql}"
    );
    assert!(sql.to_ascii_uppercase().contains("JOIN"), "{sql}");
    assert_eq!(sent[0].rows, 5, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_aggregate_returns_one_row_per_group() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let (batches, sent) = rows_and_sent(
        &ctx,
        &emulator,
        "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS q \
         FROM samples.tpch.lineitem GROUP BY l_returnflag, l_linestatus",
    )
    .await;
    assert_eq!(count(&batches), 4);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].sql.to_ascii_uppercase().contains("GROUP BY"),
        "{}",
        sent[0].sql
    );
    assert_eq!(
        sent[0].rows, 4,
        "rows transferred = groups: {}",
        sent[0].sql
    );
    // The same answer as computed locally from all rows.
    let local = samples(&emulator, PushdownMode::None).await;
    let expected = rows(
        &local,
        "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS q \
         FROM samples.tpch.lineitem GROUP BY l_returnflag, l_linestatus",
    )
    .await;
    assert_eq!(sorted_lines(&batches), sorted_lines(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filters_do_not_reach_the_warehouse() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    register_keys(&ctx, "picked", "k", &[1, 2, 3, 7]);
    let before = emulator.statements().len();
    let batches = rows(&ctx, "SELECT k FROM picked WHERE k > 2").await;
    assert_eq!(count(&batches), 2);
    assert!(data_statements(&emulator, before).is_empty());

    // Mixed: the local filter stays local, the remote one goes remote.
    let batches = rows(
        &ctx,
        "SELECT n.n_name FROM picked p JOIN samples.tpch.nation n ON p.k = n.n_nationkey \
         WHERE p.k > 2 AND n.n_regionkey = 2",
    )
    .await;
    // Nations 3 (CANADA, region 1) and 7 (GERMANY, region 3): none in region 2.
    assert_eq!(count(&batches), 0);
    let sent = data_statements(&emulator, before);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].sql.contains("picked"), "{}", sent[0].sql);
    assert!(sent[0].sql.contains("n_regionkey"), "{}", sent[0].sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_travel_as_parameters() {
    let emulator = emulator();
    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples(&emulator, mode).await;
        let (batches, sent) = rows_and_sent(
            &ctx,
            &emulator,
            "SELECT n_nationkey FROM samples.tpch.nation WHERE n_name = 'GERMANY'",
        )
        .await;
        assert_eq!(sorted_lines(&batches), ["| 7           |"]);
        assert_eq!(sent.len(), 1);
        assert!(
            !sent[0].sql.contains("GERMANY"),
            "{mode:?}: {}",
            sent[0].sql
        );
        assert!(
            sent[0]
                .parameters
                .iter()
                .any(|p| p.value.as_deref() == Some("GERMANY")),
            "{mode:?}: {:?}",
            sent[0].parameters
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_join_filters_narrow_the_remote_statement() {
    let emulator = emulator();
    let query = "SELECT o.k, count(*) AS n, sum(l.l_quantity) AS q \
                 FROM picked o JOIN samples.tpch.lineitem l ON l.l_orderkey = o.k \
                 GROUP BY o.k";
    let baseline = samples(&emulator, PushdownMode::None).await;
    register_keys(&baseline, "picked", "k", &[1, 3, 7]);
    let expected = rows(&baseline, query).await;
    assert_eq!(count(&expected), 3);

    for mode in [PushdownMode::Full, PushdownMode::FilterProjection] {
        let ctx = samples(&emulator, mode).await;
        register_keys(&ctx, "picked", "k", &[1, 3, 7]);
        let (batches, sent) = rows_and_sent(&ctx, &emulator, query).await;
        assert_eq!(sorted_lines(&batches), sorted_lines(&expected), "{mode:?}");
        assert_eq!(sent.len(), 1, "{mode:?}: {sent:?}");
        assert!(
            sent[0].sql.contains("l_orderkey"),
            "{mode:?}: {}",
            sent[0].sql
        );
        assert!(
            sent[0].rows < 100,
            "{mode:?}: {} rows left the warehouse for 3 orders: {}",
            sent[0].rows,
            sent[0].sql
        );
    }
}
