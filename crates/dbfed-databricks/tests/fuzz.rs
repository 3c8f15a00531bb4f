//! Hostile input: property tests of everything the client reads from the network.
//!
//! - LZ4 frames and Arrow IPC streams ([`dbfed_databricks::decode`]): arbitrary bytes, valid
//!   data mutated and truncated, real result files from the recordings mutated, and declared
//!   sizes far beyond the data (a 1 TB LZ4 content size, a 2 GiB IPC metadata length, a 1 TB
//!   IPC body length): never a panic, a typed [`Error::Decode`], no allocation from a declared
//!   size, and output bounded by the limit.
//! - Statement and chunk JSON, end to end: real recorded responses (succeeded and failed
//!   statements, inline and external-link results) mutated value by value and byte by byte,
//!   served by a loopback server to a real [`Client`]: never a panic (on the caller's thread or
//!   a download thread), every failure a typed error, and a result that ends without error
//!   holds exactly the rows its manifest announced.
//! - Bodies that are too large or never finish: a download over the chunk limit fails at once
//!   (not retried), a body trickling a byte at a time fails after the download timeout.
//!
//! Short by default; `PROPTEST_CASES=100000 cargo test -p dbfed-databricks --test main fuzz`
//! runs the long campaign (figures in RELIABILITY.md).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dbfed_databricks::decode::{
    decode_ipc_stream, decompress_lz4_frames, decompress_lz4_frames_limited,
};
use dbfed_databricks::{Client, Error};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

use crate::support::{self, TOKEN, TestServer};

/// `cases` by default; `PROPTEST_CASES` (read by proptest's default config) overrides it.
fn config(cases: u32) -> Config {
    let mut config = if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default()
    } else {
        Config::with_cases(cases)
    };
    // Failures print their minimal input; nothing is written into the source tree.
    config.failure_persistence = None;
    config
}

// ---------------------------------------------------------------------------------------------
// Inputs

fn recordings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/databricks-recordings")
}

fn mapping_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json")
                && path.parent().is_some_and(|p| p.ends_with("mappings"))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// Every recorded result file (`base64Body` of the cloud-fetch downloads), keyed by
/// `<suite>/<test>` and by request path.
fn recorded_downloads() -> &'static HashMap<String, HashMap<String, Vec<u8>>> {
    static FILES: OnceLock<HashMap<String, HashMap<String, Vec<u8>>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let root = recordings().join("cloudfetchapi");
        let mut out: HashMap<String, HashMap<String, Vec<u8>>> = HashMap::new();
        for file in mapping_files(&root) {
            let text = std::fs::read_to_string(&file).expect("mapping file");
            let m: Value = serde_json::from_str(&text).expect("mapping json");
            let Some(b64) = m["response"]["base64Body"].as_str() else {
                continue;
            };
            let body = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("recorded base64Body");
            let url = m["request"]["url"]
                .as_str()
                .or(m["request"]["urlPath"].as_str())
                .unwrap_or_default();
            let path = url.split('?').next().unwrap_or_default().to_owned();
            out.entry(test_key(&root, &file))
                .or_default()
                .insert(path, body);
        }
        out
    })
}

/// `<suite>/<test>` of a mapping file under `root`.
fn test_key(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under root");
    rel.components()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A recorded statement answer and the result files of its test.
#[derive(Debug, Clone)]
struct Seed {
    test: String,
    statement: Value,
}

/// Every recorded answer of `POST /api/2.0/sql/statements` that ended (SUCCEEDED or FAILED).
fn recorded_statements() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for area in ["sqlexecapi", "cloudfetchapi"] {
            let root = recordings().join(area);
            for file in mapping_files(&root) {
                let text = std::fs::read_to_string(&file).expect("mapping file");
                let m: Value = serde_json::from_str(&text).expect("mapping json");
                let url = m["request"]["url"]
                    .as_str()
                    .or(m["request"]["urlPath"].as_str())
                    .unwrap_or_default();
                if m["request"]["method"] != "POST"
                    || url.trim_end_matches('/') != "/api/2.0/sql/statements"
                {
                    continue;
                }
                let Some(body) = m["response"]["body"].as_str() else {
                    continue;
                };
                let Ok(statement) = serde_json::from_str::<Value>(body) else {
                    continue;
                };
                if matches!(
                    statement["status"]["state"].as_str(),
                    Some("SUCCEEDED" | "FAILED")
                ) {
                    seeds.push(Seed {
                        test: test_key(&root, &file),
                        statement,
                    });
                }
            }
        }
        seeds
    })
}

