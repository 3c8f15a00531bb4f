//! The Databricks dialect end to end: DataFusion plans unparsed with `DatabricksDialect`, their
//! literals moved into parameters, run on the emulator, and compared with DataFusion evaluating
//! the same plan locally.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::util::display::array_value_to_string;
use datafusion::catalog::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use dbfed_databricks::config::ClientConfig;
use dbfed_databricks::{Client, Param, RetryPolicy};
use dbfed_datafusion::dialect::plan_to_sql;
use dbfed_datafusion::params::parameterize;
use dbfed_emulator::Emulator;
use tpchgen::generators::{NationGenerator, OrderGenerator};
use tpchgen_arrow::{NationArrow, OrderArrow};

use crate::support::{TOKEN, Warehouse, start};

/// An emulator, a client for it, and a local session with the same `nation` and `orders`.
struct Fixture {
    _emulator: Warehouse,
    client: Client,
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
}

fn local_table(
    schema: arrow::datatypes::SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
) -> Arc<MemTable> {
    let batches: Vec<RecordBatch> = batches.collect::<Result<_, _>>().expect("generates");
    Arc::new(MemTable::try_new(schema, vec![batches]).expect("mem table"))
}

impl Fixture {
    fn new() -> Self {
        let emulator = start(Emulator::builder().tpch_scale(0.01));
        let config = ClientConfig::builder()
            .host(emulator.url())
            .warehouse_id("df0123456789abcd")
            .token(TOKEN)
            .build()
            .expect("valid configuration");
        let client = Client::builder(config)
            .retry_policy(RetryPolicy::default().max_elapsed(Duration::from_secs(20)))
            .build()
            .expect("client builds");
        let ctx = SessionContext::new();
        ctx.register_table(
            "nation",
            local_table(
                NationArrow::schema_ref(),
                NationArrow::new(NationGenerator::new(0.01, 1, 1)),
            ),
        )
        .expect("nation");
        ctx.register_table(
            "orders",
            local_table(
                OrderArrow::schema_ref(),
                OrderArrow::new(OrderGenerator::new(0.01, 1, 1)).with_batch_size(8192),
            ),
        )
        .expect("orders");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            _emulator: emulator,
            client,
            ctx,
            runtime,
        }
    }

    /// The (unoptimized, so functions stay as written) plan of `sql` and its local result.
    fn local(&self, sql: &str) -> (LogicalPlan, Vec<RecordBatch>) {
        self.runtime.block_on(async {
            let df = self
                .ctx
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let plan = df.logical_plan().clone();
            let batches = df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            (plan, batches)
        })
    }

    /// Runs `sql` with `params` on the emulator.
    fn remote(&self, sql: &str, params: &[Param]) -> Vec<RecordBatch> {
        let stream = self
            .client
            .execute(sql, params)
            .unwrap_or_else(|e| panic!("the emulator refused {sql}: {e}"));
        stream
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Unparses `sql`'s plan, runs it remotely and asserts the same rows (values compared after
    /// casting the remote columns to the local types). Returns the statement sent.
    fn check(&self, sql: &str) -> Sent {
        let (plan, local) = self.local(sql);
        let unparsed = plan_to_sql(&plan).unwrap_or_else(|e| panic!("{sql} does not unparse: {e}"));
        let statement = parameterize(&unparsed).expect("parameterizes");
        let remote = self.remote(&statement.sql, &statement.params);
        let local_rows = rows(&local, None);
        let types: Vec<_> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let remote_rows = rows(&remote, Some(&types));
        assert!(
            same_rows(&local_rows, &remote_rows),
            "{sql}\nunparsed: {unparsed}\nsent: {}\nlocal:  {local_rows:?}\nremote: {remote_rows:?}",
            statement.sql
        );
        assert!(
            !local_rows.is_empty(),
            "a test must compare some rows: {sql}"
        );
        Sent {
            unparsed,
            sql: statement.sql,
            params: statement.params,
        }
    }
}

/// What [`Fixture::check`] sent.
#[derive(Debug)]
struct Sent {
    unparsed: String,
    sql: String,
    params: Vec<Param>,
}

impl Sent {
    fn values(&self) -> Vec<&str> {
        self.params.iter().filter_map(Param::value).collect()
    }
}

