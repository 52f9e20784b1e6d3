//! Input files -> typed Arrow batches in UTC.
//!
//! Each input table (impressions, clicks, listings) is a file or a folder of
//! CSV and Parquet files. Every file becomes one DataFusion partition (of a
//! [`scan::ScanExec`]) that yields batches in the table's canonical schema:
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
pub mod quarantine;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BadRow, Error, Location, Result};
use crate::spec::{ColumnDef, ColumnType, CsvOptions, SourceDef, ValueType};
use crate::time::format_rfc3339;

/// One column read from a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    /// Whether an empty value is allowed (it becomes null).
    pub nullable: bool,
}

/// What ingest reads from a source's files: its declared columns, in
/// declared order, and how its CSV files are written.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The source's name, for messages.
    pub name: String,
    pub columns: Vec<ColumnSpec>,
    pub csv: CsvOptions,
    /// The batches' schema: every column nullable, timestamps UTC µs.
    pub schema: SchemaRef,
    /// The position of the time column (an event source's time, a
    /// versioned dimension's `valid_from`), whose range each file's
    /// statistics keep.
    pub time: Option<usize>,
}

impl Layout {
    pub fn of(def: &SourceDef) -> Layout {
        let columns: Vec<ColumnSpec> = def
            .columns
            .iter()
            .flatten()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                ty: c.ty,
                nullable: !c.required,
            })
            .collect();
        let mut layout = Layout::from_parts(def.name.clone(), columns, def.csv.clone());
        layout.time = def.time_column().and_then(|t| layout.index_of(t));
        layout
    }

    /// The layout of `columns` (the batches' schema follows from them).
    pub fn from_parts(name: String, columns: Vec<ColumnSpec>, csv: CsvOptions) -> Layout {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            columns
                .iter()
                .map(|c| {
                    datafusion::arrow::datatypes::Field::new(
                        &c.name,
                        arrow_type(c.ty.value_type()),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        ));
        Layout {
            name,
            columns,
            csv,
            schema,
            time: None,
        }
    }

    /// The position of column `name` in the batches.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// The Arrow type of a value type.
pub fn arrow_type(ty: ValueType) -> DataType {
    match ty {
        ValueType::Int64 => DataType::Int64,
        ValueType::Int8 => DataType::Int8,
        ValueType::Float64 => DataType::Float64,
        ValueType::String => DataType::Utf8,
        ValueType::Bool => DataType::Boolean,
        ValueType::Timestamp => utc_micros(),
    }
}

/// `Timestamp(Microsecond, "UTC")`, the only timestamp type past ingest.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The format of an input file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Parquet,
}

/// How a CSV file is compressed, from its extension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn is_none(&self) -> bool {
        *self == Compression::None
    }
}

/// The extensions leakless reads, for messages.
pub const EXTENSIONS: &str = ".csv, .csv.gz, .csv.zst, .parquet and .parq";

impl Format {
    /// The format and compression `path`'s extension names (any case).
    pub fn of(path: &Path) -> Option<(Format, Compression)> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        [
            (".csv", Format::Csv, Compression::None),
            (".csv.gz", Format::Csv, Compression::Gzip),
            (".csv.zst", Format::Csv, Compression::Zstd),
            (".parquet", Format::Parquet, Compression::None),
            (".parq", Format::Parquet, Compression::None),
        ]
        .into_iter()
        .find(|(extension, _, _)| name.ends_with(extension))
        .map(|(_, format, compression)| (format, compression))
    }
}

/// What to do with a row that cannot be ingested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Stop the run with [`Error::BadRow`].
    #[default]
    Fail,
    /// Set the row aside with its place and reason (a file's bad rows go
    /// to [`Source::with_quarantine`]'s folder when the file is read) and
    /// read on without it.
    Quarantine,
}

/// How the indexes take a source's rows, for counting them: a row is
/// taken when every `columns` value is non-null and `filter` is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseRule {
    /// Positions in the source's batches (key parts, time).
    pub columns: Vec<usize>,
    /// A `where` over the source's declared columns.
    pub filter: Option<String>,
}

/// What became of a file's good rows on their way into the indexes, by
/// [`UseRule`]s (see `docs/semantics.md`, "Reconciliation").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowUses {
    /// Taken by at least one index.
    pub indexed: u64,
    /// Taken by none: some index's `where` passes but a key part or the
    /// time is null.
    pub no_key_or_time: u64,
    /// Taken by none: the `where` of every index is false or null.
    pub filtered_by_where: u64,
}

