//! The split by key: a build's plan for a cluster, where no task holds an
//! index of every key (`docs/cluster.md` has the picture).
//!
//! The derived columns fall into **key groups**: indexes whose key reads
//! the same spine columns. The spine's rows go through the groups one
//! after the other (a chain), each time hash-partitioned on that group's
//! spine key, with the columns computed so far:
//!
//! ```text
//!  spine files ─ RouteExec (where, counted) ─ hash(key of group 0) ─┐
//!  events of group 0 ─ RouteExec (row ids) ─ hash(their key) ───────┴─> group 0: PointInTimeExec
//!       over its own keys only, spine sorted by time ─ hash(key of group 1) ─> group 1 ... ─>
//!  last group ─ RouteExec (bucket) ─ hash(bucket) ─> BucketSortExec ─> columns in output order ─> WriteExec
//! ```
//!
//! Each shuffle is a `RepartitionExec` (Ballista cuts a stage there), or
//! on this machine in bounded memory a [`SpillShuffleExec`] over N shards
//! ([`Shuffle`]; the writer's sort then reads the last group itself, and
//! each event source is read once, into one shuffle per group and key that
//! indexes it: a fanout). Every
//! figure the manifest needs that only the scans see (each file's rows,
//! SHA-256, rows dropped by `where`, latest event) is written by the scan's
//! [`RouteExec`] into the staging's statistics folder as [`ScanStats`];
//! the groups read the label sources' latest events there (the label
//! watermarks), and the build reads them all once the plan has run.
//!
//! Why the same bytes as the embedded build: an index sorts its events by
//! (key, time, row id), the row id being (file, row in file), the embedded
//! build's input order; a derived value depends only on the spine row; the
//! writer's bucket sort orders the rows by every spine column, whatever
//! order they arrived in.

pub mod hot;
pub mod route;
pub mod shuffle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use serde::{Deserialize, Serialize};

use crate::ingest::scan::ScanExec;
use crate::ingest::{FileStats, Source};
use crate::order::BucketSortExec;
use crate::temporal::{GroupMode, Latest, PitPlan, PointInTimeExec};
use hot::{HotKey, HotKeysExec, HotKeysOptions, SaltOptions};
use route::{RouteExec, RouteOptions};
use shuffle::{OutletOptions, SpillShuffleExec};

/// The row id column a [`RouteExec`] adds to events.
pub const ROW_ID: &str = "__leakless_row";
/// The output bucket column it adds before the writer's shuffle.
pub const BUCKET: &str = "__leakless_bucket";
/// The staging's folder of [`ScanStats`].
pub const STATS: &str = "_stats";

/// What a scan saw of one input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanStats {
    pub source: String,
    /// The file's position among the source's files.
    pub file: usize,
    pub stats: FileStats,
    /// Rows dropped by `[spine] where` (the spine only).
    pub filtered: u64,
    /// The latest time of the source's time column and the first row (from
    /// 0) that has it.
    pub latest: Option<(i64, u64)>,
}

impl ScanStats {
    fn name(source: &str, file: usize) -> String {
        // Source names are identifiers; the file number keeps them apart.
        format!("scan-{source}-{file:06}.json")
    }

    /// Writes it under its fixed name (a hidden name first, renamed when
    /// whole): a retried task writes the same bytes.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_fixed(dir, &ScanStats::name(&self.source, self.file), self)
    }

    /// Every file's statistics in `dir`, by source then file.
    pub fn read_all(dir: &Path) -> Result<Vec<ScanStats>> {
        let mut all: Vec<ScanStats> = read_prefixed(dir, "scan-")?;
        all.sort_by(|a, b| (&a.source, a.file).cmp(&(&b.source, b.file)));
        Ok(all)
    }

    /// The latest event of `source` among `all`: the largest time, the
    /// first file and row that has it (as the embedded build finds it).
    pub fn latest(all: &[ScanStats], source: &str) -> Option<Latest> {
        let mut best: Option<Latest> = None;
        for s in all.iter().filter(|s| s.source == source) {
            if let Some((time, row)) = s.latest
                && best.is_none_or(|b| time > b.time)
            {
                best = Some(Latest {
                    time,
                    partition: s.file,
                    row: row as usize,
                });
            }
        }
        best
    }
}

