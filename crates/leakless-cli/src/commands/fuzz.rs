//! `leakless fuzz` (hidden; built with the `fuzz` feature, run by
//! `bench/fuzz.sh`): feeds mutated and random inputs to the CSV reader, the
//! Parquet reader and the spec parser, and reports per target the count,
//! the rate, the slowest case and every crash or refusal without a place.

use std::process::ExitCode;

use leakless::fuzz::{Target, run};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cases per target
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// The first case's seed (case i has seed SEED + i)
    #[arg(long, default_value_t = 1 << 32)]
    seed: u64,
    /// Only this target (default: all three)
    #[arg(long, value_parser = ["csv", "parquet", "spec"])]
    only: Option<String>,
}

pub fn run_all(args: Args) -> anyhow::Result<ExitCode> {
    // Decoder panics the readers catch (and any the fuzzer catches) are
    // counted, not printed a million times.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = 0;
    let targets = [Target::Csv, Target::Parquet, Target::Spec];
    let chosen = targets.into_iter().filter(|t| {
        (args.only.as_deref()).is_none_or(|only| format!("{t:?}").eq_ignore_ascii_case(only))
    });
    for target in chosen {
        let r = run(target, args.seed, args.cases);
        println!(
            "{target:?}: {} cases in {:.1} s ({:.0} per second), slowest {:.1} ms, {} crashes or refusals without a place",
            r.cases,
            r.seconds,
            r.cases as f64 / r.seconds,
            r.slowest.as_secs_f64() * 1e3,
            r.failures.len()
        );
        for (seed, what) in r.failures.iter().take(10) {
            println!("  seed {seed}: {what}");
        }
        failed += r.failures.len();
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
