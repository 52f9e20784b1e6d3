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
//! One run of the input can feed several shuffles ([`SpillShuffleExec::fanout`]):
//! each of its outlets keeps the rows whose key columns are all set, salts
//! them for hot keys if asked, and hashes them on its own columns into
//! files of its own. A source that several key groups index is so read
//! (and its files hashed, and its rows given their ids) once, not once
//! per group; the outlets share what was written, and each group reads
//! its own outlet's files when it runs.
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
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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

use super::hot::{SALT, SaltOptions, Salter};
use super::route::whole_key_mask;
use crate::error::{Shared, shared};
use crate::order::BATCH_ROWS;

/// See the module docs.
#[derive(Debug)]
pub struct SpillShuffleExec {
    input: Arc<dyn ExecutionPlan>,
    /// Every outlet of the run of `input` this node shares.
    outlets: Arc<Vec<Outlet>>,
    /// This node's outlet.
    outlet: usize,
    /// The folder under which each run of the shuffle makes its own.
    dir: PathBuf,
    /// Input partitions run at once.
    parallel: usize,
    /// Each output partition's rows sorted by this timestamp column.
    sort: Option<usize>,
    cache: Arc<PlanProperties>,
    written: Arc<Shared<Arc<Written>>>,
}

/// What one outlet of a [`SpillShuffleExec::fanout`] takes of its input's
/// rows: those whose `whole_key` columns are all set, with the salt
/// column appended when `salt` is given, hashed on the columns `on` (of
/// the rows so routed).
#[derive(Debug, Clone)]
pub struct OutletOptions {
    pub whole_key: Vec<usize>,
    pub salt: Option<SaltOptions>,
    pub on: Vec<usize>,
}

/// An outlet ready to route.
#[derive(Debug)]
struct Outlet {
    whole_key: Vec<usize>,
    salter: Option<Salter>,
    schema: SchemaRef,
    on: Vec<Arc<dyn PhysicalExpr>>,
}

impl Outlet {
    /// Every row of `input`, hashed on `on`.
    fn all(input: &SchemaRef, on: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Outlet {
            whole_key: Vec::new(),
            salter: None,
            schema: input.clone(),
            on,
        }
    }

    fn new(input: &SchemaRef, options: OutletOptions) -> Result<Self> {
        let (salter, schema) = match options.salt {
            Some(salt) => {
                let mut fields: Vec<_> = input.fields().iter().cloned().collect();
                fields.push(Arc::new(Field::new(SALT, DataType::UInt32, false)));
                (Some(Salter::new(salt)?), Arc::new(Schema::new(fields)))
            }
            None => (None, input.clone()),
        };
        let on = (options.on.iter())
            .map(|&k| {
                let field = schema.fields().get(k).ok_or_else(|| {
                    DataFusionError::Internal(format!("an outlet hashes on column {k}"))
                })?;
                Ok(Arc::new(Column::new(field.name(), k)) as Arc<dyn PhysicalExpr>)
            })
            .collect::<Result<_>>()?;
        Ok(Outlet {
            whole_key: options.whole_key,
            salter,
            schema,
            on,
        })
    }

    /// The rows of `batch` this outlet takes.
    fn route(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch = match whole_key_mask(batch, &self.whole_key) {
            Some(mask) => filter_record_batch(batch, &mask)?,
            None => batch.clone(),
        };
        match &self.salter {
            Some(salter) => salter.apply(batch, &self.schema),
            None => Ok(batch),
        }
    }
}

/// The shuffle's files (per outlet, per output partition), once every
/// input partition is in them.
#[derive(Debug)]
struct Written {
    files: Vec<Vec<PathBuf>>,
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
        let outlets = Arc::new(vec![Outlet::all(&input.schema(), on)]);
        SpillShuffleExec::over(input, outlets, 0, partitions, dir, parallel)
    }

    /// One shuffle per outlet, all from one run of `input` (the first
    /// of them asked for a partition writes every outlet's files).
    pub fn fanout(
        input: Arc<dyn ExecutionPlan>,
        outlets: Vec<OutletOptions>,
        partitions: usize,
        dir: PathBuf,
        parallel: usize,
    ) -> Result<Vec<Self>> {
        let schema = input.schema();
        let outlets: Arc<Vec<Outlet>> = Arc::new(
            (outlets.into_iter())
                .map(|o| Outlet::new(&schema, o))
                .collect::<Result<_>>()?,
        );
        let written = Arc::new(Shared::new());
        Ok((0..outlets.len())
            .map(|o| {
                let mut exec = SpillShuffleExec::over(
                    input.clone(),
                    outlets.clone(),
                    o,
                    partitions,
                    dir.clone(),
                    parallel,
                );
                exec.written = written.clone();
                exec
            })
            .collect())
    }

    fn over(
        input: Arc<dyn ExecutionPlan>,
        outlets: Arc<Vec<Outlet>>,
        outlet: usize,
        partitions: usize,
        dir: PathBuf,
        parallel: usize,
    ) -> Self {
        SpillShuffleExec {
            cache: properties(&outlets[outlet], partitions, None),
            input,
            outlets,
            outlet,
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
        self.cache = properties(&self.outlets[self.outlet], self.partitions(), time);
        self.sort = time;
        self
    }

    fn partitions(&self) -> usize {
        self.cache.output_partitioning().partition_count()
    }

    /// A new instance over `input`, with no state (a node of a fanout
    /// then writes every outlet's files again, for itself).
    fn renew(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        let (outlets, dir) = (self.outlets.clone(), self.dir.clone());
        let partitions = self.partitions();
        SpillShuffleExec::over(input, outlets, self.outlet, partitions, dir, self.parallel)
            .with_sort(self.sort)
    }
}

