//! Which DataFusion [`SessionContext`] serves a principal's queries.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use dbfed_databricks::SecretString;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::auth::Principal;
use crate::error::FlightSqlError;

/// Provides the [`SessionContext`] that serves a principal's queries.
///
/// Every statement, prepared statement and metadata request is planned in the context this
/// returns: the SQL never bypasses it.
#[async_trait]
pub trait SessionProvider: Send + Sync + 'static {
    /// The SessionContext that serves `principal`'s queries (Databricks catalogs + local
    /// tables).
    async fn session(&self, principal: &Principal) -> Result<SessionContext, FlightSqlError>;

    /// Releases what is cached for `principal` (Flight `CloseSession`). Default: nothing.
    async fn close(&self, _principal: &Principal) {}
}

/// Every principal shares one context (service-account mode).
#[derive(Clone)]
pub struct StaticSessions(pub SessionContext);

impl fmt::Debug for StaticSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticSessions")
            .field(&self.0.session_id())
            .finish()
    }
}

impl StaticSessions {
    /// Serves every principal from `ctx`.
    pub fn new(ctx: SessionContext) -> Self {
        Self(ctx)
    }
}

#[async_trait]
impl SessionProvider for StaticSessions {
    async fn session(&self, _principal: &Principal) -> Result<SessionContext, FlightSqlError> {
        Ok(self.0.clone())
    }
}

/// Builds the context of one Databricks token.
type Factory = Arc<
    dyn Fn(SecretString) -> BoxFuture<'static, Result<SessionContext, FlightSqlError>>
        + Send
        + Sync,
>;

struct Entry {
    ctx: SessionContext,
    last_used: Instant,
}

/// A token whose context could not be built because the warehouse refused it.
struct Refusal {
    code: tonic::Code,
    message: String,
    at: Instant,
}

/// Most refused tokens remembered at once (oldest forgotten first).
const MAX_REFUSED_TOKENS: usize = 4096;

/// What the provider caches, under one lock.
#[derive(Default)]
struct State {
    /// Built contexts, bounded by `max_identities`.
    ready: HashMap<[u8; 32], Entry>,
    /// Builds under way: callers of one token share one build. Not counted as identities, so a
    /// build that fails never evicted anyone.
    building: HashMap<[u8; 32], Arc<OnceCell<SessionContext>>>,
    /// Tokens refused recently (negative cache), bounded by [`MAX_REFUSED_TOKENS`].
    refused: HashMap<[u8; 32], Refusal>,
}

/// One context per Databricks token (identity pass-through): each caller's queries run with
/// its own token, so Unity Catalog grants decide what it sees.
///
/// Contexts are built by a factory (for Databricks: a client from a config template with the
/// caller's token → driver → executor → catalogs; see
/// [`PassThroughSessions::builder`]) and cached, keyed by a salted hash of the token, with a
/// bound on identities (least recently used evicted first) and an idle expiry. One token's
/// context never serves another token.
///
/// Any caller can present any token, so unknown tokens cannot disturb known ones: a context
/// enters the cache (and may evict another) only once it is built; builds run at most
/// [`PassThroughSessionsBuilder::max_concurrent_builds`] at a time; and a token the warehouse
/// refused (`UNAUTHENTICATED` / `PERMISSION_DENIED`) is refused again without a build for
/// [`PassThroughSessionsBuilder::refused_token_ttl`].
pub struct PassThroughSessions {
    factory: Factory,
    salt: [u8; 16],
    max_identities: usize,
    idle_timeout: Duration,
    refused_ttl: Duration,
    builds: Semaphore,
    max_builds: usize,
    state: Mutex<State>,
}

impl fmt::Debug for PassThroughSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("PassThroughSessions")
            .field("max_identities", &self.max_identities)
            .field("idle_timeout", &self.idle_timeout)
            .field("refused_token_ttl", &self.refused_ttl)
            .field("max_concurrent_builds", &self.max_builds)
            .field("cached", &state.ready.len())
            .field("refused", &state.refused.len())
            .finish()
    }
}

/// Configures [`PassThroughSessions`].
pub struct PassThroughSessionsBuilder {
    factory: Factory,
    max_identities: usize,
    idle_timeout: Duration,
    refused_ttl: Duration,
    max_builds: usize,
}

impl fmt::Debug for PassThroughSessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassThroughSessionsBuilder")
            .field("max_identities", &self.max_identities)
            .field("idle_timeout", &self.idle_timeout)
            .field("refused_token_ttl", &self.refused_ttl)
            .field("max_concurrent_builds", &self.max_builds)
            .finish()
    }
}

