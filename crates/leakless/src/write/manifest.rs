//! `_manifest.json`: what a dataset is and how it was made.
//!
//! It holds no wall-clock time, so the same command on the same inputs
//! writes the same manifest byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PartitionWritten;
use crate::ingest::{FileStats, Table};

/// The manifest's file name; the leading underscore keeps Spark, pyarrow
/// and Polars from reading it as data.
pub const FILE_NAME: &str = "_manifest.json";

/// The settings of the run, as given.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub impressions: String,
    pub clicks: String,
    pub listings: String,
    pub out: String,
    /// The `--watermark` given, if any (RFC 3339, UTC).
    pub watermark: Option<String>,
    pub overwrite: bool,
}

/// The manifest, in the order its keys are written.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: &'static str,
    pub version: &'static str,
    pub settings: Settings,
    pub inputs: BTreeMap<Table, Vec<FileStats>>,
    pub rows_read: BTreeMap<Table, u64>,
    /// The watermark in force (RFC 3339, UTC), and where it came from.
    pub watermark: String,
    pub watermark_source: &'static str,
    pub immature_held_back: u64,
    pub rows_written: u64,
    /// Rows with `clicked = 1`.
    pub positive_labels: u64,
    pub partitions: Vec<PartitionWritten>,
    /// The output columns and their definitions in words.
    pub columns: Vec<ColumnDefinition>,
}

/// One output column and its definition.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDefinition {
    pub name: &'static str,
    pub definition: &'static str,
}

impl ColumnDefinition {
    /// The columns of `leakless build`, in output order.
    pub fn all() -> Vec<ColumnDefinition> {
        COLUMN_DEFINITIONS
            .iter()
            .map(|&(name, definition)| ColumnDefinition { name, definition })
            .collect()
    }
}

/// The output columns of `leakless build` and their definitions.
pub const COLUMN_DEFINITIONS: [(&str, &str); 10] = [
    ("impression_id", "from impressions"),
    ("user_id", "from impressions"),
    ("listing_id", "from impressions"),
    (
        "impression_ts",
        "from impressions, UTC microseconds; the impression time t",
    ),
    (
        "listing_age_seconds",
        "floor((t - listings.created_ts) / 1 s); null when the listing is not in listings",
    ),
    (
        "price",
        "listings.price; null when the listing is not in listings",
    ),
    (
        "category",
        "listings.category; null when the listing is not in listings",
    ),
    (
        "prior_listing_clicks",
        "number of clicks on the listing with click_ts < t",
    ),
    (
        "listing_clicks_24h",
        "number of clicks on the listing with t - 24h <= click_ts < t (24h = 86,400 s)",
    ),
    (
        "clicked",
        "1 when some click on the listing has t <= click_ts < t + 24h, else 0; rows with t + 24h > watermark are held back",
    ),
];

impl Manifest {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        bytes
    }
}
