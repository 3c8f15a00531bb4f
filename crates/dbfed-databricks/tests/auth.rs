//! Authentication against loopback token endpoints: Databricks OAuth M2M (OIDC discovery answered
//! with the recorded real document, URLs rewritten to the loopback server) and an Azure Entra ID
//! v2.0 token endpoint. Asserts what the client sent, caching, early refresh, single-flight
//! refresh under concurrency, retries, and error messages without secrets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use dbfed_databricks::auth::{AuthError, AuthProvider};
use dbfed_databricks::config::{ClientConfig, ClientConfigBuilder, Credentials};

const CLIENT_ID: &str = "5e8b4d3c-m2m-client";
const CLIENT_SECRET: &str = "dose-very-secret-m2m-value";
const TENANT: &str = "7f2c1a9e-0000-4000-8000-1234567890ab";
const AZURE_CLIENT_ID: &str = "azure-app-id";
const AZURE_SECRET: &str = "azure~very~secret~value";
const RECORDED_SUCCESS: &str = "m2mauthintegrationtests/testsuccessfulm2mconnection";
const RECORDED_INCORRECT: &str = "m2mauthintegrationtests/testincorrectcredentialsform2m";

/// One token request as the server saw it.
#[derive(Debug, Clone)]
struct TokenRequest {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    form: BTreeMap<String, String>,
}

/// What the server does and what it saw.
struct Shared {
    /// `http://127.0.0.1:<port>`.
    base_url: String,
    /// The recorded discovery document, URLs rewritten to `base_url`.
    discovery: String,
    discovery_hits: AtomicUsize,
    token_hits: AtomicUsize,
    requests: Mutex<Vec<TokenRequest>>,
    /// `expires_in` of issued tokens (a number or a string).
    expires_in: serde_json::Value,
    /// The first this-many token requests answer 503.
    unavailable_first: usize,
    /// How long the token endpoint takes (widens the window for concurrent callers).
    token_delay: Duration,
    /// Workspace `POST /api/2.0/sql/sessions` calls: (Authorization header, JSON body).
    session_requests: Mutex<Vec<(Option<String>, serde_json::Value)>>,
    /// Answer the first session request 401, as a workspace does for a revoked token.
    reject_first_session: bool,
}

impl Shared {
    fn token_requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Server settings.
struct Options {
    recording: &'static str,
    expires_in: serde_json::Value,
    unavailable_first: usize,
    token_delay: Duration,
    reject_first_session: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            recording: RECORDED_SUCCESS,
            expires_in: serde_json::json!(3600),
            unavailable_first: 0,
            token_delay: Duration::ZERO,
            reject_first_session: false,
        }
    }
}