impl PassThroughSessionsBuilder {
    /// Most identities cached at once (default 64, at least 1); the least recently used is
    /// evicted to make room for a newly built one.
    pub fn max_identities(mut self, n: usize) -> Self {
        self.max_identities = n.max(1);
        self
    }

    /// A context unused this long is dropped and rebuilt on next use (default 15 minutes).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a token whose build the warehouse refused (`UNAUTHENTICATED` or
    /// `PERMISSION_DENIED`) is refused again without contacting it (default 30 seconds;
    /// `Duration::ZERO` disables). Other failures are never remembered.
    pub fn refused_token_ttl(mut self, ttl: Duration) -> Self {
        self.refused_ttl = ttl;
        self
    }

    /// Most contexts built at once across all tokens (default 8, at least 1); further builds
    /// wait their turn.
    pub fn max_concurrent_builds(mut self, n: usize) -> Self {
        self.max_builds = n.max(1);
        self
    }

    /// Builds the provider.
    pub fn build(self) -> PassThroughSessions {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        PassThroughSessions {
            factory: self.factory,
            salt,
            max_identities: self.max_identities,
            idle_timeout: self.idle_timeout,
            refused_ttl: self.refused_ttl,
            builds: Semaphore::new(self.max_builds),
            max_builds: self.max_builds,
            state: Mutex::new(State::default()),
        }
    }
}

impl PassThroughSessions {
    /// A provider whose contexts `factory` builds from a caller's Databricks token.
    pub fn builder<F, Fut>(factory: F) -> PassThroughSessionsBuilder
    where
        F: Fn(SecretString) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SessionContext, FlightSqlError>> + Send + 'static,
    {
        PassThroughSessionsBuilder {
            factory: Arc::new(move |token| Box::pin(factory(token))),
            max_identities: 64,
            idle_timeout: Duration::from_secs(15 * 60),
            refused_ttl: Duration::from_secs(30),
            max_builds: 8,
        }
    }

    /// How many identities have a cached context.
    pub fn cached_identities(&self) -> usize {
        self.state.lock().ready.len()
    }

    fn key(&self, token: &SecretString) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(token.expose().as_bytes());
        hasher.finalize().into()
    }

    /// The cached context of `key`, a recent refusal of it, or the build to join.
    fn lookup(&self, key: [u8; 32]) -> Lookup {
        let now = Instant::now();
        // Expired contexts are dropped after the lock is released (declared first).
        let mut expired: Option<Entry> = None;
        let mut state = self.state.lock();
        if let Some(entry) = state.ready.get_mut(&key) {
            if now.duration_since(entry.last_used) < self.idle_timeout {
                entry.last_used = now;
                return Lookup::Ready(entry.ctx.clone());
            }
            expired = state.ready.remove(&key);
        }
        if let Some(refusal) = state.refused.get(&key) {
            if now.duration_since(refusal.at) < self.refused_ttl {
                return Lookup::Refused(refused_error(refusal));
            }
            state.refused.remove(&key);
        }
        let cell = Arc::clone(state.building.entry(key).or_default());
        drop(state);
        drop(expired);
        Lookup::Build(cell)
    }

    /// The error of a recent refusal of `key`, if any.
    fn recent_refusal(&self, key: [u8; 32]) -> Option<FlightSqlError> {
        let state = self.state.lock();
        state
            .refused
            .get(&key)
            .filter(|r| r.at.elapsed() < self.refused_ttl)
            .map(refused_error)
    }

    /// Caches a built context, evicting idle and then least recently used identities.
    fn insert_ready(&self, key: [u8; 32], ctx: &SessionContext) {
        let now = Instant::now();
        // Evicted contexts are dropped after the lock is released (declared first).
        let mut evicted: Vec<Entry> = Vec::new();
        let mut state = self.state.lock();
        if let Some(entry) = state.ready.get_mut(&key) {
            // Another build of this token finished first (after an idle expiry).
            entry.last_used = now;
            return;
        }
        let idle: Vec<[u8; 32]> = state
            .ready
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_used) >= self.idle_timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            evicted.extend(state.ready.remove(&k));
        }
        while state.ready.len() >= self.max_identities {
            let oldest = state
                .ready
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => evicted.extend(state.ready.remove(&k)),
                None => break,
            }
        }
        state.ready.insert(
            key,
            Entry {
                ctx: ctx.clone(),
                last_used: now,
            },
        );
    }

    /// Forgets a failed build; remembers the token when the warehouse refused it.
    fn record_failure(&self, key: [u8; 32], err: &FlightSqlError) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let code = err.code();
        if self.refused_ttl.is_zero()
            || !matches!(
                code,
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            )
        {
            return;
        }
        let ttl = self.refused_ttl;
        state.refused.retain(|_, r| now.duration_since(r.at) < ttl);
        while state.refused.len() >= MAX_REFUSED_TOKENS {
            let oldest = state
                .refused
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => state.refused.remove(&k),
                None => break,
            };
        }
        state.refused.insert(
            key,
            Refusal {
                code,
                message: err.to_string(),
                at: now,
            },
        );
    }
}

