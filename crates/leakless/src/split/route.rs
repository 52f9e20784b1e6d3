//! [`RouteExec`]: prepares rows for a shuffle of the split by key.
//!
//! Over a source's scan (partition `i` is file `i`) it gives each row its
//! row id, drops events without a whole key (no index holds them), drops
//! spine rows that fail `[spine] where`, and writes the file's statistics
//! (what the manifest and the label watermarks need) into the build's
//! statistics folder when the file is done. Over the chain's last group it
//! adds each row's output bucket, which the writer's shuffle hashes.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{BUCKET, ROW_ID, ScanStats};
use crate::ingest::scan::ScanExec;
use crate::spec::Partitioning;
use crate::temporal::FilterExpr;

/// Rows in one file at most: a row id is `file << ROW_BITS | row`.
pub const ROW_BITS: u32 = 40;

/// What a [`RouteExec`] does, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteOptions {
    /// Append [`ROW_ID`]: `partition << ROW_BITS | row in partition`.
    pub row_ids: bool,
    /// Drop rows where any of these columns is null.
    pub whole_key: Vec<usize>,
    /// Drop rows where this `where` (of `filter_source`) is not true,
    /// counted in the statistics.
    pub filter: Option<String>,
    /// Append [`BUCKET`]: the output bucket of this time column.
    pub bucket: Option<(usize, Partitioning)>,
    /// Write each file's [`ScanStats`] into this folder (the input is then
    /// a [`ScanExec`]), with the latest time of this column.
    pub stats: Option<(PathBuf, Option<usize>)>,
    /// Fail with the error's text after the task-error marker (for a
    /// cluster; see `write::exec::as_task_error`).
    #[serde(default)]
    pub errors_as_text: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct RouteExec {
    input: Arc<dyn ExecutionPlan>,
    options: RouteOptions,
    /// The `where`, compiled against the scanned source.
    filter: Option<Arc<FilterExpr>>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl RouteExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, options: RouteOptions) -> Result<Self> {
        let scan = input.downcast_ref::<ScanExec>();
        if (options.stats.is_some() || options.filter.is_some()) && scan.is_none() {
            return Err(DataFusionError::Internal(
                "RouteExec counts and filters only over a ScanExec".into(),
            ));
        }
        let filter = match (&options.filter, scan) {
            (Some(sql), Some(scan)) => Some(Arc::new(FilterExpr::for_schema(
                sql,
                scan.source().layout.schema.clone(),
            )?)),
            _ => None,
        };
        let mut fields: Vec<Field> = (input.schema().fields().iter())
            .map(|f| f.as_ref().clone())
            .collect();
        if options.row_ids {
            fields.push(Field::new(ROW_ID, DataType::Int64, false));
        }
        if options.bucket.is_some() {
            fields.push(Field::new(BUCKET, DataType::Int64, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(RouteExec {
            input,
            options,
            filter,
            schema,
            cache,
        })
    }

    pub fn options(&self) -> &RouteOptions {
        &self.options
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.options)
            .map_err(|e| DataFusionError::Internal(format!("encoding a RouteExec: {e}")))
    }

    pub fn from_bytes(bytes: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let options = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a RouteExec: {e}")))?;
        RouteExec::try_new(input, options)
    }
}

/// What one partition's rows came to, for its statistics.
#[derive(Default)]
struct Seen {
    rows: u64,
    filtered: u64,
    /// The latest time and the first row that has it.
    latest: Option<(i64, u64)>,
}

impl Seen {
    /// Counts `batch` (every row read) and gives the rows that go on.
    fn route(
        &mut self,
        batch: RecordBatch,
        partition: usize,
        options: &RouteOptions,
        filter: Option<&FilterExpr>,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let first = self.rows;
        let n = batch.num_rows();
        self.rows += n as u64;
        if let Some((_, Some(time))) = &options.stats {
            let times = batch
                .column(*time)
                .as_primitive::<TimestampMicrosecondType>();
            for (i, t) in times.iter().enumerate() {
                if let Some(t) = t
                    && self.latest.is_none_or(|(best, _)| t > best)
                {
                    self.latest = Some((t, first + i as u64));
                }
            }
        }
        let mut columns = batch.columns().to_vec();
        if options.row_ids {
            let base = (partition as i64) << ROW_BITS;
            let ids = Int64Array::from_iter_values((0..n as i64).map(|i| base + first as i64 + i));
            columns.push(Arc::new(ids));
        }
        if let Some((time, partitioning)) = options.bucket {
            let times = batch
                .column(time)
                .as_primitive::<TimestampMicrosecondType>();
            let buckets: Int64Array = times
                .iter()
                .map(|t| t.map(|t| crate::order::bucket_of(partitioning, t)))
                .collect();
            columns.push(Arc::new(buckets));
        }
        let out = RecordBatch::try_new(schema.clone(), columns)?;
        let mut keep: Option<BooleanArray> = None;
        if let Some(filter) = filter {
            let mask = filter.evaluate(&batch)?;
            self.filtered += (mask.len() - mask.true_count()) as u64;
            keep = Some(mask);
        }
        if !options.whole_key.is_empty() {
            let whole: BooleanArray = (0..n)
                .map(|i| {
                    Some(
                        options
                            .whole_key
                            .iter()
                            .all(|&k| batch.column(k).is_valid(i)),
                    )
                })
                .collect();
            keep = Some(match keep {
                Some(mask) => datafusion::arrow::compute::and(&mask, &whole)?,
                None => whole,
            });
        }
        Ok(match keep {
            Some(mask) if mask.true_count() < n => filter_record_batch(&out, &mask)?,
            _ => out,
        })
    }
}

impl DisplayAs for RouteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "RouteExec: {:?}", self.options)
    }
}

