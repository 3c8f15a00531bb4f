//! Helpers: an emulator per test and a tiny JSON-over-HTTP client.

use std::time::Duration;

use dbfed_emulator::{EmulatorBuilder, EmulatorHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const TOKEN: &str = "dapi-test-token";
pub const WAREHOUSE: &str = "abc123";

/// Starts an emulator with a known token.
pub async fn start(builder: EmulatorBuilder) -> EmulatorHandle {
    builder
        .token(TOKEN)
        .start("127.0.0.1:0")
        .await
        .expect("the emulator starts")
}

/// A client bound to one emulator.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(handle: &EmulatorHandle) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: handle.url().to_owned(),
            token: TOKEN.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Executes and expects HTTP 200.
    pub async fn execute(&self, mut body: Value) -> Value {
        if body.get("warehouse_id").is_none() {
            body["warehouse_id"] = json!(WAREHOUSE);
        }
        let (status, value) = self.post("/api/2.0/sql/statements", body).await;
        assert_eq!(status, StatusCode::OK, "execute failed: {value}");
        value
    }

    /// Polls until the statement reaches a terminal state (hang guard: 60 s).
    pub async fn wait(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let (status, value) = self.get(&format!("/api/2.0/sql/statements/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{value}");
            let state = value["status"]["state"].as_str().unwrap_or_default();
            if !matches!(state, "PENDING" | "RUNNING") {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("statement {id} never finished");
    }

    /// Executes and waits for a terminal state.
    pub async fn run(&self, body: Value) -> Value {
        let response = self.execute(body).await;
        match response["status"]["state"].as_str() {
            Some("PENDING" | "RUNNING") => {
                let id = response["statement_id"].as_str().expect("id").to_owned();
                self.wait(&id).await
            }
            _ => response,
        }
    }

    /// Every `data_array` row of an INLINE result, following `next_chunk_internal_link`.
    pub async fn all_inline_rows(&self, response: &Value) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut result = response["result"].clone();
        for _ in 0..10_000 {
            if let Some(data) = result["data_array"].as_array() {
                rows.extend(data.iter().cloned());
            }
            match result["next_chunk_internal_link"].as_str() {
                Some(link) => {
                    let (status, next) = self.get(link).await;
                    assert_eq!(status, StatusCode::OK, "{next}");
                    result = next;
                }
                None => return rows,
            }
        }
        panic!("too many chunks");
    }
}

/// Downloads a URL without credentials.
pub async fn download(url: &str) -> (StatusCode, bytes::Bytes) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("download sent");
    let status = response.status();
    (status, response.bytes().await.expect("download body"))
}

/// Polls `/_emulator/statements` until `pred` holds for statement `id` (hang guard: 60 s).
pub async fn wait_record(
    handle: &EmulatorHandle,
    id: &str,
    pred: impl Fn(&dbfed_emulator::StatementRecord) -> bool,
) -> dbfed_emulator::StatementRecord {
    let mut last = None;
    for _ in 0..1200 {
        last = handle.statements().into_iter().find(|r| r.id == id);
        if let Some(r) = &last
            && pred(r)
        {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("statement {id} never reached the expected record state: {last:?}");
}

/// SQL producing rows `1..=n` as column `n` (INT) and `'row<i>'` as column `s`.
pub fn values_sql(n: usize) -> String {
    let rows: Vec<String> = (1..=n).map(|i| format!("({i}, 'row{i}')")).collect();
    format!(
        "SELECT * FROM (VALUES {}) AS t(n, s) ORDER BY n",
        rows.join(", ")
    )
}
