//! Opt-in sampling profiles of `large-result`'s stages with Linux `perf` (`--perf DIR`).
//!
//! Each stage's child process runs under `perf record -F 499 -g`; afterwards `perf report` is
//! summarised into `DIR/<label>.txt` (the top symbols by self time, and the samples per thread
//! name) and into the stage's result line (`figures.profile`), so the report can quote it. The
//! raw `perf.data` is deleted once summarised (it runs to hundreds of MB on a 1 GB result).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::sys::run_process;

/// Symbols kept in a summary.
const TOP_SYMBOLS: usize = 25;
/// Sampling frequency (Hz): prime, so it does not beat with periodic work.
const FREQUENCY: &str = "499";

/// Profiles child processes into one folder.
#[derive(Debug, Clone)]
pub struct Perf {
    dir: PathBuf,
}

impl Perf {
    /// Checks that `perf` runs and creates `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let version = Command::new("perf").arg("--version").output();
        match version {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!(
                "--perf needs a working Linux `perf`; `perf --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => {
                bail!("--perf needs Linux `perf` on PATH (e.g. `apt-get install linux-perf`): {e}")
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// `inner` (program, arguments, environment) run under `perf record`, its samples written
    /// to this folder under `label`.
    pub fn wrap(&self, inner: &Command, label: &str) -> Command {
        let mut command = Command::new("perf");
        command
            .args(["record", "-F", FREQUENCY, "-g", "-q", "-o"])
            .arg(self.data(label))
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    fn data(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.perf.data"))
    }

    /// Summarises the samples recorded under `label` into `<label>.txt` and a JSON value
    /// (`path`, `samples`, `top_symbols`, `threads`: `[percent, name]` pairs).
    pub fn summarize(&self, label: &str, timeout: Duration) -> Result<Value> {
        let data = self.data(label);
        let report = |sort: &str| -> Result<Vec<(f64, String)>> {
            let mut command = Command::new("perf");
            command.args(["report", "-i"]).arg(&data).args([
                "--no-children",
                "--stdio",
                "-g",
                "none",
                "--sort",
                sort,
            ]);
            let text = run_process(command, timeout, "perf report")?;
            Ok(parse_report(&text))
        };
        let symbols = report("symbol")?;
        let threads = report("comm")?;
        let text_path = self.dir.join(format!("{label}.txt"));
        let text = render(label, &symbols, &threads);
        std::fs::write(&text_path, text)
            .with_context(|| format!("cannot write {}", text_path.display()))?;
        let _ = std::fs::remove_file(&data);
        let pairs = |v: &[(f64, String)], n: usize| -> Vec<Value> {
            v.iter().take(n).map(|(p, s)| json!([p, s])).collect()
        };
        Ok(json!({
            "path": text_path.display().to_string(),
            "top_symbols": pairs(&symbols, TOP_SYMBOLS),
            "threads": pairs(&threads, usize::MAX),
        }))
    }
}

/// The `(percent, name)` rows of a `perf report --stdio -g none` output, largest first.
pub fn parse_report(text: &str) -> Vec<(f64, String)> {
    let mut rows: Vec<(f64, String)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let line = line.trim();
            let (percent, rest) = line.split_once('%')?;
            let percent: f64 = percent.trim().parse().ok()?;
            let mut name = rest.trim();
            for prefix in ["[.] ", "[k] ", "[g] ", "[u] "] {
                name = name.strip_prefix(prefix).unwrap_or(name);
            }
            // The IPC columns perf appends on machines without cycle counters (`-  -`).
            while let Some(shorter) = name.strip_suffix('-') {
                name = shorter.trim_end();
            }
            let name: String = name.trim().chars().take(200).collect();
            (!name.is_empty()).then_some((percent, name))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows
}

fn render(label: &str, symbols: &[(f64, String)], threads: &[(f64, String)]) -> String {
    let mut out = format!(
        "perf profile of {label} (perf record -F {FREQUENCY} -g; self time, the child process \
         only)\n\nTop {TOP_SYMBOLS} symbols by self time:\n"
    );
    for (p, s) in symbols.iter().take(TOP_SYMBOLS) {
        out.push_str(&format!("{p:>7.2}%  {s}\n"));
    }
    out.push_str("\nSamples by thread name (comm):\n");
    for (p, s) in threads {
        out.push_str(&format!("{p:>7.2}%  {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_into_sorted_rows() {
        let text = "# Samples: 136\n#\n# Overhead  Symbol  IPC   [IPC Coverage]\n\
                    #\n     1.47%  [.] PyIter_Next                       -      -            \n\
                    \x20   16.18%  [.] <impl Foo for Bar>::next          -      -\n\
                    \x20    3.00%  [k] do_syscall_64\n\
                    \n     0.74%  tokio-runtime-w\n";
        let rows = parse_report(text);
        assert_eq!(
            rows,
            vec![
                (16.18, "<impl Foo for Bar>::next".to_owned()),
                (3.0, "do_syscall_64".to_owned()),
                (1.47, "PyIter_Next".to_owned()),
                (0.74, "tokio-runtime-w".to_owned()),
            ]
        );
        let text = render("client", &rows, &rows[3..]);
        assert!(
            text.contains("  16.18%  <impl Foo for Bar>::next\n"),
            "{text}"
        );
        assert!(text.contains("by thread name (comm):\n   0.74%  tokio-runtime-w\n"));
    }

    #[test]
    fn a_missing_perf_is_a_clear_error() {
        // A folder that cannot be created fails even where perf exists; where perf is missing
        // the error names it.
        match Perf::new(Path::new("/proc/no/such/dir")) {
            Ok(_) => panic!("cannot create a folder under /proc"),
            Err(e) => {
                let text = format!("{e:#}");
                assert!(
                    text.contains("perf") || text.contains("/proc/no/such/dir"),
                    "{text}"
                );
            }
        }
    }
}