impl ExecutionPlan for RouteExec {
    fn name(&self) -> &str {
        "RouteExec"
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
        vec![true]
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
            .ok_or_else(|| DataFusionError::Internal("RouteExec needs an input".into()))?;
        Ok(Arc::new(RouteExec::try_new(input, self.options.clone())?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let state = Routing {
            input: self.input.execute(partition, context)?,
            seen: Seen::default(),
            partition,
            options: self.options.clone(),
            filter: self.filter.clone(),
            schema: self.schema.clone(),
            scan: self.input.clone(),
        };
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                let routed = match state.input.next().await {
                    Some(Ok(batch)) => state.seen.route(
                        batch,
                        state.partition,
                        &state.options,
                        state.filter.as_deref(),
                        &state.schema,
                    ),
                    Some(Err(e)) => Err(e),
                    None => return state.finish().err().map(|e| (Err(e), None)),
                };
                match routed {
                    Ok(batch) if batch.num_rows() == 0 => continue,
                    Ok(batch) => return Some((Ok(batch), Some(state))),
                    Err(e) => return Some((Err(e), None)),
                }
            }
        });
        let as_text = self.options.errors_as_text;
        let stream = stream.map(move |r| match as_text {
            true => r.map_err(crate::write::exec::as_task_error),
            false => r,
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One partition being routed.
struct Routing {
    input: SendableRecordBatchStream,
    seen: Seen,
    partition: usize,
    options: RouteOptions,
    filter: Option<Arc<FilterExpr>>,
    schema: SchemaRef,
    scan: Arc<dyn ExecutionPlan>,
}

impl Routing {
    /// At the end of the file: its statistics, when asked for.
    fn finish(&self) -> Result<()> {
        let Some((dir, _)) = &self.options.stats else {
            return Ok(());
        };
        let scan = (self.scan.downcast_ref::<ScanExec>()).expect("checked in try_new");
        let source = scan.source();
        if self.partition >= source.files.len() {
            // A source without files: one empty partition, nothing to tell.
            return Ok(());
        }
        let file = source.file_stats(self.partition).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "no statistics of file {} of `{}`",
                self.partition,
                source.name()
            ))
        })?;
        ScanStats {
            source: source.name().to_owned(),
            file: self.partition,
            stats: file,
            filtered: self.seen.filtered,
            latest: self.seen.latest,
        }
        .write(dir)
    }
}
