//! [`BucketSortExec`]: the spine, in the order the dataset is written.
//!
//! Every spine row goes to the output bucket of its time (the UTC day or
//! hour of its partition folder, or one bucket without partitioning).
//! When the input is exhausted, the output partitions take buckets in
//! ascending order as they ask for work; each bucket is sorted by every
//! column, time first, and emitted in slices of at most [`BATCH_ROWS`] rows.
//!
//! ```text
//!   input partitions ──> bucket by time ──> pending in memory ──(over the budget)──> spill (Arrow IPC)
//!   output partition p: next bucket ─> read its chunks ─> sort ─> slices ─> next bucket ...
//! ```
//!
//! Invariants:
//! - a bucket's rows leave through one output partition, consecutively and
//!   sorted, so a writer sees each partition folder whole;
//! - each output partition's buckets ascend, so its rows are in time order
//!   (the point-in-time operator's cursors only ever move forward);
//! - a bucket's slices depend on its rows only, never on the input order,
//!   the number of partitions or which partition took it: rows that tie on
//!   every column are the same bytes;
//! - memory holds at most twice [`SPILL_BYTES`] of pending rows (one spill
//!   being written while the next gathers: 1 GiB by default) plus the
//!   buckets being sorted.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, UInt32Array, make_comparator,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::TryStreamExt;

use crate::error::{Shared, shared};
use crate::spec;
use crate::time::MICROS_PER_DAY;

/// Rows in one emitted slice of a bucket: what the probe holds per batch
/// (a range pair per window and row) stays small whatever a day holds.
pub const BATCH_ROWS: usize = 1 << 16;
/// Pending rows held in memory over all input partitions before they are
/// spilled. A spine of 10 M narrow rows (the marketplace's, 340 MB) stays
/// in memory: spilling it cost a tenth of that build's CPU, most of it the
/// kernel copying the file into the page cache (256 MB spilled it: 3.5 s
/// against 3.3 s, peak 450 MB against 500 MB).
pub const SPILL_BYTES: usize = 512 << 20;

/// The width of a bucket in microseconds; `None`: one bucket.
pub fn bucket_micros(partitioning: spec::Partitioning) -> Option<i64> {
    match partitioning {
        spec::Partitioning::Day => Some(MICROS_PER_DAY),
        spec::Partitioning::Hour => Some(MICROS_PER_DAY / 24),
        spec::Partitioning::None => None,
    }
}

/// The bucket of instant `t` (µs).
pub fn bucket_of(partitioning: spec::Partitioning, t: i64) -> i64 {
    bucket_micros(partitioning).map_or(0, |w| t.div_euclid(w))
}

/// The spine bucketed by output partition and sorted; see the module docs.
#[derive(Debug)]
pub struct BucketSortExec {
    input: Arc<dyn ExecutionPlan>,
    /// Every column of the input, the time column first.
    sort_columns: Vec<usize>,
    partitioning: spec::Partitioning,
    spill_dir: PathBuf,
    /// Pending bytes held over all input partitions before a spill.
    spill_bytes: usize,
    /// Whether output partition `p` of `n` takes the buckets whose number
    /// is `p` modulo `n` (so that a partition run alone, as a cluster task,
    /// emits exactly its own), instead of the next bucket when it asks.
    fixed_buckets: bool,
    /// Only these buckets are kept (an incremental build's), when given.
    keep: Option<Arc<BTreeSet<i64>>>,
    cache: Arc<PlanProperties>,
    drained: Arc<Shared<Arc<Drained>>>,
    metrics: ExecutionPlanMetricsSet,
}

/// A [`BucketSortExec`] on the wire (its input travels beside it).
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    sort_columns: Vec<usize>,
    partitioning: spec::Partitioning,
    partitions: usize,
    spill_dir: PathBuf,
    spill_bytes: usize,
    fixed_buckets: bool,
    #[serde(default)]
    keep: Option<BTreeSet<i64>>,
}

