//! Deterministic, time-partitioned Parquet, committed by rename.
//!
//! Rows are bucketed by the UTC day (or hour, or not at all) of their time
//! column, each bucket is sorted by every column in order, and written as
//! `dt=YYYY-MM-DD/part-NNNNN.parquet` (`dt=YYYY-MM-DD/hour=HH/...`, or
//! `part-NNNNN.parquet` at the root) into a hidden temporary folder beside
//! the destination. The manifest is
//! written last, then the folder is renamed into place: a dataset exists
//! exactly when its `_manifest.json` does, and a failed run leaves the
//! destination as it was.
//!
//! Invariants:
//! - the bytes written depend only on the rows, never on batch arrival order,
//!   thread count or the clock (rows are fully sorted; names are fixed);
//! - `write` knows nothing of features or inputs: it gets batches, a time
//!   column and sort columns.

pub mod manifest;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{
    DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Encoding;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::Partitioning;
use crate::time::{MICROS_PER_DAY, utc_date};

/// Rows in one Parquet file before the day moves on to the next part.
pub const ROWS_PER_FILE: usize = 4 << 20;
/// Rows in one Parquet row group.
pub const ROWS_PER_ROW_GROUP: usize = 1 << 20;

/// One file written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileWritten {
    /// Path relative to the dataset root, with `/` separators.
    pub path: String,
    pub rows: u64,
}

/// One partition folder written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionWritten {
    /// The folder relative to the dataset root (`dt=2026-10-01`, empty
    /// without partitioning).
    pub partition: String,
    pub rows: u64,
    pub files: Vec<FileWritten>,
}

/// CPU seconds spent sorting and encoding, summed over days.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WriteTimings {
    pub sort_seconds: f64,
    pub encode_seconds: f64,
}

/// Batches bucketed by UTC day or hour, spilled to one Arrow IPC file per
/// bucket so that memory does not grow with the number of rows.
#[derive(Debug)]
pub struct DayBuckets {
    schema: SchemaRef,
    time_column: usize,
    partitioning: Partitioning,
    spill_dir: PathBuf,
    days: BTreeMap<i64, Spill>,
}

struct Spill {
    path: PathBuf,
    writer: FileWriter<BufWriter<File>>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill").field("path", &self.path).finish()
    }
}

impl DayBuckets {
    /// Buckets by the UTC day of `time_column`, a non-null microsecond
    /// timestamp column, spilling into `spill_dir` (created if needed).
    pub fn new(
        schema: SchemaRef,
        time_column: usize,
        partitioning: Partitioning,
        spill_dir: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(spill_dir).map_err(|e| Error::io("creating", spill_dir, e))?;
        Ok(DayBuckets {
            schema,
            time_column,
            partitioning,
            spill_dir: spill_dir.to_owned(),
            days: BTreeMap::new(),
        })
    }

    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column(self.time_column)
            .as_primitive::<TimestampMicrosecondType>();
        let width = bucket_micros(self.partitioning);
        // One bucket without partitioning, whatever the time.
        // A slice, not `value(row)`: `value` is not inlined here and cost
        // about 5 % of a 10 M build's CPU (perf).
        let times = times.values();
        let day_of = |row: usize| width.map_or(0, |w| times[row].div_euclid(w));
        let first = day_of(0);
        if (1..batch.num_rows()).all(|row| day_of(row) == first) {
            return self.append(first, &batch);
        }
        let mut rows_by_day: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            rows_by_day.entry(day_of(row)).or_default().push(row as u32);
        }
        for (day, rows) in rows_by_day {
            let part = take_record_batch(&batch, &UInt32Array::from(rows))
                .map_err(DataFusionError::from)?;
            self.append(day, &part)?;
        }
        Ok(())
    }

    fn append(&mut self, day: i64, batch: &RecordBatch) -> Result<()> {
        let spill = match self.days.entry(day) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let path = self.spill_dir.join(format!("day-{day}.arrow"));
                let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
                let writer =
                    FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &self.schema)
                        .map_err(DataFusionError::from)?;
                e.insert(Spill { path, writer })
            }
        };
        spill.writer.write(batch).map_err(DataFusionError::from)?;
        Ok(())
    }

    /// Sorts each bucket by `sort_columns` and writes it under `dir`,
    /// buckets in parallel on up to `threads` threads.
    pub fn write(
        self,
        dir: &Path,
        sort_columns: &[usize],
        threads: usize,
    ) -> Result<(Vec<PartitionWritten>, WriteTimings)> {
        let schema = self.schema;
        let partitioning = self.partitioning;
        let mut days = Vec::with_capacity(self.days.len());
        for (day, mut spill) in self.days {
            spill.writer.finish().map_err(DataFusionError::from)?;
            days.push((day, spill.path));
        }
        let queue = std::sync::Mutex::new(days.into_iter());
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some((day, spill)) = next else { break };
                        let written = read_spill(&spill).and_then(|batches| {
                            let folder = folder_name(partitioning, day);
                            write_day(dir, &schema, &folder, &batches, sort_columns)
                        });
                        let _ = std::fs::remove_file(&spill);
                        let failed = written.is_err();
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(written);
                        if failed {
                            break;
                        }
                    }
                });
            }
        });
        let mut timings = WriteTimings::default();
        let mut partitions = Vec::new();
        for written in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let (partition, day_timings) = written?;
            timings.sort_seconds += day_timings.sort_seconds;
            timings.encode_seconds += day_timings.encode_seconds;
            partitions.push(partition);
        }
        partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok((partitions, timings))
    }
}

