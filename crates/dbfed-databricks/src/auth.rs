//! Authentication providers: personal access tokens, Databricks OAuth M2M and Azure service
//! principals, all behind [`AuthProvider`].
//!
//! OAuth providers obtain their first token lazily (on the first
//! [`AuthProvider::authorization`]), cache it, and refresh it [`EXPIRY_MARGIN`] before it
//! expires. One refresh serves all concurrent callers: a caller that finds the token stale takes
//! the refresh lock, and callers that waited on that lock reuse the token it obtained.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::SecretString;

/// The default Azure Entra ID authority.
pub const DEFAULT_AZURE_LOGIN_URL: &str = "https://login.microsoftonline.com";

/// The scope that asks Entra ID for a token for the Azure Databricks resource.
pub const AZURE_DATABRICKS_SCOPE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default";

/// The scope requested from the Databricks OAuth token endpoint.
pub const DATABRICKS_M2M_SCOPE: &str = "all-apis";

/// A cached token is treated as expired this long before its `expires_in` runs out (Azure rejects
/// tokens with 30 s or less left).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(40);

/// The lifetime assumed when a token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Attempts per token / discovery request when the server answers 429/5xx or cannot be reached.
const MAX_ATTEMPTS: u32 = 3;

/// First back-off between attempts (doubled each time); a `Retry-After` is honoured up to
/// [`MAX_RETRY_AFTER`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Timeout of one token / discovery request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Server messages longer than this are cut (an HTML error page is not a useful message).
const MAX_MESSAGE_CHARS: usize = 300;

/// Supplies the `Authorization` header value for workspace API calls.
///
/// Implementations cache their token and refresh it shortly before it expires; concurrent callers
/// share one refresh.
pub trait AuthProvider: Send + Sync + std::fmt::Debug {
    /// The full header value, e.g. `Bearer <token>`.
    fn authorization(&self) -> Result<SecretString, AuthError>;
    /// Drops any cached token so the next [`AuthProvider::authorization`] obtains a fresh one
    /// (called after the workspace answered 401).
    fn invalidate(&self) {}
    /// A short, non-secret, stable description of the identity (`pat:<first 8 hex digits of
    /// sha256(token)>`, `oauth-m2m:<client_id>`, `azure-sp:<tenant>/<client_id>`), for logs and
    /// for keying pools by identity.
    fn identity(&self) -> String;
}

/// A failure to obtain a token. Messages name the endpoint and the server's explanation, never a
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token endpoint refused the credentials.
    #[error("authentication failed at {endpoint}: {message}")]
    Rejected {
        /// Where the token was requested (no secrets in it).
        endpoint: String,
        /// The server's explanation.
        message: String,
    },
    /// The token (or OIDC discovery) endpoint answered 429 or 5xx, after retries.
    #[error("token endpoint {endpoint} is unavailable (HTTP {status}): {message}")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status of the last attempt.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The endpoint could not be reached (connect, TLS, timeout, ...), after retries.
    #[error("cannot reach {endpoint}: {}", error_chain(source))]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The transport error (without the URL; see `endpoint`).
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered 2xx with something that is not a usable token / discovery document.
    #[error("unexpected response from {endpoint}: {message}")]
    InvalidResponse {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with the response.
        message: String,
    },
    /// The provider cannot be built from its settings (e.g. an authority URL that cannot take a
    /// path).
    #[error("invalid authentication settings: {message}")]
    InvalidSettings {
        /// What is wrong.
        message: String,
    },
}

impl AuthError {
    /// Whether trying again later may succeed (429/5xx, connection failures, timeouts).
    /// Rejected credentials are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            // Token requests are safe to repeat: any transport failure may be transient, except
            // a request that could not even be built.
            Self::Transport { source, .. } => !source.is_builder(),
            _ => false,
        }
    }

    /// Whether the server refused the credentials.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_timeout())
    }

    /// The endpoint involved, if any.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Self::Rejected { endpoint, .. }
            | Self::Unavailable { endpoint, .. }
            | Self::Transport { endpoint, .. }
            | Self::InvalidResponse { endpoint, .. } => Some(endpoint),
            Self::InvalidSettings { .. } => None,
        }
    }
}

