//! The `leakless` command line: its commands and how a run ends.

use std::process::ExitCode;

use crate::commands;
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
    /// Recompute a sample of any dataset's rows from the raw sources and
    /// diagnose leakage (exit 1 when a column leaks or differs).
    Audit(commands::audit::Args),
    /// Write an HTML report of a dataset with its drift (against a
    /// baseline, or its latest partition against the ones before).
    Report(commands::report::Args),
    /// Generate a marketplace, build its training dataset and show the result.
    Demo(commands::demo::Args),
    /// Fuzz the readers and the spec parser (bench/fuzz.sh).
    #[cfg(feature = "fuzz")]
    #[command(hide = true)]
    Fuzz(commands::fuzz::Args),
}

/// The `leakless` command on `args` (the program's name first): parses
/// them (printing help or a usage error), runs the command, prints its
/// error; the exit code.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => crate::report_error(&err),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::limit_malloc_arenas();
    crate::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Build(args) => runtime.block_on(commands::build::run(args)),
        Command::Check(args) => commands::check::check(args),
        Command::Explain(args) => commands::check::explain(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Demo(args) => runtime.block_on(commands::demo::run(args)),
        Command::Report(args) => commands::report::run(args),
        Command::Audit(args) => runtime.block_on(commands::audit::run(args)),
        #[cfg(feature = "fuzz")]
        Command::Fuzz(args) => commands::fuzz::run_all(args),
    }
}
