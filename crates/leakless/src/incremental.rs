//! Incremental builds (`leakless build --incremental`): which output
//! partitions a build must compute again, and why (docs/semantics.md,
//! "Incremental builds").
//!
//! A partition (a bucket of spine time) depends on the spine rows of its
//! time, on the events and dimension versions its rows' windows reach, and
//! on the watermark through its rows' maturity. So a partition is computed
//! again when
//!
//! - an input file that is new, removed or changed (its SHA-256) has rows
//!   whose times reach it through a use of their source: the spine itself
//!   (`t` = the row's time), a feature (`e + d < t <= e + d + w`, lifetime
//!   `e + d < t`), a versioned dimension (`v + d < t`), a snapshot
//!   dimension (every `t`), a label (`e - o - w < t <= e - o`); a changed
//!   file counts with its old and its new times;
//! - a label's watermark moved past some of its times (`t + o + w` between
//!   the old watermark and the new);
//! - it did not exist (new spine times).
//!
//! Every other partition of the previous dataset is carried over: its
//! files hard-linked (the same files, not rewritten), its counts and
//! profile copied. The spine files whose times lie only in carried
//! partitions are not read; every file of an indexed source is read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{FileStats, Source};
use crate::spec::{Partitioning, Role, SourceKind, Spec, Window};
use crate::temporal::PitPlan;
use crate::time::format_rfc3339;
use crate::write::PartitionWritten;

/// What the previous build of a dataset left that an incremental build
/// needs: read from its `_manifest.json`.
#[derive(Debug, Clone)]
pub struct Previous {
    pub feature_set_hash: String,
    pub bad_rows: crate::ingest::BadRowPolicy,
    pub inputs: BTreeMap<String, Vec<FileStats>>,
    pub partitions: Vec<PartitionWritten>,
    /// Each label's watermark (µs).
    pub watermarks: BTreeMap<String, i64>,
    /// The previous profile (`None` when the build wrote none).
    pub profile: Option<crate::quality::profile::DatasetProfile>,
}

impl Previous {
    /// The dataset at `dir`, `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Previous>> {
        let path = dir.join(crate::write::manifest::FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let invalid = |what: &str| {
            Error::Invalid(format!(
                "`{}` is not a leakless manifest an incremental build can use ({what}); build without --incremental once",
                path.display()
            ))
        };
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
        fn get<T: serde::de::DeserializeOwned>(
            json: &serde_json::Value,
            pointer: &str,
            invalid: &dyn Fn(&str) -> Error,
        ) -> Result<T> {
            let value = json
                .pointer(pointer)
                .cloned()
                .ok_or_else(|| invalid(pointer))?;
            serde_json::from_value(value).map_err(|e| invalid(&format!("{pointer}: {e}")))
        }
        let watermarks: BTreeMap<String, String> = get(&json, "/watermarks", &invalid)?;
        let watermarks = (watermarks.into_iter())
            .map(|(label, w)| {
                crate::time::parse_timestamp_micros(w.as_bytes())
                    .map(|w| (label, w))
                    .ok_or_else(|| invalid("watermarks"))
            })
            .collect::<Result<_>>()?;
        let profile = match dir.join(crate::quality::profile::FILE_NAME).exists() {
            true => Some(crate::quality::profile::DatasetProfile::read(dir)?),
            false => None,
        };
        Ok(Some(Previous {
            feature_set_hash: get(&json, "/feature_set_hash", &invalid)?,
            bad_rows: get(&json, "/settings/bad_rows", &invalid)?,
            inputs: get(&json, "/inputs", &invalid)?,
            partitions: get(&json, "/partitions", &invalid)?,
            watermarks,
            profile,
        }))
    }
}

