//! Input files -> typed Arrow batches in UTC.
//!
//! Each input table (impressions, clicks, listings) is a file or a folder of
//! CSV and Parquet files. Every file becomes one DataFusion partition (a
//! [`PartitionStream`]) that yields batches in the table's canonical schema:
//! the required columns only, in a fixed order, ids as `Int64`, prices as
//! `Float64`, timestamps as `Timestamp(Microsecond, "UTC")`.
//!
//! Invariants:
//! - nothing after `ingest` sees a string timestamp, a local time or a
//!   timestamp unit other than microseconds;
//! - a batch that leaves `ingest` has no null in a required column: every bad
//!   row goes to the [`BadRowPolicy`] with its file, line (or Parquet row),
//!   column and value, before any of its values reach a batch;
//! - files are visited in sorted path order, so partition `i` is always the
//!   same file;
//! - `ingest` knows nothing of features, labels or output.

pub(crate) mod columns;
mod csv;
mod parquet;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{BadRow, Error, Result};

/// The three event tables leakless reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Impressions,
    Clicks,
    Listings,
}

/// The type a required column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Float64,
    Utf8,
    /// UTC microseconds.
    Timestamp,
}

/// One required column of an input table.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// Whether an empty value is allowed (it becomes null).
    pub nullable: bool,
}

const fn required(name: &'static str, kind: Kind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        nullable: false,
    }
}

const fn optional(name: &'static str, kind: Kind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        nullable: true,
    }
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Impressions, Table::Clicks, Table::Listings];

    pub fn name(self) -> &'static str {
        match self {
            Table::Impressions => "impressions",
            Table::Clicks => "clicks",
            Table::Listings => "listings",
        }
    }

    /// The columns read from this table, in canonical order.
    pub fn columns(self) -> &'static [ColumnSpec] {
        const IMPRESSIONS: &[ColumnSpec] = &[
            required("impression_id", Kind::Int64),
            required("user_id", Kind::Int64),
            required("listing_id", Kind::Int64),
            required("impression_ts", Kind::Timestamp),
        ];
        const CLICKS: &[ColumnSpec] = &[
            required("listing_id", Kind::Int64),
            required("click_ts", Kind::Timestamp),
        ];
        const LISTINGS: &[ColumnSpec] = &[
            required("listing_id", Kind::Int64),
            optional("category", Kind::Utf8),
            optional("price", Kind::Float64),
            required("created_ts", Kind::Timestamp),
        ];
        match self {
            Table::Impressions => IMPRESSIONS,
            Table::Clicks => CLICKS,
            Table::Listings => LISTINGS,
        }
    }

    /// The canonical Arrow schema of this table's batches.
    pub fn schema(self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .iter()
                .map(|c| Field::new(c.name, c.kind.data_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Utf8 => DataType::Utf8,
            Kind::Timestamp => utc_micros(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Int64 => "int64",
            Kind::Float64 => "float64",
            Kind::Utf8 => "string",
            Kind::Timestamp => "timestamp",
        }
    }
}

/// `Timestamp(Microsecond, "UTC")`, the only timestamp type past ingest.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The format of an input file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "parquet" | "parq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// What to do with a row that cannot be ingested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BadRowPolicy {
    /// Stop the run with [`Error::BadRow`].
    #[default]
    Fail,
}

impl BadRowPolicy {
    /// Routes one bad row; `Ok` means the row is dropped and reading goes on.
    pub(crate) fn route(self, row: BadRow) -> Result<()> {
        match self {
            BadRowPolicy::Fail => Err(Error::BadRow(Box::new(row))),
        }
    }
}

/// One file of an input table.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: Format,
    pub bytes: u64,
}

/// What was read from one file; filled in as the file is read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileStats {
    pub path: String,
    pub format: Format,
    pub bytes: u64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub rows: u64,
}

/// Finds the input files of a table: `path` itself, or every `.csv` and
/// `.parquet` file below the folder `path` (hive `key=value/` folders
/// included), in sorted order. Names starting with `.` or `_` are skipped,
/// as Spark and pyarrow do.
pub fn discover(table: Table, path: &Path) -> Result<Vec<InputFile>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(path, &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            return Err(Error::NoInputFiles {
                table: table.name(),
                path: path.to_owned(),
            });
        }
    } else {
        let format = Format::of(path).ok_or_else(|| Error::UnknownFormat {
            path: path.to_owned(),
        })?;
        files.push(InputFile {
            path: path.to_owned(),
            format,
            bytes: meta.len(),
        });
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<InputFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
        if meta.is_dir() {
            walk(&path, files)?;
        } else if let Some(format) = Format::of(&path) {
            files.push(InputFile {
                path,
                format,
                bytes: meta.len(),
            });
        }
    }
    Ok(())
}

