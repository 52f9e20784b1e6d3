//! Deterministic, time-partitioned Parquet, committed by rename.
//!
//! Rows arrive bucket by bucket, each bucket whole and sorted by every
//! column (see [`crate::order`]), and each bucket is written as
//! `dt=YYYY-MM-DD/part-NNNNN.parquet` (`dt=YYYY-MM-DD/hour=HH/...`, or
//! `part-NNNNN.parquet` at the root) into a hidden temporary folder beside
//! the destination. The manifest is written last, then the folder is
//! renamed into place: a dataset exists exactly when its `_manifest.json`
//! does, and a failed run leaves the destination as it was.
//!
//! Invariants:
//! - the bytes written depend only on the batches of a bucket, which depend
//!   only on its rows (never on arrival order, thread count or the clock);
//! - one Parquet file is open per writer, whatever the number of buckets;
//! - `write` knows nothing of features or inputs: it gets batches and a
//!   time column.

pub mod commit;
pub mod delta;
pub mod exec;
pub mod manifest;
pub mod remote;

pub use commit::{Destination, Staging};
pub use remote::RemoteDestination;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Encoding;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::order::bucket_of;
use crate::quality::profile::{PartitionProfile, Profiler};
use crate::spec::{OutputFormat, Partitioning};
use crate::time::{MICROS_PER_DAY, utc_date};
use manifest::Manifest;

/// Where a build publishes: a local folder (locked, published by rename),
/// a prefix on object storage (published by a conditional put of the
/// manifest, see [`remote`]), or a Delta Lake table (one commit, see
/// [`delta`]).
#[derive(Debug)]
pub enum Output {
    Local(Destination),
    Remote(RemoteDestination),
    #[cfg(feature = "delta")]
    Delta(delta::DeltaDestination),
}

/// A run's local staging folder, removed when dropped.
#[derive(Debug)]
pub enum Staged {
    Local(Staging),
    Remote(crate::storage::Scratch),
}

impl Staged {
    pub fn dir(&self) -> &Path {
        match self {
            Staged::Local(s) => s.dir(),
            Staged::Remote(s) => s.dir(),
        }
    }
}

