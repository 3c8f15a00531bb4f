//! Databricks commands DataFusion does not run: `SHOW CATALOGS|SCHEMAS|TABLES`, `DESCRIBE`,
//! `USE`, `SET`. Recognised on the token stream, answered from the caller's view of the catalog.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::dialect::DatabricksDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::SqlError;
use super::catalog::{Access, INFORMATION_SCHEMA, Lookup, SYSTEM};
use super::types::sql_type;

/// What a recognised command asks for.
#[derive(Debug)]
pub(crate) enum Command {
    /// A ready result.
    Rows(RecordBatch),
    /// `DESCRIBE QUERY <query>`: describe the result columns of this query text.
    DescribeQuery(String),
    /// A command with no result set (`USE ...`).
    NoResult,
}

/// A token of the command grammar.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier or keyword; `quoted` when written in backticks or double quotes.
    Word {
        value: String,
        quoted: bool,
    },
    /// A single-quoted string.
    Str(String),
    Dot,
    Eq,
    Other(String),
}

impl Tok {
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word { value, quoted: false } if value.eq_ignore_ascii_case(kw))
    }
}

/// Recognises a command; `Ok(None)` means "not a command, run it as SQL".
pub(crate) fn recognise(
    sql: &str,
    access: &Access,
    default_catalog: &str,
    default_schema: &str,
) -> Result<Option<Command>, SqlError> {
    let Some(tokens) = tokenize(sql) else {
        return Ok(None);
    };
    let Some(first) = tokens.first() else {
        return Ok(None);
    };
    let mut p = Cursor {
        toks: &tokens,
        pos: 1,
    };
    if first.is_kw("SHOW") {
        if p.eat("CATALOGS") {
            let pattern = p.like_pattern();
            let names: Vec<String> = access
                .catalogs()
                .iter()
                .map(|c| c.name.clone())
                .chain(std::iter::once(SYSTEM.to_string()))
                .filter(|n| pattern.as_deref().is_none_or(|pat| like(pat, n)))
                .collect();
            let mut names = names;
            names.sort();
            return Ok(Some(Command::Rows(strings_batch(&[("catalog", names)]))));
        }
        if p.eat("SCHEMAS") || p.eat("DATABASES") {
            let catalog = if p.eat("IN") || p.eat("FROM") {
                p.name().and_then(|n| n.into_iter().next())
            } else {
                None
            }
            .unwrap_or_else(|| default_catalog.to_string());
            let pattern = p.like_pattern();
            let schemas = visible_schema_names(access, &catalog)?;
            let names: Vec<String> = schemas
                .into_iter()
                .filter(|n| pattern.as_deref().is_none_or(|pat| like(pat, n)))
                .collect();
            return Ok(Some(Command::Rows(strings_batch(&[(
                "databaseName",
                names,
            )]))));
        }
        if p.eat("TABLES") {
            return show_tables(&mut p, access, default_catalog, default_schema).map(Some);
        }
        return Ok(None);
    }
    if first.is_kw("DESCRIBE") || first.is_kw("DESC") {
        if p.eat("QUERY") {
            let rest = rest_after_keyword(sql, "QUERY").unwrap_or_default();
            return Ok(Some(Command::DescribeQuery(rest)));
        }
        if p.peek_kw("SCHEMA")
            || p.peek_kw("DATABASE")
            || p.peek_kw("CATALOG")
            || p.peek_kw("FUNCTION")
        {
            return Err(SqlError::unsupported(&format!(
                "DESCRIBE {}",
                p.peek_text()
            )));
        }
        let _ = p.eat("TABLE");
        let extended = p.eat("EXTENDED") || p.eat("FORMATTED");
        let Some(parts) = p.name() else {
            return Ok(None);
        };
        return describe_table(&parts, extended, access, default_catalog, default_schema).map(Some);
    }
    if first.is_kw("USE") {
        let kind = if p.eat("CATALOG") {
            "CATALOG"
        } else {
            let _ = p.eat("SCHEMA") || p.eat("DATABASE");
            "SCHEMA"
        };
        let parts = p.name().unwrap_or_default();
        match (kind, parts.as_slice()) {
            ("CATALOG", [c]) => {
                if !access.catalog_visible(c)
                    || !access
                        .registry
                        .catalogs
                        .contains_key(&c.to_ascii_lowercase())
                {
                    return Err(SqlError::catalog_not_found(c));
                }
            }
            (_, [s]) => {
                if access.schema(default_catalog, s).is_none() {
                    return Err(SqlError::schema_not_found(default_catalog, s));
                }
            }
            (_, [c, s]) => {
                if access.schema(c, s).is_none() {
                    return Err(SqlError::schema_not_found(c, s));
                }
            }
            _ => return Ok(None),
        }
        return Ok(Some(Command::NoResult));
    }
    if first.is_kw("SET")
        && !tokens
            .iter()
            .skip(1)
            .any(|t| t.is_kw("VARIABLE") || t.is_kw("VAR"))
    {
        // `SET k = v` is accepted and echoed; settings live in the request's session_confs.
        let text = sql.trim().trim_end_matches(';');
        let body = text.get(3..).unwrap_or_default().trim();
        let (key, value) = match body.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (body.to_string(), None),
        };
        return Ok(Some(Command::Rows(batch(
            vec![string_field("key"), string_field("value")],
            vec![strings(vec![Some(key)]), strings(vec![value])],
        ))));
    }
    Ok(None)
}

