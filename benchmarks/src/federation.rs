//! Scenario 4: federation. TPC-H queries with mixed placement (`customer`, `nation`, `region`
//! local in DataFusion memory tables; every other table on the emulator) under each pushdown
//! level: bytes and rows the warehouse served (its statement history), statements, wall time.
//!
//! The baseline "what the query really needs" is measured, not estimated: the remote part of
//! each query (the join of its remote tables with every predicate of the query) is sent as one
//! statement with the exact predicate the local side implies, i.e. the local join keys computed
//! beforehand (e.g. Q3's `o_custkey IN (<keys of BUILDING customers>)`), and only the columns
//! the rest of the query uses. Its bytes served are the floor full pushdown is compared to.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use dbfed_databricks::Client;
use dbfed_databricks::config::ClientConfig;
use dbfed_datafusion::{DatabricksSource, PushdownMode, federated_session_context};
use dbfed_emulator::{BackgroundEmulator, Emulator};
use dbfed_executor::{DatabricksDriver, Executor};
use serde_json::json;

use crate::emit;

const TOKEN: &str = "dapi-bench";
const WAREHOUSE: &str = "bench";
const SCENARIO: &str = "federation";
const LOCAL: [&str; 3] = ["customer", "nation", "region"];
const REMOTE: [&str; 5] = ["lineitem", "orders", "part", "partsupp", "supplier"];

/// Flags of `federation`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TPC-H scale factor of the emulator's `samples.tpch` (and of the local tables).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// TPC-H query numbers to run (those with a "needed" baseline: 3, 5, 10, 12).
    #[arg(long, value_delimiter = ',', default_value = "3,5,10,12")]
    pub queries: Vec<u32>,
    /// Folder of the query files (`q3.sql` or `q03.sql`, ...).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/queries/tpch"))]
    pub query_dir: PathBuf,
    /// Hang guard per query run, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

/// A pushdown level as measured.
#[derive(Debug, Clone, Copy)]
struct Level {
    name: &'static str,
    mode: PushdownMode,
    runtime_filters: bool,
}

const LEVELS: [Level; 3] = [
    Level {
        name: "full",
        mode: PushdownMode::Full,
        runtime_filters: true,
    },
    Level {
        name: "filter-projection",
        mode: PushdownMode::FilterProjection,
        runtime_filters: false,
    },
    Level {
        name: "none",
        mode: PushdownMode::None,
        runtime_filters: false,
    },
];

/// The "needed" baseline of one query: `remote`, with `{0}`, `{1}`... replaced by the
/// comma-separated keys each `local_keys` query returns on the local tables.
#[derive(Debug)]
struct Needed {
    /// Literals the query file must contain for this baseline to match it (the TPC-H
    /// validation parameters).
    requires: &'static [&'static str],
    local_keys: &'static [&'static str],
    remote: &'static str,
}

