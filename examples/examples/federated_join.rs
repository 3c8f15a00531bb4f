//! Databricks tables and a local Parquet file in one DataFusion query.
//!
//! The warehouse's Unity Catalog catalogs are registered in a federated `SessionContext`
//! (`samples.tpch.orders` is then a table like any other) next to a Parquet file of sales
//! targets that lives only on this machine. One SQL statement joins them: the part that reads
//! only Databricks tables (orders → customer → nation, filtered to 1995 and aggregated per
//! nation) runs on the warehouse as ONE statement, the join with the local targets runs in
//! DataFusion. `EXPLAIN` shows the SQL sent to the warehouse.
//!
//! It runs on the embedded emulator (`samples.tpch` at scale 0.01). Against a real workspace,
//! replace the emulator block by one line (see `warehouse_config`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionConfig;
use dbfed_databricks::Client;
use dbfed_databricks::config::ClientConfig;
use dbfed_datafusion::{DatabricksSource, federated_session_context, register_local_table};
use dbfed_emulator::{BackgroundEmulator, Emulator};
use dbfed_executor::{DatabricksDriver, Executor};
use futures::TryStreamExt;

const TOKEN: &str = "dapi-example";

/// Revenue of 1995 per nation (computed on Databricks) against this year's targets (a local
/// file), best attainment first.
const QUERY: &str = "
    WITH revenue AS (
        SELECT n.n_name AS nation, sum(o.o_totalprice) AS revenue
        FROM samples.tpch.orders o
        JOIN samples.tpch.customer c ON o.o_custkey = c.c_custkey
        JOIN samples.tpch.nation n ON c.c_nationkey = n.n_nationkey
        WHERE o.o_orderdate >= DATE '1995-01-01' AND o.o_orderdate < DATE '1996-01-01'
        GROUP BY n.n_name
    )
    SELECT r.nation, t.region_manager, t.target, r.revenue,
           round(r.revenue * 100 / t.target, 1) AS attainment_pct
    FROM revenue r JOIN sales_targets t ON r.nation = t.nation
    ORDER BY attainment_pct DESC";

fn main() -> Result<()> {
    // The client is synchronous (like the official connectors): build it, and the executor
    // that runs it for async code, outside the async runtime.
    let (config, emulator) = warehouse_config()?;
    let executor = Executor::builder(DatabricksDriver::new(Client::new(config)?))
        .threads(4)
        .build()?;

    let dir = tempfile::tempdir()?;
    let targets = dir.path().join("sales_targets.parquet");
    write_sales_targets(&targets)?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Databricks catalogs (only `samples` here) in a session whose optimizer federates:
        // subplans over one warehouse become one remote statement.
        let ctx = federated_session_context(SessionConfig::new());
        DatabricksSource::builder(executor.clone())
            .catalogs(["samples"])
            .build()?
            .register(&ctx)
            .await?;
        // ... and the local Parquet file next to them.
        register_local_table(&ctx, "sales_targets", &targets).await?;

        let before = emulator.as_ref().map_or(0, |e| e.statements().len());
        let batches = ctx.sql(QUERY).await?.collect().await?;
        println!("{}", pretty_format_batches(&batches)?);

        // What ran where: the SQL of the federated scan is in the physical plan.
        let explain = ctx
            .sql(&format!("EXPLAIN {QUERY}"))
            .await?
            .collect()
            .await?;
        let plan = pretty_format_batches(&explain)?.to_string();
        let pushed = plan
            .lines()
            .find_map(|l| l.rsplit_once("sql=").map(|(_, sql)| sql))
            .context("EXPLAIN shows the SQL sent to Databricks")?;
        println!(
            "SQL sent to the warehouse: {}",
            pushed.trim_end_matches(['|', ' '])
        );

        check(&batches, &executor, emulator.as_ref(), before).await
    })?;
    // Dropped outside the runtime: the synchronous client may not be dropped on it.
    drop(runtime);
    drop(executor);
    Ok(())
}

