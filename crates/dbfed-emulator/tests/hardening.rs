//! Review fixes: bounded memory, saturating lifetimes, terminal states that stick.

use std::time::Duration;

use dbfed_emulator::Emulator;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Api, download, start, values_sql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_history_is_bounded() {
    let handle = start(Emulator::builder().max_statement_history(3)).await;
    let api = Api::new(&handle);
    let mut ids = Vec::new();
    for i in 0..5 {
        let done = api
            .run(json!({ "statement": format!("SELECT {i} AS i") }))
            .await;
        assert_eq!(done["status"]["state"], "SUCCEEDED", "{done}");
        ids.push(done["statement_id"].as_str().expect("id").to_owned());
    }
    let kept: Vec<String> = handle.statements().into_iter().map(|r| r.id).collect();
    assert_eq!(kept, ids[2..], "only the newest three are remembered");
    let (status, body) = api
        .get(&format!("/api/2.0/sql/statements/{}", ids[0]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .get(&format!("/api/2.0/sql/statements/{}", ids[4]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["data_array"], json!([["4"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_statements_are_never_forgotten() {
    let handle = start(
        Emulator::builder()
            .max_statement_history(1)
            .statement_latency(Duration::from_secs(600)),
    )
    .await;
    let api = Api::new(&handle);
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = api
            .execute(json!({ "statement": format!("SELECT {i}"), "wait_timeout": "0s" }))
            .await;
        ids.push(response["statement_id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let (status, body) = api.get(&format!("/api/2.0/sql/statements/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let state = body["status"]["state"].as_str().unwrap_or_default();
        assert!(matches!(state, "PENDING" | "RUNNING"), "{body}");
    }
    for id in &ids {
        api.post(&format!("/api/2.0/sql/statements/{id}/cancel"), json!({}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_link_ttl_does_not_panic() {
    // "Never expires": must saturate, not overflow the expiration time.
    let handle =
        start(Emulator::builder().link_ttl(Duration::from_secs(100_000_000_000_000))).await;
    let api = Api::new(&handle);
    let done = api
        .run(json!({
            "statement": values_sql(3),
            "disposition": "EXTERNAL_LINKS",
            "format": "CSV"
        }))
        .await;
    assert_eq!(done["status"]["state"], "SUCCEEDED", "{done}");
    let url = done["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let (status, body) = download(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "n,s\n1,row1\n2,row2\n3,row3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_token_lifetime_does_not_panic() {
    let handle = start(
        Emulator::builder()
            .oauth_client("sp", "secret")
            .token_lifetime(Duration::MAX),
    )
    .await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/oidc/v1/token", handle.url()))
        .basic_auth("sp", Some("secret"))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let token: Value = response.json().await.expect("json");
    let access = token["access_token"].as_str().expect("access_token");
    let mut api = Api::new(&handle);
    api.token = access.to_owned();
    let done = api.run(json!({ "statement": "SELECT 7 AS x" })).await;
    assert_eq!(done["result"]["data_array"], json!([["7"]]));
    assert_eq!(handle.statements()[0].identity, "oauth:sp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_records_do_not_keep_huge_paths() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let long = "x".repeat(20_000);
    let (status, _) = api.get(&format!("/api/2.0/sql/statements/{long}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let record = handle
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/api/2.0/sql/statements/xxx"))
        .expect("recorded");
    assert!(
        record.path.len() <= 1024,
        "{} bytes kept",
        record.path.len()
    );
    assert_eq!(record.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_memory_is_bounded() {
    // A budget smaller than one result: each new result evicts the older ones.
    let handle = start(Emulator::builder().max_result_bytes(1)).await;
    let api = Api::new(&handle);
    let first = api.run(json!({ "statement": values_sql(3) })).await;
    let second = api.run(json!({ "statement": values_sql(4) })).await;
    let first_id = first["statement_id"].as_str().expect("id");
    let second_id = second["statement_id"].as_str().expect("id");
    let (status, polled) = api
        .get(&format!("/api/2.0/sql/statements/{first_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(polled["status"]["state"], "CLOSED", "{polled}");
    assert!(polled.get("result").is_none(), "{polled}");
    let (_, polled) = api
        .get(&format!("/api/2.0/sql/statements/{second_id}"))
        .await;
    assert_eq!(polled["status"]["state"], "SUCCEEDED", "{polled}");
    assert_eq!(api.all_inline_rows(&polled).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_within_the_budget_are_kept() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let first = api.run(json!({ "statement": values_sql(3) })).await;
    api.run(json!({ "statement": values_sql(4) })).await;
    let first_id = first["statement_id"].as_str().expect("id");
    let (_, polled) = api
        .get(&format!("/api/2.0/sql/statements/{first_id}"))
        .await;
    assert_eq!(polled["status"]["state"], "SUCCEEDED", "{polled}");
    assert_eq!(api.all_inline_rows(&polled).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_ids_are_json_404s() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    // `%FF` percent-decodes to bytes that are not UTF-8: no statement or session has that id.
    for (method, path) in [
        ("GET", "/api/2.0/sql/statements/%FF"),
        ("DELETE", "/api/2.0/sql/statements/%FF"),
        ("POST", "/api/2.0/sql/statements/%FF/cancel"),
        ("GET", "/api/2.0/sql/statements/%FF/result/chunks/0"),
        ("DELETE", "/api/2.0/sql/sessions/%FF?warehouse_id=w"),
    ] {
        let (status, body) = match method {
            "GET" => api.get(path).await,
            "DELETE" => api.delete(path).await,
            _ => api.post(path, json!({})).await,
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["error_code"], "NOT_FOUND", "{method} {path}: {body}");
    }
    let (status, body) =
        download(&api.url("/_emulator/results/%FF/0?expires=1&signature=00")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("NoSuchKey"));
}