impl RowUses {
    pub fn add(&mut self, other: RowUses) {
        self.indexed += other.indexed;
        self.no_key_or_time += other.no_key_or_time;
        self.filtered_by_where += other.filtered_by_where;
    }

    pub fn total(&self) -> u64 {
        self.indexed + self.no_key_or_time + self.filtered_by_where
    }
}

/// [`UseRule`]s compiled against a source's schema.
struct Uses {
    rules: Vec<(Vec<usize>, Option<crate::temporal::FilterExpr>)>,
}

impl Uses {
    fn compile(rules: &[UseRule], schema: &SchemaRef) -> Result<Self> {
        let rules = rules
            .iter()
            .map(|rule| {
                let filter = (rule.filter.as_deref())
                    .map(|sql| crate::temporal::FilterExpr::for_schema(sql, schema.clone()))
                    .transpose()?;
                Ok((rule.columns.clone(), filter))
            })
            .collect::<Result<_>>()?;
        Ok(Uses { rules })
    }

    /// Counts the rows of `batch` by what the rules make of them.
    fn count(&self, batch: &RecordBatch) -> Result<RowUses> {
        use datafusion::arrow::compute::{and, is_not_null, or};
        let n = batch.num_rows() as u64;
        let (mut taken, mut passed): (Option<BooleanArray>, Option<BooleanArray>) = (None, None);
        let either = |a: Option<BooleanArray>, b: &BooleanArray| -> Result<BooleanArray> {
            Ok(match a {
                None => b.clone(),
                Some(a) => or(&a, b).map_err(DataFusionError::from)?,
            })
        };
        for (columns, filter) in &self.rules {
            let pass = match filter {
                None => BooleanArray::from(vec![true; batch.num_rows()]),
                Some(filter) => filter.evaluate(batch)?,
            };
            let mut take = pass.clone();
            for &c in columns {
                let column = batch.column(c);
                if column.null_count() > 0 {
                    let valid = is_not_null(column).map_err(DataFusionError::from)?;
                    take = and(&take, &valid).map_err(DataFusionError::from)?;
                }
            }
            passed = Some(either(passed, &pass)?);
            taken = Some(either(taken, &take)?);
        }
        let count = |mask: Option<BooleanArray>| mask.map_or(0, |m| m.true_count() as u64);
        let (taken, passed) = (count(taken), count(passed));
        Ok(RowUses {
            indexed: taken,
            no_key_or_time: passed - taken,
            filtered_by_where: n - passed,
        })
    }
}

/// One file of an input table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputFile {
    /// Where the file is read: the file itself, or for a file on object
    /// storage its local copy (empty until [`Source::fetch`]).
    pub path: PathBuf,
    /// The file as the user knows it (its path or `s3://` URL): in
    /// messages, the manifest and the sort order of files.
    pub name: PathBuf,
    pub format: Format,
    pub compression: Compression,
    /// The file's size on disk (compressed).
    pub bytes: u64,
}

/// What was read from one file; filled in as the file is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStats {
    pub path: String,
    pub format: Format,
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    pub bytes: u64,
    /// Hex SHA-256 of the file's bytes (as stored, compressed).
    pub sha256: String,
    /// Rows read and kept (bad rows set aside are not among them).
    pub rows: u64,
    /// Bad rows set aside (`--bad-rows quarantine`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quarantined: u64,
    /// What the indexes made of the kept rows (a source the operator
    /// indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<RowUses>,
    /// The earliest and latest time of the kept rows (an event source's
    /// time, a versioned dimension's `valid_from`; RFC 3339), for an
    /// incremental build to find the partitions a changed file reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<[String; 2]>,
    /// A local file's modification time (ns since the epoch) when read: an
    /// incremental build takes a file whose size and modification time are
    /// unchanged as unchanged without hashing it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<i64>,
}

impl FileStats {
    /// [`FileStats::times`] in µs.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let [a, b] = self.times.as_ref()?;
        Some((
            crate::time::parse_timestamp_micros(a.as_bytes())?,
            crate::time::parse_timestamp_micros(b.as_bytes())?,
        ))
    }
}

