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
use tokio::sync::OnceCell;

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
    cell: Arc<OnceCell<SessionContext>>,
    last_used: Instant,
}

/// One context per Databricks token (identity pass-through): each caller's queries run with
/// its own token, so Unity Catalog grants decide what it sees.
///
/// Contexts are built by a factory (for Databricks: a client from a config template with the
/// caller's token → driver → executor → catalogs; see
/// [`PassThroughSessions::builder`]) and cached, keyed by a salted hash of the token, with a
/// bound on identities (least recently used evicted first) and an idle expiry. One token's
/// context never serves another token.
pub struct PassThroughSessions {
    factory: Factory,
    salt: [u8; 16],
    max_identities: usize,
    idle_timeout: Duration,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
}

impl fmt::Debug for PassThroughSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassThroughSessions")
            .field("max_identities", &self.max_identities)
            .field("idle_timeout", &self.idle_timeout)
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

/// Configures [`PassThroughSessions`].
pub struct PassThroughSessionsBuilder {
    factory: Factory,
    max_identities: usize,
    idle_timeout: Duration,
}

impl fmt::Debug for PassThroughSessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassThroughSessionsBuilder")
            .field("max_identities", &self.max_identities)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl PassThroughSessionsBuilder {
    /// Most identities cached at once (default 64, at least 1); the least recently used is
    /// evicted to make room.
    pub fn max_identities(mut self, n: usize) -> Self {
        self.max_identities = n.max(1);
        self
    }

    /// A context unused this long is dropped and rebuilt on next use (default 15 minutes).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
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
            cache: Mutex::new(HashMap::new()),
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
        }
    }

    /// How many identities have a cached context.
    pub fn cached_identities(&self) -> usize {
        self.cache.lock().len()
    }

    fn key(&self, token: &SecretString) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(token.expose().as_bytes());
        hasher.finalize().into()
    }

    fn cell(&self, key: [u8; 32]) -> Arc<OnceCell<SessionContext>> {
        let now = Instant::now();
        // Evicted contexts are dropped after the lock is released (declared first).
        let mut evicted: Vec<Entry> = Vec::new();
        let mut cache = self.cache.lock();
        if let Some(entry) = cache.get_mut(&key) {
            if now.duration_since(entry.last_used) < self.idle_timeout {
                entry.last_used = now;
                return Arc::clone(&entry.cell);
            }
            evicted.extend(cache.remove(&key));
        }
        let idle: Vec<[u8; 32]> = cache
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_used) >= self.idle_timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            evicted.extend(cache.remove(&k));
        }
        while cache.len() >= self.max_identities {
            let oldest = cache
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => evicted.extend(cache.remove(&k)),
                None => break,
            }
        }
        let cell = Arc::new(OnceCell::new());
        cache.insert(
            key,
            Entry {
                cell: Arc::clone(&cell),
                last_used: now,
            },
        );
        cell
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
        let cell = self.cell(key);
        let result = cell
            .get_or_try_init(|| (self.factory)(token))
            .await
            .cloned();
        if result.is_err() {
            // Do not cache failures: the next call tries again.
            let mut cache = self.cache.lock();
            if cache
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.cell, &cell) && !e.cell.initialized())
            {
                cache.remove(&key);
            }
        }
        result
    }

    async fn close(&self, principal: &Principal) {
        if let Some(token) = &principal.databricks_token {
            let key = self.key(token);
            // Dropped after the lock is released.
            let removed = self.cache.lock().remove(&key);
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
                if token.expose() == "bad" {
                    return Err(FlightSqlError::Unauthenticated("bad token".into()));
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
    async fn failures_are_not_cached_and_tokens_are_required() {
        let (built, builder) = counting();
        let sessions = builder.build();
        assert!(sessions.session(&principal("bad")).await.is_err());
        assert!(sessions.session(&principal("bad")).await.is_err());
        assert_eq!(built.load(Ordering::SeqCst), 2);
        assert_eq!(sessions.cached_identities(), 0);
        match sessions.session(&Principal::named("anonymous")).await {
            Err(err) => assert_eq!(err.code(), tonic::Code::Unauthenticated),
            Ok(_) => panic!("a principal without a token got a context"),
        }
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
