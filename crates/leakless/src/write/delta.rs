//! Delta Lake output (`[output] format = "delta"`, `--format delta`): each
//! build is one commit of a Delta table, which readers see whole or not at
//! all, and older versions stay readable (time travel).
//!
//! The protocol (also in `docs/semantics.md`, "Delta Lake output"), for
//! `--out PARENT/NAME`:
//! 1. Lock and stage as a Parquet build does ([`super::commit`]): the same
//!    lock file, the same staging folder `.NAME.leakless-staging-RUN`. The
//!    data files are named `part-NNNNN-RUN.parquet`, so that no two runs'
//!    files share a name inside the table.
//! 2. Under the lock, before the dead runs' staging folders are removed,
//!    whatever a dead run `R` moved into the table and did not commit is
//!    removed: its `part-*-R.parquet` files that no version of the table
//!    holds in its latest snapshot, and `_leakless/R/`.
//! 3. The data files are moved (renamed) into the table, the run's
//!    manifest, profile and quarantine into `NAME/_leakless/RUN/`, all
//!    made durable.
//! 4. One commit (`_delta_log/N.json`, put only if absent) adds the new
//!    files and removes those of the partitions computed again (a full
//!    build: every file); its `commitInfo` carries, under `leakless`, the
//!    run, the folder of its manifest, the feature-set hash and the
//!    manifest's summary. A commit that finds version `N` taken (another
//!    writer) fails: nothing is published.
//!
//! Files of a partition carried over by an incremental build are not
//! touched: the same files stay in the new version. Files of older
//! versions stay where they are until a Delta `VACUUM`.
//!
//! What a reader of leakless's own files does ([`meta_dir`]) needs no
//! Delta library: the latest commit's `commitInfo` names the folder of its
//! manifest.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Delta log's folder in a table.
pub const LOG: &str = "_delta_log";
/// The folder of each run's manifest, profile and quarantine.
pub const META: &str = "_leakless";
/// leakless's key in a commit's `commitInfo`.
pub const COMMIT_KEY: &str = "leakless";

/// The latest version of the Delta table at `table` and the
/// `commitInfo` of its commit (`Null` when it has none); `None` when
/// `table` has no log or an empty one.
pub fn latest_commit(table: &Path) -> Result<Option<(u64, serde_json::Value)>> {
    let log = table.join(LOG);
    let entries = match std::fs::read_dir(&log) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("listing", &log, e)),
    };
    let mut latest = None;
    for entry in entries {
        let name = entry
            .map_err(|e| Error::io("listing", &log, e))?
            .file_name();
        let version = (name.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|v| v.len() == 20 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok());
        latest = latest.max(version);
    }
    let Some(version) = latest else {
        return Ok(None);
    };
    let path = log.join(format!("{version:020}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    let mut info = serde_json::Value::Null;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let action: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::Invalid(format!(
                "`{}` line {}: not JSON: {e}",
                path.display(),
                i + 1
            ))
        })?;
        if let Some(found) = action.get("commitInfo") {
            info = found.clone();
        }
    }
    Ok(Some((version, info)))
}

/// The folder a leakless commit's `commitInfo` names, relative to the
/// table (`None`: not a leakless commit).
fn commit_meta(info: &serde_json::Value) -> Option<&str> {
    info.get(COMMIT_KEY)?.get("meta")?.as_str()
}

/// Where a dataset's own files are (`_manifest.json`, `_profile.json`,
/// the quarantine): the dataset's folder, or for a Delta table the folder
/// its latest commit names. An error for a Delta table whose latest
/// version leakless did not write.
pub fn meta_dir(dataset: &Path) -> Result<PathBuf> {
    meta_dir_at(dataset, latest_commit(dataset)?)
}

/// [`meta_dir`] with the table's latest commit read already.
fn meta_dir_at(dataset: &Path, latest: Option<(u64, serde_json::Value)>) -> Result<PathBuf> {
    match latest {
        None => Ok(dataset.to_owned()),
        Some((version, info)) => match commit_meta(&info) {
            Some(meta) => Ok(dataset.join(meta)),
            None => Err(Error::Invalid(format!(
                "`{}`: version {version} of this Delta table was not written by leakless (its operation: {})",
                dataset.display(),
                info.get("operation")
                    .and_then(|o| o.as_str())
                    .unwrap_or("unknown")
            ))),
        },
    }
}

