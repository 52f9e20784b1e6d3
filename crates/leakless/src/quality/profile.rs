//! The profile of a dataset (`_profile.json`): per output partition and
//! column, computed by the writer from the batches it writes (never by a
//! second read), in the rows' own order, so the same rows give the same
//! numbers whatever the partitioning of the plan.
//!
//! Exact: rows, nulls, min and max; mean and standard deviation
//! (population, over the non-null values) from sums of the values less the
//! partition's first value, in four running sums by row position
//! ([`Moments`]). Sketched, each named in the file:
//! quantiles over a systematic sample (every `2^k`-th non-null value, `k`
//! the smallest that keeps at most [`SAMPLE`] x 2 values: exact below that),
//! distinct values exactly up to [`EXACT_DISTINCT`], beyond by HyperLogLog
//! with 2^[`HLL_BITS`] registers (standard error 1.04 / 2^(HLL_BITS/2) =
//! 1.6 %), and a string column's top values
//! by Misra-Gries with [`COUNTERS`] counters (exact when the partition has
//! at most that many distinct values; otherwise each count is low by at
//! most `rows / (COUNTERS + 1)`).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int8Type, Int64Type, TimestampMicrosecondType,
};
use serde::{Deserialize, Serialize};

/// A quantile sample holds between this many and twice as many values.
pub const SAMPLE: usize = 4096;
/// HyperLogLog registers: 2^HLL_BITS.
pub const HLL_BITS: u32 = 12;
/// Distinct values counted exactly up to this many (then HyperLogLog).
pub const EXACT_DISTINCT: usize = 1024;
/// Misra-Gries counters of a string column's top values.
pub const COUNTERS: usize = 64;
/// Top values reported per string column.
pub const TOP: usize = 10;
/// The quantiles reported, in percent.
pub const QUANTILES: [u32; 7] = [1, 5, 25, 50, 75, 95, 99];

/// One output partition's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionProfile {
    /// The folder (`dt=2026-10-01`; empty without partitioning).
    pub partition: String,
    pub rows: u64,
    /// Spine rows of this partition held back as immature.
    pub held_back: u64,
    /// Per label: rows where it is neither 0 nor null, and their share of
    /// the rows.
    pub labels: BTreeMap<String, LabelRate>,
    pub columns: Vec<ColumnProfile>,
}

/// How often a label is positive in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelRate {
    pub positive: u64,
    pub rate: f64,
}

impl PartitionProfile {
    /// A partition with no rows written (all held back, say).
    pub fn empty(partition: String) -> Self {
        PartitionProfile {
            partition,
            rows: 0,
            held_back: 0,
            labels: BTreeMap::new(),
            columns: Vec::new(),
        }
    }
}

/// One column of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    pub nulls: u64,
    /// Smallest and largest non-null value (a timestamp as RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    /// Over the non-null values of a numeric, boolean (as 0/1) or
    /// timestamp (µs) column.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "float_text::option"
    )]
    pub mean: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "float_text::option"
    )]
    pub std: Option<f64>,
    /// p1, p5, p25, p50, p75, p95, p99 (nearest rank over the sample).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "float_text::map"
    )]
    pub quantiles: Option<BTreeMap<String, f64>>,
    /// Distinct non-null values (HyperLogLog estimate).
    pub distinct: u64,
    /// A string column's most frequent values and their counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<(String, u64)>>,
}

/// `_profile.json`: the profile of every partition folder of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetProfile {
    pub feature_set_hash: String,
    /// How each figure is computed ([`methods`]).
    pub methods: serde_json::Value,
    /// In folder order; a folder whose rows were all held back has rows 0.
    pub partitions: Vec<PartitionProfile>,
}

/// The profile's file name in a dataset.
pub const FILE_NAME: &str = "_profile.json";

impl DatasetProfile {
    /// The writers' partition profiles, each folder once, with the held-back
    /// rows of each folder.
    pub fn assemble(
        feature_set_hash: String,
        mut partitions: Vec<PartitionProfile>,
        held_back: impl IntoIterator<Item = (String, u64)>,
    ) -> crate::Result<Self> {
        partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
        if let Some(twice) = partitions
            .windows(2)
            .find(|w| w[0].partition == w[1].partition)
        {
            return Err(crate::Error::Invalid(format!(
                "partition `{}` was profiled by two writers",
                twice[0].partition
            )));
        }
        for (folder, n) in held_back {
            let at = match partitions.binary_search_by(|p| p.partition.cmp(&folder)) {
                Ok(at) => at,
                Err(at) => {
                    partitions.insert(at, PartitionProfile::empty(folder));
                    at
                }
            };
            partitions[at].held_back += n;
        }
        Ok(DatasetProfile {
            feature_set_hash,
            methods: methods(),
            partitions,
        })
    }

    pub fn held_back(&self) -> u64 {
        self.partitions.iter().map(|p| p.held_back).sum()
    }

    /// Writes `dir/_profile.json` (under a hidden name first).
    pub fn write(&self, dir: &std::path::Path) -> crate::Result<()> {
        let path = dir.join(FILE_NAME);
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| crate::Error::Invalid(format!("encoding the profile: {e}")))?;
        bytes.push(b'\n');
        crate::write::write_whole(&path, &bytes)
    }

    /// Reads a dataset's profile (a local dataset, or a Delta table's
    /// latest version).
    pub fn read(dataset: &std::path::Path) -> crate::Result<Self> {
        let path = crate::write::delta::meta_dir(dataset)?.join(FILE_NAME);
        let bytes = std::fs::read(&path).map_err(|e| crate::Error::io("reading", &path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| crate::Error::Invalid(format!("reading {}: {e}", path.display())))
    }
}

