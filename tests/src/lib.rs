//! The shared test kit of dbfed's test binaries: what more than one package's tests need.
//!
//! - [`Fingerprint`]: what a result holds, independent of batch boundaries and row order.
//! - [`Warehouse`]: an emulator that may be dropped inside an async test.
//! - [`on_plain_thread`] and [`off_runtime`]: build (blocking) clients and executors away from the
//!   async workers, where building or dropping them panics.
//! - [`client_config`] and [`client_config_with`]: a client configuration for an emulator.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use dbfed_databricks::config::{ClientConfig, Credentials};
use dbfed_emulator::{BackgroundEmulator, EmulatorBuilder};

/// What a result holds, independent of batch boundaries and row order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Rows in the result.
    pub rows: u64,
    /// Per column: wrapping sum of the hashes of its values (with their row position ignored).
    pub columns: Vec<u64>,
    /// Wrapping sum of the hashes of whole rows (a lost row and a duplicated one cannot cancel).
    pub row_multiset: u64,
}

impl Fingerprint {
    /// The fingerprint of `batches` (values compared by their display text; NULL is distinct
    /// from every string).
    ///
    /// # Panics
    ///
    /// If a column's type cannot be formatted (a test fixture error).
    pub fn of(batches: &[RecordBatch]) -> Self {
        let width = batches.first().map_or(0, RecordBatch::num_columns);
        let mut fp = Fingerprint {
            rows: 0,
            columns: vec![0; width],
            row_multiset: 0,
        };
        let options = FormatOptions::default().with_null("\u{0}NULL");
        for batch in batches {
            let formatters: Vec<ArrayFormatter<'_>> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable"))
                .collect();
            for row in 0..batch.num_rows() {
                let mut row_hash = DefaultHasher::new();
                for (c, f) in formatters.iter().enumerate() {
                    let text = f.value(row).to_string();
                    let mut h = DefaultHasher::new();
                    (c, &text).hash(&mut h);
                    fp.columns[c] = fp.columns[c].wrapping_add(h.finish());
                    text.hash(&mut row_hash);
                }
                fp.row_multiset = fp.row_multiset.wrapping_add(row_hash.finish());
                fp.rows += 1;
            }
        }
        fp
    }
}

/// An emulator that may be dropped inside an async test: its runtime is shut down on a plain
/// thread (dropping a runtime on a runtime thread panics).
pub struct Warehouse(Option<BackgroundEmulator>);

impl Warehouse {
    /// Starts `builder` on a free loopback port.
    ///
    /// # Panics
    ///
    /// If the emulator does not start.
    pub fn spawn(builder: EmulatorBuilder) -> Self {
        Self(Some(
            builder
                .spawn("127.0.0.1:0")
                .expect("the emulator starts on a free loopback port"),
        ))
    }
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Warehouse")
            .field(&self.0.as_ref().map(BackgroundEmulator::url))
            .finish()
    }
}

impl std::ops::Deref for Warehouse {
    type Target = BackgroundEmulator;

    fn deref(&self) -> &BackgroundEmulator {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Warehouse {
    fn drop(&mut self) {
        if let Some(emulator) = self.0.take() {
            let _ = std::thread::spawn(move || drop(emulator)).join();
        }
    }
}

/// Runs `build` on a plain thread and returns its result: the blocking HTTP client starts (and
/// stops) a runtime of its own, which panics on a runtime thread.
///
/// # Panics
///
/// If `build` panics.
pub fn on_plain_thread<T: Send + 'static>(build: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(build)
        .join()
        .expect("building off the runtime does not panic")
}

/// Like [`on_plain_thread`], from an async test: runs `build` on tokio's blocking pool.
///
/// # Panics
///
/// If `build` panics.
pub async fn off_runtime<T: Send + 'static>(build: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(build)
        .await
        .expect("building off the runtime does not panic")
}

/// A client configuration for `emulator`: its URL as the host, `warehouse_id`, and `token`.
///
/// # Panics
///
/// If the configuration is invalid (a test fixture error).
pub fn client_config(
    emulator: &BackgroundEmulator,
    warehouse_id: &str,
    token: &str,
) -> ClientConfig {
    ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(warehouse_id)
        .token(token)
        .build()
        .expect("valid configuration")
}

