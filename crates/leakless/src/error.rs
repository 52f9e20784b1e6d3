//! The library's one error type.
//!
//! Every variant carries the context a user needs to find the problem: a path,
//! a column, a line, the offending value. Messages are lowercase with no
//! trailing period; the binary adds `error:` and any `hint:`.

use std::path::PathBuf;

use std::sync::Arc;

use datafusion::error::DataFusionError;

/// Where a bad value sits: a line of a CSV file or a row of a Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// 1-based physical line number of a CSV file (the header is line 1).
    Line(u64),
    /// 1-based row number of a Parquet file.
    Row(u64),
}

/// An event of a label source more than the margin after the spine's last
/// time, while the label's watermark is inferred from that source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAfterSpine {
    pub label: String,
    pub source_name: String,
    pub path: PathBuf,
    pub location: Location,
    /// RFC 3339.
    pub time: String,
    pub spine_last: String,
    /// The margin, as a duration (`7d`).
    pub margin: String,
}

impl std::fmt::Display for EventAfterSpine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "label `{}`: its watermark would be the latest event of source `{}`, at {} (`{}`, {}), \
             more than {} after the spine's last time {}; with it every row would count as \
             mature and recent rows would get label 0 for events that have not arrived yet",
            self.label,
            self.source_name,
            self.time,
            self.path.display(),
            self.location,
            self.margin,
            self.spine_last
        )
    }
}

impl Location {
    /// The line or row number.
    pub fn number(&self) -> u64 {
        match self {
            Location::Line(n) | Location::Row(n) => *n,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A row that cannot be ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub path: PathBuf,
    pub location: Location,
    /// The column at fault, when one is.
    pub column: Option<String>,
    /// The offending text, when there is one (shortened to 200 bytes).
    pub value: Option<String>,
    /// What is wrong, e.g. "not a valid int64".
    pub reason: String,
    /// The whole row as read: a CSV record's line(s), a Parquet row's
    /// declared columns as `name=value` (shortened to 64 KiB).
    pub raw: Option<String>,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display().to_string();
        let value = self.value.as_deref();
        describe_bad_row(
            f,
            &path,
            Some(&self.location),
            self.column.as_deref(),
            &self.reason,
            value,
        )
    }
}

/// A bad row in words: `` `FILE` line N, column `C`: REASON: "VALUE" ``.
pub(crate) fn describe_bad_row(
    f: &mut std::fmt::Formatter<'_>,
    path: &str,
    location: Option<&Location>,
    column: Option<&str>,
    reason: &str,
    value: Option<&str>,
) -> std::fmt::Result {
    write!(f, "`{path}`")?;
    if let Some(location) = location {
        write!(f, " {location}")?;
    }
    if let Some(column) = column {
        write!(f, ", column `{column}`")?;
    }
    write!(f, ": {reason}")?;
    if let Some(value) = value {
        write!(f, ": {value:?}")?;
    }
    Ok(())
}

/// Why a data-quality gate stopped a build, told in full: what failed,
/// with counts and the first examples and their places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityFailure {
    /// One line per failed gate.
    pub failed: Vec<String>,
    /// What was found (counts per reason, examples), line by line.
    pub details: Vec<String>,
}

impl std::fmt::Display for QualityFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data-quality gate failed: {}", self.failed.join("; "))?;
        for line in &self.details {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// `text` cut to at most 64 KiB (at a character boundary), marked when cut.
pub(crate) fn shorten_raw(text: &str) -> String {
    const MAX: usize = 64 << 10;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &text[..cut], text.len())
}

