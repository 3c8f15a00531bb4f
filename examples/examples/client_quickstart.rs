//! The Databricks client in ten lines: run a parameterised statement and stream its Arrow
//! batches. Against a real workspace, set DATABRICKS_HOST, DATABRICKS_TOKEN and
//! DATABRICKS_WAREHOUSE_ID (or a ~/.databrickscfg profile) and run with `--workspace`; by default
//! it starts the embedded emulator.

use anyhow::Result;
use arrow::util::pretty::print_batches;
use dbfed_databricks::config::{ClientConfig, ClientConfigBuilder};
use dbfed_databricks::{Client, Param};
use dbfed_emulator::Emulator;

fn main() -> Result<()> {
    let use_workspace = std::env::args().any(|a| a == "--workspace");
    // Keep the emulator alive as long as the client uses it.
    let (config, _emulator) = if use_workspace {
        (ClientConfigBuilder::from_process_env().build()?, None)
    } else {
        let emulator = Emulator::builder()
            .token("dapi-example")
            .spawn("127.0.0.1:0")?;
        let config = ClientConfig::builder()
            .host(emulator.url())
            .warehouse_id("example")
            .token("dapi-example")
            .build()?;
        (config, Some(emulator))
    };

    let client = Client::new(config)?;
    let stream = client.execute(
        "SELECT n_name, r_name FROM samples.tpch.nation JOIN samples.tpch.region \
         ON n_regionkey = r_regionkey WHERE r_name = :region ORDER BY n_name",
        &[Param::new("region", "EUROPE".to_owned())],
    )?;
    println!(
        "statement {} returns {:?} rows",
        stream.statement_id(),
        stream.total_row_count()
    );
    let batches = stream.collect::<Result<Vec<_>, _>>()?;
    print_batches(&batches)?;
    Ok(())
}