/// The width of a bucket in microseconds; `None`: one bucket.
fn bucket_micros(partitioning: Partitioning) -> Option<i64> {
    match partitioning {
        Partitioning::Day => Some(MICROS_PER_DAY),
        Partitioning::Hour => Some(MICROS_PER_DAY / 24),
        Partitioning::None => None,
    }
}

/// The folder of bucket `bucket`.
fn folder_name(partitioning: Partitioning, bucket: i64) -> String {
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

/// The rows of `batches` in ascending order of `sort_columns` (nulls
/// first, strings by bytes, floats by total order).
///
/// Rows usually arrive in time order already, in batches that partitions
/// interleave: the batches are put in order of their first row and the
/// result checked in one pass on the leading sort columns that are
/// non-null integers or timestamps; when those strictly increase, the rows
/// are in order whatever the other columns hold. Only otherwise are the
/// rows sorted in full (bench/RESULTS.md: the full sort of 10 M rows cost
/// 0.7 s of CPU that this check saves).
fn sort_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    sort_columns: &[usize],
) -> Result<RecordBatch> {
    // The leading sort columns that are integers or timestamps, from the
    // schema: the fast path checks those only.
    let integers = sort_columns
        .iter()
        .take_while(|&&i| is_i64(schema.field(i).data_type()))
        .count();
    let prefix = |b| key_columns(b, &sort_columns[..integers]);
    let mut ordered: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let first_keys: Option<Vec<Vec<i64>>> = ordered
        .iter()
        .map(|b| prefix(b).map(|k| k.iter().map(|c| c[0]).collect()))
        .collect();
    if let Some(first_keys) = first_keys.filter(|_| integers > 0) {
        let mut order: Vec<usize> = (0..ordered.len()).collect();
        order.sort_by(|&a, &b| first_keys[a].cmp(&first_keys[b]));
        ordered = order.into_iter().map(|i| ordered[i]).collect();
        let candidate =
            concat_batches(schema, ordered.iter().copied()).map_err(DataFusionError::from)?;
        if let Some(columns) = prefix(&candidate) {
            let row = |r: usize| columns.iter().map(move |c| c[r]);
            if (1..candidate.num_rows()).all(|r| row(r - 1).lt(row(r))) {
                return Ok(candidate);
            }
        }
    }
    let all = concat_batches(schema, batches).map_err(DataFusionError::from)?;
    let sort_keys: Vec<SortColumn> = sort_columns
        .iter()
        .map(|&i| SortColumn {
            values: all.column(i).clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&sort_keys, None).map_err(DataFusionError::from)?;
    Ok(take_record_batch(&all, &order).map_err(DataFusionError::from)?)
}

/// The sort columns of `batch` as `i64` slices, when they all are
/// non-null `Int64` or microsecond timestamps.
fn key_columns<'a>(batch: &'a RecordBatch, sort_columns: &[usize]) -> Option<Vec<&'a [i64]>> {
    sort_columns
        .iter()
        .map(|&i| i64_values(batch.column(i)))
        .collect()
}

fn is_i64(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
}

/// The values of a non-null `Int64` or microsecond timestamp column.
fn i64_values(column: &ArrayRef) -> Option<&[i64]> {
    if column.null_count() > 0 {
        return None;
    }
    match column.data_type() {
        DataType::Int64 => Some(column.as_primitive::<Int64Type>().values()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(column.as_primitive::<TimestampMicrosecondType>().values())
        }
        _ => None,
    }
}

fn read_spill(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let reader =
        FileReader::try_new(std::io::BufReader::new(file), None).map_err(DataFusionError::from)?;
    Ok(reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(DataFusionError::from)?)
}

