//! `leakless build`: a spec -> ingest -> point-in-time operator ->
//! time-partitioned Parquet.
//!
//! The DataFusion plan, bottom up:
//!
//! ```text
//!   indexed source files ──> StreamingTableExec (one partition per file) ─┐ read whole,
//!   ...                                                                    ├─ in file order
//!   spine files ──> StreamingTableExec ──> BucketSortExec(n) ──────────────┴─> PointInTimeExec
//! ```
//!
//! [`BucketSortExec`] hands each of the `n` partitions whole output buckets
//! (days), sorted, in ascending order; the operator adds the spec's derived
//! columns, and each partition's task writes its buckets with a
//! [`PartitionWriter`] as they come. Everything
//! specific to a schema (columns, keys, the output column list, sort keys)
//! comes from the [`Spec`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, execute_stream_partitioned,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{BadRowPolicy, FileStats, Source};
use crate::order::BucketSortExec;
use crate::quality;
use crate::spec::{self, Role, Spec};
use crate::temporal::{PitPlan, PointInTimeExec};
use crate::time::format_rfc3339;
use crate::write::exec::{Progress, WriteExec, WriteOptions};
use crate::write::manifest::{ColumnDefinition, Manifest, Settings};
use crate::write::{Output, PartitionWritten};
use crate::{Reporter, Stage};

/// Folders of the staging that are not data: the spine's spill and the
/// local copies of inputs on object storage.
const SPILL: &str = "_spill";
const INPUTS: &str = "_inputs";
/// Each input file's bad rows under quarantine, before they are merged
/// into the dataset's `_quarantine` folder.
const BAD_ROWS: &str = "_bad_rows";
/// Bad rows of the files an incremental build reads ahead (to learn their
/// times); not the dataset's.
const PREPASS: &str = "_prepass";
const NOT_DATA: &[&str] = &[SPILL, INPUTS, BAD_ROWS, PREPASS, crate::split::STATS];

/// How far after the spine's last time a label source's latest event may
/// be when the watermark is inferred from it.
pub const DEFAULT_WATERMARK_MARGIN: i64 = 7 * crate::time::MICROS_PER_DAY;

/// How often a build that waits for another run's lock tries again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a finished build reports.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub out: PathBuf,
    /// The feature-set version (see `docs/semantics.md`).
    pub feature_set_hash: String,
    /// Rows read per source (bad rows set aside included).
    pub rows_read: BTreeMap<String, u64>,
    /// Where every row read went, per source.
    pub reconciliation: BTreeMap<String, quality::SourceRows>,
    /// Per source with bad rows set aside: its quarantine file and counts.
    pub quarantined: BTreeMap<String, quality::Quarantined>,
    /// Every `[checks]` bound in every partition (failed ones only reach
    /// a summary with [`Build::with_publish_on_failed_checks`]).
    pub checks: Vec<quality::checks::Outcome>,
    pub rows_written: u64,
    /// Spine rows dropped by `[spine] where`.
    pub spine_filtered_out: u64,
    /// Per label, rows where it is neither 0 nor null.
    pub positive_labels: BTreeMap<String, u64>,
    /// Spine rows whose label windows had not closed by the watermark.
    pub immature_held_back: u64,
    /// The watermark of each label (RFC 3339, UTC).
    pub watermarks: BTreeMap<String, String>,
    /// Keys spread over several partitions, summed over key groups (a
    /// build split by key; `crate::split::hot`).
    pub hot_keys: usize,
    /// A build split by key: how each key group's tasks shared the work.
    pub key_groups: Vec<crate::split::GroupLoad>,
    /// Number of partition folders written.
    pub partitions: usize,
    pub files: usize,
    /// Folders of dead runs (staging, moved aside) removed before this one
    /// started.
    pub stale_removed: usize,
    /// DataFusion partitions the plan ran with.
    pub target_partitions: usize,
    /// An incremental build: what it computed again and why, what it
    /// carried over (`None`: not incremental).
    pub increment: Option<crate::incremental::Increment>,
    /// The version committed, for a Delta table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<u64>,
    /// Where the time went.
    pub timings: Timings,
}

/// Seconds per stage. `compute` and `commit` follow each other; the stages
/// within `compute` overlap (the indexed sources are read while the spine
/// is), and the CPU figures (`sort`, `probe`, `encode`) are summed over
/// parallel workers.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Finding the hot keys before a build split by key (wall).
    pub hot_keys: f64,
    /// Running the plan and writing its rows (wall).
    pub compute: f64,
    /// Reading the indexed sources into memory (wall).
    pub read_indexed: f64,
    /// Sorting them into the indexes (wall).
    pub index_build: f64,
    /// Reading the spine and bucketing it by output partition (wall).
    pub spine: f64,
    /// Sorting the spine's buckets (CPU, summed over partitions).
    pub sort: f64,
    /// Probing (CPU, summed over partitions).
    pub probe: f64,
    /// Encoding Parquet (CPU, summed over partitions).
    pub encode: f64,
    /// Profiling the rows written (CPU, summed over partitions).
    pub profile: f64,
    /// Manifest and rename (wall).
    pub commit: f64,
    pub total: f64,
}

/// Which keys a build split by key spreads over several partitions (see
/// `crate::split::hot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotKeys {
    /// None: each key's rows go to one partition.
    Off,
    /// Keys with more than half a partition's fair share of the spine.
    Auto,
    /// Every key in the sample, over every partition: most work, for
    /// tests of the salting.
    Every,
}

