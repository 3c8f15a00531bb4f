//! External links: HMAC-signed, expiring URLs of the emulator's own download path.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Path prefix of downloads: `/_emulator/results/{statement_id}/{chunk_index}`.
pub(crate) const DOWNLOAD_PREFIX: &str = "/_emulator/results";

/// Name of the header a link may require (see `EmulatorBuilder::link_http_headers`).
pub(crate) const LINK_HEADER: &str = "x-emulator-link-header";

fn mac(
    key: &[u8; 32],
    purpose: &str,
    statement_id: &str,
    chunk: usize,
    expires_ms: i64,
) -> HmacSha256 {
    // `new_from_slice` accepts keys of any length for HMAC.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(format!("{purpose}\n{statement_id}\n{chunk}\n{expires_ms}").as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A signed link.
#[derive(Debug, Clone)]
pub(crate) struct SignedLink {
    pub url: String,
    pub expiration: String,
    /// The value of [`LINK_HEADER`] the download must carry, when required.
    pub header: Option<String>,
}

/// Signs a link to chunk `chunk` of `statement_id`, valid until `expires`.
pub(crate) fn sign(
    key: &[u8; 32],
    base_url: &str,
    statement_id: &str,
    chunk: usize,
    expires: DateTime<Utc>,
    with_header: bool,
) -> SignedLink {
    let expires_ms = expires.timestamp_millis();
    let signature = hex(&mac(key, "link", statement_id, chunk, expires_ms)
        .finalize()
        .into_bytes());
    let header = with_header.then(|| header_value(key, statement_id, chunk, expires_ms));
    SignedLink {
        url: format!(
            "{base_url}{DOWNLOAD_PREFIX}/{statement_id}/{chunk}?expires={expires_ms}&signature={signature}"
        ),
        expiration: expires.to_rfc3339_opts(SecondsFormat::Millis, true),
        header,
    }
}

/// The required header value of a link.
pub(crate) fn header_value(
    key: &[u8; 32],
    statement_id: &str,
    chunk: usize,
    expires_ms: i64,
) -> String {
    hex(&mac(key, "header", statement_id, chunk, expires_ms)
        .finalize()
        .into_bytes()[..16])
}

/// Checks the header a link requires (constant time): `sent` must be exactly
/// [`header_value`] of this link.
pub(crate) fn verify_header(
    key: &[u8; 32],
    statement_id: &str,
    chunk: usize,
    expires_ms: i64,
    sent: Option<&str>,
) -> bool {
    let Some(sent) = sent.and_then(unhex) else {
        return false;
    };
    sent.len() == 16
        && mac(key, "header", statement_id, chunk, expires_ms)
            .verify_truncated_left(&sent)
            .is_ok()
}

/// Why a download was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkRejection {
    BadSignature,
    Expired,
}

/// Checks a link's signature (constant time) and expiry.
pub(crate) fn verify(
    key: &[u8; 32],
    statement_id: &str,
    chunk: usize,
    expires_ms: i64,
    signature: &str,
    now: DateTime<Utc>,
) -> Result<(), LinkRejection> {
    let Some(signature) = unhex(signature) else {
        return Err(LinkRejection::BadSignature);
    };
    mac(key, "link", statement_id, chunk, expires_ms)
        .verify_slice(&signature)
        .map_err(|_| LinkRejection::BadSignature)?;
    if now.timestamp_millis() >= expires_ms {
        return Err(LinkRejection::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_param<'a>(url: &'a str, name: &str) -> &'a str {
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
    }

    #[test]
    fn sign_then_verify() {
        let key = [7u8; 32];
        let now = Utc::now();
        let link = sign(
            &key,
            "http://h",
            "stmt",
            3,
            now + chrono::Duration::minutes(1),
            true,
        );
        let expires: i64 = query_param(&link.url, "expires").parse().expect("number");
        let sig = query_param(&link.url, "signature");
        assert!(link.url.starts_with("http://h/_emulator/results/stmt/3?"));
        assert!(link.expiration.ends_with('Z'));
        assert_eq!(verify(&key, "stmt", 3, expires, sig, now), Ok(()));
        assert_eq!(
            verify(&key, "stmt", 4, expires, sig, now),
            Err(LinkRejection::BadSignature)
        );
        assert_eq!(
            verify(&[8u8; 32], "stmt", 3, expires, sig, now),
            Err(LinkRejection::BadSignature)
        );
        assert_eq!(
            verify(&key, "stmt", 3, expires + 1, sig, now),
            Err(LinkRejection::BadSignature)
        );
        assert_eq!(
            verify(
                &key,
                "stmt",
                3,
                expires,
                sig,
                now + chrono::Duration::minutes(2)
            ),
            Err(LinkRejection::Expired)
        );
        assert_eq!(
            verify(&key, "stmt", 3, expires, "zz", now),
            Err(LinkRejection::BadSignature)
        );
        assert_eq!(
            link.header.as_deref(),
            Some(header_value(&key, "stmt", 3, expires).as_str())
        );
    }

    #[test]
    fn header_check_needs_the_whole_value_of_this_link() {
        let key = [7u8; 32];
        let value = header_value(&key, "stmt", 3, 1000);
        assert!(verify_header(&key, "stmt", 3, 1000, Some(&value)));
        assert!(verify_header(
            &key,
            "stmt",
            3,
            1000,
            Some(&value.to_uppercase())
        ));
        assert!(!verify_header(&key, "stmt", 3, 1000, Some(&value[..2])));
        assert!(!verify_header(&key, "stmt", 3, 1000, Some("")));
        assert!(!verify_header(&key, "stmt", 3, 1000, None));
        assert!(!verify_header(&key, "stmt", 4, 1000, Some(&value)));
        assert!(!verify_header(&key, "stmt", 3, 1001, Some(&value)));
        let full = hex(&mac(&key, "header", "stmt", 3, 1000).finalize().into_bytes());
        assert!(!verify_header(&key, "stmt", 3, 1000, Some(&full)));
    }
}
