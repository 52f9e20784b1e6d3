//! The indexed side: every non-spine source collected once, and one
//! [`KeyIndex`] per (source, key, `where`).
//!
//! A [`KeyIndex`] holds, for the rows that pass its `where` and have a
//! whole key, the times sorted by (key slot, time, input order) in one
//! buffer (CSR: each slot's run is `offsets[s]..offsets[s + 1]`), and each
//! value column the ops read taken into the same order, with what makes an
//! op a few array reads: prefix counts of non-null values, exact prefix sums
//! of integers, the next and previous non-null position, and the range
//! structures of [`super::range`] for the ops over sliding windows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, make_comparator,
    new_empty_array,
};
use datafusion::arrow::compute::{SortOptions, filter, take};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::{StreamExt, TryStreamExt};

use super::filter::FilterExpr;
use super::keys::{KeyColumns, KeyDict, NO_SLOT, Symbols};
use super::plan::{IndexPlan, PitPlan};
use super::range::{DistinctCounts, ExactSums, RangeMin};
use crate::error::Error;
use crate::spec::Op;

/// One value column in index order.
#[derive(Debug)]
pub(super) struct SortedValues {
    /// The values, when an op takes them (`min`, `max`, `first`, `last`,
    /// `lookup`, `time_since`); otherwise empty, since the structures below
    /// answer the other ops.
    pub array: ArrayRef,
    /// `nonnull[i]`: non-null values before position `i` (length n + 1);
    /// `None` when the column has no null (then it is `i`).
    nonnull: Option<Vec<u32>>,
    /// Exact prefix sums of an int64 column that a `sum` or `mean` reads
    /// (length n + 1, nulls as 0).
    pub int_sums: Option<Vec<i128>>,
    /// First non-null position `>= i`, or n; built for `first` over a
    /// column with nulls (`None`: it is `i`).
    next_nonnull: Option<Vec<u32>>,
    /// Last non-null position `<= i`, or `u32::MAX`; built for `last` over
    /// a column with nulls (`None`: it is `i`).
    prev_nonnull: Option<Vec<u32>>,
    /// Answers for lifetime windows, which start at their key's first
    /// event: per position `i`, the op over the key's run up to `i`
    /// inclusive. They make a lifetime `min`, `max` or `count_distinct`
    /// one array read.
    pub lifetime: Lifetime,
    /// What answers any range in O(1) or O(log n) (see [`super::range`]).
    pub ranges: RangeAnswers,
}

/// Prefix answers over each key's run (see [`SortedValues::lifetime`]).
#[derive(Debug, Default)]
pub(super) struct Lifetime {
    /// Position of the smallest / largest non-null value so far, or
    /// `u32::MAX`; the first among equals.
    pub min: Option<Vec<u32>>,
    pub max: Option<Vec<u32>>,
    /// Distinct non-null values so far.
    pub distinct: Option<Vec<u32>>,
}

/// Range structures of one value column (see [`SortedValues::ranges`]).
#[derive(Debug, Default)]
pub(super) struct RangeAnswers {
    /// Float `sum` and `mean`, over any window.
    pub sums: Option<ExactSums>,
    /// Sliding `min` and `max`, over the non-null values only: range
    /// `[nonnull[a], nonnull[b])` of them, mapped back to a position by
    /// `nonnull_positions` (`None` when the column has no null).
    pub min: Option<RangeMin>,
    pub max: Option<RangeMin>,
    pub nonnull_positions: Option<Vec<u32>>,
    /// Sliding `count_distinct`.
    pub distinct: Option<DistinctCounts>,
}

impl RangeAnswers {
    /// The position of the smallest (or largest) non-null value in `a..b`,
    /// the first among equals; `u32::MAX` when there is none.
    pub fn extreme(&self, values: &SortedValues, a: usize, b: usize, largest: bool) -> u32 {
        let (l, r) = (values.nonnull_before(a), values.nonnull_before(b));
        if l == r {
            return u32::MAX;
        }
        let rmq = if largest { &self.max } else { &self.min };
        let q = rmq
            .as_ref()
            .expect("a range min for a sliding min")
            .query(l, r);
        self.nonnull_positions.as_ref().map_or(q as u32, |p| p[q])
    }

