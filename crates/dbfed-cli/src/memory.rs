//! The server-wide memory budget of `dbfed serve`: one DataFusion memory pool shared by every
//! query of every client, and a disk manager for the operators that spill.
//!
//! Sorts, aggregations and joins reserve memory from the pool before they grow. Operators that
//! can spill (sorts, most aggregations) write to temporary files when their fair share is used
//! up; those that cannot (the build side of a hash join, for one) fail the query with
//! `Resources exhausted: the server's memory_limit of ... is used up`, which Flight clients
//! receive as gRPC `RESOURCE_EXHAUSTED`. The server keeps serving the other queries.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use serde::de;

/// Bytes in a KiB.
const KIB: u64 = 1 << 10;
/// Bytes in a MiB.
const MIB: u64 = 1 << 20;
/// Bytes in a GiB.
const GIB: u64 = 1 << 30;
/// Bytes in a TiB.
const TIB: u64 = 1 << 40;

/// The smallest `memory_limit` accepted (a bare integer is bytes: this catches `4096` meant as
/// MiB).
pub const MIN_MEMORY_LIMIT: ByteSize = ByteSize(MIB);

/// The default `memory_limit` is physical memory (or the cgroup limit, if lower) divided by
/// this: 25 %.
pub const DEFAULT_MEMORY_DIVISOR: u64 = 4;

/// The default `memory_limit` never exceeds this (8 GiB).
pub const MAX_DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize(8 * GIB);

/// The default `memory_limit` when physical memory cannot be read (2 GiB).
pub const FALLBACK_MEMORY_LIMIT: ByteSize = ByteSize(2 * GIB);

/// DataFusion's default `sort_spill_reservation_bytes` (10 MiB): what a sort sets aside to merge
/// its spill files. A budget lowers it to an eighth of the limit when that is smaller.
const DEFAULT_SORT_SPILL_RESERVATION: u64 = 10 * MIB;

/// How many of the largest memory consumers a resources-exhausted error names.
const TOP_CONSUMERS: usize = 3;

/// A number of bytes, written `2147483648`, `"2GiB"`, `"512 MiB"`, `"1.5GB"` or `"64Mi"`.
///
/// Binary units (`KiB`, `MiB`, `GiB`, `TiB`, and Kubernetes' `Ki`, `Mi`, `Gi`, `Ti`) are
/// powers of 1024, decimal units (`KB`, `MB`, `GB`, `TB`) powers of 1000; `B` or no unit is
/// bytes. Units are case-insensitive. Bare `K`, `M`, `G` are refused as ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// No number at the start.
    #[error("invalid size {0:?}: expected a number of bytes or e.g. \"512MiB\", \"2GiB\"")]
    NotANumber(String),
    /// An unknown or ambiguous unit.
    #[error(
        "invalid size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB for powers of \
         1024 or KB, MB, GB, TB for powers of 1000)"
    )]
    Unit {
        /// The whole input.
        input: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// The value does not fit in 64 bits or is negative.
    #[error("invalid size {0:?}: out of range")]
    OutOfRange(String),
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() || number == "." {
            return Err(ByteSizeError::NotANumber(input.to_owned()));
        }
        let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "ki" => KIB,
            "mib" | "mi" => MIB,
            "gib" | "gi" => GIB,
            "tib" | "ti" => TIB,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => {
                return Err(ByteSizeError::Unit {
                    input: input.to_owned(),
                    unit: unit.trim().to_owned(),
                });
            }
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole
                .checked_mul(multiplier)
                .map(ByteSize)
                .ok_or_else(|| ByteSizeError::OutOfRange(input.to_owned()));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| ByteSizeError::NotANumber(input.to_owned()))?;
        let bytes = (value * multiplier as f64).round();
        // 2^64 is exactly representable; anything at or above it does not fit.
        if !(0.0..18_446_744_073_709_551_616.0).contains(&bytes) {
            return Err(ByteSizeError::OutOfRange(input.to_owned()));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// In the largest binary unit the size reaches: whole (`2 MiB`) when exact, else to one
    /// decimal (`1.5 MiB`, `1.9 GiB`); below 1 KiB in bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
        let bytes = self.0;
        match UNITS.iter().find(|(size, _)| bytes >= *size) {
            Some((size, name)) if bytes.is_multiple_of(*size) => {
                write!(f, "{} {name}", bytes / size)
            }
            Some((size, name)) => write!(f, "{:.1} {name}", bytes as f64 / *size as f64),
            None => write!(f, "{bytes} bytes"),
        }
    }
}

impl<'de> de::Deserialize<'de> for ByteSize {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"512MiB\" or \"2GiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Checks that `size` is a usable `memory_limit` (at least [`MIN_MEMORY_LIMIT`]).
pub fn check_memory_limit(size: ByteSize) -> Result<ByteSize, String> {
    if size < MIN_MEMORY_LIMIT {
        return Err(format!(
            "the memory limit must be at least {MIN_MEMORY_LIMIT}, got {} bytes (a bare number \
             is bytes: write e.g. \"4GiB\")",
            size.0
        ));
    }
    Ok(size)
}

/// Parses `--memory-limit`.
pub fn parse_memory_limit(text: &str) -> Result<ByteSize, String> {
    let size: ByteSize = text.parse().map_err(|e: ByteSizeError| e.to_string())?;
    check_memory_limit(size)
}

/// The `memory_limit` used when none is configured, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultLimit {
    /// The limit.
    pub limit: ByteSize,
    /// How it was chosen, for the log.
    pub reason: String,
}