/// A `leakless build` run, configured with builder methods.
///
/// ```no_run
/// # async fn run() -> leakless::Result<()> {
/// let summary = leakless::Build::from_spec_file("leakless.toml", "dataset")?
///     .with_overwrite(true)
///     .execute()
///     .await?;
/// println!("{} rows", summary.rows_written);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Build {
    spec: Spec,
    spec_file: Option<PathBuf>,
    out: PathBuf,
    watermark: Option<i64>,
    overwrite: bool,
    wait: bool,
    watermark_margin: i64,
    target_partitions: usize,
    spill_bytes: usize,
    split_by_key: bool,
    shards: Option<usize>,
    hot_keys: HotKeys,
    policy: BadRowPolicy,
    max_bad_rows: Option<f64>,
    profile: bool,
    publish_on_failed_checks: bool,
    incremental: bool,
    reporter: Arc<dyn Reporter>,
}

impl Build {
    /// The shorthand: the built-in marketplace spec over three inputs.
    pub fn new(
        impressions: impl Into<PathBuf>,
        clicks: impl Into<PathBuf>,
        listings: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        let spec = spec::marketplace(impressions.into(), clicks.into(), listings.into());
        Build::from_spec(spec, out)
    }

    /// A build of a validated spec.
    pub fn from_spec(spec: Spec, out: impl Into<PathBuf>) -> Self {
        Build {
            spec,
            spec_file: None,
            out: out.into(),
            watermark: None,
            overwrite: false,
            wait: false,
            watermark_margin: DEFAULT_WATERMARK_MARGIN,
            target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spill_bytes: crate::order::SPILL_BYTES,
            split_by_key: false,
            shards: None,
            hot_keys: HotKeys::Auto,
            policy: BadRowPolicy::default(),
            max_bad_rows: None,
            profile: true,
            publish_on_failed_checks: false,
            incremental: false,
            reporter: Arc::new(()),
        }
    }