/// What one partition of a key group did: its spine rows and the events
/// it indexed (each once), and its seconds from start to last row.
///
/// Named by what it holds (a digest of its spine rows and of its events'
/// row ids, and their counts), since a partition does not know its
/// number on a cluster (Ballista numbers a task's share of the partitions
/// from 0): a partition run again writes the same name, two partitions
/// never do (a spine row goes to one partition, an event to one per
/// salt), and partitions with neither share one name, which costs
/// nothing (they add nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLoad {
    pub group: usize,
    /// The wrapping sum of a hash of each spine row and of each event's
    /// row id.
    pub digest: u64,
    pub spine_rows: u64,
    pub events: u64,
    pub seconds: f64,
    /// Spine rows held back as immature, per output bucket.
    #[serde(default)]
    pub held_back: Vec<(i64, u64)>,
}

impl TaskLoad {
    /// Writes it under its name, as [`ScanStats::write`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        let name = format!(
            "load-{:04}-{:016x}-{}-{}.json",
            self.group, self.digest, self.spine_rows, self.events
        );
        write_fixed(dir, &name, self)
    }

    /// Every partition's load in `dir`, by group, largest first.
    pub fn read_all(dir: &Path) -> Result<Vec<TaskLoad>> {
        let mut all: Vec<TaskLoad> = read_prefixed(dir, "load-")?;
        all.sort_by_key(|l| (l.group, std::cmp::Reverse(l.spine_rows), l.digest));
        Ok(all)
    }
}

/// How the partitions (tasks) of one key group shared its work (from
/// their [`TaskLoad`]s): the largest against the mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLoad {
    /// The group's spine key columns.
    pub key: Vec<String>,
    pub tasks: usize,
    pub spine_rows_max: u64,
    pub spine_rows_mean: f64,
    pub events_max: u64,
    pub events_mean: f64,
    pub seconds_max: f64,
    pub seconds_mean: f64,
}

impl GroupLoad {
    /// Per key group of `plan`, from the loads its `partitions`
    /// partitions wrote.
    pub fn of(plan: &PitPlan, loads: &[TaskLoad], partitions: usize) -> Vec<GroupLoad> {
        let groups = key_groups(plan);
        (groups.iter().enumerate())
            .map(|(g, members)| {
                let tasks: Vec<&TaskLoad> = loads.iter().filter(|l| l.group == g).collect();
                let n = partitions.max(1) as f64;
                let columns =
                    (plan.spec.source(&plan.spec.spine.source)).and_then(|s| s.columns.as_ref());
                let key = (plan.indexes[members[0]].spine_key.iter())
                    .map(|&k| {
                        (columns.and_then(|c| c.get(k)))
                            .map_or_else(|| format!("#{k}"), |c| c.name.clone())
                    })
                    .collect();
                GroupLoad {
                    key,
                    tasks: partitions.max(1),
                    spine_rows_max: tasks.iter().map(|l| l.spine_rows).max().unwrap_or(0),
                    spine_rows_mean: tasks.iter().map(|l| l.spine_rows as f64).sum::<f64>() / n,
                    events_max: tasks.iter().map(|l| l.events).max().unwrap_or(0),
                    events_mean: tasks.iter().map(|l| l.events as f64).sum::<f64>() / n,
                    seconds_max: tasks.iter().map(|l| l.seconds).fold(0.0, f64::max),
                    seconds_mean: tasks.iter().map(|l| l.seconds).sum::<f64>() / n,
                }
            })
            .collect()
    }
}

