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
}

impl Api {
    fn url(&self, path: &str) -> Result<url::Url> {
        self.base
            .join(path)
            .map_err(|e| Error::protocol(format!("invalid API path {path:?}: {e}")))
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
            let mut builder = self
                .http
                .request(call.method.clone(), url.clone())
                .header(AUTHORIZATION, header)
                .timeout(self.request_timeout + call.extra_timeout);
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
                    let body = response.text().map_err(|e| Error::transport(&request, e));
                    if (200..300).contains(&status) {
                        return body;
                    }
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
            };
            let delay = policy.delay(attempt, retry_after);
            if attempt >= policy.attempts() || started.elapsed() + delay > policy.elapsed_budget() {
                tracing::warn!(request = %request, attempt, "giving up after retries");
                return Err(failure);
            }
            tracing::info!(request = %request, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying");
            if !sleep_unless(delay, call.cancel) {
                return Err(failure);
            }
        }
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

/// The start of a body, on one line, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_BODY_IN_ERROR)
        .collect();
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
    fn sleep_stops_on_cancel() {
        let flag = AtomicBool::new(true);
        assert!(!sleep_unless(Duration::from_secs(60), Some(&flag)));
        assert!(sleep_unless(Duration::from_millis(1), None));
    }
}