/// What the profile file says of its sketches.
pub fn methods() -> serde_json::Value {
    serde_json::json!({
        "std": "population standard deviation over the non-null values",
        "quantiles": format!(
            "nearest rank over a systematic sample: every 2^k-th non-null value in row order, at most {} values (exact below)",
            2 * SAMPLE
        ),
        "distinct": format!(
            "exact up to {EXACT_DISTINCT} values, beyond HyperLogLog with {} registers, standard error {:.1}%",
            1u32 << HLL_BITS,
            104.0 / f64::from(1u32 << (HLL_BITS / 2))
        ),
        "top": format!(
            "Misra-Gries, {COUNTERS} counters: exact with at most {COUNTERS} distinct values, else each count low by at most rows / {}",
            COUNTERS + 1
        ),
    })
}

/// Accumulates one partition's profile, batch by batch.
pub struct Profiler {
    names: Vec<String>,
    columns: Vec<ColumnAcc>,
    /// Label positions and their positive rows.
    labels: Vec<(usize, u64)>,
    rows: u64,
    scratch: Scratch,
}

impl Profiler {
    /// `labels`: the positions of the label columns.
    pub fn new(schema: &datafusion::arrow::datatypes::Schema, labels: &[usize]) -> Self {
        Profiler {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            columns: (schema.fields().iter())
                .map(|f| ColumnAcc::new(f.data_type()))
                .collect(),
            labels: labels.iter().map(|&i| (i, 0)).collect(),
            rows: 0,
            scratch: Scratch::default(),
        }
    }

    pub fn push(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (acc, column) in self.columns.iter_mut().zip(batch.columns()) {
            acc.push(column, &mut self.scratch);
        }
        for (i, positive) in &mut self.labels {
            *positive += positives(batch.column(*i));
        }
    }

    pub fn finish(self, partition: String) -> PartitionProfile {
        let rows = self.rows;
        PartitionProfile {
            partition,
            rows,
            held_back: 0,
            labels: (self.labels.iter())
                .map(|&(i, positive)| {
                    let rate = match rows {
                        0 => 0.0,
                        _ => positive as f64 / rows as f64,
                    };
                    (self.names[i].clone(), LabelRate { positive, rate })
                })
                .collect(),
            columns: (self.names.into_iter())
                .zip(self.columns)
                .map(|(name, acc)| acc.finish(name))
                .collect(),
        }
    }
}

/// Values of `column` that are neither 0 nor null (a label's positives).
pub fn positives(column: &ArrayRef) -> u64 {
    let nonzero = match column.data_type() {
        DataType::Int8 => (column.as_primitive::<Int8Type>().iter())
            .filter(|v| v.is_some_and(|v| v != 0))
            .count(),
        DataType::Int64 => (column.as_primitive::<Int64Type>().iter())
            .filter(|v| v.is_some_and(|v| v != 0))
            .count(),
        DataType::Float64 => (column.as_primitive::<Float64Type>().iter())
            .filter(|v| v.is_some_and(|v| v != 0.0))
            .count(),
        _ => column.len() - column.null_count(),
    };
    nonzero as u64
}

/// How a column's values are read.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int8,
    Int64,
    Float64,
    Time,
    Bool,
    Text,
    Other,
}

struct ColumnAcc {
    kind: Kind,
    nulls: u64,
    moments: Moments,
    /// Smallest and largest: exact integers for integer and time columns.
    min_int: i64,
    max_int: i64,
    sample: Sample,
    hll: Box<[u8; 1 << HLL_BITS]>,
    exact: SmallSet,
    top: MisraGries,
}

/// Buffers a column's chunk passes through (one set for all columns, so
/// that they stay in cache).
#[derive(Default)]
struct Scratch {
    /// The non-null values as f64.
    values: Vec<f64>,
    /// Their hashes, for the distinct count.
    hashes: Vec<u64>,
    /// An integer column's non-null values.
    ints: Vec<i64>,
}

/// Rows a column is profiled in at a time (its scratch fits in cache).
const CHUNK: usize = 2048;

impl ColumnAcc {
    fn new(data_type: &DataType) -> Self {
        let kind = match data_type {
            DataType::Int8 => Kind::Int8,
            DataType::Int64 => Kind::Int64,
            DataType::Float64 => Kind::Float64,
            DataType::Timestamp(..) => Kind::Time,
            DataType::Boolean => Kind::Bool,
            DataType::Utf8 => Kind::Text,
            _ => Kind::Other,
        };
        ColumnAcc {
            kind,
            nulls: 0,
            moments: Moments::default(),
            min_int: i64::MAX,
            max_int: i64::MIN,
            sample: Sample::default(),
            hll: Box::new([0; 1 << HLL_BITS]),
            exact: SmallSet::default(),
            top: MisraGries::default(),
        }
    }

