//! EXTERNAL_LINKS results: Arrow IPC streams (plain and LZ4), CSV, signed links.

use std::io::Read;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow::ipc::reader::StreamReader;
use dbfed_emulator::{Emulator, Endpoint, FaultAction, FaultRule};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Api, download, start, values_sql};

fn decode_arrow(bytes: &[u8], lz4: bool) -> Vec<RecordBatch> {
    let raw = if lz4 {
        // Concatenated frames (one per IPC message): lz4_flex's FrameDecoder reads one frame.
        let mut out = Vec::new();
        let mut input = bytes;
        for _ in 0..100_000 {
            if input.is_empty() {
                break;
            }
            lz4_flex::frame::FrameDecoder::new(&mut input)
                .read_to_end(&mut out)
                .expect("LZ4 frames decode");
        }
        assert!(input.is_empty(), "every frame decoded");
        out
    } else {
        bytes.to_vec()
    };
    assert_eq!(
        &raw[raw.len() - 8..],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0],
        "end-of-stream marker"
    );
    StreamReader::try_new(raw.as_slice(), None)
        .expect("an IPC stream")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches decode")
}

/// Every link of a result, chunk 0 from `response` and the rest through the chunk endpoint.
async fn all_links(api: &Api, response: &Value) -> Vec<Value> {
    let mut links = Vec::new();
    let mut link = response["result"]["external_links"][0].clone();
    for _ in 0..10_000 {
        let next = link["next_chunk_internal_link"].as_str().map(str::to_owned);
        links.push(link);
        match next {
            Some(path) => {
                let (status, chunk) = api.get(&path).await;
                assert_eq!(status, StatusCode::OK, "{chunk}");
                link = chunk["external_links"][0].clone();
            }
            None => return links,
        }
    }
    panic!("too many chunks");
}

