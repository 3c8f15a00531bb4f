//! EXPLAIN shows the SQL sent to Databricks.

use arrow::util::pretty::pretty_format_batches;
use dbfed_datafusion::PushdownMode;

use crate::support::*;

async fn explain(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
    let batches = rows(ctx, &format!("EXPLAIN {sql}")).await;
    pretty_format_batches(&batches)
        .expect("formats")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_scan_sql() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::FilterProjection).await;
    let before = emulator.statements().len();
    let plan = explain(
        &ctx,
        "SELECT n_name FROM samples.tpch.nation WHERE n_regionkey = 1 LIMIT 2",
    )
    .await;
    assert!(
        plan.contains("DatabricksScanExec: sql=SELECT `n_name`"),
        "{plan}"
    );
    assert!(
        plan.contains("FROM `samples`.`tpch`.`nation` WHERE"),
        "{plan}"
    );
    assert!(plan.contains("LIMIT 2"), "{plan}");
    assert!(
        data_statements(&emulator, before).is_empty(),
        "EXPLAIN runs nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_federated_sql() {
    let emulator = emulator();
    let ctx = samples(&emulator, PushdownMode::Full).await;
    let sql = "SELECT r.r_name, count(*) AS n FROM samples.tpch.nation n \
               JOIN samples.tpch.region r ON n.n_regionkey = r.r_regionkey GROUP BY r.r_name";
    let plan = explain(&ctx, sql).await;
    assert!(plan.contains("VirtualExecutionPlan"), "{plan}");
    assert!(
        plan.contains("`nation`") && plan.contains("`region`"),
        "{plan}"
    );
    assert!(plan.to_ascii_uppercase().contains("GROUP BY"), "{plan}");
    // The statement really sent is that SQL (literals aside).
    let (batches, sent) = rows_and_sent(&ctx, &emulator, sql).await;
    assert_eq!(count(&batches), 5);
    assert_eq!(sent.len(), 1);
    // Literals travel as parameters, so compare the part without any.
    let join =
        "INNER JOIN `samples`.`tpch`.`region` AS `r` ON `n`.`n_regionkey` = `r`.`r_regionkey`";
    assert!(plan.contains(join), "{plan}");
    assert!(sent[0].sql.contains(join), "{}", sent[0].sql);
}