/// Everything that can go wrong in leakless.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A row of an input file is malformed (strict mode).
    #[error("bad input row: {0}")]
    BadRow(Box<BadRow>),

    /// A data-quality gate failed: too many bad rows, or a `[checks]`
    /// bound not met. Nothing was published.
    #[error("{0}")]
    Quality(Box<QualityFailure>),

    /// The spec file is not valid: every mistake found, each with its place.
    #[error("{0}")]
    Spec(Box<crate::spec::SpecErrors>),

    /// An input file lacks a column the spec declares.
    #[error(
        "`{path}` has no column `{column}`, declared in source `{source_name}` (it has: {found})"
    )]
    MissingColumn {
        source_name: String,
        path: PathBuf,
        column: String,
        found: String,
    },

    /// A declared column's name appears more than once in a file's header
    /// (or schema): which one holds it is ambiguous.
    #[error(
        "`{path}` has column `{column}`, declared in source `{source_name}`, {times} times (at positions {positions}): which one to read is ambiguous"
    )]
    AmbiguousColumn {
        source_name: String,
        path: PathBuf,
        column: String,
        times: usize,
        positions: String,
    },

    /// An input column has a type that cannot be read as the one required.
    #[error("`{path}` column `{column}` is {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },

    /// An input path holds no file leakless can read.
    #[error(
        "no input files for source `{source_name}` at `{path}` (looked for {})",
        crate::ingest::EXTENSIONS
    )]
    NoInputFiles { source_name: String, path: PathBuf },

    /// A file cannot be read as the format its extension names.
    #[error("`{path}` is not a readable Parquet file: {reason}")]
    UnreadableFile { path: PathBuf, reason: String },

    /// A file's extension names no format leakless reads.
    #[error(
        "`{path}` is not a file leakless reads ({})",
        crate::ingest::EXTENSIONS
    )]
    UnknownFormat { path: PathBuf },

    /// A folder or file of an input is reached twice (through symlinks):
    /// `first` is where it was reached first, `None` for a loop.
    #[error("`{path}` {}", match first { None => "is a symlink loop (a folder inside itself)".to_owned(), Some(first) => format!("is `{}` again (through a symlink or a hard link); its rows would be read twice", first.display()) })]
    InputTwice {
        path: PathBuf,
        first: Option<PathBuf>,
    },

    /// A dimension has two rows for one key (snapshot) or for one key and
    /// `valid_from` (versioned).
    #[error("source `{source_name}`: {key} appears more than once{}", if *.versioned { "" } else { " (a dimension without valid_from has one row per key)" })]
    DuplicateKey {
        source_name: String,
        key: String,
        versioned: bool,
    },

    /// A label's watermark would be inferred from an event far after the
    /// spine's last time.
    #[error("{0}")]
    EventAfterSpine(Box<EventAfterSpine>),

    /// A label's watermark cannot be inferred because its source is empty.
    #[error("cannot infer the watermark of label `{label}`: source `{source_name}` has no rows")]
    NoWatermark { label: String, source_name: String },

    /// The output folder exists and may not be replaced.
    /// The output folder exists and may not be replaced: `why` is `None`
    /// for a leakless dataset (replaced with `--overwrite`), else the
    /// reason it is not one.
    #[error("`{path}` already exists{}", match why { None => String::new(), Some(why) => format!(" and is not a leakless dataset: {why}") })]
    OutputExists { path: PathBuf, why: Option<String> },

    /// The output folder holds a leakless dataset of the other format (a
    /// Parquet dataset where a Delta table is to be written, or the
    /// reverse).
    #[error("`{path}` is a leakless {found}, not a {wanted}")]
    OtherFormat {
        path: PathBuf,
        found: &'static str,
        wanted: &'static str,
    },

    /// Another run published to the same object-storage dataset while
    /// this one ran.
    #[error(
        "`{path}` was published by another run while this one ran: nothing was published (run again to build over it)"
    )]
    PublishedMeanwhile { path: PathBuf },

    /// Another run holds the destination's lock.
    #[error("`{path}` is being written by another run ({holder}; lock `{lock}`)")]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },

    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),

    /// Reading or writing a file failed.
    #[error("{action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing Parquet failed.
    #[error("writing `{path}`")]
    Parquet {
        path: PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },

    /// The query engine failed.
    #[error("query engine: {0}")]
    Engine(Box<DataFusionError>),

    /// A task of a cluster build failed: its error, as the task told it
    /// (file, line, column and value included).
    #[error("{0}")]
    Task(String),
}

/// `Result` with leakless's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<DataFusionError> for Error {
    /// Recovers our own errors that travelled through DataFusion streams.
    fn from(e: DataFusionError) -> Self {
        match find_ours(&e) {
            Some(ours) => ours.duplicate(),
            None => Error::Engine(Box::new(e)),
        }
    }
}

/// Our error inside DataFusion's wrappers, if there is one.
fn find_ours(e: &DataFusionError) -> Option<&Error> {
    match e {
        DataFusionError::External(inner) => inner
            .downcast_ref::<Error>()
            .or_else(|| inner.downcast_ref::<DataFusionError>().and_then(find_ours)),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_ours(inner)
        }
        DataFusionError::Shared(inner) => find_ours(inner),
        DataFusionError::Collection(all) => all.iter().find_map(find_ours),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(inner) => inner
                .downcast_ref::<Error>()
                .or_else(|| inner.downcast_ref::<DataFusionError>().and_then(find_ours)),
            _ => None,
        },
        _ => None,
    }
}