/// `error` and its causes, `: `-separated (reqwest's own message alone is often just "error
/// sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    // Bounded: error chains are short, but never trust a cycle.
    for _ in 0..8 {
        let Some(next) = cause else { break };
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// A fixed bearer token: a personal access token or a pre-obtained Azure AD token.
#[derive(Debug, Clone)]
pub struct StaticToken {
    header: SecretString,
    identity: String,
}

impl StaticToken {
    /// Uses `token` as a bearer token.
    pub fn new(token: &SecretString) -> Self {
        Self {
            header: SecretString::new(format!("Bearer {}", token.expose())),
            identity: format!("pat:{}", fingerprint(token.expose())),
        }
    }
}

impl AuthProvider for StaticToken {
    fn authorization(&self) -> Result<SecretString, AuthError> {
        Ok(self.header.clone())
    }
    /// `pat:<first 8 hex digits of sha256(token)>`: stable, and does not reveal the token.
    fn identity(&self) -> String {
        self.identity.clone()
    }
}

/// The first 8 hex digits of the SHA-256 of `value`.
fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// A token obtained from a token endpoint.
struct Token {
    access_token: SecretString,
    expires_in: Duration,
}

/// The cached header and the instant from which it counts as stale.
#[derive(Debug)]
struct CachedToken {
    header: SecretString,
    stale_at: Instant,
}

/// A token cache with single-flight refresh.
#[derive(Debug, Default)]
struct TokenCache {
    current: Mutex<Option<CachedToken>>,
    /// Held while a refresh is in flight; waiters re-check `current` after acquiring it.
    refresh: Mutex<()>,
}

impl TokenCache {
    fn fresh(&self) -> Option<SecretString> {
        let current = self.current.lock();
        current
            .as_ref()
            .filter(|t| Instant::now() < t.stale_at)
            .map(|t| t.header.clone())
    }

    fn get_or_refresh(
        &self,
        fetch: impl FnOnce() -> Result<Token, AuthError>,
    ) -> Result<SecretString, AuthError> {
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        let _refreshing = self.refresh.lock();
        // Another caller may have refreshed while this one waited for the lock.
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        let requested_at = Instant::now();
        let token = fetch()?;
        let header = SecretString::new(format!("Bearer {}", token.access_token.expose()));
        let stale_at = requested_at + token.expires_in.saturating_sub(EXPIRY_MARGIN);
        *self.current.lock() = Some(CachedToken {
            header: header.clone(),
            stale_at,
        });
        Ok(header)
    }

    fn invalidate(&self) {
        *self.current.lock() = None;
    }
}

/// Databricks OAuth machine-to-machine (client credentials) authentication.
///
/// Discovers the token endpoint at `{host}/oidc/.well-known/oauth-authorization-server` (once),
/// then posts `grant_type=client_credentials&scope=all-apis` with HTTP Basic client
/// authentication.
#[derive(Debug)]
pub struct OAuthM2M {
    http: reqwest::blocking::Client,
    host: url::Url,
    client_id: String,
    client_secret: SecretString,
    scope: String,
    token_endpoint: Mutex<Option<url::Url>>,
    cache: TokenCache,
}

impl OAuthM2M {
    /// A provider for the workspace at `host`. No request is made until the first
    /// [`AuthProvider::authorization`].
    pub fn new(
        http: reqwest::blocking::Client,
        host: &url::Url,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            http,
            host: host.clone(),
            client_id: client_id.into(),
            client_secret,
            scope: DATABRICKS_M2M_SCOPE.to_owned(),
            token_endpoint: Mutex::new(None),
            cache: TokenCache::default(),
        }
    }

    /// Uses `token_endpoint` instead of discovering it.
    pub fn with_token_endpoint(self, token_endpoint: url::Url) -> Self {
        *self.token_endpoint.lock() = Some(token_endpoint);
        self
    }

    /// Requests `scope` instead of the default [`DATABRICKS_M2M_SCOPE`].
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The token endpoint, discovered on first use. Called under the cache's refresh lock.
    fn token_endpoint(&self) -> Result<url::Url, AuthError> {
        if let Some(url) = self.token_endpoint.lock().clone() {
            return Ok(url);
        }
        let discovery = self
            .host
            .join("oidc/.well-known/oauth-authorization-server")
            .map_err(|e| AuthError::InvalidSettings {
                message: format!(
                    "cannot build the OIDC discovery URL from {}: {e}",
                    self.host
                ),
            })?;
        let endpoint = discovery.to_string();
        let body = send_with_retry(&endpoint, &self.client_secret, || {
            self.http
                .get(discovery.clone())
                .header("Accept", "application/json")
        })?;
        #[derive(Deserialize)]
        struct Discovery {
            token_endpoint: Option<String>,
        }
        let doc: Discovery =
            serde_json::from_str(&body).map_err(|e| AuthError::InvalidResponse {
                endpoint: endpoint.clone(),
                message: format!("not an OAuth authorization server document ({e})"),
            })?;
        let Some(raw) = doc.token_endpoint else {
            return Err(AuthError::InvalidResponse {
                endpoint,
                message: "the discovery document has no token_endpoint".to_owned(),
            });
        };
        let url = url::Url::parse(&raw).map_err(|e| AuthError::InvalidResponse {
            endpoint: endpoint.clone(),
            message: format!("token_endpoint {raw:?} is not a URL ({e})"),
        })?;
        // Never send the client secret over plain HTTP when the workspace itself uses HTTPS.
        let allowed =
            url.scheme() == "https" || (url.scheme() == "http" && self.host.scheme() == "http");
        if !allowed {
            return Err(AuthError::InvalidResponse {
                endpoint,
                message: format!("token_endpoint {raw:?} must use https"),
            });
        }
        *self.token_endpoint.lock() = Some(url.clone());
        Ok(url)
    }

    fn fetch(&self) -> Result<Token, AuthError> {
        let endpoint_url = self.token_endpoint()?;
        let endpoint = endpoint_url.to_string();
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
        ];
        let body = send_with_retry(&endpoint, &self.client_secret, || {
            self.http
                .post(endpoint_url.clone())
                .basic_auth(&self.client_id, Some(self.client_secret.expose()))
                .header("Accept", "application/json")
                .form(&form)
        })?;
        parse_token(&endpoint, &body)
    }
}