/// Removes what dead or cancelled runs left at `out`, as the next build
/// there would first: their staging folders, what they moved into a
/// Delta table without committing, a moved-aside dataset put back; for
/// object storage, their local scratch folders. Nothing while a live run
/// holds the destination (it cleans up after itself). For a caller that
/// stopped a build by dropping it, once every task of its runtime has
/// ended (a task stopped mid-write may create a file after the build's
/// own cleanup ran).
pub fn clean_up(out: &Path, format: OutputFormat) -> Result<()> {
    if crate::storage::Remote::parse(out)?.is_some() {
        crate::storage::Scratch::remove_dead();
        return Ok(());
    }
    match Output::acquire(out, format, true, false) {
        // Taken, cleaned and released; what the checks after the cleanup
        // say of the destination is the next build's business.
        Ok(_)
        | Err(Error::Locked { .. } | Error::OutputExists { .. } | Error::OtherFormat { .. }) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Output {
    /// Checks that `out` may be written as `format` (and, locally, takes
    /// its lock).
    pub fn acquire(
        out: &Path,
        format: OutputFormat,
        overwrite: bool,
        wait: bool,
    ) -> Result<Output> {
        let remote = crate::storage::Remote::parse(out)?;
        Ok(match (remote, format) {
            (Some(_), OutputFormat::Delta) => {
                return Err(Error::Invalid(
                    "a Delta table is written to a local or shared folder (object storage: write Parquet)"
                        .into(),
                ));
            }
            (Some(remote), OutputFormat::Parquet) => Output::Remote(RemoteDestination::acquire(
                remote,
                commit::run_id(),
                overwrite,
            )?),
            (None, OutputFormat::Parquet) => {
                Output::Local(Destination::acquire(out, overwrite, wait)?)
            }
            #[cfg(feature = "delta")]
            (None, OutputFormat::Delta) => {
                Output::Delta(delta::DeltaDestination::acquire(out, overwrite, wait)?)
            }
            #[cfg(not(feature = "delta"))]
            (None, OutputFormat::Delta) => {
                return Err(Error::Invalid(
                    "this leakless was built without Delta Lake output: build it with `--features delta` (README, \"Delta Lake\")"
                        .into(),
                ));
            }
        })
    }

    pub fn stage(&self) -> Result<Staged> {
        Ok(match self {
            Output::Local(d) => Staged::Local(d.stage()?),
            Output::Remote(d) => Staged::Remote(d.stage()?),
            #[cfg(feature = "delta")]
            Output::Delta(d) => Staged::Local(d.stage()?),
        })
    }

    /// The folder, relative to the dataset, its data is published under
    /// (`None`: the dataset's own folder).
    pub fn data(&self) -> Option<String> {
        match self {
            Output::Remote(d) => Some(d.data()),
            _ => None,
        }
    }

    /// What the data files' names carry after their number
    /// (`part-00000-TAG.parquet`): a Delta table's files are named per
    /// run, as they share the table's folders with older versions' files.
    pub fn file_tag(&self) -> Option<String> {
        match self {
            #[cfg(feature = "delta")]
            Output::Delta(d) => Some(d.run().to_owned()),
            _ => None,
        }
    }

    /// Whether the partitions an incremental build carries over are
    /// linked into the staging (a folder replaced whole), or left where
    /// they are (a Delta table, whose commit keeps their files).
    pub fn links_carried(&self) -> bool {
        match self {
            #[cfg(feature = "delta")]
            Output::Delta(_) => false,
            _ => true,
        }
    }

    /// Publishes the staged data and the manifest; `skip`: top-level
    /// folders of the staging that are not data; `schema`, `partitioning`:
    /// the output's, for a Delta table's metadata. Returns the Delta
    /// version committed, if any.
    pub fn publish(
        &self,
        staged: Staged,
        skip: &[&str],
        manifest: &Manifest,
        overwrite: bool,
        schema: &datafusion::arrow::datatypes::Schema,
        partitioning: Partitioning,
    ) -> Result<Option<u64>> {
        let _ = (schema, partitioning);
        for name in skip {
            let path = staged.dir().join(name);
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io("removing", &path, e))?;
            }
        }
        let json = manifest.to_json();
        match (self, staged) {
            (Output::Local(d), Staged::Local(s)) => d.publish(s, &json, overwrite).map(|()| None),
            (Output::Remote(d), staged) => d.publish(staged.dir(), skip, &json).map(|()| None),
            #[cfg(feature = "delta")]
            (Output::Delta(d), Staged::Local(s)) => {
                d.publish(s, manifest, schema, partitioning).map(Some)
            }
            (_, Staged::Remote(_)) => {
                unreachable!("a local output stages locally")
            }
        }
    }

    /// Folders of dead runs removed when the destination was taken.
    pub fn stale_removed(&self) -> usize {
        match self {
            Output::Local(d) => d.stale_removed(),
            Output::Remote(_) => 0,
            #[cfg(feature = "delta")]
            Output::Delta(d) => d.stale_removed(),
        }
    }
}

/// Rows in one Parquet file before the day moves on to the next part.
pub const ROWS_PER_FILE: usize = 4 << 20;
/// Rows in one Parquet row group.
pub const ROWS_PER_ROW_GROUP: usize = 1 << 20;
/// The zstd level of every compressed column chunk (the benchmark's
/// references use the same; int64 columns without a dictionary are not
/// compressed, see `open_file`).
pub const ZSTD_LEVEL: i32 = 1;

/// One file written.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FileWritten {
    /// Path relative to the dataset root, with `/` separators.
    pub path: String,
    pub rows: u64,
}

/// One partition folder written.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PartitionWritten {
    /// The folder relative to the dataset root (`dt=2026-10-01`, empty
    /// without partitioning).
    pub partition: String,
    pub rows: u64,
    pub files: Vec<FileWritten>,
    /// Per label, the rows where it is neither 0 nor null.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positive_labels: BTreeMap<String, u64>,
    /// Spine rows of the folder's time held back as immature.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_back: u64,
    /// Whether every label window of every spine time of the folder had
    /// closed at the watermark (filled in by the build).
    #[serde(default = "yes")]
    pub complete: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
}

