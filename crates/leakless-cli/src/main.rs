//! The `leakless` command: parses arguments, runs a library job, prints and
//! exits. Exit codes: 0 success, 1 a data-quality gate failed, 2 usage, input
//! or internal error.

use std::process::ExitCode;

fn main() -> ExitCode {
    leakless_cli::main_with(std::env::args_os())
}