impl AuthProvider for OAuthM2M {
    fn authorization(&self) -> Result<SecretString, AuthError> {
        self.cache.get_or_refresh(|| self.fetch())
    }
    fn invalidate(&self) {
        self.cache.invalidate();
    }
    /// `oauth-m2m:<client_id>`.
    fn identity(&self) -> String {
        format!("oauth-m2m:{}", self.client_id)
    }
}

/// Azure Entra ID service principal authentication (client secret), v2.0 token endpoint:
/// `POST {authority}/{tenant}/oauth2/v2.0/token` with
/// `scope=2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default`.
#[derive(Debug)]
pub struct AzureServicePrincipal {
    http: reqwest::blocking::Client,
    endpoint: url::Url,
    tenant_id: String,
    client_id: String,
    client_secret: SecretString,
    cache: TokenCache,
}

impl AzureServicePrincipal {
    /// A provider for `tenant_id` at `authority` (e.g. [`DEFAULT_AZURE_LOGIN_URL`]; any path of
    /// `authority` is kept and the tenant appended). No request is made until first use.
    pub fn new(
        http: reqwest::blocking::Client,
        authority: &url::Url,
        tenant_id: &str,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Result<Self, AuthError> {
        let mut endpoint = authority.clone();
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        endpoint
            .path_segments_mut()
            .map_err(|()| AuthError::InvalidSettings {
                message: format!("the Azure login URL {authority} cannot take a path"),
            })?
            .pop_if_empty()
            .extend([tenant_id, "oauth2", "v2.0", "token"]);
        Ok(Self {
            http,
            endpoint,
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.into(),
            client_secret,
            cache: TokenCache::default(),
        })
    }

    /// The token endpoint this provider posts to.
    pub fn token_endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    fn fetch(&self) -> Result<Token, AuthError> {
        let endpoint = self.endpoint.to_string();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", AZURE_DATABRICKS_SCOPE),
        ];
        let body = send_with_retry(&endpoint, &self.client_secret, || {
            self.http
                .post(self.endpoint.clone())
                .header("Accept", "application/json")
                .form(&form)
        })?;
        parse_token(&endpoint, &body)
    }
}

impl AuthProvider for AzureServicePrincipal {
    fn authorization(&self) -> Result<SecretString, AuthError> {
        self.cache.get_or_refresh(|| self.fetch())
    }
    fn invalidate(&self) {
        self.cache.invalidate();
    }
    /// `azure-sp:<tenant>/<client_id>`.
    fn identity(&self) -> String {
        format!("azure-sp:{}/{}", self.tenant_id, self.client_id)
    }
}