/// A client configuration for `emulator` signing in with `credentials`: its URL as the host
/// (so OAuth M2M tokens come from the emulator's `/oidc/v1/token`) and `warehouse_id`.
///
/// # Panics
///
/// If the configuration is invalid (a test fixture error).
pub fn client_config_with(
    emulator: &BackgroundEmulator,
    warehouse_id: &str,
    credentials: Credentials,
) -> ClientConfig {
    ClientConfig::builder()
        .host(emulator.url())
        .warehouse_id(warehouse_id)
        .credentials(credentials)
        .build()
        .expect("valid configuration")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn batch(ids: Vec<Option<i64>>, names: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as _),
            ("name", Arc::new(StringArray::from(names)) as _),
        ])
        .expect("batch")
    }

    #[test]
    fn fingerprint_ignores_batch_boundaries_and_row_order() {
        let whole = batch(
            vec![Some(1), Some(2), None],
            vec![Some("a"), None, Some("c")],
        );
        let split = [
            batch(vec![None], vec![Some("c")]),
            batch(vec![Some(2), Some(1)], vec![None, Some("a")]),
        ];
        let fp = Fingerprint::of(&[whole]);
        assert_eq!(fp.rows, 3);
        assert_eq!(fp.columns.len(), 2);
        assert_eq!(fp, Fingerprint::of(&split));
    }

    #[test]
    fn fingerprint_sees_a_lost_or_swapped_value() {
        let base = Fingerprint::of(&[batch(vec![Some(1), Some(2)], vec![Some("a"), Some("b")])]);
        let lost = Fingerprint::of(&[batch(vec![Some(1)], vec![Some("a")])]);
        let swapped = Fingerprint::of(&[batch(vec![Some(1), Some(2)], vec![Some("b"), Some("a")])]);
        let null = Fingerprint::of(&[batch(vec![Some(1), Some(2)], vec![Some("a"), None])]);
        assert_ne!(base, lost);
        // Same columns as multisets, other rows: only the row multiset tells.
        assert_eq!(base.columns, swapped.columns);
        assert_ne!(base.row_multiset, swapped.row_multiset);
        assert_ne!(base, null);
    }

    #[test]
    fn fingerprint_of_nothing_is_empty() {
        let fp = Fingerprint::of(&[]);
        assert_eq!((fp.rows, fp.columns.len(), fp.row_multiset), (0, 0, 0));
    }
}

/// Fault scenarios shared by the chaos suites (client and executor in `tests/tests/chaos.rs`,
/// Flight in `crates/dbfed-flight/tests/chaos.rs`), so both inject exactly the same faults.
pub mod faults {
    use dbfed_emulator::{Endpoint, FaultAction, FaultId, FaultRule, Faults};

    /// The rules of [`slow_and_stalled_downloads`].
    #[derive(Debug, Clone, Copy)]
    pub struct SlowAndStalled {
        /// 64 KiB/s downloads: late, within a 2 s download timeout.
        pub slow: FaultId,
        /// 1 B/s downloads: never done within the timeout, so the client must retry them.
        pub stalled: FaultId,
    }

    /// Slows 30 % of the chunk downloads (at most 30) to 64 KiB/s (a chunk is ~20 KiB
    /// compressed), and stalls 3 downloads after the first 5 at 1 byte/s.
    pub fn slow_and_stalled_downloads(faults: &Faults) -> SlowAndStalled {
        let slow = faults.inject(
            FaultRule::new(
                Endpoint::Download,
                FaultAction::SlowDownload {
                    bytes_per_second: 64 << 10,
                },
            )
            .rate(0.3)
            .times(30),
        );
        let stalled = faults.inject(
            FaultRule::new(
                Endpoint::Download,
                FaultAction::SlowDownload {
                    bytes_per_second: 1,
                },
            )
            .skip(5)
            .times(3),
        );
        SlowAndStalled { slow, stalled }
    }

    /// Revokes the token mid-result: the chunk links of chunks 3, 9, 15 and 21 answer 401
    /// once each (the client renews its token and retries once).
    pub fn revoke_tokens_mid_result(faults: &Faults) -> Vec<FaultId> {
        [3, 9, 15, 21]
            .into_iter()
            .map(|i| {
                faults.inject(
                    FaultRule::status(Endpoint::GetChunk, 401, None)
                        .chunk_index(i)
                        .times(1),
                )
            })
            .collect()
    }
}
