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
    }
    let stage = |limit: u64, name: &str| {
        records
            .iter()
            .find(|r| r["params"]["limit"] == limit && r["params"]["stage"] == name)
            .unwrap_or_else(|| panic!("no {name} line for limit {limit}: {records:?}"))
    };
    // LIMIT 500 reads 500 rows; the whole lineitem at SF 0.01 is 60 175 rows.
    assert_eq!(stage(500, "ceiling")["figures"]["rows"], 500);
    let whole = stage(0, "ceiling")["figures"]["rows"]
        .as_u64()
        .expect("rows");
    assert_eq!(whole, 60_175);
    for name in ["client", "executor", "flight-ceiling"] {
        let figures = &stage(0, name)["figures"];
        assert_eq!(figures["rows"], whole, "{name}: {figures}");
        assert!(figures["read_mb_s"].as_f64().expect("read_mb_s") > 0.0);
    }
    // The client's statement went to the warehouse once and its bytes were served.
    assert!(stage(0, "client")["figures"]["bytes_served"].as_u64() > Some(0));

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
    assert!(md.contains("| 4 | submit-and-poll |"), "{md}");
    assert!(md.contains("](plots/throughput_vs_size.svg)"), "{md}");
    for plot in ["throughput_vs_size.svg", "wall_vs_concurrency.svg"] {
        let svg = std::fs::read_to_string(plots.join(plot)).expect("a plot");
        assert!(svg.contains("<polyline"), "{plot}");
    }
}