/// The data files of the Delta table at `dataset` as its leakless
/// manifest lists them (`None`: not a Delta table).
pub fn manifest_files(dataset: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Some(latest) = latest_commit(dataset)? else {
        return Ok(None);
    };
    let path = meta_dir_at(dataset, Some(latest))?.join(super::manifest::FILE_NAME);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    let manifest = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
    super::manifest::listed_files(dataset, &manifest, &path).map(Some)
}

/// The Delta partition values of an output folder: `dt=2026-10-01` gives
/// `dt` = `2026-10-01`, `dt=2026-10-01/hour=07` also `hour` = `7`.
pub fn partition_values(folder: &str) -> Vec<(String, String)> {
    (folder.split('/'))
        .filter_map(|part| part.split_once('='))
        .map(|(name, value)| {
            let value = match name {
                "hour" => value.trim_start_matches('0').to_owned(),
                _ => value.to_owned(),
            };
            let value = if value.is_empty() { "0".into() } else { value };
            (name.to_owned(), value)
        })
        .collect()
}

#[cfg(feature = "delta")]
pub use table::DeltaDestination;

#[cfg(feature = "delta")]
mod table {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
    use deltalake::kernel::{Action, Add, DataType as DeltaType, LogicalFileView, StructField};
    use deltalake::protocol::{DeltaOperation, SaveMode};
    use deltalake::{DeltaTable, DeltaTableBuilder};
    use futures::TryStreamExt;

    use std::fs::File;

    use super::super::commit::{Destination, Staging, crash_point, sync_dir, sync_tree};
    use super::super::manifest::{self, Manifest};
    use super::{COMMIT_KEY, LOG, META, commit_meta, latest_commit, partition_values};
    use crate::error::{Error, Result};
    use crate::spec::Partitioning;
    use crate::storage::block_on;

    fn delta_error(what: &str, table: &Path, e: impl std::fmt::Display) -> Error {
        Error::Invalid(format!("{what} the Delta table `{}`: {e}", table.display()))
    }

    /// The right to commit to a Delta table on a local (or shared) file
    /// system: the local lock, and the table's latest version read under
    /// it.
    #[derive(Debug)]
    pub struct DeltaDestination {
        local: Destination,
        out: PathBuf,
        /// The table's latest version when the lock was taken.
        found: Option<Latest>,
    }

    /// A table's latest version.
    #[derive(Debug)]
    struct Latest {
        version: u64,
        /// Paths (relative to the table) of its files.
        active: BTreeSet<String>,
        schema: Vec<StructField>,
        partition_columns: Vec<String>,
    }

    impl DeltaDestination {
        /// Takes the destination's lock, removes what dead runs left in the
        /// table, and checks that `out` may be written.
        pub fn acquire(out: &Path, overwrite: bool, wait: bool) -> Result<DeltaDestination> {
            let mut local = Destination::lock(out, wait)?;
            let exists = match std::fs::symlink_metadata(out) {
                Ok(meta) if !meta.is_dir() => {
                    return Err(Error::OutputExists {
                        path: out.to_owned(),
                        why: Some("it is not a folder".to_owned()),
                    });
                }
                Ok(_) => true,
                Err(_) => false,
            };
            let found = match latest_commit(out)? {
                Some((version, info)) => {
                    if commit_meta(&info).is_none() {
                        return Err(Error::OutputExists {
                            path: out.to_owned(),
                            why: Some(format!(
                                "its Delta log's latest version {version} was not written by leakless"
                            )),
                        });
                    }
                    Some(block_on(load(out))?.1)
                }
                None => None,
            };
            let dead = local.dead_runs()?;
            if exists && !dead.is_empty() {
                let active = found.as_ref().map(|f| &f.active);
                remove_uncommitted(out, &dead, active)?;
            }
            local.clean_up_dead_runs()?;
            // The cleanup may have put a moved-aside Parquet dataset back.
            let exists = std::fs::symlink_metadata(out).is_ok();
            if found.is_none() && exists {
                if out.join(manifest::FILE_NAME).exists() {
                    return Err(Error::OtherFormat {
                        path: out.to_owned(),
                        found: "Parquet dataset",
                        wanted: "Delta Lake table",
                    });
                }
                if !is_empty_tree(out)? {
                    return Err(Error::OutputExists {
                        path: out.to_owned(),
                        why: Some("it is not a Delta table".to_owned()),
                    });
                }
            }
            if found.is_some() && !overwrite {
                return Err(Error::OutputExists {
                    path: out.to_owned(),
                    why: None,
                });
            }
            Ok(DeltaDestination {
                local,
                out: out.to_owned(),
                found,
            })
        }