    /// Reads and validates the spec file at `path`.
    pub fn from_spec_file(path: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Result<Self> {
        Build::from_spec_file_with(path, out, &[], &[])
    }

    /// Like [`Build::from_spec_file`], with some sources' paths replaced and
    /// files matching `ignore` left out of folder inputs (see
    /// [`Build::with_ignore`]).
    pub fn from_spec_file_with(
        path: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        overrides: &[(String, PathBuf)],
        ignore: &[String],
    ) -> Result<Self> {
        let path = path.into();
        let spec = spec::load_ignoring(&path, overrides, ignore)?;
        let mut build = Build::from_spec(spec, out);
        build.spec_file = Some(path);
        Ok(build)
    }

    /// Label windows count as closed up to this instant (UTC microseconds)
    /// instead of the spec's watermark or each label source's last event.
    pub fn with_watermark(mut self, watermark: Option<i64>) -> Self {
        self.watermark = watermark;
        self
    }

    /// How far after the spine's last time a label source's latest event
    /// may be when the watermark is inferred from it (default 7 days; µs).
    pub fn with_watermark_margin(mut self, micros: i64) -> Self {
        self.watermark_margin = micros;
        self
    }

    /// Replace an existing dataset at the destination.
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Leaves input files matching any of `globs` out of folder inputs,
    /// instead of failing on files of unknown type.
    pub fn with_ignore(mut self, globs: &[String]) -> Self {
        self.spec.ignore_files(globs);
        self
    }

    /// When another run holds the destination's lock, wait for it instead
    /// of failing with [`crate::Error::Locked`]: the build tries again
    /// every 100 ms (a tokio timer: its runtime needs time enabled).
    pub fn with_wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// DataFusion partitions (default: the number of cores).
    pub fn with_target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Spill the spine's rows to disk once more than `bytes` of them are
    /// held (default [`crate::order::SPILL_BYTES`]); the output is the same.
    pub fn with_spill_bytes(mut self, bytes: usize) -> Self {
        self.spill_bytes = bytes;
        self
    }

    /// What to do with a row that cannot be read (default
    /// [`BadRowPolicy::Fail`]).
    pub fn with_bad_rows(mut self, policy: BadRowPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Under quarantine, the largest fraction of each source's rows that
    /// may be bad, over the spec's `max_bad_rows` of every source (`None`:
    /// the spec's, else [`crate::quality::DEFAULT_MAX_BAD_ROWS`]).
    pub fn with_max_bad_rows(mut self, fraction: Option<f64>) -> Self {
        self.max_bad_rows = fraction;
        self
    }

    /// Publish the dataset even when a `[checks]` bound fails (the
    /// summary's `checks` say which); by default a failed check is an
    /// [`Error::Quality`] and nothing is published.
    pub fn with_publish_on_failed_checks(mut self, publish: bool) -> Self {
        self.publish_on_failed_checks = publish;
        self
    }

    /// Write `_profile.json` (default `true`; see
    /// [`crate::quality::profile`]); `false` only to measure its cost.
    pub fn with_profile(mut self, profile: bool) -> Self {
        self.profile = profile;
        self
    }

    /// Adds to the dataset at the destination instead of building it
    /// whole: only the partitions whose inputs changed, that are new, or
    /// whose labels matured since are computed, the others carried over
    /// (`crate::incremental`); the same bytes as a full build. Without a
    /// dataset there, a full build.
    pub fn with_incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental;
        self
    }

    /// Writes `format` whatever the spec's `[output] format` says.
    pub fn with_format(mut self, format: crate::spec::OutputFormat) -> Self {
        self.spec.format = format;
        self
    }

    /// What an incremental build would compute again and why, without
    /// building (reads the files whose size or modification time changed).
    pub async fn dry_run(&self) -> Result<crate::incremental::Increment> {
        let plan = Arc::new(PitPlan::new(self.spec.clone(), self.watermark));
        let scratch = crate::storage::Scratch::new("dry-run")?;
        let sources = self.open_sources(&plan, scratch.dir())?;
        self.increment(&plan, &sources, scratch.dir()).await
    }

    /// [`crate::incremental::plan`] against the dataset at the destination,
    /// reading changed files into `dir`.
    async fn increment(
        &self,
        plan: &Arc<PitPlan>,
        sources: &[Source],
        dir: &Path,
    ) -> Result<crate::incremental::Increment> {
        if crate::storage::Remote::parse(&self.out)?.is_some() {
            return Err(Error::Invalid(
                "an incremental build adds to a local dataset (object storage: build in full)"
                    .into(),
            ));
        }
        let previous =
            crate::incremental::Previous::read(&crate::write::delta::meta_dir(&self.out)?)?;
        let (plan, sources, dir) = (plan.clone(), sources.to_vec(), dir.join(PREPASS));
        let (policy, profile) = (self.policy, self.profile || !self.spec.checks.is_empty());
        tokio::task::spawn_blocking(move || {
            let prepass = |source: &Source, files: &[usize]| -> Result<Vec<FileStats>> {
                let subset = source.subset(files).with_quarantine(dir.clone());
                for i in 0..subset.files.len() {
                    subset.read_file(i, crate::order::BATCH_ROWS, &mut |_| true)?;
                }
                Ok(subset.stats())
            };
            crate::incremental::plan(&plan, &sources, previous, policy, profile, &prepass)
        })
        .await
        .map_err(|e| Error::Engine(Box::new(DataFusionError::External(Box::new(e)))))?
    }

    /// Runs the plan split by key (`crate::split`), as a cluster does,
    /// even on this machine; the output is the same.
    pub fn with_split_by_key(mut self, split: bool) -> Self {
        self.split_by_key = split;
        self
    }

    /// Builds in bounded memory on this machine: the plan split by key
    /// (`crate::split`), each key group cut into `shards` shards of its
    /// keys, of which only as many as there are partitions are indexed at
    /// once, the rows between groups going through files in the staging
    /// folder. Peak memory falls about as `partitions / shards` of the
    /// indexes; the output is the same. `None` (the default): the whole
    /// plan in memory.
    pub fn with_shards(mut self, shards: Option<usize>) -> Self {
        self.shards = shards.map(|n| n.max(1));
        self
    }

    /// Which keys a build split by key spreads over several partitions
    /// (default [`HotKeys::Auto`]); the output is the same.
    pub fn with_hot_keys(mut self, hot: HotKeys) -> Self {
        self.hot_keys = hot;
        self
    }

    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Runs the build on this machine and commits the dataset.
    pub async fn execute(self) -> Result<BuildSummary> {
        self.execute_on(&Embedded).await
    }

    /// Runs the build's plan on `engine` (this process, or a cluster) and
    /// commits the dataset. Every output partition writes its files into
    /// the staging folder, which `engine`'s workers must see, and reports
    /// what it wrote; the manifest is made of the reports alone.
    pub async fn execute_on(self, engine: &dyn Engine) -> Result<BuildSummary> {
        // Locks (locally) and checks the destination before any work; the
        // staging folder is removed again on failure (see `write::commit`
        // and, on object storage, `write::remote`).
        let split = self.split_by_key || self.shards.is_some() || engine.split_by_key();
        if self.shards.is_some() && engine.separate_partitions() {
            return Err(Error::Invalid(
                "shards bound a build's memory on this machine; a cluster splits by key itself"
                    .into(),
            ));
        }
        if self.incremental && (split || engine.separate_partitions()) {
            return Err(Error::Invalid(
                "an incremental build runs on this machine, not split by key or on a cluster"
                    .into(),
            ));
        }
        // Waiting for another run's lock polls (an await, where a caller
        // that drops the build stops it) instead of blocking a thread.
        let destination = loop {
            let overwrite = self.overwrite || self.incremental;
            match Output::acquire(&self.out, self.spec.format, overwrite, false) {
                Err(Error::Locked { .. }) if self.wait => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                acquired => break acquired?,
            }
        };
        let staging = destination.stage()?;
        crate::write::commit::crash_point("after-staging");
        let started = Instant::now();
        self.reporter.stage(Stage::Reading);
        let plan = Arc::new(PitPlan::new(self.spec.clone(), self.watermark));
        // Files on object storage are copied into the staging first.
        let mut sources = self.open_sources(&plan, staging.dir())?;
        // An incremental build decides under the lock what it computes,
        // and reads only the spine files it needs.
        let increment = match self.incremental {
            true => Some(self.increment(&plan, &sources, staging.dir()).await?),
            false => None,
        };
        let spine_files = increment.as_ref().and_then(|i| i.spine_files.clone());
        if let Some(files) = &spine_files {
            let spine = (sources.iter_mut())
                .find(|s| s.name() == self.spec.spine.source)
                .expect("the spine is read");
            *spine = spine.subset(files);
        }
        let keep = increment.as_ref().and_then(|i| i.buckets());

        let stats = crate::split::stats_dir(staging.dir());
        if split {
            std::fs::create_dir_all(&stats).map_err(|e| Error::io("creating", &stats, e))?;
        }
        let hot_started = Instant::now();
        let hot = match split {
            true => self.hot_keys(&plan, &sources, engine).await?,
            false => Vec::new(),
        };
        let hot_seconds = hot_started.elapsed().as_secs_f64();
        let write = self
            .write_plan(
                &plan,
                &sources,
                staging.dir(),
                engine.separate_partitions(),
                split.then_some(hot.as_slice()),
                keep,
            )?
            .with_file_tag(destination.file_tag())
            .with_progress(Progress::new(self.reporter.clone()));
        let labels = self.label_columns();
        let columns = self.spec.output_columns();
        let partitions = write.input_partitions();
        let batches = engine.run(Arc::new(write)).await?;
        let reports = WriteExec::reports(&batches)?;
        // Exactly one report per output partition: none lost, none twice.
        let numbers: Vec<usize> = reports.iter().map(|r| r.partition).collect();
        if !numbers.iter().copied().eq(0..partitions) {
            return Err(Error::Engine(Box::new(DataFusionError::Internal(format!(
                "the engine reported output partitions {numbers:?}, not each of 0..{partitions} once"
            )))));
        }
        let first = &reports[0];
        let mut rows: u64 = 0;
        let mut positive = vec![0u64; labels.len()];
        let mut partitions: Vec<PartitionWritten> = Vec::new();
        let (mut encode_seconds, mut sort_seconds, mut probe_seconds) = (0.0, 0.0, 0.0);
        let (mut held_back, mut filtered_out) = (0u64, 0u64);
        let mut profile_seconds = 0.0;
        let mut profiles = Vec::new();
        let mut held_back_buckets: Vec<(i64, u64)> = Vec::new();
        for report in &reports {
            profiles.extend(report.profiles.iter().cloned());
            profile_seconds += report.profile_seconds;
            held_back_buckets.extend(&report.held_back_buckets);
            rows += report.rows;
            for (total, p) in positive.iter_mut().zip(&report.positive) {
                *total += p;
            }
            partitions.extend(report.written.iter().cloned());
            encode_seconds += report.encode_seconds;
            sort_seconds += report.sort_seconds;
            probe_seconds += report.probe_seconds;
            held_back += report.held_back;
            filtered_out += report.filtered;
        }
        partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
        // Files the reports do not name (a cluster task's attempt that
        // died mid-file) are not part of the dataset.
        crate::write::prune_unlisted(staging.dir(), &partitions, NOT_DATA)?;
        let positive_labels: BTreeMap<String, u64> = labels
            .iter()
            .zip(positive)
            .map(|(&i, n)| (columns[i].name.clone(), n))
            .collect();
        let mut key_groups = Vec::new();
        let (inputs, indexed, spine_max_time) = if split {
            let loads = crate::split::TaskLoad::read_all(&stats).map_err(Error::from)?;
            held_back_buckets = loads.iter().flat_map(|l| l.held_back.clone()).collect();
            key_groups = crate::split::GroupLoad::of(&plan, &loads, self.group_partitions());
            let scans = crate::split::ScanStats::read_all(&stats).map_err(Error::from)?;
            let spine = &self.spec.spine.source;
            let spine_rows: u64 = (scans.iter())
                .filter(|s| s.source == *spine)
                .map(|s| s.stats.rows)
                .sum();
            filtered_out = (scans.iter())
                .filter(|s| s.source == *spine)
                .map(|s| s.filtered)
                .sum();
            // A spine row that passes `where` is written unless immature.
            held_back = spine_rows
                .checked_sub(filtered_out + rows)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "a split build wrote {rows} rows of a spine of {spine_rows}, {filtered_out} filtered out"
                    ))
                })?;
            let (inputs, indexed) = split_summary(&plan, &scans);
            let spine_max = crate::split::ScanStats::latest(&scans, spine).map(|l| l.time);
            (inputs, Some(indexed), spine_max)
        } else {
            (
                first.inputs.clone(),
                first.indexed.clone(),
                first.spine_max_time,
            )
        };
        let mut inputs: BTreeMap<String, Vec<FileStats>> = inputs.into_iter().collect();
        let mut spine_max_time = spine_max_time;
        // Each folder's held-back rows, folders all held back included.
        for &(bucket, n) in &held_back_buckets {
            let folder = crate::write::folder_name(self.spec.partition, bucket);
            match partitions.iter_mut().find(|p| p.partition == folder) {
                Some(p) => p.held_back += n,
                None => partitions.push(PartitionWritten {
                    held_back: n,
                    ..PartitionWritten::empty(folder)
                }),
            }
        }
        if let Some(increment) = &increment
            && let Some(previous) = &increment.previous
        {
            // What was read is what the plan was made on: a file that
            // changed in between could reach partitions carried over.
            for (source, files) in &inputs {
                let planned = increment.planned.get(source).into_iter().flatten();
                let planned: BTreeMap<&str, &FileStats> =
                    planned.map(|f| (f.path.as_str(), f)).collect();
                for file in files {
                    let same = planned.get(file.path.as_str()).is_some_and(|p| {
                        (&p.sha256, p.rows, p.quarantined)
                            == (&file.sha256, file.rows, file.quarantined)
                    });
                    if !same {
                        return Err(Error::Invalid(format!(
                            "`{}` changed while this incremental build read it: nothing was published; run it again",
                            file.path
                        )));
                    }
                }
            }
            let carried = |p: &str| increment.carried.iter().any(|c| c == p);
            for p in previous.partitions.iter().filter(|p| carried(&p.partition)) {
                if destination.links_carried() {
                    crate::write::link_partition(&self.out, staging.dir(), p)?;
                }
                partitions.push(p.clone());
            }
            if let Some(profile) = &previous.profile {
                let kept = profile.partitions.iter().filter(|p| carried(&p.partition));
                profiles.extend(kept.cloned());
            }
            let spine = &self.spec.spine.source;
            if let Some(read) = &spine_files {
                let fresh = inputs.remove(spine).unwrap_or_default();
                let mut all = vec![None; read.len() + increment.spine_carried.len()];
                for (&i, stats) in read.iter().zip(fresh) {
                    all[i] = Some(stats);
                }
                for (i, stats) in &increment.spine_carried {
                    all[*i] = Some(stats.clone());
                }
                let all: Option<Vec<FileStats>> = all.into_iter().collect();
                let all = all.ok_or_else(|| {
                    Error::Invalid("an incremental build lost a spine file's statistics".into())
                })?;
                inputs.insert(spine.clone(), all);
            }
            spine_max_time = (inputs.get(spine).into_iter().flatten())
                .filter_map(|f| f.time_range().map(|r| r.1))
                .max();
            let now: BTreeMap<String, Option<i64>> =
                indexed.iter().flat_map(|s| s.watermarks.clone()).collect();
            if now != increment.watermarks {
                return Err(Error::Invalid(format!(
                    "an incremental build planned with watermarks {:?} but the labels have {now:?}",
                    increment.watermarks
                )));
            }
        }
        partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
        if let Some(indexed) = &indexed {
            crate::incremental::mark_completeness(&mut partitions, &plan, &indexed.watermarks);
        }
        // The totals are the partitions' sums (an incremental build's
        // include the partitions carried over).
        let written_rows: u64 = partitions.iter().map(|p| p.rows).sum();
        let written_held_back: u64 = partitions.iter().map(|p| p.held_back).sum();
        let mut positive_labels = positive_labels;
        match &increment {
            Some(i) if i.full.is_none() => {
                (rows, held_back) = (written_rows, written_held_back);
                for (label, n) in positive_labels.iter_mut() {
                    *n = (partitions.iter())
                        .map(|p| p.positive_labels.get(label).copied().unwrap_or(0))
                        .sum();
                }
            }
            _ if (written_rows, written_held_back) != (rows, held_back) => {
                return Err(Error::Invalid(format!(
                    "the partitions hold {written_rows} rows and {written_held_back} held back, the build counted {rows} and {held_back}"
                )));
            }
            _ => {}
        }
        let written = Instant::now();
        crate::write::commit::crash_point("after-data");
        let quarantined = quality::collect(&staging.dir().join(BAD_ROWS), staging.dir(), &inputs)?;
        let spine_rows = quality::SpineRows {
            filtered_by_where: filtered_out,
            held_back_immature: held_back,
            written: rows,
        };
        let reconciliation =
            quality::reconcile(&inputs, (&self.spec.spine.source, spine_rows), &plan.inputs)?;
        quality::check_bad_rows(&reconciliation, &quarantined, |source| {
            (self.max_bad_rows)
                .or_else(|| self.spec.source(source).and_then(|d| d.max_bad_rows))
                .unwrap_or(quality::DEFAULT_MAX_BAD_ROWS)
        })?;
        if self.watermark.is_none() && self.spec.watermark.is_none() {
            self.check_inferred_watermarks(&sources, indexed.as_ref(), spine_max_time)?;
        }
        let profile = match self.profile || !self.spec.checks.is_empty() {
            true => {
                let folder = |bucket| crate::write::folder_name(self.spec.partition, bucket);
                let profile = quality::profile::DatasetProfile::assemble(
                    self.spec.feature_set_hash(),
                    profiles,
                    held_back_buckets.iter().map(|&(b, n)| (folder(b), n)),
                )?;
                if profile.held_back() != held_back {
                    return Err(Error::Invalid(format!(
                        "the profile holds back {} rows, the build {held_back}",
                        profile.held_back()
                    )));
                }
                profile.write(staging.dir())?;
                Some(profile)
            }
            false => None,
        };
        let checks = match &profile {
            Some(profile) => quality::checks::evaluate(&self.spec.checks, profile),
            None => Vec::new(),
        };
        let failed: Vec<&quality::checks::Outcome> = checks.iter().filter(|c| !c.passed).collect();
        if !failed.is_empty() && !self.publish_on_failed_checks {
            return Err(Error::Quality(Box::new(quality::checks::failure(&failed))));
        }

        let rows_read: BTreeMap<String, u64> = (reconciliation.iter())
            .map(|(name, rows)| (name.clone(), rows.read))
            .collect();
        let watermarks: BTreeMap<String, String> = indexed
            .as_ref()
            .map(|s| {
                s.watermarks
                    .iter()
                    .filter_map(|(label, w)| Some((label.clone(), format_rfc3339((*w)?))))
                    .collect()
            })
            .unwrap_or_default();
        let manifest = Manifest {
            tool: crate::write::manifest::TOOL,
            version: env!("CARGO_PKG_VERSION"),
            data: destination.data(),
            feature_set_hash: self.spec.feature_set_hash(),
            settings: Settings {
                spec_file: self.spec_file.as_ref().map(|p| p.display().to_string()),
                sources: self
                    .spec
                    .sources
                    .iter()
                    .map(|s| (s.name.clone(), s.path.display().to_string()))
                    .collect(),
                out: self.out.display().to_string(),
                watermark: self.watermark.map(format_rfc3339),
                overwrite: self.overwrite,
                bad_rows: self.policy,
                max_bad_rows: self.max_bad_rows,
                publish_on_failed_checks: self.publish_on_failed_checks,
                incremental: self.incremental,
                format: self.spec.format,
            },
            inputs: inputs.into_iter().collect(),
            rows_read: rows_read.clone(),
            reconciliation: reconciliation.clone(),
            quarantine: quarantined.clone(),
            checks: checks.clone(),
            spine_filtered_out: filtered_out,
            watermarks: watermarks.clone(),
            watermark_source: match (self.watermark, self.spec.watermark) {
                (Some(_), _) => "--watermark",
                (None, Some(_)) => "the spec's watermark",
                (None, None) => "the largest event time of each label's source",
            },
            immature_held_back: held_back,
            rows_written: rows,
            positive_labels: positive_labels.clone(),
            partitions: partitions.clone(),
            columns: self
                .spec
                .definitions()
                .into_iter()
                .map(|(name, definition)| ColumnDefinition { name, definition })
                .collect(),
            spec: self.spec.normalized(),
        };
        let delta_version = destination.publish(
            staging,
            NOT_DATA,
            &manifest,
            self.overwrite || self.incremental,
            &crate::temporal::output_schema(&plan),
            self.spec.partition,
        )?;
        self.reporter.stage(Stage::Done);
        let timings = Timings {
            hot_keys: hot_seconds,
            compute: (written - started).as_secs_f64(),
            read_indexed: indexed.as_ref().map_or(0.0, |s| s.collect_seconds),
            index_build: indexed.as_ref().map_or(0.0, |s| s.index_seconds),
            spine: first.spine_seconds,
            sort: sort_seconds,
            probe: probe_seconds,
            encode: encode_seconds,
            profile: profile_seconds,
            commit: written.elapsed().as_secs_f64(),
            total: started.elapsed().as_secs_f64(),
        };
        Ok(BuildSummary {
            out: self.out,
            feature_set_hash: manifest.feature_set_hash,
            rows_read,
            reconciliation,
            quarantined,
            checks,
            rows_written: rows,
            spine_filtered_out: manifest.spine_filtered_out,
            positive_labels,
            immature_held_back: manifest.immature_held_back,
            watermarks,
            hot_keys: hot.iter().map(Vec::len).sum(),
            key_groups,
            partitions: partitions.iter().filter(|p| !p.files.is_empty()).count(),
            files: partitions.iter().map(|p| p.files.len()).sum(),
            stale_removed: destination.stale_removed(),
            target_partitions: self.target_partitions,
            timings,
            increment,
            delta_version,
        })
    }

    /// The plans a build runs, writing into `dir` (its sources on object
    /// storage copied into `dir/_inputs` first): for tests and tools that
    /// run or ship a build's plans themselves. Split by key, the first
    /// finds the hot keys (run here, in this process, to choose them);
    /// the second writes. `separate_partitions`: see
    /// [`Engine::separate_partitions`].
    pub async fn plans_into(
        &self,
        dir: &Path,
        separate_partitions: bool,
    ) -> Result<(Option<Arc<dyn ExecutionPlan>>, Arc<dyn ExecutionPlan>)> {
        let plan = Arc::new(PitPlan::new(self.spec.clone(), self.watermark));
        let sources = self.open_sources(&plan, dir)?;
        let mut hot = None;
        if self.split_by_key || self.shards.is_some() {
            let stats = crate::split::stats_dir(dir);
            std::fs::create_dir_all(&stats).map_err(|e| Error::io("creating", &stats, e))?;
            hot = Some((
                crate::split::hot_keys_plan(
                    &plan,
                    &sources,
                    self.group_partitions(),
                    separate_partitions,
                )?,
                self.hot_keys(&plan, &sources, &Embedded).await?,
            ));
        }
        let write = self.write_plan(
            &plan,
            &sources,
            dir,
            separate_partitions,
            hot.as_ref().map(|(_, keys)| keys.as_slice()),
            None,
        )?;
        Ok((hot.map(|(plan, _)| plan), Arc::new(write)))
    }

    /// How a build split by key moves rows between its key groups.
    fn shuffle(&self) -> crate::split::Shuffle {
        match self.shards {
            Some(shards) => crate::split::Shuffle::Spilled { shards },
            None => crate::split::Shuffle::InMemory,
        }
    }

    /// The partitions of each key group of a build split by key.
    fn group_partitions(&self) -> usize {
        self.shuffle().group_partitions(self.target_partitions)
    }

    /// The hot keys of each key group of a build split by key, found by a
    /// first plan on `engine` (see `crate::split::hot`).
    async fn hot_keys(
        &self,
        plan: &PitPlan,
        sources: &[Source],
        engine: &dyn Engine,
    ) -> Result<Vec<Vec<crate::split::hot::HotKey>>> {
        let groups = crate::split::key_groups(plan).len();
        let n = self.group_partitions();
        let mode = engine.hot_keys().unwrap_or(self.hot_keys);
        if mode == HotKeys::Off || n < 2 {
            return Ok(vec![Vec::new(); groups]);
        }
        let hot = crate::split::hot_keys_plan(plan, sources, n, engine.separate_partitions())?;
        let summaries = engine.run(hot).await?;
        Ok(crate::split::hot::choose(
            &summaries,
            groups,
            n,
            mode == HotKeys::Every,
        )?)
    }

    /// Output positions of the labels: derived columns follow the time.
    fn label_columns(&self) -> Vec<usize> {
        let time_column = self.spec.spine.columns.len();
        (self.spec.derived.iter().enumerate())
            .filter(|(_, d)| d.role == Role::Label)
            .map(|(i, _)| time_column + 1 + i)
            .collect()
    }

    /// The writer over the operator, writing into `dir`.
    fn write_plan(
        &self,
        plan: &Arc<PitPlan>,
        sources: &[Source],
        dir: &Path,
        separate_partitions: bool,
        split: Option<&[Vec<crate::split::hot::HotKey>]>,
        keep: Option<std::collections::BTreeSet<i64>>,
    ) -> Result<WriteExec> {
        let pit = match split {
            Some(hot) => crate::split::plan(
                plan,
                sources,
                self.target_partitions,
                self.shuffle(),
                (&dir.join(SPILL), self.spill_bytes),
                &crate::split::stats_dir(dir),
                separate_partitions,
                hot,
            )?,
            None => {
                self.physical_plan(plan, sources, &dir.join(SPILL), separate_partitions, keep)?
            }
        };
        let time_column = self.spec.spine.columns.len();
        // The time and the first spine column, when it is an integer, are
        // the sorted leading columns: delta-encoded.
        let schema = pit.schema();
        let delta_columns: Vec<String> = std::iter::once(time_column)
            .chain((time_column > 0).then_some(0))
            .filter(|&i| {
                matches!(
                    schema.field(i).data_type(),
                    DataType::Int64 | DataType::Timestamp(_, _)
                )
            })
            .map(|i| schema.field(i).name().clone())
            .collect();
        let options = WriteOptions {
            dir: dir.to_owned(),
            time_column,
            partitioning: self.spec.partition,
            delta_columns,
            labels: self.label_columns(),
            errors_as_text: separate_partitions,
            profile: self.profile || !self.spec.checks.is_empty(),
            file_tag: None,
        };
        Ok(WriteExec::new(pit, options)?)
    }

    /// Refuses a watermark inferred from a label source whose latest event
    /// is more than the margin after the spine's last time: one clock-skewed
    /// event would make every row count as mature.
    fn check_inferred_watermarks(
        &self,
        sources: &[Source],
        indexed: Option<&crate::temporal::IndexedSummary>,
        spine_last: Option<i64>,
    ) -> Result<()> {
        let (Some(indexed), Some(spine_last)) = (indexed, spine_last) else {
            return Ok(());
        };
        for label in self.spec.labels() {
            let latest = indexed
                .latest
                .iter()
                .find(|(name, _)| *name == label.source);
            let Some((_, Some(latest))) = latest else {
                continue;
            };
            if latest.time.saturating_sub(spine_last) <= self.watermark_margin {
                continue;
            }
            let source = (sources.iter())
                .find(|s| s.name() == label.source)
                .expect("every label source is read");
            return Err(Error::EventAfterSpine(Box::new(
                crate::error::EventAfterSpine {
                    label: label.name.clone(),
                    source_name: label.source.clone(),
                    path: source.files[latest.partition].name.clone(),
                    location: source.locate(latest.partition, latest.row as u64)?,
                    time: format_rfc3339(latest.time),
                    spine_last: format_rfc3339(spine_last),
                    margin: crate::spec::format_duration(self.watermark_margin),
                },
            )));
        }
        Ok(())
    }

    /// The sources the plan reads: the indexed ones in plan order, then the
    /// spine (the spine source may also be indexed).
    /// The sources read, writing into the staging folder `dir`: copies of
    /// files on object storage, and bad rows under quarantine.
    fn open_sources(&self, plan: &PitPlan, dir: &Path) -> Result<Vec<Source>> {
        let mut names: Vec<&str> = plan.inputs.iter().map(String::as_str).collect();
        if !names.contains(&self.spec.spine.source.as_str()) {
            names.push(&self.spec.spine.source);
        }
        names
            .into_iter()
            .map(|name| {
                let def = self.spec.source(name).expect("resolved source");
                let mut source = Source::open(def, self.policy)?
                    .with_quarantine(dir.join(BAD_ROWS))
                    .with_uses(plan.use_rules(name));
                source.fetch(&dir.join(INPUTS))?;
                Ok(source)
            })
            .collect()
    }

    /// The operator over one scan per indexed source and the spine's scan,
    /// spread over the target partitions.
    fn physical_plan(
        &self,
        plan: &Arc<PitPlan>,
        sources: &[Source],
        spill: &Path,
        fixed_buckets: bool,
        keep: Option<std::collections::BTreeSet<i64>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = |name: &str| -> Result<Arc<dyn ExecutionPlan>> {
            sources
                .iter()
                .find(|s| s.name() == name)
                .expect("opened source")
                .exec()
        };
        let inputs = plan
            .inputs
            .iter()
            .map(|name| scan(name))
            .collect::<Result<Vec<_>>>()?;
        // Bucketed by output partition and sorted: each of the
        // `target_partitions` streams takes whole buckets in time order.
        let mut sort_columns = vec![plan.spine_time];
        sort_columns.extend(&plan.spine_columns);
        let spine = Arc::new(
            BucketSortExec::new(
                scan(&self.spec.spine.source)?,
                sort_columns,
                self.spec.partition,
                self.target_partitions,
                spill.to_owned(),
            )
            .with_spill_bytes(self.spill_bytes)
            .with_fixed_buckets(fixed_buckets)
            .with_buckets(keep),
        );
        Ok(Arc::new(PointInTimeExec::try_new(
            inputs,
            spine,
            plan.clone(),
        )?))
    }
}

