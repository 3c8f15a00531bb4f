//! Authenticated JSON calls to the workspace, with retries (private).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;

use crate::auth::AuthProvider;
use crate::error::{Error, Result};
use crate::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use crate::wire::ServiceError;

/// How much of a non-JSON error body goes into an error message.
const MAX_BODY_IN_ERROR: usize = 300;
/// The shortest timeout a poll gets when the caller's deadline is (nearly) reached.
pub(crate) const MIN_ATTEMPT_BEFORE_DEADLINE: Duration = Duration::from_millis(250);

/// One API call.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub body: Option<serde_json::Value>,
    /// False only for execute: governs which failures are retried.
    pub idempotent: bool,
    /// Extra time on top of the client's request timeout (execute's `wait_timeout`).
    pub extra_timeout: Duration,
    /// Stops retry sleeps early.
    pub cancel: Option<&'a AtomicBool>,
    /// Overrides the client's retry policy.
    pub retry: Option<&'a RetryPolicy>,
    /// Overrides the per-attempt timeout (best-effort calls made from `Drop`).
    pub timeout: Option<Duration>,
    /// No retry sleep goes past this instant (a caller's own deadline): when the next retry
    /// would start after it, the call waits until the deadline and returns its last failure.
    pub deadline: Option<Instant>,
}

impl Call<'_> {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            idempotent: true,
            extra_timeout: Duration::ZERO,
            cancel: None,
            retry: None,
            timeout: None,
            deadline: None,
        }
    }
}

/// Workspace API access shared by a client, its streams and their download threads.
#[derive(Debug)]
pub(crate) struct Api {
    pub base: url::Url,
    pub http: reqwest::blocking::Client,
    pub auth: Arc<dyn AuthProvider>,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// Whether a 401 is worth one retry with a fresh token (not for static tokens).
    pub reauth_on_401: bool,
    /// Timeout of the best-effort release calls made when a stream or session is dropped.
    pub close_timeout: Duration,
    /// The largest response body read; a larger one is a protocol error.
    pub max_body_bytes: u64,
    /// Workspace API calls retried (each retry counts once), for metrics.
    pub retries: std::sync::atomic::AtomicU64,
    /// Response bytes received from the workspace and its result links (bodies only, as they
    /// arrive), for metrics and progress.
    pub received: std::sync::atomic::AtomicU64,
}

impl Api {
    fn url(&self, path: &str) -> Result<url::Url> {
        join_same_origin(&self.base, path)
    }