/// Writes `value` as `dir/name` (JSON), through a hidden name of its own
/// renamed when whole: a retried task writes the same bytes, and two
/// writers of one name (two scans of one file) never mix.
fn write_fixed(dir: &Path, name: &str, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| DataFusionError::Internal(format!("encoding {name}: {e}")))?;
    crate::write::write_whole(&dir.join(name), &bytes).map_err(DataFusionError::from)
}

/// Every `PREFIX*.json` in `dir`, read as `T` (hidden files left out).
fn read_prefixed<T: serde::de::DeserializeOwned>(dir: &Path, prefix: &str) -> Result<Vec<T>> {
    let io =
        |e: std::io::Error| DataFusionError::Execution(format!("reading {}: {e}", dir.display()));
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(".json")) {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(io)?;
        all.push(serde_json::from_slice(&bytes).map_err(|e| {
            DataFusionError::Execution(format!("reading {}: {e}", entry.path().display()))
        })?);
    }
    Ok(all)
}

/// The key groups of `plan`: positions of indexes whose key reads the same
/// spine columns, in the order of the chain: the groups that add fewest
/// columns first (ties in order of first appearance), since every column
/// a group adds travels through each shuffle after it (on rich2, 330
/// bytes a spine row over the shuffles against 650 in order of
/// appearance).
pub fn key_groups(plan: &PitPlan) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for (i, index) in plan.indexes.iter().enumerate() {
        match groups.iter_mut().find(|(key, _)| *key == index.spine_key) {
            Some((_, members)) => members.push(i),
            None => groups.push((index.spine_key.clone(), vec![i])),
        }
    }
    let mut groups: Vec<Vec<usize>> = groups.into_iter().map(|(_, members)| members).collect();
    groups.sort_by_key(|members| plan.group_columns(members).len());
    groups
}

/// The plan that finds the hot keys of each key group (see [`hot`]) for a
/// build on `partitions` partitions: one summary per spine file, for
/// [`hot::choose`].
pub fn hot_keys_plan(
    plan: &PitPlan,
    sources: &[Source],
    partitions: usize,
    errors_as_text: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    let spec = &plan.spec;
    let spine = (sources.iter())
        .find(|s| s.name() == spec.spine.source)
        .expect("opened source");
    let scan = RouteExec::scan(
        ScanExec::new(spine.clone()),
        RouteOptions {
            filter: spec.spine.filter.clone(),
            errors_as_text,
            ..RouteOptions::default()
        },
    )?;
    let files = scan.properties().output_partitioning().partition_count();
    let keys = (key_groups(plan).iter())
        .map(|members| plan.indexes[members[0]].spine_key.clone())
        .collect();
    Ok(Arc::new(HotKeysExec::try_new(
        Arc::new(scan),
        HotKeysOptions {
            keys,
            counters: hot::COUNTERS_PER_PARTITION * partitions.max(1),
            sample: hot::sample_per_file(files),
        },
    )?))
}

/// How the shuffles of a plan split by key move rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// `RepartitionExec`s of `partitions` partitions each, all running at
    /// once: a cluster cuts its stages there.
    InMemory,
    /// Through files ([`SpillShuffleExec`]): each key group over this many
    /// shards, `partitions` of them built at a time, and the writer's
    /// sort reading the last group itself (on this machine).
    Spilled { shards: usize },
}

impl Shuffle {
    /// The partitions of each key group (the hot keys' salts spread over
    /// them).
    pub fn group_partitions(self, partitions: usize) -> usize {
        match self {
            Shuffle::InMemory => partitions.max(1),
            Shuffle::Spilled { shards } => shards.max(1),
        }
    }
}