    fn memory_size(&self) -> usize {
        self.sums.as_ref().map_or(0, ExactSums::memory_size)
            + [&self.min, &self.max]
                .iter()
                .map(|m| m.as_ref().map_or(0, RangeMin::memory_size))
                .sum::<usize>()
            + self
                .nonnull_positions
                .as_ref()
                .map_or(0, |p| p.capacity() * 4)
            + self
                .distinct
                .as_ref()
                .map_or(0, DistinctCounts::memory_size)
    }
}

/// Which answers a value column needs, from the ops and windows that read
/// it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Needs {
    /// An op takes values from the array.
    pub take: bool,
    pub first: bool,
    pub last: bool,
    pub lifetime_min: bool,
    pub lifetime_max: bool,
    pub lifetime_distinct: bool,
    pub sliding_min: bool,
    pub sliding_max: bool,
    pub sliding_distinct: bool,
    pub sums: bool,
}

impl SortedValues {
    fn new(array: ArrayRef, offsets: &[u32], needs: Needs) -> Result<Self> {
        let n = array.len();
        let nulls = array.null_count() > 0;
        let nonnull = nulls.then(|| {
            let mut nonnull = Vec::with_capacity(n + 1);
            nonnull.push(0u32);
            for i in 0..n {
                nonnull.push(nonnull[i] + u32::from(array.is_valid(i)));
            }
            nonnull
        });
        let prev_nonnull = (nulls && needs.last).then(|| {
            let mut last = u32::MAX;
            (0..n)
                .map(|i| {
                    if array.is_valid(i) {
                        last = i as u32;
                    }
                    last
                })
                .collect()
        });
        let next_nonnull = (nulls && needs.first).then(|| {
            let mut next_nonnull = vec![n as u32; n];
            let mut next = n as u32;
            for i in (0..n).rev() {
                if array.is_valid(i) {
                    next = i as u32;
                }
                next_nonnull[i] = next;
            }
            next_nonnull
        });
        let int_sums = (needs.sums && array.data_type() == &DataType::Int64).then(|| {
            let ints = array.as_primitive::<Int64Type>();
            let mut sums = Vec::with_capacity(n + 1);
            sums.push(0i128);
            for i in 0..n {
                let x = if ints.is_valid(i) { ints.value(i) } else { 0 };
                sums.push(sums[i] + i128::from(x));
            }
            sums
        });
        // Both distinct counts start from the same links, found once.
        let same = (needs.lifetime_distinct || needs.sliding_distinct)
            .then(|| previous_same(&array, offsets));
        let lifetime = lifetime_answers(&array, offsets, same.as_deref(), needs)?;
        let ranges = range_answers(&array, same, needs)?;
        let array = if needs.take {
            array
        } else {
            new_empty_array(array.data_type())
        };
        Ok(SortedValues {
            array,
            nonnull,
            int_sums,
            next_nonnull,
            prev_nonnull,
            lifetime,
            ranges,
        })
    }

    /// Non-null values before position `i`.
    pub fn nonnull_before(&self, i: usize) -> usize {
        self.nonnull.as_ref().map_or(i, |n| n[i] as usize)
    }

    /// The first non-null position at or after `i` (n when none).
    pub fn next_nonnull(&self, i: usize) -> u32 {
        let next = self.next_nonnull.as_ref();
        next.map_or(i as u32, |n| n[i])
    }

    /// The last non-null position at or before `i` (`u32::MAX` when none).
    pub fn prev_nonnull(&self, i: usize) -> u32 {
        let prev = self.prev_nonnull.as_ref();
        prev.map_or(i as u32, |p| p[i])
    }

    fn memory_size(&self) -> usize {
        let u32s = |v: &Option<Vec<u32>>| v.as_ref().map_or(0, |v| v.capacity() * 4);
        self.array.get_array_memory_size()
            + u32s(&self.nonnull)
            + self.int_sums.as_ref().map_or(0, |s| s.capacity() * 16)
            + u32s(&self.next_nonnull)
            + u32s(&self.prev_nonnull)
            + [
                &self.lifetime.min,
                &self.lifetime.max,
                &self.lifetime.distinct,
            ]
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| v.capacity() * 4))
            .sum::<usize>()
            + self.ranges.memory_size()
    }
}