fn needed(query: u32) -> Option<Needed> {
    Some(match query {
        3 => Needed {
            requires: &["BUILDING", "1995-03-15"],
            local_keys: &["SELECT c_custkey FROM customer WHERE c_mktsegment = 'BUILDING'"],
            remote: "SELECT l_orderkey, l_extendedprice, l_discount, o_orderdate, o_shippriority, o_custkey \
                     FROM samples.tpch.orders JOIN samples.tpch.lineitem ON l_orderkey = o_orderkey \
                     WHERE o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15' \
                     AND o_custkey IN ({0})",
        },
        5 => Needed {
            requires: &["ASIA", "1994-01-01"],
            local_keys: &[
                "SELECT c_custkey FROM customer JOIN nation ON c_nationkey = n_nationkey \
                 JOIN region ON n_regionkey = r_regionkey WHERE r_name = 'ASIA'",
                "SELECT n_nationkey FROM nation JOIN region ON n_regionkey = r_regionkey \
                 WHERE r_name = 'ASIA'",
            ],
            remote: "SELECT o_custkey, l_extendedprice, l_discount, s_nationkey \
                     FROM samples.tpch.orders JOIN samples.tpch.lineitem ON l_orderkey = o_orderkey \
                     JOIN samples.tpch.supplier ON l_suppkey = s_suppkey \
                     WHERE o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01' \
                     AND o_custkey IN ({0}) AND s_nationkey IN ({1})",
        },
        10 => Needed {
            requires: &["1993-10-01", "'R'"],
            local_keys: &[],
            remote: "SELECT o_custkey, l_extendedprice, l_discount \
                     FROM samples.tpch.orders JOIN samples.tpch.lineitem ON l_orderkey = o_orderkey \
                     WHERE o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01' \
                     AND l_returnflag = 'R'",
        },
        // Every table of Q12 is remote: the query itself, run on the warehouse, is the need.
        12 => Needed {
            requires: &["MAIL", "SHIP", "1994-01-01"],
            local_keys: &[],
            remote: "",
        },
        _ => return None,
    })
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let mut texts = Vec::new();
    for &q in &args.queries {
        let candidates = [format!("q{q}.sql"), format!("q{q:02}.sql")];
        let path = candidates
            .iter()
            .map(|name| args.query_dir.join(name))
            .find(|p| p.is_file())
            .with_context(|| {
                format!("no q{q}.sql or q{q:02}.sql in {}", args.query_dir.display())
            })?;
        let sql = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        texts.push((q, sql.trim().trim_end_matches(';').to_owned()));
    }
    eprintln!(
        "starting the emulator with samples.tpch at SF {}",
        args.scale
    );
    let emulator = Emulator::builder()
        .tpch_scale(args.scale)
        .token(TOKEN)
        .warehouse_id(WAREHOUSE)
        .max_concurrent_statements(16)
        .result_ttl(Duration::from_secs(120))
        .spawn("127.0.0.1:0")?;
    let client = client(&emulator)?;
    // The local tables: read once from the warehouse (so both sides hold the same data), not
    // measured.
    let mut local = Vec::new();
    for table in LOCAL {
        let mut batches = Vec::new();
        for batch in client.execute(&format!("SELECT * FROM samples.tpch.{table}"), &[])? {
            batches.push(batch?);
        }
        let schema = batches
            .first()
            .map(|b| b.schema())
            .with_context(|| format!("{table} is empty"))?;
        local.push((table, Arc::new(MemTable::try_new(schema, vec![batches])?)));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-runtime")
        .enable_all()
        .build()?;

    let mut failed = false;
    for (q, sql) in &texts {
        let name = format!("Q{q}");
        let mut answers: Vec<(&str, String)> = Vec::new();
        for level in LEVELS {
            let executor = Executor::builder(DatabricksDriver::new(client.clone()))
                .threads(4)
                .pool_size(4)
                .build()?;
            let source = DatabricksSource::builder(executor)
                .catalogs(["samples"])
                .pushdown(level.mode)
                .runtime_filters(level.runtime_filters)
                .build()?;
            let measured = runtime.block_on(async {
                let ctx = session(&source, &local).await?;
                // Discovery is done: only the query's statements count from here.
                let before: HashSet<String> =
                    emulator.statements().into_iter().map(|s| s.id).collect();
                let started = Instant::now();
                let run = async { ctx.sql(sql).await?.collect().await };
                let batches = tokio::time::timeout(timeout, run).await.map_err(|_| {
                    anyhow::anyhow!("{name} ({}) took over {timeout:?}", level.name)
                })??;
                Ok::<_, anyhow::Error>((batches, started.elapsed().as_secs_f64(), before))
            });
            // A level that fails is reported as failed (with the statement the warehouse
            // rejected); the other levels and queries still run.
            let (batches, wall_s, before) = match measured {
                Ok(measured) => measured,
                Err(e) => {
                    let rejected = emulator
                        .statements()
                        .into_iter()
                        .rev()
                        .find(|s| s.state.as_str() == "FAILED")
                        .map(|s| truncate(&s.sql, 600))
                        .unwrap_or_default();
                    let error = truncate(&format!("{e}"), 600);
                    eprintln!(
                        "{name:<4} {:<18} FAILED: {error}; rejected SQL: {rejected}",
                        level.name
                    );
                    emit(
                        SCENARIO,
                        json!({"query": name, "pushdown": level.name, "scale": args.scale,
                               "runtime_filters": level.runtime_filters}),
                        json!({"error": error, "rejected_sql": rejected}),
                    );
                    failed = true;
                    continue;
                }
            };
            let statements: Vec<_> = emulator
                .statements()
                .into_iter()
                .filter(|s| !before.contains(&s.id))
                .collect();
            let bytes: u64 = statements.iter().map(|s| s.bytes_served).sum();
            let sent: u64 = statements.iter().map(|s| s.request_bytes).sum();
            let rows: u64 = statements.iter().map(|s| s.rows).sum();
            let result_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let answer = pretty_format_batches(&batches)?.to_string();
            eprintln!(
                "{name:<4} {:<18} {:>10.2} MB {:>10} rows served in {} statements; {wall_s:.2} s; \
                 {result_rows} result rows",
                level.name,
                bytes as f64 / 1e6,
                rows,
                statements.len()
            );
            emit(
                SCENARIO,
                json!({"query": name, "pushdown": level.name, "scale": args.scale,
                       "runtime_filters": level.runtime_filters}),
                json!({
                    "bytes_served": bytes, "request_bytes": sent, "rows_served": rows,
                    "statements": statements.len(), "wall_s": wall_s, "result_rows": result_rows,
                    "sql_sent": statements.iter().map(|s| truncate(&s.sql, 2000)).collect::<Vec<_>>(),
                }),
            );
            answers.push((level.name, answer));
        }
        if let Some((first, answer)) = answers.first() {
            for (other, a) in &answers[1..] {
                if a != answer {
                    bail!("{name}: the {other} answer differs from the {first} answer");
                }
            }
        }
        match needed(*q) {
            Some(need) if need.requires.iter().all(|r| sql.contains(r)) => {
                let needed_sql = runtime.block_on(needed_sql(&need, sql, &local))?;
                let before: HashSet<String> =
                    emulator.statements().into_iter().map(|s| s.id).collect();
                let started = Instant::now();
                let mut result_rows = 0;
                {
                    // The blocking read has no timeout of its own.
                    let _watchdog =
                        crate::sys::Watchdog::arm(timeout, &format!("{name}'s needed baseline"));
                    for batch in client.execute(&needed_sql, &[])? {
                        result_rows += batch?.num_rows();
                    }
                }
                let wall_s = started.elapsed().as_secs_f64();
                let statements: Vec<_> = emulator
                    .statements()
                    .into_iter()
                    .filter(|s| !before.contains(&s.id))
                    .collect();
                let bytes: u64 = statements.iter().map(|s| s.bytes_served).sum();
                let sent: u64 = statements.iter().map(|s| s.request_bytes).sum();
                let rows: u64 = statements.iter().map(|s| s.rows).sum();
                eprintln!(
                    "{name:<4} {:<18} {:>10.2} MB {rows:>10} rows served",
                    "needed",
                    bytes as f64 / 1e6
                );
                emit(
                    SCENARIO,
                    json!({"query": name, "pushdown": "needed", "scale": args.scale}),
                    json!({
                        "bytes_served": bytes, "request_bytes": sent, "rows_served": rows,
                        "statements": statements.len(), "wall_s": wall_s,
                        "result_rows": result_rows,
                        "sql_sent": [truncate(&needed_sql, 2000)],
                    }),
                );
            }
            Some(_) => eprintln!(
                "{name}: the query file does not use the TPC-H validation parameters the \
                 needed baseline assumes: no baseline"
            ),
            None => eprintln!("{name}: no needed baseline for this query"),
        }
    }
    if failed {
        bail!("some queries failed (their lines say which)");
    }
    Ok(())
}

fn client(emulator: &BackgroundEmulator) -> Result<Client> {
    let config = ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(WAREHOUSE)
        .token(TOKEN)
        .build()?;
    Ok(Client::builder(config).download_threads(4).build()?)
}

/// A federated session: the local tables and the remote ones under plain TPC-H names.
async fn session(
    source: &DatabricksSource,
    local: &[(&str, Arc<MemTable>)],
) -> Result<SessionContext> {
    let ctx = federated_session_context(
        SessionConfig::new().with_default_catalog_and_schema("bench", "tpch"),
    );
    for (table, provider) in local {
        ctx.register_table(*table, provider.clone())?;
    }
    for table in REMOTE {
        ctx.register_table(
            table,
            source.table_provider("samples", "tpch", table).await?,
        )?;
    }
    Ok(ctx)
}

/// The baseline statement of `need`: its local keys computed on the local tables.
async fn needed_sql(need: &Needed, query: &str, local: &[(&str, Arc<MemTable>)]) -> Result<String> {
    if need.remote.is_empty() {
        return Ok(query.to_owned());
    }
    let ctx = SessionContext::new();
    for (table, provider) in local {
        ctx.register_table(*table, provider.clone())?;
    }
    let mut sql = need.remote.to_owned();
    for (i, keys_sql) in need.local_keys.iter().enumerate() {
        let batches = ctx.sql(keys_sql).await?.collect().await?;
        let mut keys = Vec::new();
        for batch in &batches {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .context("local keys are not BIGINT")?;
            keys.extend(column.iter().flatten().map(|k| k.to_string()));
        }
        if keys.is_empty() {
            // `IN ()` is not SQL; no key can match.
            keys.push("NULL".into());
        }
        sql = sql.replace(&format!("{{{i}}}"), &keys.join(","));
    }
    Ok(sql)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_baselines_name_their_parameters() {
        for q in [3, 5, 10, 12] {
            let need = needed(q).expect("a baseline");
            assert!(!need.requires.is_empty());
            for i in 0..need.local_keys.len() {
                assert!(
                    need.remote.contains(&format!("{{{i}}}")),
                    "Q{q} placeholder {i}"
                );
            }
        }
        assert!(needed(1).is_none());
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn needed_sql_substitutes_local_keys() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("c_custkey", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("c_mktsegment", arrow::datatypes::DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(arrow::array::StringArray::from(vec![
                    "BUILDING", "AUTO", "BUILDING",
                ])),
            ],
        )
        .expect("batch");
        let table = Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"));
        let need = needed(3).expect("Q3");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let sql = runtime
            .block_on(needed_sql(&need, "unused", &[("customer", table)]))
            .expect("keys");
        assert!(sql.ends_with("o_custkey IN (1,3)"), "{sql}");
    }
}