/// Sends the request built by `request` up to [`MAX_ATTEMPTS`] times while the answer is 429/5xx
/// or the server cannot be reached; returns the body of a 2xx answer.
fn send_with_retry(
    endpoint: &str,
    secret: &SecretString,
    request: impl Fn() -> reqwest::blocking::RequestBuilder,
) -> Result<String, AuthError> {
    let mut backoff = INITIAL_BACKOFF;
    let mut attempt = 1;
    loop {
        let (error, retry_after) = match request().timeout(REQUEST_TIMEOUT).send() {
            Err(source) => (
                AuthError::Transport {
                    endpoint: endpoint.to_owned(),
                    source: source.without_url(),
                },
                None,
            ),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                let body = response.text().map_err(|source| AuthError::Transport {
                    endpoint: endpoint.to_owned(),
                    source: source.without_url(),
                });
                if status.is_success() {
                    return body;
                }
                let message = format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    server_message(&body.unwrap_or_default(), secret)
                );
                if status.as_u16() == 429 || status.is_server_error() {
                    let error = AuthError::Unavailable {
                        endpoint: endpoint.to_owned(),
                        status: status.as_u16(),
                        message,
                    };
                    (error, retry_after)
                } else {
                    return Err(AuthError::Rejected {
                        endpoint: endpoint.to_owned(),
                        message,
                    });
                }
            }
        };
        if attempt >= MAX_ATTEMPTS || !error.is_retryable() {
            return Err(error);
        }
        tracing::debug!(endpoint, attempt, error = %error, "retrying token request");
        std::thread::sleep(retry_after.unwrap_or(backoff));
        backoff *= 2;
        attempt += 1;
    }
}

/// The server's explanation from an OAuth error body (`error`, `error_description`), or the
/// Databricks error shape (`error_code`, `message`), or the start of the raw body. The client
/// secret is scrubbed should a server echo it.
fn server_message(body: &str, secret: &SecretString) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
        error_description: Option<String>,
        error_code: Option<serde_json::Value>,
        message: Option<String>,
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let message = match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => {
            let code = parsed.error.or(parsed.error_code).map(|v| text(&v));
            let description = parsed.error_description.or(parsed.message);
            match (code, description) {
                (Some(code), Some(description)) => format!("{code}: {description}"),
                (Some(only), None) | (None, Some(only)) => only,
                (None, None) => body.trim().to_owned(),
            }
        }
        Err(_) => body.trim().to_owned(),
    };
    let message = if message.is_empty() {
        "(empty body)".to_owned()
    } else {
        message
    };
    let mut message: String = if message.chars().count() > MAX_MESSAGE_CHARS {
        let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        message
    };
    if !secret.is_empty() && message.contains(secret.expose()) {
        message = message.replace(secret.expose(), "[REDACTED]");
    }
    message
}