/// A loopback token server; stops (and joins its thread) when dropped.
struct TokenServer {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    fn start(options: Options) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let base_url = format!("http://{addr}");
        let shared = Arc::new(Shared {
            discovery: recorded_discovery(options.recording, &base_url),
            base_url,
            discovery_hits: AtomicUsize::new(0),
            token_hits: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            expires_in: options.expires_in,
            unavailable_first: options.unavailable_first,
            token_delay: options.token_delay,
            session_requests: Mutex::new(Vec::new()),
            reject_first_session: options.reject_first_session,
        });
        let app = axum::Router::new()
            .route(
                "/oidc/.well-known/oauth-authorization-server",
                get(discovery),
            )
            .route("/oidc/v1/token", post(databricks_token))
            .route("/{tenant}/oauth2/v2.0/token", post(azure_token))
            .route("/api/2.0/sql/sessions", post(create_session))
            .route("/api/2.0/sql/sessions/", post(create_session))
            .route(
                "/api/2.0/sql/sessions/{id}",
                axum::routing::delete(|| async { axum::Json(serde_json::json!({})) }),
            )
            .with_state(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("auth-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("serve"),
                        _ = shutdown_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn server thread");
        Self {
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    fn discovery_hits(&self) -> usize {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }

    fn token_hits(&self) -> usize {
        self.shared.token_hits.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn recordings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/databricks-recordings/sqlexecapi")
}

/// The body of the recorded OIDC discovery response of `test`, with every URL on the recorded
/// workspace host moved to `base_url`.
fn recorded_discovery(test: &str, base_url: &str) -> String {
    let mapping = recorded_mapping(test, "GET", "/oidc/.well-known/oauth-authorization-server");
    assert_eq!(mapping["response"]["status"], 200);
    let body = mapping["response"]["body"].as_str().expect("body string");
    let mut doc: serde_json::Value = serde_json::from_str(body).expect("discovery JSON");
    let token_endpoint = doc["token_endpoint"]
        .as_str()
        .expect("recorded token_endpoint");
    let recorded = url::Url::parse(token_endpoint).expect("recorded URL");
    let origin = recorded.origin().ascii_serialization();
    assert!(origin.starts_with("https://adb-"), "{origin}");
    rewrite_urls(&mut doc, &origin, base_url);
    assert!(
        doc["token_endpoint"]
            .as_str()
            .is_some_and(|t| t.starts_with(base_url)),
        "{doc}"
    );
    doc.to_string()
}

/// The first recorded mapping of `test` whose request has `method` and `url`.
fn recorded_mapping(test: &str, method: &str, url: &str) -> serde_json::Value {
    let dir = recordings_dir().join(test).join("mappings");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read mapping");
        let mapping: serde_json::Value = serde_json::from_str(&text).expect("mapping JSON");
        if mapping["request"]["method"] == method && mapping["request"]["url"] == url {
            return mapping;
        }
    }
    panic!("no {method} {url} mapping in {}", dir.display());
}

/// Workspace `POST /api/2.0/sql/sessions`: answers with the recorded M2M session (or, once,
/// with the recorded 401 for a bad credential).
async fn create_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let first = {
        let mut requests = shared.session_requests.lock().expect("lock");
        requests.push((authorization, body));
        requests.len() == 1
    };
    let mapping = if first && shared.reject_first_session {
        recorded_mapping(
            "connectionintegrationtests/testincorrectcredentialsforpat",
            "POST",
            "/api/2.0/sql/sessions/",
        )
    } else {
        recorded_mapping(RECORDED_SUCCESS, "POST", "/api/2.0/sql/sessions/")
    };
    let status = mapping["response"]["status"].as_u64().expect("status");
    let status = StatusCode::from_u16(u16::try_from(status).expect("u16")).expect("status code");
    let body = mapping["response"]["body"]
        .as_str()
        .expect("body")
        .to_owned();
    (status, [("content-type", "application/json")], body).into_response()
}

fn rewrite_urls(value: &mut serde_json::Value, from: &str, to: &str) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(rest) = s.strip_prefix(from) {
                *s = format!("{to}{rest}");
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rewrite_urls(v, from, to)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| rewrite_urls(v, from, to)),
        _ => {}
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_hits.fetch_add(1, Ordering::SeqCst);
    (
        [("content-type", "application/json; charset=UTF-8")],
        shared.discovery.clone(),
    )
        .into_response()
}

fn record(shared: &Shared, path: String, headers: &HeaderMap, body: &str) -> (usize, TokenRequest) {
    let n = shared.token_hits.fetch_add(1, Ordering::SeqCst) + 1;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request = TokenRequest {
        path,
        authorization: header("authorization"),
        content_type: header("content-type"),
        form: url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect(),
    };
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(request.clone());
    (n, request)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Databricks `POST /oidc/v1/token`: HTTP Basic client authentication.
async fn databricks_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (n, request) = record(&shared, "/oidc/v1/token".to_owned(), &headers, &body);
    tokio::time::sleep(shared.token_delay).await;
    if n <= shared.unavailable_first {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "temporarily_unavailable", "error_description": "try again"}),
        );
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if request.authorization.as_deref() != Some(expected.as_str()) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": "Client authentication failed"
            }),
        );
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": format!("m2m-access-token-{n}"),
            "token_type": "Bearer",
            "expires_in": shared.expires_in,
            "scope": "all-apis",
        }),
    )
}

