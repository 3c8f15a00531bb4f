//! Statement lifecycle, validation and error contract over plain HTTP.

use std::time::Duration;

use dbfed_emulator::{Emulator, StatementState};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Api, WAREHOUSE, start, values_sql, wait_record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_json_pages_over_every_chunk() {
    let handle = start(Emulator::builder().chunk_rows(3)).await;
    let api = Api::new(&handle);
    let response = api.run(json!({ "statement": values_sql(7) })).await;
    assert_eq!(response["status"]["state"], "SUCCEEDED", "{response}");
    let manifest = &response["manifest"];
    assert_eq!(manifest["format"], "JSON_ARRAY");
    assert_eq!(manifest["total_row_count"], 7);
    assert_eq!(manifest["total_chunk_count"], 3);
    assert_eq!(manifest["truncated"], false);
    assert_eq!(manifest["schema"]["column_count"], 2);
    assert_eq!(manifest["schema"]["columns"][0]["name"], "n");
    assert_eq!(manifest["schema"]["columns"][1]["type_name"], "STRING");
    assert_eq!(manifest["chunks"][2]["row_offset"], 6);
    assert_eq!(response["result"]["chunk_index"], 0);
    assert_eq!(response["result"]["next_chunk_index"], 1);
    let rows = api.all_inline_rows(&response).await;
    let expected: Vec<serde_json::Value> = (1..=7)
        .map(|i| json!([i.to_string(), format!("row{i}")]))
        .collect();
    assert_eq!(rows, expected);
    let id = response["statement_id"].as_str().expect("id");
    let record = handle
        .statements()
        .into_iter()
        .find(|r| r.id == id)
        .expect("recorded");
    assert_eq!(record.rows, 7);
    assert_eq!(record.chunks, 3);
    assert_eq!(
        record.chunks_served, 3,
        "chunk 0 inline plus two chunk fetches"
    );
    assert_eq!(
        record.identity,
        dbfed_emulator::token_identity(crate::common::TOKEN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_then_polls_to_success() {
    let handle = start(Emulator::builder().statement_latency(Duration::from_millis(200))).await;
    let api = Api::new(&handle);
    let response = api
        .execute(json!({ "statement": "SELECT 42 AS answer", "wait_timeout": "0s" }))
        .await;
    assert_eq!(response["status"]["state"], "PENDING", "{response}");
    assert!(response.get("manifest").is_none());
    let id = response["statement_id"].as_str().expect("id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let done = api.wait(id).await;
    assert_eq!(done["status"]["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["result"]["data_array"], json!([["42"]]));
    assert_eq!(
        done["manifest"]["schema"]["columns"][0]["type_name"],
        "LONG"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_wait_timeout_cancel_cancels() {
    let handle = start(Emulator::builder().statement_latency(Duration::from_secs(120))).await;
    let api = Api::new(&handle);
    let response = api
        .execute(
            json!({ "statement": "SELECT 1", "wait_timeout": "5s", "on_wait_timeout": "CANCEL" }),
        )
        .await;
    assert_eq!(response["status"]["state"], "CANCELED", "{response}");
    let id = response["statement_id"].as_str().expect("id");
    wait_record(&handle, id, |r| {
        r.state == StatementState::Canceled && r.finished_at.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_and_byte_limits_truncate() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({ "statement": values_sql(10), "row_limit": 4 }))
        .await;
    assert_eq!(response["manifest"]["total_row_count"], 4, "{response}");
    assert_eq!(response["manifest"]["truncated"], true);
    assert_eq!(
        response["result"]["data_array"].as_array().map(Vec::len),
        Some(4)
    );
    let exact = api
        .run(json!({ "statement": values_sql(4), "row_limit": "4" }))
        .await;
    assert_eq!(exact["manifest"]["total_row_count"], 4, "{exact}");
    assert_eq!(
        exact["manifest"]["truncated"], false,
        "the limit cut nothing"
    );
    let bytes = api
        .run(json!({ "statement": values_sql(1000), "byte_limit": 64 }))
        .await;
    let rows = bytes["manifest"]["total_row_count"]
        .as_u64()
        .expect("count");
    assert!(rows < 1000, "{bytes}");
    assert_eq!(bytes["manifest"]["truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_received() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({
            "statement": "SELECT :id AS id, :name AS name",
            "parameters": [
                { "name": "id", "value": "42", "type": "INT" },
                { "name": "name", "value": null }
            ]
        }))
        .await;
    let id = response["statement_id"].as_str().expect("id");
    let record = handle
        .statements()
        .into_iter()
        .find(|r| r.id == id)
        .expect("recorded");
    assert_eq!(record.parameters.len(), 2);
    assert_eq!(record.parameters[0].name.as_deref(), Some("id"));
    assert_eq!(record.parameters[0].value.as_deref(), Some("42"));
    assert_eq!(record.parameters[0].type_text.as_deref(), Some("INT"));
    assert_eq!(record.parameters[1].value, None);
    // SQL text + "id" "42" "INT" + "name".
    let expected = "SELECT :id AS id, :name AS name".len() + 2 + 2 + 3 + 4;
    assert_eq!(record.request_bytes, expected as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_400s() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let cases = [
        json!({ "warehouse_id": WAREHOUSE }),
        json!({ "statement": "SELECT 1" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "disposition": "SOMEWHERE" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "format": "ARROW_STREAM" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "disposition": "INLINE", "format": "CSV" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "wait_timeout": "3s" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "wait_timeout": "51s" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "on_wait_timeout": "WAIT" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "row_limit": "many" }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "row_limit": -1 }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "result_compression": "GZIP" }),
        json!({ "statement": 5, "warehouse_id": WAREHOUSE }),
        json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE,
                "query_tags": (0..21).map(|i| json!({"key": format!("k{i}")})).collect::<Vec<_>>() }),
        json!([1, 2]),
    ];
    for body in cases {
        let (status, value) = api.post("/api/2.0/sql/statements", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {value}");
        assert_eq!(
            value["error_code"], "INVALID_PARAMETER_VALUE",
            "{body} -> {value}"
        );
        assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Malformed JSON.
    let response = api
        .http
        .post(api.url("/api/2.0/sql/statements"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{\"statement\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let value: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(value["error_code"], "INVALID_PARAMETER_VALUE");
    // A statement over 16 MiB.
    let huge = "x".repeat(16 * 1024 * 1024 + 1);
    let (status, value) = api
        .post(
            "/api/2.0/sql/statements",
            json!({ "statement": huge, "warehouse_id": WAREHOUSE }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["error_code"], "INVALID_PARAMETER_VALUE");
    // A body over the request limit.
    let huge = "x".repeat(33 * 1024 * 1024);
    let (status, value) = api
        .post(
            "/api/2.0/sql/statements",
            json!({ "statement": huge, "warehouse_id": WAREHOUSE }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{value}");
    assert_eq!(value["error_code"], "INVALID_PARAMETER_VALUE");
    assert!(handle.statements().is_empty(), "no statement was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statements_carry_sqlstate() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api.run(json!({ "statement": "SELEC 1" })).await;
    assert_eq!(response["status"]["state"], "FAILED", "{response}");
    let error = &response["status"]["error"];
    assert!(
        error["error_code"].as_str().is_some_and(|c| !c.is_empty()),
        "{response}"
    );
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let sql_state = response["status"]["sql_state"].as_str().expect("sql_state");
    assert_eq!(sql_state.len(), 5, "{sql_state}");
    assert!(response.get("manifest").is_none());
    let id = response["statement_id"].as_str().expect("id");
    let (status, value) = api
        .get(&format!("/api/2.0/sql/statements/{id}/result/chunks/0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let id = "01ef9de2-db21-16af-b4cb-9ccf302d746b";
    let (s1, v1) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
    let (s2, _) = api
        .post(&format!("/api/2.0/sql/statements/{id}/cancel"), json!({}))
        .await;
    let (s3, _) = api.delete(&format!("/api/2.0/sql/statements/{id}")).await;
    let (s4, _) = api
        .get(&format!("/api/2.0/sql/statements/{id}/result/chunks/0"))
        .await;
    let (s5, _) = api
        .delete(&format!(
            "/api/2.0/sql/sessions/{id}?warehouse_id={WAREHOUSE}"
        ))
        .await;
    for s in [s1, s2, s3, s4, s5] {
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert_eq!(v1["error_code"], "NOT_FOUND", "{v1}");
    let (status, value) = api.get("/api/2.0/sql/warehouses").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(value["error_code"], "ENDPOINT_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_long_query() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .execute(json!({
            "statement": "SELECT count(*) FROM samples.tpch.lineitem a JOIN samples.tpch.lineitem b ON a.l_linenumber = b.l_linenumber",
            "wait_timeout": "0s"
        }))
        .await;
    let id = response["statement_id"].as_str().expect("id").to_owned();
    wait_record(&handle, &id, |r| {
        r.state == StatementState::Running && r.engine_active
    })
    .await;
    let (status, body) = api
        .post(&format!("/api/2.0/sql/statements/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({}));
    let done = api.wait(&id).await;
    assert_eq!(done["status"]["state"], "CANCELED", "{done}");
    // The engine query really stopped: its stream was dropped.
    wait_record(&handle, &id, |r| !r.engine_active).await;
    let listed: serde_json::Value = reqwest::get(api.url("/_emulator/statements"))
        .await
        .expect("introspection")
        .json()
        .await
        .expect("json");
    let entry = listed
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == id.as_str()))
        .expect("listed");
    assert_eq!(entry["state"], "CANCELED");
    assert_eq!(entry["engine_active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drops_results() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api.run(json!({ "statement": values_sql(3) })).await;
    let id = response["statement_id"].as_str().expect("id");
    // A JSON body on DELETE is tolerated.
    let response = api
        .http
        .delete(api.url(&format!("/api/2.0/sql/statements/{id}")))
        .bearer_auth(&api.token)
        .json(&json!({ "statement_id": id }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "{}");
    let (_, polled) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
    assert_eq!(polled["status"]["state"], "CLOSED");
    assert!(polled.get("result").is_none());
    let (status, _) = api
        .get(&format!("/api/2.0/sql/statements/{id}/result/chunks/0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_catalog_and_schema() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let (status, created) = api
        .post(
            "/api/2.0/sql/sessions/",
            json!({ "warehouse_id": WAREHOUSE, "catalog": "samples", "schema": "tpch",
                    "session_confs": { "TIMEZONE": "UTC" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let session = created["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    let response = api
        .run(json!({ "statement": "SELECT 1", "session_id": session }))
        .await;
    let id = response["statement_id"].as_str().expect("id");
    let record = handle
        .statements()
        .into_iter()
        .find(|r| r.id == id)
        .expect("recorded");
    assert_eq!(record.catalog.as_deref(), Some("samples"));
    assert_eq!(record.schema.as_deref(), Some("tpch"));
    assert_eq!(record.session_id.as_deref(), Some(session.as_str()));
    let path = format!("/api/2.0/sql/sessions/{session}?warehouse_id={WAREHOUSE}");
    let (status, body) = api.delete(&path).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, _) = api.delete(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, value) = api
        .post(
            "/api/2.0/sql/statements",
            json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE, "session_id": session }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{value}");
    let (status, value) = api
        .post("/api/2.0/sql/sessions", json!({ "catalog": "x" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_is_429_with_retry_after() {
    let handle = start(
        Emulator::builder()
            .max_concurrent_statements(1)
            .max_queued_statements(1)
            .statement_latency(Duration::from_secs(120))
            .retry_after(3),
    )
    .await;
    let api = Api::new(&handle);
    let first = api
        .execute(json!({ "statement": "SELECT 1", "wait_timeout": "0s" }))
        .await;
    let first_id = first["statement_id"].as_str().expect("id").to_owned();
    wait_record(&handle, &first_id, |r| r.state == StatementState::Running).await;
    let second = api
        .execute(json!({ "statement": "SELECT 2", "wait_timeout": "0s" }))
        .await;
    let second_id = second["statement_id"].as_str().expect("id").to_owned();
    let (_, polled) = api
        .get(&format!("/api/2.0/sql/statements/{second_id}"))
        .await;
    assert_eq!(
        polled["status"]["state"], "PENDING",
        "queued behind the first"
    );
    let response = api
        .http
        .post(api.url("/api/2.0/sql/statements"))
        .bearer_auth(&api.token)
        .json(&json!({ "statement": "SELECT 3", "warehouse_id": WAREHOUSE, "wait_timeout": "0s" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3")
    );
    // Cancelling the first lets the second run.
    api.post(
        &format!("/api/2.0/sql/statements/{first_id}/cancel"),
        json!({}),
    )
    .await;
    wait_record(&handle, &second_id, |r| r.state == StatementState::Running).await;
    api.post(
        &format!("/api/2.0/sql/statements/{second_id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(
        handle.statements().len(),
        2,
        "the rejected statement was not created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_warehouse_rejects_others() {
    let handle = start(Emulator::builder().warehouse_id("pinned")).await;
    let api = Api::new(&handle);
    let (status, value) = api
        .post(
            "/api/2.0/sql/statements",
            json!({ "statement": "SELECT 1", "warehouse_id": "other" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{value}");
    let ok = api
        .run(json!({ "statement": "SELECT 1", "warehouse_id": "pinned" }))
        .await;
    assert_eq!(ok["status"]["state"], "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_json_body_is_tolerated() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api.run(json!({ "statement": "SELECT 1" })).await;
    let id = response["statement_id"].as_str().expect("id");
    let response = api
        .http
        .get(api.url(&format!("/api/2.0/sql/statements/{id}")))
        .bearer_auth(&api.token)
        .json(&json!({ "statement_id": id }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
}
