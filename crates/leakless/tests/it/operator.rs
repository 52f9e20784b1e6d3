//! `PointInTimeExec` on its own against the brute-force oracle, with the
//! inputs split over 1, 2 and 8 partitions.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Int64Type, Schema, SchemaRef};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use leakless::ingest::utc_micros;
use leakless::spec::parse_spec;
use leakless::temporal::{PitPlan, PointInTimeExec};
use proptest::prelude::*;

use crate::common::{oracle_clicks, runtime};

const HOUR: i64 = 3_600_000_000;

fn spine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("impression_id", DataType::Int64, true),
        Field::new("listing_id", DataType::Int64, true),
        Field::new("impression_ts", utc_micros(), true),
    ]))
}

fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("listing_id", DataType::Int64, true),
        Field::new("click_ts", utc_micros(), true),
    ]))
}

/// The click features and label of the marketplace spec, over the two
/// schemas above.
fn plan(watermark: Option<i64>) -> Arc<PitPlan> {
    let text = r#"
        version = 1
        [sources.impressions]
        path = "impressions.csv"
        time = "impression_ts"
        columns = { impression_id = "int64", listing_id = "int64", impression_ts = "timestamp" }
        [sources.clicks]
        path = "clicks.csv"
        time = "click_ts"
        columns = { listing_id = "int64", click_ts = "timestamp" }
        [spine]
        source = "impressions"
        columns = ["impression_id", "listing_id"]
        [features.prior_listing_clicks]
        source = "clicks"
        key = "listing_id"
        op = "count"
        window = "lifetime"
        [features.listing_clicks_24h]
        source = "clicks"
        key = "listing_id"
        op = "count"
        window = "24h"
        [labels.clicked]
        source = "clicks"
        key = "listing_id"
        op = "exists"
        window = "24h"
    "#;
    let spec = parse_spec(text, std::path::Path::new("spec.toml"), &[], None).unwrap();
    Arc::new(PitPlan::new(spec, watermark))
}

/// Splits rows into `n` partitions of small batches.
fn partitions(
    schema: &SchemaRef,
    rows: &[(i64, i64, i64)],
    n: usize,
    width: usize,
) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new(); n];
    for (i, chunk) in rows.chunks(3).enumerate() {
        let ts = TimestampMicrosecondArray::from(chunk.iter().map(|r| r.2).collect::<Vec<_>>())
            .with_timezone("UTC");
        let mut columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = Vec::new();
        if width == 3 {
            columns.push(Arc::new(Int64Array::from(
                chunk.iter().map(|r| r.0).collect::<Vec<_>>(),
            )));
        }
        columns.push(Arc::new(Int64Array::from(
            chunk.iter().map(|r| r.1).collect::<Vec<_>>(),
        )));
        columns.push(Arc::new(ts));
        parts[i % n].push(RecordBatch::try_new(schema.clone(), columns).unwrap());
    }
    parts
}

/// Times on a 6-hour grid, so that 24 h boundaries and ties are common,
/// sometimes nudged by a microsecond.
fn time() -> impl Strategy<Value = i64> {
    (
        0i64..20,
        prop_oneof![4 => Just(0i64), 1 => Just(1), 1 => Just(-1)],
    )
        .prop_map(|(k, nudge)| 1_790_000_000_000_000 + k * 6 * HOUR + nudge)
}

fn run(
    impressions: &[(i64, i64)],
    clicks: &[(i64, i64)],
    watermark: Option<i64>,
    n: usize,
) -> (Vec<(i64, i64, i64, i8)>, usize) {
    let spine: Vec<(i64, i64, i64)> = impressions
        .iter()
        .enumerate()
        .map(|(i, &(l, t))| (i as i64, l, t))
        .collect();
    let events: Vec<(i64, i64, i64)> = clicks.iter().map(|&(l, t)| (0, l, t)).collect();
    let spine = MemorySourceConfig::try_new_exec(
        &partitions(&spine_schema(), &spine, n, 3),
        spine_schema(),
        None,
    )
    .unwrap();
    let events = MemorySourceConfig::try_new_exec(
        &partitions(&event_schema(), &events, n, 2),
        event_schema(),
        None,
    )
    .unwrap();
    let exec = Arc::new(PointInTimeExec::try_new(vec![events], spine, plan(watermark)).unwrap());
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(n));
    let batches = runtime()
        .block_on(collect(
            exec.clone() as Arc<dyn ExecutionPlan>,
            ctx.task_ctx(),
        ))
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let int = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (id, prior, last24) = (int(0), int(3), int(4));
        let clicked = b.column(5).as_primitive::<Int8Type>();
        for r in 0..b.num_rows() {
            rows.push((
                id.value(r),
                prior.value(r),
                last24.value(r),
                clicked.value(r),
            ));
        }
    }
    rows.sort();
    (rows, exec.held_back())
}

fn oracle(
    impressions: &[(i64, i64)],
    clicks: &[(i64, i64)],
    watermark: Option<i64>,
) -> (Vec<(i64, i64, i64, i8)>, usize) {
    let watermark = watermark.unwrap_or_else(|| clicks.iter().map(|c| c.1).max().unwrap());
    let mut held_back = 0;
    let mut rows = Vec::new();
    for (i, &(l, t)) in impressions.iter().enumerate() {
        if t + 24 * HOUR > watermark {
            held_back += 1;
            continue;
        }
        let (prior, last24, clicked) = oracle_clicks(clicks, l, t);
        rows.push((i as i64, prior, last24, clicked));
    }
    (rows, held_back)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn operator_matches_the_oracle(
        impressions in prop::collection::vec((0i64..4, time()), 0..40),
        clicks in prop::collection::vec((0i64..5, time()), 1..60),
        watermark in prop::option::of(time()),
    ) {
        let expected = oracle(&impressions, &clicks, watermark);
        for n in [1, 2, 8] {
            prop_assert_eq!(&run(&impressions, &clicks, watermark, n), &expected, "with {} partitions", n);
        }
    }
}

#[test]
fn the_optimizer_leaves_the_indexed_side_in_file_order() {
    // Ties among events at one instant follow input order (partition =
    // file, then row): planned through DataFusion, the indexed input keeps
    // its partitions as they are (no repartition, no coalesce that would
    // interleave them), and the spine keeps its partitions.
    let spine = MemorySourceConfig::try_new_exec(
        &partitions(&spine_schema(), &[(1, 1, 0), (2, 1, 1)], 2, 3),
        spine_schema(),
        None,
    )
    .unwrap();
    let events: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
        &partitions(
            &event_schema(),
            &[(0, 1, 0), (0, 1, 1), (0, 2, 2), (0, 2, 3)],
            2,
            2,
        ),
        event_schema(),
        None,
    )
    .unwrap();
    let exec: Arc<dyn ExecutionPlan> = Arc::new(
        PointInTimeExec::try_new(vec![events.clone()], spine, plan(Some(i64::MAX))).unwrap(),
    );
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    let state = ctx.state();
    let optimized = state.physical_optimizers().iter().fold(exec, |plan, rule| {
        rule.optimize(plan, state.config_options()).unwrap()
    });
    assert!(optimized.downcast_ref::<PointInTimeExec>().is_some());
    let indexed = optimized.children()[0];
    assert!(
        Arc::ptr_eq(indexed, &events),
        "the indexed input was replaced by {}",
        indexed.name()
    );
    assert_eq!(
        optimized.output_partitioning().partition_count(),
        optimized.children()[1]
            .output_partitioning()
            .partition_count()
    );
}
