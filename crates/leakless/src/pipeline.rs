//! `leakless build`: ingest -> point-in-time operator -> listings join ->
//! date-partitioned Parquet.
//!
//! The DataFusion plan, bottom up:
//!
//! ```text
//!   clicks files ──> StreamingTable ─┐ (collected once: build side)
//!                                    ├─> PointInTimeExec ──┐
//!   impressions files ─> StreamingTable ┘  (streams: probe)  ├─> HashJoin (left) ─> projection
//!   listings files ──> MemTable (checked for duplicate ids) ─┘   listings broadcast
//! ```
//!
//! The plan's output is bucketed by UTC day, sorted and written by
//! [`crate::write`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int8Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::common::JoinType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{Expr, SessionConfig, SessionContext, cast, col, lit};
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{BadRowPolicy, Source, Table};
use crate::spec::{self, Watermark};
use crate::temporal::{PointInTimeExec, PointInTimeTable};
use crate::time::{MICROS_PER_SECOND, format_rfc3339};
use crate::write::manifest::{ColumnDefinition, Manifest, Settings};
use crate::write::{DayBuckets, PartitionWritten, Staging};
use crate::{Reporter, Stage};

/// The output columns of `leakless build`, in order.
pub const OUTPUT_COLUMNS: [&str; 10] = [
    "impression_id",
    "user_id",
    "listing_id",
    "impression_ts",
    "listing_age_seconds",
    "price",
    "category",
    "prior_listing_clicks",
    "listing_clicks_24h",
    "clicked",
];

/// The position of an output column.
fn output_index(name: &str) -> usize {
    OUTPUT_COLUMNS
        .iter()
        .position(|c| *c == name)
        .expect("a column of OUTPUT_COLUMNS")
}

/// What a finished build reports.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub out: PathBuf,
    pub rows_read: BTreeMap<Table, u64>,
    pub rows_written: u64,
    /// Rows with `clicked = 1`.
    pub positive_labels: u64,
    /// Impressions whose label window had not closed by the watermark.
    pub immature_held_back: u64,
    /// The watermark in force (RFC 3339, UTC).
    pub watermark: String,
    /// Number of `dt=` partitions written.
    pub partitions: usize,
    pub files: usize,
    /// DataFusion partitions the plan ran with.
    pub target_partitions: usize,
    /// Where the time went.
    pub timings: Timings,
}

/// Seconds per stage. Wall-clock stages follow each other; the CPU figures
/// (`probe`, `sort`, `encode`) are summed over parallel workers.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Reading the listings and checking their ids (wall).
    pub read_listings: f64,
    /// Running the plan: reading impressions and clicks, the index, the
    /// probes, the listings join, bucketing by day (wall).
    pub compute: f64,
    /// Reading the clicks into memory, within `compute` (wall).
    pub read_clicks: f64,
    /// Sorting the clicks into the index, within `compute` (wall).
    pub index_build: f64,
    /// Probing, within `compute` (CPU, summed over partitions).
    pub probe: f64,
    /// Sorting and writing the days (wall).
    pub write: f64,
    /// Sorting days (CPU, summed over days).
    pub sort: f64,
    /// Encoding Parquet (CPU, summed over days).
    pub encode: f64,
    /// Manifest and rename (wall).
    pub commit: f64,
    pub total: f64,
}

/// A `leakless build` run, configured with builder methods.
///
/// ```no_run
/// # async fn run() -> leakless::Result<()> {
/// let summary = leakless::Build::new("impressions.csv", "clicks.csv", "listings.csv", "dataset")
///     .with_overwrite(true)
///     .execute()
///     .await?;
/// println!("{} rows", summary.rows_written);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Build {
    impressions: PathBuf,
    clicks: PathBuf,
    listings: PathBuf,
    out: PathBuf,
    watermark: Option<i64>,
    overwrite: bool,
    target_partitions: usize,
    policy: BadRowPolicy,
    reporter: Arc<dyn Reporter>,
}

impl Build {
    pub fn new(
        impressions: impl Into<PathBuf>,
        clicks: impl Into<PathBuf>,
        listings: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        Build {
            impressions: impressions.into(),
            clicks: clicks.into(),
            listings: listings.into(),
            out: out.into(),
            watermark: None,
            overwrite: false,
            target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
            policy: BadRowPolicy::default(),
            reporter: Arc::new(()),
        }
    }

    /// Label windows count as closed up to this instant (UTC microseconds)
    /// instead of the largest click time.
    pub fn with_watermark(mut self, watermark: Option<i64>) -> Self {
        self.watermark = watermark;
        self
    }

