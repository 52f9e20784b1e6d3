//! `leakless check` and `leakless explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::build::parse_overrides;

/// Validates a spec against the inputs' headers and schemas, computing
/// nothing; prints the resolved plan and warnings.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The spec file (TOML)
    #[arg(long, value_name = "SPEC")]
    spec: PathBuf,
    /// Replace a source's path (repeatable): NAME=PATH
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<String>,
    /// Leave input files matching GLOB out of folder inputs (repeatable)
    #[arg(long, value_name = "GLOB")]
    ignore: Vec<String>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// Prints every output column's exact definition and the feature-set hash.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The spec file (TOML)
    #[arg(long, value_name = "SPEC")]
    spec: PathBuf,
    /// Print as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let overrides = parse_overrides(&args.sources)?;
    let spec = leakless::spec::load_ignoring(&args.spec, &overrides, &args.ignore)?;
    let report = leakless::check::check(&spec)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("spec `{}` is valid", args.spec.display());
    println!("feature set: {}", report.feature_set_hash);
    println!("sources:");
    for s in &report.sources {
        println!(
            "  {} ({}): {} file(s), {} bytes at `{}`",
            s.name, s.kind, s.files, s.bytes, s.path
        );
    }
    println!("indexes (one per source, key and where; each serves these columns):");
    for i in &report.indexes {
        let filter = i
            .filter
            .as_ref()
            .map(|w| format!(" where {w}"))
            .unwrap_or_default();
        println!(
            "  {} by ({}){filter}: {}",
            i.source,
            i.key.join(", "),
            i.columns.join(", ")
        );
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let spec = leakless::spec::load(&args.spec, &[])?;
    let explanation = leakless::check::explain(&spec);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("feature set: {}", explanation.feature_set_hash);
    for c in &explanation.columns {
        println!("{} ({}): {}", c.name, c.ty, c.definition);
    }
    Ok(ExitCode::SUCCESS)
}
