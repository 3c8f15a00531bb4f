//! JSON wire types of the Statement Execution API (private).
//!
//! Parsing is tolerant, as real servers differ: int64 fields arrive as numbers or strings,
//! enum values this client does not know are kept as `Unknown(..)` instead of failing, an
//! `error_code` may be a number, and unknown fields are ignored.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// Reads an optional int64 written as a JSON number or a decimal string.
pub(crate) fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(i64),
        Float(f64),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(n)) => Ok(Some(n)),
        Some(NumOrStr::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        Some(NumOrStr::Float(f)) => {
            Err(de::Error::custom(format!("expected an integer, found {f}")))
        }
        Some(NumOrStr::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(NumOrStr::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected an integer, found {s:?}"))),
    }
}

/// Reads a collection written as `null` as empty (missing fields use `#[serde(default)]`).
pub(crate) fn de_null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads an optional string that may also be written as a number or boolean (`error_code: 401`).
pub(crate) fn de_opt_lenient_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

macro_rules! tolerant_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $text, "`")] $variant,)*
            /// A value this client does not know (kept verbatim).
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

tolerant_enum!(
    /// The lifecycle state of a statement.
    StatementState {
        Pending => "PENDING",
        Running => "RUNNING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Canceled => "CANCELED",
        Closed => "CLOSED",
    }
);

impl StatementState {
    /// Whether the statement will not change state any more.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

tolerant_enum!(
    /// The result format of a statement (`manifest.format`).
    Format {
        JsonArray => "JSON_ARRAY",
        ArrowStream => "ARROW_STREAM",
        Csv => "CSV",
    }
);

tolerant_enum!(
    /// The compression of result chunks (`manifest.result_compression`).
    Compression {
        Lz4Frame => "LZ4_FRAME",
        None => "NONE",
    }
);

/// `POST /api/2.0/sql/statements` body.
#[derive(Debug, Serialize)]
pub(crate) struct ExecuteRequest<'a> {
    pub statement: &'a str,
    pub warehouse_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    pub disposition: &'static str,
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_compression: Option<&'static str>,
    pub wait_timeout: String,
    pub on_wait_timeout: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_limit: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<WireParameter<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_tags: Vec<QueryTag<'a>>,
}

/// One statement parameter.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct WireParameter<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'a str>,
}

/// One query tag.
#[derive(Debug, Serialize)]
pub(crate) struct QueryTag<'a> {
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
}

/// `POST /api/2.0/sql/sessions` body.
#[derive(Debug, Serialize)]
pub(crate) struct CreateSessionRequest<'a> {
    pub warehouse_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub session_confs: &'a BTreeMap<String, String>,
}

/// `POST /api/2.0/sql/sessions` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateSessionResponse {
    pub session_id: Option<String>,
}

/// The statement response of execute and poll.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StatementResponse {
    pub statement_id: Option<String>,
    pub status: Option<Status>,
    pub manifest: Option<Manifest>,
    pub result: Option<ResultData>,
}

/// `status`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Status {
    pub state: Option<StatementState>,
    pub error: Option<ServiceError>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub sql_state: Option<String>,
}

/// `status.error` and the body of non-2xx answers.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ServiceError {
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub error_code: Option<String>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub sql_state: Option<String>,
}

/// `manifest`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    pub format: Option<Format>,
    pub schema: Option<ManifestSchema>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub total_chunk_count: Option<i64>,
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub chunks: Vec<ChunkInfo>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub total_row_count: Option<i64>,
    #[serde(default)]
    pub truncated: Option<bool>,
    pub result_compression: Option<Compression>,
}

/// `manifest.schema`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ManifestSchema {
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub column_count: Option<i64>,
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub columns: Vec<WireColumn>,
}

/// One column of `manifest.schema.columns`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireColumn {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub position: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub type_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub type_text: Option<String>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub type_precision: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub type_scale: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_lenient_string")]
    pub type_interval_type: Option<String>,
}

/// One entry of `manifest.chunks`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChunkInfo {
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub chunk_index: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub row_count: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub byte_count: Option<i64>,
}

/// `result`, and the answer of the chunk endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ResultData {
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub chunk_index: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub row_count: Option<i64>,
    pub data_array: Option<Vec<Vec<Option<serde_json::Value>>>>,
    pub external_links: Option<Vec<ExternalLink>>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub next_chunk_index: Option<i64>,
    pub next_chunk_internal_link: Option<String>,
    /// Base64 Arrow IPC bytes (hybrid `INLINE_OR_EXTERNAL_LINKS` results).
    pub attachment: Option<String>,
}

