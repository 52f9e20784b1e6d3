//! `_manifest.json`: what a dataset is and how it was made.
//!
//! It holds no wall-clock time, so the same command on the same inputs
//! writes the same manifest byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PartitionWritten;
use crate::ingest::FileStats;

/// The manifest's file name; the leading underscore keeps Spark, pyarrow
/// and Polars from reading it as data.
pub const FILE_NAME: &str = "_manifest.json";

/// The manifest's `tool`: `--overwrite` replaces only datasets whose
/// manifest names it.
pub const TOOL: &str = "leakless";

/// The settings of the run, as given.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The spec file, `None` for the `--impressions/--clicks/--listings`
    /// shorthand (its built-in spec is under `spec`).
    pub spec_file: Option<String>,
    /// Each source's path as read.
    pub sources: BTreeMap<String, String>,
    pub out: String,
    /// The `--watermark` given, if any (RFC 3339, UTC).
    pub watermark: Option<String>,
    pub overwrite: bool,
    /// `--bad-rows`, `--max-bad-rows` and `--publish-on-failed-checks`.
    pub bad_rows: crate::ingest::BadRowPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bad_rows: Option<f64>,
    pub publish_on_failed_checks: bool,
    /// `--incremental`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// `[output] format` or `--format` (absent: Parquet).
    #[serde(skip_serializing_if = "is_parquet")]
    pub format: crate::spec::OutputFormat,
}

fn is_parquet(format: &crate::spec::OutputFormat) -> bool {
    *format == crate::spec::OutputFormat::Parquet
}

/// The manifest, in the order its keys are written.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: &'static str,
    pub version: &'static str,
    /// On object storage: the folder below the dataset that holds this
    /// build's files (`_runs/RUN`); absent for a local dataset, whose
    /// files are in its own folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// SHA-256 of the normalised definitions: the feature-set version.
    pub feature_set_hash: String,
    pub settings: Settings,
    pub inputs: BTreeMap<String, Vec<FileStats>>,
    /// Rows read per source (bad rows set aside included).
    pub rows_read: BTreeMap<String, u64>,
    /// Where every row read went, per source (`docs/semantics.md`).
    pub reconciliation: BTreeMap<String, crate::quality::SourceRows>,
    /// Per source with bad rows set aside: its quarantine file and counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub quarantine: BTreeMap<String, crate::quality::Quarantined>,
    /// Every `[checks]` bound in every partition, with its value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::quality::checks::Outcome>,
    /// Spine rows dropped by `[spine] where`.
    pub spine_filtered_out: u64,
    /// Per label, the watermark in force (RFC 3339, UTC), and where the
    /// watermark came from.
    pub watermarks: BTreeMap<String, String>,
    pub watermark_source: &'static str,
    pub immature_held_back: u64,
    pub rows_written: u64,
    /// Per label, rows where it is neither 0 nor null.
    pub positive_labels: BTreeMap<String, u64>,
    pub partitions: Vec<PartitionWritten>,
    /// The output columns and their definitions in words.
    pub columns: Vec<ColumnDefinition>,
    /// The normalised spec.
    pub spec: serde_json::Value,
}

/// One output column and its definition.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDefinition {
    pub name: String,
    pub definition: String,
}

/// The data files `manifest` (read from `path`) lists, under `dataset`,
/// in path order (partition folders in time order).
pub fn listed_files(
    dataset: &std::path::Path,
    manifest: &serde_json::Value,
    path: &std::path::Path,
) -> crate::Result<Vec<std::path::PathBuf>> {
    let partitions: Vec<PartitionWritten> = (manifest.get("partitions").cloned())
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| {
            crate::Error::Invalid(format!("`{}` lists no partitions", path.display()))
        })?;
    let mut files: Vec<std::path::PathBuf> = (partitions.iter())
        .flat_map(|p| &p.files)
        .map(|f| dataset.join(&f.path))
        .collect();
    files.sort();
    Ok(files)
}

impl Manifest {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        bytes
    }
}