    fn push(&mut self, column: &ArrayRef, scratch: &mut Scratch) {
        for start in (0..column.len()).step_by(CHUNK) {
            let chunk = column.slice(start, CHUNK.min(column.len() - start));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the processor has the features `push_wide` is
                // compiled for (checked above).
                unsafe { self.push_wide(&chunk, scratch) };
                continue;
            }
            self.push_any(&chunk, scratch);
        }
    }

    /// [`Self::push_any`] compiled for AVX-512 (DQ and VL): the compiler
    /// vectorises the loops over the chunk, 64-bit multiplications and
    /// integer-to-float conversions included. The same operations, so the
    /// same bits: IEEE arithmetic per lane, never a fused multiply-add.
    /// `cargo test --release -p leakless --lib profile::speed -- --ignored
    /// --nocapture` measures each kind of column.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,bmi2,lzcnt,popcnt")]
    fn push_wide(&mut self, column: &ArrayRef, scratch: &mut Scratch) {
        self.push_any(column, scratch);
    }

    #[inline(always)]
    fn push_any(&mut self, column: &ArrayRef, scratch: &mut Scratch) {
        self.nulls += column.null_count() as u64;
        // Tight loops fill the scratch buffers, then the sketches read them.
        let Scratch {
            values,
            hashes,
            ints,
        } = scratch;
        values.clear();
        hashes.clear();
        match self.kind {
            Kind::Int8 => self.ints(column.as_primitive::<Int8Type>(), ints, values, hashes),
            Kind::Int64 => self.ints(column.as_primitive::<Int64Type>(), ints, values, hashes),
            Kind::Time => self.ints(
                column.as_primitive::<TimestampMicrosecondType>(),
                ints,
                values,
                hashes,
            ),
            Kind::Float64 => {
                let floats = column.as_primitive::<Float64Type>();
                match floats.null_count() {
                    0 => values.extend_from_slice(floats.values()),
                    _ => values.extend(floats.iter().flatten()),
                }
                // -0.0 and 0.0 are one value.
                let bits = values
                    .iter()
                    .map(|&v| if v == 0.0 { 0 } else { v.to_bits() });
                hash_all(bits, hashes);
            }
            Kind::Bool => {
                values.extend(
                    column
                        .as_boolean()
                        .iter()
                        .flatten()
                        .map(|v| f64::from(u8::from(v))),
                );
                if let Some(&first) = values.first() {
                    hashes.push(mix(first as u64));
                    if let Some(&other) = values.iter().find(|&&v| v != first) {
                        hashes.push(mix(other as u64));
                    }
                }
            }
            Kind::Text => {
                let texts = column.as_string::<i32>();
                for text in texts.iter().flatten() {
                    let hash = hash_bytes(text.as_bytes());
                    hashes.push(hash);
                    self.top.add(hash, text);
                }
            }
            Kind::Other => {}
        }
        self.distinct(hashes);
        if !values.is_empty() {
            self.moments.add(values);
            self.sample.add(values);
        }
    }

    /// An integer or time column: exact min and max, the values as f64
    /// and their hashes.
    #[inline(always)]
    fn ints<T>(
        &mut self,
        array: &datafusion::arrow::array::PrimitiveArray<T>,
        ints: &mut Vec<i64>,
        values: &mut Vec<f64>,
        hashes: &mut Vec<u64>,
    ) where
        T: datafusion::arrow::datatypes::ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        ints.clear();
        match array.null_count() {
            0 => ints.extend(array.values().iter().map(|&v| v.into())),
            _ => ints.extend(array.iter().flatten().map(Into::into)),
        }
        // Folds, not `Iterator::min` (a chain of compare-and-moves the
        // compiler leaves scalar: 1.5 % of the marketplace build's CPU).
        self.min_int = ints.iter().fold(self.min_int, |m, &v| m.min(v));
        self.max_int = ints.iter().fold(self.max_int, |m, &v| m.max(v));
        values.extend(ints.iter().map(|&v| v as f64));
        hash_all(ints.iter().map(|&v| v as u64), hashes);
    }

    /// Counts the hashes exactly while the set holds them; once it
    /// overflows, every hash it held goes to the HyperLogLog, which counts
    /// from then.
    #[inline(always)]
    fn distinct(&mut self, hashes: &[u64]) {
        let mut rest = hashes;
        if !self.exact.overflowed {
            let Some(at) = hashes.iter().position(|&h| !self.exact.insert(h)) else {
                return;
            };
            for &h in self.exact.held.iter().chain([&hashes[at]]) {
                hll_add(&mut self.hll, h);
            }
            self.exact.held = Vec::new();
            rest = &hashes[at + 1..];
        }
        for &h in rest {
            hll_add(&mut self.hll, h);
        }
    }

    fn finish(self, name: String) -> ColumnProfile {
        let numeric = !matches!(self.kind, Kind::Text | Kind::Other);
        let any = self.moments.n > 0;
        let (min, max) = match self.kind {
            _ if !any => (None, None),
            Kind::Int8 | Kind::Int64 => (Some(self.min_int.into()), Some(self.max_int.into())),
            Kind::Time => (
                Some(crate::time::format_rfc3339(self.min_int).into()),
                Some(crate::time::format_rfc3339(self.max_int).into()),
            ),
            // All NaN: nothing is smaller or larger than anything.
            Kind::Float64 | Kind::Bool if self.moments.min() > self.moments.max() => (None, None),
            Kind::Float64 | Kind::Bool => (
                Some(number(self.moments.min())),
                Some(number(self.moments.max())),
            ),
            _ => (None, None),
        };
        ColumnProfile {
            name,
            nulls: self.nulls,
            min,
            max,
            mean: (numeric && any).then(|| self.moments.mean()),
            std: (numeric && any).then(|| self.moments.std()),
            quantiles: (numeric && any).then(|| self.sample.quantiles()),
            distinct: match self.exact.overflowed {
                false => self.exact.len as u64,
                true => hll_estimate(&self.hll[..]),
            },
            top: (self.kind == Kind::Text).then(|| self.top.top()),
        }
    }
}

