//! [`PointInTimeExec`], the `ExecutionPlan`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::indexed::{IndexedSide, Own, collect};
use super::plan::PitPlan;
use super::stream::{Prober, label_watermarks};
use crate::error::{Shared, shared};
use crate::ingest::arrow_type;

/// What the indexed side turned out to be, once collected.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexedSummary {
    /// Rows read per input source, in the plan's input order.
    pub rows: Vec<(String, usize)>,
    /// Events indexed per index.
    pub events: Vec<usize>,
    /// The watermark of each label (UTC µs).
    pub watermarks: Vec<(String, Option<i64>)>,
    /// Per input source, in the plan's input order: its latest event.
    pub latest: Vec<(String, Option<super::indexed::Latest>)>,
    /// Seconds spent reading the inputs, and building the indexes.
    pub collect_seconds: f64,
    pub index_seconds: f64,
}

/// Point-in-time features and labels for every row of the spine.
///
/// See the [module docs](super) for semantics, distribution and memory.
#[derive(Debug)]
pub struct PointInTimeExec {
    /// The indexed sources in the plan's input order, then the spine.
    children: Vec<Arc<dyn ExecutionPlan>>,
    plan: Arc<PitPlan>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    indexed: Arc<Shared<Arc<IndexedSide>>>,
    /// One key group of a build split by key (`None`: the whole plan).
    group: Option<GroupMode>,
    /// The whole plan, when `plan` is a group's.
    whole: Arc<PitPlan>,
    metrics: ExecutionPlanMetricsSet,
    /// Per output partition, its immature rows per output bucket.
    held_back: Arc<std::sync::Mutex<HeldBack>>,
}

/// Immature rows per output partition, then per output bucket.
type HeldBack = std::collections::BTreeMap<usize, std::collections::BTreeMap<i64, u64>>;

/// How a [`PointInTimeExec`] computes one key group of a build split by
/// key (see `crate::split`): output partition `k` indexes partition `k` of
/// each input (the events of its own keys, ordered by their row id) and
/// probes partition `k` of the spine (sorted by time), which the `where`
/// has already filtered; it passes the spine batches' first `carried`
/// columns through and adds the group's columns. Label watermarks come
/// from the scans' statistics in `stats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupMode {
    /// Positions of the group's indexes in the whole plan.
    pub indexes: Vec<usize>,
    pub carried: usize,
    pub stats: std::path::PathBuf,
    /// Fail with the error's text after the task-error marker (for a
    /// cluster; see `write::exec::as_task_error`).
    #[serde(default)]
    pub errors_as_text: bool,
    /// The group's number in the chain (its tasks' loads are told by it).
    #[serde(default)]
    pub number: usize,
}

impl PointInTimeExec {
    /// `inputs`: one scan per source in `plan.inputs`, in that order;
    /// `spine`: the spine source's scan.
    pub fn try_new(
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        spine: Arc<dyn ExecutionPlan>,
        plan: Arc<PitPlan>,
    ) -> Result<Self> {
        PointInTimeExec::with_mode(inputs, spine, plan, None)
    }

    /// One key group of `plan` (see [`GroupMode`]): `inputs`, one per route
    /// of the group ([`PitPlan::routes`]).
    pub fn try_new_group(
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        spine: Arc<dyn ExecutionPlan>,
        plan: Arc<PitPlan>,
        group: GroupMode,
    ) -> Result<Self> {
        PointInTimeExec::with_mode(inputs, spine, plan, Some(group))
    }

    fn with_mode(
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        spine: Arc<dyn ExecutionPlan>,
        whole: Arc<PitPlan>,
        group: Option<GroupMode>,
    ) -> Result<Self> {
        let plan = match &group {
            Some(g) => Arc::new(whole.group(&g.indexes)),
            None => whole.clone(),
        };
        if inputs.len() != plan.inputs.len() {
            return Err(DataFusionError::Plan(format!(
                "PointInTimeExec reads {} sources, got {} inputs",
                plan.inputs.len(),
                inputs.len()
            )));
        }
        let schema = match &group {
            Some(g) => group_schema(&plan, &spine.schema(), g.carried)?,
            None => output_schema(&plan),
        };
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            spine.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let mut children = inputs;
        children.push(spine);
        Ok(PointInTimeExec {
            children,
            plan,
            schema,
            cache,
            indexed: Arc::new(Shared::new()),
            group,
            whole,
            metrics: ExecutionPlanMetricsSet::new(),
            held_back: Default::default(),
        })
    }