/// Removes a build from [`State::building`] when the call that joined it ends.
struct BuildingGuard<'a> {
    sessions: &'a PassThroughSessions,
    key: [u8; 32],
    cell: Arc<OnceCell<SessionContext>>,
}

impl Drop for BuildingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.sessions.state.lock();
        if state
            .building
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            state.building.remove(&self.key);
        }
    }
}

enum Lookup {
    Ready(SessionContext),
    Refused(FlightSqlError),
    Build(Arc<OnceCell<SessionContext>>),
}

fn refused_error(refusal: &Refusal) -> FlightSqlError {
    let message = format!(
        "{} (this token was refused recently; not retried yet)",
        refusal.message
    );
    if refusal.code == tonic::Code::PermissionDenied {
        FlightSqlError::PermissionDenied(message)
    } else {
        FlightSqlError::Unauthenticated(message)
    }
}

#[async_trait]
impl SessionProvider for PassThroughSessions {
    async fn session(&self, principal: &Principal) -> Result<SessionContext, FlightSqlError> {
        let token = principal.databricks_token.clone().ok_or_else(|| {
            FlightSqlError::Unauthenticated(
                "identity pass-through needs the caller's Databricks token as bearer token".into(),
            )
        })?;
        let key = self.key(&token);
        let cell = match self.lookup(key) {
            Lookup::Ready(ctx) => return Ok(ctx),
            Lookup::Refused(err) => return Err(err),
            Lookup::Build(cell) => cell,
        };
        // Leaves `building` however this call ends (even dropped mid-build).
        let _building = BuildingGuard {
            sessions: self,
            key,
            cell: Arc::clone(&cell),
        };
        let result = cell
            .get_or_try_init(|| async {
                let _permit = self.builds.acquire().await.map_err(|_| {
                    FlightSqlError::Internal("the session build limiter is closed".into())
                })?;
                // A caller that shared a failed build retries it: not if it was refused.
                if let Some(err) = self.recent_refusal(key) {
                    return Err(err);
                }
                (self.factory)(token).await
            })
            .await
            .cloned();
        match &result {
            Ok(ctx) => self.insert_ready(key, ctx),
            Err(err) => self.record_failure(key, err),
        }
        result
    }

    async fn close(&self, principal: &Principal) {
        if let Some(token) = &principal.databricks_token {
            let key = self.key(token);
            // Dropped after the lock is released.
            let removed = self.state.lock().ready.remove(&key);
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn principal(token: &str) -> Principal {
        Principal {
            name: "p".into(),
            databricks_token: Some(SecretString::new(token)),
        }
    }

    fn counting() -> (Arc<AtomicUsize>, PassThroughSessionsBuilder) {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let builder = PassThroughSessions::builder(move |token: SecretString| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if token.expose().starts_with("bad") {
                    return Err(FlightSqlError::Unauthenticated("bad token".into()));
                }
                if token.expose().starts_with("flaky") {
                    return Err(FlightSqlError::Internal("warehouse unavailable".into()));
                }
                let ctx = SessionContext::new();
                // Remember whose context this is.
                ctx.sql(&format!(
                    "CREATE VIEW owner AS SELECT '{}' AS t",
                    token.expose()
                ))
                .await?;
                Ok(ctx)
            }
        });
        (built, builder)
    }

    async fn refusal(sessions: &PassThroughSessions, token: &str) -> FlightSqlError {
        match sessions.session(&principal(token)).await {
            Err(err) => err,
            Ok(_) => panic!("{token} got a context"),
        }
    }

    async fn owner(ctx: &SessionContext) -> String {
        let batches = ctx
            .sql("SELECT t FROM owner")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string()
    }

    #[tokio::test]
    async fn caches_per_token_and_never_mixes_them() {
        let (built, builder) = counting();
        let sessions = builder.max_identities(2).build();
        let a = sessions.session(&principal("tok-a")).await.expect("a");
        let a2 = sessions
            .session(&principal("tok-a"))
            .await
            .expect("a again");
        let b = sessions.session(&principal("tok-b")).await.expect("b");
        assert_eq!(built.load(Ordering::SeqCst), 2);
        assert_eq!(a.session_id(), a2.session_id());
        assert!(owner(&a).await.contains("tok-a"));
        assert!(owner(&b).await.contains("tok-b"));
        // A third identity evicts the least recently used (a was used before b).
        sessions.session(&principal("tok-c")).await.expect("c");
        assert_eq!(sessions.cached_identities(), 2);
        let a3 = sessions
            .session(&principal("tok-a"))
            .await
            .expect("a rebuilt");
        assert_ne!(a3.session_id(), a.session_id());
        assert_eq!(built.load(Ordering::SeqCst), 4);
        // Closing drops the cached context.
        sessions.close(&principal("tok-a")).await;
        assert_eq!(sessions.cached_identities(), 1);
    }

