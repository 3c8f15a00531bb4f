//! `--fault` specifications of `dbfed emulator`: fault injection from the command line.
//!
//! `ENDPOINT:ACTION[,OPTION=VALUE...]`, for example `chunk:503,rate=0.1`,
//! `execute:429,retry-after=2,times=5`, `download:reset=4096`, `download:slow=1000000`,
//! `chunk:expired-links`, `execute:fail-after=3`.

use anyhow::{Context, Result, bail};
use dbfed_emulator::{Endpoint, FaultAction, FaultRule};

/// Help text listing the grammar.
pub const FAULT_HELP: &str = "Inject a fault: ENDPOINT:ACTION[,OPTION=VALUE...] (repeatable). \
ENDPOINT: any, execute, poll, chunk, cancel, close, sessions, download, token. \
ACTION: an HTTP status (429, 503, ...), reset=BYTES, slow=BYTES_PER_SECOND, expired-links, \
fail-after=CHUNKS. OPTION: rate=P (0..1), times=N, skip=N, retry-after=SECONDS, chunk=INDEX. \
Example: --fault chunk:503,rate=0.1,retry-after=1";

/// Parses one `--fault` specification.
pub fn parse_fault(spec: &str) -> Result<FaultRule> {
    let (endpoint, rest) = spec
        .split_once(':')
        .with_context(|| format!("fault `{spec}` must look like ENDPOINT:ACTION[,OPTION=VALUE]"))?;
    let endpoint = match endpoint.trim() {
        "any" => Endpoint::Any,
        "execute" => Endpoint::ExecuteStatement,
        "poll" => Endpoint::GetStatement,
        "chunk" => Endpoint::GetChunk,
        "cancel" => Endpoint::CancelStatement,
        "close" => Endpoint::CloseStatement,
        "sessions" => Endpoint::Sessions,
        "download" => Endpoint::Download,
        "token" => Endpoint::Token,
        other => bail!(
            "fault `{spec}`: unknown endpoint `{other}` (any, execute, poll, chunk, cancel, close, sessions, download, token)"
        ),
    };
    let mut parts = rest.split(',').map(str::trim);
    let action = parts.next().unwrap_or_default();
    let mut retry_after = None;
    let mut options = Vec::new();
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .with_context(|| format!("fault `{spec}`: option `{option}` must be KEY=VALUE"))?;
        if key == "retry-after" {
            retry_after = Some(number::<u32>(spec, key, value)?);
        } else {
            options.push((key, value));
        }
    }
    let action = match action.split_once('=') {
        None if action == "expired-links" => FaultAction::ExpiredLinks,
        None => {
            let status = number::<u16>(spec, "status", action)?;
            if !(400..=599).contains(&status) {
                bail!("fault `{spec}`: status {status} is not an HTTP error status (400-599)");
            }
            FaultAction::Status {
                status,
                retry_after,
            }
        }
        Some(("reset", n)) => FaultAction::ResetMidDownload {
            after_bytes: number(spec, "reset", n)?,
        },
        Some(("slow", n)) => FaultAction::SlowDownload {
            bytes_per_second: number::<u64>(spec, "slow", n)?.max(1),
        },
        Some(("fail-after", n)) => FaultAction::FailAfterChunks {
            chunks: number(spec, "fail-after", n)?,
            error_code: "INTERNAL_ERROR".to_owned(),
            message: "[INTERNAL_ERROR] Injected failure. SQLSTATE: XX000".to_owned(),
            sql_state: "XX000".to_owned(),
        },
        Some((other, _)) => bail!(
            "fault `{spec}`: unknown action `{other}` (a status, reset=, slow=, expired-links, fail-after=)"
        ),
    };
    if retry_after.is_some() && !matches!(action, FaultAction::Status { .. }) {
        bail!("fault `{spec}`: retry-after goes with a status action");
    }
    let mut rule = FaultRule::new(endpoint, action);
    for (key, value) in options {
        rule = match key {
            "rate" => {
                let rate: f64 = number(spec, key, value)?;
                if !(0.0..=1.0).contains(&rate) {
                    bail!("fault `{spec}`: rate must be between 0 and 1");
                }
                rule.rate(rate)
            }
            "times" => rule.times(number(spec, key, value)?),
            "skip" => rule.skip(number(spec, key, value)?),
            "chunk" => rule.chunk_index(number(spec, key, value)?),
            other => bail!(
                "fault `{spec}`: unknown option `{other}` (rate, times, skip, retry-after, chunk)"
            ),
        };
    }
    Ok(rule)
}

fn number<T: std::str::FromStr>(spec: &str, what: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .ok()
        .with_context(|| format!("fault `{spec}`: `{value}` is not a valid {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_with_options() {
        let rule =
            parse_fault("chunk:503,rate=0.25,retry-after=2,times=3,skip=1,chunk=4").expect("valid");
        assert_eq!(rule.endpoint, Endpoint::GetChunk);
        assert_eq!(
            rule.action,
            FaultAction::Status {
                status: 503,
                retry_after: Some(2)
            }
        );
        assert_eq!(
            (rule.rate, rule.times, rule.skip, rule.chunk_index),
            (Some(0.25), Some(3), 1, Some(4))
        );
    }

    #[test]
    fn download_and_statement_actions() {
        assert_eq!(
            parse_fault("download:reset=4096").expect("valid").action,
            FaultAction::ResetMidDownload { after_bytes: 4096 }
        );
        assert_eq!(
            parse_fault("download:slow=1000").expect("valid").action,
            FaultAction::SlowDownload {
                bytes_per_second: 1000
            }
        );
        assert_eq!(
            parse_fault("poll:expired-links").expect("valid").action,
            FaultAction::ExpiredLinks
        );
        assert!(matches!(
            parse_fault("execute:fail-after=2").expect("valid").action,
            FaultAction::FailAfterChunks { chunks: 2, .. }
        ));
    }

    #[test]
    fn mistakes_are_named() {
        for (spec, named) in [
            ("chunk", "ENDPOINT:ACTION"),
            ("chunks:503", "chunks"),
            ("chunk:200", "200"),
            ("chunk:503,rate=2", "rate"),
            ("chunk:503,often=1", "often"),
            ("download:reset=-1", "-1"),
            ("download:explode=1", "explode"),
            ("download:reset=1,retry-after=1", "retry-after"),
        ] {
            let error = parse_fault(spec).expect_err(spec).to_string();
            assert!(error.contains(named), "{spec}: {error}");
        }
    }
}
