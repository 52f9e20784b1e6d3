//! Parquet -> typed batches.
//!
//! Reads only the required columns and converts them to the canonical types:
//! any integer width to `Int64`, any float to `Float64`, any string encoding
//! to `Utf8`, a timestamp of any unit and zone to UTC microseconds (floored).
//! A timestamp without a zone is UTC. Bad rows are named by their 1-based row
//! number in the file.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter, max, min};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{ColumnSpec, FileReader, arrow_type};
use crate::error::{BadRow, Error, Location, Result};
use crate::spec::{ColumnDef, ColumnType, ValueType};

/// Columns with a type leakless reads, from a Parquet file's schema (read
/// at `path`, named `name` in messages).
pub(super) fn infer_columns(
    path: &std::path::Path,
    name: &std::path::Path,
) -> Result<Vec<ColumnDef>> {
    guarded(name, || infer_columns_unguarded(path, name))
}

/// Runs `f`, turning a panic of the Parquet or Arrow decoders (which some
/// corrupt files cause, e.g. a mangled embedded Arrow schema) into an error
/// naming the file: bad input never panics the run.
fn guarded<T>(path: &std::path::Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("");
        Err(Error::UnreadableFile {
            path: path.to_owned(),
            reason: format!("the Parquet decoder failed on it (a corrupt file?): {message}"),
        })
    })
}

fn infer_columns_unguarded(
    path: &std::path::Path,
    name: &std::path::Path,
) -> Result<Vec<ColumnDef>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", name, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::UnreadableFile {
            path: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .filter_map(|f| {
            let ty = [
                ColumnType::Int64,
                ColumnType::Float64,
                ColumnType::String,
                ColumnType::Bool,
                ColumnType::Timestamp,
            ]
            .into_iter()
            .find(|&t| convertible(f.data_type(), t))?;
            let ty = match (ty, f.data_type().is_floating()) {
                (ColumnType::Float64, false) if f.data_type().is_integer() => ColumnType::Int64,
                _ => ty,
            };
            Some(ColumnDef {
                name: f.name().clone(),
                ty,
                required: false,
            })
        })
        .collect())
}

fn parquet_error(reader: &FileReader<'_>, e: impl std::fmt::Display) -> Error {
    Error::UnreadableFile {
        path: reader.file.name.clone(),
        reason: e.to_string(),
    }
}

