//! The `leakless` command: parses arguments, runs a library job, prints and
//! exits. Exit codes: 0 success, 1 a data-quality gate failed, 2 usage, input
//! or internal error.

use std::process::ExitCode;

/// Large allocations (the indexes) on transparent huge pages.
#[global_allocator]
static ALLOCATOR: leakless::alloc::HugePages = leakless::alloc::HugePages;

fn main() -> ExitCode {
    leakless_cli::main_with(std::env::args_os())
}