impl PartitionWritten {
    /// A folder with nothing written yet.
    pub fn empty(partition: String) -> Self {
        PartitionWritten {
            partition,
            rows: 0,
            files: Vec::new(),
            positive_labels: BTreeMap::new(),
            held_back: 0,
            complete: true,
            partial: None,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

/// Writes one output partition's rows: batches arrive bucket by bucket,
/// each bucket whole and sorted ([`crate::order::BucketSortExec`]), and
/// each bucket becomes a folder of files of at most [`ROWS_PER_FILE`] rows.
/// One file is open at a time, whatever the number of buckets.
pub struct PartitionWriter {
    dir: PathBuf,
    schema: SchemaRef,
    time_column: usize,
    partitioning: Partitioning,
    delta_columns: Vec<String>,
    current: Option<OpenBucket>,
    written: Vec<PartitionWritten>,
    encode_seconds: f64,
    /// Profile each bucket, with these label positions (`None`: no profile).
    profile_labels: Option<Vec<usize>>,
    /// The label columns' positions and names, counted per folder.
    labels: Vec<(usize, String)>,
    profiles: Vec<PartitionProfile>,
    profile_seconds: f64,
    /// Written after each file's number ([`exec::WriteOptions::file_tag`]).
    file_tag: Option<String>,
}

struct OpenBucket {
    bucket: i64,
    partition: PartitionWritten,
    file: Option<OpenFile>,
    profile: Option<Profiler>,
}

/// What a [`PartitionWriter`] wrote.
pub struct Written {
    pub partitions: Vec<PartitionWritten>,
    /// One per partition folder written, when profiling.
    pub profiles: Vec<PartitionProfile>,
    /// CPU seconds encoding Parquet, and profiling.
    pub encode_seconds: f64,
    pub profile_seconds: f64,
}

impl PartitionWriter {
    /// Writes under `dir`; `delta_columns`: the leading sort columns that
    /// are sorted integers (delta-encoded, no dictionary).
    pub fn new(
        dir: &Path,
        schema: SchemaRef,
        time_column: usize,
        partitioning: Partitioning,
        delta_columns: Vec<String>,
    ) -> Self {
        PartitionWriter {
            dir: dir.to_owned(),
            schema,
            time_column,
            partitioning,
            delta_columns,
            current: None,
            written: Vec::new(),
            encode_seconds: 0.0,
            profile_labels: None,
            labels: Vec::new(),
            profiles: Vec::new(),
            profile_seconds: 0.0,
            file_tag: None,
        }
    }

    /// Names files `part-NNNNN-TAG.parquet`.
    pub fn with_file_tag(mut self, tag: Option<String>) -> Self {
        self.file_tag = tag;
        self
    }

    /// Counts each folder's positive rows of the label columns at
    /// `labels` ([`PartitionWritten::positive_labels`]).
    pub fn with_labels(mut self, labels: &[usize]) -> Self {
        self.labels = (labels.iter())
            .map(|&i| (i, self.schema.field(i).name().clone()))
            .collect();
        self
    }

    /// Profiles each partition folder as it is written
    /// ([`crate::quality::profile`]); `labels`: the label columns.
    pub fn with_profile(mut self, labels: Vec<usize>) -> Self {
        self.profile_labels = Some(labels);
        self
    }

    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let times = batch
            .column(self.time_column)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let bucket = bucket_of(self.partitioning, times[0]);
        if self.current.as_ref().is_none_or(|c| c.bucket != bucket) {
            self.close_bucket()?;
            // The staging folder is made by the build; a task that does
            // not find it (an executor that does not see the client's
            // folders) must fail, not write somewhere no one reads.
            if !self.dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "the staging folder `{}` is not there: every worker must see it at the same path",
                    self.dir.display()
                )));
            }
            let folder = folder_name(self.partitioning, bucket);
            let day_dir = self.dir.join(&folder);
            std::fs::create_dir_all(&day_dir).map_err(|e| Error::io("creating", &day_dir, e))?;
            self.current = Some(OpenBucket {
                bucket,
                partition: PartitionWritten::empty(folder),
                file: None,
                profile: (self.profile_labels.as_ref()).map(|l| Profiler::new(&self.schema, l)),
            });
        }
        if let Some(open) = self.current.as_mut() {
            for (i, name) in &self.labels {
                let positive = crate::quality::profile::positives(batch.column(*i));
                *open
                    .partition
                    .positive_labels
                    .entry(name.clone())
                    .or_default() += positive;
            }
        }
        let mut profiled = 0.0;
        if let Some(profile) = self.current.as_mut().and_then(|c| c.profile.as_mut()) {
            let profiling = std::time::Instant::now();
            profile.push(batch);
            profiled = profiling.elapsed().as_secs_f64();
            self.profile_seconds += profiled;
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let open = self.current.as_mut().expect("opened above");
            if open.file.is_none() {
                let number = open.partition.files.len();
                let name = match &self.file_tag {
                    Some(tag) => format!("part-{number:05}-{tag}.parquet"),
                    None => format!("part-{number:05}.parquet"),
                };
                let folder = &open.partition.partition;
                let path = self.dir.join(folder).join(&name);
                let first = batch.slice(offset, batch.num_rows() - offset);
                let partial = partial_path(&path);
                let writer = open_file(&partial, &self.schema, &self.delta_columns, &first)?;
                open.partition.files.push(FileWritten {
                    path: if folder.is_empty() {
                        name
                    } else {
                        format!("{folder}/{name}")
                    },
                    rows: 0,
                });
                open.file = Some(OpenFile {
                    path,
                    partial,
                    writer,
                    rows: 0,
                });
            }
            let file = open.file.as_mut().expect("opened above");
            let len = (ROWS_PER_FILE - file.rows as usize).min(batch.num_rows() - offset);
            file.writer
                .write(&batch.slice(offset, len))
                .map_err(|source| Error::Parquet {
                    path: file.path.clone(),
                    source,
                })?;
            file.rows += len as u64;
            let rows = file.rows;
            open.partition.rows += len as u64;
            open.partition.files.last_mut().expect("a file").rows += len as u64;
            offset += len;
            if rows as usize == ROWS_PER_FILE {
                close_file(open.file.take())?;
            }
        }
        self.encode_seconds += started.elapsed().as_secs_f64() - profiled;
        Ok(())
    }

    fn close_bucket(&mut self) -> Result<()> {
        if let Some(mut open) = self.current.take() {
            close_file(open.file.take())?;
            if let Some(profile) = open.profile.take() {
                let profiling = std::time::Instant::now();
                let folder = open.partition.partition.clone();
                self.profiles.push(profile.finish(folder));
                self.profile_seconds += profiling.elapsed().as_secs_f64();
            }
            self.written.push(open.partition);
        }
        Ok(())
    }

    /// Closes the last file: what was written.
    pub fn finish(mut self) -> Result<Written> {
        let started = std::time::Instant::now();
        self.close_bucket()?;
        Ok(Written {
            partitions: self.written,
            profiles: self.profiles,
            encode_seconds: self.encode_seconds + started.elapsed().as_secs_f64(),
            profile_seconds: self.profile_seconds,
        })
    }
}