impl BucketSortExec {
    /// `partitions` output partitions over `input`, sorted by
    /// `sort_columns` (a non-null microsecond timestamp first), then by
    /// every column they leave out, in schema order; spill files go to
    /// `spill_dir`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        mut sort_columns: Vec<usize>,
        partitioning: spec::Partitioning,
        partitions: usize,
        spill_dir: PathBuf,
    ) -> Self {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        for i in 0..input.schema().fields().len() {
            if !sort_columns.contains(&i) {
                sort_columns.push(i);
            }
        }
        BucketSortExec {
            input,
            sort_columns,
            partitioning,
            spill_dir,
            spill_bytes: SPILL_BYTES,
            fixed_buckets: false,
            keep: None,
            cache,
            drained: Arc::new(Shared::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Spills pending rows once they hold more than `bytes` (default
    /// [`SPILL_BYTES`]).
    pub fn with_spill_bytes(mut self, bytes: usize) -> Self {
        self.spill_bytes = bytes;
        self
    }

    /// Output partition `p` of `n` takes the buckets whose number is `p`
    /// modulo `n`, whatever the other partitions do: for a plan whose
    /// partitions run in separate processes.
    pub fn with_fixed_buckets(mut self, fixed: bool) -> Self {
        self.fixed_buckets = fixed;
        self
    }

    /// Keeps only the rows of these buckets (`None`: every row); the
    /// others are dropped as they are read.
    pub fn with_buckets(mut self, keep: Option<BTreeSet<i64>>) -> Self {
        self.keep = keep.map(Arc::new);
        self
    }

    /// The node on the wire (an error for a spill folder that is not UTF-8).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&Wire {
            sort_columns: self.sort_columns.clone(),
            partitioning: self.partitioning,
            partitions: self.cache.output_partitioning().partition_count(),
            spill_dir: self.spill_dir.clone(),
            spill_bytes: self.spill_bytes,
            fixed_buckets: self.fixed_buckets,
            keep: self.keep.as_deref().cloned(),
        })
        .map_err(|e| DataFusionError::Internal(format!("encoding a BucketSortExec: {e}")))
    }

    pub fn from_bytes(bytes: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a BucketSortExec: {e}")))?;
        Ok(BucketSortExec::new(
            input,
            wire.sort_columns,
            wire.partitioning,
            wire.partitions,
            wire.spill_dir,
        )
        .with_spill_bytes(wire.spill_bytes)
        .with_fixed_buckets(wire.fixed_buckets)
        .with_buckets(wire.keep))
    }

    /// A new instance over `input`, with no state.
    fn renew(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        BucketSortExec::new(
            input,
            self.sort_columns.clone(),
            self.partitioning,
            self.cache.output_partitioning().partition_count(),
            self.spill_dir.clone(),
        )
        .with_spill_bytes(self.spill_bytes)
        .with_fixed_buckets(self.fixed_buckets)
        .with_buckets(self.keep.as_deref().cloned())
    }

    fn time(&self) -> usize {
        self.sort_columns[0]
    }

    /// The latest time of the input, once drained (`None` without rows).
    pub fn max_time(&self) -> Option<i64> {
        self.drained
            .get()
            .and_then(|d| d.as_ref().ok())
            .and_then(|d| d.max_time)
    }

    /// Wall seconds spent reading and bucketing the input, once done.
    pub fn drain_seconds(&self) -> f64 {
        self.drained
            .get()
            .and_then(|d| d.as_ref().ok())
            .map_or(0.0, |d| d.seconds)
    }

    /// CPU seconds output partition `partition` spent sorting buckets.
    pub fn partition_sort_seconds(&self, partition: usize) -> f64 {
        let metrics = self.metrics.clone_inner();
        let nanos: usize = metrics
            .iter()
            .filter(|m| m.partition() == Some(partition) && m.value().name() == "sort_time")
            .map(|m| m.value().as_usize())
            .sum();
        nanos as f64 / 1e9
    }

    /// CPU seconds spent sorting buckets, summed over partitions.
    pub fn sort_seconds(&self) -> f64 {
        self.metrics
            .clone_inner()
            .sum_by_name("sort_time")
            .map_or(0, |v| v.as_usize()) as f64
            / 1e9
    }
}

