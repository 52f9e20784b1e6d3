//! The profile of a dataset (`_profile.json`): per output partition and
//! column, computed by the writer from the batches it writes (never by a
//! second read), in the rows' own order, so the same rows give the same
//! numbers whatever the partitioning of the plan.
//!
//! Exact: rows, nulls, min and max; mean and standard deviation
//! (population, over the non-null values) from sums of the values less the
//! partition's first value, added one by one in row order. Sketched, each named in the file:
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// p1, p5, p25, p50, p75, p95, p99 (nearest rank over the sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// Reads a dataset's profile (a local dataset).
    pub fn read(dataset: &std::path::Path) -> crate::Result<Self> {
        let path = dataset.join(FILE_NAME);
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
        }
    }

    pub fn push(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (acc, column) in self.columns.iter_mut().zip(batch.columns()) {
            acc.push(column);
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
    hll: Vec<u8>,
    exact: SmallSet,
    top: MisraGries,
    /// A batch's non-null values (reused).
    values: Vec<f64>,
}

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
            hll: vec![0; 1 << HLL_BITS],
            exact: SmallSet::default(),
            top: MisraGries::default(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, column: &ArrayRef) {
        self.nulls += column.null_count() as u64;
        // The non-null values as f64, in a buffer kept from batch to batch.
        let mut values = std::mem::take(&mut self.values);
        values.clear();
        let kind = self.kind;
        match kind {
            Kind::Int8 | Kind::Int64 | Kind::Time => {
                let mut int = |v: i64| {
                    self.min_int = self.min_int.min(v);
                    self.max_int = self.max_int.max(v);
                    self.distinct(mix(v as u64));
                    values.push(v as f64);
                };
                match kind {
                    Kind::Int8 => each(column.as_primitive::<Int8Type>(), |v| int(i64::from(v))),
                    Kind::Int64 => each(column.as_primitive::<Int64Type>(), int),
                    _ => each(column.as_primitive::<TimestampMicrosecondType>(), int),
                }
            }
            Kind::Float64 => each(column.as_primitive::<Float64Type>(), |v| {
                // -0.0 and 0.0 are one value.
                let bits = if v == 0.0 { 0 } else { v.to_bits() };
                self.distinct(mix(bits));
                values.push(v);
            }),
            Kind::Bool => {
                for v in column.as_boolean().iter().flatten() {
                    values.push(f64::from(u8::from(v)));
                    self.distinct(mix(u64::from(v)));
                }
            }
            Kind::Text => {
                let texts = column.as_string::<i32>();
                for text in texts.iter().flatten() {
                    let hash = hash_bytes(text.as_bytes());
                    self.distinct(hash);
                    self.top.add(hash, text);
                }
            }
            Kind::Other => {}
        }
        if !values.is_empty() {
            self.moments.add(&values);
            self.sample.add(&values);
        }
        self.values = values;
    }

    /// Counts `hash` exactly while the set holds it; once it overflows,
    /// every hash it held goes to the HyperLogLog, which counts from then.
    fn distinct(&mut self, hash: u64) {
        if self.exact.overflowed {
            hll_add(&mut self.hll, hash);
        } else if !self.exact.insert(hash) {
            for &h in self.exact.held.iter().chain([&hash]) {
                hll_add(&mut self.hll, h);
            }
            self.exact.held = Vec::new();
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
            Kind::Float64 | Kind::Bool => (number(self.moments.min), number(self.moments.max)),
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
                true => hll_estimate(&self.hll),
            },
            top: (self.kind == Kind::Text).then(|| self.top.top()),
        }
    }
}

fn number(x: f64) -> Option<serde_json::Value> {
    serde_json::Number::from_f64(x).map(serde_json::Value::Number)
}

/// Calls `f` with each non-null value of `array`, in order.
fn each<T>(array: &datafusion::arrow::array::PrimitiveArray<T>, mut f: impl FnMut(T::Native))
where
    T: datafusion::arrow::datatypes::ArrowPrimitiveType,
{
    match array.null_count() {
        0 => array.values().iter().for_each(|&v| f(v)),
        _ => array.iter().flatten().for_each(f),
    }
}