/// Closes a file and gives it its name: a file is written under a name of
/// its own writer first, so that two attempts at one bucket (a cluster
/// task retried while the first still runs) never write into one file,
/// and a file under its final name is always whole.
fn close_file(file: Option<OpenFile>) -> Result<()> {
    if let Some(OpenFile {
        path,
        partial,
        writer,
        ..
    }) = file
    {
        let file = writer.into_inner().map_err(|source| Error::Parquet {
            path: path.clone(),
            source,
        })?;
        commit::start_writeback(&file);
        drop(file);
        std::fs::rename(&partial, &path).map_err(|e| Error::io("renaming", &partial, e))?;
    }
    Ok(())
}

/// A file being written: its final path, where it is written until
/// closed, and its rows so far.
struct OpenFile {
    path: PathBuf,
    partial: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

/// Writes `bytes` to `path` whole or not at all: under [`partial_path`]
/// first, then renamed (a retried task writes the same name again).
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let hidden = partial_path(path);
    std::fs::write(&hidden, bytes).map_err(|e| Error::io("writing", &hidden, e))?;
    std::fs::rename(&hidden, path).map_err(|e| Error::io("renaming", &hidden, e))
}

/// Whether a file named `name` is one still being written ([`partial_path`]):
/// never part of a dataset, whoever wrote it.
pub(crate) fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.contains(".parquet.partial-")
}