/// Azure `POST /{tenant}/oauth2/v2.0/token`: client credentials in the form.
async fn azure_token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/{tenant}/oauth2/v2.0/token");
    let (n, request) = record(&shared, path, &headers, &body);
    if n <= shared.unavailable_first {
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"error": "temporarily_unavailable"}),
        );
    }
    let form = &request.form;
    if tenant != TENANT
        || form.get("client_id").map(String::as_str) != Some(AZURE_CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(AZURE_SECRET)
    {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the \
                    secret being sent in the request is the client secret value, not the client \
                    secret ID.",
                "error_codes": [7000215],
            }),
        );
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": shared.expires_in,
            "ext_expires_in": shared.expires_in,
            "access_token": format!("aad-access-token-{n}"),
        }),
    )
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn m2m_provider(server: &TokenServer, secret: &str) -> Arc<dyn AuthProvider> {
    ClientConfig::builder()
        .host(server.base_url())
        .warehouse_id("8cfbc99c31463743")
        .credentials(Credentials::oauth_m2m(CLIENT_ID, secret))
        .build()
        .expect("config")
        .auth_provider(&http())
        .expect("provider")
}

fn azure_provider(server: &TokenServer, secret: &str) -> Arc<dyn AuthProvider> {
    ClientConfig::builder()
        .host("adb-1.2.azuredatabricks.net")
        .warehouse_id("8cfbc99c31463743")
        .credentials(Credentials::azure_service_principal(
            TENANT,
            AZURE_CLIENT_ID,
            secret,
        ))
        .azure_login_url(server.base_url())
        .build()
        .expect("config")
        .auth_provider(&http())
        .expect("provider")
}

fn header(provider: &dyn AuthProvider) -> String {
    provider.authorization().expect("token").expose().to_owned()
}

#[test]
fn m2m_from_environment_sends_basic_auth_and_caches() {
    let server = TokenServer::start(Options::default());
    // Configured the way users do: environment variables.
    let config = ClientConfigBuilder::from_env_vars([
        ("DATABRICKS_HOST", server.base_url()),
        (
            "DATABRICKS_HTTP_PATH",
            "/sql/1.0/warehouses/8cfbc99c31463743",
        ),
        ("DATABRICKS_CLIENT_ID", CLIENT_ID),
        ("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET),
    ])
    .build()
    .expect("config from environment");
    let provider = config.auth_provider(&http()).expect("provider");
    assert_eq!(provider.identity(), format!("oauth-m2m:{CLIENT_ID}"));
    // Lazy: nothing requested yet.
    assert_eq!(server.discovery_hits() + server.token_hits(), 0);

    for _ in 0..5 {
        assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-1");
    }
    assert_eq!(server.discovery_hits(), 1);
    assert_eq!(
        server.token_hits(),
        1,
        "one token request serves many calls"
    );

    let requests = server.shared.token_requests();
    let request = &requests[0];
    assert_eq!(request.path, "/oidc/v1/token");
    let basic = request
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Basic "))
        .expect("Basic authorization header");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .expect("base64");
    assert_eq!(
        String::from_utf8(decoded).expect("utf-8"),
        format!("{CLIENT_ID}:{CLIENT_SECRET}")
    );
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.form,
        BTreeMap::from([
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "all-apis".to_owned()),
        ])
    );
    // The secret travels only in the header, never in the form.
    assert!(!request.form.values().any(|v| v.contains(CLIENT_SECRET)));
}

#[test]
fn m2m_refreshes_within_40_seconds_of_expiry() {
    // expires_in 40: the 40 s margin makes every token stale as soon as it arrives.
    let server = TokenServer::start(Options {
        expires_in: serde_json::json!(40),
        ..Options::default()
    });
    let provider = m2m_provider(&server, CLIENT_SECRET);
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-1");
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-2");
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-3");
    assert_eq!(server.token_hits(), 3);
    assert_eq!(
        server.discovery_hits(),
        1,
        "the token endpoint is discovered once"
    );
}

#[test]
fn invalidate_forces_a_refresh() {
    let server = TokenServer::start(Options::default());
    let provider = m2m_provider(&server, CLIENT_SECRET);
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-1");
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-1");
    provider.invalidate();
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-2");
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-2");
    assert_eq!(server.token_hits(), 2);
}

