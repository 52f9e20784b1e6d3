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
    /// Build a training dataset: one row per mature impression, features from
    /// the past, the label from the next 24 h, as Parquet partitioned by date.
    Build(commands::build::Args),
    /// Generate a realistic, seeded marketplace: impressions, clicks and
    /// listings in the schemas `build` reads.
    Generate(commands::generate::Args),
    /// Generate a marketplace, build its training dataset and show the result.
    Demo(commands::demo::Args),
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
        Command::Generate(args) => commands::generate::run(args),
        Command::Demo(args) => runtime.block_on(commands::demo::run(args)),
    }
}

/// What to do next, for the errors a user can fix.
fn hint(err: &anyhow::Error) -> Option<String> {
    use leakless::Error;
    match err.downcast_ref::<Error>()? {
        Error::BadRow(_) => {
            Some("fix or remove the row; leakless reads nothing until every row is valid".into())
        }
        Error::OutputExists {
            is_dataset: true, ..
        } => Some("pass --overwrite to replace it".into()),
        Error::OutputExists {
            is_dataset: false, ..
        } => Some("choose another --out; leakless only replaces folders it wrote".into()),
        Error::NoWatermark => {
            Some("pass --watermark with the time up to which clicks are complete".into())
        }
        Error::MissingColumn { .. } => {
            Some("`leakless build --help` lists the columns each input needs".into())
        }
        _ => None,
    }
}
