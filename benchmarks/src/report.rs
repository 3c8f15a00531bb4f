//! `report`: turns a results file (the scenarios' JSON lines) into `BENCHMARKS.md` and SVG plots.
//!
//! Every figure in the report comes from the results file; every ratio compares figures of the
//! same run. A target is reported as met or missed from the figures, never assumed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::svg::{BarChart, LineChart, Series};

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The results file: one JSON object per line, as the scenarios print them (other lines are
    /// ignored).
    #[arg(long)]
    pub input: PathBuf,
    /// The Markdown report to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// Folder of the SVG plots (created when missing).
    #[arg(long, default_value = "benchmarks/report")]
    pub plots: PathBuf,
    /// Hand-written analysis of the figures (why a target was missed, what to do next), inserted
    /// before the "Reproduce" section when the file exists.
    #[arg(long, default_value = "benchmarks/analysis.md")]
    pub analysis: PathBuf,
}

/// One result line.
#[derive(Debug, Clone)]
struct Record {
    scenario: String,
    params: Value,
    figures: Value,
    /// `{"commit", "dirty", "at_unix"}` as the scenario stamped it (null on older lines).
    provenance: Value,
}

impl Record {
    fn param_str(&self, key: &str) -> &str {
        self.params[key].as_str().unwrap_or("")
    }

    fn param_u64(&self, key: &str) -> Option<u64> {
        self.params[key].as_u64()
    }

    fn fig(&self, key: &str) -> Option<f64> {
        self.figures[key].as_f64()
    }
}

/// Parses the result lines of `text`; lines that are not result objects are skipped, and so
/// are the lines a child process printed for its parent.
fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter_map(|v| {
            let scenario = v["scenario"].as_str()?.to_owned();
            if v["params"]["child"] == Value::Bool(true) {
                return None;
            }
            Some(Record {
                scenario,
                params: v["params"].clone(),
                figures: v["figures"].clone(),
                provenance: v["provenance"].clone(),
            })
        })
        .collect()
}

/// `analysis` placed before the report's "Reproduce" section (or at its end).
fn insert_before_reproduce(markdown: &str, analysis: &str) -> String {
    let analysis = format!("{}\n\n", analysis.trim_end());
    match markdown.find(REPRODUCE) {
        Some(at) => format!("{}{analysis}{}", &markdown[..at], &markdown[at..]),
        None => format!("{}\n\n{analysis}", markdown.trim_end()),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let records = parse(&text);
    if records.is_empty() {
        anyhow::bail!("{} holds no result lines", args.input.display());
    }
    std::fs::create_dir_all(&args.plots)
        .with_context(|| format!("cannot create {}", args.plots.display()))?;
    let link_base = relative_dir(&args.plots, args.output.parent().unwrap_or(Path::new(".")));
    let report = Report::new(&records).input(&args.input.display().to_string());
    let (mut markdown, plots) = report.render(&link_base);
    if args.analysis.exists() {
        let analysis = std::fs::read_to_string(&args.analysis)
            .with_context(|| format!("cannot read {}", args.analysis.display()))?;
        markdown = insert_before_reproduce(&markdown, &analysis);
    }
    for (name, svg) in plots {
        let path = args.plots.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::write(&args.output, markdown)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "wrote {} and plots in {}",
        args.output.display(),
        args.plots.display()
    );
    Ok(())
}

/// `plots` as seen from `from` (both made absolute), for Markdown links.
fn relative_dir(plots: &Path, from: &Path) -> String {
    let abs = |p: &Path| {
        if p.as_os_str().is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else if p.is_absolute() {
            p.to_owned()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        }
    };
    let (plots, from) = (abs(plots), abs(from));
    match plots.strip_prefix(&from) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => plots.display().to_string(),
    }
}

fn mib(bytes: Option<f64>) -> String {
    bytes.map_or("–".into(), |b| format!("{:.0} MiB", b / (1 << 20) as f64))
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn pct(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{:.0} %", v * 100.0))
}

/// `ratio` of theirs to ours as "**2.0×** better" or, below 1, "**2.0×** worse".
fn times(ratio: f64, better: &str, worse: &str) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        "–".into()
    } else if ratio >= 1.0 {
        format!("**{ratio:.1}×** {better}")
    } else {
        format!("**{:.1}×** {worse}", 1.0 / ratio)
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

/// A large-result size label.
fn size_label(rows: Option<f64>, bytes: Option<f64>) -> String {
    format!(
        "{} rows ({} MB)",
        rows.map_or("?".into(), |r| format!("{r:.0}")),
        bytes.map_or("?".into(), |b| format!("{:.1}", b / 1e6))
    )
}

struct Report<'a> {
    records: &'a [Record],
    /// The results file, as named on the command line.
    input: Option<String>,
}

/// A commit's label and the dates its lines were measured.
type Commit = (String, Vec<String>);