    pub fn plan(&self) -> &PitPlan {
        &self.plan
    }

    /// The operator on the wire: its watermark, its key group (JSON, an
    /// empty line for the whole plan) and its resolved spec (the inputs
    /// travel beside it).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let watermark = self
            .whole
            .watermark
            .map_or(String::new(), |w| w.to_string());
        let mut bytes = watermark.into_bytes();
        bytes.push(b'\n');
        if let Some(group) = &self.group {
            bytes.extend(serde_json::to_vec(group).map_err(|e| {
                DataFusionError::Internal(format!("encoding a PointInTimeExec: {e}"))
            })?);
        }
        bytes.push(b'\n');
        bytes.extend(self.whole.spec.to_wire().map_err(DataFusionError::from)?);
        Ok(bytes)
    }

    /// The operator [`PointInTimeExec::to_bytes`] wrote, over `children`
    /// (the indexed sources, then the spine).
    pub fn from_bytes(bytes: &[u8], mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Self> {
        let bad =
            |what: String| DataFusionError::Internal(format!("decoding a PointInTimeExec: {what}"));
        let mut lines = bytes.splitn(3, |&b| b == b'\n');
        let (Some(watermark), Some(group), Some(spec)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("no watermark or group".into()));
        };
        let watermark = match std::str::from_utf8(watermark) {
            Ok("") => None,
            Ok(w) => Some(w.parse::<i64>().map_err(|e| bad(e.to_string()))?),
            Err(e) => return Err(bad(e.to_string())),
        };
        let group: Option<GroupMode> = match group {
            [] => None,
            json => Some(serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?),
        };
        let spec = crate::spec::Spec::from_wire(spec).map_err(|e| bad(e.to_string()))?;
        let spine = children.pop().ok_or_else(|| bad("no spine".into()))?;
        let whole = Arc::new(PitPlan::new(spec, watermark));
        PointInTimeExec::with_mode(children, spine, whole, group)
    }

    /// The key group it computes, if it computes one.
    pub fn group(&self) -> Option<&GroupMode> {
        self.group.as_ref()
    }

    /// The collected indexed side, once some partition has collected it.
    pub fn indexed_summary(&self) -> Option<IndexedSummary> {
        let side = self.indexed.get()?.as_ref().ok()?;
        Some(IndexedSummary {
            rows: self
                .plan
                .inputs
                .iter()
                .cloned()
                .zip(side.rows.iter().copied())
                .collect(),
            events: side.indexes.iter().map(|i| i.times.len()).collect(),
            watermarks: label_watermarks(side, &self.plan),
            latest: (self.plan.inputs.iter().cloned())
                .zip(side.latest.iter().copied())
                .collect(),
            collect_seconds: side.collect_seconds,
            index_seconds: side.index_seconds,
        })
    }

    fn metric(&self, name: &str) -> usize {
        self.metrics
            .clone_inner()
            .sum_by_name(name)
            .map_or(0, |v| v.as_usize())
    }

    /// Spine rows of output partition `partition` dropped as immature and
    /// dropped by the spine's `where`, and its seconds of probing.
    pub fn partition_counts(&self, partition: usize) -> (u64, u64, f64) {
        let metrics = self.metrics.clone_inner();
        let of = |name: &str| {
            metrics
                .iter()
                .filter(|m| m.partition() == Some(partition) && m.value().name() == name)
                .map(|m| m.value().as_usize() as u64)
                .sum::<u64>()
        };
        (
            of("held_back"),
            of("spine_filtered"),
            of("probe_time") as f64 / 1e9,
        )
    }

    /// Spine rows of output partition `partition` dropped as immature, per
    /// output bucket of their time.
    pub fn partition_held_back(&self, partition: usize) -> Vec<(i64, u64)> {
        let held_back = self.held_back.lock().unwrap_or_else(|e| e.into_inner());
        held_back
            .get(&partition)
            .map(|buckets| buckets.iter().map(|(&b, &n)| (b, n)).collect())
            .unwrap_or_default()
    }

    /// Spine rows dropped as immature, over all partitions run so far.
    pub fn held_back(&self) -> usize {
        self.metric("held_back")
    }

    /// Spine rows dropped by the spine's `where`.
    pub fn filtered_out(&self) -> usize {
        self.metric("spine_filtered")
    }

    /// Seconds spent probing, summed over partitions.
    pub fn probe_seconds(&self) -> f64 {
        self.metric("probe_time") as f64 / 1e9
    }

    fn spine(&self) -> &Arc<dyn ExecutionPlan> {
        self.children.last().expect("the spine is the last child")
    }
}

