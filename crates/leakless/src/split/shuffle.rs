//! [`SpillShuffleExec`]: a hash shuffle through files, so that a build
//! split by key runs on this machine in bounded memory (`Build::with_shards`).
//!
//! DataFusion's `RepartitionExec` runs every input partition at once and
//! hands rows over in memory; below a key group that means every shard's
//! index is built at the same time, and the whole spine held on its way.
//! This node instead, the first time any of its partitions is asked for,
//! runs its input partitions a few at a time (`parallel`, one per core),
//! hashes each row to one of its output partitions exactly as
//! `RepartitionExec` does, and appends the rows to that partition's file;
//! each output partition then reads its file back (removed as it is
//! opened, so its disk space goes when it is read). A chain of key groups
//! so runs one stage after the other, with at most `parallel` shards of a
//! group indexed at once.
//!
//! The rows of a partition arrive in no fixed order, as from a
//! `RepartitionExec`: a key group restores its events' order by row id
//! and sorts its spine by time, and the writer sorts every bucket by all
//! its columns (see the module docs of `split`).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Shared, shared};
use crate::order::BATCH_ROWS;

/// See the module docs.
#[derive(Debug)]
pub struct SpillShuffleExec {
    input: Arc<dyn ExecutionPlan>,
    on: Vec<Arc<dyn PhysicalExpr>>,
    /// The folder under which each run of the shuffle makes its own.
    dir: PathBuf,
    /// Input partitions run at once.
    parallel: usize,
    /// Each output partition's rows sorted by this timestamp column.
    sort: Option<usize>,
    cache: Arc<PlanProperties>,
    written: Arc<Shared<Arc<Written>>>,
}

/// The shuffle's files, once every input partition is in them.
#[derive(Debug)]
struct Written {
    files: Vec<PathBuf>,
}

impl SpillShuffleExec {
    /// `input`'s rows hashed on `on` into `partitions` partitions, through
    /// files in a folder of their own under `dir`, `parallel` input
    /// partitions at a time.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        on: Vec<Arc<dyn PhysicalExpr>>,
        partitions: usize,
        dir: PathBuf,
        parallel: usize,
    ) -> Self {
        SpillShuffleExec {
            cache: properties(&input, &on, partitions, None),
            input,
            on,
            dir,
            parallel: parallel.max(1),
            sort: None,
            written: Arc::new(Shared::new()),
        }
    }

    /// Each output partition emits its rows sorted by the timestamp column
    /// `time` (ties in no set order), read back whole and sorted at once
    /// (`order::sort_rows`); without, in batches of about
    /// `order::BATCH_ROWS` rows as they were appended.
    pub fn with_sort(mut self, time: Option<usize>) -> Self {
        self.cache = properties(&self.input, &self.on, self.partitions(), time);
        self.sort = time;
        self
    }

    fn partitions(&self) -> usize {
        self.cache.output_partitioning().partition_count()
    }

    /// A new instance over `input`, with no state.
    fn renew(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        let (on, dir) = (self.on.clone(), self.dir.clone());
        SpillShuffleExec::new(input, on, self.partitions(), dir, self.parallel).with_sort(self.sort)
    }
}

fn properties(
    input: &Arc<dyn ExecutionPlan>,
    on: &[Arc<dyn PhysicalExpr>],
    partitions: usize,
    sort: Option<usize>,
) -> Arc<PlanProperties> {
    let schema = input.schema();
    let orderings = sort.map(|time| {
        let column = Column::new(schema.field(time).name(), time);
        [PhysicalSortExpr::new_default(Arc::new(column))]
    });
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new_with_orderings(schema.clone(), orderings),
        Partitioning::Hash(on.to_vec(), partitions.max(1)),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

impl DisplayAs for SpillShuffleExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "SpillShuffleExec: partitions={}, parallel={}",
            self.partitions(),
            self.parallel
        )
    }
}

