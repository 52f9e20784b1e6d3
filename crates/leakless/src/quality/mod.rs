//! Data quality: where every input row went (the reconciliation), the rows
//! quarantine set aside and the gate on them (`docs/semantics.md`, "Data
//! quality").

pub mod audit;
pub mod checks;
pub mod drift;
pub mod profile;
pub mod report;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, QualityFailure, Result};
use crate::ingest::quarantine::{self, BadRowRecord, Part, Summary};
use crate::ingest::{FileStats, RowUses};

/// The default `max_bad_rows`: the largest fraction of a source's rows
/// that may be bad under quarantine.
pub const DEFAULT_MAX_BAD_ROWS: f64 = 0.001;

/// What became of a source's rows. Every row read is counted once:
/// `read = quarantined + the spine's terms` for the spine, and
/// `read = quarantined + the indexed terms` for a source the operator
/// indexes (both hold for a source that is both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceRows {
    /// Rows in its files (blank lines and headers are not rows).
    pub read: u64,
    /// Bad rows set aside (`--bad-rows quarantine`).
    pub quarantined: u64,
    /// As the spine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spine: Option<SpineRows>,
    /// As events or a dimension the features and labels read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed: Option<RowUses>,
}

/// What became of the spine's good rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpineRows {
    /// Dropped by `[spine] where`.
    pub filtered_by_where: u64,
    /// Held back: a label window still open at its watermark.
    pub held_back_immature: u64,
    /// Written to the dataset.
    pub written: u64,
}

impl SpineRows {
    fn total(&self) -> u64 {
        self.filtered_by_where + self.held_back_immature + self.written
    }
}

/// The reconciliation of every source read, checked: a source whose terms
/// do not add up to its rows read is an error (a row lost or counted twice
/// is a bug, never a result).
pub fn reconcile(
    inputs: &BTreeMap<String, Vec<FileStats>>,
    spine: (&str, SpineRows),
    indexed: &[String],
) -> Result<BTreeMap<String, SourceRows>> {
    let mut all = BTreeMap::new();
    for (name, files) in inputs {
        let kept: u64 = files.iter().map(|f| f.rows).sum();
        let quarantined: u64 = files.iter().map(|f| f.quarantined).sum();
        let mut rows = SourceRows {
            read: kept + quarantined,
            quarantined,
            ..SourceRows::default()
        };
        if name == spine.0 {
            rows.spine = Some(spine.1);
        }
        if indexed.contains(name) {
            let mut uses = RowUses::default();
            for file in files {
                uses.add(file.uses.ok_or_else(|| {
                    Error::Invalid(format!(
                        "`{}` of source `{name}` was read without counting its rows' uses",
                        file.path
                    ))
                })?);
            }
            rows.indexed = Some(uses);
        }
        let terms = [
            rows.spine.map(|s| ("the spine's", s.total())),
            rows.indexed.map(|u| ("the indexes'", u.total())),
        ];
        for (what, total) in terms.into_iter().flatten() {
            if quarantined + total != rows.read {
                return Err(Error::Invalid(format!(
                    "the rows of source `{name}` do not add up: {} read, {quarantined} quarantined, {total} in {what} terms",
                    rows.read
                )));
            }
        }
        all.insert(name.clone(), rows);
    }
    Ok(all)
}

/// A source's quarantine file in the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// The file, relative to the dataset's data folder.
    pub path: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Merges the parts in `parts` into `out/_quarantine/<source>.parquet`, one
/// file per source with bad rows, and checks each source's count against
/// what its files' statistics say.
pub fn collect(
    parts: &Path,
    out: &Path,
    inputs: &BTreeMap<String, Vec<FileStats>>,
) -> Result<BTreeMap<String, Quarantined>> {
    let mut rows: BTreeMap<String, Vec<BadRowRecord>> = BTreeMap::new();
    for part in Part::read_all(parts)? {
        rows.entry(part.source).or_default().extend(part.rows);
    }
    let mut all = BTreeMap::new();
    for (source, files) in inputs {
        let counted: u64 = files.iter().map(|f| f.quarantined).sum();
        let found = rows.remove(source).unwrap_or_default();
        if found.len() as u64 != counted {
            return Err(Error::Invalid(format!(
                "source `{source}`: its files set {counted} rows aside, the quarantine folder holds {}",
                found.len()
            )));
        }
        if found.is_empty() {
            continue;
        }
        let path = format!("{}/{source}.parquet", quarantine::FOLDER);
        quarantine::write_parquet(&out.join(&path), &found)?;
        let summary = Summary::of(&found);
        all.insert(source.clone(), Quarantined { path, summary });
    }
    if let Some(source) = rows.keys().next() {
        return Err(Error::Invalid(format!(
            "the quarantine folder holds bad rows of `{source}`, a source this build did not read"
        )));
    }
    Ok(all)
}