/// A batch of the one fixed schema the IPC properties use (`name` always nullable, so every
/// batch of a stream has the stream's schema).
fn sample_batch(rows: &[(i64, Option<String>, f64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone()))) as ArrayRef,
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
        ],
    )
    .expect("sample batch")
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let mut buf = Vec::new();
    let schema = batches[0].schema();
    let mut writer = StreamWriter::try_new(&mut buf, &schema).expect("ipc writer");
    for b in batches {
        writer.write(b).expect("ipc write");
    }
    writer.finish().expect("ipc finish");
    drop(writer);
    buf
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(data).expect("compress");
    enc.finish().expect("finish")
}

fn is_lz4(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x04, 0x22, 0x4D, 0x18])
}

/// Applies byte mutations (`position % len`, xor with a non-zero mask) and an optional cut.
fn mutate_bytes(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        let len = bytes.len();
        for &(at, mask) in flips {
            bytes[at % len] ^= mask.max(1);
        }
    }
    if let Some(cut) = cut {
        let len = bytes.len();
        bytes.truncate(cut % (len + 1));
    }
    bytes
}

fn flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)
}

fn rows() -> impl Strategy<Value = Vec<(i64, Option<String>, f64)>> {
    proptest::collection::vec(
        (
            any::<i64>(),
            proptest::option::of(
                proptest::collection::vec(any::<char>(), 0..12)
                    .prop_map(|c| c.into_iter().collect::<String>()),
            ),
            any::<f64>(),
        ),
        1..120,
    )
}

/// The schema a recorded IPC stream declares (the decode target of a faithful server).
fn own_schema(raw_ipc: &[u8]) -> SchemaRef {
    StreamReader::try_new(std::io::Cursor::new(raw_ipc), None)
        .expect("a recorded result file is a valid Arrow IPC stream")
        .schema()
}

/// Every recorded result file, decompressed, with its own schema.
fn recorded_ipc() -> &'static [(Vec<u8>, SchemaRef)] {
    static FILES: OnceLock<Vec<(Vec<u8>, SchemaRef)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut files: Vec<(&String, &String, &Vec<u8>)> = recorded_downloads()
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(p, b)| (t, p, b)))
            .collect();
        files.sort();
        files
            .into_iter()
            // Volume downloads (text files) are recorded too: only result files qualify.
            .filter(|(_, _, body)| is_lz4(body) || body.starts_with(&[0xFF; 4]))
            .map(|(_, _, body)| {
                let raw = if is_lz4(body) {
                    decompress_lz4_frames(body, "recorded file").expect("recorded LZ4 decodes")
                } else {
                    body.clone()
                };
                let schema = own_schema(&raw);
                (raw, schema)
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// LZ4 frames

const LIMIT: u64 = 1 << 20;

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_are_never_a_panic_as_lz4(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(out) = decompress_lz4_frames_limited(&bytes, LIMIT, "fuzz") {
            prop_assert!(out.len() as u64 <= LIMIT);
        }
    }

    #[test]
    fn mutated_lz4_frames_fail_cleanly_and_intact_ones_roundtrip(
        payload in proptest::collection::vec(any::<u8>(), 0..20_000),
        repeat in 1usize..40,
        frames in 1usize..4,
        flips in flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let payload: Vec<u8> = payload.repeat(repeat);
        let step = payload.len().div_ceil(frames).max(1);
        let framed: Vec<u8> = payload.chunks(step).flat_map(lz4).collect();
        let intact = flips.is_empty() && cut.is_none();
        let input = mutate_bytes(framed, &flips, cut);
        match decompress_lz4_frames_limited(&input, LIMIT, "chunk 0") {
            Ok(out) => {
                prop_assert!(out.len() as u64 <= LIMIT);
                if intact && payload.len() as u64 <= LIMIT {
                    prop_assert_eq!(out, payload);
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::Decode { .. }), "{e:?}");
                prop_assert!(!intact || payload.len() as u64 > LIMIT, "intact data failed: {e}");
            }
        }
    }
}

