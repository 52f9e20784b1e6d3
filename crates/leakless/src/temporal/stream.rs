//! Probing spine batches against the indexed side.
//!
//! Each output partition runs this state machine:
//!
//! ```text
//!   Waiting ──(the first partition collects the indexed side, the others
//!              wait for it)──> Probing ──(spine exhausted)──> Done
//!   Probing: spine batch ─> `where` ─> drop immature rows ─> per index:
//!            key slots, window ranges by cursor ─> ops ─> output batch
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int8Array, Int64Array, RecordBatch,
    UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::error::{DataFusionError, Result};

use super::filter::FilterExpr;
use super::index::{Cursor, WindowPlan};
use super::indexed::{IndexedSide, KeyIndex, SortedValues};
use super::keys::KeyColumns;
use super::plan::{ColumnPlan, PitPlan};
use crate::spec::Op;
use crate::time::MICROS_PER_SECOND;

/// The per-stream state of probing: one cursor per index.
pub(super) struct Prober {
    side: Arc<IndexedSide>,
    plan: Arc<PitPlan>,
    schema: SchemaRef,
    cursors: Vec<Cursor>,
    spine_filter: Option<FilterExpr>,
    /// Per label: the end of its window past `t` and its watermark.
    maturity: Vec<(i64, i64)>,
    /// A key group's: the spine batches' leading columns passed through
    /// (the `where` is then applied already).
    carried: Option<usize>,
    /// Per column, for a sliding `count_distinct`: per key slot its last
    /// window `[a, b)` and count (see `DistinctCounts::step`); empty for
    /// other columns.
    distinct: Vec<Vec<[u32; 3]>>,
}

/// What one spine batch became.
pub(super) struct Probed {
    pub batch: RecordBatch,
    pub filtered: usize,
    pub immature: usize,
    /// The immature rows per output bucket of their time.
    pub immature_buckets: Vec<(i64, u64)>,
}

impl Prober {
    pub fn try_new(
        side: Arc<IndexedSide>,
        plan: Arc<PitPlan>,
        schema: SchemaRef,
        carried: Option<usize>,
    ) -> Result<Self> {
        let cursors = plan
            .indexes
            .iter()
            .zip(&side.indexes)
            .map(|(p, index)| {
                let windows: Vec<(Option<i64>, i64)> = p
                    .columns
                    .iter()
                    .map(|&c| (plan.columns[c].lo, plan.columns[c].hi))
                    .collect();
                // A snapshot is never searched by time: no per-key state.
                let slots = if p.is_snapshot() { 0 } else { index.dict.len() };
                Cursor::new(slots, WindowPlan::new(&windows), index.times.len())
            })
            .collect();
        let spine_filter = match (&plan.spec.spine.filter, carried) {
            (Some(sql), None) => Some(FilterExpr::try_new(sql, plan.spec.spine_source())?),
            _ => None,
        };
        let maturity = watermarks(&side, &plan)?;
        let distinct = plan
            .columns
            .iter()
            .map(|c| {
                let sliding = c.derived.op == Op::CountDistinct && c.lo.is_some();
                // Zeros: pages of keys never probed are never touched.
                let slots = if sliding {
                    side.indexes[c.index].dict.len()
                } else {
                    0
                };
                vec![[0u32; 3]; slots]
            })
            .collect();
        Ok(Prober {
            side,
            plan,
            schema,
            cursors,
            spine_filter,
            maturity,
            carried,
            distinct,
        })
    }