fn properties(outlet: &Outlet, partitions: usize, sort: Option<usize>) -> Arc<PlanProperties> {
    let schema = &outlet.schema;
    let orderings = sort.map(|time| {
        let column = Column::new(schema.field(time).name(), time);
        [PhysicalSortExpr::new_default(Arc::new(column))]
    });
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new_with_orderings(schema.clone(), orderings),
        Partitioning::Hash(outlet.on.clone(), partitions.max(1)),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

impl DisplayAs for SpillShuffleExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "SpillShuffleExec: partitions={}, parallel={}, outlet={} of {}",
            self.partitions(),
            self.parallel,
            self.outlet,
            self.outlets.len()
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
        for e in &self.outlets[self.outlet].on {
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
        let (outlets, outlet) = (self.outlets.clone(), self.outlet);
        let (partitions, parallel) = (self.partitions(), self.parallel);
        let dir = self.dir.clone();
        let schema = outlets[outlet].schema.clone();
        let (sort, read_schema) = (self.sort, schema.clone());
        let stream = futures::stream::once(async move {
            let written = shared(&written, || {
                write(input, outlets, partitions, parallel, dir, context)
            })
            .await?;
            let file = (written.files.get(outlet))
                .and_then(|files| files.get(partition))
                .ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "a shuffle has no partition {partition} in outlet {outlet}"
                    ))
                })?;
            read(file, read_schema, sort)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The writers of one run of a shuffle: per outlet, per output partition.
type Writers = Vec<Vec<Mutex<StreamWriter<BufWriter<File>>>>>;

