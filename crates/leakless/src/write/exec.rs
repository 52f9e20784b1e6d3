//! [`WriteExec`]: the writer as a plan node, so that an output partition
//! is computed and written by one task, wherever it runs.
//!
//! Each output partition writes its buckets with a [`PartitionWriter`] and
//! then emits one row: a [`TaskReport`] (JSON) with what it wrote and
//! counted, and what it saw of the inputs. The build folds the reports
//! into the manifest; nothing reaches it through shared memory, so the
//! same node serves the embedded build and a cluster's tasks.
//!
//! Which output partitions a task computes travels as data: the node's
//! second child is an in-memory scan whose partition `i` holds the number
//! `i`. Ballista hands a task its plan with the leaves' partitions cut down
//! to the task's share, so partition `k` of that plan reads the numbers of
//! the output partitions it owns; embedded, partition `k` is output
//! partition `k`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{PartitionWriter, PartitionWritten};
use crate::ingest::FileStats;
use crate::ingest::scan::ScanExec;
use crate::order::BucketSortExec;
use crate::spec::Partitioning;
use crate::temporal::{IndexedSummary, PointInTimeExec};
use crate::{Reporter, Stage};

/// What one output partition wrote and counted, and what its plan saw of
/// the inputs (the same in every partition: each reads the inputs whole).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    pub partition: usize,
    pub rows: u64,
    /// Per label (in the writer's label order), rows neither 0 nor null.
    pub positive: Vec<u64>,
    pub written: Vec<PartitionWritten>,
    /// The profile of each partition folder written.
    #[serde(default)]
    pub profiles: Vec<crate::quality::profile::PartitionProfile>,
    /// Spine rows held back as immature, per output bucket.
    #[serde(default)]
    pub held_back_buckets: Vec<(i64, u64)>,
    pub encode_seconds: f64,
    #[serde(default)]
    pub profile_seconds: f64,
    /// Spine rows held back as immature, and dropped by `[spine] where`.
    pub held_back: u64,
    pub filtered: u64,
    pub probe_seconds: f64,
    pub sort_seconds: f64,
    /// Per source scanned (by name, first scan of each), its files read.
    pub inputs: Vec<(String, Vec<FileStats>)>,
    pub indexed: Option<IndexedSummary>,
    /// The spine's latest time, and the wall seconds of its bucketing.
    pub spine_max_time: Option<i64>,
    pub spine_seconds: f64,
}

/// Progress of an embedded build: rows produced over all partitions.
pub struct Progress {
    reporter: Arc<dyn Reporter>,
    produced: AtomicU64,
}

impl Progress {
    pub fn new(reporter: Arc<dyn Reporter>) -> Arc<Progress> {
        Arc::new(Progress {
            reporter,
            produced: AtomicU64::new(0),
        })
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

/// How [`WriteExec`] writes, on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteOptions {
    /// The staging folder every partition writes into.
    pub dir: PathBuf,
    pub time_column: usize,
    pub partitioning: Partitioning,
    /// Leading sorted integer columns, delta-encoded.
    pub delta_columns: Vec<String>,
    /// Profile each partition folder written.
    #[serde(default)]
    pub profile: bool,
    /// Output positions of the labels.
    pub labels: Vec<usize>,
    /// Fail with the error's text after [`TASK_ERROR`] (for a cluster,
    /// whose engine passes errors on as text) instead of the error itself.
    #[serde(default)]
    pub errors_as_text: bool,
    /// Data files are named `part-NNNNN-TAG.parquet` (a Delta table's).
    #[serde(default)]
    pub file_tag: Option<String>,
}

/// What precedes a task's error told as text ([`task_error`] finds it).
pub const TASK_ERROR: &str = "leakless task error: ";

/// `error` told as text after [`TASK_ERROR`], for an engine that passes
/// errors on as text; an error already told so (by an operator below in
/// the same task) is passed on as it is.
pub fn as_task_error(error: DataFusionError) -> DataFusionError {
    if error.to_string().contains(TASK_ERROR) {
        return error;
    }
    DataFusionError::Execution(format!("{TASK_ERROR}{}", crate::Error::from(error)))
}

/// The error a task told as text, found in `text` (an engine's message that
/// quotes it, escaped as Rust's debug form does, or as it is).
pub fn task_error(text: &str) -> Option<String> {
    let start = text.find(TASK_ERROR)? + TASK_ERROR.len();
    let quoted = text[..start].ends_with(&format!("\"{TASK_ERROR}"));
    let mut message = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted => break,
            '\\' if quoted => match chars.next() {
                Some('n') => message.push('\n'),
                Some('t') => message.push('\t'),
                Some(other) => message.push(other),
                None => break,
            },
            c => message.push(c),
        }
    }
    Some(message)
}