/// `x` as JSON: a number, or, when it is not finite (a float sum beyond the
/// float64 range is `inf`), the text `inf`, `-inf` or `NaN`.
fn number(x: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(x) {
        Some(n) => serde_json::Value::Number(n),
        None => serde_json::Value::String(float_text::name(x).into()),
    }
}

/// A profile's `min` or `max` as a float: a number, or the text of a
/// value that is not finite; `None` for a timestamp's RFC 3339 text.
pub fn float_of(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::String(text) => float_text::parse(text),
        other => other.as_f64(),
    }
}

/// Floats of the profile in JSON, which has no number for infinities and
/// NaN: those are written as the text `inf`, `-inf` or `NaN` and read back
/// to the same value (serde_json would write `null`, and then fail to read
/// it as a float).
mod float_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn name(x: f64) -> &'static str {
        match x {
            f64::INFINITY => "inf",
            f64::NEG_INFINITY => "-inf",
            _ => "NaN",
        }
    }

    pub fn parse(text: &str) -> Option<f64> {
        match text {
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => None,
        }
    }

    /// One float, as a number or its text.
    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Float {
        Number(f64),
        Text(String),
    }

    impl Float {
        fn of(x: f64) -> Self {
            match x.is_finite() {
                true => Float::Number(x),
                false => Float::Text(name(x).into()),
            }
        }

        fn value<E: serde::de::Error>(self) -> Result<f64, E> {
            match self {
                Float::Number(x) => Ok(x),
                Float::Text(text) => parse(&text).ok_or_else(|| {
                    E::custom(format!("`{text}` is not a number, inf, -inf or NaN"))
                }),
            }
        }
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            x.map(Float::of).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<Float>::deserialize(d)?
                .map(Float::value)
                .transpose()
        }
    }

    pub mod map {
        use super::*;

        type Map = Option<BTreeMap<String, f64>>;

        pub fn serialize<S: Serializer>(map: &Map, s: S) -> Result<S::Ok, S::Error> {
            map.as_ref()
                .map(|m| {
                    m.iter()
                        .map(|(k, &v)| (k, Float::of(v)))
                        .collect::<BTreeMap<_, _>>()
                })
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
            Option::<BTreeMap<String, Float>>::deserialize(d)?
                .map(|m| m.into_iter().map(|(k, v)| Ok((k, v.value()?))).collect())
                .transpose()
        }
    }
}

/// Count, sums of the values less the first one and of their squares,
/// min and max, each added value by value in row order: the figures depend
/// on the rows and their order only, never on where batches begin. The
/// shift keeps large offsets (timestamps) precise. The sums run in
/// [`LANES`] lanes, the value at position `i` of the partition (counted
/// over non-null values) in lane `i % LANES`, added up in a fixed order at
/// the end: independent chains of additions, still the same bits whatever
/// the batches.
#[derive(Default)]
struct Moments {
    n: u64,
    shift: f64,
    sum: [f64; LANES],
    squares: [f64; LANES],
    min: [f64; LANES],
    max: [f64; LANES],
}

const LANES: usize = 4;

impl Moments {
    #[inline(always)]
    fn add(&mut self, values: &[f64]) {
        if self.n == 0 && !values.is_empty() {
            // An infinite or NaN first value shifts nothing (subtracted
            // from itself it would make every sum NaN).
            self.shift = if values[0].is_finite() {
                values[0]
            } else {
                0.0
            };
            self.min = [f64::INFINITY; LANES];
            self.max = [f64::NEG_INFINITY; LANES];
        }
        // Up to lane 0, whole rounds of lanes in registers, the rest.
        let head = ((LANES - (self.n % LANES as u64) as usize) % LANES).min(values.len());
        values[..head].iter().for_each(|&v| self.add_one(v));
        let chunks = values[head..].chunks_exact(LANES);
        let tail = chunks.remainder();
        let shift = self.shift;
        let (mut sum, mut squares, mut min, mut max) = (self.sum, self.squares, self.min, self.max);
        for chunk in chunks {
            for lane in 0..LANES {
                let v = chunk[lane];
                let d = v - shift;
                sum[lane] += d;
                squares[lane] += d * d;
                min[lane] = if v < min[lane] { v } else { min[lane] };
                max[lane] = if v > max[lane] { v } else { max[lane] };
            }
        }
        (self.sum, self.squares, self.min, self.max) = (sum, squares, min, max);
        self.n += (values.len() - head - tail.len()) as u64;
        tail.iter().for_each(|&v| self.add_one(v));
    }

    /// Adds one value, in the lane of its position.
    fn add_one(&mut self, v: f64) {
        let lane = (self.n % LANES as u64) as usize;
        let d = v - self.shift;
        self.sum[lane] += d;
        self.squares[lane] += d * d;
        self.min[lane] = if v < self.min[lane] {
            v
        } else {
            self.min[lane]
        };
        self.max[lane] = if v > self.max[lane] {
            v
        } else {
            self.max[lane]
        };
        self.n += 1;
    }

