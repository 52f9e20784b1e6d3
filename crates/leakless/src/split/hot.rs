//! Hot keys: keys that hold a large share of the spine (a Zipf listing),
//! which hashing on the key alone would leave to one task.
//!
//! Before a build split by key, [`HotKeysExec`] reads a sample of the
//! spine (the first rows of each file, after `where`) and keeps, per key
//! group, a Misra-Gries summary of its keys ([`COUNTERS_PER_PARTITION`]
//! counters per output partition: every key above `1 / (counters + 1)`
//! of the sample is in it, its count short by at most that). [`choose`]
//! merges the summaries: a key whose share of the sample exceeds half an
//! output partition's fair share (`1 / 2n`) is **hot**, spread over
//! `s = min(n, ceil(share * 2n))` salts.
//!
//! In the plan (`super::plan`), a hot key's spine rows each take one salt
//! (a hash of the row's spine columns modulo `s`) and its events are
//! copied once per salt; both shuffles hash on the key and the salt, so a
//! spine row meets every event of its key in its partition, and no salt's
//! share is more than half a fair share (`share / n` for a key above half
//! the spine). Two salts of a key may land in
//! one partition: the group's task then holds two copies of those events,
//! and keeps one (`temporal::indexed`, by row id). The output does not
//! depend on which keys are hot: only the work's spread does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::ingest::hex;

/// The salt column the shuffles of a group with hot keys hash on, beside
/// the key.
pub const SALT: &str = "__leakless_salt";

/// Misra-Gries counters per output partition.
pub const COUNTERS_PER_PARTITION: usize = 8;

/// Spine rows sampled over all files (each file's first rows).
pub const SAMPLE_ROWS: usize = 1_000_000;

/// Rows sampled from each of `files` files: a million in all.
pub fn sample_per_file(files: usize) -> usize {
    SAMPLE_ROWS.div_ceil(files.max(1))
}

/// A hot key of a key group: its key columns in Arrow's row format (hex),
/// and the number of salts its spine rows are spread over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    pub key: String,
    pub salts: u32,
}

/// The key columns of `batch` at `key`, in Arrow's row format.
pub(crate) fn key_rows(batch: &RecordBatch, key: &[usize]) -> Result<datafusion::arrow::row::Rows> {
    let fields = key
        .iter()
        .map(|&k| SortField::new(batch.schema().field(k).data_type().clone()))
        .collect();
    let columns: Vec<ArrayRef> = key.iter().map(|&k| batch.column(k).clone()).collect();
    Ok(RowConverter::new(fields)?.convert_columns(&columns)?)
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    let bad = || DataFusionError::Internal(format!("a hot key is not hex: {text}"));
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

/// A group's hot keys by their row bytes, for routing.
pub(crate) fn lookup(hot: &[HotKey]) -> Result<HashMap<Vec<u8>, u32>> {
    hot.iter().map(|h| Ok((unhex(&h.key)?, h.salts))).collect()
}

/// How a [`super::route::RouteExec`] salts the rows of a key group with
/// hot keys (see the module docs), on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaltOptions {
    /// The key columns.
    pub key: Vec<usize>,
    pub hot: Vec<HotKey>,
    /// Events: a hot key's row once per salt. Otherwise (the spine) one
    /// salt, from a hash of the row's first `hashed` columns.
    pub copies: bool,
    pub hashed: usize,
}

/// [`SaltOptions`] ready to route.
#[derive(Debug)]
pub(crate) struct Salter {
    options: SaltOptions,
    hot: HashMap<Vec<u8>, u32>,
}

/// The seed of the spine rows' salt hash (any fixed one: a row's salt must
/// not depend on the process).
const SALT_SEED: u64 = 0x1ea6_1e55;

impl Salter {
    pub(crate) fn new(options: SaltOptions) -> Result<Self> {
        if let Some(h) = options.hot.iter().find(|h| h.salts == 0) {
            return Err(DataFusionError::Internal(format!(
                "a hot key with no salt: {}",
                h.key
            )));
        }
        let hot = lookup(&options.hot)?;
        Ok(Salter { options, hot })
    }

