//! A small parser for the INI dialect of `~/.databrickscfg`.
//!
//! Rules (a subset of Python's `configparser`, which the Databricks SDKs read the file with):
//! - `[name]` starts a section; section names are case-sensitive and keep inner whitespace.
//! - `key = value` or `key: value`; keys are trimmed and lower-cased, values are trimmed and kept
//!   verbatim (no quote removal, no inline comments: `#` inside a value is part of the value).
//! - Lines whose first non-blank character is `#` or `;` are comments; blank lines are ignored.
//! - A key repeated in a section, or a section repeated in the file: the later value wins.
//! - `[DEFAULT]` is an ordinary section: its keys are NOT inherited by other sections.
//! - A key before any section header, or a line that is none of the above, is a syntax error.

use std::collections::BTreeMap;

/// One parsed file: section name → (lower-cased key → value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IniFile {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// A syntax error with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IniError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl IniFile {
    /// Parses `text`. Never panics; reports the first malformed line.
    pub(crate) fn parse(text: &str) -> Result<Self, IniError> {
        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        // A UTF-8 byte-order mark written by some Windows editors.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(IniError {
                        line: line_no,
                        message: "section header is missing its closing `]`".to_owned(),
                    });
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(IniError {
                        line: line_no,
                        message: "empty section name `[]`".to_owned(),
                    });
                }
                sections.entry(name.to_owned()).or_default();
                current = Some(name.to_owned());
                continue;
            }
            let Some(split) = line.find(['=', ':']) else {
                return Err(IniError {
                    line: line_no,
                    message: "expected `[section]`, `key = value` or a comment".to_owned(),
                });
            };
            let key = line[..split].trim().to_ascii_lowercase();
            let value = line[split + 1..].trim();
            if key.is_empty() {
                return Err(IniError {
                    line: line_no,
                    message: "missing key before `=`".to_owned(),
                });
            }
            let Some(section) = current.as_ref() else {
                return Err(IniError {
                    line: line_no,
                    message: format!("key `{key}` appears before any `[section]` header"),
                });
            };
            sections
                .entry(section.clone())
                .or_default()
                .insert(key, value.to_owned());
        }
        Ok(Self { sections })
    }

    /// The keys of section `name`, if the file has it.
    pub(crate) fn section(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.sections.get(name)
    }

    /// The section names, sorted.
    pub(crate) fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(ini: &'a IniFile, section: &str, key: &str) -> Option<&'a str> {
        ini.section(section)?.get(key).map(String::as_str)
    }

    #[test]
    fn parses_sections_keys_and_comments() {
        let text = "\
# a comment
; another comment
[DEFAULT]
host = https://adb-1.azuredatabricks.net
token=dapi123

  [prod]
  HOST : https://prod.cloud.databricks.com  
Client_Id = abc
client_secret = s3cr#t;x
";
        let ini = IniFile::parse(text).expect("valid file");
        assert_eq!(
            get(&ini, "DEFAULT", "host"),
            Some("https://adb-1.azuredatabricks.net")
        );
        assert_eq!(get(&ini, "DEFAULT", "token"), Some("dapi123"));
        assert_eq!(
            get(&ini, "prod", "host"),
            Some("https://prod.cloud.databricks.com")
        );
        assert_eq!(get(&ini, "prod", "client_id"), Some("abc"));
        // No inline comments: `#` and `;` inside a value are kept.
        assert_eq!(get(&ini, "prod", "client_secret"), Some("s3cr#t;x"));
        // DEFAULT is not inherited.
        assert_eq!(get(&ini, "prod", "token"), None);
        assert_eq!(ini.section_names().collect::<Vec<_>>(), ["DEFAULT", "prod"]);
    }

    #[test]
    fn section_names_are_case_sensitive_and_later_values_win() {
        let text = "[Prod]\nhost = a\n[prod]\nhost = b\n[Prod]\nhost = c\nempty =\n";
        let ini = IniFile::parse(text).expect("valid file");
        assert_eq!(get(&ini, "Prod", "host"), Some("c"));
        assert_eq!(get(&ini, "prod", "host"), Some("b"));
        assert_eq!(get(&ini, "Prod", "empty"), Some(""));
    }

    #[test]
    fn crlf_bom_and_empty_input() {
        let ini = IniFile::parse("\u{feff}[DEFAULT]\r\nhost = h\r\n").expect("valid file");
        assert_eq!(get(&ini, "DEFAULT", "host"), Some("h"));
        assert_eq!(
            IniFile::parse("").expect("empty is valid"),
            IniFile::default()
        );
        // A header with no keys still exists.
        let ini = IniFile::parse("[empty]\n").expect("valid file");
        assert!(ini.section("empty").is_some_and(BTreeMap::is_empty));
    }

    #[test]
    fn reports_malformed_lines_with_line_numbers() {
        let err = IniFile::parse("[DEFAULT]\nhost = h\njust words\n").expect_err("bad line");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("key = value"), "{}", err.message);

        let err = IniFile::parse("host = h\n").expect_err("key before section");
        assert_eq!(err.line, 1);
        assert!(err.message.contains("`host`"), "{}", err.message);

        let err = IniFile::parse("\n[DEFAULT\n").expect_err("unclosed header");
        assert_eq!(err.line, 2);

        let err = IniFile::parse("[ ]\n").expect_err("empty name");
        assert_eq!(err.line, 1);

        let err = IniFile::parse("[a]\n = v\n").expect_err("empty key");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn the_value_starts_after_the_first_separator() {
        let ini = IniFile::parse("[a]\nhost = https://h:443\nk: v=w\n").expect("valid file");
        assert_eq!(get(&ini, "a", "host"), Some("https://h:443"));
        assert_eq!(get(&ini, "a", "k"), Some("v=w"));
    }
}