/// What an incremental build does: the partitions it computes again (by
/// bucket, with the reasons) and those it carries over.
#[derive(Debug, Clone, Serialize)]
pub struct Increment {
    /// `None`: a full build, for the reason given.
    pub full: Option<String>,
    /// Buckets computed again, each with its folder and reasons.
    pub recompute: BTreeMap<i64, Recompute>,
    /// Folders of the previous dataset carried over.
    pub carried: Vec<String>,
    /// Spine files read (their position among the spine source's files),
    /// when the spine is read apart from the indexed sources.
    #[serde(skip)]
    pub spine_files: Option<Vec<usize>>,
    /// Statistics of the spine files not read, from the previous build.
    #[serde(skip)]
    pub spine_carried: Vec<(usize, FileStats)>,
    /// The files found changed, new or removed, per source.
    pub changed_files: BTreeMap<String, Vec<String>>,
    /// Each label's watermark as planned (µs; the build checks that its
    /// labels have these).
    #[serde(skip)]
    pub watermarks: BTreeMap<String, Option<i64>>,
    /// Each file's statistics as planned (from the manifest, or read
    /// ahead): the build checks that what it reads is what it planned on.
    #[serde(skip)]
    pub planned: BTreeMap<String, Vec<FileStats>>,
    #[serde(skip)]
    pub previous: Option<Previous>,
}

/// One partition computed again.
#[derive(Debug, Clone, Serialize)]
pub struct Recompute {
    pub partition: String,
    pub reasons: Vec<String>,
}

impl Increment {
    fn full(reason: String) -> Self {
        Increment {
            full: Some(reason),
            recompute: BTreeMap::new(),
            carried: Vec::new(),
            spine_files: None,
            spine_carried: Vec::new(),
            changed_files: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            planned: BTreeMap::new(),
            previous: None,
        }
    }

    /// The buckets an incremental build keeps of the spine (`None`: all).
    pub fn buckets(&self) -> Option<BTreeSet<i64>> {
        self.full
            .is_none()
            .then(|| self.recompute.keys().copied().collect())
    }
}

