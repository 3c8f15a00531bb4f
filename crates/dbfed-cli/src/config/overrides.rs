//! `--set KEY=VALUE`: command-line overrides of any configuration key.
//!
//! An override is written into the parsed TOML document before it is deserialized, so it goes
//! through the same validation as the file. Its value is parsed as a TOML value (`4`, `true`,
//! `"text"`, `["a", "b"]`, `{ cert = "c.pem", key = "k.pem" }`); text that is not valid TOML, or
//! a TOML value the key does not accept (e.g. `1234` for a warehouse id), is taken as a string.
//! Errors name the flag (`--set executor.threads=abc: ...`); values of secret keys are never
//! shown.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigFileError;

/// One `--set KEY=VALUE` flag: a dotted key (`executor.threads`, `server.tls.cert`,
/// `tables.sales`) and its raw value.
#[derive(Clone, PartialEq, Eq)]
pub struct Override {
    key: Vec<String>,
    raw: String,
}

impl Override {
    /// Parses `KEY=VALUE`, where `KEY` is one or more dot-separated bare TOML keys (letters,
    /// digits, `_` and `-`).
    pub fn parse(spec: &str) -> Result<Self, ConfigFileError> {
        let malformed = |message: String| ConfigFileError::Override {
            flag: redacted_spec(spec),
            message,
        };
        let Some((key, raw)) = spec.split_once('=') else {
            return Err(malformed(
                "expected KEY=VALUE, e.g. `--set executor.threads=8`".to_owned(),
            ));
        };
        let key: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        let bare = |segment: &String| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !key.iter().all(bare) {
            return Err(malformed(format!(
                "`{}` is not a key: write dot-separated names, e.g. `executor.threads`",
                key.join(".")
            )));
        }
        Ok(Self {
            key,
            raw: raw.trim().to_owned(),
        })
    }

    /// The dotted key, e.g. `executor.threads`.
    pub fn key(&self) -> String {
        self.key.join(".")
    }

    /// Whether this override sets `key` (dotted) or a table holding it.
    pub(super) fn covers(&self, key: &str) -> bool {
        let own = self.key();
        key == own || key.starts_with(&format!("{own}."))
    }

    /// How errors show the flag: `KEY=VALUE`, the value redacted for secret keys.
    pub(super) fn shown(&self) -> String {
        if is_secret_key(&self.key) {
            format!("{}=[REDACTED]", self.key())
        } else {
            format!("{}={}", self.key(), self.raw)
        }
    }

    /// `message` with this override's value removed when its key is secret (deserialization
    /// errors may quote the value).
    pub(super) fn redact(&self, message: &str) -> String {
        if is_secret_key(&self.key) && !self.raw.is_empty() {
            message.replace(&self.raw, "[REDACTED]")
        } else {
            message.to_owned()
        }
    }

    /// The value to insert: the raw text parsed as TOML, or (when it is not TOML, or
    /// `as_string`) the raw text as a string.
    fn value(&self, as_string: bool) -> DeValue<'_> {
        if !as_string && let Ok(value) = DeValue::parse(&self.raw) {
            return value.into_inner();
        }
        DeValue::String(Cow::Borrowed(&self.raw))
    }

    /// Whether the raw text parses as a TOML value other than a string (a retry as a string
    /// may then succeed).
    pub(super) fn is_typed(&self) -> bool {
        DeValue::parse(&self.raw).is_ok_and(|v| !v.get_ref().is_str())
    }
}

impl fmt::Debug for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--set {}", self.shown())
    }
}

/// Keys whose values are secrets: never shown in errors or `Debug`.
fn is_secret_key(key: &[String]) -> bool {
    let secret_name = key.last().is_some_and(|last| {
        let last = last.to_ascii_lowercase();
        last.contains("token") || last.contains("secret") || last.contains("password")
    });
    let auth = key.len() >= 2 && key[0] == "server" && key[1] == "auth";
    // A whole section given as an inline table may hold secrets.
    let section = key.len() == 1 && matches!(key[0].as_str(), "server" | "databricks");
    secret_name || auth || section
}