    /// The smallest value (the first lane's on equal values such as -0.0
    /// and 0.0).
    fn min(&self) -> f64 {
        self.min
            .iter()
            .copied()
            .fold(f64::INFINITY, |m, v| if v < m { v } else { m })
    }

    fn max(&self) -> f64 {
        self.max
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |m, v| if v > m { v } else { m })
    }

    fn total(lanes: &[f64; LANES]) -> f64 {
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }

    fn mean(&self) -> f64 {
        self.shift + Self::total(&self.sum) / self.n as f64
    }

    /// The population standard deviation; NaN over values that are not
    /// all finite (their sum is not).
    fn std(&self) -> f64 {
        let n = self.n as f64;
        let sum = Self::total(&self.sum);
        if !sum.is_finite() {
            return f64::NAN;
        }
        ((Self::total(&self.squares) - sum * sum / n) / n)
            .max(0.0)
            .sqrt()
    }
}

/// Every `stride`-th value seen (stride a power of two, doubled when the
/// sample reaches twice [`SAMPLE`]).
struct Sample {
    values: Vec<f64>,
    stride: u64,
    seen: u64,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            values: Vec::new(),
            stride: 1,
            seen: 0,
        }
    }
}

impl Sample {
    /// Takes the values at positions (counted from the partition's first
    /// non-null value) that are multiples of the stride.
    fn add(&mut self, values: &[f64]) {
        let end = self.seen + values.len() as u64;
        // The first multiple of the stride at or after `seen`.
        let mut next = self.seen.div_ceil(self.stride) * self.stride;
        while next < end {
            self.values.push(values[(next - self.seen) as usize]);
            if self.values.len() == 2 * SAMPLE {
                // Keep the values at multiples of the doubled stride.
                let kept: Vec<f64> = self.values.iter().copied().step_by(2).collect();
                self.values = kept;
                self.stride *= 2;
                // `next` was an odd multiple of the old stride: the next
                // multiple of the new one follows it.
                next = next.div_ceil(self.stride) * self.stride;
                continue;
            }
            next += self.stride;
        }
        self.seen = end;
    }

    fn quantiles(mut self) -> BTreeMap<String, f64> {
        self.values.sort_by(f64::total_cmp);
        let n = self.values.len();
        QUANTILES
            .iter()
            .map(|&p| {
                // Nearest rank: the smallest value with at least p% at or
                // below it.
                let rank = (u64::from(p) * n as u64).div_ceil(100).max(1) as usize;
                (format!("p{p}"), self.values[rank - 1])
            })
            .collect()
    }
}

/// Appends the hash ([`mix`]) of each of `bits` to `hashes`: a plain map
/// the compiler vectorises.
#[inline(always)]
fn hash_all(bits: impl ExactSizeIterator<Item = u64>, hashes: &mut Vec<u64>) {
    hashes.extend(bits.map(mix));
}

/// A 64-bit mix of `x` (splitmix64's finaliser; a single folded
/// multiplication was tried and overcounts sequential integers by 15 %).
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash of `bytes` (with their length), eight bytes at a time; the last
/// word read overlapping the one before it, short strings by a few loads:
/// no copy.
#[inline(always)]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let (a, b) = if n >= 8 {
        let mut h: u64 = n as u64;
        let mut at = 0;
        while at + 8 < n {
            h = mix(h ^ word(at));
            at += 8;
        }
        (h, word(n - 8))
    } else if n >= 4 {
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                bytes[at..at + 4].try_into().expect("four bytes"),
            ))
        };
        (n as u64, (half(0) << 32) | half(n - 4))
    } else if n > 0 {
        let tail =
            (u64::from(bytes[0]) << 16) | (u64::from(bytes[n / 2]) << 8) | u64::from(bytes[n - 1]);
        (n as u64, tail)
    } else {
        (0, 0)
    };
    mix(mix(a ^ 0x1319_8a2e_0370_7344) ^ b)
}

#[inline]
fn hll_add(registers: &mut [u8; 1 << HLL_BITS], hash: u64) {
    let index = (hash >> (64 - HLL_BITS)) as usize;
    let rest = hash << HLL_BITS;
    let rank = (rest.leading_zeros() + 1).min(64 - HLL_BITS + 1) as u8;
    let register = &mut registers[index];
    *register = (*register).max(rank);
}

/// The HyperLogLog estimate, with linear counting for small cardinalities.
fn hll_estimate(registers: &[u8]) -> u64 {
    let m = registers.len() as f64;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let estimate = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    estimate.round() as u64
}

/// The distinct hashes seen, while at most [`EXACT_DISTINCT`] (open
/// addressing over twice as many slots; 0 marks an empty slot).
struct SmallSet {
    slots: Vec<u64>,
    /// The hashes held, as given (for the HyperLogLog at overflow).
    held: Vec<u64>,
    len: usize,
    overflowed: bool,
}

impl Default for SmallSet {
    fn default() -> Self {
        SmallSet {
            slots: vec![0; 2 * EXACT_DISTINCT],
            held: Vec::new(),
            len: 0,
            overflowed: false,
        }
    }
}

impl SmallSet {
    /// Adds `hash`; `false` when the set has overflowed (with this hash
    /// not added).
    fn insert(&mut self, hash: u64) -> bool {
        let key = hash.max(1);
        let mask = self.slots.len() - 1;
        let mut at = (key as usize) & mask;
        loop {
            match self.slots[at] {
                0 => break,
                h if h == key => return true,
                _ => at = (at + 1) & mask,
            }
        }
        if self.len == EXACT_DISTINCT {
            self.overflowed = true;
            self.slots = Vec::new();
            return false;
        }
        self.slots[at] = key;
        self.held.push(hash);
        self.len += 1;
        true
    }
}

