//! HTTPS with a self-signed certificate.

use dbfed_emulator::Emulator;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https() {
    let handle = Emulator::builder()
        .token("dapi-tls")
        .tls_self_signed()
        .start("127.0.0.1:0")
        .await
        .expect("starts");
    assert!(
        handle.url().starts_with("https://127.0.0.1:"),
        "{}",
        handle.url()
    );
    let pem = handle.tls_certificate_pem().expect("a certificate");
    let cert = reqwest::Certificate::from_pem(pem.as_bytes()).expect("valid PEM");
    let http = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .expect("client");
    let response: Value = http
        .post(format!("{}/api/2.0/sql/statements", handle.url()))
        .bearer_auth("dapi-tls")
        .json(&json!({ "statement": "SELECT 7 AS seven", "warehouse_id": "w", "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" }))
        .send()
        .await
        .expect("TLS handshake and request")
        .json()
        .await
        .expect("json");
    assert_eq!(response["status"]["state"], "SUCCEEDED", "{response}");
    let link = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    assert!(link.starts_with("https://"), "{link}");
    let download = http.get(link).send().await.expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    // Plain HTTP to the TLS port fails.
    let plain = reqwest::get(handle.url().replace("https://", "http://")).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
}

#[test]
fn background_emulator_for_sync_callers() {
    let bg = Emulator::builder()
        .token("dapi-bg")
        .spawn("127.0.0.1:0")
        .expect("spawns");
    let client = reqwest::blocking::Client::new();
    let response: Value = client
        .post(format!("{}/api/2.0/sql/statements", bg.url()))
        .bearer_auth("dapi-bg")
        .json(&json!({ "statement": "SELECT 1 AS one", "warehouse_id": "w" }))
        .send()
        .expect("sent")
        .json()
        .expect("json");
    assert_eq!(response["result"]["data_array"], json!([["1"]]));
    assert_eq!(bg.statements().len(), 1);
    let url = bg.url().to_owned();
    drop(bg);
    assert!(
        client
            .get(format!("{url}/_emulator/statements"))
            .send()
            .is_err(),
        "stopped on drop"
    );
}