/// The lifetime answers `needs` asks for, run by run.
/// `same`: [`previous_same`] when a distinct count needs it.
fn lifetime_answers(
    array: &ArrayRef,
    offsets: &[u32],
    same: Option<&[Option<Option<u32>>]>,
    needs: Needs,
) -> Result<Lifetime> {
    let n = array.len();
    let mut out = Lifetime::default();
    let runs = || offsets.windows(2).map(|w| (w[0] as usize, w[1] as usize));
    for (largest, wanted, slot) in [
        (false, needs.lifetime_min, &mut out.min),
        (true, needs.lifetime_max, &mut out.max),
    ] {
        if !wanted {
            continue;
        }
        let compare = make_comparator(array.as_ref(), array.as_ref(), SortOptions::default())?;
        let mut best = vec![u32::MAX; n];
        for (s, e) in runs() {
            let mut current: Option<usize> = None;
            for (i, b) in best.iter_mut().enumerate().take(e).skip(s) {
                if array.is_valid(i) {
                    let better = current.is_none_or(|j| {
                        let order = compare(i, j);
                        if largest {
                            order.is_gt()
                        } else {
                            order.is_lt()
                        }
                    });
                    if better {
                        current = Some(i);
                    }
                }
                *b = current.map_or(u32::MAX, |p| p as u32);
            }
        }
        *slot = Some(best);
    }
    if needs.lifetime_distinct {
        // The first events of their value in the run, counted up to `i`.
        let same = same.expect("the links of a distinct count");
        let mut distinct = vec![0u32; n];
        for (s, e) in runs() {
            let mut count = 0u32;
            for i in s..e {
                count += u32::from(matches!(same[i], Some(None)));
                distinct[i] = count;
            }
        }
        out.distinct = Some(distinct);
    }
    Ok(out)
}

/// Per position: `None` when the value is null, else the previous position
/// of the same run with the same value (as `count_distinct` compares
/// values), `Some(None)` when there is none.
fn previous_same(array: &ArrayRef, offsets: &[u32]) -> Vec<Option<Option<u32>>> {
    let mut last: hashbrown::HashMap<super::stream::DistinctKey<'_>, u32> =
        hashbrown::HashMap::new();
    let mut same = vec![None; array.len()];
    for w in offsets.windows(2) {
        let start = w[0];
        for i in w[0]..w[1] {
            if let Some(key) = super::stream::distinct_key(array, i as usize) {
                // A position before the run's start belongs to another key.
                let previous = last.insert(key, i).filter(|&p| p >= start);
                same[i as usize] = Some(previous);
            }
        }
    }
    same
}

/// The range structures `needs` asks for.
fn range_answers(
    array: &ArrayRef,
    same: Option<Vec<Option<Option<u32>>>>,
    needs: Needs,
) -> Result<RangeAnswers> {
    let mut out = RangeAnswers::default();
    if needs.sums && array.data_type() == &DataType::Float64 {
        let floats = array.as_primitive::<Float64Type>();
        out.sums = Some(ExactSums::new(floats.len(), |i| {
            floats.is_valid(i).then(|| floats.value(i))
        }));
    }
    if needs.sliding_min || needs.sliding_max {
        let positions: Option<Vec<u32>> = (array.null_count() > 0).then(|| {
            (0..array.len() as u32)
                .filter(|&i| array.is_valid(i as usize))
                .collect()
        });
        let keys = order_keys(array, positions.as_deref())?;
        debug_assert_eq!(keys.len(), array.len() - array.null_count());
        if needs.sliding_max {
            // The leftmost largest is the leftmost smallest of the keys
            // reversed.
            out.max = Some(RangeMin::new(keys.iter().map(|k| !k).collect()));
        }
        if needs.sliding_min {
            out.min = Some(RangeMin::new(keys));
        }
        out.nonnull_positions = positions;
    }
    if needs.sliding_distinct {
        out.distinct = Some(DistinctCounts::new(
            same.expect("the links of a distinct count"),
        ));
    }
    Ok(out)
}