/// A local file's modification time in ns since the epoch (`None` for a
/// file on object storage, read from a copy, or a clock before 1970).
pub fn modified_ns(file: &InputFile) -> Option<i64> {
    if file.path != file.name {
        return None;
    }
    let modified = std::fs::metadata(&file.path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Finds the input files of a table: `path` itself, or every file below
/// the folder `path` (hive `key=value/` folders included), or every file a
/// glob matches, in sorted order. Names starting with `.` or `_` are
/// skipped, as Spark and pyarrow do; so are those `ignore` matches (a
/// pattern without `/` matches a name at any depth, one with `/` the path
/// below the folder). Any other file that is not of a format leakless reads
/// is an error: a silently partial input is worse than none. Symlinks are
/// followed; a loop, or a folder or file reached twice, is an error.
pub fn discover(source: &str, path: &Path, ignore: &[String]) -> Result<Vec<InputFile>> {
    // (where it is read, its name, its size); a remote file is read from
    // a copy made by `Source::fetch`.
    let found: Vec<(PathBuf, PathBuf, u64)> = match crate::storage::Remote::parse(path)? {
        Some(remote) => list_remote(&remote, ignore)?
            .into_iter()
            .map(|(name, bytes)| (PathBuf::new(), name, bytes))
            .collect(),
        None => discover_local(path, ignore)?
            .into_iter()
            .map(|(path, bytes, _)| (path.clone(), path, bytes))
            .collect(),
    };
    let mut files = Vec::with_capacity(found.len());
    for (path, name, bytes) in found {
        let (format, compression) =
            Format::of(&name).ok_or_else(|| Error::UnknownFormat { path: name.clone() })?;
        files.push(InputFile {
            path,
            name,
            format,
            compression,
            bytes,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if files.is_empty() {
        return Err(Error::NoInputFiles {
            source_name: source.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(files)
}

/// The local files of [`discover`].
fn discover_local(path: &Path, ignore: &[String]) -> Result<Vec<Found>> {
    // A path that exists is itself, even with `[` or `*` in its name.
    Ok(if is_glob(path) && !path.exists() {
        discover_glob(path, ignore)?
    } else {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            // Nothing there: no input files, as on object storage (the
            // caller names the source and the path).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        if meta.is_dir() {
            let mut found = Vec::new();
            Walk::new(path, ignore, true).walk(path, &mut found)?;
            found
        } else {
            vec![(path.to_owned(), meta.len(), (0, 0))]
        }
    })
}

/// [`discover`] on object storage: the object `remote` names, or every
/// object below it, or every object a glob in its key matches, with the
/// same rules for names starting with `.` or `_` and `ignore`; as (URL,
/// size). The files are listed, not fetched.
fn list_remote(remote: &crate::storage::Remote, ignore: &[String]) -> Result<Vec<(PathBuf, u64)>> {
    let url = remote.url.as_str();
    let (root, pattern) = if is_glob(Path::new(url)) {
        let key = remote.key.as_ref();
        let cut = key.find(['*', '?', '[']).unwrap_or(key.len());
        let literal = key[..cut].rfind('/').map_or("", |i| &key[..i]);
        let literal = object_store::path::Path::parse(literal)
            .map_err(|e| Error::Invalid(format!("`{url}`: {e}")))?;
        (remote.at(literal), Some(url))
    } else {
        (remote.clone(), None)
    };
    let listed = match pattern {
        Some(_) => crate::storage::block_on(root.list_below(&root.key))?,
        None => crate::storage::block_on(root.list())?,
    };
    let mut files = Vec::new();
    for (key, bytes) in listed {
        let name = root.url_of(&key);
        if pattern.is_some_and(|p| !glob_match(p.as_bytes(), name.as_bytes())) {
            continue;
        }
        // The path below the root; empty when the root is the object itself,
        // which, like a local file named whole, is read whatever its name.
        let below: Vec<String> = key
            .prefix_match(&root.key)
            .map(|parts| parts.map(|p| p.as_ref().to_owned()).collect())
            .unwrap_or_default();
        // As in a local folder: a folder on the way or the file itself
        // starting with `.` or `_`, or matched by `ignore`, leaves it out.
        let left_out = (0..below.len()).any(|i| {
            let name = &below[i];
            name.starts_with('.')
                || name.starts_with('_')
                || ignored(ignore, &below[..=i].join("/"), name)
        });
        if left_out {
            continue;
        }
        files.push((PathBuf::from(name), bytes));
    }
    Ok(files)
}

/// Whether an `ignore` pattern leaves out a file: a pattern without `/`
/// matches its name at any depth, one with `/` its path below the folder.
fn ignored(ignore: &[String], below: &str, name: &str) -> bool {
    ignore.iter().any(|pattern| match pattern.contains('/') {
        true => glob_match(pattern.as_bytes(), below.as_bytes()),
        false => glob_match(pattern.as_bytes(), name.as_bytes()),
    })
}

fn is_glob(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?', '['])
}

/// The files matching a glob (`*` and `?` within one path component, `**`
/// across folders). Below the glob's root, symlink loops are not followed
/// and folders may be reached twice; a file matched twice is an error.
fn discover_glob(pattern: &Path, ignore: &[String]) -> Result<Vec<Found>> {
    let text = pattern.to_string_lossy().into_owned();
    let cut = text.find(['*', '?', '[']).unwrap_or(text.len());
    let root = match text[..cut].rfind('/') {
        Some(i) => PathBuf::from(&text[..=i]),
        None => PathBuf::from("."),
    };
    let mut all = Vec::new();
    Walk::new(&root, ignore, false).walk(&root, &mut all)?;
    let under_cwd = !text[..cut].contains('/');
    let matched: Vec<Found> = all
        .into_iter()
        .filter(|(path, _, _)| {
            let candidate = path.to_string_lossy();
            let candidate = match under_cwd {
                true => candidate.trim_start_matches("./"),
                false => &candidate,
            };
            glob_match(text.as_bytes(), candidate.as_bytes())
        })
        .collect();
    let mut seen = hashbrown::HashMap::new();
    for (path, _, id) in &matched {
        if let Some(first) = seen.insert(*id, path.clone()) {
            return Err(Error::InputTwice {
                path: path.clone(),
                first: Some(first),
            });
        }
    }
    Ok(matched)
}

/// A file found: its path, size, and (device, inode).
type Found = (PathBuf, u64, (u64, u64));

/// Whether `name` matches `pattern`: `*` any run of characters but `/`,
/// `**` any run including `/`, `?` one character but `/`.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            // `**/` matches whole folders (none included); `**` any run;
            // `*` any run within a path component.
            let (deep, whole_folders, rest) = match rest.split_first() {
                Some((b'*', r)) => match r.strip_prefix(b"/") {
                    Some(r) => (true, true, r),
                    None => (true, false, r),
                },
                _ => (false, false, rest),
            };
            (0..=name.len())
                .take_while(|&i| deep || i == 0 || name[i - 1] != b'/')
                .filter(|&i| !whole_folders || i == 0 || name[i - 1] == b'/')
                .any(|i| glob_match(rest, &name[i..]))
        }
        Some((b'?', rest)) => {
            name.first().is_some_and(|&c| c != b'/') && glob_match(rest, &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// A walk of a folder tree that follows symlinks; `strict`, it refuses
/// loops and anything reached twice, else it skips loops.
struct Walk<'a> {
    root: &'a Path,
    ignore: &'a [String],
    strict: bool,
    /// (device, inode) of the folders on the way down, then of every
    /// folder and file seen.
    ancestors: Vec<(u64, u64)>,
    seen: hashbrown::HashMap<(u64, u64), PathBuf>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Path, ignore: &'a [String], strict: bool) -> Self {
        Walk {
            root,
            ignore,
            strict,
            ancestors: Vec::new(),
            seen: hashbrown::HashMap::new(),
        }
    }

    fn ignored(&self, path: &Path, name: &str) -> bool {
        let below = path
            .strip_prefix(self.root)
            .unwrap_or(path)
            .to_string_lossy();
        ignored(self.ignore, below.trim_start_matches("./"), name)
    }

    fn walk(&mut self, dir: &Path, files: &mut Vec<Found>) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| Error::io("reading", dir, e))?;
        let id = (meta.dev(), meta.ino());
        if self.ancestors.contains(&id) {
            return match self.strict {
                true => Err(Error::InputTwice {
                    path: dir.to_owned(),
                    first: None,
                }),
                false => Ok(()),
            };
        }
        if let Some(first) = self.seen.insert(id, dir.to_owned())
            && self.strict
        {
            return Err(Error::InputTwice {
                path: dir.to_owned(),
                first: Some(first),
            });
        }
        self.ancestors.push(id);
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
            entries.push(entry.map_err(|e| Error::io("listing", dir, e))?);
        }
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') || self.ignored(&path, &name) {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
            if meta.is_dir() {
                self.walk(&path, files)?;
            } else {
                let id = (meta.dev(), meta.ino());
                if let Some(first) = self.seen.insert(id, path.clone())
                    && self.strict
                {
                    return Err(Error::InputTwice {
                        path,
                        first: Some(first),
                    });
                }
                files.push((path, meta.len(), id));
            }
        }
        self.ancestors.pop();
        Ok(())
    }
}

/// An input source as a DataFusion source: one partition per file.
///
/// Cheap to clone (each partition's read takes a clone): the files are
/// shared, so that a source of many small files does not copy its list
/// once per file.
#[derive(Debug, Clone)]
pub struct Source {
    pub layout: Arc<Layout>,
    pub files: Arc<Vec<InputFile>>,
    pub policy: BadRowPolicy,
    /// Where each file's bad rows go under quarantine (see
    /// [`quarantine::Part`]).
    pub quarantine: Option<PathBuf>,
    /// How the indexes take this source's rows (none: not counted).
    pub uses: Vec<UseRule>,
    stats: Arc<Mutex<Vec<Option<FileStats>>>>,
}

impl Source {
    pub fn new(layout: Layout, files: Vec<InputFile>, policy: BadRowPolicy) -> Self {
        let stats = Arc::new(Mutex::new(vec![None; files.len()]));
        Source {
            layout: Arc::new(layout),
            files: Arc::new(files),
            policy,
            quarantine: None,
            uses: Vec::new(),
            stats,
        }
    }

    /// The same source over only the files at `keep` (positions, in
    /// order), with no statistics yet.
    pub fn subset(&self, keep: &[usize]) -> Source {
        let files: Vec<InputFile> = keep.iter().map(|&i| self.files[i].clone()).collect();
        Source {
            layout: self.layout.clone(),
            stats: Arc::new(Mutex::new(vec![None; files.len()])),
            files: Arc::new(files),
            policy: self.policy,
            quarantine: self.quarantine.clone(),
            uses: self.uses.clone(),
        }
    }

    /// Under [`BadRowPolicy::Quarantine`], each file's bad rows are written
    /// into `dir` when the file has been read.
    pub fn with_quarantine(mut self, dir: PathBuf) -> Self {
        self.quarantine = Some(dir);
        self
    }

    /// Counts each file's rows by what `rules` (one per index over this
    /// source) take of them, into [`FileStats::uses`].
    pub fn with_uses(mut self, rules: Vec<UseRule>) -> Self {
        self.uses = rules;
        self
    }

    /// Discovers the files of `def` and makes a source of them.
    pub fn open(def: &SourceDef, policy: BadRowPolicy) -> Result<Self> {
        Ok(Source::new(
            Layout::of(def),
            discover(&def.name, &def.path, &def.ignore)?,
            policy,
        ))
    }

    /// Copies the files on object storage to `scratch/<n>/<name>`, `n`
    /// the file's position, so that they are read as local files (a no-op
    /// for a local source).
    pub fn fetch(&mut self, scratch: &Path) -> Result<()> {
        self.copy_remote(scratch, false)
    }

    /// [`Source::fetch`] of only what reading the files' columns needs (a
    /// CSV file's head, a Parquet file's footer), into sparse local files
    /// of the objects' sizes: for `check` and schema inference, which read
    /// no rows.
    pub fn fetch_schemas(&mut self, scratch: &Path) -> Result<()> {
        self.copy_remote(scratch, true)
    }

    fn copy_remote(&mut self, scratch: &Path, schemas_only: bool) -> Result<()> {
        use crate::storage::Part;
        let Some(first) = self.files.iter().find(|f| f.path.as_os_str().is_empty()) else {
            return Ok(());
        };
        let remote = crate::storage::Remote::parse(&first.name)?
            .ok_or_else(|| Error::Invalid(format!("`{}` is not fetched", first.name.display())))?;
        let mut objects = Vec::new();
        for (n, file) in Arc::make_mut(&mut self.files).iter_mut().enumerate() {
            if !file.path.as_os_str().is_empty() {
                continue;
            }
            let url = file.name.to_string_lossy();
            let key = remote.key_of(&url).ok_or_else(|| {
                Error::Invalid(format!("`{url}` is not in the bucket of `{}`", remote.url))
            })?;
            let base = url.rsplit('/').next().unwrap_or("file");
            file.path = scratch
                .join(&self.layout.name)
                .join(n.to_string())
                .join(base);
            let part = match (schemas_only, file.format) {
                (false, _) => Part::Whole,
                (true, Format::Csv) => Part::Head,
                (true, Format::Parquet) => Part::ParquetFooter,
            };
            objects.push((key, file.path.clone(), file.bytes, part));
        }
        crate::storage::block_on(remote.download(objects))
    }

    pub fn name(&self) -> &str {
        &self.layout.name
    }

    /// A scan whose partition `i` streams file `i`, in file order.
    pub fn exec(&self) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(scan::ScanExec::new(self.clone())))
    }

    /// Rows kept so far, over the files read to the end.
    pub fn rows(&self) -> u64 {
        self.stats().iter().map(|f| f.rows).sum()
    }

    /// Checks every file's header (CSV) or schema (Parquet) against the
    /// declared columns, reading no rows.
    pub fn check_columns(&self) -> Result<()> {
        for index in 0..self.files.len() {
            let (file, reader) = (&self.files[index], self.reader(index, 1));
            match file.format {
                Format::Csv => {
                    let header = csv::header(&reader)?;
                    reader.locate_columns(&header)?;
                }
                Format::Parquet => parquet::check(&reader)?,
            }
        }
        Ok(())
    }

    /// Where row `row` (from 0) of file `index` is: its line in a CSV
    /// file (read again to find it), its row in a Parquet file.
    pub fn locate(&self, index: usize, row: u64) -> Result<Location> {
        let reader = self.reader(index, 1);
        match self.files[index].format {
            Format::Csv => csv::line_of_row(&reader, row).map(Location::Line),
            Format::Parquet => Ok(Location::Row(row + 1)),
        }
    }

    /// CSV file `index` read under `policy` with the fast path of runs and
    /// record by record only (`csv::read_as_text`), in batches of
    /// `batch_rows`.
    #[cfg(any(test, feature = "fuzz"))]
    pub(crate) fn csv_both_ways(
        &self,
        index: usize,
        batch_rows: usize,
        policy: BadRowPolicy,
    ) -> [String; 2] {
        [true, false].map(|fast| {
            let reader = FileReader {
                policy,
                ..self.reader(index, batch_rows)
            };
            csv::read_as_text(&reader, fast)
        })
    }

    /// What the format readers need to read file `index`.
    fn reader(&self, index: usize, batch_rows: usize) -> FileReader<'_> {
        FileReader {
            file: &self.files[index],
            layout: &self.layout,
            batch_rows: batch_rows.max(1),
            policy: self.policy,
            bad: Mutex::new(Vec::new()),
        }
    }

    /// Stats of every file read to the end so far, in file order.
    pub fn stats(&self) -> Vec<FileStats> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.iter().flatten().cloned().collect()
    }

    /// The statistics of file `index`, once read to the end here.
    pub fn file_stats(&self, index: usize) -> Option<FileStats> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.get(index).cloned().flatten()
    }

    /// Reads file `index` to the end, handing each batch to `emit`, and
    /// records its stats. `emit` returning `false` stops early (no stats).
    pub fn read_file(
        &self,
        index: usize,
        batch_rows: usize,
        emit: &mut dyn FnMut(datafusion::arrow::record_batch::RecordBatch) -> bool,
    ) -> Result<()> {
        let (file, reader) = (&self.files[index], self.reader(index, batch_rows));
        if self.policy == BadRowPolicy::Quarantine && self.quarantine.is_none() {
            return Err(Error::Invalid(format!(
                "source `{}`: quarantine without a folder for the bad rows",
                self.name()
            )));
        }
        let uses = (!self.uses.is_empty())
            .then(|| Uses::compile(&self.uses, &self.layout.schema))
            .transpose()?;
        let mut counted = RowUses::default();
        let mut count_error = None;
        let mut range: Option<(i64, i64)> = None;
        let time = self.layout.time;
        let modified = modified_ns(file);
        let mut emit = |batch: RecordBatch| -> bool {
            if let Some(time) = time {
                let times = batch
                    .column(time)
                    .as_primitive::<TimestampMicrosecondType>();
                if let (Some(lo), Some(hi)) = (
                    datafusion::arrow::compute::min(times),
                    datafusion::arrow::compute::max(times),
                ) {
                    range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
            }
            if let Some(uses) = &uses {
                match uses.count(&batch) {
                    Ok(n) => counted.add(n),
                    Err(e) => {
                        count_error = Some(e);
                        return false;
                    }
                }
            }
            emit(batch)
        };
        // The hash is computed beside the parse, on its own thread, so that
        // it does not lengthen the read (bench/RESULTS.md: about 0.25 s of
        // a 400 MB file); a CSV read in blocks hashes its blocks itself.
        let hashed_by_read = file.format == Format::Csv && csv::blocks_for(file).is_some();
        let (done, sha256) = std::thread::scope(|scope| {
            let hasher =
                (!hashed_by_read).then(|| scope.spawn(|| hash_file(&file.path, &file.name)));
            let done = match file.format {
                Format::Csv => csv::read(&reader, &mut emit),
                Format::Parquet => parquet::read(&reader, &mut emit).map(|rows| (rows, None)),
            };
            let sha256 = match hasher {
                Some(hasher) => hasher.join().unwrap_or_else(|_| {
                    Err(Error::Invalid(format!(
                        "hashing `{}` failed",
                        file.name.display()
                    )))
                }),
                None => Ok(done
                    .as_ref()
                    .ok()
                    .and_then(|(_, hash)| hash.clone())
                    .unwrap_or_default()),
            };
            (done.map(|(rows, _)| rows), sha256)
        });
        if let Some(e) = count_error {
            return Err(e);
        }
        if let Some(rows) = done? {
            let sha256 = sha256?;
            let mut bad = reader.bad.into_inner().unwrap_or_else(|e| e.into_inner());
            // Blocks of a parallel read set rows aside in any order.
            bad.sort_by_key(|row| row.location.number());
            if let (Some(dir), false) = (&self.quarantine, bad.is_empty()) {
                quarantine::Part {
                    source: self.name().to_owned(),
                    file: index,
                    rows: bad.iter().map(quarantine::BadRowRecord::from).collect(),
                }
                .write(dir)?;
            }
            let stats = FileStats {
                path: file.name.display().to_string(),
                format: file.format,
                compression: file.compression,
                bytes: file.bytes,
                sha256,
                rows,
                quarantined: bad.len() as u64,
                uses: uses.is_some().then_some(counted),
                times: range.map(|(a, b)| [format_rfc3339(a), format_rfc3339(b)]),
                modified_ns: modified,
            };
            self.stats.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(stats);
        }
        Ok(())
    }
}