/// Where a build's plan runs: this process ([`Embedded`]) or a cluster.
pub trait Engine: Send + Sync {
    /// Whether output partitions run apart (each in a task of its own, in
    /// any process): each then takes a fixed share of the output buckets.
    fn separate_partitions(&self) -> bool {
        false
    }

    /// Whether the plan is split by key (`crate::split`): no task holds an
    /// index of every key.
    fn split_by_key(&self) -> bool {
        false
    }

    /// Which keys a build split by key spreads over several partitions,
    /// when the engine chooses (`None`: the build's choice).
    fn hot_keys(&self) -> Option<HotKeys> {
        None
    }

    /// Runs every output partition of `plan` and returns every batch they
    /// emit (one report row per partition).
    fn run(&self, plan: Arc<dyn ExecutionPlan>) -> BoxFuture<'_, Result<Vec<RecordBatch>>>;
}

/// Runs a plan in this process, one task per output partition.
pub struct Embedded;

impl Engine for Embedded {
    fn run(&self, plan: Arc<dyn ExecutionPlan>) -> BoxFuture<'_, Result<Vec<RecordBatch>>> {
        Box::pin(async move {
            let partitions = plan.output_partitioning().partition_count();
            // Scans emit batches of `BATCH_ROWS` rows, not DataFusion's
            // 8,192: a shuffle over N shards cuts each batch into N pieces,
            // each an Arrow IPC message of its own (rich2 over 32 shards
            // ran 9 % faster; the build in one piece the same).
            let config = SessionConfig::new()
                .with_target_partitions(partitions)
                .with_batch_size(crate::order::BATCH_ROWS);
            let ctx = SessionContext::new_with_config(config);
            let streams = execute_stream_partitioned(plan, ctx.task_ctx())?;
            let tasks = streams.into_iter().map(|stream| {
                SpawnedTask::spawn(async move { stream.try_collect::<Vec<_>>().await })
            });
            // The first failure ends the build at once (the other tasks are
            // dropped, which aborts them).
            let finished = futures::future::try_join_all(tasks.map(|task| async move {
                task.join()
                    .await
                    .map_err(|e| Error::Engine(Box::new(DataFusionError::External(Box::new(e)))))?
                    .map_err(Error::from)
            }))
            .await?;
            Ok(finished.into_iter().flatten().collect())
        })
    }
}