/// Keys whose unsigned order is the values' order for `min` and `max`
/// (ints and times by value, floats by IEEE 754 total order, strings by
/// bytes, `false < true`), for the non-null values at `positions` (every
/// position when `None`).
fn order_keys(array: &ArrayRef, positions: Option<&[u32]>) -> Result<Vec<u64>> {
    let n = array.len();
    let all: Vec<u32>;
    let positions = match positions {
        Some(p) => p,
        None => {
            all = (0..n as u32).collect();
            &all
        }
    };
    let sign = 1u64 << 63;
    Ok(match array.data_type() {
        DataType::Int64 => {
            let v = array.as_primitive::<Int64Type>().values();
            positions
                .iter()
                .map(|&i| v[i as usize] as u64 ^ sign)
                .collect()
        }
        DataType::Timestamp(_, _) => {
            let v = array.as_primitive::<TimestampMicrosecondType>().values();
            positions
                .iter()
                .map(|&i| v[i as usize] as u64 ^ sign)
                .collect()
        }
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().values();
            positions
                .iter()
                .map(|&i| {
                    let bits = v[i as usize].to_bits();
                    if bits & sign != 0 { !bits } else { bits | sign }
                })
                .collect()
        }
        DataType::Boolean => {
            let v = array.as_boolean();
            positions
                .iter()
                .map(|&i| u64::from(v.value(i as usize)))
                .collect()
        }
        DataType::Utf8 => {
            // Ranks of the strings in byte order, equal strings one rank.
            let v = array.as_string::<i32>();
            let mut order: Vec<u32> = (0..positions.len() as u32).collect();
            order.sort_unstable_by(|&x, &y| {
                let (x, y) = (positions[x as usize], positions[y as usize]);
                v.value(x as usize)
                    .as_bytes()
                    .cmp(v.value(y as usize).as_bytes())
            });
            let mut keys = vec![0u64; positions.len()];
            let mut rank = 0u64;
            for (k, pair) in order.iter().enumerate() {
                let text = |j: u32| v.value(positions[j as usize] as usize).as_bytes();
                if k > 0 && text(order[k - 1]) != text(*pair) {
                    rank += 1;
                }
                keys[*pair as usize] = rank;
            }
            keys
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "no order keys for type {other}"
            )));
        }
    })
}

/// The rows of one (source, key, `where`), per key, sorted.
#[derive(Debug)]
pub(super) struct KeyIndex {
    pub dict: KeyDict,
    /// Slot `s`'s run is `offsets[s]..offsets[s + 1]` (u32: an index holds
    /// fewer than 2^32 rows, and half the bytes keep more of it cached).
    pub offsets: Vec<u32>,
    /// Times in run order (all 0 for a snapshot dimension).
    pub times: Vec<i64>,
    pub values: Vec<SortedValues>,
}

impl KeyIndex {
    /// Per row, the run `start..end` of its slot (`0..0` without one).
    pub fn runs(&self, slots: &[Option<u32>]) -> Vec<(usize, usize)> {
        slots
            .iter()
            .map(|slot| match *slot {
                Some(slot) => (
                    self.offsets[slot as usize] as usize,
                    self.offsets[slot as usize + 1] as usize,
                ),
                None => (0, 0),
            })
            .collect()
    }

    fn memory_size(&self) -> usize {
        self.dict.memory_size()
            + self.offsets.capacity() * 4
            + self.times.capacity() * 8
            + self
                .values
                .iter()
                .map(SortedValues::memory_size)
                .sum::<usize>()
    }
}

/// Every indexed source, collected once and shared by all spine partitions.
#[derive(Debug)]
pub(super) struct IndexedSide {
    pub indexes: Vec<KeyIndex>,
    /// The ids of the string key values (see [`Symbols`]).
    pub symbols: Symbols,
    /// Per input: its latest event over all its rows (before any
    /// `where`), `None` without rows or for a dimension.
    pub latest: Vec<Option<Latest>>,
    /// Per input: rows read.
    pub rows: Vec<usize>,
    /// A key group's partition: a digest of the row ids it indexes (see
    /// `crate::split::TaskLoad`); 0 otherwise.
    pub ids_digest: u64,
    pub collect_seconds: f64,
    pub index_seconds: f64,
    _reservation: MemoryReservation,
}

/// The latest event of a source: its time, and where it is (the first of
/// equal times in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Latest {
    pub time: i64,
    /// The input partition (the file) and the row within it, from 0.
    pub partition: usize,
    pub row: usize,
}

impl Latest {
    fn of(
        times: &datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>,
        rows_per_partition: &[usize],
    ) -> Option<Latest> {
        let mut best: Option<(i64, usize)> = None;
        for (row, time) in times.iter().enumerate() {
            if let Some(t) = time
                && best.is_none_or(|(b, _)| t > b)
            {
                best = Some((t, row));
            }
        }
        let (time, mut row) = best?;
        let mut partition = 0;
        while row >= rows_per_partition[partition] {
            row -= rows_per_partition[partition];
            partition += 1;
        }
        Some(Latest {
            time,
            partition,
            row,
        })
    }
}