/// One presigned download link.
#[derive(Clone, Deserialize)]
pub(crate) struct ExternalLink {
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub chunk_index: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub row_count: Option<i64>,
    pub external_link: Option<String>,
    pub expiration: Option<String>,
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub http_headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for ExternalLink {
    // The link and its headers are credentials for the result file: show neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalLink")
            .field("chunk_index", &self.chunk_index)
            .field("row_count", &self.row_count)
            .field(
                "external_link",
                &self.external_link.as_deref().map(crate::error::redact_url),
            )
            .field("expiration", &self.expiration)
            .field(
                "http_headers",
                &self.http_headers.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_accept_numbers_and_strings() {
        let m: Manifest = serde_json::from_str(
            r#"{"format":"ARROW_STREAM","total_chunk_count":"2","total_row_count":122900,
                "chunks":[{"chunk_index":"1","row_offset":"122880","row_count":20,"byte_count":"5576"}]}"#,
        )
        .expect("valid manifest");
        assert_eq!(m.total_chunk_count, Some(2));
        assert_eq!(m.total_row_count, Some(122900));
        assert_eq!(m.chunks[0].byte_count, Some(5576));
        assert_eq!(m.format, Some(Format::ArrowStream));
    }

    #[test]
    fn bad_int64_is_an_error_not_a_panic() {
        let r = serde_json::from_str::<Manifest>(r#"{"total_row_count":"many"}"#);
        let err = r.expect_err("not a number").to_string();
        assert!(err.contains("many"), "{err}");
        assert!(serde_json::from_str::<Manifest>(r#"{"total_row_count":1.5}"#).is_err());
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        let r: StatementResponse = serde_json::from_str(
            r#"{"statement_id":"x","status":{"state":"QUEUED_FOR_LUNCH"},
                "manifest":{"format":"PARQUET","result_compression":"ZSTD","schema":{"column_count":0}}}"#,
        )
        .expect("tolerant");
        let status = r.status.expect("status");
        assert_eq!(
            status.state,
            Some(StatementState::Unknown("QUEUED_FOR_LUNCH".into()))
        );
        let manifest = r.manifest.expect("manifest");
        assert_eq!(manifest.format, Some(Format::Unknown("PARQUET".into())));
        assert_eq!(
            manifest.result_compression,
            Some(Compression::Unknown("ZSTD".into()))
        );
    }

    #[test]
    fn numeric_error_codes_are_strings() {
        let e: ServiceError =
            serde_json::from_str(r#"{"error_code":403,"message":"Invalid access token."}"#)
                .expect("numeric code");
        assert_eq!(e.error_code.as_deref(), Some("403"));
        let e: ServiceError =
            serde_json::from_str(r#"{"error_code":"BAD_REQUEST","details":[{}]}"#)
                .expect("string code");
        assert_eq!(e.error_code.as_deref(), Some("BAD_REQUEST"));
        assert_eq!(e.message, None);
    }

    #[test]
    fn failed_status_parses() {
        let r: StatementResponse = serde_json::from_str(
            r#"{"statement_id":"01ef","status":{"state":"FAILED","error":{"error_code":"BAD_REQUEST","message":"[PARSE_SYNTAX_ERROR] SQLSTATE: 42601"}}}"#,
        )
        .expect("failed status");
        let status = r.status.expect("status");
        assert_eq!(status.state, Some(StatementState::Failed));
        assert_eq!(
            status.error.and_then(|e| e.error_code).as_deref(),
            Some("BAD_REQUEST")
        );
    }

    #[test]
    fn external_link_debug_hides_signature() {
        let l: ExternalLink = serde_json::from_str(
            r#"{"chunk_index":0,"external_link":"https://h/p?X-Amz-Signature=abc","http_headers":{"x-ms-blob-type":"secret-ish"},"expiration":"2025-01-01T00:00:00.000Z"}"#,
        )
        .expect("link");
        let dbg = format!("{l:?}");
        assert!(!dbg.contains("abc") && !dbg.contains("secret-ish"), "{dbg}");
    }

    #[test]
    fn null_collections_read_as_empty() {
        let r: StatementResponse = serde_json::from_str(
            r#"{"statement_id":"x","status":{"state":"SUCCEEDED"},
                "manifest":{"chunks":null,"schema":{"column_count":0,"columns":null}},
                "result":{"external_links":[{"chunk_index":0,"external_link":"https://h/p","http_headers":null}]}}"#,
        )
        .expect("nulls are tolerated");
        let manifest = r.manifest.expect("manifest");
        assert!(manifest.chunks.is_empty());
        assert!(manifest.schema.expect("schema").columns.is_empty());
        let links = r.result.and_then(|r| r.external_links).expect("links");
        assert!(links[0].http_headers.is_empty());
    }

    #[test]
    fn missing_everything_still_parses() {
        let r: StatementResponse = serde_json::from_str("{}").expect("empty object");
        assert!(r.statement_id.is_none() && r.status.is_none());
        assert!(serde_json::from_str::<StatementResponse>("<html>").is_err());
    }
}