/// Parses `{access_token, token_type, expires_in, ...}`; `expires_in` may be a number or a
/// string (Azure v1).
fn parse_token(endpoint: &str, body: &str) -> Result<Token, AuthError> {
    // No Debug on purpose: it holds the token.
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    let invalid = |message: String| AuthError::InvalidResponse {
        endpoint: endpoint.to_owned(),
        message,
    };
    let parsed: TokenResponse = serde_json::from_str(body)
        .map_err(|e| invalid(format!("not a JSON token response ({e})")))?;
    let access_token = match parsed.access_token {
        Some(token) if !token.trim().is_empty() => SecretString::new(token),
        _ => return Err(invalid("the response has no access_token".to_owned())),
    };
    if let Some(kind) = parsed.token_type.as_deref()
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(invalid(format!(
            "token_type {kind:?} is not supported (expected Bearer)"
        )));
    }
    let expires_in = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_TOKEN_LIFETIME,
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(secs) => Duration::from_secs(secs),
            None => {
                return Err(invalid(format!(
                    "expires_in {n} is not a whole number of seconds"
                )));
            }
        },
        Some(serde_json::Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                return Err(invalid(format!(
                    "expires_in {s:?} is not a number of seconds"
                )));
            }
        },
        Some(other) => return Err(invalid(format!("expires_in {other} is not a number"))),
    };
    Ok(Token {
        access_token,
        expires_in,
    })
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pat_identity_is_a_stable_fingerprint() {
        let provider = StaticToken::new(&SecretString::new("dapi-secret"));
        let identity = provider.identity();
        // sha256("dapi-secret") starts with these 8 hex digits.
        let expected = format!(
            "pat:{}",
            &format!("{:x}", Sha256::digest(b"dapi-secret"))[..8]
        );
        assert_eq!(identity, expected);
        assert_eq!(identity.len(), "pat:".len() + 8);
        assert!(!identity.contains("dapi"));
        assert_eq!(
            StaticToken::new(&SecretString::new("dapi-secret")).identity(),
            identity
        );
        assert_ne!(
            StaticToken::new(&SecretString::new("other")).identity(),
            identity
        );
        assert_eq!(
            provider.authorization().expect("static").expose(),
            "Bearer dapi-secret"
        );
        assert!(!format!("{provider:?}").contains("dapi-secret"));
    }

    #[test]
    fn token_responses_are_parsed() {
        let t = parse_token(
            "e",
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":3600,"scope":"all-apis"}"#,
        )
        .expect("valid");
        assert_eq!(t.access_token.expose(), "abc");
        assert_eq!(t.expires_in, Duration::from_secs(3600));
        let t = parse_token("e", r#"{"access_token":"abc","token_type":"bearer","expires_in":"3599","ext_expires_in":"3599"}"#)
            .expect("string expires_in");
        assert_eq!(t.expires_in, Duration::from_secs(3599));
        let t = parse_token("e", r#"{"access_token":"abc"}"#).expect("no expires_in");
        assert_eq!(t.expires_in, DEFAULT_TOKEN_LIFETIME);
        assert!(!format!("{t:?}").contains("abc"));

        for bad in [
            "not json",
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":"abc","token_type":"MAC"}"#,
            r#"{"access_token":"abc","expires_in":-5}"#,
            r#"{"access_token":"abc","expires_in":"soon"}"#,
            r#"{"access_token":"abc","expires_in":[1]}"#,
        ] {
            let err = parse_token("https://h/oidc/v1/token", bad).expect_err(bad);
            assert!(
                matches!(err, AuthError::InvalidResponse { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("https://h/oidc/v1/token"), "{err}");
            assert!(!err.to_string().contains("abc"), "token leaked: {err}");
        }
    }

    #[test]
    fn server_messages_are_extracted_truncated_and_scrubbed() {
        let secret = SecretString::new("s3cret");
        assert_eq!(
            server_message(
                r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
                &secret
            ),
            "invalid_client: Client authentication failed"
        );
        assert_eq!(
            server_message(
                r#"{"error_code":403,"message":"Invalid access token."}"#,
                &secret
            ),
            "403: Invalid access token."
        );
        assert_eq!(server_message("", &secret), "(empty body)");
        assert_eq!(
            server_message("bad secret s3cret given", &secret),
            "bad secret [REDACTED] given"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            server_message(&long, &secret).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn azure_endpoint_is_built_from_authority_and_tenant() {
        let http = reqwest::blocking::Client::new();
        let authority = url::Url::parse(DEFAULT_AZURE_LOGIN_URL).expect("url");
        let sp =
            AzureServicePrincipal::new(http.clone(), &authority, "tenant-1", "app", "s".into())
                .expect("valid");
        assert_eq!(
            sp.token_endpoint().as_str(),
            "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
        );
        assert_eq!(sp.identity(), "azure-sp:tenant-1/app");
        let authority = url::Url::parse("http://127.0.0.1:9/prefix/").expect("url");
        let sp =
            AzureServicePrincipal::new(http, &authority, "t", "app", "s".into()).expect("valid");
        assert_eq!(
            sp.token_endpoint().as_str(),
            "http://127.0.0.1:9/prefix/t/oauth2/v2.0/token"
        );
    }

    #[test]
    fn cache_refreshes_once_and_honours_the_margin() {
        let cache = TokenCache::default();
        let mut calls = 0;
        let mut fetch = |secs| {
            calls += 1;
            Ok(Token {
                access_token: SecretString::new(format!("t{calls}")),
                expires_in: Duration::from_secs(secs),
            })
        };
        assert_eq!(
            cache.get_or_refresh(|| fetch(3600)).expect("ok").expose(),
            "Bearer t1"
        );
        assert_eq!(
            cache.get_or_refresh(|| fetch(3600)).expect("ok").expose(),
            "Bearer t1"
        );
        cache.invalidate();
        assert_eq!(
            cache.get_or_refresh(|| fetch(40)).expect("ok").expose(),
            "Bearer t2"
        );
        // 40 s lifetime minus the 40 s margin: stale at once.
        assert_eq!(
            cache.get_or_refresh(|| fetch(3600)).expect("ok").expose(),
            "Bearer t3"
        );
        assert_eq!(
            cache.get_or_refresh(|| fetch(3600)).expect("ok").expose(),
            "Bearer t3"
        );
        // A failed refresh leaves nothing cached and reports the error.
        cache.invalidate();
        let err = cache
            .get_or_refresh(|| {
                Err(AuthError::Rejected {
                    endpoint: "e".into(),
                    message: "no".into(),
                })
            })
            .expect_err("fails");
        assert!(err.is_rejected() && !err.is_retryable());
        assert_eq!(
            cache.get_or_refresh(|| fetch(3600)).expect("ok").expose(),
            "Bearer t4"
        );
    }
}