/// Equal rows, floating-point values within a relative 1e-12 (libm functions may differ in
/// the last bit between equivalent formulations, e.g. `log(10, x)` and `log10(x)`).
fn same_rows(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| {
                    u == v
                        || match (u.parse::<f64>(), v.parse::<f64>()) {
                            (Ok(p), Ok(q)) => (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
                            _ => false,
                        }
                })
        })
}

/// The rows of `batches` as text, columns cast to `types` first when given.
fn rows(batches: &[RecordBatch], types: Option<&[arrow::datatypes::DataType]>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for batch in batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| match types.and_then(|t| t.get(i)) {
                Some(t) if t != c.data_type() => {
                    cast(c, t).unwrap_or_else(|e| panic!("cast {} to {t}: {e}", c.data_type()))
                }
                _ => Arc::clone(c),
            })
            .collect();
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
    out
}

#[test]
fn identifiers_and_aliases_are_backticked() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_name AS \"we`ird\", n_nationkey AS \"Mixed Case\" FROM nation \
         ORDER BY n_nationkey",
    );
    assert!(sent.sql.contains("`we``ird`"), "{}", sent.sql);
    assert!(sent.sql.contains("`Mixed Case`"), "{}", sent.sql);
    assert!(sent.sql.contains("FROM `nation`"), "{}", sent.sql);
}

#[test]
fn casts_use_spark_type_names() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT CAST(n_nationkey AS VARCHAR) AS a, CAST(n_nationkey AS INT) AS b, \
         CAST(n_nationkey AS SMALLINT) AS c, CAST(n_nationkey AS TINYINT) AS d, \
         CAST(n_nationkey AS DOUBLE) AS e, CAST(n_nationkey AS REAL) AS f, \
         CAST(n_nationkey AS DECIMAL(10,2)) AS g, CAST(n_nationkey > 5 AS VARCHAR) AS h, \
         CAST(CAST(n_nationkey AS VARCHAR) AS BIGINT) AS i, CAST(n_nationkey AS BOOLEAN) AS j \
         FROM nation ORDER BY n_nationkey",
    );
    for name in [
        "AS STRING)",
        "AS INT)",
        "AS SMALLINT)",
        "AS TINYINT)",
        "AS DOUBLE)",
        "AS FLOAT)",
        "AS DECIMAL(10,2))",
        "AS BIGINT)",
        "AS BOOLEAN)",
    ] {
        assert!(sent.sql.contains(name), "{name}: {}", sent.sql);
    }
    assert!(
        !sent.sql.contains("VARCHAR") && !sent.sql.contains("BOOL)"),
        "{}",
        sent.sql
    );
}

#[test]
fn date_and_timestamp_literals_and_intervals() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT DATE '1995-03-15', DATE '1995-03-15' + INTERVAL '3' DAY, \
         DATE '1995-03-15' + INTERVAL '1' MONTH, DATE '1995-03-15' - INTERVAL '1' YEAR, \
         CAST('2020-01-02 03:04:05' AS TIMESTAMP), \
         CAST('2020-01-02 03:04:05' AS TIMESTAMP) + INTERVAL '90' MINUTE, n_nationkey \
         FROM nation ORDER BY n_nationkey",
    );
    assert!(
        sent.unparsed.contains("DATE '1995-03-15'"),
        "{}",
        sent.unparsed
    );
    assert!(
        sent.unparsed.contains("INTERVAL 3 DAY"),
        "{}",
        sent.unparsed
    );
    assert!(
        sent.unparsed.contains("INTERVAL 1 MONTH"),
        "{}",
        sent.unparsed
    );
    assert!(
        sent.unparsed.contains("INTERVAL 12 MONTH"),
        "{}",
        sent.unparsed
    );
    assert!(
        sent.unparsed
            .contains("TIMESTAMP_NTZ '2020-01-02 03:04:05'"),
        "{}",
        sent.unparsed
    );
    // The dates travel as typed parameters; interval quantities stay in the text.
    assert!(sent.sql.contains("INTERVAL 3 DAY"), "{}", sent.sql);
    let dates: Vec<_> = sent
        .params
        .iter()
        .filter(|p| p.type_name() == Some("DATE"))
        .collect();
    assert_eq!(dates.len(), 4, "{:?}", sent.params);
}