#[test]
fn a_frame_declaring_a_terabyte_is_an_error_without_allocating_it() {
    let info = lz4_flex::frame::FrameInfo::new().content_size(Some(1 << 40));
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(&b"tiny".repeat(256)).expect("compress");
    enc.flush().expect("flush the block");
    let mut frame = enc.into_inner();
    frame.extend_from_slice(&[0, 0, 0, 0]); // end mark: the frame claims 1 TB, holds 1 KiB
    let err = decompress_lz4_frames(&frame, "chunk 7").expect_err("content size mismatch");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("chunk 7"), "{err}");
}

#[test]
fn a_compression_bomb_stops_at_the_limit() {
    // 64 MiB of zeros compress to ~256 KiB: the output limit, not the input size, bounds memory.
    let bomb = lz4(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let err = decompress_lz4_frames_limited(&bomb, 4 << 20, "chunk 3").expect_err("bomb");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("limit"), "{err}");
    // Exactly at the limit is fine.
    let exact = lz4(&vec![7u8; 4 << 20]);
    let out = decompress_lz4_frames_limited(&exact, 4 << 20, "chunk 3").expect("at the limit");
    assert_eq!(out.len(), 4 << 20);
}

// ---------------------------------------------------------------------------------------------
// Arrow IPC streams

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_are_never_a_panic_as_arrow_ipc(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let target = sample_batch(&[(1, None, 0.0)]).schema();
        if let Err(e) = decode_ipc_stream(&bytes, &target, "fuzz") {
            prop_assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        }
    }

    #[test]
    fn mutated_arrow_ipc_fails_cleanly_and_intact_streams_roundtrip(
        batches in proptest::collection::vec(rows(), 1..4),
        flips in flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let batches: Vec<RecordBatch> = batches.iter().map(|r| sample_batch(r)).collect();
        let target = batches[0].schema();
        let intact = flips.is_empty() && cut.is_none();
        let input = mutate_bytes(ipc(&batches), &flips, cut);
        match decode_ipc_stream(&input, &target, "chunk 1") {
            Ok(out) => {
                if intact {
                    prop_assert_eq!(out, batches);
                } else {
                    // Whatever decoded has the promised schema.
                    prop_assert!(out.iter().all(|b| b.schema() == target));
                }
            }
            Err(e) => {
                prop_assert!(!intact, "intact stream failed: {e}");
                prop_assert!(matches!(e, Error::Decode { .. }), "{e:?}");
            }
        }
    }

    #[test]
    fn mutated_recorded_result_files_fail_cleanly(
        pick in any::<usize>(),
        flips in flips(),
        cut in proptest::option::of(any::<usize>()),
        compressed in any::<bool>(),
    ) {
        let files = recorded_ipc();
        prop_assume!(!files.is_empty());
        let (raw, schema) = &files[pick % files.len()];
        let input = if compressed { lz4(raw) } else { raw.clone() };
        let input = mutate_bytes(input, &flips, cut);
        let decoded = if compressed {
            decompress_lz4_frames_limited(&input, 64 << 20, "chunk 0")
                .and_then(|raw| decode_ipc_stream(&raw, schema, "chunk 0"))
        } else {
            decode_ipc_stream(&input, schema, "chunk 0")
        };
        if let Err(e) = decoded {
            prop_assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        }
    }
}

#[test]
fn every_recorded_result_file_decodes() {
    let files = recorded_ipc();
    assert!(files.len() >= 50, "only {} recorded files", files.len());
    let mut rows = 0;
    for (raw, schema) in files {
        let batches = decode_ipc_stream(raw, schema, "recorded").expect("recorded file decodes");
        rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    }
    assert!(rows > 0);
}

/// Offsets of the messages of an IPC stream: (start, metadata start, metadata length).
fn messages(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = i32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len <= 0 {
            break;
        }
        let len = len as usize;
        let meta = &bytes[pos + 8..pos + 8 + len];
        let body = arrow::ipc::root_as_message(meta)
            .expect("a valid message")
            .bodyLength() as usize;
        out.push((pos, pos + 8, len));
        pos += 8 + len + body;
    }
    out
}