/// An input table as a DataFusion source: one partition per file.
#[derive(Debug, Clone)]
pub struct Source {
    pub table: Table,
    pub files: Vec<InputFile>,
    pub policy: BadRowPolicy,
    stats: Arc<Mutex<Vec<Option<FileStats>>>>,
}

impl Source {
    pub fn new(table: Table, files: Vec<InputFile>, policy: BadRowPolicy) -> Self {
        let stats = Arc::new(Mutex::new(vec![None; files.len()]));
        Source {
            table,
            files,
            policy,
            stats,
        }
    }

    /// Discovers the files at `path` and makes a source of them.
    pub fn open(table: Table, path: &Path, policy: BadRowPolicy) -> Result<Self> {
        Ok(Source::new(table, discover(table, path)?, policy))
    }

    /// A DataFusion table whose partition `i` streams file `i`.
    pub fn table_provider(&self) -> Result<StreamingTable> {
        let partitions = (0..self.files.len())
            .map(|index| {
                Arc::new(FilePartition {
                    source: self.clone(),
                    index,
                    schema: self.table.schema(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(StreamingTable::try_new(self.table.schema(), partitions)?)
    }

    /// Stats of every file read to the end so far, in file order.
    pub fn stats(&self) -> Vec<FileStats> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.iter().flatten().cloned().collect()
    }

    /// Reads file `index` to the end, handing each batch to `emit`, and
    /// records its stats. `emit` returning `false` stops early (no stats).
    pub fn read_file(
        &self,
        index: usize,
        batch_rows: usize,
        emit: &mut dyn FnMut(datafusion::arrow::record_batch::RecordBatch) -> bool,
    ) -> Result<()> {
        let file = &self.files[index];
        let reader = FileReader {
            file,
            table: self.table,
            schema: self.table.schema(),
            batch_rows: batch_rows.max(1),
            policy: self.policy,
        };
        // The hash is computed beside the parse, on its own thread, so that
        // it does not lengthen the read (bench/RESULTS.md: about 0.25 s of
        // a 400 MB file).
        let (done, sha256) = std::thread::scope(|scope| {
            let hasher = scope.spawn(|| hash_file(&file.path));
            let done = match file.format {
                Format::Csv => csv::read(&reader, emit),
                Format::Parquet => parquet::read(&reader, emit),
            };
            let sha256 = hasher.join().unwrap_or_else(|_| {
                Err(Error::Invalid(format!(
                    "hashing `{}` failed",
                    file.path.display()
                )))
            });
            (done, sha256)
        });
        if let Some(rows) = done? {
            let sha256 = sha256?;
            let stats = FileStats {
                path: file.path.display().to_string(),
                format: file.format,
                bytes: file.bytes,
                sha256,
                rows,
            };
            self.stats.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(stats);
        }
        Ok(())
    }
}

/// What a format reader needs to know.
struct FileReader<'a> {
    file: &'a InputFile,
    table: Table,
    schema: SchemaRef,
    batch_rows: usize,
    policy: BadRowPolicy,
}

impl FileReader<'_> {
    /// Where each required column is among the file's `names`, in
    /// canonical order; a missing one is an error naming file and column.
    fn locate_columns(&self, names: &[String]) -> Result<Vec<(usize, ColumnSpec)>> {
        self.table
            .columns()
            .iter()
            .map(|spec| {
                names
                    .iter()
                    .position(|n| n == spec.name)
                    .map(|i| (i, *spec))
                    .ok_or_else(|| self.missing_column(spec.name, names))
            })
            .collect()
    }

    fn missing_column(&self, column: &str, found: &[String]) -> Error {
        Error::MissingColumn {
            path: self.file.path.clone(),
            column: column.to_owned(),
            found: found.join(", "),
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a whole file, as hex.
fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n =
            std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[derive(Debug)]
struct FilePartition {
    source: Source,
    index: usize,
    schema: SchemaRef,
}

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let source = self.source.clone();
        let index = self.index;
        let batch_rows = ctx.session_config().batch_size();
        builder.spawn_blocking(move || {
            let mut emit = |batch| tx.blocking_send(Ok(batch)).is_ok();
            source.read_file(index, batch_rows, &mut emit)?;
            Ok(())
        });
        builder.build()
    }
}
