//! `leakless audit`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::build::parse_overrides;

/// Recomputes a sample of any dataset's rows (leakless, Spark, a notebook)
/// from the raw sources with the spec's definitions, and diagnoses the
/// leakage that explains what differs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset: a Parquet file or a folder of them
    dataset: PathBuf,
    /// The spec whose definitions the dataset claims
    #[arg(long, value_name = "SPEC")]
    spec: PathBuf,
    /// Replace a source's path (repeatable): NAME=PATH
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<String>,
    /// Rows recomputed (every row when the dataset has fewer)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    sample: usize,
    /// Seed of the sample
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The dataset's name of one of our columns (repeatable): NAME=THEIRS
    #[arg(long = "column", value_name = "NAME=THEIRS")]
    columns: Vec<String>,
    /// Time up to which label sources are complete (default: the spec's
    /// watermark, else each label source's last event)
    #[arg(long, value_name = "TIMESTAMP")]
    watermark: Option<String>,
    /// Print the audit as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// Exit 0 when clean, 1 when a column leaks or mismatches or a row should
/// not be there.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = parse_overrides(&args.sources)?;
    let spec = leakless::spec::load(&args.spec, &overrides)?;
    let columns = args
        .columns
        .iter()
        .map(|c| match c.split_once('=') {
            Some((ours, theirs)) if !ours.is_empty() && !theirs.is_empty() => {
                Ok((ours.to_owned(), theirs.to_owned()))
            }
            _ => bail!("--column {c:?} is not NAME=THEIRS"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, (ours, theirs)) in columns.iter().enumerate() {
        if let Some((other, _)) = columns[..i].iter().find(|(o, t)| o == ours || t == theirs) {
            bail!("--column {ours}={theirs}: `{other}` is mapped already, or to the same column");
        }
    }
    let watermark = match &args.watermark {
        None => None,
        Some(text) => match leakless::time::parse_timestamp_micros(text.as_bytes()) {
            Some(w) => Some(w),
            None => bail!("--watermark {text:?} is not an RFC 3339 timestamp"),
        },
    };
    if args.sample == 0 {
        bail!("--sample must be at least 1");
    }
    let options = leakless::quality::audit::AuditOptions {
        sample: args.sample,
        seed: args.seed,
        columns,
        watermark,
    };
    let audit = leakless::quality::audit::audit(&spec, &args.dataset, &options)
        .await
        .with_context(|| format!("auditing `{}`", args.dataset.display()))?;
    eprintln!(
        "audited `{}`: {} of {} rows recomputed",
        audit.dataset, audit.sampled, audit.rows
    );
    for (n, what) in [
        (
            audit.immature,
            "should have been held back (label window open at the watermark)",
        ),
        (audit.filtered, "are dropped by the spine's `where`"),
        (audit.not_in_spine, "are no spine row"),
    ] {
        if n > 0 {
            eprintln!("  {n} rows {what}");
        }
    }
    for example in &audit.row_examples {
        eprintln!("    e.g. {example}");
    }
    for c in &audit.columns {
        let status = match c.mismatching {
            0 => "ok".to_owned(),
            n => format!("{n} of {} differ", c.checked),
        };
        eprintln!("  {}: {status}", c.column);
        if let Some(diagnosis) = &c.diagnosis {
            eprintln!("    {diagnosis} ({} of {})", c.explained, c.mismatching);
        }
        for m in &c.examples {
            eprintln!(
                "    e.g. {}: theirs {}, expected {}",
                m.row, m.theirs, m.expected
            );
        }
    }
    eprintln!("  {}", if audit.clean { "clean" } else { "NOT clean" });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&audit)?);
    }
    Ok(match audit.clean {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}