/// Where the file to be named `path` is written: beside it, under a name
/// unique to this writer (hidden, so that no reader takes it for data).
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".partial-{}-{}",
        commit::process_token(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// The folder of bucket `bucket`.
pub(crate) fn folder_name(partitioning: Partitioning, bucket: i64) -> String {
    match partitioning {
        Partitioning::Day => format!("dt={}", utc_date(bucket.saturating_mul(MICROS_PER_DAY))),
        Partitioning::Hour => {
            let start = bucket.saturating_mul(MICROS_PER_DAY / 24);
            format!(
                "dt={}/hour={:02}",
                utc_date(start),
                start.rem_euclid(MICROS_PER_DAY) / (MICROS_PER_DAY / 24)
            )
        }
        Partitioning::None => String::new(),
    }
}

/// Hard-links the files of partition `partition` of the dataset `from`
/// into the staging folder `to`: an incremental build carries a partition
/// over as the same files, not rewritten.
pub fn link_partition(from: &Path, to: &Path, partition: &PartitionWritten) -> Result<()> {
    let folder = to.join(&partition.partition);
    if !partition.files.is_empty() {
        std::fs::create_dir_all(&folder).map_err(|e| Error::io("creating", &folder, e))?;
    }
    for file in &partition.files {
        let (old, new) = (from.join(&file.path), to.join(&file.path));
        std::fs::hard_link(&old, &new).map_err(|e| Error::io("linking", &old, e))?;
    }
    Ok(())
}

/// Removes from the staging folder `dir` the data files no writer
/// reported (`written`): a Parquet file, or a file still being written,
/// left by a cluster task's attempt that died. Top-level entries named in
/// `skip` are left alone.
pub fn prune_unlisted(dir: &Path, written: &[PartitionWritten], skip: &[&str]) -> Result<()> {
    // Every file reported is here first: a worker that wrote elsewhere
    // fails the build instead of publishing a manifest without its data.
    for file in written.iter().flat_map(|p| &p.files) {
        let path = dir.join(&file.path);
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "`{}` was reported written but is not in the staging folder `{}`: every worker must see it at the same path",
                file.path,
                dir.display()
            )));
        }
    }
    let listed: std::collections::HashSet<PathBuf> = written
        .iter()
        .flat_map(|p| p.files.iter().map(|f| dir.join(&f.path)))
        .collect();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io("reading", &folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading", &folder, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if folder == dir && skip.contains(&name.as_str()) {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(|e| Error::io("reading", &path, e))?;
            if kind.is_dir() {
                folders.push(path);
            } else if (name.ends_with(".parquet") || is_partial(&name)) && !listed.contains(&path) {
                std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            }
        }
    }
    Ok(())
}

/// Rows of a file's first batch sampled to choose dictionary encoding.
const DICTIONARY_SAMPLE: usize = 8192;