    /// Replace an existing dataset at the destination.
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// DataFusion partitions (default: the number of cores).
    pub fn with_target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Runs the build and commits the dataset.
    pub async fn execute(self) -> Result<BuildSummary> {
        // Checks the destination before any work; removed again on failure.
        let staging = Staging::create(&self.out, self.overwrite)?;
        let impressions = Source::open(Table::Impressions, &self.impressions, self.policy)?;
        let clicks = Source::open(Table::Clicks, &self.clicks, self.policy)?;
        let listings = Source::open(Table::Listings, &self.listings, self.policy)?;

        let started = Instant::now();
        self.reporter.stage(Stage::Reading);
        let listing_batches = read_listings(&listings).await?;
        let listings_read = Instant::now();

        let ctx = session(self.target_partitions);
        let watermark = match self.watermark {
            Some(w) => Watermark::Fixed(w),
            None => Watermark::MaxEventTime,
        };
        let pit = PointInTimeTable::try_new(
            Arc::new(clicks.table_provider()?),
            Arc::new(impressions.table_provider()?),
            spec::listing_clicks(watermark),
        )?;
        let listings_table = MemTable::try_new(Table::Listings.schema(), vec![listing_batches])?;
        let plan = output_plan(&ctx, pit, listings_table).await?;

        let spill = staging.dir().join("_spill");
        let mut buckets = DayBuckets::new(plan.schema(), output_index("impression_ts"), &spill)?;
        let mut stream = execute_stream(plan.clone(), ctx.task_ctx())?;
        let mut rows: u64 = 0;
        let mut positive_labels: u64 = 0;
        let clicked = output_index("clicked");
        while let Some(batch) = stream.try_next().await? {
            rows += batch.num_rows() as u64;
            let labels = batch.column(clicked).as_primitive::<Int8Type>();
            positive_labels += labels.values().iter().map(|&v| v as u64).sum::<u64>();
            self.reporter.rows(rows);
            buckets.push(batch)?;
        }
        let pit_exec = find_point_in_time(&plan).ok_or_else(|| {
            Error::Engine(Box::new(DataFusionError::Internal(
                "no PointInTimeExec in the plan".into(),
            )))
        })?;
        let held_back = pit_exec.held_back() as u64;
        // Every spine partition collects (or waits for) the build side, so
        // it is there once the stream has ended.
        let watermark = pit_exec
            .build_summary()
            .and_then(|s| s.watermark)
            .ok_or(Error::NoWatermark)?;

        let computed = Instant::now();
        self.reporter.stage(Stage::Writing);
        let dir = staging.dir().to_owned();
        let threads = self.target_partitions;
        // The row order of a day; the other columns are functions of the
        // listing and the time, so this fixes the position of every row.
        let sort_columns =
            ["impression_ts", "impression_id", "user_id", "listing_id"].map(output_index);
        let (partitions, write_timings): (Vec<PartitionWritten>, _) =
            tokio::task::spawn_blocking(move || buckets.write(&dir, &sort_columns, threads))
                .await
                .map_err(|e| Error::Engine(Box::new(DataFusionError::External(Box::new(e)))))??;
        std::fs::remove_dir_all(&spill).map_err(|e| Error::io("removing", &spill, e))?;
        let written = Instant::now();

        let rows_read: BTreeMap<Table, u64> = [&impressions, &clicks, &listings]
            .iter()
            .map(|s| (s.table, s.stats().iter().map(|f| f.rows).sum()))
            .collect();
        let inputs = [&impressions, &clicks, &listings]
            .iter()
            .map(|s| (s.table, s.stats()))
            .collect();
        let manifest = Manifest {
            tool: "leakless",
            version: env!("CARGO_PKG_VERSION"),
            settings: Settings {
                impressions: self.impressions.display().to_string(),
                clicks: self.clicks.display().to_string(),
                listings: self.listings.display().to_string(),
                out: self.out.display().to_string(),
                watermark: self.watermark.map(format_rfc3339),
                overwrite: self.overwrite,
            },
            inputs,
            rows_read: rows_read.clone(),
            watermark: format_rfc3339(watermark),
            watermark_source: if self.watermark.is_some() {
                "--watermark"
            } else {
                "largest click_ts"
            },
            immature_held_back: held_back,
            rows_written: rows,
            positive_labels,
            partitions: partitions.clone(),
            columns: ColumnDefinition::all(),
        };
        staging.commit(&manifest.to_json(), self.overwrite)?;
        self.reporter.stage(Stage::Done);
        let build_side = pit_exec.build_summary();
        let timings = Timings {
            read_listings: (listings_read - started).as_secs_f64(),
            compute: (computed - listings_read).as_secs_f64(),
            read_clicks: build_side.map_or(0.0, |b| b.collect_seconds),
            index_build: build_side.map_or(0.0, |b| b.index_seconds),
            probe: pit_exec.probe_seconds(),
            write: (written - computed).as_secs_f64(),
            sort: write_timings.sort_seconds,
            encode: write_timings.encode_seconds,
            commit: written.elapsed().as_secs_f64(),
            total: started.elapsed().as_secs_f64(),
        };
        Ok(BuildSummary {
            out: self.out,
            rows_read,
            rows_written: rows,
            positive_labels,
            immature_held_back: held_back,
            watermark: format_rfc3339(watermark),
            partitions: partitions.len(),
            files: partitions.iter().map(|p| p.files.len()).sum(),
            target_partitions: self.target_partitions,
            timings,
        })
    }
}