/// What the scans of a build split by key saw: each source's files, and
/// the indexed side's summary (rows per input, label watermarks, latest
/// events) as the embedded operator reports it.
fn split_summary(
    plan: &PitPlan,
    scans: &[crate::split::ScanStats],
) -> (
    Vec<(String, Vec<FileStats>)>,
    crate::temporal::IndexedSummary,
) {
    let mut inputs: Vec<(String, Vec<FileStats>)> = Vec::new();
    for scan in scans {
        match inputs.iter_mut().find(|(name, _)| *name == scan.source) {
            Some((_, files)) => files.push(scan.stats.clone()),
            None => inputs.push((scan.source.clone(), vec![scan.stats.clone()])),
        }
    }
    let rows = |name: &str| -> usize {
        (scans.iter())
            .filter(|s| s.source == name)
            .map(|s| s.stats.rows as usize)
            .sum()
    };
    let latest = |name: &str| crate::split::ScanStats::latest(scans, name);
    let indexed = crate::temporal::IndexedSummary {
        rows: (plan.inputs.iter())
            .map(|name| (name.clone(), rows(name)))
            .collect(),
        events: Vec::new(),
        watermarks: plan.label_watermarks(|input| latest(&plan.inputs[input]).map(|l| l.time)),
        latest: (plan.inputs.iter())
            .map(|name| {
                let events = (plan.spec.source(name))
                    .is_some_and(|s| matches!(s.kind, crate::spec::SourceKind::Events { .. }));
                (name.clone(), latest(name).filter(|_| events))
            })
            .collect(),
        collect_seconds: 0.0,
        index_seconds: 0.0,
    };
    (inputs, indexed)
}
