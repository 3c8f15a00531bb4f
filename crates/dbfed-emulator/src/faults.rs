//! Runtime fault injection: rules matched against requests, fired by count (script) or rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::Rng;

/// Which endpoint a [`FaultRule`] applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Every endpoint below.
    #[default]
    Any,
    /// `POST /api/2.0/sql/statements`.
    ExecuteStatement,
    /// `GET /api/2.0/sql/statements/{id}`.
    GetStatement,
    /// `GET /api/2.0/sql/statements/{id}/result/chunks/{i}`.
    GetChunk,
    /// `POST /api/2.0/sql/statements/{id}/cancel`.
    CancelStatement,
    /// `DELETE /api/2.0/sql/statements/{id}`.
    CloseStatement,
    /// `POST`/`DELETE /api/2.0/sql/sessions`.
    Sessions,
    /// External-link downloads.
    Download,
    /// The OAuth token endpoints (`/oidc/v1/token`, Azure-style).
    Token,
}

impl Endpoint {
    fn matches(self, actual: Endpoint) -> bool {
        self == Endpoint::Any || self == actual
    }
}

/// What a fired [`FaultRule`] does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP status (e.g. 429, 503) instead of handling the request, with an
    /// optional `Retry-After` in seconds.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` seconds, if any.
        retry_after: Option<u32>,
    },
    /// Downloads only: send this many bytes of the body, then abort the connection.
    ResetMidDownload {
        /// Bytes sent before the reset.
        after_bytes: usize,
    },
    /// Downloads only: throttle the body to this rate.
    SlowDownload {
        /// Throughput in bytes per second (at least 1).
        bytes_per_second: u64,
    },
    /// Execute, poll and chunk endpoints: issue external links that have already expired.
    ExpiredLinks,
    /// Execute only: the statement FAILS after producing this many chunks.
    FailAfterChunks {
        /// Chunks encoded before the failure.
        chunks: usize,
        /// `status.error.error_code`, e.g. `INTERNAL_ERROR`.
        error_code: String,
        /// `status.error.message`.
        message: String,
        /// `status.sql_state`.
        sql_state: String,
    },
}

impl Default for FaultAction {
    fn default() -> Self {
        FaultAction::Status {
            status: 503,
            retry_after: None,
        }
    }
}

impl FaultAction {
    fn kind(&self) -> FaultKind {
        match self {
            FaultAction::Status { .. } => FaultKind::Status,
            FaultAction::ResetMidDownload { .. } | FaultAction::SlowDownload { .. } => {
                FaultKind::Download
            }
            FaultAction::ExpiredLinks => FaultKind::ExpiredLinks,
            FaultAction::FailAfterChunks { .. } => FaultKind::FailAfterChunks,
        }
    }
}

/// The stage at which the server asks for faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Status,
    Download,
    ExpiredLinks,
    FailAfterChunks,
}

/// One fault: where it applies, what it does, and how often.
///
/// A rule fires on matching requests after skipping the first `skip`, at most `times` times
/// (`None`: unlimited), each time with probability `rate` (`None`: always).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultRule {
    /// Endpoint matched (default [`Endpoint::Any`]).
    pub endpoint: Endpoint,
    /// What happens (default: 503 without `Retry-After`).
    pub action: FaultAction,
    /// Fire at most this many times (default: unlimited).
    pub times: Option<u64>,
    /// Fire with this probability in `0.0..=1.0` (default: always).
    pub rate: Option<f64>,
    /// Let the first `skip` matching requests through (default 0).
    pub skip: u64,
    /// Only chunk `i` (chunk endpoint and downloads; default: any chunk).
    pub chunk_index: Option<usize>,
    /// Execute only: only statements whose SQL contains this text (default: any statement).
    pub sql_contains: Option<String>,
}

impl FaultRule {
    /// A rule firing `action` on `endpoint` every time.
    pub fn new(endpoint: Endpoint, action: FaultAction) -> Self {
        Self {
            endpoint,
            action,
            ..Self::default()
        }
    }

    /// `status` (e.g. 429 or 503) on `endpoint`, with an optional `Retry-After`.
    pub fn status(endpoint: Endpoint, status: u16, retry_after: Option<u32>) -> Self {
        Self::new(
            endpoint,
            FaultAction::Status {
                status,
                retry_after,
            },
        )
    }

    /// Fire at most `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Fire with probability `p`.
    pub fn rate(mut self, p: f64) -> Self {
        self.rate = Some(p);
        self
    }