/// The node under the writer of a build split by key (see the module
/// docs): `partitions` output partitions (and hash partitions per
/// shuffle, unless `shuffle` says otherwise), the staging folder `dir`
/// (its spill and statistics folders below it), the hot keys of each key
/// group (or none).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    plan: &Arc<PitPlan>,
    sources: &[Source],
    partitions: usize,
    shuffle: Shuffle,
    spill: (&Path, usize),
    stats: &Path,
    errors_as_text: bool,
    hot: &[Vec<HotKey>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let spec = &plan.spec;
    let n = partitions.max(1);
    let shards = shuffle.group_partitions(n);
    let source = |name: &str| -> &Source {
        sources
            .iter()
            .find(|s| s.name() == name)
            .expect("opened source")
    };
    let time_of = |name: &str| -> Option<usize> {
        let def = spec.source(name).expect("resolved source");
        let time = def.time_column()?;
        def.columns.as_ref()?.iter().position(|c| c.name == time)
    };
    // `sort`: the spine's time, which a spilled shuffle sorts each shard
    // by as it reads it back.
    let hash = |input: Arc<dyn ExecutionPlan>,
                key: &[usize],
                sort: Option<usize>|
     -> Result<Arc<dyn ExecutionPlan>> {
        let schema = input.schema();
        let exprs: Vec<Arc<dyn PhysicalExpr>> = key
            .iter()
            .map(|&k| Arc::new(Column::new(schema.field(k).name(), k)) as Arc<dyn PhysicalExpr>)
            .collect();
        Ok(match shuffle {
            Shuffle::InMemory => Arc::new(RepartitionExec::try_new(
                input,
                datafusion::physical_plan::Partitioning::Hash(exprs, n),
            )?),
            Shuffle::Spilled { .. } => Arc::new(
                SpillShuffleExec::new(input, exprs, shards, spill.0.to_owned(), n).with_sort(sort),
            ),
        })
    };
    let stats_dir = stats.to_owned();
    // The spine: filtered and counted, routed to the first group.
    let spine_name = &spec.spine.source;
    let mut carried: Arc<dyn ExecutionPlan> = Arc::new(RouteExec::scan(
        ScanExec::new(source(spine_name).clone()),
        RouteOptions {
            filter: spec.spine.filter.clone(),
            stats: Some((stats_dir.clone(), time_of(spine_name))),
            errors_as_text,
            ..RouteOptions::default()
        },
    )?);
    let spine_width = source(spine_name).layout.schema.fields().len();
    let mut width = carried.schema().fields().len();
    let groups = key_groups(plan);
    let hot_of = |g: usize| hot.get(g).filter(|h| !h.is_empty());
    // What a scan of an event source does for every group alike: every
    // scan of a file writes the same statistics, and one of the spine's
    // source counts its `where` too.
    let event_scan = |name: &str, options: RouteOptions| {
        let filter = (name == spine_name)
            .then(|| spec.spine.filter.clone())
            .flatten();
        RouteExec::scan(
            ScanExec::new(source(name).clone()),
            RouteOptions {
                row_ids: true,
                filter,
                count_only: true,
                stats: Some((stats_dir.clone(), time_of(name))),
                errors_as_text,
                ..options
            },
        )
    };
    // Each group's events, per route: a hot key's rows copied to each of
    // its salts, the salt (the last column) hashed with the key.
    let salt = |g: usize, key: &[usize]| {
        hot_of(g).map(|hot| SaltOptions {
            key: key.to_vec(),
            hot: hot.clone(),
            copies: true,
            hashed: 0,
        })
    };
    let mut events: Vec<Vec<Arc<dyn ExecutionPlan>>> = Vec::with_capacity(groups.len());
    match shuffle {
        Shuffle::InMemory => {
            for (g, members) in groups.iter().enumerate() {
                let inputs = (plan.routes(members).into_iter())
                    .map(|(input, key)| {
                        let options = RouteOptions {
                            whole_key: key.clone(),
                            salt: salt(g, &key),
                            ..RouteOptions::default()
                        };
                        let routed = event_scan(&plan.inputs[input], options)?;
                        let mut on = key.clone();
                        if hot_of(g).is_some() {
                            on.push(routed.schema().fields().len() - 1);
                        }
                        hash(Arc::new(routed), &on, None)
                    })
                    .collect::<Result<Vec<_>>>()?;
                events.push(inputs);
            }
        }
        // Each source read once, into a shuffle per group and route that
        // index it (an outlet of one fanout).
        Shuffle::Spilled { .. } => {
            let routes: Vec<Vec<(usize, Vec<usize>)>> =
                groups.iter().map(|members| plan.routes(members)).collect();
            let mut slots: Vec<Vec<Option<Arc<dyn ExecutionPlan>>>> =
                routes.iter().map(|r| vec![None; r.len()]).collect();
            for input in 0..plan.inputs.len() {
                let at: Vec<(usize, usize)> = (routes.iter().enumerate())
                    .flat_map(|(g, routes)| {
                        let mine = routes.iter().enumerate().filter(|(_, r)| r.0 == input);
                        mine.map(move |(r, _)| (g, r))
                    })
                    .collect();
                if at.is_empty() {
                    continue;
                }
                let routed = event_scan(&plan.inputs[input], RouteOptions::default())?;
                let salt_column = routed.schema().fields().len();
                let outlets = (at.iter())
                    .map(|&(g, r)| {
                        let key = &routes[g][r].1;
                        let mut on = key.clone();
                        on.extend(hot_of(g).map(|_| salt_column));
                        OutletOptions {
                            whole_key: key.clone(),
                            salt: salt(g, key),
                            on,
                        }
                    })
                    .collect();
                let fanout = SpillShuffleExec::fanout(
                    Arc::new(routed),
                    outlets,
                    shards,
                    spill.0.to_owned(),
                    n,
                )?;
                for ((g, r), exec) in at.into_iter().zip(fanout) {
                    slots[g][r] = Some(Arc::new(exec));
                }
            }
            for slots in slots {
                let inputs = slots.into_iter().map(|s| s.expect("every route's outlet"));
                events.push(inputs.collect());
            }
        }
    }
    for ((g, members), inputs) in groups.iter().enumerate().zip(events) {
        let spine_key = &plan.indexes[members[0]].spine_key;
        let hot = hot_of(g);
        let group = GroupMode {
            indexes: members.clone(),
            carried: width,
            stats: stats_dir.clone(),
            errors_as_text,
            number: g,
        };
        let spine = match hot {
            // A hot key's spine rows over its salts: the salt (past the
            // carried columns) goes with the key into the hash.
            Some(hot) => {
                let salted = RouteExec::over(
                    carried,
                    RouteOptions {
                        errors_as_text,
                        salt: Some(SaltOptions {
                            key: spine_key.clone(),
                            hot: hot.clone(),
                            copies: false,
                            hashed: spine_width,
                        }),
                        ..RouteOptions::default()
                    },
                )?;
                let mut on = spine_key.clone();
                on.push(width);
                hash(Arc::new(salted), &on, Some(plan.spine_time))?
            }
            None => hash(carried, spine_key, Some(plan.spine_time))?,
        };
        let spine = match shuffle {
            Shuffle::InMemory => {
                let time = Arc::new(Column::new(
                    spine.schema().field(plan.spine_time).name(),
                    plan.spine_time,
                ));
                let ordering = LexOrdering::new([PhysicalSortExpr::new_default(time)])
                    .expect("one sort expression");
                Arc::new(SortExec::new(ordering, spine).with_preserve_partitioning(true))
            }
            // The shuffle sorts each shard itself as it reads it back.
            Shuffle::Spilled { .. } => spine,
        };
        let exec = PointInTimeExec::try_new_group(inputs, spine, plan.clone(), group)?;
        width = exec.schema().fields().len();
        carried = Arc::new(exec);
    }
    // Whole output buckets to the writer's partitions, sorted there.
    let bucketed = RouteExec::over(
        carried,
        RouteOptions {
            bucket: Some((plan.spine_time, spec.partition)),
            errors_as_text,
            ..RouteOptions::default()
        },
    )?;
    let bucket = bucketed.schema().fields().len() - 1;
    let shuffled = match shuffle {
        Shuffle::InMemory => hash(Arc::new(bucketed), &[bucket], None)?,
        // The sort reads every shard itself, `n` at a time.
        Shuffle::Spilled { .. } => Arc::new(bucketed),
    };
    let mut sort_columns = vec![plan.spine_time];
    sort_columns.extend(&plan.spine_columns);
    let sorted: Arc<dyn ExecutionPlan> = Arc::new(
        BucketSortExec::new(
            shuffled,
            sort_columns,
            spec.partition,
            n,
            spill.0.to_owned(),
        )
        .with_spill_bytes(spill.1),
    );
    // The output's columns: the kept spine columns, the time, then each
    // derived column from where its group put it.
    let schema = sorted.schema();
    let mut derived_at = vec![0usize; plan.columns.len()];
    let mut next = spine_width;
    for members in &groups {
        for c in plan.group_columns(members) {
            derived_at[c] = next;
            next += 1;
        }
    }
    let output = spec.output_columns();
    let positions = plan
        .spine_columns
        .iter()
        .chain([&plan.spine_time])
        .copied()
        .chain(derived_at);
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = positions
        .zip(&output)
        .map(|(p, column)| {
            (
                Arc::new(Column::new(schema.field(p).name(), p)) as Arc<dyn PhysicalExpr>,
                column.name.clone(),
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, sorted)?))
}

