//! [`PointInTimeExec`], the `ExecutionPlan`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::stream::{BuildSide, Columns, collect_build_side, cursor, probe_batch};
use crate::spec::{AggregationKind, TemporalSpec};

/// What the build side turned out to be, once collected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildSummary {
    /// Events indexed.
    pub events: usize,
    /// Distinct keys.
    pub keys: usize,
    /// The watermark in force (UTC microseconds); `None` without labels.
    pub watermark: Option<i64>,
    /// Seconds spent reading the events, and sorting them into the index.
    pub collect_seconds: f64,
    pub index_seconds: f64,
}

/// Point-in-time aggregations of `events` for every row of `spine`.
///
/// See the [module docs](super) for semantics, distribution and memory.
#[derive(Debug)]
pub struct PointInTimeExec {
    events: Arc<dyn ExecutionPlan>,
    spine: Arc<dyn ExecutionPlan>,
    spec: TemporalSpec,
    columns: Columns,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    build: Arc<OnceCell<Arc<BuildSide>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl PointInTimeExec {
    /// Checks the columns the spec names and derives the output schema: the
    /// spine's columns, then one column per aggregation.
    pub fn try_new(
        events: Arc<dyn ExecutionPlan>,
        spine: Arc<dyn ExecutionPlan>,
        spec: TemporalSpec,
    ) -> Result<Self> {
        spec.validate().map_err(DataFusionError::Plan)?;
        let columns = Columns {
            event_key: find(&events.schema(), &spec.event_key, false)?,
            event_time: find(&events.schema(), &spec.event_time, true)?,
            spine_key: find(&spine.schema(), &spec.spine_key, false)?,
            spine_time: find(&spine.schema(), &spec.spine_time, true)?,
        };
        let spine_schema = spine.schema();
        let mut fields: Vec<Arc<Field>> = spine_schema.fields().iter().cloned().collect();
        for a in &spec.aggregations {
            if spine_schema.field_with_name(&a.name).is_ok() {
                return Err(DataFusionError::Plan(format!(
                    "aggregation `{}` has the name of a spine column",
                    a.name
                )));
            }
            let data_type = match a.kind {
                AggregationKind::Count => DataType::Int64,
                AggregationKind::Exists => DataType::Int8,
            };
            fields.push(Arc::new(Field::new(&a.name, data_type, false)));
        }
        let schema = Arc::new(Schema::new(fields));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            spine.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(PointInTimeExec {
            events,
            spine,
            spec,
            columns,
            schema,
            cache,
            build: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn spec(&self) -> &TemporalSpec {
        &self.spec
    }

    /// The collected build side, once some partition has collected it.
    pub fn build_summary(&self) -> Option<BuildSummary> {
        self.build.get().map(|side| BuildSummary {
            events: side.index.len(),
            keys: side.index.keys(),
            watermark: side.watermark,
            collect_seconds: side.collect_seconds,
            index_seconds: side.index_seconds,
        })
    }

    /// Spine rows dropped as immature, over all partitions run so far.
    pub fn held_back(&self) -> usize {
        self.metrics
            .clone_inner()
            .sum_by_name("held_back")
            .map_or(0, |v| v.as_usize())
    }

    /// Seconds spent probing, summed over partitions.
    pub fn probe_seconds(&self) -> f64 {
        self.metrics
            .clone_inner()
            .sum_by_name("probe_time")
            .map_or(0.0, |v| v.as_usize() as f64 / 1e9)
    }
}

/// Index of an `Int64` key or a microsecond timestamp column.
fn find(schema: &Schema, name: &str, time: bool) -> Result<usize> {
    let (index, field) = schema
        .column_with_name(name)
        .ok_or_else(|| DataFusionError::Plan(format!("no column `{name}`")))?;
    let ok = if time {
        matches!(
            field.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        )
    } else {
        field.data_type() == &DataType::Int64
    };
    if !ok {
        return Err(DataFusionError::Plan(format!(
            "column `{name}` is {}, expected {}",
            field.data_type(),
            if time {
                "a microsecond timestamp"
            } else {
                "Int64"
            }
        )));
    }
    Ok(index)
}

impl DisplayAs for PointInTimeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let names: Vec<&str> = self
            .spec
            .aggregations
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        write!(
            f,
            "PointInTimeExec: on=({}, {}) at {} aggregations=[{}]",
            self.spec.event_key,
            self.spec.spine_key,
            self.spec.spine_time,
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
        vec![&self.events, &self.spine]
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

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![
            Distribution::SinglePartition,
            Distribution::UnspecifiedDistribution,
        ])
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [events, spine]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("PointInTimeExec has two children".into()))?;
        Ok(Arc::new(PointInTimeExec::try_new(
            events,
            spine,
            self.spec.clone(),
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PointInTimeExec::try_new(
            self.events.clone(),
            self.spine.clone(),
            self.spec.clone(),
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
        let spine = self.spine.execute(partition, context.clone())?;
        let held_back = MetricBuilder::new(&self.metrics).counter("held_back", partition);
        let probe_time = MetricBuilder::new(&self.metrics).subset_time("probe_time", partition);
        let build = self.build.clone();
        let events = self.events.clone();
        let spec = self.spec.clone();
        let columns = self.columns;
        let schema = self.schema.clone();
        let output_schema = schema.clone();
        let probe = async move {
            let side = build
                .get_or_try_init(|| collect_build_side(events, context, &spec, columns))
                .await?
                .clone();
            let mut cursor = cursor(&side, &spec);
            Ok::<_, DataFusionError>(spine.map(move |batch| {
                let batch = batch?;
                let _timer = probe_time.timer();
                probe_batch(
                    &side,
                    &spec,
                    columns,
                    &output_schema,
                    &batch,
                    &mut cursor,
                    &held_back,
                )
            }))
        };
        let stream = futures::stream::once(probe).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