#[test]
fn date_filters_and_extract() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT o_orderkey, extract(year FROM o_orderdate), extract(month FROM o_orderdate), \
         extract(day FROM o_orderdate), extract(quarter FROM o_orderdate), \
         date_part('doy', o_orderdate), date_part('week', o_orderdate) \
         FROM orders WHERE o_orderdate >= DATE '1995-03-15' \
         AND o_orderdate < DATE '1995-03-15' + INTERVAL '1' MONTH ORDER BY o_orderkey",
    );
    assert!(
        sent.unparsed
            .contains("EXTRACT(YEAR FROM `orders`.`o_orderdate`)"),
        "{}",
        sent.unparsed
    );
    assert!(!sent.unparsed.contains("date_part"), "{}", sent.unparsed);
}

#[test]
fn day_of_week_is_renumbered_for_spark() {
    // Spark's DOW counts Sunday as 1, DataFusion's as 0. The emulator evaluates EXTRACT with
    // DataFusion's numbering, so only the text is checked here.
    let f = Fixture::new();
    let (plan, _) = f.local("SELECT date_part('dow', o_orderdate) FROM orders LIMIT 1");
    let sql = plan_to_sql(&plan).expect("unparses");
    assert!(
        sql.contains("(EXTRACT(DOW FROM `orders`.`o_orderdate`) - 1)"),
        "{sql}"
    );
}

#[test]
fn string_functions_with_different_names_or_shapes() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_nationkey, character_length(n_name), strpos(n_name, 'A'), \
         substr(n_name, 2), substr(n_name, 2, 3), substr(n_name, -1, 3), \
         substr(n_name, CAST(n_nationkey AS BIGINT) - 3, 4), \
         btrim(n_name, 'A'), ltrim(n_name, 'AB'), rtrim(n_name, 'A'), btrim(concat(' ', n_name)), \
         starts_with(n_name, 'I'), ends_with(n_name, 'A'), \
         regexp_like(n_name, '^[a-c]', 'i'), regexp_like(n_name, 'AN'), \
         substring(n_name FROM 1 FOR 2), position('R' IN n_name) \
         FROM nation ORDER BY n_nationkey",
    );
    for expected in [
        "instr(",
        "TRIM(BOTH",
        "TRIM(LEADING",
        "TRIM(TRAILING",
        "left(",
        "right(",
        "greatest(",
    ] {
        assert!(sent.sql.contains(expected), "{expected}: {}", sent.sql);
    }
    assert!(
        !sent.sql.contains("strpos") && !sent.sql.contains("starts_with"),
        "{}",
        sent.sql
    );
}

#[test]
fn regexp_replace_needs_the_global_flag() {
    // Databricks' regexp_replace replaces every match, DataFusion's only the first unless 'g'
    // is given. The emulator evaluates it with DataFusion's semantics (first match only), so
    // only the text is checked: with 'g' the flag is dropped, without it nothing is pushed.
    let f = Fixture::new();
    let (plan, _) = f.local("SELECT regexp_replace(n_name, 'A', 'o', 'g') FROM nation");
    let sql = plan_to_sql(&plan).expect("unparses");
    assert!(
        sql.contains("regexp_replace(`nation`.`n_name`, 'A', 'o')"),
        "{sql}"
    );
    let (plan, _) = f.local("SELECT regexp_replace(n_name, 'A', 'o') FROM nation");
    let error = plan_to_sql(&plan).expect_err("first-match replacement has no equivalent");
    assert!(error.to_string().contains("regexp_replace"), "{error}");
}

#[test]
fn null_handling_functions() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_nationkey, nvl(CASE WHEN n_nationkey > 10 THEN n_name END, 'none'), \
         concat(n_name, CASE WHEN n_nationkey > 10 THEN 'x' END, '!'), \
         concat_ws('-', n_name, CASE WHEN n_nationkey > 10 THEN 'x' END), \
         coalesce(CASE WHEN n_nationkey > 20 THEN n_nationkey END, 0), \
         CASE WHEN n_nationkey > 20 THEN NULL ELSE n_nationkey END IS DISTINCT FROM 3 \
         FROM nation ORDER BY n_nationkey",
    );
    assert!(sent.sql.contains("concat_ws("), "{}", sent.sql);
    assert!(!sent.sql.contains("nvl("), "{}", sent.sql);
}

