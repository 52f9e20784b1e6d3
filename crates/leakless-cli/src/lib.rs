//! The `leakless` command's parts, shared with `leakless-cluster`: the
//! commands' flags and runs, the progress reporter, and how an error is
//! told to the user. Exit codes: 0 success, 1 a data-quality gate failed,
//! 2 usage, input or internal error.

mod cli;
pub mod commands;
pub mod reporter;

pub use cli::main_with;

/// Raises this process's soft limit of open files to its hard limit: a
/// build with `--shards N` holds N files open per shuffle, several
/// shuffles at once (the soft limit is often 1,024, the hard one far
/// above). Call it before any file opens.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit for both calls; a refused
        // setrlimit changes nothing.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// Caps glibc's malloc arenas at the number of cores (at least 2), unless
/// `MALLOC_ARENA_MAX` says otherwise. glibc gives threads that allocate at
/// once arenas of their own, up to 8 per core, and memory freed in one
/// stays mapped until it is reused there: with DataFusion's threads a
/// build with `--shards 32` peaked at 2.1 GB, 1.2 GB with two arenas,
/// in the same time (bench/RICH2.md). Call it before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes any value; a refused one changes nothing.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

use std::process::ExitCode;

/// Prints `err` with its causes and a hint on stderr; the exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("caused by: {cause}");
    }
    if let Some(hint) = hint(err) {
        eprintln!("hint: {hint}");
    }
    match err.downcast_ref::<leakless::Error>() {
        Some(leakless::Error::Quality(_)) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// The number a process exits with for `code` (0 to 255).
pub fn exit_status(code: ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|&n| ExitCode::from(n) == code)
        .unwrap_or(2)
}

/// What to do next, for the errors a user can fix.
fn hint(err: &anyhow::Error) -> Option<String> {
    hint_for(err.downcast_ref::<leakless::Error>()?)
}

/// What to do next about `err`, when the user can fix it.
pub fn hint_for(err: &leakless::Error) -> Option<String> {
    use leakless::Error;
    match err {
        Error::BadRow(_) => Some(
            "fix or remove the row, or pass --bad-rows quarantine to set bad rows aside and go on"
                .into(),
        ),
        Error::Quality(_) => Some(
            "nothing was published: fix the inputs, or loosen the bound if the data is right (a source's max_bad_rows or --max-bad-rows, a [checks] entry); --publish-on-failed-checks publishes despite failed checks".into(),
        ),
        Error::OutputExists { why: None, .. } => Some("pass --overwrite to replace it".into()),
        Error::OtherFormat { found, .. } => Some(format!(
            "build it with --format {}, or write to another --out",
            if found.contains("Delta") { "delta" } else { "parquet" }
        )),
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
        Error::AmbiguousColumn { .. } => Some(
            "rename or remove the repeated column in the file, so that one column has the name"
                .into(),
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