/// `threads` callers start together; returns the headers they got.
fn concurrent_headers(provider: &Arc<dyn AuthProvider>, threads: usize) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let provider = Arc::clone(provider);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                header(provider.as_ref())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("caller thread"))
        .collect()
}

#[test]
fn concurrent_callers_share_one_refresh() {
    // A slow token endpoint keeps the refresh in flight while the other callers arrive.
    let server = TokenServer::start(Options {
        token_delay: Duration::from_millis(200),
        ..Options::default()
    });
    let provider = m2m_provider(&server, CLIENT_SECRET);
    let headers = concurrent_headers(&provider, 8);
    assert_eq!(headers.len(), 8);
    assert!(
        headers.iter().all(|h| h == "Bearer m2m-access-token-1"),
        "{headers:?}"
    );
    assert_eq!(server.token_hits(), 1);
    assert_eq!(server.discovery_hits(), 1);

    provider.invalidate();
    let headers = concurrent_headers(&provider, 8);
    assert!(
        headers.iter().all(|h| h == "Bearer m2m-access-token-2"),
        "{headers:?}"
    );
    assert_eq!(server.token_hits(), 2);
}

#[test]
fn incorrect_m2m_credentials_give_a_clear_error_without_the_secret() {
    let server = TokenServer::start(Options {
        recording: RECORDED_INCORRECT,
        ..Options::default()
    });
    let wrong = "wrong-secret-do-not-print";
    let provider = m2m_provider(&server, wrong);
    let error = provider.authorization().expect_err("wrong secret");
    assert!(error.is_rejected(), "{error:?}");
    assert!(!error.is_retryable());
    let endpoint = format!("{}/oidc/v1/token", server.base_url());
    assert_eq!(error.endpoint(), Some(endpoint.as_str()));
    assert_eq!(
        error.to_string(),
        format!(
            "authentication failed at {endpoint}: HTTP 401: invalid_client: Client authentication failed"
        )
    );
    let debug = format!("{error:?}");
    for text in [error.to_string(), debug] {
        assert!(!text.contains(wrong), "secret leaked: {text}");
    }
    // Rejections are not retried at the token endpoint, and nothing is cached: the next call
    // asks again.
    assert_eq!(server.token_hits(), 1);
    assert!(provider.authorization().is_err());
    assert_eq!(server.token_hits(), 2);
    // What was sent carried the wrong secret (the server saw it; the error did not).
    let requests = server.shared.token_requests();
    let sent = requests[0].authorization.as_deref().expect("header");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(sent.trim_start_matches("Basic "))
        .expect("base64");
    assert_eq!(decoded, format!("{CLIENT_ID}:{wrong}").into_bytes());
}