    /// Answers one spine batch.
    pub fn probe(&mut self, batch: &RecordBatch) -> Result<Probed> {
        let mut filtered = 0;
        let batch = match &self.spine_filter {
            Some(f) => {
                let mask = f.evaluate(batch)?;
                filtered = mask.len() - mask.true_count();
                filter_record_batch(batch, &mask)?
            }
            None => batch.clone(),
        };
        let times = batch
            .column(self.plan.spine_time)
            .as_primitive::<TimestampMicrosecondType>();
        if times.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "spine column `{}` has a null time",
                self.plan.spec.spine.time
            )));
        }
        let mut immature = 0;
        let mut immature_buckets: Vec<(i64, u64)> = Vec::new();
        let batch = if self.maturity.is_empty() {
            batch
        } else {
            let mature: BooleanArray = times
                .values()
                .iter()
                .map(|&t| {
                    Some(
                        self.maturity
                            .iter()
                            .all(|&(end, watermark)| t.saturating_add(end) <= watermark),
                    )
                })
                .collect();
            immature = mature.len() - mature.true_count();
            let partitioning = self.plan.spec.partition;
            for (&t, _) in (times.values().iter().zip(mature.values().iter())).filter(|(_, m)| !m) {
                let bucket = crate::order::bucket_of(partitioning, t);
                match immature_buckets.last_mut() {
                    Some((b, n)) if *b == bucket => *n += 1,
                    _ => immature_buckets.push((bucket, 1)),
                }
            }
            if immature == 0 {
                batch
            } else {
                filter_record_batch(&batch, &mature)?
            }
        };
        let rows = batch.num_rows();
        let times = batch
            .column(self.plan.spine_time)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .clone();
        let mut arrays: Vec<ArrayRef> = match self.carried {
            Some(carried) => batch.columns()[..carried].to_vec(),
            None => (self.plan.spine_columns.iter())
                .chain([&self.plan.spine_time])
                .map(|&c| batch.column(c).clone())
                .collect(),
        };
        let mut outputs: Vec<Option<ArrayRef>> = vec![None; self.plan.columns.len()];
        let mut slots = Vec::with_capacity(rows);
        let (plan, side) = (self.plan.clone(), self.side.clone());
        // String keys as their ids, each column once per batch.
        let mut ids: std::collections::HashMap<usize, ArrayRef> = Default::default();
        for (i, (index_plan, index)) in plan.indexes.iter().zip(&side.indexes).enumerate() {
            let keys: Vec<ArrayRef> = index_plan
                .spine_key
                .iter()
                .map(|&k| {
                    let column = batch.column(k);
                    match column.data_type() {
                        DataType::Utf8 => (ids.entry(k))
                            .or_insert_with(|| side.symbols.lookup_column(column))
                            .clone(),
                        _ => column.clone(),
                    }
                })
                .collect();
            index
                .dict
                .lookup_all(&KeyColumns::new(keys.iter().collect())?, rows, &mut slots);
            let ranges = self.ranges(i, &slots, &times);
            for (window, &c) in ranges.iter().zip(&index_plan.columns) {
                let column = &plan.columns[c];
                let distinct = &mut self.distinct[c];
                outputs[c] = Some(answer(column, index, window, &times, &slots, distinct)?);
            }
        }
        arrays.extend(
            outputs
                .into_iter()
                .map(|o| o.expect("every column computed")),
        );
        Ok(Probed {
            batch: RecordBatch::try_new(self.schema.clone(), arrays)?,
            filtered,
            immature,
            immature_buckets,
        })
    }
}