/// The default `memory_limit`: 25 % of physical memory (or of the cgroup memory limit, if
/// lower), at most 8 GiB and at least 1 MiB; 2 GiB when neither can be read.
pub fn default_memory_limit() -> DefaultLimit {
    default_limit_for(physical_memory())
}

fn default_limit_for(memory: Option<u64>) -> DefaultLimit {
    match memory {
        Some(total) => {
            let limit = ByteSize(
                (total / DEFAULT_MEMORY_DIVISOR)
                    .clamp(MIN_MEMORY_LIMIT.0, MAX_DEFAULT_MEMORY_LIMIT.0),
            );
            DefaultLimit {
                limit,
                reason: format!(
                    "default: 25% of {} of memory, at most {MAX_DEFAULT_MEMORY_LIMIT}",
                    ByteSize(total)
                ),
            }
        }
        None => DefaultLimit {
            limit: FALLBACK_MEMORY_LIMIT,
            reason: "default: the machine's memory size is unknown".to_owned(),
        },
    }
}

/// Physical memory, or the cgroup (container) memory limit if it is lower; `None` if neither
/// can be read (not Linux).
pub fn physical_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse_cgroup_limit(&text))
    });
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(KIB),
        None => Some(value),
        Some(_) => None,
    }
}

/// A cgroup memory limit file: `max` (v2) or a huge number (v1) mean unlimited.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    // cgroup v1 reports "unlimited" as the largest page-aligned i64.
    (value > 0 && value < (1 << 60)).then_some(value)
}

/// A server-wide memory limit: one [`RuntimeEnv`] whose pool every session shares.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    limit: ByteSize,
    runtime: Arc<RuntimeEnv>,
}

impl MemoryBudget {
    /// A [`FairSpillPool`] of `limit` bytes (spilling operators share it fairly, the others
    /// take what is left first come, first served) over a disk manager writing spill files to
    /// the OS temporary directory (`TMPDIR`, at most 100 GB, DataFusion's default).
    pub fn new(limit: ByteSize) -> Result<Self> {
        let limit = check_memory_limit(limit).map_err(anyhow::Error::msg)?;
        let top = NonZeroUsize::new(TOP_CONSUMERS).context("top consumers is not zero")?;
        let pool = LimitPool {
            limit,
            inner: TrackConsumersPool::new(FairSpillPool::new(limit.as_usize()), top),
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory),
            )
            .build_arc()
            .context("cannot set up the query memory pool and spill directory")?;
        Ok(Self { limit, runtime })
    }

    /// The shared runtime (memory pool and disk manager).
    pub fn runtime(&self) -> Arc<RuntimeEnv> {
        Arc::clone(&self.runtime)
    }

    /// `config` with settings that fit the budget: the memory a sort sets aside for merging its
    /// spill files is at most an eighth of the limit (DataFusion's 10 MiB would not fit a
    /// small limit at all).
    pub fn session_config(&self, config: SessionConfig) -> SessionConfig {
        let reservation = (self.limit.0 / 8).min(DEFAULT_SORT_SPILL_RESERVATION);
        config.with_sort_spill_reservation_bytes(usize::try_from(reservation).unwrap_or(usize::MAX))
    }
}

/// The server's pool: a tracking [`FairSpillPool`] whose resources-exhausted errors name the
/// configured limit and how to raise it.
#[derive(Debug)]
struct LimitPool {
    limit: ByteSize,
    inner: TrackConsumersPool<FairSpillPool>,
}

impl fmt::Display for LimitPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dbfed memory_limit {}", self.limit)
    }
}