fn visible_schema_names(access: &Access, catalog: &str) -> Result<Vec<String>, SqlError> {
    if catalog.eq_ignore_ascii_case(SYSTEM) {
        return Ok(vec![INFORMATION_SCHEMA.to_string()]);
    }
    let Some(schemas) = access.schemas(catalog) else {
        return Err(SqlError::catalog_not_found(catalog));
    };
    let mut names: Vec<String> = schemas.iter().map(|s| s.name.clone()).collect();
    names.push(INFORMATION_SCHEMA.to_string());
    names.sort();
    Ok(names)
}

fn show_tables(
    p: &mut Cursor<'_>,
    access: &Access,
    default_catalog: &str,
    default_schema: &str,
) -> Result<Command, SqlError> {
    // JDBC form: SHOW TABLES IN CATALOG c [SCHEMA LIKE 'p'] [LIKE 'p']
    if (p.peek_kw("IN") || p.peek_kw("FROM")) && p.peek_kw_at(1, "CATALOG") {
        p.pos += 2;
        let catalog = p
            .name()
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| default_catalog.to_string());
        let schema_pattern = if p.eat("SCHEMA") {
            p.like_pattern()
        } else {
            None
        };
        let table_pattern = p.like_pattern();
        let schemas = visible_schema_names(access, &catalog)?;
        let mut rows: Vec<(String, String)> = Vec::new();
        for s in schemas {
            if s == INFORMATION_SCHEMA || !schema_pattern.as_deref().is_none_or(|pat| like(pat, &s))
            {
                continue;
            }
            if let Some(entry) = access.schema(&catalog, &s) {
                for t in entry.tables.values() {
                    if table_pattern
                        .as_deref()
                        .is_none_or(|pat| like(pat, &t.name))
                    {
                        rows.push((s.clone(), t.name.clone()));
                    }
                }
            }
        }
        let n = rows.len();
        let table_types: Vec<Option<String>> = rows
            .iter()
            .map(|(s, t)| match access.lookup(&catalog, s, t) {
                Lookup::Found(e) => Some(
                    if e.table_type == "VIEW" {
                        "VIEW"
                    } else {
                        "TABLE"
                    }
                    .to_string(),
                ),
                _ => Some("TABLE".to_string()),
            })
            .collect();
        return Ok(Command::Rows(batch(
            vec![
                string_field("namespace"),
                string_field("tableName"),
                Field::new("isTemporary", DataType::Boolean, true),
                string_field("information"),
                string_field("catalogName"),
                string_field("tableType"),
                string_field("remarks"),
            ],
            vec![
                strings(rows.iter().map(|r| Some(r.0.clone())).collect()),
                strings(rows.iter().map(|r| Some(r.1.clone())).collect()),
                Arc::new(BooleanArray::from(vec![Some(false); n])),
                strings(vec![None; n]),
                strings(vec![Some(catalog.clone()); n]),
                strings(table_types),
                strings(vec![Some(String::new()); n]),
            ],
        )));
    }
    let (catalog, schema) = if p.eat("IN") || p.eat("FROM") {
        match p.name().unwrap_or_default().as_slice() {
            [s] => (default_catalog.to_string(), s.clone()),
            [c, s] => (c.clone(), s.clone()),
            _ => return Err(SqlError::syntax("TABLES", 1, 1, "SHOW TABLES")),
        }
    } else {
        (default_catalog.to_string(), default_schema.to_string())
    };
    let pattern = p.like_pattern();
    let names: Vec<String> = if schema.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
        ["catalogs", "columns", "schemata", "tables"]
            .into_iter()
            .map(str::to_string)
            .collect()
    } else {
        let Some(entry) = access.schema(&catalog, &schema) else {
            return Err(SqlError::schema_not_found(&catalog, &schema));
        };
        entry.tables.values().map(|t| t.name.clone()).collect()
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| pattern.as_deref().is_none_or(|pat| like(pat, n)))
        .collect();
    let n = names.len();
    Ok(Command::Rows(batch(
        vec![
            string_field("database"),
            string_field("tableName"),
            Field::new("isTemporary", DataType::Boolean, true),
        ],
        vec![
            strings(vec![Some(schema.to_ascii_lowercase()); n]),
            strings(names.into_iter().map(Some).collect()),
            Arc::new(BooleanArray::from(vec![Some(false); n])),
        ],
    )))
}

