//! Runs real scenarios at tiny sizes (their own emulators on loopback) and the report over
//! their JSON lines: the lines parse, the stages read every row, the report states the figures.

use std::process::Command;

use serde_json::Value;

fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbfed-bench"));
    command.env("RUST_BACKTRACE", "0");
    command
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

#[test]
fn large_result_and_sweep_feed_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let large = bench()
        .args(["large-result", "--scale", "0.01", "--rows", "500,0"])
        .args([
            "--chunk-rows",
            "20000",
            "--threads",
            "2",
            "--timeout-s",
            "120",
            "--first-batch-chunks",
            "10",
        ])
        .env_remove("DBFED_TEST_PYTHON")
        .output()
        .expect("dbfed-bench runs");
    assert!(
        large.status.success(),
        "{}",
        String::from_utf8_lossy(&large.stderr)
    );
    let records = lines(&large.stdout);
    for record in &records {
        assert_eq!(record["scenario"], "large-result");
        assert!(record["params"].is_object() && record["figures"].is_object());
        // Every line names the commit it was measured at.
        let commit = record["provenance"]["commit"].as_str().expect("a commit");
        assert!(!commit.is_empty(), "{record}");
    }
    let find = |limit: u64, name: &str, series: Option<&str>| {
        records
            .iter()
            .find(|r| {
                r["params"]["limit"] == limit
                    && r["params"]["stage"] == name
                    && r["params"]["series"].as_str() == series
            })
            .unwrap_or_else(|| panic!("no {name} line for limit {limit} ({series:?}): {records:?}"))
    };
    let stage = |limit: u64, name: &str| find(limit, name, None);
    // LIMIT 500 reads 500 rows; the whole lineitem at SF 0.01 is 60 175 rows.
    assert_eq!(stage(500, "ceiling")["figures"]["rows"], 500);
    let whole = stage(0, "ceiling")["figures"]["rows"]
        .as_u64()
        .expect("rows");
    assert_eq!(whole, 60_175);
    for name in ["client", "executor", "datafusion", "flight-ceiling"] {
        let figures = &stage(0, name)["figures"];
        assert_eq!(figures["rows"], whole, "{name}: {figures}");
        assert!(figures["read_mb_s"].as_f64().expect("read_mb_s") > 0.0);
        assert!(figures["rows_per_s"].as_f64().expect("rows_per_s") > 0.0);
    }
    for name in ["client", "executor", "datafusion"] {
        let figures = &stage(0, name)["figures"];
        // The warehouse's own record of the statement: it executed, then the stage read.
        let execute = figures["warehouse_execute_s"]
            .as_f64()
            .expect("warehouse_execute_s");
        let wall = figures["wall_s"].as_f64().expect("wall_s");
        assert!(execute > 0.0 && execute < wall, "{name}: {figures}");
        let bytes = figures["bytes_served"].as_u64().expect("bytes_served");
        assert!(bytes > 0, "{name}: {figures}");
    }
    // The many-chunk run: the whole table again, in 10 chunks of 6018 rows.
    let ceiling = &find(0, "ceiling", Some("first-batch"))["figures"];
    assert_eq!(ceiling["rows"], whole);
    assert_eq!(ceiling["chunks"], 10, "{ceiling}");
    for name in ["client", "executor", "datafusion"] {
        let line = find(0, name, Some("first-batch"));
        assert_eq!(line["params"]["chunk_rows"], 6018, "{line}");
        let figures = &line["figures"];
        assert_eq!(figures["rows"], whole, "{name}: {figures}");
        let from_submission = figures["time_to_first_batch_s"]
            .as_f64()
            .expect("first batch");
        let from_finish = figures["first_batch_after_execution_s"]
            .as_f64()
            .expect("first batch after the warehouse finished");
        assert!(from_finish < from_submission, "{name}: {figures}");
    }

    let sweep = bench()
        .args(["concurrency-sweep", "--levels", "4,8", "--latency-ms", "20"])
        .args([
            "--concurrency",
            "4",
            "--poll-threads",
            "2",
            "--overhead-queries",
            "5",
        ])
        .args(["--timeout-s", "120"])
        .env_remove("DBFED_TEST_PYTHON")
        .output()
        .expect("dbfed-bench runs");
    assert!(
        sweep.status.success(),
        "{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    let sweep_records = lines(&sweep.stdout);
    for n in [4, 8] {
        for case in ["thread-per-query", "submit-and-poll"] {
            let r = sweep_records
                .iter()
                .find(|r| r["params"]["queries"] == n && r["params"]["case"] == case)
                .unwrap_or_else(|| panic!("no {case} line for {n}: {sweep_records:?}"));
            assert_eq!(r["figures"]["rows"], n);
            // Never faster than the warehouse allows: ceil(n/4) × 20 ms.
            assert!(r["figures"]["wall_s"].as_f64() >= r["figures"]["ideal_s"].as_f64());
        }
    }

    let results = dir.path().join("results.jsonl");
    let mut text = String::from_utf8_lossy(&large.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&sweep.stdout));
    std::fs::write(&results, text).expect("write results");
    let output = dir.path().join("BENCHMARKS.md");
    let plots = dir.path().join("plots");
    let report = bench()
        .arg("report")
        .arg("--input")
        .arg(&results)
        .arg("--output")
        .arg(&output)
        .arg("--plots")
        .arg(&plots)
        .output()
        .expect("dbfed-bench runs");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let md = std::fs::read_to_string(&output).expect("the report");
    assert!(md.contains("**60175 rows"), "{md}");
    assert!(
        md.contains("**Time to first batch of a 10-chunk result** (60175 rows"),
        "{md}"
    );
    assert!(md.contains("*Measured at commit `"), "{md}");
    assert!(md.contains("| 4 | submit-and-poll |"), "{md}");
    assert!(md.contains("](plots/throughput_vs_size.svg)"), "{md}");
    for plot in ["throughput_vs_size.svg", "wall_vs_concurrency.svg"] {
        let svg = std::fs::read_to_string(plots.join(plot)).expect("a plot");
        assert!(svg.contains("<polyline"), "{plot}");
    }
}