/// What a key group's partition indexes (see `GroupMode`): partition
/// `partition` of each input, and the latest events from the scans'
/// statistics in `stats`.
pub(super) struct Own {
    pub partition: usize,
    pub stats: std::path::PathBuf,
}

/// Reads every input (all partitions, in partition order: file order; or
/// only the partition `own` names, ordered by row id) and builds the
/// plan's indexes.
pub(super) async fn collect(
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    plan: Arc<PitPlan>,
    context: Arc<TaskContext>,
    own: Option<Own>,
) -> Result<Arc<IndexedSide>> {
    let started = Instant::now();
    let reservation =
        MemoryConsumer::new("PointInTimeExec[indexed side]").register(context.memory_pool());
    let mut tables = Vec::with_capacity(inputs.len());
    let mut ids_digest = 0u64;
    for (i, input) in inputs.iter().enumerate() {
        let partitions: Vec<usize> = match &own {
            Some(own) => vec![own.partition],
            None => (0..input.output_partitioning().partition_count()).collect(),
        };
        let reads = partitions.into_iter().map(|p| {
            let input = input.clone();
            let context = context.clone();
            async move {
                let stream = input.execute(p, context)?;
                stream.try_collect::<Vec<RecordBatch>>().await
            }
        });
        // A few files at a time (a large file is read on every core by
        // itself): each read in flight holds its buffers and a thread, and
        // a source may be thousands of small files. Their results come in
        // file order, so the error reported is the first in file order
        // (what a sequential read would meet), not the first to happen;
        // the files after it are not read on.
        let in_flight = 2 * context.session_config().target_partitions().max(1);
        let per_partition = futures::stream::iter(reads)
            .buffered(in_flight)
            .try_collect::<Vec<_>>()
            .await?;
        let rows_per_partition: Vec<usize> = (per_partition.iter())
            .map(|batches| batches.iter().map(RecordBatch::num_rows).sum())
            .collect();
        let mut table = concat_dropping(input.schema(), per_partition.into_iter().flatten())?;
        if own.is_some() {
            table = by_row_id(table)?;
            let ids = table.column_by_name(crate::split::ROW_ID).expect("checked");
            for &id in ids.as_primitive::<Int64Type>().values() {
                ids_digest = ids_digest.wrapping_add(mix(id as u64 ^ ((i as u64) << 56)));
            }
        }
        reservation.try_grow(table.get_array_memory_size())?;
        tables.push((table, rows_per_partition));
    }
    let collected = Instant::now();
    let scans = match &own {
        Some(own) => Some(crate::split::ScanStats::read_all(&own.stats)?),
        None => None,
    };
    let latest = plan
        .inputs
        .iter()
        .zip(&tables)
        .map(|(name, (table, rows_per_partition))| {
            let source = plan.spec.source(name).expect("resolved source");
            let time = match &source.kind {
                crate::spec::SourceKind::Events { time } => time,
                crate::spec::SourceKind::Dimension { .. } => return None,
            };
            if let Some(scans) = &scans {
                return crate::split::ScanStats::latest(scans, name);
            }
            let column = table.column_by_name(time)?;
            Latest::of(
                column.as_primitive::<TimestampMicrosecondType>(),
                rows_per_partition,
            )
        })
        .collect();
    let tables: Vec<RecordBatch> = tables.into_iter().map(|(table, _)| table).collect();
    let rows = tables.iter().map(RecordBatch::num_rows).collect();
    let table_bytes: usize = tables.iter().map(|t| t.get_array_memory_size()).sum();
    // String keys to shared ids, once per source column.
    let mut symbols = Symbols::default();
    let mut id_bytes = 0;
    let mut tables: Vec<Table> = tables
        .into_iter()
        .map(|batch| Table {
            batch,
            key_ids: HashMap::new(),
        })
        .collect();
    for index in &plan.indexes {
        let table = &mut tables[index.input];
        for &k in &index.source_key {
            let column = table.batch.column(k);
            if column.data_type() == &DataType::Utf8 && !table.key_ids.contains_key(&k) {
                let ids = symbols.intern_column(column)?;
                id_bytes += ids.get_array_memory_size();
                table.key_ids.insert(k, ids);
            }
        }
    }
    symbols.shrink();
    reservation.try_grow(symbols.memory_size() + id_bytes)?;
    let workers = context.session_config().target_partitions();
    // The raw tables are dropped as their last index is built: the indexes
    // hold what the ops read.
    let indexes = build_indexes(&plan, tables, workers)?;
    reservation.shrink((table_bytes + id_bytes).min(reservation.size()));
    for built in &indexes {
        reservation.try_grow(built.memory_size())?;
    }
    Ok(Arc::new(IndexedSide {
        indexes,
        symbols,
        latest,
        rows,
        ids_digest,
        collect_seconds: (collected - started).as_secs_f64(),
        index_seconds: collected.elapsed().as_secs_f64(),
        _reservation: reservation,
    }))
}