/// The fixed-width columns that a dictionary would not pay for: more than
/// half of the first [`DICTIONARY_SAMPLE`] rows of `first` (the batch that
/// opens the file) distinct, nulls counted as rows without a value; a
/// sample of fewer than 1,024 rows keeps every dictionary. Such a column
/// overflows the dictionary page anyway and falls back to plain after its
/// values were hashed for nothing (about a tenth of the encoding CPU at
/// 10 M rows), so it is written without one: delta-encoded when it is an
/// int64, plain otherwise. Depends on the rows only. (Columns wider than 16
/// bytes, which no spec makes, keep theirs.)
fn dictionary_misfits(first: &RecordBatch) -> Vec<String> {
    let sample = first.num_rows().min(DICTIONARY_SAMPLE);
    first
        .schema()
        .fields()
        .iter()
        .zip(first.columns())
        .filter(|(_, column)| {
            let data = column.to_data();
            let width = match column.data_type().primitive_width() {
                Some(w) if (4..=16).contains(&w) && sample >= 1024 => w,
                _ => return false,
            };
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
            // Counted by sorting the values as words (a SipHash set of
            // byte slices took 1.5 % of the marketplace build's CPU).
            let mut values: Vec<u128> = bytes
                .chunks_exact(width)
                .take(sample)
                .enumerate()
                .filter(|&(i, _)| column.is_valid(i))
                .map(|(_, value)| {
                    let mut word = [0u8; 16];
                    word[..width].copy_from_slice(value);
                    u128::from_le_bytes(word)
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            values.len() * 2 > sample
        })
        .map(|(field, _)| field.name().clone())
        .collect()
}

fn open_file(
    path: &Path,
    schema: &SchemaRef,
    delta_columns: &[String],
    first: &RecordBatch,
) -> Result<ArrowWriter<File>> {
    let parquet_error = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    // The leading sort columns (time, then id) are sorted and nearly unique:
    // delta encoding, no dictionary (one would be built and thrown away for
    // every page).
    let delta = |props: WriterPropertiesBuilder, column: &String| {
        props
            .set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false)
            .set_column_encoding(
                ColumnPath::from(column.as_str()),
                Encoding::DELTA_BINARY_PACKED,
            )
    };
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(
        ZstdLevel::try_new(ZSTD_LEVEL).map_err(parquet_error)?,
    ));
    // A misfit is written plain, or delta-encoded when it is an integer
    // (ids and durations use a fraction of their 64 bits), then without
    // compression: delta-packed values with most of them distinct are
    // what zstd cannot shrink (the marketplace's ids and ages: 1,724,211
    // bytes compressed against 1,724,009 not, files 0.1 % larger in time
    // order, 0.002 % smaller shuffled), and compressing them was about a
    // tenth of the encoding's CPU.
    let props = dictionary_misfits(first).iter().fold(props, |p, column| {
        let integer = matches!(
            schema.field_with_name(column).map(|f| f.data_type()),
            Ok(DataType::Int64)
        );
        if integer {
            delta(p, column).set_column_compression(
                ColumnPath::from(column.as_str()),
                Compression::UNCOMPRESSED,
            )
        } else {
            p.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false)
        }
    });
    let props = delta_columns
        .iter()
        .fold(props, delta)
        .set_max_row_group_row_count(Some(ROWS_PER_ROW_GROUP))
        .build();
    let file = File::create(path).map_err(|e| Error::io("creating", path, e))?;
    ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_error)
}

/// The first `rows` rows of a dataset (its first file), as a text table.
pub fn preview(dataset: &Path, rows: usize) -> Result<String> {
    let Some(path) = data_files(dataset)?.into_iter().next() else {
        return Ok("(no rows)".into());
    };
    let file = File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(rows.max(1)).with_limit(rows).build())
            .map_err(|source| Error::Parquet {
                path: path.clone(),
                source,
            })?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(DataFusionError::from)?;
    Ok(
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(DataFusionError::from)?
            .to_string(),
    )
}