fn line(scenario: &str, params: Value, figures: Value, commit: &str) -> String {
    serde_json::json!({
        "scenario": scenario, "params": params, "figures": figures,
        "provenance": {"commit": commit, "dirty": false, "at_unix": 1_795_538_951.0},
    })
    .to_string()
}

/// The report over hand-written lines: federation, a 100-chunk first-batch run, profiles, a
/// failed concurrency level, and a section re-measured at another commit.
#[test]
fn report_covers_federation_first_batch_and_profiles() {
    use serde_json::json;
    let dir = tempfile::tempdir().expect("temp dir");
    let large = |limit: u64, stage: &str, series: Option<&str>, figures: Value| {
        let mut params = json!({"scale": 1.0, "limit": limit, "stage": stage, "threads": 4,
                                "chunk_rows": if series.is_some() { 60_013 } else { 200_000 }});
        if let Some(series) = series {
            params["series"] = json!(series);
        }
        line("large-result", params, figures, "aaa1111")
    };
    let profile = json!({
        "path": "benchmarks/report/profiles-full/rows-all-flight.txt",
        "top_symbols": [[41.5, "lz4_flex::block::decompress::decompress_impl"], [9.25, "memcpy"]],
        "threads": [[70.0, "dbfed-download"], [30.0, "tokio-runtime-w"]],
    });
    let federation = |query: &str, pushdown: &str, bytes: f64| {
        line(
            "federation",
            json!({"query": query, "pushdown": pushdown, "scale": 1.0}),
            json!({"bytes_served": bytes, "rows_served": 10, "statements": 1, "wall_s": 0.5}),
            "bbb2222",
        )
    };
    let lines = [
        large(1000, "ceiling", None, json!({"rows": 1000, "arrow_ipc_bytes": 1.7e5, "chunks": 1, "read_mb_s": 100.0})),
        large(1000, "executor", None, json!({"read_mb_s": 50.0, "ratio_to_ceiling": 0.5, "wall_s": 0.1})),
        large(1000, "classic-sdk", None, json!({"read_mb_s": 5.0, "ratio_to_ceiling": 0.05, "wall_s": 0.3})),
        large(100_000, "ceiling", None, json!({"rows": 100_000, "arrow_ipc_bytes": 1.7e7, "chunks": 1, "read_mb_s": 500.0})),
        large(100_000, "executor", None, json!({"read_mb_s": 300.0, "ratio_to_ceiling": 0.6, "wall_s": 0.4})),
        // Slower than the executor on the middle size: the "never slower" target says so.
        large(100_000, "classic-sdk", None, json!({"read_mb_s": 400.0, "ratio_to_ceiling": 0.8, "wall_s": 0.2})),
        large(0, "ceiling", None, json!({"rows": 6_001_215, "arrow_ipc_bytes": 1e9, "chunks": 31, "read_mb_s": 1000.0})),
        large(0, "executor", None, json!({"read_mb_s": 800.0, "ratio_to_ceiling": 0.8, "wall_s": 3.0, "rows_per_s": 4.8e6, "warehouse_execute_s": 1.5})),
        large(0, "flight-ceiling", None, json!({"read_mb_s": 2000.0, "ratio_to_ceiling": 2.0})),
        large(0, "flight", None, json!({"read_mb_s": 750.0, "ratio_to_ceiling": 0.75, "wall_s": 3.5, "profile": profile})),
        large(0, "classic-sdk", None, json!({"read_mb_s": 100.0, "ratio_to_ceiling": 0.1, "wall_s": 12.0, "warehouse_execute_s": 1.0})),
        large(0, "ceiling", Some("first-batch"), json!({"rows": 6_001_215, "arrow_ipc_bytes": 1e9, "chunks": 100, "read_mb_s": 900.0})),
        large(0, "client", Some("first-batch"), json!({"time_to_first_batch_s": 1.75, "first_batch_after_execution_s": 0.125, "warehouse_execute_s": 1.625, "wall_s": 3.0, "read_mb_s": 700.0, "rows_per_s": 4.2e6})),
        large(0, "flight", Some("first-batch"), json!({"error": "boom | bang"})),
        federation("Q3", "full", 2e6),
        federation("Q3", "none", 5e8),
        federation("Q3", "needed", 1e6),
        federation("Q12", "full", 3e6),
        federation("Q12", "needed", 3e6),
        line("executor-concurrency", json!({"queries": 1000, "case": "failed"}), json!({"error": "level timed out"}), "aaa1111"),
    ]
    .join("\n");
    let results = dir.path().join("results.jsonl");
    std::fs::write(&results, lines).expect("write results");
    let output = dir.path().join("BENCHMARKS.md");
    let report = bench()
        .arg("report")
        .arg("--input")
        .arg(&results)
        .arg("--output")
        .arg(&output)
        .arg("--plots")
        .arg(dir.path().join("plots"))
        .arg("--analysis")
        .arg(dir.path().join("no-analysis.md"))
        .output()
        .expect("dbfed-bench runs");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let md = std::fs::read_to_string(&output).expect("the report");
    // Scenario 1: both stages against the disk ceiling, Flight against its own ceiling.
    for row in [
        "| 1 | executor ≥ 70 % of the disk ceiling (largest result) | executor: 80 % | **met** |",
        "| 1 | flight ≥ 70 % of the disk ceiling (largest result) | flight: 75 % | **met** |",
        "| 1 (issue 6) | flight ≥ 70 % of the in-memory Flight ceiling (largest result) | flight / flight-ceiling: 38 % | **missed** |",
        "| flight | 750 | – | 75 % | 38 % | – | 3.500 s | – | – |",
        "| executor | 800 | 4800000 | 80 % | – | 1.500 s | 3.000 s | – | – |",
        // Scenario 3 on small results: the middle size, not only the smallest.
        "| 3 | never slower than the classic approach on small results | every size but the largest: classic wall / dbfed wall ≥ 0.50× (worst: 100000 rows, classic-sdk) | **missed** |",
        // Scenario 4: Q3 full 2 MB for 1 MB needed: 2×; Q12 1×.
        "| 4 | full pushdown transfers ≤ 1.5× the bytes the query needs | 2.00× (worst query) | **missed** |",
        "| Q3 | none | 500.00 | – | 10 | 1 | 0.50 s | 500.00 |",
        // The 100-chunk result.
        "| client | 1.750 s | 0.125 s | 1.625 s | 3.000 s | 700 | 4200000 |",
        "| flight | failed: boom \\| bang | | | | | |",
        "| 1000 | the level | failed: level timed out | | | |",
    ] {
        assert!(md.contains(row), "{row}\n{md}");
    }
    assert!(
        md.contains("**Time to first batch of a 100-chunk result** (6001215 rows (1000.0 MB), chunks of 60013 rows)"),
        "{md}"
    );
    assert!(
        md.contains("(the warehouse's execution included: 1.500 s for the executor, 1.000 s for classic-sdk)"),
        "{md}"
    );
    // Provenance: §1 and §2 at one commit, §4 at another, and the report says so itself.
    assert!(
        md.contains("**The sections come from different commits**: §1 at `aaa1111`; §2 at `aaa1111`; §4 at `bbb2222`."),
        "{md}"
    );
    // The missed Flight target quotes the flight stage's profile.
    assert!(
        md.contains("**flight** at the largest size (38 % of the in-memory Flight ceiling: below its 70 % target)"),
        "{md}"
    );
    assert!(
        md.contains("  41.50%  lz4_flex::block::decompress::decompress_impl\n"),
        "{md}"
    );
    assert!(md.contains("  70.00%  dbfed-download\n"), "{md}");
    assert!(
        md.contains("[benchmarks/report/profiles-full/rows-all-flight.txt](benchmarks/report/profiles-full/rows-all-flight.txt)"),
        "{md}"
    );
    assert!(md.contains("Every level failed in this run."), "{md}");
    let bars = std::fs::read_to_string(dir.path().join("plots/bytes_per_pushdown.svg"))
        .expect("the federation plot");
    assert!(bars.contains(">TPC-H query</text>"), "{bars}");
}