/// Writes each partition of its input (a [`PointInTimeExec`]) and emits
/// one [`TaskReport`] row per partition.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    /// Partition `k` holds the numbers of the input partitions that this
    /// node's partition `k` writes (see the module docs).
    owned: Arc<dyn ExecutionPlan>,
    options: WriteOptions,
    progress: Option<Arc<Progress>>,
    cache: Arc<PlanProperties>,
}

/// The schema of the reports: one JSON text per row.
pub fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "report",
        DataType::Utf8,
        false,
    )]))
}

/// An in-memory scan of `n` partitions whose partition `i` holds the
/// number `i`: under a node of ours, it tells a cluster's task which
/// partitions it owns (Ballista cuts a task's leaves down to its share).
pub fn owned_partitions(n: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions: Vec<Vec<RecordBatch>> = (0..n)
        .map(|i| {
            let numbers = Arc::new(UInt32Array::from(vec![i as u32]));
            Ok(vec![RecordBatch::try_new(owned_schema(), vec![numbers])?])
        })
        .collect::<Result<_>>()?;
    let scan: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&partitions, owned_schema(), None)?;
    Ok(scan)
}

/// The numbers partition `partition` of an [`owned_partitions`] scan holds.
pub async fn owned_numbers(
    owned: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<Vec<usize>> {
    let batches: Vec<RecordBatch> = owned.execute(partition, context)?.try_collect().await?;
    let mut numbers = Vec::new();
    for batch in &batches {
        let column = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| DataFusionError::Internal("owned partitions not u32".into()))?;
        numbers.extend(column.values().iter().map(|&p| p as usize));
    }
    Ok(numbers)
}

/// The schema of the owned partitions' numbers.
fn owned_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "partition",
        DataType::UInt32,
        false,
    )]))
}

impl WriteExec {
    /// Writes every partition of `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>, options: WriteOptions) -> Result<Self> {
        let owned = owned_partitions(input.output_partitioning().partition_count())?;
        Ok(WriteExec::with_owned(input, owned, options))
    }

    fn with_owned(
        input: Arc<dyn ExecutionPlan>,
        owned: Arc<dyn ExecutionPlan>,
        options: WriteOptions,
    ) -> Self {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(report_schema()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(
                owned.output_partitioning().partition_count(),
            ),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        WriteExec {
            input,
            owned,
            options,
            progress: None,
            cache,
        }
    }

    /// The output partitions of the input, each written by one partition
    /// of this node (before a cluster cuts its share).
    pub fn input_partitions(&self) -> usize {
        self.input.output_partitioning().partition_count()
    }

    /// Names the data files `part-NNNNN-TAG.parquet`
    /// ([`WriteOptions::file_tag`]).
    pub fn with_file_tag(mut self, tag: Option<String>) -> Self {
        self.options.file_tag = tag;
        self
    }

    /// Reports rows produced (embedded builds only; not on the wire).
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The node on the wire (an error for a folder that is not UTF-8).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.options)
            .map_err(|e| DataFusionError::Internal(format!("encoding a WriteExec: {e}")))
    }

    /// The node [`WriteExec::to_bytes`] wrote, over its two children.
    pub fn from_bytes(
        bytes: &[u8],
        input: Arc<dyn ExecutionPlan>,
        owned: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        let options = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a WriteExec: {e}")))?;
        Ok(WriteExec::with_owned(input, owned, options))
    }

    /// The reports in `batches` (of [`report_schema`]), by partition.
    pub fn reports(batches: &[RecordBatch]) -> crate::Result<Vec<TaskReport>> {
        let mut reports = Vec::new();
        for batch in batches {
            let texts = batch
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| crate::Error::Invalid("a task's report is not text".into()))?;
            for text in texts.iter().flatten() {
                let report: TaskReport = serde_json::from_str(text)
                    .map_err(|e| crate::Error::Invalid(format!("a task's report: {e}")))?;
                reports.push(report);
            }
        }
        reports.sort_by_key(|r| r.partition);
        Ok(reports)
    }
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "WriteExec: dir={}", self.options.dir.display())
    }
}

impl ExecutionPlan for WriteExec {
    fn name(&self) -> &str {
        "WriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input, &self.owned]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input, owned]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("WriteExec has two children".into()))?;
        let mut exec = WriteExec::with_owned(input, owned, self.options.clone());
        exec.progress = self.progress.clone();
        Ok(Arc::new(exec))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let owned = self.owned.clone();
        let (input, options) = (self.input.clone(), self.options.clone());
        let as_text = options.errors_as_text;
        let progress = self.progress.clone();
        let reports = async move {
            let mut texts = Vec::new();
            for p in owned_numbers(&owned, partition, context.clone()).await? {
                let stream = input.execute(p, context.clone())?;
                let report = write(stream, &input, p, &options, progress.as_deref()).await?;
                texts.push(
                    serde_json::to_string(&report)
                        .map_err(|e| DataFusionError::Internal(format!("a task's report: {e}")))?,
                );
            }
            Ok::<_, DataFusionError>(RecordBatch::try_new(
                report_schema(),
                vec![Arc::new(StringArray::from(texts))],
            )?)
        };
        let reports = futures::TryFutureExt::map_err(reports, move |e| match as_text {
            true => as_task_error(e),
            false => e,
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            report_schema(),
            futures::stream::once(reports),
        )))
    }
}

