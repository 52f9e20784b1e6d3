//! [`RouteExec`]: prepares rows for a shuffle of the split by key.
//!
//! Reading a source's files itself (a task reads the files its owned
//! partitions name; see `write::exec::owned_partitions`), it gives each
//! row its row id, drops events without a whole key (no index holds them), drops
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
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::hot::{SALT, SaltOptions, Salter};
use super::{BUCKET, ROW_ID, ScanStats};
use crate::ingest::scan::ScanExec;

use crate::temporal::FilterExpr;

/// Rows in one file at most: a row id is `file << ROW_BITS | row`.
pub const ROW_BITS: u32 = 40;

/// What a [`RouteExec`] does, on the wire (the default: nothing but read
/// or pass rows on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteOptions {
    /// Append [`ROW_ID`]: `partition << ROW_BITS | row in partition`.
    pub row_ids: bool,
    /// Drop rows where any of these columns is null.
    pub whole_key: Vec<usize>,
    /// Drop rows where this `where` (of `filter_source`) is not true,
    /// counted in the statistics.
    pub filter: Option<String>,
    /// Count the rows `filter` drops, but keep them (events of the spine's
    /// source: their statistics must equal the spine's own scan's).
    #[serde(default)]
    pub count_only: bool,
    /// Append [`BUCKET`]: the output bucket of this time column.
    pub bucket: Option<(usize, crate::spec::Partitioning)>,
    /// Write each file's [`ScanStats`] into this folder (a scan's only),
    /// with the latest time of this column.
    pub stats: Option<(PathBuf, Option<usize>)>,
    /// Fail with the error's text after the task-error marker (for a
    /// cluster; see `write::exec::as_task_error`).
    #[serde(default)]
    pub errors_as_text: bool,
    /// Append [`super::hot::SALT`] for a key group with hot keys.
    #[serde(default)]
    pub salt: Option<SaltOptions>,
}

/// See the module docs.
#[derive(Debug)]
pub struct RouteExec {
    /// The source it reads, or `None`: it routes its input's rows.
    scan: Option<Arc<ScanExec>>,
    /// With a scan, the numbers of the files each partition reads (an
    /// `owned_partitions` scan); otherwise the input.
    input: Arc<dyn ExecutionPlan>,
    options: RouteOptions,
    /// The `where`, compiled against the scanned source.
    filter: Option<Arc<FilterExpr>>,
    salter: Option<Arc<Salter>>,
    /// The rows before their salt.
    unsalted: SchemaRef,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

/// A [`RouteExec`] on the wire.
#[derive(Serialize, Deserialize)]
struct Wire {
    options: RouteOptions,
    /// The scan's own bytes (JSON), when it reads a source.
    scan: Option<String>,
}

impl RouteExec {
    /// Reads `scan`'s files (partition `i` file `i`) and routes their rows.
    pub fn scan(scan: ScanExec, options: RouteOptions) -> Result<Self> {
        let files = scan.properties().output_partitioning().partition_count();
        let owned = crate::write::exec::owned_partitions(files)?;
        RouteExec::try_new(Some(Arc::new(scan)), owned, options)
    }

    /// Routes the rows of `input`.
    pub fn over(input: Arc<dyn ExecutionPlan>, options: RouteOptions) -> Result<Self> {
        RouteExec::try_new(None, input, options)
    }