impl MemoryPool for LimitPool {
    fn name(&self) -> &str {
        "dbfed"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> Result<(), DataFusionError> {
        // Same variant: spilling operators recognise it and spill instead of failing.
        self.inner
            .try_grow(reservation, additional)
            .map_err(|e| match e {
                DataFusionError::ResourcesExhausted(message) => {
                    DataFusionError::ResourcesExhausted(format!(
                        "the server's memory_limit of {} is used up (raise [server] memory_limit \
                         or --memory-limit, or run fewer queries at once). {message}",
                        self.limit
                    ))
                }
                other => other,
            })
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit.as_usize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("12B", 12),
            ("2MiB", 2 * MIB),
            ("2 MiB", 2 * MIB),
            (" 2gib ", 2 * GIB),
            ("64Mi", 64 * MIB),
            ("1.5GiB", 3 * GIB / 2),
            ("3KiB", 3 * KIB),
            ("1TiB", TIB),
            ("2GB", 2_000_000_000),
            ("500kb", 500_000),
            ("7MB", 7_000_000),
            ("1TB", 1_000_000_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(*bytes)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for text in ["", "GiB", ".", "-1GiB", "1.2.3MiB"] {
            assert!(
                matches!(text.parse::<ByteSize>(), Err(ByteSizeError::NotANumber(_))),
                "{text}"
            );
        }
        let unit = "2G".parse::<ByteSize>().expect_err("ambiguous");
        assert!(unit.to_string().contains("unknown unit \"G\""), "{unit}");
        assert!(unit.to_string().contains("GiB"), "{unit}");
        assert!(matches!(
            "2furlongs".parse::<ByteSize>(),
            Err(ByteSizeError::Unit { .. })
        ));
        for text in ["99999999999999999999", "20000000TiB", "1e400"] {
            assert!(text.parse::<ByteSize>().is_err(), "{text}");
        }
        assert!(matches!(
            "17000000TiB".parse::<ByteSize>(),
            Err(ByteSizeError::OutOfRange(_))
        ));
    }

    #[test]
    fn sizes_display_in_binary_units() {
        assert_eq!(ByteSize(2 * MIB).to_string(), "2 MiB");
        assert_eq!(ByteSize(8 * GIB).to_string(), "8 GiB");
        assert_eq!(ByteSize(1536 * KIB).to_string(), "1.5 MiB");
        assert_eq!(ByteSize(2_000_000_000).to_string(), "1.9 GiB");
        assert_eq!(ByteSize(100).to_string(), "100 bytes");
    }

    #[test]
    fn a_memory_limit_is_at_least_one_mib() {
        assert_eq!(parse_memory_limit("2MiB"), Ok(ByteSize(2 * MIB)));
        let small = parse_memory_limit("4096").expect_err("4 KiB");
        assert!(small.contains("at least 1 MiB"), "{small}");
        assert!(small.contains("4GiB"), "{small}");
        assert!(parse_memory_limit("lots").is_err());
        assert!(MemoryBudget::new(ByteSize(10)).is_err());
    }

    #[test]
    fn the_default_is_a_quarter_of_memory_capped() {
        let sixteen = default_limit_for(Some(16 * GIB));
        assert_eq!(sixteen.limit, ByteSize(4 * GIB));
        assert!(sixteen.reason.contains("16 GiB"), "{}", sixteen.reason);
        assert_eq!(
            default_limit_for(Some(256 * GIB)).limit,
            MAX_DEFAULT_MEMORY_LIMIT
        );
        assert_eq!(default_limit_for(Some(KIB)).limit, MIN_MEMORY_LIMIT);
        assert_eq!(default_limit_for(None).limit, FALLBACK_MEMORY_LIMIT);
        let detected = default_memory_limit().limit;
        assert!(
            (MIN_MEMORY_LIMIT..=MAX_DEFAULT_MEMORY_LIMIT).contains(&detected),
            "{detected}"
        );
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(16_318_412 * KIB));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(GIB));
        assert_eq!(parse_cgroup_limit("0\n"), None);
    }

    #[test]
    fn the_pool_refuses_past_the_limit_naming_it_and_releases() {
        let budget = MemoryBudget::new(ByteSize(2 * MIB)).expect("budget");
        let pool = Arc::clone(&budget.runtime().memory_pool);
        assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(n) if n == 2 * MIB as usize));
        let hash = MemoryConsumer::new("HashJoinInput").register(&pool);
        hash.try_grow(MIB as usize).expect("fits");
        let error = hash.try_grow(2 * MIB as usize).expect_err("over the limit");
        assert!(
            matches!(error, DataFusionError::ResourcesExhausted(_)),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("memory_limit of 2 MiB"), "{message}");
        assert!(message.contains("HashJoinInput"), "{message}");
        assert_eq!(pool.reserved(), MIB as usize);
        drop(hash);
        assert_eq!(pool.reserved(), 0);
        let again = MemoryConsumer::new("again").register(&pool);
        again
            .try_grow(2 * MIB as usize)
            .expect("released memory is reusable");
    }

    #[test]
    fn spilling_consumers_share_the_pool_fairly() {
        let budget = MemoryBudget::new(ByteSize(4 * MIB)).expect("budget");
        let pool = budget.runtime().memory_pool.clone();
        let a = MemoryConsumer::new("sort a")
            .with_can_spill(true)
            .register(&pool);
        let b = MemoryConsumer::new("sort b")
            .with_can_spill(true)
            .register(&pool);
        a.try_grow(2 * MIB as usize).expect("half");
        assert!(a.try_grow(1).is_err(), "more than a fair share");
        b.try_grow(2 * MIB as usize).expect("the other half");
    }

    #[test]
    fn small_budgets_shrink_the_sort_merge_reservation() {
        let small = MemoryBudget::new(ByteSize(2 * MIB)).expect("budget");
        let config = small.session_config(SessionConfig::new());
        assert_eq!(
            config.options().execution.sort_spill_reservation_bytes,
            (256 * KIB) as usize
        );
        let large = MemoryBudget::new(ByteSize(4 * GIB)).expect("budget");
        let config = large.session_config(SessionConfig::new());
        assert_eq!(
            config.options().execution.sort_spill_reservation_bytes,
            (10 * MIB) as usize
        );
    }
}