/// Every Parquet file of a dataset, in path order (partition folders
/// included, names starting with `.` or `_` skipped); of a Delta table,
/// the files of its latest version, as its manifest lists them.
pub fn data_files(dataset: &Path) -> Result<Vec<PathBuf>> {
    // A Delta table's folders also hold older versions' files.
    if let Some(files) = delta::manifest_files(dataset)? {
        return Ok(files);
    }
    let mut files = Vec::new();
    let mut folders = vec![dataset.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| Error::io("reading", &folder, e))? {
            let path = entry.map_err(|e| Error::io("reading", &folder, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with('.') || n.starts_with('_')) {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A published dataset's rows as Arrow batches: the files of its latest
/// version in path order (partition folders in time order), each file's
/// rows in the order written. Made by [`read_dataset`].
pub struct DatasetReader {
    schema: SchemaRef,
    files: std::vec::IntoIter<PathBuf>,
    /// Which publish the files were listed from ([`publish_identity`]):
    /// each file is checked to be of it once open, so that the rows are
    /// of one publish (a file open stays what it was).
    dataset: PathBuf,
    identity: (u64, u64),
    current: Option<(
        PathBuf,
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    )>,
}

/// Opens the leakless dataset (a Parquet dataset or a Delta table's latest
/// version) at `dataset` for reading; an error for a folder leakless did
/// not publish. Its schema is the files' (the output columns of the
/// spec it was built with, when it has no rows).
pub fn read_dataset(dataset: &Path) -> Result<DatasetReader> {
    if crate::storage::Remote::parse(dataset)?.is_some() {
        return Err(Error::Invalid(format!(
            "`{}`: leakless reads back datasets in local or shared folders; read one on object storage with pyarrow.dataset or Polars",
            dataset.display()
        )));
    }
    // Taken before the manifest is read: the files it lists are of this
    // publish.
    let identity = publish_identity(dataset);
    let path = delta::meta_dir(dataset)?.join(manifest::FILE_NAME);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Invalid(format!(
            "`{}` is not a leakless dataset: it has no {}",
            dataset.display(),
            manifest::FILE_NAME
        )),
        _ => Error::io("reading", &path, e),
    })?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .ok()
        .filter(|m: &serde_json::Value| {
            m.get("tool").and_then(|t| t.as_str()) == Some(manifest::TOOL)
        })
        .ok_or_else(|| {
            Error::Invalid(format!("`{}` was not written by leakless", path.display()))
        })?;
    let identity = identity?;
    let files = manifest::listed_files(dataset, &manifest, &path)?;
    let schema = match files.first() {
        Some(path) => {
            let file = open_of(dataset, identity, path)?;
            datafusion::arrow::record_batch::RecordBatchReader::schema(&open_parquet(path, file)?)
        }
        None => {
            let spec: crate::spec::Spec = (manifest.get("spec").cloned())
                .and_then(|spec| serde_json::from_value(spec).ok())
                .ok_or_else(|| {
                    Error::Invalid(format!("`{}` holds no readable spec", path.display()))
                })?;
            crate::temporal::spec_schema(&spec)
        }
    };
    Ok(DatasetReader {
        schema,
        files: files.into_iter(),
        dataset: dataset.to_owned(),
        identity,
        current: None,
    })
}

/// What changes when a dataset is published again: a Parquet dataset's
/// folder (a publish renames a new one into place and removes the old).
/// A Delta table's files stay on disk whatever version comes next, so the
/// files of the version listed can always be read.
fn publish_identity(dataset: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    if dataset.join(delta::LOG).is_dir() {
        return Ok((0, 0));
    }
    let meta = std::fs::metadata(dataset).map_err(|e| Error::io("reading", dataset, e))?;
    Ok((meta.dev(), meta.ino()))
}

/// Opens `path` of the dataset at `dataset`, checking that the dataset is
/// still the publish `identity` (else the file may be of another).
fn open_of(dataset: &Path, identity: (u64, u64), path: &Path) -> Result<File> {
    let file = File::open(path);
    if publish_identity(dataset)? != identity {
        return Err(Error::Invalid(format!(
            "`{}` was published again while it was read: read it again",
            dataset.display()
        )));
    }
    file.map_err(|e| Error::io("reading", path, e))
}

fn open_parquet(
    path: &Path,
    file: File,
) -> Result<datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|source| Error::Parquet {
            path: path.to_owned(),
            source,
        })
}

impl DatasetReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) if batch.schema() != self.schema => {
                        return Err(Error::Invalid(format!(
                            "`{}` has another schema than the dataset's other files",
                            path.display()
                        )));
                    }
                    Some(Ok(batch)) => return Ok(Some(batch)),
                    Some(Err(e)) => {
                        return Err(Error::Parquet {
                            path: path.clone(),
                            source: e.into(),
                        });
                    }
                    None => self.current = None,
                }
            }
            match self.files.next() {
                None => return Ok(None),
                Some(path) => {
                    let file = open_of(&self.dataset, self.identity, &path)?;
                    let reader = open_parquet(&path, file)?;
                    self.current = Some((path, reader));
                }
            }
        }
    }
}

impl Iterator for DatasetReader {
    type Item = Result<RecordBatch, datafusion::arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
            .map_err(|e| datafusion::arrow::error::ArrowError::ExternalError(Box::new(e)))
            .transpose()
    }
}