    /// `batch` with [`SALT`] appended (as `schema` says), hot keys' events
    /// copied once per salt.
    pub(crate) fn apply(&self, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let salts: Vec<u32> = match self.hot.is_empty() || n == 0 {
            true => vec![1; n],
            false => {
                let rows = key_rows(&batch, &self.options.key)?;
                // A key with a null never is hot, and none encodes as one.
                (rows.iter())
                    .map(|row| self.hot.get(row.as_ref()).copied().unwrap_or(1))
                    .collect()
            }
        };
        let mut columns = batch.columns().to_vec();
        if salts.iter().all(|&s| s == 1) {
            columns.push(Arc::new(UInt32Array::from(vec![0u32; n])));
        } else if self.options.copies {
            let mut take = Vec::with_capacity(n);
            let mut salt = Vec::with_capacity(n);
            for (i, &s) in salts.iter().enumerate() {
                for c in 0..s {
                    take.push(i as u32);
                    salt.push(c);
                }
            }
            let take = UInt32Array::from(take);
            columns = (columns.iter())
                .map(|c| datafusion::arrow::compute::take(c, &take, None))
                .collect::<std::result::Result<_, _>>()?;
            columns.push(Arc::new(UInt32Array::from(salt)));
        } else {
            let mut hashes = vec![0u64; n];
            let state = datafusion::common::hash_utils::RandomState::with_seed(SALT_SEED);
            let hashed = self.options.hashed.min(columns.len());
            datafusion::common::hash_utils::create_hashes(&columns[..hashed], &state, &mut hashes)?;
            let salt: UInt32Array = (salts.iter().zip(&hashes))
                .map(|(&s, &h)| (h % u64::from(s)) as u32)
                .collect();
            columns.push(Arc::new(salt));
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// A Misra-Gries summary: at most `counters` keys; a key seen more than
/// `rows / (counters + 1)` times is among them, its count short by at most
/// that.
struct Summary {
    counts: HashMap<Vec<u8>, u64>,
    counters: usize,
}

impl Summary {
    fn new(counters: usize) -> Self {
        Summary {
            counts: HashMap::with_capacity(counters + 1),
            counters: counters.max(1),
        }
    }

    fn add(&mut self, key: &[u8]) {
        if let Some(count) = self.counts.get_mut(key) {
            *count += 1;
        } else if self.counts.len() < self.counters {
            self.counts.insert(key.to_vec(), 1);
        } else {
            // One of every counter and this key's one cancel out.
            self.counts.retain(|_, count| {
                *count -= 1;
                *count > 0
            });
        }
    }
}

/// Reads the first `sample` rows of each partition of its input (the
/// spine's scan, after `where`) and emits, per key group, the partition's
/// Misra-Gries summary: rows `(group, key, count)`, and one `(group, null,
/// rows sampled)`.
#[derive(Debug)]
pub struct HotKeysExec {
    input: Arc<dyn ExecutionPlan>,
    options: HotKeysOptions,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

/// What a [`HotKeysExec`] does, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeysOptions {
    /// Per key group, the spine's key columns.
    pub keys: Vec<Vec<usize>>,
    pub counters: usize,
    /// Rows read from each input partition at most.
    pub sample: usize,
}

impl HotKeysExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, options: HotKeysOptions) -> Result<Self> {
        let width = input.schema().fields().len();
        if let Some(&k) = options.keys.iter().flatten().find(|&&k| k >= width) {
            return Err(DataFusionError::Internal(format!(
                "HotKeysExec: key column {k} of a spine of {width} columns"
            )));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("group", DataType::UInt32, false),
            Field::new("key", DataType::Binary, true),
            Field::new("count", DataType::UInt64, false),
        ]));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(HotKeysExec {
            input,
            options,
            schema,
            cache,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.options)
            .map_err(|e| DataFusionError::Internal(format!("encoding a HotKeysExec: {e}")))
    }

    pub fn from_bytes(bytes: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let options = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a HotKeysExec: {e}")))?;
        HotKeysExec::try_new(input, options)
    }
}

impl DisplayAs for HotKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "HotKeysExec: {:?}", self.options)
    }
}