/// Opens a Parquet file and finds and type-checks the declared columns.
#[allow(clippy::type_complexity)]
fn open_checked<'a>(
    reader: &FileReader<'a>,
) -> Result<(
    ParquetRecordBatchReaderBuilder<std::fs::File>,
    Vec<(usize, &'a ColumnSpec)>,
)> {
    let path = &reader.file.name;
    let file = std::fs::File::open(&reader.file.path).map_err(|e| Error::io("reading", path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_error(reader, e))?;
    let file_schema = builder.schema().clone();
    let names: Vec<String> = file_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let wanted = reader.locate_columns(&names)?;
    for (i, spec) in &wanted {
        let found = file_schema.field(*i).data_type();
        if !convertible(found, spec.ty) {
            return Err(Error::ColumnType {
                path: path.clone(),
                column: spec.name.clone(),
                found: found.to_string(),
                expected: spec.ty.name().to_owned(),
            });
        }
    }
    Ok((builder, wanted))
}

/// Checks that a Parquet file has the declared columns in types that read
/// as declared, without reading its rows.
pub(super) fn check(reader: &FileReader<'_>) -> Result<()> {
    guarded(&reader.file.name, || open_checked(reader).map(|_| ()))
}

/// Reads one Parquet file; returns its row count unless `emit` stopped it.
///
/// A file of several row groups is read a row group per thread on every
/// core, the batches emitted in file order: rows, order and the first bad
/// value (with its row number) are those of a sequential read.
pub(super) fn read(
    reader: &FileReader<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<u64>> {
    guarded(&reader.file.name, || read_unguarded(reader, emit))
}

fn read_unguarded(
    reader: &FileReader<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<u64>> {
    let (builder, _) = open_checked(reader)?;
    let groups: Vec<u64> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || groups.len() < 2 {
        return read_groups(reader, None, 0, emit);
    }
    std::thread::scope(|scope| {
        let mut flight = std::collections::VecDeque::new();
        let (mut next, mut first_row, mut rows) = (0usize, 0u64, 0u64);
        loop {
            while flight.len() < threads && next < groups.len() {
                let (group, start) = (next, first_row);
                first_row += groups[group];
                next += 1;
                // A thread the system cannot start is an error, not a panic.
                let handle = std::thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        let mut batches = Vec::new();
                        let rows = read_groups(reader, Some(group), start, &mut |batch| {
                            batches.push(batch);
                            true
                        })?;
                        Ok::<_, Error>((batches, rows.unwrap_or(0)))
                    })
                    .map_err(|e| Error::io("starting a thread to read", &reader.file.name, e))?;
                flight.push_back(handle);
            }
            let Some(handle) = flight.pop_front() else {
                break;
            };
            let (batches, n) = handle
                .join()
                .map_err(|_| parquet_error(reader, "a reading thread failed"))??;
            for batch in batches {
                if !emit(batch) {
                    return Ok(None);
                }
            }
            rows += n;
        }
        Ok(Some(rows))
    })
}

/// Reads row group `group` (all of them: `None`), whose first row is row
/// `first_row` of the file.
fn read_groups(
    reader: &FileReader<'_>,
    group: Option<usize>,
    first_row: u64,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<u64>> {
    let (builder, wanted) = open_checked(reader)?;
    let mut roots: Vec<usize> = wanted.iter().map(|(i, _)| *i).collect();
    roots.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let builder = match group {
        Some(g) => builder.with_row_groups(vec![g]),
        None => builder,
    };
    let batches = builder
        .with_projection(mask)
        .with_batch_size(reader.batch_rows)
        .build()
        .map_err(|e| parquet_error(reader, e))?;

    let mut rows_seen: u64 = first_row;
    let mut rows_kept: u64 = 0;
    for batch in batches {
        let batch = batch.map_err(|e| parquet_error(reader, e))?;
        let columns = wanted
            .iter()
            .map(|(i, spec)| {
                let position = roots.iter().position(|r| r == i).expect("projected column");
                convert(batch.column(position), spec.ty)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(DataFusionError::from)?;
        let columns = validate(reader, columns, batch.num_rows(), rows_seen)?;
        let typed = RecordBatch::try_new(reader.layout.schema.clone(), columns)
            .map_err(DataFusionError::from)?;
        rows_seen += batch.num_rows() as u64;
        rows_kept += typed.num_rows() as u64;
        if typed.num_rows() > 0 && !emit(typed) {
            return Ok(None);
        }
    }
    Ok(Some(rows_kept))
}

fn convertible(found: &DataType, ty: ColumnType) -> bool {
    match ty {
        ColumnType::Int64 => found.is_integer(),
        ColumnType::Float64 => found.is_floating() || found.is_integer(),
        ColumnType::Bool => found == &DataType::Boolean,
        ColumnType::String => match found {
            DataType::Dictionary(_, value) => convertible(value, ty),
            other => matches!(
                other,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
        },
        ColumnType::Timestamp => matches!(found, DataType::Timestamp(..)),
        ColumnType::TimestampS | ColumnType::TimestampMs | ColumnType::TimestampUs => {
            found.is_integer() || matches!(found, DataType::Timestamp(..))
        }
    }
}

fn convert(
    array: &ArrayRef,
    ty: ColumnType,
) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let value_type = ty.value_type();
    if value_type != ValueType::Timestamp {
        return cast_with_options(array, &arrow_type(value_type), &strict);
    }
    let unit = match (array.data_type(), ty) {
        (DataType::Timestamp(unit, _), _) => *unit,
        // Integer epochs in the declared unit.
        (_, ColumnType::TimestampS) => TimeUnit::Second,
        (_, ColumnType::TimestampMs) => TimeUnit::Millisecond,
        _ => TimeUnit::Microsecond,
    };
    let array = if matches!(array.data_type(), DataType::Timestamp(..)) {
        array.clone()
    } else {
        let ints = cast_with_options(array, &DataType::Int64, &strict)?;
        cast_with_options(&ints, &DataType::Timestamp(unit, None), &strict)?
    };
    // Floor to microseconds; the zone only labels the instant, which is UTC.
    let micros: TimestampMicrosecondArray = match unit {
        // An overflow saturates, out of range: `validate` reports the row.
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .unary(|s| s.saturating_mul(1_000_000)),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .unary(|ms| ms.saturating_mul(1_000)),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .unary(|us| us),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .unary(|ns| ns.div_euclid(1_000)),
    };
    Ok(Arc::new(micros.with_timezone("UTC")))
}

/// Row `row` of `columns` as `name=value, ...` (null as `null`).
fn raw_row(reader: &FileReader<'_>, columns: &[ArrayRef], row: usize) -> String {
    use datafusion::arrow::util::display::array_value_to_string;
    let fields: Vec<String> = (reader.layout.columns.iter())
        .zip(columns)
        .map(|(spec, column)| {
            let value = match column.is_null(row) {
                true => "null".to_owned(),
                false => array_value_to_string(column, row).unwrap_or_else(|e| format!("<{e}>")),
            };
            format!("{}={value}", spec.name)
        })
        .collect();
    crate::error::shorten_raw(&fields.join(", "))
}

/// Routes rows with a null in a required column or a non-finite float.
fn validate(
    reader: &FileReader<'_>,
    columns: Vec<ArrayRef>,
    num_rows: usize,
    first_row: u64,
) -> Result<Vec<ArrayRef>> {
    let mut keep: Option<Vec<bool>> = None;
    for (spec, column) in reader.layout.columns.iter().zip(&columns) {
        let spec: &ColumnSpec = spec;
        let is_float = spec.ty == ColumnType::Float64;
        // A time column is looked at row by row only when its extremes are
        // out of range.
        let is_time = spec.ty.value_type() == ValueType::Timestamp && {
            let times = column.as_primitive::<TimestampMicrosecondType>();
            let plausible = |t: Option<i64>| t.is_none_or(crate::time::in_range);
            !(plausible(min(times)) && plausible(max(times)))
        };
        if column.null_count() == 0 && !is_float && !is_time {
            continue;
        }
        for row in 0..num_rows {
            let fault = if column.is_null(row) {
                (!spec.nullable).then_some(("missing value", None))
            } else if is_float {
                let x = column.as_primitive::<Float64Type>().value(row);
                (!x.is_finite()).then(|| ("not a finite float64", Some(x.to_string())))
            } else if is_time {
                let t = column.as_primitive::<TimestampMicrosecondType>().value(row);
                (!crate::time::in_range(t)).then(|| {
                    (
                        crate::time::OUT_OF_RANGE,
                        Some(crate::time::format_rfc3339(t)),
                    )
                })
            } else {
                None
            };
            // A row is set aside once, for its first bad column.
            let kept = keep.as_ref().is_none_or(|keep| keep[row]);
            if let (Some((reason, value)), true) = (fault, kept) {
                reader.route(BadRow {
                    path: reader.file.name.clone(),
                    location: Location::Row(first_row + row as u64 + 1),
                    column: Some(spec.name.clone()),
                    value,
                    reason: reason.to_owned(),
                    raw: Some(raw_row(reader, &columns, row)),
                })?;
                keep.get_or_insert_with(|| vec![true; num_rows])[row] = false;
            }
        }
    }
    let Some(keep) = keep else { return Ok(columns) };
    let keep = BooleanArray::from(keep);
    Ok(columns
        .iter()
        .map(|c| filter(c, &keep))
        .collect::<Result<_, _>>()
        .map_err(DataFusionError::from)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    use super::*;
    use crate::ingest::testing::{push_rows, source};
    use crate::ingest::{BadRowPolicy, Format};

    /// Reads a 33-row file of 5 row groups whose float is `bad` at row
    /// `at` (0-based), in parallel (`read`) and sequentially: rows as text,
    /// or the error.
    fn both_reads(at: usize, bad: f64) -> [std::result::Result<Vec<String>, String>; 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        let n = 33;
        let x: Vec<f64> = (0..n)
            .map(|i| if i == at { bad } else { i as f64 })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Float64Array::from(x)),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    (0..n as i64).map(|i| i * 1_000_000),
                )),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(7))
            .build();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(props))
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let (layout, file) = source(
            &path,
            Format::Parquet,
            r#"{ id = "int64", x = "float64", ts = "timestamp" }"#,
        );
        let reader = FileReader {
            file: &file,
            layout: &layout,
            batch_rows: 4,
            policy: BadRowPolicy::Fail,
            bad: std::sync::Mutex::new(Vec::new()),
        };
        let run = |parallel: bool| {
            let mut rows = Vec::new();
            let mut emit = |batch: RecordBatch| {
                push_rows(&batch, &mut rows);
                true
            };
            let read = if parallel {
                read(&reader, &mut emit)
            } else {
                read_groups(&reader, None, 0, &mut emit)
            };
            match read {
                Ok(count) => {
                    assert_eq!(count, Some(rows.len() as u64));
                    Ok(rows)
                }
                Err(e) => Err(e.to_string()),
            }
        };
        [run(true), run(false)]
    }

    #[test]
    fn row_groups_read_in_parallel_as_in_sequence() {
        let [parallel, sequential] = both_reads(0, 1.0);
        assert_eq!(parallel.as_ref().map(Vec::len), Ok(33));
        assert_eq!(parallel, sequential);
        // A bad value in the fourth row group: the same error, with the
        // row counted from the file's start.
        let [parallel, sequential] = both_reads(23, f64::NAN);
        assert!(
            parallel.as_ref().is_err_and(|e| e.contains("row 24")),
            "{parallel:?}"
        );
        assert_eq!(parallel, sequential);
    }
}