/// What a format reader needs to know.
struct FileReader<'a> {
    file: &'a InputFile,
    layout: &'a Layout,
    batch_rows: usize,
    policy: BadRowPolicy,
    /// Bad rows set aside so far (several blocks of a parallel read add
    /// theirs at once).
    bad: Mutex<Vec<BadRow>>,
}

impl<'a> FileReader<'a> {
    /// Routes one bad row by the policy; `Ok` means the row is dropped
    /// and reading goes on.
    fn route(&self, row: BadRow) -> Result<()> {
        match self.policy {
            BadRowPolicy::Fail => Err(Error::BadRow(Box::new(row))),
            BadRowPolicy::Quarantine => {
                self.bad.lock().unwrap_or_else(|e| e.into_inner()).push(row);
                Ok(())
            }
        }
    }

    /// Where each required column is among the file's `names`, in
    /// canonical order; a missing one is an error naming file and column.
    fn locate_columns(&self, names: &[String]) -> Result<Vec<(usize, &'a ColumnSpec)>> {
        self.layout
            .columns
            .iter()
            .map(|spec| {
                let mut at = (names.iter().enumerate()).filter(|(_, n)| **n == spec.name);
                let (i, _) = at
                    .next()
                    .ok_or_else(|| self.missing_column(&spec.name, names))?;
                let others: Vec<usize> = at.map(|(j, _)| j + 1).collect();
                if !others.is_empty() {
                    let positions: Vec<String> = std::iter::once(i + 1)
                        .chain(others)
                        .map(|p| p.to_string())
                        .collect();
                    return Err(Error::AmbiguousColumn {
                        source_name: self.layout.name.clone(),
                        path: self.file.name.clone(),
                        column: spec.name.clone(),
                        times: positions.len(),
                        positions: positions.join(", "),
                    });
                }
                Ok((i, spec))
            })
            .collect()
    }