impl ExecutionPlan for SpillShuffleExec {
    fn name(&self) -> &str {
        "SpillShuffleExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in &self.on {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
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
            .ok_or_else(|| DataFusionError::Internal("SpillShuffleExec needs an input".into()))?;
        Ok(Arc::new(self.renew(input)))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.renew(self.input.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let written = self.written.clone();
        let input = self.input.clone();
        let on = self.on.clone();
        let (partitions, parallel) = (self.partitions(), self.parallel);
        let dir = self.dir.clone();
        let schema = self.input.schema();
        let (sort, read_schema) = (self.sort, schema.clone());
        let stream = futures::stream::once(async move {
            let written = shared(&written, || {
                write(input, on, partitions, parallel, dir, context)
            })
            .await?;
            let file = written.files.get(partition).ok_or_else(|| {
                DataFusionError::Internal(format!("a shuffle has no partition {partition}"))
            })?;
            read(file, read_schema, sort)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Runs every input partition, `parallel` at a time, each row appended to
/// the file of its output partition. The first error in partition order
/// is the one reported (the partitions before it still finish), as in a
/// sequential read of the inputs.
async fn write(
    input: Arc<dyn ExecutionPlan>,
    on: Vec<Arc<dyn PhysicalExpr>>,
    partitions: usize,
    parallel: usize,
    dir: PathBuf,
    context: Arc<TaskContext>,
) -> Result<Arc<Written>> {
    // A folder per run of a shuffle: the shuffles of one plan, and of
    // plans run side by side, never share a file.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = dir.join(format!(
        "shuffle-{}-{}",
        crate::write::commit::process_token(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DataFusionError::Execution(format!("creating `{}`: {e}", dir.display())))?;
    let schema = input.schema();
    let files: Vec<PathBuf> = (0..partitions)
        .map(|p| dir.join(format!("{p:06}.arrow")))
        .collect();
    let writers = files
        .iter()
        .map(|path| {
            let file = File::create(path).map_err(|e| {
                DataFusionError::Execution(format!("creating `{}`: {e}", path.display()))
            })?;
            let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 16, file), &schema)?;
            Ok(Mutex::new(writer))
        })
        .collect::<Result<Vec<_>>>()?;
    let writers = Arc::new(writers);
    let inputs = input.output_partitioning().partition_count();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(usize::MAX));
    let mut tasks = Vec::new();
    for _ in 0..parallel.min(inputs.max(1)) {
        let (input, context, next) = (input.clone(), context.clone(), next.clone());
        let (failed, writers, on) = (failed.clone(), writers.clone(), on.clone());
        let paths = files.clone();
        tasks.push(SpawnedTask::spawn(async move {
            loop {
                let partition = next.fetch_add(1, Ordering::Relaxed);
                if partition >= inputs.min(failed.load(Ordering::Relaxed)) {
                    return Ok(());
                }
                let hashed = hash_into(&input, partition, &context, &on, &writers, &paths);
                if let Err(e) = hashed.await {
                    failed.fetch_min(partition, Ordering::Relaxed);
                    return Err((partition, e));
                }
            }
        }));
    }
    let mut first_error: Option<(usize, DataFusionError)> = None;
    for task in tasks {
        let joined = task
            .join()
            .await
            .map_err(|e| DataFusionError::Execution(format!("a shuffle failed: {e}")))?;
        if let Err((partition, e)) = joined
            && first_error.as_ref().is_none_or(|(p, _)| partition < *p)
        {
            first_error = Some((partition, e));
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    let writers = Arc::into_inner(writers)
        .ok_or_else(|| DataFusionError::Internal("a shuffle's writer is still held".into()))?;
    for (writer, path) in writers.into_iter().zip(&files) {
        let writer = writer
            .into_inner()
            .map_err(|_| DataFusionError::Internal("a shuffle's writer was poisoned".into()))?;
        // Finished and flushed here, so that a failed write (a full disk)
        // is an error, never a file that ends early.
        writer.into_inner().map_err(|e| writing(path, e))?;
    }
    Ok(Arc::new(Written { files }))
}

/// Input partition `partition`'s rows, hashed and appended to the files,
/// each piece as it comes (the reads coalesce them again).
async fn hash_into(
    input: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: &Arc<TaskContext>,
    on: &[Arc<dyn PhysicalExpr>],
    writers: &[Mutex<StreamWriter<BufWriter<File>>>],
    paths: &[PathBuf],
) -> Result<()> {
    let mut partitioner =
        BatchPartitioner::new_hash_partitioner(on.to_vec(), writers.len(), metrics::Time::new())?;
    let mut stream = input.execute(partition, context.clone())?;
    while let Some(batch) = stream.try_next().await? {
        for piece in partitioner.partition_iter(batch)? {
            let (p, piece) = piece?;
            let mut writer = writers[p]
                .lock()
                .map_err(|_| DataFusionError::Internal("a shuffle's writer was poisoned".into()))?;
            writer.write(&piece).map_err(|e| writing(&paths[p], e))?;
        }
    }
    Ok(())
}

fn writing(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("writing `{}`: {e}", path.display()))
}

fn reading(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("reading `{}`: {e}", path.display()))
}

/// One output partition's rows, read back from its file, which is removed
/// once open (its space is given back when the read is done): sorted by
/// `sort` when given, else in batches of about `order::BATCH_ROWS` rows
/// (the pieces were appended small, to hold little while hashing; the
/// operators above run much faster on large batches).
fn read(
    path: &Path,
    schema: SchemaRef,
    sort: Option<usize>,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    let file = File::open(path).map_err(|e| reading(path, e))?;
    // An error here leaves the file to the staging folder's removal.
    let _ = std::fs::remove_file(path);
    let reader = StreamReader::try_new(BufReader::with_capacity(1 << 16, file), None)
        .map_err(|e| reading(path, e))?;
    let path = path.to_owned();
    if let Some(time) = sort {
        let sort_path = path.clone();
        let sorted = async move {
            tokio::task::spawn_blocking(move || {
                let batches = (reader.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| reading(&path, e))?;
                let sorted = crate::order::sort_rows(&schema, &batches, &[time])
                    .map_err(|e| reading(&path, e))?;
                let slices = crate::order::slices(&sorted).into_iter().map(Ok);
                Ok::<_, DataFusionError>(futures::stream::iter(slices))
            })
            .await
            .map_err(|e| reading(&sort_path, e))?
        };
        return Ok(futures::stream::once(sorted).try_flatten().boxed());
    }
    Ok(futures::stream::unfold(Some(reader), move |reader| {
        let (schema, path) = (schema.clone(), path.clone());
        async move {
            let mut reader = reader?;
            let next = tokio::task::spawn_blocking(move || {
                let next = coalesced(&mut reader, &schema);
                (next, reader)
            });
            match next.await {
                Ok((None, _)) => None,
                Ok((Some(Ok(batch)), reader)) => Some((Ok(batch), Some(reader))),
                Ok((Some(Err(e)), _)) => Some((Err(reading(&path, e)), None)),
                Err(e) => Some((Err(reading(&path, e)), None)),
            }
        }
    })
    .boxed())
}

/// The next batches of `reader` up to `order::BATCH_ROWS` rows, as one.
fn coalesced(
    reader: &mut StreamReader<BufReader<File>>,
    schema: &SchemaRef,
) -> Option<Result<RecordBatch>> {
    let mut batches = Vec::new();
    let mut rows = 0;
    while rows < BATCH_ROWS {
        match reader.next() {
            None => break,
            Some(Err(e)) => return Some(Err(e.into())),
            Some(Ok(batch)) => {
                rows += batch.num_rows();
                batches.push(batch);
            }
        }
    }
    match batches.len() {
        0 => None,
        1 => batches.pop().map(Ok),
        _ => Some(concat_batches(schema, &batches).map_err(Into::into)),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::{CastExpr, Column};
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Input partitions of `(id, key)` rows in batches of 97 (`rows[p]` in
    /// partition `p`), ids distinct, keys repeating and some null; `bad`
    /// puts a key that is no number at the start or end of some partitions.
    fn input(rows: &[usize], bad: &[(usize, bool)]) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
        ]));
        let data: Vec<Vec<RecordBatch>> = (rows.iter().enumerate())
            .map(|(p, &rows)| {
                // Distinct, in no order (7919 is prime to every size used).
                let n = rows as i64;
                let ids: Vec<i64> = (0..n)
                    .map(|i| p as i64 * 1_000_000 + i * 7919 % n)
                    .collect();
                let mut keys: Vec<Option<String>> = (ids.iter())
                    .map(|id| (id % 11 != 0).then(|| (id % 37).to_string()))
                    .collect();
                if let Some(&(_, at_end)) = bad.iter().find(|(b, _)| *b == p) {
                    let at = if at_end { rows - 1 } else { 0 };
                    keys[at] = Some(format!("bad{p}"));
                }
                (0..rows)
                    .step_by(97)
                    .map(|start| {
                        let end = (start + 97).min(rows);
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(Int64Array::from(ids[start..end].to_vec())),
                                Arc::new(StringArray::from(keys[start..end].to_vec())),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        MemorySourceConfig::try_new_exec(&data, schema, None).unwrap()
    }

    /// The ids of each output partition of `plan`, in the order emitted.
    async fn ids_in_order(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<Vec<i64>>> {
        let ctx = SessionContext::new().task_ctx();
        let mut all = Vec::new();
        for p in 0..plan.output_partitioning().partition_count() {
            let batches: Vec<RecordBatch> = plan.execute(p, ctx.clone())?.try_collect().await?;
            let ids = batches.iter().flat_map(|b| {
                let ids = b.column(0).as_primitive::<Int64Type>();
                ids.values().to_vec()
            });
            all.push(ids.collect());
        }
        Ok(all)
    }

    /// The ids each output partition of `plan` holds, in ascending order
    /// (a row emitted twice is there twice).
    async fn ids_by_partition(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<Vec<i64>>> {
        let mut all = ids_in_order(plan).await?;
        all.iter_mut().for_each(|ids| ids.sort_unstable());
        Ok(all)
    }

    /// Sorted by a column, each partition emits the same rows as unsorted,
    /// in ascending order of it.
    #[test]
    fn a_sorted_shuffle_emits_each_partition_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(&[700, 0, 300], &[]);
        let on: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("key", 1))];
        let shuffle = |sort| {
            let exec = SpillShuffleExec::new(input.clone(), on.clone(), 4, dir.path().into(), 2);
            Arc::new(exec.with_sort(sort))
        };
        let rt = runtime();
        let sorted = rt.block_on(ids_in_order(shuffle(Some(0)))).unwrap();
        let unsorted = rt.block_on(ids_by_partition(shuffle(None))).unwrap();
        // `unsorted` is each partition's ids sorted after the fact.
        assert_eq!(sorted, unsorted);
        assert_eq!(sorted.iter().map(Vec::len).sum::<usize>(), 1000);
    }

    /// Every row reaches the output partition a `RepartitionExec` hashing
    /// the same key gives it (nulls included), once; each partition's
    /// file is gone once it has been read.
    #[test]
    fn rows_land_where_a_repartition_puts_them_and_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(&[500; 4], &[]);
        let on: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("key", 1))];
        let shuffle = SpillShuffleExec::new(input.clone(), on.clone(), 5, dir.path().into(), 2);
        let repartition = RepartitionExec::try_new(input, Partitioning::Hash(on, 5)).unwrap();
        let rt = runtime();
        let shuffled = rt.block_on(ids_by_partition(Arc::new(shuffle))).unwrap();
        let expected = rt
            .block_on(ids_by_partition(Arc::new(repartition)))
            .unwrap();
        assert_eq!(shuffled, expected);
        let rows: usize = shuffled.iter().map(Vec::len).sum();
        assert_eq!(rows, 2000);
        assert!(shuffled.iter().all(|ids| !ids.is_empty()));
        let left: Vec<_> = walk(dir.path());
        assert!(left.is_empty(), "files left: {left:?}");
    }