/// The statistics folder of a staging folder.
pub fn stats_dir(staging: &Path) -> PathBuf {
    staging.join(STATS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Compression, Format};

    fn stats(source: &str, file: usize, latest: Option<(i64, u64)>) -> ScanStats {
        ScanStats {
            source: source.to_owned(),
            file,
            stats: FileStats {
                path: format!("{source}/{file}.csv"),
                format: Format::Csv,
                compression: Compression::None,
                bytes: 10,
                sha256: "00".repeat(32),
                rows: 3,
                quarantined: 0,
                uses: None,
                times: None,
                modified_ns: None,
            },
            filtered: 1,
            latest,
        }
    }

    /// The latest event is the largest time, and among equal times the
    /// first file's (the embedded build's input order); other sources and
    /// files without a time do not count.
    #[test]
    fn the_latest_event_is_the_first_of_the_largest_times() {
        let all = [
            stats("ev", 0, Some((5, 2))),
            stats("ev", 1, Some((9, 0))),
            stats("ev", 2, Some((9, 1))),
            stats("ev", 3, None),
            stats("other", 0, Some((20, 0))),
        ];
        let latest = ScanStats::latest(&all, "ev").unwrap();
        assert_eq!((latest.time, latest.partition, latest.row), (9, 1, 0));
        assert!(ScanStats::latest(&all, "none").is_none());
    }

    /// Written under fixed names, twice (a retried task), and read back
    /// once each, by source then file; hidden files are not read.
    #[test]
    fn statistics_round_trip_through_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let written = [
            stats("b", 1, None),
            stats("a", 0, Some((1, 0))),
            stats("b", 0, None),
        ];
        for s in written.iter().chain(&written) {
            s.write(dir.path()).unwrap();
        }
        std::fs::write(dir.path().join(".scan-a-000009.json.partial-1"), b"{").unwrap();
        let read = ScanStats::read_all(dir.path()).unwrap();
        let keys: Vec<(&str, usize)> = read.iter().map(|s| (s.source.as_str(), s.file)).collect();
        assert_eq!(keys, [("a", 0), ("b", 0), ("b", 1)]);
        assert_eq!(read[0], written[1]);
    }
}