fn describe_table(
    parts: &[String],
    extended: bool,
    access: &Access,
    default_catalog: &str,
    default_schema: &str,
) -> Result<Command, SqlError> {
    let (c, s, t) = match parts {
        [t] => (
            default_catalog.to_string(),
            default_schema.to_string(),
            t.clone(),
        ),
        [s, t] => (default_catalog.to_string(), s.clone(), t.clone()),
        [c, s, t] => (c.clone(), s.clone(), t.clone()),
        _ => return Err(SqlError::table_not_found(parts)),
    };
    let metadata;
    let (provider_schema, entry_type, format) = if s.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
        let catalog = (!c.eq_ignore_ascii_case(SYSTEM)).then_some(c.as_str());
        metadata = access
            .information_schema(catalog, &t)
            .ok_or_else(|| SqlError::table_not_found(parts))?;
        (
            datafusion::catalog::TableProvider::schema(&metadata),
            "VIEW",
            "",
        )
    } else {
        match access.lookup(&c, &s, &t) {
            Lookup::Found(e) => (e.provider.schema(), e.table_type, e.format),
            Lookup::Denied => {
                return Err(SqlError::insufficient_permissions(
                    "Table",
                    "SELECT",
                    &format!("{c}.{s}.{t}").to_ascii_lowercase(),
                ));
            }
            Lookup::Missing => return Err(SqlError::table_not_found(parts)),
        }
    };
    let mut names: Vec<Option<String>> = Vec::new();
    let mut types: Vec<Option<String>> = Vec::new();
    for field in provider_schema.fields() {
        names.push(Some(field.name().clone()));
        types.push(Some(sql_type(field.data_type(), &access.time_zone).simple));
    }
    if extended {
        let info = [
            ("", ""),
            ("# Detailed Table Information", ""),
            ("Catalog", c.as_str()),
            ("Database", s.as_str()),
            ("Table", t.as_str()),
            ("Type", entry_type),
            ("Provider", format),
            ("Owner", "dbfed"),
        ];
        for (k, v) in info {
            names.push(Some(k.to_string()));
            types.push(Some(v.to_string()));
        }
    }
    let n = names.len();
    Ok(Command::Rows(describe_batch(names, types, vec![None; n])))
}

/// `col_name`, `data_type`, `comment` rows.
pub(crate) fn describe_batch(
    names: Vec<Option<String>>,
    types: Vec<Option<String>>,
    comments: Vec<Option<String>>,
) -> RecordBatch {
    batch(
        vec![
            string_field("col_name"),
            string_field("data_type"),
            string_field("comment"),
        ],
        vec![strings(names), strings(types), strings(comments)],
    )
}

