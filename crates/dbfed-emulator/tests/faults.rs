//! Fault injection: statuses, resets, slow downloads, mid-way failures.

use std::time::Duration;

use dbfed_emulator::{Emulator, Endpoint, FaultAction, FaultRule, StatementState};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Api, download, start, values_sql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_faults_with_and_without_retry_after() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let rule = handle
        .faults()
        .inject(FaultRule::status(Endpoint::ExecuteStatement, 429, Some(2)).times(1));
    let response = api
        .http
        .post(api.url("/api/2.0/sql/statements"))
        .bearer_auth(&api.token)
        .json(&json!({ "statement": "SELECT 1", "warehouse_id": "w" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(handle.faults().fired(rule), 1);
    assert!(
        handle.statements().is_empty(),
        "the faulted execute did not run"
    );
    let ok = api.run(json!({ "statement": "SELECT 1" })).await;
    assert_eq!(ok["status"]["state"], "SUCCEEDED");
    let id = ok["statement_id"].as_str().expect("id");
    handle.faults().inject(
        FaultRule::status(Endpoint::GetStatement, 503, None)
            .skip(1)
            .times(1),
    );
    let (first, _) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
    let (second, body) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
    let (third, _) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
    assert_eq!(
        (first, second, third),
        (
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        )
    );
    assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE");
    handle.faults().clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_slow_downloads() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({ "statement": values_sql(500), "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" }))
        .await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let (_, full) = download(url).await;
    handle.faults().inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::ResetMidDownload { after_bytes: 100 },
        )
        .times(1),
    );
    let cut = reqwest::get(url).await.expect("headers arrive");
    assert_eq!(cut.status(), StatusCode::OK);
    assert!(cut.bytes().await.is_err(), "the body must break off");
    handle.faults().inject(
        FaultRule::new(
            Endpoint::Download,
            FaultAction::SlowDownload {
                bytes_per_second: 200_000,
            },
        )
        .times(1),
    );
    let (status, slow) = download(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(slow, full, "a slow download is still complete");
    assert_eq!(handle.faults().fired_total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_fails_mid_way() {
    let handle = start(Emulator::builder().chunk_rows(2)).await;
    let api = Api::new(&handle);
    handle.faults().inject(
        FaultRule::new(
            Endpoint::ExecuteStatement,
            FaultAction::FailAfterChunks {
                chunks: 2,
                error_code: "INTERNAL_ERROR".into(),
                message: "[INTERNAL_ERROR] executor lost. SQLSTATE: XX000".into(),
                sql_state: "XX000".into(),
            },
        )
        .sql_contains("row5"),
    );
    let response = api.run(json!({ "statement": values_sql(10) })).await;
    assert_eq!(response["status"]["state"], "FAILED", "{response}");
    assert_eq!(response["status"]["error"]["error_code"], "INTERNAL_ERROR");
    assert_eq!(response["status"]["sql_state"], "XX000");
    let other = api.run(json!({ "statement": values_sql(3) })).await;
    assert_eq!(
        other["status"]["state"], "SUCCEEDED",
        "the rule matched by SQL only"
    );
    let record = &handle.statements()[0];
    assert_eq!(record.state, StatementState::Failed);
    assert_eq!(record.sql_state.as_deref(), Some("XX000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_latency_still_serves() {
    let handle = start(Emulator::builder().chunk_latency(Duration::from_millis(50))).await;
    let api = Api::new(&handle);
    let response = api
        .run(
            json!({ "statement": values_sql(3), "disposition": "EXTERNAL_LINKS", "format": "CSV" }),
        )
        .await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    assert_eq!(download(url).await.0, StatusCode::OK);
}