/// The warehouse to query: the embedded emulator, kept alive as long as the client uses it.
fn warehouse_config() -> Result<(ClientConfig, Option<BackgroundEmulator>)> {
    // A real workspace instead (DATABRICKS_HOST, DATABRICKS_HTTP_PATH, DATABRICKS_TOKEN or a
    // ~/.databrickscfg profile):
    //     return Ok((ClientConfig::from_env()?, None));
    let emulator = Emulator::builder()
        .tpch_scale(0.01)
        .token(TOKEN)
        .spawn("127.0.0.1:0")?;
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id("example")
        .token(TOKEN)
        .build()?;
    Ok((config, Some(emulator)))
}

/// A small local dataset: this year's revenue target and manager of five nations.
fn write_sales_targets(path: &std::path::Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("nation", DataType::Utf8, false),
        Field::new("region_manager", DataType::Utf8, false),
        Field::new("target", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                "FRANCE", "GERMANY", "JAPAN", "BRAZIL", "KENYA",
            ])),
            Arc::new(StringArray::from(vec![
                "Camille", "Jonas", "Haruto", "Beatriz", "Amani",
            ])),
            Arc::new(Float64Array::from(vec![
                12_000_000.0,
                11_000_000.0,
                9_500_000.0,
                10_500_000.0,
                8_000_000.0,
            ])),
        ],
    )?;
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// The example checks itself, so CI notices when federation breaks: (on the emulator) one
/// remote statement did the aggregation, and the revenues equal those of the same aggregate
/// sent to the warehouse directly, nation by nation.
async fn check(
    batches: &[RecordBatch],
    executor: &Executor,
    emulator: Option<&BackgroundEmulator>,
    before: usize,
) -> Result<()> {
    if let Some(emulator) = emulator {
        let sent: Vec<String> = emulator
            .statements()
            .into_iter()
            .skip(before)
            .map(|s| s.sql)
            .filter(|sql| {
                !(sql.contains("information_schema")
                    || sql.starts_with("DESCRIBE")
                    || sql.starts_with("SHOW"))
            })
            .collect();
        ensure!(
            sent.len() == 1 && sent[0].to_ascii_uppercase().contains("GROUP BY"),
            "expected the aggregate over orders, customer and nation as one remote statement, \
             the warehouse received {sent:?}"
        );
    }
    let federated = revenue_by_nation(batches, "nation", "revenue")?;
    let direct: Vec<RecordBatch> = executor
        .query(
            "SELECT n_name, CAST(sum(o_totalprice) AS DOUBLE) AS revenue \
             FROM samples.tpch.orders JOIN samples.tpch.customer ON o_custkey = c_custkey \
             JOIN samples.tpch.nation ON c_nationkey = n_nationkey \
             WHERE o_orderdate >= DATE '1995-01-01' AND o_orderdate < DATE '1996-01-01' \
             GROUP BY n_name",
            &[],
        )
        .await?
        .try_collect()
        .await?;
    let direct = revenue_by_nation(&direct, "n_name", "revenue")?;
    ensure!(
        federated.len() == 5,
        "one row per sales target: {federated:?}"
    );
    for (nation, revenue) in &federated {
        let expected = direct.get(nation).copied().unwrap_or_default();
        ensure!(
            *revenue > 0.0 && (revenue - expected).abs() < 0.01,
            "{nation}: the federated query says {revenue}, the warehouse alone {expected}"
        );
    }
    Ok(())
}

/// `nation → revenue` from two columns of `batches`.
fn revenue_by_nation(
    batches: &[RecordBatch],
    nation: &str,
    revenue: &str,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for batch in batches {
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .with_context(|| format!("a {name} column"))?;
            Ok(cast(c, to)?)
        };
        let nations = column(nation, &DataType::Utf8)?;
        let nations = nations
            .as_any()
            .downcast_ref::<StringArray>()
            .context("nation names")?;
        let revenues = column(revenue, &DataType::Float64)?;
        let revenues = revenues
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("revenues")?;
        for (n, r) in nations.iter().zip(revenues.iter()) {
            if let (Some(n), Some(r)) = (n, r) {
                out.insert(n.to_owned(), r);
            }
        }
    }
    Ok(out)
}