    /// Performs `call` and parses the JSON answer (an empty body reads as `{}`).
    pub fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let request = format!("{} {}", call.method, call.path);
        let text = self.send(call)?;
        let text = if text.trim().is_empty() {
            "{}"
        } else {
            text.as_str()
        };
        serde_json::from_str(text).map_err(|e| {
            Error::protocol(format!(
                "{request} answered malformed JSON ({e}): {}",
                snippet(text)
            ))
        })
    }

    /// Performs `call` and returns the body text of a 2xx answer.
    pub fn send(&self, call: Call<'_>) -> Result<String> {
        let policy = call.retry.unwrap_or(&self.retry);
        let request = format!("{} {}", call.method, call.path);
        let url = self.url(&call.path)?;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let authorization = self.auth.authorization()?;
            let mut header = HeaderValue::from_str(authorization.expose()).map_err(|_| {
                Error::protocol("the auth provider returned a header value with invalid characters")
            })?;
            header.set_sensitive(true);
            let timeout = call
                .timeout
                .unwrap_or(self.request_timeout + call.extra_timeout);
            let mut builder = self
                .http
                .request(call.method.clone(), url.clone())
                .header(AUTHORIZATION, header)
                .timeout(timeout);
            if let Some(body) = &call.body {
                builder = builder.json(body);
            }
            tracing::debug!(request = %request, attempt, "databricks api call");
            let (retry_after, failure) = match builder.send() {
                Err(e) => {
                    let retryable =
                        call.idempotent && (e.is_connect() || e.is_timeout() || e.is_request());
                    let err = Error::transport(&request, e);
                    if !retryable {
                        return Err(err);
                    }
                    (None, err)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let has_retry_after = response.headers().contains_key(RETRY_AFTER);
                    let body = match read_text_limited(response, self.max_body_bytes, timeout) {
                        Ok(Some(text)) => {
                            self.received
                                .fetch_add(text.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            Ok(text)
                        }
                        Ok(None) => {
                            return Err(Error::protocol(format!(
                                "{request} answered a body larger than the limit of {} bytes",
                                self.max_body_bytes
                            )));
                        }
                        Err(e) => Err(e),
                    }
                    .map_err(|e| match e {
                        BodyError::Http(e) => Error::transport(&request, e),
                        BodyError::Io(e) => Error::Protocol(format!(
                            "{request}: the connection failed while reading the body: {e}"
                        )),
                    });
                    if (200..300).contains(&status) {
                        match body {
                            Ok(text) => return Ok(text),
                            // The connection broke mid-body: as safe to repeat as the request.
                            Err(e) if call.idempotent => (None, e),
                            Err(e) => return Err(e),
                        }
                    } else {
                        let body = body.unwrap_or_default();
                        let err = http_error(&request, status, &body);
                        if status == 401 && !reauthenticated && self.reauth_on_401 {
                            // A token revoked or expired early: fetch a fresh one, retry once.
                            tracing::debug!(request = %request, "401: refreshing the token once");
                            self.auth.invalidate();
                            reauthenticated = true;
                            continue;
                        }
                        if !is_retryable_status(status, call.idempotent, has_retry_after) {
                            return Err(err);
                        }
                        (retry_after, err)
                    }
                }
            };
            let delay = policy.delay(attempt, retry_after);
            if attempt >= policy.attempts() || started.elapsed() + delay > policy.elapsed_budget() {
                tracing::warn!(request = %request, attempt, "giving up after retries");
                return Err(failure);
            }
            if let Some(deadline) = call.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if delay >= left {
                    // The caller's deadline comes first: wait for it, not for the whole delay,
                    // and hand the failure back (the caller turns it into its timeout).
                    tracing::debug!(request = %request, attempt, "deadline reached before the next retry");
                    sleep_unless(left, call.cancel);
                    return Err(failure);
                }
            }
            tracing::info!(request = %request, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying");
            self.retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !sleep_unless(delay, call.cancel) {
                return Err(failure);
            }
        }
    }
}

/// Why a body could not be read.
enum BodyError {
    Http(reqwest::Error),
    Io(std::io::Error),
}

/// Reads a response body as text (invalid UTF-8 replaced), or `None` when it is longer than
/// `limit` bytes (declared or actual): the body's size comes from the network.
///
/// The blocking HTTP client's timeout bounds each read, not the whole body: the body must also
/// arrive within `timeout` in total (checked between reads).
fn read_text_limited(
    response: reqwest::blocking::Response,
    limit: u64,
    timeout: Duration,
) -> std::result::Result<Option<String>, BodyError> {
    use std::io::Read;
    if response.content_length().is_some_and(|len| len > limit) {
        return Ok(None);
    }
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut response = response;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match response.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // reqwest reports its own errors wrapped in io::Error: keep them typed.
            Err(e) => {
                return Err(match e.into_inner() {
                    Some(inner) => match inner.downcast::<reqwest::Error>() {
                        Ok(http) => BodyError::Http(*http),
                        Err(other) => BodyError::Io(std::io::Error::other(other)),
                    },
                    None => BodyError::Io(std::io::Error::other("body read failed")),
                });
            }
        };
        if n == 0 {
            break;
        }
        if (bytes.len() + n) as u64 > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(&buf[..n]);
        if started.elapsed() > timeout {
            return Err(BodyError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the body did not arrive within {timeout:?}"),
            )));
        }
    }
    Ok(Some(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

/// Resolves an API path against the workspace URL, refusing anything that leaves the
/// workspace's origin: some paths come from the server (`next_chunk_internal_link`), and a
/// protocol-relative `//host/...` or absolute URL would carry the workspace token elsewhere.
pub(crate) fn join_same_origin(base: &url::Url, path: &str) -> Result<url::Url> {
    let url = base
        .join(path)
        .map_err(|e| Error::protocol(format!("invalid API path {:?}: {e}", snippet(path))))?;
    if url.origin() != base.origin() || !path.starts_with('/') || path.starts_with("//") {
        return Err(Error::protocol(format!(
            "API path {:?} does not stay on the workspace host",
            snippet(path)
        )));
    }
    Ok(url)
}

/// Runs a best-effort release call (`DELETE` of a statement or session) made from `Drop` or a
/// cancel: right here on a plain thread, or on a short-lived thread of its own when called
/// from inside an async runtime, where a blocking HTTP call would stall a worker (and
/// panics in reqwest's debug builds, turning a drop during unwinding into an abort).
pub(crate) fn release_off_async(name: &str, release: impl FnOnce() + Send + 'static) {
    if tokio::runtime::Handle::try_current().is_err() {
        release();
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(release)
    {
        tracing::warn!(error = %e, "cannot start a thread for a release call: skipped");
    }
}

/// Sleeps for `delay` in short slices; returns false if `cancel` was raised meanwhile.
pub(crate) fn sleep_unless(delay: Duration, cancel: Option<&AtomicBool>) -> bool {
    let until = Instant::now() + delay;
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(25)));
    }
}

