//! `dbfed query`: run one statement and print or save its result.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use dbfed_databricks::config::ClientConfigBuilder;
use dbfed_databricks::{Client, Param, ResultFormat};

use crate::output::{OutputFormat, open_output, write_results};

/// Flags of `dbfed query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL statement (or use --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub sql: Option<String>,
    /// Read the SQL statement from this file.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// A parameter for a `:name` marker: `name=value` (STRING) or `name:TYPE=value`
    /// (e.g. `region=ASIA`, `day:DATE=1995-01-01`). Repeatable.
    #[arg(short, long = "param")]
    pub params: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Fetch results as INLINE JSON_ARRAY instead of LZ4 Arrow external links.
    #[arg(long)]
    pub inline: bool,
    /// Run against an embedded emulator with `samples.tpch` instead of a configured workspace.
    #[arg(long)]
    pub emulator: bool,
    /// `~/.databrickscfg` profile (default: DATABRICKS_CONFIG_PROFILE or DEFAULT).
    #[arg(long)]
    pub profile: Option<String>,
    /// Default catalog for the statement.
    #[arg(long)]
    pub catalog: Option<String>,
    /// Default schema for the statement.
    #[arg(long)]
    pub schema: Option<String>,
}

/// Parses `name=value` / `name:TYPE=value` into a statement parameter.
pub fn parse_param(spec: &str) -> Result<Param> {
    let (key, value) = spec.split_once('=').with_context(|| {
        format!("parameter `{spec}` must look like name=value or name:TYPE=value")
    })?;
    let (name, type_name) = match key.split_once(':') {
        Some((name, type_name)) => (name, Some(type_name)),
        None => (key, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("parameter name `{name}` must be letters, digits and underscores");
    }
    let param = Param::new(name, value.to_owned());
    Ok(match type_name {
        Some(type_name) if !type_name.is_empty() => param.with_type(type_name),
        Some(_) => bail!("parameter `{spec}` has an empty type"),
        None => param,
    })
}

/// Runs `dbfed query`.
pub fn run(args: QueryArgs) -> Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        (None, None) => bail!("give a SQL statement or --file"),
    };
    let params = args
        .params
        .iter()
        .map(|spec| parse_param(spec))
        .collect::<Result<Vec<_>>>()?;

    let mut emulator = None;
    let mut builder = if args.emulator {
        let (background, builder) =
            crate::demo::embedded_emulator(dbfed_emulator::Emulator::builder(), "127.0.0.1:0")?;
        emulator = Some(background);
        builder
    } else {
        let mut builder = ClientConfigBuilder::from_process_env();
        if let Some(profile) = &args.profile {
            builder = builder.profile(profile);
        }
        builder
    };
    if let Some(catalog) = &args.catalog {
        builder = builder.catalog(catalog);
    }
    if let Some(schema) = &args.schema {
        builder = builder.schema(schema);
    }
    let config = builder.build().context("invalid configuration")?;
    let format = if args.inline {
        ResultFormat::JsonInline
    } else {
        ResultFormat::ArrowLz4
    };
    let client = Client::builder(config)
        .result_format(format)
        .build()
        .context("cannot create the client")?;
    let stream = client.execute(&sql, &params)?;
    let mut out = open_output(args.output.as_deref())?;
    let summary = write_results(stream, args.format, &mut *out)?;
    drop(out);
    if args.output.is_some() || args.format != OutputFormat::Table {
        eprintln!("{} rows in {} batches", summary.rows, summary.batches);
    }
    drop(emulator);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_with_and_without_type() {
        let p = parse_param("region=ASIA").expect("valid");
        assert_eq!(p.name(), Some("region"));
        assert_eq!(p.value(), Some("ASIA"));
        let p = parse_param("day:DATE=1995-01-01").expect("valid");
        assert_eq!(p.type_name(), Some("DATE"));
        assert_eq!(p.value(), Some("1995-01-01"));
        let p = parse_param("expr=a=b").expect("value may contain =");
        assert_eq!(p.value(), Some("a=b"));
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = parse_param("novalue").expect_err("no =");
        assert!(err.to_string().contains("novalue"), "{err}");
        let err = parse_param("bad-name=1").expect_err("bad name");
        assert!(err.to_string().contains("bad-name"), "{err}");
        assert!(parse_param("x:=1").is_err());
    }
}