impl Error {
    /// A copy of an error seen through a shared reference; sources that
    /// cannot be cloned keep their message.
    fn duplicate(&self) -> Error {
        match self {
            Error::BadRow(row) => Error::BadRow(row.clone()),
            Error::Quality(e) => Error::Quality(e.clone()),
            Error::Spec(e) => Error::Spec(e.clone()),
            Error::MissingColumn {
                source_name,
                path,
                column,
                found,
            } => Error::MissingColumn {
                source_name: source_name.clone(),
                path: path.clone(),
                column: column.clone(),
                found: found.clone(),
            },
            Error::AmbiguousColumn {
                source_name,
                path,
                column,
                times,
                positions,
            } => Error::AmbiguousColumn {
                source_name: source_name.clone(),
                path: path.clone(),
                column: column.clone(),
                times: *times,
                positions: positions.clone(),
            },
            Error::ColumnType {
                path,
                column,
                found,
                expected,
            } => Error::ColumnType {
                path: path.clone(),
                column: column.clone(),
                found: found.clone(),
                expected: expected.clone(),
            },
            Error::NoInputFiles { source_name, path } => Error::NoInputFiles {
                source_name: source_name.clone(),
                path: path.clone(),
            },
            Error::UnknownFormat { path } => Error::UnknownFormat { path: path.clone() },
            Error::InputTwice { path, first } => Error::InputTwice {
                path: path.clone(),
                first: first.clone(),
            },
            Error::UnreadableFile { path, reason } => Error::UnreadableFile {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::DuplicateKey {
                source_name,
                key,
                versioned,
            } => Error::DuplicateKey {
                source_name: source_name.clone(),
                key: key.clone(),
                versioned: *versioned,
            },
            Error::EventAfterSpine(e) => Error::EventAfterSpine(e.clone()),
            Error::NoWatermark { label, source_name } => Error::NoWatermark {
                label: label.clone(),
                source_name: source_name.clone(),
            },
            Error::OutputExists { path, why } => Error::OutputExists {
                path: path.clone(),
                why: why.clone(),
            },
            Error::OtherFormat {
                path,
                found,
                wanted,
            } => Error::OtherFormat {
                path: path.clone(),
                found,
                wanted,
            },
            Error::PublishedMeanwhile { path } => Error::PublishedMeanwhile { path: path.clone() },
            Error::Locked { path, lock, holder } => Error::Locked {
                path: path.clone(),
                lock: lock.clone(),
                holder: holder.clone(),
            },
            Error::Invalid(message) => Error::Invalid(message.clone()),
            Error::Io {
                action,
                path,
                source,
            } => Error::Io {
                action,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Parquet { path, source } => Error::Parquet {
                path: path.clone(),
                source: datafusion::parquet::errors::ParquetError::General(source.to_string()),
            },
            Error::Engine(e) => Error::Engine(Box::new(DataFusionError::Execution(e.to_string()))),
            Error::Task(message) => Error::Task(message.clone()),
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// A value computed once and shared by every partition, its failure
/// included: a partition that asks after a failed setup gets the same
/// error instead of running the setup again.
pub(crate) type Shared<T> = tokio::sync::OnceCell<std::result::Result<T, Arc<DataFusionError>>>;

/// The value of `cell`, computed by `init` by the first caller.
pub(crate) async fn shared<T, F>(
    cell: &Shared<T>,
    init: impl FnOnce() -> F,
) -> datafusion::error::Result<T>
where
    T: Clone,
    F: std::future::Future<Output = datafusion::error::Result<T>>,
{
    let value = cell
        .get_or_init(|| async { init().await.map_err(Arc::new) })
        .await;
    // The callers that waited were woken by the one that computed the
    // value, on its thread: the scheduler keeps a task woken that way in a
    // slot no other thread takes from, so it would wait until the caller
    // that computed it next waits. Every caller yields once, and the
    // partitions go on on every thread at once.
    tokio::task::yield_now().await;
    match value {
        Ok(value) => Ok(value.clone()),
        Err(e) => Err(DataFusionError::Shared(e.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A partition that waited for a shared value goes on on another
    /// thread while the one that computed it keeps its own thread busy (as
    /// the first partition does, sorting its first bucket, once the spine
    /// is bucketed).
    #[test]
    fn a_waiter_goes_on_while_the_caller_that_computed_the_value_is_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let went_on = runtime.block_on(async {
            let cell: Arc<Shared<u32>> = Arc::new(Shared::new());
            let (computing, waiting, waiter_done) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let computer = tokio::spawn({
                let (cell, computing, waiting) = (cell.clone(), computing.clone(), waiting.clone());
                let waiter_done = waiter_done.clone();
                async move {
                    shared(&cell, || async {
                        computing.store(true, Ordering::SeqCst);
                        while !waiting.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        // The waiter parks on the cell meanwhile.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
                    .unwrap();
                    // Busy, never waiting, until the waiter has its value.
                    let started = Instant::now();
                    while !waiter_done.load(Ordering::SeqCst) {
                        if started.elapsed() > Duration::from_secs(5) {
                            return false;
                        }
                        std::hint::spin_loop();
                    }
                    true
                }
            });
            while !computing.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let waiter = tokio::spawn(async move {
                waiting.store(true, Ordering::SeqCst);
                let value = shared(&cell, || async { Ok(0) }).await.unwrap();
                waiter_done.store(true, Ordering::SeqCst);
                value
            });
            let went_on = computer.await.unwrap();
            assert_eq!(waiter.await.unwrap(), 7);
            went_on
        });
        assert!(
            went_on,
            "the waiter waited for the computing caller to wait"
        );
    }
}