/// Misra-Gries heavy hitters over strings, each counter found by the
/// string's 64-bit hash (computed once for the distinct count).
#[derive(Default)]
struct MisraGries {
    counts: std::collections::HashMap<u64, (String, u64), Hashed>,
}

/// A hasher for keys that are hashes already.
#[derive(Default, Clone, Copy)]
struct Hashed;

impl std::hash::BuildHasher for Hashed {
    type Hasher = HashedHasher;
    fn build_hasher(&self) -> HashedHasher {
        HashedHasher(0)
    }
}

struct HashedHasher(u64);

impl std::hash::Hasher for HashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl MisraGries {
    fn add(&mut self, hash: u64, value: &str) {
        if let Some((_, n)) = self.counts.get_mut(&hash) {
            *n += 1;
        } else if self.counts.len() < COUNTERS {
            self.counts.insert(hash, (value.to_owned(), 1));
        } else {
            self.counts.retain(|_, (_, n)| {
                *n -= 1;
                *n > 0
            });
        }
    }

    /// The largest counts, ties by value.
    fn top(self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.counts.into_values().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(TOP);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperloglog_is_near_exact_small_and_within_its_error_large() {
        // Structured values, as columns hold them: sequential integers,
        // timestamps in whole seconds and days, float bit patterns with
        // zero low bits, short and long strings.
        type Hash = fn(u64) -> u64;
        let kinds: [(&str, Hash); 8] = [
            ("sequential", |v| mix(v)),
            ("seconds", |v| mix(1_767_225_600_000_000 + v * 1_000_000)),
            ("days", |v| mix(v * 86_400_000_000)),
            ("whole floats", |v| mix((v as f64).to_bits())),
            ("cents", |v| mix((v as f64 * 0.01).to_bits())),
            ("short strings", |v| {
                hash_bytes(format!("u{}", v % 1_000_000).as_bytes())
            }),
            ("long strings", |v| {
                hash_bytes(format!("user-{v:012}-x").as_bytes())
            }),
            ("strings of bytes", |v| {
                hash_bytes(&v.to_le_bytes()[..(v.checked_ilog2().unwrap_or(0) / 8 + 1) as usize])
            }),
        ];
        for (kind, hash) in kinds {
            for n in [0u64, 1, 10, 1000, 100_000, 1_000_000] {
                let mut registers = [0u8; 1 << HLL_BITS];
                for v in 0..n {
                    hll_add(&mut registers, hash(v));
                    hll_add(&mut registers, hash(v)); // repeats change nothing
                }
                let estimate = hll_estimate(&registers) as f64;
                let tolerance = if n <= 1000 { 0.02 } else { 0.05 };
                assert!(
                    (estimate - n as f64).abs() <= tolerance * n as f64 + 0.5,
                    "{kind} {n}: {estimate}"
                );
            }
        }
    }

    /// The same rows in batches cut anywhere give the same profile, bit
    /// for bit.
    #[test]
    fn a_profile_does_not_depend_on_where_batches_begin() {
        use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
        let n = 20_000;
        let floats: Vec<Option<f64>> = (0..n)
            .map(|i| (i % 7 != 0).then(|| (i as f64 * 0.37).sin() * 1e6 + 1.0 / (i + 1) as f64))
            .collect();
        let texts: Vec<Option<String>> = (0..n)
            .map(|i| (i % 5 != 0).then(|| format!("v{}", i % 97)))
            .collect();
        // Runs of one value (hashed once per run) and many distinct values.
        let runs: Vec<Option<i64>> = (0..n)
            .map(|i| (i % 11 != 0).then_some((i as i64 / 3) % 50))
            .collect();
        let wide: Vec<Option<i64>> = (0..n as i64).map(|i| Some(i * 7919 % 5003)).collect();
        let bools: Vec<Option<bool>> = (0..n)
            .map(|i| (i % 13 != 0).then_some(i % 3 == 0))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(Float64Array::from(floats)),
            std::sync::Arc::new(StringArray::from(texts)),
            std::sync::Arc::new(Int64Array::from(runs)),
            std::sync::Arc::new(Int64Array::from(wide)),
            std::sync::Arc::new(BooleanArray::from(bools)),
        ];
        let profile = |cut: usize| {
            let mut out = Vec::new();
            for column in &columns {
                let mut acc = ColumnAcc::new(column.data_type());
                for start in (0..n).step_by(cut) {
                    acc.push(
                        &column.slice(start, cut.min(n - start)),
                        &mut Scratch::default(),
                    );
                }
                out.push(acc.finish("c".into()));
            }
            out
        };
        let whole = profile(n);
        assert_eq!(whole[2].distinct, 50);
        assert_eq!(whole[4].distinct, 2);
        for cut in [1, 3, 7, 1000, 8192] {
            let cut_up = profile(cut);
            assert_eq!(
                serde_json::to_string(&cut_up).unwrap(),
                serde_json::to_string(&whole).unwrap(),
                "batches of {cut}"
            );
        }
    }