/// SplitMix64's finalizer: a well-spread hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The rows of `table` in the order of its row id column (the embedded
/// build's input order: file, then row), each row id once.
fn by_row_id(table: RecordBatch) -> Result<RecordBatch> {
    let Some(ids) = table.column_by_name(crate::split::ROW_ID) else {
        return Err(DataFusionError::Internal(format!(
            "a key group's input has no `{}`",
            crate::split::ROW_ID
        )));
    };
    let ids = ids.as_primitive::<Int64Type>();
    if ids.values().windows(2).all(|w| w[0] < w[1]) {
        return Ok(table);
    }
    let mut order: Vec<u32> = (0..table.num_rows() as u32).collect();
    order.sort_unstable_by_key(|&i| ids.value(i as usize));
    // Two salts of a hot key in one partition bring its events twice
    // (`crate::split::hot`): one of each is kept.
    order.dedup_by_key(|i| ids.value(*i as usize));
    let order = UInt32Array::from(order);
    let columns = table
        .columns()
        .iter()
        .map(|c| take(c, &order, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

/// A source's rows, and the ids of its string key columns by position.
#[derive(Clone)]
struct Table {
    batch: RecordBatch,
    key_ids: HashMap<usize, ArrayRef>,
}

/// The batches as one, concatenated a column at a time, each column's
/// pieces dropped once copied: the peak is the table and one column, not
/// the table twice.
fn concat_dropping(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: impl Iterator<Item = RecordBatch>,
) -> Result<RecordBatch> {
    let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); schema.fields().len()];
    let mut rows = 0;
    for batch in batches {
        rows += batch.num_rows();
        for (pieces, column) in columns.iter_mut().zip(batch.columns()) {
            pieces.push(column.clone());
        }
    }
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(pieces, field)| match pieces.as_slice() {
            [] => Ok(new_empty_array(field.data_type())),
            [one] => Ok(one.clone()),
            _ => {
                let refs: Vec<&dyn Array> = pieces.iter().map(|p| p.as_ref()).collect();
                Ok(datafusion::arrow::compute::concat(&refs)?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// Every index of the plan, built on up to `workers` threads, each taking
/// the next unbuilt index in plan order; the first error in plan order is
/// the one returned, whichever thread meets it first. A table is dropped as
/// soon as the last index over it is built.
fn build_indexes(plan: &PitPlan, tables: Vec<Table>, workers: usize) -> Result<Vec<KeyIndex>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The largest first (longest-processing-time order): a big index
    // taken last would leave the other workers idle while it is built.
    let order = build_order(plan, &tables);
    let next = AtomicUsize::new(0);
    let built: Vec<Mutex<Option<Result<KeyIndex>>>> =
        plan.indexes.iter().map(|_| Default::default()).collect();
    let unbuilt: Vec<AtomicUsize> = (0..tables.len())
        .map(|t| AtomicUsize::new(plan.indexes.iter().filter(|i| i.input == t).count()))
        .collect();
    let tables: Vec<Mutex<Option<Table>>> =
        tables.into_iter().map(|t| Mutex::new(Some(t))).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, plan.indexes.len().max(1)) {
            scope.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let index = &plan.indexes[i];
                    let table = tables[index.input]
                        .lock()
                        .expect("no worker panics holding it")
                        .clone()
                        .expect("a table stays until its last index is built");
                    let result = build_index(plan, index, &table);
                    drop(table);
                    if unbuilt[index.input].fetch_sub(1, Ordering::AcqRel) == 1 {
                        *tables[index.input]
                            .lock()
                            .expect("no worker panics holding it") = None;
                    }
                    *built[i].lock().expect("no worker panics holding it") = Some(result);
                }
            });
        }
    });
    built
        .into_iter()
        .map(|b| {
            b.into_inner()
                .expect("no worker panics holding it")
                .expect("every index taken by a worker")
        })
        .collect()
}