#[test]
fn declared_ipc_lengths_beyond_the_data_are_errors_not_allocations() {
    let batch = sample_batch(&[(1, Some("a".into()), 1.5), (2, None, 2.5)]);
    let target = batch.schema();
    let good = ipc(std::slice::from_ref(&batch));
    let msgs = messages(&good);
    assert_eq!(msgs.len(), 2, "schema and one batch");

    // A metadata length of 2 GiB - 1.
    let mut huge_meta = good.clone();
    let (start, _, _) = msgs[1];
    huge_meta[start + 4..start + 8].copy_from_slice(&i32::MAX.to_le_bytes());
    let err = decode_ipc_stream(&huge_meta, &target, "chunk 4").expect_err("huge metadata");
    assert!(err.to_string().contains("chunk 4"), "{err}");
    assert!(err.to_string().contains("metadata"), "{err}");

    // A record batch whose body claims 1 TB (and one whose body length is negative).
    let (_, meta_at, meta_len) = msgs[1];
    let real_body = arrow::ipc::root_as_message(&good[meta_at..meta_at + meta_len])
        .expect("message")
        .bodyLength();
    let needle = real_body.to_le_bytes();
    let found = good[meta_at..meta_at + meta_len]
        .windows(8)
        .position(|w| w == needle)
        .expect("bodyLength is stored in the message header");
    for claimed in [1i64 << 40, -8] {
        let mut huge_body = good.clone();
        huge_body[meta_at + found..meta_at + found + 8].copy_from_slice(&claimed.to_le_bytes());
        let err = decode_ipc_stream(&huge_body, &target, "chunk 5").expect_err("huge body");
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("body"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Statement and chunk JSON, end to end through a client

/// What the loopback server answers for the current case.
#[derive(Default)]
struct Case {
    /// The statement answer (execute and poll), as text.
    statement: String,
    /// The chunk endpoint's answer, as text.
    chunk: String,
    /// Result files by path.
    downloads: HashMap<String, Vec<u8>>,
    /// Result files sent a byte every 50 ms.
    trickle: bool,
    /// Requests received, by path.
    hits: HashMap<String, usize>,
}

async fn answer(
    State(case): State<Arc<Mutex<Case>>>,
    method: Method,
    uri: Uri,
    _body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let mut case = case.lock();
    *case.hits.entry(path.to_owned()).or_default() += 1;
    let json = |text: &str| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            text.to_owned(),
        )
            .into_response()
    };
    match (method.as_str(), path) {
        ("POST", "/api/2.0/sql/statements") => json(&case.statement),
        (_, p) if p.starts_with("/api/2.0/sql/statements/") && p.contains("/result/chunks/") => {
            json(&case.chunk)
        }
        ("GET", p) if p.starts_with("/api/2.0/sql/statements/") => json(&case.statement),
        (_, p) if p.starts_with("/api/2.0/sql/") => json("{}"),
        ("GET", p) => match case.downloads.get(p) {
            Some(bytes) if case.trickle => {
                let bytes = bytes.clone();
                let stream = futures::stream::unfold(0usize, move |at| {
                    let bytes = bytes.clone();
                    async move {
                        if at >= bytes.len() {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Ok::<_, std::io::Error>(vec![bytes[at]]), at + 1))
                    }
                });
                (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
            }
            Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, "no such file").into_response(),
        },
        _ => (StatusCode::NOT_FOUND, "unexpected").into_response(),
    }
}

/// Points recorded links at the loopback server and moves their expiry into the future.
fn rewrite_links(value: &mut Value, base: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("external_link", Value::String(link)) => {
                        if let Ok(u) = url::Url::parse(link) {
                            let rest = &link[u.origin().ascii_serialization().len()..];
                            *link = format!("{base}{rest}");
                        }
                    }
                    ("expiration", Value::String(exp)) => {
                        *exp = "2099-01-01T00:00:00.000Z".to_owned();
                    }
                    (_, v) => rewrite_links(v, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_links(v, base)),
        _ => {}
    }
}