/// Writes input partition `partition` from `stream`; its report.
async fn write(
    mut stream: SendableRecordBatchStream,
    input: &Arc<dyn ExecutionPlan>,
    partition: usize,
    options: &WriteOptions,
    progress: Option<&Progress>,
) -> Result<TaskReport> {
    let mut writer = PartitionWriter::new(
        &options.dir,
        input.schema(),
        options.time_column,
        options.partitioning,
        options.delta_columns.clone(),
    );
    writer = writer
        .with_labels(&options.labels)
        .with_file_tag(options.file_tag.clone());
    if options.profile {
        writer = writer.with_profile(options.labels.clone());
    }
    let mut rows = 0u64;
    let mut positive = vec![0u64; options.labels.len()];
    while let Some(batch) = stream.try_next().await? {
        let n = batch.num_rows() as u64;
        rows += n;
        for (count, &i) in positive.iter_mut().zip(&options.labels) {
            *count += crate::quality::profile::positives(batch.column(i));
        }
        if let Some(progress) = progress {
            let before = progress.produced.fetch_add(n, Ordering::Relaxed);
            if before == 0 {
                progress.reporter.stage(Stage::Writing);
            }
            progress.reporter.rows(before + n);
        }
        writer.push(&batch)?;
        // The stream never waits once the spine is sorted: give
        // the other partitions' tasks a turn (a task this one woke
        // sits in this worker's LIFO slot, where no other worker
        // may steal it, until this task yields).
        tokio::task::yield_now().await;
    }
    let written = writer.finish()?;
    Ok(report(input, partition, rows, positive, written))
}

/// Partition `partition`'s report, with what the plan's nodes counted.
fn report(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    rows: u64,
    positive: Vec<u64>,
    written: crate::write::Written,
) -> TaskReport {
    let mut report = TaskReport {
        partition,
        rows,
        positive,
        written: written.partitions,
        profiles: written.profiles,
        held_back_buckets: Vec::new(),
        encode_seconds: written.encode_seconds,
        profile_seconds: written.profile_seconds,
        held_back: 0,
        filtered: 0,
        probe_seconds: 0.0,
        sort_seconds: 0.0,
        inputs: Vec::new(),
        indexed: None,
        spine_max_time: None,
        spine_seconds: 0.0,
    };
    let mut nodes = vec![plan.clone()];
    while let Some(node) = nodes.pop() {
        if let Some(pit) = node.downcast_ref::<PointInTimeExec>() {
            let (held_back, filtered, probe) = pit.partition_counts(partition);
            report.held_back += held_back;
            report
                .held_back_buckets
                .extend(pit.partition_held_back(partition));
            report.filtered += filtered;
            report.probe_seconds += probe;
            report.indexed = report.indexed.take().or_else(|| pit.indexed_summary());
        } else if let Some(order) = node.downcast_ref::<BucketSortExec>() {
            report.sort_seconds += order.partition_sort_seconds(partition);
            report.spine_max_time = report.spine_max_time.max(order.max_time());
            report.spine_seconds = order.drain_seconds();
        } else if let Some(scan) = node.downcast_ref::<ScanExec>() {
            let source = scan.source();
            if !report.inputs.iter().any(|(name, _)| name == source.name()) {
                report
                    .inputs
                    .push((source.name().to_owned(), source.stats()));
            }
        }
        nodes.extend(node.children().into_iter().rev().cloned());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_error_is_found_quoted_or_plain() {
        let told = "bad input row: `a.csv` line 3: \"x\\y\"\nmore";
        let quoted = format!(
            "Job failed: DataFusionError(Execution({:?}))",
            format!("{TASK_ERROR}{told}")
        );
        assert_eq!(task_error(&quoted).as_deref(), Some(told));
        assert_eq!(
            task_error(&format!("{TASK_ERROR}{told}")).as_deref(),
            Some(told)
        );
        assert_eq!(task_error("query engine: something else"), None);
    }

    /// Two operators of one task that both tell errors as text (a scan
    /// and the route over it) tell a bad row once: the client finds the
    /// row's own message, not the first telling quoted in the second.
    #[test]
    fn an_error_told_twice_is_told_once() {
        let once = as_task_error(DataFusionError::Execution("the row".into()));
        let twice = as_task_error(as_task_error(DataFusionError::Execution("the row".into())));
        assert_eq!(twice.to_string(), once.to_string());
        let found = task_error(&twice.to_string()).unwrap();
        assert!(!found.contains(TASK_ERROR), "{found}");
        assert!(found.ends_with("the row"), "{found}");
    }
}