impl Prober {
    /// Per column of index `i`, per row, the positions `[a, b)` of its
    /// window in the index (a dimension's row `[p, p + 1)`; empty when the
    /// key has no rows).
    ///
    /// Rows come in time order, so each key's cursor steps forward. Visiting
    /// them grouped by key instead (a radix sort on the slot, so that a
    /// key's state is loaded once per batch) was measured slower: probe CPU
    /// 1.45 s against 1.0 s at 10 M, the scattered writes of the ranges
    /// cost more than the cursor loads they save; at 100 M (1 M listings)
    /// 23.3 s against 21.4 s. Prefetching only the cursor state of a row
    /// ahead helped little (about 5 %); the runs read in a pass of their
    /// own, then the state prefetched 16 rows ahead and the times at its
    /// positions 8 rows ahead, cut the probe's CPU at 100 M from about 30 s
    /// to 19-22 s (10 M: 1.3-1.9 s to 1.0-1.2 s; this machine's timings
    /// vary by a quarter from run to run).
    fn ranges(
        &mut self,
        i: usize,
        slots: &[Option<u32>],
        times: &[i64],
    ) -> Vec<Vec<(usize, usize)>> {
        let index_plan = &self.plan.indexes[i];
        let index = &self.side.indexes[i];
        let windows = index_plan.columns.len();
        let rows = slots.len();
        let mut out = vec![vec![(0usize, 0usize); rows]; windows];
        let versioned = index_plan.time.is_some();
        // Every row's run first: a loop of independent loads that the CPU
        // overlaps (the offsets miss the cache once the keys outgrow it).
        let runs = index.runs(slots);
        if index_plan.is_snapshot() {
            // A snapshot's row does not depend on `t`: no window to find.
            for (row, &(s, e)) in runs.iter().enumerate() {
                if let Some(p) = dimension_row(versioned, e - s, 0) {
                    for w in out.iter_mut() {
                        w[row] = (s + p, s + p + 1);
                    }
                }
            }
            return out;
        }
        let cursor = &mut self.cursors[i];
        let mut found = vec![(0usize, 0usize); windows];
        for (row, slot) in slots.iter().enumerate() {
            // The state of the key `2 * PREFETCH_AHEAD` rows on, then the
            // times at its positions `PREFETCH_AHEAD` rows on, so that both
            // are in the cache when that row comes.
            if let Some(Some(ahead)) = slots.get(row + 2 * PREFETCH_AHEAD) {
                cursor.prefetch_state(*ahead as usize);
            }
            if let Some(Some(ahead)) = slots.get(row + PREFETCH_AHEAD) {
                let (s, e) = runs[row + PREFETCH_AHEAD];
                cursor.prefetch_times(*ahead as usize, &index.times[s..e]);
            }
            let Some(slot) = *slot else { continue };
            let (s, e) = runs[row];
            if s == e {
                // No rows for this key: every window is empty, as for a
                // key with no slot, and its state is never touched.
                continue;
            }
            let run = &index.times[s..e];
            cursor.ranges(slot as usize, run, times[row], &mut found);
            for (w, &(a, b)) in out.iter_mut().zip(&found) {
                w[row] = if index_plan.dimension {
                    dimension_row(versioned, run.len(), b).map_or((s, s), |p| (s + p, s + p + 1))
                } else {
                    (s + a, s + b)
                };
            }
        }
        out
    }
}

/// Rows between a row and the one whose times the probe prefetches (its key
/// state is prefetched twice as far ahead).
const PREFETCH_AHEAD: usize = 8;

/// Column `column` for every row, from its window's positions (`slots`:
/// each row's key; `distinct`: the per-key state of a sliding
/// `count_distinct`).
fn answer(
    column: &ColumnPlan,
    index: &KeyIndex,
    ranges: &[(usize, usize)],
    times: &[i64],
    slots: &[Option<u32>],
    distinct: &mut [[u32; 3]],
) -> Result<ArrayRef> {
    // The common ops in tight loops; the rest row by row.
    Ok(match column.derived.op {
        Op::Count => Arc::new(Int64Array::from_iter_values(
            ranges.iter().map(|&(a, b)| (b - a) as i64),
        )),
        Op::Exists => Arc::new(Int8Array::from_iter_values(
            ranges.iter().map(|&(a, b)| i8::from(b > a)),
        )),
        Op::TimeSinceLast => {
            Arc::new(Int64Array::from_iter(ranges.iter().zip(times).map(
                |(&(a, b), &t)| (b > a).then(|| seconds_between(t, index.times[b - 1])),
            )))
        }
        Op::TimeSince => {
            let v = column.value.map(|v| &index.values[v]);
            let ts = v
                .expect("time_since reads a column")
                .array
                .as_primitive::<TimestampMicrosecondType>();
            Arc::new(Int64Array::from_iter(ranges.iter().zip(times).map(
                |(&(a, b), &t)| {
                    (b > a && ts.is_valid(a)).then(|| seconds_between(t, ts.values()[a]))
                },
            )))
        }
        Op::CountDistinct if column.lo.is_some() => {
            let v = column.value.map(|v| &index.values[v]);
            let counts = (v.and_then(|v| v.ranges.distinct.as_ref()))
                .expect("a sliding count_distinct has its counts");
            Arc::new(Int64Array::from_iter_values(ranges.iter().zip(slots).map(
                |(&(a, b), slot)| match slot {
                    Some(slot) if b > a => counts.step(&mut distinct[*slot as usize], a, b) as i64,
                    _ => 0,
                },
            )))
        }
        _ => {
            let mut acc = Acc::new(column, ranges.len());
            for (&range, &t) in ranges.iter().zip(times) {
                acc.push(column, index, range, t)?;
            }
            acc.finish(column.value.map(|v| &index.values[v]))?
        }
    })
}