/// Count, sums of the values less the first one and of their squares,
/// min and max, each added value by value in row order: the figures depend
/// on the rows and their order only, never on where batches begin. The
/// shift keeps large offsets (timestamps) precise.
#[derive(Default)]
struct Moments {
    n: u64,
    shift: f64,
    sum: f64,
    squares: f64,
    min: f64,
    max: f64,
}

impl Moments {
    fn add(&mut self, values: &[f64]) {
        if self.n == 0 {
            self.shift = values[0];
            self.min = f64::INFINITY;
            self.max = f64::NEG_INFINITY;
        }
        for &v in values {
            let d = v - self.shift;
            self.sum += d;
            self.squares += d * d;
            if v < self.min {
                self.min = v;
            }
            if v > self.max {
                self.max = v;
            }
        }
        self.n += values.len() as u64;
    }

    fn mean(&self) -> f64 {
        self.shift + self.sum / self.n as f64
    }

    /// The population standard deviation.
    fn std(&self) -> f64 {
        let n = self.n as f64;
        ((self.squares - self.sum * self.sum / n) / n)
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

/// A 64-bit mix of `x` (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over `bytes`, mixed.
fn hash_bytes(bytes: &[u8]) -> u64 {
    // Eight bytes at a time, then the rest with the length.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mix(h)
}

fn hll_add(registers: &mut [u8], hash: u64) {
    let index = (hash >> (64 - HLL_BITS)) as usize;
    let rest = hash << HLL_BITS;
    let rank = (rest.leading_zeros() + 1).min(64 - HLL_BITS + 1) as u8;
    if registers[index] < rank {
        registers[index] = rank;
    }
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
        for n in [0u64, 1, 10, 1000, 100_000] {
            let mut registers = vec![0u8; 1 << HLL_BITS];
            for v in 0..n {
                hll_add(&mut registers, mix(v));
                hll_add(&mut registers, mix(v)); // repeats change nothing
            }
            let estimate = hll_estimate(&registers) as f64;
            let tolerance = if n <= 1000 { 0.02 } else { 0.05 };
            assert!(
                (estimate - n as f64).abs() <= tolerance * n as f64 + 0.5,
                "{n}: {estimate}"
            );
        }
    }

    /// The same rows in batches cut anywhere give the same profile, bit
    /// for bit.
    #[test]
    fn a_profile_does_not_depend_on_where_batches_begin() {
        use datafusion::arrow::array::{Float64Array, StringArray};
        let floats: Vec<Option<f64>> = (0..20_000)
            .map(|i| (i % 7 != 0).then(|| (i as f64 * 0.37).sin() * 1e6 + 1.0 / (i + 1) as f64))
            .collect();
        let texts: Vec<Option<String>> = (0..20_000)
            .map(|i| (i % 5 != 0).then(|| format!("v{}", i % 97)))
            .collect();
        let profile = |cut: usize| {
            let mut floats_acc = ColumnAcc::new(&DataType::Float64);
            let mut texts_acc = ColumnAcc::new(&DataType::Utf8);
            for start in (0..floats.len()).step_by(cut) {
                let end = (start + cut).min(floats.len());
                let f: ArrayRef =
                    std::sync::Arc::new(Float64Array::from(floats[start..end].to_vec()));
                let t: ArrayRef =
                    std::sync::Arc::new(StringArray::from(texts[start..end].to_vec()));
                floats_acc.push(&f);
                texts_acc.push(&t);
            }
            let a = serde_json::to_string(&floats_acc.finish("f".into())).unwrap();
            let b = serde_json::to_string(&texts_acc.finish("t".into())).unwrap();
            a + &b
        };
        let whole = profile(20_000);
        for cut in [1, 7, 1000, 8192] {
            assert_eq!(profile(cut), whole, "batches of {cut}");
        }
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
            acc.push(&column);
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