fn string_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn strings(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn strings_batch(columns: &[(&str, Vec<String>)]) -> RecordBatch {
    batch(
        columns.iter().map(|(n, _)| string_field(n)).collect(),
        columns
            .iter()
            .map(|(_, v)| strings(v.iter().cloned().map(Some).collect()))
            .collect(),
    )
}

/// Builds a batch from columns this module constructed itself (lengths and types agree).
fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    match RecordBatch::try_new(Arc::clone(&schema), columns) {
        Ok(b) => b,
        Err(e) => {
            // Unreachable by construction; an empty result is safer than a panic.
            tracing::error!(error = %e, "building a command result failed");
            RecordBatch::new_empty(schema)
        }
    }
}

fn tokenize(sql: &str) -> Option<Vec<Tok>> {
    let dialect = DatabricksDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let mut out = Vec::new();
    for t in tokens {
        out.push(match t {
            Token::Whitespace(_) | Token::EOF => continue,
            Token::SemiColon => continue,
            Token::Word(w) => Tok::Word {
                value: w.value,
                quoted: w.quote_style.is_some(),
            },
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Tok::Str(s),
            Token::Period => Tok::Dot,
            Token::Eq => Tok::Eq,
            other => Tok::Other(other.to_string()),
        });
    }
    Some(out)
}

/// The statement text after the first occurrence of `keyword` (for `DESCRIBE QUERY`).
fn rest_after_keyword(sql: &str, keyword: &str) -> Option<String> {
    let upper = sql.to_ascii_uppercase();
    let at = upper.find(keyword)?;
    Some(sql[at + keyword.len()..].trim().to_string())
}

struct Cursor<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek_kw(&self, kw: &str) -> bool {
        self.peek_kw_at(0, kw)
    }

    fn peek_kw_at(&self, offset: usize, kw: &str) -> bool {
        self.toks
            .get(self.pos + offset)
            .is_some_and(|t| t.is_kw(kw))
    }

    fn peek_text(&self) -> String {
        match self.toks.get(self.pos) {
            Some(Tok::Word { value, .. }) => value.to_ascii_uppercase(),
            _ => String::new(),
        }
    }

    /// A dotted name (`a`, `a.b`, `` `a`.`b`.c ``); unquoted parts lower-cased.
    fn name(&mut self) -> Option<Vec<String>> {
        let mut parts = Vec::new();
        loop {
            match self.toks.get(self.pos) {
                Some(Tok::Word { value, quoted }) => {
                    parts.push(if *quoted {
                        value.clone()
                    } else {
                        value.to_ascii_lowercase()
                    });
                    self.pos += 1;
                }
                _ => return None,
            }
            if self.toks.get(self.pos) == Some(&Tok::Dot) {
                self.pos += 1;
            } else {
                return Some(parts);
            }
        }
    }

    /// `[LIKE] 'pattern'`.
    fn like_pattern(&mut self) -> Option<String> {
        let _ = self.eat("LIKE");
        match self.toks.get(self.pos) {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Some(s.clone())
            }
            _ => None,
        }
    }
}

/// Databricks `SHOW ... LIKE` patterns: `*` any run, `.` and `_`-less; `|` separates
/// alternatives; case-insensitive.
pub(crate) fn like(pattern: &str, name: &str) -> bool {
    let name: Vec<char> = name.to_ascii_lowercase().chars().collect();
    pattern.split('|').any(|alt| {
        let pat: Vec<char> = alt.trim().to_ascii_lowercase().chars().collect();
        matches(&pat, &name)
    })
}

fn matches(pat: &[char], s: &[char]) -> bool {
    // Iterative wildcard matching with backtracking on the last '*'.
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while i < s.len() {
        if p < pat.len() && (pat[p] == '.' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == '*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == '*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_patterns() {
        assert!(like("jdbc*", "jdbc_test_schema"));
        assert!(like("jdbc.test.schema", "jdbc_test_schema"));
        assert!(like("*", "anything"));
        assert!(like("a|tp*", "tpch"));
        assert!(!like("tpch", "tpch2"));
        assert!(like("TPCH", "tpch"));
    }
}