/// The order in which [`build_indexes`] takes the indexes: by their
/// estimated work, the largest first (ties in plan order). An index's work
/// grows with its source's rows times what it builds per row: the key
/// (each part hashed or interned), the sort, and a structure per column.
/// The order changes only when each index is built, never what it holds.
fn build_order(plan: &PitPlan, tables: &[Table]) -> Vec<usize> {
    let work = |index: &IndexPlan| {
        let rows = tables[index.input].batch.num_rows();
        rows * (1 + index.source_key.len() + index.columns.len())
    };
    let mut order: Vec<usize> = (0..plan.indexes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(work(&plan.indexes[i])));
    order
}

fn build_index(plan: &PitPlan, index: &IndexPlan, table: &Table) -> Result<KeyIndex> {
    let (key_ids, table) = (&table.key_ids, &table.batch);
    let source_name = &plan.inputs[index.input];
    let source = plan.spec.source(source_name).expect("resolved source");
    // Rows where `where` is not true are not events of this index; only the
    // columns the index reads are filtered (not a copy of the whole table).
    let mask: Option<BooleanArray> = match &index.filter {
        None => None,
        Some(sql) => Some(FilterExpr::try_new(sql, source)?.evaluate(table)?),
    };
    let filtered = |array: &ArrayRef| -> Result<ArrayRef> {
        Ok(match &mask {
            None => array.clone(),
            Some(mask) => filter(array, mask)?,
        })
    };
    let column = |c: usize| filtered(table.column(c));
    let rows = match &mask {
        None => table.num_rows(),
        Some(mask) => mask.true_count(),
    };
    if rows >= u32::MAX as usize {
        return Err(DataFusionError::Execution(format!(
            "source `{source_name}` has {rows} rows; one index holds fewer than 2^32",
        )));
    }
    // String keys as their ids (see `Symbols`).
    let key_arrays = (index.source_key.iter())
        .map(|&k| filtered(key_ids.get(&k).unwrap_or(table.column(k))))
        .collect::<Result<Vec<_>>>()?;
    let keys = KeyColumns::new(key_arrays.iter().collect())?;
    let mut dict = KeyDict::for_columns(&keys);
    let mut slots = Vec::new();
    dict.insert_all(&keys, rows, &mut slots);
    if let Some(renumbered) = dict.finish() {
        for slot in slots.iter_mut().filter(|s| **s != NO_SLOT) {
            *slot = renumbered[*slot as usize];
        }
    }
    let time_array = index.time.map(&column).transpose()?;
    let times = time_array
        .as_ref()
        .map(|t| t.as_primitive::<TimestampMicrosecondType>());
    // A row without a time is no event.
    if let Some(times) = times.filter(|t| t.null_count() > 0) {
        for (row, slot) in slots.iter_mut().enumerate() {
            if times.is_null(row) {
                *slot = NO_SLOT;
            }
        }
    }
    let (offsets, order) = sort_by_slot_time(&slots, dict.len(), times.map(|t| &t.values()[..]));
    drop(slots);
    if index.dimension {
        check_unique(plan, index, table, &column, times, &offsets, &order)?;
    }
    let sorted_times: Vec<i64> = match times {
        Some(times) => order.iter().map(|&r| times.value(r as usize)).collect(),
        None => vec![0; order.len()],
    };
    let order = UInt32Array::from(order);
    let values = index
        .values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let needs = needs(plan, index, i);
            SortedValues::new(take(&column(v)?, &order, None)?, &offsets, needs)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyIndex {
        dict,
        offsets,
        times: sorted_times,
        values,
    })
}

/// The rows with a slot, ordered by (slot, time, row): a counting sort by
/// slot (stable, so each run is in row order), then each run that is not
/// yet in time order sorted by (time, row). Returns the CSR offsets (slot
/// `s`'s run is `offsets[s]..offsets[s + 1]`) and the rows in that order.
/// `times`: `None` for a snapshot dimension (every time 0).
fn sort_by_slot_time(slots: &[u32], len: usize, times: Option<&[i64]>) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; len + 1];
    for &slot in slots.iter().filter(|&&s| s != NO_SLOT) {
        offsets[slot as usize + 1] += 1;
    }
    for s in 0..len {
        offsets[s + 1] += offsets[s];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; offsets[len] as usize];
    for (row, &slot) in slots.iter().enumerate() {
        if slot != NO_SLOT {
            let at = &mut next[slot as usize];
            order[*at as usize] = row as u32;
            *at += 1;
        }
    }
    drop(next);
    if let Some(times) = times {
        let mut run: Vec<(i64, u32)> = Vec::new();
        for w in offsets.windows(2) {
            let rows = &mut order[w[0] as usize..w[1] as usize];
            if rows.is_sorted_by_key(|&r| times[r as usize]) {
                continue;
            }
            run.clear();
            run.extend(rows.iter().map(|&r| (times[r as usize], r)));
            run.sort_unstable();
            for (row, &(_, r)) in rows.iter_mut().zip(&run) {
                *row = r;
            }
        }
    }
    (offsets, order)
}