/// The bad-row gate: each source's quarantined rows against its
/// `max_bad_rows` (a fraction of its rows read; the share must not exceed
/// it). `max` gives a source's limit.
pub fn check_bad_rows(
    reconciliation: &BTreeMap<String, SourceRows>,
    quarantined: &BTreeMap<String, Quarantined>,
    max: impl Fn(&str) -> f64,
) -> Result<()> {
    let mut failure = QualityFailure {
        failed: Vec::new(),
        details: Vec::new(),
    };
    for (source, rows) in reconciliation {
        let limit = max(source);
        // The share against the bound (both rounded alike: exactly at the
        // bound passes).
        if rows.quarantined == 0 || rows.quarantined as f64 / rows.read as f64 <= limit {
            continue;
        }
        failure.failed.push(format!(
            "source `{source}` has {} bad rows of {} read ({}), above max_bad_rows {}",
            rows.quarantined,
            rows.read,
            percent(rows.quarantined, rows.read),
            limit
        ));
        if let Some(q) = quarantined.get(source) {
            for (reason, n) in &q.summary.reasons {
                failure.details.push(format!("{source}: {n} x {reason}"));
            }
            for example in &q.summary.examples {
                failure.details.push(format!("{source}: e.g. {example}"));
            }
        }
    }
    match failure.failed.is_empty() {
        true => Ok(()),
        false => Err(Error::Quality(Box::new(failure))),
    }
}

/// `part / whole` as a percentage with enough digits to be non-zero.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    let p = 100.0 * part as f64 / whole as f64;
    match p {
        p if p >= 1.0 => format!("{p:.1}%"),
        p if p >= 0.01 => format!("{p:.2}%"),
        p => format!("{p:.4}%"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Compression, Format};

    fn file(rows: u64, quarantined: u64, uses: Option<RowUses>) -> FileStats {
        FileStats {
            path: "f.csv".into(),
            format: Format::Csv,
            compression: Compression::None,
            bytes: 0,
            sha256: String::new(),
            rows,
            quarantined,
            uses,
            times: None,
            modified_ns: None,
        }
    }

    #[test]
    fn every_row_is_counted_once_or_the_build_fails() {
        let uses = RowUses {
            indexed: 3,
            no_key_or_time: 1,
            filtered_by_where: 2,
        };
        let inputs = BTreeMap::from([
            (
                "ev".to_owned(),
                vec![
                    file(6, 1, Some(uses)),
                    file(
                        2,
                        0,
                        Some(RowUses {
                            indexed: 2,
                            ..RowUses::default()
                        }),
                    ),
                ],
            ),
            ("sp".to_owned(), vec![file(10, 2, None)]),
        ]);
        let spine = SpineRows {
            filtered_by_where: 3,
            held_back_immature: 2,
            written: 5,
        };
        let all = reconcile(&inputs, ("sp", spine), &["ev".to_owned()]).unwrap();
        assert_eq!(all["ev"].read, 9);
        assert_eq!(all["ev"].indexed.unwrap().indexed, 5);
        assert_eq!(all["sp"].read, 12);
        assert_eq!(all["sp"].spine, Some(spine));
        // One spine row unaccounted for.
        let short = SpineRows {
            written: 4,
            ..spine
        };
        let err = reconcile(&inputs, ("sp", short), &["ev".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("do not add up"), "{err}");
        // An indexed source read without counting.
        let err = reconcile(&inputs, ("sp", spine), &["sp".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("without counting"), "{err}");
    }

    #[test]
    fn the_gate_fails_above_the_fraction_only() {
        let rows = |read, quarantined| SourceRows {
            read,
            quarantined,
            ..SourceRows::default()
        };
        let all = BTreeMap::from([
            ("a".to_owned(), rows(1000, 1)),
            ("b".to_owned(), rows(1000, 2)),
        ]);
        check_bad_rows(&all, &BTreeMap::new(), |_| 0.002).unwrap();
        // Exactly at the bound passes (0.29 x 100 rounds below 29).
        let at = BTreeMap::from([("c".to_owned(), rows(100, 29))]);
        check_bad_rows(&at, &BTreeMap::new(), |_| 0.29).unwrap();
        let err = check_bad_rows(&all, &BTreeMap::new(), |_| 0.001).unwrap_err();
        let Error::Quality(failure) = err else {
            panic!("{err}")
        };
        assert_eq!(failure.failed.len(), 1);
        assert!(failure.failed[0].contains("source `b` has 2 bad rows of 1000 read (0.20%)"));
    }
}