#[test]
fn token_endpoint_5xx_is_retried_a_bounded_number_of_times() {
    let server = TokenServer::start(Options {
        unavailable_first: 1,
        ..Options::default()
    });
    let provider = m2m_provider(&server, CLIENT_SECRET);
    assert_eq!(header(provider.as_ref()), "Bearer m2m-access-token-2");
    assert_eq!(server.token_hits(), 2);

    let server = TokenServer::start(Options {
        unavailable_first: usize::MAX,
        ..Options::default()
    });
    let provider = m2m_provider(&server, CLIENT_SECRET);
    let error = provider.authorization().expect_err("always 503");
    assert!(
        matches!(error, AuthError::Unavailable { status: 503, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("temporarily_unavailable: try again"),
        "{error}"
    );
    assert_eq!(server.token_hits(), 3, "bounded attempts");
}

#[test]
fn azure_service_principal_posts_the_form_and_caches() {
    // Azure v1-style string `expires_in`.
    let server = TokenServer::start(Options {
        expires_in: serde_json::json!("3599"),
        ..Options::default()
    });
    let provider = azure_provider(&server, AZURE_SECRET);
    assert_eq!(
        provider.identity(),
        format!("azure-sp:{TENANT}/{AZURE_CLIENT_ID}")
    );
    for _ in 0..3 {
        assert_eq!(header(provider.as_ref()), "Bearer aad-access-token-1");
    }
    assert_eq!(server.token_hits(), 1);
    assert_eq!(server.discovery_hits(), 0);
    let requests = server.shared.token_requests();
    let request = &requests[0];
    assert_eq!(request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(request.authorization, None);
    assert_eq!(
        request.form,
        BTreeMap::from([
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), AZURE_CLIENT_ID.to_owned()),
            ("client_secret".to_owned(), AZURE_SECRET.to_owned()),
            (
                "scope".to_owned(),
                "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default".to_owned()
            ),
        ])
    );
}

#[test]
fn azure_refresh_margin_and_throttling() {
    let server = TokenServer::start(Options {
        expires_in: serde_json::json!(30),
        unavailable_first: 1,
        ..Options::default()
    });
    let provider = azure_provider(&server, AZURE_SECRET);
    // The first attempt is throttled (429) and retried.
    assert_eq!(header(provider.as_ref()), "Bearer aad-access-token-2");
    // 30 s left is inside the 40 s margin: refreshed on every call.
    assert_eq!(header(provider.as_ref()), "Bearer aad-access-token-3");
    assert_eq!(server.token_hits(), 3);
}

#[test]
fn incorrect_azure_secret_gives_a_clear_error_without_the_secret() {
    let server = TokenServer::start(Options::default());
    let wrong = "wrong~azure~secret";
    let provider = azure_provider(&server, wrong);
    let error = provider.authorization().expect_err("wrong secret");
    assert!(error.is_rejected(), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "authentication failed at {}/{TENANT}/oauth2/v2.0/token: HTTP 401: invalid_client: AADSTS7000215",
            server.base_url()
        )),
        "{text}"
    );
    assert!(!text.contains(wrong) && !format!("{error:?}").contains(wrong));
}

#[test]
fn unreachable_token_endpoint_is_a_transport_error() {
    // A port that was just free: nothing listens on it.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let provider = ClientConfig::builder()
        .host(format!("http://{addr}"))
        .warehouse_id("w")
        .credentials(Credentials::oauth_m2m(CLIENT_ID, CLIENT_SECRET))
        .build()
        .expect("config")
        .auth_provider(&http())
        .expect("provider");
    let error = provider.authorization().expect_err("nothing listens");
    assert!(matches!(error, AuthError::Transport { .. }), "{error:?}");
    assert!(error.is_retryable(), "connection refused is retryable");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach http://{addr}/oidc/.well-known/oauth-authorization-server"
        )),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET));
    // The root cause is part of the message, not only of the source chain.
    assert!(text.to_ascii_lowercase().contains("refused"), "{text}");
}

#[test]
fn client_uses_the_m2m_token_and_refreshes_it_after_a_401() {
    let server = TokenServer::start(Options {
        reject_first_session: true,
        ..Options::default()
    });
    let recorded = recorded_mapping(RECORDED_SUCCESS, "POST", "/api/2.0/sql/sessions/");
    let config = ClientConfig::builder()
        .host(server.base_url())
        .warehouse_id("8cfbc99c31463743")
        .catalog("SPARK")
        .schema("default")
        .credentials(Credentials::oauth_m2m(CLIENT_ID, CLIENT_SECRET))
        .build()
        .expect("config");
    let client = dbfed_databricks::Client::builder(config)
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let session = client
        .create_default_session()
        .expect("session after one re-auth");
    assert_eq!(session.id(), "01efcd90-a61c-1462-b907-a875b78e92d2");

    let requests = server.shared.session_requests.lock().expect("lock").clone();
    let auth: Vec<_> = requests.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(
        auth,
        [
            Some("Bearer m2m-access-token-1".to_owned()),
            Some("Bearer m2m-access-token-2".to_owned())
        ],
        "the 401 invalidated the cached token and a fresh one was used"
    );
    assert_eq!(server.token_hits(), 2);
    assert_eq!(server.discovery_hits(), 1);
    // The body matches what the recorded real client sent.
    let expected: serde_json::Value = serde_json::from_str(
        recorded["request"]["bodyPatterns"][0]["equalToJson"]
            .as_str()
            .expect("recorded body pattern"),
    )
    .expect("recorded JSON");
    for (key, value) in expected.as_object().expect("object") {
        assert_eq!(&requests[1].1[key], value, "session request field {key}");
    }
    session.close().expect("close");
}