impl DisplayAs for BucketSortExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "BucketSortExec: by {:?} of column {}, partitions={}",
            self.partitioning,
            self.time(),
            self.cache.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for BucketSortExec {
    fn name(&self) -> &str {
        "BucketSortExec"
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("BucketSortExec needs an input".into()))?;
        Ok(Arc::new(self.renew(input)))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.renew(self.input.clone())))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let sort_time = MetricBuilder::new(&self.metrics).subset_time("sort_time", partition);
        let drained = self.drained.clone();
        let input = self.input.clone();
        let schema = self.input.schema();
        let sort_columns = self.sort_columns.clone();
        let (time, partitioning) = (self.time(), self.partitioning);
        let spill_dir = self.spill_dir.clone();
        let spill_bytes = self.spill_bytes;
        let workers = self.cache.output_partitioning().partition_count();
        let fixed = self.fixed_buckets.then_some((partition, workers));
        let keep = self.keep.clone();
        let stream = futures::stream::once(async move {
            let drained = shared(&drained, || {
                drain(
                    input,
                    time,
                    (partitioning, keep),
                    workers,
                    (spill_dir, spill_bytes),
                    context,
                )
            })
            .await?;
            let mut mine = 0;
            let slices = futures::stream::iter(std::iter::from_fn(move || {
                let (_, chunks) = match fixed {
                    Some((p, n)) => {
                        let found = (drained.buckets[mine..].iter())
                            .position(|(b, _)| b.rem_euclid(n as i64) as usize == p)?;
                        mine += found + 1;
                        &drained.buckets[mine - 1]
                    }
                    None => drained
                        .buckets
                        .get(drained.next.fetch_add(1, Ordering::Relaxed))?,
                };
                let _timer = sort_time.timer();
                Some(sorted_bucket(&drained.schema, chunks, &sort_columns))
            }))
            .map_ok(|sorted| futures::stream::iter(slices(&sorted).into_iter().map(Ok)))
            .try_flatten();
            Ok::<_, DataFusionError>(slices)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Every input row, bucketed: per bucket, in ascending order, its chunks.
#[derive(Debug)]
struct Drained {
    schema: SchemaRef,
    /// Per bucket number, ascending.
    buckets: Vec<(i64, Vec<Chunk>)>,
    /// The next bucket to hand out.
    next: AtomicUsize,
    /// The latest time of any row.
    max_time: Option<i64>,
    /// Wall seconds from the first read to the last row bucketed.
    seconds: f64,
    _spills: Vec<SpillFile>,
}

/// Part of a bucket: in memory, or batch `batch` of a spill file.
#[derive(Debug)]
enum Chunk {
    Memory(RecordBatch),
    Spilled { path: PathBuf, batch: usize },
}

/// A spill file, removed when the drained state is dropped.
#[derive(Debug)]
struct SpillFile(PathBuf);

impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads every input partition on up to `workers` tasks, bucketing rows.
async fn drain(
    input: Arc<dyn ExecutionPlan>,
    time: usize,
    (partitioning, keep): (spec::Partitioning, Option<Arc<BTreeSet<i64>>>),
    workers: usize,
    (spill_dir, spill_bytes): (PathBuf, usize),
    context: Arc<TaskContext>,
) -> Result<Arc<Drained>> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&spill_dir).map_err(|e| {
        DataFusionError::Execution(format!("creating `{}`: {e}", spill_dir.display()))
    })?;
    let schema = input.schema();
    let partitions = input.output_partitioning().partition_count();
    let next = Arc::new(AtomicUsize::new(0));
    // The lowest input partition that failed (`usize::MAX`: none yet).
    let failed = Arc::new(AtomicUsize::new(usize::MAX));
    let workers = workers.clamp(1, partitions.max(1));
    // Spill files are named per process and drain, so that drains of
    // several plans (cluster tasks in one executor, or on one machine)
    // never share one.
    static DRAINS: AtomicUsize = AtomicUsize::new(0);
    let drain = DRAINS.fetch_add(1, Ordering::Relaxed);
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut bucketer = Bucketer {
            schema: schema.clone(),
            time,
            partitioning,
            budget: spill_bytes / workers,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            chunks: BTreeMap::new(),
            spill_path: spill_dir.join(format!(
                "spine-{}-{drain}-{worker}.arrow",
                crate::write::commit::process_token()
            )),
            spill: None,
            spilled: 0,
            max_time: None,
            keep: keep.clone(),
        };
        let (input, context, next) = (input.clone(), context.clone(), next.clone());
        let failed = failed.clone();
        tasks.push(SpawnedTask::spawn(async move {
            loop {
                let partition = next.fetch_add(1, Ordering::Relaxed);
                // Past the last partition, or past one that failed: the
                // partitions before it still finish, so that the error
                // reported is the first in file order, as in a sequential
                // read.
                if partition >= partitions.min(failed.load(Ordering::Relaxed)) {
                    break;
                }
                let read = async {
                    let mut stream = input.execute(partition, context.clone())?;
                    while let Some(batch) = stream.try_next().await? {
                        bucketer.push(&batch)?;
                    }
                    Ok::<_, DataFusionError>(())
                };
                if let Err(e) = read.await {
                    failed.fetch_min(partition, Ordering::Relaxed);
                    return Err((partition, e));
                }
            }
            bucketer.finish().map_err(|e| (partitions, e))
        }));
    }
    let mut buckets: BTreeMap<i64, Vec<Chunk>> = BTreeMap::new();
    let mut spills = Vec::new();
    let mut max_time = None;
    let mut first_error: Option<(usize, DataFusionError)> = None;
    for task in tasks {
        let joined = task
            .join()
            .await
            .map_err(|e| DataFusionError::Execution(format!("bucketing the spine failed: {e}")))?;
        match joined {
            Ok((chunks, spill, latest)) => {
                max_time = max_time.max(latest);
                for (bucket, mut c) in chunks {
                    buckets.entry(bucket).or_default().append(&mut c);
                }
                spills.extend(spill);
            }
            Err((partition, e)) => {
                if first_error.as_ref().is_none_or(|(p, _)| partition < *p) {
                    first_error = Some((partition, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    Ok(Arc::new(Drained {
        schema,
        buckets: buckets.into_iter().collect(),
        next: AtomicUsize::new(0),
        max_time,
        seconds: started.elapsed().as_secs_f64(),
        _spills: spills,
    }))
}

/// Chunks per bucket.
type Buckets = BTreeMap<i64, Vec<Chunk>>;

/// One worker's buckets: pending slices in memory, chunks already formed.
struct Bucketer {
    schema: SchemaRef,
    time: usize,
    partitioning: spec::Partitioning,
    budget: usize,
    pending: BTreeMap<i64, Vec<RecordBatch>>,
    pending_bytes: usize,
    chunks: Buckets,
    spill_path: PathBuf,
    spill: Option<SpillWriter>,
    /// Batches handed to the spill thread (their positions in the file).
    spilled: usize,
    /// The latest time pushed.
    max_time: Option<i64>,
    keep: Option<Arc<BTreeSet<i64>>>,
}

impl Bucketer {
    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column(self.time)
            .as_primitive::<TimestampMicrosecondType>();
        if times.null_count() > 0 {
            return Err(DataFusionError::Execution(
                "the spine has a row without a time".into(),
            ));
        }
        let times = times.values();
        let latest = times.iter().copied().max();
        self.max_time = self.max_time.max(latest);
        let partitioning = self.partitioning;
        let first = bucket_of(partitioning, times[0]);
        let bytes = batch.get_array_memory_size();
        if times.iter().all(|&t| bucket_of(partitioning, t) == first) {
            self.add(first, batch.clone(), bytes);
        } else {
            // One take puts the rows in bucket order (stable); each bucket
            // is then a slice of it, charged its share of the bytes. (Not
            // copying here, the sort gathering each bucket's rows from the
            // batches read, was tried: the sort's gathers then reach over
            // the whole spine instead of one bucket's rows, and the
            // marketplace's sort took 1.6 s instead of 0.6.)
            let buckets: Vec<i64> = times.iter().map(|&t| bucket_of(partitioning, t)).collect();
            // A stable radix sort: one counting pass for batches within 2,048 buckets.
            let (order, _) = radix_order(&buckets);
            let bucket_at = |i: usize| buckets[order[i] as usize];
            let runs: Vec<(usize, usize)> =
                equal_runs(order.len(), |a, b| bucket_at(a) == bucket_at(b)).collect();
            let taken = take_record_batch(batch, &UInt32Array::from(order.clone()))?;
            for (start, end) in runs {
                let share = bytes * (end - start) / order.len();
                self.add(bucket_at(start), taken.slice(start, end - start), share);
            }
        }
        if self.pending_bytes > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Holds `batch` (about `bytes` of memory) pending for `bucket`.
    fn add(&mut self, bucket: i64, batch: RecordBatch, bytes: usize) {
        if self
            .keep
            .as_ref()
            .is_some_and(|keep| !keep.contains(&bucket))
        {
            return;
        }
        self.pending_bytes += bytes;
        self.pending.entry(bucket).or_default().push(batch);
    }

    /// Hands each bucket's pending rows to the spill thread, which writes
    /// them as one batch of the spill file while the input is read on.
    fn spill(&mut self) -> Result<()> {
        if self.spill.is_none() {
            self.spill = Some(SpillWriter::start(&self.spill_path, &self.schema)?);
        }
        let pending = std::mem::take(&mut self.pending);
        for &bucket in pending.keys() {
            self.chunks.entry(bucket).or_default().push(Chunk::Spilled {
                path: self.spill_path.clone(),
                batch: self.spilled,
            });
            self.spilled += 1;
        }
        self.pending_bytes = 0;
        let writer = self.spill.as_mut().expect("started above");
        writer.write(pending.into_values().collect())
    }

    /// The buckets, the spill file, and the latest time pushed.
    fn finish(mut self) -> Result<(Buckets, Option<SpillFile>, Option<i64>)> {
        let spill = match self.spill.take() {
            Some(writer) => {
                writer.finish()?;
                Some(SpillFile(self.spill_path.clone()))
            }
            None => None,
        };
        for (bucket, batches) in std::mem::take(&mut self.pending) {
            let chunks = self.chunks.entry(bucket).or_default();
            chunks.extend(batches.into_iter().map(Chunk::Memory));
        }
        Ok((self.chunks, spill, self.max_time))
    }
}

/// A spill file written on a thread of its own: reading and parsing the
/// input go on while a spill is written (at 100 M rows, spilling on the
/// reading task held the parsers up: the read took 19.1 s at 1.75 cores
/// busy, now 14.4 s at 1.98). One spill is written
/// while the next one's rows gather, so pending rows take at most twice
/// the budget.
struct SpillWriter {
    /// Per spill, per bucket in ascending order, its pending batches.
    spills: Option<std::sync::mpsc::SyncSender<Vec<Vec<RecordBatch>>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl SpillWriter {
    fn start(path: &Path, schema: &SchemaRef) -> Result<Self> {
        let file = File::create(path).map_err(|e| {
            DataFusionError::Execution(format!("creating `{}`: {e}", path.display()))
        })?;
        let mut writer = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema)?;
        // A rendezvous: a spill is handed over when the previous one is
        // written.
        let (spills, received) = std::sync::mpsc::sync_channel::<Vec<Vec<RecordBatch>>>(0);
        let schema = schema.clone();
        let thread = std::thread::Builder::new()
            .name("leakless-spill".into())
            .spawn(move || {
                for buckets in received {
                    for batches in buckets {
                        writer.write(&concat_batches(&schema, &batches)?)?;
                    }
                    crate::write::commit::crash_point("after-spill");
                }
                writer.finish()?;
                Ok(())
            })
            .map_err(|e| DataFusionError::Execution(format!("starting the spill thread: {e}")))?;
        Ok(SpillWriter {
            spills: Some(spills),
            thread: Some(thread),
        })
    }

    /// Hands one spill over, each bucket's batches becoming one batch of
    /// the file, in order; waits while the previous spill is written.
    fn write(&mut self, buckets: Vec<Vec<RecordBatch>>) -> Result<()> {
        let sent = self.spills.as_ref().map(|s| s.send(buckets));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped: its error says why.
            _ => Err(self.join().err().unwrap_or_else(|| {
                DataFusionError::Internal("the spill thread stopped early".into())
            })),
        }
    }

    /// Waits for every spill to be written and the file to be finished.
    fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.spills = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(DataFusionError::Execution(
                "writing the spill file failed".into(),
            )),
            None => Err(DataFusionError::Execution(
                "the spill file was already closed".into(),
            )),
        }
    }
}

impl Drop for SpillWriter {
    fn drop(&mut self) {
        // A failed build: let the thread end before the file is removed.
        let _ = self.join();
    }
}

/// `batch` in slices of at most [`BATCH_ROWS`] rows, in order.
pub(crate) fn slices(batch: &RecordBatch) -> Vec<RecordBatch> {
    (0..batch.num_rows())
        .step_by(BATCH_ROWS)
        .map(|offset| batch.slice(offset, BATCH_ROWS.min(batch.num_rows() - offset)))
        .collect()
}

/// A bucket's rows, read back and sorted.
fn sorted_bucket(
    schema: &SchemaRef,
    chunks: &[Chunk],
    sort_columns: &[usize],
) -> Result<RecordBatch> {
    let mut batches = Vec::with_capacity(chunks.len());
    let mut readers: BTreeMap<&Path, FileReader<BufReader<File>>> = BTreeMap::new();
    for chunk in chunks {
        match chunk {
            Chunk::Memory(batch) => batches.push(batch.clone()),
            Chunk::Spilled { path, batch } => {
                let reader = match readers.entry(path.as_path()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let file = File::open(path).map_err(|err| {
                            DataFusionError::Execution(format!(
                                "reading `{}`: {err}",
                                path.display()
                            ))
                        })?;
                        e.insert(FileReader::try_new(BufReader::new(file), None)?)
                    }
                };
                reader.set_index(*batch)?;
                let read = reader.next().ok_or_else(|| {
                    DataFusionError::Internal(format!("spill batch {batch} missing"))
                })??;
                batches.push(read);
            }
        }
    }
    sort_rows(schema, &batches, sort_columns)
}

/// The rows of `batches` in ascending order of `sort_columns` (nulls
/// first, strings by bytes, floats by total order): by the first sort
/// column when it is a non-null timestamp or integer (a radix sort, or
/// nothing when the rows already ascend), then rows that tie on it by the
/// other columns.
pub fn sort_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    sort_columns: &[usize],
) -> Result<RecordBatch> {
    let all = concat_batches(schema, batches)?;
    let Some((&first, rest)) = sort_columns.split_first() else {
        return Ok(all);
    };
    let Some(keys) = i64_values(all.column(first)) else {
        let columns: Vec<SortColumn> = sort_columns
            .iter()
            .map(|&i| SortColumn {
                values: all.column(i).clone(),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&columns, None)?;
        return Ok(take_record_batch(&all, &order)?);
    };
    // The order, and the keys in it (as they are when they already
    // ascend, else as the radix sort left them: equal where the keys are),
    // read in sequence below to find the ties.
    let (mut order, sorted): (Vec<u32>, Cow<'_, [i64]>) = if keys.windows(2).all(|w| w[0] <= w[1]) {
        ((0..all.num_rows() as u32).collect(), Cow::Borrowed(keys))
    } else {
        let (order, digits) = radix_order(keys);
        (order, Cow::Owned(digits))
    };
    let mut identity = order.iter().enumerate().all(|(i, &r)| i == r as usize);
    if let Some((&second, others)) = rest.split_first() {
        // The second column read straight from its values when it is a
        // non-null integer (an id, usually: ties on the time are common in
        // logs with whole seconds), the others through comparators.
        let second_values = i64_values(all.column(second));
        let comparators = (second_values.is_none().then_some(&second))
            .into_iter()
            .chain(others)
            .map(|&i| make_comparator(all.column(i), all.column(i), SortOptions::default()))
            .collect::<Result<Vec<_>, _>>()?;
        // Each run of equal keys sorted by the rest, through a buffer of
        // (second value, row): the rows' values are gathered once, and the
        // sort compares neighbours in the buffer (a stable sort: rows tied
        // on every column keep their order).
        let mut group: Vec<(i64, u32)> = Vec::new();
        let runs = equal_runs(order.len(), |a, b| sorted[a] == sorted[b]);
        for (start, end) in runs.filter(|(start, end)| end - start > 1) {
            group.clear();
            group.extend(
                order[start..end]
                    .iter()
                    .map(|&row| (second_values.map_or(0, |v| v[row as usize]), row)),
            );
            let compare = |a: &(i64, u32), b: &(i64, u32)| {
                a.0.cmp(&b.0)
                    .then_with(|| compare_rows(&comparators, a.1, b.1))
            };
            if !group.is_sorted_by(|a, b| compare(a, b).is_le()) {
                group.sort_by(compare);
                for (slot, &(_, row)) in order[start..end].iter_mut().zip(&group) {
                    *slot = row;
                }
                identity = false;
            }
        }
    }
    if identity {
        return Ok(all);
    }
    Ok(take_record_batch(&all, &UInt32Array::from(order))?)
}

/// The runs `start..end` of positions `0..len` that are `same` as their
/// run's first position, in order.
fn equal_runs(
    len: usize,
    same: impl Fn(usize, usize) -> bool,
) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let end = (start + 1..len).find(|&i| !same(start, i)).unwrap_or(len);
        let run = (start, end);
        start = end;
        Some(run)
    })
}