impl datafusion::arrow::record_batch::RecordBatchReader for DatasetReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Rows of a dataset where columns `a` and `b` differ (a null and a value
/// differ; two nulls do not), and all rows.
pub fn differing_rows(dataset: &Path, a: &str, b: &str) -> Result<(u64, u64)> {
    let (mut differing, mut total) = (0u64, 0u64);
    for path in data_files(dataset)? {
        let file = File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .and_then(|r| r.build())
            .map_err(|source| Error::Parquet {
                path: path.clone(),
                source,
            })?;
        for batch in reader {
            let batch = batch.map_err(DataFusionError::from)?;
            let column = |name: &str| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    Error::Invalid(format!("`{}` has no column `{name}`", path.display()))
                })
            };
            let mask = datafusion::arrow::compute::kernels::cmp::distinct(&column(a)?, &column(b)?)
                .map_err(DataFusionError::from)?;
            differing += mask.true_count() as u64;
            total += batch.num_rows() as u64;
        }
    }
    Ok((differing, total))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int8Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_writer_without_its_staging_folder_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("staging");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "t",
            crate::ingest::utc_micros(),
            true,
        )]));
        let times = datafusion::arrow::array::TimestampMicrosecondArray::from(vec![0i64])
            .with_timezone("UTC");
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(times)]).unwrap();
        let mut writer = PartitionWriter::new(&gone, schema, 0, Partitioning::Day, Vec::new());
        let err = writer.push(&batch).unwrap_err();
        assert!(err.to_string().contains("is not there"), "{err}");
        assert!(!gone.exists());
    }

    #[test]
    fn only_data_files_no_writer_reported_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "dt=2026-10-01/part-00000.parquet",
            "dt=2026-10-01/part-00001.parquet",
            "dt=2026-10-01/.part-00001.parquet.partial-7-3",
            "dt=2026-10-02/hour=01/part-00000.parquet",
            "_spill/spine-7-0-0.arrow",
            "_spill/kept.parquet",
            ".lock",
        ] {
            std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
            std::fs::write(root.join(file), b"x").unwrap();
        }
        let written = vec![PartitionWritten {
            rows: 1,
            files: vec![FileWritten {
                path: "dt=2026-10-01/part-00000.parquet".into(),
                rows: 1,
            }],
            ..PartitionWritten::empty("dt=2026-10-01".into())
        }];
        // A reported file that is not there fails, naming it.
        let mut missing = written.clone();
        missing[0].files[0].path = "dt=2026-10-01/part-00009.parquet".into();
        let err = prune_unlisted(root, &missing, &["_spill"]).unwrap_err();
        assert!(err.to_string().contains("part-00009.parquet"), "{err}");
        prune_unlisted(root, &written, &["_spill"]).unwrap();
        let mut left: Vec<String> = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    left.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        left.sort();
        assert_eq!(
            left,
            [
                ".lock",
                "_spill/kept.parquet",
                "_spill/spine-7-0-0.arrow",
                "dt=2026-10-01/part-00000.parquet"
            ]
        );
    }

    #[test]
    fn dictionaries_are_left_out_only_where_most_sampled_values_differ() {
        let n = 10_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("ids", DataType::Int64, true),
            Field::new("few", DataType::Int64, true),
            Field::new("prices", DataType::Float64, true),
            Field::new("flags", DataType::Int8, true),
            Field::new("names", DataType::Utf8, true),
            Field::new("sparse", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 7))),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 / 3.0),
                )),
                Arc::new(Int8Array::from_iter_values((0..n).map(|i| (i % 100) as i8))),
                Arc::new(StringArray::from_iter_values((0..n).map(|i| i.to_string()))),
                // Distinct where valid, but mostly null: nulls do not count.
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 10 == 0).then_some(i)),
                )),
            ],
        )
        .unwrap();
        assert_eq!(dictionary_misfits(&batch), ["ids", "prices"]);

        // As written: an integer misfit delta-encoded and not compressed,
        // a float misfit plain, the others with a dictionary, all but the
        // integer misfit compressed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        // `ids` as the leading sort column too (delta-encoded in any
        // case): a misfit all the same.
        let mut writer = open_file(&path, &batch.schema(), &["ids".into()], &batch).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let file = File::open(&path).unwrap();
        let reader = datafusion::parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let group = datafusion::parquet::file::reader::FileReader::metadata(&reader).row_group(0);
        let column = |name: &str| {
            (group.columns().iter())
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        let encodings = |name: &str| column(name).encodings().collect::<Vec<_>>();
        for name in ["ids", "few", "prices", "flags", "names", "sparse"] {
            let compression = column(name).compression();
            match name {
                "ids" => assert_eq!(compression, Compression::UNCOMPRESSED),
                _ => assert!(matches!(compression, Compression::ZSTD(_)), "{name}"),
            }
        }
        assert!(encodings("ids").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(!encodings("ids").contains(&Encoding::RLE_DICTIONARY));
        assert!(!encodings("prices").contains(&Encoding::RLE_DICTIONARY));
        assert!(!encodings("prices").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(encodings("few").contains(&Encoding::RLE_DICTIONARY));
    }
}