        pub fn stage(&self) -> Result<Staging> {
            self.local.stage()
        }

        /// The run id the data files' names carry.
        pub fn run(&self) -> &str {
            self.local.run()
        }

        pub fn stale_removed(&self) -> usize {
            self.local.stale_removed()
        }

        /// Moves the staged files into the table and commits them as one
        /// version, replacing the files of the latest version that
        /// `manifest` does not list; returns the version committed.
        pub fn publish(
            &self,
            staging: Staging,
            manifest: &Manifest,
            schema: &datafusion::arrow::datatypes::Schema,
            partitioning: Partitioning,
        ) -> Result<u64> {
            let out = &self.out;
            let run = self.run().to_owned();
            // Everything that can refuse the build is decided before the
            // first file moves into the table.
            let columns = table_columns(schema, partitioning)?;
            let partition_columns: Vec<String> = (partition_columns(partitioning).iter())
                .map(|(name, _)| (*name).to_owned())
                .collect();
            let same_metadata = self
                .found
                .as_ref()
                .is_some_and(|f| f.schema == columns && f.partition_columns == partition_columns);
            let staged = staging.dir();
            std::fs::write(staged.join(manifest::FILE_NAME), manifest.to_json())
                .map_err(|e| Error::io("writing", staged.join(manifest::FILE_NAME), e))?;
            sync_tree(staged)?;

            // The files the new version holds: those staged are added, the
            // others (carried over) must be in the latest version.
            let empty = BTreeSet::new();
            let active = self.found.as_ref().map_or(&empty, |f| &f.active);
            let mut adds = Vec::new();
            let mut listed = BTreeSet::new();
            let mut replaced = BTreeSet::new();
            for partition in &manifest.partitions {
                for file in &partition.files {
                    listed.insert(file.path.clone());
                    let from = staged.join(&file.path);
                    match std::fs::metadata(&from) {
                        Ok(meta) => {
                            replaced.insert(partition.partition.clone());
                            adds.push((partition, file, from, meta.len()));
                        }
                        Err(_) if active.contains(&file.path) => {}
                        Err(_) => {
                            return Err(Error::Invalid(format!(
                                "`{}` of partition `{}` is neither written by this build nor in version {} of the Delta table `{}` (changed by another writer?): build without --incremental",
                                file.path,
                                partition.partition,
                                self.found.as_ref().map_or(0, |f| f.version),
                                out.display()
                            )));
                        }
                    }
                }
            }
            let removes: Vec<&String> = active.iter().filter(|p| !listed.contains(*p)).collect();
            if !same_metadata && adds.len() != listed.len() {
                return Err(Error::Invalid(format!(
                    "the Delta table `{}` has another schema or partitioning: build it without --incremental",
                    out.display()
                )));
            }

            // From the first move on, a failure leaves the staging folder
            // for the next run, which removes what this one moved in and
            // did not commit (or keeps it, when the commit landed).
            let commit = || -> Result<u64> {
                std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
                let meta = out.join(META).join(&run);
                std::fs::create_dir_all(&meta).map_err(|e| Error::io("creating", &meta, e))?;
                for entry in
                    std::fs::read_dir(staged).map_err(|e| Error::io("listing", staged, e))?
                {
                    let entry = entry.map_err(|e| Error::io("listing", staged, e))?;
                    if entry.file_name().to_string_lossy().starts_with('_') {
                        let to = meta.join(entry.file_name());
                        std::fs::rename(entry.path(), &to)
                            .map_err(|e| Error::io("moving", entry.path(), e))?;
                    }
                }
                sync_dir(&meta)?;
                sync_dir(&out.join(META))?;
                // Every folder from the table down to each file is synced, the
                // folders created included.
                let mut folders = BTreeSet::new();
                for (_, file, from, _) in &adds {
                    let to = out.join(&file.path);
                    let folder = to.parent().unwrap_or(out).to_owned();
                    if !folders.contains(&folder) {
                        std::fs::create_dir_all(&folder)
                            .map_err(|e| Error::io("creating", &folder, e))?;
                        let mut up = Some(folder.as_path());
                        while let Some(f) = up.filter(|f| f.starts_with(out)) {
                            folders.insert(f.to_owned());
                            up = f.parent();
                        }
                    }
                    std::fs::rename(from, &to).map_err(|e| Error::io("moving", from, e))?;
                }
                folders.insert(out.to_owned());
                for folder in folders.iter().rev() {
                    sync_dir(folder)?;
                }
                crash_point("before-delta-commit");

                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let mut actions: Vec<Action> = (adds.iter())
                    .map(|(partition, file, _, size)| {
                        Action::Add(Add {
                            path: file.path.clone(),
                            partition_values: partition_values(&partition.partition)
                                .into_iter()
                                .map(|(k, v)| (k, Some(v)))
                                .collect(),
                            size: *size as i64,
                            modification_time: now_ms,
                            data_change: true,
                            stats: Some(format!("{{\"numRecords\":{}}}", file.rows)),
                            ..Default::default()
                        })
                    })
                    .collect();
                let summary = commit_summary(manifest, &run, &replaced, removes.len());
                let properties = CommitProperties::default()
                    .with_metadata([(COMMIT_KEY.to_owned(), summary)])
                    .with_max_retries(0);
                let version = block_on(async {
                    // The version read under the lock is the one committed
                    // on (another writer's commit since fails the build).
                    let loaded = match &self.found {
                        Some(found) => {
                            let (table, latest) = load(out).await?;
                            if latest.version != found.version {
                                return Err(Error::Invalid(format!(
                                    "the Delta table `{}` moved from version {} to {} while this build ran (another writer): nothing was committed; build again",
                                    out.display(),
                                    found.version,
                                    latest.version
                                )));
                            }
                            Some(table)
                        }
                        None => None,
                    };
                    let committed = match (loaded, same_metadata) {
                        (Some(table), true) => {
                            let snapshot =
                                (table.snapshot()).map_err(|e| delta_error("reading", out, e))?;
                            let removing: BTreeSet<&str> =
                                removes.iter().map(|p| p.as_str()).collect();
                            for view in file_views(&table, out).await? {
                                if removing.contains(view.path().as_ref()) {
                                    actions.push(Action::Remove(view.remove_action(true)));
                                }
                            }
                            let predicate = match manifest.settings.incremental {
                                true => Some(replaced_predicate(&replaced, partitioning)),
                                false => None,
                            };
                            let operation = DeltaOperation::Write {
                                mode: SaveMode::Overwrite,
                                partition_by: Some(partition_columns.clone()),
                                predicate,
                            };
                            CommitBuilder::from(properties)
                                .with_actions(actions)
                                .build(
                                    Some(snapshot as &dyn TableReference),
                                    table.log_store(),
                                    operation,
                                )
                                .await
                                .map(|c| c.version())
                        }
                        (loaded, _) => {
                            let mode = match loaded {
                                Some(_) => SaveMode::Overwrite,
                                None => SaveMode::ErrorIfExists,
                            };
                            let location = std::fs::canonicalize(out)
                                .map_err(|e| Error::io("resolving", out, e))?;
                            deltalake::operations::create::CreateBuilder::new()
                                .with_location(location.display().to_string())
                                .with_columns(columns)
                                .with_partition_columns(partition_columns.clone())
                                .with_save_mode(mode)
                                .with_actions(actions)
                                .with_commit_properties(properties)
                                .await
                                .map(|t| t.version().unwrap_or(0))
                        }
                    };
                    committed.map_err(|e| delta_error("committing to", out, e))
                });
                // An error after the commit landed (a post-commit hook: a
                // checkpoint, the log's cleanup) is no failure of the build.
                let version = match version {
                    Ok(version) => version,
                    Err(e) => match latest_commit(out)? {
                        Some((version, info))
                            if info[COMMIT_KEY]["run"].as_str() == Some(run.as_str()) =>
                        {
                            version
                        }
                        _ => return Err(e),
                    },
                };
                // The version's log entry and folder are durable before the
                // staging folder goes.
                let log = out.join(LOG);
                File::open(log.join(format!("{version:020}.json")))
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("syncing", &log, e))?;
                sync_dir(&log)?;
                crash_point("after-delta-commit");
                Ok(version)
            };
            match commit() {
                Ok(version) => Ok(version),
                Err(e) => {
                    staging.keep();
                    Err(e)
                }
            }
        }
    }

    /// The table at `out`, and its latest version.
    async fn load(out: &Path) -> Result<(DeltaTable, Latest)> {
        let location = std::fs::canonicalize(out).map_err(|e| Error::io("resolving", out, e))?;
        let url = deltalake::ensure_table_uri(location.display().to_string())
            .map_err(|e| delta_error("opening", out, e))?;
        let table = DeltaTableBuilder::from_url(url)
            .map_err(|e| delta_error("opening", out, e))?
            .load()
            .await
            .map_err(|e| delta_error("reading", out, e))?;
        let version = table.version().unwrap_or_default();
        let snapshot = table
            .snapshot()
            .map_err(|e| delta_error("reading", out, e))?;
        let views = file_views(&table, out).await?;
        let latest = Latest {
            version,
            active: views.iter().map(|v| v.path().into_owned()).collect(),
            schema: snapshot.schema().fields().cloned().collect(),
            partition_columns: snapshot.metadata().partition_columns().to_vec(),
        };
        Ok((table, latest))
    }

    /// The files of the table's loaded version.
    async fn file_views(table: &DeltaTable, out: &Path) -> Result<Vec<LogicalFileView>> {
        let snapshot = table
            .snapshot()
            .map_err(|e| delta_error("reading", out, e))?;
        snapshot
            .snapshot()
            .file_views(&table.log_store(), None)
            .try_collect()
            .await
            .map_err(|e| delta_error("reading", out, e))
    }

    /// The Delta partition columns of a partitioning.
    fn partition_columns(partitioning: Partitioning) -> Vec<(&'static str, DeltaType)> {
        match partitioning {
            Partitioning::Day => vec![("dt", DeltaType::DATE)],
            Partitioning::Hour => vec![("dt", DeltaType::DATE), ("hour", DeltaType::INTEGER)],
            Partitioning::None => Vec::new(),
        }
    }

    /// The table's columns: the output's, then the partition columns.
    fn table_columns(
        schema: &datafusion::arrow::datatypes::Schema,
        partitioning: Partitioning,
    ) -> Result<Vec<StructField>> {
        let kernel: deltalake::kernel::StructType = schema
            .try_into_kernel()
            .map_err(|e| Error::Invalid(format!("the output as a Delta schema: {e}")))?;
        let mut columns: Vec<StructField> = kernel.fields().cloned().collect();
        for (name, ty) in partition_columns(partitioning) {
            if columns.iter().any(|c| c.name() == name) {
                return Err(Error::Invalid(format!(
                    "the output has a column `{name}`, which a Delta table partitioned by {} also has: rename it, or set [output] partition",
                    partitioning.name()
                )));
            }
            columns.push(StructField::new(name, ty, true));
        }
        Ok(columns)
    }

    /// The partitions an incremental commit replaces, as a predicate for
    /// the commit's record (`dt IN ('2026-10-30', ...)`).
    fn replaced_predicate(replaced: &BTreeSet<String>, partitioning: Partitioning) -> String {
        let values: Vec<String> = (replaced.iter())
            .map(|folder| {
                let parts: Vec<String> = (partition_values(folder).into_iter())
                    .map(|(k, v)| match k.as_str() {
                        "dt" => format!("{k} = '{v}'"),
                        _ => format!("{k} = {v}"),
                    })
                    .collect();
                format!("({})", parts.join(" AND "))
            })
            .collect();
        match (partitioning, values.is_empty()) {
            (_, true) => "false".into(),
            (Partitioning::None, _) => "true".into(),
            _ => values.join(" OR "),
        }
    }

    /// What the commit carries under `leakless`.
    fn commit_summary(
        manifest: &Manifest,
        run: &str,
        replaced: &BTreeSet<String>,
        removed: usize,
    ) -> serde_json::Value {
        let carried: Vec<&str> = (manifest.partitions.iter())
            .filter(|p| !p.files.is_empty() && !replaced.contains(&p.partition))
            .map(|p| p.partition.as_str())
            .collect();
        serde_json::json!({
            "run": run,
            "meta": format!("{META}/{run}"),
            "version": manifest.version,
            "feature_set_hash": manifest.feature_set_hash,
            "incremental": manifest.settings.incremental,
            "rows_written": manifest.rows_written,
            "immature_held_back": manifest.immature_held_back,
            "positive_labels": manifest.positive_labels,
            "watermarks": manifest.watermarks,
            "partitions": manifest.partitions.iter().filter(|p| !p.files.is_empty()).count(),
            "partitions_written": replaced,
            "partitions_carried": carried.len(),
            "files_added": manifest.partitions.iter().filter(|p| replaced.contains(&p.partition)).map(|p| p.files.len()).sum::<usize>(),
            "files_removed": removed,
        })
    }

    /// The run id in a data file name `part-NNNNN-RUN.parquet`.
    pub(super) fn file_run(name: &str) -> Option<&str> {
        let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let (_, run) = stem.split_once('-')?;
        Some(run)
    }

    /// Whether `dir` holds no file (empty folders only).
    fn is_empty_tree(dir: &Path) -> Result<bool> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || !is_empty_tree(&entry.path())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes from the table at `out` what the dead runs `dead` moved into
    /// it without committing: their data files that the latest version
    /// does not hold (`active`), their `_leakless/RUN/`, and folders left
    /// empty.
    fn remove_uncommitted(
        out: &Path,
        dead: &[String],
        active: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        let committed = |relative: &str| active.is_some_and(|a| a.contains(relative));
        let mut folders = vec![(out.to_owned(), String::new())];
        let mut seen = Vec::new();
        while let Some((folder, prefix)) = folders.pop() {
            seen.push(folder.clone());
            for entry in std::fs::read_dir(&folder).map_err(|e| Error::io("listing", &folder, e))? {
                let entry = entry.map_err(|e| Error::io("listing", &folder, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let relative = match prefix.is_empty() {
                    true => name.clone(),
                    false => format!("{prefix}/{name}"),
                };
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && name != LOG && name != META {
                    folders.push((entry.path(), relative));
                } else if !is_dir
                    && file_run(&name).is_some_and(|r| dead.iter().any(|d| d == r))
                    && !committed(&relative)
                {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| Error::io("removing", entry.path(), e))?;
                }
            }
        }
        let latest_meta =
            latest_commit(out)?.and_then(|(_, info)| commit_meta(&info).map(str::to_owned));
        for run in dead {
            let meta = out.join(META).join(run);
            if meta.exists() && latest_meta.as_deref() != Some(&format!("{META}/{run}")) {
                std::fs::remove_dir_all(&meta).map_err(|e| Error::io("removing", &meta, e))?;
            }
        }
        // Partition folders left empty, deepest first.
        seen.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
        for folder in seen.into_iter().filter(|f| f != out) {
            if is_empty_tree(&folder)? {
                let _ = std::fs::remove_dir(&folder);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_of_folders() {
        assert_eq!(
            partition_values("dt=2026-10-01"),
            vec![("dt".to_owned(), "2026-10-01".to_owned())]
        );
        assert_eq!(
            partition_values("dt=2026-10-01/hour=07"),
            vec![
                ("dt".to_owned(), "2026-10-01".to_owned()),
                ("hour".to_owned(), "7".to_owned())
            ]
        );
        assert_eq!(partition_values("dt=2026-10-01/hour=00")[1].1, "0");
        assert!(partition_values("").is_empty());
    }

    #[cfg(feature = "delta")]
    #[test]
    fn run_of_a_file_name() {
        use super::table::file_run;
        assert_eq!(file_run("part-00003-0123abcd.parquet"), Some("0123abcd"));
        assert_eq!(file_run("part-00003.parquet"), None);
        assert_eq!(file_run("x.parquet"), None);
    }

    #[test]
    fn the_latest_commit_names_the_meta_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(meta_dir(dir.path()).unwrap(), dir.path());
        let log = dir.path().join(LOG);
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(
            log.join(format!("{:020}.json", 0)),
            "{\"commitInfo\":{\"operation\":\"CREATE TABLE\",\"leakless\":{\"meta\":\"_leakless/a\"}}}\n",
        )
        .unwrap();
        std::fs::write(
            log.join(format!("{:020}.json", 1)),
            "{\"add\":{}}\n{\"commitInfo\":{\"operation\":\"WRITE\",\"leakless\":{\"meta\":\"_leakless/b\"}}}\n",
        )
        .unwrap();
        std::fs::write(log.join("_last_checkpoint"), "{}").unwrap();
        assert_eq!(
            meta_dir(dir.path()).unwrap(),
            dir.path().join("_leakless/b")
        );
        std::fs::write(
            log.join(format!("{:020}.json", 2)),
            "{\"commitInfo\":{\"operation\":\"OPTIMIZE\"}}\n",
        )
        .unwrap();
        let err = meta_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("version 2") && err.contains("OPTIMIZE"),
            "{err}"
        );
    }
}