/// How one result line's provenance reads: "`abc1234`", "`abc1234` with uncommitted changes",
/// or "an unrecorded commit".
fn commit_label(provenance: &Value) -> String {
    match provenance["commit"].as_str() {
        Some(commit) if commit != "unknown" => match provenance["dirty"].as_bool() {
            Some(true) => format!("`{commit}` with uncommitted changes"),
            _ => format!("`{commit}`"),
        },
        _ => "an unrecorded commit".into(),
    }
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time.
fn utc_date(unix: f64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = (unix / 86_400.0).floor() as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

impl<'a> Report<'a> {
    fn new(records: &'a [Record]) -> Self {
        Self {
            records,
            input: None,
        }
    }

    /// Names the results file in the report's first paragraph.
    fn input(mut self, input: &str) -> Self {
        self.input = Some(input.to_owned());
        self
    }

    /// The commits (labelled) the lines of `records` were measured at, in first-seen order, with
    /// their dates.
    fn commits<'r>(records: impl Iterator<Item = &'r Record>) -> Vec<Commit> {
        let mut commits: Vec<Commit> = Vec::new();
        // Lines written before provenance stamps existed have none: they name no commit.
        for r in records.filter(|r| !r.provenance.is_null()) {
            let label = commit_label(&r.provenance);
            let date = r.provenance["at_unix"].as_f64().map(utc_date);
            match commits.iter_mut().find(|(l, _)| *l == label) {
                Some((_, dates)) => {
                    if let Some(d) = date.filter(|d| !dates.contains(d)) {
                        dates.push(d);
                    }
                }
                None => commits.push((label, date.into_iter().collect())),
            }
        }
        commits
    }

    /// A section's provenance line, from its lines' stamps.
    fn provenance_line<'r>(records: impl Iterator<Item = &'r Record>) -> String {
        let commits = Self::commits(records);
        if commits.is_empty() {
            return String::new();
        }
        let list: Vec<String> = commits
            .iter()
            .map(|(label, dates)| {
                if dates.is_empty() {
                    label.clone()
                } else {
                    format!("{label} ({})", dates.join(", "))
                }
            })
            .collect();
        format!("*Measured at commit {}.*\n\n", list.join(" and "))
    }

    /// The scenario names of each report section, for provenance.
    const SECTIONS: [(&'static str, &'static [&'static str]); 5] = [
        ("§1", &["large-result"]),
        ("§2", &["executor-concurrency"]),
        ("§4", &["federation"]),
        ("§5", &["adbc"]),
        (
            "the component figures",
            &["client-throughput", "emulator-throughput"],
        ),
    ];

    fn section_records(&self, scenarios: &'a [&'a str]) -> impl Iterator<Item = &'a Record> {
        self.records
            .iter()
            .filter(move |r| scenarios.contains(&r.scenario.as_str()))
    }

    /// A sentence naming each section's commit when the sections come from different commits
    /// (e.g. one scenario re-measured later and appended to the results file); empty otherwise.
    fn mixed_commits(&self) -> String {
        let per_section: Vec<(&str, Vec<Commit>)> = Self::SECTIONS
            .iter()
            .map(|(name, scenarios)| (*name, Self::commits(self.section_records(scenarios))))
            .filter(|(_, commits)| !commits.is_empty())
            .collect();
        let mut all: Vec<&String> = per_section
            .iter()
            .flat_map(|(_, c)| c.iter().map(|(l, _)| l))
            .collect();
        all.sort();
        all.dedup();
        if all.len() <= 1 {
            return String::new();
        }
        let parts: Vec<String> = per_section
            .iter()
            .map(|(name, commits)| {
                let labels: Vec<&str> = commits.iter().map(|(l, _)| l.as_str()).collect();
                format!("{name} at {}", labels.join(" and "))
            })
            .collect();
        format!(
            "**The sections come from different commits**: {}. Compare figures across sections \
             with that in mind.\n\n",
            parts.join("; ")
        )
    }

    fn of(&self, scenario: &str) -> impl Iterator<Item = &'a Record> {
        let scenario = scenario.to_owned();
        self.records.iter().filter(move |r| r.scenario == scenario)
    }

    fn render(&self, plot_dir: &str) -> (String, Vec<(String, String)>) {
        let mut md = String::new();
        let mut plots = Vec::new();
        let mut targets = Vec::new();
        let mut body = String::new();
        self.large_result(&mut body, &mut plots, &mut targets, plot_dir);
        self.concurrency(&mut body, &mut plots, &mut targets, plot_dir);
        self.federation(&mut body, &mut plots, &mut targets, plot_dir);
        self.adbc(&mut body, &mut targets);
        self.components(&mut body);
        self.profiles(&mut body);

        md.push_str("# Benchmarks\n\n");
        let meta = self.of("meta").next();
        let _ =
            writeln!(
            md,
            "Generated by `scripts/bench{}` ({}) from the results file `{}`; every figure below \
             comes from that file{}.\n",
            meta.map_or(String::new(), |m| format!(
                " --size {}",
                m.param_str("size")
            )),
            meta.map_or("date unknown".into(), |m| {
                format!("{}, commit {}", m.param_str("date"), m.param_str("commit"))
            }),
            self.input.clone().unwrap_or_else(|| meta.map_or("results.jsonl".into(), |m| m
                .param_str("results")
                .to_owned())),
            meta.map_or(String::new(), |m| format!(
                " on {} ({} cores, {} GiB, loopback only; load average {} when the suite started)",
                m.param_str("machine"),
                m.param_str("cores"),
                m.param_str("memory_gib"),
                m.param_str("load_average"),
            )),
        );
        md.push_str(
            "Every scenario starts its own emulator (the `dbfed-emulator` crate: the Databricks SQL \
             Statement Execution API on DataFusion) on 127.0.0.1. The machine is shared and \
             noisy: compare ratios measured side by side in one run, not absolute numbers across \
             runs. Targets are those of issue 8 (and issue 6's Flight target); a missed target is \
             said so, with the stage breakdown that shows why, and the stages' `perf` profiles \
             when the suite ran with `--perf` (see *Profiles*).\n\n",
        );
        md.push_str(&self.mixed_commits());
        md.push_str(
            "## Targets\n\n| scenario | target | this run | verdict |\n|---|---|---|---|\n",
        );
        for (scenario, target, measured, met) in &targets {
            let v = met.map_or("not measured", |m| verdict(m));
            let _ = writeln!(md, "| {scenario} | {target} | {measured} | {v} |");
        }
        md.push('\n');
        let failed: Vec<_> = self
            .of("failed")
            .map(|r| format!("`{}`", r.param_str("name")))
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(
                md,
                "**Failed in this run** (see the suite's log): {}. Their sections below are \
                 empty or partial.\n",
                failed.join(", ")
            );
        }
        md.push_str(&body);
        md.push_str(REPRODUCE);
        (md, plots)
    }

    /// Scenario 1 and the large-result half of scenario 3.
    fn large_result(
        &self,
        md: &mut String,
        plots: &mut Vec<(String, String)>,
        targets: &mut Vec<Target>,
        plot_dir: &str,
    ) {
        let all: Vec<_> = self.of("large-result").collect();
        let records: Vec<_> = all
            .iter()
            .copied()
            .filter(|r| r.param_str("series").is_empty())
            .collect();
        let first_batch: Vec<_> = all
            .iter()
            .copied()
            .filter(|r| r.param_str("series") == "first-batch")
            .collect();
        md.push_str("## 1. Large result, end to end (`large-result`)\n\n");
        md.push_str(&Self::provenance_line(all.iter().copied()));
        if records.is_empty() {
            md.push_str("Not measured in this run.\n\n");
            targets.push(target1(None, "executor"));
            targets.push(target1(None, "flight"));
            targets.push(target_flight(None));
            targets.push(target3_large(None));
            self.first_batch(md, &first_batch);
            return;
        }
        let scale = records[0].params["scale"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "`SELECT * FROM samples.tpch.lineitem LIMIT n` on the emulator (TPC-H SF {scale}), \
             several result sizes. For each size the statement's chunk files are first fetched \
             and written to local disk; reading and decoding them (LZ4 + Arrow IPC) from disk \
             with {} threads is the **ceiling**. Each stage then reads the same result in a \
             process of its own (its own peak RSS): `client` (`dbfed_databricks::Client`), \
             `executor` (the async bridge over it), `datafusion` (a `SELECT` through a \
             `DatabricksSource` in a federated DataFusion session, drained as a stream), \
             `flight` (that session served by `dbfed-flight`, read by a Flight SQL client on \
             loopback: the whole path end to end), and the classic Python clients in \
             `asyncio.to_thread` (`classic-sdk`: databricks-sdk statement execution over plain \
             HTTP; `classic-connector`: databricks-sql-connector, `use_sea=True`, over HTTPS, \
             `fetchall_arrow`). **flight-ceiling** is the Flight transport alone: the same \
             batches, read beforehand (untimed), streamed from memory by a minimal Flight server \
             to a Flight client on loopback. It can exceed the disk ceiling: it decompresses and \
             decodes nothing (the batches are already decoded in memory), it only encodes them \
             into Flight IPC messages and sends them over loopback, while the disk ceiling pays \
             LZ4 decompression and IPC decoding for every byte. *Read* MB/s and rows/s count \
             the Arrow IPC bytes and rows from the moment the warehouse finished the statement \
             (its `finished_at`) to the last batch (the flight-ceiling's from its first request); \
             *warehouse* is the statement's execution on the emulator (submission to \
             `finished_at`, per stage): the emulator encodes every chunk file before it reports \
             the statement finished, and compresses it too for the stages that ask for LZ4 \
             (every dbfed stage, and the connector), so this time differs between stages (and \
             with the machine's load) and is not charged to their read; *wall* is the whole \
             query from submission; *first batch* is measured from submission.\n",
            records[0].params["threads"]
        );
        // size (limit) -> stage -> record
        let mut by_size: BTreeMap<u64, BTreeMap<String, &Record>> = BTreeMap::new();
        for r in &records {
            let limit = r.param_u64("limit").unwrap_or(0);
            by_size
                .entry(limit)
                .or_default()
                .insert(r.param_str("stage").to_owned(), r);
        }
        // Sort sizes by bytes (limit 0 is the whole table, the largest).
        let mut sizes: Vec<_> = by_size.iter().collect();
        sizes.sort_by(|a, b| {
            let bytes = |m: &BTreeMap<String, &Record>| {
                m.get("ceiling")
                    .and_then(|c| c.fig("arrow_ipc_bytes"))
                    .unwrap_or(0.0)
            };
            bytes(a.1).total_cmp(&bytes(b.1))
        });
        let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for (_, stages) in &sizes {
            let ceiling = stages.get("ceiling");
            let flight_ceiling = stages
                .get("flight-ceiling")
                .and_then(|r| r.fig("read_mb_s"));
            let _ = writeln!(
                md,
                "\n**{}**, {}\n\n| stage | read MB/s | rows/s | of the ceiling | of the Flight ceiling | warehouse | wall | first batch | peak RSS |\n|---|---|---|---|---|---|---|---|---|",
                size_label(
                    ceiling.and_then(|c| c.fig("rows")),
                    ceiling.and_then(|c| c.fig("arrow_ipc_bytes"))
                ),
                match ceiling.and_then(|c| c.fig("chunks")) {
                    Some(1.0) => "1 chunk file".to_owned(),
                    Some(c) => format!("{c:.0} chunk files"),
                    None => "? chunk files".to_owned(),
                },
            );
            let mb = ceiling
                .and_then(|c| c.fig("arrow_ipc_bytes"))
                .map(|b| b / 1e6);
            for (name, r) in ordered_stages(stages) {
                if let Some(error) = r.figures["error"].as_str() {
                    let _ = writeln!(
                        md,
                        "| {name} | failed: {} | | | | | | | |",
                        error.replace('|', "\\|").replace('\n', " ")
                    );
                    continue;
                }
                let of_flight = if name == "flight" {
                    flight_ceiling.and_then(|c| Some(r.fig("read_mb_s")? / c.max(f64::EPSILON)))
                } else {
                    None
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    num(r.fig("read_mb_s"), 0),
                    num(rows_per_s(r), 0),
                    pct(r.fig("ratio_to_ceiling")),
                    pct(of_flight),
                    secs(r.fig("warehouse_execute_s")),
                    secs(r.fig("wall_s")),
                    secs(r.fig("time_to_first_batch_s")),
                    mib(r.fig("peak_rss_bytes")),
                );
                if let (Some(mb), Some(rate), Some(slot)) = (
                    mb,
                    r.fig("read_mb_s"),
                    STAGE_ORDER.iter().find(|s| **s == name),
                ) {
                    series.entry(slot).or_default().push((mb, rate));
                }
            }
        }
        md.push('\n');
        let chart = LineChart {
            title: "Read throughput vs. result size".into(),
            x_label: "result size (MB of Arrow IPC)".into(),
            y_label: "MB/s after the warehouse finished".into(),
            x_log: true,
            y_log: true,
            series: STAGE_ORDER
                .iter()
                .filter_map(|s| {
                    series.get(s).map(|points| Series {
                        name: (*s).to_owned(),
                        points: points.clone(),
                        dashed: s.ends_with("ceiling"),
                    })
                })
                .collect(),
        };
        plots.push(("throughput_vs_size.svg".into(), chart.render()));
        let _ = writeln!(
            md,
            "![throughput vs. result size]({plot_dir}/throughput_vs_size.svg)\n"
        );

        // Targets at the largest size.
        let largest = sizes.last().map(|(_, s)| *s);
        let get = |stage: &str| {
            largest
                .and_then(|s| s.get(stage).copied())
                .filter(|r| r.figures["error"].is_null())
        };
        let ratio_of = |stage: &str| get(stage).and_then(|r| r.fig("ratio_to_ceiling"));
        let executor = get("executor");
        let (executor_ratio, flight_ratio) = (ratio_of("executor"), ratio_of("flight"));
        let flight_vs_transport = match (
            get("flight").and_then(|r| r.fig("read_mb_s")),
            get("flight-ceiling").and_then(|r| r.fig("read_mb_s")),
        ) {
            (Some(f), Some(c)) => Some(f / c.max(f64::EPSILON)),
            _ => None,
        };
        targets.push(target1(executor_ratio, "executor"));
        targets.push(target1(flight_ratio, "flight"));
        targets.push(target_flight(flight_vs_transport));
        let client = ratio_of("client");
        let _ = writeln!(
            md,
            "At the largest size, against the disk ceiling (target ≥ 70 %): the client alone \
             reads at {}, the executor at {} ({}), DataFusion at {}, Flight end to end at {} \
             ({}). Against the in-memory Flight ceiling (issue 6's target, ≥ 70 %) Flight reads \
             at {} ({}).{}\n",
            pct(client),
            pct(executor_ratio),
            executor_ratio.map_or("not measured", |r| verdict(r >= 0.7)),
            pct(ratio_of("datafusion")),
            pct(flight_ratio),
            flight_ratio.map_or("not measured", |r| verdict(r >= 0.7)),
            pct(flight_vs_transport),
            flight_vs_transport.map_or("not measured", |r| verdict(r >= 0.7)),
            if executor_ratio.is_some_and(|r| r < 0.7) || flight_ratio.is_some_and(|r| r < 0.7) {
                " The gap is in the stage where the ratio drops: the ceiling decodes files \
                 already on disk with all threads, the client adds HTTP download and in-order \
                 delivery through a bounded prefetch window, the executor adds one bounded \
                 channel hop, DataFusion its plan and stream, Flight the IPC encoding, gRPC and \
                 the client's decoding; see `client-throughput` below for the single-core decode \
                 rate, which bounds every stage on this 2-core machine, and *Profiles* for where \
                 the time goes when the suite ran with `--perf`."
            } else {
                ""
            }
        );
        let classic_large = ["classic-sdk", "classic-connector"]
            .iter()
            .filter_map(|c| Some((*c, get(c)?)))
            .collect::<Vec<_>>();
        let dbfed_rate = executor.and_then(|r| r.fig("read_mb_s"));
        let mut worst: Option<f64> = None;
        for (name, r) in &classic_large {
            let (Some(ours), Some(theirs)) = (dbfed_rate, r.fig("read_mb_s")) else {
                continue;
            };
            let speedup = ours / theirs.max(f64::EPSILON);
            worst = Some(worst.map_or(speedup, |w: f64| w.min(speedup)));
            let wall = match (executor.and_then(|e| e.fig("wall_s")), r.fig("wall_s")) {
                (Some(a), Some(b)) if a > 0.0 => times(b / a, "faster", "slower"),
                _ => "–".into(),
            };
            let memory = match (
                executor.and_then(|e| e.fig("peak_rss_bytes")),
                r.fig("peak_rss_bytes"),
            ) {
                (Some(a), Some(b)) if a > 0.0 => times(b / a, "less", "more"),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "- dbfed executor vs. {name}: **{speedup:.1}×** the read throughput; end to end \
                 (the warehouse's execution included: {} for the executor, {} for {name}) {wall}; \
                 peak memory {memory}.",
                secs(executor.and_then(|e| e.fig("warehouse_execute_s"))),
                secs(r.fig("warehouse_execute_s")),
            );
        }
        md.push('\n');
        targets.push(target3_large(worst));

        // Never slower on small results: every size but the largest, end-to-end wall.
        let smaller = &sizes[..sizes.len().saturating_sub(1)];
        let mut slowest: Option<(f64, String)> = None;
        for (_, stages) in smaller {
            let label = stages
                .get("ceiling")
                .map_or("?".into(), |c| format!("{} rows", num(c.fig("rows"), 0)));
            let ours = stages
                .get("executor")
                .filter(|r| r.figures["error"].is_null())
                .and_then(|r| r.fig("wall_s"));
            for name in ["classic-sdk", "classic-connector"] {
                if let (Some(ours), Some(theirs)) =
                    (ours, stages.get(name).and_then(|r| r.fig("wall_s")))
                {
                    let r = theirs / ours.max(f64::EPSILON);
                    if slowest.as_ref().is_none_or(|(s, _)| r < *s) {
                        slowest = Some((r, format!("{label}, {name}")));
                    }
                }
            }
        }
        targets.push((
            "3".into(),
            "never slower than the classic approach on small results".into(),
            slowest.as_ref().map_or("–".into(), |(r, at)| {
                format!(
                    "every size but the largest: classic wall / dbfed wall ≥ {r:.2}× (worst: {at})"
                )
            }),
            slowest.map(|(r, _)| r >= 1.0),
        ));
        self.first_batch(md, &first_batch);
    }

    /// The time to first batch of the many-chunk result (`--first-batch-chunks`).
    fn first_batch(&self, md: &mut String, records: &[&Record]) {
        if records.is_empty() {
            return;
        }
        let ceiling = records.iter().find(|r| r.param_str("stage") == "ceiling");
        let _ = writeln!(
            md,
            "**Time to first batch of a {}-chunk result** ({}, chunks of {} rows): from the \
             query's submission, and from the moment the warehouse finished the statement (its \
             `finished_at`).\n\n| stage | first batch from submission | from `finished_at` | \
             warehouse | wall | read MB/s | rows/s |\n|---|---|---|---|---|---|---|",
            ceiling
                .and_then(|c| c.fig("chunks"))
                .map_or("?".into(), |c| format!("{c:.0}")),
            size_label(
                ceiling.and_then(|c| c.fig("rows")),
                ceiling.and_then(|c| c.fig("arrow_ipc_bytes"))
            ),
            records[0].params["chunk_rows"],
        );
        let stages: BTreeMap<String, &Record> = records
            .iter()
            .filter(|r| r.param_str("stage") != "ceiling")
            .map(|r| (r.param_str("stage").to_owned(), *r))
            .collect();
        for (name, r) in ordered_stages(&stages) {
            if let Some(error) = r.figures["error"].as_str() {
                let _ = writeln!(
                    md,
                    "| {name} | failed: {} | | | | | |",
                    error.replace('|', "\\|").replace('\n', " ")
                );
                continue;
            }
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                secs(r.fig("time_to_first_batch_s")),
                secs(r.fig("first_batch_after_execution_s")),
                secs(r.fig("warehouse_execute_s")),
                secs(r.fig("wall_s")),
                num(r.fig("read_mb_s"), 0),
                num(rows_per_s(r), 0),
            );
        }
        md.push('\n');
    }

    /// Scenario 2 and its classic half.
    fn concurrency(
        &self,
        md: &mut String,
        plots: &mut Vec<(String, String)>,
        targets: &mut Vec<Target>,
        plot_dir: &str,
    ) {
        let all: Vec<_> = self.of("executor-concurrency").collect();
        let records: Vec<_> = all
            .iter()
            .copied()
            .filter(|r| r.param_str("case") != "overhead")
            .collect();
        md.push_str("## 2. Concurrency (`concurrency-sweep`)\n\n");
        md.push_str(&Self::provenance_line(all.iter().copied()));
        if records.is_empty() {
            md.push_str("Not measured in this run.\n\n");
            targets.push(target2(None));
            targets.push(target3_concurrency(None));
            return;
        }
        let p = &records
            .iter()
            .find(|r| r.param_str("case") != "failed")
            .unwrap_or(&records[0])
            .params;
        if p["latency_ms"].is_null() {
            md.push_str("Every level failed in this run.\n\n");
        } else {
            let _ = writeln!(
                md,
                "N queries submitted at once; the emulator holds every statement RUNNING for {} ms \
             and runs at most {} at once, so the ideal wall time is `ceil(N/{}) × {} ms`. Each \
             approach runs in its own process (threads and RSS are its own). dbfed: \
             thread-per-query ({} workers) and submit-and-poll ({} workers, one poller); \
             classic: Python `asyncio.to_thread` with a {}-thread pool over \
             databricks-sql-connector (HTTPS: the connector speaks only HTTPS, a small \
             handicap not measured separately) and over databricks-sdk (polling, plain HTTP, \
             like dbfed).\n",
                p["latency_ms"],
                p["concurrency"],
                p["concurrency"],
                p["latency_ms"],
                p["concurrency"],
                p["poll_threads"],
                p["concurrency"],
            );
        }
        md.push_str(
            "| N | approach | wall | × ideal | peak OS threads | peak RSS |\n|---|---|---|---|---|---|\n",
        );
        let order = [
            "submit-and-poll",
            "thread-per-query",
            "classic-connector",
            "classic-sdk",
            "failed",
        ];
        let mut levels: BTreeMap<u64, BTreeMap<String, &Record>> = BTreeMap::new();
        for r in &records {
            levels
                .entry(r.param_u64("queries").unwrap_or(0))
                .or_default()
                .insert(r.param_str("case").to_owned(), r);
        }
        let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        let mut ideal = Vec::new();
        let mut target_ok = true;
        let mut target_text = Vec::new();
        let mut speedups = Vec::new();
        for (n, cases) in &levels {
            for name in order {
                let Some(r) = cases.get(name) else { continue };
                if let Some(error) = r.figures["error"].as_str() {
                    let _ = writeln!(
                        md,
                        "| {n} | {} | failed: {} | | | |",
                        if name == "failed" { "the level" } else { name },
                        error.replace('|', "\\|").replace('\n', " ")
                    );
                    target_ok = false;
                    target_text.push(format!("N={n}: failed"));
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {n} | {name} | {} | {} | {} | {} |",
                    r.fig("wall_s").map_or("–".into(), |w| format!("{w:.2} s")),
                    num(r.fig("wall_over_ideal"), 2),
                    r.figures["peak_os_threads"],
                    mib(r.fig("peak_rss_bytes")),
                );
                if let Some(w) = r.fig("wall_s") {
                    series.entry(name).or_default().push((*n as f64, w));
                }
                if let Some(i) = r.fig("ideal_s").filter(|_| name == "submit-and-poll") {
                    ideal.push((*n as f64, i));
                }
            }
            if let Some(sp) = cases.get("submit-and-poll") {
                let ratio = sp.fig("wall_over_ideal").unwrap_or(f64::INFINITY);
                let threads = sp.figures["peak_os_threads"].as_u64().unwrap_or(u64::MAX);
                target_ok &= ratio <= 1.1 && threads <= 32;
                target_text.push(format!("N={n}: ×{ratio:.2}, {threads} thr"));
                for classic in ["classic-connector", "classic-sdk"] {
                    let theirs = cases.get(classic);
                    if let (Some(a), Some(b)) =
                        (sp.fig("wall_s"), theirs.and_then(|c| c.fig("wall_s")))
                    {
                        let memory = match (
                            sp.fig("peak_rss_bytes"),
                            theirs.and_then(|c| c.fig("peak_rss_bytes")),
                        ) {
                            (Some(ours), Some(theirs)) if ours > 0.0 => Some(theirs / ours),
                            _ => None,
                        };
                        speedups.push((*n, classic, b / a.max(f64::EPSILON), memory));
                    }
                }
            }
        }
        md.push('\n');
        let mut lines: Vec<Series> = order
            .iter()
            .filter_map(|name| {
                series.get(name).map(|points| Series {
                    name: (*name).to_owned(),
                    points: points.clone(),
                    dashed: false,
                })
            })
            .collect();
        lines.push(Series {
            name: "ideal".into(),
            points: ideal,
            dashed: true,
        });
        let chart = LineChart {
            title: "Wall time vs. concurrent queries".into(),
            x_label: "concurrent queries".into(),
            y_label: "wall time (s)".into(),
            x_log: true,
            y_log: true,
            series: lines,
        };
        plots.push(("wall_vs_concurrency.svg".into(), chart.render()));
        let _ = writeln!(
            md,
            "![wall time vs. concurrency]({plot_dir}/wall_vs_concurrency.svg)\n"
        );
        targets.push(target2(Some((target_ok, target_text.join("; ")))));
        for (n, classic, s, memory) in &speedups {
            let _ = writeln!(
                md,
                "- N={n}: dbfed submit-and-poll is {} than {classic}; peak memory {}.",
                times(*s, "faster", "slower"),
                memory.map_or("–".into(), |m| times(m, "less", "more")),
            );
        }
        md.push('\n');
        let worst = speedups
            .iter()
            .map(|s| s.2)
            .fold(None, |acc: Option<f64>, s| {
                Some(acc.map_or(s, |a| a.min(s)))
            });
        targets.push(target3_concurrency(worst));
        if !target_ok {
            md.push_str(
                "Where submit-and-poll missed its target, the executor's metrics in the results \
                 file (`metrics.queue_wait_ms`, `peak_running`, `peak_polling`) show whether \
                 queries waited for a worker (queue wait) or for the warehouse (running at the \
                 warehouse's limit).\n\n",
            );
        }
    }

    /// Scenario 4.
    fn federation(
        &self,
        md: &mut String,
        plots: &mut Vec<(String, String)>,
        targets: &mut Vec<Target>,
        plot_dir: &str,
    ) {
        let records: Vec<_> = self.of("federation").collect();
        md.push_str("## 4. Federation: bytes transferred per pushdown level (`federation`)\n\n");
        md.push_str(&Self::provenance_line(records.iter().copied()));
        if records.is_empty() {
            md.push_str(
                "Not measured in this run: the federation layer (`dbfed-datafusion`) did not \
                 offer a `DatabricksSource` with pushdown modes when this suite ran.\n\n",
            );
            targets.push(target4(None));
            return;
        }
        md.push_str(
            "TPC-H with mixed placement: `customer`, `nation`, `region` local (DataFusion \
             memory tables), every other table on the emulator. Bytes and rows are what the \
             emulator served (its statement history: `bytes_served`, `rows`); **MB sent** is what \
             the client sent to describe its statements (SQL text and parameters: \
             `request_bytes`), runtime-filter key lists included, and the ratio to the needed \
             bytes counts both directions. **needed** is the \
             baseline of what the query really needs: the query's remote part (the join of its \
             remote tables) sent as one statement with exactly the predicates the query implies, \
             the local side's join keys computed beforehand and inlined (e.g. Q3's `o_custkey \
             IN (<keys of BUILDING customers>)`), and only the columns the rest of the query \
             uses; a query whose tables are all remote (Q12) is its own baseline. The SQL of \
             each is in the results file (`sql_sent`).\n\n",
        );
        md.push_str("| query | pushdown | MB served | MB sent | rows served | statements | wall | × needed bytes |\n|---|---|---|---|---|---|---|---|\n");
        // Bytes both ways (results files without `request_bytes` count results only).
        let transferred =
            |r: &Record| Some(r.fig("bytes_served")? + r.fig("request_bytes").unwrap_or(0.0));
        // Ordered as Q3, Q5, Q10 (shorter names first), not as strings.
        let mut queries: BTreeSet<QueryName> = BTreeSet::new();
        let mut modes: Vec<String> = Vec::new();
        let mut worst: Option<f64> = None;
        for r in &records {
            queries.insert(QueryName(r.param_str("query").to_owned()));
            let mode = r.param_str("pushdown").to_owned();
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        for QueryName(q) in &queries {
            let needed = records
                .iter()
                .find(|r| r.param_str("query") == q && r.param_str("pushdown") == "needed")
                .and_then(|r| transferred(r));
            for r in records.iter().filter(|r| r.param_str("query") == q) {
                if let Some(error) = r.figures["error"].as_str() {
                    let _ = writeln!(
                        md,
                        "| {q} | {} | failed: {} | | | | | |",
                        r.param_str("pushdown"),
                        error.replace('|', "\\|").replace('\n', " ")
                    );
                    continue;
                }
                let ratio = needed.and_then(|n| Some(transferred(r)? / n.max(1.0)));
                if let Some(x) = ratio.filter(|_| r.param_str("pushdown") == "full") {
                    worst = Some(worst.map_or(x, |w: f64| w.max(x)));
                }
                let _ = writeln!(
                    md,
                    "| {q} | {} | {} | {} | {} | {} | {} | {} |",
                    r.param_str("pushdown"),
                    num(r.fig("bytes_served").map(|b| b / 1e6), 2),
                    num(r.fig("request_bytes").map(|b| b / 1e6), 2),
                    num(r.fig("rows_served"), 0),
                    num(r.fig("statements"), 0),
                    r.fig("wall_s").map_or("–".into(), |w| format!("{w:.2} s")),
                    num(ratio, 2),
                );
            }
        }
        md.push('\n');
        let groups: Vec<String> = queries.iter().map(|q| q.0.clone()).collect();
        let series = modes
            .iter()
            .map(|m| {
                let values = groups
                    .iter()
                    .map(|q| {
                        records
                            .iter()
                            .find(|r| r.param_str("query") == q && r.param_str("pushdown") == m)
                            .and_then(|r| r.fig("bytes_served"))
                            .map_or(f64::NAN, |b| b / 1e6)
                    })
                    .collect();
                (m.clone(), values)
            })
            .collect();
        let chart = BarChart {
            title: "Bytes transferred from the warehouse per pushdown level".into(),
            x_label: "TPC-H query".into(),
            y_label: "MB served (log)".into(),
            groups,
            series,
            y_log: true,
        };
        plots.push(("bytes_per_pushdown.svg".into(), chart.render()));
        let _ = writeln!(
            md,
            "![bytes per pushdown level]({plot_dir}/bytes_per_pushdown.svg)\n"
        );
        targets.push(target4(worst));
    }

    /// Scenario 5.
    fn adbc(&self, md: &mut String, targets: &mut Vec<Target>) {
        let records: Vec<_> = self.of("adbc").collect();
        md.push_str("## 5. Flight SQL clients: ADBC Python (`adbc`)\n\n");
        md.push_str(&Self::provenance_line(records.iter().copied()));
        let _ = targets;
        if records.is_empty() {
            md.push_str(
                "Not measured in this run: the Flight SQL server (`dbfed-flight`) and the ADBC \
                 driver in the test venv were not available when this suite ran.\n\n",
            );
            return;
        }
        md.push_str(
            "`fetch_arrow_table` of `SELECT * FROM samples.tpch.lineitem LIMIT n` through \
             `dbfed serve`'s Flight SQL server (in-process, loopback). *Read* MB/s count from the \
             moment the warehouse finished the statement (its `finished_at`) to the table; *wall* \
             MB/s from `execute`, the warehouse's execution included.\n\n\
             | rows | MB | read MB/s | wall MB/s | warehouse | wall | peak RSS (Python) |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for r in records {
            if let Some(error) = r.figures["error"].as_str() {
                let _ = writeln!(
                    md,
                    "| {} | failed: {} | | | | | |",
                    r.param_u64("limit").map_or("?".into(), |l| l.to_string()),
                    error.replace('|', "\\|").replace('\n', " ")
                );
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                num(r.fig("rows"), 0),
                num(r.fig("arrow_bytes").map(|b| b / 1e6), 1),
                num(r.fig("read_mb_s"), 0),
                num(r.fig("mb_s"), 0),
                secs(r.fig("warehouse_execute_s")),
                r.fig("wall_s").map_or("–".into(), |w| format!("{w:.2} s")),
                mib(r.fig("peak_rss_bytes")),
            );
        }
        md.push('\n');
    }

    /// The `perf` profiles of `large-result`'s stages (`--perf`): every profile listed, and those
    /// of the stages below 70 % of their ceiling at the largest size quoted.
    fn profiles(&self, md: &mut String) {
        md.push_str("## Profiles\n\n");
        let profiled: Vec<&Record> = self
            .of("large-result")
            .filter(|r| r.figures["profile"].is_object())
            .collect();
        if profiled.is_empty() {
            md.push_str(
                "No profiles in this run: `scripts/bench --perf` (or `dbfed-bench large-result \
                 --perf DIR`) runs each stage's process under `perf record -F 499 -g` and \
                 records where its time goes.\n\n",
            );
            return;
        }
        md.push_str(
            "Each Rust stage's process ran under `perf record -F 499 -g` (the stage's process \
             only: the emulator, in the parent process, is not in these profiles); self time by \
             symbol and samples by thread name. Full summaries:\n\n",
        );
        let largest = self
            .of("large-result")
            .filter(|r| r.param_str("series").is_empty() && r.param_str("stage") == "ceiling")
            .max_by(|a, b| {
                let bytes = |r: &Record| r.fig("arrow_ipc_bytes").unwrap_or(0.0);
                bytes(a).total_cmp(&bytes(b))
            })
            .and_then(|r| r.param_u64("limit"));
        let flight_ceiling = self
            .of("large-result")
            .find(|r| {
                r.param_str("series").is_empty()
                    && r.param_u64("limit") == largest
                    && r.param_str("stage") == "flight-ceiling"
            })
            .and_then(|r| r.fig("read_mb_s"));
        let mut quoted: Vec<(&Record, String)> = Vec::new();
        for r in &profiled {
            let path = r.figures["profile"]["path"].as_str().unwrap_or("?");
            let series = r.param_str("series");
            let _ = writeln!(
                md,
                "- {}{} rows, `{}`: [{path}]({path})",
                if series.is_empty() {
                    String::new()
                } else {
                    format!("{series}, ")
                },
                match r.param_u64("limit") {
                    Some(0) => "all".to_owned(),
                    Some(l) => l.to_string(),
                    None => "?".to_owned(),
                },
                r.param_str("stage"),
            );
            let mut missed = Vec::new();
            if let Some(x) = r.fig("ratio_to_ceiling").filter(|x| *x < 0.7) {
                missed.push(format!("{} of the disk ceiling", pct(Some(x))));
            }
            if r.param_str("stage") == "flight"
                && let Some(x) = flight_ceiling
                    .zip(r.fig("read_mb_s"))
                    .map(|(c, f)| f / c.max(f64::EPSILON))
                    .filter(|x| *x < 0.7)
            {
                missed.push(format!("{} of the in-memory Flight ceiling", pct(Some(x))));
            }
            if series.is_empty()
                && r.param_u64("limit") == largest
                && r.param_str("stage") != "flight-ceiling"
                && !missed.is_empty()
            {
                quoted.push((*r, missed.join(", ")));
            }
        }
        md.push('\n');
        for (r, missed) in quoted {
            let profile = &r.figures["profile"];
            let rows = |key: &str, n: usize| -> String {
                profile[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .take(n)
                            .map(|p| {
                                format!(
                                    "{:>7.2}%  {}\n",
                                    p[0].as_f64().unwrap_or(0.0),
                                    p[1].as_str().unwrap_or("?")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let _ = writeln!(
                md,
                "**{}** at the largest size ({missed}: below its 70 % target). Top symbols by \
                 self time, then samples by thread:\n\n```text\n{}\n{}```\n",
                r.param_str("stage"),
                rows("top_symbols", 12),
                rows("threads", 10),
            );
        }
    }

    /// Component figures: client decode, emulator, executor overhead.
    fn components(&self, md: &mut String) {
        md.push_str("## Component figures\n\n");
        md.push_str(&Self::provenance_line(
            self.section_records(Self::SECTIONS[4].1),
        ));
        let mut any = false;
        if let Some(r) = self.of("client-throughput").last() {
            any = true;
            let _ = writeln!(
                md,
                "**Client** (`client-throughput`, lineitem SF {}: {} rows, {:.0} MB of Arrow in {} \
                 chunks): LZ4 + Arrow IPC decode on one core {} MB/s; disk ceiling ({} threads) \
                 {} MB/s; the client's result read {} MB/s ({}); time to first batch after the \
                 statement succeeded {} s.\n",
                r.params["scale"],
                r.figures["rows"],
                r.fig("arrow_ipc_bytes").unwrap_or(0.0) / 1e6,
                r.figures["chunks"],
                num(r.fig("decode_mb_s_per_core"), 0),
                r.params["threads"],
                num(r.fig("disk_ceiling_mb_s"), 0),
                num(r.fig("client_result_mb_s"), 0),
                pct(r.fig("ratio_client_to_ceiling")),
                num(r.fig("client_time_to_first_batch_s"), 3),
            );
        }
        if let Some(r) = self.of("emulator-throughput").last() {
            any = true;
            let _ = writeln!(
                md,
                "**Emulator** (`emulator-throughput`): {} tiny statements/s ({} callers); a large \
                 EXTERNAL_LINKS result (lineitem SF {}) served at {} MB/s of LZ4 chunks: it is not \
                 the bottleneck of the client figures.\n",
                num(r.fig("tiny_statements_per_s"), 0),
                r.params["concurrency"],
                r.params["scale"],
                num(r.fig("served_mb_s"), 0),
            );
        }
        if let Some(r) = self
            .of("executor-concurrency")
            .filter(|r| r.param_str("case") == "overhead")
            .last()
        {
            any = true;
            let e = &r.figures["executor"];
            let _ = writeln!(
                md,
                "**Executor overhead** ({} sequential tiny queries, zero latency): the client \
                 alone {} µs/query; through the executor {} µs (thread-per-query) and {} µs \
                 (submit-and-poll).\n",
                r.params["overhead_queries"],
                num(r.fig("client_us_per_query"), 0),
                num(e["thread-per-query"]["us_per_query"].as_f64(), 0),
                num(e["submit-and-poll"]["us_per_query"].as_f64(), 0),
            );
        }
        if !any {
            md.push_str("None in this run.\n\n");
        }
    }
}

/// A query name that sorts Q3 < Q5 < Q10 (by length, then text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryName(String);

impl PartialOrd for QueryName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueryName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.len(), &self.0).cmp(&(other.0.len(), &other.0))
    }
}

/// The stages of `large-result` in pipeline order.
const STAGE_ORDER: [&str; 8] = [
    "ceiling",
    "client",
    "executor",
    "datafusion",
    "flight-ceiling",
    "flight",
    "classic-sdk",
    "classic-connector",
];

/// `stages` in pipeline order (unknown names last).
fn ordered_stages<'m, 'r>(stages: &'m BTreeMap<String, &'r Record>) -> Vec<(&'m str, &'r Record)> {
    let mut out: Vec<(&str, &Record)> = stages.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    out.sort_by_key(|(n, _)| {
        STAGE_ORDER
            .iter()
            .position(|s| s == n)
            .unwrap_or(usize::MAX)
    });
    out
}

/// A stage's rows per second of read time (computed from its rows and read time on lines
/// written before `rows_per_s` was recorded).
fn rows_per_s(r: &Record) -> Option<f64> {
    r.fig("rows_per_s").or_else(|| {
        let rows = r.fig("rows")?;
        let read_s = r.fig("read_s").or_else(|| {
            // The ceiling's line: its bytes over its rate.
            Some(r.fig("arrow_ipc_bytes")? / 1e6 / r.fig("read_mb_s")?)
        })?;
        (read_s > 0.0).then(|| rows / read_s)
    })
}

fn secs(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.3} s"))
}

/// `(scenario, target, measured, met)`.
type Target = (String, String, String, Option<bool>);

fn target1(ratio: Option<f64>, stage: &str) -> Target {
    (
        "1".into(),
        format!("{stage} ≥ 70 % of the disk ceiling (largest result)"),
        ratio.map_or("–".into(), |r| format!("{stage}: {:.0} %", r * 100.0)),
        ratio.map(|r| r >= 0.7),
    )
}

/// Issue 6: Flight end to end against the in-memory Flight transport ceiling.
fn target_flight(ratio: Option<f64>) -> Target {
    (
        "1 (issue 6)".into(),
        "flight ≥ 70 % of the in-memory Flight ceiling (largest result)".into(),
        ratio.map_or("–".into(), |r| {
            format!("flight / flight-ceiling: {:.0} %", r * 100.0)
        }),
        ratio.map(|r| r >= 0.7),
    )
}

fn target2(result: Option<(bool, String)>) -> Target {
    (
        "2".into(),
        "within 10 % of the ideal with ≤ 32 threads (submit-and-poll)".into(),
        result.as_ref().map_or("–".into(), |r| r.1.clone()),
        result.map(|r| r.0),
    )
}

fn target3_large(worst: Option<f64>) -> Target {
    (
        "3".into(),
        "≥ 5× the classic approach's throughput on large results".into(),
        worst.map_or("–".into(), |w| {
            format!("{w:.1}× (worst of the two clients)")
        }),
        worst.map(|w| w >= 5.0),
    )
}

/// Not an issue-8 target: an extra row, labelled as such.
fn target3_concurrency(worst: Option<f64>) -> Target {
    (
        "3 (extra)".into(),
        "faster than the classic approach under concurrency (not an issue-8 target)".into(),
        worst.map_or("–".into(), |w| {
            format!("{w:.1}× (worst level and client)")
        }),
        worst.map(|w| w >= 1.0),
    )
}

fn target4(worst: Option<f64>) -> Target {
    (
        "4".into(),
        "full pushdown transfers ≤ 1.5× the bytes the query needs".into(),
        worst.map_or("–".into(), |w| format!("{w:.2}× (worst query)")),
        worst.map(|w| w <= 1.5),
    )
}

const REPRODUCE: &str = "## Reproduce\n\n\
```sh\n\
scripts/bench --size small   # minutes: small results, 10..100 concurrent queries\n\
scripts/bench --size full    # SF 1 (1 GB result), 10..1000 concurrent queries\n\
scripts/bench --size full --perf   # the same, with a perf profile of each large-result stage\n\
```\n\n\
`scripts/bench` builds `dbfed-bench` in release mode once, runs every scenario into \
`target/bench/results-<size>.jsonl`, copies it to `benchmarks/report/results-<size>.jsonl` (the \
data behind this report, each line stamped with its commit), then `dbfed-bench report` writes \
this file and the plots in `benchmarks/report/`. `--perf` adds a `perf` profile of each \
large-result stage (`benchmarks/report/profiles-<size>/`); `--size full` also measures the time \
to first batch of a ~100-chunk result (`--no-first-batch` skips it). Each scenario also runs \
alone, e.g. `target/release/dbfed-bench large-result --scale 1 --first-batch-chunks 100 \
--perf /tmp/profiles --python ~/.cache/dbfed/venv-*/bin/python`.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_goes_before_the_reproduce_section() {
        let markdown = format!("# Benchmarks\n\n## 1. x\n\n{REPRODUCE}");
        let out = insert_before_reproduce(&markdown, "## Analysis\n\nwhy\n");
        let analysis = out.find("## Analysis").expect("inserted");
        let reproduce = out.find("## Reproduce").expect("kept");
        assert!(
            out.find("## 1. x").expect("kept") < analysis && analysis < reproduce,
            "{out}"
        );
        let no_section = insert_before_reproduce("# B\n", "## Analysis\n");
        assert!(no_section.ends_with("## Analysis\n\n"), "{no_section}");
    }

    fn line(scenario: &str, params: Value, figures: Value) -> String {
        serde_json::json!({"scenario": scenario, "params": params, "figures": figures}).to_string()
    }

    fn sample() -> String {
        use serde_json::json;
        [
            line("meta", json!({"size": "small", "date": "2026-11-24", "commit": "abc", "machine": "m", "cores": "2", "memory_gib": "24", "results": "r.jsonl"}), json!({})),
            "not json at all".to_owned(),
            line("large-result", json!({"stage": "client", "child": true}), json!({"rows": 1})),
            line("large-result", json!({"scale": 0.1, "limit": 0, "stage": "ceiling", "threads": 4}),
                 json!({"rows": 600_000, "arrow_ipc_bytes": 100e6, "chunks": 3, "read_mb_s": 1000.0, "ratio_to_ceiling": 1.0})),
            line("large-result", json!({"scale": 0.1, "limit": 0, "stage": "executor", "threads": 4}),
                 json!({"read_mb_s": 650.0, "ratio_to_ceiling": 0.65, "wall_s": 1.0, "peak_rss_bytes": 100.0 * 1048576.0, "warehouse_execute_s": 0.5})),
            line("large-result", json!({"scale": 0.1, "limit": 0, "stage": "classic-sdk", "threads": 4}),
                 json!({"read_mb_s": 100.0, "ratio_to_ceiling": 0.1, "wall_s": 3.0, "peak_rss_bytes": 900.0 * 1048576.0, "warehouse_execute_s": 0.25})),
            line("executor-concurrency", json!({"case": "submit-and-poll", "queries": 100, "latency_ms": 200, "concurrency": 50, "poll_threads": 8}),
                 json!({"wall_s": 0.43, "ideal_s": 0.4, "wall_over_ideal": 1.075, "peak_os_threads": 20, "peak_rss_bytes": 1e7})),
            line("executor-concurrency", json!({"case": "classic-connector", "queries": 100, "latency_ms": 200, "concurrency": 50}),
                 json!({"wall_s": 1.2, "peak_os_threads": 60, "peak_rss_bytes": 2e8})),
        ]
        .join("\n")
    }

    #[test]
    fn parse_skips_child_lines_and_garbage() {
        let records = parse(&sample());
        assert_eq!(records.len(), 6);
        assert!(
            records
                .iter()
                .all(|r| r.params["child"] != Value::Bool(true))
        );
    }

    #[test]
    fn report_states_targets_from_the_figures() {
        let records = parse(&sample());
        let (md, plots) = Report::new(&records).render("benchmarks/report");
        // Scenario 1: 65 % < 70 %: missed, and said so with the stage.
        assert!(
            md.contains(
                "| 1 | executor ≥ 70 % of the disk ceiling (largest result) | executor: 65 % | **missed** |"
            ),
            "{md}"
        );
        // Scenario 3, large: 650 / 100 = 6.5× ≥ 5×.
        assert!(
            md.contains("6.5× (worst of the two clients) | **met**"),
            "{md}"
        );
        assert!(md.contains("**6.5×** the read throughput"), "{md}");
        // Scenario 2: ×1.075 with 20 threads.
        assert!(
            md.contains("N=100: ×1.07, 20 thr | **met**")
                || md.contains("N=100: ×1.08, 20 thr | **met**"),
            "{md}"
        );
        assert!(
            md.contains("is **2.8×** faster than classic-connector"),
            "{md}"
        );
        assert!(md.contains("(the warehouse's execution included: 0.500 s for the executor, 0.250 s for classic-sdk) **3.0×** faster; peak memory **9.0×** less."), "{md}");
        assert!(
            md.contains("| executor | 650 | – | 65 % | – | 0.500 s | 1.000 s | – | 100 MiB |"),
            "{md}"
        );
        // Only one size: "never slower on small results" has nothing to compare.
        assert!(
            md.contains(
                "| 3 | never slower than the classic approach on small results | – | not measured |"
            ),
            "{md}"
        );
        // Memory ratio of scenario 2: 2e8 / 1e7.
        assert!(
            md.contains("is **2.8×** faster than classic-connector; peak memory **20.0×** less."),
            "{md}"
        );
        assert!(md.contains("| 3 (extra) | faster than the classic approach under concurrency (not an issue-8 target) |"), "{md}");
        // No stamps in the sample: no provenance line, no mixed-commit sentence.
        assert!(
            !md.contains("different commits") && !md.contains("Measured at"),
            "{md}"
        );
        assert!(!md.contains("no sampling profiler"), "{md}");
        assert!(md.contains("No profiles in this run"), "{md}");
        // Federation and ADBC absent: not measured, never a verdict.
        assert!(md.contains("| 4 | full pushdown transfers ≤ 1.5× the bytes the query needs | – | not measured |"), "{md}");
        assert!(md.contains("Generated by `scripts/bench --size small` (2026-11-24, commit abc)"));
        let names: Vec<_> = plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["throughput_vs_size.svg", "wall_vs_concurrency.svg"]);
        assert!(md.contains("](benchmarks/report/throughput_vs_size.svg)"));
    }

    #[test]
    fn provenance_is_per_section_and_mixed_commits_are_said() {
        use serde_json::json;
        let stamped = |scenario: &str, params: Value, commit: &str, dirty: bool| {
            json!({"scenario": scenario, "params": params, "figures": {"wall_s": 1.0},
                   "provenance": {"commit": commit, "dirty": dirty, "at_unix": 1_795_538_951.0}})
            .to_string()
        };
        let same = [
            stamped(
                "large-result",
                json!({"limit": 0, "stage": "ceiling"}),
                "aaa1111",
                false,
            ),
            stamped(
                "federation",
                json!({"query": "Q3", "pushdown": "full"}),
                "aaa1111",
                false,
            ),
        ]
        .join("\n");
        let records = parse(&same);
        let (md, _) = Report::new(&records).render("p");
        assert!(
            md.contains("*Measured at commit `aaa1111` (2026-11-24).*"),
            "{md}"
        );
        assert!(!md.contains("different commits"), "{md}");

        let mixed = format!(
            "{same}\n{}",
            stamped(
                "federation",
                json!({"query": "Q5", "pushdown": "full"}),
                "bbb2222",
                true
            )
        );
        let records = parse(&mixed);
        let (md, _) = Report::new(&records).render("p");
        assert!(
            md.contains(
                "**The sections come from different commits**: §1 at `aaa1111`; §4 at `aaa1111` \
                 and `bbb2222` with uncommitted changes."
            ),
            "{md}"
        );
        assert!(md.contains("*Measured at commit `aaa1111` (2026-11-24) and `bbb2222` with uncommitted changes (2026-11-24).*"), "{md}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0.0), "1970-01-01");
        assert_eq!(utc_date(951_782_400.0), "2000-02-29");
        assert_eq!(utc_date(1_795_538_951.0), "2026-11-24");
    }

    #[test]
    fn relative_plot_links() {
        assert_eq!(
            relative_dir(Path::new("/a/b/benchmarks/report"), Path::new("/a/b")),
            "benchmarks/report"
        );
        assert_eq!(
            relative_dir(Path::new("/x/plots"), Path::new("/a")),
            "/x/plots"
        );
    }
}