    /// Let the first `n` matching requests through.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    /// Only chunk `i`.
    pub fn chunk_index(mut self, i: usize) -> Self {
        self.chunk_index = Some(i);
        self
    }

    /// Only statements whose SQL contains `text`.
    pub fn sql_contains(mut self, text: impl Into<String>) -> Self {
        self.sql_contains = Some(text.into());
        self
    }
}

/// Identifies an injected rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

#[derive(Debug)]
struct ActiveRule {
    id: FaultId,
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

/// What a request looks like to the fault matcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultContext<'a> {
    pub endpoint: Endpoint,
    pub chunk_index: Option<usize>,
    pub sql: Option<&'a str>,
}

/// The fault rules of a running emulator; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<ActiveRule>>>,
    next_id: Arc<AtomicU64>,
    fired_total: Arc<AtomicU64>,
}

impl Faults {
    /// Adds a rule; rules are tried in insertion order and the first that fires wins.
    pub fn inject(&self, rule: FaultRule) -> FaultId {
        let id = FaultId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.rules.lock().push(ActiveRule {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        id
    }

    /// Removes one rule; returns whether it existed.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut rules = self.rules.lock();
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// How many times rule `id` fired (0 for an unknown or removed rule).
    pub fn fired(&self, id: FaultId) -> u64 {
        self.rules
            .lock()
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.fired)
    }

    /// How many faults fired since the emulator started (all rules, removed ones included).
    pub fn fired_total(&self) -> u64 {
        self.fired_total.load(Ordering::Relaxed)
    }

    /// The first rule of `kind` that fires for this request, if any.
    pub(crate) fn take(&self, kind: FaultKind, ctx: FaultContext<'_>) -> Option<FaultAction> {
        let mut rules = self.rules.lock();
        for active in rules.iter_mut() {
            let rule = &active.rule;
            if rule.action.kind() != kind || !rule.endpoint.matches(ctx.endpoint) {
                continue;
            }
            if let Some(want) = rule.chunk_index
                && ctx.chunk_index != Some(want)
            {
                continue;
            }
            if let Some(text) = &rule.sql_contains
                && !ctx.sql.is_some_and(|sql| sql.contains(text.as_str()))
            {
                continue;
            }
            if rule.times.is_some_and(|max| active.fired >= max) {
                continue;
            }
            active.matched += 1;
            if active.matched <= rule.skip {
                continue;
            }
            if let Some(p) = rule.rate
                && rand::rng().random::<f64>() >= p
            {
                continue;
            }
            active.fired += 1;
            self.fired_total.fetch_add(1, Ordering::Relaxed);
            return Some(rule.action.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(endpoint: Endpoint) -> FaultContext<'static> {
        FaultContext {
            endpoint,
            chunk_index: None,
            sql: None,
        }
    }

    #[test]
    fn script_skip_and_times() {
        let faults = Faults::default();
        let id = faults.inject(
            FaultRule::status(Endpoint::GetStatement, 503, Some(2))
                .skip(1)
                .times(2),
        );
        let fire = || faults.take(FaultKind::Status, ctx(Endpoint::GetStatement));
        assert_eq!(fire(), None, "first request skipped");
        assert!(fire().is_some());
        assert!(fire().is_some());
        assert_eq!(fire(), None, "fired twice already");
        assert_eq!(faults.fired(id), 2);
        assert_eq!(
            faults.take(FaultKind::Status, ctx(Endpoint::ExecuteStatement)),
            None
        );
    }

    #[test]
    fn kinds_and_filters() {
        let faults = Faults::default();
        faults.inject(
            FaultRule::new(
                Endpoint::Download,
                FaultAction::ResetMidDownload { after_bytes: 10 },
            )
            .chunk_index(1),
        );
        let mut c = ctx(Endpoint::Download);
        assert_eq!(faults.take(FaultKind::Status, c), None);
        c.chunk_index = Some(0);
        assert_eq!(faults.take(FaultKind::Download, c), None);
        c.chunk_index = Some(1);
        assert!(faults.take(FaultKind::Download, c).is_some());
        faults.clear();
        assert_eq!(faults.take(FaultKind::Download, c), None);
    }

    #[test]
    fn rate_zero_never_fires() {
        let faults = Faults::default();
        faults.inject(FaultRule::status(Endpoint::Any, 429, None).rate(0.0));
        for _ in 0..100 {
            assert_eq!(faults.take(FaultKind::Status, ctx(Endpoint::Token)), None);
        }
    }
}