/// A session with `target_partitions` partitions that broadcasts the
/// listings side of the join.
fn session(target_partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(target_partitions);
    let options = config.options_mut();
    options.optimizer.hash_join_single_partition_threshold = 1 << 30;
    options.optimizer.hash_join_single_partition_threshold_rows = 1 << 30;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    SessionContext::new_with_state(state)
}

/// Reads the listings and checks that no listing appears twice.
async fn read_listings(listings: &Source) -> Result<Vec<RecordBatch>> {
    let source = listings.clone();
    let per_file = tokio::task::spawn_blocking(move || {
        (0..source.files.len())
            .map(|i| {
                let mut batches = Vec::new();
                source.read_file(i, 8192, &mut |b| {
                    batches.push(b);
                    true
                })?;
                Ok(batches)
            })
            .collect::<Result<Vec<Vec<RecordBatch>>>>()
    })
    .await
    .map_err(|e| Error::Engine(Box::new(DataFusionError::External(Box::new(e)))))??;
    let mut seen = hashbrown::HashSet::new();
    for (file, batches) in listings.files.iter().zip(&per_file) {
        for batch in batches {
            for id in batch.column(0).as_primitive::<Int64Type>().values() {
                if !seen.insert(*id) {
                    return Err(Error::DuplicateListing {
                        path: file.path.clone(),
                        listing_id: *id,
                    });
                }
            }
        }
    }
    Ok(per_file.into_iter().flatten().collect())
}

/// `floor(a / b)` for `b > 0`, which SQL's truncating `/` is not for `a < 0`.
fn floor_div(a: Expr, b: i64) -> Expr {
    let remainder = (a.clone() % lit(b) + lit(b)) % lit(b);
    (a - remainder) / lit(b)
}

/// The physical plan of the output rows, in [`OUTPUT_COLUMNS`] order.
async fn output_plan(
    ctx: &SessionContext,
    pit: PointInTimeTable,
    listings: MemTable,
) -> Result<Arc<dyn ExecutionPlan>> {
    let listings = ctx.read_table(Arc::new(listings))?.select(vec![
        col("listing_id").alias("l_listing_id"),
        col("category"),
        col("price"),
        col("created_ts"),
    ])?;
    let age_micros =
        cast(col("impression_ts"), DataType::Int64) - cast(col("created_ts"), DataType::Int64);
    // Listings on the left, the build side of the hash join: the planner
    // keeps it there (the spine side has no statistics to swap on), so the
    // hash table holds the listings, never the impressions.
    let df = listings
        .join(
            ctx.read_table(Arc::new(pit))?,
            JoinType::Right,
            &["l_listing_id"],
            &["listing_id"],
            None,
        )?
        .select(
            OUTPUT_COLUMNS
                .iter()
                .map(|&name| match name {
                    "listing_age_seconds" => {
                        floor_div(age_micros.clone(), MICROS_PER_SECOND).alias(name)
                    }
                    _ => col(name),
                })
                .collect::<Vec<_>>(),
        )?;
    Ok(df.create_physical_plan().await?)
}

fn find_point_in_time(plan: &Arc<dyn ExecutionPlan>) -> Option<&PointInTimeExec> {
    if let Some(exec) = plan.downcast_ref::<PointInTimeExec>() {
        return Some(exec);
    }
    plan.children().into_iter().find_map(find_point_in_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_defines_every_output_column_in_order() {
        let defined = crate::write::manifest::COLUMN_DEFINITIONS.map(|(name, _)| name);
        assert_eq!(defined, OUTPUT_COLUMNS);
    }

    #[tokio::test]
    async fn the_listings_are_the_broadcast_build_side_at_any_partition_count() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let clicks = write(
            "clicks.csv",
            "listing_id,click_ts\n1,2026-10-01T00:00:00Z\n",
        );
        let impressions = write(
            "impressions.csv",
            "impression_id,user_id,listing_id,impression_ts\n1,1,1,2026-10-01T00:00:00Z\n",
        );
        for partitions in [1, 2, 8] {
            let policy = BadRowPolicy::Fail;
            let pit = PointInTimeTable::try_new(
                Arc::new(
                    Source::open(Table::Clicks, &clicks, policy)
                        .unwrap()
                        .table_provider()
                        .unwrap(),
                ),
                Arc::new(
                    Source::open(Table::Impressions, &impressions, policy)
                        .unwrap()
                        .table_provider()
                        .unwrap(),
                ),
                spec::listing_clicks(Watermark::MaxEventTime),
            )
            .unwrap();
            let listings = MemTable::try_new(Table::Listings.schema(), vec![vec![]]).unwrap();
            let plan = output_plan(&session(partitions), pit, listings)
                .await
                .unwrap();
            let text = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(false)
                .to_string();
            // The listings are the build (first) child of the join.
            let join = text
                .find("HashJoinExec: mode=CollectLeft")
                .unwrap_or_else(|| panic!("{text}"));
            let listings_at = text.find("l_listing_id").unwrap();
            let operator_at = text.find("PointInTimeExec").unwrap();
            assert!(join < listings_at && listings_at < operator_at, "{text}");
            assert!(text.contains("PointInTimeExec"), "{text}");
            assert!(find_point_in_time(&plan).is_some());
        }
    }
}