#[test]
fn math_functions() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_nationkey, log(CAST(n_nationkey + 1 AS DOUBLE)), \
         log(2.0, CAST(n_nationkey + 1 AS DOUBLE)), ln(CAST(n_nationkey + 1 AS DOUBLE)), \
         round(CAST(n_nationkey AS DOUBLE) / 7, 2), abs(n_nationkey - 12), n_nationkey % 7 \
         FROM nation ORDER BY n_nationkey",
    );
    assert!(sent.sql.contains("log10("), "{}", sent.sql);
    assert!(
        sent.sql.contains(", 2)"),
        "round's scale stays a constant: {}",
        sent.sql
    );
}

#[test]
fn arrays() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_nationkey, array_has(make_array(n_regionkey, 3), 3), \
         array_has(make_array('ASIA', 'EUROPE'), n_name) \
         FROM nation ORDER BY n_nationkey",
    );
    assert!(sent.sql.contains("array_contains(array("), "{}", sent.sql);
}

#[test]
fn predicates_like_case_in_between() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n_nationkey, n_name LIKE '%AN%', n_name ILIKE 'a%', n_name NOT LIKE 'I%', \
         CASE WHEN n_regionkey = 1 THEN 'one' WHEN n_regionkey = 2 THEN 'two' ELSE 'many' END, \
         n_nationkey IN (1, 3, 5), n_nationkey BETWEEN 4 AND 8 \
         FROM nation WHERE n_name <> 'ALGERIA' ORDER BY n_nationkey",
    );
    assert!(sent.values().contains(&"ALGERIA"), "{:?}", sent.params);
    assert!(sent.values().contains(&"%AN%"), "{:?}", sent.params);
}

#[test]
fn hostile_string_literals_travel_as_parameters() {
    let f = Fixture::new();
    let hostile = [
        "x'; DROP TABLE nation; --",
        "back\\slash' OR '1'='1",
        "\\",
        "new\nline",
        "ünïcødé 😀",
    ];
    for value in hostile {
        let literal = value.replace('\'', "''");
        let sent = f.check(&format!(
            "SELECT n_nationkey, n_name = '{literal}', concat(n_name, '{literal}') \
             FROM nation ORDER BY n_nationkey"
        ));
        assert!(
            sent.values().contains(&value),
            "{value:?}: {:?}",
            sent.params
        );
        assert!(
            !sent.sql.contains("DROP") && !sent.sql.contains("\\"),
            "{}",
            sent.sql
        );
    }
    // Rows really match a value with quotes and backslashes.
    let (plan, local) = f.local(
        "SELECT n_name FROM nation WHERE concat(n_name, 'it''s \\ ok') = 'FRANCEit''s \\ ok'",
    );
    assert_eq!(rows(&local, None), vec![vec!["FRANCE".to_owned()]]);
    let statement = parameterize(&plan_to_sql(&plan).expect("unparses")).expect("params");
    let remote = f.remote(&statement.sql, &statement.params);
    assert_eq!(rows(&remote, None), vec![vec!["FRANCE".to_owned()]]);
}

#[test]
fn aggregates_joins_and_subqueries() {
    let f = Fixture::new();
    let sent = f.check(
        "SELECT n.n_regionkey, count(*) AS c, sum(o.o_totalprice) AS total, \
         min(o.o_orderdate) AS first_order \
         FROM orders o JOIN nation n ON n.n_nationkey = o.o_custkey % 25 \
         WHERE o.o_orderstatus = 'F' AND EXISTS (SELECT 1 FROM nation n2 WHERE n2.n_nationkey = n.n_nationkey AND n2.n_name LIKE '%A%') \
         AND n.n_nationkey IN (SELECT n_nationkey FROM nation WHERE n_regionkey < 4) \
         GROUP BY n.n_regionkey ORDER BY n.n_regionkey",
    );
    assert!(sent.sql.contains("GROUP BY"), "{}", sent.sql);
}