    fn missing_column(&self, column: &str, found: &[String]) -> Error {
        Error::MissingColumn {
            source_name: self.layout.name.clone(),
            path: self.file.name.clone(),
            column: column.to_owned(),
            found: found.join(", "),
        }
    }
}

/// Bytes as lower-case hexadecimal.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a whole file (read at `path`, named `name` in messages), as
/// hex.
fn hash_file(path: &Path, name: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("reading", name, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n =
            std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io("reading", name, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The columns of a source that declares none, from the schema of its first
/// Parquet file: integers as int64, floats as float64, strings, booleans and
/// timestamps; columns of other types are left out.
pub fn infer_columns(def: &SourceDef) -> std::result::Result<Vec<ColumnDef>, String> {
    let files = discover(&def.name, &def.path, &def.ignore).map_err(|e| e.to_string())?;
    let Some(first) = files.first() else {
        return Err("no input files".into());
    };
    if first.format != Format::Parquet {
        return Err(format!(
            "missing `columns`: `{}` is CSV, and only Parquet sources may omit them (name = \"type\")",
            first.name.display()
        ));
    }
    if first.path.as_os_str().is_empty() {
        // On object storage: its footer, copied into a sparse local file.
        let scratch = crate::storage::Scratch::new("schema").map_err(|e| e.to_string())?;
        let mut source = Source::new(Layout::of(def), vec![first.clone()], BadRowPolicy::Fail);
        source
            .fetch_schemas(scratch.dir())
            .map_err(|e| e.to_string())?;
        return parquet::infer_columns(&source.files[0].path, &first.name)
            .map_err(|e| e.to_string());
    }
    parquet::infer_columns(&first.path, &first.name).map_err(|e| e.to_string())
}

/// What the readers' tests share: a source over one file, and batches as
/// rows of text.
#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod testing {
    use std::path::Path;

    #[cfg(test)]
    use datafusion::arrow::record_batch::RecordBatch;

    use super::{Compression, Format, InputFile, Layout};

    /// The layout of an event source `e` over `path` with `columns` (TOML
    /// inline table text) and time `ts`, and the file itself.
    pub fn source(path: &Path, format: Format, columns: &str) -> (Layout, InputFile) {
        let spec = crate::spec::parse_spec(
            &format!(
                "version = 1\n[sources.e]\npath = {:?}\ntime = \"ts\"\ncolumns = {columns}\n\
                 [spine]\nsource = \"e\"\ncolumns = [\"id\"]\n",
                path.display().to_string()
            ),
            Path::new("spec.toml"),
            &[],
            None,
        )
        .unwrap();
        let layout = Layout::of(spec.source("e").unwrap());
        let file = InputFile {
            path: path.to_owned(),
            name: path.to_owned(),
            format,
            compression: Format::of(path).map_or(Compression::None, |(_, c)| c),
            bytes: std::fs::metadata(path).unwrap().len(),
        };
        (layout, file)
    }

    /// Appends each row of `batch` to `rows` as its cells joined by `|`.
    #[cfg(test)]
    pub fn push_rows(batch: &RecordBatch, rows: &mut Vec<String>) {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, row).unwrap())
                .collect();
            rows.push(cells.join("|"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_within_components_and_whole_folders() {
        let matches = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(matches("logs/*.csv", "logs/a.csv"));
        assert!(!matches("logs/*.csv", "logs/x/a.csv"));
        assert!(matches("logs/**/events.csv", "logs/events.csv"));
        assert!(matches("logs/**/events.csv", "logs/2026/10/events.csv"));
        // `**/` stands for whole folders, never part of a name.
        assert!(!matches("logs/**/events.csv", "logs/old_events.csv"));
        assert!(matches("logs/**.csv", "logs/x/a.csv"));
        assert!(matches("d/part-?.parquet", "d/part-1.parquet"));
        assert!(!matches("d/part-?.parquet", "d/part-12.parquet"));
    }
}
