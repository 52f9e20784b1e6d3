//! `leakless audit`: a sample of any dataset's rows (built by leakless,
//! Spark, a notebook) recomputed from the raw sources with the spec's
//! definitions, column by column, with a diagnosis of the leakage that
//! explains the mismatches (docs/semantics.md, "Audit").
//!
//! The dataset's rows are found by the spine columns and time. The spine
//! source's rows with those values are written to a scratch file and built
//! with the spec (the operator the oracles check) as the spine of a copy of
//! it; the same rows with their time moved give the leaky variants: `t +
//! 1 µs` (events at exactly `t` included), past the last event (the whole
//! log; a dimension's latest version), and `t + w / 2` for each feature
//! window `w` (a window centred on `t`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{BadRowPolicy, Source};
use crate::spec::{ColumnType, Role, Spec, ValueType, Window};

/// The diagnosis of the variant past every event, for an event column.
const WHOLE_LOG: &str =
    "future leakage: matches the value over the whole log (events after t included)";
/// The same, for a dimension's column.
const SNAPSHOT: &str = "as-of leakage: matches the dimension's latest version (a current snapshot) instead of the version valid at t";

/// The columns a leaky variant (a moved time) can explain: what the move
/// means is a mistake in those only. A label looks after `t` by its
/// definition; none explains it.
#[derive(Debug, Clone, Copy)]
enum Explains {
    /// `t + 1 µs`: every feature.
    Features,
    /// Past every event: a lifetime feature, or a dimension's (a sliding
    /// window there is empty, which would "explain" any wrong 0).
    WholeLog,
    /// `t + w/2`: a feature over a window of `w`.
    Window(i64),
}

impl Explains {
    fn applies(self, derived: Option<&crate::spec::Derived>) -> bool {
        let Some(d) = derived.filter(|d| d.role == Role::Feature) else {
            return false;
        };
        match self {
            Explains::Features => true,
            Explains::WholeLog => !matches!(d.window, Some(Window::Micros(_))),
            Explains::Window(w) => d.window == Some(Window::Micros(w)),
        }
    }
}

/// How an audit runs.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Rows recomputed (every row when the dataset has fewer).
    pub sample: usize,
    pub seed: u64,
    /// Our column name -> the dataset's.
    pub columns: Vec<(String, String)>,
    /// Label windows closed up to here (default: the spec's watermark,
    /// else each label source's last event).
    pub watermark: Option<i64>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            sample: 10_000,
            seed: 0,
            columns: Vec::new(),
            watermark: None,
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub dataset: String,
    /// Rows in the dataset, and rows recomputed.
    pub rows: u64,
    pub sampled: u64,
    /// Sampled rows whose spine columns and time are no spine row.
    pub not_in_spine: u64,
    /// Sampled rows that should have been held back: a label window still
    /// open at the watermark.
    pub immature: u64,
    /// Sampled rows the spine's `where` drops.
    pub filtered: u64,
    /// Up to 5 of each of the three above.
    pub row_examples: Vec<String>,
    pub columns: Vec<ColumnAudit>,
    /// No mismatch and no row that should not be there.
    pub clean: bool,
}

/// One output column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnAudit {
    pub column: String,
    /// Its name in the dataset.
    pub theirs: String,
    pub checked: u64,
    pub matching: u64,
    pub mismatching: u64,
    pub examples: Vec<Mismatch>,
    /// The leakage that explains most mismatches, and how many it explains.
    pub diagnosis: Option<String>,
    pub explained: u64,
}

/// One row where the dataset and the definition differ.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// The spine columns and time.
    pub row: String,
    pub theirs: String,
    pub expected: String,
}