fn compare_rows(
    comparators: &[datafusion::arrow::array::DynComparator],
    a: u32,
    b: u32,
) -> std::cmp::Ordering {
    for compare in comparators {
        let order = compare(a as usize, b as usize);
        if order.is_ne() {
            return order;
        }
    }
    std::cmp::Ordering::Equal
}

/// Row positions in ascending order of `keys`, ties in row order, and the
/// keys in that order less the smallest (shifted right by the low zero
/// bits they all share; equal where the keys are): a least
/// significant digit radix sort on the keys' distance from the smallest,
/// 11 bits a pass, as many passes as the spread needs (four for a day of
/// microseconds).
fn radix_order(keys: &[i64]) -> (Vec<u32>, Vec<i64>) {
    const BITS: u32 = 11;
    let min = keys.iter().copied().min().unwrap_or(0);
    let max = keys.iter().copied().max().unwrap_or(0);
    // Low bits every key shares (times in whole seconds or milliseconds
    // are multiples of 2^6 or 2^3 microseconds) sort nothing: shifted out,
    // a day of whole seconds takes three passes, not four.
    let common = keys
        .iter()
        .fold(0u64, |bits, &k| bits | k.wrapping_sub(min) as u64)
        .trailing_zeros()
        .min(63);
    let spread = (max.wrapping_sub(min) as u64) >> common;
    let passes = (64 - spread.leading_zeros()).div_ceil(BITS);
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    let mut digits: Vec<u64> = keys
        .iter()
        .map(|&k| (k.wrapping_sub(min) as u64) >> common)
        .collect();
    let mut next_order = vec![0u32; keys.len()];
    let mut next_digits = vec![0u64; keys.len()];
    for pass in 0..passes {
        let shift = pass * BITS;
        let digit = |d: u64| ((d >> shift) & ((1 << BITS) - 1)) as usize;
        let mut counts = vec![0usize; 1 << BITS];
        for &d in &digits {
            counts[digit(d)] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for (&d, &row) in digits.iter().zip(&order) {
            let slot = &mut counts[digit(d)];
            next_order[*slot] = row;
            next_digits[*slot] = d;
            *slot += 1;
        }
        std::mem::swap(&mut order, &mut next_order);
        std::mem::swap(&mut digits, &mut next_digits);
    }
    let sorted = digits.into_iter().map(|d| d as i64).collect();
    (order, sorted)
}

/// The values of a non-null `Int64` or microsecond timestamp column.
pub(crate) fn i64_values(column: &ArrayRef) -> Option<&[i64]> {
    use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;

    fn batch(schema: &SchemaRef, rows: &[(i64, i64, Option<String>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2.clone()))),
            ],
        )
        .unwrap()
    }

    proptest! {
        /// The radix order of buckets, the order of a stable sort by
        /// bucket: buckets a few apart (negative too; one pass), or
        /// spread far (several passes).
        #[test]
        fn buckets_ordered_as_by_a_stable_sort(
            base in -1_000_000i64..1_000_000,
            offsets in prop::collection::vec(0i64..40, 0..300),
            far in prop::bool::ANY,
        ) {
            let buckets: Vec<i64> = offsets
                .iter()
                .map(|&o| base + if far { o * 1_000 } else { o })
                .collect();
            let mut expected: Vec<u32> = (0..buckets.len() as u32).collect();
            expected.sort_by_key(|&row| buckets[row as usize]);
            prop_assert_eq!(radix_order(&buckets).0, expected);
        }
    }

    proptest! {
        /// The fast paths (ascending keys, radix, tie groups, an integer or
        /// a string second column) agree with a full lexicographic sort,
        /// whatever the batches and key spread.
        #[test]
        fn sort_rows_matches_a_full_sort(
            rows in prop::collection::vec(
                (any::<i64>(), 0i64..4, 0i64..3, prop::option::of("[ab]{0,2}")), 0..200),
            wide in 0u8..3,
            base in any::<i64>(),
            ascending in any::<bool>(),
            string_second in any::<bool>(),
            cut in 0usize..200,
        ) {
            let schema = Arc::new(Schema::new(vec![
                Field::new("t", DataType::Int64, false),
                Field::new("id", DataType::Int64, false),
                Field::new("s", DataType::Utf8, true),
            ]));
            let mut rows: Vec<(i64, i64, Option<String>)> = rows
                .into_iter()
                .map(|(big, small, id, s)| {
                    // Any keys; few keys (ties); or few keys spread like
                    // whole seconds in a day from anywhere (ties, several
                    // radix passes, low zero bits shifted out).
                    let spread = [0, 1, 5_000, 86_399][small as usize] * 1_000_000;
                    let key = match wide {
                        0 => big,
                        1 => small,
                        _ => base.wrapping_add(spread),
                    };
                    (key, id, s)
                })
                .collect();
            if ascending {
                rows.sort_by_key(|r| r.0);
            }
            let cut = cut.min(rows.len());
            let batches = [batch(&schema, &rows[..cut]), batch(&schema, &rows[cut..])];
            let columns = if string_second { [0, 2, 1] } else { [0, 1, 2] };
            let sorted = sort_rows(&schema, &batches, &columns).unwrap();
            let mut expected = rows.clone();
            if string_second {
                expected.sort_by(|a, b| (a.0, &a.2, a.1).cmp(&(b.0, &b.2, b.1)));
            } else {
                expected.sort();
            }
            let ints = |i: usize| {
                sorted.column(i).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec()
            };
            let strings: Vec<Option<String>> = sorted
                .column(2)
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect();
            let got: Vec<(i64, i64, Option<String>)> = ints(0)
                .into_iter()
                .zip(ints(1))
                .zip(strings)
                .map(|((t, id), s)| (t, id, s))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
