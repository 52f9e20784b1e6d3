//! The `leakless` command: parses arguments, runs a library job, prints and
//! exits. Exit codes: 0 success, 1 a data-quality gate failed, 2 usage, input
//! or internal error.

mod commands;
mod reporter;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "leakless",
    version,
    about = "Point-in-time correct training datasets from event logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a training dataset from a spec: one row per mature spine row,
    /// features from the past, labels from the future, as partitioned Parquet.
    Build(commands::build::Args),
    /// Validate a spec against the inputs' headers without computing anything.
    Check(commands::check::CheckArgs),
    /// Print every output column's exact definition and the feature-set hash.
    Explain(commands::check::ExplainArgs),
    /// Generate a realistic, seeded marketplace: impressions, clicks and
    /// listings in the schemas `build` reads.
    Generate(commands::generate::Args),
    /// Generate a marketplace, build its training dataset and show the result.
    Demo(commands::demo::Args),
    /// Fuzz the readers and the spec parser (bench/fuzz.sh).
    #[cfg(feature = "fuzz")]
    #[command(hide = true)]
    Fuzz(commands::fuzz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Build(args) => runtime.block_on(commands::build::run(args)),
        Command::Check(args) => commands::check::check(args),
        Command::Explain(args) => commands::check::explain(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Demo(args) => runtime.block_on(commands::demo::run(args)),
        #[cfg(feature = "fuzz")]
        Command::Fuzz(args) => commands::fuzz::run_all(args),
    }
}

/// What to do next, for the errors a user can fix.
fn hint(err: &anyhow::Error) -> Option<String> {
    use leakless::Error;
    match err.downcast_ref::<Error>()? {
        Error::BadRow(_) => {
            Some("fix or remove the row; leakless reads nothing until every row is valid".into())
        }
        Error::OutputExists { why: None, .. } => Some("pass --overwrite to replace it".into()),
        Error::OutputExists { why: Some(_), .. } => {
            Some("choose another --out; leakless only replaces datasets it wrote".into())
        }
        Error::Locked { .. } => Some(
            "wait for that run, or pass --wait to start when it is done; a dead run's lock is taken over by itself".into(),
        ),
        Error::NoWatermark { .. } => {
            Some("pass --watermark with the time up to which the label sources are complete".into())
        }
        Error::EventAfterSpine(_) => Some(
            "pass --watermark with the time up to which the label source is complete, fix the event's time, or raise --watermark-margin if it is real".into(),
        ),
        Error::MissingColumn { .. } => Some(
            "fix the spec's `columns` or the file; `leakless check --spec S` checks every header"
                .into(),
        ),
        Error::UnknownFormat { .. } => Some(
            "remove it from the input folder, or leave such files out with --ignore GLOB (e.g. --ignore '*.json')".into(),
        ),
        Error::Spec(_) => Some("the spec reference is in docs/semantics.md".into()),
        Error::Io { path, .. } if leakless::storage::is_remote(path) => Some(
            "object storage reads its credentials, region and endpoint from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT_URL for an S3-compatible server".into(),
        ),
        _ => None,
    }
}