/// A key group's output: the spine batches' first `carried` columns, then
/// the group's columns; every column nullable.
fn group_schema(plan: &PitPlan, spine: &SchemaRef, carried: usize) -> Result<SchemaRef> {
    if carried > spine.fields().len() {
        return Err(DataFusionError::Plan(format!(
            "a key group passes {carried} columns of a spine of {}",
            spine.fields().len()
        )));
    }
    let output = plan.spec.output_columns();
    let carried = spine.fields()[..carried]
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true));
    let derived = plan.columns.iter().map(|c| {
        let column = (output.iter())
            .find(|o| o.name == c.derived.name)
            .expect("a derived column is an output column");
        Field::new(&column.name, arrow_type(column.ty), true)
    });
    Ok(Arc::new(Schema::new(
        carried.chain(derived).collect::<Vec<_>>(),
    )))
}

/// Spine columns, the spine time, then one column per feature and label;
/// every column nullable, so that the schema depends on the definitions
/// only (not on which input columns are `required`).
pub fn output_schema(plan: &PitPlan) -> SchemaRef {
    spec_schema(&plan.spec)
}

/// The output schema of `spec`: its output columns in order, nullable.
pub fn spec_schema(spec: &crate::spec::Spec) -> SchemaRef {
    Arc::new(Schema::new(
        spec.output_columns()
            .into_iter()
            .map(|c| Field::new(c.name, arrow_type(c.ty), true))
            .collect::<Vec<_>>(),
    ))
}

impl DisplayAs for PointInTimeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let names: Vec<&str> = self
            .plan
            .columns
            .iter()
            .map(|c| c.derived.name.as_str())
            .collect();
        write!(
            f,
            "PointInTimeExec: spine={} at {} indexes={} columns=[{}]",
            self.plan.spec.spine.source,
            self.plan.spec.spine.time,
            self.plan.indexes.len(),
            names.join(", ")
        )
    }
}

impl ExecutionPlan for PointInTimeExec {
    fn name(&self) -> &str {
        "PointInTimeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.input_distribution_requirements().into_per_child()
    }