async fn arrow_roundtrip(compression: &str) {
    let handle = start(Emulator::builder().chunk_rows(400)).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({
            "statement": values_sql(1000),
            "disposition": "EXTERNAL_LINKS",
            "format": "ARROW_STREAM",
            "result_compression": compression,
        }))
        .await;
    assert_eq!(response["status"]["state"], "SUCCEEDED", "{response}");
    let manifest = &response["manifest"];
    assert_eq!(manifest["format"], "ARROW_STREAM");
    assert_eq!(manifest["total_chunk_count"], 3);
    assert_eq!(manifest["total_row_count"], 1000);
    assert_eq!(manifest["result_compression"], compression);
    assert!(manifest["total_byte_count"].as_u64().is_some_and(|b| b > 0));
    let links = all_links(&api, &response).await;
    assert_eq!(links.len(), 3);
    let mut values = Vec::new();
    for (i, link) in links.iter().enumerate() {
        assert_eq!(link["chunk_index"], i);
        assert_eq!(link["row_offset"], i * 400);
        let expiration = link["expiration"].as_str().expect("expiration");
        assert!(
            chrono::DateTime::parse_from_rfc3339(expiration).is_ok() && expiration.ends_with('Z')
        );
        let url = link["external_link"].as_str().expect("link");
        assert!(url.starts_with(api.base.as_str()), "{url}");
        let (status, body) = download(url).await;
        assert_eq!(status, StatusCode::OK);
        let batches = decode_arrow(&body, compression == "LZ4_FRAME");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, link["row_count"].as_u64().expect("row_count"));
        for b in &batches {
            let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                .expect("integers");
            let n = n.as_primitive::<Int64Type>();
            let s = b.column(1).as_string::<i32>();
            for r in 0..b.num_rows() {
                assert_eq!(s.value(r), format!("row{}", n.value(r)));
                values.push(n.value(r));
            }
        }
    }
    assert_eq!(
        values,
        (1..=1000).collect::<Vec<i64>>(),
        "every row once, in order"
    );
    // Chunks can be fetched in any order, in parallel.
    let id = response["statement_id"].as_str().expect("id");
    let (p2, p1) = (
        format!("/api/2.0/sql/statements/{id}/result/chunks/2"),
        format!("/api/2.0/sql/statements/{id}/result/chunks/1"),
    );
    let (a, b) = tokio::join!(api.get(&p2), api.get(&p1));
    assert_eq!(a.1["external_links"][0]["chunk_index"], 2);
    assert_eq!(b.1["external_links"][0]["chunk_index"], 1);
    assert!(
        a.1["external_links"][0].get("next_chunk_index").is_none(),
        "last chunk"
    );
    let record = handle
        .statements()
        .into_iter()
        .find(|r| r.id == id)
        .expect("recorded");
    assert!(record.bytes_served > 0);
    assert_eq!(record.chunks_served, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_links_arrow_stream() {
    arrow_roundtrip("NONE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_links_arrow_stream_lz4() {
    arrow_roundtrip("LZ4_FRAME").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_single_frame_mode_also_decodes() {
    let handle = start(Emulator::builder().lz4_frame_per_message(false)).await;
    let api = Api::new(&handle);
    let response = api
        .run(
            json!({ "statement": values_sql(5), "disposition": "EXTERNAL_LINKS",
                     "format": "ARROW_STREAM", "result_compression": "LZ4_FRAME" }),
        )
        .await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let (_, body) = download(url).await;
    let batches = decode_arrow(&body, true);
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_chunks_have_a_header() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .run(
            json!({ "statement": values_sql(3), "disposition": "EXTERNAL_LINKS", "format": "CSV" }),
        )
        .await;
    assert_eq!(response["manifest"]["format"], "CSV");
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let (status, body) = download(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        std::str::from_utf8(&body).expect("utf8"),
        "n,s\n1,row1\n2,row2\n3,row3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_refuse_credentials_forgeries_and_expiry() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let body = json!({ "statement": values_sql(3), "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" });
    let response = api.run(body.clone()).await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link")
        .to_owned();
    // A client leaking the workspace token to the storage URL fails loudly.
    let leaked = reqwest::Client::new()
        .get(&url)
        .bearer_auth(crate::common::TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(leaked.status(), StatusCode::FORBIDDEN);
    assert!(
        leaked
            .text()
            .await
            .expect("body")
            .contains("<Code>InvalidArgument</Code>")
    );
    // A forged signature.
    let forged = url.replace("signature=", "signature=00");
    let (status, body_bytes) = download(&forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body_bytes).contains("SignatureDoesNotMatch"));
    // A longer expiry with the old signature is a forgery too.
    let later = url.replacen("expires=", "expires=9", 1);
    assert_eq!(download(&later).await.0, StatusCode::FORBIDDEN);
    // Expired links: issued already expired by a fault, refreshed through the chunk endpoint.
    let rule = handle
        .faults()
        .inject(FaultRule::new(Endpoint::Any, FaultAction::ExpiredLinks).times(1));
    let id = response["statement_id"].as_str().expect("id");
    let (_, stale) = api
        .get(&format!("/api/2.0/sql/statements/{id}/result/chunks/0"))
        .await;
    let stale_url = stale["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let (status, body_bytes) = download(stale_url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body_bytes).contains("Request has expired"));
    assert_eq!(handle.faults().fired(rule), 1);
    let (_, fresh) = api
        .get(&format!("/api/2.0/sql/statements/{id}/result/chunks/0"))
        .await;
    let fresh_url = fresh["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    assert_eq!(download(fresh_url).await.0, StatusCode::OK);
    // The original link still works until it expires.
    assert_eq!(download(&url).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_link_ttl_expires() {
    let handle = start(Emulator::builder().link_ttl(std::time::Duration::from_millis(1))).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({ "statement": values_sql(2), "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" }))
        .await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, body) = download(url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_link_headers_must_be_echoed() {
    let handle = start(Emulator::builder().link_http_headers(true)).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({ "statement": values_sql(2), "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" }))
        .await;
    let link = &response["result"]["external_links"][0];
    let url = link["external_link"].as_str().expect("link");
    let headers = link["http_headers"].as_object().expect("http_headers");
    assert_eq!(
        download(url).await.0,
        StatusCode::FORBIDDEN,
        "header missing"
    );
    let mut request = reqwest::Client::new().get(url);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str().expect("string header"));
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.expect("body");
    assert_eq!(
        decode_arrow(&bytes, false)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_statement_downloads_are_gone() {
    let handle = start(Emulator::builder()).await;
    let api = Api::new(&handle);
    let response = api
        .run(json!({ "statement": values_sql(2), "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM" }))
        .await;
    let url = response["result"]["external_links"][0]["external_link"]
        .as_str()
        .expect("link");
    let id = response["statement_id"].as_str().expect("id");
    api.delete(&format!("/api/2.0/sql/statements/{id}")).await;
    let (status, body) = download(url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("NoSuchKey"));
}