/// The answers value column `value` of `index` needs.
fn needs(plan: &PitPlan, index: &IndexPlan, value: usize) -> Needs {
    let mut needs = Needs::default();
    for &c in &index.columns {
        let column = &plan.columns[c];
        if column.value != Some(value) {
            continue;
        }
        if index.dimension {
            // `lookup` and `time_since` read the version's value.
            needs.take = true;
            continue;
        }
        let lifetime = column.lo.is_none();
        needs.take |= matches!(
            column.derived.op,
            Op::Min | Op::Max | Op::First | Op::Last | Op::Lookup | Op::TimeSince
        );
        match column.derived.op {
            Op::First => needs.first = true,
            Op::Last => needs.last = true,
            Op::Min if lifetime => needs.lifetime_min = true,
            Op::Min => needs.sliding_min = true,
            Op::Max if lifetime => needs.lifetime_max = true,
            Op::Max => needs.sliding_max = true,
            Op::CountDistinct if lifetime => needs.lifetime_distinct = true,
            Op::CountDistinct => needs.sliding_distinct = true,
            Op::Sum | Op::Mean => needs.sums = true,
            _ => {}
        }
    }
    needs
}

/// A snapshot dimension has one row per key; a versioned one, one per key
/// and `valid_from`.
fn check_unique(
    plan: &PitPlan,
    index: &IndexPlan,
    table: &RecordBatch,
    column: &dyn Fn(usize) -> Result<ArrayRef>,
    times: Option<&datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>>,
    offsets: &[u32],
    order: &[u32],
) -> Result<()> {
    let versioned = times.is_some();
    let time = |r: u32| times.map_or(0, |t| t.value(r as usize));
    for w in offsets.windows(2) {
        for pair in order[w[0] as usize..w[1] as usize].windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if versioned && time(a) != time(b) {
                continue;
            }
            let source = &plan.inputs[index.input];
            let key = index
                .source_key
                .iter()
                .map(|&k| {
                    let name = table.schema().field(k).name().clone();
                    let value = array_value_to_string(&column(k)?, b as usize)?;
                    Ok(format!("{name}={value}"))
                })
                .collect::<Result<Vec<_>>>()?
                .join(", ");
            let what = if versioned {
                let name = (index.time.map(|t| table.schema().field(t).name().clone()))
                    .unwrap_or_else(|| "valid_from".into());
                let at = crate::time::format_rfc3339(time(b));
                format!("{key} with {name} {at}")
            } else {
                key
            };
            return Err(DataFusionError::from(Error::DuplicateKey {
                source_name: source.clone(),
                key: what,
                versioned,
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The counting sort gives what sorting (slot, time, row) gives,
        /// rows without a slot left out; few slots and times (many ties),
        /// runs in and out of time order.
        #[test]
        fn sort_by_slot_time_is_a_sort_of_slot_time_row(
            rows in proptest::collection::vec((0u32..6, -3i64..4), 0..200),
            snapshot in any::<bool>(),
        ) {
            let len = 5;
            let slots: Vec<u32> = rows.iter().map(|&(s, _)| if s == 5 { NO_SLOT } else { s }).collect();
            let times: Vec<i64> = rows.iter().map(|&(_, t)| t).collect();
            let (offsets, order) = sort_by_slot_time(&slots, len, (!snapshot).then_some(&times[..]));
            let mut expected: Vec<(u32, i64, u32)> = (0..rows.len() as u32)
                .filter(|&r| slots[r as usize] != NO_SLOT)
                .map(|r| (slots[r as usize], if snapshot { 0 } else { times[r as usize] }, r))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(order, expected.iter().map(|e| e.2).collect::<Vec<_>>());
            prop_assert_eq!(offsets.len(), len + 1);
            for s in 0..len {
                let run = expected.iter().filter(|e| e.0 == s as u32).count() as u32;
                prop_assert_eq!(offsets[s + 1] - offsets[s], run);
            }
        }
    }
}