/// One structural mutation of a JSON document.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the n-th value (pre-order) with another value.
    Replace(usize, Value),
    /// Remove the n-th value from its object or array.
    Remove(usize),
    /// Duplicate the n-th array element, or the last element of the n-th array.
    Duplicate(usize),
}

fn hostile_value() -> impl Strategy<Value = Value> {
    let text = proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('0'),
            Just('-'),
            Just(' '),
            Just('é'),
            Just('\u{0}'),
            Just('\''),
        ],
        0..10,
    )
    .prop_map(|c| Value::String(c.into_iter().collect()));
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(i64::MAX)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(2.5)),
        Just(serde_json::json!("-1")),
        Just(serde_json::json!("9223372036854775807")),
        Just(serde_json::json!("99999999999999999999")),
        Just(serde_json::json!("SUCCEEDED")),
        Just(serde_json::json!("RUNNING")),
        Just(serde_json::json!("CLOSED")),
        Just(serde_json::json!("INT")),
        Just(serde_json::json!("DECIMAL(38,40)")),
        Just(serde_json::json!("ARRAY<MAP<STRING,STRUCT<a:INT>>>")),
        Just(serde_json::json!("INTERVAL DAY TO SECOND")),
        Just(serde_json::json!("LZ4_FRAME")),
        Just(serde_json::json!("ARROW_STREAM")),
        Just(serde_json::json!("JSON_ARRAY")),
        Just(serde_json::json!(
            "/api/2.0/sql/statements/x/result/chunks/1"
        )),
        Just(serde_json::json!("//evil.example/steal")),
        Just(serde_json::json!("AAAA")),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        text,
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (any::<usize>(), hostile_value()).prop_map(|(n, v)| Edit::Replace(n, v)),
            2 => any::<usize>().prop_map(Edit::Remove),
            1 => any::<usize>().prop_map(Edit::Duplicate),
        ],
        1..5,
    )
}

fn count_values(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_values).sum(),
        Value::Object(o) => o.values().map(count_values).sum(),
        _ => 0,
    }
}