/// The position in a dimension run of the row that applies: a snapshot's
/// only row; a versioned dimension's last version before `t - delay`
/// (`before` versions precede it).
fn dimension_row(versioned: bool, len: usize, before: usize) -> Option<usize> {
    if versioned {
        before.checked_sub(1)
    } else {
        (len > 0).then_some(0)
    }
}

/// Per label, the end of its window past `t` and the watermark in force.
fn watermarks(side: &IndexedSide, plan: &PitPlan) -> Result<Vec<(i64, i64)>> {
    plan.labels()
        .zip(label_watermarks(side, plan))
        .map(|((column, _), (_, watermark))| {
            let watermark = watermark.ok_or_else(|| {
                DataFusionError::from(crate::error::Error::NoWatermark {
                    label: column.derived.name.clone(),
                    source_name: column.derived.source.clone(),
                })
            })?;
            Ok((column.hi, watermark))
        })
        .collect()
}

/// The watermark of each label (µs), the latest events from `side`.
pub(super) fn label_watermarks(side: &IndexedSide, plan: &PitPlan) -> Vec<(String, Option<i64>)> {
    plan.label_watermarks(|input| side.latest[input].map(|l| l.time))
}

/// One output column being filled.
enum Acc {
    Int64(Vec<Option<i64>>),
    Int8(Vec<i8>),
    Float(Vec<Option<f64>>),
    /// Positions in the sorted value column (`u32::MAX`: null), taken at
    /// the end: the value keeps its column's type, strings included.
    Take(Vec<u32>),
}

/// `floor((t - e) / 1 s)`, computed without overflow (whole seconds
/// between any two i64 instants fit in an i64).
fn seconds_between(t: i64, e: i64) -> i64 {
    if let Some(micros) = t.checked_sub(e) {
        // The common case without the 128-bit division.
        return micros.div_euclid(MICROS_PER_SECOND);
    }
    let micros = i128::from(t) - i128::from(e);
    micros.div_euclid(i128::from(MICROS_PER_SECOND)) as i64
}

/// The float sum of `a..b`, exact and rounded once.
fn float_sum(v: &SortedValues, a: usize, b: usize) -> f64 {
    let sums = v
        .ranges
        .sums
        .as_ref()
        .expect("a float sum has its prefix sums");
    sums.sum(a, b)
}

impl Acc {
    fn new(column: &ColumnPlan, rows: usize) -> Self {
        let d = &column.derived;
        match d.op {
            // `count`, `time_since_last` and `time_since` are answered
            // whole by `answer` and never come here; the match stays total.
            Op::Count
            | Op::CountDistinct
            | Op::TimeSinceLast
            | Op::TimeSinceFirst
            | Op::TimeSince => Acc::Int64(Vec::with_capacity(rows)),
            Op::Exists => Acc::Int8(Vec::with_capacity(rows)),
            Op::Mean => Acc::Float(Vec::with_capacity(rows)),
            Op::Sum if d.output_type == crate::spec::ValueType::Float64 => {
                Acc::Float(Vec::with_capacity(rows))
            }
            Op::Sum => Acc::Int64(Vec::with_capacity(rows)),
            Op::Min | Op::Max | Op::First | Op::Last | Op::Lookup => {
                Acc::Take(Vec::with_capacity(rows))
            }
        }
    }

