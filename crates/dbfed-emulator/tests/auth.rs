//! Authentication: recorded 401/403 bodies, open mode, OAuth M2M, Azure-style tokens.

use std::time::Duration;

use base64::Engine as _;
use dbfed_emulator::{Emulator, token_identity};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{WAREHOUSE, start};

fn recorded_body(path: &str) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(
            "../../../shared/fixtures/databricks-recordings/sqlexecapi/connectionintegrationtests",
        )
        .join(path)
        .join("mappings");
    let entry = std::fs::read_dir(&dir)
        .expect("recordings present")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("api_2.0_sql_sessions-")
        })
        .expect("a sessions mapping");
    let mapping: Value =
        serde_json::from_str(&std::fs::read_to_string(entry.path()).expect("read")).expect("json");
    serde_json::from_str(mapping["response"]["body"].as_str().expect("body")).expect("json body")
}

async fn execute(base: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/2.0/sql/statements"))
        .json(&json!({ "statement": "SELECT 1", "warehouse_id": WAREHOUSE }));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_credentials_get_recorded_bodies() {
    let handle = start(Emulator::builder()).await;
    let missing = execute(handle.url(), None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"DatabricksRealm\"")
    );
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body, recorded_body("testincorrectcredentialsforpat"));
    let basic = execute(handle.url(), Some("Basic dXNlcjpwYXNz")).await;
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let wrong = execute(handle.url(), Some("Bearer dapi-wrong")).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body, recorded_body("testincorrectcredentialsforoauth"));
    assert!(handle.statements().is_empty());
    // Never the token itself in records.
    let requests = serde_json::to_string(&handle.requests()).expect("json");
    assert!(!requests.contains("dapi-wrong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_tokens_any_bearer_works() {
    let handle = Emulator::builder()
        .start("127.0.0.1:0")
        .await
        .expect("starts");
    let response = execute(handle.url(), Some("Bearer anything-at-all")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let record = &handle.statements()[0];
    assert_eq!(record.identity, token_identity("anything-at-all"));
    assert!(
        !serde_json::to_string(record)
            .expect("json")
            .contains("anything-at-all")
    );
    let unconfigured = execute(handle.url(), None).await;
    assert_eq!(unconfigured.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_m2m_flow() {
    let handle = start(
        Emulator::builder()
            .oauth_client("sp-client", "sp-secret")
            .token_lifetime(Duration::from_secs(1)),
    )
    .await;
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(format!(
            "{}/oidc/.well-known/oauth-authorization-server",
            handle.url()
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("token_endpoint");
    assert_eq!(token_endpoint, format!("{}/oidc/v1/token", handle.url()));
    let basic = base64::engine::general_purpose::STANDARD.encode("sp-client:wrong");
    let refused = http
        .post(token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused: Value = refused.json().await.expect("json");
    assert_eq!(refused["error"], "invalid_client");
    let basic = base64::engine::general_purpose::STANDARD.encode("sp-client:sp-secret");
    let token: Value = http
        .post(token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 1);
    assert_eq!(token["scope"], "all-apis");
    let access = token["access_token"].as_str().expect("access_token");
    let ok = execute(handle.url(), Some(&format!("Bearer {access}"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(handle.statements()[0].identity, "oauth:sp-client");
    // After its lifetime the token is refused, so clients must refresh.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let expired = execute(handle.url(), Some(&format!("Bearer {access}"))).await;
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_style_token_endpoint() {
    let handle = start(
        Emulator::builder()
            .oauth_client("azure-sp", "azure-secret")
            .azure_tenant("tenant-1"),
    )
    .await;
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "azure-sp"),
        ("client_secret", "azure-secret"),
        ("scope", "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"),
    ];
    let wrong_tenant = http
        .post(format!("{}/other/oauth2/v2.0/token", handle.url()))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong_tenant.status(), StatusCode::BAD_REQUEST);
    let token: Value = http
        .post(format!("{}/tenant-1/oauth2/v2.0/token", handle.url()))
        .form(&form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let access = token["access_token"].as_str().expect("access_token");
    let ok = execute(handle.url(), Some(&format!("Bearer {access}"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(handle.statements()[0].identity, "azure:azure-sp");
    let aad = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/aad/auth", handle.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(aad.status(), StatusCode::FOUND);
    let location = aad
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location");
    assert!(location.contains("/tenant-1/"), "{location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metadata_is_public() {
    let handle = start(Emulator::builder()).await;
    let response = reqwest::get(format!("{}/.well-known/databricks-config", handle.url()))
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["oidc_endpoint"], format!("{}/oidc", handle.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_denied_the_warehouse_gets_403_permission_denied() {
    let handle = start(
        Emulator::builder()
            .token("dapi-no-can-use")
            .deny_warehouse("dapi-no-can-use"),
    )
    .await;
    let denied = execute(handle.url(), Some("Bearer dapi-no-can-use")).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body: Value = denied.json().await.expect("json");
    assert_eq!(body["error_code"], json!("PERMISSION_DENIED"));
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.contains("You do not have permission to use the SQL warehouse")
            && message.contains(WAREHOUSE),
        "{message}"
    );
    let session = reqwest::Client::new()
        .post(format!("{}/api/2.0/sql/sessions", handle.url()))
        .bearer_auth("dapi-no-can-use")
        .json(&json!({ "warehouse_id": WAREHOUSE }))
        .send()
        .await
        .expect("sent");
    assert_eq!(session.status(), StatusCode::FORBIDDEN);
    assert!(handle.statements().is_empty(), "nothing ran");
    // Another token still uses the warehouse.
    let allowed = execute(
        handle.url(),
        Some(&format!("Bearer {}", crate::common::TOKEN)),
    )
    .await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(handle.statements().len(), 1);
}