/// The bucket of a partition folder's name (the inverse of
/// `write::folder_name`); `None` for a name it never writes (a manifest
/// edited by hand: `dt=2026-02-30`, a year of twenty digits, `hour=24`).
pub fn bucket_of_folder(partitioning: Partitioning, folder: &str) -> Option<i64> {
    let date = |s: &str| -> Option<i64> {
        let s = s.strip_prefix("dt=")?;
        let (y, rest) = s.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        // The years a folder name spells: no overflow below.
        ((0..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
            .then(|| crate::time::days_from_civil(y, m, d))
    };
    let bucket = match partitioning {
        Partitioning::Day => date(folder)?,
        Partitioning::Hour => {
            let (day, hour) = folder.split_once("/hour=")?;
            let hour: i64 = hour.parse().ok().filter(|h| (0..24).contains(h))?;
            date(day)? * 24 + hour
        }
        Partitioning::None => return folder.is_empty().then_some(0),
    };
    (crate::write::folder_name(partitioning, bucket) == folder).then_some(bucket)
}

/// The first and last instant (µs) of bucket `bucket`.
fn bucket_bounds(partitioning: Partitioning, bucket: i64) -> (i64, i64) {
    match crate::order::bucket_micros(partitioning) {
        Some(w) => (bucket * w, bucket * w + w - 1),
        None => (i64::MIN, i64::MAX),
    }
}

/// The spine times (an interval `lo..=hi`, µs) an event or version at a
/// time in `a..=b` of source `name` can reach, one per use of the source.
fn reach(spec: &Spec, name: &str, (a, b): (i64, i64)) -> Vec<(i64, i64, String)> {
    let mut out = Vec::new();
    if spec.spine.source == name {
        out.push((a, b, "its spine rows".to_owned()));
    }
    let source = spec.source(name).expect("a source of the spec");
    let d = source.delay_micros;
    let snapshot = matches!(
        &source.kind,
        SourceKind::Dimension {
            valid_from: None,
            ..
        }
    );
    for derived in spec.derived.iter().filter(|c| c.source == name) {
        let why = format!("`{}`", derived.name);
        let reach = match (derived.role, derived.window) {
            _ if snapshot => (i64::MIN, i64::MAX),
            _ if derived.op.is_dimension_op() => (a.saturating_add(d).saturating_add(1), i64::MAX),
            (Role::Feature, Some(Window::Micros(w))) => (
                a.saturating_add(d).saturating_add(1),
                b.saturating_add(d).saturating_add(w),
            ),
            (Role::Feature, _) => (a.saturating_add(d).saturating_add(1), i64::MAX),
            (Role::Label, window) => {
                let w = match window {
                    Some(Window::Micros(w)) => w,
                    _ => 0,
                };
                let o = derived.offset_micros;
                (
                    a.saturating_sub(o).saturating_sub(w).saturating_add(1),
                    b.saturating_sub(o),
                )
            }
        };
        out.push((reach.0, reach.1, why));
    }
    out
}

/// A file's state now against the previous build's record of it.
fn unchanged(previous: &FileStats, now: &crate::ingest::InputFile) -> bool {
    previous.bytes == now.bytes
        && previous.modified_ns.is_some()
        && previous.modified_ns == crate::ingest::modified_ns(now)
}

/// Reads a source's files at the given positions to the end: their
/// statistics.
pub type Prepass<'a> = &'a dyn Fn(&Source, &[usize]) -> Result<Vec<FileStats>>;

/// Decides what an incremental build of `spec` over `sources` computes,
/// against the dataset `previous` (read under the lock). `prepass` reads a
/// source's files at the given positions to the end and gives their
/// statistics (the files whose size or modification time changed: their
/// SHA-256 and times decide).
pub fn plan(
    plan: &PitPlan,
    sources: &[Source],
    previous: Option<Previous>,
    policy: crate::ingest::BadRowPolicy,
    profile: bool,
    prepass: Prepass<'_>,
) -> Result<Increment> {
    let spec = &plan.spec;
    let Some(previous) = previous else {
        return Ok(Increment::full("there is no dataset yet".into()));
    };
    if previous.feature_set_hash != spec.feature_set_hash() {
        return Err(Error::Invalid(format!(
            "the dataset was built from another spec (feature-set hash {}, this spec's {}): an incremental build adds to a dataset of the same definitions; build it again without --incremental (with --overwrite)",
            previous.feature_set_hash,
            spec.feature_set_hash()
        )));
    }
    if previous.bad_rows != policy {
        let name = |p| match p {
            crate::ingest::BadRowPolicy::Fail => "fail",
            crate::ingest::BadRowPolicy::Quarantine => "quarantine",
        };
        return Ok(Increment::full(format!(
            "the dataset was built with --bad-rows {}, this build uses {}",
            name(previous.bad_rows),
            name(policy)
        )));
    }
    if spec.spine.filter.is_some() {
        return Ok(Increment::full(
            "the spine has a `where`, whose counts are not kept per partition".into(),
        ));
    }
    if profile && previous.profile.is_none() {
        return Ok(Increment::full(
            "the dataset has no profile to carry over".into(),
        ));
    }
    let partitioning = spec.partition;
    let mut reasons: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut changed_files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Times (per source) that changed, and each file's statistics now.
    let mut ranges: Vec<(String, (i64, i64), String)> = Vec::new();
    let mut now_stats: BTreeMap<String, Vec<Option<FileStats>>> = BTreeMap::new();
    // The times of the new or changed spine files now.
    let mut spine_ranges: Vec<(i64, i64)> = Vec::new();
    for source in sources {
        let name = source.name();
        let before: BTreeMap<&str, &FileStats> = (previous.inputs.get(name))
            .into_iter()
            .flatten()
            .map(|f| (f.path.as_str(), f))
            .collect();
        // A manifest of an older leakless keeps no file times (nor counts
        // per partition): nothing to plan on.
        let timed = source.layout.time.is_some();
        if timed && before.values().any(|f| f.rows > 0 && f.times.is_none()) {
            return Ok(Increment::full(format!(
                "the dataset's manifest keeps no times for the files of `{name}` (built by an older leakless)"
            )));
        }
        let mut stats: Vec<Option<FileStats>> = vec![None; source.files.len()];
        let mut read = Vec::new();
        for (i, file) in source.files.iter().enumerate() {
            let path = file.name.display().to_string();
            match before.get(path.as_str()) {
                Some(old) if unchanged(old, file) => stats[i] = Some((*old).clone()),
                _ => read.push(i),
            }
        }
        for (i, fresh) in read.iter().zip(prepass(source, &read)?) {
            let path = fresh.path.clone();
            let old = before.get(path.as_str());
            if old.is_none_or(|old| old.sha256 != fresh.sha256) {
                let what = match old {
                    Some(_) => "changed",
                    None => "new",
                };
                changed_files
                    .entry(name.to_owned())
                    .or_default()
                    .push(format!("{path} ({what})"));
                if name == spec.spine.source
                    && let Some(range) = fresh.time_range()
                {
                    spine_ranges.push(range);
                }
                let times = [old.and_then(|o| o.time_range()), fresh.time_range()];
                for range in times.into_iter().flatten() {
                    ranges.push((name.to_owned(), range, format!("{what} file {path}")));
                }
                if fresh.time_range().is_none() && old.and_then(|o| o.time_range()).is_none() {
                    // A file without times (a snapshot dimension) reaches
                    // every time its uses do.
                    ranges.push((
                        name.to_owned(),
                        (i64::MIN, i64::MAX),
                        format!("{what} file {path}"),
                    ));
                }
            }
            stats[*i] = Some(fresh);
        }
        let present: BTreeSet<String> = (source.files.iter())
            .map(|f| f.name.display().to_string())
            .collect();
        for (path, old) in &before {
            if !present.contains(*path) {
                changed_files
                    .entry(name.to_owned())
                    .or_default()
                    .push(format!("{path} (removed)"));
                let range = old.time_range().unwrap_or((i64::MIN, i64::MAX));
                ranges.push((name.to_owned(), range, format!("removed file {path}")));
            }
        }
        now_stats.insert(name.to_owned(), stats);
    }

    // Every bucket the dataset has or will have.
    let spine = &spec.spine.source;
    let mut candidates: BTreeSet<i64> = BTreeSet::new();
    for p in &previous.partitions {
        let bucket = bucket_of_folder(partitioning, &p.partition).ok_or_else(|| {
            Error::Invalid(format!(
                "the dataset has a partition `{}` this spec does not write",
                p.partition
            ))
        })?;
        candidates.insert(bucket);
    }
    // A bucket the previous build did not have holds rows of new or
    // changed spine files only (an unchanged file's rows were all in the
    // previous build's buckets, written or held back).
    for &(a, b) in &spine_ranges {
        let (first, last) = (
            crate::order::bucket_of(partitioning, a),
            crate::order::bucket_of(partitioning, b),
        );
        candidates.extend(first..=last);
    }
    let mut mark = |lo: i64, hi: i64, why: &str| {
        for &bucket in &candidates {
            let (s, e) = bucket_bounds(partitioning, bucket);
            if lo <= e && s <= hi {
                reasons.entry(bucket).or_default().insert(why.to_owned());
            }
        }
    };
    for (name, range, why) in &ranges {
        for (lo, hi, through) in reach(spec, name, *range) {
            mark(lo, hi, &format!("{why} reaches it through {through}"));
        }
    }
    // The watermarks now: given, or each label source's latest time.
    let latest = |name: &str| -> Option<i64> {
        (now_stats.get(name)?.iter().flatten())
            .filter_map(|s| s.time_range().map(|r| r.1))
            .max()
    };
    let mut watermarks = BTreeMap::new();
    for (column, input) in plan.labels() {
        let label = &column.derived.name;
        let now = plan
            .watermark
            .or(spec.watermark)
            .or_else(|| latest(&plan.inputs[input]));
        watermarks.insert(label.clone(), now);
        let before = previous.watermarks.get(label).copied();
        if now != before {
            let cut = |w: Option<i64>| w.map_or(i64::MIN, |w| w.saturating_sub(column.hi));
            let (a, b) = (cut(now).min(cut(before)), cut(now).max(cut(before)));
            let show = |w: Option<i64>| w.map_or("none".to_owned(), format_rfc3339);
            mark(
                a.saturating_add(1),
                b,
                &format!(
                    "the watermark of `{label}` moved from {} to {}",
                    show(before),
                    show(now)
                ),
            );
        }
    }
    for &bucket in &candidates {
        let folder = crate::write::folder_name(partitioning, bucket);
        if !previous.partitions.iter().any(|p| p.partition == folder) {
            reasons
                .entry(bucket)
                .or_default()
                .insert("a new partition".into());
        }
    }
    let recompute: BTreeMap<i64, Recompute> = (reasons.into_iter())
        .map(|(bucket, why)| {
            (
                bucket,
                Recompute {
                    partition: crate::write::folder_name(partitioning, bucket),
                    reasons: why.into_iter().collect(),
                },
            )
        })
        .collect();
    let carried: Vec<String> = (previous.partitions.iter())
        .filter(|p| {
            bucket_of_folder(partitioning, &p.partition)
                .is_some_and(|b| !recompute.contains_key(&b))
        })
        .map(|p| p.partition.clone())
        .collect();
    // The spine's files: those with times in a partition computed again,
    // or bad rows set aside (their quarantine is written again), are read.
    let mut spine_files = None;
    let mut spine_carried = Vec::new();
    if !plan.inputs.contains(spine) {
        let stats = &now_stats[spine.as_str()];
        let mut read = Vec::new();
        for (i, s) in stats.iter().enumerate() {
            let s = s.as_ref().expect("every file has statistics");
            let needed = s.quarantined > 0
                || s.time_range().is_some_and(|(a, b)| {
                    let (first, last) = (
                        crate::order::bucket_of(partitioning, a),
                        crate::order::bucket_of(partitioning, b),
                    );
                    recompute.range(first..=last).next().is_some()
                });
            match needed {
                true => read.push(i),
                false => spine_carried.push((i, s.clone())),
            }
        }
        spine_files = Some(read);
    }
    Ok(Increment {
        full: None,
        recompute,
        carried,
        spine_files,
        spine_carried,
        changed_files,
        watermarks,
        planned: (now_stats.into_iter())
            .map(|(name, stats)| (name, stats.into_iter().flatten().collect()))
            .collect(),
        previous: Some(previous),
    })
}

/// Marks each partition complete (every label window of every time of the
/// folder closed at the watermark) or partial, with the reason; without
/// time partitioning, partial when rows were held back.
pub fn mark_completeness(
    partitions: &mut [PartitionWritten],
    plan: &PitPlan,
    watermarks: &[(String, Option<i64>)],
) {
    let partitioning = plan.spec.partition;
    for p in partitions.iter_mut() {
        let last = bucket_of_folder(partitioning, &p.partition)
            .map(|b| bucket_bounds(partitioning, b).1)
            .filter(|_| partitioning != Partitioning::None);
        let mut open = Vec::new();
        for (column, _) in plan.labels() {
            let label = &column.derived.name;
            let watermark = (watermarks.iter())
                .find(|(name, _)| name == label)
                .and_then(|(_, w)| *w);
            let closed = match (last, watermark) {
                (Some(last), Some(w)) => last.saturating_add(column.hi) <= w,
                (None, Some(_)) => p.held_back == 0,
                (_, None) => false,
            };
            if !closed {
                let w = watermark.map_or("none".to_owned(), format_rfc3339);
                open.push(format!(
                    "`{label}` (a window ending {} after t) is still open at the watermark {w} for its latest times",
                    crate::spec::format_duration(column.hi)
                ));
            }
        }
        p.complete = open.is_empty();
        p.partial = (!open.is_empty())
            .then(|| format!("{}; {} rows held back", open.join(", "), p.held_back));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_read_back_as_their_buckets_and_no_other_name_does() {
        for partitioning in [Partitioning::Day, Partitioning::Hour] {
            for bucket in [-30_000, -1, 0, 1, 20_000, 480_000, 2_900_000] {
                let name = crate::write::folder_name(partitioning, bucket);
                assert_eq!(
                    bucket_of_folder(partitioning, &name),
                    Some(bucket),
                    "{name}"
                );
            }
        }
        assert_eq!(bucket_of_folder(Partitioning::None, ""), Some(0));
        for (partitioning, name) in [
            (Partitioning::Day, "dt=2026-02-30"),
            (Partitioning::Day, "dt=2026-2-03"),
            (Partitioning::Day, "dt=99999999999999999-01-01"),
            (Partitioning::Day, "dt=-9223372036854775808-01-01"),
            (Partitioning::Hour, "dt=2026-02-03/hour=24"),
            (Partitioning::Hour, "dt=2026-02-03/hour=9223372036854775807"),
            (Partitioning::Hour, "dt=2026-02-03"),
            (Partitioning::None, "dt=2026-02-03"),
        ] {
            assert_eq!(bucket_of_folder(partitioning, name), None, "{name}");
        }
    }
}