    /// Of two failing input partitions, the error of the first in
    /// partition order is the one every output partition reports, even
    /// when the later one fails first.
    #[test]
    fn the_first_failing_input_partition_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        // Partition 1 fails at its last row, long after partition 3 (read
        // after two short ones) fails at its first.
        let input = input(&[10, 50_000, 10, 10], &[(1, true), (3, false)]);
        let cast: Arc<dyn PhysicalExpr> = Arc::new(CastExpr::new(
            Arc::new(Column::new("key", 1)),
            DataType::Int64,
            None,
        ));
        let exprs = vec![
            (
                Arc::new(Column::new("id", 0)) as Arc<dyn PhysicalExpr>,
                "id".to_owned(),
            ),
            (cast.clone(), "key".to_owned()),
        ];
        let projected = Arc::new(ProjectionExec::try_new(exprs, input).unwrap());
        let on: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("key", 1))];
        let shuffle = SpillShuffleExec::new(projected, on, 3, dir.path().into(), 2);
        let shuffle: Arc<dyn ExecutionPlan> = Arc::new(shuffle);
        let ctx = SessionContext::new().task_ctx();
        let rt = runtime();
        for p in 0..3 {
            let read = async {
                let stream = shuffle.execute(p, ctx.clone())?;
                stream.try_collect::<Vec<RecordBatch>>().await
            };
            let text = rt.block_on(read).unwrap_err().to_string();
            assert!(
                text.contains("bad1") && !text.contains("bad3"),
                "{p}: {text}"
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => files.extend(walk(&path)),
                false => files.push(path),
            }
        }
        files
    }
}