/// Applies `f` to the n-th value (pre-order) together with its parent; the root (n = 0) has none.
fn apply(v: &mut Value, n: &mut usize, edit: &Edit) -> bool {
    // Children first decide whether the edit lands on one of them (needs the parent).
    match v {
        Value::Array(items) => {
            let mut i = 0;
            while i < items.len() {
                if *n == 1 {
                    match edit {
                        Edit::Replace(_, new) => items[i] = new.clone(),
                        Edit::Remove(_) => {
                            items.remove(i);
                        }
                        Edit::Duplicate(_) => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        }
                    }
                    return true;
                }
                *n -= 1;
                if apply(&mut items[i], n, edit) {
                    return true;
                }
                i += 1;
            }
            false
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if *n == 1 {
                    match edit {
                        Edit::Replace(_, new) => {
                            map.insert(key, new.clone());
                        }
                        Edit::Remove(_) => {
                            map.remove(&key);
                        }
                        Edit::Duplicate(_) => {
                            if let Some(Value::Array(items)) = map.get_mut(&key)
                                && let Some(last) = items.last().cloned()
                            {
                                items.push(last);
                            }
                        }
                    }
                    return true;
                }
                *n -= 1;
                if let Some(child) = map.get_mut(&key)
                    && apply(child, n, edit)
                {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn mutate_json(mut doc: Value, edits: &[Edit]) -> Value {
    for edit in edits {
        let total = count_values(&doc);
        if total <= 1 {
            break;
        }
        let target = match edit {
            Edit::Replace(n, _) | Edit::Remove(n) | Edit::Duplicate(n) => 1 + n % (total - 1),
        };
        let mut n = target;
        apply(&mut doc, &mut n, edit);
    }
    doc
}

struct JsonFuzz {
    server: TestServer,
    case: Arc<Mutex<Case>>,
    client: Client,
    /// Held for a whole case: the tests of this module run in parallel and share the server.
    serial: Mutex<()>,
}

fn json_fuzz() -> &'static JsonFuzz {
    static FIXTURE: OnceLock<JsonFuzz> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let case = Arc::new(Mutex::new(Case::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(case.clone());
        let server = TestServer::start(app);
        let client = support::client_builder(&server, "dd43ee29fedd958d")
            .retry_policy(support::fast_retries().max_attempts(2))
            .statement_timeout(Some(Duration::from_secs(2)))
            .request_timeout(Duration::from_secs(10))
            .download_timeout(Duration::from_secs(10))
            .close_timeout(Duration::from_secs(2))
            .max_chunk_bytes(64 << 20)
            .build()
            .expect("client");
        JsonFuzz {
            server,
            case,
            client,
            serial: Mutex::new(()),
        }
    })
}

/// Serves `statement` (and its test's result files) and reads the result to its end.
/// Returns the rows read or the error, after checking the invariants every outcome must keep.
fn run_case(
    seed: &Seed,
    statement: String,
    chunk: String,
    downloads: HashMap<String, Vec<u8>>,
) -> Result<u64, Error> {
    let fuzz = json_fuzz();
    let _serial = fuzz.serial.lock();
    *fuzz.case.lock() = Case {
        statement,
        chunk,
        downloads,
        ..Case::default()
    };
    let outcome = (|| {
        let mut stream = fuzz.client.execute("SELECT 1", &[])?;
        let announced = stream.total_row_count();
        let mut rows = 0u64;
        // Bounded: a stream ends (or fails) after at most the manifest's chunks.
        while let Some(batch) = stream.next_batch()? {
            assert_eq!(
                batch.schema(),
                stream.result_schema().arrow_schema().clone(),
                "a batch has the promised schema"
            );
            rows += batch.num_rows() as u64;
        }
        if let Some(announced) = announced {
            assert_eq!(
                rows, announced,
                "a complete result has the announced rows ({})",
                seed.test
            );
        }
        Ok(rows)
    })();
    if let Err(e) = &outcome {
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains(TOKEN),
            "the token leaked into an error: {text}"
        );
        // A download thread that panicked is reported as such by the stream (the consumer's
        // own thread panicking fails the property directly).
        assert!(
            !text.contains("panicked"),
            "a client thread panicked: {text}"
        );
    }
    outcome
}

fn seed_case(seed: &Seed) -> (Value, HashMap<String, Vec<u8>>) {
    let fuzz = json_fuzz();
    let mut doc = seed.statement.clone();
    rewrite_links(&mut doc, &fuzz.server.base_url());
    let downloads = recorded_downloads()
        .get(&seed.test)
        .cloned()
        .unwrap_or_default();
    (doc, downloads)
}

fn chunk_of(doc: &Value) -> String {
    doc.get("result")
        .cloned()
        .unwrap_or(Value::Null)
        .to_string()
}

#[test]
fn recorded_statement_answers_decode_before_mutation() {
    let seeds = recorded_statements();
    assert!(seeds.len() >= 100, "only {} recorded answers", seeds.len());
    let (mut ok, mut failed) = (0, 0);
    for seed in seeds {
        let (doc, downloads) = seed_case(seed);
        match run_case(seed, doc.to_string(), chunk_of(&doc), downloads) {
            Ok(_) => ok += 1,
            Err(e) => {
                // FAILED statements, and results whose files were not recorded.
                assert!(
                    matches!(
                        e,
                        Error::StatementFailed { .. } | Error::Http { status: 404, .. }
                    ),
                    "{}: {e}",
                    seed.test
                );
                failed += 1;
            }
        }
    }
    assert!(ok > seeds.len() / 2, "{ok} decoded, {failed} failed");
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_statement_json_never_panics_nor_shortens_a_result(
        pick in any::<usize>(),
        edits in edits(),
        chunk_edits in proptest::option::of(edits()),
    ) {
        let seeds = recorded_statements();
        let seed = &seeds[pick % seeds.len()];
        let (doc, downloads) = seed_case(seed);
        let mutated = mutate_json(doc.clone(), &edits);
        let chunk = match &chunk_edits {
            Some(e) => mutate_json(doc.get("result").cloned().unwrap_or(Value::Null), e).to_string(),
            None => chunk_of(&mutated),
        };
        let _ = run_case(seed, mutated.to_string(), chunk, downloads);
    }

    #[test]
    fn corrupted_statement_text_never_panics(
        pick in any::<usize>(),
        flips in flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seeds = recorded_statements();
        let seed = &seeds[pick % seeds.len()];
        let (doc, downloads) = seed_case(seed);
        let text = mutate_bytes(doc.to_string().into_bytes(), &flips, cut);
        let text = String::from_utf8_lossy(&text).into_owned();
        let _ = run_case(seed, text, chunk_of(&doc), downloads);
    }

    #[test]
    fn mutated_result_files_behind_real_links_never_panic(
        pick in any::<usize>(),
        flips in flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seeds: Vec<&Seed> = recorded_statements()
            .iter()
            .filter(|s| recorded_downloads().get(&s.test).is_some_and(|d| !d.is_empty()))
            .collect();
        prop_assume!(!seeds.is_empty());
        let seed = seeds[pick % seeds.len()];
        let (doc, downloads) = seed_case(seed);
        let downloads = downloads
            .into_iter()
            .map(|(p, b)| (p, mutate_bytes(b, &flips, cut)))
            .collect();
        match run_case(seed, doc.to_string(), chunk_of(&doc), downloads) {
            Ok(_) => {}
            Err(e) => prop_assert!(
                matches!(
                    e,
                    Error::Decode { .. } | Error::ResultMismatch { .. } | Error::Http { .. }
                        | Error::StatementFailed { .. }
                ),
                "{e:?}"
            ),
        }
    }
}

/// A one-column, one-chunk ARROW_STREAM answer whose only link points at `path`.
fn single_link_statement(base: &str, path: &str) -> String {
    serde_json::json!({
        "statement_id": "01f0-limits",
        "status": {"state": "SUCCEEDED"},
        "manifest": {
            "format": "ARROW_STREAM",
            "schema": {"column_count": 1, "columns": [
                {"name": "id", "position": 0, "type_name": "LONG", "type_text": "BIGINT"}
            ]},
            "total_chunk_count": 1,
            "total_row_count": 3,
            "chunks": [{"chunk_index": 0, "row_offset": 0, "row_count": 3}]
        },
        "result": {"external_links": [{
            "chunk_index": 0, "row_offset": 0, "row_count": 3,
            "external_link": format!("{base}{path}?sig=abc"),
            "expiration": "2099-01-01T00:00:00.000Z"
        }]}
    })
    .to_string()
}

#[test]
fn an_oversized_download_fails_at_once_and_a_trickling_one_times_out() {
    let fuzz = json_fuzz();
    let _serial = fuzz.serial.lock();
    let base = fuzz.server.base_url();
    let limited = support::client_builder(&fuzz.server, "dd43ee29fedd958d")
        .retry_policy(support::fast_retries().max_attempts(3))
        .max_chunk_bytes(1 << 20)
        .download_timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let read = |client: &Client| -> Result<u64, Error> {
        let mut stream = client.execute("SELECT 1", &[])?;
        let mut rows = 0;
        while let Some(b) = stream.next_batch()? {
            rows += b.num_rows() as u64;
        }
        Ok(rows)
    };

    // 2 MiB behind a 1 MiB limit: a decode error, and the link is not fetched again.
    *fuzz.case.lock() = Case {
        statement: single_link_statement(&base, "/big"),
        downloads: HashMap::from([("/big".to_owned(), vec![0u8; 2 << 20])]),
        ..Case::default()
    };
    let err = read(&limited).expect_err("over the limit");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("limit"), "{err}");
    assert_eq!(fuzz.case.lock().hits.get("/big"), Some(&1), "not retried");

    // 100 bytes at one byte per 50 ms (5 s) behind a 500 ms download timeout: each attempt is
    // abandoned after at most twice the timeout, and the stream ends with an error.
    *fuzz.case.lock() = Case {
        statement: single_link_statement(&base, "/slow"),
        downloads: HashMap::from([("/slow".to_owned(), vec![1u8; 100])]),
        trickle: true,
        ..Case::default()
    };
    let err = read(&limited).expect_err("never arrives in time");
    assert!(
        matches!(err, Error::Decode { .. } | Error::Transport { .. }),
        "{err:?}"
    );
    // Had an attempt waited for the whole body, it would have failed to decode, not retried.
    assert_eq!(
        fuzz.case.lock().hits.get("/slow"),
        Some(&3),
        "each attempt timed out"
    );
}