/// Runs every input partition, `parallel` at a time, each row appended to
/// the file of its output partition in each outlet that takes it. The
/// first error in partition order is the one reported (the partitions
/// before it still finish), as in a sequential read of the inputs.
async fn write(
    input: Arc<dyn ExecutionPlan>,
    outlets: Arc<Vec<Outlet>>,
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
    let files: Vec<Vec<PathBuf>> = (0..outlets.len())
        .map(|o| {
            (0..partitions)
                .map(|p| dir.join(format!("{o:03}-{p:06}.arrow")))
                .collect()
        })
        .collect();
    let writers: Writers = (files.iter().zip(outlets.iter()))
        .map(|(files, outlet)| {
            (files.iter())
                .map(|path| {
                    let file = File::create(path).map_err(|e| {
                        DataFusionError::Execution(format!("creating `{}`: {e}", path.display()))
                    })?;
                    let file = BufWriter::with_capacity(1 << 16, file);
                    Ok(Mutex::new(StreamWriter::try_new(file, &outlet.schema)?))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let writers = Arc::new(writers);
    let inputs = input.output_partitioning().partition_count();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(usize::MAX));
    let mut tasks = Vec::new();
    for _ in 0..parallel.min(inputs.max(1)) {
        let (input, context, next) = (input.clone(), context.clone(), next.clone());
        let (failed, writers, outlets) = (failed.clone(), writers.clone(), outlets.clone());
        let paths = files.clone();
        tasks.push(SpawnedTask::spawn(async move {
            loop {
                let partition = next.fetch_add(1, Ordering::Relaxed);
                if partition >= inputs.min(failed.load(Ordering::Relaxed)) {
                    return Ok(());
                }
                let hashed = hash_into(&input, partition, &context, &outlets, &writers, &paths);
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
    for (writer, path) in writers.into_iter().flatten().zip(files.iter().flatten()) {
        let writer = writer
            .into_inner()
            .map_err(|_| DataFusionError::Internal("a shuffle's writer was poisoned".into()))?;
        // Finished and flushed here, so that a failed write (a full disk)
        // is an error, never a file that ends early.
        writer.into_inner().map_err(|e| writing(path, e))?;
    }
    Ok(Arc::new(Written { files }))
}

/// Input partition `partition`'s rows, routed by each outlet, hashed and
/// appended to its files, each piece as it comes (the reads coalesce them
/// again).
async fn hash_into(
    input: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: &Arc<TaskContext>,
    outlets: &[Outlet],
    writers: &Writers,
    paths: &[Vec<PathBuf>],
) -> Result<()> {
    let mut partitioners = (outlets.iter().zip(writers))
        .map(|(outlet, writers)| {
            let time = metrics::Time::new();
            BatchPartitioner::new_hash_partitioner(outlet.on.clone(), writers.len(), time)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut stream = input.execute(partition, context.clone())?;
    while let Some(batch) = stream.try_next().await? {
        for (o, outlet) in outlets.iter().enumerate() {
            let routed = outlet.route(&batch)?;
            if routed.num_rows() == 0 {
                continue;
            }
            for piece in partitioners[o].partition_iter(routed)? {
                let (p, piece) = piece?;
                let mut writer = writers[o][p].lock().map_err(|_| {
                    DataFusionError::Internal("a shuffle's writer was poisoned".into())
                })?;
                writer.write(&piece).map_err(|e| writing(&paths[o][p], e))?;
            }
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
                let sorted = crate::order::sort_rows(&schema, &batches, &[time]).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "sorting the rows of `{}`: {e}",
                        path.display()
                    ))
                })?;
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
    use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
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

    /// A fanout runs its input once: the first of its shuffles asked for
    /// a partition writes every outlet's files, in one folder. Each
    /// outlet's rows are those its own routing gives (rows with their key
    /// whole, a hot key's rows once per salt), in the partitions a
    /// repartition of them on the outlet's columns puts them.
    #[test]
    fn a_fanout_runs_its_input_once_and_each_outlet_takes_its_rows() {
        use super::super::hot::HotKey;
        use super::super::route::{RouteExec, RouteOptions};
        let dir = tempfile::tempdir().unwrap();
        let input = input(&[400, 0, 900], &[]);
        let hot_key = {
            let keys = RecordBatch::try_from_iter([(
                "key",
                Arc::new(StringArray::from(vec!["5"])) as Arc<dyn Array>,
            )])
            .unwrap();
            let rows = super::super::hot::key_rows(&keys, &[0]).unwrap();
            let bytes = rows.row(0).as_ref().to_vec();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let salt = SaltOptions {
            key: vec![1],
            hot: vec![HotKey {
                key: hot_key,
                salts: 3,
            }],
            copies: true,
            hashed: 0,
        };
        let outlets = vec![
            OutletOptions {
                whole_key: vec![1],
                salt: None,
                on: vec![1],
            },
            OutletOptions {
                whole_key: vec![],
                salt: None,
                on: vec![0],
            },
            OutletOptions {
                whole_key: vec![1],
                salt: Some(salt.clone()),
                on: vec![1, 2],
            },
        ];
        let fanout =
            SpillShuffleExec::fanout(input.clone(), outlets.clone(), 4, dir.path().into(), 2);
        let rt = runtime();
        let mut folders = Vec::new();
        for (exec, outlet) in fanout.unwrap().into_iter().zip(outlets) {
            let routed = RouteExec::over(
                input.clone(),
                RouteOptions {
                    whole_key: outlet.whole_key.clone(),
                    salt: outlet.salt.clone(),
                    ..RouteOptions::default()
                },
            )
            .unwrap();
            let schema = routed.schema();
            let on: Vec<Arc<dyn PhysicalExpr>> = (outlet.on.iter())
                .map(|&k| Arc::new(Column::new(schema.field(k).name(), k)) as _)
                .collect();
            let repartition =
                RepartitionExec::try_new(Arc::new(routed), Partitioning::Hash(on, 4)).unwrap();
            let shuffled = rt.block_on(ids_by_partition(Arc::new(exec))).unwrap();
            let expected = rt
                .block_on(ids_by_partition(Arc::new(repartition)))
                .unwrap();
            assert_eq!(shuffled, expected);
            folders.push(std::fs::read_dir(dir.path()).unwrap().count());
        }
        // Keys are null for ids divisible by 11; key "5" is hot.
        let ids: Vec<i64> = (0..400).chain(2_000_000..2_000_900).collect();
        let whole = ids.iter().filter(|id| *id % 11 != 0).count();
        let hot = ids
            .iter()
            .filter(|id| *id % 11 != 0 && *id % 37 == 5)
            .count();
        let rows = |o: usize| {
            let fanout = SpillShuffleExec::fanout(
                input.clone(),
                vec![OutletOptions {
                    whole_key: vec![1],
                    salt: (o == 2).then(|| salt.clone()),
                    on: vec![1],
                }],
                4,
                dir.path().join("count"),
                2,
            );
            let exec = fanout.unwrap().pop().unwrap();
            let ids = rt.block_on(ids_by_partition(Arc::new(exec))).unwrap();
            ids.iter().map(Vec::len).sum::<usize>()
        };
        assert!(hot > 0);
        assert_eq!((rows(0), rows(2)), (whole, whole + 2 * hot));
        assert_eq!(folders, vec![1, 1, 1]);
        let left: Vec<_> = walk(dir.path());
        assert!(left.is_empty(), "files left: {left:?}");
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
