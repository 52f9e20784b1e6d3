//! Collecting the build side and probing spine batches.
//!
//! Each output partition runs:
//!
//! ```text
//!   wait for build side ──(first partition collects it, others wait)──┐
//!                                                                     v
//!   spine batch ──> filter immature rows ──> binary searches ──> output batch
//! ```

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int8Array, Int64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::TryStreamExt;

use super::index::{Cursor, TemporalIndex, WindowPlan};
use crate::spec::{AggregationKind, TemporalSpec, Watermark};

/// Positions of the key and time columns in the two inputs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Columns {
    pub event_key: usize,
    pub event_time: usize,
    pub spine_key: usize,
    pub spine_time: usize,
}

/// The collected event side, shared by all output partitions.
#[derive(Debug)]
pub(super) struct BuildSide {
    pub index: TemporalIndex,
    /// The watermark in force; `None` when the spec has no label.
    pub watermark: Option<i64>,
    /// Seconds spent reading the events, and building the index from them.
    pub collect_seconds: f64,
    pub index_seconds: f64,
    _reservation: MemoryReservation,
}

/// Reads every partition of `events` into a [`TemporalIndex`]. Events with a
/// null key or time are skipped: they belong to no key and no instant.
pub(super) async fn collect_build_side(
    events: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    spec: &TemporalSpec,
    columns: Columns,
) -> Result<Arc<BuildSide>> {
    let started = Instant::now();
    let reservation = MemoryConsumer::new("PointInTimeExec[build]").register(context.memory_pool());
    let mut pairs: Vec<(i64, i64)> = Vec::new();
    for partition in 0..events.output_partitioning().partition_count() {
        let mut stream = events.execute(partition, context.clone())?;
        while let Some(batch) = stream.try_next().await? {
            let keys = batch.column(columns.event_key).as_primitive::<Int64Type>();
            let times = batch
                .column(columns.event_time)
                .as_primitive::<TimestampMicrosecondType>();
            reservation.try_grow(batch.num_rows() * 16)?;
            if keys.null_count() == 0 && times.null_count() == 0 {
                pairs.extend(
                    keys.values()
                        .iter()
                        .copied()
                        .zip(times.values().iter().copied()),
                );
            } else {
                pairs.extend(
                    keys.iter()
                        .zip(times.iter())
                        .filter_map(|(k, t)| Some((k?, t?))),
                );
            }
        }
    }
    let collected = Instant::now();
    let index = TemporalIndex::from_pairs(pairs);
    let index_seconds = collected.elapsed().as_secs_f64();
    reservation.resize(index.memory_size());
    let watermark = match (spec.max_horizon_micros(), spec.watermark) {
        (None, _) => None,
        (Some(_), Watermark::Fixed(w)) => Some(w),
        (Some(_), Watermark::MaxEventTime) => Some(
            index
                .max_time()
                .ok_or_else(|| DataFusionError::from(crate::error::Error::NoWatermark))?,
        ),
    };
    Ok(Arc::new(BuildSide {
        index,
        watermark,
        collect_seconds: (collected - started).as_secs_f64(),
        index_seconds,
        _reservation: reservation,
    }))
}

/// A cursor over the build side for one output stream.
pub(super) fn cursor(side: &BuildSide, spec: &TemporalSpec) -> Cursor {
    let windows: Vec<_> = spec.aggregations.iter().map(|a| a.window).collect();
    Cursor::new(&side.index, WindowPlan::new(&windows))
}

/// Answers one spine batch: drops immature rows, then appends one column per
/// aggregation.
pub(super) fn probe_batch(
    side: &BuildSide,
    spec: &TemporalSpec,
    columns: Columns,
    schema: &SchemaRef,
    batch: &RecordBatch,
    cursor: &mut Cursor,
    held_back: &Count,
) -> Result<RecordBatch> {
    let times = batch
        .column(columns.spine_time)
        .as_primitive::<TimestampMicrosecondType>();
    if times.null_count() > 0 {
        return Err(DataFusionError::Execution(format!(
            "spine column `{}` has a null time",
            spec.spine_time
        )));
    }
    let batch = match (side.watermark, spec.max_horizon_micros()) {
        (Some(watermark), Some(horizon)) => {
            let mature: BooleanArray = times
                .values()
                .iter()
                .map(|&t| Some(t.saturating_add(horizon) <= watermark))
                .collect();
            let immature = mature.len() - mature.true_count();
            held_back.add(immature);
            if immature == 0 {
                batch.clone()
            } else {
                filter_record_batch(batch, &mature)?
            }
        }
        _ => batch.clone(),
    };
    let keys = batch.column(columns.spine_key).as_primitive::<Int64Type>();
    let times = batch
        .column(columns.spine_time)
        .as_primitive::<TimestampMicrosecondType>();
    let mut found = vec![0usize; spec.aggregations.len()];
    let mut counts: Vec<Vec<i64>> = spec
        .aggregations
        .iter()
        .map(|_| Vec::with_capacity(batch.num_rows()))
        .collect();
    for row in 0..batch.num_rows() {
        // A null key matches no event.
        if keys.is_null(row) {
            found.fill(0);
        } else {
            cursor.counts(&side.index, keys.value(row), times.value(row), &mut found);
        }
        for (&n, out) in found.iter().zip(counts.iter_mut()) {
            out.push(n as i64);
        }
    }
    let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
    for (a, values) in spec.aggregations.iter().zip(counts) {
        arrays.push(match a.kind {
            AggregationKind::Count => Arc::new(Int64Array::from(values)),
            AggregationKind::Exists => Arc::new(Int8Array::from_iter_values(
                values.into_iter().map(|c| i8::from(c > 0)),
            )),
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}