/// `KEY=VALUE` as given, the value redacted when the key looks secret (used before parsing).
fn redacted_spec(spec: &str) -> String {
    match spec.split_once('=') {
        Some((key, _)) => {
            let segments: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
            if is_secret_key(&segments) {
                format!("{}=[REDACTED]", key.trim())
            } else {
                spec.to_owned()
            }
        }
        None => spec.to_owned(),
    }
}

/// Writes `over` into `root` with every span of the inserted keys and values set to `span`
/// (outside the file's text, so that errors about them are traced back to the flag).
/// `as_string` inserts the raw text as a string.
pub(super) fn apply<'i>(
    root: &mut DeTable<'i>,
    over: &'i Override,
    span: Range<usize>,
    as_string: bool,
) -> Result<(), ConfigFileError> {
    let error = |message: String| ConfigFileError::Override {
        flag: over.shown(),
        message,
    };
    let Some((last, parents)) = over.key.split_last() else {
        return Err(error("empty key".to_owned()));
    };
    let mut table = root;
    let mut walked: Vec<&str> = Vec::new();
    for segment in parents {
        walked.push(segment);
        let entry = table
            .entry(Spanned::new(span.clone(), Cow::Borrowed(segment.as_str())))
            .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
        // `emulator = true` is the default `[emulator]` table: a key set in it makes it one.
        if walked == ["emulator"] && matches!(entry.get_ref(), DeValue::Boolean(true)) {
            *entry = Spanned::new(span.clone(), DeValue::Table(DeTable::new()));
        }
        match entry.get_mut() {
            DeValue::Table(inner) => table = inner,
            other => {
                return Err(error(format!(
                    "`{}` is {} in the configuration, not a table",
                    walked.join("."),
                    article(other.type_str())
                )));
            }
        }
    }
    let mut value = Spanned::new(span.clone(), over.value(as_string));
    respan(&mut value, &span);
    table.insert(Spanned::new(span, Cow::Borrowed(last.as_str())), value);
    Ok(())
}

fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// Sets the span of `value` and of everything inside it to `span`.
fn respan(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) {
    match value.get_mut() {
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                respan(item, span);
            }
        }
        DeValue::Table(table) => {
            let old = std::mem::take(table);
            *table = old
                .into_iter()
                .map(|(key, mut inner)| {
                    respan(&mut inner, span);
                    (Spanned::new(span.clone(), key.into_inner()), inner)
                })
                .collect();
        }
        _ => {}
    }
    let inner = std::mem::replace(value.get_mut(), DeValue::Boolean(false));
    *value = Spanned::new(span.clone(), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_malformed_ones_are_named() {
        let over = Override::parse("executor.threads=8").expect("valid");
        assert_eq!(over.key(), "executor.threads");
        assert!(over.is_typed());
        assert!(over.covers("executor.threads"));
        assert!(!over.covers("executor.threads_x"));
        for bad in ["executor.threads", "executor..threads=1", "=1", "a b=1"] {
            let message = Override::parse(bad).expect_err(bad).to_string();
            assert!(message.starts_with("--set "), "{message}");
        }
    }

    #[test]
    fn secret_values_are_never_shown() {
        for spec in [
            "databricks.token=dapi-xyz",
            "databricks.client_secret=dapi-xyz",
            "server.auth.tokens=[\"dapi-xyz\"]",
            "server.ticket_secret=dapi-xyz",
        ] {
            let over = Override::parse(spec).expect("valid");
            assert!(!format!("{over:?}").contains("dapi-xyz"), "{over:?}");
            assert!(over.shown().ends_with("=[REDACTED]"));
        }
        let section = Override::parse("databricks={ token = \"dapi-xyz\" }").expect("valid");
        assert!(!section.shown().contains("dapi-xyz"));
    }
}