    /// Appends the answer for the positions `a..b` of `index` (`count`,
    /// `exists`, `time_since_last` and `time_since` are answered whole by
    /// [`answer`]).
    fn push(
        &mut self,
        column: &ColumnPlan,
        index: &KeyIndex,
        (a, b): (usize, usize),
        t: i64,
    ) -> Result<()> {
        let values: Option<&SortedValues> = column.value.map(|v| &index.values[v]);
        // A lifetime window starts at the key's first event: its answer is
        // the run's prefix up to `b - 1`, already computed.
        let prefix = |answers: &Option<Vec<u32>>| {
            answers
                .as_ref()
                .filter(|_| column.lo.is_none())
                .map(|p| if b > a { p[b - 1] } else { u32::MAX })
        };
        let nonnull = |v: &SortedValues| v.nonnull_before(b) - v.nonnull_before(a);
        match (self, column.derived.op) {
            (Acc::Int64(out), Op::TimeSinceFirst) => {
                out.push((b > a).then(|| seconds_between(t, index.times[a])))
            }
            (Acc::Int64(out), Op::Sum) => {
                let sums = values.and_then(|v| v.int_sums.as_ref()).expect("int sums");
                let sum = sums[b] - sums[a];
                let sum = i64::try_from(sum).map_err(|_| {
                    DataFusionError::Execution(format!(
                        "feature `{}`: the sum {sum} overflows int64",
                        column.derived.name
                    ))
                })?;
                out.push(Some(sum))
            }
            (Acc::Float(out), Op::Sum) => {
                let v = values.expect("sum reads a column");
                out.push(Some(float_sum(v, a, b)))
            }
            (Acc::Float(out), Op::Mean) => {
                let v = values.expect("mean reads a column");
                let n = nonnull(v);
                out.push((n > 0).then(|| match &v.int_sums {
                    Some(sums) => (sums[b] - sums[a]) as f64 / n as f64,
                    None => float_sum(v, a, b) / n as f64,
                }))
            }
            (Acc::Int64(out), Op::CountDistinct) => {
                let v = values.expect("count_distinct reads a column");
                // A sliding window is answered whole by `answer`.
                let n = match prefix(&v.lifetime.distinct) {
                    Some(u32::MAX) | None => 0,
                    Some(n) => n as usize,
                };
                out.push(Some(n as i64))
            }
            (Acc::Take(out), Op::First) => {
                let v = values.expect("first reads a column");
                let p = if a < b { v.next_nonnull(a) } else { u32::MAX };
                out.push(if (p as usize) < b { p } else { u32::MAX })
            }
            (Acc::Take(out), Op::Last) => {
                let v = values.expect("last reads a column");
                let p = if a < b {
                    v.prev_nonnull(b - 1)
                } else {
                    u32::MAX
                };
                out.push(if p != u32::MAX && p as usize >= a {
                    p
                } else {
                    u32::MAX
                })
            }
            (Acc::Take(out), Op::Lookup) => out.push(if b > a { a as u32 } else { u32::MAX }),
            (Acc::Take(out), op @ (Op::Min | Op::Max)) => {
                let v = values.expect("min and max read a column");
                let answers = if op == Op::Max {
                    &v.lifetime.max
                } else {
                    &v.lifetime.min
                };
                out.push(match prefix(answers) {
                    Some(p) => p,
                    None => v.ranges.extreme(v, a, b, op == Op::Max),
                })
            }
            (_, op) => {
                return Err(DataFusionError::Internal(format!(
                    "no accumulator for op {}",
                    op.name()
                )));
            }
        }
        Ok(())
    }

    fn finish(self, values: Option<&SortedValues>) -> Result<ArrayRef> {
        Ok(match self {
            Acc::Int64(v) => Arc::new(Int64Array::from(v)),
            Acc::Int8(v) => Arc::new(Int8Array::from(v)),
            Acc::Float(v) => Arc::new(Float64Array::from(v)),
            Acc::Take(positions) => {
                let values = values.expect("a taken column has values");
                let positions: UInt32Array = positions
                    .into_iter()
                    .map(|p| (p != u32::MAX).then_some(p))
                    .collect();
                take(&values.array, &positions, None)?
            }
        })
    }
}

/// A value as `count_distinct` compares it: ints, timestamps and bools by
/// value, floats by bits with -0.0 read as 0.0, strings by bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum DistinctKey<'a> {
    Bits(u64),
    Bytes(&'a [u8]),
}

/// The distinct key of row `i`, `None` when it is null.
pub(super) fn distinct_key(array: &ArrayRef, i: usize) -> Option<DistinctKey<'_>> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => DistinctKey::Bytes(array.as_string::<i32>().value(i).as_bytes()),
        DataType::Float64 => {
            let x = array.as_primitive::<Float64Type>().value(i);
            DistinctKey::Bits(if x == 0.0 { 0 } else { x.to_bits() })
        }
        DataType::Boolean => DistinctKey::Bits(u64::from(array.as_boolean().value(i))),
        DataType::Int64 => DistinctKey::Bits(array.as_primitive::<Int64Type>().value(i) as u64),
        _ => DistinctKey::Bits(array.as_primitive::<TimestampMicrosecondType>().value(i) as u64),
    })
}