/// A value, compared across tools: integers exactly, floats to 1e-9
/// relative (another tool may add in another order), text and booleans
/// exactly; times as UTC microseconds.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl Cell {
    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
            }
            (Cell::Int(a), Cell::Float(b)) | (Cell::Float(b), Cell::Int(a)) => {
                Cell::Float(*a as f64).same(&Cell::Float(*b))
            }
            (a, b) => a == b,
        }
    }

    /// A hashable form (for keys).
    fn key(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => format!("{:x}", v.to_bits()),
            Cell::Text(t) => format!("{t:?}"),
            Cell::Bool(b) => b.to_string(),
        }
    }

    fn show(&self, ty: ValueType) -> String {
        match (self, ty) {
            (Cell::Int(v), ValueType::Timestamp) => crate::time::format_rfc3339(*v),
            (Cell::Null, _) => "null".into(),
            (Cell::Int(v), _) => v.to_string(),
            (Cell::Float(v), _) => v.to_string(),
            (Cell::Text(t), _) => format!("{t:?}"),
            (Cell::Bool(b), _) => b.to_string(),
        }
    }
}

/// `array` (any type the other tool wrote) as cells of type `ty`.
fn cells(array: &ArrayRef, ty: ValueType) -> Result<Vec<Cell>> {
    let engine = |e: datafusion::arrow::error::ArrowError| Error::Engine(Box::new(e.into()));
    let is_float = matches!(
        array.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    ) || matches!(
        array.data_type(),
        DataType::Decimal128(..) | DataType::Decimal256(..)
    );
    let out = match ty {
        ValueType::Float64 => floats(&cast(array, &DataType::Float64).map_err(engine)?),
        ValueType::Int64 | ValueType::Int8 if is_float => {
            floats(&cast(array, &DataType::Float64).map_err(engine)?)
        }
        ValueType::Int64 | ValueType::Int8 => {
            let ints = cast(array, &DataType::Int64).map_err(engine)?;
            (ints.as_primitive::<Int64Type>().iter())
                .map(|v| v.map_or(Cell::Null, Cell::Int))
                .collect()
        }
        ValueType::Timestamp => {
            let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let times = cast(array, &target).map_err(engine)?;
            (times.as_primitive::<TimestampMicrosecondType>().iter())
                .map(|v| v.map_or(Cell::Null, Cell::Int))
                .collect()
        }
        ValueType::String => {
            let texts = cast(array, &DataType::Utf8).map_err(engine)?;
            (texts.as_string::<i32>().iter())
                .map(|v| v.map_or(Cell::Null, |t| Cell::Text(t.to_owned())))
                .collect()
        }
        ValueType::Bool => {
            let bools = cast(array, &DataType::Boolean).map_err(engine)?;
            (bools.as_boolean().iter())
                .map(|v| v.map_or(Cell::Null, Cell::Bool))
                .collect()
        }
    };
    Ok(out)
}

fn floats(array: &ArrayRef) -> Vec<Cell> {
    (array.as_primitive::<Float64Type>().iter())
        .map(|v| v.map_or(Cell::Null, Cell::Float))
        .collect()
}

/// The Parquet files of `path`: the file itself, or every data file below
/// the folder (names starting with `_` or `.` skipped, as readers do).
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    match path.is_file() {
        true => Ok(vec![path.to_owned()]),
        false => crate::write::data_files(path),
    }
}

/// The columns `columns` of every batch of `path`, in that order (a
/// column named twice comes twice).
fn read_batches(path: &Path, columns: &[String]) -> Result<Vec<Vec<ArrayRef>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let schema = builder.schema().clone();
    let mut roots = Vec::new();
    for name in columns {
        let found = schema.fields().iter().position(|f| f.name() == name);
        roots.push(found.ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::Invalid(format!(
                "`{}` has no column `{name}` (it has: {}); map a column with --column OURS=THEIRS",
                path.display(),
                names.join(", ")
            ))
        })?);
    }
    // A projection keeps the file's order: the columns are found by name.
    let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).build().map_err(parquet)?;
    let mut all = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::Engine(Box::new(e.into())))?;
        let picked = (columns.iter())
            .map(|name| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    Error::Invalid(format!("`{}`: column `{name}` not read", path.display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        all.push(picked);
    }
    Ok(all)
}

fn file_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| Error::Parquet {
            path: path.to_owned(),
            source,
        })?;
    Ok(builder.metadata().file_metadata().num_rows() as u64)
}

