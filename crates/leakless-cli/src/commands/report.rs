//! `leakless report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Writes a self-contained HTML report of a dataset (rows and label rates
/// per partition, where every input row went, checks, drift, a histogram
/// per column, the spec and the inputs) and prints its drift flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset (a folder leakless wrote)
    dataset: PathBuf,
    /// Compare with this dataset instead of the latest partition with the
    /// ones before it
    #[arg(long, value_name = "DATASET")]
    baseline: Option<PathBuf>,
    /// Where to write the HTML page
    #[arg(long, value_name = "FILE", default_value = "report.html")]
    html: PathBuf,
    /// Print the report (drift per column) as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// Exit 0; 1 when a column is flagged for drift or a check of the build
/// failed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (report, html) = leakless::quality::report::build(&args.dataset, args.baseline.as_deref())
        .with_context(|| format!("reporting on `{}`", args.dataset.display()))?;
    std::fs::write(&args.html, html)
        .with_context(|| format!("writing `{}`", args.html.display()))?;
    eprintln!(
        "wrote `{}`: {} rows in {} partitions; drift of {} against {}",
        args.html.display(),
        report.rows_written,
        report.partitions,
        report.drift.current,
        report.drift.reference
    );
    for c in report.drift.columns.iter().filter(|c| !c.flags.is_empty()) {
        eprintln!(
            "  {}: {} (PSI {}, null rate {:.4} -> {:.4})",
            c.column,
            c.flags.join(", "),
            c.psi.map_or("-".to_owned(), |p| format!("{p:.4}")),
            c.null_rate.0,
            c.null_rate.1
        );
    }
    if !report.drift.not_in_reference.is_empty() {
        eprintln!(
            "  not compared, not in {}: {}",
            report.drift.reference,
            report.drift.not_in_reference.join(", ")
        );
    }
    if report.failed_checks > 0 {
        eprintln!("  {} failed check(s) in the build", report.failed_checks);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(
        match report.flagged.is_empty() && report.failed_checks == 0 {
            true => ExitCode::SUCCESS,
            false => ExitCode::from(1),
        },
    )
}
