//! Plain-HTTP access to a warehouse's chunk files, independent of the client under test: used to
//! fetch the files whose local read is the ceiling, and to measure what the emulator serves.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A minimal Statement Execution API caller.
pub struct RawWarehouse {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl RawWarehouse {
    /// Talks to `base` (e.g. `http://127.0.0.1:1234`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self> {
        Ok(Self {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Executes `sql` and waits for it; returns the final statement response.
    pub fn execute(&self, sql: &str, disposition: &str, format: &str, lz4: bool) -> Result<Value> {
        let mut body = json!({
            "statement": sql, "warehouse_id": "bench", "disposition": disposition,
            "format": format, "wait_timeout": "50s",
        });
        if lz4 {
            body["result_compression"] = json!("LZ4_FRAME");
        }
        let mut response: Value = self
            .http
            .post(format!("{}/api/2.0/sql/statements", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()?
            .error_for_status()?
            .json()?;
        for _ in 0..6000 {
            match response["status"]["state"].as_str() {
                Some("SUCCEEDED") => return Ok(response),
                Some("PENDING" | "RUNNING") => {
                    std::thread::sleep(Duration::from_millis(100));
                    let id = response["statement_id"].as_str().context("statement_id")?;
                    response = self
                        .http
                        .get(format!("{}/api/2.0/sql/statements/{id}", self.base))
                        .bearer_auth(&self.token)
                        .send()?
                        .error_for_status()?
                        .json()?;
                }
                _ => bail!("statement did not succeed: {response}"),
            }
        }
        bail!("statement did not finish in 10 minutes")
    }

    /// `SELECT COUNT(*) FROM table`, answered inline.
    pub fn count(&self, table: &str) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let response = self.execute(&sql, "INLINE", "JSON_ARRAY", false)?;
        let cell = &response["result"]["data_array"][0][0];
        cell.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| cell.as_u64())
            .with_context(|| format!("{sql} answered no count: {response}"))
    }

    /// The download URL of chunk `index` of statement `id`.
    pub fn chunk_link(&self, id: &str, index: u64) -> Result<String> {
        let chunk: Value = self
            .http
            .get(format!(
                "{}/api/2.0/sql/statements/{id}/result/chunks/{index}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()?
            .error_for_status()?
            .json()?;
        chunk["external_links"][0]["external_link"]
            .as_str()
            .map(str::to_owned)
            .context("chunk response without an external link")
    }

    /// Downloads a presigned link (no credentials, as a cloud-storage download).
    pub fn download(&self, link: &str) -> Result<Vec<u8>> {
        let bytes = self.http.get(link).send()?.error_for_status()?.bytes()?;
        Ok(bytes.to_vec())
    }
}

/// Decodes one chunk file (LZ4 frames when `lz4`, then an Arrow IPC stream) as fast as Arrow
/// allows: the batches are decoded in place over the decompressed buffer (no copy), as the
/// client does; returns (rows, uncompressed IPC bytes).
pub fn decode_chunk(bytes: Vec<u8>, lz4: bool) -> Result<(usize, u64)> {
    let ipc = if lz4 {
        dbfed_databricks::decode::decompress_lz4_frames(&bytes, "chunk file")?
    } else {
        bytes
    };
    let size = ipc.len() as u64;
    let mut buffer = arrow::buffer::Buffer::from_vec(ipc);
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut rows = 0;
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            rows += batch.num_rows();
        }
    }
    decoder.finish()?;
    Ok((rows, size))
}
