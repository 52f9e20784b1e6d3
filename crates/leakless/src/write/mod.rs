//! Deterministic, date-partitioned Parquet, committed by rename.
//!
//! Rows are bucketed by the UTC date of their time column, each day is sorted
//! by the sort columns, and written as `dt=YYYY-MM-DD/part-NNNNN.parquet`
//! into a hidden temporary folder beside the destination. The manifest is
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

use datafusion::arrow::array::{AsArray, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::error::{Error, Result};
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

/// One `dt=` partition written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionWritten {
    pub dt: String,
    pub rows: u64,
    pub files: Vec<FileWritten>,
}

/// CPU seconds spent sorting and encoding, summed over days.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WriteTimings {
    pub sort_seconds: f64,
    pub encode_seconds: f64,
}

/// Batches bucketed by UTC day, spilled to one Arrow IPC file per day so
/// that memory does not grow with the number of rows.
#[derive(Debug)]
pub struct DayBuckets {
    schema: SchemaRef,
    time_column: usize,
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
    pub fn new(schema: SchemaRef, time_column: usize, spill_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(spill_dir).map_err(|e| Error::io("creating", spill_dir, e))?;
        Ok(DayBuckets {
            schema,
            time_column,
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
        let day_of = |row: usize| times.value(row).div_euclid(MICROS_PER_DAY);
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

    /// Sorts each day by `sort_columns` and writes it under `dir`, days in
    /// parallel on up to `threads` threads.
    pub fn write(
        self,
        dir: &Path,
        sort_columns: &[usize],
        threads: usize,
    ) -> Result<(Vec<PartitionWritten>, WriteTimings)> {
        let schema = self.schema;
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
                            write_day(dir, &schema, day, &batches, sort_columns)
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
        partitions.sort_by(|a, b| a.dt.cmp(&b.dt));
        Ok((partitions, timings))
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
    day: i64,
    batches: &[RecordBatch],
    sort_columns: &[usize],
) -> Result<(PartitionWritten, WriteTimings)> {
    let started = std::time::Instant::now();
    let dt = utc_date(day * MICROS_PER_DAY);
    let all = concat_batches(schema, batches).map_err(DataFusionError::from)?;
    let keys: Vec<SortColumn> = sort_columns
        .iter()
        .map(|&i| SortColumn {
            values: all.column(i).clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&keys, None).map_err(DataFusionError::from)?;
    let sorted = take_record_batch(&all, &order).map_err(DataFusionError::from)?;
    drop(all);
    let sorted_at = std::time::Instant::now();
    let folder = format!("dt={dt}");
    let day_dir = dir.join(&folder);
    std::fs::create_dir_all(&day_dir).map_err(|e| Error::io("creating", &day_dir, e))?;
    let mut files = Vec::new();
    let mut offset = 0;
    while offset < sorted.num_rows() {
        let len = ROWS_PER_FILE.min(sorted.num_rows() - offset);
        let name = format!("part-{:05}.parquet", files.len());
        write_file(&day_dir.join(&name), &sorted.slice(offset, len))?;
        files.push(FileWritten {
            path: format!("{folder}/{name}"),
            rows: len as u64,
        });
        offset += len;
    }
    let timings = WriteTimings {
        sort_seconds: (sorted_at - started).as_secs_f64(),
        encode_seconds: sorted_at.elapsed().as_secs_f64(),
    };
    let partition = PartitionWritten {
        dt,
        rows: sorted.num_rows() as u64,
        files,
    };
    Ok((partition, timings))
}

fn write_file(path: &Path, batch: &RecordBatch) -> Result<()> {
    let parquet_error = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(parquet_error)?,
        ))
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
    let mut days: Vec<PathBuf> = std::fs::read_dir(dataset)
        .map_err(|e| Error::io("reading", dataset, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    days.sort();
    let Some(first_day) = days.first() else {
        return Ok("(no rows)".into());
    };
    let path = first_day.join("part-00000.parquet");
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