    fn try_new(
        scan: Option<Arc<ScanExec>>,
        input: Arc<dyn ExecutionPlan>,
        options: RouteOptions,
    ) -> Result<Self> {
        if (options.stats.is_some() || options.filter.is_some()) && scan.is_none() {
            return Err(DataFusionError::Internal(
                "RouteExec counts and filters only the rows it reads".into(),
            ));
        }
        let filter = match (&options.filter, &scan) {
            (Some(sql), Some(scan)) => Some(Arc::new(FilterExpr::for_schema(
                sql,
                scan.source().layout.schema.clone(),
            )?)),
            _ => None,
        };
        let rows = match &scan {
            Some(scan) => scan.schema(),
            None => input.schema(),
        };
        let mut fields: Vec<Field> = (rows.fields().iter()).map(|f| f.as_ref().clone()).collect();
        if options.row_ids {
            fields.push(Field::new(ROW_ID, DataType::Int64, false));
        }
        if options.bucket.is_some() {
            fields.push(Field::new(BUCKET, DataType::Int64, true));
        }
        let unsalted = Arc::new(Schema::new(fields.clone()));
        let salter = match &options.salt {
            Some(salt) => {
                if let Some(&k) = salt.key.iter().find(|&&k| k >= fields.len()) {
                    return Err(DataFusionError::Internal(format!(
                        "RouteExec salts on column {k} of {}",
                        fields.len()
                    )));
                }
                fields.push(Field::new(SALT, DataType::UInt32, false));
                Some(Arc::new(Salter::new(salt.clone())?))
            }
            None => None,
        };
        let schema = Arc::new(Schema::new(fields));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(RouteExec {
            scan,
            input,
            options,
            filter,
            salter,
            unsalted,
            schema,
            cache,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let scan = match &self.scan {
            Some(scan) => Some(
                String::from_utf8(scan.to_bytes()?)
                    .map_err(|e| DataFusionError::Internal(format!("encoding a RouteExec: {e}")))?,
            ),
            None => None,
        };
        serde_json::to_vec(&Wire {
            options: self.options.clone(),
            scan,
        })
        .map_err(|e| DataFusionError::Internal(format!("encoding a RouteExec: {e}")))
    }

    /// The node [`RouteExec::to_bytes`] wrote, over its child.
    pub fn from_bytes(bytes: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a RouteExec: {e}")))?;
        let scan = match wire.scan {
            Some(scan) => Some(Arc::new(ScanExec::from_bytes(scan.as_bytes())?)),
            None => None,
        };
        RouteExec::try_new(scan, input, wire.options)
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
        (unsalted, salter, schema): (&SchemaRef, Option<&Salter>, &SchemaRef),
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
        let out = RecordBatch::try_new(unsalted.clone(), columns)?;
        let mut keep: Option<BooleanArray> = None;
        if let Some(filter) = filter {
            let mask = filter.evaluate(&batch)?;
            self.filtered += (mask.len() - mask.true_count()) as u64;
            if !options.count_only {
                keep = Some(mask);
            }
        }
        if let Some(whole) = whole_key_mask(&batch, &options.whole_key) {
            keep = Some(match keep {
                Some(mask) => datafusion::arrow::compute::and(&mask, &whole)?,
                None => whole,
            });
        }
        let out = match keep {
            Some(mask) if mask.true_count() < n => filter_record_batch(&out, &mask)?,
            _ => out,
        };
        match salter {
            Some(salter) => salter.apply(out, schema),
            None => Ok(out),
        }
    }
}

/// Which rows of `batch` have every one of the columns `key` set, or
/// `None` when there is no key to check.
pub(crate) fn whole_key_mask(batch: &RecordBatch, key: &[usize]) -> Option<BooleanArray> {
    if key.is_empty() {
        return None;
    }
    let mask = (0..batch.num_rows())
        .map(|i| Some(key.iter().all(|&k| batch.column(k).is_valid(i))))
        .collect();
    Some(mask)
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
        Ok(Arc::new(RouteExec::try_new(
            self.scan.clone(),
            input,
            self.options.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let state = Routing {
            scan: self.scan.clone(),
            input: self.input.clone(),
            partition,
            context,
            files: None,
            current: None,
            options: self.options.clone(),
            filter: self.filter.clone(),
            salter: self.salter.clone(),
            unsalted: self.unsalted.clone(),
            schema: self.schema.clone(),
        };
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(Some(batch)) => Some((Ok(batch), Some(state))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
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
    scan: Option<Arc<ScanExec>>,
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
    /// A scan's files still to read (`None` until the owned numbers are
    /// read).
    files: Option<std::collections::VecDeque<usize>>,
    /// The stream being read: its partition (a scan's file) and what its
    /// rows came to.
    current: Option<(usize, SendableRecordBatchStream, Seen)>,
    options: RouteOptions,
    filter: Option<Arc<FilterExpr>>,
    salter: Option<Arc<Salter>>,
    unsalted: SchemaRef,
    schema: SchemaRef,
}

impl Routing {
    /// The next routed batch (never empty), or `None` at the end.
    async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.current.is_none() && !self.open().await? {
                return Ok(None);
            }
            let (partition, stream, seen) = self.current.as_mut().expect("opened");
            match stream.next().await {
                Some(batch) => {
                    let partition = *partition;
                    let routed = seen.route(
                        batch?,
                        partition,
                        &self.options,
                        self.filter.as_deref(),
                        (&self.unsalted, self.salter.as_deref(), &self.schema),
                    )?;
                    if routed.num_rows() > 0 {
                        return Ok(Some(routed));
                    }
                }
                None => {
                    let (file, _, seen) = self.current.take().expect("opened");
                    self.finish(file, &seen)?;
                }
            }
        }
    }

    /// Opens the next stream: the input's partition, or a scan's next file
    /// it owns; `false` when there is none left.
    async fn open(&mut self) -> Result<bool> {
        let Some(scan) = &self.scan else {
            if self.files.is_some() {
                return Ok(false);
            }
            self.files = Some(Default::default());
            let stream = self.input.execute(self.partition, self.context.clone())?;
            self.current = Some((self.partition, stream, Seen::default()));
            return Ok(true);
        };
        if self.files.is_none() {
            let owned = crate::write::exec::owned_numbers(
                &self.input,
                self.partition,
                self.context.clone(),
            )
            .await?;
            self.files = Some(owned.into());
        }
        let Some(file) = self.files.as_mut().and_then(|f| f.pop_front()) else {
            return Ok(false);
        };
        let stream = scan.execute(file, self.context.clone())?;
        self.current = Some((file, stream, Seen::default()));
        Ok(true)
    }

    /// At the end of a scan's file: its statistics, when asked for.
    fn finish(&self, file: usize, seen: &Seen) -> Result<()> {
        let (Some((dir, _)), Some(scan)) = (&self.options.stats, &self.scan) else {
            return Ok(());
        };
        let source = scan.source();
        if file >= source.files.len() {
            // A source without files: one empty partition, nothing to tell.
            return Ok(());
        }
        let stats = source.file_stats(file).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "no statistics of file {file} of `{}`",
                source.name()
            ))
        })?;
        ScanStats {
            source: source.name().to_owned(),
            file,
            stats,
            filtered: seen.filtered,
            latest: seen.latest,
        }
        .write(dir)
    }
}