/// Builds the typed error of a non-2xx answer from its (JSON, text or HTML) body.
pub(crate) fn http_error(request: &str, status: u16, body: &str) -> Error {
    let parsed: Option<ServiceError> = serde_json::from_str(body).ok();
    let (error_code, message) = match parsed {
        Some(e) if e.error_code.is_some() || e.message.is_some() => (
            e.error_code,
            e.message.unwrap_or_else(|| canonical_reason(status)),
        ),
        _ if body.trim().is_empty() => (None, canonical_reason(status)),
        _ => (None, snippet(body)),
    };
    Error::Http {
        request: request.to_owned(),
        status,
        error_code,
        message,
    }
}

fn canonical_reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("no message")
        .to_owned()
}

/// The start of a body, on one line, for error messages; URLs lose their query strings.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_BODY_IN_ERROR)
        .collect();
    // Cut first, then redact: linear in the shown part only, whatever the body's size.
    let one_line = crate::error::redact_urls_in(&one_line);
    let trimmed = one_line.trim();
    if body.chars().count() > MAX_BODY_IN_ERROR {
        format!("{trimmed}...")
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_json_text_and_html() {
        let e = http_error(
            "POST /api/2.0/sql/sessions",
            403,
            r#"{"error_code":403,"message":"Invalid access token."}"#,
        );
        assert_eq!(e.error_code(), Some("403"));
        assert_eq!(e.http_status(), Some(403));
        assert!(e.to_string().contains("Invalid access token."));

        let e = http_error("GET /x", 502, "<html><body>Bad gateway\n</body></html>");
        assert_eq!(e.error_code(), None);
        assert!(e.to_string().contains("Bad gateway"), "{e}");

        let e = http_error("GET /x", 503, "");
        assert!(e.to_string().contains("Service Unavailable"), "{e}");

        let long = "x".repeat(10_000);
        let e = http_error("GET /x", 500, &long);
        assert!(e.to_string().len() < 500);
    }

    #[test]
    fn api_paths_stay_on_the_workspace_origin() {
        let base = url::Url::parse("https://adb-1.azuredatabricks.net/").expect("base");
        let ok = join_same_origin(&base, "/api/2.0/sql/statements/s/result/chunks/1").expect("ok");
        assert_eq!(
            ok.as_str(),
            "https://adb-1.azuredatabricks.net/api/2.0/sql/statements/s/result/chunks/1"
        );
        for hostile in [
            "//evil.example/api/2.0/sql/statements/s/result/chunks/1",
            "https://evil.example/x",
            "http://adb-1.azuredatabricks.net/x",
            "https://adb-1.azuredatabricks.net:8443/x",
            "api/relative",
            "/\\evil.example/x",
        ] {
            let err = join_same_origin(&base, hostile).expect_err(hostile);
            assert!(matches!(err, Error::Protocol(_)), "{hostile}: {err:?}");
        }
    }

    #[test]
    fn sleep_stops_on_cancel() {
        let flag = AtomicBool::new(true);
        assert!(!sleep_unless(Duration::from_secs(60), Some(&flag)));
        assert!(sleep_unless(Duration::from_millis(1), None));
    }
}