/// The sampled rows: positions `0..n` in file order, `sample` of them
/// drawn with `seed` (all when there are fewer).
fn positions(total: u64, sample: usize, seed: u64) -> HashSet<u64> {
    if total <= sample as u64 {
        return (0..total).collect();
    }
    // Floyd's algorithm: `sample` distinct draws.
    let mut rng = crate::synth::rng::Rng::new(seed);
    let mut chosen = HashSet::with_capacity(sample);
    for j in (total - sample as u64)..total {
        let t = rng.below(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen
}

/// One build of the spec over the sampled spine rows with their time
/// moved by `shift`: expected cells per row key (the key of the unshifted
/// row), and the build's label watermarks.
struct Variant {
    rows: HashMap<String, Vec<Cell>>,
    watermarks: BTreeMap<String, String>,
}

/// The sampled spine rows (the spine source's declared columns).
struct SpineSample {
    batches: Vec<RecordBatch>,
    /// Positions of the spine columns and the time in the batches.
    key_columns: Vec<usize>,
    time: usize,
}

/// The key of each row of `batches`: the spine columns then the time.
fn row_keys(
    batches: &[RecordBatch],
    columns: &[usize],
    types: &[ValueType],
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for batch in batches {
        let parts: Vec<Vec<Cell>> = (columns.iter().zip(types))
            .map(|(&c, &ty)| cells(batch.column(c), ty))
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let key: Vec<String> = parts.iter().map(|p| p[row].key()).collect();
            keys.push(key.join("|"));
        }
    }
    Ok(keys)
}

/// Audits the local dataset (folder or file) `dataset` against `spec`.
pub async fn audit(spec: &Spec, dataset: &Path, options: &AuditOptions) -> Result<Audit> {
    let outputs = spec.output_columns();
    let theirs = |ours: &str| -> String {
        (options.columns.iter())
            .find(|(o, _)| o == ours)
            .map_or_else(|| ours.to_owned(), |(_, t)| t.clone())
    };
    // The spine columns and time identify a row.
    let mut key_names: Vec<String> = spec.spine.columns.clone();
    key_names.push(spec.spine.time.clone());
    let key_types: Vec<ValueType> = (key_names.iter())
        .map(|n| {
            outputs
                .iter()
                .find(|c| c.name == *n)
                .map(|c| c.ty)
                .unwrap_or(ValueType::String)
        })
        .collect();
    let compared: Vec<&crate::spec::OutputColumn> = outputs
        .iter()
        .filter(|c| !key_names.contains(&c.name))
        .collect();
    let wanted: Vec<String> = (key_names.iter())
        .chain(compared.iter().map(|c| &c.name))
        .map(|n| theirs(n))
        .collect();

    // 1. The sample of their rows: keys and values.
    let files = parquet_files(dataset)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "`{}` has no Parquet file",
            dataset.display()
        )));
    }
    let counts: Vec<u64> = files.iter().map(|f| file_rows(f)).collect::<Result<_>>()?;
    let total: u64 = counts.iter().sum();
    let chosen = positions(total, options.sample, options.seed);
    let mut sampled: Vec<(String, Vec<Cell>, Vec<Cell>)> = Vec::new(); // key, key cells, values
    let mut first = 0u64;
    for (file, &n) in files.iter().zip(&counts) {
        if !(first..first + n).any(|p| chosen.contains(&p)) {
            first += n;
            continue;
        }
        for batch in read_batches(file, &wanted)? {
            let rows_in_batch = batch.first().map_or(0, |c| c.len());
            let columns: Vec<Vec<Cell>> = (0..wanted.len())
                .map(|i| {
                    let ty = match i < key_names.len() {
                        true => key_types[i],
                        false => compared[i - key_names.len()].ty,
                    };
                    cells(&batch[i], ty)
                })
                .collect::<Result<_>>()?;
            let (key_columns, value_columns) = columns.split_at(key_names.len());
            let rows = (0..rows_in_batch).filter(|&r| chosen.contains(&(first + r as u64)));
            for row in rows {
                let key_cells: Vec<Cell> = key_columns.iter().map(|c| c[row].clone()).collect();
                let key: Vec<String> = key_cells.iter().map(Cell::key).collect();
                let values = value_columns.iter().map(|c| c[row].clone()).collect();
                sampled.push((key.join("|"), key_cells, values));
            }
            first += rows_in_batch as u64;
        }
    }

    // 2. The spine source's rows with those keys.
    let wanted_keys: HashSet<&str> = sampled.iter().map(|(k, _, _)| k.as_str()).collect();
    let spine_def = spec.spine_source();
    // Bad rows are set aside, as a build that quarantined them did.
    let scratch = Scratch::new()?;
    let mut source = Source::open(spine_def, BadRowPolicy::Quarantine)?
        .with_quarantine(scratch.path().join("_bad_rows"));
    source.fetch(&scratch.path().join("_inputs"))?;
    let layout = source.layout.clone();
    let position = |name: &str| layout.columns.iter().position(|c| c.name == name);
    let key_columns: Vec<usize> = (key_names.iter())
        .map(|n| {
            position(n)
                .ok_or_else(|| Error::Invalid(format!("the spine source has no column `{n}`")))
        })
        .collect::<Result<_>>()?;
    let time = *key_columns.last().expect("the time is a key column");
    let mut batches = Vec::new();
    let mut failure = None;
    for index in 0..source.files.len() {
        source.read_file(index, 8192, &mut |batch: RecordBatch| {
            let keys = match row_keys(std::slice::from_ref(&batch), &key_columns, &key_types) {
                Ok(keys) => keys,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            let mask: BooleanArray = keys
                .iter()
                .map(|k| Some(wanted_keys.contains(k.as_str())))
                .collect();
            match filter_record_batch(&batch, &mask) {
                Ok(kept) if kept.num_rows() > 0 => batches.push(kept),
                Ok(_) => {}
                Err(e) => {
                    failure = Some(Error::Engine(Box::new(e.into())));
                    return false;
                }
            }
            true
        })?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let spine = SpineSample {
        batches,
        key_columns,
        time,
    };
    let in_spine: HashSet<String> = row_keys(&spine.batches, &spine.key_columns, &key_types)?
        .into_iter()
        .collect();

    // 3. The definitions, and the leaky variants.
    let base = run_variant(
        spec,
        &spine,
        &layout.schema,
        scratch.path(),
        0,
        options.watermark,
        &compared,
        &key_types,
    )
    .await?;
    let far = crate::time::parse_timestamp_micros(b"2199-01-01T00:00:00Z").expect("a valid time");
    let spine_max = spine_max_time(&spine);
    let mut variants: Vec<(String, Variant, Explains)> = Vec::new();
    let derived = |name: &str| spec.derived.iter().find(|d| d.name == name);
    // A move no compared column can be explained by is not built.
    let useful = |e: Explains| compared.iter().any(|c| e.applies(derived(&c.name)));
    let every = Some(i64::MAX / 4);
    variants.push((
        "tie leakage: matches a window that includes events at exactly t (`<=` where the definition has `<`)".into(),
        run_variant(spec, &spine, &layout.schema, scratch.path(), 1, every, &compared, &key_types).await?,
        Explains::Features,
    ));
    if let Some(max) = spine_max
        && useful(Explains::WholeLog)
    {
        variants.push((
            WHOLE_LOG.into(),
            run_variant(
                spec,
                &spine,
                &layout.schema,
                scratch.path(),
                far - max,
                every,
                &compared,
                &key_types,
            )
            .await?,
            Explains::WholeLog,
        ));
    }
    let mut windows: Vec<i64> = (spec.derived.iter())
        .filter(|d| d.role == Role::Feature)
        .filter_map(|d| match d.window {
            Some(Window::Micros(w)) => Some(w),
            _ => None,
        })
        .collect();
    windows.sort_unstable();
    windows.dedup();
    for w in windows {
        variants.push((
            format!(
                "future leakage: matches a window centred on t (events up to t + {})",
                crate::spec::format_duration(w / 2)
            ),
            run_variant(
                spec,
                &spine,
                &layout.schema,
                scratch.path(),
                w / 2,
                every,
                &compared,
                &key_types,
            )
            .await?,
            Explains::Window(w),
        ));
    }

    // 4. Rows that should not be there.
    let plan = crate::temporal::PitPlan::new(spec.clone(), None);
    let ends: Vec<(String, i64)> = plan
        .labels()
        .map(|(c, _)| (c.derived.name.clone(), c.hi))
        .collect();
    let watermark_of = |label: &str| {
        (base.watermarks.get(label)).and_then(|w| crate::time::parse_timestamp_micros(w.as_bytes()))
    };
    let (mut not_in_spine, mut immature, mut filtered) = (0u64, 0u64, 0u64);
    let mut row_examples = Vec::new();
    let show_key = |cells: &[Cell]| -> String {
        (key_names.iter().zip(cells).zip(&key_types))
            .map(|((n, c), &ty)| format!("{n}={}", c.show(ty)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut column_audits: Vec<ColumnAudit> = compared
        .iter()
        .map(|c| ColumnAudit {
            column: c.name.clone(),
            theirs: theirs(&c.name),
            checked: 0,
            matching: 0,
            mismatching: 0,
            examples: Vec::new(),
            diagnosis: None,
            explained: 0,
        })
        .collect();
    let mut explained: Vec<Vec<u64>> = vec![vec![0; variants.len()]; compared.len()];
    // Which moves can explain which column.
    let applies: Vec<Vec<bool>> = (compared.iter())
        .map(|c| {
            (variants.iter())
                .map(|(_, _, explains)| explains.applies(derived(&c.name)))
                .collect()
        })
        .collect();
    for (key, key_cells, values) in &sampled {
        let Some(expected) = base.rows.get(key) else {
            let t = match key_cells.last() {
                Some(Cell::Int(t)) => Some(*t),
                _ => None,
            };
            let open = t.is_some_and(|t| {
                ends.iter().any(|(label, end)| {
                    watermark_of(label).is_some_and(|w| t.saturating_add(*end) > w)
                })
            });
            let why = if !in_spine.contains(key) {
                not_in_spine += 1;
                "is no spine row"
            } else if open {
                immature += 1;
                "should have been held back: a label window is still open at the watermark"
            } else {
                filtered += 1;
                "is dropped by the spine's `where`"
            };
            if row_examples.len() < 15 {
                row_examples.push(format!("{} {why}", show_key(key_cells)));
            }
            continue;
        };
        for (i, column) in compared.iter().enumerate() {
            let audit = &mut column_audits[i];
            audit.checked += 1;
            if values[i].same(&expected[i]) {
                audit.matching += 1;
                continue;
            }
            audit.mismatching += 1;
            if audit.examples.len() < 5 {
                audit.examples.push(Mismatch {
                    row: show_key(key_cells),
                    theirs: values[i].show(column.ty),
                    expected: expected[i].show(column.ty),
                });
            }
            for (v, (_, variant, _)) in variants.iter().enumerate() {
                if applies[i][v]
                    && variant
                        .rows
                        .get(key)
                        .is_some_and(|alt| values[i].same(&alt[i]))
                {
                    explained[i][v] += 1;
                }
            }
        }
    }
    for (i, audit) in column_audits.iter_mut().enumerate() {
        let best = (0..variants.len()).max_by_key(|&v| (explained[i][v], std::cmp::Reverse(v)));
        // A move that explains half the mismatches or fewer names nothing:
        // the column is wrong some other way (a join that missed rows).
        if let Some(v) = best.filter(|&v| 2 * explained[i][v] > audit.mismatching) {
            let dimension = (spec.derived.iter())
                .find(|d| d.name == audit.column)
                .and_then(|d| spec.source(&d.source))
                .is_some_and(|s| s.is_dimension());
            audit.diagnosis = Some(match variants[v].0.as_str() {
                WHOLE_LOG if dimension => SNAPSHOT.to_owned(),
                text => text.to_owned(),
            });
            audit.explained = explained[i][v];
        }
    }
    let clean =
        not_in_spine + immature + filtered == 0 && column_audits.iter().all(|c| c.mismatching == 0);
    Ok(Audit {
        dataset: dataset.display().to_string(),
        rows: total,
        sampled: sampled.len() as u64,
        not_in_spine,
        immature,
        filtered,
        row_examples,
        columns: column_audits,
        clean,
    })
}

fn spine_max_time(spine: &SpineSample) -> Option<i64> {
    let mut max = None;
    for batch in &spine.batches {
        let times = batch
            .column(spine.time)
            .as_primitive::<TimestampMicrosecondType>();
        for t in times.iter().flatten() {
            max = Some(max.map_or(t, |m: i64| m.max(t)));
        }
    }
    max
}

/// Builds `spec` with the sampled spine rows, their time moved by `shift`,
/// as its spine; the rows it wrote by the key of their unshifted row.
#[allow(clippy::too_many_arguments)]
async fn run_variant(
    spec: &Spec,
    spine: &SpineSample,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    scratch: &Path,
    shift: i64,
    watermark: Option<i64>,
    compared: &[&crate::spec::OutputColumn],
    key_types: &[ValueType],
) -> Result<Variant> {
    let name = format!("spine-{shift}");
    let file = scratch.join(format!("{name}.parquet"));
    let writer_file = std::fs::File::create(&file).map_err(|e| Error::io("creating", &file, e))?;
    let parquet = |source| Error::Parquet {
        path: file.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(writer_file, schema.clone(), None).map_err(parquet)?;
    for batch in &spine.batches {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let times = batch
            .column(spine.time)
            .as_primitive::<TimestampMicrosecondType>();
        let moved: Int64Array = times
            .iter()
            .map(|t| t.map(|t| t.saturating_add(shift)))
            .collect();
        columns[spine.time] = cast(
            &(Arc::new(moved) as ArrayRef),
            batch.column(spine.time).data_type(),
        )
        .map_err(|e| Error::Engine(Box::new(e.into())))?;
        let moved = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::Engine(Box::new(e.into())))?;
        writer.write(&moved).map_err(parquet)?;
    }
    writer.close().map_err(parquet)?;

    // The spec with the sample as its spine (the spine source stays an
    // indexed source where features read it).
    let mut spec = spec.clone();
    let mut def = spec.spine_source().clone();
    def.name = "__audit_spine".into();
    def.path = file.clone();
    def.ignore = Vec::new();
    if let Some(columns) = def.columns.as_mut() {
        for c in columns
            .iter_mut()
            .filter(|c| c.ty.value_type() == ValueType::Timestamp)
        {
            c.ty = ColumnType::Timestamp;
        }
    }
    spec.sources.push(def);
    spec.spine.source = "__audit_spine".into();
    // The spec's gates are the dataset's, not the sample's.
    spec.checks.clear();
    let out = scratch.join(format!("out-{name}"));
    let summary = crate::Build::from_spec(spec, &out)
        .with_bad_rows(BadRowPolicy::Quarantine)
        .with_max_bad_rows(Some(1.0))
        .with_watermark(watermark)
        .with_watermark_margin(i64::MAX / 4)
        .with_profile(false)
        .execute()
        .await?;
    let mut rows = HashMap::new();
    for batch in summary_columns(&out)? {
        // The output begins with the spine columns and the time.
        let mut key_parts: Vec<Vec<Cell>> = Vec::new();
        for (p, &ty) in key_types.iter().enumerate() {
            let mut cells = cells(batch.column(p), ty)?;
            if p == key_types.len() - 1 {
                for c in cells.iter_mut() {
                    if let Cell::Int(t) = c {
                        *t -= shift;
                    }
                }
            }
            key_parts.push(cells);
        }
        let values: Vec<Vec<Cell>> = compared
            .iter()
            .map(|c| {
                let column = batch.column_by_name(&c.name).expect("an output column");
                cells(column, c.ty)
            })
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let key: Vec<String> = key_parts.iter().map(|k| k[row].key()).collect();
            rows.entry(key.join("|"))
                .or_insert_with(|| values.iter().map(|v| v[row].clone()).collect());
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(Variant {
        rows,
        watermarks: summary.watermarks,
    })
}

/// A folder of the audit's own under the system's temporary folder,
/// removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static MADE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leakless-audit-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every batch of a dataset leakless wrote (columns in output order).
fn summary_columns(out: &Path) -> Result<Vec<RecordBatch>> {
    let mut all = Vec::new();
    for path in crate::write::data_files(out)? {
        all.extend(super::drift::read_parquet(&path)?);
    }
    Ok(all)
}