    #[tokio::test]
    async fn refused_tokens_are_remembered_briefly_and_other_failures_not() {
        let (built, builder) = counting();
        let sessions = builder.build();
        let first = refusal(&sessions, "bad").await;
        assert_eq!(first.code(), tonic::Code::Unauthenticated);
        let again = refusal(&sessions, "bad").await;
        assert_eq!(again.code(), tonic::Code::Unauthenticated);
        assert!(again.to_string().contains("refused recently"), "{again}");
        assert_eq!(
            built.load(Ordering::SeqCst),
            1,
            "a refused token was rebuilt"
        );
        // A failure that says nothing about the token is retried.
        for _ in 0..2 {
            let err = refusal(&sessions, "flaky").await;
            assert_eq!(err.code(), tonic::Code::Internal);
        }
        assert_eq!(built.load(Ordering::SeqCst), 3);
        assert_eq!(sessions.cached_identities(), 0);
        match sessions.session(&Principal::named("anonymous")).await {
            Err(err) => assert_eq!(err.code(), tonic::Code::Unauthenticated),
            Ok(_) => panic!("a principal without a token got a context"),
        }
        // With the negative cache disabled, every attempt builds.
        let (built, builder) = counting();
        let sessions = builder.refused_token_ttl(Duration::ZERO).build();
        for _ in 0..2 {
            assert!(sessions.session(&principal("bad")).await.is_err());
        }
        assert_eq!(built.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_flood_of_bogus_tokens_neither_evicts_nor_rebuilds_a_live_identity() {
        let (built, builder) = counting();
        let sessions = builder.max_identities(1).build();
        let live = sessions
            .session(&principal("tok-live"))
            .await
            .expect("live");
        const BOGUS: usize = 200;
        for round in 0..3 {
            for n in 0..BOGUS {
                let err = refusal(&sessions, &format!("bad-{n}")).await;
                assert_eq!(err.code(), tonic::Code::Unauthenticated, "round {round}");
            }
        }
        // One build for the live identity and one per bogus token, however often it came.
        assert_eq!(built.load(Ordering::SeqCst), 1 + BOGUS);
        assert_eq!(sessions.cached_identities(), 1);
        let again = sessions
            .session(&principal("tok-live"))
            .await
            .expect("live");
        assert_eq!(
            again.session_id(),
            live.session_id(),
            "the live identity was rebuilt"
        );
        assert_eq!(built.load(Ordering::SeqCst), 1 + BOGUS);
        assert!(owner(&again).await.contains("tok-live"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_builds_are_bounded_and_shared_per_token() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let built = Arc::new(AtomicUsize::new(0));
        let (r, p, b) = (Arc::clone(&running), Arc::clone(&peak), Arc::clone(&built));
        let sessions = Arc::new(
            PassThroughSessions::builder(move |_token: SecretString| {
                let (r, p, b) = (Arc::clone(&r), Arc::clone(&p), Arc::clone(&b));
                async move {
                    b.fetch_add(1, Ordering::SeqCst);
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    // Stay "building" long enough for the others to pile up.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok(SessionContext::new())
                }
            })
            .max_concurrent_builds(2)
            .max_identities(100)
            .build(),
        );
        let tasks: Vec<_> = (0..24)
            .map(|n| {
                let sessions = Arc::clone(&sessions);
                // Three callers per token.
                tokio::spawn(
                    async move { sessions.session(&principal(&format!("t{}", n % 8))).await },
                )
            })
            .collect();
        let result = tokio::time::timeout(Duration::from_secs(60), async {
            for task in tasks {
                task.await.expect("joined").expect("built");
            }
        })
        .await;
        result.expect("hang guard");
        assert!(
            peak.load(Ordering::SeqCst) <= 2,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert_eq!(
            built.load(Ordering::SeqCst),
            8,
            "callers of one token share its build"
        );
        assert_eq!(sessions.cached_identities(), 8);
    }

    #[tokio::test]
    async fn idle_contexts_expire() {
        let (built, builder) = counting();
        let sessions = builder.idle_timeout(Duration::ZERO).build();
        sessions.session(&principal("t")).await.expect("first");
        sessions.session(&principal("t")).await.expect("second");
        assert_eq!(built.load(Ordering::SeqCst), 2);
    }
}