fn write_day(
    dir: &Path,
    schema: &SchemaRef,
    folder: &str,
    batches: &[RecordBatch],
    sort_columns: &[usize],
) -> Result<(PartitionWritten, WriteTimings)> {
    let started = std::time::Instant::now();
    let sorted = sort_rows(schema, batches, sort_columns)?;
    let delta_columns: Vec<&str> = sort_columns
        .iter()
        .take(2)
        .take_while(|&&i| is_i64(schema.field(i).data_type()))
        .map(|&i| schema.field(i).name().as_str())
        .collect();
    let sorted_at = std::time::Instant::now();
    let day_dir = dir.join(folder);
    std::fs::create_dir_all(&day_dir).map_err(|e| Error::io("creating", &day_dir, e))?;
    let mut files = Vec::new();
    let mut offset = 0;
    while offset < sorted.num_rows() {
        let len = ROWS_PER_FILE.min(sorted.num_rows() - offset);
        let name = format!("part-{:05}.parquet", files.len());
        write_file(
            &day_dir.join(&name),
            &sorted.slice(offset, len),
            &delta_columns,
        )?;
        files.push(FileWritten {
            path: if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            },
            rows: len as u64,
        });
        offset += len;
    }
    let timings = WriteTimings {
        sort_seconds: (sorted_at - started).as_secs_f64(),
        encode_seconds: sorted_at.elapsed().as_secs_f64(),
    };
    let partition = PartitionWritten {
        partition: folder.to_owned(),
        rows: sorted.num_rows() as u64,
        files,
    };
    Ok((partition, timings))
}

fn write_file(path: &Path, batch: &RecordBatch, delta_columns: &[&str]) -> Result<()> {
    let parquet_error = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    // The leading sort columns (time, then id) are sorted and nearly unique:
    // delta encoding, no dictionary (one would be built and thrown away for
    // every page).
    let delta = |props: WriterPropertiesBuilder, column: &str| {
        props
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED)
    };
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(
        ZstdLevel::try_new(1).map_err(parquet_error)?,
    ));
    let props = delta_columns
        .iter()
        .fold(props, |p, c| delta(p, c))
        .set_max_row_group_row_count(Some(ROWS_PER_ROW_GROUP))
        .build();
    let file = File::create(path).map_err(|e| Error::io("creating", path, e))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(parquet_error)?;
    writer.write(batch).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    Ok(())
}

/// A hidden folder beside the destination that becomes the dataset on
/// [`Staging::commit`] and is removed if dropped uncommitted.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    /// Checks that `out` may be written and creates the staging folder.
    pub fn create(out: &Path, overwrite: bool) -> Result<Self> {
        check_destination(out, overwrite)?;
        let name = out
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("`{}` is not a folder name", out.display())))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("creating", &parent, e))?;
        let dir = parent.join(format!(
            ".{}.leakless-tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing", &dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        Ok(Staging {
            dir,
            out: out.to_owned(),
            committed: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the manifest, then moves the staged dataset into place,
    /// replacing a previous dataset at the destination.
    pub fn commit(mut self, manifest: &[u8], overwrite: bool) -> Result<()> {
        let manifest_path = self.dir.join(manifest::FILE_NAME);
        std::fs::write(&manifest_path, manifest)
            .map_err(|e| Error::io("writing", &manifest_path, e))?;
        check_destination(&self.out, overwrite)?;
        let old = self.dir.with_extension("old");
        let replacing = self.out.exists();
        if replacing {
            std::fs::rename(&self.out, &old)
                .map_err(|e| Error::io("moving aside", &self.out, e))?;
        }
        std::fs::rename(&self.dir, &self.out).map_err(|e| Error::io("creating", &self.out, e))?;
        self.committed = true;
        if replacing {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io("removing", &old, e))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `out` may be written when it does not exist, or with `overwrite` when it
/// is a leakless dataset.
pub fn check_destination(out: &Path, overwrite: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let is_dataset = out.join(manifest::FILE_NAME).is_file();
    if overwrite && is_dataset {
        Ok(())
    } else {
        Err(Error::OutputExists {
            path: out.to_owned(),
            is_dataset,
        })
    }
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
/// included, names starting with `.` or `_` skipped).
pub fn data_files(dataset: &Path) -> Result<Vec<PathBuf>> {
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

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(schema: &SchemaRef, a: &[i64], b: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(a.to_vec())),
                Arc::new(Int64Array::from(b.to_vec())),
            ],
        )
        .unwrap()
    }

    fn rows(batch: &RecordBatch) -> Vec<(i64, i64)> {
        let keys = key_columns(batch, &[0, 1]).unwrap();
        (0..batch.num_rows())
            .map(|r| (keys[0][r], keys[1][r]))
            .collect()
    }

    #[test]
    fn sorts_batches_that_arrive_out_of_order_and_rows_that_interleave() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ]));
        // Sorted batches in the wrong order: reordered without a full sort.
        let shuffled = [
            batch(&schema, &[5, 6], &[1, 1]),
            batch(&schema, &[1, 5], &[9, 0]),
        ];
        assert_eq!(
            rows(&sort_rows(&schema, &shuffled, &[0, 1]).unwrap()),
            [(1, 9), (5, 0), (5, 1), (6, 1)]
        );
        // Interleaved rows: the full sort, ties broken by the second column.
        let interleaved = [
            batch(&schema, &[1, 7], &[2, 0]),
            batch(&schema, &[1, 3], &[1, 0]),
        ];
        assert_eq!(
            rows(&sort_rows(&schema, &interleaved, &[0, 1]).unwrap()),
            [(1, 1), (1, 2), (3, 0), (7, 0)]
        );
    }
}