    /// A float column holding infinities (an exact sum beyond the float64
    /// range) or NaN profiles to text for them, and the profile reads back
    /// to the same floats: serde_json wrote `null`, which a build then
    /// failed to read back from its tasks' reports.
    #[test]
    fn floats_that_are_not_finite_read_back_as_written() {
        use datafusion::arrow::array::Float64Array;
        let cases: [&[f64]; 5] = [
            &[1.0, f64::INFINITY, 2.0],
            &[f64::NEG_INFINITY, -3.0],
            &[f64::INFINITY, f64::NEG_INFINITY],
            &[f64::NAN, 0.5],
            &[f64::NAN, f64::NAN],
        ];
        for values in cases {
            let column: ArrayRef = std::sync::Arc::new(Float64Array::from(values.to_vec()));
            let mut acc = ColumnAcc::new(column.data_type());
            acc.push(&column, &mut Scratch::default());
            let profile = PartitionProfile {
                partition: "dt=2026-01-01".into(),
                rows: values.len() as u64,
                held_back: 0,
                labels: BTreeMap::new(),
                columns: vec![acc.finish("x".into())],
            };
            let text = serde_json::to_string(&profile).unwrap();
            let back: PartitionProfile = serde_json::from_str(&text).unwrap();
            let column = &back.columns[0];
            // NaN read back is the one NaN (its sign bit is not kept).
            let bits = |x: Option<f64>| x.map(|x| if x.is_nan() { f64::NAN } else { x }.to_bits());
            let written = &profile.columns[0];
            assert_eq!(bits(column.mean), bits(written.mean), "{text}");
            assert_eq!(bits(column.std), bits(written.std), "{text}");
            let quantiles = |c: &ColumnProfile| {
                (c.quantiles.iter().flatten())
                    .map(|(k, &v)| (k.clone(), bits(Some(v))))
                    .collect::<Vec<_>>()
            };
            assert_eq!(quantiles(column), quantiles(written), "{text}");
            let extreme = |v: &Option<serde_json::Value>| v.as_ref().and_then(float_of);
            let (lo, hi) = (
                values.iter().copied().fold(f64::INFINITY, f64::min),
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            // NaN is neither smaller nor larger (`f64::min` skips it): the
            // extremes of the rest, none when there is no rest.
            let (lo, hi) = match values.iter().all(|v| v.is_nan()) {
                true => (None, None),
                false => (Some(lo), Some(hi)),
            };
            assert_eq!(extreme(&column.min), lo, "{text}");
            assert_eq!(extreme(&column.max), hi, "{text}");
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
            // The mean is the sum's: infinite, or NaN over both infinities
            // or a NaN; the standard deviation is NaN.
            let sum: f64 = values.iter().sum();
            assert_eq!(
                bits(written.mean),
                bits(Some(sum / values.len() as f64)),
                "{text}"
            );
            assert!(written.std.is_some_and(f64::is_nan), "{text}");
        }
        let mean = |text: &str| {
            serde_json::from_str::<ColumnProfile>(&format!(
                r#"{{"name":"x","nulls":0,"distinct":1,"mean":{text}}}"#
            ))
            .map(|c| c.mean)
        };
        assert_eq!(mean("\"-inf\"").unwrap(), Some(f64::NEG_INFINITY));
        assert_eq!(mean("2.5").unwrap(), Some(2.5));
        assert!(
            mean("\"infinite\"")
                .unwrap_err()
                .to_string()
                .contains("`infinite` is not a number")
        );
    }

    /// Mean and standard deviation against a two-pass computation.
    #[test]
    fn moments_match_two_passes() {
        let values: Vec<f64> = (0..1001)
            .map(|i| 1e9 + (i as f64 * 0.7).cos() * 5.0)
            .collect();
        let mut moments = Moments::default();
        for chunk in values.chunks(3) {
            moments.add(chunk);
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        assert!(
            (moments.mean() - mean).abs() < 1e-6,
            "{} {mean}",
            moments.mean()
        );
        assert!(
            (moments.std() - var.sqrt()).abs() < 1e-6,
            "{} {}",
            moments.std(),
            var.sqrt()
        );
        assert_eq!(
            moments.min(),
            values.iter().copied().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            moments.max(),
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
    }

    #[test]
    fn distinct_counts_are_exact_up_to_the_bound() {
        for n in [
            0u64,
            1,
            500,
            EXACT_DISTINCT as u64,
            EXACT_DISTINCT as u64 + 1,
            50_000,
        ] {
            let mut acc = ColumnAcc::new(&DataType::Int64);
            let values: Vec<i64> = (0..n as i64).chain(0..n as i64).collect();
            let column: ArrayRef =
                std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(values));
            acc.push(&column, &mut Scratch::default());
            let distinct = acc.finish("x".into()).distinct as f64;
            match n as usize <= EXACT_DISTINCT {
                true => assert_eq!(distinct, n as f64),
                false => assert!(
                    (distinct - n as f64).abs() <= 0.05 * n as f64,
                    "{n}: {distinct}"
                ),
            }
        }
    }

    #[test]
    fn the_sample_is_exact_when_small_and_systematic_when_large() {
        let mut sample = Sample::default();
        sample.add(&(1..=100).map(f64::from).collect::<Vec<_>>());
        let q = sample.quantiles();
        assert_eq!((q["p1"], q["p50"], q["p99"]), (1.0, 50.0, 99.0));
        let mut sample = Sample::default();
        let values: Vec<f64> = (0..100_000).map(f64::from).collect();
        for chunk in values.chunks(777) {
            sample.add(chunk);
        }
        assert!(sample.values.len() >= SAMPLE && sample.values.len() < 2 * SAMPLE);
        assert!(
            sample
                .values
                .iter()
                .all(|v| (*v as u64).is_multiple_of(sample.stride))
        );
        let q = sample.quantiles();
        assert!((q["p50"] - 50_000.0).abs() <= 100.0, "{q:?}");
    }

    /// The counters' table gives what Misra-Gries defines, on a stream
    /// with heavy and rare values (a plain map as the reference).
    #[test]
    fn misra_gries_keeps_the_counters_of_its_definition() {
        let mut reference: BTreeMap<String, u64> = BTreeMap::new();
        let mut top = MisraGries::default();
        let mut x = 7u64;
        for _ in 0..200_000 {
            x = mix(x);
            let value = match x % 10 {
                0..=3 => format!("heavy{}", x % 5),
                _ => format!("rare{}", x % 100_000),
            };
            top.add(hash_bytes(value.as_bytes()), &value);
            if let Some(n) = reference.get_mut(&value) {
                *n += 1;
            } else if reference.len() < COUNTERS {
                reference.insert(value, 1);
            } else {
                reference.retain(|_, n| {
                    *n -= 1;
                    *n > 0
                });
            }
        }
        let mut expected: Vec<(String, u64)> = reference.into_iter().collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        expected.truncate(TOP);
        assert_eq!(top.top(), expected);
    }

    #[test]
    fn misra_gries_is_exact_with_few_values() {
        let mut top = MisraGries::default();
        for (value, n) in [("a", 5), ("b", 9), ("c", 5)] {
            for _ in 0..n {
                top.add(hash_bytes(value.as_bytes()), value);
            }
        }
        assert_eq!(
            top.top(),
            [
                ("b".to_owned(), 9),
                ("a".to_owned(), 5),
                ("c".to_owned(), 5)
            ]
        );
    }
}

/// What each part of the profile costs per value:
/// `cargo test --release -p leakless --lib profile::speed -- --ignored --nocapture`
/// (the parts alone, then whole columns through [`ColumnAcc::push`]).
#[cfg(test)]
mod speed {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    #[test]
    #[ignore]
    fn speed() {
        let n = 10_000_000usize;
        let mut x = 12345u64;
        let mut next = || {
            x = mix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            x
        };
        let ints: Vec<i64> = (0..n).map(|_| (next() % 1_000_000) as i64).collect();
        let small: Vec<i64> = (0..n).map(|_| (next() % 30) as i64).collect();
        let floats: Vec<f64> = (0..n).map(|_| (next() % 100_000) as f64 * 0.01).collect();
        let texts: Vec<String> = (0..n).map(|_| format!("cat{}", next() % 20)).collect();
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("ints", std::sync::Arc::new(Int64Array::from(ints))),
            ("small", std::sync::Arc::new(Int64Array::from(small))),
            ("floats", std::sync::Arc::new(Float64Array::from(floats))),
            ("texts", std::sync::Arc::new(StringArray::from(texts))),
        ];
        {
            let ints: Vec<i64> = (0..n).map(|_| (next() % 1_000_000) as i64).collect();
            let values: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
            let t = std::time::Instant::now();
            let mut hashes = Vec::new();
            for c in ints.chunks(8192) {
                hashes.clear();
                hash_all(c.iter().map(|&v| v as u64), &mut hashes);
            }
            eprintln!("hash_all {:.1}", t.elapsed().as_secs_f64() * 1e9 / n as f64);
            let all: Vec<u64> = ints.iter().map(|&v| mix(v as u64)).collect();
            let t = std::time::Instant::now();
            let mut acc = ColumnAcc::new(&DataType::Int64);
            for c in all.chunks(8192) {
                acc.distinct(c);
            }
            eprintln!("distinct {:.1}", t.elapsed().as_secs_f64() * 1e9 / n as f64);
            let t = std::time::Instant::now();
            let mut m = Moments::default();
            for c in values.chunks(8192) {
                m.add(c);
            }
            eprintln!(
                "moments {:.1} {}",
                t.elapsed().as_secs_f64() * 1e9 / n as f64,
                m.mean()
            );
            let t = std::time::Instant::now();
            let mut m = Sample::default();
            for c in values.chunks(8192) {
                m.add(c);
            }
            eprintln!(
                "sample {:.1} {}",
                t.elapsed().as_secs_f64() * 1e9 / n as f64,
                m.values.len()
            );
            let mut top = MisraGries::default();
            let texts: Vec<String> = (0..n).map(|_| format!("cat{}", next() % 20)).collect();
            let h: Vec<u64> = texts.iter().map(|t| hash_bytes(t.as_bytes())).collect();
            let t = std::time::Instant::now();
            for (h, s) in h.iter().zip(&texts) {
                top.add(*h, s);
            }
            eprintln!("mg {:.1}", t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        for (name, col) in &cols {
            let t = std::time::Instant::now();
            let mut acc = ColumnAcc::new(col.data_type());
            let mut scratch = Scratch::default();
            for start in (0..n).step_by(8192) {
                acc.push(&col.slice(start, 8192.min(n - start)), &mut scratch);
            }
            let p = acc.finish("x".into());
            eprintln!(
                "{name}: {:.1} ns/value ({})",
                t.elapsed().as_secs_f64() * 1e9 / n as f64,
                p.distinct
            );
        }
    }
}
