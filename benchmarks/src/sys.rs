//! Process plumbing shared by the scenarios: child processes with a hang guard, the last JSON
//! line of their output, and sampling of this process's OS threads and RSS from `/proc`.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Seconds since the Unix epoch, for timestamps compared across processes (the emulator's
/// statement records use the same wall clock).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A process-wide hang guard: when it is not dropped within `timeout`, it prints what hung and
/// ends the process with exit code 124 (as `timeout(1)` does), so a blocking call that never
/// returns cannot hold the suite forever.
#[derive(Debug)]
pub struct Watchdog {
    disarmed: Arc<AtomicBool>,
}

impl Watchdog {
    /// Arms the guard for `what`.
    pub fn arm(timeout: Duration, what: &str) -> Self {
        let disarmed = Arc::new(AtomicBool::new(false));
        let flag = disarmed.clone();
        let name = what.to_owned();
        let spawned = std::thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !flag.load(Ordering::Relaxed) {
                    eprintln!("{name} did not finish within {timeout:?}: giving up");
                    std::process::exit(124);
                }
            });
        if spawned.is_err() {
            eprintln!("cannot start the hang guard of {what}: running without it");
        }
        Self { disarmed }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarmed.store(true, Ordering::Relaxed);
    }
}

/// Runs `command` to its end (killed after `timeout` plus a grace period) and returns its
/// stdout; fails with its stderr's tail when it fails.
pub fn run_process(mut command: Command, timeout: Duration, what: &str) -> Result<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = Instant::now() + timeout + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{what} failed ({status}):\n{stdout}\n{}",
            tail(&stderr, 2_000)
        );
    }
    Ok(stdout)
}

/// The last line of `stdout` that is a JSON object.
pub fn last_json_line(stdout: &str, what: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON line"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed bad JSON"))
}

pub fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

pub fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// OS threads of this process (0 where `/proc` is missing).
pub fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// OS threads of this process by name (`/proc/self/task/*/comm`).
pub fn thread_names() -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return names;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm"))
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        // Numbered threads (`dbfed-worker-12`) count under one name.
        let name = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        *names.entry(name).or_insert(0) += 1;
    }
    names
}

/// A `/proc/self/status` field in kB, as bytes.
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each case reports its own peak; a
/// failure only leaves the process-wide peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Samples the process's OS threads and RSS every 10 ms on its own thread.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    thread: Option<JoinHandle<Sampled>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Most OS threads of the process at once (the sampler's own thread excluded).
    pub threads: usize,
    /// Thread names (numbers stripped) and counts at that peak.
    pub names: BTreeMap<String, usize>,
    /// Largest sampled VmRSS.
    pub rss_bytes: u64,
}

impl Sampler {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), peak_rss.clone());
        let thread = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                let mut peak = Sampled::default();
                while !s.load(Ordering::Relaxed) {
                    r.fetch_max(status_bytes("VmRSS:").unwrap_or(0), Ordering::Relaxed);
                    let mut names = thread_names();
                    names.remove("bench-sampler");
                    names.remove("bench-watchdog");
                    let threads: usize = names.values().sum();
                    if threads > peak.threads {
                        peak.threads = threads;
                        peak.names = names;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            })
            .ok();
        Self {
            stop,
            peak_rss,
            thread,
        }
    }

    /// Stops sampling and returns the peaks.
    pub fn stop(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let mut sampled = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        sampled.rss_bytes = self.peak_rss.load(Ordering::Relaxed);
        sampled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_are_plausible() {
        assert!(os_threads() >= 1);
        assert!(status_bytes("VmRSS:").is_some_and(|b| b > 0));
        assert_eq!(status_bytes("NoSuchField:"), None);
        let sampler = Sampler::start();
        std::thread::sleep(Duration::from_millis(30));
        let sampled = sampler.stop();
        assert!(sampled.threads >= 1 && sampled.rss_bytes > 0, "{sampled:?}");
        assert!(!sampled.names.contains_key("bench-sampler"), "{sampled:?}");
        assert!(thread_names().values().sum::<usize>() >= 1);
    }

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("héllo", 3), "llo");
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("ab", 10), "ab");
    }
}