impl ExecutionPlan for HotKeysExec {
    fn name(&self) -> &str {
        "HotKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("HotKeysExec needs an input".into()))?;
        Ok(Arc::new(HotKeysExec::try_new(input, self.options.clone())?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let options = self.options.clone();
        let schema = self.schema.clone();
        let out = schema.clone();
        let summarized = futures::stream::once(async move {
            let mut summaries: Vec<Summary> = (options.keys.iter())
                .map(|_| Summary::new(options.counters))
                .collect();
            let mut sampled = 0usize;
            while sampled < options.sample {
                let Some(batch) = input.next().await else {
                    break;
                };
                let batch = batch?;
                let batch = batch.slice(0, batch.num_rows().min(options.sample - sampled));
                sampled += batch.num_rows();
                for (key, summary) in options.keys.iter().zip(&mut summaries) {
                    let rows = key_rows(&batch, key)?;
                    for (i, row) in rows.iter().enumerate() {
                        // Rows without a whole key meet no event: never hot.
                        if key.iter().all(|&k| batch.column(k).is_valid(i)) {
                            summary.add(row.as_ref());
                        }
                    }
                }
            }
            let (mut groups, mut keys, mut counts) = (Vec::new(), Vec::new(), Vec::new());
            for (g, summary) in summaries.iter().enumerate() {
                groups.push(g as u32);
                keys.push(None);
                counts.push(sampled as u64);
                let mut entries: Vec<(&Vec<u8>, &u64)> = summary.counts.iter().collect();
                entries.sort();
                for (key, &count) in entries {
                    groups.push(g as u32);
                    keys.push(Some(key.as_slice()));
                    counts.push(count);
                }
            }
            Ok(RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(UInt32Array::from(groups)),
                    Arc::new(BinaryArray::from(keys)),
                    Arc::new(UInt64Array::from(counts)),
                ],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out, summarized)))
    }
}

/// Merges the summaries [`HotKeysExec`] emitted (any order) into the hot
/// keys of each of `groups` key groups, for `partitions` output
/// partitions; keys sorted by their bytes. `every`: every key of the
/// summaries, over every partition (for tests).
pub fn choose(
    batches: &[RecordBatch],
    groups: usize,
    partitions: usize,
    every: bool,
) -> Result<Vec<Vec<HotKey>>> {
    let mut totals = vec![0u64; groups];
    let mut counts: Vec<BTreeMap<Vec<u8>, u64>> = vec![BTreeMap::new(); groups];
    for batch in batches {
        let bad = || DataFusionError::Internal("a hot-key summary of another shape".into());
        let group = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(bad)?;
        let key = batch.column(1).as_binary_opt::<i32>().ok_or_else(bad)?;
        let count = batch
            .column(2)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            let g = group.value(i) as usize;
            if g >= groups {
                return Err(bad());
            }
            match key.is_valid(i) {
                false => totals[g] += count.value(i),
                true => *counts[g].entry(key.value(i).to_vec()).or_default() += count.value(i),
            }
        }
    }
    let n = partitions.max(1) as u64;
    Ok(counts
        .into_iter()
        .zip(totals)
        .map(|(counts, total)| {
            counts
                .into_iter()
                .filter_map(|(key, count)| {
                    // share > 1 / 2n, salts = ceil(share * 2n), at most n.
                    let salts = match every {
                        true => n,
                        false => (count * 2 * n).div_ceil(total.max(1)).min(n),
                    };
                    (salts >= 2 && (every || count * 2 * n > total)).then(|| HotKey {
                        key: hex(&key),
                        salts: salts as u32,
                    })
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key above `1 / (counters + 1)` of the rows survives, short by
    /// at most that; rare keys go.
    #[test]
    fn a_summary_keeps_the_frequent_keys() {
        let mut summary = Summary::new(3);
        let mut rows = Vec::new();
        for i in 0..1000u32 {
            rows.push(match i % 10 {
                0..=4 => b"hot".to_vec(),
                5 | 6 => b"warm".to_vec(),
                _ => i.to_le_bytes().to_vec(),
            });
        }
        for row in &rows {
            summary.add(row);
        }
        let count = |key: &[u8]| summary.counts.get(key).copied().unwrap_or(0);
        let (hot, warm) = (count(b"hot"), count(b"warm"));
        assert!((500 - 250..=500).contains(&hot), "{hot}");
        assert!(warm <= 200, "{warm}");
        assert!(summary.counts.len() <= 3);
    }

    fn summary(rows: &[(u32, Option<&[u8]>, u64)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("group", DataType::UInt32, false),
                Field::new("key", DataType::Binary, true),
                Field::new("count", DataType::UInt64, false),
            ])),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(BinaryArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// Summaries of two files merge: a key is hot above half a fair share,
    /// with one salt per half share, never more than the partitions.
    #[test]
    fn keys_above_half_a_fair_share_are_hot() {
        let files = [
            summary(&[
                (0, None, 100),
                (0, Some(b"a"), 40),
                (0, Some(b"b"), 6),
                (1, None, 100),
            ]),
            summary(&[
                (0, None, 100),
                (0, Some(b"a"), 60),
                (0, Some(b"b"), 6),
                (0, Some(b"c"), 30),
            ]),
        ];
        // 4 partitions: a fair share is 50 of 200, half of it 25.
        let hot = choose(&files, 2, 4, false).unwrap();
        assert_eq!(
            hot[0],
            [
                HotKey {
                    key: hex(b"a"),
                    salts: 4
                },
                HotKey {
                    key: hex(b"c"),
                    salts: 2
                },
            ]
        );
        assert!(hot[1].is_empty());
        // One partition: nothing to spread over.
        assert!(
            choose(&files, 2, 1, true)
                .unwrap()
                .iter()
                .all(Vec::is_empty)
        );
        let every = choose(&files, 2, 3, true).unwrap();
        assert_eq!(every[0].len(), 3);
        assert!(every[0].iter().all(|h| h.salts == 3));
        assert_eq!(unhex(&hex(b"\x00\xffz")).unwrap(), b"\x00\xffz");
        assert!(unhex("0g").is_err());
    }

    fn batch(keys: &[Option<i64>], values: &[i64]) -> RecordBatch {
        use datafusion::arrow::array::Int64Array;
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("v", DataType::Int64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    fn salted_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
            Field::new(SALT, DataType::UInt32, false),
        ]))
    }

    fn hot_seven(copies: bool) -> Salter {
        let seven = batch(&[Some(7)], &[0]);
        let key = hex(key_rows(&seven, &[0]).unwrap().row(0).as_ref());
        Salter::new(SaltOptions {
            key: vec![0],
            hot: vec![HotKey { key, salts: 3 }],
            copies,
            hashed: 2,
        })
        .unwrap()
    }

    /// An event of a hot key goes once to each of its salts; other keys
    /// (and a null) once, with salt 0.
    #[test]
    fn a_hot_keys_events_go_to_every_salt() {
        let out = hot_seven(true)
            .apply(
                batch(&[Some(1), Some(7), None], &[10, 20, 30]),
                &salted_schema(),
            )
            .unwrap();
        let v = out
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let salt = out.column(2).as_primitive::<UInt32Type>();
        let rows: Vec<(i64, u32)> = (0..out.num_rows())
            .map(|i| (v.value(i), salt.value(i)))
            .collect();
        assert_eq!(rows, [(10, 0), (20, 0), (20, 1), (20, 2), (30, 0)]);
    }

    /// A hot key's spine rows spread over its salts, each row's salt a
    /// function of its values alone (the same in any batch, at any place).
    #[test]
    fn a_hot_keys_spine_rows_spread_over_its_salts() {
        let salter = hot_seven(false);
        let values: Vec<i64> = (0..300).collect();
        let keys: Vec<Option<i64>> = values
            .iter()
            .map(|v| Some(if v % 3 == 0 { 1 } else { 7 }))
            .collect();
        let out = salter
            .apply(batch(&keys, &values), &salted_schema())
            .unwrap();
        assert_eq!(out.num_rows(), 300);
        let salt = out.column(2).as_primitive::<UInt32Type>();
        let mut seen = [0usize; 3];
        for (i, key) in keys.iter().enumerate() {
            let s = salt.value(i);
            match key {
                Some(7) => seen[s as usize] += 1,
                _ => assert_eq!(s, 0),
            }
        }
        assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
        // Row 200 alone, in a batch of its own: the same salt.
        let alone = salter
            .apply(batch(&[Some(7)], &[200]), &salted_schema())
            .unwrap();
        assert_eq!(
            alone.column(2).as_primitive::<UInt32Type>().value(0),
            salt.value(200)
        );
    }
}