    /// Indexed inputs are read whole, partition by partition in order (the
    /// input order that breaks ties); the spine in any partitioning.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(
            self.children
                .iter()
                .map(|_| Distribution::UnspecifiedDistribution)
                .collect(),
        )
    }

    /// Repartitioning an indexed input would shuffle its tie order, and the
    /// spine's partitions are its buckets: no optimizer may repartition
    /// either (a cluster's planner runs one over the plan).
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.children.len()]
    }

    /// A key group probes its spine partition in time order (see
    /// [`GroupMode`]): an optimizer must keep the sort beneath it.
    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let mut required = vec![None; self.children.len()];
        if self.group.is_some() {
            let time = self.plan.spine_time;
            let name = self.spine().schema().field(time).name().clone();
            let column = Arc::new(datafusion::physical_expr::expressions::Column::new(
                &name, time,
            ));
            let ordering = LexOrdering::new([PhysicalSortExpr::new_default(column)])
                .expect("one sort expression");
            *required.last_mut().expect("a spine") = Some(OrderingRequirements::from(ordering));
        }
        required
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        let mut keeps = vec![false; self.children.len()];
        *keeps.last_mut().expect("a spine") = true;
        keeps
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let spine = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("PointInTimeExec needs a spine".into()))?;
        Ok(Arc::new(PointInTimeExec::with_mode(
            children,
            spine,
            self.whole.clone(),
            self.group.clone(),
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let mut children = self.children.clone();
        let spine = children.pop().expect("a spine");
        Ok(Arc::new(PointInTimeExec::with_mode(
            children,
            spine,
            self.whole.clone(),
            self.group.clone(),
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let spine = self.spine().execute(partition, context.clone())?;
        let held_back = MetricBuilder::new(&self.metrics).counter("held_back", partition);
        let filtered = MetricBuilder::new(&self.metrics).counter("spine_filtered", partition);
        let probe_time = MetricBuilder::new(&self.metrics).subset_time("probe_time", partition);
        let indexed = self.indexed.clone();
        let inputs: Vec<Arc<dyn ExecutionPlan>> = self.children[..self.children.len() - 1].to_vec();
        let plan = self.plan.clone();
        let schema = self.schema.clone();
        let output_schema = schema.clone();
        let group = self.group.clone();
        // A key group's task tells its load (see `crate::split::TaskLoad`).
        let started = std::time::Instant::now();
        let spine_rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let digest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let held_back_buckets = self.held_back.clone();
        let load = self.group.as_ref().map(|g| {
            let (spine_rows, digest, events) = (spine_rows.clone(), digest.clone(), events.clone());
            let (number, stats) = (g.number, g.stats.clone());
            let held_back = held_back_buckets.clone();
            async move {
                let ordering = std::sync::atomic::Ordering::Relaxed;
                let held_back = (held_back.lock().unwrap_or_else(|e| e.into_inner()))
                    .get(&partition)
                    .map(|b| b.iter().map(|(&b, &n)| (b, n)).collect())
                    .unwrap_or_default();
                crate::split::TaskLoad {
                    group: number,
                    digest: digest.load(ordering),
                    spine_rows: spine_rows.load(ordering),
                    events: events.load(ordering),
                    seconds: started.elapsed().as_secs_f64(),
                    held_back,
                }
                .write(&stats)
            }
        });
        let probe = async move {
            // The spine's first batch is awaited beside the indexed side, so
            // that it is read and bucketed while the indexes are built.
            let mut spine = spine.peekable();
            let side = match &group {
                // A key group's partition indexes its own keys only.
                Some(g) => {
                    let own = Own {
                        partition,
                        stats: g.stats.clone(),
                    };
                    let (side, _) = futures::join!(
                        collect(inputs, plan.clone(), context, Some(own)),
                        std::pin::Pin::new(&mut spine).peek()
                    );
                    let side = side?;
                    let rows = side.rows.iter().sum::<usize>() as u64;
                    events.store(rows, std::sync::atomic::Ordering::Relaxed);
                    digest.fetch_add(side.ids_digest, std::sync::atomic::Ordering::Relaxed);
                    side
                }
                None => {
                    let (side, _) = futures::join!(
                        shared(&indexed, || collect(inputs, plan.clone(), context, None)),
                        std::pin::Pin::new(&mut spine).peek()
                    );
                    side?
                }
            };
            let carried = group.as_ref().map(|g| g.carried);
            let mut prober = Prober::try_new(side, plan, output_schema, carried)?;
            Ok::<_, DataFusionError>(spine.map(move |batch| {
                let batch = batch?;
                if let Some(carried) = carried {
                    let ordering = std::sync::atomic::Ordering::Relaxed;
                    spine_rows.fetch_add(batch.num_rows() as u64, ordering);
                    digest.fetch_add(rows_digest(&batch, carried)?, ordering);
                }
                let _timer = probe_time.timer();
                let probed = prober.probe(&batch)?;
                held_back.add(probed.immature);
                filtered.add(probed.filtered);
                if !probed.immature_buckets.is_empty() {
                    let mut all = held_back_buckets.lock().unwrap_or_else(|e| e.into_inner());
                    let mine = all.entry(partition).or_default();
                    for (bucket, n) in probed.immature_buckets {
                        *mine.entry(bucket).or_default() += n;
                    }
                }
                Ok(probed.batch)
            }))
        };
        let as_text = self.group.as_ref().is_some_and(|g| g.errors_as_text);
        let stream = futures::stream::once(probe).try_flatten();
        // After the last row, the load (an error is the stream's last item).
        let told = futures::stream::iter(load)
            .then(|write| write)
            .filter_map(|r| async move { r.err().map(Err) });
        let stream = stream.chain(told).map(move |r| match as_text {
            true => r.map_err(crate::write::exec::as_task_error),
            false => r,
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The wrapping sum of a hash of each row's first `columns` columns: the
/// same for the same rows in any order or batching.
fn rows_digest(batch: &datafusion::arrow::array::RecordBatch, columns: usize) -> Result<u64> {
    let mut hashes = vec![0u64; batch.num_rows()];
    let state = datafusion::common::hash_utils::RandomState::with_seed(0);
    let columns = &batch.columns()[..columns.min(batch.num_columns())];
    datafusion::common::hash_utils::create_hashes(columns, &state, &mut hashes)?;
    Ok(hashes.iter().fold(0u64, |sum, h| sum.wrapping_add(*h)))
}
